"""What one step of the hybrid-models trace shows, read from its snapshots and events:
each request's block table per KV cache group, and what changed in the step (new blocks,
blocks that left a window, hits, evictions). Shared by the view and the narration."""
from __future__ import annotations

from dataclasses import dataclass

from sim.events import (
    BlockAllocated,
    BlockEvicted,
    BlockSkipped,
    GroupBlockAllocated,
    PrefixCacheHit,
    RequestFinished,
)


def request(snap: dict, rid: str) -> dict | None:
    return next((r for r in snap["requests"] if r["request_id"] == rid), None)


def tables(snap: dict, rid: str) -> list[list[int]]:
    """The request's block ids per KV cache group (group 0 first; 0 is the null block)."""
    r = request(snap, rid)
    if r is None:
        return []
    rows = r.get("group_block_tables") or [r["seqs"][0]["block_table"]]
    return [[b for _, b, _ in row] for row in rows]


@dataclass(frozen=True)
class Changes:
    """What a step did to the tables: (request, group, logical) cells."""
    new: frozenset = frozenset()          # a block entered the table there
    skipped: frozenset = frozenset()      # a block left the window: the null block now
    hit: frozenset = frozenset()          # a prefix-cache hit put it there
    hit_tokens: dict | None = None        # request -> tokens its hit covers
    evicted: tuple = ()                   # physical blocks whose cached hash was dropped
    finished: tuple = ()                  # requests that finished (their blocks freed)
    final_tables: dict | None = None      # finished request -> its tables before the free


def _seq_requests(snap: dict) -> dict[int, str]:
    return {r["seqs"][0]["seq_id"]: r["request_id"] for r in snap["requests"]}


def changes(step, previous) -> Changes:
    """From the step's events: GroupBlockAllocated (BlockAllocated with one group),
    BlockSkipped, PrefixCacheHit, BlockEvicted, RequestFinished."""
    if previous is None:
        return Changes(hit_tokens={}, final_tables={})
    snap = step.snapshot
    by_seq = _seq_requests(snap)
    hits = {e.request_id: e.num_tokens for e in step.events if isinstance(e, PrefixCacheHit)}
    new, skipped = set(), set()
    for e in step.events:
        if isinstance(e, GroupBlockAllocated):
            new.add((e.request_id, e.kv_cache_group_id, e.logical))
        elif isinstance(e, BlockAllocated):
            new.add((by_seq[e.seq_ids[0]], 0, e.logical))
        elif isinstance(e, BlockSkipped):
            skipped.add((e.request_id, e.kv_cache_group_id, e.logical))
    finished = tuple(e.request_id for e in step.events if isinstance(e, RequestFinished))
    final = {rid: tables_after(step, previous, rid) for rid in finished}
    hit = set()
    bs = snap["block_size"]
    for rid, num_tokens in hits.items():
        for g, row in enumerate(final.get(rid) or tables(snap, rid)):
            hit.update((rid, g, i) for i in range(num_tokens // bs) if row[i])
    return Changes(frozenset(new), frozenset(skipped), frozenset(hit), hits,
                   tuple(e.physical for e in step.events if isinstance(e, BlockEvicted)),
                   finished, final)


def tables_after(step, previous, rid: str) -> list[list[int]]:
    """A request's tables at the end of the step, before a finish freed them: the step
    before's, with this step's allocations and window removals applied."""
    rows = [list(row) for row in tables(previous.snapshot, rid)]
    by_seq = _seq_requests(step.snapshot)
    for e in step.events:
        if isinstance(e, GroupBlockAllocated) and e.request_id == rid:
            g, i, b = e.kv_cache_group_id, e.logical, e.physical
        elif isinstance(e, BlockAllocated) and by_seq.get(e.seq_ids[0]) == rid:
            g, i, b = 0, e.logical, e.physical
        elif isinstance(e, BlockSkipped) and e.request_id == rid:
            g, i, b = e.kv_cache_group_id, e.logical, 0
        else:
            continue
        while len(rows) <= g:
            rows.append([])
        while len(rows[g]) <= i:
            rows[g].append(0)
        rows[g][i] = b
    return rows


def window_start(group: dict, computed: int) -> int:
    """The first position the next token attends to in this group (0 for full attention):
    vLLM's get_num_skipped_tokens."""
    if group["kind"] == "sliding_window":
        return max(0, computed - group["window"] + 1)
    if group["kind"] == "chunked_local_attention":
        return computed // group["window"] * group["window"]
    return 0
