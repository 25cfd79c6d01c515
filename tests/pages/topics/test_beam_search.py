import re
from pathlib import Path

import pytest

from pages.framework.widget import run, validate
from pages.topics.beam_search import CHARTS, WIDGETS, pool_size
from pages.views import fig15
from pages.views.beam_tree import live_beams, tree
from sim.events import BeamSearchStep, BlockAllocated, BlockFreed, CopyOnWrite, Preempted, SeqFreed
from sim.studies.sharing import FIG15_BEAM_TOP_MARGIN, PAPER_FIG15, SharingResult

DOC = (Path(__file__).resolve().parents[3] / "docs" / "beam-search.md").read_text(
    encoding="utf-8")

W = WIDGETS[0]


def values(**kw):
    return dict(W.defaults(), **kw)


GRID = [values(), values(seed=3), values(seed=11, k=6, prompt_len=5, output_len=9),
        values(k=2, block_size=1, prompt_len=3, output_len=5),
        values(k=3, block_size=2, prompt_len=7, output_len=8, seed=5),
        values(k=5, block_size=8, prompt_len=16, output_len=16, seed=2)]


def test_default_trace_tells_the_story():
    frames = run(W, W.defaults())
    assert len(frames) == 9                    # before + 8 iterations: under twenty
    text = [f["narration"] for f in frames]
    assert "takes the best 2k = 8 continuations of the prompt sequence" in text[1]
    assert "4 are kept (A.1, A.2, A.3 and A.4 from A.0)" in text[1]
    assert "block 19 has 4, block 18 has 4" in text[1]
    assert "A.0 is not kept and is freed after the forks. Every block it held" in text[1]
    # Iteration 1: three copies of block 18, two beams gone, two blocks freed.
    assert "A.3 writes into shared block 18: copy-on-write to block 15" in text[2]
    assert "A.11 from A.3" in text[2]
    assert "Their last beam gone, blocks 18 and 16 reach ref count 0." in text[2]
    # Iteration 4: a beam with no candidate among the best 2k.
    assert "A.19 had no candidate among the best 2k, so it is dropped at once" in text[5]
    assert "15, 12" in text[5]
    assert "With n = 1, vLLM returns the best finished beam" in text[-1]
    assert "No live beams: every block is back in the pool." in frames[-1]["svg"]


@pytest.mark.parametrize("v", GRID)
def test_ref_count_equals_live_beams_below(v):
    for step in W.scenario(v):
        snap = step.snapshot
        users = {}
        for s in live_beams(snap):
            for _, num, _ in s["block_table"]:
                users[num] = users.get(num, 0) + 1
        for num, block in enumerate(snap["gpu"]["blocks"]):
            assert block["ref_count"] == users.get(num, 0)
        nodes, order = tree(snap)
        assert sorted(order) == sorted(s["seq_id"] for s in live_beams(snap))
        for node in nodes:
            assert node.ref_count == len(node.leaves)
            for c in node.children:        # a child's beams are a subset of its parent's
                assert set(nodes[c].leaves) <= set(node.leaves)
        if nodes:
            assert len(live_beams(snap)) == v["k"] or not snap["queues"]["running"]


@pytest.mark.parametrize("v", GRID)
def test_a_block_is_freed_exactly_when_its_last_beam_goes(v):
    trace = W.scenario(v)
    for prev, out in zip(trace, trace[1:]):
        before, after = prev.snapshot, out.snapshot
        held_before = {num for s in live_beams(before) for _, num, _ in s["block_table"]}
        holders_after = {}
        for s in live_beams(after):
            for _, num, _ in s["block_table"]:
                holders_after.setdefault(num, []).append(s["seq_id"])
        made = {e.physical for e in out.events if isinstance(e, BlockAllocated)} | \
            {e.dst for e in out.events if isinstance(e, CopyOnWrite)}
        freed = [e.physical for e in out.events if isinstance(e, BlockFreed)]
        assert len(freed) == len(set(freed))
        # Every block that had users (before or made during the step) and has none now was
        # freed in this step, and every freed block has no user now.
        assert (held_before | made) - set(holders_after) == set(freed)
        # A freed block's beams are all gone (or copied their way off it, copy-on-write,
        # before the last of them was dropped).
        gone = {e.seq_id for e in out.events if isinstance(e, SeqFreed)}
        for num in freed:
            users = {s["seq_id"] for s in live_beams(before)
                     if any(n == num for _, n, _ in s["block_table"])}
            copied_off = {e.seq_id for e in out.events
                          if isinstance(e, CopyOnWrite) and e.src == num}
            # A block made in this step (a new block, a copy) belongs to the beam it was
            # made for.
            makers = {e.seq_id for e in out.events if isinstance(e, CopyOnWrite)
                      and e.dst == num} | {sid for e in out.events
                                           if isinstance(e, BlockAllocated)
                                           and e.physical == num for sid in e.seq_ids}
            last = (users - copied_off) | makers
            assert last and last <= gone, "a block is freed only when its last beam goes"


@pytest.mark.parametrize("v", GRID[:3])
def test_candidates_are_drawn_best_first(v):
    frames = run(W, v)
    for out, frame in zip(W.scenario(v)[1:], frames[1:]):
        [step] = out.of_type(BeamSearchStep)
        assert len(step.candidates) == 2 * v["k"]
        scores = [c.cumulative_logprob for c in step.candidates]
        assert scores == sorted(scores, reverse=True)
        kept = sum(c.outcome != "pruned" for c in step.candidates)
        assert kept == v["k"]
        assert frame["svg"].count(": pruned (not among the best") == 2 * v["k"] - kept
        assert frame["svg"].count(", carried on by A.") == kept


def test_validation_messages():
    _, errors = validate(W, {"k": "1", "output_len": "17"})
    assert errors["k"] == "beam width k: a whole number from 2 to 6"
    assert errors["output_len"] == "output length: a whole number from 1 to 16"
    _, errors = validate(W, {"block_size": "1", "prompt_len": "6", "output_len": "8"})
    assert "fit in 8 blocks per beam" in errors["block_size"]
    _, errors = validate(W, {"k": "6", "prompt_len": "24", "output_len": "8"})
    assert "must be at most 40" in errors["k"]


def test_frames_are_deterministic_and_titled():
    a = run(W, W.defaults())
    assert a == run(W, W.defaults())
    for frame in a:
        assert frame["svg"].startswith("<svg") and "viewBox" in frame["svg"]
    assert len(re.findall("<title>", a[3]["svg"])) > 20
    # Every tree node carries a hover text naming its block and its ref count.
    assert "GPU block 19: logical block 0 of A.12, A.13, A.14, A.15" in a[3]["svg"]
    assert run(W, values(seed=3)) != a                 # the seed grows another tree


def test_fig15_chart_is_registered():
    assert CHARTS[0].id == "fig15-beam"
    assert "beam search" in CHARTS[0].title
    assert CHARTS[0].caption == fig15.caption("beam")
    assert CHARTS[0].caption.startswith("60 Alpaca-like requests")
    # The caption states the calibration: what, its value, how chosen, and what it changed.
    caption = CHARTS[0].caption
    assert "top-token margin (beam_top_margin" in caption
    assert f"is {FIG15_BEAM_TOP_MARGIN:g}, the value on a grid of 2 to 4 nats" in caption
    assert "least squares) on 5 workloads of 200 requests pooled" in caption
    assert "Without it (margin 0) these requests save 42.9, 63.2 and 69.3%." in caption
    assert "calibrat" not in fig15.caption("parallel")


def cells(svg: str) -> list[str]:
    return re.findall(r">([^<>]+)</text>", svg)


def test_fig15_panel_puts_paper_and_sim_side_by_side():
    fake = {w: SharingResult("beam", w, 10, 10, 50, 100, 6, 10) for w in (2, 4, 6)}
    svg = fig15.panel("beam", fake)
    text = cells(svg)
    # One row per k: k, the paper, the simulation, the gap, the saving at peak.
    head = text.index("k", text.index("paper, Fig. 15"))
    assert text[head:head + 5] == ["k", "paper", "sim, avg", "sim \u2212 paper", "sim, peak"]
    for i, w in enumerate((2, 4, 6)):
        paper = 100 * PAPER_FIG15["beam"][w]
        row = text[head + 5 * (i + 1):head + 5 * (i + 2)]
        gap = f"{50 - paper:+.1f}".replace("-", "\u2212")
        assert row == [str(w), f"{paper:.2f}%", "50.0%", f"{gap} points", "40.0%"]
    assert text[-1] == (f"sim: stand-in model with a top-token margin of "
                        f"{FIG15_BEAM_TOP_MARGIN:g} nats, calibrated once for all k")
    assert_readable(svg)
    # Panel (a), parallel sampling, has the same table and the same limits.
    par = fig15.panel("parallel", {w: SharingResult("parallel", w, 10, 10, 90, 100, 9, 10)
                                   for w in (2, 4, 6)})
    text = cells(par)
    head = text.index("n", text.index("paper, Fig. 15"))
    assert text[head:head + 5] == ["n", "paper", "sim, avg", "sim \u2212 paper", "sim, peak"]
    assert "calibrated" not in par
    assert_readable(par)


def assert_readable(svg: str) -> None:
    """Readable at 400 units wide: no text under 10 units, none past either edge."""
    assert 'viewBox="0 0 400 ' in svg
    assert min(float(f) for f in re.findall(r'font-size="([\d.]+)"', svg)) >= 10
    # (Width of a text estimated at 0.45 of its size per character, about Helvetica's mean.)
    for tag, words in re.findall(r"(<text [^>]*>)([^<]*)<", svg):
        if "rotate(" in tag:
            continue                                    # the y axis title, along the axis
        x, size, anchor = (re.search(f'{name}="([^"]+)"', tag).group(1)
                           for name in ("x", "font-size", "text-anchor"))
        width = 0.45 * float(size) * len(words)
        left = {"start": float(x), "middle": float(x) - width / 2, "end": float(x) - width}[anchor]
        assert 0 <= left and left + width <= 400, words


def test_the_page_quotes_the_reproduction():
    """docs/beam-search.md quotes the chart's numbers and the calibration; hold it to them."""
    text = cells(CHARTS[0].render())
    head = text.index("sim, peak")
    sims = [text[head + 5 * i + 3] for i in (0, 1, 2)]             # "33.0%", ...
    assert re.sub(r"\s+", " ", f"**{sims[0]}, {sims[1]} and {sims[2]}**") in re.sub(
        r"\s+", " ", DOC)
    flat = re.sub(r"\s+", " ", DOC)
    assert f"That is **{FIG15_BEAM_TOP_MARGIN:g} nats**" in flat
    assert "**42.9%, 63.2% and 69.3%**" in flat
    assert "**37.56%, 53.13% and 55.16%**" in flat
    for s, w in zip(sims, (2, 4, 6)):
        assert abs(float(s[:-1]) - 100 * PAPER_FIG15["beam"][w]) < 5


@pytest.mark.parametrize("v", GRID)
def test_the_pool_is_sized_so_that_nothing_is_preempted(v):
    trace = W.scenario(v)
    assert trace.stopped is None
    assert [e for step in trace for e in step.of_type(Preempted)] == []
    assert trace[0].snapshot["gpu"]["num_blocks"] == pool_size(v)
    assert trace.last.snapshot["gpu"]["num_free"] == pool_size(v)   # everything came back


def test_view_and_narrate_are_pure_functions_of_the_step():
    v = W.defaults()
    trace = W.scenario(v)
    ctx = W.context(v, trace)
    frames = run(W, v)
    # Any step drawn alone, in any order, says what the whole run says about it.
    for step in reversed(trace.steps):
        assert W.narrate(step, ctx) == frames[step.index]["narration"]
        assert W.view(step, ctx).body == W.view(step, W.context(v, trace)).body
    assert [step.kind for step in trace] == ["before", "prefill"] + ["decode"] * 7
    # Every sequence has its name, even a beam that lived only inside one step.
    named = set(ctx.labels)
    for step in trace:
        for e in step.of_type(BeamSearchStep):
            assert {c.parent_seq_id for c in e.candidates} <= named
