import json
from pathlib import Path

import pytest

from sim.perf.cost import Roofline, predict, step_cost
from sim.perf.models import get_model
from sim.studies import latency
from sim.studies.latency import (
    CHATS_AND_DOCUMENTS,
    Setup,
    TimedRequest,
    compare,
    percentile,
    run_timed,
)

ROOT = Path(__file__).resolve().parents[3]
MODEL = get_model("llama-3-8b")
# Round ceilings, so hand computations are easy to follow.
ROOF = Roofline(1e15, 4e12, "test")


def h200():
    data = json.loads((ROOT / "data" / "h200-prefill-decode.json").read_text())
    return Roofline(data["matmul_peak_flops"], data["copy_bandwidth_bytes_per_s"], "H200")


def sync_setup(**kw):
    """The tests below (written before the async loop) price V1's synchronous loop."""
    return Setup(async_scheduling=False, **kw)


def t(model_seqs):
    return predict(step_cost(MODEL, model_seqs), ROOF).predicted_s


def test_one_request_by_hand():
    """A 100-token prompt and 3 outputs alone: a prefill step, then two decodes, each priced
    by the roofline at its context; tokens come out at the end of each step."""
    run = run_timed("v1", [TimedRequest("A", 100, 3)], sync_setup(), MODEL, ROOF)
    s0, s1, s2 = (t([(0, 100)]), t([(100, 1)]), t([(101, 1)]))
    assert [s.time_s for s in run.steps] == pytest.approx([s0, s1, s2])
    assert [(s.prefill_tokens, s.decode_tokens) for s in run.steps] == [(100, 0), (0, 1), (0, 1)]
    lat = run.requests[0]
    assert lat.token_times_s == pytest.approx((s0, s0 + s1, s0 + s1 + s2))
    assert lat.ttft_s == pytest.approx(s0)
    assert lat.gaps_s == pytest.approx((s1, s2))
    assert lat.max_tbt_s == pytest.approx(max(s1, s2))
    assert lat.mean_tbt_s == pytest.approx((s1 + s2) / 2)
    # The same in v0.5.5: one request, nothing to choose.
    v0 = run_timed("v0.5.5", [TimedRequest("A", 100, 3)], sync_setup(), MODEL, ROOF)
    assert v0.requests[0].token_times_s == pytest.approx(lat.token_times_s)


def test_arrival_in_seconds_and_idle_time():
    """A request that arrives after the engine drained starts at its arrival time; its TTFT
    counts from then."""
    reqs = [TimedRequest("A", 10, 1, 0.0), TimedRequest("B", 10, 1, 1.0)]
    run = run_timed("v1", reqs, sync_setup(), MODEL, ROOF)
    a, b = run.requests
    assert b.token_times_s[0] == pytest.approx(1.0 + t([(0, 10)]))
    assert b.ttft_s == pytest.approx(t([(0, 10)]))
    assert a.mean_tbt_s is None and a.max_tbt_s is None
    assert run.makespan_s == pytest.approx(b.finish_s)


def test_v0_prefill_only_step_stalls_a_decode_v1_mixes_them():
    """B arrives while A decodes: v0.5.5 prefills B alone (A waits one step), V1 decodes A in
    the same step as B's prompt, priced together."""
    reqs = [TimedRequest("A", 50, 4, 0.0), TimedRequest("B", 500, 1, 1e-9)]
    v0, v1 = compare(reqs, sync_setup(), MODEL, ROOF)
    assert [(s.prefill_tokens, s.decode_tokens) for s in v0.steps] == [
        (50, 0), (500, 0), (0, 1), (0, 1), (0, 1)]
    assert [(s.prefill_tokens, s.decode_tokens) for s in v1.steps] == [
        (50, 0), (500, 1), (0, 1), (0, 1)]
    assert v1.steps[1].seqs == (("A", 50, 1), ("B", 0, 500))
    assert v1.steps[1].time_s == pytest.approx(t([(50, 1), (0, 500)]))
    gap_v0 = v0.requests[0].gaps_s[0]
    assert gap_v0 == pytest.approx(t([(0, 500)]) + t([(50, 1)]))
    assert v1.requests[0].gaps_s[0] == pytest.approx(t([(50, 1), (0, 500)]))


def test_chunks_are_priced_at_their_context():
    """With a threshold V1 cuts a prompt into chunks: each chunk reads the KV of the ones
    before it."""
    run = run_timed("v1", [TimedRequest("A", 600, 1)], sync_setup(long_prefill_token_threshold=256),
                    MODEL, ROOF)
    assert [s.seqs for s in run.steps] == [(("A", 0, 256),), (("A", 256, 256),),
                                           (("A", 512, 88),)]


def test_preemption_resets_the_context():
    """A pool too small for both: the victim recomputes from 0 when it comes back."""
    reqs = [TimedRequest("A", 8, 12), TimedRequest("B", 8, 12)]
    setup = sync_setup(block_size=4, num_usable_blocks=8, max_num_batched_tokens=64,
                  max_model_len=64, max_num_seqs=8)
    for engine in latency.ENGINES:
        run = run_timed(engine, reqs, setup, MODEL, ROOF)
        assert run.num_preemptions >= 1
        assert all(len(r.token_times_s) == 12 for r in run.requests)
        # After the preemption the victim's prompt (and outputs) are recomputed: a
        # prefill of more than 8 tokens from context 0, or (V1) from its prefix-cache hit.
        recomputed = [q for s in run.steps[1:] for rid, c, q in s.seqs if q > 1]
        assert recomputed, engine


def test_checks():
    with pytest.raises(ValueError, match="max_model_len"):
        run_timed("v1", [TimedRequest("A", 2000, 100)], sync_setup(), MODEL, ROOF)
    with pytest.raises(ValueError, match="distinct"):
        run_timed("v1", [TimedRequest("A", 10, 1), TimedRequest("A", 10, 1)], sync_setup(), MODEL,
                  ROOF)
    with pytest.raises(ValueError, match="engine"):
        sync_setup().engine("v2")
    with pytest.raises(ValueError):
        TimedRequest("A", 0, 1)
    with pytest.raises(ValueError):
        TimedRequest("A", 1, 1, -1.0)


def test_percentile():
    assert percentile([3, 1, 2, 4], 50) == 2
    assert percentile([3, 1, 2, 4], 90) == 4
    assert percentile([5], 99) == 5
    with pytest.raises(ValueError):
        percentile([], 50)


def test_the_pages_numbers():
    """docs/v1-scheduler.md quotes these (Llama-3-8B on the measured H200 ceilings)."""
    roof = h200()
    v0, v1 = compare(CHATS_AND_DOCUMENTS, sync_setup(), MODEL, roof)
    thr = run_timed("v1", CHATS_AND_DOCUMENTS, sync_setup(long_prefill_token_threshold=256), MODEL,
                    roof)
    worst = [round(max(r.max_tbt_s for r in run.requests) * 1e3, 1) for run in (v0, v1, thr)]
    assert worst == [99.6, 37.6, 16.0]
    ttft = [{r.request_id: round(r.ttft_s * 1e3, 1) for r in run.requests}
            for run in (v0, v1, thr)]
    assert [x["G"] for x in ttft] == [38.0, 40.9, 100.1]
    assert [x["J"] for x in ttft] == [98.7, 99.4, 17.6]
    # v0.5.5's three prefill-only steps for G, H, then I with J.
    long_steps = [(round(s.time_s * 1e3, 1), s.decode_tokens, [rid for rid, _, _ in s.seqs])
                  for s in v0.steps if s.prefill_tokens > 1000]
    assert long_steps == [(35.0, 0, ["G"]), (31.2, 0, ["H"]), (29.5, 0, ["I", "J"])]
    big = run_timed("v1", CHATS_AND_DOCUMENTS, sync_setup(max_num_batched_tokens=8192), MODEL, roof)
    assert round(max(r.max_tbt_s for r in big.requests) * 1e3, 1) == 95.8


# -- the engine loop: async scheduling (V1's default) against the synchronous loop --------
def test_the_async_loop_hides_the_cpu_time_behind_the_gpu_step():
    """With c seconds of CPU per engine call, the synchronous loop pays c before every step;
    the async loop schedules the next batch while the GPU runs this one, so only the first
    step waits for the CPU (as long as c is shorter than a step)."""
    c = 1e-3
    req = [TimedRequest("A", 100, 3)]
    s0, s1, s2 = (t([(0, 100)]), t([(100, 1)]), t([(101, 1)]))
    assert min(s0, s1, s2) > c
    sync = run_timed("v1", req, sync_setup(cpu_step_s=c), MODEL, ROOF)
    assert sync.requests[0].token_times_s == pytest.approx(
        (c + s0, 2 * c + s0 + s1, 3 * c + s0 + s1 + s2))
    run = run_timed("v1", req, Setup(cpu_step_s=c), MODEL, ROOF)
    assert run.requests[0].token_times_s == pytest.approx(
        (c + s0, c + s0 + s1, c + s0 + s1 + s2))
    # The GPU runs the three steps back to back.
    gpu = [s for s in run.steps if s.time_s]
    assert [s.start_s for s in gpu] == pytest.approx([c, c + s0, c + s0 + s1])
    # Without CPU time the two loops emit every token at the same moment.
    zero = run_timed("v1", req, Setup(), MODEL, ROOF)
    assert zero.requests[0].token_times_s == pytest.approx(
        run_timed("v1", req, sync_setup(), MODEL, ROOF).requests[0].token_times_s)


def test_the_async_loop_admits_a_request_arriving_mid_step_one_step_later():
    """The next batch is scheduled as soon as the current one is launched: B, arriving while
    A's prompt runs, misses it and joins the batch after next (the synchronous loop
    schedules after the step ends and takes B at once)."""
    reqs = [TimedRequest("A", 50, 4, 0.0), TimedRequest("B", 500, 1, 1e-9)]
    sync = run_timed("v1", reqs, sync_setup(), MODEL, ROOF)
    run = run_timed("v1", reqs, Setup(), MODEL, ROOF)
    assert [(s.prefill_tokens, s.decode_tokens) for s in sync.steps] == [
        (50, 0), (500, 1), (0, 1), (0, 1)]
    assert [(s.prefill_tokens, s.decode_tokens) for s in run.steps] == [
        (50, 0), (0, 1), (500, 1), (0, 1), (0, 0)]
    assert run.requests[1].ttft_s > sync.requests[1].ttft_s


def test_cpu_time_is_checked():
    with pytest.raises(ValueError, match="cpu_step_s"):
        run_timed("v1", [TimedRequest("A", 10, 1)], Setup(cpu_step_s=-1.0), MODEL, ROOF)
