"""A question about the next step: what predict mode asks before it shows a frame.

A widget may have `questions(step, next_step, ctx) -> list[Question]`: the questions a
reader could answer before seeing `next_step`, knowing `step` (None before the first frame:
a calculator's one frame is asked about from its settings). The framework puts the first
one on `next_step`'s frame, so the player shows it first in predict mode; the others are
kept for the check (tests/pages/test_questions.py), which holds every one to what the
engine did.

A question is multiple choice: three or four options, drawn from the state (the blocks on
the free list, the requests in the queues, the numbers a wrong rule would give), never
random. `values` says what each option claims in machine terms (a block number, a request
id, a count) and `about` names the question's subject (a sequence, a request), so the check
can read the truth from the engine's events without parsing words. `explanation` names the
rule, and `code` where it lives in vLLM (file, function, version).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

MIN_OPTIONS, MAX_OPTIONS = 3, 4


@dataclass(frozen=True)
class Question:
    kind: str                      # a kind id (pages.questions.KINDS), e.g. "next-block"
    prompt: str
    options: tuple[str, ...]
    answer: int                    # index of the correct option
    explanation: str               # the rule, applied to this step
    code: str                      # where the rule lives in vLLM: "file: function (version)"
    values: tuple = ()             # what each option claims, for the check
    about: dict = field(default_factory=dict)   # the subject, for the check

    def __post_init__(self) -> None:
        n = len(self.options)
        if not MIN_OPTIONS <= n <= MAX_OPTIONS:
            raise ValueError(f"{self.kind}: {n} options; a question has "
                             f"{MIN_OPTIONS} or {MAX_OPTIONS}")
        if len(set(self.options)) != n:
            raise ValueError(f"{self.kind}: two options read the same: {self.options}")
        if len(self.values) != n or len(set(map(_key, self.values))) != n:
            raise ValueError(f"{self.kind}: one distinct value per option: {self.values}")
        if not 0 <= self.answer < n:
            raise ValueError(f"{self.kind}: answer {self.answer} is not an option")
        if not (self.prompt and self.explanation and self.code):
            raise ValueError(f"{self.kind}: prompt, explanation and code are required")

    @property
    def correct(self) -> Any:
        """The correct option's value."""
        return self.values[self.answer]

    def to_json(self) -> dict[str, Any]:
        """What a frame carries (the player's part; values and about stay in Python)."""
        return {"kind": self.kind, "prompt": self.prompt, "options": list(self.options),
                "answer": self.answer, "explanation": self.explanation, "code": self.code}


def _key(value: Any) -> str:
    return repr(value)


def ask(kind: str, prompt: str, correct: Any, candidates: Sequence[Any],
        text: Callable[[Any], str], explanation: str, code: str, about: dict | None = None,
        order: str | tuple = "value") -> Question | None:
    """A Question whose options are `correct` and the first distinct `candidates` (in the
    caller's order of plausibility), three or four in all; None when fewer than two
    distractors can be drawn, so a step with nothing to choose between asks nothing.

    `order`: "value" sorts the options by value (numbers and block numbers read best in
    order); "mixed" places the correct one at a position taken from the prompt's letters,
    the same in CPython and in the browser (no random state); a tuple of values is the
    display order (yes/no/maybe answers read best in a fixed order)."""
    values = [correct]
    for c in candidates:
        if len(values) == MAX_OPTIONS:
            break
        if c is not None and _key(c) not in {_key(v) for v in values}:
            values.append(c)
    if len(values) < MIN_OPTIONS:
        return None
    texts = [text(v) for v in values]
    if len(set(texts)) != len(texts):
        return None
    if isinstance(order, tuple):
        rank = {_key(v): i for i, v in enumerate(order)}
        pairs = sorted(zip(values, texts), key=lambda p: rank.get(_key(p[0]), len(rank)))
    elif order == "value":
        pairs = sorted(zip(values, texts), key=lambda p: _sort_key(p[0]))
    else:
        pairs = list(zip(values, texts))
        shift = sum(ord(c) for c in prompt) % len(pairs)
        # Rotate the distractors, then insert the correct one at `shift`.
        first, rest = pairs[0], pairs[1:]
        pairs = rest[:shift] + [first] + rest[shift:]
    values = [v for v, _ in pairs]
    answer = next(i for i, v in enumerate(values) if _key(v) == _key(correct))
    return Question(kind, prompt, tuple(t for _, t in pairs), answer, explanation, code,
                    tuple(values), dict(about or {}))


def _sort_key(value: Any):
    if isinstance(value, bool):
        return (1, str(value))
    if isinstance(value, (int, float)):
        return (0, value)
    if isinstance(value, tuple):
        return (2, len(value), tuple(_sort_key(v) for v in value))
    return (3, str(value))
