"""Every widget's questions (predict mode, issue 25) against what the engine did.

Over every registered widget (so a widget added later is covered, and one without questions
fails), its default trace, every permalink the pages link to, and hypothesis-generated
settings for the block-level widgets: each question's correct option equals what the
engine's events say the step did (tests/question_truth.py, which never calls a generator),
exactly one option does, the options are distinct, and the question is not already
answered by the earlier step: its correct option (a statement) is not written in that
step's picture or in a sentence of its narration that looks ahead, and where the picture
lists blocks in order, the answer is not simply the first one listed. Hypothesis drives the
settings of every widget whose questions come from an engine's trace (the block-level ones
among them).
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from question_truth import NAIVE, TRUTH

from pages.framework import link_hash, registry, widget
from pages.framework.prompt_list import PromptList
from pages.framework.request_list import RequestList
from pages.questions import KINDS

ROOT = Path(__file__).resolve().parents[2]
WIDGETS = {wid: e.item for wid, e in registry.collect()[0].items()}
# Kinds about blocks: a widget asking one is block-level, and asks at least three kinds.
BLOCK_KINDS = {"next-block", "new-block", "cow", "blocks-freed", "free-queue", "evict-next",
               "prefix-hit", "window-skip"}
BLOCK_LEVEL = sorted(wid for wid, w in WIDGETS.items() if BLOCK_KINDS & set(w.question_kinds))
# Kinds read from an engine's trace: hypothesis drives these widgets' settings too.
ENGINE_KINDS = BLOCK_KINDS | {"preempt", "admit", "step-plan", "budget-share", "batch-join",
                              "beam-survivors", "spec-accept", "spec-rollback", "in-flight",
                              "discard", "cpu-load", "pd-remote", "pd-landed", "pd-hold"}
ENGINE_LEVEL = sorted(wid for wid, w in WIDGETS.items()
                      if ENGINE_KINDS & set(w.question_kinds))
LINK = re.compile(r"\]\(#([a-z0-9-]+\.[^)\s]*)\)")
TAGS = re.compile(r"<[^>]+>")
TITLES = re.compile(r"<title>.*?</title>", re.S)   # tooltips, not on the picture


def linked_settings() -> dict[str, list[dict[str, str]]]:
    """widget id -> the distinct settings (without step) the pages link to."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for anchor in LINK.findall(page.read_text(encoding="utf-8")):
            fields: dict[str, dict[str, str]] = {}
            for key, value in link_hash.parse_hash(anchor):
                wid, _, name = key.partition(".")
                if name not in ("step", "predict"):
                    fields.setdefault(wid, {})[name] = value
            for wid, raw in fields.items():
                out.setdefault(wid, {})[json.dumps(raw, sort_keys=True)] = raw
    return {wid: list(v.values()) for wid, v in out.items()}


LINKS = linked_settings()


def _parts(frame) -> list:
    if frame is None:
        return []
    if dataclasses.is_dataclass(frame):
        return [getattr(frame, f.name) for f in dataclasses.fields(frame)]
    if isinstance(frame, tuple):
        return list(frame)
    return list(vars(frame).values()) if hasattr(frame, "__dict__") else []


def _belongs(record, frame) -> bool:
    """The step a question notes is its frame, or a part of it (a V1 scheduler frame holds
    both engines' steps, a prefix-caching phase its engine step)."""
    return record is frame or any(record is part for part in _parts(frame))


FORWARD = re.compile(r"\bnext\b|\bwill\b|\bnot yet\b|\bgoing to\b")


def _forecasts(frame: dict, text: str) -> str:
    """What a frame says about what comes next: its sentences that look forward (the rest
    tells what already happened, which a question about the next step may repeat by
    chance), and the picture's visible text (tooltips aside)."""
    sentences = re.split(r"(?<=[.!?])\s+", frame["narration"])
    ahead = [x for x in sentences if FORWARD.search(x.lower())]
    ahead.append(" ".join(TAGS.sub(" ", TITLES.sub(" ", frame["svg"])).split()))
    return " ".join(ahead).lower()


def check_trace(w, values) -> list:
    """Every question of one trace, checked; returns them (for the coverage tests)."""
    trace = w.scenario(values)
    ctx = w.context(values, trace) if w.context else widget.Context(values, trace)
    frames = widget.frames_of(w, values)
    asked = []
    before = None
    for i, frame_step in enumerate(trace):
        for q in w.questions(before, frame_step, ctx):
            where = f"{w.id} {values} frame {i + 1}, {q.kind}: {q.prompt}"
            assert q.kind in w.question_kinds, where
            assert q.kind in KINDS and q.kind in TRUTH, f"{where}: no check for this kind"
            assert 3 <= len(q.options) <= 4 and len(set(q.options)) == len(q.options), where
            b, s = q.about["before"], q.about["step"]
            assert _belongs(s, frame_step), f"{where}: the question is about another step"
            if before is not None:
                assert _belongs(b, before), f"{where}: its 'before' is not the frame before"
            truth = TRUTH[q.kind](q, b, s)
            matches = [k for k, v in enumerate(q.values) if v == truth]
            assert matches == [q.answer], (f"{where}: the engine did {truth!r}; options "
                                           f"{list(zip(q.options, q.values))}, marked "
                                           f"{q.answer}")
            if before is not None:
                text = q.options[q.answer].lower()
                # A name or a number ("A.2", "block 7") may be on the picture for other
                # reasons; a statement ("only decodes (a and b); no prompt runs") may not.
                if len(text) >= 16 and " " in text:
                    shown = _forecasts(frames[i - 1], text)
                    assert not re.search(rf"(?<![\w.#]){re.escape(text)}(?![\w.])",
                                         shown), f"{where}: frame {i} already says {text!r}"
                naive = NAIVE.get(q.kind)
                if naive is not None:
                    assert naive(q, b, s) != truth, f"{where}: frame {i}'s picture shows it"
            asked.append(q)
        before = frame_step
    # The frame carries the first question of its step, as the player shows it.
    for frame in frames:
        if "question" in frame:
            assert frame["question"]["options"] and frame["question"]["code"]
    return asked


def traces_of(wid: str):
    w = WIDGETS[wid]
    yield w.defaults()
    for raw in LINKS.get(wid, []):
        values, errors = widget.validate(w, raw)
        assert not errors, (wid, raw, errors)
        yield values


# pd-latency's trace runs three serving configurations (seconds each): in ./dev test only.
SLOW = {"pd-latency"}
ALL = [pytest.param(w, marks=pytest.mark.slow) if w in SLOW else w for w in sorted(WIDGETS)]


@pytest.mark.parametrize("wid", ALL)
def test_every_widget_asks_questions_that_match_what_the_engine_did(wid):
    w = WIDGETS[wid]
    assert w.questions is not None and w.question_kinds, (
        f"{wid} has no questions: give its Widget questions= and question_kinds= "
        "(pages/questions/, issue 25)")
    asked = []
    for values in traces_of(wid):
        asked += check_trace(w, values)
    assert asked, f"{wid}: neither the default trace nor a linked one asks anything"
    # A declared kind that no trace the pages show ever asks is dead (or its rule never
    # matches the engine any more): the Instructors page would promise it for nothing.
    never = [k for k in w.question_kinds if k not in {q.kind for q in asked}]
    assert not never, f"{wid}: no default or linked trace asks {never}"


@pytest.mark.parametrize("wid", BLOCK_LEVEL)
def test_block_level_widgets_ask_at_least_three_kinds(wid):
    assert len(WIDGETS[wid].question_kinds) >= 3, WIDGETS[wid].question_kinds


# -- hypothesis: any settings of the block-level widgets ------------------------------------------

def _requests(lst: RequestList):
    item = st.tuples(st.integers(1, min(lst.max_len, 20)), st.integers(1, min(lst.max_len, 12)),
                     st.integers(0, min(lst.max_arrival, 6)), st.integers(1, min(lst.max_n, 3)))
    return st.lists(item, min_size=1, max_size=min(lst.max_requests, 4)).map(
        lambda xs: ", ".join(f"{p}/{o}" + (f"x{n}" if n > 1 else "") + (f"@{a}" if a else "")
                             for p, o, a, n in xs))


def _prompts(lst: PromptList):
    shared = st.integers(1, 12)
    item = st.tuples(st.booleans(), st.integers(0, 10), st.integers(1, min(lst.max_output, 4)),
                     st.integers(1, min(lst.max_arrival, 5)))

    def write(args):
        k, items = args
        out = []
        for i, (share, own, output, arrival) in enumerate(items):
            parts = ([f"x:{k}" if i == 0 else "x"] if share or i == 0 else []) + \
                    ([str(own)] if own or not (share or i == 0) else [])
            out.append("+".join(parts) + f"/{output}@{arrival}")
        return ", ".join(out)

    return st.tuples(shared, st.lists(item, min_size=1, max_size=min(lst.max_requests, 4))
                     ).map(write)


def _field(p):
    if p.kind == "choice":
        return st.sampled_from([v for v, _ in p.choices])
    if p.kind == "bool":
        return st.sampled_from(["true", "false"])
    if p.kind == "int":
        lo, hi = int(p.min if p.min is not None else 0), int(p.max if p.max is not None else 64)
        return st.integers(lo, min(hi, lo + 40)).map(str)
    if p.kind == "float":
        lo, hi = p.min or 0.0, p.max if p.max is not None else 1.0
        return st.sampled_from([lo, (lo + hi) / 2, hi]).map(repr)
    owner = getattr(p.parse, "__self__", None)
    if isinstance(owner, RequestList):
        return _requests(owner)
    if isinstance(owner, PromptList):
        return _prompts(owner)
    return st.just(p.to_raw(p.default))


def settings_of(w):
    return st.fixed_dictionaries({p.name: _field(p) for p in w.params})


@pytest.mark.parametrize("wid", ALL)
def test_questions_hold_for_any_settings(wid):
    """The engine-driven widgets (the block-level ones among them) get the most examples;
    the cost and kernel pages' rules are arithmetic and get a few."""
    w = WIDGETS[wid]

    # pd-latency's examples each run three serving configurations; its rule is arithmetic
    # over their latency records, checked on the default and every linked trace as well.
    examples = 25 if wid in ENGINE_LEVEL else 4 if wid in SLOW else 10

    @settings(max_examples=examples, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(settings_of(w))
    def run(raw):
        values, errors = widget.validate(w, raw)
        assume(not errors)
        check_trace(w, values)

    run()
