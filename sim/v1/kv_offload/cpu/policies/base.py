"""vLLM v0.25.1 `vllm/v1/kv_offload/cpu/policies/base.py`: a CPU block's status and the
policy interface."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

from sim.v1.kv_offload.base import OffloadKey


class BlockStatus:
    """One offloaded block: `block_id` is its slot in the CPU buffer; `ref_cnt` counts the
    loads reading it, and is -1 while its store is in flight (not ready to read). vLLM's is
    a ctypes structure; a slotted class here."""

    __slots__ = ("ref_cnt", "block_id")

    def __init__(self, block_id: int) -> None:
        self.ref_cnt = -1          # not ready until complete_store
        self.block_id = block_id

    @property
    def is_ready(self) -> bool:
        return self.ref_cnt >= 0

    def __repr__(self) -> str:
        return f"BlockStatus(block_id={self.block_id}, ref_cnt={self.ref_cnt})"


class CachePolicy(ABC):
    """How blocks are organised and which one is evicted."""

    @abstractmethod
    def __init__(self, cache_capacity: int) -> None: ...

    @abstractmethod
    def get(self, key: OffloadKey) -> BlockStatus | None:
        """The block, or None."""

    @abstractmethod
    def insert(self, key: OffloadKey, block: BlockStatus) -> None:
        """Add a newly allocated block."""

    @abstractmethod
    def remove(self, key: OffloadKey) -> None:
        """Drop a block (after a failed store)."""

    @abstractmethod
    def touch(self, keys: Iterable[OffloadKey]) -> None:
        """Mark blocks recently used."""

    @abstractmethod
    def evict(self, n: int, protected: set[OffloadKey]
              ) -> list[tuple[OffloadKey, BlockStatus]] | None:
        """Evict exactly n idle blocks, none of `protected`; None (and no change) when n
        cannot be found."""

    @abstractmethod
    def clear(self) -> None:
        """Drop every block."""

    def mark_evictable(self, key: OffloadKey) -> None:
        """Its ref_cnt went to 0."""
        return

    def mark_non_evictable(self, key: OffloadKey) -> None:
        """Its ref_cnt left 0."""
        return
