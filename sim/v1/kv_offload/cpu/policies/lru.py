"""vLLM v0.25.1 `vllm/v1/kv_offload/cpu/policies/lru.py`: least recently used.

Idle blocks (ref_cnt 0) sit in `evictable_blocks` from least to most recently used; the
head is evicted first. A block becomes most recently used when its store completes, when
its last load completes (`mark_evictable` puts it back at the tail) and when it is touched.
Blocks being stored or loaded are not in the list at all, so they cannot be evicted."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from sim.v1.kv_offload.base import OffloadKey
from sim.v1.kv_offload.cpu.policies.base import BlockStatus, CachePolicy


class LRUCachePolicy(CachePolicy):
    def __init__(self, cache_capacity: int) -> None:
        self.evictable_blocks: OrderedDict[OffloadKey, None] = OrderedDict()
        self.blocks: dict[OffloadKey, BlockStatus] = {}

    def get(self, key: OffloadKey) -> BlockStatus | None:
        return self.blocks.get(key)

    def insert(self, key: OffloadKey, block: BlockStatus) -> None:
        self.blocks[key] = block
        if block.ref_cnt == 0:
            self.evictable_blocks[key] = None

    def remove(self, key: OffloadKey) -> None:
        del self.blocks[key]
        self.evictable_blocks.pop(key, None)

    def touch(self, keys: Iterable[OffloadKey]) -> None:
        # Reversed, so the first key ends up most recently used: a request's first blocks
        # (shared by more requests) outlive its last ones.
        for key in reversed(list(keys)):
            if key in self.evictable_blocks:
                self.evictable_blocks.move_to_end(key)
            # Blocks in use are not evictable now; they reach the tail when released.

    def clear(self) -> None:
        self.evictable_blocks.clear()
        self.blocks.clear()

    def evict(self, n: int, protected: set[OffloadKey]
              ) -> list[tuple[OffloadKey, BlockStatus]] | None:
        if n == 0:
            return []
        candidates: list[tuple[OffloadKey, BlockStatus]] = []
        for key in self.evictable_blocks:
            if key in protected:
                continue
            block = self.blocks[key]
            assert block.ref_cnt == 0
            candidates.append((key, block))
            if len(candidates) == n:
                break
        if len(candidates) < n:
            return None
        for key, _ in candidates:
            del self.evictable_blocks[key]
            del self.blocks[key]
        return candidates

    def mark_evictable(self, key: OffloadKey) -> None:
        # A store completed (ref_cnt -1 -> 0) or the last load did (1 -> 0).
        self.evictable_blocks[key] = None

    def mark_non_evictable(self, key: OffloadKey) -> None:
        del self.evictable_blocks[key]

    def lru_order(self) -> list[OffloadKey]:
        """The idle blocks, next to be evicted first (an addition, for pictures)."""
        return list(self.evictable_blocks)
