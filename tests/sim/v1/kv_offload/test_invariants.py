"""The offloading connector's invariants (sim/v1/kv_offload/invariants.py, run by
sim/v1/invariants.py's check_engine) over random workloads with preemption and offloading
(a hypothesis state machine: small GPU pools that preempt, small CPU tiers that evict and
refuse stores, transfers that take one step or several, and hybrid models: a full-attention
group and a sliding-window group), checked after every engine step; and the checker
catching each kind of corruption."""
import json
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from sim.core.sequence import SamplingParams
from sim.events import Aborted, OffloadLoadJob, OffloadStoreJob, Preempted, RequestFinished
from sim.v1.config import CacheConfig, KVTransferConfig, SchedulerConfig
from sim.v1.engine import LLMEngine
from sim.v1.invariants import check_engine
from sim.v1.kv_cache_utils import attention_layer_specs, make_kv_cache_config
from sim.v1.kv_offload.invariants import offloading_parts

STEPS = [0]
COUNTS = {"preempted": 0, "loads": 0, "stores": 0, "hybrid_loads": 0}
MAX_MODEL_LEN = 48
PRIORITY_PAYLOAD_FINDINGS = ("slots do not hold positions", "do not read back",
                             "GPU block")


@dataclass(frozen=True)
class SlowLink:
    """A link on which one GPU block takes `seconds_per_block` (steps take 1 s here)."""
    seconds_per_block: float

    def transfer_time(self, num_bytes: int) -> float:
        return num_bytes * self.seconds_per_block


def offloading_engine(bs=4, gpu_blocks=10, cpu_blocks=16, factor=1, prompt_only=False,
                      caching=True, budget=64, seqs=8, policy="fcfs", spec=0, rate=0.7,
                      link=None, seed=0, window=None) -> LLMEngine:
    """`window`: a hybrid model, one full-attention layer and one sliding-window layer of
    that many tokens (two KV cache groups sharing the pool)."""
    extra = {"num_cpu_blocks": cpu_blocks, "offload_prompt_only": prompt_only}
    if factor > 1:
        extra["block_size"] = bs * factor
    kwargs = {}
    if link is not None:
        kwargs = dict(kv_connector_kwargs={"link": link, "kv_bytes_per_block": 1},
                      step_time=lambda out: 1.0)
    if window is not None:
        kwargs["kv_cache_config"] = make_kv_cache_config(gpu_blocks, attention_layer_specs(
            ["full_attention", "sliding_attention"], bs, sliding_window=window))
    return LLMEngine(
        CacheConfig(block_size=bs, num_gpu_blocks=gpu_blocks, enable_prefix_caching=caching),
        SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=min(seqs, budget),
                        max_model_len=MAX_MODEL_LEN, policy=policy,
                        num_speculative_tokens=spec),
        seed=seed, spec_acceptance_rate=rate,
        kv_transfer_config=KVTransferConfig(kv_connector="OffloadingConnector",
                                            kv_role="kv_both",
                                            kv_connector_extra_config=extra),
        **kwargs)


class OffloadingMachine(RuleBasedStateMachine):
    @initialize(bs=st.sampled_from([2, 4]), gpu_blocks=st.integers(4, 12),
                cpu_blocks=st.sampled_from([0, 2, 4, 8, 32]), factor=st.sampled_from([1, 1, 2]),
                prompt_only=st.booleans(), caching=st.sampled_from([True, True, False]),
                budget=st.sampled_from([8, 16, 64]), seqs=st.integers(1, 5),
                policy=st.sampled_from(["fcfs", "fcfs", "priority"]),
                spec=st.sampled_from([0, 0, 2]),
                link=st.sampled_from([None, None, 0.4, 1.5]), seed=st.integers(0, 3),
                window=st.sampled_from([None, None, 4, 7, 12]))
    def setup(self, bs, gpu_blocks, cpu_blocks, factor, prompt_only, caching, budget, seqs,
              policy, spec, link, seed, window):
        self.priority = policy == "priority"
        self.hybrid = window is not None
        # A hybrid model's two groups share the pool: twice the usable blocks.
        self.engine = offloading_engine(bs, 2 * gpu_blocks - 1 if self.hybrid else gpu_blocks,
                                        cpu_blocks, factor, prompt_only, caching, budget,
                                        seqs, policy, spec, 0.7,
                                        SlowLink(link) if link else None, seed, window)
        self.bases = [[3 + (7 * b + 11 * i) % 40 for i in range(30)] for b in range(3)]
        self.n = 0
        self.gone: set[str] = set()      # requests finished or aborted
        # Every request fits the pool alone with 16 outputs (none blocks FCFS for good).
        self.max_prompt = max(1, min(MAX_MODEL_LEN - 17, (gpu_blocks - 1) * bs - 16))

    @rule(base=st.integers(0, 3), prefix=st.integers(0, 30), suffix=st.integers(0, 6),
          max_tokens=st.integers(1, 16), delay=st.integers(0, 3),
          priority=st.integers(0, 2))
    def add_request(self, base, prefix, suffix, max_tokens, delay, priority):
        tokens = (self.bases[base][:prefix] if base < 3 else []) + [
            50 + (self.n * 13 + i) % 30 for i in range(suffix)]
        tokens = (tokens or [3])[:self.max_prompt]
        self.engine.add_request(f"r{self.n}", tokens, SamplingParams(max_tokens=max_tokens),
                                arrival_step=self.engine.step_index + delay,
                                priority=priority)
        self.n += 1

    def _step(self):
        out = self.engine.step()
        STEPS[0] += 1
        for e in out.events:
            if isinstance(e, OffloadStoreJob):
                COUNTS["stores"] += 1
                # Nothing is stored for a request after it finished (or was aborted).
                assert e.request_id not in self.gone, e
            elif isinstance(e, OffloadLoadJob):
                COUNTS["loads"] += 1
                COUNTS["hybrid_loads"] += self.hybrid
            elif isinstance(e, Preempted):
                COUNTS["preempted"] += 1
        for e in out.events:
            if isinstance(e, RequestFinished | Aborted):
                self.gone.add(e.request_id)
        self.check()

    @rule(base=st.integers(0, 2), prefix=st.integers(4, 30), max_tokens=st.integers(4, 16))
    def burst(self, base, prefix, max_tokens):
        """Three requests at once on a shared beginning: a pool that fills as they decode."""
        for j in range(3):
            self.add_request(base, prefix, j + 1, max_tokens, 0, j % 3)

    @rule(k=st.integers(1, 6))
    def step(self, k):
        for _ in range(k):
            if not self.engine.has_requests():
                return
            self._step()

    @rule(i=st.integers(0, 50))
    def abort(self, i):
        if self.n:
            self.engine.abort_request(f"r{i % self.n}")
            for e in self.engine.take_events():
                if isinstance(e, Aborted):
                    self.gone.add(e.request_id)
            self.check()

    @rule()
    def reset_prefix_cache(self):
        self.engine.reset_prefix_cache()
        self.check()

    def check(self):
        # The frame of every step can be drawn (JSON-ready, loads in flight included).
        json.dumps(self.engine.snapshot())
        problems = check_engine(self.engine)
        if self.priority:
            problems = [p for p in problems
                        if not any(f in p for f in PRIORITY_PAYLOAD_FINDINGS)]
        assert not problems, problems

    @invariant()
    def holds(self):
        self.check()

    def teardown(self):
        for _ in range(300):
            if not self.engine.has_requests():
                break
            self._step()
        if not self.engine.has_requests():
            pool = self.engine.block_pool
            assert pool.get_num_free_blocks() == pool.num_gpu_blocks - 1
            sched, manager, _, worker = offloading_parts(self.engine)
            assert not sched.jobs()
            assert not worker.in_flight()
            # Every CPU block is idle: stored and evictable.
            assert all(b.ref_cnt == 0 for _, b in manager.blocks())


@pytest.mark.slow   # about 25 s alone: in ./dev test, not ./dev fast
def test_offloading_invariants_hold_over_random_workloads():
    STEPS[0] = 0
    for k in COUNTS:
        COUNTS[k] = 0
    run_state_machine_as_test(
        OffloadingMachine,
        settings=settings(max_examples=80, stateful_step_count=40, deadline=None,
                          derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.filter_too_much]))
    # The workloads preempt, store and load (the checks ran on something).
    print(f"{STEPS[0]} engine steps, {COUNTS}")
    assert STEPS[0] >= 5_000, STEPS[0]
    assert COUNTS["preempted"] > 100 and COUNTS["loads"] > 100 and COUNTS["stores"] > 500, \
        COUNTS
    assert COUNTS["hybrid_loads"] > 20, COUNTS


# -- the checker catches corruption -------------------------------------------------------
def engine_with_cpu_blocks(link=None):
    """Three requests on 8 usable GPU blocks: C is preempted, its blocks are offloaded;
    stepped until the CPU tier holds ready blocks."""
    e = offloading_engine(gpu_blocks=9, cpu_blocks=16, link=link)
    for name in "ABC":
        e.add_request(name, 8, SamplingParams(max_tokens=6, ignore_eos=True))
    for _ in range(3):
        e.step()
    assert check_engine(e) == []
    return e


def test_a_corrupted_cpu_payload_is_found():
    e = engine_with_cpu_blocks()
    _, manager, _, worker = offloading_parts(e)
    _, status = next((k, b) for k, b in manager.blocks() if b.is_ready)
    worker.cpu_cache[status.block_id][0] = (99999, 0)
    assert any("its slots do not hold the tokens its hash names" in p
               for p in check_engine(e))


def test_a_wrong_evictable_count_is_found():
    e = engine_with_cpu_blocks()
    _, manager, _, _ = offloading_parts(e)
    manager._num_evictable_cache_blocks += 1
    assert any("evictable count" in p for p in check_engine(e))


def test_a_store_without_its_flush_is_found():
    """Without the flush before reuse, a store in flight reads a GPU block that another
    request now holds (and would copy its tokens to the CPU)."""
    e = offloading_engine(gpu_blocks=3, cpu_blocks=8, link=SlowLink(5.0))
    _, _, worker_connector, worker = offloading_parts(e)
    worker.wait = lambda job_ids: None          # the flush does nothing
    e.add_request("A", 4, SamplingParams(max_tokens=1, ignore_eos=True))
    e.add_request("B", 8, SamplingParams(max_tokens=6, ignore_eos=True), arrival_step=2)
    found = []
    for _ in range(10):
        e.step()
        found += check_engine(e)
    assert any("store job 0 reads GPU block 1, which another request holds" in p
               for p in found)
    # and when it completes, the CPU block holds B's tokens under A's hash
    assert any("CPU block 0: its slots do not hold the tokens its hash names" in p
               for p in found)
