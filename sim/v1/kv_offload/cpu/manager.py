"""The CPU tier's bookkeeping (vLLM v0.25.1 `vllm/v1/kv_offload/cpu/manager.py`:
`CPUOffloadingManager`), in the scheduler.

`num_blocks` CPU blocks (slots of one pinned buffer). Offloaded blocks are found by key
(`OffloadKey`: the block hash) in the policy's table, with a `BlockStatus`: its slot and a
count of loads reading it (-1 while its store is in flight). Slots are handed out fresh
(0, 1, 2, ...) until all have been used once, then from the free list (last freed first).

- `prepare_store(keys)`: keys already offloaded are left out; if the free slots are too
  few, idle blocks are evicted (least recently used first; never one of the keys asked
  for, never one being stored or loaded); if there are not enough of those, None and
  nothing changes. The new blocks are not ready until `complete_store`.
- `prepare_load(keys)` pins ready blocks (ref_cnt += 1) until `complete_load`, which makes
  them most recently used again when their last load ends.
- `store_threshold` >= 2: a block is stored only after `lookup` asked for it that many
  times (a bounded tracker of lookup counts, `max_tracker_size`).

Additions for pictures and checks: `blocks()` (every offloaded block with its status) and
`lru_order()` (idle blocks, next to be evicted first).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterable

from sim.v1.kv_connector.offloading.metrics import OffloadingConnectorStats
from sim.v1.kv_offload.base import (
    LoadStoreSpec,
    LookupResult,
    OffloadingEvent,
    OffloadingManager,
    OffloadKey,
    PrepareStoreOutput,
    ReqContext,
    RequestOffloadingContext,
)
from sim.v1.kv_offload.cpu.common import CPULoadStoreSpec, CPUOffloadingMetrics
from sim.v1.kv_offload.cpu.policies.base import BlockStatus, CachePolicy
from sim.v1.kv_offload.cpu.policies.lru import LRUCachePolicy

_CACHE_POLICIES: dict[str, type[CachePolicy]] = {"lru": LRUCachePolicy}


class CPUOffloadingManager(OffloadingManager):
    def __init__(self, num_blocks: int, cache_policy: str = "lru",
                 enable_events: bool = False, store_threshold: int = 1,
                 max_tracker_size: int = 64_000) -> None:
        if num_blocks < 0:
            raise ValueError(f"num_blocks must not be negative, got {num_blocks}")
        self.medium: str = CPULoadStoreSpec.medium()
        self._num_blocks = num_blocks
        self._num_allocated_blocks = 0
        self._free_list: list[int] = []
        self.events: list[OffloadingEvent] | None = [] if enable_events else None
        policy_cls = _CACHE_POLICIES.get(cache_policy)
        if policy_cls is None:
            raise ValueError(f"Unknown cache policy: {cache_policy!r}. Supported: "
                             f"{list(_CACHE_POLICIES)} (vLLM's 'arc' is not simulated)")
        self._policy: CachePolicy = policy_cls(cache_capacity=num_blocks)
        # Blocks with ref_cnt 0 (evictable).
        self._num_evictable_cache_blocks = 0
        self.store_threshold = store_threshold
        self.max_tracker_size = max_tracker_size
        self.stores_skipped_in_current_batch = 0
        # Lookup counts, oldest first (only with a threshold).
        self.counts: OrderedDict[OffloadKey, int] | None = (
            OrderedDict() if store_threshold >= 2 else None)

    @property
    def num_blocks(self) -> int:
        return self._num_blocks

    # -- the slots -------------------------------------------------------------------------
    def _get_num_free_blocks(self) -> int:
        return len(self._free_list) + self._num_blocks - self._num_allocated_blocks

    def _allocate_blocks(self, keys: list[OffloadKey]) -> list[BlockStatus]:
        num_fresh = min(len(keys), self._num_blocks - self._num_allocated_blocks)
        num_reused = len(keys) - num_fresh
        assert len(self._free_list) >= num_reused
        blocks = []
        for _ in range(num_fresh):
            blocks.append(BlockStatus(self._num_allocated_blocks))
            self._num_allocated_blocks += 1
        for _ in range(num_reused):
            blocks.append(BlockStatus(self._free_list.pop()))
        return blocks

    def _free_block(self, block: BlockStatus) -> None:
        self._free_list.append(block.block_id)

    def _get_load_store_spec(self, keys: Iterable[OffloadKey],
                             blocks: Iterable[BlockStatus]) -> CPULoadStoreSpec:
        return CPULoadStoreSpec([block.block_id for block in blocks])

    # -- OffloadingManager -------------------------------------------------------------------
    def on_new_request(self, req_context: ReqContext) -> RequestOffloadingContext:
        return RequestOffloadingContext()

    def lookup(self, key: OffloadKey, req_context: ReqContext) -> LookupResult:
        if self.counts is not None:
            if key in self.counts:
                self.counts.move_to_end(key)
                self.counts[key] += 1
            else:
                if len(self.counts) >= self.max_tracker_size:
                    self.counts.popitem(last=False)
                self.counts[key] = 1
        block = self._policy.get(key)
        if block is None:
            return LookupResult.MISS
        if not block.is_ready:
            return LookupResult.HIT_PENDING
        return LookupResult.HIT

    def prepare_load(self, keys: Collection[OffloadKey],
                     req_context: ReqContext) -> LoadStoreSpec:
        blocks = []
        for key in keys:
            block = self._policy.get(key)
            assert block is not None, f"Block {key!r} not found in cache"
            assert block.is_ready, f"Block {key!r} is not ready for reading"
            if block.ref_cnt == 0:
                self._policy.mark_non_evictable(key)
                self._num_evictable_cache_blocks -= 1
                assert self._num_evictable_cache_blocks >= 0
            block.ref_cnt += 1
            blocks.append(block)
        return self._get_load_store_spec(keys, blocks)

    def touch(self, keys: Collection[OffloadKey], req_context: ReqContext) -> None:
        self._policy.touch(keys)

    def complete_load(self, keys: Collection[OffloadKey], req_context: ReqContext) -> None:
        for key in keys:
            block = self._policy.get(key)
            assert block is not None, f"Block {key!r} not found"
            assert block.ref_cnt > 0, f"Block {key!r} ref_cnt is already 0"
            block.ref_cnt -= 1
            if block.ref_cnt == 0:
                self._num_evictable_cache_blocks += 1
                self._policy.mark_evictable(key)

    def prepare_store(self, keys: Collection[OffloadKey],
                      req_context: ReqContext) -> PrepareStoreOutput | None:
        if self.counts is not None:
            num_keys = len(keys)
            keys = [k for k in keys if self.counts.get(k, 0) >= self.store_threshold]
            self.stores_skipped_in_current_batch += num_keys - len(keys)
        # Leave out blocks already offloaded (or being stored).
        keys_to_store = [k for k in keys if self._policy.get(k) is None]
        if not keys_to_store:
            return PrepareStoreOutput(keys_to_store=[],
                                      store_spec=self._get_load_store_spec([], []),
                                      evicted_keys=[])
        num_blocks_to_evict = len(keys_to_store) - self._get_num_free_blocks()
        to_evict: list[OffloadKey] = []
        if num_blocks_to_evict > 0:
            if num_blocks_to_evict > self._num_evictable_cache_blocks:
                return None      # eviction would fail
            # A block asked for that is already stored must stay.
            evicted = self._policy.evict(num_blocks_to_evict, set(keys))
            if evicted is None:
                return None
            self._num_evictable_cache_blocks -= len(evicted)
            assert self._num_evictable_cache_blocks >= 0
            for key, block in evicted:
                self._free_block(block)
                to_evict.append(key)
        if to_evict and self.events is not None:
            self.events.append(OffloadingEvent(keys=to_evict, medium=self.medium,
                                               removed=True))
        blocks = self._allocate_blocks(keys_to_store)
        assert len(blocks) == len(keys_to_store)
        for key, block in zip(keys_to_store, blocks):
            self._policy.insert(key, block)
        return PrepareStoreOutput(keys_to_store=keys_to_store,
                                  store_spec=self._get_load_store_spec(keys_to_store, blocks),
                                  evicted_keys=to_evict)

    def complete_store(self, keys: Collection[OffloadKey], req_context: ReqContext,
                       success: bool = True) -> None:
        stored_keys: list[OffloadKey] = []
        if success:
            for key in keys:
                block = self._policy.get(key)
                if block is not None and not block.is_ready:
                    block.ref_cnt = 0
                    self._num_evictable_cache_blocks += 1
                    self._policy.mark_evictable(key)
                    stored_keys.append(key)
        else:
            for key in keys:
                block = self._policy.get(key)
                if block is not None and not block.is_ready:
                    self._policy.remove(key)
                    self._free_block(block)
        if stored_keys and self.events is not None:
            self.events.append(OffloadingEvent(keys=stored_keys, medium=self.medium,
                                               removed=False))

    def reset_cache(self) -> None:
        # Everything goes: the connector discards the completions of jobs from before.
        self._policy.clear()
        self._num_evictable_cache_blocks = 0
        self._free_list.clear()
        self._num_allocated_blocks = 0

    def take_events(self) -> Iterable[OffloadingEvent]:
        if self.events is not None:
            yield from self.events
            self.events.clear()

    def get_stats(self) -> OffloadingConnectorStats:
        stats = OffloadingConnectorStats()
        # Usage: the blocks pinned by transfers (idle blocks count as free).
        num_used = (self._num_allocated_blocks - len(self._free_list)
                    - self._num_evictable_cache_blocks)
        usage = num_used / self._num_blocks if self._num_blocks > 0 else 0.0
        stats.set_gauge(CPUOffloadingMetrics.CPU_CACHE_USAGE_PERC, usage)
        if self.store_threshold >= 2:
            stats.increase_counter(CPUOffloadingMetrics.STORES_SKIPPED,
                                   self.stores_skipped_in_current_batch)
            self.stores_skipped_in_current_batch = 0
        return stats

    # -- additions: reading the state ----------------------------------------------------------
    def blocks(self) -> list[tuple[OffloadKey, BlockStatus]]:
        """Every offloaded block (being stored, ready, or being loaded), in the order they
        were stored."""
        return list(self._policy.blocks.items())

    def lru_order(self) -> list[OffloadKey]:
        """The idle blocks, the next to be evicted first."""
        return self._policy.lru_order()

    def get_num_evictable_blocks(self) -> int:
        """The count the manager keeps of idle (evictable) blocks."""
        return self._num_evictable_cache_blocks

    def get_num_free_blocks(self) -> int:
        """CPU blocks holding nothing (never used, or freed by an eviction)."""
        return self._get_num_free_blocks()
