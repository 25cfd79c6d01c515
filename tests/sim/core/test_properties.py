"""Property-based tests: random sequences of operations, invariants after every step.

The invariants (DESIGN.md, "Tests"): reference counts equal the block-table entries
pointing at each block; free + used = total on each device; every live sequence's cached
tokens read back exactly as written (through forks, copy-on-write, swaps and
recomputation); nothing is left allocated when every request has finished.

Samples end on their own (the stand-in model's EOS probability), so a multi-sample group can
lose some samples early and be preempted with fewer running sequences than it started with;
where vLLM v0.5.5 would stop (an abort or an assertion: sim.errors.EngineStopped) the run
ends there, and everything before must hold.
"""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.core.invariants import check_engine
from sim.core.scheduler import Scheduler
from sim.core.sequence import SamplingParams
from sim.errors import EngineStopped
from sim.stand_in_model import StandInModel
from sim.studies.static_batching import StaticBatchScheduler


class EngineMachine(RuleBasedStateMachine):
    @initialize(block_size=st.sampled_from([1, 2, 4, 8]),
                gpu=st.integers(6, 24), cpu_factor=st.integers(0, 3),
                mode=st.sampled_from([None, "swap", "recompute"]),
                chunked=st.booleans(), static=st.booleans(),
                free_order=st.sampled_from(["stack", "shuffled"]),
                watermark=st.sampled_from([0.0, 0.01, 0.1]), seed=st.integers(0, 3),
                eos_prob=st.sampled_from([0.0, 0.0, 0.2]))
    def setup(self, block_size, gpu, cpu_factor, mode, chunked, static, free_order,
              watermark, seed, eos_prob):
        self.crashed = False
        self.block_size, self.gpu = block_size, gpu
        self.multi_ok = mode != "recompute"
        chunked = chunked and not static
        sched = SchedulerConfig(max_num_seqs=4, max_model_len=64,
                                max_num_batched_tokens=16 if chunked else 64,
                                enable_chunked_prefill=chunked, preemption_mode=mode)
        self.engine = LLMEngine(
            CacheConfig(block_size=block_size, num_gpu_blocks=gpu,
                        num_cpu_blocks=gpu * cpu_factor, watermark=watermark,
                        free_order=free_order, seed=seed),
            sched, seed=seed, scheduler=StaticBatchScheduler if static else Scheduler,
            model=StandInModel(seed=seed, eos_prob=eos_prob))
        self.n = 0

    @rule(prompt=st.integers(1, 20), max_tokens=st.integers(1, 12),
          kind=st.sampled_from(["single", "parallel", "beam"]), width=st.integers(2, 3),
          delay=st.integers(0, 3), output_len=st.none() | st.integers(1, 12),
          ignore_eos=st.booleans())
    def add_request(self, prompt, max_tokens, kind, width, delay, output_len, ignore_eos):
        if self.crashed:
            return
        if kind != "single" and not self.multi_ok:
            kind = "single"
        best_of = 1 if kind == "single" else width
        # Keep every request able to run alone, so no request can preempt itself forever
        # (vLLM has that livelock too; it is not what this test is about).
        need = best_of * (-(-(prompt + max_tokens) // self.block_size) + 1)
        if need > self.gpu - max(1, int(0.1 * self.gpu)):
            return
        sp = SamplingParams(n=best_of, best_of=best_of, use_beam_search=kind == "beam",
                            max_tokens=max_tokens, ignore_eos=ignore_eos)
        self.engine.add_request(f"r{self.n}", prompt, sp,
                                arrival_step=self.engine.step_index + delay,
                                output_len=output_len)
        self.n += 1

    @rule(times=st.integers(1, 4))
    def step(self, times):
        for _ in range(times):
            if self.crashed or not self.engine.has_unfinished_requests():
                return
            try:
                self.engine.step()
            except EngineStopped:
                # vLLM aborts (or asserts) here; the state after that is not checked.
                self.crashed = True
                return
            problems = check_engine(self.engine)
            assert not problems, problems

    @rule(index=st.integers(0, 30))
    def abort(self, index):
        if self.crashed or index >= self.n:
            return
        self.engine.abort_request(f"r{index}")
        assert not check_engine(self.engine)

    @invariant()
    def accounting_holds(self):
        if not self.crashed and hasattr(self, "engine"):
            assert not check_engine(self.engine)

    def teardown(self):
        if self.crashed or not hasattr(self, "engine"):
            return
        for _ in range(5000):
            if not self.engine.has_unfinished_requests():
                break
            try:
                self.engine.step()
            except EngineStopped:
                return
            assert not check_engine(self.engine)
        assert not self.engine.has_unfinished_requests(), "the engine did not drain"
        bm = self.engine.block_manager
        assert bm.get_num_free_gpu_blocks() == bm.num_total_gpu_blocks
        assert bm.get_num_free_cpu_blocks() == bm.num_total_cpu_blocks
        assert not bm.block_tables


EngineMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestEngineProperties = EngineMachine.TestCase


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10_000), gpu=st.integers(8, 16),
       requests=st.lists(st.tuples(st.integers(1, 8), st.integers(2, 12), st.integers(1, 3)),
                         min_size=2, max_size=4),
       eos_prob=st.sampled_from([0.1, 0.25]), stop=st.booleans())
def test_samples_that_stop_early_under_memory_pressure_never_leak(seed, gpu, requests,
                                                                  eos_prob, stop):
    """Multi-sample groups whose samples end at different steps (EOS, stop tokens), with
    preemption: every invariant holds after every step until the run ends or vLLM would
    stop, and a run that ends leaves every block free."""
    engine = LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=gpu, num_cpu_blocks=gpu,
                                   watermark=0.0),
                       SchedulerConfig(), seed=seed,
                       model=StandInModel(seed=seed, eos_prob=eos_prob))
    for i, (prompt, max_tokens, n) in enumerate(requests):
        stops = (engine.model.prompt_token_ids(i, 1)[0],) if stop else ()
        engine.add_request(f"r{i}", prompt,
                           SamplingParams(n=n, max_tokens=max_tokens, stop_token_ids=stops))
    for _ in range(500):
        if not engine.has_unfinished_requests():
            break
        try:
            engine.step()
        except EngineStopped:
            return
        problems = check_engine(engine)
        assert not problems, problems
    assert not engine.has_unfinished_requests()
    bm = engine.block_manager
    assert bm.get_num_free_gpu_blocks() == bm.num_total_gpu_blocks and not bm.block_tables
