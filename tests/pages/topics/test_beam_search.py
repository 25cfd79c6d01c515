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


def sentences(text: str) -> int:
    return len(re.findall(r"[.!?](?:\s|$)", text))


def test_default_trace_tells_the_story():
    frames = run(W, W.defaults())
    assert len(frames) == 9                    # before + 8 iterations: under twenty
    assert [f["label"] for f in frames] == ["start"] + [f"iteration {i}" for i in range(8)]
    text = [f["narration"] for f in frames]
    assert text[1] == ("Iteration 0: A's 6-token prompt runs once, as A.0, into blocks 19 and "
                       "18; its best 8 next tokens are the candidates. The best 4 become A.1, "
                       "A.2, A.3 and A.4, forked from A.0; then A.0 itself is freed. Blocks 19 "
                       "and 18 now have ref count 4: sharing saves 6 of 8 blocks (75%).")
    # Iteration 1: the selection, then the forks, then the frees, then the blocks that went.
    assert text[2] == ("Iteration 1: The best 4 of the 8 candidates come from A.1 (3) and A.3 "
                       "(1), none from A.2 or A.4. A.8 and A.9 fork from A.1, A.11 from A.3, "
                       "A.1 continues itself; then A.2, A.3 and A.4 are freed. Blocks 18 and 16 "
                       "lose their last beam and return to the pool (16 was A.2's copy from "
                       "this iteration); sharing saves 5 of 8 blocks (62%).")
    # Iteration 4: a beam with no candidate among the best 2k goes first.
    assert "A.19, with no candidate at all, is dropped first; A.20 and A.21 fork" in text[5]
    assert "Blocks 15, 12 and 16 lose their last beam" in text[5]
    assert ("with n = 1, vLLM returns the best, A.33 (cumulative logprob -5.87)") in text[-1]
    for t in text:
        assert sentences(t) <= 3, t
    # The full account, in the engine's order: copies, selection, forks, frees.
    d = frames[2]["details"]
    order = [next(i for i, line in enumerate(d) if line.startswith(head)) for head in (
        "A.3 writes into shared block 18: copy-on-write to block 15",
        "The sampler takes the best 2k = 8",
        "A.8 and A.9 fork from A.1, sharing blocks 19 and 17.",
        "A.2, A.3 and A.4 are not kept and are freed after the forks.",
        "Their last beam gone, blocks 18 and 16 reach ref count 0")]
    assert order == sorted(order)
    assert "A.11 from A.3" in d[order[1]]
    assert "Ref count = live beams below in the tree: block 19 has 4, block 17 has 3." in d
    d = frames[5]["details"]
    assert ("A.19 had no candidate among the best 2k, so it is dropped at once, before any fork; "
            "blocks 15 and 12 go back to the free list.") in d
    assert "With n = 1, vLLM returns the best finished beam, A.33 (cumulative logprob -5.87)." \
        in frames[-1]["details"]
    assert ">No live beams: every block is back in the" in frames[-1]["svg"]   # (wrapped)


def test_the_picture_names_the_step_and_explains_its_marks():
    frames = run(W, W.defaults())
    assert "Start (before the first iteration)</text>" in frames[0]["svg"]
    assert "Iteration 4 (decode)</text>" in frames[5]["svg"]
    # The first frame shows the prompt in its blocks and what each iteration will do.
    assert "The prompt&#39;s 6 tokens in 2 blocks of 4:" in frames[0]["svg"]
    for frame in frames:
        svg = frame["svg"]
        assert "Key:</text>" in svg and "new this step</text>" in svg
        assert "freed this step</text>" in svg and "shared by several tables</text>" in svg
        assert min(float(f) for f in re.findall(r'font-size="([\d.]+)"', svg)) >= 13.5
    for frame in frames[1:]:
        assert ">2k = 8 candidates, best first: kept in their<" in frame["svg"]
        assert "pruned dashed</text>" in frame["svg"]
    # Every live beam keeps its name in the tree, on a phone too: labels end inside 400 units.
    for step, frame in zip(W.scenario(W.defaults())[1:-1], frames[1:-1]):
        names = re.findall(r">(A\.\d+) -?\d+\.\d\d</text>", frame["svg"])
        assert sorted(names) == sorted(f"A.{s['seq_id']}" for s in live_beams(step.snapshot))


@pytest.mark.parametrize("v", [values(k=2), values(output_len=1), values(output_len=2),
                               values(k=6, prompt_len=5, output_len=9, seed=11)])
def test_grammar_and_length_across_settings(v):
    for frame in run(W, v):
        assert sentences(frame["narration"]) <= 3, frame["narration"]
        words = frame["narration"] + " ".join(frame["details"])
        for slip in ("1 blocks", "All 2 ", "all 2 ", "1 kept candidates", "a 8-", "an 6-"):
            assert not re.search(rf"(?<![\d.]){slip}", words), slip


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
    note = " ".join(text[text.index("sim, peak") + 16:])     # after the three rows, wrapped
    assert note == (f"sim: stand-in model with a top-token margin of "
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
    """Readable on a phone: 400 units wide (about 330 px there), no text under 13.5 units
    (11 px), none past either edge (monospace: a character is 0.61 of its size)."""
    assert 'viewBox="0 0 400 ' in svg
    assert min(float(f) for f in re.findall(r'font-size="([\d.]+)"', svg)) >= 13.5
    for tag, words in re.findall(r"(<text [^>]*>)([^<]*)<", svg):
        if "rotate(" in tag:
            continue                                    # the y axis title, along the axis
        x, size, anchor = (re.search(f'{name}="([^"]+)"', tag).group(1)
                           for name in ("x", "font-size", "text-anchor"))
        width = 0.61 * float(size) * len(words.replace("&#39;", "'"))
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
