"""pages/topics/fragmentation.py: the four-policy widget and the Fig. 2 reproduction chart."""
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pages.framework.widget import respond, run, to_json, validate
from pages.topics import fragmentation as page
from pages.views import fit, svg
from sim.studies.fragmentation import (
    FIG2_CATEGORIES,
    PAPER_FIG2,
    PAPER_TOKEN_STATE_SHARE,
    reproduce_fig2,
)

W = page.WIDGET
NS = "{http://www.w3.org/2000/svg}"


def texts(svg_text: str) -> str:
    root = ET.fromstring(svg_text)
    return re.sub(r"\s+", " ", " ".join("".join(t.itertext()) for t in root.iter(NS + "text")))


def titles(svg_text: str) -> list[str]:
    return [t.text for t in ET.fromstring(svg_text).iter(NS + "title")]


# ------------------------------------------------------------------------ the request list

def test_requests_use_the_shared_syntax_and_round_trip():
    reqs = page.REQUESTS.parse(" 5/11@0, 6/4 ,8 / 8 @ 3")
    assert [tuple(r)[:3] for r in reqs] == [(5, 11, 0), (6, 4, 0), (8, 8, 3)]
    assert page.REQUESTS.format(reqs) == "5/11, 6/4, 8/8@3"
    assert page.REQUESTS.parse(page.REQUESTS.format(reqs)) == reqs
    assert [s.request_id for s in page.to_specs(reqs)] == ["A", "B", "C"]


def test_the_docs_request_permalink_parses():
    link = "3/3@0,3/3@0,3/3@0,3/3@0,20/4@1,3/3@2,3/3@3,3/3@4"
    values, errors = validate(W, {"requests": link})
    assert not errors and len(values["requests"]) == 8


@pytest.mark.parametrize("text, message", [
    ("", "1 to 10 requests"),
    (",".join(["2/2"] * 11), "1 to 10 requests"),
    ("5-11", "request 1 should look like 7/3 or 5/3@4"),
    ("<b>5</b>/3", "request 1 should look like 7/3 or 5/3@4"),
    ("5+11", "request 1 should look like 7/3 or 5/3@4"),
    ("2/2, 0/3", "request 2: prompt and output lengths must be from 1 to 63"),
    ("40/30", "request 1: prompt + output must be at most 64 tokens"),
    ("2/2@61", "request 1: the arrival step must be at most 60"),
])
def test_bad_requests_name_the_field_and_what_is_allowed(text, message):
    _, errors = validate(W, {"requests": text})
    assert errors["requests"].startswith("requests: ") and message in errors["requests"]


def test_cross_field_checks():
    _, errors = validate(W, {"requests": "20/20"})
    assert errors == {"requests": "requests: A has 40 tokens; at most max_model_len (32)"}
    _, errors = validate(W, {"pool": "48", "max_len": "40", "requests": "4/4"})
    assert errors == {"max_len": "max_model_len: Orca (Max) needs a chunk of 64 slots; the "
                                 "largest a pool of 48 slots has is 32"}
    _, errors = validate(W, {"pool": "16", "block_size": "16", "max_len": "16",
                             "requests": "8/8"})
    assert list(errors) == ["pool"] and "can never hold it" in errors["pool"]
    _, errors = validate(W, {"requests": ",".join(["16/16@0"] * 10), "pool": "64"})
    assert "steps to serve; at most 80" in errors["requests"]
    _, errors = validate(W, {"pool": "300", "block_size": "0"})
    assert errors == {"pool": "pool slots: a whole number from 16 to 128",
                      "block_size": "block size (vLLM): a whole number from 1 to 16"}


# ----------------------------------------------------------------------- the default story

@pytest.fixture(scope="module")
def frames():
    return run(W, W.defaults())


@pytest.fixture(scope="module")
def runs():
    return page.scenario(W.defaults()).meta["runs"]


def test_the_trace_pairs_the_four_runs_step_by_step(runs):
    trace = page.scenario(W.defaults())
    assert len(trace) == max(len(r.steps) for r in runs)
    for step in trace:
        assert [rec.step if rec else None for rec in step.records] == \
            [step.index if step.index < len(r.steps) else None for r in runs]
    # vLLM finishes first: its record is None once it has served every request.
    assert trace.last.records[3] is None and trace.last.records[0] is not None


def sentences(text: str) -> int:
    return len(re.findall(r"[.!?](?:\s|$)", text))


def test_view_and_narration_of_one_step():
    values = W.defaults()
    trace = page.scenario(values)
    ctx = page.context(values, trace)
    assert ctx.colors == {rid: f"seq-{i}" for i, rid in enumerate("ABCDEF")}
    picture = svg.documents([page.view(trace[6], ctx)])[0]
    assert picture.startswith("<svg") and texts(picture).startswith("step 6")
    assert page.label(trace[6], ctx) == "step 6"
    assert page.narrate(trace[6], ctx) == page.narrate(trace[6], ctx)


def test_one_frame_per_step_and_one_numbering(frames, runs):
    assert len(frames) == max(len(r.steps) for r in runs)
    assert [r.label for r in runs] == list(PAPER_TOKEN_STATE_SHARE)
    for i, f in enumerate(frames):
        assert f["label"] == f"step {i}"
        assert texts(f["svg"]).startswith(f"step {i} ")      # the picture's heading
    # Every frame has the same height, so the bars stay in place from step to step.
    assert len({re.search(r'viewBox="([^"]+)"', f["svg"])[1] for f in frames}) == 1


def test_narration_is_short_causal_and_the_details_complete(frames):
    for f in frames:
        assert 1 <= sentences(f["narration"]) <= 3, f["narration"]
        assert len(f["details"]) >= 4
    assert frames[6]["narration"] == (
        "F arrives (3+5 tokens); D finishes under Orca (Oracle) and vLLM. vLLM admits F. "
        "Orca (Oracle) refuses E although 32 slots are free: the buddy allocator needs one "
        "free chunk of 32, and the largest is 16.")
    assert ("Orca (Oracle): D finishes and frees its memory; refuses E although 32 slots are "
            "free: it asks for 22, the buddy allocator needs one free chunk of 32, and the "
            "largest is 16 (external fragmentation).") in frames[6]["details"]
    assert ("Orca (Oracle)'s pool: 25 token states, 7 reserved, 0 internal and 32 external "
            "fragmentation, 0 free.") in frames[6]["details"]


def test_refused_although_free_is_marked_within_the_first_steps(frames, runs):
    oracle = runs[2]
    marked = [r.step for r in oracle.steps if r.refused_although_free]
    assert marked and marked[0] < 10
    step = marked[0]
    shown = texts(frames[step]["svg"])
    r = oracle.steps[step].refusal
    assert (f"✗ {r.request_id} refused: {r.free_slots} free, largest chunk "
            f"{r.largest_free_chunk} < {r.chunk_slots}") in shown
    # The message appears only on steps with such a refusal.
    for i, f in enumerate(frames):
        flagged = any(i < len(run.steps) and run.steps[i].refused_although_free for run in runs)
        assert (" refused: " in texts(f["svg"])) == flagged
        assert ("stroke-dasharray:5 3" in f["svg"]) == flagged        # the dashed outline


def test_vllm_admits_what_oracle_must_refuse(frames, runs):
    vllm = runs[3]
    assert not any(r.refusal for r in vllm.steps)
    assert "vLLM admits E." in frames[5]["narration"]
    assert len(vllm.steps) < min(len(r.steps) for r in runs[:3])


def test_each_bar_covers_the_pool_and_numbers_match_the_accounting(frames, runs):
    pool = W.defaults()["pool"]
    for i, f in enumerate(frames):
        shown = texts(f["svg"])
        for policy_run in runs:
            if i >= len(policy_run.steps):
                continue
            rec = policy_run.steps[i]
            b = rec.breakdown
            assert sum(b[:5]) == pool
            for line in page.number_lines(page.numbers(b)):
                assert line in shown
            assert f"{b.token_states} tokens" in shown and f"{b.free} free" in shown
            assert sum(seg.size for seg in rec.layout) == pool
        # Every segment drawn has a tooltip naming its category and slots.
        seg_tips = [t for t in titles(f["svg"]) if re.search(r": slots \d+-\d+ \(\d+\)$", t)]
        assert len(seg_tips) == sum(len(r.steps[i].layout) if i < len(r.steps) else 1
                                    for r in runs)
    assert page.number_lines(page.numbers(runs[2].steps[6].breakdown)) == [
        "25 tokens · 7 reserved · 32 external · 0 free"]


def test_narration_comes_from_the_events(frames, runs):
    assert frames[0]["narration"] == (
        "A, B and C arrive (5+11, 6+4 and 8+8 tokens). Every policy but Orca (Max) admits A, "
        "B and C; Orca (Max) admits A and B. Orca (Max) makes C wait: no slot is free for "
        "its 32-slot chunk.")
    assert "Orca (Max): admits A into a 32-slot chunk at slot 0; admits B into a 32-slot " \
           "chunk at slot 32; C waits (0 slots free, 32 needed)." in frames[0]["details"]
    # A plain wait is told once, not every step.
    assert "C wait" not in frames[1]["narration"]
    assert frames[2]["narration"].startswith("Every running request stores one more token: "
                                             "reserved slots turn into token states")
    assert "Token states fill 23% (Max), 39% (Pow2), 48% (Oracle) and 48% (vLLM) of the " \
           "pool." in frames[2]["narration"]
    assert "vLLM has served every request." in frames[-1]["details"]


def test_buddy_rounding_is_drawn_and_told_as_external_fragmentation(frames, runs):
    # Oracle's B (6 + 4 tokens) asks for 10 slots and gets a chunk of 16 at slot 16: its
    # last 6 slots are the allocator's rounding, external fragmentation inside B's chunk.
    assert ("Orca (Oracle): admits A into a 16-slot chunk at slot 0; admits B into a 16-slot "
            "chunk at slot 16 (10 asked; 6 rounded up, external fragmentation)"
            ) in " ".join(frames[0]["details"])
    assert ("Orca (Oracle) asks 22 slots for E and the buddy allocator gives it a 32-slot "
            "chunk: 10 slots of external fragmentation.") in frames[8]["narration"]
    assert "B, external frag. (buddy rounding): slots 26-31 (6)" in titles(frames[0]["svg"])
    oracle, vllm = runs[2], runs[3]
    assert oracle.steps[0].breakdown.external_rounding == 6         # A and C fill 16 exactly
    # The paper's accounting: Oracle never has internal fragmentation; vLLM never reserves,
    # and its blocks' unfilled tails are internal fragmentation.
    assert all(r.breakdown.internal_fragmentation == 0 for r in oracle.steps)
    assert all(r.breakdown.reserved == 0 for r in vllm.steps)
    assert vllm.steps[0].breakdown.internal_fragmentation == 3 + 2 + 0   # A 5/8, B 6/8, C 8/8
    assert "A, internal frag.: slots" in " ".join(titles(frames[0]["svg"]))


def test_grammar_of_chunks():
    # "an 8-slot chunk", never "a 8-slot".
    values, errors = validate(W, {"requests": "3/3@0,3/3@0,3/3@0,3/3@0,20/4@1,3/3@2,3/3@3,"
                                              "3/3@4"})
    frames = run(W, values)
    words = " ".join(f["narration"] + " ".join(f["details"]) for f in frames)
    assert "an 8-slot chunk" in words and "a 8-" not in words


def test_preemption_is_told_before_the_admission():
    frames = run(W, dict(W.defaults(), block_size=16))
    assert frames[2]["narration"] == ("vLLM preempts D (recompute) to make room for A's next "
                                      "token, then admits D again.")


def test_a_legend_names_every_mark(frames):
    shown = texts(frames[0]["svg"])
    for words in ("token states", "reserved", "internal frag.", "external frag.", "free",
                  "strip: who holds the slots", "vLLM block boundary",
                  "refused, though enough is free"):
        assert words in shown, words


def test_text_reads_on_a_phone_and_stays_in_the_picture(frames):
    for f in frames + run(W, dict(W.defaults(), block_size=1, pool=128)):
        for x, _, anchor, text, size in cells(f["svg"]):
            assert size >= page.SMALL, text
            width = fit.text_width(text, size)
            lo = x - width if anchor == "end" else x - width / 2 if anchor == "middle" else x
            assert lo >= 0 and lo + width <= page.WIDTH, text


def test_paged_bar_shows_block_boundaries(frames):
    f = run(W, dict(W.defaults(), block_size=8))[0]
    default = frames[0]
    assert f["svg"] != default["svg"]


def test_all_frames_are_well_formed_and_deterministic(frames):
    for f in frames:
        ET.fromstring(f["svg"])
    assert to_json(run(W, W.defaults())) == to_json(frames)


def test_largest_allowed_scenario_is_small_enough():
    # Near the 80-step limit, with one-slot blocks: the most segments to draw.
    raw = {"requests": ",".join(f"28/12@{i}" for i in range(10)), "pool": "128",
           "max_len": "64", "block_size": "1"}
    answer = respond(W, raw)
    assert "frames" in answer, answer
    assert len(to_json(answer)) < 2_500_000


# ------------------------------------------------------------------ the reproduction chart

def cells(svg_text: str) -> list[tuple[float, float, str, str, float]]:
    """(x, y, anchor, text, font size) of every text element."""
    return [(float(t.get("x")), float(t.get("y")), t.get("text-anchor"), "".join(t.itertext()),
             float(t.get("font-size"))) for t in ET.fromstring(svg_text).iter(NS + "text")]


def given_shares():
    """The paper's own numbers as if simulated, with vLLM's 3.7% split 1 / 1.5 / 1.2."""
    shares = {label: dict(bar) for label, bar in PAPER_FIG2.items()}
    shares["vLLM"].update(reserved=0.01, internal_fragmentation=0.015,
                          external_and_others=0.012)
    return shares


def test_fig2_chart_with_given_shares():
    shares = given_shares()
    shares["Orca (Max)"].update(token_states=0.25, internal_fragmentation=0.527)
    out = page.render_fig2(shares)
    texts_ = [c[3] for c in cells(out)]
    assert "25.0" in texts_ and "+4.6" in texts_ and "52.7" in texts_ and "-4.6" in texts_
    assert "20.4" in texts_ and "96.3" in texts_ and "+0.0" in texts_
    assert "vLLM, all but token states: paper 3.7 (split not printed), sim 3.7, gap +0.0." \
        in texts(out)
    assert "Ordering kept: Orca (Max) < Orca (Pow2) < Orca (Oracle) < vLLM." in texts(out)
    # A gap over 5 points is drawn in the highlight colour.
    shares["Orca (Pow2)"]["external_and_others"] = 0.356
    shares["Orca (Pow2)"]["token_states"] = 0.318
    out = page.render_fig2(shares)
    style = {"".join(t.itertext()): t.get("style") for t in ET.fromstring(out).iter(NS + "text")}
    assert "--vsb-highlight" in style["-6.0"]
    assert "--vsb-fg" in style["+5.0"]               # 5 points is not over 5
    shares["vLLM"]["token_states"] = 0.1
    assert "Ordering NOT kept" in texts(page.render_fig2(shares))


@pytest.fixture(scope="module")
def fig2():
    shares = reproduce_fig2(**page.REPRO)
    return shares, page.render_fig2(shares)


def test_fig2_reproduction_shows_paper_and_simulation_side_by_side(fig2):
    shares, out = fig2
    ET.fromstring(out)
    shown = [c[3] for c in cells(out)]
    assert "Ordering kept: Orca (Max) < Orca (Pow2) < Orca (Oracle) < vLLM." in texts(out)
    gaps = page.fig2_gaps(shares)
    for label, paper in PAPER_FIG2.items():
        assert label in shown
        for kind in FIG2_CATEGORIES:
            assert f"{100 * shares[label][kind]:.1f}" in shown
            if paper[kind] is None:          # vLLM's split: ours alone
                continue
            assert f"{100 * paper[kind]:.1f}" in shown
            assert f"{gaps[(label, kind)]:+.1f}" in shown
    # Every bar: paper and sim, each category a rect with a tooltip.
    tips = titles(out)
    for label in PAPER_FIG2:
        for who in ("paper", "sim"):
            assert any(t.startswith(f"{label}, token states: ") and t.endswith(f"({who})")
                       for t in tips)
    assert "vLLM: 3.7% not token states, split not printed (paper)" in tips


def test_fig2_chart_is_readable_on_a_phone(fig2):
    _, out = fig2
    assert 'viewBox="0 0 400 ' in out
    for x, _, anchor, text, size in cells(out):
        assert size >= page.SMALL, text
        width = fit.text_width(text, size)
        lo = x - width if anchor == "end" else x - width / 2 if anchor == "middle" else x
        assert lo >= 0 and lo + width <= 400, text
    # Table cells of one row do not run into each other.
    rows: dict[float, list] = {}
    for x, y, anchor, text, size in cells(out):
        if anchor == "end":
            rows.setdefault(y, []).append((x - fit.text_width(text, size), x))
    for spans in rows.values():
        spans.sort()
        assert all(a[1] + 4 <= b[0] for a, b in zip(spans, spans[1:])), spans


def test_the_page_states_every_wide_gap(fig2):
    shares, _ = fig2
    doc = " ".join((Path(__file__).resolve().parents[3] / "docs" / "fragmentation.md")
                   .read_text(encoding="utf-8").split())
    wide = {key: gap for key, gap in page.fig2_gaps(shares).items() if abs(gap) > 5}
    assert len(wide) == 5
    for (label, kind), gap in wide.items():
        assert f"{gap:+.1f}" in doc, (label, kind, gap)
    for words in ("External frag. & Others", "0% internal fragmentation for Orca (Oracle)",
                  "the unfilled tail of each request's last block",
                  "as is known before serving a request"):
        assert words in doc


def test_caption_states_the_workload_the_allocator_and_the_accounting():
    cap = page.FIG2.caption
    for words in ("200 ShareGPT-like requests", "log-normal", "Poisson arrivals at 0.2",
                  "15,728 slots", "buddy allocator", "blocks of 16",
                  "rounding up to a power of two", "steps in which a request waits"):
        assert words in " ".join(cap.split())
