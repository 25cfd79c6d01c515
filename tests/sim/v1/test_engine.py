"""The V1 engine driver (sim/v1/engine.py): the prefix-caching example of vLLM's design
docs as v0.25.1 runs it (VLLM-V1.md section 6) step by step, n > 1 fan-out, KV payloads
through prefix hits, speculative decoding end to end, aborts, arrival, and the trace."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.core.sequence import SamplingParams
from sim.events import (
    BlockCached,
    BlockEvicted,
    BlockTouched,
    ChunkScheduled,
    KVWritten,
    Preempted,
    PrefixCacheHit,
    RequestArrived,
    TokenDiscarded,
    TokenSampled,
)
from sim.trace import Scheduled, record
from sim.v1.config import CacheConfig, SchedulerConfig
from sim.v1.engine import LLMEngine
from sim.v1.invariants import check_engine
from sim.v1.request import RequestStatus


def engine(bs=4, blocks=11, budget=64, seqs=16, caching=True, **kw):
    rate = kw.pop("spec_acceptance_rate", 0.7)
    seed = kw.pop("seed", 0)
    return LLMEngine(CacheConfig(block_size=bs, num_gpu_blocks=blocks,
                                 enable_prefix_caching=caching),
                     SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=seqs,
                                     **{"async_scheduling": False, **kw}),
                     seed=seed, spec_acceptance_rate=rate)


def sp(max_tokens, **kw):
    return SamplingParams(max_tokens=max_tokens, ignore_eos=True, **kw)


def checked_step(e):
    out = e.step()
    problems = check_engine(e)
    assert not problems, (out.step, problems)
    return out


def run(e, max_steps=1000):
    outs = []
    while e.has_unfinished_requests():
        outs.append(checked_step(e))
        assert len(outs) < max_steps
    return outs


def view(e, rid):
    """(block id, ref count, hash prefix or None) of each entry of a request's table."""
    snap = e.snapshot()
    blocks = snap["gpu"]["blocks"]
    for r in snap["requests"]:
        if r["request_id"] == rid:
            return [(b, blocks[b]["ref_count"], blocks[b]["hash"])
                    for _, b, _ in r["seqs"][0]["block_table"]]
    raise KeyError(rid)


def free_order(e):
    return e.snapshot(with_slots=False)["gpu"]["free_order"]


# The docs' tokens: R0 = A..O (15), R1 = A..J k l m n (14), R2 = A..L + 17 digits (29).
LETTERS = list(range(100, 115))
R0 = LETTERS
R1 = LETTERS[:10] + [200, 201, 202, 203]
R2 = LETTERS[:12] + list(range(300, 317))


def docs_example(num_gpu_blocks):
    e = engine(blocks=num_gpu_blocks)
    e.add_request("R0", R0, sp(3))                     # outputs P Q R
    e.add_request("R1", R1, sp(1), arrival_step=2)     # output o
    e.add_request("R2", R2, sp(2), arrival_step=3)
    return e


def test_docs_prefix_caching_example_as_v0_25_1_runs_it():
    """docs/design/prefix_caching.md's example with 11 blocks (the docs' 10 + the null
    block; doc id + 1 = id here), VLLM-V1.md section 6, one engine step at a time."""
    e = docs_example(11)

    # Step 1: R0's prefill, 15 tokens: 4 blocks, the 3 full ones cached. Samples P.
    out = checked_step(e)
    assert out.scheduler_outputs.num_scheduled_tokens == {"R0": 15}
    r0 = view(e, "R0")
    assert [(b, ref) for b, ref, _ in r0] == [(1, 1), (2, 1), (3, 1), (4, 1)]
    a_d, a_h, a_l = (h for _, _, h in r0[:3])
    assert None not in (a_d, a_h, a_l) and r0[3][2] is None
    assert free_order(e) == [5, 6, 7, 8, 9, 10]

    # Step 2: R0 computes P: block 4 is full and cached (A-P). Samples Q.
    out = checked_step(e)
    assert out.scheduler_outputs.num_scheduled_tokens == {"R0": 1}
    a_p = view(e, "R0")[3][2]
    assert a_p is not None and free_order(e) == [5, 6, 7, 8, 9, 10]

    # Step 3: R0 computes Q in a 5th block (5). R1 arrives: hits 1, 2 (8 tokens; its 3rd
    # block matches only 2 of 4) touched to ref 2; 6 new tokens in new blocks 6, 7; block
    # 6 (A-J,kl) cached. Both finish: R0 freed first ([5,4,3,2,1]), then R1 ([7,6,2,1]).
    out = checked_step(e)
    so = out.scheduler_outputs
    assert so.num_scheduled_tokens == {"R0": 1, "R1": 6}
    assert PrefixCacheHit("R1", (1, 2), 8) in out.events
    assert BlockTouched(1, 2) in out.events and BlockTouched(2, 2) in out.events
    assert so.scheduled_new_reqs[0].block_ids == ([1, 2, 6, 7],)
    assert so.scheduled_new_reqs[0].num_computed_tokens == 8
    assert so.scheduled_cached_reqs.new_block_ids == [([5],)]
    assert out.finished == ["R0", "R1"]
    # The docs' times 4 and 5 (the two frees), then the queue after both:
    # 5 and 7 (unhashed) at the head, the hashed blocks at the tail in reversed order.
    assert free_order(e) == [7, 5, 8, 9, 10, 4, 3, 6, 2, 1]
    snap = e.snapshot()
    blocks = snap["gpu"]["blocks"]
    assert [blocks[b]["ref_count"] for b in range(11)] == [0] * 11
    cached = {b for b in range(11) if blocks[b]["cached"]}
    assert cached == {1, 2, 3, 4, 6}                  # A-D A-H A-L A-P A-J,kl: 5 entries
    assert [blocks[b]["hash"] for b in (1, 2, 3, 4)] == [a_d, a_h, a_l, a_p]

    # Step 4 (the docs' time 6): R2 arrives, hits 1, 2, 3 (12 tokens). 8 blocks for 29
    # tokens = 5 new + 3 free hits <= 10 free. Touch 1,2,3; pop 7,5,8,9,10 (none hashed);
    # its blocks 3..6 (7,5,8,9) cached. A-P and A-J,kl survive: no eviction.
    out = checked_step(e)
    assert out.scheduler_outputs.num_scheduled_tokens == {"R2": 17}
    assert PrefixCacheHit("R2", (1, 2, 3), 12) in out.events
    assert not [ev for ev in out.events if isinstance(ev, BlockEvicted)]
    r2 = view(e, "R2")
    assert [b for b, _, _ in r2] == [1, 2, 3, 7, 5, 8, 9, 10]
    assert all(ref == 1 for _, ref, _ in r2)
    assert [h is not None for _, _, h in r2] == [True] * 7 + [False]
    assert [h for _, _, h in r2[:3]] == [a_d, a_h, a_l]
    assert free_order(e) == [4, 6]
    blocks = e.snapshot()["gpu"]["blocks"]
    assert blocks[4]["hash"] == a_p and blocks[4]["cached"] and blocks[6]["cached"]
    run(e)


def test_docs_example_with_10_blocks_evicts_a_p():
    """With 9 usable blocks v0.25.1 does evict: R2 pops 7,5,8,9,4 (A-P evicted), leaves 6."""
    e = docs_example(10)
    checked_step(e)
    checked_step(e)
    a_p = view(e, "R0")[3][2]
    out = checked_step(e)
    assert free_order(e) == [7, 5, 8, 9, 4, 3, 6, 2, 1]
    out = checked_step(e)
    assert [ev for ev in out.events if isinstance(ev, BlockEvicted)] == [BlockEvicted(4, a_p)]
    assert [b for b, _, _ in view(e, "R2")] == [1, 2, 3, 7, 5, 8, 9, 4]
    assert free_order(e) == [6]


def test_n_greater_than_1_fans_out_into_children_sharing_the_prompt():
    e = engine(blocks=20)
    kids = e.add_request("A", list(range(9)), sp(2, n=3))
    assert [k.request_id for k in kids] == ["0_A", "1_A", "2_A"]
    assert [k.parent_request_id for k in kids] == ["A"] * 3
    assert len({k.seq_id for k in kids}) == 3
    out = checked_step(e)
    # Blocks are hashed at scheduling time: the later children hit the first one's blocks
    # in the same step (VLLM-V1.md section 7: 9, 1, 1).
    assert out.scheduler_outputs.num_scheduled_tokens == {"0_A": 9, "1_A": 1, "2_A": 1}
    assert [s.num_tokens for s in out.scheduled()] == [9, 1, 1]
    assert all(s.prefill for s in out.scheduled())
    # Different samples per child.
    assert len({tuple(k.output_token_ids) for k in kids}) == 3
    run(e)
    assert e.abort_request("A") is False


def test_best_of_and_beam_search_are_rejected():
    e = engine()
    with pytest.raises(ValueError, match="best_of"):
        e.add_request("A", 4, SamplingParams(n=1, best_of=2))
    with pytest.raises(ValueError, match="beam search"):
        e.add_request("B", 4, SamplingParams(best_of=2, use_beam_search=True))


def test_add_request_validation():
    e = engine(max_model_len=16)
    e.add_request("A", 3)
    with pytest.raises(ValueError, match="already"):
        e.add_request("A", 3)
    with pytest.raises(ValueError, match="longer than the maximum model length"):
        e.add_request("B", 17)
    with pytest.raises(ValueError):
        e.add_request("C", 0)
    with pytest.raises(ValueError):
        e.add_request("D", [])
    with pytest.raises(ValueError):
        e.add_request("E", 3, arrival_step=-1)
    with pytest.raises(ValueError):
        e.add_request("F", 3, output_len=0)
    with pytest.raises(ValueError):
        engine(spec_acceptance_rate=1.5)


def test_prompts_given_as_lengths_can_share_a_prefix():
    e = engine(blocks=20)
    a = e.add_request("A", 5, sp(1), shared_prefix=8)
    b = e.add_request("B", 5, sp(1), shared_prefix=8)
    assert a.prompt_token_ids[:8] == b.prompt_token_ids[:8]
    assert a.prompt_token_ids[8:] != b.prompt_token_ids[8:]
    c = e.add_request("C", 5)
    assert c.num_prompt_tokens == 5
    out = checked_step(e)
    assert out.scheduler_outputs.num_scheduled_tokens == {"A": 13, "B": 5, "C": 5}


def test_a_prefix_hit_reads_exactly_the_tokens_the_request_would_have_computed():
    e = engine(blocks=30)
    e.add_request("A", 6, sp(4), shared_prefix=12)
    run(e)
    b = e.add_request("B", 7, sp(3), shared_prefix=12)
    out = checked_step(e)
    assert PrefixCacheHit("B", (1, 2, 3), 12) in out.events
    # Its table reads back as its own token ids at their positions, hit blocks included.
    own = b.all_token_ids[:b.num_computed_tokens]
    assert e.read_back("B") == [(t, p) for p, t in enumerate(own)]
    assert b.num_computed_tokens == 19
    run(e)


def test_arrival_steps_and_events():
    e = engine()
    e.add_request("late", 3, sp(1), arrival_step=2)
    e.add_request("early", 3, sp(2))
    assert [r.request_id for r in e.pending] == ["early", "late"]
    out = checked_step(e)
    assert RequestArrived("early", 3) in out.events
    assert ChunkScheduled("early", 3, 0) in out.events
    assert KVWritten(0, 0, 3) in [ev for ev in out.events if isinstance(ev, KVWritten)] or \
        KVWritten(1, 0, 3) in out.events
    assert [ev for ev in out.events if isinstance(ev, TokenSampled)][0].position == 3
    assert e.snapshot()["queues"]["pending"] == ["late"]
    checked_step(e)
    out = checked_step(e)
    assert RequestArrived("late", 3) in out.events
    run(e)
    late = e.requests["late"]
    assert (late.arrival_step, late.first_scheduled_step, late.finished_step) == (2, 2, 2)


def test_step_output_tokens_and_scheduled():
    e = engine(budget=8, seqs=8)
    e.add_request("A", 10, sp(2))
    e.add_request("B", 2, sp(3))
    out = checked_step(e)
    assert out.scheduled() == (Scheduled("A", 8, True, 1),)
    assert out.tokens == []
    out = checked_step(e)
    assert out.scheduled() == (Scheduled("A", 2, True, 1), Scheduled("B", 2, True, 1))
    a, b = e.requests["A"], e.requests["B"]
    assert out.tokens == [("A", a.seq_id, 10, a.output_token_ids[0]),
                          ("B", b.seq_id, 2, b.output_token_ids[0])]
    out = checked_step(e)
    assert out.scheduled() == (Scheduled("A", 1, False, 1), Scheduled("B", 1, False, 1))
    assert out.finished == ["A"]


def test_output_len_scripts_eos():
    e = engine()
    r = e.add_request("A", 4, SamplingParams(max_tokens=10), output_len=3)
    run(e)
    assert r.num_output_tokens == 3 and r.output_token_ids[-1] == e.model.eos_token_id
    assert r.status is RequestStatus.FINISHED_STOPPED


def test_abort_pending_waiting_and_running():
    e = engine(blocks=6, budget=64)
    e.add_request("run", 8, sp(10))
    e.add_request("wait", 16, sp(2))
    e.add_request("later", 3, sp(2), arrival_step=5)
    checked_step(e)
    assert e.snapshot()["queues"]["waiting"] == ["wait"]
    assert e.abort_request("later") and e.abort_request("wait") and e.abort_request("run")
    assert not e.abort_request("run") and not e.abort_request("nobody")
    events = e.take_events()
    assert [(ev.request_id, ev.queue) for ev in events if type(ev).__name__ == "Aborted"] == [
        ("later", "pending"), ("wait", "waiting"), ("run", "running")]
    assert not e.has_unfinished_requests()
    assert not check_engine(e)
    assert e.block_pool.get_num_free_blocks() == 5


def test_recompute_after_preemption_reads_back_its_own_tokens():
    e = engine(blocks=8, budget=64)
    for i, r in enumerate("ABC"):
        e.add_request(r, list(range(100 * (i + 1), 100 * (i + 1) + 8)), sp(6))
    outs = run(e)
    assert sum(1 for o in outs for ev in o.events if type(ev).__name__ == "Preempted") == 2
    assert all(e.requests[r].num_output_tokens == 6 for r in "ABC")


def test_speculative_decoding_changes_steps_not_tokens():
    def tokens(k, rate):
        e = engine(blocks=40, num_speculative_tokens=k, spec_acceptance_rate=rate,
                   num_lookahead_tokens=0)
        e.add_request("A", 6, sp(20))
        e.add_request("B", 9, sp(15))
        outs = run(e)
        sampled = sorted((ev.seq_id, ev.position, ev.token_id, ev.logprob)
                         for o in outs for ev in o.events if isinstance(ev, TokenSampled))
        listed = sorted(t for o in outs for t in o.tokens)
        assert [(s, p, t) for s, p, t, _ in sampled] == [(e.requests[r].seq_id, p, t)
                                                         for r, _, p, t in listed]
        return ([(e.requests[r].output_token_ids, e.requests[r].cumulative_logprob)
                 for r in "AB"], len(outs), sampled)
    plain, steps, events = tokens(0, 0.0)
    for k, rate in [(3, 0.7), (2, 1.0), (4, 0.0)]:
        got, n, got_events = tokens(k, rate)
        assert got == plain and got_events == events
        if rate == 1.0:
            assert n < steps


def test_speculative_decoding_with_lookahead_keeps_invariants():
    e = engine(blocks=12, num_speculative_tokens=3, num_lookahead_tokens=3, budget=16,
               seqs=4, spec_acceptance_rate=0.5)
    for i in range(4):
        e.add_request(f"r{i}", 5 + i, sp(12))
    run(e)
    assert all(r.num_output_tokens == 12 for r in e.requests.values())


def test_trace_record_plugs_in():
    e = engine()
    e.add_request("A", 5, sp(3))
    e.add_request("B", 5, sp(2), arrival_step=1)
    trace = record(e, check=check_engine)
    assert trace.stopped is None and len(trace) == 4
    assert [s.kind for s in trace] == ["before", "prefill", "prefill", "decode"]
    assert all(not s.problems for s in trace)
    assert trace.last.snapshot["engine"] == "v1"


def test_trace_stops_at_max_steps_when_the_queue_is_blocked_forever():
    e = engine(blocks=6, budget=8, seqs=8)
    e.add_request("big", 24, sp(1))                   # 6 blocks > 5 usable, ever
    trace = record(e, max_steps=5)
    assert trace.stopped == "max_steps"


def test_priority_preemption_of_a_scheduled_request_leaves_an_unwritten_cached_block():
    """Read from the code (VLLM-V1.md 5.3): a PRIORITY victim that was already scheduled in
    this step gets its tokens refunded, but allocate_slots had already hashed the block its
    tokens would fill; that block keeps the hash without its KV ever being written. vLLM
    tracks this upstream (vllm#43569, vllm#57580); the invariant checker reports it."""
    e = engine(bs=4, blocks=6, budget=64, policy="priority", long_prefill_token_threshold=5)
    e.add_request("lo", 20, sp(8), priority=5)
    checked_step(e)                                  # lo: positions 0-4 in [1, 2]
    e.add_request("hi", 4, sp(8), priority=0, arrival_step=1)
    checked_step(e)                                  # lo: 5-9 (+3); hi: [4]
    # lo schedules 10-14: block 3 (positions 8-11) is full and hashed, block 5 is new;
    # then hi needs a 2nd block: none free, the victim is lo, already scheduled. Its table
    # [1, 2, 3, 5] is freed reversed: 5 (unhashed) to the head, where hi takes it; block 3
    # keeps its hash though positions 10 and 11 were never computed.
    out = e.step()
    assert out.scheduler_outputs.num_scheduled_tokens == {"hi": 1}
    assert e.requests["lo"].status is RequestStatus.PREEMPTED
    assert e.block_pool.blocks[3].block_hash is not None
    assert [s[1] if s else None for s in e.gpu_cache[3]] == [8, 9, None, None]
    problems = check_engine(e)
    assert problems == ["cached block 3: its slots do not hold positions 8..11"]


# -- hybrid models (a kv_cache_config with several groups) --------------------------------
from sim.events import BlockSkipped, GroupBlockAllocated  # noqa: E402
from sim.v1.kv_cache_utils import attention_layer_specs, make_kv_cache_config  # noqa: E402


def doc_engine(blocks=40, budget=16, layout=("full_attention",) + ("sliding_attention",) * 2,
               window=32, bs=16, **kw):
    """The design doc's case 2 in miniature: 1 full : 2 sliding (window 32), block 16."""
    specs = attention_layer_specs(layout, bs, sliding_window=window)
    kw.setdefault("async_scheduling", False)     # the doc's steps: the synchronous loop
    return LLMEngine(CacheConfig(block_size=bs, num_gpu_blocks=blocks),
                     SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=4,
                                     max_model_len=256, **kw),
                     kv_cache_config=make_kv_cache_config(blocks, specs))


def tables(e, rid):
    return [[b.block_id for b in t] for t in e.kv_cache_manager.coordinator.get_blocks(rid)]


def test_hybrid_request_grows_and_the_window_returns_blocks():
    """A 112-token prompt in 16-token chunks: full attention keeps every block; each
    sliding-window group keeps the blocks the next token attends to (window 32: two),
    the null block standing for the rest; after the prefill and one decode the request
    holds 8 + 3 + 3 blocks, as the doc's 7 + 2 + 2 plus the block of the new token."""
    e = doc_engine()
    e.add_request("A", 112, SamplingParams(max_tokens=3, ignore_eos=True))
    outs = [e.step() for _ in range(8)]
    assert tables(e, "A") == [[1, 4, 7, 10, 13, 16, 19, 22], [0, 0, 0, 0, 0, 17, 20, 23],
                              [0, 0, 0, 0, 0, 18, 21, 24]]
    skipped = [(ev.kv_cache_group_id, ev.logical, ev.physical) for out in outs
               for ev in out.events if isinstance(ev, BlockSkipped)]
    assert skipped[:2] == [(1, 0, 2), (2, 0, 3)]      # at 48 computed tokens (step 4)
    assert len(skipped) == 10
    # The scheduler output carries one list of new block ids per group.
    cached = outs[7].scheduler_outputs.scheduled_cached_reqs
    assert cached.new_block_ids == [([22], [23], [24])]
    assert outs[0].scheduler_outputs.scheduled_new_reqs[0].block_ids == ([1], [2], [3])
    assert outs[7].scheduler_outputs.num_common_prefix_blocks == [8, 0, 0]
    allocated = [ev for ev in outs[0].events if isinstance(ev, GroupBlockAllocated)]
    assert [(ev.kv_cache_group_id, ev.physical) for ev in allocated] == [(0, 1), (1, 2), (2, 3)]
    assert check_engine(e) == []
    e.run()
    assert e.block_pool.get_num_free_blocks() == 39


def test_hybrid_second_request_hits_only_the_window():
    """B shares A's first 96 tokens: full attention reuses 6 blocks, each sliding-window
    group only the 2 blocks before B's first new token (the null block for the rest)."""
    e = doc_engine()
    e.add_request("A", 112, SamplingParams(max_tokens=3, ignore_eos=True))
    e.run()
    prompt = e.requests["A"].prompt_token_ids[:96] + list(range(500, 516))
    e.add_request("B", prompt, SamplingParams(max_tokens=2, ignore_eos=True))
    out = e.step()
    hit = [ev for ev in out.events if isinstance(ev, PrefixCacheHit)]
    assert hit == [PrefixCacheHit("B", (1, 4, 7, 10, 13, 16, 14, 17, 15, 18), 96)]
    t = tables(e, "B")
    assert t[0][:6] == [1, 4, 7, 10, 13, 16]
    assert t[1][:6] == [0, 0, 0, 0, 14, 17] and t[2][:6] == [0, 0, 0, 0, 15, 18]
    assert out.scheduler_outputs.num_scheduled_tokens == {"B": 16}
    assert check_engine(e) == []


def test_hybrid_preemption_frees_every_group_and_recomputes():
    e = doc_engine(blocks=14, budget=64, layout=("full_attention", "sliding_attention"),
                   window=8, bs=4)
    for rid in "ABC":
        e.add_request(rid, 10, SamplingParams(max_tokens=8, ignore_eos=True))
    preempted = []
    while e.has_unfinished_requests():
        out = e.step()
        preempted += [ev.request_id for ev in out.events if type(ev).__name__ == "Preempted"]
        assert check_engine(e) == []
    assert preempted
    assert e.block_pool.get_num_free_blocks() == 13
    assert all(r.num_output_tokens == 8 for r in e.requests.values())


def test_hybrid_in_the_async_loop_keeps_every_invariant():
    """vLLM's default loop: each step scheduled before the previous output is processed;
    the windows, the groups and the payloads hold after every call, and B still hits."""
    e = doc_engine(async_scheduling=True)
    e.add_request("A", 112, SamplingParams(max_tokens=3, ignore_eos=True))
    prompt = e.requests["A"].prompt_token_ids[:96] + list(range(500, 516))
    e.add_request("B", prompt, SamplingParams(max_tokens=2, ignore_eos=True), arrival_step=14)
    hits, skipped = [], 0
    while e.has_unfinished_requests():
        out = e.step()
        assert check_engine(e) == []
        hits += [ev for ev in out.events if isinstance(ev, PrefixCacheHit)]
        skipped += sum(isinstance(ev, BlockSkipped) for ev in out.events)
    assert [(h.request_id, h.num_tokens) for h in hits] == [("B", 96)]
    assert skipped >= 10
    assert e.block_pool.get_num_free_blocks() == 39


def test_full_attention_engine_unchanged_by_an_explicit_one_group_config():
    """A kv_cache_config of one full-attention group behaves as the default engine."""
    def run(config):
        e = LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=11),
                      SchedulerConfig(max_num_batched_tokens=64, max_num_seqs=8),
                      kv_cache_config=config)
        e.add_request("A", list(range(15)), SamplingParams(max_tokens=3, ignore_eos=True))
        e.add_request("B", list(range(10)) + [50, 51, 52, 53],
                      SamplingParams(max_tokens=1, ignore_eos=True), arrival_step=2)
        return [(out.scheduler_outputs.num_scheduled_tokens, out.events) for out in e.run()]
    specs = attention_layer_specs(["full_attention"] * 3, 4)
    assert run(None) == run(make_kv_cache_config(11, specs))


def test_kv_cache_config_must_match_the_cache_config():
    specs = attention_layer_specs(["full_attention", "sliding_attention"], 4, sliding_window=4)
    with pytest.raises(ValueError, match="blocks"):
        LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=11),
                  kv_cache_config=make_kv_cache_config(12, specs))
    specs8 = attention_layer_specs(["full_attention", "sliding_attention"], 8, sliding_window=4)
    with pytest.raises(ValueError, match="block size"):
        LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=11),
                  kv_cache_config=make_kv_cache_config(11, specs8))


# -- the async loop (vLLM's default: AsyncScheduler + EngineCore.step_with_batch_queue) ------
def async_engine(**kw):
    return engine(async_scheduling=True, **kw)


def test_async_scheduling_is_the_default_loop_unless_drafts_are_on():
    """VllmConfig resolves SchedulerConfig.async_scheduling=None to True (the engine uses
    AsyncScheduler and a batch queue of two) unless the speculative method has no async
    path; the simulation does not model async drafting, so drafts resolve to False."""
    from sim.v1.async_scheduler import AsyncScheduler
    from sim.v1.scheduler import Scheduler
    e = LLMEngine()
    assert e.async_scheduling is True and e.scheduler_config.async_scheduling is True
    assert type(e.scheduler) is AsyncScheduler and e.batch_queue_size == 2
    e = LLMEngine(scheduler_config=SchedulerConfig(num_speculative_tokens=2))
    assert e.async_scheduling is False and type(e.scheduler) is Scheduler
    assert e.batch_queue is None
    e = LLMEngine(scheduler_config=SchedulerConfig(async_scheduling=False))
    assert type(e.scheduler) is Scheduler
    with pytest.raises(ValueError, match="not simulated"):
        SchedulerConfig(async_scheduling=True, num_speculative_tokens=2)


def test_a_prompt_as_long_as_max_model_len_is_refused():
    """InputProcessor._validate_prompt_len (v0.25.1): prompt + at least one output token
    must fit; the async scheduler would otherwise schedule a negative count."""
    for loop in (True, False):
        e = engine(max_model_len=16, async_scheduling=loop)
        with pytest.raises(ValueError, match=r"plus the number of requested output tokens"):
            e.add_request("A", 16, sp(1))
        with pytest.raises(ValueError, match="longer than the maximum model length of 16"):
            e.add_request("A", 17, sp(1))
        e.add_request("A", 15, sp(5))
        outs = run(e)
        assert e.requests["A"].status is RequestStatus.FINISHED_LENGTH_CAPPED
        assert e.requests["A"].num_tokens == 16 and len(outs) == (2 if loop else 1)


def test_the_next_step_is_scheduled_before_the_last_output_is_processed():
    """step_with_batch_queue: the first call schedules and returns (the queue has room);
    every later call schedules one batch and processes the oldest, so a token reaches the
    request one call after the step that sampled it."""
    e = async_engine()
    e.add_request("A", 6, sp(3))
    out = checked_step(e)
    assert out.scheduler_outputs.num_scheduled_tokens == {"A": 6}
    assert out.processed_step is None and out.tokens == [] and out.finished == []
    assert e.snapshot()["batch_queue"] == [
        {"step": 0, "num_scheduled_tokens": {"A": 6}, "samples": ["A"]}]
    a = e.requests["A"]
    assert (a.num_tokens, a.num_output_placeholders) == (6, 1)
    out = checked_step(e)
    assert out.scheduler_outputs.num_scheduled_tokens == {"A": 1}   # position 6, in flight
    assert out.processed_step == 0 and [t[2] for t in out.tokens] == [6]
    assert (a.num_tokens, a.num_output_placeholders) == (7, 1)
    trace_e = async_engine()
    trace_e.add_request("A", 6, sp(3))
    trace = record(trace_e, check=check_engine)
    assert [s.processed for s in trace] == [None, None, 0, 1, 2]
    assert [len(s.scheduled) for s in trace] == [0, 1, 1, 1, 0]
    assert trace.last.finished == ("A",) and not any(s.problems for s in trace)


def test_a_length_stop_wastes_nothing():
    """The running loop skips a request whose token in flight is its last (max_tokens),
    and caps at max_model_len: the async loop computes exactly the tokens the synchronous
    one does, and throws none away."""
    runs = {}
    for loop in (False, True):
        e = engine(async_scheduling=loop, max_model_len=20)
        e.add_request("A", 5, sp(4))
        e.add_request("B", 12, sp(50))             # stops at max_model_len: 8 outputs
        outs = run(e)
        runs[loop] = (sum(o.scheduler_outputs.total_num_scheduled_tokens for o in outs),
                      [o.discarded for o in outs],
                      {r: q.output_token_ids for r, q in e.requests.items()})
    assert runs[True][0] == runs[False][0] == 5 + 3 + 12 + 7
    assert not any(runs[True][1])
    assert runs[True][2] == runs[False][2]
    assert len(runs[True][2]["B"]) == 8


def test_an_eos_stop_discards_the_token_in_flight():
    """An EOS is seen when its output is processed, after the next step (with the
    request's next decode) was scheduled: that step's token is thrown away when its output
    comes back (update_from_output skips a finished request)."""
    e = async_engine()
    e.add_request("A", 5, SamplingParams(max_tokens=10), output_len=2)   # EOS as output 2
    outs = run(e)
    a = e.requests["A"]
    assert a.status is RequestStatus.FINISHED_STOPPED and len(a.output_token_ids) == 2
    scheduled = sum(o.scheduler_outputs.total_num_scheduled_tokens for o in outs)
    assert scheduled == 5 + 2                       # one decode more than it needed
    discarded = [d for o in outs for d in o.discarded]
    assert discarded == [("A", a.seq_id, 7, discarded[0][3], "finished_stopped")]
    (event,) = [ev for o in outs for ev in o.events if isinstance(ev, TokenDiscarded)]
    assert event.position == 7 and event.reason == "finished_stopped"
    sync = engine()
    sync.add_request("A", 5, SamplingParams(max_tokens=10), output_len=2)
    outs = run(sync)
    assert sum(o.scheduler_outputs.total_num_scheduled_tokens for o in outs) == 5 + 1
    assert sync.requests["A"].output_token_ids == a.output_token_ids


def cached_at(outs, rid_logical):
    """The engine step in which each (request, logical block) was cached."""
    return {(e.request_id, e.logical): o.step for o in outs for e in o.events
            if isinstance(e, BlockCached) and (e.request_id, e.logical) in rid_logical}


def test_a_decoded_block_is_cached_one_call_later():
    """allocate_slots caches up to num_tokens, which lacks the token in flight, and
    _update_request_with_output caches up to num_computed_tokens - placeholders: the block
    a decode fills is hashed one engine call later than in the synchronous loop."""
    for loop, step in ((False, 1), (True, 2)):
        e = engine(async_scheduling=loop)
        e.add_request("A", 7, sp(4))
        outs = run(e)
        assert cached_at(outs, {("A", 0), ("A", 1)}) == {("A", 0): 0, ("A", 1): step}


def test_an_abort_with_a_step_in_flight_leaves_its_block_unhashed():
    """Aborted after the step that fills its block was scheduled but before that step's
    output came back: the block was never cached, so it is freed unhashed (to the head of
    the free queue, reused first) and the token in flight is thrown away. The synchronous
    loop had cached it."""
    results = {}
    for loop in (False, True):
        e = engine(async_scheduling=loop)
        e.add_request("A", 7, sp(4))
        checked_step(e)
        checked_step(e)                              # computes position 7 (fills block 2)
        second = e.kv_cache_manager.req_to_blocks["A"][1]
        e.abort_request("A")
        results[loop] = (second.block_id, second.block_hash is not None,
                         e.snapshot()["gpu"]["free_order"][0])
        outs = run(e)
        results[loop] += ([d[4] for o in outs for d in o.discarded],)
    assert results[False] == (2, True, 3, [])
    assert results[True] == (2, False, 2, ["finished_aborted"])


def test_a_victim_finishes_while_preempted():
    """B's last token is in flight (max_tokens 1), so B is not scheduled again, but it is
    still in running: when A needs a block, B is the victim. The output in flight is then
    appended to the preempted B (placeholders survive preemption), which finishes while
    preempted and leaves waiting. The synchronous loop had freed B's block before A needed
    it: nothing was preempted."""
    for loop in (False, True):
        e = engine(async_scheduling=loop, bs=4, blocks=3)
        e.add_request("A", 4, sp(3))
        e.add_request("B", 4, sp(1))
        outs = run(e)
        preempted = [ev for o in outs for ev in o.events if isinstance(ev, Preempted)]
        assert {r: q.num_output_tokens for r, q in e.requests.items()} == {"A": 3, "B": 1}
        if not loop:
            assert preempted == []
            continue
        assert preempted == [Preempted("B", "recompute", "A", False)]
        out = outs[1]
        assert out.finished == ["B"] and ("B", e.requests["B"].seq_id, 4) == out.tokens[1][:3]
        assert e.requests["B"].status is RequestStatus.FINISHED_LENGTH_CAPPED
        assert e.requests["B"].num_preemptions == 1


def test_reset_prefix_cache_discards_the_outputs_in_flight():
    """reset_prefix_cache(reset_running_requests=True) preempts every running request; the
    outputs already in flight for them are stale (async_tokens_to_discard) and dropped when
    they come back, while the requests recompute and sample those positions again."""
    e = async_engine()
    e.add_request("A", 6, sp(4))
    e.add_request("B", 9, sp(3))
    checked_step(e)
    checked_step(e)
    a = e.requests["A"]
    assert (a.num_output_placeholders, a.num_tokens) == (1, 7)
    assert e.reset_prefix_cache(reset_running_requests=True)
    assert a.status is RequestStatus.PREEMPTED
    assert (a.num_output_placeholders, a.async_tokens_to_discard) == (0, 1)
    assert check_engine(e) == []
    out = checked_step(e)
    assert out.scheduler_outputs.num_scheduled_tokens == {"A": 7, "B": 10}   # recomputed
    assert [(d[0], d[2], d[4]) for d in out.discarded] == [
        ("A", 7, "reset_prefix_cache"), ("B", 10, "reset_prefix_cache")]
    assert a.async_tokens_to_discard == 0 and a.num_tokens == 7
    run(e)
    sync = engine()
    sync.add_request("A", 6, sp(4))
    sync.add_request("B", 9, sp(3))
    run(sync)
    assert ({r: q.output_token_ids for r, q in e.requests.items()}
            == {r: q.output_token_ids for r, q in sync.requests.items()})


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(bs=st.sampled_from([1, 2, 4, 8]), blocks=st.integers(6, 40),
       budget=st.sampled_from([8, 16, 64]), seqs=st.integers(1, 6),
       caching=st.booleans(), policy=st.sampled_from(["fcfs", "priority"]),
       reqs=st.lists(st.tuples(st.integers(1, 20), st.integers(1, 10), st.integers(0, 4),
                               st.integers(0, 2), st.sampled_from([1, 1, 2]),
                               st.integers(0, 2)), min_size=1, max_size=6))
def test_async_and_sync_produce_the_same_tokens_when_nothing_stops_early(
        bs, blocks, budget, seqs, caching, policy, reqs):
    """With no EOS and no abort, every request gets the same tokens in both loops (the
    stand-in model's token at a position does not depend on the schedule), whatever the
    preemptions and cache hits; and the invariants hold after every async call."""
    tokens = {}
    for loop in (False, True):
        e = engine(bs=bs, blocks=blocks, budget=budget, seqs=min(seqs, budget),
                   caching=caching, policy=policy, max_model_len=32, async_scheduling=loop)
        for i, (prompt, out, arrival, prefix, n, priority) in enumerate(reqs):
            e.add_request(f"r{i}", prompt, sp(out, n=n), arrival_step=arrival,
                          shared_prefix=4 * prefix, priority=priority)
        steps = 0
        while e.has_unfinished_requests() and steps < 400:
            e.step()
            steps += 1
            problems = check_engine(e)
            if policy == "priority":     # see the PRIORITY note in test_invariants.py
                problems = [p for p in problems if "slots do not hold" not in p
                            and "do not read back" not in p]
            assert not problems, (loop, steps, problems)
        if e.has_unfinished_requests():
            return   # a request bigger than the pool blocks FCFS for good: no comparison
        tokens[loop] = {rid: list(r.output_token_ids) for rid, r in e.requests.items()}
        assert all(len(t) == min(r.max_tokens, 32 - r.num_prompt_tokens)
                   for t, r in zip(tokens[loop].values(), e.requests.values()))
    assert tokens[True] == tokens[False]


def test_a_block_filled_before_a_length_stop_is_cached_when_the_output_comes_back():
    """A (prompt 6, max_tokens 3) computes position 7, filling its block 1, in the step
    whose successor is skipped (its token in flight is its last): no allocate_slots caches
    that block any more, so AsyncScheduler._update_request_with_output does, up to
    num_computed_tokens - num_output_placeholders, before the finished request is freed.
    The block is then in the prefix cache, as with the synchronous loop."""
    for loop in (False, True):
        e = engine(async_scheduling=loop)
        e.add_request("A", list(range(100, 106)), sp(3))
        outs = run(e)
        assert set(cached_at(outs, {("A", 0), ("A", 1)})) == {("A", 0), ("A", 1)}
        a = e.requests["A"]
        e.add_request("B", a.all_token_ids[:8] + [7, 7], sp(1))
        hits = [ev for o in run(e) for ev in o.events if isinstance(ev, PrefixCacheHit)]
        assert [(h.request_id, h.num_tokens) for h in hits] == [("B", 8)]
