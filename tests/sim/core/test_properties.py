"""Property-based tests: random sequences of operations, invariants after every step.

The invariants (DESIGN.md, "Tests"): reference counts equal the block-table entries
pointing at each block; free + used = total on each device; every live sequence's cached
tokens read back exactly as written (through forks, copy-on-write, swaps and
recomputation); nothing is left allocated when every request has finished.

Samples end on their own (the stand-in model's EOS probability), so a multi-sample group can
lose some samples early and be preempted with fewer running sequences than it started with;
where vLLM v0.5.5 would stop (an abort or an assertion: sim.errors.EngineStopped) the run
ends there, and everything before must hold.

Such a group is preempted by recompute (one running sequence), and when it comes back
vLLM v0.5.5 asserts, leaks blocks or ignores it (issue 27). The leak is vLLM's: the checks
allow exactly the references its `BlocksLeaked` events report, and a run in which no such
event happened must end with every block free.
"""
from collections import Counter

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.core.invariants import check_engine
from sim.core.scheduler import Scheduler
from sim.core.sequence import SamplingParams, SequenceStatus
from sim.errors import EngineStopped, RecomputeAssertionError
from sim.events import (
    Admitted,
    BlockAllocated,
    BlocksLeaked,
    Forked,
    Preempted,
    PrefillRunAsDecode,
    PromptIgnored,
    TokenSampled,
)
from sim.stand_in_model import StandInModel
from sim.studies.static_batching import StaticBatchScheduler


def tally_leaks(events, tally: Counter) -> None:
    """Add the references each BlocksLeaked event reports to `tally` (block -> refs)."""
    for e in events:
        if isinstance(e, BlocksLeaked):
            for block in e.blocks:
                tally[block] += e.refs


def assert_leaks_are_the_documented_ones(engine, tally: Counter) -> None:
    """The checker's allowance is what the events reported, nothing more."""
    assert engine.block_manager.leaked_refs == dict(tally)


def assert_only_documented_blocks_left(engine, tally: Counter) -> None:
    """After a run: the GPU blocks still in use are exactly those the BlocksLeaked events
    named, each held by its leaked references alone; with no such event, every block is
    free. Nothing else may stay allocated."""
    bm = engine.block_manager
    assert_leaks_are_the_documented_ones(engine, tally)
    used = {n: b.ref_count for n, b in enumerate(bm.gpu_allocator.blocks) if b.ref_count}
    assert used == dict(tally)
    assert bm.get_num_free_gpu_blocks() == bm.num_total_gpu_blocks - len(tally)
    assert bm.get_num_free_cpu_blocks() == bm.num_total_cpu_blocks
    assert not bm.block_tables


def stuck_behind_leaked_blocks(engine, tally: Counter) -> bool:
    """vLLM hangs the same way: nothing runs, and the group it would bring in next (the
    head of `swapped`, else of `waiting`) does not fit now (LATER), though it would if the
    leaked blocks were free."""
    sched, bm = engine.scheduler, engine.block_manager
    if not tally or sched.running or not (sched.swapped or sched.waiting):
        return False
    if sched.swapped:
        head = sched.swapped[0]
        need = (bm.num_blocks_to_move(head)
                + head.num_seqs(status=SequenceStatus.SWAPPED))
    else:
        head = sched.waiting[0]
        need = head.get_seqs(status=SequenceStatus.WAITING)[0].n_blocks
    free = bm.get_num_free_gpu_blocks()
    return (free - need < bm.watermark_blocks
            and free + len(tally) - need >= bm.watermark_blocks)


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
        self.leaked: Counter = Counter()

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
                out = self.engine.step()
            except EngineStopped:
                # vLLM aborts (or asserts) here; the state after that is not checked.
                self.crashed = True
                return
            tally_leaks(out.events, self.leaked)
            problems = check_engine(self.engine)
            assert not problems, problems
            assert_leaks_are_the_documented_ones(self.engine, self.leaked)

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
            if not self.engine.pending and stuck_behind_leaked_blocks(self.engine,
                                                                      self.leaked):
                return
            try:
                out = self.engine.step()
            except EngineStopped:
                return
            tally_leaks(out.events, self.leaked)
            assert not check_engine(self.engine)
        assert not self.engine.has_unfinished_requests(), "the engine did not drain"
        assert_only_documented_blocks_left(self.engine, self.leaked)


EngineMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestEngineProperties = EngineMachine.TestCase


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10_000), gpu=st.integers(8, 16),
       requests=st.lists(st.tuples(st.integers(1, 8), st.integers(2, 12), st.integers(1, 3)),
                         min_size=2, max_size=4),
       eos_prob=st.sampled_from([0.1, 0.25]), stop=st.booleans(),
       mode=st.sampled_from([None, "swap"]))
def test_samples_that_stop_early_under_memory_pressure_leak_only_where_vllm_leaks(
        seed, gpu, requests, eos_prob, stop, mode):
    """Multi-sample groups whose samples end at different steps (EOS, stop tokens), with
    preemption: every invariant holds after every step until the run ends or vLLM would
    stop, and a run that ends leaves every block free but those vLLM's BlocksLeaked events
    name. With preemption_mode='swap' no group is recomputed, so nothing may leak at all."""
    engine = LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=gpu, num_cpu_blocks=gpu,
                                   watermark=0.0),
                       SchedulerConfig(preemption_mode=mode), seed=seed,
                       model=StandInModel(seed=seed, eos_prob=eos_prob))
    for i, (prompt, max_tokens, n) in enumerate(requests):
        stops = (engine.model.prompt_token_ids(i, 1)[0],) if stop else ()
        engine.add_request(f"r{i}", prompt,
                           SamplingParams(n=n, max_tokens=max_tokens, stop_token_ids=stops))
    leaked: Counter = Counter()
    for _ in range(500):
        if not engine.has_unfinished_requests() or stuck_behind_leaked_blocks(engine, leaked):
            break
        try:
            out = engine.step()
        except EngineStopped:
            return
        tally_leaks(out.events, leaked)
        problems = check_engine(engine)
        assert not problems, problems
        assert_leaks_are_the_documented_ones(engine, leaked)
    if mode == "swap":
        assert not leaked
    event("leaked" if leaked else "no leak")
    if engine.has_unfinished_requests():
        assert stuck_behind_leaked_blocks(engine, leaked)
        return
    assert_only_documented_blocks_left(engine, leaked)


def _run_one_recompute(engine):
    """Step `engine` until it stops or drains (at most 300 steps). Returns (outcome, details)
    for the first group preempted by recompute after some of its samples had finished:
    "assert", "leak" or "ignored" at its re-admission, or None if there was none."""
    watched: dict[str, list] = {}     # request id -> its sequences when it was preempted
    for _ in range(300):
        if not engine.has_unfinished_requests():
            return None, None
        try:
            out = engine.step()
        except RecomputeAssertionError as err:
            if "in Scheduler.schedule" in str(err):
                return "assert", (err, watched)
            raise
        except EngineStopped:
            return None, None
        assert not check_engine(engine), check_engine(engine)
        for e in out.events:
            if isinstance(e, Preempted) and e.mode == "recompute":
                group = engine.requests[e.request_id]
                if group.num_seqs() > 1:
                    watched.setdefault(e.request_id, group.get_seqs())
            elif isinstance(e, Admitted) and e.recompute and e.request_id in watched:
                return "leak", (out, e.request_id, watched[e.request_id])
            elif isinstance(e, PromptIgnored) and e.request_id in watched:
                return "ignored", (out, e.request_id, watched[e.request_id])
    return None, None


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 10_000), block_size=st.sampled_from([1, 2, 4]),
       gpu=st.integers(2, 6), n=st.integers(2, 3), eos_prob=st.sampled_from([0.2, 0.3]),
       others=st.lists(st.tuples(st.integers(1, 6), st.integers(1, 8)), max_size=2))
@example(seed=5, block_size=4, gpu=3, n=2, eos_prob=0.3, others=[])    # asserts
@example(seed=52, block_size=4, gpu=3, n=2, eos_prob=0.3, others=[])   # leaks
@example(seed=5, block_size=1, gpu=6, n=2, eos_prob=0.3, others=[])    # is ignored
def test_recompute_of_a_group_whose_other_samples_finished_asserts_leaks_or_is_ignored(
        seed, block_size, gpu, n, eos_prob, others):
    """Issue 27's workload (a 2-token prompt, n samples, max_tokens=30, samples that end on
    EOS), with up to two single-sequence requests beside it, on vLLM's default preemption
    mode. When the group is preempted by recompute after some samples finished, its
    re-admission ends one of vLLM v0.5.5's three ways:
    - the first sequence waited: Scheduler.schedule asserts (nothing is scheduled);
    - a forked sample waited: allocate counts the finished samples in the ref count
      (BlocksLeaked, one reference per finished sample on each block of the survivor's
      table), the model runs it as a decode (PrefillRunAsDecode: the last position, one
      token sampled, no fork), and the run goes on;
    - it no longer fits: it is ignored before anything is allocated for it."""
    engine = LLMEngine(CacheConfig(block_size=block_size, num_gpu_blocks=gpu,
                                   num_cpu_blocks=2 * gpu),
                       SchedulerConfig(max_model_len=64), seed=seed,
                       model=StandInModel(seed=seed, eos_prob=eos_prob))
    engine.add_request("A", 2, SamplingParams(n=n, max_tokens=30))
    for i, (prompt, max_tokens) in enumerate(others):
        engine.add_request(f"r{i}", prompt, SamplingParams(max_tokens=max_tokens),
                           arrival_step=i)
    outcome, details = _run_one_recompute(engine)
    event(f"outcome: {outcome}")
    if outcome == "assert":
        err, watched = details
        (rid,) = {r for r in watched if "'" + r + "' is sent as a prompt" in str(err)}
        first, *rest = engine.requests[rid].get_seqs()
        # _schedule_prefills had set it running; it is the one that waited to recompute.
        assert first.status is SequenceStatus.RUNNING and first.is_prefill()
        assert rest and all(s.is_finished() for s in rest)
        assert "assert len(seqs) == 1" in str(err)
    elif outcome == "leak":
        out, rid, _ = details
        group = engine.requests[rid]
        first = group.get_seqs()[0]
        assert first.is_finished()
        ev = out.events
        (survivor_id,) = {s for e in ev if isinstance(e, BlockAllocated)
                          for s in e.seq_ids if engine.requests[rid].seqs_dict.get(s)}
        table = [e.physical for e in ev if isinstance(e, BlockAllocated)
                 and e.seq_ids == (survivor_id,)]
        finished = group.num_seqs() - 1
        assert [e for e in ev if isinstance(e, BlocksLeaked)] == [
            BlocksLeaked(rid, tuple(table), finished)]
        (run_as_decode,) = [e for e in ev if isinstance(e, PrefillRunAsDecode)]
        assert (run_as_decode.seq_id, run_as_decode.first_seq_id) == (survivor_id,
                                                                       first.seq_id)
        assert [e.seq_id for e in ev if isinstance(e, TokenSampled)
                and e.seq_id in group.seqs_dict] == [survivor_id]
        assert not [e for e in ev if isinstance(e, Forked)]
        assert group.num_seqs() == len(details[2])          # no sample was added
    elif outcome == "ignored":
        out, rid, seqs = details
        ev = out.events
        (ignored,) = [e for e in ev if isinstance(e, PromptIgnored) and e.request_id == rid]
        assert not [e for e in ev if isinstance(e, BlockAllocated)
                    and set(e.seq_ids) & {s.seq_id for s in seqs}]
        assert not [e for e in ev if isinstance(e, BlocksLeaked)]
        bm = engine.block_manager
        assert ignored.reason == "never_fits"
        assert bm.num_total_gpu_blocks - -(-ignored.num_tokens // block_size) \
            < bm.watermark_blocks
