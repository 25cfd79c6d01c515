"""V1's prefix cache and free queue (vLLM v0.25.1): how many prompt tokens a lookup hits,
where a finished request's blocks go in the free queue, which cached block is evicted next.

`prefix_hit` and `evict_next` read two engine steps (sim.trace.Step); `free_queue` reads
two phases of the prefix-caching page (pages.views.prefix_view.Phase), where each finished
request's release is a frame of its own. `phases` adapts the engine kinds to phases.
"""
from __future__ import annotations

from pages.framework.question import Question, ask
from pages.questions import code, remember
from pages.questions.queue import ALLOCATED, Walk
from pages.questions.state import Named, free, is_v1, name, request
from pages.views.prefix_view import would_hit
from pages.views.text import a, join, plural
from sim.events import (
    Admitted,
    BlockAllocated,
    BlockEvicted,
    BlockFreed,
    PrefixCacheHit,
)


def _shares_prefix(r: dict, snap: dict) -> bool:
    mine = set(r.get("block_hashes", ()))
    return any(mine & set(o.get("block_hashes", ())) for o in snap["requests"]
               if o["request_id"] != r["request_id"])


def prefix_hit(step, nxt, ctx) -> Question | None:
    """A request is admitted: how many of its tokens does the prefix-cache lookup find?
    (Whole blocks only, and never the last token: it must be computed for its logits.)"""
    if step is None or nxt.step is None or nxt.error or not is_v1(step.snapshot):
        return None
    snap = step.snapshot
    bs = snap["block_size"]
    owner = {s["seq_id"]: r["request_id"] for r in nxt.snapshot["requests"] for s in r["seqs"]}
    for e in nxt.of_type(Admitted):
        # Where its own admission starts: its hit, its first new block, or the admission.
        idx = min(i for i, x in enumerate(nxt.events)
                  if (isinstance(x, PrefixCacheHit) and x.request_id == e.request_id)
                  or (isinstance(x, BlockAllocated) and owner.get(x.seq_ids[0]) == e.request_id)
                  or x is e)
        if any(isinstance(x, (BlockEvicted, BlockFreed, Admitted)) for x in nxt.events[:idx]):
            return None      # an earlier request of this step changed the cache first
        r = request(snap, e.request_id)
        if r is None or "block_hashes" not in r:
            return None
        if e.request_id in snap["queues"].get("skipped_waiting", ()) \
                or r["seqs"][0]["num_computed_tokens"]:
            continue         # its KV was loaded by a connector (the CPU tier), not looked up
        hits = would_hit(r, snap)
        if not hits and not (_shares_prefix(r, snap) and _cached(snap)):
            continue
        n = r["seqs"][0]["len"]
        correct = len(hits) * bs
        full = n // bs * bs
        cached = sum(1 for h in r["block_hashes"] if h in _cached(snap))
        candidates = [n, full, cached * bs, correct + bs, correct - bs, 0]
        candidates = [c for c in candidates if 0 <= c <= n]
        resumed = r["seqs"][0]["len"] > r["seqs"][0]["prompt_len"]
        what = (f"{e.request_id} comes back to be recomputed ({n} tokens)" if resumed else
                f"{e.request_id} is admitted with {a(f'{n}-token prompt')}")
        prompt = (f"In {name(nxt, ctx)}, {what}. How many of its tokens does the prefix-cache "
                  "lookup find, so that they are not computed again?")
        cap = (n - 1) // bs
        reasons = [f"V1 looks the request's full blocks up by hash, from the first, and stops "
                   f"at the first miss (get_computed_blocks, blocks of {bs})"]
        if hits:
            reasons.append(("its first block is" if len(hits) == 1 else
                            f"its first {len(hits)} blocks are") + " cached "
                           f"({', '.join('#' + str(b) for b in hits)}), so "
                           f"{correct} tokens are read, not computed")
        else:
            reasons.append("its first block is not in the prefix cache, so nothing is read")
        if len(hits) == cap and cached > cap:
            reasons.append(f"the lookup may cover at most {n - 1} tokens (max_cache_hit_length "
                           "= num_tokens - 1): the last token must be computed for its "
                           f"logits, so block {cap + 1} is not taken from the cache even if it "
                           "is cached")
        explanation = "; ".join(reasons) + "."
        return ask("prefix-hit", prompt, correct, candidates, lambda t: plural(t, "token"),
                   explanation, code.COMPUTED_BLOCKS, {"request_id": e.request_id})
    return None


def _cached(snap: dict) -> set[str]:
    return {b["hash"] for b in snap["gpu"]["blocks"] if b.get("cached") and b["hash"]}


def evict_next(step, nxt, ctx) -> Question | None:
    """A step takes blocks from the head of the free queue: whose cached hash is evicted
    first? Blocks without a hash (at the head) are taken without evicting anything, a hit's
    touch takes its blocks out of the queue first, and blocks freed earlier in the step go
    to the head or the tail. Asked when the answer is not the queue's head."""
    if step is None or nxt.step is None or nxt.error or not is_v1(step.snapshot):
        return None
    if not nxt.of_type(BlockEvicted):
        return None
    snap = step.snapshot
    walk = Walk(snap)
    popped: list[int] = []
    freed: list[int] = []
    predicted = None
    for e in nxt.events:
        block = walk.see(e)
        if isinstance(e, BlockFreed) and e.device == "gpu":
            freed.append(e.physical)
        if isinstance(e, ALLOCATED):
            if block is None:
                return None
            if walk.evicts:
                predicted = block
                break
            popped.append(block)
    order = free(snap)
    if predicted is None or not order or predicted == order[0]:
        return None
    blocks = snap["gpu"]["blocks"]
    hashed = [b for b in order if blocks[b]["hash"] is not None]
    candidates = [order[0], hashed[-1] if hashed else None, order[-1]] + hashed[:3] + freed[:1]
    if walk.touched:
        candidates = walk.touched[:1] + candidates
    before = []
    if walk.touched:
        before.append(f"a prefix hit touches {', '.join('#' + str(b) for b in walk.touched)}")
    if freed:
        before.append(f"{', '.join('#' + str(b) for b in freed)} "
                      f"{'is' if len(freed) == 1 else 'are'} freed")
    prompt = (f"In {name(nxt, ctx)}, " + (", then ".join(before) + ", then " if before else "")
              + "new blocks are taken from the head of the free queue "
              f"({', '.join('#' + str(b) for b in order[:6])}{' …' if len(order) > 6 else ''}). "
              "Whose cached hash is evicted first?")
    parts = ["get_new_blocks pops blocks from the head of the free queue; a popped block that "
             "still holds a hash is evicted from the prefix cache as it is reused"]
    if freed:
        parts.append("a block freed in the step goes to the head if it has no hash and to the "
                     "tail if it has one (free_blocks)")
    if popped:
        parts.append(f"{', '.join('#' + str(b) for b in popped)} "
                     f"{'has' if len(popped) == 1 else 'have'} no hash, so taking "
                     f"{'it' if len(popped) == 1 else 'them'} evicts nothing")
    if walk.touched:
        parts.append(f"touch took {', '.join('#' + str(b) for b in walk.touched)} out of the "
                     "queue first: a hit block is reused, not evicted")
    parts.append(f"the first hashed block popped is #{predicted}")
    return ask("evict-next", prompt, predicted, candidates, lambda b: f"#{b}",
               "; ".join(parts) + ".", code.GET_NEW_BLOCKS, {})


# -- the prefix-caching page's phases ---------------------------------------------------------

def free_queue(phase, nxt, ctx) -> Question | None:
    """A finished request's blocks go back, last block first: which go to the head of the
    free queue (no hash: handed out first) and which to the tail (hashed: kept for hits,
    evicted last)?"""
    if phase is None or nxt.kind != "free":
        return None
    freed = [b for b, where in nxt.released if where != "held"]
    if len(freed) < 2:
        return None
    step_freed = {e.physical for e in nxt.step.of_type(BlockFreed)}
    if not [b for b in nxt.step.snapshot["gpu"]["free_order"] if b not in step_freed]:
        return None      # no block stays in the queue to tell the head from the tail
    heads = tuple(b for b, where in nxt.released if where == "head")
    tails = tuple(b for b, where in nxt.released if where == "tail")
    held = [b for b, where in nxt.released if where == "held"]
    rid = nxt.freed_request
    names = join([f"#{b}" for b in freed])
    prompt = (f"{rid} has finished, and its blocks go back last block first: {names}"
              + (f" ({join(['#' + str(b) for b in held])} stay: another request holds "
                 f"{'it' if len(held) == 1 else 'them'})" if held else "")
              + ". Which of them go to the head of the free queue, to be handed out first?")
    candidates = [tuple(freed), (), tails, tuple(freed[:1]), tuple(freed[-1:])]
    why = ("BlockPool.free_blocks sends a block without a hash (never filled, so no later "
           "prompt can hit it) to the head, where it is reused first, and a block with a hash "
           "to the tail, so cached prefixes are evicted last, the request's last block "
           "before its first")
    what = (f": {', '.join('#' + str(b) for b in heads)} "
            f"{'has' if len(heads) == 1 else 'have'} no hash" if heads else
            ": every one of them is full and hashed, so all go to the tail")
    return ask("free-queue", prompt, heads, candidates, _head_words, why + what + ".",
               code.FREE_BLOCKS, {"request_id": rid, "freed": tuple(freed)})


def _head_words(blocks: tuple) -> str:
    return "None: all go to the tail" if not blocks else join([f"#{b}" for b in blocks])


def phases(*kinds, step_name=None):
    """Adapt engine-step generators to the prefix-caching page's phases: a "run" phase is
    asked about from the phase before it (the end of the step before). `step_name(step)`:
    the page's name for an engine step."""

    def adapt(generate):
        def on_phases(phase, nxt, ctx):
            if phase is None or nxt.kind != "run":
                return None
            q = generate(phase.step, nxt.step, Named(ctx, step_name) if step_name else ctx)
            return remember(q, phase.step, nxt.step) if q is not None else None
        return on_phases

    return [(kind, adapt(g)) for kind, g in kinds]
