"""Narration written from a step's events, so the text and the picture cannot disagree.

Two voices, for either engine (vLLM v0.5.5, sim/core, or V1, sim/v1):

- `story` tells a step in at most three short sentences, cause, then effect, then
  consequence, for the common cases: a preemption, an admission (prefill), a swap-in, a
  finish, a decode that needs new blocks, a plain decode. It names what V1 does differently
  when the step comes from V1 (no prefill-only steps, recompute instead of swap, blocks that
  stay cached after their request ends).
- `step_sentences` (and `describe_step`, the same sentences after "Iteration N.") give the
  full account of a step, every event in turn: what a page shows one click away.

Names follow vLLM's vocabulary.
"""
from __future__ import annotations

from dataclasses import replace

from pages.views.kv_view import waste_stats
from pages.views.text import join, noun, plural, verb
from sim.events import (
    Aborted,
    Admitted,
    BlockAllocated,
    BlockCached,
    BlockEvicted,
    BlockFreed,
    CopyOnWrite,
    Forked,
    Preempted,
    PrefixCacheHit,
    PromptIgnored,
    RequestArrived,
    RequestFinished,
    SwappedIn,
    SwappedOut,
    WaitingForRemoteKVs,
)

FINISH_WORDS = {"finished_stopped": "stopped on its end-of-sequence token",
                "finished_length_capped": "reached max_tokens",
                "finished_aborted": "was aborted",
                "finished_ignored": "was ignored"}


def blocks_list(numbers: list[int]) -> str:
    if not numbers:
        return "no blocks"
    if len(numbers) == 1:
        return f"block {numbers[0]}"
    return "blocks " + ", ".join(str(n) for n in numbers[:-1]) + f" and {numbers[-1]}"


def _v1(step) -> bool:
    return step.snapshot.get("engine") == "v1"


def describe_step(step, labels: dict[int, str], request_of: dict[int, str]) -> str:
    """A few sentences for one engine step (a sim.trace.Step). `labels`: seq_id -> display
    name; `request_of`: seq_id -> request id."""
    return f"Iteration {step.step}. " + " ".join(step_sentences(step, labels, request_of))


def step_sentences(step, labels: dict[int, str], request_of: dict[int, str]) -> list[str]:
    """Every event of one engine step, in order of cause, as plain sentences (the step's
    full account; describe_step joins them)."""
    ev = step.events
    scheduled = step.scheduled
    v1 = _v1(step)
    sentences: list[str] = []

    arrived = [e.request_id for e in ev if isinstance(e, RequestArrived)]
    if arrived:
        one = len(arrived) == 1
        sentences.append(f"{join(arrived)} arrive{'s' if one else ''} and "
                         f"join{'s' if one else ''} the back of the waiting queue.")
    for e in ev:
        if isinstance(e, PromptIgnored):
            why = ("it is longer than the prompt limit" if e.reason == "prompt_limit"
                   else "it would not fit even in an empty cache")
            sentences.append(f"{e.request_id} ({e.num_tokens} tokens) is ignored: {why}.")
        elif isinstance(e, Aborted):
            sentences.append(f"{e.request_id} is aborted (it was {e.queue}).")

    for e in ev:
        if isinstance(e, Preempted):
            if v1:
                who = ("nobody is behind it in running, so it preempts itself"
                       if e.victim_is_self else f"{e.request_id} is the last of running")
                sentences.append(f"{e.needed_by} needs a new block for its tokens and "
                                 f"allocate_slots finds none free: {who}. Preempted by "
                                 "recompute (V1 has no swap space): its blocks are freed, "
                                 "its computed tokens forgotten, and it goes to the front of "
                                 "waiting.")
                continue
            who = ("nothing else is left to preempt, so it preempts itself" if e.victim_is_self
                   else f"{e.request_id} is the tail of running")
            sentences.append(f"{e.needed_by} needs a free block for its next token and none "
                             f"is free: {who}. Preempted by {e.mode}.")
        elif isinstance(e, SwappedOut):
            one = len(e.mapping) == 1
            sentences.append(f"{e.request_id}'s {len(e.mapping)} block{'' if one else 's'} "
                             f"{'is' if one else 'are'} swapped out to the CPU "
                             f"({', '.join(f'{g}->C{c}' for g, c in e.mapping)}).")
        elif isinstance(e, SwappedIn):
            sentences.append(f"{e.request_id} is swapped back in under new GPU numbers "
                             f"({', '.join(f'C{c}->{g}' for c, g in e.mapping)}).")

    admitted = [e for e in ev if isinstance(e, Admitted)]
    if v1:
        sentences += _v1_schedule_sentences(step, labels, request_of)
    elif admitted:
        parts = []
        for a in admitted:
            prompt_blocks = _prompt_blocks(ev, a.request_id, request_of)
            what = "recomputes its prompt and generated tokens" if a.recompute else "prefills"
            parts.append(f"{a.request_id} {what} ({a.num_tokens} tokens -> "
                         f"{blocks_list(prompt_blocks)})")
        sentences.append("Prefill step: " + join(parts) + ". No decodes run in a step that "
                         "admits prompts.")
    elif scheduled:
        names = [s.request_id for s in scheduled]
        multi = any(s.num_seqs > 1 for s in scheduled)
        verb_ = ("each add one token per sequence" if multi and len(names) > 1
                 else "adds one token per sequence" if multi
                 else "each add one token" if len(names) > 1 else "adds one token")
        sentences.append(f"Decode step: {join(names)} {verb_}.")
        sentences += _new_block_sentences(ev, labels, request_of, _loading(ev))
    elif not sentences:
        sentences.append("Nothing to run this step.")

    for e in ev:
        if isinstance(e, CopyOnWrite):
            sentences.append(f"{labels.get(e.seq_id, e.seq_id)} writes into shared block "
                             f"{e.src}: copy-on-write to block {e.dst}.")
    by_parent: dict[int, list] = {}
    for e in ev:
        if isinstance(e, Forked):
            by_parent.setdefault(e.parent_seq_id, []).append(e)
    for parent_id, forks in by_parent.items():
        kids = [labels.get(f.child_seq_id, str(f.child_seq_id)) for f in forks]
        parent = labels.get(parent_id, str(parent_id))
        sentences.append(f"{join(kids)} fork{'s' if len(kids) == 1 else ''} from {parent}, "
                         f"sharing {blocks_list(list(forks[0].shared_blocks))}.")
    if v1:
        cached = [e.physical for e in ev if isinstance(e, BlockCached)]
        if cached:
            sentences.append(f"{blocks_list(cached).capitalize()} "
                             f"{verb(cached, 'is', 'are')} full and enter"
                             f"{'s' if len(cached) == 1 else ''} the prefix cache (hashed).")
    for e in ev:
        if isinstance(e, RequestFinished):
            status = e.status.split(",")[-1]
            sentences.append(f"{e.request_id} {FINISH_WORDS.get(status, status)}.")
    freed = [e.physical for e in ev if isinstance(e, BlockFreed) and e.device == "gpu"]
    if freed and v1:
        sentences.append(_v1_free_sentence(step, freed))
    elif freed:
        sentences.append(f"GPU {blocks_list(freed)} return{'s' if len(freed) == 1 else ''} "
                         "to the free list.")
    return sentences


def _new_block_sentences(ev, labels, request_of, skip: set[str]) -> list[str]:
    """One sentence per request and logical block that a decode had to allocate: the
    samples or beams of one request usually cross a block boundary together."""
    out = []
    new_blocks: dict[tuple[str, int], list] = {}
    for e in ev:
        if isinstance(e, BlockAllocated) and e.device == "gpu":
            rid = request_of.get(e.seq_ids[0], "")
            if rid in skip:
                continue
            new_blocks.setdefault((rid, e.logical), []).append(e)
    for (_, logical), es in new_blocks.items():
        who = [labels.get(e.seq_ids[0], str(e.seq_ids[0])) for e in es]
        if len(es) == 1:
            out.append(f"{who[0]}'s last block was full, so its new token starts "
                       f"logical block {logical} in physical block {es[0].physical}.")
        else:
            out.append(f"The last blocks of {join(who)} were full, so each new "
                       f"token starts logical block {logical} (physical "
                       f"{blocks_list([e.physical for e in es])}).")
    return out


def _v1_schedule_sentences(step, labels, request_of) -> list[str]:
    """V1's one token budget: the running requests' tokens, then the admitted ones, with
    their prefix-cache hits and evictions."""
    ev = step.events
    out = []
    admitted = [e for e in ev if isinstance(e, Admitted)]
    admitted_ids = {a.request_id for a in admitted}
    running = [s for s in step.scheduled if s.request_id not in admitted_ids]
    decodes = [s.request_id for s in running if not s.prefill]
    chunks = [s for s in running if s.prefill]
    if decodes:
        out.append(f"{join(decodes)} {verb(decodes, 'decodes', 'decode')} one token"
                   f"{'' if len(decodes) == 1 else ' each'}.")
    for s in chunks:
        out.append(f"{s.request_id} computes its next prompt chunk, {s.num_tokens} tokens.")
    out += _new_block_sentences(ev, labels, request_of, admitted_ids | _loading(ev))
    hits = {e.request_id: e for e in ev if isinstance(e, PrefixCacheHit)}
    for a in admitted:
        blocks = _prompt_blocks(ev, a.request_id, request_of)
        hit = hits.get(a.request_id)
        what = ("is resumed and recomputes" if a.recompute else "is admitted and computes")
        text = f"{a.request_id} {what} {plural(a.num_tokens, 'token')}"
        if hit is not None:
            text += (f" after a prefix-cache hit: its first {hit.num_tokens} tokens are read "
                     f"from {blocks_list(list(hit.blocks))}, not computed")
        text += f"; new {blocks_list(blocks)}." if blocks else "; no new block."
        out.append(text)
    if admitted and step.scheduled and len(step.scheduled) > len(admitted):
        out.append("One step, one token budget: V1 runs decodes and prompts together.")
    evicted = [e for e in ev if isinstance(e, BlockEvicted)]
    if evicted:
        nums = [e.physical for e in evicted]
        out.append(f"{blocks_list(nums).capitalize()} still held cached tokens of an "
                   f"earlier request: handed out again, {verb(nums, 'it leaves', 'they leave')}"
                   " the prefix cache (evicted).")
    if not step.scheduled and not out:
        out.append("Nothing to run this step.")
    return out


def _v1_free_sentence(step, freed: list[int]) -> str:
    blocks = step.snapshot["gpu"]["blocks"]
    kept = [n for n in freed if blocks[n]["ref_count"] == 0 and blocks[n].get("hash")]
    head = [n for n in freed if n not in kept]
    parts = []
    if head:
        parts.append(f"{blocks_list(head)} (no hash) to the head, handed out first")
    if kept:
        parts.append(f"{blocks_list(kept)} to the tail, still in the prefix cache")
    return f"GPU {blocks_list(freed)} go back to the free queue: " + join(parts) + "."


# -- the short narration: cause, effect, consequence -------------------------------------

def story_kind(step, request_of: dict[int, str] | None = None) -> str:
    """Which case `story` tells: "preemption", "admission", "swap_in", "finish",
    "new_blocks", "decode" or "idle"."""
    ev = step.events
    if any(isinstance(e, Preempted) for e in ev):
        return "preemption"
    if any(isinstance(e, Admitted) for e in ev):
        return "admission"
    if any(isinstance(e, SwappedIn) for e in ev):
        return "swap_in"
    if any(isinstance(e, RequestFinished) for e in ev):
        return "finish"
    if _decode_allocations(ev, request_of or {}, _loading(ev)):
        return "new_blocks"
    return "decode" if step.scheduled else "idle"


def story(step, labels: dict[int, str], request_of: dict[int, str], prev=None,
          reuse=()) -> list[str]:
    """At most three short sentences for one engine step: the cause, the effect, the
    consequence. `prev` (the step before, for the free blocks before this one) sharpens
    the preemption case; `reuse` ([(request, previous holder, blocks)], from
    reuse_by_step) names blocks that change hands."""
    ev = step.events
    snap = step.snapshot
    v1 = _v1(step)
    ignored = [e for e in ev if isinstance(e, PromptIgnored)]
    if ignored:
        # Told first; the rest of the step (without the ignored requests) after it.
        gone = {e.request_id for e in ignored}
        rest = [e for e in ev if not (isinstance(e, (PromptIgnored, RequestFinished,
                                                     RequestArrived))
                                      and e.request_id in gone)]
        out = [f"{e.request_id}'s {e.num_tokens}-token prompt "
               + ("is longer than the prompt limit" if e.reason == "prompt_limit"
                  else "would not fit even in an empty cache")
               + ", so v0.5.5 ignores it (finished_ignored)." for e in ignored[:1]]
        if len(ignored) > 1:
            out = [f"{join(sorted(gone))} would not fit even in an empty cache, so v0.5.5 "
                   "ignores them (finished_ignored)."]
        if rest or step.scheduled:
            out += story(replace(step, events=tuple(rest)), labels, request_of, prev,
                         reuse)[:2]
        return out
    before = prev.snapshot if prev is not None else None
    preempted = [e for e in ev if isinstance(e, Preempted)]
    if preempted:
        return _preemption_story(step, preempted[0], before, labels, request_of)
    admitted = [e for e in ev if isinstance(e, Admitted)]
    if admitted:
        return _admission_story(step, admitted, labels, request_of, reuse)
    swapped_in = [e for e in ev if isinstance(e, SwappedIn)]
    if swapped_in:
        if len(swapped_in) == 1:
            e = swapped_in[0]
            pairs = ", ".join(f"C{c}->{g}" for c, g in e.mapping)
            return [f"{e.request_id} fits back in: can_swap_in finds room for its "
                    f"{plural(len(e.mapping), 'block')}, one more for its next token and the "
                    "watermark.",
                    f"Its blocks are copied from the CPU into new GPU blocks ({pairs}).",
                    "Its block table changes, its tokens do not, and it decodes again."]
        ids = [e.request_id for e in swapped_in]
        pairs = "; ".join(f"{e.request_id}: " + ", ".join(f"C{c}->{g}" for c, g in e.mapping)
                          for e in swapped_in)
        return [f"{join(ids)} fit back in: can_swap_in finds room for their blocks, one more "
                "per next token and the watermark.",
                f"Their blocks are copied from the CPU into new GPU blocks ({pairs}).",
                "Their block tables change, their tokens do not, and they decode again."]
    finished = [e for e in ev if isinstance(e, RequestFinished)]
    new = _decode_allocations(ev, request_of, _loading(ev))
    if finished:
        return _finish_story(step, finished, new, labels, request_of, reuse)
    if new:
        return _new_block_story(step, new, labels, reuse)
    if step.scheduled:
        names = [s.request_id for s in step.scheduled]
        out = [f"{join(names)} {verb(names, 'has', 'each have')} a free slot in "
               f"{verb(names, 'its', 'their')} last block.",
               f"{'Each' if len(names) > 1 else 'It'} writes its new token's key and value "
               "there: no block is taken."]
        cached = [e.physical for e in ev if isinstance(e, BlockCached)]
        if v1 and cached:
            out.append(f"{blocks_list(cached).capitalize()} {verb(cached, 'is', 'are')} now "
                       f"full, so V1 hashes {verb(cached, 'it', 'them')} into the prefix "
                       "cache.")
        else:
            w = _waste(snap)
            empty = (f"{plural(w['empty_slots'], 'allocated slot')} "
                     f"{verb(w['empty_slots'], 'is', 'are')} still empty"
                     if w["empty_slots"] else "Every allocated slot now holds a token")
            free = w["free_blocks"]
            out.append(f"{empty}; " + (f"{plural(free, 'block')} {verb(free, 'is', 'are')} "
                                       "free." if free else "no block is free."))
        return out
    arrived = [e.request_id for e in ev if isinstance(e, RequestArrived)]
    if arrived:
        return [f"{join(arrived)} {verb(arrived, 'arrives', 'arrive')} but nothing runs."]
    return ["Nothing runs in this iteration."]


def _waste(snap: dict) -> dict:
    return waste_stats(snap)


def _loading(ev) -> set[str]:
    """Requests given blocks for KV a connector loads (WAITING_FOR_REMOTE_KVS): their new
    blocks are not a decode's."""
    return {e.request_id for e in ev if isinstance(e, WaitingForRemoteKVs)}


def _decode_allocations(ev, request_of, skip: set[str]) -> list:
    return [e for e in ev if isinstance(e, BlockAllocated) and e.device == "gpu"
            and request_of.get(e.seq_ids[0], "") not in skip]


def _reused(reuse, rid: str, nums) -> str:
    """", which A held before" when every block of `nums` changed hands; " (block 4 was
    A's)" when some did."""
    for who, before, blocks in reuse:
        common = [n for n in nums if n in blocks]
        if who == rid and common:
            if len(common) == len(nums):
                return f" (freed by {before})"
            return f" ({blocks_list(common)} freed by {before})"
    return ""


def _stay_free(n: int) -> str:
    return (f"{plural(n, 'block')} {verb(n, 'stays', 'stay')} free" if n
            else "no block is left free")


def _new_block_story(step, new, labels, reuse) -> list[str]:
    who = list(dict.fromkeys(labels.get(e.seq_ids[0], str(e.seq_ids[0])) for e in new))
    bs = step.snapshot["block_size"]
    cause = (f"{who[0]}'s last block was full ({bs} of {bs} slots)." if len(who) == 1 else
             f"The last blocks of {join(who)} were full.")
    parts = []
    for e in new:
        name = labels.get(e.seq_ids[0], str(e.seq_ids[0]))
        rid = name.split(".")[0]
        parts.append(f"{name}'s next token starts logical block {e.logical} in physical "
                     f"block {e.physical}{_reused(reuse, rid, [e.physical])}")
    effect = join(parts) + "."
    if len(parts) == 1:
        effect = effect.replace(f"{who[0]}'s next token", "Its next token", 1)
    free = _waste(step.snapshot)["free_blocks"]
    return [cause, effect, f"A block is taken only when the last one is full; "
                           f"{_stay_free(free)}."]


def _admission_story(step, admitted, labels, request_of, reuse) -> list[str]:
    ev = step.events
    snap = step.snapshot
    v1 = _v1(step)
    arrived = {e.request_id for e in ev if isinstance(e, RequestArrived)}
    hits = {e.request_id: e for e in ev if isinstance(e, PrefixCacheHit)}
    lens = {r["request_id"]: r["seqs"][0] for r in snap["requests"]}
    causes, effects = [], []
    for a in admitted:
        rid = a.request_id
        s = lens[rid]
        if a.recompute:
            total = a.num_tokens + (hits[rid].num_tokens if rid in hits else 0)
            causes.append(f"{rid}'s {total} tokens, prompt and output,")
        else:
            causes.append(f"{rid}'s {s['prompt_len']}-token prompt")
        blocks = _prompt_blocks(ev, rid, request_of)
        hit = hits.get(rid)
        where = f"{blocks_list(blocks)}{_reused(reuse, rid, blocks)}"
        if hit is not None:
            effects.append(f"{rid} finds its first {hit.num_tokens} tokens still cached in "
                           f"{blocks_list(list(hit.blocks))} and computes "
                           f"{plural(a.num_tokens, 'more token')} into {where}")
        elif a.recompute:
            effects.append(f"{rid} recomputes its {a.num_tokens} tokens into {where}")
        else:
            effects.append(f"{rid}'s {a.num_tokens} tokens fill {where}")
    new_ids = [a.request_id for a in admitted]
    came = [rid for rid in new_ids if rid in arrived]
    lead = f"{join(came)} {verb(came, 'arrives', 'arrive')}; " if came else ""
    fit = "fits" if len(causes) == 1 and not admitted[0].recompute else "fit"
    cause = (lead + join(causes) + f" {fit} in the free blocks, so "
             f"{verb(new_ids, 'it is', 'they are')} admitted.")
    cause = cause[0].upper() + cause[1:]
    effect = "; ".join(effects) + "."
    admitted_ids = set(new_ids)
    others = [s.request_id for s in step.scheduled if s.request_id not in admitted_ids]
    running = [r for r in snap["queues"]["running"] if r not in admitted_ids]
    free = _waste(snap)["free_blocks"]
    if v1:
        if others:
            consequence = (f"{join(others)} {verb(others, 'decodes', 'decode')} in the same "
                           "step: V1 has no prefill-only steps, one token budget serves "
                           "both.")
        else:
            cached = [e.physical for e in ev if isinstance(e, BlockCached)]
            consequence = (f"V1 hashes the full {noun(cached, 'block')} "
                           f"({blocks_list(cached)}) into the prefix cache at once; "
                           f"{_stay_free(free)}."
                           if cached else
                           f"{_stay_free(free)}.")
    elif running:
        consequence = (f"{join(running)} {verb(running, 'waits', 'wait')}: in v0.5.5 a step "
                       "that admits prompts runs no decodes.")
    else:
        consequence = (f"A prefill step runs no decodes; {plural(free, 'block')} "
                       f"{verb(free, 'stays', 'stay')} free.")
    return [cause, effect, consequence]


def _finish_story(step, finished, new, labels, request_of, reuse) -> list[str]:
    ev = step.events
    snap = step.snapshot
    v1 = _v1(step)
    max_tokens = {r["request_id"]: r["max_tokens"] for r in snap["requests"]}
    freed = [e.physical for e in ev if isinstance(e, BlockFreed) and e.device == "gpu"]
    out = []
    if new:
        who = list(dict.fromkeys(labels.get(e.seq_ids[0], str(e.seq_ids[0])) for e in new))
        took = join([f"{labels.get(e.seq_ids[0], '?')} block {e.physical}" for e in new])
        out.append(f"{who[0]}'s last block was full, so it took block {new[0].physical}."
                   if len(new) == 1 else
                   f"The last blocks of {join(who)} were full, so they took new ones "
                   f"({took}).")
    reasons = []
    for e in finished:
        status = e.status.split(",")[-1]
        if status == "finished_length_capped":
            reasons.append(f"{e.request_id} has generated its {max_tokens[e.request_id]} "
                           "tokens (max_tokens)")
        else:
            reasons.append(f"{e.request_id} {FINISH_WORDS.get(status, status)}")
    ret = "returns" if len(freed) == 1 else "return"
    if v1:
        effect = (f"{join(reasons)}, so {blocks_list(freed)} {ret} to the free queue at "
                  "once.")
    else:
        effect = f"{join(reasons)}, so {blocks_list(freed)} {ret} to the free list at once."
    if not new:
        effect = effect[0].upper() + effect[1:]
    out.append(effect)
    free = _waste(snap)["free_blocks"]
    if v1:
        blocks = snap["gpu"]["blocks"]
        kept = [n for n in freed if blocks[n]["ref_count"] == 0 and blocks[n].get("hash")]
        if kept:
            it = verb(kept, "it", "them")
            which = (blocks_list(kept).capitalize() if len(kept) <= 3 else
                     f"{len(kept)} of them")
            out.append(f"{which} {verb(kept, 'stays', 'stay')} in "
                       "the prefix cache while free: a later request with the same prefix "
                       f"could take {it} back, until {verb(kept, 'it is', 'they are')} "
                       "handed out again.")
        else:
            out.append(f"{plural(free, 'block')} {verb(free, 'is', 'are')} free now.")
    elif freed:
        which = verb(freed, "this block is", "these blocks are")
        out.append(f"The free list is a stack, so {which} handed out next; "
                   f"{plural(free, 'block')} {verb(free, 'is', 'are')} free.")
    return out[:3]


def _preemption_story(step, e, before, labels, request_of) -> list[str]:
    ev = step.events
    v1 = _v1(step)
    idx = ev.index(e)
    took = [x for x in ev[:idx] if isinstance(x, BlockAllocated) and x.device == "gpu"]
    free_before = before["gpu"]["num_free"] if before is not None else None
    needer, victim = e.needed_by, e.request_id
    room = _has_room(before, needer) if before is not None else False
    # The cause: who took the last free block, or that none was free.
    if took and free_before is not None and len(took) >= free_before > 0:
        who = list(dict.fromkeys(labels.get(x.seq_ids[0], "?") for x in took))
        nums = [x.physical for x in took]
        cause = (f"{who[0]}'s last block was full, so it took {blocks_list(nums)}, the last "
                 f"free {noun(nums, 'one', 'ones')}." if len(who) == 1 else
                 f"The last blocks of {join(who)} were full, so they took "
                 f"{blocks_list(nums)}, the last free ones.")
        turn = f"{needer} comes next"
    else:
        usable = _waste(before)["used_blocks"] if before is not None else None
        cause = (f"Every GPU block is in use ({usable} of them), so none is free."
                 if usable else "No GPU block is free.")
        turn = f"{needer} needs room for its next token"
    if v1:
        effect = (f"{turn}, its last block is full, and allocate_slots finds no free block, "
                  f"so {_victim(e, 'the last in running')} is preempted.")
        blocks = step.snapshot["gpu"]["blocks"]
        freed = _victim_freed(ev, idx)
        kept = [n for n in freed if blocks[n]["ref_count"] == 0 and blocks[n].get("hash")]
        still = f", {blocks_list(kept)} still cached," if kept else ""
        consequence = (f"V1 never swaps: {victim}'s blocks go back to the free queue{still} "
                       f"and {victim} waits at the front of waiting to be recomputed.")
        if e.victim_is_self:
            consequence = consequence.replace(f"{victim}'s blocks", "its blocks", 1)
        return [cause, effect, consequence]
    check = ("can_append_slots wants one free block per running sequence, even though "
             f"{needer}'s last block still has a free slot, and none is left"
             if room else
             "its last block is full and can_append_slots finds no free block")
    effect = f"{turn}: {check}, so {_victim(e, 'the tail of running')} is preempted by {e.mode}."
    outs = [x for x in ev[idx:] if isinstance(x, SwappedOut) and x.request_id == victim]
    if outs:
        pairs = ", ".join(f"{g}->C{c}" for g, c in outs[0].mapping)
        consequence = (f"{victim}'s {plural(len(outs[0].mapping), 'block')} "
                       f"{verb(len(outs[0].mapping), 'is', 'are')} copied to the CPU ({pairs}) "
                       f"and freed on the GPU; {victim} waits in swapped.")
    else:
        freed = _victim_freed(ev, idx)
        consequence = (f"{victim}'s {blocks_list(freed)} {verb(freed, 'is', 'are')} freed and "
                       f"{victim} goes to the front of waiting, to be recomputed later.")
    return [cause, effect, consequence]


def _victim_freed(ev, idx: int) -> list[int]:
    """The GPU blocks the preemption at ev[idx] freed: the BlockFreed records right after
    it."""
    out = []
    for x in ev[idx + 1:]:
        if isinstance(x, BlockFreed):
            if x.device == "gpu":
                out.append(x.physical)
        elif not isinstance(x, (SwappedOut,)):
            break
    return out


def _victim(e, where: str) -> str:
    if e.victim_is_self:
        return f"with nobody behind it in running, {e.needed_by} itself"
    return f"{e.request_id}, {where},"


def _has_room(snap: dict, request_id: str) -> bool:
    """Whether the request's last block had a free slot in `snap` (for any sequence)."""
    bs = snap["block_size"]
    for r in snap["requests"]:
        if r["request_id"] == request_id:
            return any(s["block_table"] and s["block_table"][-1][2] < bs
                       and s["len"] <= len(s["block_table"]) * bs
                       for s in r["seqs"])
    return False


def reuse_by_step(trace, request_of: dict[int, str]) -> list[list[tuple[str, str, list[int]]]]:
    """Per step, [(request, previous holder, GPU blocks)] for GPU blocks that a request got
    although another request held them before (freed, then handed out again)."""
    last_owner: dict[int, str] = {}      # GPU block -> the request that last held it
    out = []
    for step in trace:
        reused: dict[tuple[str, str], list[int]] = {}
        for e in step.events:
            if isinstance(e, BlockAllocated) and e.device == "gpu":
                rid = request_of.get(e.seq_ids[0], "?")
                before = last_owner.get(e.physical)
                if before is not None and before != rid:
                    reused.setdefault((rid, before), []).append(e.physical)
                last_owner[e.physical] = rid
            elif isinstance(e, SwappedIn):
                for _, g in e.mapping:
                    last_owner[g] = e.request_id
        out.append([(rid, before, nums) for (rid, before), nums in reused.items()])
    return out


def _prompt_blocks(events, request_id: str, request_of: dict[int, str]) -> list[int]:
    # allocate() reports the prompt's blocks in logical order, before the Admitted event.
    out = []
    for e in events:
        if isinstance(e, BlockAllocated) and e.seq_ids and \
                request_of.get(e.seq_ids[0]) == request_id:
            out.append(e.physical)
        if isinstance(e, Admitted) and e.request_id == request_id:
            break
    return out
