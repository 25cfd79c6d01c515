import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from pages.framework.widget import run, validate
from pages.topics import spec_decode, v1_scheduler
from pages.topics.v1_scheduler import (
    CHARTS,
    WIDGETS,
    build_engines,
    details,
    label,
    narrate,
    pair_facts,
    view,
)
from pages.views import fit
from sim.core.invariants import check_engine as check_v0
from sim.events import Preempted, PrefixCacheHit
from sim.trace import record
from sim.v1.invariants import check_engine as check_v1

W = WIDGETS[0]
S = spec_decode.WIDGETS[0]
ROOT = Path(__file__).resolve().parents[3]
DOC = (ROOT / "docs" / "v1-scheduler.md").read_text(encoding="utf-8")
PREEMPT = {"requests": "10/10,10/10,6/6@3", "num_blocks": "9"}


def values(widget, **raw):
    v, errors = validate(widget, {k: str(x) for k, x in raw.items()})
    assert not errors, errors
    return v


def frames(widget, **raw):
    v = values(widget, **raw)
    trace = widget.scenario(v)
    return v, trace, widget.context(v, trace)


def sentences(text: str) -> list[str]:
    # "v0.5.5" has dots but starts lower case; a sentence starts with a capital.
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text) if s]


# -- the side-by-side widget ---------------------------------------------------------------

def test_both_engines_run_the_same_workload_and_stay_consistent():
    e0, e1 = build_engines(values(W))
    t0 = record(e0, check=check_v0)
    t1 = record(e1, check=check_v1)
    assert all(not s.problems for s in t0) and all(not s.problems for s in t1)
    # The same usable blocks: V1's pool has one more, its null block.
    assert t0[0].snapshot["gpu"]["num_blocks"] == 24
    assert t1[0].snapshot["gpu"]["num_blocks"] == 25 and t1[0].snapshot["null_block"] == 0
    assert [r["request_id"] for r in t0[0].snapshot["requests"]] == list("ABCDE")
    assert len(t0) == 12 and len(t1) == 10       # v0.5.5 needs two more iterations


def test_default_trace_lines_up_by_iteration():
    v, trace, ctx = frames(W)
    assert len(trace) == 12
    assert [label(p) for p in trace][:3] == ["start", "iteration 0", "iteration 1"]
    for p in trace.steps[1:]:
        assert p.v0.step == p.index - 1
        assert p.v1 is None or p.v1.step == p.index - 1
    assert trace[10].v1 is None and trace[11].v1 is None
    assert ctx.ends == {"v0": 10, "v1": 8}


def test_iteration_2_prefill_only_against_one_budget():
    v, trace, ctx = frames(W)
    pair = trace[3]
    f0, f1 = pair_facts(pair, ctx)
    assert f0.prefills == (("C", 20, 0, 20),) and f0.decodes == () and f0.paused == ("A", "B")
    assert f1.decodes == ("A", "B") and f1.prefills == (("C", 20, 0, 20), ("D", 10, 0, 20))
    assert f1.used == 32 and f0.used == 20
    text = narrate(pair, ctx)
    assert text.startswith("Iteration 2: C and D arrive with 20-token prompts.")
    assert "prefill-only step (C's 20 tokens), so A and B skip their decode" in text
    assert "D's 20 tokens do not fit in the 12 left" in text
    assert "first 10 of D's 20, so A and B still get their token" in text
    full = " ".join(details(pair, ctx))
    assert "V1: D computes prompt tokens 0-9 (10 of 20)." in full
    assert "v0.5.5: budget 20 of 32 tokens used (0 decode, 20 prefill)." in full


def test_every_frame_is_at_most_three_sentences_and_names_its_step():
    for raw in ({}, PREEMPT, {"threshold": 8}):
        v, trace, ctx = frames(W, **raw)
        for pair in trace:
            text = narrate(pair, ctx)
            assert len(sentences(text)) <= 3, text
            if pair.index:
                assert text.startswith(label(pair).capitalize() + ":"), text
            assert label(pair) in "".join(view(pair, ctx).body) or pair.index == 0
            assert details(pair, ctx)
            for s in sentences(text) + details(pair, ctx):
                assert " a 8" not in s and " a 11" not in s and "1 blocks" not in s


def test_preemption_permalink_victim_and_prefix_cache():
    """The page's preemption link: V1 preempts B itself in iteration 7, B's freed blocks
    keep their hashes, and in iteration 10 B comes back with a 16-token hit."""
    v, trace, ctx = frames(W, **PREEMPT)
    pre = trace[8]
    assert label(pre) == "iteration 7"
    f0, f1 = pair_facts(pre, ctx)
    (p,) = f1.preempted
    assert (p.request_id, p.needed_by, p.victim_is_self, p.mode) == ("B", "B", True, "recompute")
    cached = [b for b in pre.v1.snapshot["gpu"]["blocks"] if b["ref_count"] == 0 and b["hash"]]
    assert len(cached) == 4
    assert "4 freed blocks keep their hash in the prefix cache" in narrate(pre, ctx)
    back = trace[11]
    assert label(back) == "iteration 10"
    (hit,) = back.v1.of_type(PrefixCacheHit)
    assert (hit.request_id, hit.num_tokens) == ("B", 16)
    text = narrate(back, ctx)
    assert ("re-admits B with a prefix-cache hit on 16 of its 17 tokens, so it computes only 1"
            in text)
    # v0.5.5 recomputes B whole in iteration 11, and preempted C in iteration 4, B in 8.
    f0, _ = pair_facts(trace[12], ctx)
    assert ("B", 17, 0, 17) in f0.prefills
    v0_victims = [(s.step, e.request_id) for s in trace.meta["v0"] for e in s.of_type(Preempted)]
    assert v0_victims == [(4, "C"), (8, "B")]


def test_threshold_cuts_chunks():
    v, trace, ctx = frames(W, threshold=8)
    _, f1 = pair_facts(trace[3], ctx)
    assert f1.prefills == (("C", 8, 0, 20), ("D", 8, 0, 20)) and f1.used == 18


def test_check_rejects_what_an_engine_cannot_run():
    _, errors = validate(W, {"budget": "8"})
    assert "at least 23" in errors["budget"]
    _, errors = validate(W, {"num_blocks": "2"})
    assert "at least 6" in errors["num_blocks"]
    _, errors = validate(W, {"requests": "40/20,40/20,40/20,40/20,40/20,40/20", "budget": "64",
                             "num_blocks": "15"})
    assert "more than 40 iterations" in errors["requests"]


def test_pictures_read_on_a_phone():
    """Every text at least fit.min_size of the view's width, and none runs past it (by the
    monospace estimate)."""
    for widget, raws in ((W, ({}, PREEMPT, {"block_size": 1, "num_blocks": 48, "budget": 64})),
                         (S, ({}, {"requests": "6/16,4/12@2", "block_size": 1},
                              {"block_size": 8, "num_spec": 6}))):
        for raw in raws:
            v, trace, ctx = frames(widget, **raw)
            for step in trace:
                fig = widget.view(step, ctx)
                body = "".join(fig.body)
                for m in re.finditer(r'<text x="([-0-9.]+)" y="[-0-9.]+" font-size="([0-9.]+)"'
                                     r' text-anchor="(\w+)"[^>]*>([^<]*)</text>', body):
                    x, size, anchor, content = (float(m[1]), float(m[2]), m[3],
                                                unquote(m[4]).replace("&#39;", "'"))
                    assert size >= fit.min_size(fig.width), (widget.id, content, size)
                    w = fit.text_width(content, size)
                    left = x - (w if anchor == "end" else w / 2 if anchor == "middle" else 0)
                    assert left >= -1 and left + w <= fig.width + 1, (widget.id, raw, content)


def test_frames_through_the_framework():
    out = run(W, W.defaults())
    assert [f["label"] for f in out][:2] == ["start", "iteration 0"]
    assert all(f["details"] for f in out)
    out = run(S, S.defaults())
    assert out[-1]["label"] == "iteration 8"


def test_charts_render():
    for chart in CHARTS:
        svg_text = chart.render()
        assert svg_text.startswith("<svg") and "v0.5.5" in svg_text
        sizes = [float(x) for x in re.findall(r'font-size="([0-9.]+)"', svg_text)]
        assert min(sizes) >= fit.min_size(v1_scheduler.WIDTH)


# -- speculative decoding -----------------------------------------------------------------------

def test_spec_decode_default_steps():
    v, trace, ctx = frames(S)
    assert len(trace) == 10 and ctx.done == {"A": 8} and ctx.plain_done == {"A": 15}
    rows = lambda i: spec_decode.rows(trace[i], trace[i - 1], ctx.colors, ctx.outputs)  # noqa: E731
    (r,) = rows(1)
    # The prefill: 6 prompt slots plus 3 lookahead slots -> 3 blocks of 4.
    assert (r.written, r.capacity, r.drafts, r.kept) == ((0, 6), 12, 0, 1)
    (r,) = rows(2)
    assert (r.written, r.drafts, r.accepted, r.rejected, r.computed) == ((6, 10), 3, 0, 3, 7)
    assert [spec_decode._slot_state(r, p)[0] for p in range(6, 11)] == [
        "kept", "rejected", "rejected", "rejected", "ahead"]
    (r,) = rows(4)
    assert (r.accepted, r.kept, r.outputs) == (3, 4, 7)
    assert "the model accepts none, so A gains 1 token and slots 7-9 are written again next step" \
        in narrate_s(trace[2], ctx)
    assert "the model accepts all 3, so A gains 4 tokens" in narrate_s(trace[4], ctx)
    assert ("A finishes at iteration 8, against iteration 15 without drafts"
            in narrate_s(trace[9], ctx))
    for step in trace:
        assert len(sentences(spec_decode.narrate(step, ctx))) <= 3
        assert spec_decode.details(step, ctx)


def narrate_s(step, ctx):
    return spec_decode.narrate(step, ctx)


def test_spec_decode_acceptance_changes_steps_not_memory_per_step():
    _, _, all_right = frames(S, acceptance=1.0)
    _, _, none_right = frames(S, acceptance=0.0)
    assert all_right.done == {"A": 4} and none_right.done == {"A": 15}
    assert none_right.plain_done == {"A": 15}
    # Without lookahead the prefill allocates only the prompt's blocks.
    _, trace, ctx = frames(S, lookahead="false")
    (r,) = spec_decode.rows(trace[1], trace[0], ctx.colors, ctx.outputs)
    assert r.capacity == 8


def test_spec_decode_two_requests():
    v, trace, ctx = frames(S, requests="6/16,4/12@2")
    text = spec_decode.narrate(trace[7], ctx)
    assert "B finishes at iteration 6" in text
    assert len(sentences(text)) == 3


# -- the page ---------------------------------------------------------------------------------

def links(widget_id):
    for m in re.finditer(r"\]\(#(" + widget_id + r"\.[^)]*)\)", DOC):
        parts = dict(p.split("=", 1) for p in (x.split(".", 1)[1] for x in m[1].split("&")))
        yield m.start(), parts


def test_doc_links_land_where_the_text_says():
    said = {}
    for widget in (W, S):
        for _, parts in links(widget.id):
            step = int(parts.pop("step", 1))
            raw = {k: unquote(x) for k, x in parts.items()}
            v, errors = validate(widget, raw)
            assert not errors, (widget.id, raw, errors)
            out = run(widget, v)
            assert step <= len(out), (widget.id, raw, step)
            said[(widget.id, tuple(sorted(raw.items())), step)] = out[step - 1]
    frame = said[("v1-scheduler", (), 4)]
    assert frame["label"] == "iteration 2" and "prefill-only" in frame["narration"]
    assert said[("v1-scheduler", (), 5)]["label"] == "iteration 3"
    assert "A, B, C and D skip" in said[("v1-scheduler", (), 7)]["narration"]
    assert "E finishes" in said[("v1-scheduler", (), 10)]["narration"]
    assert "A and B finish" in said[("v1-scheduler", (), 12)]["narration"]
    pre = tuple(sorted({"requests": "10/10,10/10,6/6@3", "num_blocks": "9"}.items()))
    assert "preempts B itself" in said[("v1-scheduler", pre, 9)]["narration"]
    assert "prefix-cache hit on 16" in said[("v1-scheduler", pre, 12)]["narration"]
    assert "accepts none" in said[("spec-decode", (), 3)]["narration"]
    assert "accepts all 3" in said[("spec-decode", (), 5)]["narration"]
    assert "finishes at iteration 8" in said[("spec-decode", (), 10)]["narration"]
    assert "finishes at iteration 4" in said[("spec-decode", (("acceptance", "1.0"),), 6)][
        "narration"]
    assert "finishes at iteration 15" in said[("spec-decode", (("acceptance", "0.0"),), 17)][
        "narration"]


@pytest.mark.parametrize("name", ["v1-ttft", "v1-tbt"])
def test_the_page_shows_the_charts_and_widgets(name):
    assert f"[[chart: {name}]]" in DOC
    assert "[[widget: v1-scheduler]]" in DOC and "[[widget: spec-decode]]" in DOC
