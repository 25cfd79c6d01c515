"""The block space manager: logical-to-physical block tables (vLLM v0.5.5
`BlockSpaceManagerV1`, `vllm/core/block_manager_v1.py`).

It decides which physical blocks hold which sequence's tokens and returns the data
movement that follows (copy-on-write pairs, swap mappings) as data. It never moves KV
itself: the engine's cache engine carries the pairs out, as vLLM's workers do.
"""
from __future__ import annotations

import enum
from collections.abc import Sequence as Seq

from sim.core.block import BlockAllocator, Device, PhysicalTokenBlock
from sim.core.sequence import Sequence, SequenceGroup, SequenceStatus
from sim.events import BlockAllocated, BlockFreed, BlocksLeaked, CopyOnWrite, Forked, SeqFreed

BlockTable = list[PhysicalTokenBlock]

# Enum members as module constants: on CPython 3.11 `SequenceStatus.RUNNING` is a
# descriptor lookup (~0.1 us), and these are read for every sequence on every step.
_RUNNING, _GPU = SequenceStatus.RUNNING, Device.GPU


class AllocStatus(enum.Enum):
    """OK: allocate now. LATER: not enough free blocks now. NEVER: it cannot fit even in
    an empty cache (the request is ignored)."""
    OK = "ok"
    LATER = "later"
    NEVER = "never"


class BlockSpaceManager:
    def __init__(self, block_size: int, num_gpu_blocks: int, num_cpu_blocks: int,
                 watermark: float = 0.01, free_order: str | Seq[int] = "stack",
                 seed: int = 0, events: list | None = None) -> None:
        if not 0.0 <= watermark < 1.0:
            raise ValueError(f"watermark must be a fraction in [0, 1), got {watermark}")
        self.block_size = block_size
        self.num_total_gpu_blocks = num_gpu_blocks
        self.num_total_cpu_blocks = num_cpu_blocks
        self.watermark = watermark
        # Keep a few blocks free so a new prompt does not force an immediate preemption.
        self.watermark_blocks = int(watermark * num_gpu_blocks)
        self.gpu_allocator = BlockAllocator(Device.GPU, block_size, num_gpu_blocks,
                                            free_order, seed)
        self.cpu_allocator = BlockAllocator(Device.CPU, block_size, num_cpu_blocks)
        self.block_tables: dict[int, BlockTable] = {}
        # An addition for checks and pictures: GPU block number -> references that
        # `allocate` counted for finished sequences (vLLM v0.5.5's leak, see allocate). No
        # block table holds them and nothing releases them, so those blocks stay in use.
        self.leaked_refs: dict[int, int] = {}
        # Shared with the scheduler and engine; None when nobody is listening.
        self.events = events

    @classmethod
    def from_cache_config(cls, cache_config, events: list | None = None) -> BlockSpaceManager:
        """The block manager a scheduler builds from its CacheConfig."""
        c = cache_config
        return cls(block_size=c.block_size, num_gpu_blocks=c.num_gpu_blocks,
                   num_cpu_blocks=c.num_cpu_blocks, watermark=c.watermark,
                   free_order=c.free_order, seed=c.seed, events=events)

    # -- prompts -----------------------------------------------------------------------
    def can_allocate(self, seq_group: SequenceGroup) -> AllocStatus:
        seq = seq_group.get_seqs(status=SequenceStatus.WAITING)[0]
        num_required_blocks = seq.n_blocks
        num_free_gpu_blocks = self.gpu_allocator.get_num_free_blocks()
        if self.num_total_gpu_blocks - num_required_blocks < self.watermark_blocks:
            return AllocStatus.NEVER
        if num_free_gpu_blocks - num_required_blocks >= self.watermark_blocks:
            return AllocStatus.OK
        return AllocStatus.LATER

    def allocate(self, seq_group: SequenceGroup) -> None:
        """Blocks for the prompt, allocated once and shared by every waiting sequence.

        The reference count is `seq_group.num_seqs()`, as in vLLM v0.5.5: every sequence of
        the group, finished ones included. A new request has one sequence, so it is 1; but a
        sampling group whose other samples finished and whose last one was preempted by
        recompute comes back with one waiting sequence and a count that includes the
        finished ones. Those extra references belong to no block table and are never
        released: vLLM leaks the blocks, and so does this (`leaked_refs`, `BlocksLeaked`)."""
        wait_seqs = seq_group.get_seqs(status=SequenceStatus.WAITING)
        seq = wait_seqs[0]
        ref_count = seq_group.num_seqs()
        block_table: BlockTable = []
        for _ in range(seq.n_blocks):
            block = self.gpu_allocator.allocate()
            block.ref_count = ref_count
            block_table.append(block)
        seq_ids = tuple(s.seq_id for s in wait_seqs)
        for s in wait_seqs:
            self.block_tables[s.seq_id] = block_table.copy()
        if self.events is not None:
            for logical, block in enumerate(block_table):
                self.events.append(BlockAllocated(seq_ids, logical, block.block_number,
                                                  "gpu", block.ref_count))
        leaked = ref_count - len(wait_seqs)
        if leaked > 0:
            for block in block_table:
                n = block.block_number
                self.leaked_refs[n] = self.leaked_refs.get(n, 0) + leaked
            if self.events is not None:
                self.events.append(BlocksLeaked(seq_group.request_id,
                                                tuple(b.block_number for b in block_table),
                                                leaked))

    # -- decoding ----------------------------------------------------------------------
    def can_append_slots(self, seq_group: SequenceGroup) -> bool:
        # Conservative: one free block per running sequence, even when the last block of
        # every sequence still has room.
        num_seqs = seq_group.num_seqs(status=_RUNNING)
        return num_seqs <= len(self.gpu_allocator.free_blocks)

    def append_slots(self, seq: Sequence) -> list[tuple[int, int]]:
        """Make room for the sequence's newest token. Returns copy-on-write pairs."""
        block_table = self.block_tables[seq.seq_id]
        if len(block_table) < seq.n_blocks:
            # Only one block at a time: the new token starts a new logical block.
            assert len(block_table) == seq.n_blocks - 1
            block = self.gpu_allocator.allocate()
            block_table.append(block)
            if self.events is not None:
                self.events.append(BlockAllocated((seq.seq_id,), len(block_table) - 1,
                                                  block.block_number, "gpu", 1))
            return []
        last_block = block_table[-1]
        assert last_block.device is _GPU
        if last_block.ref_count == 1:
            return []     # not shared: write in place
        # Shared and the token goes into it: copy-on-write.
        new_block = self.gpu_allocator.allocate()
        block_table[-1] = new_block
        self._release(self.gpu_allocator, last_block)
        if self.events is not None:
            self.events.append(CopyOnWrite(seq.seq_id, len(block_table) - 1,
                                           last_block.block_number, new_block.block_number))
        return [(last_block.block_number, new_block.block_number)]

    def fork(self, parent_seq: Sequence, child_seq: Sequence) -> None:
        """The child shares every block of the parent; no allocation, so it cannot fail."""
        src_block_table = self.block_tables[parent_seq.seq_id]
        self.block_tables[child_seq.seq_id] = src_block_table.copy()
        for block in src_block_table:
            block.ref_count += 1
        if self.events is not None:
            self.events.append(Forked(parent_seq.seq_id, child_seq.seq_id,
                                      tuple(b.block_number for b in src_block_table)))

    # -- swapping ----------------------------------------------------------------------
    def _get_physical_blocks(self, seq_group: SequenceGroup) -> list[PhysicalTokenBlock]:
        # Blocks are shared only within a group, so the group's distinct blocks are the
        # ones that move. Ordered by first appearance so the mapping is deterministic.
        seen: dict[int, PhysicalTokenBlock] = {}
        for seq in seq_group.get_seqs():
            if seq.is_finished():
                continue
            for block in self.block_tables[seq.seq_id]:
                seen.setdefault(block.block_number, block)
        return list(seen.values())

    def num_blocks_to_move(self, seq_group: SequenceGroup) -> int:
        """An addition for pictures and messages: the distinct blocks a swap of this group
        moves (what can_swap_out and can_swap_in count)."""
        return len(self._get_physical_blocks(seq_group))

    def can_swap_in(self, seq_group: SequenceGroup) -> AllocStatus:
        blocks = self._get_physical_blocks(seq_group)
        num_swapped_seqs = seq_group.num_seqs(status=SequenceStatus.SWAPPED)
        num_free_blocks = self.gpu_allocator.get_num_free_blocks()
        # Room for the blocks plus, conservatively, one new block per sequence.
        num_required_blocks = len(blocks) + num_swapped_seqs
        if self.gpu_allocator.get_num_total_blocks() < num_required_blocks:
            return AllocStatus.NEVER
        if num_free_blocks - num_required_blocks >= self.watermark_blocks:
            return AllocStatus.OK
        return AllocStatus.LATER

    def swap_in(self, seq_group: SequenceGroup) -> list[tuple[int, int]]:
        """CPU -> GPU. Blocks come back under new GPU numbers. Returns (cpu, gpu) pairs."""
        mapping: dict[int, PhysicalTokenBlock] = {}
        pairs: list[tuple[int, int]] = []
        for seq in seq_group.get_seqs(status=SequenceStatus.SWAPPED):
            self.block_tables[seq.seq_id] = self._swap_block_table(
                self.block_tables[seq.seq_id], self.cpu_allocator, self.gpu_allocator,
                mapping, pairs)
        return pairs

    def can_swap_out(self, seq_group: SequenceGroup) -> bool:
        blocks = self._get_physical_blocks(seq_group)
        return len(blocks) <= self.cpu_allocator.get_num_free_blocks()

    def swap_out(self, seq_group: SequenceGroup) -> list[tuple[int, int]]:
        """GPU -> CPU with one mapping for the whole group, so a block shared by several
        sequences is copied once. Returns (gpu, cpu) pairs."""
        mapping: dict[int, PhysicalTokenBlock] = {}
        pairs: list[tuple[int, int]] = []
        for seq in seq_group.get_seqs(status=SequenceStatus.RUNNING):
            self.block_tables[seq.seq_id] = self._swap_block_table(
                self.block_tables[seq.seq_id], self.gpu_allocator, self.cpu_allocator,
                mapping, pairs)
        return pairs

    def _swap_block_table(self, block_table: BlockTable, src: BlockAllocator,
                          dest: BlockAllocator, mapping: dict[int, PhysicalTokenBlock],
                          pairs: list[tuple[int, int]]) -> BlockTable:
        new_block_table: BlockTable = []
        for from_block in block_table:
            to_block = mapping.get(from_block.block_number)
            if to_block is not None:
                to_block.ref_count += 1
            else:
                to_block = dest.allocate()
                mapping[from_block.block_number] = to_block
                pairs.append((from_block.block_number, to_block.block_number))
            new_block_table.append(to_block)
            self._release(src, from_block)
        return new_block_table

    # -- freeing -----------------------------------------------------------------------
    def _release(self, allocator: BlockAllocator, block: PhysicalTokenBlock) -> None:
        if allocator.free(block) and self.events is not None:
            self.events.append(BlockFreed(block.device.value, block.block_number))

    def _free_block_table(self, block_table: BlockTable) -> None:
        for block in block_table:
            allocator = self.gpu_allocator if block.device is Device.GPU else self.cpu_allocator
            self._release(allocator, block)

    def free(self, seq: Sequence) -> None:
        if seq.seq_id not in self.block_tables:
            return     # already freed, or never scheduled
        self._free_block_table(self.block_tables.pop(seq.seq_id))
        if self.events is not None:
            self.events.append(SeqFreed(seq.seq_id))

    def reset(self) -> None:
        for block_table in self.block_tables.values():
            self._free_block_table(block_table)
        self.block_tables.clear()

    # -- queries -----------------------------------------------------------------------
    def get_block_table(self, seq: Sequence) -> list[int]:
        return [block.block_number for block in self.block_tables[seq.seq_id]]

    def get_num_free_gpu_blocks(self) -> int:
        return self.gpu_allocator.get_num_free_blocks()

    def get_num_free_cpu_blocks(self) -> int:
        return self.cpu_allocator.get_num_free_blocks()
