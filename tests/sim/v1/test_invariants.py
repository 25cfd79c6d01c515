"""V1's invariants (sim/v1/invariants.py) over random add / schedule / finish / abort /
reset sequences in both engine loops (a hypothesis state machine, at least 10,000 engine
steps in all), and the checker catching each kind of corruption."""
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
from sim.events import BlockSkipped
from sim.v1.config import CacheConfig, SchedulerConfig
from sim.v1.engine import LLMEngine
from sim.v1.invariants import check_engine
from sim.v1.kv_cache_utils import attention_layer_specs, make_kv_cache_config

# Engine steps taken by the machine, over every example (the issue asks for >= 10,000).
STEPS = [0]
MAX_MODEL_LEN = 48

# Under PRIORITY a victim preempted after it was scheduled leaves blocks hashed for tokens
# never computed (vLLM v0.25.1 does the same; see test_engine.py): only those two payload
# findings are expected there.
PRIORITY_PAYLOAD_FINDINGS = ("slots do not hold positions", "do not read back")


class V1EngineMachine(RuleBasedStateMachine):
    @initialize(bs=st.sampled_from([1, 2, 4, 8]), blocks=st.integers(2, 28),
                caching=st.sampled_from([True, True, True, False]), chunked=st.booleans(),
                threshold=st.sampled_from([0, 0, 3]), budget=st.sampled_from([4, 8, 16, 64]),
                seqs=st.integers(1, 6), watermark=st.sampled_from([0.0, 0.0, 0.1]),
                spec=st.sampled_from([0, 0, 2, 3]), lookahead=st.booleans(),
                policy=st.sampled_from(["fcfs", "fcfs", "priority"]), reserve=st.booleans(),
                rate=st.sampled_from([0.0, 0.5, 1.0]), seed=st.integers(0, 3),
                loop=st.sampled_from([None, None, True, False]))
    def setup(self, bs, blocks, caching, chunked, threshold, budget, seqs, watermark, spec,
              lookahead, policy, reserve, rate, seed, loop):
        if spec and loop:
            loop = None    # async speculative decoding is not simulated: None -> sync
        if not chunked:
            budget = max(budget, MAX_MODEL_LEN)
        self.priority = policy == "priority"
        self.engine = LLMEngine(
            CacheConfig(block_size=bs, num_gpu_blocks=blocks, enable_prefix_caching=caching),
            SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=min(seqs, budget),
                            max_model_len=MAX_MODEL_LEN, enable_chunked_prefill=chunked,
                            long_prefill_token_threshold=threshold,
                            scheduler_reserve_full_isl=reserve, watermark=watermark,
                            policy=policy, num_speculative_tokens=spec,
                            num_lookahead_tokens=spec if lookahead else 0,
                            async_scheduling=loop),
            seed=seed, spec_acceptance_rate=rate)
        # Shared prompt beginnings, so that prefix caching has something to find.
        self.bases = [[3 + (7 * b + 11 * i) % 40 for i in range(30)] for b in range(3)]
        self.n = 0

    @rule(base=st.integers(0, 3), prefix=st.integers(0, 30), suffix=st.integers(0, 6),
          max_tokens=st.integers(1, 12), n=st.sampled_from([1, 1, 1, 2, 3]),
          delay=st.integers(0, 3), output_len=st.none() | st.integers(1, 12),
          priority=st.integers(0, 2), salt=st.sampled_from([None, None, "s"]))
    def add_request(self, base, prefix, suffix, max_tokens, n, delay, output_len, priority,
                    salt):
        tokens = (self.bases[base][:prefix] if base < 3 else []) + [
            50 + (self.n * 13 + i) % 30 for i in range(suffix)]
        if not tokens:
            tokens = [3]
        tokens = tokens[:MAX_MODEL_LEN - 1]
        self.engine.add_request(f"r{self.n}", tokens,
                                SamplingParams(n=n, max_tokens=max_tokens),
                                arrival_step=self.engine.step_index + delay,
                                output_len=output_len, priority=priority, cache_salt=salt)
        self.n += 1

    @rule(k=st.integers(1, 6))
    def step(self, k):
        for _ in range(k):
            if not self.engine.has_unfinished_requests():
                return
            self.engine.step()
            STEPS[0] += 1
            self.check()

    @rule(i=st.integers(0, 50))
    def abort(self, i):
        if self.n:
            rid = f"r{i % self.n}"
            self.engine.abort_request(rid)
            self.check()

    @rule()
    def reset_prefix_cache(self):
        # Force-preempts every running request: outputs in flight become stale.
        assert self.engine.reset_prefix_cache(reset_running_requests=True)
        self.check()

    def check(self):
        problems = check_engine(self.engine)
        if self.priority:
            problems = [p for p in problems
                        if not any(f in p for f in PRIORITY_PAYLOAD_FINDINGS)]
        assert not problems, problems

    @invariant()
    def holds(self):
        self.check()

    def teardown(self):
        # Finish what can finish (a request bigger than the pool blocks FCFS for good).
        for _ in range(150):
            if not self.engine.has_unfinished_requests():
                break
            self.engine.step()
            STEPS[0] += 1
            self.check()
        if not self.engine.has_unfinished_requests():
            pool = self.engine.block_pool
            assert pool.get_num_free_blocks() == pool.num_gpu_blocks - 1
            assert not self.engine.kv_cache_manager.req_to_blocks


def test_invariants_hold_over_random_operations():
    STEPS[0] = 0
    run_state_machine_as_test(
        V1EngineMachine,
        settings=settings(max_examples=150, stateful_step_count=40, deadline=None,
                          derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.filter_too_much]))
    assert STEPS[0] >= 10_000, STEPS[0]
    print(f"{STEPS[0]} engine steps")


# -- hybrid models: sliding-window (or chunked local) and full groups in one pool -----------
LAYOUTS = (
    ("full_attention", "sliding_attention"),                       # gpt-oss: 1:1
    ("sliding_attention", "sliding_attention", "full_attention"),  # 2 sw : 1 full
    ("full_attention",) + ("sliding_attention",) * 3,              # the doc's toy model
    ("sliding_attention", "full_attention", "chunked_attention"),  # three types
    ("sliding_attention",),                                        # one window group
)


class V1HybridEngineMachine(V1EngineMachine):
    """The same rules over hybrid layouts: windows return blocks while prefix caching,
    chunked prefill, preemption, speculative decoding and aborts go on."""

    @initialize(bs=st.sampled_from([1, 2, 4]), blocks=st.integers(3, 40),
                layout=st.sampled_from(LAYOUTS), window=st.integers(1, 10),
                chunk=st.sampled_from([2, 4, 8]),
                caching=st.sampled_from([True, True, True, False]), chunked=st.booleans(),
                budget=st.sampled_from([4, 8, 16, 64]), seqs=st.integers(1, 6),
                watermark=st.sampled_from([0.0, 0.0, 0.1]), spec=st.sampled_from([0, 0, 2]),
                lookahead=st.booleans(), policy=st.sampled_from(["fcfs", "fcfs", "priority"]),
                reserve=st.booleans(), rate=st.sampled_from([0.0, 0.5, 1.0]),
                seed=st.integers(0, 3), loop=st.sampled_from([None, True, False]))
    def setup(self, bs, blocks, layout, window, chunk, caching, chunked, budget, seqs,
              watermark, spec, lookahead, policy, reserve, rate, seed, loop):
        if spec and loop:
            loop = None    # async speculative decoding is not simulated: None -> sync
        if not chunked:
            budget = max(budget, MAX_MODEL_LEN)
        if "chunked_attention" in layout:
            lookahead = False      # vLLM: EAGLE is not supported with chunked local attention
        self.priority = policy == "priority"
        specs = attention_layer_specs(layout, bs, sliding_window=window,
                                      attention_chunk_size=chunk * bs)
        self.engine = LLMEngine(
            CacheConfig(block_size=bs, num_gpu_blocks=blocks, enable_prefix_caching=caching),
            SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=min(seqs, budget),
                            max_model_len=MAX_MODEL_LEN, enable_chunked_prefill=chunked,
                            scheduler_reserve_full_isl=reserve, watermark=watermark,
                            policy=policy, num_speculative_tokens=spec,
                            num_lookahead_tokens=spec if lookahead else 0,
                            async_scheduling=loop),
            seed=seed, spec_acceptance_rate=rate,
            kv_cache_config=make_kv_cache_config(blocks, specs))
        self.bases = [[3 + (7 * b + 11 * i) % 40 for i in range(30)] for b in range(3)]
        self.n = 0
        step = self.engine.step

        def counted_step():
            out = step()
            SKIPPED[0] += sum(isinstance(e, BlockSkipped) for e in out.events)
            return out
        self.engine.step = counted_step

    def teardown(self):
        super().teardown()
        for manager in self.engine.kv_cache_manager.coordinator.single_type_managers:
            if not self.engine.has_unfinished_requests():
                assert not manager.req_to_blocks


SKIPPED = [0]


def test_invariants_hold_over_random_hybrid_operations():
    STEPS[0] = SKIPPED[0] = 0
    run_state_machine_as_test(
        V1HybridEngineMachine,
        settings=settings(max_examples=120, stateful_step_count=40, deadline=None,
                          derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.filter_too_much]))
    assert STEPS[0] >= 5_000, STEPS[0]
    assert SKIPPED[0] > 100, SKIPPED[0]      # windows did return blocks
    print(f"{STEPS[0]} engine steps, {SKIPPED[0]} blocks left a window")


# -- the checker catches corruption -------------------------------------------------------
def engine_mid_run(async_scheduling=False):
    e = LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=12),
                  SchedulerConfig(max_num_batched_tokens=64, max_num_seqs=8,
                                  async_scheduling=async_scheduling))
    e.add_request("A", 9, SamplingParams(max_tokens=6, ignore_eos=True), shared_prefix=4)
    e.add_request("B", 6, SamplingParams(max_tokens=6, ignore_eos=True), shared_prefix=4)
    e.step()
    e.step()
    assert check_engine(e) == []
    return e


def test_a_wrong_ref_count_is_found():
    e = engine_mid_run()
    e.block_pool.blocks[1].ref_cnt += 1
    assert any("ref_cnt 3 but 2 block-table entries" in p for p in check_engine(e))


def test_a_leaked_or_doubly_free_block_is_found():
    e = engine_mid_run()
    q = e.block_pool.free_block_queue
    q.popleft()
    assert any("leaked" in p for p in check_engine(e))
    e = engine_mid_run()
    held = e.kv_cache_manager.req_to_blocks["A"][-1]
    q = e.block_pool.free_block_queue
    q.append(held)
    assert any("in use" in p and "free queue" in p for p in check_engine(e))


def test_a_broken_hash_map_is_found():
    e = engine_mid_run()
    block = e.kv_cache_manager.req_to_blocks["A"][0]
    e.block_pool.cached_block_hash_to_block.pop(block.block_hash, block.block_id)
    assert any("not in the prefix cache" in p for p in check_engine(e))


def test_a_short_block_table_is_found():
    e = engine_mid_run()
    e.kv_cache_manager.req_to_blocks["B"][-1].ref_cnt -= 1
    e.kv_cache_manager.req_to_blocks["B"].pop()
    assert any("do not cover" in p for p in check_engine(e))


def test_a_corrupted_payload_is_found():
    e = engine_mid_run()
    block = e.kv_cache_manager.req_to_blocks["B"][1]
    e.gpu_cache[block.block_id][0] = (99999, 4)
    assert any("do not read back" in p for p in check_engine(e))


def test_a_waiting_request_holding_blocks_is_found():
    e = engine_mid_run()
    a = e.requests["A"]
    e.scheduler.running.remove(a)
    e.scheduler.waiting.prepend_request(a)
    a.status = a.status.PREEMPTED
    problems = check_engine(e)
    assert "waiting request A holds blocks" in problems
    assert any("computed tokens" in p for p in problems)


def hybrid_engine_mid_run():
    specs = attention_layer_specs(["full_attention", "sliding_attention"], 4, sliding_window=4)
    e = LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=30),
                  SchedulerConfig(max_num_batched_tokens=4, max_num_seqs=4,
                                  async_scheduling=False),
                  kv_cache_config=make_kv_cache_config(30, specs))
    e.add_request("A", 14, SamplingParams(max_tokens=6, ignore_eos=True))
    for _ in range(3):
        e.step()
    assert check_engine(e) == []
    return e


def window_table(e, rid):
    return e.kv_cache_manager.coordinator.single_type_managers[1].req_to_blocks[rid]


def test_a_block_kept_past_the_window_is_found():
    e = hybrid_engine_mid_run()
    table = window_table(e, "A")
    # The last allocation (8 computed, window 4) skipped tokens 0..4: block 0 went.
    assert table[0].is_null and not table[1].is_null
    # Put a free block back where the window's first block was: not returned.
    block = e.block_pool.free_block_queue.popleft()
    block.ref_cnt = 1
    table[0] = block
    assert any("left the window" in p for p in check_engine(e))


def test_a_missing_window_block_is_found():
    e = hybrid_engine_mid_run()
    table = window_table(e, "A")
    gone = table[2]
    table[2] = e.block_pool.null_block
    e.block_pool.free_blocks([gone])
    assert any("inside the window" in p for p in check_engine(e))


def test_a_block_in_two_groups_is_found():
    e = hybrid_engine_mid_run()
    full = e.kv_cache_manager.req_to_blocks["A"]
    table = window_table(e, "A")
    e.block_pool.free_blocks([table[2]])
    table[2] = full[2]
    full[2].ref_cnt += 1
    assert any("groups 0 and 1" in p for p in check_engine(e))


def test_a_wrong_placeholder_count_is_found():
    e = engine_mid_run(async_scheduling=True)
    a = e.requests["A"]
    assert a.num_output_placeholders == 1
    a.num_output_placeholders = 2
    assert any("2 placeholders + 0 to discard, but 1 batches in flight" in p
               for p in check_engine(e))
    e = engine_mid_run(async_scheduling=False)
    e.requests["A"].num_output_placeholders = 1
    assert any("but 0 batches in flight" in p for p in check_engine(e))


def test_a_block_cached_past_the_known_tokens_is_found():
    e = engine_mid_run(async_scheduling=True)
    b = e.requests["B"]
    e.kv_cache_manager.num_cached_block["B"] = b.num_tokens // 4 + 1
    assert any("cached blocks cover more" in p for p in check_engine(e))


def test_a_worker_copy_out_of_step_is_found():
    e = engine_mid_run(async_scheduling=True)
    e.runner_token_ids["A"][0] += 1
    assert any("the worker's" in p for p in check_engine(e))
