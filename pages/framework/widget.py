"""What a topic page declares: a widget, its parameters, and how reader input is checked.

A topic module (`pages/topics/<topic>.py`) exposes `WIDGETS = (Widget(...), ...)`. A widget
is three functions:

    scenario(values) -> trace            the simulation's work: a sim.trace.Trace, or any
                                         sequence of step records the topic defines
    view(step, ctx) -> svg.Figure | str  the picture of one step (pure)
    narrate(step, ctx) -> str            the words for the same step (pure)

`ctx` is `Context(values, trace)`, or what the widget's optional `context(values, trace)`
returns when its views need something computed once over the whole trace (a scale, the
names of sequences, running totals). Optional too: `label(step, ctx) -> str`, the name the
picture and the narration give the step ("iteration 7"; the player's counter shows it), and
`details(step, ctx) -> list[str]`, the step's full account (every event), which the page
shows one click away from the short narration, and `questions(step, next_step, ctx) ->
list[Question]` (pages/framework/question.py), what predict mode asks before it shows
`next_step` (`step` is None for the first frame), with `question_kinds` naming the kinds
it can ask. `run` turns them into frames: JSON-ready dicts with `svg` and `narration`, and
`label`, `details`, `question` (the first question) and the optional `meta(step, ctx)`
fields when given. Figures of one trace share the tallest one's height.

The same code runs in CPython when the site is built and in the browser's Pyodide worker
when a reader submits the form, so `validate` is the only gate reader text passes through,
and it never returns markup.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pages.framework.question import Question
from pages.views import svg

KINDS = ("int", "float", "choice", "bool", "text")

# Numbers as a reader types them: ASCII digits and an optional sign, nothing else (Python's
# int() and float() would also take "1_0", "٣" or "４"), and short enough that converting them
# costs nothing (a 5,000-digit int() is refused by Python itself with its own message).
_INT = re.compile(r"[+-]?[0-9]{1,12}")
_FLOAT = re.compile(r"[+-]?(?:[0-9]{1,12}(?:\.[0-9]{0,12})?|\.[0-9]{1,12})"
                    r"(?:[eE][+-]?[0-9]{1,3})?")
# Longest raw text any field takes; longer text is refused before it is parsed.
MAX_RAW = 2000

# Strings accepted for a bool field: the form sends "true"/"false"; people typing a
# permalink by hand write the others.
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class Param:
    """One field of a widget's form.

    `kind` is one of KINDS. A "text" field needs `parse` (raw string -> value, raising
    ValueError whose message says what is allowed) and `format` (value -> raw string), so
    that structured input such as a list of requests round-trips through a URL.
    `choices` for a "choice" field is a tuple of (value, label) pairs; values are strings.
    `extremes` (optional, for a "text" field) names the edges of what the field documents as
    (what, raw text) pairs, e.g. ("the longest prompt", "40/1"): with `min` and `max` they
    are the field's `bounds()`, each of which some allowed setting of the other fields must
    run (tests/pages/framework/test_bounds.py).
    """

    name: str
    label: str
    kind: str
    default: Any
    min: float | None = None
    max: float | None = None
    choices: tuple[tuple[str, str], ...] = ()
    help: str = ""
    parse: Callable[[str], Any] | None = None
    format: Callable[[Any], str] | None = None
    extremes: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be one of {KINDS}, not {self.kind!r}")
        if self.kind == "text" and (self.parse is None or self.format is None):
            raise ValueError(f"{self.name}: a text field needs parse and format")
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"{self.name}: a choice field needs choices")
        # A default that its own validation rejects would make the build-time trace and
        # the form disagree; fail when the module is imported instead.
        value, error = self.read(self.to_raw(self.default))
        if error or value != self.default:
            raise ValueError(f"{self.name}: default {self.default!r} does not validate: {error}")
        for what, raw in self.extremes:
            if self.read(raw)[1]:
                raise ValueError(f"{self.name}: {what} ({raw!r}) does not validate")

    def bounds(self) -> list[tuple[str, str]]:
        """The documented edges of this field as (what, raw text): an int or float field's
        min and max, a text field's `extremes`."""
        if self.kind in ("int", "float"):
            cast = int if self.kind == "int" else float
            return [(f"{which} {_num(x)}", self.to_raw(cast(x)))
                    for which, x in (("min", self.min), ("max", self.max)) if x is not None]
        return list(self.extremes)

    def allowed(self) -> str:
        """What this field accepts, in words; the tail of every error message."""
        if self.kind == "int":
            return "a whole number" + self._range_words()
        if self.kind == "float":
            return "a number" + self._range_words()
        if self.kind == "choice":
            return "one of " + ", ".join(label for _, label in self.choices)
        if self.kind == "bool":
            return "yes or no"
        return "see the help text"

    def to_raw(self, value: Any) -> str:
        """The string a form field or a permalink holds for `value`."""
        if self.kind == "bool":
            return "true" if value else "false"
        if self.kind == "text":
            return self.format(value)
        if self.kind == "float":
            return repr(float(value))
        return str(value)

    def read(self, raw: str) -> tuple[Any, str | None]:
        """Parse one raw string: (value, None) or (None, message naming what is allowed)."""
        text = raw.strip()
        bad = f"{self.label}: {self.allowed()}"
        if self.kind == "int":
            if not _INT.fullmatch(text):
                return None, bad
            value = int(text)
            return (value, None) if self._in_range(value) else (None, bad)
        if self.kind == "float":
            if not _FLOAT.fullmatch(text):
                return None, bad
            value = float(text)
            if not math.isfinite(value) or not self._in_range(value):
                return None, bad
            return value, None
        if self.kind == "choice":
            for value, _ in self.choices:
                if text == value:
                    return value, None
            return None, bad
        if self.kind == "bool":
            low = text.lower()
            if low in _TRUE:
                return True, None
            if low in _FALSE:
                return False, None
            return None, bad
        if len(text) > MAX_RAW:
            return None, (f"{self.label}: at most {MAX_RAW} characters "
                          f"({self.help or 'see the help text'})")
        try:
            return self.parse(text), None
        except ValueError as err:
            return None, f"{self.label}: {err}"

    def _range_words(self) -> str:
        if self.min is not None and self.max is not None:
            return f" from {_num(self.min)} to {_num(self.max)}"
        if self.min is not None:
            return f" of at least {_num(self.min)}"
        if self.max is not None:
            return f" of at most {_num(self.max)}"
        return ""

    def _in_range(self, value: float) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


@dataclass(frozen=True, slots=True)
class Context:
    """What view and narrate get beside the step: the checked values and the whole trace."""
    values: dict
    trace: Sequence


@dataclass(frozen=True)
class Widget:
    """An interactive picture on a topic page (see the module docstring).

    `check(values)` (optional) looks across fields and returns {field name: message}.
    """

    id: str
    title: str
    params: tuple[Param, ...]
    scenario: Callable[[dict[str, Any]], Sequence] | None = None   # values -> trace
    view: Callable[[Any, Any], Any] | None = None                  # (step, ctx) -> Figure | str
    narrate: Callable[[Any, Any], str] | None = None               # (step, ctx) -> str
    context: Callable[[dict[str, Any], Sequence], Any] | None = None
    label: Callable[[Any, Any], str] | None = None                 # (step, ctx) -> "iteration 7"
    details: Callable[[Any, Any], list[str]] | None = None         # (step, ctx) -> sentences
    meta: Callable[[Any, Any], dict[str, Any]] | None = None
    check: Callable[[dict[str, Any]], dict[str, str]] | None = None
    # (step | None, next_step, ctx) -> [Question]: what to ask before showing next_step.
    questions: Callable[[Any, Any, Any], Sequence[Question]] | None = None
    question_kinds: tuple[str, ...] = ()       # the kinds `questions` can ask
    summary: str = ""
    # One line for instructors: what a learner can do after stepping through it.
    goal: str = ""
    # The animation key kinds its frames carry ("blk" for blk:gpu:7; pages/framework/keys.py):
    # a promise tests/pages/framework/test_keys.py holds every trace of the widget to.
    keys: tuple[str, ...] = ()
    names: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        if not self.id or not all(c.isascii() and (c.isalnum() or c == "-") for c in self.id):
            raise ValueError(f"widget id {self.id!r}: use lowercase letters, digits and '-'")
        if self.id != self.id.lower():
            raise ValueError(f"widget id {self.id!r}: use lowercase letters, digits and '-'")
        names = tuple(p.name for p in self.params)
        if len(set(names)) != len(names):
            raise ValueError(f"widget {self.id}: two parameters share a name")
        if "step" in names:
            raise ValueError(f"widget {self.id}: 'step' is the player's, not a parameter name")
        if None in (self.scenario, self.view, self.narrate):
            raise ValueError(f"widget {self.id}: needs scenario, view and narrate")
        if (self.questions is None) != (not self.question_kinds):
            raise ValueError(f"widget {self.id}: questions and question_kinds go together")
        object.__setattr__(self, "names", names)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def default_raw(self) -> dict[str, str]:
        return {p.name: p.to_raw(p.default) for p in self.params}


def validate(widget: Widget, raw: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Check a reader's raw strings. Returns (values, errors).

    A missing field takes its default; unknown keys are reported under "" so a mistyped
    permalink is noticed instead of silently ignored. `values` is only complete when
    `errors` is empty.
    """
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    unknown = sorted(k for k in raw if k not in widget.names)
    problems = []
    if any(not k.strip() for k in unknown):  # "#<id>.=5": nothing between the id and "="
        problems.append(f"a setting with no name (write {widget.id}.<setting>=<value>)")
    if any(k.strip() for k in unknown):
        problems.append("unknown setting: " + ", ".join(k for k in unknown if k.strip()))
    if problems:
        errors[""] = "; ".join(problems)
    for param in widget.params:
        if param.name not in raw:
            values[param.name] = param.default
            continue
        value, error = param.read(str(raw[param.name]))
        if error:
            errors[param.name] = error
        else:
            values[param.name] = value
    if not errors and widget.check is not None:
        errors.update(widget.check(values))
    return values, errors


def frames_of(widget: Widget, values: dict[str, Any]) -> list[dict[str, Any]]:
    """scenario -> trace -> (view, narrate) for every step -> frames."""
    trace = widget.scenario(values)
    if not len(trace):
        raise ValueError(f"widget {widget.id}: the scenario has no steps")
    ctx = widget.context(values, trace) if widget.context else Context(values, trace)
    pictures = svg.documents([widget.view(step, ctx) for step in trace])
    frames = []
    before = None
    for step, picture in zip(trace, pictures):
        frame = {"svg": picture, "narration": widget.narrate(step, ctx)}
        if widget.questions is not None:
            asked = widget.questions(before, step, ctx)
            if asked:
                frame["question"] = asked[0].to_json()
        before = step
        if widget.label is not None:
            frame["label"] = widget.label(step, ctx)
        if widget.details is not None:
            frame["details"] = list(widget.details(step, ctx))
        if widget.meta is not None:
            frame.update(widget.meta(step, ctx))
        frames.append(frame)
    return frames


def run(widget: Widget, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Build the frames and hold them to the contract the player relies on."""
    frames = frames_of(widget, values)
    if not isinstance(frames, list) or not frames:
        raise ValueError(f"widget {widget.id}: build must return a non-empty list of frames")
    for i, frame in enumerate(frames):
        if not isinstance(frame.get("svg"), str) or not isinstance(frame.get("narration"), str):
            raise ValueError(f"widget {widget.id}: frame {i} needs 'svg' and 'narration' strings")
        if not isinstance(frame.get("label", ""), str) or not all(
                isinstance(d, str) for d in frame.get("details", [])):
            raise ValueError(f"widget {widget.id}: frame {i}: 'label' is a string and "
                             "'details' a list of strings")
        question = frame.get("question")
        if question is not None and not (
                isinstance(question.get("options"), list)
                and all(isinstance(o, str) for o in question["options"])
                and isinstance(question.get("answer"), int)
                and 0 <= question["answer"] < len(question["options"])
                and all(isinstance(question.get(k), str)
                        for k in ("kind", "prompt", "explanation", "code"))):
            raise ValueError(f"widget {widget.id}: frame {i}: a question has kind, prompt, "
                             "options, answer (an option's index), explanation and code")
    return frames


def to_json(data: Any) -> str:
    """The one serialisation used at build time and in the worker, so the two compare byte
    for byte."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def respond(widget: Widget, raw: dict[str, str]) -> dict[str, Any]:
    """What the worker answers a form submission with: errors, or the new trace."""
    values, errors = validate(widget, raw)
    if errors:
        return {"errors": errors}
    return {
        "values": {p.name: p.to_raw(values[p.name]) for p in widget.params},
        "frames": run(widget, values),
    }


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)
