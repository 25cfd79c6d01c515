"""KVCacheManager (sim/v1/kv_cache_manager.py): hit search, allocate_slots, free, caching and
statistics, on examples worked out from vLLM v0.25.1's `kv_cache_manager.py` and
`single_type_kv_cache_manager.py` (VLLM-V1.md sections 4 and 6)."""
from sim.core.sequence import SamplingParams
from sim.events import BlockAllocated, PrefixCacheHit
from sim.v1.kv_cache_manager import KVCacheBlocks, KVCacheManager, PrefixCacheStats
from sim.v1.kv_cache_utils import get_request_block_hasher, make_block_hash_with_group_id, sha256
from sim.v1.request import Request, RequestStatus

BS = 4


def req(rid, tokens, bs=BS, seq_id=0):
    return Request(rid, tokens, SamplingParams(max_tokens=16), eos_token_id=2,
                   block_hasher=get_request_block_hasher(bs, sha256), block_size=bs,
                   seq_id=seq_id)


def manager(n, bs=BS, **kw):
    return KVCacheManager(bs, n, max_model_len=kw.pop("max_model_len", 1024), **kw)


def ids(blocks):
    return [b.block_id for b in (blocks.blocks[0] if isinstance(blocks, KVCacheBlocks) else blocks)]


def free_ids(m):
    return [b.block_id for b in m.block_pool.free_block_queue.get_all_free_blocks()]


def run(m, r, n, hits=None, num_hit_tokens=0, **kw):
    """allocate_slots, then what the scheduler does: status RUNNING, computed advanced."""
    out = m.allocate_slots(r, n, num_hit_tokens, hits, **kw)
    if out is not None:
        r.status = RequestStatus.RUNNING
        r.num_computed_tokens += num_hit_tokens + n
    return out


# Letters as token ids: A..O = 0..14 (the docs' example).
A_O = list(range(15))


def test_section_6_prefix_caching_example_at_the_manager_level():
    """VLLM-V1.md section 6, "the same sequence at the KVCacheManager level" (11 blocks:
    the docs' 10 plus the null block)."""
    m = manager(11)
    r0 = req("R0", A_O)
    assert ids(run(m, r0, 15)) == [1, 2, 3, 4]
    assert m.num_cached_block["R0"] == 3                  # A-D, A-H, A-L
    r0.append_output_token_ids(100)                       # P
    assert ids(run(m, r0, 1)) == []                       # caches block 4 (A-P)
    assert m.num_cached_block["R0"] == 4
    r0.append_output_token_ids(101)                       # Q
    assert ids(run(m, r0, 1)) == [5]
    r1 = req("R1", A_O[:10] + [50, 51, 52, 53], seq_id=1)  # A..J k l m n
    hits, n_hit = m.get_computed_blocks(r1)
    assert ids(hits) == [1, 2] and n_hit == 8              # 3rd block matches 2 of 4 only
    assert ids(run(m, r1, 6, hits, n_hit)) == [6, 7]
    assert [b.ref_cnt for b in m.req_to_blocks["R0"]] == [2, 2, 1, 1, 1]
    assert m.req_to_blocks["R1"][2].block_hash is not None   # A-J,kl cached
    m.free(r0)
    assert free_ids(m) == [5, 8, 9, 10, 4, 3]
    m.free(r1)
    assert free_ids(m) == [7, 5, 8, 9, 10, 4, 3, 6, 2, 1]
    r2 = req("R2", A_O[:12] + list(range(60, 77)), seq_id=2)   # A..L + 17 digits
    hits, n_hit = m.get_computed_blocks(r2)
    assert ids(hits) == [1, 2, 3] and n_hit == 12
    assert ids(run(m, r2, 17, hits, n_hit)) == [7, 5, 8, 9, 10]
    assert free_ids(m) == [4, 6]
    assert [b.block_id for b in m.req_to_blocks["R2"]] == [1, 2, 3, 7, 5, 8, 9, 10]
    assert m.num_cached_block["R2"] == 7
    # A-P (block 4) and A-J,kl (block 6) survive: nothing was evicted.
    assert m.block_pool.blocks[4].block_hash is not None
    assert m.block_pool.blocks[6].block_hash is not None


def test_section_6_with_10_blocks_evicts_a_p():
    m = manager(10)
    r0 = req("R0", A_O)
    run(m, r0, 15)
    r0.append_output_token_ids(100)
    run(m, r0, 1)
    r0.append_output_token_ids(101)
    run(m, r0, 1)
    r1 = req("R1", A_O[:10] + [50, 51, 52, 53])
    hits, n = m.get_computed_blocks(r1)
    run(m, r1, 6, hits, n)
    assert free_ids(m) == [8, 9]
    m.free(r0)
    m.free(r1)
    assert free_ids(m) == [7, 5, 8, 9, 4, 3, 6, 2, 1]
    r2 = req("R2", A_O[:12] + list(range(60, 77)))
    hits, n = m.get_computed_blocks(r2)
    a_p = m.block_pool.blocks[4].block_hash
    assert ids(run(m, r2, 17, hits, n)) == [7, 5, 8, 9, 4]
    assert a_p not in m.block_pool.cached_block_hash_to_block or \
        m.block_pool.blocks[4].block_hash != a_p
    assert free_ids(m) == [6]
    assert [b.block_id for b in m.req_to_blocks["R2"]] == [1, 2, 3, 7, 5, 8, 9, 4]


def test_pitfall_04_a_fully_cached_prompt_recomputes_its_last_block():
    m = manager(20)
    first = req("first", list(range(8)))
    run(m, first, 8)                                        # caches 2 blocks
    eight = req("eight", list(range(8)))
    hits, n = m.get_computed_blocks(eight)
    assert ids(hits) == [1] and n == 4                       # (8 - 1) // 4 = 1 block
    assert eight.num_tokens - n == 4                         # schedules 4 tokens
    nine = req("nine", list(range(8)) + [99])
    hits, n = m.get_computed_blocks(nine)
    assert ids(hits) == [1, 2] and n == 8
    assert nine.num_tokens - n == 1
    small = req("small", list(range(4)))
    run(m, small, 4)
    again = req("again", list(range(4)))
    assert m.get_computed_blocks(again)[1] == 0             # one block: never a hit


def test_get_computed_blocks_touches_nothing_and_stops_at_the_first_miss():
    m = manager(20)
    a = req("a", list(range(12)))
    run(m, a, 12)
    m.free(a)
    before = free_ids(m)
    b = req("b", [0, 1, 2, 3, 9, 9, 9, 9] + list(range(8, 13)))
    hits, n = m.get_computed_blocks(b)
    assert ids(hits) == [1] and n == 4
    assert free_ids(m) == before and all(x.ref_cnt == 0 for x in m.block_pool.blocks[1:])


def test_pitfall_05_free_hit_blocks_count_against_capacity_and_a_failure_changes_nothing():
    # vLLM's test_prefill_not_enough_free_blocks_with_computed_blocks, on V1.md 4.2 step 6-7.
    m = manager(11)
    r0 = req("r0", list(range(16)))
    run(m, r0, 16)                                          # [1,2,3,4], all cached
    m.free(r0)                                              # queue [5..10, 4, 3, 2, 1]
    r1 = req("r1", list(range(100, 124)))
    run(m, r1, 24)                                          # takes 5..10
    assert free_ids(m) == [4, 3, 2, 1]
    r2 = req("r2", list(range(16)) + [7, 7, 7, 7])          # 20 tokens: hits 4 blocks
    hits, n = m.get_computed_blocks(r2)
    assert ids(hits) == [1, 2, 3, 4] and n == 16
    # 5 blocks needed for 20 slots: 1 new + 4 free hits to touch = 5 > 4 free.
    assert m.allocate_slots(r2, 4, n, hits) is None
    assert free_ids(m) == [4, 3, 2, 1]
    assert all(b.ref_cnt == 0 for b in hits.blocks[0])
    assert "r2" not in m.req_to_blocks and "r2" not in m.num_cached_block
    # A hit on blocks someone else holds costs nothing extra.
    r3 = req("r3", list(range(100, 124)) + [5])             # shares r1's 6 blocks
    hits, n = m.get_computed_blocks(r3)
    assert len(hits) == 6 and m.allocate_slots(r3, 1, n, hits) is not None


def test_pitfall_01_watermark_uses_the_full_block_count_null_block_included():
    m = manager(100, watermark=0.05)
    assert m.watermark_blocks == 5                 # int(0.05 * 100), not int(0.05 * 99)
    big = req("big", list(range(360)))
    run(m, big, 360)                               # 90 blocks; 9 free
    assert m.block_pool.get_num_free_blocks() == 9
    five = req("five", list(range(1000, 1020)))    # 5 blocks: 5 + 5 > 9
    assert m.allocate_slots(five, 20, has_scheduled_reqs=True) is None
    # Only while something is running, and only for WAITING / PREEMPTED requests.
    assert m.allocate_slots(five, 20, has_scheduled_reqs=False) is not None
    four = req("four", list(range(2000, 2016)))    # 4 blocks: 4 + 5 <= 9... now 4 free
    m.free(five)
    assert m.allocate_slots(four, 16, has_scheduled_reqs=True) is not None
    big.append_output_token_ids(5)
    big.status = RequestStatus.RUNNING
    assert m.allocate_slots(big, 1) is not None    # a running request ignores it


def test_full_sequence_must_fit_gates_on_the_whole_current_sequence():
    m = manager(6)                                 # 5 usable blocks of 4
    long = req("long", list(range(24)))            # 6 blocks
    assert m.allocate_slots(long, 8, full_sequence_must_fit=True) is None
    assert m.allocate_slots(long, 8) is not None   # without the gate: an 8-token chunk
    assert [b.block_id for b in m.req_to_blocks["long"]] == [1, 2]


def test_lookahead_slots_are_allocated_but_never_cached():
    m = manager(20)
    r = req("r", list(range(7)))
    out = m.allocate_slots(r, 7, num_lookahead_tokens=3)    # 10 slots: 3 blocks
    assert ids(out) == [1, 2, 3]
    assert m.num_cached_block["r"] == 1                       # only num_tokens' full block


def test_drafts_fill_slots_but_cache_stops_at_num_tokens():
    # VLLM-V1.md 5.5: 7 tokens, 6 computed, 3 drafts -> 4 scheduled, 3 blocks for 10 slots.
    m = manager(20)
    r = req("r", list(range(7)))
    run(m, r, 6)
    r.spec_token_ids = [51, 52, 53]
    assert ids(m.allocate_slots(r, 4)) == [3]
    assert len(m.req_to_blocks["r"]) == 3
    assert m.num_cached_block["r"] == 1                       # 7 tokens: 1 full block


def test_use_eagle_drops_the_last_hit_block():
    m = manager(20, use_eagle=True)
    a = req("a", list(range(13)))
    run(m, a, 13)
    b = req("b", list(range(13)))
    hits, n = m.get_computed_blocks(b)
    assert ids(hits) == [1, 2] and n == 8                     # 3 hit, the last dropped


def test_free_releases_the_table_last_block_first():
    m = manager(10)
    r = req("r", list(range(10)))
    run(m, r, 10)                                  # [1, 2, 3], 2 cached
    m.free(r)
    assert free_ids(m) == [3, 4, 5, 6, 7, 8, 9, 2, 1]
    assert "r" not in m.req_to_blocks and "r" not in m.num_cached_block


def test_prefix_cache_disabled_never_hits():
    m = manager(10, enable_caching=False)
    a = req("a", list(range(8)))
    run(m, a, 8)
    assert "a" not in m.num_cached_block or m.num_cached_block["a"] == 0
    b = req("b", list(range(8)))
    assert m.get_computed_blocks(b) == (m.empty_kv_cache_blocks, 0)
    assert m.prefix_cache_stats.queries == 0


def test_pitfall_14_stats_record_every_lookup_preempted_apart():
    m = manager(20)
    a = req("a", list(range(9)))
    m.get_computed_blocks(a)
    m.get_computed_blocks(a)                       # a retry counts again
    run(m, a, 9)
    b = req("b", list(range(9)))
    m.get_computed_blocks(b)
    s = m.prefix_cache_stats
    assert (s.requests, s.queries, s.hits) == (3, 27, 8)
    b.num_preemptions = 1
    m.get_computed_blocks(b)
    assert (s.preempted_requests, s.preempted_queries, s.preempted_hits) == (1, 9, 8)
    assert s.hit_rate == 8 / 27
    assert PrefixCacheStats().hit_rate == 0.0


def test_events_name_hits_and_allocations():
    events = []
    m = manager(10, events=events)
    a = req("a", list(range(9)), seq_id=4)
    run(m, a, 9)
    assert [e for e in events if isinstance(e, BlockAllocated)] == [
        BlockAllocated((4,), i, i + 1, "gpu", 1) for i in range(3)]
    b = req("b", list(range(9)), seq_id=5)
    hits, n = m.get_computed_blocks(b)
    run(m, b, 1, hits, n)
    assert PrefixCacheHit("b", (1, 2), 8) in events


def test_num_common_prefix_blocks_counts_blocks_every_holder_shares():
    m = manager(20)
    a = req("a", list(range(12)))
    run(m, a, 12)
    b = req("b", list(range(8)) + [50, 51, 52, 53, 54])
    hits, n = m.get_computed_blocks(b)
    run(m, b, b.num_tokens - n, hits, n)
    assert m.get_num_common_prefix_blocks("a") == [2]
    assert m.get_block_ids("b") == ([1, 2, 4, 5],)
    assert m.get_blocks("nobody").get_block_ids(allow_none=True) is None


def test_kv_cache_blocks_helpers():
    m = manager(10)
    a = req("a", list(range(6)))
    blocks = m.allocate_slots(a, 6)
    assert blocks.get_block_ids() == ([1, 2],)
    assert blocks.get_unhashed_block_ids() == [2]
    assert (blocks + blocks.new_empty()).get_block_ids() == ([1, 2],)
    assert m.empty_kv_cache_blocks.get_block_ids(allow_none=True) is None
    assert make_block_hash_with_group_id(a.block_hashes[0], 0) == m.req_to_blocks["a"][0].block_hash
