import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.events import Admitted
from sim.studies.batching_metrics import (
    DECODE,
    PADDING,
    PAUSED,
    PREFILL,
    BatchRequest,
    compare,
    from_trace,
    make_engine,
    make_v1_engine,
    percentile,
    record,
    uniform_workload,
)
from sim.studies.scenarios import get_scenario
from sim.trace import record as trace_record


def grid(run):
    """Each iteration as a string: request id + kind letter per slot, '--' for empty."""
    marks = {PREFILL: "P", DECODE: "d", PAUSED: ".", PADDING: "_"}
    return [" ".join(f"{c.request_id}{marks[c.kind]}" if c else "--" for c in it.slots)
            for it in run.iterations]


def test_percentile_is_nearest_rank():
    assert percentile(list(range(1, 11)), 90) == 9
    assert percentile([5], 90) == 5
    assert percentile([1, 2], 90) == 2
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 90) == 10   # rank ceil(9.9) = 10
    with pytest.raises(ValueError):
        percentile([], 90)


def test_static_scenario_timeline_and_totals_by_hand():
    run = record(get_scenario("static").build_engine())
    g = grid(run)
    assert g[0] == "AP BP CP"
    assert g[1] == g[2] == "Ad Bd Cd"            # A (3 tokens) finishes in iteration 2
    assert g[3] == "A_ Bd Cd"                   # A's slot idles as padding
    assert g[4] == "A_ Bd C_"                   # C (4 tokens) finished in iteration 3
    assert g[8] == "A_ Bd C_"                   # B (9 tokens) finishes in iteration 8
    assert g[9] == "DP EP --"                   # only then the next batch
    assert run.iterations[2].waiting == ("D",) and run.iterations[3].waiting == ("D", "E")
    t = run.totals()
    assert t.drained_at == 14 == len(run.iterations)
    # Latency = finished - arrival + 1: A 3, B 9, C 4, D 14-2 = 12, E 12-3 = 9.
    lat = {r: run.finished_step[r] - run.arrival[r] + 1 for r in "ABCDE"}
    assert lat == {"A": 3, "B": 9, "C": 4, "D": 12, "E": 9}
    assert t.mean_latency == pytest.approx(37 / 5)
    assert t.p90_latency == 12
    # Busy slot-iterations: one prefill plus (output - 1) decodes per request = its output.
    assert t.busy_slot_iterations == 3 + 9 + 4 + 5 + 3
    assert t.utilisation == pytest.approx(24 / (3 * 14))


def test_continuous_scenario_refills_and_pauses_by_hand():
    run = record(get_scenario("continuous").build_engine())
    g = grid(run)
    assert g[2] == "Ad Bd Cd"
    # A finished in iteration 2; D takes its slot in iteration 3, a prefill-only step.
    assert g[3] == "DP B. C."
    assert run.iterations[3].seated[0].request_id == "D"
    assert run.iterations[3].seated[0].after == "A"
    assert run.iterations[3].is_prefill_only
    assert [(s, x.request_id, x.slot, x.after) for s, x in run.refills()] == \
        [(3, "D", 0, "A"), (5, "E", 2, "C")]
    t = run.totals()
    assert t.drained_at == 11
    assert t.busy_slot_iterations == 24          # the same work as static, in fewer steps
    # Totals so far: after 3 iterations only A has finished (latency 3).
    early = run.totals(3)
    assert (early.finished, early.mean_latency, early.p90_latency) == (1, 3.0, 3)
    assert early.drained_at is None


def test_static_never_admits_into_a_running_batch():
    run = record(get_scenario("static").build_engine())
    assert [it.step for it in run.iterations if it.seated] == [0, 9]
    for prev, it in zip(run.iterations, run.iterations[1:]):
        if it.seated:
            # The previous batch had ended: nobody in it was still unfinished.
            live = [c.request_id for c in prev.slots
                    if c is not None and c.kind != PADDING and c.request_id not in prev.finished]
            assert live == []
            assert {c.kind for c in it.slots if c is not None} == {PREFILL}


def test_uniform_workload_is_seeded_and_in_range():
    a = uniform_workload(10, (3, 10), (2, 9), 1.0, 7)
    assert a == uniform_workload(10, (3, 10), (2, 9), 1.0, 7)
    assert a != uniform_workload(10, (3, 10), (2, 9), 1.0, 8)
    assert [r.request_id for r in a] == list("ABCDEFGHIJ")
    assert all(3 <= r.prompt_len <= 10 and 2 <= r.output_len <= 9 for r in a)
    assert a[0].arrival_step == 0
    assert [r.arrival_step for r in a] == sorted(r.arrival_step for r in a)
    together = uniform_workload(4, (5, 5), (1, 1), 0.0, 0)
    assert {(r.prompt_len, r.output_len, r.arrival_step) for r in together} == {(5, 1, 0)}
    with pytest.raises(ValueError):
        uniform_workload(0, (1, 2), (1, 2), 1.0, 0)
    with pytest.raises(ValueError):
        uniform_workload(3, (4, 2), (1, 2), 1.0, 0)


def test_chunked_prefill_never_pauses_a_decode():
    reqs = uniform_workload(5, (3, 10), (2, 10), 1.0, 31)
    _, plain = compare(reqs, 3, 32)
    _, chunked = compare(reqs, 3, 32, chunked_prefill=True)
    assert any(c and c.kind == PAUSED for it in plain.iterations for c in it.slots)
    assert not any(c and c.kind == PAUSED for it in chunked.iterations for c in it.slots)
    # A prompt larger than what is left of the budget is cut into chunks.
    reqs = [BatchRequest("A", 4, 20, 0), BatchRequest("B", 20, 2, 1)]
    _, chunked = compare(reqs, 2, 24, chunked_prefill=True)
    b_prefills = [c.tokens for it in chunked.iterations for c in it.slots
                  if c and c.request_id == "B" and c.kind == PREFILL]
    assert b_prefills == [20]
    _, chunked = compare([BatchRequest("A", 4, 20, 0), BatchRequest("B", 20, 2, 1),
                          BatchRequest("C", 20, 2, 1)], 3, 24, chunked_prefill=True)
    c_prefills = [c.tokens for it in chunked.iterations for c in it.slots
                  if c and c.request_id == "C" and c.kind == PREFILL]
    assert sum(c_prefills) == 20 and len(c_prefills) > 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(count=st.integers(1, 8), lo=st.integers(1, 8), span=st.integers(0, 8),
       olo=st.integers(1, 8), ospan=st.integers(0, 8), rate=st.sampled_from([0.0, 0.5, 2.0]),
       seats=st.integers(1, 4), seed=st.integers(0, 50), chunked=st.booleans())
def test_timelines_are_consistent(count, lo, span, olo, ospan, rate, seats, seed, chunked):
    reqs = uniform_workload(count, (lo, lo + span), (olo, olo + ospan), rate, seed)
    budget = max(seats, max(r.prompt_len + r.output_len for r in reqs))
    static, vllm = compare(reqs, seats, budget, chunked)
    for run in (static, vllm):
        assert set(run.finished_step) == {r.request_id for r in reqs}
        for it in run.iterations:
            ids = [c.request_id for c in it.slots if c is not None]
            assert len(ids) == len(set(ids)) <= seats
            assert not set(ids) & set(it.waiting)
            assert it.preempted == ()        # memory is ample: scheduling alone differs
        # Every request prefills its prompt and then decodes output - 1 tokens.
        for r in reqs:
            cells = [c for it in run.iterations for c in it.slots
                     if c is not None and c.request_id == r.request_id]
            assert sum(c.tokens for c in cells if c.kind == PREFILL) == r.prompt_len
            assert sum(1 for c in cells if c.kind == DECODE) == r.output_len - 1
    assert not any(c and c.kind == PADDING for it in vllm.iterations for c in it.slots)
    assert not any(c and c.kind == PAUSED for it in static.iterations for c in it.slots)
    if chunked:
        assert not any(c and c.kind == PAUSED for it in vllm.iterations for c in it.slots)


@settings(max_examples=40, deadline=None)
@given(count=st.integers(1, 8), seats=st.integers(1, 4), seed=st.integers(0, 100),
       rate=st.sampled_from([0.0, 0.7, 2.0]))
def test_static_scheduler_never_admits_while_its_batch_runs(count, seats, seed, rate):
    from sim.studies.batching_metrics import make_engine
    reqs = uniform_workload(count, (1, 12), (1, 12), rate, seed)
    budget = max(seats, max(r.prompt_len + r.output_len for r in reqs))
    eng = make_engine(reqs, "static", seats, budget)
    while eng.has_unfinished_requests():
        running_before = [g.request_id for g in eng.scheduler.running]
        out = eng.step()
        admitted = [e.request_id for e in out.events if isinstance(e, Admitted)]
        if running_before:
            assert admitted == []
        assert len(eng.scheduler.batch) <= seats


# -- the timeline from a recorded trace, for either engine ---------------------------------

def test_record_reads_the_recorded_trace():
    """record(engine) is from_trace of sim.trace.record's trace: the same timeline, and the
    run keeps the trace it was read from."""
    reqs = uniform_workload(5, (3, 10), (2, 10), 1.0, 31)
    for scheduler in ("static", "vllm"):
        run = record(make_engine(reqs, scheduler, 3, 32))
        trace = trace_record(make_engine(reqs, scheduler, 3, 32), with_slots=False)
        again = from_trace(trace, 3, scheduler)
        assert again == run and grid(again) == grid(run)
        assert run.trace is not None and len(run.trace) == len(run.iterations) + 1
        # Each cell is what the step scheduled.
        for it, step in zip(run.iterations, run.trace.steps[1:]):
            ran = {(c.request_id, c.kind == PREFILL, c.tokens)
                   for c in it.slots if c is not None and c.kind in (PREFILL, DECODE)}
            assert ran == {(s.request_id, s.prefill, s.num_tokens) for s in step.scheduled}
    with pytest.raises(ValueError):
        from_trace(trace, 3, "orca")


def test_the_page_default_numbers_are_unchanged():
    """The v0.5.5 numbers the page and its example print (pinned before the timeline was read
    from traces)."""
    reqs = uniform_workload(5, (3, 10), (2, 10), 1.0, 31)
    static, vllm = compare(reqs, 3, 32)
    assert grid(static)[:4] == ["AP BP CP", "Ad Bd Cd", "Ad Bd Cd", "A_ Bd C_"]
    assert grid(vllm)[3] == "DP B. EP"
    s, v = static.totals(), vllm.totals()
    assert (s.drained_at, s.mean_latency, s.p90_latency, round(100 * s.utilisation)) == \
        (16, pytest.approx(8.6), 15, 62)
    assert (v.drained_at, v.mean_latency, v.p90_latency, round(100 * v.utilisation)) == \
        (11, pytest.approx(6.8), 10, 91)


def test_v1_runs_the_same_workload_with_one_budget():
    """engine="v1": the iteration-level side is V1's scheduler, read from the V1 engine's own
    trace. No prefill-only step: B decodes while D and E prefill."""
    reqs = uniform_workload(5, (3, 10), (2, 10), 1.0, 31)
    static, v1 = compare(reqs, 3, 32, engine="v1")
    assert v1.scheduler == "v1"
    assert all(step.snapshot["engine"] == "v1" for step in v1.trace.steps)
    assert static == compare(reqs, 3, 32)[0]          # the static side does not change
    assert grid(v1)[3] == "DP Bd EP"
    assert not any(c and c.kind == PAUSED for it in v1.iterations for c in it.slots)
    t = v1.totals()
    assert (t.drained_at, t.mean_latency, t.p90_latency, round(100 * t.utilisation)) == \
        (11, pytest.approx(6.6), 10, 91)
    # The same timeline from a trace recorded by hand.
    again = from_trace(trace_record(make_v1_engine(reqs, 3, 32), with_slots=False), 3, "v1")
    assert again == v1
    with pytest.raises(ValueError):
        compare(reqs, 3, 32, engine="v2")


def test_v1_chunks_a_prompt_into_what_is_left_of_the_budget():
    """V1's chunked prefill is always on: with a 32-token budget, A (12) and B (17) fit
    whole and C gets a 3-token chunk; static batching seats two."""
    reqs = uniform_workload(5, (12, 24), (2, 8), 0.0, 31)
    static, v1 = compare(reqs, 3, 32, engine="v1")
    assert grid(static)[0] == "AP BP --"
    assert [(c.request_id, c.kind, c.tokens) for c in v1.iterations[0].slots] == \
        [("A", PREFILL, 12), ("B", PREFILL, 17), ("C", PREFILL, 3)]
    assert v1.iterations[0].num_batched_tokens == 32
    c_chunks = [c.tokens for it in v1.iterations for c in it.slots
                if c and c.request_id == "C" and c.kind == PREFILL]
    assert c_chunks == [3, 10] and sum(c_chunks) == 13


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(count=st.integers(1, 8), lo=st.integers(1, 8), span=st.integers(0, 8),
       olo=st.integers(1, 8), ospan=st.integers(0, 8), rate=st.sampled_from([0.0, 0.5, 2.0]),
       seats=st.integers(1, 4), seed=st.integers(0, 50))
def test_v1_timelines_are_consistent(count, lo, span, olo, ospan, rate, seats, seed):
    reqs = uniform_workload(count, (lo, lo + span), (olo, olo + ospan), rate, seed)
    budget = max(seats, max(r.prompt_len + r.output_len for r in reqs))
    _, v1 = compare(reqs, seats, budget, engine="v1")
    assert set(v1.finished_step) == {r.request_id for r in reqs}
    for it in v1.iterations:
        ids = [c.request_id for c in it.slots if c is not None]
        assert len(ids) == len(set(ids)) <= seats
        assert not set(ids) & set(it.waiting)
        assert it.preempted == ()
        assert it.num_batched_tokens <= budget
    for r in reqs:
        cells = [c for it in v1.iterations for c in it.slots
                 if c is not None and c.request_id == r.request_id]
        assert sum(c.tokens for c in cells if c.kind == PREFILL) == r.prompt_len
        assert sum(1 for c in cells if c.kind == DECODE) == r.output_len - 1
    assert not any(c and c.kind == PADDING for it in v1.iterations for c in it.slots)
