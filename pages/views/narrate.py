"""Narration written from a step's events, so the text and the picture cannot disagree.

`describe_step` turns one engine step into a few plain sentences; pages may add their own
emphasis around it. Names follow vLLM's vocabulary.
"""
from __future__ import annotations

from pages.views.text import join
from sim.events import (Aborted, Admitted, BlockAllocated, BlockFreed, CopyOnWrite, Forked,
                        Preempted, PromptIgnored, RequestArrived, RequestFinished, SwappedIn,
                        SwappedOut)

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


def describe_step(step, labels: dict[int, str], request_of: dict[int, str]) -> str:
    """A few sentences for one engine step (a sim.trace.Step). `labels`: seq_id -> display
    name; `request_of`: seq_id -> request id."""
    ev = step.events
    scheduled = step.scheduled
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
    if admitted:
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
        verb = ("each add one token per sequence" if multi and len(names) > 1
                else "adds one token per sequence" if multi
                else "each add one token" if len(names) > 1 else "adds one token")
        sentences.append(f"Decode step: {join(names)} {verb}.")
        # One sentence per request and logical block: the samples or beams of one request
        # usually cross a block boundary together.
        new_blocks: dict[tuple[str, int], list] = {}
        for e in ev:
            if isinstance(e, BlockAllocated):
                key = (request_of.get(e.seq_ids[0], ""), e.logical)
                new_blocks.setdefault(key, []).append(e)
        for (_, logical), es in new_blocks.items():
            who = [labels.get(e.seq_ids[0], str(e.seq_ids[0])) for e in es]
            if len(es) == 1:
                sentences.append(f"{who[0]}'s last block was full, so its new token starts "
                                 f"logical block {logical} in physical block {es[0].physical}.")
            else:
                sentences.append(f"The last blocks of {join(who)} were full, so each new "
                                 f"token starts logical block {logical} (physical "
                                 f"{blocks_list([e.physical for e in es])}).")
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
    for e in ev:
        if isinstance(e, RequestFinished):
            status = e.status.split(",")[-1]
            sentences.append(f"{e.request_id} {FINISH_WORDS.get(status, status)}.")
    freed = [e.physical for e in ev if isinstance(e, BlockFreed) and e.device == "gpu"]
    if freed:
        sentences.append(f"GPU {blocks_list(freed)} return{'s' if len(freed) == 1 else ''} "
                         "to the free list.")
    return f"Iteration {step.step}. " + " ".join(sentences)


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
