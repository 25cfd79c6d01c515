"""sim/studies/sharing.py: the paper's saving measure and the Fig. 15 reproduction."""
import pytest
from helpers import run_checked

from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.core.sequence import SamplingParams
from sim.events import CopyOnWrite, Preempted
from sim.studies.sharing import (
    FIG15_BEAM_TOP_MARGIN,
    FIG15_REQUESTS,
    PAPER_FIG15,
    BlockUsage,
    alpaca_requests,
    calibrate_beam_top_margin,
    measure,
    reproduce_fig15,
    sampling_params,
    saving,
    saving_so_far,
    sharing_engine,
    usage,
    usage_from_snapshot,
)
from sim.studies.workload import RequestSpec
from sim.trace import record


def test_saving_formula():
    assert saving(0, 0) == 0.0
    assert saving(3, 12) == 0.25
    assert saving(12, 12) == 1.0
    u = BlockUsage(used=5, unshared=8)
    assert (u.saved, u.saving) == (3, 3 / 8)
    for saved, unshared in ((5, 4), (-1, 4), (1, -1)):
        with pytest.raises(ValueError, match="0 <= saved <= unshared"):
            saving(saved, unshared)


def parallel_engine(prompt, n, output, block_size=4):
    per_copy = -(-(prompt + output) // block_size)
    engine = LLMEngine(CacheConfig(block_size=block_size, num_gpu_blocks=n * (per_copy + 1),
                                   num_cpu_blocks=0, watermark=0.0), SchedulerConfig())
    engine.add_request("A", prompt, SamplingParams(n=n, max_tokens=output, ignore_eos=True))
    return engine


@pytest.mark.parametrize("mode, width", [("parallel", 1), ("parallel", 3), ("beam", 2),
                                         ("beam", 4)])
def test_usage_counts_table_entries_and_distinct_blocks(mode, width):
    engine = LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=64, num_cpu_blocks=0,
                                   watermark=0.0), SchedulerConfig(), seed=1)
    engine.add_request("A", 7, sampling_params(mode, width, 9))
    engine.add_request("B", 5, sampling_params(mode, width, 6))
    bm = engine.block_manager
    while engine.has_unfinished_requests():
        engine.step()
        u = usage(bm)
        assert u == usage_from_snapshot(engine.snapshot())
        # Without sharing = one block per table entry = the sum of the reference counts.
        assert u.unshared == sum(b.ref_count for b in bm.gpu_allocator.blocks)
        assert u.used == sum(1 for b in bm.gpu_allocator.blocks if b.ref_count)
        if mode == "parallel" and width == 1:
            assert u.saved == 0


def test_measure_by_hand():
    # A 16-token prompt fills one block of 16 exactly; two samples, 3 tokens each.
    # Step 0: both tables [b]: 1 block used, 2 without sharing. Step 1: each sample's token
    # 16 starts a block of its own: 3 used, 4 without. Step 2: both finish and free: 0, 0.
    r = measure("parallel", 2, [RequestSpec("0", 16, 3)], block_size=16)
    assert (r.steps, r.block_steps_used, r.block_steps_unshared) == (3, 4, 6)
    assert r.time_averaged == pytest.approx(2 / 6)
    assert (r.peak_used, r.peak_unshared) == (3, 4)
    assert r.at_peak == pytest.approx(1 / 4)


@pytest.mark.parametrize("prompt, block_size", [(7, 4), (8, 4), (3, 4), (16, 16), (17, 16),
                                                (5, 1)])
@pytest.mark.parametrize("n", [1, 2, 3, 6])
def test_copy_on_write_count_and_the_boundary_case(prompt, block_size, n):
    engine = parallel_engine(prompt, n, 3, block_size)
    outs = run_checked(engine)      # every invariant, after every step
    cows = [(o.step, e) for o in outs for e in o.events if isinstance(e, CopyOnWrite)]
    if prompt % block_size == 0:
        # The prompt fills its last block exactly: no sample ever writes into a shared block.
        assert cows == []
    else:
        # best_of - 1 copies, all in the first decode step: the parent (seq 0) first, then
        # the children in order; the last child writes in place.
        assert [s for s, _ in cows] == [1] * (n - 1)
        assert [e.seq_id for _, e in cows] == list(range(n - 1))
        assert len({e.src for _, e in cows}) <= 1


@pytest.mark.parametrize("mode, width", [("parallel", 1), ("parallel", 6), ("beam", 2),
                                         ("beam", 6)])
def test_a_recorded_sharing_engine_never_preempts_and_averages_like_measure(mode, width):
    requests = [RequestSpec("A", 7, 9), RequestSpec("B", 16, 3, arrival_step=2),
                RequestSpec("C", 1, 12)]
    trace = record(sharing_engine(mode, width, requests, block_size=4, seed=2))
    assert trace.stopped is None
    assert [e for step in trace for e in step.of_type(Preempted)] == []
    so_far = saving_so_far(trace)
    assert len(so_far) == len(trace) and so_far[0] is None
    # The last step's running average is the whole run's, as measure() counts it.
    result = measure(mode, width, requests, block_size=4, seed=2)
    assert result.steps == len(trace) - 1
    assert so_far[-1] == result.time_averaged


def test_saving_so_far_by_hand():
    # measure_by_hand's run, step by step: 1 of 2 saved, then 2 of 6 (1 + 1 over 2 + 4), and
    # the last step holds nothing, so the average stays.
    trace = record(sharing_engine("parallel", 2, [RequestSpec("0", 16, 3)], block_size=16))
    assert saving_so_far(trace) == [None, 1 / 2, 2 / 6, 2 / 6]


def test_measure_is_deterministic_and_never_preempts():
    reqs = alpaca_requests(20, seed=3)
    a = measure("beam", 3, reqs)
    assert a == measure("beam", 3, reqs)
    assert 0 < a.time_averaged < 1 and a.steps >= max(r.output_len for r in reqs)


def test_first_requests_of_a_workload_are_a_smaller_workload():
    # The beam reproduction runs the first FIG15_REQUESTS["beam"] of the same workload.
    small = alpaca_requests(FIG15_REQUESTS["beam"])
    assert small == alpaca_requests(FIG15_REQUESTS["parallel"])[:len(small)]


def test_bad_mode_and_width():
    with pytest.raises(ValueError, match="mode must be one of"):
        measure("greedy", 2, [RequestSpec("0", 4, 4)])
    with pytest.raises(ValueError, match="width must be at least 2"):
        measure("beam", 1, [RequestSpec("0", 4, 4)])
    with pytest.raises(ValueError, match="mode must be one of"):
        reproduce_fig15(("greedy",))


@pytest.fixture(scope="module")
def fig15():
    return reproduce_fig15()


def test_fig15_shape(fig15):
    """What the pages say about the reproduction, held to the numbers."""
    par, beam = fig15["parallel"], fig15["beam"]
    for results in (par, beam):
        savings = [results[w].time_averaged for w in (2, 4, 6)]
        assert savings == sorted(savings)            # more samples or beams, more saving
    for w in (2, 4, 6):
        assert beam[w].time_averaged > par[w].time_averaged
        # Parallel sampling: within about a point of the paper at every n.
        assert abs(par[w].time_averaged - PAPER_FIG15["parallel"][w]) < 0.015


def test_fig15_beam_lands_within_5_points_of_the_paper(fig15):
    """With the one calibrated margin (FIG15_BEAM_TOP_MARGIN), every beam width lands
    within 5 percentage points of the paper; the numbers the pages quote."""
    beam = fig15["beam"]
    assert FIG15_BEAM_TOP_MARGIN == 3.25
    for w in (2, 4, 6):
        assert abs(beam[w].time_averaged - PAPER_FIG15["beam"][w]) < 0.05
    assert [round(100 * beam[w].time_averaged, 1) for w in (2, 4, 6)] == [33.0, 51.2, 56.7]


def test_fig15_beam_without_the_calibration():
    """The uncalibrated stand-in (margin 0, the model's default) saves more than the paper
    at every k, by a gap that grows with k: what the caption quotes."""
    beam = reproduce_fig15(("beam",), beam_top_margin=0.0)["beam"]
    assert [round(100 * beam[w].time_averaged, 1) for w in (2, 4, 6)] == [42.9, 63.2, 69.3]
    gaps = [beam[w].time_averaged - PAPER_FIG15["beam"][w] for w in (2, 4, 6)]
    assert all(g > 0 for g in gaps) and gaps == sorted(gaps)


def test_the_margin_is_for_beam_search_only():
    # Parallel sampling draws samples, never beam candidates: the margin changes nothing.
    reqs = alpaca_requests(30)
    for n in (2, 6):
        assert measure("parallel", n, reqs) == measure("parallel", n, reqs, beam_top_margin=4.0)
    # Beam search shares less with a more peaked model: each beam's best continuation beats
    # the other beams' second best more often, so fewer beams are replaced by another's fork.
    flat, peaked = (measure("beam", 4, reqs[:10], beam_top_margin=m) for m in (0.0, 4.0))
    assert peaked.time_averaged < flat.time_averaged


def test_calibration_pools_the_workloads_and_picks_the_least_squares_margin(monkeypatch):
    # The search itself, on fake measurements: every workload (seed) saves the paper's number
    # plus 0.02 * (margin - 2.5) plus its own offset; the offsets cancel when pooled.
    import sim.studies.sharing as sharing
    calls = []

    def fake(mode, width, requests, block_size, seed, margin):
        calls.append((mode, len(requests), seed, margin))
        target = PAPER_FIG15["beam"][width] + 0.02 * (margin - 2.5) + 0.01 * (seed - 2)
        return sharing.SharingResult("beam", width, len(requests), 1,
                                     round(1000 * (1 - target)), 1000, 0, 1)
    monkeypatch.setattr(sharing, "measure", fake)
    best, table = calibrate_beam_top_margin()
    assert best == 2.5 and sorted(table) == [i / 4 for i in range(8, 17)]
    assert table[2.5] == pytest.approx(PAPER_FIG15["beam"], abs=1e-3)
    assert {(mode, n) for mode, n, _, _ in calls} == {("beam", 200)}
    assert {seed for _, _, seed, _ in calls} == {0, 1, 2, 3, 4}
