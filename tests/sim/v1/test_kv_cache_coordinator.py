"""The coordinators (sim/v1/kv_cache_coordinator.py) through KVCacheManager, re-expressing
the hybrid and sliding-window tests of vLLM v0.25.1's `tests/v1/core/test_prefix_caching.py`
(same names, steps and assertions), then the design doc's examples
(`docs/design/hybrid_kv_cache_manager.md`).

Skipped, with the reason: the Mamba tests (`test_prefill_hybrid_model_mamba_align`,
`test_hybrid_cache_mamba_align_shared_prefix_detection`,
`test_hybrid_model_mamba_align_with_dynamic_draft_tokens`, `test_mamba_reachable_block_mask_*`
and the "mamba" cases of `test_prefill_hybrid_model_combinations`): Mamba is not modelled;
the tests whose groups have different block sizes (`test_different_block_size`,
`test_hybrid_cache_blocks_swa_tail_window_only`, `test_hybrid_cache_blocks_clamped_to_lcm`,
`test_eagle_swa_alignment_caches_extra_block`,
`test_eagle_swa_boundary_caches_post_boundary_block`,
`test_eagle_grouped_swa_siblings_use_same_cache_mask`,
`test_swa_free_split_keeps_cached_tail_ahead_of_scratch`): the simulation's groups share one
block size; the retention-interval tests (`test_hybrid_local_kv_retention_*`,
`test_pure_swa_retention_*`): `VLLM_PREFIX_CACHE_RETENTION_INTERVAL` is not modelled; the
KV-event tests (`test_block_stored_event_group_idx*`, `test_block_removed_event_group_idx`):
connector events are not modelled.
"""
import pytest

from sim.core.sequence import SamplingParams
from sim.events import BlockFreed, BlockSkipped, GroupBlockAllocated, PrefixCacheHit
from sim.v1.block_pool import BlockPool
from sim.v1.kv_cache_coordinator import (
    HybridKVCacheCoordinator,
    KVCacheCoordinatorNoPrefixCache,
    UnitaryKVCacheCoordinator,
)
from sim.v1.kv_cache_interface import (
    FullAttentionSpec,
    KVCacheConfig,
    KVCacheGroupSpec,
    SlidingWindowSpec,
)
from sim.v1.kv_cache_manager import KVCacheBlocks, KVCacheManager
from sim.v1.kv_cache_utils import (
    KVCacheBlock,
    attention_layer_specs,
    get_block_hash,
    get_group_id,
    get_request_block_hasher,
    hash_block_tokens,
    make_block_hash_with_group_id,
    make_kv_cache_config,
    sha256,
)
from sim.v1.request import Request


def make_request(request_id, prompt_token_ids, block_size, hash_fn=sha256):
    return Request(request_id, prompt_token_ids, SamplingParams(max_tokens=17),
                   eos_token_id=100, block_hasher=get_request_block_hasher(block_size, hash_fn),
                   block_size=block_size)


def make_kv_cache_manager(kv_cache_config, max_model_len=8192, enable_caching=True,
                          use_eagle=False, max_num_batched_tokens=None, **kw):
    bs = kv_cache_config.kv_cache_groups[0].kv_cache_spec.block_size
    return KVCacheManager(bs, kv_cache_config.num_blocks, max_model_len,
                          enable_caching=enable_caching, use_eagle=use_eagle,
                          kv_cache_config=kv_cache_config,
                          max_num_batched_tokens=max_num_batched_tokens, **kw)


def full_spec(block_size):
    return FullAttentionSpec(block_size=block_size, num_kv_heads=1, head_size=1,
                             dtype="float32")


def sw_spec(block_size, window):
    return SlidingWindowSpec(block_size=block_size, num_kv_heads=1, head_size=1,
                             dtype="float32", sliding_window=window)


def make_kv_cache_config_hybrid_model(block_size, num_blocks, sliding_window_blocks):
    second = sw_spec(block_size, sliding_window_blocks * block_size)
    return KVCacheConfig(num_blocks=num_blocks, kv_cache_groups=[
        KVCacheGroupSpec(["layer1"], full_spec(block_size)),
        KVCacheGroupSpec(["layer2"], second),
        KVCacheGroupSpec(["layer3"], second)])


def _make_hybrid_kv_cache_config(block_size, num_blocks, spec_types):
    spec_map = {
        "full": lambda: full_spec(block_size),
        "sliding_window": lambda: sw_spec(block_size, 2 * block_size),
        "sliding_window_large": lambda: sw_spec(block_size, 4 * block_size),
    }
    return KVCacheConfig(num_blocks=num_blocks, kv_cache_groups=[
        KVCacheGroupSpec([f"layer{i}"], spec_map[t]()) for i, t in enumerate(spec_types)])


def _test_partial_request_hit(manager, block_size, num_full_blocks, request_id,
                              prompt_token_ids, hash_to_evict, expect_hit_length):
    cache = manager.block_pool.cached_block_hash_to_block._cache
    backup = dict(cache)
    req = make_request(request_id, prompt_token_ids, block_size)
    for key in hash_to_evict:
        cache.pop(key)
    computed_blocks, num_computed_tokens = manager.get_computed_blocks(req)
    assert len(req.block_hashes) == num_full_blocks
    assert num_computed_tokens == expect_hit_length * block_size
    for block_per_group in computed_blocks.blocks:
        assert len(block_per_group) == num_computed_tokens // block_size
    for key in hash_to_evict:
        cache[key] = backup[key]
    manager.free(req)


def test_prefill_hybrid_model():
    block_size = 16
    manager = make_kv_cache_manager(make_kv_cache_config_hybrid_model(block_size, 21, 2))
    assert isinstance(manager.coordinator, HybridKVCacheCoordinator)
    num_full_blocks = 3
    common_token_ids = [i for i in range(num_full_blocks) for _ in range(block_size)]

    # Fully cache miss; an incomplete 4th block (7 tokens).
    all_token_ids = common_token_ids + [3] * 7
    req0 = make_request("0", all_token_ids, block_size)
    computed_blocks, num_computed_tokens = manager.get_computed_blocks(req0)
    assert len(req0.block_hashes) == 3
    assert not computed_blocks.blocks[0]
    assert num_computed_tokens == 0
    blocks = manager.allocate_slots(req0, 55, len(computed_blocks.blocks[0]) * 16,
                                    computed_blocks)
    assert blocks is not None and blocks.get_block_ids() == (
        [1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12])

    # Full block metadata: each group's block carries the hash with its group id.
    parent_block_hash = None
    for length, block_ids in zip((1, 2, 3), ((1, 5, 9), (2, 6, 10), (3, 7, 11))):
        block_tokens = tuple(all_token_ids[(length - 1) * 16:length * 16])
        block_hash = hash_block_tokens(sha256, parent_block_hash, block_tokens)
        for group_id, block_id in enumerate(block_ids):
            blk_hash = manager.block_pool.blocks[block_id].block_hash
            assert blk_hash is not None
            assert get_block_hash(blk_hash) == block_hash
            assert get_group_id(blk_hash) == group_id
            assert manager.block_pool.blocks[block_id].ref_cnt == 1
        parent_block_hash = block_hash
    # Partial block metadata.
    for block_id in (4, 8, 12):
        assert manager.block_pool.blocks[block_id].block_hash is None
        assert manager.block_pool.blocks[block_id].ref_cnt == 1

    # A hit in the common prefix (an incomplete block of 5 tokens after it): the sliding
    # window groups need only the last 2 blocks, the first is the null block.
    all_token_ids = common_token_ids + [3] * 5
    req1 = make_request("1", all_token_ids, block_size)
    computed_blocks, num_computed_tokens = manager.get_computed_blocks(req1)
    assert len(req1.block_hashes) == 3
    assert computed_blocks.get_block_ids() == ([1, 2, 3], [0, 6, 7], [0, 10, 11])
    assert num_computed_tokens == 3 * 16
    blocks = manager.allocate_slots(req1, 53 - 3 * 16, len(computed_blocks.blocks[0]) * 16,
                                    computed_blocks)
    assert blocks is not None and blocks.get_block_ids() == ([13], [14], [15])
    for block_per_group in computed_blocks.blocks:
        for block in block_per_group:
            if block != manager.block_pool.null_block:
                assert block.ref_cnt == 2

    block_hashes = req1.block_hashes
    manager.free(req0)
    manager.free(req1)

    def key(i, group):
        return make_block_hash_with_group_id(block_hashes[i], group)

    # Evicting the blocks outside the sliding window does not change the hit length.
    _test_partial_request_hit(manager, block_size, num_full_blocks, "2", all_token_ids,
                              [key(0, 1), key(0, 2)], 3)
    # Evicting the first full-attention block makes it a total miss.
    _test_partial_request_hit(manager, block_size, num_full_blocks, "3", all_token_ids,
                              [key(0, 0)], 0)
    # Evicting the last block of every group cuts the hit to 2 blocks.
    _test_partial_request_hit(manager, block_size, num_full_blocks, "4", all_token_ids,
                              [key(2, 0), key(2, 1), key(2, 2)], 2)
    # The last full-attention block alone: 2.
    _test_partial_request_hit(manager, block_size, num_full_blocks, "5", all_token_ids,
                              [key(2, 0)], 2)
    # The last block of one sliding-window group: 2.
    _test_partial_request_hit(manager, block_size, num_full_blocks, "6", all_token_ids,
                              [key(2, 1)], 2)
    _test_partial_request_hit(manager, block_size, num_full_blocks, "7", all_token_ids,
                              [key(2, 2)], 2)
    # Different blocks per type: full attention hits 1 block, the sliding window 2 blocks
    # but not ending at 1 block: no length both accept -- a miss.
    _test_partial_request_hit(manager, block_size, num_full_blocks, "8", all_token_ids,
                              [key(2, 0), key(0, 1), key(0, 2)], 0)


def test_prefill_hybrid_model_eagle():
    block_size = 16
    manager = make_kv_cache_manager(make_kv_cache_config_hybrid_model(block_size, 31, 3),
                                    use_eagle=True)
    num_full_blocks = 6
    common_token_ids = [i for i in range(num_full_blocks) for _ in range(block_size)]
    all_token_ids = common_token_ids + [6] * 7
    req0 = make_request("0", all_token_ids, block_size)
    computed_blocks, num_computed_tokens = manager.get_computed_blocks(req0)
    assert len(req0.block_hashes) == len(all_token_ids) // block_size
    assert not computed_blocks.blocks[0]
    assert num_computed_tokens == 0
    blocks = manager.allocate_slots(req0, len(all_token_ids), num_computed_tokens,
                                    computed_blocks)
    block_ids = ([1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13, 14],
                 [15, 16, 17, 18, 19, 20, 21])
    assert blocks is not None and blocks.get_block_ids() == block_ids

    parent_block_hash = None
    for i, full_block_ids in enumerate(zip(*(row[:-1] for row in block_ids))):
        block_tokens = tuple(all_token_ids[i * block_size:(i + 1) * block_size])
        block_hash = hash_block_tokens(sha256, parent_block_hash, block_tokens)
        for group_id, block_id in enumerate(full_block_ids):
            blk_hash = manager.block_pool.blocks[block_id].block_hash
            assert blk_hash is not None
            assert get_block_hash(blk_hash) == block_hash
            assert get_group_id(blk_hash) == group_id
            assert manager.block_pool.blocks[block_id].ref_cnt == 1
        parent_block_hash = block_hash
    for partial_block_id in (row[-1] for row in block_ids):
        assert manager.block_pool.blocks[partial_block_id].block_hash is None
        assert manager.block_pool.blocks[partial_block_id].ref_cnt == 1

    all_token_ids = common_token_ids + [6] * 5
    req1 = make_request("1", all_token_ids, block_size)
    computed_blocks, num_computed_tokens = manager.get_computed_blocks(req1)
    assert len(req1.block_hashes) == num_full_blocks
    assert computed_blocks.get_block_ids() == ([1, 2, 3, 4, 5], [0, 0, 10, 11, 12],
                                               [0, 0, 17, 18, 19])
    assert num_computed_tokens == 5 * block_size
    blocks = manager.allocate_slots(req1, len(all_token_ids) - num_computed_tokens,
                                    num_computed_tokens, computed_blocks)
    assert blocks is not None and blocks.get_block_ids() == ([22, 23], [24, 25], [26, 27])
    for block_per_group in computed_blocks.blocks:
        for block in block_per_group:
            if block != manager.block_pool.null_block:
                assert block.ref_cnt == 2

    block_hashes = req1.block_hashes
    manager.free(req0)
    manager.free(req1)

    def key(i, group):
        return make_block_hash_with_group_id(block_hashes[i], group)

    _test_partial_request_hit(manager, block_size, num_full_blocks, "2", all_token_ids,
                              [key(0, 1), key(0, 2)], 5)
    _test_partial_request_hit(manager, block_size, num_full_blocks, "3", all_token_ids,
                              [key(0, 0)], 0)
    _test_partial_request_hit(manager, block_size, num_full_blocks, "4", all_token_ids,
                              [key(-1, 0), key(-1, 1), key(-1, 2)], 4)
    _test_partial_request_hit(manager, block_size, num_full_blocks, "5", all_token_ids,
                              [key(-1, 0)], 4)
    # The last full-attention block is dropped for EAGLE: losing the second-to-last
    # sliding-window block cuts the hit to 3.
    _test_partial_request_hit(manager, block_size, num_full_blocks, "6", all_token_ids,
                              [key(-2, 1)], 3)
    _test_partial_request_hit(manager, block_size, num_full_blocks, "7", all_token_ids,
                              [key(-2, 2)], 3)
    # Full attention loses its last block (4 after the EAGLE drop); the sliding window
    # lost block 0, outside the window of that hit: both agree on 4.
    _test_partial_request_hit(manager, block_size, num_full_blocks, "8", all_token_ids,
                              [key(-1, 0), key(0, 1), key(0, 2)], 4)


HYBRID_MODEL_TEST_CASES = [
    pytest.param(["full", "sliding_window"], id="2g-full+sw"),
    pytest.param(["sliding_window", "sliding_window_large"], id="2g-sw+sw_large"),
    pytest.param(["full", "sliding_window", "sliding_window"], id="3g-full+2sw"),
    pytest.param(["full", "sliding_window", "sliding_window_large"], id="3g-full+sw+sw_large"),
    pytest.param(["full", "full", "sliding_window"], id="3g-2full+sw"),
    pytest.param(["full", "sliding_window", "full", "sliding_window_large"],
                 id="4g-interleaved-full+sw+sw_large"),
]


@pytest.mark.parametrize("spec_types", HYBRID_MODEL_TEST_CASES)
def test_prefill_hybrid_model_combinations(spec_types):
    """vLLM's cases without Mamba (the "4g-interleaved-full+sw_mixed" case is the same
    specs as "4g-interleaved-full+sw+sw_large" there too)."""
    block_size = 16
    num_groups = len(spec_types)
    manager = make_kv_cache_manager(
        _make_hybrid_kv_cache_config(block_size, 10 * num_groups, spec_types))
    common_token_ids = [i for i in range(3) for _ in range(block_size)]
    all_token_ids = common_token_ids + [3] * 7
    req0 = make_request("0", all_token_ids, block_size)
    computed_blocks, num_computed_tokens = manager.get_computed_blocks(req0)
    assert len(req0.block_hashes) == 3
    assert not computed_blocks.blocks[0]
    assert num_computed_tokens == 0
    blocks = manager.allocate_slots(req0, 55, len(computed_blocks.blocks[0]) * block_size,
                                    computed_blocks)
    assert blocks is not None
    assert len(blocks.get_block_ids()) == num_groups
    manager.new_step_starts()

    req1 = make_request("1", common_token_ids + [4] * 5, block_size)
    computed_blocks, num_computed_tokens = manager.get_computed_blocks(req1)
    assert num_computed_tokens == 3 * block_size
    assert len(computed_blocks.blocks) == num_groups
    blocks = manager.allocate_slots(req1, len(common_token_ids) + 5 - num_computed_tokens,
                                    num_computed_tokens, computed_blocks)
    assert blocks is not None
    assert len(blocks.get_block_ids()) == num_groups
    manager.free(req0)
    manager.free(req1)


def test_prefill_hybrid_model_combinations_eagle():
    block_size = 16
    spec_types, expect_hit_length = ["full", "sliding_window"], 3
    num_groups = len(spec_types)
    manager = make_kv_cache_manager(
        _make_hybrid_kv_cache_config(block_size, 10 * num_groups, spec_types), use_eagle=True)
    num_full_blocks = 4
    common_token_ids = [i for i in range(num_full_blocks) for _ in range(block_size)]
    all_token_ids = common_token_ids + [4] * 7
    req0 = make_request("0", all_token_ids, block_size)
    computed_blocks, num_computed_tokens = manager.get_computed_blocks(req0)
    assert len(req0.block_hashes) == num_full_blocks
    assert not computed_blocks.blocks[0]
    assert num_computed_tokens == 0
    blocks = manager.allocate_slots(req0, len(all_token_ids), num_computed_tokens,
                                    computed_blocks)
    assert blocks is not None
    assert len(blocks.get_block_ids()) == num_groups

    all_token_ids = common_token_ids + [6] * 5
    req1 = make_request("1", all_token_ids, block_size)
    computed_blocks, num_computed_tokens = manager.get_computed_blocks(req1)
    assert num_computed_tokens == expect_hit_length * block_size
    assert len(computed_blocks.blocks) == num_groups
    for block_per_group in computed_blocks.blocks:
        assert len(block_per_group) == expect_hit_length
    blocks = manager.allocate_slots(req1, len(all_token_ids) - num_computed_tokens,
                                    num_computed_tokens, computed_blocks)
    assert blocks is not None
    assert len(blocks.get_block_ids()) == num_groups
    manager.free(req0)
    manager.free(req1)


def test_eagle_with_sliding_window():
    block_size = 16
    config = KVCacheConfig(num_blocks=10, kv_cache_groups=[
        KVCacheGroupSpec(["layer"], sw_spec(block_size, block_size))])
    manager = make_kv_cache_manager(config, use_eagle=True)
    assert isinstance(manager.coordinator, UnitaryKVCacheCoordinator)
    token_ids = [0] * (2 * block_size + 5)
    req = make_request("partial_block_test", token_ids, block_size)
    computed_blocks, _ = manager.get_computed_blocks(req)
    manager.allocate_slots(req, len(token_ids), len(computed_blocks.blocks[0]) * 16,
                           computed_blocks)
    block_hash_first_block = req.block_hashes[0]
    assert block_hash_first_block is not None
    manager.free(req)

    # Original match: 2 full blocks; EAGLE drops 1.
    req_eagle = make_request("partial_eagle", token_ids, block_size)
    computed_blocks, num_tokens = manager.get_computed_blocks(req_eagle)
    assert len(computed_blocks.blocks[0]) == 1
    assert num_tokens == 1 * block_size

    assert manager.block_pool.get_cached_block(block_hash_first_block, [0]) is not None
    manager.block_pool.cached_block_hash_to_block._cache.pop(
        make_block_hash_with_group_id(block_hash_first_block, 0))
    # The only hit would be [NULL, BLOCK_2]; EAGLE drops its last block: no hit left.
    req_after_evict = make_request("partial_eagle_after_evict", token_ids, block_size)
    computed_blocks, num_tokens = manager.get_computed_blocks(req_after_evict)
    assert len(computed_blocks.blocks[0]) == 0
    assert num_tokens == 0


def _full_swa_config(num_blocks, block_size, sliding_window):
    return KVCacheConfig(num_blocks=num_blocks, kv_cache_groups=[
        KVCacheGroupSpec(["layer_full"], full_spec(block_size)),
        KVCacheGroupSpec(["layer_swa"], sw_spec(block_size, sliding_window))])


def test_can_fit_full_sequence_swa_cap_admits_long_prompt():
    """A pool sized at vLLM's start-up minimum admits a prompt longer than the sliding
    window's cap: the window's blocks are recycled during chunked prefill."""
    block_size = 16
    sliding_window = 4 * block_size
    max_num_batched_tokens = 8 * block_size
    max_model_len = 64 * block_size
    # Full attention: cdiv(1024, 16) = 64 blocks; the window: cdiv(63 + 128, 16) + 1 = 13;
    # + the null block.
    num_blocks = 64 + 13 + 1
    manager = make_kv_cache_manager(_full_swa_config(num_blocks, block_size, sliding_window),
                                    max_model_len=max_model_len,
                                    max_num_batched_tokens=max_num_batched_tokens)
    # 32 blocks: 32 (full) + 32 (window) = 64 without the cap, 32 + 13 = 45 with it.
    req = make_request("long", list(range(32 * block_size)), block_size)
    assert manager.allocate_slots(req, block_size, full_sequence_must_fit=True) is not None


def test_can_fit_full_sequence_full_attention_still_gates_oversized():
    block_size = 16
    manager = make_kv_cache_manager(_full_swa_config(5, block_size, 4 * block_size),
                                    max_model_len=64 * block_size,
                                    max_num_batched_tokens=8 * block_size)
    req = make_request("oversized", list(range(16 * block_size)), block_size)
    assert manager.allocate_slots(req, block_size, full_sequence_must_fit=True) is None


def _take_free_blocks(manager, num_blocks):
    """The first blocks of the free queue, left in it (ref_cnt 0: evictable hits)."""
    blocks = []
    head = manager.block_pool.free_block_queue.fake_free_list_head
    for _ in range(num_blocks):
        head = head.next_free_block
        blocks.append(head)
    return blocks


def _assert_no_double_allocation(manager, req_id):
    block_ids = manager.get_blocks(req_id).get_block_ids()
    flat = [block_id for group in block_ids for block_id in group]
    assert len(set(flat)) == len(flat), "Block IDs are not unique across groups"
    null_id = manager.block_pool.null_block.block_id
    for block_id in flat:
        if block_id != null_id:
            assert manager.block_pool.blocks[block_id].ref_cnt >= 1


def _make_two_phase_manager(num_groups):
    config = make_kv_cache_config_hybrid_model(16, 31, 100)
    del config.kv_cache_groups[num_groups:]
    return make_kv_cache_manager(config, use_eagle=True)


def _cross_group_cache_hit(manager, req_id, num_groups, local_blocks_per_group=5,
                           num_external_blocks=2, num_new_blocks=1):
    block_size = 16
    hit_blocks = _take_free_blocks(manager, num_groups * local_blocks_per_group)
    cache_hit = KVCacheBlocks(tuple(
        hit_blocks[i * local_blocks_per_group:(i + 1) * local_blocks_per_group]
        for i in range(num_groups)))
    prompt_blocks = local_blocks_per_group + num_external_blocks + num_new_blocks
    request = make_request(req_id, [0] * (prompt_blocks * block_size), block_size)
    manager.allocate_slots(request, num_new_blocks * block_size,
                           local_blocks_per_group * block_size, cache_hit, 0,
                           num_external_blocks * block_size)
    return request


def test_cache_hit_local_and_external():
    """vLLM issue #33775: one group's blocks for connector tokens must not evict another
    group's not-yet-touched hits (the same block would be handed out twice)."""
    manager = _make_two_phase_manager(2)
    top_blocks = _take_free_blocks(manager, 10)
    cache_hit = KVCacheBlocks((top_blocks[:5], top_blocks[5:]))
    manager.allocate_slots(make_request("test", [0] * (8 * 16), 16), 16, 5 * 16, cache_hit,
                           0, 2 * 16)
    req_block_ids = manager.get_blocks("test").get_block_ids()
    all_block_ids = req_block_ids[0] + req_block_ids[1]
    assert len(set(all_block_ids)) == len(all_block_ids), "Block IDs are not unique"


def test_cache_hit_local_and_external_three_groups():
    manager = _make_two_phase_manager(3)
    _cross_group_cache_hit(manager, "test", 3)
    _assert_no_double_allocation(manager, "test")


@pytest.mark.parametrize("num_groups", [3, 2])
def test_cache_hit_local_and_external_three_groups_preempt_and_reallocate(num_groups):
    """With num_groups=2 this is vLLM's
    test_cache_hit_local_and_external_two_groups_preempt_and_reallocate."""
    manager = _make_two_phase_manager(num_groups)
    request = _cross_group_cache_hit(manager, "test", num_groups)
    _assert_no_double_allocation(manager, "test")
    manager.free(request)
    assert manager.get_blocks("test").get_block_ids() == ([],) * num_groups
    _cross_group_cache_hit(manager, "test", num_groups)
    _assert_no_double_allocation(manager, "test")
    assert manager.get_blocks("test").get_block_ids() != ([],) * num_groups


# -- the design doc's examples ---------------------------------------------------------

def test_design_doc_case_2_allocation():
    """docs/design/hybrid_kv_cache_manager.md, case 2: 10 full + 20 sliding-window layers
    (window 32), block size 16, a 112-token request: 7 blocks for full attention and 2 for
    each sliding-window group once the window has moved (blocks 0-6, 7-8, 9-10 in the doc,
    which starts at 0; the null block makes them 1-7, then 8-9 and 10-11 after the
    window's earlier blocks are returned)."""
    layer_types = ["full_attention"] * 10 + ["sliding_attention"] * 20
    config = make_kv_cache_config(40, attention_layer_specs(layer_types, 16, sliding_window=32))
    assert [len(g.layer_names) for g in config.kv_cache_groups] == [10, 10, 10]
    manager = make_kv_cache_manager(config)
    req = make_request("r", list(range(112)), 16)
    blocks = manager.allocate_slots(req, 112)
    # The whole prompt is computed in one step: every group needs every slot then.
    assert [len(group) for group in blocks.get_block_ids()] == [7, 7, 7]
    req.num_computed_tokens = 112
    req.append_output_token_ids(500)
    # The next token (position 112) attends to 81..112: blocks 5 and 6 in the window.
    manager.allocate_slots(req, 1)
    tables = manager.get_block_ids("r")
    assert [sum(1 for b in t if b != 0) for t in tables] == [8, 3, 3]   # + block 7 each
    assert [sum(1 for b in t[:7] if b != 0) for t in tables] == [7, 2, 2]


def test_design_doc_sliding_window_hit_right_to_left():
    """"Prefix caching, case 1": window 4, block size 1, a 15-token prompt: a hit needs
    only the last 3 tokens (window - 1) cached, so with tokens 2..5 and 11..13 cached the
    longest hit is 14 tokens (compute [11, 12, 13] -> [14])."""
    pool = BlockPool(num_gpu_blocks=40, enable_caching=True, hash_block_size=1)
    spec = sw_spec(1, 4)
    cached = [i in (2, 3, 4, 5, 11, 12, 13) for i in range(14)]
    hashes = [str(i).encode() for i in range(14)]
    for i, hit in enumerate(cached):
        if hit:
            pool.cached_block_hash_to_block.insert(
                make_block_hash_with_group_id(hashes[i], 0), pool.blocks[i + 20])
    from sim.v1.single_type_kv_cache_manager import SlidingWindowManager
    hit = SlidingWindowManager.find_longest_cache_hit(hashes, 14, [0], pool, spec, False, 1)[0]
    assert len(hit) == 14
    assert [b.block_id for b in hit[11:]] == [31, 32, 33]
    assert all(b.is_null for b in hit[:11])
    # Without 11..13 the longest hit is 6 (compute [3, 4, 5] -> [6, ...]).
    for i in (11, 12, 13):
        pool.cached_block_hash_to_block._cache.pop(make_block_hash_with_group_id(hashes[i], 0))
    hit = SlidingWindowManager.find_longest_cache_hit(hashes, 14, [0], pool, spec, False, 1)[0]
    assert len(hit) == 6


def test_design_doc_full_and_sliding_intersection():
    """"Prefix caching, case 2": the full-attention hit bounds the sliding window's search,
    which runs right to left from there; the result is a hit for both."""
    bs = 4
    manager = make_kv_cache_manager(_full_swa_config(40, bs, 2 * bs))
    tokens = list(range(6 * bs))
    a = make_request("a", tokens, bs)
    manager.allocate_slots(a, len(tokens))
    manager.free(a)
    # Full attention keeps blocks 0..3 only; the window (needs 2 blocks) has 0..5.
    for i in (4, 5):
        manager.block_pool.cached_block_hash_to_block._cache.pop(
            make_block_hash_with_group_id(a.block_hashes[i], 0))
    b = make_request("b", tokens + [99], bs)
    hits, n = manager.get_computed_blocks(b)
    assert n == 4 * bs
    assert [len(g) for g in hits.blocks] == [4, 4]
    assert hits.blocks[1][0].is_null and hits.blocks[1][1].is_null


def test_no_prefix_cache_coordinator_any_groups():
    config = make_kv_cache_config_hybrid_model(4, 20, 2)
    manager = make_kv_cache_manager(config, enable_caching=False)
    assert isinstance(manager.coordinator, KVCacheCoordinatorNoPrefixCache)
    r = make_request("r", list(range(12)), 4)
    assert manager.get_computed_blocks(r) == (manager.empty_kv_cache_blocks, 0)
    blocks = manager.allocate_slots(r, 12)
    assert blocks.get_block_ids() == ([1, 2, 3], [4, 5, 6], [7, 8, 9])
    assert manager.get_num_common_prefix_blocks("r") == [0, 0, 0]
    assert all(manager.block_pool.blocks[i].block_hash is None for i in range(1, 10))


def test_window_blocks_return_and_events():
    """The general path's events: per group allocations, blocks that left the window
    (then freed: unhashed ones at the head of the free queue, reused first)."""
    events: list = []
    config = _full_swa_config(20, 4, 4)
    manager = make_kv_cache_manager(config, events=events)
    r = make_request("r", list(range(16)), 4)
    manager.allocate_slots(r, 8)
    r.num_computed_tokens = 8
    assert [(e.kv_cache_group_id, e.logical, e.physical) for e in events
            if isinstance(e, GroupBlockAllocated)] == [(0, 0, 1), (0, 1, 2), (1, 0, 3),
                                                       (1, 1, 4)]
    del events[:]
    manager.allocate_slots(r, 8)
    # 8 computed, window 4: tokens 0..4 are skipped -> block 0 of the window group goes.
    skipped = [(e.kv_cache_group_id, e.logical, e.physical) for e in events
               if isinstance(e, BlockSkipped)]
    assert skipped == [(1, 0, 3)]
    freed_at = [i for i, e in enumerate(events) if isinstance(e, BlockFreed)]
    allocated_at = [i for i, e in enumerate(events) if isinstance(e, GroupBlockAllocated)]
    assert freed_at[0] < allocated_at[0]       # returned before the new blocks are taken
    # Block 3 was hashed (full), so it went to the tail and keeps its hash; the new blocks
    # come from the head.
    assert manager.get_block_ids("r") == ([1, 2, 5, 6], [0, 4, 7, 8])
    free = [blk.block_id for blk in manager.block_pool.free_block_queue.get_all_free_blocks()]
    assert free[-1] == 3 and manager.block_pool.blocks[3].block_hash is not None
    # The same 16 tokens: full attention hits 3 blocks (the last token is recomputed); the
    # window needs cdiv(4 - 1, 4) = 1 cached block ending there.
    b = make_request("b", list(range(16)), 4)
    hits, n = manager.get_computed_blocks(b)
    assert n == 12
    assert hits.get_block_ids() == ([1, 2, 5], [0, 0, 7])
    assert [e for e in events if isinstance(e, PrefixCacheHit)] == []
    del events[:]
    manager.allocate_slots(b, 4, n, hits)
    assert [e for e in events if isinstance(e, PrefixCacheHit)] == [
        PrefixCacheHit("b", (1, 2, 5, 7), 12)]


def test_group_blocks_are_distinct_physical_blocks():
    """Every group draws from the one pool: a request's tables share no block, and the
    pool's free count drops by the sum."""
    manager = make_kv_cache_manager(make_kv_cache_config_hybrid_model(4, 30, 2))
    free0 = manager.block_pool.get_num_free_blocks()
    r = make_request("r", list(range(10)), 4)
    manager.allocate_slots(r, 10)
    ids = [i for t in manager.get_block_ids("r") for i in t]
    assert len(ids) == 9 == len(set(ids))
    assert manager.block_pool.get_num_free_blocks() == free0 - 9
    assert isinstance(manager.block_pool.blocks[ids[0]], KVCacheBlock)


def test_external_tokens_get_their_own_blocks_and_events():
    """A KV connector's tokens (num_external_computed_tokens) get blocks right after the
    hits, before the new tokens' blocks (vLLM's allocate_external_computed_blocks); the
    returned KVCacheBlocks hold only the new tokens' blocks, as vLLM's do."""
    from sim.events import BlockAllocated
    events: list = []
    one = KVCacheManager(4, 20, 1024, events=events)
    r = make_request("r", list(range(16)), 4)
    blocks = one.allocate_slots(r, 4, 0, None, 0, num_external_computed_tokens=8)
    assert blocks.get_block_ids() == ([3],)
    assert one.get_block_ids("r") == ([1, 2, 3],)
    assert [(e.logical, e.physical) for e in events if isinstance(e, BlockAllocated)] == [
        (0, 1), (1, 2), (2, 3)]
    events.clear()
    hybrid = make_kv_cache_manager(_full_swa_config(20, 4, 4), events=events)
    blocks = hybrid.allocate_slots(make_request("h", list(range(16)), 4), 4, 0, None, 0,
                                   num_external_computed_tokens=8)
    # The window (4 tokens) skips tokens 0..4 of the 8 external ones: block 0 is null.
    assert hybrid.get_block_ids("h") == ([1, 2, 4], [0, 3, 5])
    assert blocks.get_block_ids() == ([4], [5])
    assert [(e.kv_cache_group_id, e.logical, e.physical) for e in events
            if isinstance(e, GroupBlockAllocated)] == [(0, 0, 1), (0, 1, 2), (1, 1, 3),
                                                       (0, 2, 4), (1, 2, 5)]
