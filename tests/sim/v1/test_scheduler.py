"""The V1 scheduler (sim/v1/scheduler.py) against VLLM-V1.md sections 5 and 9: the worked
example of section 5.6 step by step, the scheduler's pitfalls, chunked prefill, speculative
decoding, PRIORITY, and vLLM v0.25.1's own scheduler tests where they apply
(`test_schedule_concurrent_partial_requests`, `test_preempt_during_execution`,
`test_priority_scheduling_preemption`). A fake model runner samples token 1000 + position
for every request whose computed count reached its token count."""
import pytest

from sim.core.sequence import SamplingParams
from sim.events import Admitted, Preempted, RequestFinished
from sim.v1.config import CacheConfig, SchedulerConfig
from sim.v1.kv_cache_utils import get_request_block_hasher, sha256
from sim.v1.request import Request, RequestStatus
from sim.v1.scheduler import (
    FCFSRequestQueue,
    ModelRunnerOutput,
    PriorityRequestQueue,
    Scheduler,
    check_stop,
    create_request_queue,
)


def scheduler(bs=4, blocks=8, budget=64, seqs=16, caching=True, events=None, **kw):
    return Scheduler(SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=seqs,
                                     max_model_len=kw.pop("max_model_len", 1024), **kw),
                     CacheConfig(block_size=bs, num_gpu_blocks=blocks,
                                 enable_prefix_caching=caching), events)


_prompts = iter(range(1, 10 ** 6))


def add(s, rid, tokens, max_tokens=16, priority=0, arrival=0, **sp):
    """A request; `tokens` a list, or a length (distinct ids: no accidental prefix hits)."""
    if isinstance(tokens, int):
        base = 10_000 * next(_prompts)
        tokens = list(range(base, base + tokens))
    tokens = list(tokens)
    bs = s.block_size
    r = Request(rid, tokens, SamplingParams(max_tokens=max_tokens, ignore_eos=True, **sp),
                eos_token_id=2, arrival_time=arrival, priority=priority,
                block_hasher=(get_request_block_hasher(bs, sha256)
                              if s.kv_cache_manager.enable_caching else None),
                block_size=bs)
    s.add_request(r)
    return r


def model_output(so, s, sampled=None):
    """The fake model runner: one token (1000 + position) for each request whose computed
    count reached its token count; `sampled` (id -> tokens) overrides."""
    req_ids = list(so.num_scheduled_tokens)
    out = []
    for rid in req_ids:
        r = s.requests.get(rid)
        if sampled and rid in sampled:
            out.append(list(sampled[rid]))
        elif r is not None and r.num_computed_tokens >= r.num_tokens:
            out.append([1000 + r.num_tokens])
        else:
            out.append([])
    return ModelRunnerOutput(req_ids, {rid: i for i, rid in enumerate(req_ids)}, out)


def step(s, sampled=None):
    so = s.schedule()
    outs = s.update_from_output(so, model_output(so, s, sampled))
    return so, outs


def table(s, rid):
    return [b.block_id for b in s.kv_cache_manager.req_to_blocks.get(rid, [])]


def hashed(s, rid):
    return [b.block_hash is not None for b in s.kv_cache_manager.req_to_blocks.get(rid, [])]


def free(s):
    return [b.block_id for b in
            s.kv_cache_manager.block_pool.free_block_queue.get_all_free_blocks()]


def ids(queue):
    return [r.request_id for r in queue]


# -- section 5.6 ----------------------------------------------------------------------------
def test_worked_example_5_6_preemption_by_recompute():
    """VLLM-V1.md 5.6: block size 4, 8 blocks (1..7 usable), budget 64, max_tokens 6;
    A, B, C arrive together with distinct 8-token prompts."""
    events = []
    s = scheduler(bs=4, blocks=8, budget=64, events=events)
    A, B, C = (add(s, n, range(100 * i, 100 * i + 8), max_tokens=6)
               for i, n in enumerate("ABC", 1))

    # Step 1: all admitted, 2 blocks each, all hashed.
    so, _ = step(s)
    assert so.num_scheduled_tokens == {"A": 8, "B": 8, "C": 8}
    assert [table(s, r) for r in "ABC"] == [[1, 2], [3, 4], [5, 6]]
    assert all(all(hashed(s, r)) for r in "ABC")
    assert free(s) == [7]

    # Step 2: A takes 7; B needs a block: C (the last of running) is preempted, its [6, 5]
    # appended; B retries and pops 6 (C's second-block hash evicted). No admission.
    events.clear()
    so, _ = step(s)
    assert so.num_scheduled_tokens == {"A": 1, "B": 1}
    assert table(s, "A") == [1, 2, 7] and table(s, "B") == [3, 4, 6]
    assert free(s) == [5]
    assert C.status is RequestStatus.PREEMPTED and C.num_computed_tokens == 0
    assert C.num_tokens == 9 and C.num_preemptions == 1
    assert ids(s.waiting) == ["C"] and ids(s.running) == ["A", "B"]
    assert so.preempted_req_ids == {"C"}
    assert [e for e in events if isinstance(e, Preempted)] == [
        Preempted("C", "recompute", "B", False)]
    assert s.kv_cache_manager.block_pool.blocks[5].block_hash is not None   # C's 1st block
    assert s.kv_cache_manager.block_pool.blocks[6].block_hash is None       # reused

    # Steps 3-5: C hits block 5 (free, counts 1) + 2 new = 3 > 1 free: not admitted.
    for _ in range(3, 6):
        before = s.kv_cache_manager.prefix_cache_stats.preempted_queries
        so, _ = step(s)
        assert so.num_scheduled_tokens == {"A": 1, "B": 1}
        assert ids(s.waiting) == ["C"] and free(s) == [5]
        # pitfall 14: each retry is counted (apart: C was preempted).
        assert s.kv_cache_manager.prefix_cache_stats.preempted_queries == before + 9
    # In step 5 blocks 7 and 6 filled and were hashed.
    assert hashed(s, "A") == [True, True, True] and hashed(s, "B") == [True, True, True]

    # Step 6: A takes 5 (C's 1st-block hash evicted); B needs a 4th block: the victim is
    # B itself. A finishes after this step: [5,7,2,1] -> 5 to the head, 7 2 1 to the tail.
    events.clear()
    so, outs = step(s)
    assert so.num_scheduled_tokens == {"A": 1}
    assert [e for e in events if isinstance(e, Preempted)] == [
        Preempted("B", "recompute", "B", True)]
    assert B.status is RequestStatus.PREEMPTED and B.num_tokens == 13
    assert A.status is RequestStatus.FINISHED_LENGTH_CAPPED
    assert free(s) == [5, 6, 4, 3, 7, 2, 1]
    assert ids(s.waiting) == ["B", "C"]
    assert [o.request_id for o in outs if o.finished] == ["A"]

    # Step 7: B hits 3, 4, 6 (12 tokens) and schedules 1, popping 5; C has no hit left and
    # schedules 9, popping 7, 2, 1 (evicting A's hashes). Both resumed, full block lists.
    so = s.schedule()
    assert so.num_scheduled_tokens == {"B": 1, "C": 9}
    assert table(s, "B") == [3, 4, 6, 5] and table(s, "C") == [7, 2, 1]
    assert free(s) == []
    cached = so.scheduled_cached_reqs
    assert cached.req_ids == ["B", "C"] and cached.resumed_req_ids == {"B", "C"}
    assert cached.new_block_ids == [([3, 4, 6, 5],), ([7, 2, 1],)]
    assert cached.num_computed_tokens == [12, 0]
    assert so.finished_req_ids == {"A"}
    assert set(cached.all_token_ids) == {"B", "C"}


# -- section 9 pitfalls of the scheduler -------------------------------------------------
def test_pitfall_08_fcfs_victim_is_the_last_of_running_and_no_admission_after_it():
    s = scheduler(bs=4, blocks=6, budget=64)             # 5 usable blocks
    add(s, "A", 8, max_tokens=8)
    add(s, "B", 7, max_tokens=8)
    step(s)                                             # A [1,2]  B [3,4]; free [5]
    add(s, "D", 2, max_tokens=1)                        # would fit in block 5
    so, _ = step(s)                                     # A: 9 tokens -> needs block 5
    assert table(s, "A") == [1, 2, 5]
    so, _ = step(s)
    # B needs a 3rd block (its 9th token): none free; the last of running is B itself.
    assert "B" not in so.num_scheduled_tokens and so.preempted_req_ids == {"B"}
    assert ids(s.waiting) == ["B", "D"] and "D" not in so.num_scheduled_tokens


def test_fcfs_victim_is_never_an_earlier_request():
    s = scheduler(bs=4, blocks=6, budget=64)
    add(s, "A", 7, max_tokens=8)
    add(s, "B", 8, max_tokens=8)
    add(s, "C", 3, max_tokens=8)
    step(s)                               # A [1,2] B [3,4] C [5]; full
    so, _ = step(s)                        # A fits; B needs a block: victim C (last)
    assert so.preempted_req_ids == {"C"} and so.num_scheduled_tokens == {"A": 1, "B": 1}


def test_pitfall_09_a_waiting_request_that_does_not_fit_stops_admission():
    s = scheduler(bs=4, blocks=6, budget=64)            # 5 usable
    add(s, "A", 12, max_tokens=30)                      # 3 blocks
    step(s)
    add(s, "big", 12)                                   # needs 3 > 2 free
    add(s, "small", 3)                                  # would fit
    so, _ = step(s)
    assert set(so.num_scheduled_tokens) == {"A"}
    assert ids(s.waiting) == ["big", "small"]


def test_pitfall_10_full_sequence_gate_blocks_the_fcfs_queue():
    """VLLM-V1.md 5.3: 5 usable blocks of 4, a 24-token prompt at the head and a 4-token one
    behind it: nothing is scheduled; with the flag off the big one gets an 8-token chunk."""
    s = scheduler(bs=4, blocks=6, budget=8, seqs=8)
    add(s, "big", 24)
    add(s, "small", 4)
    for _ in range(3):
        so, _ = step(s)
        assert so.num_scheduled_tokens == {} and so.total_num_scheduled_tokens == 0
    s = scheduler(bs=4, blocks=6, budget=8, seqs=8, scheduler_reserve_full_isl=False)
    add(s, "big", 24)
    add(s, "small", 4)
    so, _ = step(s)
    assert so.num_scheduled_tokens == {"big": 8}


def test_pitfall_11_computed_tokens_advance_at_schedule_time_and_reset_on_preemption():
    s = scheduler(bs=4, blocks=6, budget=64)
    a = add(s, "A", range(6))
    so = s.schedule()
    assert a.num_computed_tokens == 6 and a.num_tokens == 6      # before any output
    assert so.scheduled_new_reqs[0].num_computed_tokens == 0     # the value before
    assert not a.is_prefill_chunk
    s.update_from_output(so, model_output(so, s))
    assert a.num_tokens == 7 and a.num_computed_tokens == 6
    a_tokens = list(a.all_token_ids)
    s._preempt_request(s.running.pop())               # what a victim goes through
    assert a.num_computed_tokens == 0 and a.all_token_ids == a_tokens
    assert a.status is RequestStatus.PREEMPTED and table(s, "A") == []


def test_pitfall_12_a_prefill_chunk_short_of_the_end_samples_nothing():
    s = scheduler(bs=4, blocks=10, budget=4, seqs=4)
    a = add(s, "A", 10, max_tokens=2)
    chunks = []
    for _ in range(3):
        so, outs = step(s)
        chunks.append((so.num_scheduled_tokens["A"], [o.new_token_ids for o in outs]))
    assert chunks == [(4, []), (4, []), (2, [[1010]])]
    assert a.output_token_ids == [1010] and a.num_computed_tokens == 10


def test_pitfall_13_requests_finishing_together_are_freed_in_scheduling_order():
    s = scheduler(bs=4, blocks=10, budget=64)
    add(s, "A", 6, max_tokens=2)
    step(s)                                           # A [1, 2]: 1 hashed
    add(s, "B", range(50, 56), max_tokens=1)          # admitted after running A
    so, outs = step(s)
    assert list(so.num_scheduled_tokens) == ["A", "B"]
    assert [o.request_id for o in outs if o.finished] == ["A", "B"]
    # A first: 2 to the head, 1 to the tail; then B: 4 to the head, 3 to the tail.
    assert free(s) == [4, 2, 5, 6, 7, 8, 9, 1, 3]


def test_pitfall_06_same_step_requests_hit_blocks_hashed_in_this_step():
    s = scheduler(bs=4, blocks=20, budget=64)
    for rid in ("0_A", "1_A", "2_A"):
        add(s, rid, range(9))
    so = s.schedule()
    assert so.num_scheduled_tokens == {"0_A": 9, "1_A": 1, "2_A": 1}
    assert table(s, "1_A")[:2] == table(s, "0_A")[:2] == [1, 2]
    assert [b.ref_cnt for b in s.kv_cache_manager.req_to_blocks["0_A"]] == [3, 3, 1]


def test_pitfall_14_a_blocked_waiting_request_is_looked_up_every_step():
    s = scheduler(bs=4, blocks=5, budget=64)            # 4 usable blocks
    add(s, "A", 12, max_tokens=3)                        # 3 blocks, then a 4th
    step(s)
    add(s, "B", 8)                                       # 2 blocks: does not fit
    stats = s.kv_cache_manager.prefix_cache_stats
    for k in (1, 2):
        so, _ = step(s)
        assert "B" not in so.num_scheduled_tokens
        assert (stats.requests, stats.queries) == (1 + k, 12 + 8 * k)
    so, _ = step(s)                                      # A finished: B fits now
    assert so.num_scheduled_tokens == {"B": 8}
    assert (stats.requests, stats.queries) == (4, 12 + 8 * 3)


# -- chunked prefill, budget, limits -------------------------------------------------------
def test_running_requests_first_then_waiting_share_one_budget():
    s = scheduler(bs=4, blocks=40, budget=10, seqs=8)
    add(s, "A", 7)
    add(s, "B", 9)
    so, _ = step(s)
    assert so.num_scheduled_tokens == {"A": 7, "B": 3}          # B gets what is left
    so, _ = step(s)
    assert list(so.num_scheduled_tokens.items()) == [("A", 1), ("B", 6)]
    assert so.scheduled_new_reqs == [] and so.scheduled_cached_reqs.req_ids == ["A", "B"]


def test_long_prefill_token_threshold_cuts_chunks():
    s = scheduler(bs=4, blocks=40, budget=64, long_prefill_token_threshold=5)
    add(s, "A", 12)
    assert step(s)[0].num_scheduled_tokens == {"A": 5}
    assert step(s)[0].num_scheduled_tokens == {"A": 5}
    assert step(s)[0].num_scheduled_tokens == {"A": 2}


def test_without_chunked_prefill_a_prompt_over_the_budget_stops_admission():
    s = scheduler(bs=4, blocks=40, budget=8, seqs=4, max_model_len=8,
                  enable_chunked_prefill=False)
    add(s, "A", 5)
    add(s, "B", 5)
    so, _ = step(s)
    assert so.num_scheduled_tokens == {"A": 5}                  # B (5 > 3 left) waits


def test_max_num_seqs_limits_running_requests():
    s = scheduler(bs=4, blocks=40, budget=64, seqs=2)
    for r in "ABC":
        add(s, r, 3)
    so, _ = step(s)
    assert list(so.num_scheduled_tokens) == ["A", "B"] and ids(s.waiting) == ["C"]


def test_schedule_concurrent_partial_requests():
    """vLLM's test of the same name (block size 16, a large pool, budget 1024, threshold
    400, three 800-token prompts)."""
    s = scheduler(bs=16, blocks=10000, budget=1024, seqs=16, long_prefill_token_threshold=400)
    reqs = [add(s, f"r{i}", [i] * 800) for i in range(3)]
    so = s.schedule()
    assert len(so.scheduled_new_reqs) == 3
    assert [so.num_scheduled_tokens[r.request_id] for r in reqs] == [400, 400, 224]
    s.update_from_output(so, model_output(so, s, {r.request_id: [] for r in reqs}))
    so1 = s.schedule()
    assert len(s.running) == 3 and len(so1.scheduled_new_reqs) == 0
    assert len(so1.scheduled_cached_reqs.req_ids) == 3 and len(so1.finished_req_ids) == 0
    assert [so1.num_scheduled_tokens[r.request_id] for r in reqs] == [400, 400, 224]
    s.update_from_output(so1, model_output(so1, s, {"r0": [0], "r1": [0], "r2": []}))
    so2 = s.schedule()
    assert [so2.num_scheduled_tokens[r.request_id] for r in reqs] == [1, 1, 800 - 224 - 224]


def test_preempt_during_execution():
    """vLLM's test of the same name: a second schedule() before the first output; block 0
    is the null block, so 11 blocks hold 10."""
    s = scheduler(bs=16, blocks=11, budget=100, seqs=16, caching=False)
    r0 = add(s, "r0", [0] * 80)
    so0 = s.schedule()
    assert len(so0.num_scheduled_tokens) == 1
    assert len(so0.scheduled_new_reqs[0].block_ids[0]) == 5
    r1 = add(s, "r1", [1] * 80)
    so1 = s.schedule()
    assert len(so1.num_scheduled_tokens) == 1
    assert len(so1.scheduled_new_reqs[0].block_ids[0]) == 5
    s.update_from_output(so0, ModelRunnerOutput(["r0"], {"r0": 0}, [[0]]))
    s.schedule()                                      # r0 needs a block: r1 preempted
    assert s.running == [r0] and r1.status is RequestStatus.PREEMPTED
    s.update_from_output(so1, ModelRunnerOutput(["r1"], {"r1": 0}, [[42]]))
    assert r1.output_token_ids == [42]


def test_a_preempted_request_that_stops_leaves_the_waiting_queue():
    s = scheduler(bs=16, blocks=11, budget=100, seqs=16, caching=False)
    r0 = add(s, "r0", [0] * 80)
    so0 = s.schedule()
    r1 = add(s, "r1", [1] * 80, max_tokens=1)
    so1 = s.schedule()
    s.update_from_output(so0, ModelRunnerOutput(["r0"], {"r0": 0}, [[0]]))
    s.schedule()
    assert r1.status is RequestStatus.PREEMPTED and ids(s.waiting) == ["r1"]
    outs = s.update_from_output(so1, ModelRunnerOutput(["r1"], {"r1": 0}, [[42]]))
    assert outs[0].finish_reason == "length" and ids(s.waiting) == [] and s.running == [r0]


def test_a_request_at_max_model_len_stops_length_capped():
    s = scheduler(bs=4, blocks=20, budget=64, max_model_len=10)
    a = add(s, "A", 8, max_tokens=100)
    step(s)
    step(s)
    assert a.num_tokens == 10 and a.status is RequestStatus.FINISHED_LENGTH_CAPPED


def test_scheduler_output_block_lists():
    s = scheduler(bs=4, blocks=20, budget=64)
    add(s, "A", 7)
    so, _ = step(s)
    assert so.scheduled_new_reqs[0].block_ids == ([1, 2],)
    assert so.scheduled_new_reqs[0].num_computed_tokens == 0
    so, _ = step(s)                                   # A computes its 8th: no new block
    assert so.scheduled_cached_reqs.new_block_ids == [None]
    assert so.scheduled_cached_reqs.num_output_tokens == [1]
    assert so.scheduled_cached_reqs.all_token_ids == {}
    so, _ = step(s)                                   # the 9th: block 3
    assert so.scheduled_cached_reqs.new_block_ids == [([3],)]
    assert so.total_num_scheduled_tokens == 1 and so.num_common_prefix_blocks == [3]


def test_abort_frees_blocks_and_reports_the_id_next_step():
    events = []
    s = scheduler(bs=4, blocks=20, budget=64, events=events)
    add(s, "A", 7)
    add(s, "B", 7)
    step(s)
    add(s, "C", 3)
    done = s.finish_requests(["A", "C", "nobody"], RequestStatus.FINISHED_ABORTED)
    assert [r.request_id for r in done] == ["A", "C"]
    assert ids(s.running) == ["B"] and ids(s.waiting) == []
    assert table(s, "A") == [] and "A" not in s.requests
    so = s.schedule()
    assert so.finished_req_ids == {"A", "C"}
    assert s.finish_requests("B", RequestStatus.FINISHED_ABORTED)[0].request_id == "B"
    assert not s.has_unfinished_requests()


def test_check_stop_order():
    def req(tokens, **sp):
        r = Request("r", [5, 6], SamplingParams(max_tokens=sp.pop("max_tokens", 3), **sp), 2)
        r.append_output_token_ids(tokens)
        return r
    r = req([2], max_tokens=1)
    assert check_stop(r, 100) and r.status is RequestStatus.FINISHED_STOPPED   # EOS first
    r = req([2], ignore_eos=True)
    assert not check_stop(r, 100)
    r = req([9], stop_token_ids=(9,))
    assert check_stop(r, 100) and r.stop_reason == 9
    r = req([7, 8, 9])
    assert check_stop(r, 100) and r.status is RequestStatus.FINISHED_LENGTH_CAPPED
    r = req([7])
    assert check_stop(r, 3) and r.status is RequestStatus.FINISHED_LENGTH_CAPPED


def test_check_stop_respects_min_tokens():
    class SP:
        max_tokens, min_tokens, ignore_eos, stop_token_ids = 5, 2, False, ()
    r = Request("r", [5], SP(), 2)
    r.append_output_token_ids(2)
    assert not check_stop(r, 100)                    # EOS before min_tokens: ignored
    r.append_output_token_ids(2)
    assert check_stop(r, 100)


# -- speculative decoding ------------------------------------------------------------------
def test_drafts_are_scheduled_with_the_request_and_rejected_ones_rolled_back():
    """VLLM-V1.md 5.5: 7 tokens, 6 computed, drafts [51, 52, 53] -> 4 scheduled, 3 blocks of
    4 for 10 slots; the model returns [51, 99] -> 9 tokens, num_computed_tokens 8."""
    s = scheduler(bs=4, blocks=20, budget=64, num_speculative_tokens=3)
    a = add(s, "A", 6)
    step(s)
    assert a.num_tokens == 7 and a.num_computed_tokens == 6
    s.update_draft_token_ids({"A": [51, 52, 53]})
    assert a.spec_token_ids == [51, 52, 53] and a.num_tokens_with_spec == 10
    so = s.schedule()
    assert so.num_scheduled_tokens == {"A": 4}
    assert so.scheduled_spec_decode_tokens == {"A": [51, 52, 53]}
    assert len(table(s, "A")) == 3 and a.spec_token_ids == []
    assert a.num_computed_tokens == 10
    s.update_from_output(so, model_output(so, s, {"A": [51, 99]}))
    assert a.num_tokens == 9 and a.num_computed_tokens == 8
    assert a.output_token_ids[-2:] == [51, 99]
    assert len(table(s, "A")) == 3                    # the rejected slots stay allocated
    s.update_draft_token_ids({"A": [60, 61, 62]})
    assert s.schedule().num_scheduled_tokens == {"A": 4}


def test_drafts_are_trimmed_to_the_budget_and_ignored_for_prefill_chunks():
    s = scheduler(bs=4, blocks=20, budget=8, seqs=4, num_speculative_tokens=3)
    a = add(s, "A", 6)
    b = add(s, "B", 14)
    step(s)                                            # A 6, B 2 (a chunk)
    s.update_draft_token_ids({"A": [1, 2, 3], "B": [4, 5, 6]})
    assert b.spec_token_ids == [] and a.spec_token_ids == [1, 2, 3]
    so = s.schedule()
    assert so.num_scheduled_tokens == {"A": 4, "B": 4}
    s.update_from_output(so, model_output(so, s, {"A": [1, 2, 3, 9]}))
    assert a.num_computed_tokens == 10 and a.num_tokens == 11
    s.update_draft_token_ids({"A": [7, 7, 7]})
    so = s.schedule()
    assert so.scheduled_spec_decode_tokens == {"A": [7, 7, 7]}
    s.update_from_output(so, model_output(so, s, {"A": [8]}))
    assert a.num_computed_tokens == 11 and a.num_tokens == 12


def test_accepted_tokens_after_a_stop_are_dropped():
    s = scheduler(bs=4, blocks=20, budget=64, num_speculative_tokens=3)
    a = add(s, "A", 6, max_tokens=2)
    step(s)
    s.update_draft_token_ids({"A": [1, 2, 3]})
    so = s.schedule()
    outs = s.update_from_output(so, model_output(so, s, {"A": [1, 2, 3, 4]}))
    assert outs[0].new_token_ids == [1] and outs[0].finish_reason == "length"
    assert a.output_token_ids == [1006, 1]


def test_one_token_request_is_padded_to_the_spec_size_among_decodes():
    s = scheduler(bs=4, blocks=40, budget=64, num_speculative_tokens=2)
    add(s, "A", 6)
    step(s)                                            # A now decodes
    add(s, "one", 1)                                   # a 1-token prompt
    so = s.schedule()
    assert so.num_scheduled_tokens == {"A": 1, "one": 3}
    assert so.scheduled_spec_decode_tokens == {"one": [-1, -1]}


# -- PRIORITY -----------------------------------------------------------------------------
def test_priority_scheduling_preemption_refunds_an_already_scheduled_victim():
    """VLLM-V1.md 5.3 (as test_priority_scheduling_preemption): 5 usable blocks of 16,
    running [lo1 (priority 5), hi1 (priority 0)]; lo1 is scheduled first, then hi1 needs a
    block: lo1 is the victim, its token refunded; hi1 is the only request scheduled."""
    events = []
    s = scheduler(bs=16, blocks=6, budget=64, policy="priority", events=events)
    lo = add(s, "lo1", 30, priority=5, arrival=0)
    step(s)
    add(s, "hi1", 48, priority=0, arrival=1)
    step(s)
    assert ids(s.running) == ["lo1", "hi1"] and free(s) == []
    so, _ = step(s)
    assert so.num_scheduled_tokens == {"hi1": 1}
    assert so.preempted_req_ids == {"lo1"} and lo.status is RequestStatus.PREEMPTED
    assert so.total_num_scheduled_tokens == 1
    assert so.scheduled_cached_reqs.req_ids == ["hi1"]
    assert [e for e in events if isinstance(e, Preempted)][-1] == Preempted(
        "lo1", "recompute", "hi1", False)


def test_priority_queue_orders_by_priority_then_arrival():
    s = scheduler(bs=4, blocks=40, budget=64, seqs=2, policy="priority")
    add(s, "late", 3, priority=0, arrival=5)
    add(s, "low", 3, priority=3, arrival=0)
    add(s, "early", 3, priority=0, arrival=1)
    so, _ = step(s)
    assert list(so.num_scheduled_tokens) == ["early", "late"] and ids(s.waiting) == ["low"]


def test_request_queues():
    assert isinstance(create_request_queue("fcfs"), FCFSRequestQueue)
    assert isinstance(create_request_queue("priority"), PriorityRequestQueue)
    with pytest.raises(ValueError):
        create_request_queue("lifo")
    q = PriorityRequestQueue()
    r = [Request(f"r{i}", [1], SamplingParams(), 2, priority=p) for i, p in enumerate([2, 0, 1])]
    for x in r:
        q.add_request(x)
    assert q.peek_request() is r[1] and len(q) == 3
    q.remove_request(r[1])
    q.prepend_requests([r[1]])
    assert [x.request_id for x in q] == ["r1", "r2", "r0"]
    q.remove_requests([r[0], r[2]])
    assert q.pop_request() is r[1] and not q
    with pytest.raises(IndexError):
        q.pop_request()
    with pytest.raises(IndexError):
        q.peek_request()
    f = FCFSRequestQueue()
    f.add_request(r[0])
    f.prepend_requests([r[1], r[2]])   # vLLM: prepended in reverse order
    assert [x.request_id for x in f] == ["r2", "r1", "r0"]
    f.remove_request(r[2])
    assert f.pop_request() is r[1] and f.peek_request() is r[0]
    f.pop_request()
    with pytest.raises(IndexError):
        f.peek_request()


def test_events_admitted_and_finished():
    events = []
    s = scheduler(bs=4, blocks=20, budget=64, events=events)
    add(s, "A", 5, max_tokens=1)
    step(s)
    assert Admitted("A", 5, False) in events
    assert RequestFinished("A", "finished_length_capped") in events
