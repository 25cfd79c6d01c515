"""The prefix caching widget's words: the narration (cause, effect, consequence) and the
full account behind `details`, from the phase's events and snapshot.
"""
from __future__ import annotations

from pages.topics.prefix_caching.scenario import DOCS_NOTE, LETTERS, TourContext, label
from pages.views import prefix_view as pv
from pages.views.text import join, plural, verb
from sim.events import (
    Admitted,
    BlockAllocated,
    BlockCached,
    BlockEvicted,
    BlockTouched,
    ChunkScheduled,
    Preempted,
    PrefixCacheHit,
    RequestArrived,
    RequestFinished,
    TokenSampled,
)

# ------------------------------------------------------------------------------ words

def request(snap: dict, rid: str) -> dict:
    return next(r for r in snap["requests"] if r["request_id"] == rid)


def seq_names(snap: dict) -> dict[int, str]:
    return {r["seqs"][0]["seq_id"]: r["request_id"] for r in snap["requests"]}


def tok(ctx: TourContext, token_id: int) -> str:
    return ctx.letters[token_id] if ctx.letters else str(token_id)


def toks(ctx: TourContext, ids) -> str:
    return " ".join(tok(ctx, t) for t in ids)


def covered(ctx: TourContext, ids) -> str:
    """The prefix a hash covers, as the docs name it: "A-P", "A-J,ST"."""
    if not ctx.letters:
        return f"tokens 0-{len(ids) - 1}"
    idx = [LETTERS.index(ctx.letters[t]) for t in ids]
    runs, start = [], 0
    for i in range(1, len(idx) + 1):
        if i == len(idx) or idx[i] != idx[i - 1] + 1:
            run = [LETTERS[j] for j in idx[start:i]]
            runs.append(f"{run[0]}-{run[-1]}" if len(run) >= 3 else "".join(run))
            start = i
    return ",".join(runs)


def blocks(ids) -> str:
    return " ".join(f"#{b}" for b in ids)


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def queue_words(order) -> str:
    return blocks(order) if order else "empty"


def hash_of(ctx: TourContext, snap: dict, rid: str, i: int) -> str:
    r = request(snap, rid)
    bs = snap["block_size"]
    ids = r["seqs"][0]["token_ids"]
    parent = pv.short(r["block_hashes"][i - 1]) if i else "the seed"
    return (f"{pv.short(r['block_hashes'][i])} = hash of {parent} and "
            f"{toks(ctx, ids[i * bs:(i + 1) * bs])}")


def lookup_words(ctx: TourContext, phase: pv.Phase, rid: str, hit: tuple,
                 num_tokens: int) -> str:
    """What a lookup found for a request admitted with `num_tokens` tokens: the hit blocks,
    where it stopped and why."""
    snap = phase.snapshot
    r = request(snap, rid)
    bs = snap["block_size"]
    ids = r["seqs"][0]["token_ids"]
    hashes = r["block_hashes"][:num_tokens // bs]
    cap = (num_tokens - 1) // bs
    k = len(hit)
    if not hashes:
        return (f"{rid}'s {plural(num_tokens, 'token')} fill no whole block of {bs}, so there "
                "is no hash to look up.")
    if k:
        found = (f"{rid}'s lookup finds {join([pv.short(h) for h in hashes[:k]])} cached in "
                 f"{blocks(hit)}: a hit of {plural(k * bs, 'token')}")
    else:
        found = f"{rid}'s lookup: its first hash, {pv.short(hashes[0])}, is not cached"
    if k < min(cap, len(hashes)):
        found += (f"; block {k} ({toks(ctx, ids[k * bs:(k + 1) * bs])}) hashes to "
                  f"{pv.short(hashes[k])}, which is not cached, so the lookup stops there"
                  if k else "")
    elif capped_block(phase, rid, hit, num_tokens) is not None:
        found += (f"; block {cap} is cached too, but the last prompt token must be computed "
                  f"for its logits, so at most ({num_tokens} - 1) // {bs} = "
                  f"{plural(cap, 'block')} can hit and block {cap} is computed again")
    return found + "."


def capped_block(phase: pv.Phase, rid: str, hit: tuple, num_tokens: int) -> int | None:
    """The block a lookup could have hit but must not, because the last prompt token is
    always computed ((num_tokens - 1) // block_size blocks at most), or None."""
    snap = phase.snapshot
    bs = snap["block_size"]
    hashes = request(snap, rid)["block_hashes"][:num_tokens // bs]
    cap = (num_tokens - 1) // bs
    if len(hit) == cap < len(hashes) and hashes[cap] in pv.cached_hashes(phase.before):
        return cap
    return None


def evicted_prefix(ctx: TourContext, snap: dict, block_hash: str) -> str:
    """The prefix an evicted hash covered ("A-P"), from the requests that had it."""
    for r in snap["requests"]:
        for i, h in enumerate(r["block_hashes"]):
            if h == block_hash:
                ids = r["seqs"][0]["token_ids"][:(i + 1) * snap["block_size"]]
                return f"{r['request_id']}'s {covered(ctx, ids)}"
    return "a hash"


def run_sentences(ctx: TourContext, phase: pv.Phase) -> tuple[list[str], list[str]]:
    """(short narration sentences, most important first; the full account) of a run
    phase."""
    step, snap = phase.step, phase.snapshot
    ev = step.events
    bs = snap["block_size"]
    seqs = seq_names(snap)
    on = ctx.values["enable_prefix_caching"]
    hits = {e.request_id: e for e in ev if isinstance(e, PrefixCacheHit)}
    admitted = [e for e in ev if isinstance(e, Admitted)]
    admitted_ids = {e.request_id for e in admitted}
    alloc: dict[str, list[int]] = {}
    for e in ev:
        if isinstance(e, BlockAllocated):
            alloc.setdefault(seqs[e.seq_ids[0]], []).append(e.physical)
    evicted = {e.physical: e.block_hash for e in ev if isinstance(e, BlockEvicted)}
    cached = [e for e in ev if isinstance(e, BlockCached)]
    touched = {e.physical: e.ref_count for e in ev if isinstance(e, BlockTouched)}
    sampled = {seqs[e.seq_id]: e for e in ev if isinstance(e, TokenSampled)}
    chunks = {e.request_id: e for e in ev if isinstance(e, ChunkScheduled)}
    scheduled = {s.request_id: s.num_tokens for s in step.scheduled}
    done = [e.request_id for e in ev if isinstance(e, RequestFinished)]
    arrived = [e.request_id for e in ev if isinstance(e, RequestArrived)]
    # (order in the text, importance: lower first, sentence); narrate keeps the three most
    # important and tells them in order.
    short: list[tuple[int, float, str]] = []
    full: list[str] = []

    def say(order: int, rank: float, text: str) -> None:
        short.append((order, rank, text))

    def evict_words(new: list[int]) -> str:
        """Which cached blocks this allocation evicted, and why those."""
        gone = [b for b in new if b in evicted]
        if not gone:
            return ""
        ahead = [b for b in new[:new.index(gone[0])] if b not in evicted]
        what = join([f"{evicted_prefix(ctx, phase.before, evicted[b])} ({pv.short(evicted[b])})"
                     for b in gone])
        why = (f"only {plural(len(ahead), 'unhashed block')} stood before "
               f"{'it' if len(gone) == 1 else 'them'}" if ahead else
               "no unhashed block was left at the head")
        where = join([f"{ordinal(new.index(b) + 1)}" for b in gone])
        return (f"{listed(gone)}, {where} from the head, still held {what}, so "
                f"{'that entry is' if len(gone) == 1 else 'those entries are'} evicted: {why}.")

    for rid in arrived:
        r = request(snap, rid)
        n = r["seqs"][0]["prompt_len"]
        hashes = r["block_hashes"][:n // bs]
        full.append(f"{rid} arrives with {plural(n, 'prompt token')}"
                    + (f"; its {plural(len(hashes), 'full block')} "
                       f"{verb(hashes, 'is', 'are')} hashed: "
                       f"{', '.join(pv.short(h) for h in hashes)}." if hashes else
                       "." if on else "; prefix caching is off, so nothing is hashed."))
    for e in ev:
        if isinstance(e, Preempted):
            say(0, 0, f"{e.needed_by} needs a block and none is free, so "
                      + (f"{e.request_id}, the last in running, preempts itself"
                         if e.victim_is_self else
                         f"{e.request_id}, the last in running, is preempted")
                      + ": its blocks are freed and it will compute everything again.")
            full.append(f"{e.needed_by} needs a new block and the free queue is empty: "
                        f"{e.request_id}, the last of running, is preempted by recompute; its "
                        "blocks go back to the free queue and it returns to the front of "
                        "waiting.")
    for e in admitted:
        rid = e.request_id
        r = request(snap, rid)
        seq = r["seqs"][0]
        hit = hits.get(rid)
        hit_blocks = hit.blocks if hit else ()
        new = alloc.pop(rid, [])
        num_tokens = seq["len"] - (1 if rid in sampled else 0)
        who = (f"{rid} comes back" if e.recompute else
               f"{rid} arrives" if rid in arrived else f"{rid} is admitted")
        if on:
            full.append(lookup_words(ctx, phase, rid, hit_blocks, num_tokens))
        for b in hit_blocks:
            was = touched[b] - 1
            full.append(f"Touch #{b}: ref_cnt {was} -> {touched[b]}"
                        + (", taken out of the free queue." if was == 0 else
                           ", another request holds it too."))
        full.append(f"{rid} is admitted and computes {plural(e.num_tokens, 'token')} "
                    f"(positions {seq['num_computed_tokens'] - e.num_tokens}-"
                    f"{seq['num_computed_tokens'] - 1})"
                    + (f"; {plural(len(new), 'new block')} from the head of the free queue: "
                       f"{blocks(new)}." if new else "."))
        if hit:
            in_use = [b for b in hit_blocks if touched[b] > 1]
            free = [b for b in hit_blocks if b not in in_use]
            how = ("free but still hashed, so touch takes them out of the free queue"
                   if not in_use else f"touched: {listed(in_use)} {verb(in_use, 'was', 'were')}"
                   f" in use, {listed(free)} {verb(free, 'leaves', 'leave')} the free queue")
            holders = sorted({o for o, t in phase.tables.items() if o != rid
                              and set(t) & set(in_use)})
            if len(in_use) == len(hit_blocks):
                how = (f"which {join(holders)} still {verb(holders, 'uses', 'use')}, so "
                       f"{'it gains' if len(in_use) == 1 else 'each gains'} a reference")
            if len(hit_blocks) == 1:
                how = how.replace("takes them", "takes it")
            first_blocks = ("its first block is" if len(hit_blocks) == 1 else
                            f"its first {len(hit_blocks)} blocks are")
            say(1, 0, f"{who} and {first_blocks} already in the prefix cache as "
                      f"{listed(hit_blocks)}, {how}.")
            capped = capped_block(phase, rid, hit_blocks, num_tokens)
            say(1, 1, f"So it computes only {e.num_tokens} of its {plural(num_tokens, 'token')}"
                      + (f", in {plural(len(new), 'new block')} from the head of the free "
                         f"queue, {listed(new)}" if new else "")
                      + (f"; block {capped} is cached too, but the last prompt token must be "
                         "computed for its logits, so the hit stops one block short"
                         if capped is not None else "") + ".")
            if evict_words(new):
                say(1.5, 0.5, evict_words(new))
        else:
            miss = (" and none of its blocks is cached, so it computes" if on and
                    r["block_hashes"][:num_tokens // bs] else " and computes")
            say(1, 0, f"{who}{miss} {plural(e.num_tokens, 'token')} in "
                      f"{plural(len(new), 'new block')} from the head of the free queue, "
                      f"{listed(new)}.")
            if evict_words(new):
                say(1.5, 0.5, evict_words(new))
    for rid, new in alloc.items():
        say(2, 3, f"{rid} takes {listed(new)} from the head of the free queue for "
                  f"{'its next token' if scheduled.get(rid) == 1 else 'its next tokens'}.")
        if evict_words(new):
            say(2.5, 0.5, evict_words(new))
        full.append(f"{rid} gets {plural(len(new), 'new block')} from the head of the free "
                    f"queue: {blocks(new)}.")
    for b, h in evicted.items():
        full.append(f"#{b} was popped from the head still holding hash {pv.short(h)}: evicted "
                    "(its entry leaves the prefix cache and its hash is reset).")
    for e in cached:
        r = request(snap, e.request_id)
        ids = r["seqs"][0]["token_ids"]
        full.append(f"#{e.physical} is full: {e.request_id}'s block {e.logical}, "
                    f"{hash_of(ctx, snap, e.request_id, e.logical)} (covering "
                    f"{covered(ctx, ids[:(e.logical + 1) * bs])}), enters the prefix cache.")
    for rid in scheduled:
        if rid in admitted_ids:
            continue
        r = request(snap, rid)
        seq = r["seqs"][0]
        n = scheduled[rid]
        pos = seq["num_computed_tokens"] - 1
        table = phase.tables.get(rid, ())
        fills = [e for e in cached if e.request_id == rid]
        if rid in chunks:
            c = chunks[rid]
            say(2, 2, f"{rid} computes {plural(n, 'more prompt token')} (positions "
                      f"{c.num_computed_before}-{c.num_computed_before + n - 1}).")
            full.append(f"{rid} computes {plural(n, 'token')}, positions "
                        f"{c.num_computed_before}-{c.num_computed_before + n - 1}.")
            continue
        what = (tok(ctx, seq["token_ids"][pos]) if ctx.letters else f"its token {pos}")
        full.append(f"{rid} computes {what} (position {pos}), the token it sampled in the step "
                    "before.")
        if fills:
            e = fills[0]
            say(2, 1.5, f"{rid} computes {what}, which fills #{e.physical}: #{e.physical} "
                        f"is hashed ({pv.short(e.block_hash)}, covering "
                        f"{covered(ctx, seq['token_ids'][:(e.logical + 1) * bs])}) and "
                        "enters the prefix cache.")
        elif rid not in alloc and table:
            say(2, 4, f"{rid} computes {what}, which goes into #{table[pos // bs]}, its last "
                      "block: it still has room.")
    for rid, e in sampled.items():
        r = request(snap, rid)
        k = e.position - r["seqs"][0]["prompt_len"] + 1
        full.append(f"{rid} samples {tok(ctx, e.token_id)}, its {ordinal(k)} output token.")
    fresh = [e.physical for e in cached if e.request_id in admitted_ids]
    if fresh:
        partial = [t[-1] for rid, t in phase.tables.items() if rid in admitted_ids and t
                   and t[-1] not in fresh and request(snap, rid)["seqs"][0]["status"]
                   != "preempted"]
        say(4, 2.5, (f"The full block {listed(fresh)} is" if len(fresh) == 1 else
                     f"The {len(fresh)} full blocks {listed(fresh)} are")
            + f" hashed and {verb(fresh, 'enters', 'enter')} the prefix cache at once"
            + (f"; {listed(partial)} {verb(partial, 'is', 'are')} not full, so "
               f"{verb(partial, 'it has', 'they have')} no hash." if partial else "."))
    if done:
        say(3, 2, f"{done[0]} has all its output tokens, so its blocks are freed at the end of "
                  "the step." if len(done) == 1 else
                  f"{join(done)} have all their output tokens, so their blocks are freed at "
                  "the end of the step, one request after another.")
        for rid in done:
            r = request(snap, rid)
            full.append(f"{rid} has its {plural(r['max_tokens'], 'output token')} (max_tokens):"
                        " finished.")
    if not short:
        head = snap["heads"]["waiting"]
        if head is not None:
            say(0, 0, f"Nothing runs: {head['request_id']}, at the head of waiting, needs "
                      f"{plural(head['num_required_blocks'], 'block')} and "
                      f"{plural(head['num_free_blocks'], 'block is', 'blocks are')} free.")
        else:
            say(0, 0, "Nothing runs in this step.")
    keep = sorted(sorted(short, key=lambda t: t[1])[:3], key=lambda t: t[0])
    ranked = sorted(short, key=lambda t: t[1])
    return [t[2] for t in keep] + [t[2] for t in ranked[3:]], full


def listed(items) -> str:
    """"#1", "#1 and #2", "#7, #5 and #8": block ids in the order given."""
    return join([f"#{b}" for b in items])


def free_sentences(ctx: TourContext, phase: pv.Phase) -> tuple[list[str], list[str]]:
    rid = phase.freed_request
    head = [b for b, w in phase.released if w == "head"]
    tail = [b for b, w in phase.released if w == "tail"]
    held = [b for b, w in phase.released if w == "held"]
    holders = sorted({r for r, t in phase.tables.items() if r != rid and set(t) & set(held)})
    parts = []
    if head:
        parts.append(f"{join([f'#{b}' for b in head])} (no hash) to the head of the free queue")
    if tail:
        parts.append(f"{join([f'#{b}' for b in tail])} (still hashed) to the tail")
    out = [f"{rid} has finished, and its blocks go back last block first: {join(parts)}."
           if parts else f"{rid} has finished, but every one of its blocks is still held."]
    if held:
        out.append(f"{join([f'#{b}' for b in held])} {verb(held, 'stays', 'stay')} in use: "
                   f"{join(holders)} still {verb(holders, 'holds', 'hold')} "
                   f"{'it' if len(held) == 1 else 'them'}.")
    if tail and len(tail) > 1:
        out.append("The head is handed out first, so " + (f"#{head[0]} will be reused before "
                    "any cached block, and " if head else "")
                    + f"{rid}'s last full block, #{tail[0]}, would be evicted before its first, "
                    f"#{tail[-1]}.")
    elif tail:
        out.append(f"#{tail[0]} keeps its KV and its hash until the queue hands it out.")
    elif head and not ctx.values["enable_prefix_caching"]:
        out.append("With prefix caching off no block has a hash, so every freed block goes to "
                   "the head: the pool works like a stack.")
    snap = phase.snapshot
    full = [f"{rid} has finished: SingleTypeKVCacheManager.free hands its table "
            f"({blocks(reversed([b for b, _ in phase.released]))}) to BlockPool.free_blocks "
            "reversed, last block first."]
    for b, where in phase.released:
        h = snap["gpu"]["blocks"][b]["hash"]
        if where == "held":
            full.append(f"#{b}: ref_cnt {phase.refs[b] + 1} -> {phase.refs[b]}; still in use.")
        elif where == "head":
            full.append(f"#{b}: ref_cnt 1 -> 0, no hash: prepended at the head (reused "
                        "first).")
        else:
            full.append(f"#{b}: ref_cnt 1 -> 0, hash {pv.short(h)} kept: appended at the tail "
                        "(a hit can still take it back until the queue hands it out).")
    return out, full


def state_lines(ctx: TourContext, phase: pv.Phase) -> list[str]:
    snap = phase.snapshot
    tables = "; ".join(f"{rid} " + " ".join(f"#{b}" + (f" x{phase.refs[b]}"
                                                        if phase.refs[b] != 1 else "")
                                            for b in t) for rid, t in phase.tables.items())
    stats = snap["prefix_cache"]
    cached = sum(1 for b in snap["gpu"]["blocks"] if b["cached"])
    return [f"Block tables (block, x ref_cnt when not 1): {tables or 'none'}.",
            f"Free queue, head -> tail: {queue_words(phase.free_order)} (#0 is the null "
            "block, never free).",
            f"Prefix cache: {plural(cached, 'hashed block')}; lookups so far hit "
            f"{stats['hits']} of {plural(stats['queries'], 'queried token')} (vLLM's logged "
            "hit rate counts every lookup, retries included)."]


def sentences(phase: pv.Phase, ctx: TourContext) -> tuple[list[str], list[str]]:
    v = ctx.values
    snap = phase.snapshot
    if phase.kind == "start":
        prompts = v["prompts"]
        when = [f"{n} ({p.length} tokens, step {p.arrival})" for n, p in zip(ctx.names, prompts)]
        short = [f"{plural(len(prompts), 'prompt')} will arrive: {join(when)}."]
        if v["enable_prefix_caching"]:
            same = _shared_words(snap)
            short.append(f"Each full block ({plural(v['block_size'], 'token')}) is named by a "
                         "hash of its tokens and the hash before it"
                         + (f": {same}." if same else ", and no two prompts share one."))
        else:
            short.append("Prefix caching is off: no block is hashed, so no two requests can "
                         "share a block.")
        usable = v["num_gpu_blocks"] - 1
        short.append(f"All {plural(usable, 'usable block')} {verb(usable, 'is', 'are')} free;"
                     f" #0 is the null block, never handed out.")
        full = []
        bs = v["block_size"]
        for r in snap["requests"]:
            hashes = r["block_hashes"]
            full.append(f"{r['request_id']}: {plural(r['seqs'][0]['prompt_len'], 'prompt token')}"
                        f" ({toks(ctx, r['seqs'][0]['token_ids'])}), max_tokens "
                        f"{r['max_tokens']}, arrives in step {ctx.arrival[r['request_id']]}.")
            for i in range(len(hashes)):
                full.append(f"  block {i}: {hash_of(ctx, snap, r['request_id'], i)}.")
            rest = r["seqs"][0]["prompt_len"] % bs
            if rest:
                full.append(f"  block {len(hashes)}: {plural(rest, 'token')}, not full: no "
                            "hash, never cached.")
        return short, full + state_lines(ctx, phase)
    if phase.kind == "free":
        short, full = free_sentences(ctx, phase)
    else:
        short, full = run_sentences(ctx, phase)
    return short, full + state_lines(ctx, phase)


def _common(a, b):
    for x, y in zip(a, b):
        if x != y:
            return
        yield x


def _shared_words(snap: dict) -> str:
    out = []
    reqs = snap["requests"]
    for i, r in enumerate(reqs):
        for o in reqs[:i]:
            k = sum(1 for _ in _common(r["block_hashes"], o["block_hashes"]))
            if k:
                out.append(f"{r['request_id']}'s first {plural(k, 'hash', 'hashes')} "
                           f"{'equals' if k == 1 else 'equal'} {o['request_id']}'s")
                break
    return join(out)


def narrate(phase: pv.Phase, ctx: TourContext) -> str:
    short, _ = sentences(phase, ctx)
    name = label(phase)
    if ctx.docs and name in DOCS_NOTE:
        short = short[:2] + [DOCS_NOTE[name]]
    text = " ".join(short[:3])
    return f"{name[0].upper()}{name[1:]}: {text}"


def details(phase: pv.Phase, ctx: TourContext) -> list[str]:
    _, full = sentences(phase, ctx)
    name = label(phase)
    if ctx.docs and name in DOCS_NOTE:
        full.append(DOCS_NOTE[name] + " (VLLM-V1.md section 6 replays the docs' example on "
                    "v0.25.1.)")
    return full
