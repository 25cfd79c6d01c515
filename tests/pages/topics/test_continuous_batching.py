import re
from pathlib import Path

import pytest

from pages.framework.widget import run, validate
from pages.topics.continuous_batching import (WIDGETS, context, first_contrast, format_range,
                                              narrate, parse_range, runs, scenario, view)

W = WIDGETS[0]
DOC = (Path(__file__).resolve().parents[3] / "docs" / "continuous-batching.md").read_text(
    encoding="utf-8")


def test_range_round_trip_and_errors():
    assert parse_range(" 3 - 10 ") == (3, 10)
    assert parse_range("5") == (5, 5)
    assert parse_range(format_range((2, 9))) == (2, 9)
    for bad in ("10-3", "0-4", "1-33", "a-b", "<b>1</b>"):
        _, errors = validate(W, {"prompt_lens": bad})
        assert errors["prompt_lens"].startswith("prompt lengths: ")


def test_cross_field_rules_name_the_field():
    # The longest default request is B, 6 + 8 = 14 tokens.
    _, errors = validate(W, {"max_num_batched_tokens": "13"})
    assert errors["max_num_batched_tokens"].startswith("token budget: at least 14")
    _, errors = validate(W, {"count": "12", "output_lens": "30-32", "max_num_seqs": "1",
                             "max_num_batched_tokens": "64"})
    assert "more than 40 iterations" in errors["count"]
    _, errors = validate(W, {"max_num_seqs": "9"})
    assert errors["max_num_seqs"] == "batch slots: a whole number from 1 to 8"


def test_default_trace_tells_the_story():
    frames = run(W, W.defaults())
    assert len(frames) == 17                      # before + 16 iterations: under twenty
    text = [f["narration"] for f in frames]
    assert text[0].startswith("5 requests")
    assert "A and C finish" in text[3]            # iteration 2
    # Iteration 3: vLLM refills, runs a prefill-only step; static pads.
    assert "D takes slot 0, which A left" in text[4]
    assert "E takes slot 2, which C left" in text[4]
    assert "B skips its decode: v0.5.5 runs prefill-only steps" in text[4]
    assert "A and C are done but their slots idle" in text[4]
    assert "This is the difference" in text[4] and "(iteration 7)" in text[4]
    assert "vLLM: drained after 11 iterations" in text[12]
    assert "Static: A new batch: D and E prefill" in text[9]


def test_the_marked_refill_is_the_first_with_static_padding():
    static, vllm = runs(W.defaults())
    step, seating = first_contrast(static, vllm)
    assert (step, seating.request_id, seating.slot, seating.after) == (3, "D", 0, "A")
    frame = run(W, W.defaults())[4]["svg"]
    assert "iteration 3: this slot idles" in frame        # the outlined static slots


def test_totals_in_the_docs_are_the_simulations():
    static, vllm = runs(W.defaults())
    s, v = static.totals(), vllm.totals()
    assert (s.drained_at, v.drained_at) == (16, 11)
    assert f"after {s.drained_at} iterations with its slots busy " \
           f"{100 * s.utilisation:.0f}%" in DOC
    assert f"after {v.drained_at}, with {100 * v.utilisation:.0f}%" in DOC
    assert f"from {s.mean_latency:.1f} to {v.mean_latency:.1f} iterations" in DOC
    assert f"percentile from {s.p90_latency} to {v.p90_latency}" in DOC
    last = run(W, W.defaults())[-1]["svg"]
    assert f"drained after 16 iterations · latency mean {s.mean_latency:.1f}" in last


def test_every_frame_draws_both_timelines_with_titles():
    frames = run(W, W.defaults())
    for i, f in enumerate(frames):
        svg = f["svg"]
        assert svg.startswith("<svg") and "viewBox" in svg
        assert "Static batching" in svg and "vLLM v0.5.5" in svg
        # One drawn cell (with its hover text) per busy or idle slot so far.
        assert len(re.findall(r"<title>iteration \d+: [A-E], ", svg)) == sum(
            1 for r in runs(W.defaults()) for it in r.iterations[:i] for c in it.slots if c)


def test_chunked_prefill_toggle_mixes_prefill_and_decode():
    values = dict(W.defaults(), chunked_prefill=True)
    frames = run(W, values)
    assert "vLLM v0.5.5 with chunked prefill" in frames[1]["svg"]
    text = frames[4]["narration"]
    assert "runs together with the decode of B: chunked prefill mixes them" in text
    assert "prefill-only" not in text.split("vLLM:")[1]


def test_the_trace_pairs_both_runs_iterations():
    values = W.defaults()
    trace = scenario(values)
    static, vllm = runs(values)
    assert len(trace) == 1 + max(len(static.iterations), len(vllm.iterations)) == 17
    assert (trace[0].static, trace[0].vllm) == (None, None)
    for step in trace.steps[1:]:
        assert step.static == (static.iterations[step.index - 1]
                               if step.index <= len(static.iterations) else None)
        assert step.vllm == (vllm.iterations[step.index - 1]
                             if step.index <= len(vllm.iterations) else None)
    assert trace.last.vllm is None and trace.last.static is not None   # vLLM drained first


def test_context_marks_the_first_contrast_once():
    values = W.defaults()
    trace = scenario(values)
    ctx = context(values, trace)
    assert ctx.columns == 16
    assert ctx.vllm_marks == {"refill": (3, 0)}
    assert ctx.static_marks == {"idle": (3, [0, 2])}
    # view and narrate are pure: the same step gives the same picture and words.
    assert view(trace[4], ctx) == view(trace[4], ctx)
    assert narrate(trace[4], ctx).startswith("Iteration 3. Static: ")
    assert narrate(trace[0], ctx).startswith("5 requests")


def test_frames_are_deterministic():
    assert run(W, W.defaults()) == run(W, W.defaults())


@pytest.mark.parametrize("link", re.findall(r"\(#continuous-batching\.([^)]*)\)", DOC))
def test_doc_permalinks_validate(link):
    raw = dict(kv.split("=", 1) for kv in link.split("&continuous-batching."))
    step = raw.pop("step", None)
    values, errors = validate(W, raw)
    assert not errors, (link, errors)
    if step is not None:
        assert 1 <= int(step) <= len(run(W, values))
