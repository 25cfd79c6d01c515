import re

import pytest

from pages.framework.widget import run, validate
from pages.topics.parallel_sampling import CHARTS, WIDGETS, pool_size, sample_colors
from pages.views import fig15
from sim.events import CopyOnWrite, Preempted
from sim.studies.sharing import PAPER_FIG15, SharingResult, usage_from_snapshot

W = WIDGETS[0]


def values(**kw):
    return dict(W.defaults(), **kw)


def snapshots(v):
    return [step.snapshot for step in W.scenario(v)]


def sentences(text: str) -> int:
    """Sentences in a narration: a full stop, a question or an exclamation mark before a
    space or the end ("best_of - 1" and "A.0" do not end one)."""
    return len(re.findall(r"[.!?](?:\s|$)", text))


def test_default_trace_tells_the_story():
    frames = run(W, W.defaults())
    assert len(frames) == 7                    # before + 6 iterations: under twenty
    text = [f["narration"] for f in frames]
    assert [f["label"] for f in frames] == ["start"] + [f"iteration {i}" for i in range(6)]
    assert text[0].startswith("Start: request A asks for n = 3 samples of a 7-token prompt; in "
                              "blocks of 4 it fills 1 block and 3 slots of one more.")
    # Iteration 0: cause (one prompt run), effect (the forks), consequence (the shared
    # partial block will be copied).
    assert text[1] == ("Iteration 0: A's 7-token prompt runs once, as one sequence, A.0, into "
                       "blocks 14 and 13. The sampler draws n = 3 first tokens, so A.1 and A.2 "
                       "fork from A.0: the tables point at the same blocks, now at ref count 3. "
                       "Block 13 holds 3 of 4 tokens and every sample's next token belongs in "
                       "it, so the next iteration copies it for all but one.")
    # Iteration 1: parent first, then each child; the last writes in place.
    assert text[2] == ("Iteration 1: Every sample's next token belongs in block 13, which all 3 "
                       "share. A.0 and A.1 write first, so each gets a copy (blocks 12 and 11: "
                       "copy-on-write); A.2, the last, finds ref count 1 and writes in place. "
                       "That is 2 copies, best_of - 1, once per request; sharing now saves 2 "
                       "of 6 blocks (33%).")
    # Iteration 2: each sample's own new block.
    assert text[3].startswith("Iteration 2: The last blocks of A.0, A.1 and A.2 are full (4 of "
                              "4 slots). Each next token starts logical block 2 in a block of "
                              "its own (blocks 10, 9 and 8).")
    # Plain decodes differ by the average, which falls as the samples grow.
    assert "33% averaged so far" in text[4] and "31% averaged so far" in text[5]
    assert text[6].startswith("Iteration 5: A.0, A.1 and A.2 have generated their 6 tokens "
                              "(max_tokens), so A finishes.")
    assert "sharing saved 31% of the blocks 3 independent copies would have held" in text[6]
    for frame in frames:
        assert sentences(frame["narration"]) <= 3, frame["narration"]
    # The full account is one click away: every event, in order.
    details = [f["details"] for f in frames]
    assert "A prefills (7 tokens -> blocks 14 and 13)" in " ".join(details[1])
    assert "A.1 and A.2 fork from A.0, sharing blocks 14 and 13." in details[1]
    assert ("The prompt's last block, block 13, holds 3 of 4 tokens and is shared by 3 samples "
            "(ref count 3)") in " ".join(details[1])
    assert "Blocks in use: 2; 3 independent copies would hold 6, so sharing saves 4 (67%)." \
        in details[1]
    assert details[2][1:4] == ["A.0 writes into shared block 13: copy-on-write to block 12.",
                               "A.1 writes into shared block 13: copy-on-write to block 11.",
                               "A.2 then finds block 13 with ref count 1 and writes in place: 2 "
                               "copies in all, best_of - 1."]
    assert ("The last blocks of A.0, A.1 and A.2 were full, so each new token starts logical "
            "block 2 (physical blocks 10, 9 and 8).") in details[3]
    assert "return to the free list" in " ".join(details[-1])


def test_the_picture_names_the_step_as_the_counter_does_and_has_a_legend():
    frames = run(W, W.defaults())
    assert "Start (before the first iteration)</text>" in frames[0]["svg"]
    assert "Iteration 1 (decode)</text>" in frames[2]["svg"]
    for frame in frames:
        svg = frame["svg"]
        assert "Key:</text>" in svg and "new this step</text>" in svg
        assert "shared by several tables</text>" in svg
        assert "One sample&#39;s blocks:</text>" in svg
        for name in ("A.0", "A.1", "A.2"):
            assert f">{name}</text>" in svg
        # No text under 13.5 units: 11 px on a phone that draws 400 units 330 px wide.
        assert min(float(f) for f in re.findall(r'font-size="([\d.]+)"', svg)) >= 13.5
    # The first frame shows the prompt laid out in its blocks, not an empty picture.
    assert "The prompt&#39;s 7 tokens in 2 blocks of 4:" in frames[0]["svg"]
    assert "copied.</text>" in frames[0]["svg"]          # (the note wraps)


@pytest.mark.parametrize("v", [values(n=1), values(n=1, output_len=1), values(n=2),
                               values(block_size=1, prompt_len=1, output_len=1, n=6),
                               values(prompt_len=9, block_size=16, n=2)])
def test_grammar_for_one_and_two(v):
    text = " ".join(f["narration"] + " " + " ".join(f["details"]) for f in run(W, v))
    for slip in ("1 independent copies", "1 slots", "1 blocks", "all 2 ", "all 1 ", "a 8-",
                 "an 7-", "n = 1 samples", "which 1 "):
        assert not re.search(rf"(?<![\d.]){slip}", text), slip
    if v["n"] == 1:
        assert "one sample of a 7-token prompt" in text and "nothing is forked" in text


@pytest.mark.parametrize("n", [1, 2, 3, 6])
@pytest.mark.parametrize("prompt_len, block_size", [(7, 4), (8, 4), (5, 2), (6, 1), (9, 16)])
def test_copies_and_the_boundary_case(n, prompt_len, block_size):
    v = values(n=n, prompt_len=prompt_len, block_size=block_size, output_len=3)
    cows = [e for step in W.scenario(v) for e in step.of_type(CopyOnWrite)]
    frames = run(W, v)
    text = " ".join(f["narration"] + " " + " ".join(f["details"]) for f in frames)
    if prompt_len % block_size == 0:
        assert cows == []
        if n > 1:
            assert "nothing will ever be copied" in text
            assert "nothing will be copied" in frames[1]["narration"]
    else:
        assert [e.seq_id for e in cows] == list(range(n - 1))   # parent first, then children
        if n > 1:
            assert f"{n - 1} cop{'y' if n == 2 else 'ies'} in all, best_of - 1" in text
            assert f"That is {n - 1} cop{'y' if n == 2 else 'ies'}, best_of - 1" in text
    assert all(sentences(f["narration"]) <= 3 for f in frames)


@pytest.mark.parametrize("v", [values(), values(n=6, prompt_len=10, output_len=4),
                               values(block_size=1, prompt_len=8, output_len=4),
                               values(prompt_len=8)])
def test_ref_counts_equal_live_users_and_are_drawn(v):
    frames = run(W, v)
    for snap, frame in zip(snapshots(v), frames):
        users = {}
        for r in snap["requests"]:
            for s in r["seqs"]:
                for _, num, _ in s["block_table"]:
                    users[num] = users.get(num, 0) + 1
        for num, block in enumerate(snap["gpu"]["blocks"]):
            assert block["ref_count"] == users.get(num, 0)
            if block["ref_count"] > 1:
                assert f"GPU block {num}: " in frame["svg"]
                assert f"ref count {block['ref_count']} (" in frame["svg"]
        u = usage_from_snapshot(snap)
        if u.unshared:
            assert f"saved now: {u.saved} of {u.unshared}" in frame["svg"]


def test_shared_blocks_and_own_blocks_have_their_colours():
    frames = run(W, W.defaults())
    snap = snapshots(W.defaults())[3]
    colors = sample_colors(snap)
    assert set(colors.values()) == {"seq-1", "seq-2", "seq-3"}
    svg = frames[3]["svg"]
    assert "var(--vsb-accent)" in svg            # block 14, still shared
    assert all(f"var(--vsb-{c})" in svg for c in colors.values())
    assert "\u2190#13" in frames[2]["svg"]        # the copy-on-write label ("copy #13" when wide)


def test_time_averaged_saving_matches_the_sim_formula():
    frames = run(W, W.defaults())
    used = unshared = 0
    for snap, frame in zip(snapshots(W.defaults())[1:], frames[1:]):
        u = usage_from_snapshot(snap)
        used += u.used
        unshared += u.unshared
        avg = SharingResult("parallel", 3, 1, 1, used, unshared, 0, 1).time_averaged
        assert f"time-averaged so far: {100 * avg:.0f}%" in frame["svg"]


def test_validation_messages():
    _, errors = validate(W, {"n": "0", "prompt_len": "x", "block_size": "17"})
    assert errors["n"] == "n (samples): a whole number from 1 to 6"
    assert errors["prompt_len"] == "prompt length: a whole number from 1 to 32"
    assert errors["block_size"] == "block size: a whole number from 1 to 16"
    _, errors = validate(W, {"n": "6", "prompt_len": "32", "output_len": "16"})
    assert "must be at most 40" in errors["n"] and "6 x 13 = 78" in errors["n"]


def test_frames_are_deterministic_escaped_and_titled():
    a = run(W, W.defaults())
    assert a == run(W, W.defaults())
    for frame in a:
        assert frame["svg"].startswith("<svg") and "viewBox" in frame["svg"]
        assert "<script" not in frame["svg"]
    assert len(re.findall("<title>", a[2]["svg"])) > 15
    # The seed changes token ids only, never the blocks.
    b = run(W, values(seed=7))
    assert [f["narration"] for f in a] == [f["narration"] for f in b]


def test_fig15_chart_shows_paper_and_sim():
    fake = {w: SharingResult("parallel", w, 10, 10, 90, 100, 9, 10) for w in (2, 4, 6)}
    svg = fig15.panel("parallel", fake)
    for value in PAPER_FIG15["parallel"].values():
        assert f"{100 * value:.2f}%" in svg
    assert "10.0%" in svg                        # the sim's (fake) saving
    assert CHARTS[0].id == "fig15-parallel"
    assert CHARTS[0].caption == fig15.caption("parallel")
    assert CHARTS[0].caption.startswith("200 Alpaca-like requests")


@pytest.mark.parametrize("v", [values(), values(n=6, prompt_len=10, output_len=4),
                               values(n=1, block_size=2, prompt_len=32, output_len=16),
                               values(n=5, prompt_len=4, output_len=3, block_size=16)])
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
        assert W.narrate(step, ctx) == W.narrate(step, W.context(v, trace))
        assert W.details(step, ctx) == frames[step.index]["details"]
        assert W.label(step, ctx) == frames[step.index]["label"]
        figure = W.view(step, ctx)
        assert figure.body == W.view(step, ctx).body
    assert [step.kind for step in trace] == ["before", "prefill"] + ["decode"] * 5
