"""The hybrid-models widget's words: a short narration per step (cause, effect) and the
step's whole account under "details"."""
from __future__ import annotations

from pages.topics.hybrid_models.scenario import HybridContext, group_name
from pages.topics.hybrid_models.state import changes, request, tables
from pages.views.text import commas, join, plural
from sim.events import Admitted, BlockCached, ChunkScheduled

# (request, group, logical) sets in `changes` -> per request and group.


def _by_group(cells, rid: str, num_groups: int) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(num_groups)]
    for r, g, i in sorted(cells):
        if r == rid:
            out[g].append(i)
    return out


def _blocks(snap_tables, g: int, logicals) -> list[int]:
    return [snap_tables[g][i] for i in logicals]


def _numbers(ids) -> str:
    return join([str(i) for i in ids])


def step_sentences(step, ctx: HybridContext) -> tuple[list[str], list[str]]:
    """(short narration sentences, detail lines)."""
    previous = ctx.trace.previous(step)
    if previous is None:
        v = ctx.values
        groups = len(ctx.groups)
        first = (f"A {commas(v['prompt'])}-token request arrives; B, starting with A's first "
                 f"{commas(v['shared'])} tokens, comes at step {v['b_step']}.")
        if groups == 1:
            return [first, "The hybrid manager is off: every layer is one full-attention "
                           "group, so every layer keeps every token."], []
        return [first, f"The model's layers form {plural(groups, 'KV cache group')} that "
                       "share one pool of equal pages; full attention keeps every block, a "
                       "sliding window only the blocks its next token reads."], []
    snap, bs = step.snapshot, step.snapshot["block_size"]
    ch = changes(step, previous)
    num_groups = len(ctx.groups)
    short: list[str] = []
    details: list[str] = []
    scheduled = {s.request_id: s.num_tokens for s in step.scheduled}
    chunks = {e.request_id: e for e in step.events if isinstance(e, ChunkScheduled)}
    admitted = {e.request_id for e in step.events if isinstance(e, Admitted)}
    for rid in ("A", "B"):
        if rid not in scheduled:
            continue
        n = scheduled[rid]
        r = request(snap, rid)
        computed = r["seqs"][0]["num_computed_tokens"]
        first = computed - n
        what = (f"computes tokens {first}-{computed - 1}" if n > 1 else
                f"computes token {first}")
        hit = (ch.hit_tokens or {}).get(rid, 0)
        now = (ch.final_tables or {}).get(rid) or tables(snap, rid)
        if rid in admitted and hit:
            hits = _by_group(ch.hit, rid, num_groups)
            per = []
            for g, logicals in enumerate(hits):
                nulls = sum(1 for b in now[g][:hit // bs] if b == 0)
                per.append(f"{group_name(ctx.groups[g])}: {plural(len(logicals), 'block')}"
                           + (f" (the first {nulls} outside its window: null)" if nulls else ""))
            short.append(f"{rid} reuses {commas(hit)} cached tokens: "
                         + "; ".join(per) + ".")
            details.append(f"{rid}'s prefix-cache hit ({commas(hit)} tokens): "
                           + "; ".join(f"{group_name(ctx.groups[g])} blocks "
                                       f"{_numbers(_blocks(now, g, lg)) or 'none'}"
                                       for g, lg in enumerate(hits)) + ".")
        elif rid in admitted:
            details.append(f"{rid} is admitted with no prefix-cache hit.")
        new = _by_group(ch.new, rid, num_groups)
        count = sum(len(x) for x in new)
        now = (ch.final_tables or {}).get(rid) or now
        ids = [now[g][i] for g, lg in enumerate(new) for i in lg]
        if count and len({len(x) for x in new}) == 1 and num_groups > 1:
            k = len(new[0])
            short.append(f"{rid} {what}: {'one new block' if k == 1 else f'{k} new blocks'} "
                         f"in each group ({_numbers(ids)}).")
        elif count:
            short.append(f"{rid} {what}: {plural(count, 'new block')} ({_numbers(ids)}).")
        elif rid in chunks or n:
            short.append(f"{rid} {what}; no group needs a new block.")
        for g, logicals in enumerate(new):
            if logicals:
                details.append(f"{rid}, {group_name(ctx.groups[g])}: blocks "
                               f"{_numbers(_blocks(now, g, logicals))} at positions "
                               f"{logicals[0] * bs}-{(logicals[-1] + 1) * bs - 1}.")
        skipped = _by_group(ch.skipped, rid, num_groups)
        if any(skipped):
            before = tables(previous.snapshot, rid)
            ids = [before[g][i] for g, lg in enumerate(skipped) for i in lg]
            window = next(ctx.groups[g]["window"] for g, lg in enumerate(skipped) if lg)
            short.append(f"Blocks {_numbers(ids)} now hold only tokens before the "
                         f"{window}-token window of {rid}'s next token: they go back to the "
                         "pool and the null block takes their place.")
            for g, lg in enumerate(skipped):
                if lg:
                    details.append(f"{rid}, {group_name(ctx.groups[g])}: block"
                                   f"{'s' if len(lg) > 1 else ''} "
                                   f"{_numbers([before[g][i] for i in lg])} left the window "
                                   f"(positions before {(lg[-1] + 1) * bs}); freed, last "
                                   "first, to the tail of the free queue if hashed.")
    if ch.evicted:
        short.append(f"Reusing block{'s' if len(ch.evicted) > 1 else ''} "
                     f"{_numbers(ch.evicted)} evicts {'their' if len(ch.evicted) > 1 else 'its'}"
                     " cached hash.")
        details.append(f"Evicted from the prefix cache: blocks {_numbers(ch.evicted)} (popped "
                       "from the head of the free queue for new blocks).")
    for rid in ch.finished:
        freed = ch.final_tables.get(rid) or []
        real = sum(1 for row in freed for b in row if b)
        short.append(f"{rid} finishes: its {plural(real, 'block')} go back to the pool, "
                     "each group's table last block first.")
    cached = [e for e in step.events if isinstance(e, BlockCached)]
    if cached:
        details.append(f"Cached (full blocks, hashed with their group's id): blocks "
                       f"{_numbers([e.physical for e in cached])}.")
    if not short:
        short.append("Nothing is scheduled.")
    return short, details


def narrate(step, ctx: HybridContext) -> str:
    short, _ = step_sentences(step, ctx)
    return " ".join(short[:4])


def details(step, ctx: HybridContext) -> list[str]:
    short, lines = step_sentences(step, ctx)
    free = step.snapshot["gpu"]["free_order"]
    return short + lines + [f"Free queue, head first: {' '.join(map(str, free)) or 'empty'}."]
