"""SingleTypeKVCacheManager and its subclasses (sim/v1/single_type_kv_cache_manager.py),
re-expressing vLLM v0.25.1's `tests/v1/core/test_single_type_kv_cache_manager.py` test by
test (same names, steps and assertions). Skipped: `test_rswa_remove_skipped_blocks_gap_range`
(R-SWA is not modelled). Where vLLM's test draws `random.choice`, every choice is run."""
import itertools

import pytest

from sim.events import BlockFreed, BlockSkipped
from sim.v1.block_pool import BlockPool
from sim.v1.kv_cache_interface import ChunkedLocalAttentionSpec, SlidingWindowSpec
from sim.v1.kv_cache_utils import KVCacheBlock, make_block_hash_with_group_id
from sim.v1.single_type_kv_cache_manager import (
    ChunkedLocalAttentionManager,
    FullAttentionManager,
    SlidingWindowManager,
    get_manager_for_kv_cache_spec,
)


def get_sliding_window_manager(spec, block_pool, enable_caching=True, events=None):
    # Admission is not exercised: a cap that changes nothing.
    return SlidingWindowManager(spec, block_pool, enable_caching=enable_caching,
                                kv_cache_group_id=0, scheduler_block_size=spec.block_size,
                                max_admission_blocks_per_request=10**9, events=events)


def get_chunked_local_attention_manager(spec, block_pool, enable_caching=True):
    return ChunkedLocalAttentionManager(spec, block_pool, enable_caching=enable_caching,
                                        kv_cache_group_id=0,
                                        scheduler_block_size=spec.block_size,
                                        max_admission_blocks_per_request=10**9)


def sliding_spec(block_size=2, sliding_window=4):
    return SlidingWindowSpec(block_size=block_size, num_kv_heads=1, head_size=1,
                             dtype="float32", sliding_window=sliding_window)


def chunked_spec(block_size=2, attention_chunk_size=4):
    return ChunkedLocalAttentionSpec(block_size=block_size, num_kv_heads=1, head_size=1,
                                     dtype="float32", attention_chunk_size=attention_chunk_size)


def mock_cache(block_pool, block_is_cached):
    """Hashes b"0", b"1", ...; the cached ones map to pool blocks 10, 11, ..."""
    block_hash_list = [str(i).encode() for i in range(len(block_is_cached))]
    block_pool.cached_block_hash_to_block._cache.clear()
    for i, (block_hash, is_cached) in enumerate(zip(block_hash_list, block_is_cached)):
        if is_cached:
            block_pool.cached_block_hash_to_block.insert(
                make_block_hash_with_group_id(block_hash, 0), block_pool.blocks[i + 10])
    return block_hash_list


def test_chunked_local_attention_possible_cached_prefix():
    block_size = 2
    spec = chunked_spec(block_size, 4)
    block_pool = BlockPool(num_gpu_blocks=100, enable_caching=True, hash_block_size=block_size)
    manager = get_chunked_local_attention_manager(spec, block_pool)

    def run_one_case(block_is_cached, tail_token, expect_length):
        block_hash_list = mock_cache(block_pool, block_is_cached)
        computed_blocks = manager.find_longest_cache_hit(
            block_hashes=block_hash_list,
            max_length=len(block_hash_list) * block_size + tail_token,
            kv_cache_group_ids=[0], block_pool=block_pool, kv_cache_spec=spec,
            drop_eagle_block=False, alignment_tokens=block_size)[0]
        assert len(computed_blocks) == expect_length
        assert all(block == block_pool.null_block
                   for block in computed_blocks[:(expect_length - 1) // 2])

    run_one_case([True], 0, 1)
    run_one_case([True], 1, 1)
    run_one_case([True, False], 0, 2)
    run_one_case([True, False], 1, 2)
    run_one_case([True, True], 0, 2)
    run_one_case([True, True], 1, 2)
    run_one_case([True, True, False], 0, 2)
    run_one_case([True, True, False], 1, 2)
    run_one_case([True, True, True], 0, 3)
    run_one_case([True, True, True], 1, 3)
    run_one_case([True, True, True, False], 0, 4)
    run_one_case([True, True, True, False], 1, 4)
    for choice in (True, False):
        run_one_case([choice] * 8 + [True], 1, 9)
        run_one_case([choice] * 8 + [False], 1, 8)
        run_one_case([choice] * 8 + [True, True], 1, 10)
        run_one_case([choice] * 8 + [True, False], 0, 10)
        run_one_case([choice] * 8 + [True, False], 1, 10)
        run_one_case([choice] * 8 + [False, True], 0, 10)
        run_one_case([choice] * 8 + [False, True], 1, 10)
        run_one_case([choice] * 8 + [False, False], 0, 10)
        run_one_case([choice] * 8 + [False, False], 1, 10)


def test_sliding_window_possible_cached_prefix():
    block_size = 2
    spec = sliding_spec(block_size, 4)
    block_pool = BlockPool(num_gpu_blocks=100, enable_caching=True, hash_block_size=block_size)
    manager = get_sliding_window_manager(spec, block_pool)

    def run_one_case(block_is_cached, expect_length):
        block_hash_list = mock_cache(block_pool, block_is_cached)
        computed_blocks = manager.find_longest_cache_hit(
            block_hashes=block_hash_list, max_length=len(block_hash_list) * block_size,
            kv_cache_group_ids=[0], block_pool=block_pool, kv_cache_spec=spec,
            drop_eagle_block=False, alignment_tokens=block_size)[0]
        assert len(computed_blocks) == expect_length
        assert all(block == block_pool.null_block
                   for block in computed_blocks[:expect_length - 2])
        for i in range(2):
            if i < expect_length:
                block_index = expect_length - i - 1
                assert computed_blocks[block_index].block_id == block_index + 10

    run_one_case([False] * 10, 0)
    run_one_case([True], 1)
    run_one_case([True, False], 1)
    run_one_case([True, True], 2)
    run_one_case([True, True, False], 2)
    run_one_case([True, True, True], 3)
    run_one_case([True, True, True, False], 3)
    run_one_case([True, True, False, True, False, False, True, True, False, True, True, True],
                 12)
    run_one_case([True, True, False, True, False, False, True, True, False, False, False], 8)
    run_one_case([True, True, False, True, False, False, True, True, False, False, False,
                  True], 8)


def id_to_block_table(block_pool, ids):
    null_block_id = block_pool.null_block.block_id
    return [KVCacheBlock(id_) if id_ != null_block_id else block_pool.null_block for id_ in ids]


def assert_block_id(block_pool, block_table, ids):
    null_block_id = block_pool.null_block.block_id
    for block, id_ in zip(block_table, ids):
        if id_ == null_block_id:
            assert block == block_pool.null_block
        else:
            assert block.block_id == id_


ORIGINAL_BLOCK_IDS = list(range(1000, 1011))


def test_chunked_local_attention_remove_skipped_blocks():
    block_pool = BlockPool(num_gpu_blocks=2000, enable_caching=True, hash_block_size=2)
    manager = get_chunked_local_attention_manager(chunked_spec(2, 4), block_pool)
    null = block_pool.null_block.block_id
    block_table = id_to_block_table(block_pool, ORIGINAL_BLOCK_IDS)
    manager.req_to_blocks["test"] = block_table

    manager.remove_skipped_blocks("test", 0)
    assert_block_id(block_pool, block_table, ORIGINAL_BLOCK_IDS)
    # For the 4th token (0-indexed), tokens 0-3 are out of the local attention window.
    manager.remove_skipped_blocks("test", 4)
    assert_block_id(block_pool, block_table, [null] * 2)
    # For the 6th token, tokens 4-6 are in the window and 0-3 out: 2 blocks removed.
    manager.remove_skipped_blocks("test", 6)
    assert_block_id(block_pool, block_table, [null] * 2 + ORIGINAL_BLOCK_IDS[2:])
    # For the 12th token, tokens 0-11 are out: 6 blocks removed.
    manager.remove_skipped_blocks("test", 12)
    assert_block_id(block_pool, block_table, [null] * 6)


def test_sliding_window_remove_skipped_blocks():
    block_pool = BlockPool(num_gpu_blocks=2000, enable_caching=True, hash_block_size=2)
    events: list = []
    manager = get_sliding_window_manager(sliding_spec(2, 4), block_pool, events=events)
    null = block_pool.null_block.block_id
    block_table = id_to_block_table(block_pool, ORIGINAL_BLOCK_IDS)
    manager.req_to_blocks["test"] = block_table

    manager.remove_skipped_blocks("test", 0)
    assert_block_id(block_pool, block_table, ORIGINAL_BLOCK_IDS)
    # 4 tokens computed: only token 0 is out of the window; block 1000 also holds token 1,
    # which is in it, so it stays.
    manager.remove_skipped_blocks("test", 4)
    assert_block_id(block_pool, block_table, ORIGINAL_BLOCK_IDS)
    # 5 computed: tokens 0 and 1 are out; block 1000 goes.
    manager.remove_skipped_blocks("test", 5)
    assert_block_id(block_pool, block_table, [null] + ORIGINAL_BLOCK_IDS[1:])
    # 6 computed: tokens 0-2 out; block 1001 still holds token 3.
    manager.remove_skipped_blocks("test", 6)
    assert_block_id(block_pool, block_table, [null] + ORIGINAL_BLOCK_IDS[1:])
    # 7 computed: tokens 0-3 out; block 1001 goes (1000 already has).
    manager.remove_skipped_blocks("test", 7)
    assert_block_id(block_pool, block_table, [null] * 2 + ORIGINAL_BLOCK_IDS[2:])
    # 11 computed: tokens 0-7 out; 1003 and 1002 go, 1003 first (it covers a longer
    # prefix, so it should be evicted earlier).
    del events[:]
    manager.remove_skipped_blocks("test", 11)
    assert_block_id(block_pool, block_table, [null] * 4 + ORIGINAL_BLOCK_IDS[4:])
    assert [e.physical for e in events if isinstance(e, BlockSkipped)] == [1003, 1002]


def test_sliding_window_remove_skipped_blocks_frees_last_first():
    """(An addition.) With real pool blocks, the ones that left the window reach the free
    queue: unhashed at the head, in the order freed (last block first)."""
    events: list = []
    block_pool = BlockPool(num_gpu_blocks=12, enable_caching=True, hash_block_size=2,
                           events=events)
    manager = get_sliding_window_manager(sliding_spec(2, 4), block_pool, events=events)
    manager.allocate_new_blocks("r", 10)          # blocks 1..5
    assert [b.block_id for b in manager.req_to_blocks["r"]] == [1, 2, 3, 4, 5]
    manager.remove_skipped_blocks("r", 9)          # skip 6 tokens: blocks 0..2
    assert [b.block_id for b in manager.req_to_blocks["r"]] == [0, 0, 0, 4, 5]
    assert [e.physical for e in events if isinstance(e, BlockFreed)] == [3, 2, 1]
    free = [b.block_id for b in block_pool.free_block_queue.get_all_free_blocks()]
    assert free[:3] == [3, 2, 1]


def test_get_num_blocks_to_allocate():
    block_size = 2
    block_pool = BlockPool(num_gpu_blocks=100, enable_caching=True, hash_block_size=block_size)
    manager = get_sliding_window_manager(sliding_spec(block_size, 4), block_pool)
    cached_blocks_1 = [KVCacheBlock(i + 1) for i in range(10)]
    cached_blocks_2 = ([block_pool.null_block for _ in range(5)]
                       + [KVCacheBlock(i + 1) for i in range(5)])
    assert manager.get_num_blocks_to_allocate("1", 20 * block_size, cached_blocks_1, 0,
                                              20 * block_size) == 20
    assert manager.get_num_blocks_to_allocate("2", 20 * block_size, cached_blocks_2, 0,
                                              20 * block_size) == 15


def test_evictable_cached_blocks_not_double_allocated():
    block_size = 2
    block_pool = BlockPool(num_gpu_blocks=100, enable_caching=True, hash_block_size=block_size)
    manager = get_sliding_window_manager(sliding_spec(block_size, 2 * block_size), block_pool)
    request_id = "req"
    evictable_block = block_pool.blocks[1]   # ref_cnt == 0, an eviction candidate

    num_blocks_to_allocate = manager.get_num_blocks_to_allocate(
        request_id=request_id, num_tokens=2 * block_size,
        new_computed_blocks=[evictable_block], total_computed_tokens=block_size,
        num_tokens_main_model=2 * block_size)
    # The capacity check counts the evictable hit; only the new block is allocated.
    assert num_blocks_to_allocate == 2

    manager.add_local_computed_blocks(request_id, [evictable_block],
                                      num_local_computed_tokens=block_size,
                                      num_external_computed_tokens=0)
    new_blocks = manager.allocate_new_blocks(request_id, num_tokens=4, num_tokens_main_model=4)
    assert len(new_blocks) == 1
    assert len(manager.req_to_blocks[request_id]) == 2


def test_chunked_local_attention_get_num_blocks_to_allocate():
    block_size = 2
    block_pool = BlockPool(num_gpu_blocks=100, enable_caching=True, hash_block_size=block_size)
    manager = get_chunked_local_attention_manager(chunked_spec(block_size, 4), block_pool)
    cached_blocks_1 = [KVCacheBlock(i + 1) for i in range(10)]
    cached_blocks_2 = ([block_pool.null_block for _ in range(5)]
                       + [KVCacheBlock(i + 1) for i in range(5)])
    assert manager.get_num_blocks_to_allocate("1", 20 * block_size, cached_blocks_1, 0,
                                              20 * block_size) == 20
    assert manager.get_num_blocks_to_allocate("2", 20 * block_size, cached_blocks_2, 0,
                                              20 * block_size) == 15


def test_predictor_matches_allocator_blocks_calculation_with_admission_cap():
    """What get_num_blocks_to_allocate predicts, allocate_new_blocks pulls (else the pool
    would be asked for blocks the check did not count)."""
    block_size = 2
    sliding_window = 8     # a 4-block window
    cap = sliding_window // block_size
    spec = sliding_spec(block_size, sliding_window)
    block_pool = BlockPool(num_gpu_blocks=100, enable_caching=True, hash_block_size=block_size)
    manager = SlidingWindowManager(spec, block_pool, enable_caching=False, kv_cache_group_id=0,
                                   scheduler_block_size=block_size,
                                   max_admission_blocks_per_request=cap)
    request_id = "req"
    total_computed = 0
    for num_tokens in (4, 8, 12, 16):
        predicted = manager.get_num_blocks_to_allocate(
            request_id=request_id, num_tokens=num_tokens, new_computed_blocks=[],
            total_computed_tokens=total_computed, num_tokens_main_model=num_tokens)
        new_blocks = manager.allocate_new_blocks(request_id, num_tokens=num_tokens,
                                                 num_tokens_main_model=num_tokens)
        assert predicted == len(new_blocks), (
            f"num_tokens={num_tokens}: predictor returned {predicted} but allocator pulled "
            f"{len(new_blocks)}")
        total_computed = num_tokens


# -- additions: the pieces the tests above do not reach --------------------------------

def test_get_num_skipped_tokens_by_type():
    pool = BlockPool(num_gpu_blocks=4, enable_caching=True, hash_block_size=2)
    sw = get_sliding_window_manager(sliding_spec(2, 4), pool)
    assert [sw.get_num_skipped_tokens(n) for n in range(8)] == [0, 0, 0, 0, 1, 2, 3, 4]
    chunked = get_chunked_local_attention_manager(chunked_spec(2, 8), pool)
    assert [chunked.get_num_skipped_tokens(n) for n in (7, 8, 13, 16)] == [0, 8, 8, 16]


def test_admission_cap_from_the_spec():
    """get_manager_for_kv_cache_spec gives windowed groups vLLM's start-up bound:
    cdiv(min(window - 1 + max_num_batched_tokens, max_model_len), bs) + 1."""
    pool = BlockPool(num_gpu_blocks=4, enable_caching=True, hash_block_size=16)
    sw = get_manager_for_kv_cache_spec(sliding_spec(16, 64), 128, 1024, block_pool=pool,
                                       enable_caching=True, kv_cache_group_id=1)
    assert sw.max_admission_blocks_per_request == -(-(63 + 128) // 16) + 1 == 13
    chunked = get_manager_for_kv_cache_spec(chunked_spec(16, 64), 128, 1024, block_pool=pool,
                                            enable_caching=True, kv_cache_group_id=2)
    assert chunked.max_admission_blocks_per_request == (64 + 128) // 16 == 12
    # The cap applies only at admission.
    assert sw.get_num_blocks_to_allocate("r", 1024, [], 0, 1024) == 64
    assert sw.get_num_blocks_to_allocate("r", 1024, [], 0, 1024,
                                         apply_admission_cap=True) == 13


@pytest.mark.parametrize("window,eagle,expect", [(1, False, [False] * 4), (2, False, None),
                                                 (1, True, None)])
def test_sliding_window_reachable_block_mask(window, eagle, expect):
    """With one block of alignment a hit needs cdiv(window - 1, bs) blocks; a one-token
    window needs none, and then no block is ever worth caching."""
    assert SlidingWindowManager.reachable_block_mask(0, 4, 2, sliding_spec(2, window),
                                                     eagle) == expect


def test_full_attention_common_prefix_and_windows_none():
    pool = BlockPool(num_gpu_blocks=10, enable_caching=True, hash_block_size=2)
    full = FullAttentionManager(sliding_spec(2, 4), pool, enable_caching=True,
                                kv_cache_group_id=0)
    a = full.allocate_new_blocks("a", 4)
    full.req_to_blocks["b"] = [a[0]]
    pool.touch([a[0]])
    assert full.get_num_common_prefix_blocks("a") == 1
    sw = get_sliding_window_manager(sliding_spec(2, 4), pool)
    sw.allocate_new_blocks("a", 4)
    assert sw.get_num_common_prefix_blocks("a") == 0


@pytest.mark.parametrize("pattern", list(itertools.product([True, False], repeat=5)))
def test_sliding_window_hit_against_brute_force(pattern):
    """Every cached pattern of 5 blocks, window 5 tokens (3 blocks of 2 needed): the hit is
    the longest prefix whose last cdiv(4, 2) = 2 blocks are cached, or a cached run from
    block 0 (nothing before it to need)."""
    block_size = 2
    pool = BlockPool(num_gpu_blocks=100, enable_caching=True, hash_block_size=block_size)
    spec = sliding_spec(block_size, 5)
    hashes = mock_cache(pool, list(pattern))
    got = SlidingWindowManager.find_longest_cache_hit(hashes, 5 * block_size, [0], pool, spec,
                                                      False, block_size)[0]
    want = 0
    for n in range(5, 0, -1):
        tail = pattern[max(0, n - 2):n]
        if all(tail) and (n >= 2 or all(pattern[:n])):
            want = n
            break
    assert len(got) == want
    assert all(b.is_null for b in got[:max(0, want - 2)])
