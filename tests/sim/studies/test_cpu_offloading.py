"""sim/studies/cpu_offloading.py: the chat with a CPU tier, on the H200's clock."""
import pytest

from sim.perf.host_link import PCIE
from sim.studies.cpu_offloading import (
    OffloadSetup,
    first_turn_times,
    run_offloading,
    windowed,
)
from sim.studies.prefix_sharing import ChatWorkload
from sim.v1.invariants import check_engine

SMALL = ChatWorkload(conversations=10, turns=3, system_prompt=256, max_user=256,
                     max_answer=24, dataset="sharegpt")
SETUP = OffloadSetup(pool_blocks=96, rate_per_s=4.0, think_s=3.0)


@pytest.fixture(scope="module")
def runs():
    return {f: run_offloading(f * SETUP.pool_blocks, SETUP, SMALL, check=check_engine)
            for f in (0, 1, 4)}


def test_invariants_hold_on_the_clock(runs):
    # check_engine ran after every step of every run (run_offloading raises otherwise)
    assert all(len(r.ttft_s) == SMALL.num_requests for r in runs.values())


def test_a_bigger_cpu_tier_finds_more_and_computes_less(runs):
    r0, r1, r4 = runs[0], runs[1], runs[4]
    assert r0.cpu_hit_tokens == 0 and r0.load_bytes == 0 and r0.store_bytes == 0
    assert r0.cpu_hit_tokens <= r1.cpu_hit_tokens < r4.cpu_hit_tokens
    assert r4.computed_prompt_tokens < r0.computed_prompt_tokens
    assert r0.hit_rate < r4.hit_rate
    # every prompt token is found or computed, once per admission (no preemption here)
    for r in runs.values():
        assert r.preemptions == 0
        assert r.gpu_hit_tokens + r.cpu_hit_tokens + r.computed_prompt_tokens \
            == r.prompt_tokens


def test_loads_are_priced_on_the_pcie_link(runs):
    r4 = runs[4]
    assert r4.load_bytes == r4.cpu_hit_tokens // 16 * 2 * 2**20     # 2 MiB per block
    assert r4.load_s == pytest.approx(r4.load_bytes / PCIE["h200"].bandwidth)
    # the store of a block costs what its load does
    assert r4.store_s == pytest.approx(r4.store_bytes / PCIE["h200"].bandwidth)


def test_the_clock_and_arrivals():
    times = first_turn_times(SMALL, 4.0)
    assert times == sorted(times) and len(times) == SMALL.conversations
    run = run_offloading(0, SETUP, SMALL)
    assert all(a.end_s >= a.start_s for a in run.steps)
    assert all(b.start_s >= a.end_s for a, b in zip(run.steps, run.steps[1:]))
    assert all(t > 0 for t in run.ttft_s.values())


def test_windowed_sums_steps_by_time():
    class Row:
        def __init__(self, end_s, v):
            self.end_s, self.v = end_s, v
    rows = [Row(0.5, 1), Row(0.9, 2), Row(1.5, 4), Row(3.2, 8)]
    assert windowed(rows, lambda r: r.v, 1.0) == [(1.0, 3), (2.0, 4), (3.0, 0), (4.0, 8)]
    assert windowed([], lambda r: 0, 1.0) == []
