"""P/D disaggregation (sim/studies/disaggregated.py): the lifecycle on both engines, the
transfer's time from KV bytes over the link, aborts on both sides, timeouts, load failures
under both policies, and the invariants of both engines after every step over
hypothesis-generated workloads (no block held once a request and its transfer are done)."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.events import BlocksHeld, KVTransferFinished, WaitingForRemoteKVs
from sim.perf.cost import Roofline
from sim.perf.links import get_link
from sim.perf.models import cache_block_size, get_model
from sim.studies.disaggregated import (
    DECODE,
    PREFILL,
    DisaggregatedServing,
    PDRequest,
    PDSetup,
    check_pd,
)

MODEL = get_model("llama-3-8b")
H200 = Roofline(785832482732577.4, 4099502913721.2954, "H200")


def serve(requests, check=True, **setup):
    run = DisaggregatedServing(requests, PDSetup(**setup), MODEL, H200)
    trace = run.run(check=check_pd if check else None)
    return run, trace


def assert_empty(engine):
    sched = engine.scheduler
    assert not sched.requests and not sched.waiting and not sched.skipped_waiting
    assert not sched.running and not engine.kv_cache_manager.req_to_blocks
    pool = engine.block_pool
    assert pool.get_num_free_blocks() == pool.num_gpu_blocks - 1
    assert all(b.ref_cnt == 0 for b in pool.blocks if not b.is_null)


def rows_of(trace, engine, event_type):
    return [s for s in trace.steps[1:] if s.snapshot["engine"] == engine
            and any(isinstance(e, event_type) for e in s.events)]


def test_one_request_end_to_end():
    """Prefill computes the prompt and holds its blocks; the decode side allocates, reads
    them over the link (the time is the KV bytes over the bandwidth), recomputes the last
    prompt token and generates every output token; the prefill side frees when the read
    is done."""
    run, trace = serve([PDRequest("A", 100, 4)], link="ib-ndr", prefill_blocks=32,
                       decode_blocks=32)
    assert trace.stopped is None and not run.problems
    rec = trace.meta["records"]["A"]
    assert rec.outcome == "done" and len(rec.token_times_s) == 4
    # 100 tokens in blocks of 16: 7 blocks of 2 MiB (Llama-3-8B, bf16).
    blocks = -(-100 // 16)
    assert run.block_bytes == cache_block_size(MODEL, 16, "bf16") == 2 * 2 ** 20
    assert rec.transfer_end_s - rec.transfer_start_s == pytest.approx(
        get_link("ib-ndr").transfer_time(blocks * run.block_bytes))
    assert rec.prefill_done_s <= rec.transfer_start_s < rec.transfer_end_s
    assert rec.transfer_end_s < rec.token_times_s[0]
    # The prefill side held the blocks until the read completed, then freed them.
    held = rows_of(trace, PREFILL, BlocksHeld)[0]
    assert [e for e in held.events if isinstance(e, BlocksHeld)][0].blocks == tuple(
        range(1, blocks + 1))
    freed = rows_of(trace, PREFILL, KVTransferFinished)[0]
    assert freed.snapshot["time_s"] == pytest.approx(rec.transfer_end_s)
    assert freed.snapshot[PREFILL]["gpu"]["num_free"] == 32
    # The decode side waited in WAITING_FOR_REMOTE_KVS, then recomputed one token.
    waiting = rows_of(trace, DECODE, WaitingForRemoteKVs)[0]
    req = next(r for r in waiting.snapshot[DECODE]["requests"] if r["request_id"] == "A")
    assert req["seqs"][0]["status"] == "waiting_for_remote_kvs"
    assert waiting.snapshot[DECODE]["queues"]["skipped_waiting"] == ["A"]
    first = next(s for s in trace.steps[1:] if s.snapshot["engine"] == DECODE
                 and any(x.request_id == "A" for x in s.scheduled))
    assert [(x.request_id, x.num_tokens) for x in first.scheduled] == [("A", 1)]
    assert_empty(run.prefill)
    assert_empty(run.decode)


def test_blocks_fill_as_the_transfer_lands():
    """On a slow link the decode side's blocks fill block by block while the prefill
    engine works on the next prompt, chunk by chunk (every row is a step of either
    engine)."""
    run, trace = serve([PDRequest("A", 160, 2), PDRequest("B", 1500, 2, 0.0005)],
                       link="ethernet-25g", prefill_blocks=200, decode_blocks=200,
                       max_num_batched_tokens=256)
    fills = []
    for step in trace.steps[1:]:
        d = step.snapshot[DECODE]
        req = next((r for r in d["requests"] if r["request_id"] == "A"), None)
        if req and req["seqs"][0]["status"] == "waiting_for_remote_kvs":
            fills.append(sum(f for _, _, f in req["seqs"][0]["block_table"]))
    assert fills[0] < 160 and any(0 < f < 160 for f in fills), fills
    assert fills == sorted(fills)
    assert not run.problems


def test_abort_on_the_prefill_side_frees_at_once():
    run, trace = serve([PDRequest("A", 900, 3, 0.0), PDRequest("B", 900, 3, 0.0, abort_s=0.0)],
                       prefill_blocks=200, decode_blocks=200)
    assert trace.meta["records"]["B"].outcome == "aborted"
    assert not run.problems
    assert_empty(run.prefill)


def test_abort_while_the_decode_side_waits_for_remote_kvs():
    """The decode request is aborted during its read: its blocks stay until the read
    lands, then are freed; the prefill side is notified by the read as usual."""
    run, trace = serve([PDRequest("A", 400, 30, 0.0, abort_s=0.012)], link="ethernet-25g",
                       prefill_blocks=64, decode_blocks=64)
    rec = trace.meta["records"]["A"]
    assert rec.outcome == "aborted" and rec.transfer_start_s < 0.012 < rec.transfer_end_s
    held = rows_of(trace, DECODE, BlocksHeld)
    assert held and held[0].snapshot["time_s"] < rec.transfer_end_s
    done = rows_of(trace, DECODE, KVTransferFinished)[0]
    assert done.snapshot[DECODE]["gpu"]["num_free"] == 64
    assert not run.problems
    assert_empty(run.decode)
    assert_empty(run.prefill)


def test_abort_before_the_decode_side_allocates_tells_the_prefill_side_to_free():
    """No room on the decode side: the request waits unallocated; aborted there, the
    connector sends a notification without reading, and the prefill side frees."""
    requests = [PDRequest("A", 200, 200, 0.0), PDRequest("B", 200, 3, 0.0, abort_s=0.05)]
    run, trace = serve(requests, prefill_blocks=64, decode_blocks=20)
    assert trace.meta["records"]["B"].outcome == "aborted"
    assert trace.meta["records"]["B"].transfer_start_s is None
    sent = [s for s in rows_of(trace, PREFILL, KVTransferFinished)
            if any(getattr(e, "request_id", None) == "B" for e in s.events)]
    assert sent and sent[0].snapshot["time_s"] < 1.0   # notified, not the 30 s lease
    assert not run.problems


def test_a_dropped_request_holds_prefill_blocks_until_the_lease_runs_out():
    """The client gives up between the prefill's answer and the decode's request: nobody
    reads the blocks, which the prefill side frees when the lease (here 2 s) runs out."""
    run, trace = serve([PDRequest("A", 100, 3, 0.0, abort_s=0.004)], proxy_delay_s=0.01,
                       kv_lease_duration=2, prefill_blocks=32, decode_blocks=32)
    rec = trace.meta["records"]["A"]
    assert rec.outcome == "dropped"
    freed = rows_of(trace, PREFILL, KVTransferFinished)[0]
    assert freed.snapshot["time_s"] == pytest.approx(rec.prefill_done_s + 2)
    assert not run.problems
    assert_empty(run.prefill)


@pytest.mark.parametrize("policy", ["fail", "recompute"])
def test_failed_read(policy):
    """A failed read marks every block invalid. "fail" (v0.25.1's default) ends the
    request with an error; "recompute" prefills it on the decode side. Either way the
    prefill side is never notified and frees when the lease runs out."""
    run, trace = serve([PDRequest("A", 300, 4, fail_transfer=True)],
                       kv_load_failure_policy=policy, kv_lease_duration=3,
                       prefill_blocks=64, decode_blocks=64)
    rec = trace.meta["records"]["A"]
    if policy == "fail":
        assert rec.outcome == "error" and not rec.token_times_s
    else:
        assert rec.outcome == "done" and len(rec.token_times_s) == 4
        prefill_rows = [s for s in trace.steps[1:] if s.snapshot["engine"] == DECODE
                        and any(x.request_id == "A" and x.num_tokens == 300
                                for x in s.scheduled)]
        assert prefill_rows   # the whole prompt, recomputed locally
    freed = rows_of(trace, PREFILL, KVTransferFinished)[0]
    assert freed.snapshot["time_s"] == pytest.approx(rec.prefill_done_s + 3)
    assert not run.problems
    assert_empty(run.prefill)
    assert_empty(run.decode)


def test_a_local_prefix_hit_on_the_decode_side_reads_only_the_rest():
    shared = 64
    requests = [PDRequest("A", 100, 2, 0.0, shared_prefix=shared),
                PDRequest("B", 100, 2, 0.05, shared_prefix=shared)]
    run, trace = serve(requests, prefill_blocks=64, decode_blocks=64)
    reads = {t.request_id: t for t in run.transport.transfers}
    assert len(reads["A"].local_block_ids) == 7
    assert len(reads["B"].local_block_ids) == 7 - shared // 16
    # The tail of the prefill's blocks.
    assert reads["B"].remote_block_ids == reads["B"].remote_block_ids[-3:]
    assert not run.problems


def test_setup_and_request_checks():
    with pytest.raises(ValueError, match="link"):
        PDSetup(link="carrier-pigeon")
    with pytest.raises(ValueError, match="kv_load_failure_policy"):
        PDSetup(kv_load_failure_policy="retry")
    with pytest.raises(ValueError, match="at least 1 token"):
        PDRequest("A", 0, 1)
    with pytest.raises(ValueError, match="abort_s"):
        PDRequest("A", 1, 1, arrival_s=1.0, abort_s=0.5)
    with pytest.raises(ValueError, match="distinct"):
        DisaggregatedServing([PDRequest("A", 1, 1), PDRequest("A", 2, 1)], PDSetup(),
                             MODEL, H200)


# -- invariants over random P/D workloads --------------------------------------------------

BS = 4


@st.composite
def workloads(draw):
    prefill_blocks = draw(st.integers(6, 24))
    decode_blocks = draw(st.integers(6, 24))
    max_model_len = BS * min(prefill_blocks, decode_blocks)
    n = draw(st.integers(1, 7))
    requests = []
    for i in range(n):
        prompt = draw(st.integers(1, max_model_len - 1))
        output = draw(st.integers(1, max(1, min(8, max_model_len - prompt))))
        arrival = draw(st.sampled_from([0.0, 0.0, 0.001, 0.004, 0.02]))
        abort = draw(st.sampled_from([None, None, None, 0.0, 0.002, 0.006, 0.015, 0.05]))
        requests.append(PDRequest(
            f"R{i}", prompt, output, arrival,
            abort_s=None if abort is None else arrival + abort,
            fail_transfer=draw(st.booleans()) and draw(st.booleans()),
            shared_prefix=draw(st.sampled_from([0, 0, min(8, prompt)]))))
    setup = PDSetup(block_size=BS, prefill_blocks=prefill_blocks,
                    decode_blocks=decode_blocks, max_num_batched_tokens=draw(
                        st.sampled_from([8, 16, 64])),
                    max_num_seqs=draw(st.sampled_from([2, 4, 8])),
                    max_model_len=max_model_len,
                    link=draw(st.sampled_from(["nvlink", "ib-ndr", "ethernet-25g"])),
                    kv_load_failure_policy=draw(st.sampled_from(["fail", "recompute"])),
                    kv_lease_duration=2,
                    proxy_delay_s=draw(st.sampled_from([0.0, 0.0, 0.003])),
                    enable_prefix_caching=draw(st.sampled_from([True, True, False])))
    return requests, setup


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads())
def test_invariants_hold_after_every_step_of_both_engines(workload):
    requests, setup = workload
    run = DisaggregatedServing(requests, setup, MODEL, H200, record=False)
    trace = run.run(max_rows=5000, check=check_pd)
    assert trace.stopped is None
    assert run.problems == []
    # Every request ended; nothing is held on either side.
    for r in requests:
        rec = trace.meta["records"][r.request_id]
        assert rec.outcome in ("done", "aborted", "error", "dropped"), rec
        if rec.outcome == "done":
            assert len(rec.token_times_s) == r.output_len
    assert_empty(run.prefill)
    assert_empty(run.decode)
    assert not run.transport.in_flight(run.now_s)
