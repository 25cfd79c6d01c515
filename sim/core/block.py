"""Physical KV blocks and one allocator per device (vLLM v0.5.5 `vllm/block.py`,
`UncachedBlockAllocator` in `vllm/core/block_manager_v1.py`).

A physical block is a fixed number of token slots in GPU (or CPU) memory. Blocks are
handed out from a free list that is a *stack*: at start-up blocks 0..N-1 are pushed in
order, so the first allocation returns block N-1, and later allocations return the most
recently freed block first. That is why vLLM's block numbers look "random" in a picture
although no randomness is involved.
"""
from __future__ import annotations

import enum
import random
from collections.abc import Iterable, Sequence


class Device(enum.Enum):
    GPU = "gpu"
    CPU = "cpu"


class OutOfBlocksError(RuntimeError):
    """Allocating from an empty pool (vLLM: ValueError "Out of memory!")."""


class DoubleFreeError(RuntimeError):
    """Freeing a block whose reference count is already zero."""


class PhysicalTokenBlock:
    """One physical block. `ref_count` counts the block-table entries pointing at it."""

    __slots__ = ("device", "block_number", "block_size", "ref_count")

    def __init__(self, device: Device, block_number: int, block_size: int) -> None:
        self.device = device
        self.block_number = block_number
        self.block_size = block_size
        self.ref_count = 0

    def __repr__(self) -> str:
        return (f"PhysicalTokenBlock(device={self.device.value}, "
                f"block_number={self.block_number}, ref_count={self.ref_count})")


FREE_ORDERS = ("stack", "shuffled")


class BlockAllocator:
    """vLLM's `UncachedBlockAllocator`: a free-list stack of one device's blocks.

    `free_order`:
      - "stack": vLLM's order (blocks pushed 0..N-1, so N-1 is handed out first);
      - "shuffled": the same stack after a seeded shuffle, to show the scattered
        placement of the paper's figures;
      - a sequence of block numbers: these are handed out first, in this order, then the
        rest in vLLM's order (lets a test replay the paper's exact block numbers).
    """

    def __init__(self, device: Device, block_size: int, num_blocks: int,
                 free_order: str | Sequence[int] = "stack", seed: int = 0) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {block_size}")
        if num_blocks < 0:
            raise ValueError(f"num_blocks must not be negative, got {num_blocks}")
        self.device = device
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.blocks = [PhysicalTokenBlock(device, i, block_size) for i in range(num_blocks)]
        # The end of the list is the top of the stack: pop() allocates.
        self.free_blocks: list[PhysicalTokenBlock] = _initial_stack(
            self.blocks, free_order, seed)

    def allocate(self) -> PhysicalTokenBlock:
        if not self.free_blocks:
            raise OutOfBlocksError(
                f"Out of memory! No free {self.device.value.upper()} blocks are available "
                f"(all {self.num_blocks} are in use).")
        block = self.free_blocks.pop()
        block.ref_count = 1
        return block

    def free(self, block: PhysicalTokenBlock) -> bool:
        """Drop one reference; returns True when the block went back to the free list."""
        if block.ref_count == 0:
            raise DoubleFreeError(
                f"Double free! {self.device.value.upper()} block {block.block_number} "
                f"is already free.")
        block.ref_count -= 1
        if block.ref_count == 0:
            self.free_blocks.append(block)
            return True
        return False

    def get_num_free_blocks(self) -> int:
        return len(self.free_blocks)

    def get_num_total_blocks(self) -> int:
        return self.num_blocks

    def next_free_block_numbers(self, count: int | None = None) -> list[int]:
        """The block numbers the next allocations will return, in that order."""
        order = [b.block_number for b in reversed(self.free_blocks)]
        return order if count is None else order[:count]


def _initial_stack(blocks: list[PhysicalTokenBlock], free_order: str | Sequence[int],
                   seed: int) -> list[PhysicalTokenBlock]:
    if isinstance(free_order, str):
        if free_order == "stack":
            return list(blocks)
        if free_order == "shuffled":
            stack = list(blocks)
            random.Random(seed).shuffle(stack)
            return stack
        raise ValueError(f"free_order must be one of {FREE_ORDERS} or a list of block "
                         f"numbers, got {free_order!r}")
    first = list(_validated_order(free_order, len(blocks)))
    chosen = set(first)
    rest = [b for b in blocks if b.block_number not in chosen]
    # Handed out first means on top of the stack, i.e. at the end of the list.
    return rest + [blocks[n] for n in reversed(first)]


def _validated_order(order: Iterable[int], num_blocks: int) -> Iterable[int]:
    seen: set[int] = set()
    for n in order:
        if not isinstance(n, int) or not 0 <= n < num_blocks:
            raise ValueError(f"free_order: block {n!r} is not a block number "
                             f"from 0 to {num_blocks - 1}")
        if n in seen:
            raise ValueError(f"free_order: block {n} is listed twice")
        seen.add(n)
        yield n
