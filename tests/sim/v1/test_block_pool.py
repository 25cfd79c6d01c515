"""BlockPool (sim/v1/block_pool.py): the null block, allocation, touch, free order, lazy
eviction, duplicates, reset; examples worked out from vLLM v0.25.1's
`vllm/v1/core/block_pool.py` and its tests (`test_evict`, `test_maybe_evict_cached_block`)."""
import pytest

from sim.core.sequence import SamplingParams
from sim.events import BlockCached, BlockEvicted, BlockFreed, BlockTouched
from sim.v1.block_pool import BlockPool
from sim.v1.kv_cache_utils import get_request_block_hasher, make_block_hash_with_group_id, sha256
from sim.v1.request import Request


def free_ids(pool):
    return [b.block_id for b in pool.free_block_queue.get_all_free_blocks()]


def ids(blocks):
    return [b.block_id for b in blocks]


def request(tokens, block_size=4, rid="r"):
    return Request(rid, tokens, SamplingParams(max_tokens=4), eos_token_id=2,
                   block_hasher=get_request_block_hasher(block_size, sha256),
                   block_size=block_size)


def test_pitfall_01_block_0_is_the_null_block_and_usable_blocks_are_n_minus_1():
    pool = BlockPool(11, enable_caching=True, hash_block_size=4)
    assert pool.null_block.block_id == 0 and pool.null_block.is_null
    assert pool.get_num_free_blocks() == 10
    assert free_ids(pool) == list(range(1, 11))
    assert ids(pool.get_new_blocks(1)) == [1]          # the first allocation gets block 1
    assert pool.get_usage() == pytest.approx(1 / 10)   # null block left out of the count


def test_get_new_blocks_takes_the_head_and_refuses_too_many():
    pool = BlockPool(6, enable_caching=True, hash_block_size=4)
    got = pool.get_new_blocks(3)
    assert ids(got) == [1, 2, 3] and all(b.ref_cnt == 1 for b in got)
    with pytest.raises(ValueError, match="Cannot get 3 free blocks"):
        pool.get_new_blocks(3)
    assert free_ids(pool) == [4, 5]


def test_usage_counts_cached_free_blocks_as_free():
    pool = BlockPool(5, enable_caching=True, hash_block_size=4)
    assert pool.get_usage() == 0.0
    blocks = pool.get_new_blocks(4)
    assert pool.get_usage() == 1.0
    pool.cache_full_blocks(request(list(range(16))), blocks, 0, 4, 4)
    pool.free_blocks(reversed(blocks))
    assert pool.get_usage() == 0.0
    assert BlockPool(1, True, 4).get_usage() == 0


def test_touch_takes_free_blocks_out_of_the_queue_and_counts_references():
    events = []
    pool = BlockPool(6, enable_caching=True, hash_block_size=4, events=events)
    a, b = pool.get_new_blocks(2)
    pool.free_blocks([b])              # b: ref 0, unhashed -> head
    assert free_ids(pool) == [2, 3, 4, 5]
    pool.touch([a, b])
    assert (a.ref_cnt, b.ref_cnt) == (2, 1)
    assert free_ids(pool) == [3, 4, 5]
    assert events[-2:] == [BlockTouched(1, 2), BlockTouched(2, 1)]


def test_pitfall_02_free_order_unhashed_to_head_hashed_to_tail_reversed():
    # vLLM's test_evict: N = 11, req0 holds [1..6] (6 partial), req1 holds [7, 8, 9].
    pool = BlockPool(11, enable_caching=True, hash_block_size=4)
    r0 = request(list(range(100, 122)), rid="r0")             # 22 tokens: 5 full blocks
    t0 = pool.get_new_blocks(6)
    pool.cache_full_blocks(r0, t0, 0, 5, 4)
    r1 = request(list(range(200, 212)), rid="r1")             # 12 tokens: 3 full blocks
    t1 = pool.get_new_blocks(3)
    pool.cache_full_blocks(r1, t1, 0, 3, 4)
    assert free_ids(pool) == [10]
    pool.free_blocks(reversed(t0))
    assert free_ids(pool) == [6, 10, 5, 4, 3, 2, 1]
    pool.free_blocks(reversed(t1))
    assert free_ids(pool) == [6, 10, 5, 4, 3, 2, 1, 9, 8, 7]


def test_pitfall_03_caching_off_every_freed_block_goes_to_the_head():
    pool = BlockPool(8, enable_caching=False, hash_block_size=4)
    a = pool.get_new_blocks(3)        # 1 2 3
    b = pool.get_new_blocks(2)        # 4 5
    pool.free_blocks(reversed(a))
    pool.free_blocks(reversed(b))
    assert free_ids(pool) == [5, 4, 3, 2, 1, 6, 7]
    assert ids(pool.get_new_blocks(3)) == [5, 4, 3]   # block ids come back tail-first


def test_cache_full_blocks_keys_blocks_by_the_request_hashes():
    events = []
    pool = BlockPool(8, enable_caching=True, hash_block_size=4, events=events)
    req = request(list(range(10)))                    # 2 full blocks
    blocks = pool.get_new_blocks(3)
    pool.cache_full_blocks(req, blocks, 0, 2, 4)
    for i in range(2):
        key = make_block_hash_with_group_id(req.block_hashes[i], 0)
        assert blocks[i].block_hash == key
        assert pool.get_cached_block(req.block_hashes[i]) == [blocks[i]]
        assert blocks[i].block_hash_num_tokens == 4 * (i + 1)
    assert blocks[2].block_hash is None
    assert [type(e) for e in events] == [BlockCached, BlockCached]
    assert events[0] == BlockCached(1, req.block_hashes[0][:4].hex(), "r", 0)
    pool.cache_full_blocks(req, blocks, 2, 2, 4)        # nothing new
    assert len(events) == 2
    assert pool.get_cached_block(b"\x00" * 32) is None


def test_pitfall_07_eviction_is_lazy_a_freed_block_keeps_its_hash_until_reused():
    events = []
    pool = BlockPool(4, enable_caching=True, hash_block_size=4, events=events)
    req = request(list(range(8)))
    blocks = pool.get_new_blocks(2)                     # 1 2
    pool.cache_full_blocks(req, blocks, 0, 2, 4)
    pool.free_blocks(reversed(blocks))                  # queue [3, 2, 1]
    assert free_ids(pool) == [3, 2, 1]
    # Still findable: a hit would revive it.
    assert pool.get_cached_block(req.block_hashes[0]) == [blocks[0]]
    assert blocks[1].block_hash is not None
    got = pool.get_new_blocks(2)                        # 3 (never hashed), then 2: evicted
    assert ids(got) == [3, 2]
    assert blocks[1].block_hash is None
    assert pool.get_cached_block(req.block_hashes[1]) is None
    assert pool.get_cached_block(req.block_hashes[0]) == [blocks[0]]
    assert [e for e in events if isinstance(e, BlockEvicted)] == [
        BlockEvicted(2, req.block_hashes[1][:4].hex())]
    assert pool.num_evicted_blocks == 1


def test_duplicate_hashes_keep_both_blocks_first_inserted_wins():
    # vLLM's test_maybe_evict_cached_block: two identical blocks under one key.
    pool = BlockPool(5, enable_caching=True, hash_block_size=4)
    r1, r2 = request(list(range(4)), rid="a"), request(list(range(4)), rid="b")
    b1 = pool.get_new_blocks(1)
    b2 = pool.get_new_blocks(1)
    pool.cache_full_blocks(r1, b1, 0, 1, 4)
    pool.cache_full_blocks(r2, b2, 0, 1, 4)
    key = b1[0].block_hash
    assert key == b2[0].block_hash
    assert pool.get_cached_block(r1.block_hashes[0]) == b1      # the earliest inserted
    assert sorted(b.block_id for _, b in pool.cached_block_hash_to_block.items()) == [1, 2]
    assert pool._maybe_evict_cached_block(b1[0])
    assert pool.get_cached_block(r1.block_hashes[0]) == b2      # the other one stays
    assert pool._maybe_evict_cached_block(b2[0])
    assert pool.get_cached_block(r1.block_hashes[0]) is None
    assert not pool._maybe_evict_cached_block(b2[0])
    assert len(pool.cached_block_hash_to_block) == 0


def test_free_blocks_emits_freed_blocks_and_skips_shared_ones():
    events = []
    pool = BlockPool(5, enable_caching=True, hash_block_size=4, events=events)
    a, b = pool.get_new_blocks(2)
    pool.touch([a])                                  # a shared by two holders
    pool.free_blocks([b, a])
    assert (a.ref_cnt, b.ref_cnt) == (1, 0)
    assert events[-1] == BlockFreed("gpu", 2)
    assert free_ids(pool) == [2, 3, 4]


def test_null_block_never_enters_the_free_queue():
    pool = BlockPool(4, enable_caching=True, hash_block_size=4)
    null = pool.null_block
    pool.touch([null])
    pool.free_blocks([null])
    assert free_ids(pool) == [1, 2, 3]


def test_reset_prefix_cache_needs_every_block_free_and_keeps_the_queue_order():
    pool = BlockPool(5, enable_caching=True, hash_block_size=4)
    req = request(list(range(8)))
    blocks = pool.get_new_blocks(2)
    pool.cache_full_blocks(req, blocks, 0, 2, 4)
    assert not pool.reset_prefix_cache()            # blocks in use
    pool.free_blocks(reversed(blocks))
    order = free_ids(pool)
    assert pool.reset_prefix_cache()
    assert free_ids(pool) == order
    assert all(b.block_hash is None for b in pool.blocks)
    assert pool.get_cached_block(req.block_hashes[0]) is None


def test_evict_blocks_by_id():
    pool = BlockPool(4, enable_caching=True, hash_block_size=4)
    req = request(list(range(4)))
    blocks = pool.get_new_blocks(1)
    pool.cache_full_blocks(req, blocks, 0, 1, 4)
    pool.evict_blocks({blocks[0].block_id})
    assert blocks[0].block_hash is None and blocks[0].ref_cnt == 1


def test_cache_blocks_multi_group():
    """vLLM's test_cache_blocks_multi_group (tests/v1/core/test_prefix_caching.py): the
    same tokens cached in two KV cache groups are two keys; a lookup over several groups
    hits only when every group has the block."""
    from sim.v1.kv_cache_utils import KVCacheBlock
    block_size = 4
    pool = BlockPool(10, enable_caching=True, hash_block_size=block_size)
    req = request(list(range(14)), block_size, rid="0")
    blocks = [KVCacheBlock(block_id=i) for i in range(2)]
    pool.cache_full_blocks(req, blocks, 0, 2, block_size, kv_cache_group_id=0)
    assert len(pool.cached_block_hash_to_block) == 2
    assert len(req.block_hashes) == 3
    assert all(block.block_hash is not None for block in blocks)
    blocks = [KVCacheBlock(block_id=i) for i in range(3)]
    pool.cache_full_blocks(req, blocks, 0, 3, block_size, kv_cache_group_id=1)
    assert len(pool.cached_block_hash_to_block) == 5
    assert all(block.block_hash is not None for block in blocks)
    h = req.block_hashes
    assert pool.get_cached_block(h[0], [0]) is not None
    assert pool.get_cached_block(h[1], [0]) is not None
    assert pool.get_cached_block(h[2], [0]) is None
    assert pool.get_cached_block(h[0], [1]) is not None
    assert pool.get_cached_block(h[1], [1]) is not None
    assert pool.get_cached_block(h[2], [1]) is not None
    assert pool.get_cached_block(h[0], [0, 1]) is not None
    assert pool.get_cached_block(h[1], [0, 1]) is not None
    assert pool.get_cached_block(h[2], [0, 1]) is None


def test_cache_full_blocks_skips_null_and_masked_blocks():
    from sim.v1.kv_cache_utils import KVCacheBlock
    pool = BlockPool(10, enable_caching=True, hash_block_size=4)
    req = request(list(range(12)), 4)
    blocks = [pool.null_block, KVCacheBlock(1), KVCacheBlock(2)]
    pool.cache_full_blocks(req, blocks, 0, 3, 4, 0, block_mask=[True, False, True])
    assert pool.null_block.block_hash is None
    assert blocks[1].block_hash is None
    assert blocks[2].block_hash == make_block_hash_with_group_id(req.block_hashes[2], 0)
