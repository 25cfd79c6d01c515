"""Block-level questions for either engine's trace (sim.trace.Step pairs): which block a
new block is, whether a sequence's next token needs one, copy-on-write, what is freed.

Each kind reads `step` (what the reader sees), applies vLLM's rule, and checks the rule's
case against `next_step` only to pick what to ask about (a step with no allocation has
no "which block" question). The check (tests/pages/test_questions.py) holds the answers
to the engine's events.
"""
from __future__ import annotations

from pages.framework.question import Question, ask
from pages.questions import code
from pages.questions.queue import ALLOCATED, Walk
from pages.questions.state import (
    blocks_words,
    free,
    in_flight,
    is_v1,
    labels,
    last_in_flight,
    name,
    ordinal,
    ref_count,
    running_seqs,
    seqs,
    table,
    to_compute,
)
from pages.views.text import join
from sim.events import (
    BlockAllocated,
    BlockFreed,
    CopyOnWrite,
    GroupBlockAllocated,
    OffloadStoreJob,
    Preempted,
    SwappedIn,
    SwappedOut,
)

# Events that leave the free list as it was (the rest are handled or make the step
# too tangled to ask about).
_NEUTRAL = {"RequestArrived", "Admitted", "ChunkScheduled", "BlockCached", "KVWritten",
            "TokenSampled", "Forked", "SeqFreed", "PromptIgnored", "BlockEvicted",
            "Preempted", "SwappedOut"}


def _ran(step) -> bool:
    return step is not None and step.step is not None and step.error is None


# -- next-block ---------------------------------------------------------------------------

def next_block(step, nxt, ctx) -> Question | None:
    """Which physical block does a new block of this step get? Asked about an allocation
    whose answer is not simply the first block the picture lists: one that comes after
    others in the same step, or after this step freed blocks (v0.5.5 pushes them on its
    stack; V1 sends them to the head or the tail of its free queue). The free list is
    walked through the step's events before it."""
    if not _ran(nxt) or step is None:
        return None
    before = step.snapshot
    v1 = is_v1(before)
    order = free(before)
    if not order:
        return None
    names = labels(before, nxt.snapshot)
    stack = list(order)
    walk = Walk(before)
    earlier: list = []               # what the prompt tells happened before, in order
    pushed: list[int] = []
    subject = None
    for e in nxt.events:
        kind = type(e).__name__
        if v1:
            if isinstance(e, (CopyOnWrite, SwappedIn, SwappedOut)):
                break
            predicted = walk.see(e)
            if isinstance(e, BlockFreed) and e.device == "gpu":
                pushed.append(e.physical)
            if not isinstance(e, ALLOCATED):
                continue
            if predicted is None:
                return None
            if isinstance(e, GroupBlockAllocated):
                who, what = e.request_id, (e.request_id, e.logical, e.kv_cache_group_id)
                about = {"request_id": e.request_id, "group": e.kv_cache_group_id,
                         "logical": e.logical}
            else:
                who = names.get(e.seq_ids[0], "?")
                what = (who, e.logical)
                about = {"seq_id": e.seq_ids[0], "logical": e.logical}
            if (earlier or pushed or walk.touched) and predicted != order[0]:
                subject = (about, who, e.logical, predicted, what, list(earlier),
                           list(pushed), list(walk.touched), getattr(e, "kv_cache_group_id",
                                                                     None), walk.evicts)
            earlier.append(what)
            continue
        if isinstance(e, (BlockAllocated, CopyOnWrite)):
            if isinstance(e, BlockAllocated) and e.device != "gpu":
                return None
            predicted = stack.pop(0) if stack else None
            if predicted is None:
                return None
            sid = e.seq_ids[0] if isinstance(e, BlockAllocated) else e.seq_id
            who = names.get(sid, "?")
            what = ((who, e.logical) if isinstance(e, BlockAllocated)
                    else (who, f"a copy of block {e.src} (copy-on-write)"))
            if (isinstance(e, BlockAllocated) and (earlier or pushed)
                    and predicted != order[0]):
                subject = ({"seq_id": sid, "logical": e.logical}, who, e.logical, predicted,
                           what, list(earlier), list(pushed), [], None, False)
            earlier.append(what)
        elif isinstance(e, BlockFreed):
            if e.device != "gpu":
                continue
            stack.insert(0, e.physical)
            pushed.append(e.physical)
        elif kind not in _NEUTRAL:
            break
    return _ask_next(subject, before, nxt, order, v1, ctx) if subject else None


def _ask_next(subject, before, nxt, order, v1, ctx) -> Question | None:
    about, who, logical, block, what, earlier, pushed, touched, group, evicts = subject
    hashed = {i for i, b in enumerate(before["gpu"]["blocks"]) if b.get("hash")}
    groups = before.get("kv_cache_groups") or []
    steps = []
    if touched:
        steps.append(f"a prefix hit takes {blocks_words(touched)} out of the free queue")
    if pushed:
        steps.append(f"{blocks_words(pushed)} {'is' if len(pushed) == 1 else 'are'} freed "
                     "(in that order)")
    if earlier:
        steps.append("new blocks go to " + _allocations(earlier, groups))
    where = (f"its logical block {logical}" if group is None else
             f"its logical block {logical} in {_group_name(groups, group)}")
    prompt = (f"In {name(nxt, ctx)}, first {', then '.join(steps)}. Then {who} needs a new "
              f"block ({where}). Which physical block does {who} get?")
    if "seq_id" in about:
        seq = seqs(before).get(about["seq_id"])
        mine = table(seq[1]) if seq else []
    else:
        mine = []
    candidates = [order[0], order[-1]]
    if mine:
        candidates += [mine[-1] + 1, mine[-1] - 1]
    candidates += [min(order), max(order)] + order[1:4] + pushed[:1]
    free_set = set(order) | set(pushed)
    candidates = [c for c in candidates if c in free_set and c != block]
    taken = len(earlier)
    if v1:
        rule = "V1 hands out blocks from the head of its free queue (popleft_n)"
        if pushed:
            rule += ("; a freed block goes to the head when it has no hash and to the tail "
                     "when it has one (free_blocks)")
        if touched:
            rule += "; a prefix hit's free block leaves the queue where it is (touch)"
        rule += f": the queue starts {', '.join(map(str, order[:taken + 2]))}"
        why = (f"; after those changes, {who}'s block comes off the head: block {block}."
               if pushed or touched else
               f"; this iteration takes {taken} before {who}'s, so {who} gets block {block}.")
        if evicts or block in hashed:
            why += (" It still held a cached hash, so taking it evicts that hash from the "
                    "prefix cache.")
        where_code = code.GET_NEW_BLOCKS + "; " + code.FREE_BLOCKS if pushed else \
            code.GET_NEW_BLOCKS
    else:
        rule = ("v0.5.5's free list is a stack: a freed block is pushed on top and "
                "allocate() pops the top")
        if pushed:
            rule += (f", so after the frees the top is {pushed[-1]}, the last one freed"
                     + (f", then {', '.join(map(str, pushed[-2::-1]))}" if len(pushed) > 1
                        else ""))
        else:
            rule += f" (the list reads {', '.join(map(str, order[:taken + 2]))} from the top)"
        why = (f"; {plural_taken(taken)} taken before {who}'s, so {who} gets block {block}."
               if taken else f"; {who}'s is the first taken, so it gets block {block}.")
        where_code = code.STACK_ALLOCATE
    return ask("next-block", prompt, block, candidates, lambda n: f"block {n}", rule + why,
               where_code, about)


def _group_name(groups: list, gid: int) -> str:
    """"the full-attention group" / "sliding window 1" (as the hybrid page names them)."""
    if not groups:
        return f"group {gid}"
    kinds = [g["kind"] for g in groups]
    if kinds[gid] == "full_attention":
        return "the full-attention group"
    return f"sliding window {sum(1 for k in kinds[:gid + 1] if k != 'full_attention')}"


def _allocations(earlier: list, groups: list | None = None) -> str:
    """[("A", 0), ("A", 1), ("B", 0)] -> "A's logical blocks 0 and 1, then B's logical
    block 0"; a hybrid model's allocations name their group."""
    runs: list[tuple[object, list]] = []
    for item in earlier:
        key = (item[0], item[2]) if len(item) == 3 else item[0]
        what = item[1]
        if runs and runs[-1][0] == key and not isinstance(what, str) \
                and not isinstance(runs[-1][1][-1], str):
            runs[-1][1].append(what)
        else:
            runs.append((key, [what]))
    parts = []
    for key, items in runs:
        who, group = key if isinstance(key, tuple) else (key, None)
        place = f" in {_group_name(groups or [], group)}" if group is not None else ""
        if isinstance(items[0], str):
            parts.append(f"{items[0]} for {who}")
        elif len(items) == 1:
            parts.append(f"{who}'s logical block {items[0]}{place}")
        else:
            parts.append(f"{who}'s logical blocks {join([str(i) for i in items])}{place}")
    return ", then ".join(parts)


def plural_taken(n: int) -> str:
    return "one block is" if n == 1 else f"{n} blocks are"


# -- new-block (and copy-on-write as one of its answers) -----------------------------------

def plan_appends(snap: dict, group: dict) -> dict[int, tuple[str, int]]:
    """vLLM v0.5.5's append_slots for one group's running sequences, in order, the way the
    block manager answers them: {seq_id: (action, last block)} with action "new" (the
    token starts a logical block the table lacks), "cow" (its last block is shared: copy
    it first; each copy drops the shared block's ref count by one, so the last writer
    finds it unshared) or "none" (write in place)."""
    bs = snap["block_size"]
    refs: dict[int, int] = {}
    out = {}
    for s in group["seqs"]:
        if s["status"] != "running":
            continue
        blocks = table(s)
        pos = s["len"] - 1
        if not blocks or pos // bs >= len(blocks):
            out[s["seq_id"]] = ("new", blocks[-1] if blocks else -1)
            continue
        last = blocks[-1]
        count = refs.setdefault(last, ref_count(snap, last))
        if count > 1:
            refs[last] = count - 1
            out[s["seq_id"]] = ("cow", last)
        else:
            out[s["seq_id"]] = ("none", last)
    return out


def _v1_need(snap: dict, s: dict) -> tuple[str, int]:
    bs = snap["block_size"]
    blocks = table(s)
    need = -(-(s["num_computed_tokens"] + 1) // bs)
    return ("new" if need > len(blocks) else "none", blocks[-1] if blocks else -1)


def decoding(step, nxt) -> list[tuple[dict, dict]]:
    """(request, sequence) running in `step` with only its newest token to compute, that
    still runs (or finishes) in `nxt`: a decode in the next step."""
    after = seqs(nxt.snapshot)
    out = []
    for r, s in running_seqs(step.snapshot):
        if to_compute(r, s) != 1 or last_in_flight(r, s):
            continue
        later = after.get(s["seq_id"])
        if later is None:
            continue
        status = later[1]["status"]
        if status == "running" and later[1]["num_computed_tokens"] == s["num_computed_tokens"] + 1:
            out.append((r, s))
        elif status.startswith("finished") and r["request_id"] in nxt.finished:
            out.append((r, s))
    return out


def new_block(step, nxt, ctx) -> Question | None:
    """Does this sequence's next token need a new block? (v0.5.5: or a copy.)"""
    if not _ran(nxt) or step is None:
        return None
    if nxt.of_type(Preempted, SwappedOut, SwappedIn):
        return None      # who runs depends on the preemption: another question
    before = step.snapshot
    v1 = is_v1(before)
    candidates = decoding(step, nxt)
    if not candidates:
        return None
    r, s = candidates[nxt.index % len(candidates)]
    action, last = _v1_need(before, s) if v1 else plan_appends(before, r)[s["seq_id"]]
    names = labels(before, nxt.snapshot)
    who = names.get(s["seq_id"], r["request_id"])
    bs = before["block_size"]
    blocks = table(s)
    pos = s["num_computed_tokens"]        # the newest token's position
    logical = pos // bs
    flying = in_flight(r) > 0
    prompt = (f"In {name(nxt, ctx)}, {who} writes the key and value of its newest token. Does "
              f"{who} need a new block for it?")
    texts = {"none": f"No: it writes into its last block, {last}",
             "new": "Yes: it needs a new block",
             "cow": f"Yes: it first gets a copy of block {last} (copy-on-write)"}
    slots = f"{logical * bs}-{logical * bs + bs - 1}" if bs > 1 else str(logical * bs)
    when = ("is still being sampled by the step in flight (async scheduling: the worker takes "
            "it from the GPU), and its key and value are written in this step"
            if flying else "was sampled in the step before, and its key and value are "
            "written in the step after")
    first = (f"The newest token is {who}'s {ordinal(pos + 1)} (position {pos}): it {when}. "
             f"Position {pos} belongs to logical block {logical} (positions {slots}); "
             f"{who}'s table has {len(blocks)} block{'s' if len(blocks) != 1 else ''}")
    if action == "new":
        rest = (", so it needs one more: " + ("allocate_slots grows the table to cover "
                                              "the step's tokens." if v1 else
                                              "append_slots allocates a new block."))
    elif action == "cow":
        refs = ref_count(before, last)
        rest = (f", and block {last}, its last, is shared (ref count {refs} when the step "
                "starts). Writing into it would change the other sequences' cache, so "
                "append_slots copies it first and the token goes into the copy (a writer "
                "that finds its ref count already down to 1 writes in place).")
    else:
        shared = ref_count(before, last) > 1 and not v1
        rest = (f", so the token goes into block {last}"
                + (", whose other holders have copied it away this step, leaving its ref "
                   "count at 1: no copy." if shared else ", which no other sequence "
                   "shares: no new block and no copy."))
    return ask("new-block", prompt, action, ["none", "new", "cow"], texts.__getitem__,
               first + rest, code.ALLOCATE_SLOTS if v1 else code.APPEND_SLOTS,
               {"seq_id": s["seq_id"]}, order=("none", "new", "cow"))


# -- copy-on-write: who writes a shared block in place --------------------------------------

def cow(step, nxt, ctx) -> Question | None:
    """A partial block shared by several sequences of a group, each about to write its next
    token into it: which one writes in place (v0.5.5 append_slots)?"""
    if not _ran(nxt) or step is None or is_v1(step.snapshot):
        return None
    if nxt.of_type(Preempted, SwappedOut, SwappedIn):
        return None
    before = step.snapshot
    running = {s["seq_id"] for _, s in decoding(step, nxt)}
    names = labels(before, nxt.snapshot)
    for r, _ in running_seqs(before):
        plan = plan_appends(before, r)
        holders: dict[int, list[int]] = {}
        for sid, (action, last) in plan.items():
            if sid in running and action in ("cow", "none"):
                holders.setdefault(last, []).append(sid)
        for block, sids in holders.items():
            if len(sids) < 2 or ref_count(before, block) != len(sids):
                continue
            in_place = [sid for sid in sids if plan[sid][0] == "none"]
            correct = in_place[0] if in_place else "none"
            who = [names.get(sid, "?") for sid in sids]
            prompt = (f"In {name(nxt, ctx)}, {', '.join(who[:-1])} and {who[-1]} each write their "
                      f"next token into block {block}, which all {len(sids)} share (ref "
                      f"count {len(sids)}). Which of them writes into block {block} in place, "
                      "without a copy?")
            distract = [sids[0], "none", sids[1]] + sids[2:]

            def text(v, names=names) -> str:
                return "none: each gets a copy" if v == "none" else names.get(v, "?")

            explanation = (f"append_slots runs for the sequences in order ({', '.join(who)}). "
                           f"Each finds block {block} shared, copies it (copy-on-write) and "
                           "drops one reference, so the last one finds its ref count at 1 and "
                           f"writes in place: {names.get(correct, '?')}. That makes "
                           f"{len(sids) - 1} cop{'y' if len(sids) == 2 else 'ies'}, not "
                           f"{len(sids)}.")
            return ask("cow", prompt, correct, distract, text, explanation, code.APPEND_SLOTS,
                       {"block": block, "seq_ids": tuple(sids)}, order="mixed")
    return None


# -- blocks-freed -------------------------------------------------------------------------

def finished_frees(step, nxt, ctx) -> Question | None:
    """A request finishes: which of its blocks return to the free list? (A block shared
    with a sequence that lives on stays; each freed table drops one reference.)"""
    if not _ran(nxt) or step is None or not nxt.finished:
        return None
    before = step.snapshot
    if nxt.of_type(Preempted, SwappedOut, SwappedIn, CopyOnWrite):
        return None
    rid = nxt.finished[0]
    r = next((x for x in before["requests"] if x["request_id"] == rid), None)
    if r is None:
        return None
    tier = before.get("cpu_tier")
    if (tier is not None and (tier["jobs"] or nxt.of_type(OffloadStoreJob))) or any(
            x.get("kv_transfer_params") for x in before["requests"]):
        # A KV connector's request_finished may hold the blocks until its transfers are
        # done (delay_free_blocks: a store to the CPU tier, a read by a decode instance).
        return None
    held: dict[int, int] = {}
    for s in r["seqs"]:
        for b in table(s):
            held[b] = held.get(b, 0) + 1
    if not held:
        return None
    added = {e.physical for e in nxt.of_type(BlockAllocated) if e.device == "gpu"}
    if added:
        return None      # the step also grows tables: another question
    # Every request finishing in this step drops its references, one after another.
    finishing: dict[int, int] = {}
    for x in before["requests"]:
        if x["request_id"] in nxt.finished:
            for s in x["seqs"]:
                for b in table(s):
                    finishing[b] = finishing.get(b, 0) + 1
    refs = {b: ref_count(before, b) for b in held}
    correct = tuple(sorted(b for b in held if refs[b] <= finishing[b]))
    shared = tuple(sorted(b for b in held if held[b] > 1 or refs[b] > held[b]))
    own = tuple(sorted(b for b in held if held[b] == 1 and refs[b] == 1))
    candidates = [tuple(sorted(held)), own, shared, ()]
    others = [x for x in nxt.finished if x != rid]
    also = f" ({join(others)} {'finishes' if len(others) == 1 else 'finish'} too)" \
        if others else ""
    prompt = (f"{rid} finishes in {name(nxt, ctx)}{also}. Which of its blocks go back to the "
              "free list?")
    v1 = is_v1(before)
    if v1:
        rule = ("V1 frees a finished request's blocks at once (kv_cache_manager.free, last "
                "block first): each loses one reference, and one at 0 joins the free queue")
    else:
        rule = ("v0.5.5 frees every sequence of a finished request (BlockSpaceManagerV1.free): "
                "each block loses one reference per table that held it, and one at ref count "
                "0 goes back to the free list")
    kept = [b for b in held if b not in correct]
    why = (f": {blocks_words(correct)}." if not kept else
           f": {blocks_words(correct)}; {blocks_words(sorted(kept))} "
           f"{'is' if len(kept) == 1 else 'are'} still held by a request that goes on.")
    if others and any(refs[b] > held[b] for b in correct):
        why += (" A block it shares with a request finishing in the same step loses both "
                "references.")
    return ask("blocks-freed", prompt, correct, candidates, _set_words, rule + why,
               code.FREE_BLOCKS if v1 else code.FREE_V055, {"request_id": rid})


def _set_words(blocks: tuple) -> str:
    return "none of them" if not blocks else blocks_words(blocks)
