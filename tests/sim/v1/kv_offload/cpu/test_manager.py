"""vLLM v0.25.1's `tests/v1/kv_offload/cpu/test_manager.py`, on the simulation's
`CPUOffloadingManager` (sim/v1/kv_offload/cpu/manager.py): the same calls, the same
expected keys, CPU block ids, evictions, lookups and events. vLLM's ARC cases
(`TestARCPolicy`, the "arc" parametrisation) are left out: only the LRU policy is
simulated, and asking for ARC is an error (tested below)."""
from dataclasses import dataclass

import pytest

from sim.v1.kv_offload.base import (
    LookupResult,
    OffloadingEvent,
    OffloadKey,
    PrepareStoreOutput,
    ReqContext,
    make_offload_key,
)
from sim.v1.kv_offload.cpu.common import CPULoadStoreSpec, CPUOffloadingMetrics
from sim.v1.kv_offload.cpu.manager import CPUOffloadingManager

_EMPTY_REQ_CTX = ReqContext(req_id="")


def make_cpu_manager(num_blocks: int = 4, cache_policy: str = "lru",
                     enable_events: bool = False, store_threshold: int = 0,
                     max_tracker_size: int = 64_000) -> CPUOffloadingManager:
    return CPUOffloadingManager(num_blocks=num_blocks, cache_policy=cache_policy,
                                enable_events=enable_events, store_threshold=store_threshold,
                                max_tracker_size=max_tracker_size)


@dataclass
class ExpectedPrepareStoreOutput:
    keys_to_store: list[int]
    store_block_ids: list[int]
    evicted_keys: list[int]


def to_key(int_hash: int) -> OffloadKey:
    return make_offload_key(str(int_hash).encode(), 0)


def to_keys(int_hashes: list[int]) -> list[OffloadKey]:
    return [to_key(i) for i in int_hashes]


def verify_store_output(out: PrepareStoreOutput | None,
                        expected: ExpectedPrepareStoreOutput) -> None:
    assert out is not None
    assert out.keys_to_store == to_keys(expected.keys_to_store)
    assert out.evicted_keys == to_keys(expected.evicted_keys)
    assert isinstance(out.store_spec, CPULoadStoreSpec)
    assert out.store_spec.block_ids == expected.store_block_ids


def verify_load_output(spec, expected: list[int]) -> None:
    assert isinstance(spec, CPULoadStoreSpec)
    assert spec.block_ids == expected


def verify_events(events, expected_stores: tuple[set[int], ...] = (),
                  expected_evictions: tuple[set[int], ...] = ()) -> None:
    stores, evictions = [], []
    for event in events:
        assert isinstance(event, OffloadingEvent)
        assert event.medium == CPULoadStoreSpec.medium()
        (evictions if event.removed else stores).append(set(event.keys))
    assert tuple(evictions) == tuple(set(to_keys(list(s))) for s in expected_evictions)
    assert tuple(stores) == tuple(set(to_keys(list(s))) for s in expected_stores)


def test_already_stored_block_not_evicted_during_prepare_store():
    manager = make_cpu_manager(num_blocks=4, enable_events=True)
    manager.prepare_store(to_keys([1, 2]), _EMPTY_REQ_CTX)
    manager.complete_store(to_keys([1, 2]), _EMPTY_REQ_CTX)
    # touch [1]: block 2 is now the LRU candidate
    manager.touch(to_keys([1]), _EMPTY_REQ_CTX)
    # 2 is already stored: filtered out, and must not be evicted for [3, 4, 5]
    verify_store_output(manager.prepare_store(to_keys([2, 3, 4, 5]), _EMPTY_REQ_CTX),
                        ExpectedPrepareStoreOutput([3, 4, 5], [2, 3, 0], [1]))
    manager.complete_store(to_keys([2, 3, 4, 5]), _EMPTY_REQ_CTX)
    assert manager.lookup(to_key(2), _EMPTY_REQ_CTX) is LookupResult.HIT


def test_filter_reused_manager_reports_stores_skipped_counter():
    manager = make_cpu_manager(num_blocks=4, store_threshold=2)
    verify_store_output(manager.prepare_store(to_keys([1, 2, 3]), _EMPTY_REQ_CTX),
                        ExpectedPrepareStoreOutput([], [], []))
    assert manager.get_stats().reduce()[CPUOffloadingMetrics.STORES_SKIPPED] == 3
    assert manager.get_stats().reduce()[CPUOffloadingMetrics.STORES_SKIPPED] == 0


def test_cpu_manager_reports_cache_usage_gauge():
    def check_usage_stats(manager, value):
        stats = manager.get_stats()
        assert stats.reduce()[CPUOffloadingMetrics.CPU_CACHE_USAGE_PERC] == \
            pytest.approx(value)

    check_usage_stats(make_cpu_manager(num_blocks=0), 0.0)
    manager = make_cpu_manager(num_blocks=4)
    check_usage_stats(manager, 0.0)
    manager.prepare_store(to_keys([1, 2]), _EMPTY_REQ_CTX)
    check_usage_stats(manager, 0.5)
    manager.prepare_store(to_keys([3, 4]), _EMPTY_REQ_CTX)
    check_usage_stats(manager, 1.0)
    # Completed stores are idle (evictable): no longer counted.
    manager.complete_store(to_keys([1, 2]), _EMPTY_REQ_CTX)
    check_usage_stats(manager, 0.5)
    manager.complete_store(to_keys([3, 4]), _EMPTY_REQ_CTX)
    check_usage_stats(manager, 0.0)


def test_cpu_manager():
    cpu_manager = make_cpu_manager(num_blocks=4, enable_events=True)

    verify_store_output(cpu_manager.prepare_store(to_keys([1, 2]), _EMPTY_REQ_CTX),
                        ExpectedPrepareStoreOutput([1, 2], [0, 1], []))
    # the write is in flight: found, not readable
    assert cpu_manager.lookup(to_key(1), _EMPTY_REQ_CTX) is LookupResult.HIT_PENDING
    assert cpu_manager.lookup(to_key(2), _EMPTY_REQ_CTX) is LookupResult.HIT_PENDING
    assert list(cpu_manager.take_events()) == []

    cpu_manager.complete_store(to_keys([1, 2]), _EMPTY_REQ_CTX)
    verify_events(cpu_manager.take_events(), expected_stores=({1, 2},))
    assert cpu_manager.lookup(to_key(1), _EMPTY_REQ_CTX) is LookupResult.HIT
    assert cpu_manager.lookup(to_key(2), _EMPTY_REQ_CTX) is LookupResult.HIT
    assert cpu_manager.lookup(to_key(3), _EMPTY_REQ_CTX) is LookupResult.MISS

    # prepare store [2, 3, 4, 5] -> evicts [1]
    verify_store_output(cpu_manager.prepare_store(to_keys([2, 3, 4, 5]), _EMPTY_REQ_CTX),
                        ExpectedPrepareStoreOutput([3, 4, 5], [2, 3, 0], [1]))
    verify_events(cpu_manager.take_events(), expected_evictions=({1},))
    # no space: 3, 4, 5 are being stored, 2 is asked for
    assert cpu_manager.prepare_store(to_keys([1, 6]), _EMPTY_REQ_CTX) is None

    cpu_manager.complete_store(to_keys([2, 3, 4, 5]), _EMPTY_REQ_CTX)
    assert cpu_manager.lookup(to_key(1), _EMPTY_REQ_CTX) is LookupResult.MISS
    for k in (2, 3, 4, 5):
        assert cpu_manager.lookup(to_key(k), _EMPTY_REQ_CTX) is LookupResult.HIT
    assert cpu_manager.lookup(to_key(0), _EMPTY_REQ_CTX) is LookupResult.MISS

    verify_load_output(cpu_manager.prepare_load(to_keys([2, 3]), _EMPTY_REQ_CTX), [1, 2])
    # no space: [2, 3] are being loaded
    assert cpu_manager.prepare_store(to_keys([6, 7, 8]), _EMPTY_REQ_CTX) is None
    # The load's completion makes 2 and 3 the most recently used.
    cpu_manager.complete_load(to_keys([2, 3]), _EMPTY_REQ_CTX)
    # prepare store [6, 7, 8] -> evicts [4, 5, 2] (oldest)
    verify_store_output(cpu_manager.prepare_store(to_keys([6, 7, 8]), _EMPTY_REQ_CTX),
                        ExpectedPrepareStoreOutput([6, 7, 8], [1, 0, 3], [4, 5, 2]))
    cpu_manager.complete_store(to_keys([6, 7, 8]), _EMPTY_REQ_CTX)
    # touch [3, 6, 7]: 8 becomes the oldest
    cpu_manager.touch(to_keys([3, 6, 7]), _EMPTY_REQ_CTX)
    verify_store_output(cpu_manager.prepare_store(to_keys([9]), _EMPTY_REQ_CTX),
                        ExpectedPrepareStoreOutput([9], [3], [8]))
    # a failed store of [7, 9]: 7 was stored before and stays, 9 is dropped
    cpu_manager.complete_store(to_keys([7, 9]), _EMPTY_REQ_CTX, success=False)
    assert cpu_manager.lookup(to_key(7), _EMPTY_REQ_CTX) is LookupResult.HIT
    assert cpu_manager.lookup(to_key(9), _EMPTY_REQ_CTX) is LookupResult.MISS
    verify_events(cpu_manager.take_events(), expected_stores=({3, 4, 5}, {6, 7, 8}),
                  expected_evictions=({4, 5, 2}, {8}))


def test_prepare_load_preserves_key_order():
    manager = make_cpu_manager(num_blocks=4)
    key_a, key_b, key_c = to_key(0), to_key(1), to_key(2)
    store_output = manager.prepare_store([key_a, key_b, key_c], _EMPTY_REQ_CTX)
    key_to_block_id = dict(zip(store_output.keys_to_store, store_output.store_spec.block_ids))
    manager.complete_store([key_a, key_b, key_c], _EMPTY_REQ_CTX)
    spec_fwd = manager.prepare_load([key_a, key_b, key_c], _EMPTY_REQ_CTX)
    assert spec_fwd.block_ids == [key_to_block_id[k] for k in (key_a, key_b, key_c)]
    manager.complete_load([key_a, key_b, key_c], _EMPTY_REQ_CTX)
    spec_perm = manager.prepare_load([key_b, key_c, key_a], _EMPTY_REQ_CTX)
    assert spec_perm.block_ids == [key_to_block_id[k] for k in (key_b, key_c, key_a)]
    manager.complete_load([key_a, key_b, key_c], _EMPTY_REQ_CTX)


def test_filter_reused_manager():
    manager = make_cpu_manager(num_blocks=4, enable_events=True, store_threshold=2,
                               max_tracker_size=3)
    # first lookups: tracked, not eligible yet
    assert manager.lookup(to_key(1), _EMPTY_REQ_CTX) is LookupResult.MISS
    assert manager.lookup(to_key(2), _EMPTY_REQ_CTX) is LookupResult.MISS
    assert manager.prepare_store(to_keys([1, 2]), _EMPTY_REQ_CTX).keys_to_store == []
    # second lookup of 1: eligible
    assert manager.lookup(to_key(1), _EMPTY_REQ_CTX) is LookupResult.MISS
    assert manager.prepare_store(to_keys([1, 2]), _EMPTY_REQ_CTX).keys_to_store == \
        to_keys([1])
    # 3 and 4 push 2 out of the 3-entry tracker
    assert manager.lookup(to_key(3), _EMPTY_REQ_CTX) is LookupResult.MISS
    assert manager.lookup(to_key(4), _EMPTY_REQ_CTX) is LookupResult.MISS
    assert to_key(2) not in manager.counts
    # 2 comes back with a count of 1
    assert manager.lookup(to_key(2), _EMPTY_REQ_CTX) is LookupResult.MISS
    assert manager.counts.get(to_key(2)) == 1
    assert manager.prepare_store(to_keys([2]), _EMPTY_REQ_CTX).keys_to_store == []
    manager.complete_store(to_keys([1]), _EMPTY_REQ_CTX)


def test_evictable_cache_block_count():
    manager = make_cpu_manager(num_blocks=4)
    assert manager._num_evictable_cache_blocks == 0
    manager.prepare_store(to_keys([1, 2, 3]), _EMPTY_REQ_CTX)
    assert manager._num_evictable_cache_blocks == 0
    manager.complete_store(to_keys([1, 2, 3]), _EMPTY_REQ_CTX)
    assert manager._num_evictable_cache_blocks == 3
    # a load pins a block once, even for two concurrent loads
    manager.prepare_load(to_keys([1]), _EMPTY_REQ_CTX)
    assert manager._num_evictable_cache_blocks == 2
    manager.prepare_load(to_keys([1]), _EMPTY_REQ_CTX)
    assert manager._num_evictable_cache_blocks == 2
    manager.complete_load(to_keys([1]), _EMPTY_REQ_CTX)
    assert manager._num_evictable_cache_blocks == 2
    manager.complete_load(to_keys([1]), _EMPTY_REQ_CTX)
    assert manager._num_evictable_cache_blocks == 3
    # 3 new keys, 1 free slot: 2 evictions
    manager.prepare_store(to_keys([4, 5, 6]), _EMPTY_REQ_CTX)
    assert manager._num_evictable_cache_blocks == 1
    # a failed store leaves the idle count alone
    manager.complete_store(to_keys([4, 5, 6]), _EMPTY_REQ_CTX, success=False)
    assert manager._num_evictable_cache_blocks == 1
    manager.reset_cache()
    assert manager._num_evictable_cache_blocks == 0
    manager.prepare_store(to_keys([10, 11, 12]), _EMPTY_REQ_CTX)
    manager.complete_store(to_keys([10, 11, 12]), _EMPTY_REQ_CTX)
    manager.prepare_load(to_keys([10, 11, 12]), _EMPTY_REQ_CTX)
    assert manager._num_evictable_cache_blocks == 0

    # With nothing evictable, prepare_store returns None without asking the policy.
    evict_called = False
    original_evict = manager._policy.evict

    def spy_evict(*args, **kwargs):
        nonlocal evict_called
        evict_called = True
        return original_evict(*args, **kwargs)

    manager._policy.evict = spy_evict
    assert manager.prepare_store(to_keys([14, 15]), _EMPTY_REQ_CTX) is None
    assert not evict_called
    manager.complete_load(to_keys([10, 11, 12]), _EMPTY_REQ_CTX)
    assert manager._num_evictable_cache_blocks == 3
    assert manager.prepare_store(to_keys([14, 15]), _EMPTY_REQ_CTX) is not None
    assert manager._num_evictable_cache_blocks == 2
    manager.complete_store(to_keys([14, 15]), _EMPTY_REQ_CTX)
    assert manager._num_evictable_cache_blocks == 4


# -- the simulation's additions ----------------------------------------------------------------

def test_arc_is_not_simulated():
    with pytest.raises(ValueError, match="arc"):
        make_cpu_manager(cache_policy="arc")


def test_blocks_and_lru_order_for_pictures():
    manager = make_cpu_manager(num_blocks=3)
    manager.prepare_store(to_keys([1, 2, 3]), _EMPTY_REQ_CTX)
    assert manager.lru_order() == []          # being stored: not evictable
    assert [b.ref_cnt for _, b in manager.blocks()] == [-1, -1, -1]
    manager.complete_store(to_keys([1, 2, 3]), _EMPTY_REQ_CTX)
    manager.touch(to_keys([1]), _EMPTY_REQ_CTX)
    assert manager.lru_order() == to_keys([2, 3, 1])
    assert manager.get_num_free_blocks() == 0
    assert [(k, b.block_id) for k, b in manager.blocks()] == list(zip(to_keys([1, 2, 3]),
                                                                     [0, 1, 2]))
