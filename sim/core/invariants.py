"""Checks that hold after every engine step (used by tests and by pages that narrate them).

- a block's reference count equals the number of block-table entries pointing at it;
- on each device, free + used = total, and the free list holds exactly the unused blocks;
- every live sequence's cached tokens read back, through its block table, exactly as
  they were written (token id and position): copy-on-write, swapping and recomputation
  never corrupt another sequence's cache;
- finished sequences hold no blocks.

One documented exception, vLLM v0.5.5's own bug: a sampling group recomputed after its
first sample finished (see `BlockSpaceManager.allocate` and `LLMEngine._run_as_decode`).
Its prompt blocks get references no table holds (`block_manager.leaked_refs`, reported as
`BlocksLeaked`), and its sequence's KV below `engine.kv_not_recomputed[seq_id]` was never
recomputed. The checks allow exactly those references and those positions, nothing else.
"""
from __future__ import annotations

from sim.core.block import Device
from sim.core.sequence import SequenceStatus


def check_engine(engine) -> list[str]:
    """Every violated invariant, as a sentence; an empty list when all hold."""
    return (check_block_accounting(engine.block_manager)
            + check_payloads(engine) + check_finished_hold_nothing(engine))


def check_block_accounting(block_manager) -> list[str]:
    problems = []
    counts: dict[tuple[Device, int], int] = {}
    for table in block_manager.block_tables.values():
        for block in table:
            key = (block.device, block.block_number)
            counts[key] = counts.get(key, 0) + 1
    leaked = getattr(block_manager, "leaked_refs", {})
    for allocator in (block_manager.gpu_allocator, block_manager.cpu_allocator):
        dev = allocator.device
        documented = leaked if dev is Device.GPU else {}
        free_ids = [b.block_number for b in allocator.free_blocks]
        if len(set(free_ids)) != len(free_ids):
            problems.append(f"{dev.value}: a block is on the free list twice")
        free_set = set(free_ids)
        used = 0
        for block in allocator.blocks:
            entries = counts.get((dev, block.block_number), 0)
            extra = documented.get(block.block_number, 0)
            if block.ref_count != entries + extra:
                problems.append(f"{dev.value} block {block.block_number}: ref_count "
                                f"{block.ref_count} but {entries} table entries"
                                + (f" and {extra} leaked references" if extra else ""))
            if block.ref_count > 0:
                used += 1
                if block.block_number in free_set:
                    problems.append(f"{dev.value} block {block.block_number} is in use "
                                    "and on the free list")
            elif block.block_number not in free_set:
                problems.append(f"{dev.value} block {block.block_number} is unused but "
                                "not on the free list (leaked)")
        if used + len(free_ids) != allocator.num_blocks:
            problems.append(f"{dev.value}: free {len(free_ids)} + used {used} != total "
                            f"{allocator.num_blocks}")
    return problems


def read_back(engine, seq) -> list:
    """The payloads a sequence's block table reaches, for its computed tokens."""
    table = engine.block_manager.block_tables[seq.seq_id]
    on_gpu = table[0].device is Device.GPU if table else True
    cache = engine.cache_engine.gpu_cache if on_gpu else engine.cache_engine.cpu_cache
    bs = engine.cache_config.block_size
    return [cache[table[p // bs].block_number][p % bs] for p in range(seq.num_computed_tokens)]


def seq_payload_intact(engine, seq) -> bool:
    """Every computed token reads back as written, except the positions vLLM never
    recomputed for this sequence (`engine.kv_not_recomputed`, the documented exception)."""
    tokens = seq.get_token_ids()
    first = getattr(engine, "kv_not_recomputed", {}).get(seq.seq_id, 0)
    return read_back(engine, seq)[first:] == [(tokens[p], p) for p in
                                              range(first, seq.num_computed_tokens)]


def check_payloads(engine) -> list[str]:
    problems = []
    tables = engine.block_manager.block_tables
    for group in engine.requests.values():
        for seq in group.get_seqs():
            if seq.is_finished() or seq.seq_id not in tables:
                continue
            if seq.status is SequenceStatus.WAITING:
                continue   # recompute-preempted: its KV was dropped on purpose
            if not seq_payload_intact(engine, seq):
                problems.append(f"sequence {seq.seq_id} of {group.request_id}: cached "
                                "tokens do not read back as written")
    return problems


def check_finished_hold_nothing(engine) -> list[str]:
    tables = engine.block_manager.block_tables
    problems = []
    live = set()
    for group in engine.requests.values():
        for seq in group.get_seqs():
            if seq.is_finished():
                if seq.seq_id in tables:
                    problems.append(f"finished sequence {seq.seq_id} of {group.request_id} "
                                    "still holds blocks")
            else:
                live.add(seq.seq_id)
    # A table whose sequence left its group (a pruned beam) must have been freed.
    problems += [f"sequence {seq_id} has a block table but belongs to no live request"
                 for seq_id in tables if seq_id not in live]
    return problems
