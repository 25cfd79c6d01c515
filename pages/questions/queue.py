"""A V1 free queue walked through one engine step's events, as BlockPool moves it: a new
block is popped from the head (evicting its cached hash, if it holds one), a prefix hit's
free block is taken out where it is (touch), and a freed block goes to the head when it has
no hash or to the tail when it has one (free_blocks: prepend_n for the first, append_n for
the second, so one call's unhashed blocks keep their order at the head).

The questions use it to predict which block an allocation gets or which hash is evicted
first, from the queue the earlier step shows and what this step did before (stated in
their prompts)."""
from __future__ import annotations

from sim.events import (
    BlockAllocated,
    BlockCached,
    BlockFreed,
    BlockTouched,
    GroupBlockAllocated,
)

ALLOCATED = (BlockAllocated, GroupBlockAllocated)


class Walk:
    def __init__(self, snap: dict) -> None:
        self.order = list(snap["gpu"]["free_order"])
        self.hashed = {i for i, b in enumerate(snap["gpu"]["blocks"]) if b.get("hash")}
        self.freed: list[int] = []        # blocks freed in this step so far, in order
        self.touched: list[int] = []
        self._head_run = 0                # unhashed blocks put at the head in this run
        self.evicts = False               # the last pop evicted a cached hash

    def see(self, e) -> int | None:
        """Apply one event; for an allocation, the block the rule pops (None if empty)."""
        if isinstance(e, BlockFreed):
            if e.device != "gpu":
                return None
            if e.physical in self.hashed:
                self.order.append(e.physical)
            else:
                self.order.insert(self._head_run, e.physical)
                self._head_run += 1
            self.freed.append(e.physical)
            return None
        self._head_run = 0
        if isinstance(e, BlockTouched):
            if e.physical in self.order:
                self.order.remove(e.physical)
                self.touched.append(e.physical)
        elif isinstance(e, BlockCached):
            self.hashed.add(e.physical)
        elif isinstance(e, ALLOCATED):
            if getattr(e, "device", "gpu") != "gpu" or not self.order:
                return None
            block = self.order.pop(0)
            self.evicts = block in self.hashed    # popping a hashed block evicts its hash
            self.hashed.discard(block)
            return block
        return None
