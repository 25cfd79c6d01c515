import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pages.framework.widget import run, validate
from pages.topics.continuous_batching import (
    SMALL,
    WIDGETS,
    WIDTH,
    context,
    first_contrast,
    format_range,
    label,
    narrate,
    parse_range,
    runs,
    scenario,
    view,
    workload,
)
from pages.views import fit, svg
from sim.studies.batching_metrics import from_trace, make_v1_engine
from sim.trace import record

W = WIDGETS[0]
DOC = (Path(__file__).resolve().parents[3] / "docs" / "continuous-batching.md").read_text(
    encoding="utf-8")
NS = "{http://www.w3.org/2000/svg}"
V1 = dict(W.defaults(), engine="v1")


def texts(svg_text: str) -> list[tuple[float, float, str, str, float]]:
    """(x, y, anchor, text, size) of every text element."""
    return [(float(t.get("x")), float(t.get("y")), t.get("text-anchor"), "".join(t.itertext()),
             float(t.get("font-size"))) for t in ET.fromstring(svg_text).iter(NS + "text")]


def sentences(text: str) -> int:
    return len(re.findall(r"[.!?](?:\s|$)", text))


@pytest.fixture(scope="module")
def frames():
    return run(W, W.defaults())


@pytest.fixture(scope="module")
def v1_frames():
    return run(W, V1)


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
    _, errors = validate(W, {"engine": "v2"})
    assert errors["engine"].startswith("engine: one of vLLM v0.5.5, vLLM V1")


def test_one_step_per_iteration_and_one_numbering(frames):
    static, vllm = runs(W.defaults())
    assert len(frames) == 16 == max(len(static.iterations), len(vllm.iterations))
    for i, f in enumerate(frames):
        assert f["label"] == f"iteration {i}"
        # The picture's heading names the same iteration, and outlines its column.
        shown = [t[3] for t in texts(f["svg"])]
        assert shown[0] == f"iteration {i}"
        assert f"<title>iteration {i} (this step)</title>" in f["svg"]


def test_the_first_frame_shows_the_work(frames):
    first = frames[0]
    assert "A, B and C arrive and take the 3 slots in both schedulers" in first["narration"]
    # Both timelines already hold iteration 0's prefills.
    assert first["svg"].count("prefill of") == 6
    assert first["details"][0].startswith("5 requests (prompt + output tokens, arrival "
                                          "iteration): A 3+3 at 0, B 6+8 at 0")


def test_narration_is_short_and_causal(frames, v1_frames):
    for f in frames + v1_frames:
        assert 1 <= sentences(f["narration"]) <= 3, f["narration"]
        assert f["details"], f["label"]
    text = [f["narration"] for f in frames]
    assert "A and C produce their last tokens and finish" in text[2]
    # Iteration 3: the cause (A and C finished), the effect (vLLM refills at once, B skips a
    # decode), the consequence (the static batch pads until B ends).
    assert text[3] == ("A and C finished in iteration 2, so vLLM gives their slots to D and E "
                       "at once. B skips its decode: v0.5.5 runs a step that admits prompts "
                       "as prefill only. Static batching keeps A's and C's slots idle until B, "
                       "its longest request, finishes in iteration 7.")
    assert "D and E wait in the static queue (since iterations 1 and 2)" in text[4]
    assert "so D and E form a new one and prefill, 7 and 6 iterations after they arrived" \
        in text[8]
    assert "vLLM has served every request: mean latency 6.8 iterations" in text[10]
    assert text[15].endswith("Static batching took 16 iterations to vLLM's 11, with slots "
                             "busy 62% against 91%.")


def test_details_list_every_slot(frames):
    d = frames[3]["details"]
    assert "Static: slot 0: A, done; its slot idles (padding) until the batch ends; slot 1: B, " \
           "decode, one new token; slot 2: C, done; its slot idles (padding) until the batch " \
           "ends." in d
    assert "vLLM: D enters the batch in slot 0, which A left." in d
    assert any("slot 1: B, in the batch, not run: this step admits prompts" in x for x in d)
    assert "vLLM: 8 tokens computed this iteration (budget 32)." in d


def test_the_marked_refill_is_the_first_with_static_padding(frames):
    static, vllm = runs(W.defaults())
    step, seating = first_contrast(static, vllm)
    assert (step, seating.request_id, seating.slot, seating.after) == (3, "D", 0, "A")
    assert "iteration 3: this slot idles" in frames[3]["svg"]       # the outlined static slots
    assert "iteration 3: this slot idles" not in frames[2]["svg"]


def test_totals_in_the_docs_are_the_simulations(frames):
    static, vllm = runs(W.defaults())
    s, v = static.totals(), vllm.totals()
    assert (s.drained_at, v.drained_at) == (16, 11)
    assert f"after {s.drained_at} iterations with its slots busy " \
           f"{100 * s.utilisation:.0f}%" in DOC
    assert f"after {v.drained_at}, with {100 * v.utilisation:.0f}%" in DOC
    assert f"from {s.mean_latency:.1f} to {v.mean_latency:.1f} iterations" in DOC
    assert f"percentile from {s.p90_latency} to {v.p90_latency}" in DOC
    shown = [t[3] for t in texts(frames[-1]["svg"])]
    assert "drained after 16 iterations, slots busy 62%" in shown
    assert f"latency: mean {s.mean_latency:.1f}, p90 {s.p90_latency} iterations" in shown
    _, v1 = runs(V1)
    assert f"mean latency falls to {v1.totals().mean_latency:.1f}" in " ".join(DOC.split())


def test_every_frame_draws_both_timelines_with_titles(frames):
    for i, f in enumerate(frames):
        picture = f["svg"]
        assert picture.startswith("<svg") and "viewBox" in picture
        assert "Static batching" in picture and "vLLM v0.5.5" in picture
        # One drawn cell (with its hover text) per busy or idle slot so far.
        assert len(re.findall(r"<title>iteration \d+: [A-E], ", picture)) == sum(
            1 for r in runs(W.defaults()) for it in r.iterations[:i + 1] for c in it.slots if c)


def test_text_reads_on_a_phone_and_stays_in_the_picture(frames, v1_frames):
    """Every text at least fit.min_size of the view (11 px on a 390 px phone), and inside
    the view box by the monospace estimate."""
    assert SMALL == fit.min_size(WIDTH)
    for f in frames + v1_frames:
        height = float(re.search(r'viewBox="0 0 [0-9.]+ ([0-9.]+)"', f["svg"])[1])
        for x, y, anchor, text, size in texts(f["svg"]):
            assert size >= SMALL, text
            width = fit.text_width(text, size)
            lo = x - width if anchor == "end" else x - width / 2 if anchor == "middle" else x
            assert lo >= 0 and lo + width <= WIDTH, text
            assert size * 0.8 <= y <= height, text


def test_a_legend_names_every_mark(frames):
    shown = " ".join(t[3] for t in texts(frames[0]["svg"]))
    for words in ("prefill (the prompt)", "decode: one token", "done, slot idles",
                  "in the batch, not run", "requests waiting", "a freed slot refilled",
                  "this iteration", "idle here, refilled in vLLM",
                  "D 4+8@1: 4 prompt + 8 output tokens, arrives in iteration 1"):
        assert words in shown, words


def test_chunked_prefill_toggle_mixes_prefill_and_decode():
    values = dict(W.defaults(), chunked_prefill=True)
    frames = run(W, values)
    assert "vLLM v0.5.5 with chunked prefill" in frames[0]["svg"]
    text = frames[3]["narration"]
    assert "B's decode and D's and E's prompts share this step's 32-token budget: chunked " \
           "prefill mixes them" in text
    assert "prefill-only" not in text


def test_v1_frames_come_from_v1_traces(v1_frames):
    """The switch: the iteration-level timeline is read from the V1 engine's own recorded
    trace (its snapshots say "engine": "v1"), on the same workload and settings."""
    trace = scenario(V1)
    v1 = trace.meta["vllm"]
    assert v1.scheduler == "v1"
    assert all(step.snapshot["engine"] == "v1" for step in v1.trace.steps)
    by_hand = record(make_v1_engine(list(workload(V1)), 3, 32, V1["seed"]), with_slots=False)
    assert from_trace(by_hand, 3, "v1") == v1
    # Each drawn V1 cell is what that V1 step scheduled.
    for column, step in zip(trace.steps, v1.trace.steps[1:]):
        ran = {(c.request_id, c.kind == "prefill", c.tokens)
               for c in column.vllm.slots if c is not None and c.kind != "paused"}
        assert ran == {(s.request_id, s.prefill, s.num_tokens) for s in step.scheduled}
    # The static side is the same as with v0.5.5.
    assert trace.meta["static"] == scenario(W.defaults()).meta["static"]
    assert "vLLM V1: prompts and decodes share a step" in v1_frames[0]["svg"]


def test_v1_narration_names_what_differs(v1_frames):
    text = [f["narration"] for f in v1_frames]
    assert "V1 always chunks prompts, so the chunked-prefill setting does not apply." in text[0]
    assert ("B's decode and D's and E's prompts share this step's 32-token budget: V1 has no "
            "separate prefill step.") in text[3]
    assert "V1: D, B and E decode; B finishes." in text[7]       # one iteration before v0.5.5
    assert "V1 has served every request: mean latency 6.6 iterations" in text[10]
    assert any("Chunked prefill is always on in V1" in d for d in v1_frames[0]["details"])
    assert "V1" in W.params[0].help and "does not apply" in \
        next(p for p in W.params if p.name == "chunked_prefill").help


def test_v1_long_prompts_are_chunked():
    values, errors = validate(W, {"engine": "v1", "prompt_lens": "12-24",
                                  "output_lens": "2-8", "arrival_rate": "0.0"})
    assert not errors
    frames = run(W, values)
    assert frames[0]["narration"] == ("Static: A and B form the first batch and prefill. "
                                      "V1: A, B and C take free slots; A and B prefill; C "
                                      "computes 3 of its 13 prompt tokens.")
    assert "C computes the last 10 of its 13 prompt tokens" in frames[1]["narration"]


def test_the_trace_pairs_both_runs_iterations():
    values = W.defaults()
    trace = scenario(values)
    static, vllm = runs(values)
    assert len(trace) == max(len(static.iterations), len(vllm.iterations)) == 16
    for step in trace:
        assert step.static == (static.iterations[step.index]
                               if step.index < len(static.iterations) else None)
        assert step.vllm == (vllm.iterations[step.index]
                             if step.index < len(vllm.iterations) else None)
    assert trace.last.vllm is None and trace.last.static is not None   # vLLM drained first


def test_context_marks_the_first_contrast_once():
    values = W.defaults()
    trace = scenario(values)
    ctx = context(values, trace)
    assert ctx.columns == 16
    assert ctx.vllm_marks == {"refill": (3, 0)}
    assert ctx.static_marks == {"idle": (3, [0, 2])}
    # view and narrate are pure: the same step gives the same picture and words.
    assert view(trace[3], ctx) == view(trace[3], ctx)
    assert narrate(trace[3], ctx) == narrate(trace[3], ctx)
    assert label(trace[3], ctx) == "iteration 3"
    assert isinstance(view(trace[3], ctx), svg.Figure)


def test_frames_are_deterministic():
    assert run(W, W.defaults()) == run(W, W.defaults())


LINKS = re.findall(r"\(#continuous-batching\.([^)]*)\)", DOC)


def test_the_doc_links_the_switch():
    assert any("engine=v1" in link for link in LINKS)
    assert 'V1 does it differently' not in DOC


@pytest.mark.parametrize("link", LINKS)
def test_doc_permalinks_validate(link):
    raw = dict(kv.split("=", 1) for kv in link.split("&continuous-batching."))
    step = raw.pop("step", None)
    values, errors = validate(W, raw)
    assert not errors, (link, errors)
    if step is not None:
        assert 1 <= int(step) <= len(run(W, values))
