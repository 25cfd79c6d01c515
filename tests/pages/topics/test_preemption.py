import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pages.framework.widget import run, validate
from pages.topics.preemption import (
    REQUESTS,
    WIDGETS,
    build_engine,
    context,
    load_measurements,
    narrate,
    scenario,
    swap_vs_recompute_svg,
    view,
)
from pages.views import kv_view
from sim.core import snapshot
from sim.core.invariants import read_back
from sim.core.sequence import SequenceStatus
from sim.events import Admitted, BlockAllocated, BlockFreed, Preempted, SwappedIn, SwappedOut

W = WIDGETS[0]
SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
ROOT = Path(__file__).resolve().parents[3]
DOC = (ROOT / "docs" / "preemption.md").read_text(encoding="utf-8")


def values(**kw):
    return dict(W.defaults(), **kw)


def step_all(v):
    """Every engine step of the page's trace: (Step, queues after it, tables)."""
    trace = scenario(v)
    assert trace.stopped is None
    out = []
    for step in trace.steps[1:]:
        snap = step.snapshot
        tables = {r["request_id"]: [(d, n) for d, n, _ in r["seqs"][0]["block_table"]]
                  for r in snap["requests"] if r["seqs"][0]["block_table"]}
        out.append((step, snap["queues"], tables))
        assert step.problems == (), (step.step, step.problems)
    return out


def of(step, cls):
    return step.of_type(cls)


# -- the scenario, step by step ---------------------------------------------------------

def test_requests_round_trip_and_errors():
    reqs = REQUESTS.parse(" 6/12, 5/10x2 ,3/3@8")
    assert reqs == ((6, 12, 0, 1), (5, 10, 0, 2), (3, 3, 8, 1))
    assert REQUESTS.parse(REQUESTS.format(reqs)) == reqs
    assert W.default_raw()["requests"] == "6/12, 5/12, 4/12, 3/3@8"
    help_text = next(p.help for p in W.params if p.name == "requests")
    assert "xN parallel samples" in help_text and "e.g. 6/12, 5/12x2, 3/3@8" in help_text
    for text, message in [("", "1 to 5 requests, written prompt/output[xN][@step]"),
                          ("6-12", "should look like 6/12, 5/10x2 or 3/3@8"),
                          ("<b>6</b>/12", "should look like"), ("0/3", "from 1 to 20"),
                          ("6/12x3", "1 to 2 parallel samples"), ("6/12@31", "at most 30")]:
        _, errors = validate(W, {"requests": text})
        assert message in errors["requests"] and errors["requests"].startswith("requests: ")
    _, errors = validate(W, {"requests": "3/20@13"})
    assert "within 32" in errors["requests"]
    _, errors = validate(W, {"watermark": "0.9", "num_cpu_blocks": "-1"})
    assert errors["watermark"] == "watermark: a number from 0 to 0.5"
    assert errors["num_cpu_blocks"] == "CPU blocks: a whole number from 0 to 16"
    _, errors = validate(W, {"block_size": "16", "num_gpu_blocks": "7"})
    assert errors["num_gpu_blocks"].startswith("GPU blocks: at most 6 with block size 16")


def test_swap_scenario_victims_queues_and_mappings():
    steps = step_all(values())
    assert len(steps) == 18
    preempted = [(o.step, e) for o, _, _ in steps for e in of(o, Preempted)]
    assert preempted == [(7, Preempted("C", "swap", "B", False))]
    o, queues, tables = steps[7]
    assert of(o, SwappedOut) == [SwappedOut("C", ((5, 7), (4, 6), (1, 5)))]
    assert o.outputs.blocks_to_swap_out == [(5, 7), (4, 6), (1, 5)]
    assert queues["running"] == ["A", "B"] and queues["swapped"] == ["C"]
    assert tables["C"] == [("cpu", 7), ("cpu", 6), ("cpu", 5)]
    assert tables["A"] == [("gpu", 9), ("gpu", 8), ("gpu", 3), ("gpu", 0)]
    # The freed block 1 serves B one step later; D arrives and is not admitted.
    o, queues, tables = steps[8]
    assert [(e.physical, e.seq_ids) for e in of(o, BlockAllocated)] == [(1, (1,))]
    assert queues["waiting"] == ["D"] and queues["swapped"] == ["C"]
    assert all(not of(s[0], Admitted) for s in steps[8:13])
    # After A and B finish, C comes back under new GPU numbers, then D is admitted.
    o, queues, tables = steps[12]
    assert of(o, SwappedIn) == [SwappedIn("C", ((7, 1), (6, 2), (5, 6)))]
    assert tables["C"] == [("gpu", 1), ("gpu", 2), ("gpu", 6)]
    assert queues == {"pending": [], "waiting": ["D"], "running": ["C"], "swapped": []}
    o, queues, _ = steps[13]
    assert of(o, Admitted) == [Admitted("D", 3, False)]
    assert queues["running"] == ["C", "D"]


def test_recompute_scenario_victims_queues_and_blocks():
    steps = step_all(values(preemption_mode="recompute"))
    o, queues, tables = steps[7]
    assert of(o, Preempted) == [Preempted("C", "recompute", "B", False)]
    assert o.outputs.blocks_to_swap_out == []
    assert {e.physical for e in of(o, BlockFreed)} == {5, 4, 1}
    assert queues["waiting"] == ["C"] and "C" not in tables
    # D arrives behind C: a recompute victim goes to the front of waiting.
    assert steps[8][1]["waiting"] == ["C", "D"]
    # The watermark holds C back while only 2 or 3 blocks are free (C needs 3 + 1).
    assert all(not of(s[0], Admitted) for s in steps[8:12])
    o, queues, tables = steps[12]
    assert of(o, Admitted) == [Admitted("C", 11, True), Admitted("D", 3, False)]
    assert o.outputs.num_prefill_groups == 2 and o.kind == "prefill"
    assert tables["C"] == [("gpu", 1), ("gpu", 2), ("gpu", 6)]


def test_default_mode_recomputes_one_sequence_and_swaps_several():
    steps = step_all(values(preemption_mode="auto"))
    assert [e.mode for o, _, _ in steps for e in of(o, Preempted)] == ["recompute"]
    steps = step_all(values(preemption_mode="auto", requests=REQUESTS.parse("6/12, 5/12, 4/12x2")))
    assert {e.mode for o, _, _ in steps for e in of(o, Preempted)} == {"swap"}


# -- payload integrity ---------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["swap", "recompute"])
def test_restored_request_reads_back_as_before(mode):
    eng = build_engine(values(preemption_mode=mode))
    c = eng.requests["C"].get_seqs()[0]
    before = None
    while eng.has_unfinished_requests():
        cached = read_back(eng, c) if c.seq_id in eng.block_manager.block_tables else None
        out = eng.step()
        if any(isinstance(e, Preempted) for e in out.events):
            before = cached
            assert len(before) == 10
        if any(isinstance(e, (SwappedIn, Admitted)) and e.request_id == "C" and
               (isinstance(e, SwappedIn) or e.recompute) for e in out.events):
            assert read_back(eng, c)[:len(before)] == before
            assert before == [(c.get_token_ids()[p], p) for p in range(10)]
            break
    else:
        pytest.fail("C never came back")


@pytest.mark.parametrize("v", [values(), values(preemption_mode="recompute"),
                               values(preemption_mode="auto",
                                      requests=REQUESTS.parse("6/12, 5/12, 4/12x2"))])
def test_snapshots_answer_what_the_live_engine_answers(v):
    """What the page reads from a snapshot (read-backs, the queue heads' admission answers)
    equals what the live engine and block manager say in the same state."""
    eng = build_engine(v)
    seen_heads = set()
    while eng.has_unfinished_requests():
        eng.step()
        snap = eng.snapshot()
        bm, sched = eng.block_manager, eng.scheduler
        for r in snap["requests"]:
            group = eng.requests[r["request_id"]]
            for s, seq in zip(r["seqs"], group.get_seqs()):
                assert s["seq_id"] == seq.seq_id
                if seq.seq_id in bm.block_tables:
                    assert snapshot.read_back(snap, s) == [list(p) for p in read_back(eng, seq)]
                    assert snapshot.payload_intact(snap, s)
        heads = snap["heads"]
        if sched.swapped:
            group = sched.swapped[0]
            assert heads["swapped"] == {
                "request_id": group.request_id, "can_swap_in": bm.can_swap_in(group).value,
                "num_blocks": bm.num_blocks_to_move(group),
                "num_seqs": len(group.get_seqs(status=SequenceStatus.SWAPPED))}
            seen_heads.add(("swapped", heads["swapped"]["can_swap_in"]))
        else:
            assert heads["swapped"] is None
        if sched.waiting:
            group = sched.waiting[0]
            seq = group.get_seqs(status=SequenceStatus.WAITING)[0]
            assert heads["waiting"] == {
                "request_id": group.request_id, "can_allocate": bm.can_allocate(group).value,
                "num_required_blocks": seq.n_blocks, "len": seq.get_len(),
                "output_len": seq.get_output_len()}
            seen_heads.add(("waiting", heads["waiting"]["can_allocate"]))
        else:
            assert heads["waiting"] is None
    assert seen_heads


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(engine=st.sampled_from(["v0.5.5", "v1"]),
       mode=st.sampled_from(["swap", "recompute", "auto"]), gpu=st.integers(3, 14),
       cpu=st.integers(0, 14), bs=st.sampled_from([1, 2, 4, 8]),
       wm=st.sampled_from([0.0, 0.1, 0.3]),
       reqs=st.lists(st.tuples(st.integers(1, 12), st.integers(1, 12), st.integers(0, 6),
                               st.integers(1, 2)), min_size=1, max_size=5),
       seed=st.integers(0, 20), eos=st.sampled_from([0.0, 0.0, 0.2]))
def test_random_workloads_keep_every_payload_and_end_with_a_frame(engine, mode, gpu, cpu, bs,
                                                                   wm, reqs, seed, eos):
    v = values(engine=engine, preemption_mode=mode, num_gpu_blocks=gpu, num_cpu_blocks=cpu,
               block_size=bs, watermark=wm, requests=tuple(reqs), seed=seed, eos_prob=eos)
    frames = run(W, v)                  # never raises: errors end the trace with a frame
    for f in frames:
        assert "Check FAILED" not in f["narration"] + " ".join(f["details"])
        assert "check_engine found" not in f["svg"]
        assert len(SENTENCE_END.findall(f["narration"])) <= 3, f["narration"]
    last = " ".join(frames[-1]["details"])
    if "Aborted due to the lack of CPU swap space" in last:
        assert mode != "recompute" and engine == "v0.5.5"
    if "can recompute only a single sequence" in last:
        assert mode == "recompute" and any(n > 1 for *_, n in reqs)
    if "vLLM asserts in schedule()" in frames[-1]["svg"] or any(
            "leaked" in f["svg"] for f in frames):
        # Issue 27's paths need a sample that ended early, and v0.5.5.
        assert eos and engine == "v0.5.5" and any(n > 1 for *_, n in reqs)


def test_narration_reports_the_check_not_a_fixed_sentence(monkeypatch):
    # Corrupt the swap-in copy: the narration and the status line must say so.
    from sim.core.cache_engine import CacheEngine

    def bad_swap_in(self, pairs):
        for _, gpu_block in pairs:
            self.gpu_cache[gpu_block] = [(0, -1)] * self.block_size

    good = run(W, values())
    monkeypatch.setattr(CacheEngine, "swap_in", bad_swap_in)
    frames = run(W, values())
    assert "Check: C's 10 cached tokens read back through its new block table exactly as " \
           "before." in good[13]["narration"]
    assert any("Check: C's 10 cached tokens, swapped in, read back" in d
               for d in good[13]["details"])
    assert "Check FAILED: C's tokens do not read back" in frames[13]["narration"]
    assert "check_engine found" in frames[13]["svg"]


# -- the widget ------------------------------------------------------------------------------

def test_default_trace_tells_the_story():
    frames = run(W, W.defaults())
    assert len(frames) == 19
    assert [f["label"] for f in frames] == ["start"] + [f"iteration {i}" for i in range(18)]
    text = [f["narration"] for f in frames]
    details = [" ".join(f["details"]) for f in frames]
    assert "a watermark of int(0.1 x 10) = 1 block free" in text[0]
    # Iteration 7, cause before effect: A took the last block, then B's turn meets the
    # conservative one-block-per-sequence check in can_append_slots, and C goes.
    seven = text[8]
    assert seven.startswith("Iteration 7: A's last block was full, so it took block 0, the "
                            "last free one.")
    assert seven.index("can_append_slots wants one free block per running sequence") < \
        seven.index("none is left") < seven.index("C, the tail of running, is preempted")
    assert "(5->C7, 4->C6, 1->C5)" in text[8]
    assert "C is the tail of running" in details[8]
    assert "read back from the CPU copy exactly as they were on the GPU" in details[8]
    assert "(freed by C)" in text[9]
    assert "D arrives but waits: v0.5.5 admits nobody while a request is swapped out" in text[9]
    assert "B now uses block 1, which C held before" in details[9]
    assert "nothing is admitted while a request is swapped out" in details[9]
    assert "(C7->1, C6->2, C5->6)" in text[13]
    assert "read back through its new block table (blocks 1, 2 and 6) exactly" in details[13]
    svg8 = frames[8]["svg"]
    notes = " ".join(re.findall(r'highlight\)">([^<]+)<', svg8))
    assert "can_append_slots(B): no free block, so the last of running, C, is preempted " \
           "(swap)" in " ".join(notes.split())
    assert ("Preempted (swap): can_append_slots(B) finds no free block; the victim is C, "
            "the tail of running [A, B, C].") in details[8]
    for g, c in ((5, 7), (4, 6), (1, 5)):
        assert f"C: GPU block {g} swapped out to CPU block {c}" in svg8
    assert "Arrows: blocks_to_swap_out" in svg8
    for c, g in ((7, 1), (6, 2), (5, 6)):
        assert f"C: CPU block {c} swapped in to GPU block {g}" in frames[13]["svg"]
    assert "watermark 1" in frames[1]["svg"]
    for f in frames:
        assert len(SENTENCE_END.findall(f["narration"])) <= 3, f["narration"]
        for words in ("new this step", "freed this step", "preempted", "token position",
                      "D@8: arrives in iteration 8"):
            assert words in f["svg"], words


def test_v1_frames_draw_the_v1_engines_snapshots():
    """The switch: the same settings drive V1 (recompute only, null block added); every
    frame's block tables come from the V1 engine's own snapshots."""
    v = values(engine="v1")
    trace = scenario(v)
    frames = run(W, v)
    engine = build_engine(v)
    snaps = [engine.snapshot()]
    while engine.has_unfinished_requests():
        engine.step()
        snaps.append(engine.snapshot())
    assert [s.snapshot for s in trace] == snaps
    assert all(s.problems == () for s in trace)
    for frame, snap in zip(frames, snaps):
        assert snap["engine"] == "v1" and snap["gpu"]["num_blocks"] == 11
        drawn = re.findall(r"<title>(\w): logical block (\d+) -&gt; GPU physical block "
                           r"(\d+), (\d+) of 4 slots filled</title>", frame["svg"])
        tables = [(r["request_id"], i, num, filled) for r in snap["requests"]
                  for i, (_, num, filled) in enumerate(r["seqs"][0]["block_table"])]
        assert [(a, int(b), int(c), int(d)) for a, b, c, d in drawn] == tables
        assert "swapped:" not in frame["svg"]
        assert "CPU swap space: none, V1 only recomputes" in frame["svg"]
    text = [f["narration"] for f in frames]
    assert "V1 always preempts by recompute: it has no CPU swap space and no preemption " \
           "mode" in text[0]
    # No preemption in iteration 7 (V1's check is exact); in iteration 8, C goes.
    assert not trace[8].of_type(Preempted)
    assert trace[9].of_type(Preempted) == [Preempted("C", "recompute", "B", False)]
    assert "allocate_slots finds no free block, so C, the last in running, is preempted" \
        in text[9]
    assert "V1 never swaps: C's blocks go back to the free queue, blocks 6 and 5 still " \
           "cached" in text[9]
    assert "C and D wait: V1 admits nobody in a step that preempted." in frames[9]["details"]
    # V1's default (async) loop: A's and B's last outputs are processed in iteration 12,
    # after its batch was chosen, so C comes back in iteration 13.
    assert "C waits" in text[12] and not trace[13].scheduled
    assert "C finds its first 4 tokens still cached in block 5" in text[14]
    assert "Check: C's 11 cached tokens read back through its new block table" in text[14]


def test_v1_ignores_swap_settings_and_says_so():
    a = run(W, values(engine="v1"))
    b = run(W, values(engine="v1", preemption_mode="recompute", num_cpu_blocks=0))
    assert [f["svg"] for f in a] == [f["svg"] for f in b]
    help_text = {p.name: p.help for p in W.params}
    assert "V1 ignores it" in help_text["preemption_mode"]
    assert "V1 has none" in help_text["num_cpu_blocks"]
    # Two samples: V1 fans them out into two requests and never stops.
    frames = run(W, values(engine="v1", requests=REQUESTS.parse("6/12, 5/12, 4/12x2")))
    assert "0_C" in frames[1]["svg"] and "1_C" in frames[1]["svg"]
    assert "stops" not in frames[-1]["narration"]


def test_recompute_toggle():
    frames = run(W, values(preemption_mode="recompute"))
    text = [f["narration"] for f in frames]
    details = [" ".join(f["details"]) for f in frames]
    assert "is preempted by recompute" in text[8] and "swapped out" not in text[8]
    assert "C goes to the front of waiting" in text[8]
    assert "C waits at the front: can_allocate needs 3 blocks for recomputing 11 tokens" \
        in details[9]
    assert "C recomputes its prompt and generated tokens (11 tokens -> blocks 1, 2 and 6)" \
        in details[13]
    assert "C recomputes its 11 tokens into blocks 1, 2 and 6" in text[13]
    assert "Check: C's 10 cached tokens, recomputed, read back" in details[13]


def test_too_little_swap_space_ends_with_vllms_error():
    frames = run(W, values(num_cpu_blocks=2))
    assert len(frames) == 9
    last = frames[-1]
    assert "v0.5.5 does not fall back to recompute" in last["narration"]
    assert "Aborted due to the lack of CPU swap space" in " ".join(last["details"])
    words = " ".join(re.findall(r">([^<]+)</text>", last["svg"]))
    assert "&#39;C&#39; needs 3 CPU blocks, 2 are free" in words
    assert "not enough CPU swap space" in last["svg"]


def test_recomputing_a_multi_sequence_request_ends_with_an_explanation():
    frames = run(W, values(preemption_mode="recompute",
                           requests=REQUESTS.parse("6/12, 5/12, 4/12x2")))
    last = frames[-1]["narration"]
    assert "can recompute only a single sequence" in last
    assert "preempts itself" in last
    assert "cannot recompute this request" in frames[-1]["svg"]


def test_a_long_trace_ends_with_a_cut_off_frame():
    v = values(preemption_mode="recompute", num_gpu_blocks=6,
               requests=REQUESTS.parse("20/12, 20/12, 20/12, 20/12, 20/12"))
    trace = scenario(v)
    assert trace.stopped == "max_steps" and len(trace) == 42
    # The extra frame shows the last state again, with its checks, and nothing new.
    assert trace.last.snapshot is trace[-2].snapshot and trace.last.events == ()
    frames = run(W, v)
    assert len(frames) == 42
    assert frames[-1]["narration"] == ("Cut off: the picture stops after 40 iterations; "
                                       "requests are still running. Use fewer or shorter "
                                       "requests.")
    assert frames[-1]["label"] == "cut off"
    assert "Cut off: stopped after 40 iterations" in frames[-1]["svg"]
    assert "check_engine: ok" in frames[-1]["svg"]


def test_view_and_narrate_are_pure_functions_of_the_trace():
    v = values(num_cpu_blocks=2)
    trace = scenario(v)
    assert trace.stopped == "error" and trace.last.error
    ctx = context(v, trace)
    for step in trace:
        assert view(step, ctx) == view(step, context(v, trace))
        assert narrate(step, ctx) == narrate(step, ctx)
    assert narrate(trace.last, ctx).startswith("Iteration 7: B needs a block; the victim is "
                                               "C, the tail of running [A, B, C].")


def test_pool_block_box_points_at_the_drawn_blocks():
    snap = scenario(values())[1].snapshot
    h = kv_view.highlights([])
    for device in ("gpu", "cpu"):
        parts, _ = kv_view.pool(8, 100, snap, device, h)
        drawn = "".join(parts)
        for n in range(snap[device]["num_blocks"]):
            x, y, w, hh = kv_view.pool_block_box(8, 100, snap, n)
            assert f'x="{x:g}" y="{y:g}" width="{w:g}" height="{hh:g}"' in drawn


def test_frames_are_deterministic_and_escaped():
    a = run(W, W.defaults())
    assert a == run(W, W.defaults())
    assert all(f["svg"].startswith("<svg") and "viewBox" in f["svg"] for f in a)
    assert len(re.findall("<title>", a[8]["svg"])) > 30


@pytest.mark.parametrize("link", re.findall(r"\(#preemption\.([^)]*)\)", DOC))
def test_doc_permalinks_validate(link):
    raw = dict(kv.split("=", 1) for kv in unquote(link).split("&preemption."))
    step = raw.pop("step", None)
    v, errors = validate(W, raw)
    assert not errors, (link, errors)
    assert v["engine"] == raw.get("engine", "v0.5.5")
    if step is not None:
        assert 1 <= int(step) <= len(run(W, v))


# -- the H200 chart --------------------------------------------------------------------------

def test_chart_draws_every_measured_row():
    data = load_measurements()
    svg = swap_vs_recompute_svg(1024, data)
    assert svg.startswith("<svg")
    for r in data["rows"]:
        if r["tokens"] == 1024:
            assert f"swap out (GPU to CPU), block size {r['block_size']}:" in svg
    words = " ".join(re.findall(r">([^<]+)</text>", svg))
    assert "vLLM default" in svg
    assert "Block size 16: out 28.1 ms, in 28.6 ms, recompute 28.9 ms" in words
    sizes = [float(x) for x in re.findall(r'font-size="([0-9.]+)"', svg)]
    assert min(sizes) >= 13.5     # 11 px on a phone


def test_measured_numbers_in_the_docs_match_the_data():
    data = json.loads((ROOT / "data" / "h200-swap-vs-recompute.json").read_text())
    row = {(r["tokens"], r["block_size"]): r for r in data["rows"]}
    assert f"takes {row[1024, 1]['swap_out_s'] * 1e3:.0f} ms" in DOC
    assert f"{row[1024, 16]['swap_out_s'] * 1e3:.1f}\nms out and " \
           f"{row[1024, 16]['swap_in_s'] * 1e3:.1f} ms in" in DOC
    assert f"({data['recompute_prefill_s']['1024'] * 1e3:.1f} ms)" in DOC
    assert f"would take {row[1024, 1]['bulk_out_s'] * 1e3:.1f} ms" in DOC
    # "from 32 up, swapping is cheaper" than recomputing, in each direction.
    rec = data["recompute_prefill_s"]["1024"]
    assert all(row[1024, b]["swap_out_s"] < rec and row[1024, b]["swap_in_s"] < rec
               for b in (32, 64, 128, 256))
    assert row[1024, 8]["swap_out_s"] > rec


# -- V1 with a CPU tier (the offloading connector) --------------------------------------------

TIER_REQUESTS = "8/12, 6/12, 8/12, 4/4@8"


def tier_values(mode, requests=TIER_REQUESTS, **kw):
    return values(engine="v1", cpu_offload=mode, requests=REQUESTS.parse(requests), **kw)


def test_cpu_tier_loads_instead_of_recomputing():
    from pages.topics.preemption import recomputed_by_step
    from sim.events import OffloadLoadJob, RemoteKVsReady
    done = {}
    for mode in ("off", "prompt", "all"):
        trace = scenario(tier_values(mode))
        assert trace.stopped is None
        assert all(not s.problems for s in trace), [s.problems for s in trace if s.problems]
        done[mode] = recomputed_by_step(trace)[-1]
        loads = [e for s in trace for e in s.of_type(OffloadLoadJob)]
        if mode == "off":
            assert not loads and "cpu_tier" not in trace.last.snapshot
            continue
        # C, preempted in iteration 5, finds its prompt blocks in the CPU tier in
        # iteration 13; the async loop reports the load done with that batch's output, and
        # C computes the rest in iteration 15.
        (load,) = loads
        assert (load.request_id, load.num_local_tokens, load.num_tokens) == ("C", 0, 8)
        assert trace.steps[14].of_type(OffloadLoadJob) == [load]
        assert trace.steps[16].of_type(RemoteKVsReady)[0].request_id == "C"
    # Tokens computed again: the prompt and the outputs, then the outputs only (the async
    # loop knows C's last full block too late to store it before the preemption).
    assert done == {"off": 12, "prompt": 4, "all": 4}
    # Short prompts and long answers: only offloading generated blocks too saves anything.
    saved = {mode: recomputed_by_step(scenario(tier_values(mode, "4/16, 4/16, 4/16")))[-1]
             for mode in ("off", "prompt", "all")}
    assert saved == {"off": 12, "prompt": 12, "all": 8}


def test_cpu_tier_picture_words_and_keys():
    v = tier_values("prompt")
    trace = scenario(v)
    ctx = context(v, trace)
    assert ctx.recomputed_without == 12
    load_step, ready_step = trace.steps[14], trace.steps[16]
    svg_text = view(load_step, ctx).body
    svg_text = "".join(svg_text)
    keys = re.findall(r'data-k="(blk:cpu:\d+|copy:[^"]+)"', svg_text)
    assert len(keys) == len(set(keys))
    assert sum(k.startswith("blk:cpu:") for k in keys) == v["num_cpu_blocks"]
    assert any(k.startswith("copy:") for k in keys)        # the load's arrows
    assert "CPU tier (offloading)" in svg_text and "loading KV:" in svg_text
    words = narrate(load_step, ctx)
    assert "WAITING_FOR_REMOTE_KVS" in words and "CPU tier" in words
    assert "load has landed" in narrate(ready_step, ctx)
    assert len(SENTENCE_END.findall(words)) <= 3
    assert "without the CPU tier, 12 in all" in "".join(view(trace.last, ctx).body)
    # The flush of a preempted request's store, when generated blocks are offloaded too.
    v = tier_values("all", "8/12, 6/12, 4/12")
    trace = scenario(v)
    ctx = context(v, trace)
    assert "(a flush of store job" in narrate(trace.steps[8], ctx)


def test_cpu_tier_settings():
    _, errors = validate(W, {"engine": "v1", "cpu_offload": "prompt", "num_cpu_blocks": "0"})
    assert errors["num_cpu_blocks"].startswith("CPU blocks: V1's CPU tier needs at least 1")
    # v0.5.5 ignores the tier: the same frames with it on or off.
    on = run(W, values(cpu_offload="all"))
    off = run(W, values())
    assert on == off


# -- vLLM v0.5.5's recompute of a sampling request whose other sample finished (issue 27) --

def words(svg_text: str) -> str:
    """The picture's text, lines joined, entities decoded."""
    import html
    return " ".join(html.unescape(" ".join(re.findall(r">([^<]+)</text>", svg_text))).split())


LEAK = dict(preemption_mode="auto", num_gpu_blocks=8, requests=REQUESTS.parse("6/12,5/12,4/12x2"),
            eos_prob=0.1, seed=58)
ASSERT = dict(LEAK, num_gpu_blocks=6, seed=13)


def test_the_eos_probability_ends_samples_early_and_is_validated():
    help_text = {p.name: p.help for p in W.params}
    assert "end-of-sequence token" in help_text["eos_prob"]
    _, errors = validate(W, {"eos_prob": "0.9"})
    assert errors["eos_prob"] == "EOS probability: a number from 0 to 0.5"
    # 0 keeps ignore_eos: every sequence generates exactly its output tokens.
    assert build_engine(values()).requests["A"].sampling_params.ignore_eos
    eng = build_engine(values(**LEAK))
    assert not eng.requests["C"].sampling_params.ignore_eos and eng.model.eos_prob == 0.1
    assert build_engine(values(engine="v1", eos_prob=0.2)).model.eos_prob == 0.2


def test_recompute_of_a_forked_sample_leaks_its_blocks_and_the_run_goes_on():
    """The docs' permalink: C.2 (C's first sequence) stops on its first token; C.3 is
    preempted by recompute in iteration 4 (one running sequence), comes back in iteration 5
    as a decode into blocks 1 and 6, counted twice; B and C finish in iteration 8 and
    blocks 1 and 6 stay allocated. The checks allow exactly that leak."""
    trace = scenario(values(**LEAK))
    assert trace.stopped is None and all(s.problems == () for s in trace)
    frames = run(W, values(**LEAK))
    assert len(frames) == 10
    text = [f["narration"] for f in frames]
    assert "C.2 stopped on its end-of-sequence token; the other samples of C run on." in \
        frames[1]["details"]
    assert "C.2 had finished, so C has one running sequence and the default recomputes it " \
           "(get_max_num_running_seqs() is 1)." in text[5]
    assert "preempts itself (recompute: C.2 finished, one left)" in " ".join(
        re.findall(r">([^<]+)</text>", frames[5]["svg"]))
    assert text[6] == (
        "Iteration 5: C comes back to recompute its 8 tokens into blocks 1 and 6, but vLLM "
        "v0.5.5 runs it as a decode: SequenceGroup.is_prefill() reads C.2, C's first "
        "sequence, which finished. Only position 7's KV is computed; the 7 slots before it "
        "are never recomputed (?). And allocate counted C.2 in the ref count (num_seqs() = "
        "2): when C.3 lets go of them, they stay allocated, leaked.")
    details = " ".join(frames[6]["details"])
    assert "BlockSpaceManagerV1.allocate set the ref count of blocks 1 and 6 to " \
           "seq_group.num_seqs() = 2" in details
    assert "context_len = seq_len - 1" in details and "Check FAILED" not in details
    svg6 = frames[6]["svg"]
    assert svg6.count(">leaked</text>") == 2
    assert svg6.count(">?</text>") == 7 + 1        # and the legend's
    seen = words(svg6)
    assert "GPU blocks: 5 used (2 leaked), 3 free" in seen
    assert "check_engine: ok but for vLLM's bug: blocks 1 and 6 leaked; C.3's KV below " \
           "position 7 not recomputed" in seen
    assert "leaked: never freed (vLLM bug)" in seen and "?: KV never recomputed" in seen
    assert "is_prefill() reads C.2 (finished): C.3's recompute runs as a decode of position " \
           "7; the leaked blocks are never freed" in seen
    # The run goes on: B and C decode, then finish; the two blocks are never freed.
    assert [s.kind for s in trace.steps[7:]] == ["decode"] * 3
    assert text[9].endswith("Blocks 1 and 6 stay allocated with nobody's tokens: vLLM "
                            "leaked them, and they are never freed.")
    assert "check_engine: ok but for vLLM's bug: blocks 1 and 6 leaked" in words(
        frames[9]["svg"])
    last = trace.last.snapshot
    assert [n for n, b in enumerate(last["gpu"]["blocks"]) if b["ref_count"]] == [1, 6]
    assert last["gpu"]["num_free"] == 6 and not last["queues"]["running"]


def test_recompute_of_the_first_sample_ends_at_vllms_assert_in_schedule():
    frames = run(W, values(**ASSERT))
    trace = scenario(values(**ASSERT))
    assert trace.stopped == "error" and len(frames) == 5
    last = frames[-1]
    assert last["narration"] == (
        "Iteration 3: C comes back to recompute C.2, its first sequence; C.3 had finished. "
        "SequenceGroup.is_prefill() reads C.2, so Scheduler.schedule sends C as a prompt and "
        "asserts that a prompt has one sequence: get_seqs() returns 2, C.3 too. vLLM v0.5.5 "
        "stops here, for every request (preemption_mode='swap' never recomputes such a "
        "request).")
    assert "Iteration 3: vLLM asserts in schedule()" in last["svg"]
    assert "AssertionError in Scheduler.schedule (vLLM v0.5.5): assert len(seqs) == 1" in \
        " ".join(last["details"])
