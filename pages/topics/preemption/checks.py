"""What the preemption widget says the simulation checked and answered: the cache checks
after a swap or a recompute, the queue heads' waits (what the block manager answers), the
victims, and the step in which vLLM stops.
"""
from __future__ import annotations

from pages.views import kv_view, recompute_leak
from pages.views.narrate import blocks_list
from pages.views.text import join, noun, plural, verb
from sim.core.snapshot import payload_intact, read_back
from sim.events import (
    Admitted,
    Preempted,
    PrefillRunAsDecode,
    SwappedIn,
    SwappedOut,
)
from sim.trace import Step, Trace

CHECK_OK = "check_engine: ok, every token reads back"


# -- what the simulation checked ---------------------------------------------------------

def _live_seqs(snap: dict):
    for r in snap["requests"]:
        for s in r["seqs"]:
            if s["block_table"] and not s["status"].startswith("finished"):
                yield s


def cache_checks(trace: Trace, labels: dict[int, str]) -> list[list[str]]:
    """Per step, sentences comparing what a preempted sequence's cache held just before its
    preemption with what it reads back from the CPU copy after a swap out, and through its
    new block table once it is restored (swapped in, or recomputed)."""
    saved: dict[int, list] = {}          # what preempted sequences held, by seq_id
    out: list[list[str]] = [[]]
    for prev, step in zip(trace, trace.steps[1:]):
        sentences: list[str] = []
        out.append(sentences)
        if step.error:
            continue
        snap = step.snapshot
        seqs = {r["request_id"]: r["seqs"] for r in snap["requests"]}
        held = {s["seq_id"]: read_back(prev.snapshot, s) for s in _live_seqs(prev.snapshot)}
        for e in step.of_type(Preempted):
            for s in seqs[e.request_id]:
                if s["seq_id"] in held:
                    saved[s["seq_id"]] = held[s["seq_id"]]
        for e in step.of_type(SwappedOut):
            for s in seqs[e.request_id]:
                before = saved.get(s["seq_id"])
                if s["status"] == "swapped" and before is not None \
                        and read_back(snap, s) == before:
                    sentences.append(f"Check: {labels.get(s['seq_id'], e.request_id)}'s "
                                     f"{len(before)} cached tokens read back from the CPU "
                                     "copy exactly as they were on the GPU.")
        swapped_in = [e.request_id for e in step.of_type(SwappedIn)]
        recomputed = [e.request_id for e in step.of_type(Admitted) if e.recompute]
        # vLLM ran these as decodes: their KV was not recomputed (recompute_leak says so).
        as_decode = {e.seq_id for e in step.of_type(PrefillRunAsDecode)}
        for rid in swapped_in + recomputed:
            how = "swapped in" if rid in swapped_in else "recomputed"
            for s in seqs[rid]:
                before = saved.pop(s["seq_id"], None)
                if before is None or not s["block_table"] or s["seq_id"] in as_decode:
                    continue
                name = labels.get(s["seq_id"], rid)
                if read_back(snap, s)[:len(before)] == before and payload_intact(snap, s):
                    table = [number for _, number, _ in s["block_table"]]
                    sentences.append(f"Check: {name}'s {len(before)} cached tokens, {how}, "
                                     "read back through its new block table "
                                     f"({blocks_list(table)}) exactly as before the "
                                     "preemption: same token id at the same position in "
                                     "every slot.")
                else:
                    sentences.append(f"Check FAILED: {name}'s tokens do not read back as "
                                     "before the preemption.")
    return out


def status_line(step: Step) -> str:
    if not step.problems:
        # v0.5.5's leak (issue 27) is vLLM's own: the checker allows it, the line names it.
        return recompute_leak.status_words(step.snapshot) or CHECK_OK
    return "check_engine found: " + "; ".join(step.problems[:2])


def waiting_notes(snap: dict, events) -> list[str]:
    """Why the heads of `swapped` and `waiting` stay where they are: vLLM's own tests
    (v0.5.5: can_swap_in, can_allocate; V1: allocate_slots), as the block manager answered
    them in this state."""
    queues, heads = snap["queues"], snap["heads"]
    waiting = queues["waiting"]
    free = snap["gpu"]["num_free"]
    wm = snap["watermark_blocks"]
    out = []
    if kv_view.is_v1(snap):
        preempted = [e.request_id for e in events if isinstance(e, Preempted)]
        if preempted and waiting:
            out.append(f"{join(waiting)} {verb(waiting, 'waits', 'wait')}: V1 admits nobody "
                       "in a step that preempted.")
            return out
        head = heads["waiting"]
        if head is not None and head["can_allocate"] != "ok":
            hits = head["num_hit_blocks"]
            cached = f", {hits} of them still cached" if hits else ""
            spare = (f" and {wm} left free (the watermark)"
                     if wm and queues["running"] else "")
            never = " It never will: the pool is too small." \
                if head["can_allocate"] == "never" else ""
            out.append(f"{head['request_id']} waits at the front: allocate_slots needs "
                       f"{plural(head['num_required_blocks'], 'block')} for its "
                       f"{head['len']} tokens{cached}{spare}; {free} "
                       f"{verb(free, 'is', 'are')} free.{never}")
        return out
    back = [e.request_id for e in events if isinstance(e, SwappedIn)]
    if back and waiting and not queues["swapped"] and not any(
            isinstance(e, Admitted) for e in events):
        out.append(f"{join(waiting)} still waited this step: admission is skipped while a "
                   f"request is swapped out, and {join(back)} only came back in this step.")
    if queues["swapped"]:
        head = heads["swapped"]
        if head["can_swap_in"] == "later":
            seqs = head["num_seqs"]
            out.append(f"{head['request_id']} stays swapped out: can_swap_in needs its "
                       f"{plural(head['num_blocks'], 'block')} + {seqs} for the next "
                       f"{noun(seqs, 'token')} and {wm} left free (the watermark); "
                       f"{free} {verb(free, 'is', 'are')} free.")
        if waiting:
            out.append(f"{join(waiting)} {verb(waiting, 'waits', 'wait')}: nothing is "
                       "admitted while a request is swapped out.")
    elif waiting:
        head = heads["waiting"]
        if head is not None and head["can_allocate"] == "later":
            what = "recomputing" if head["output_len"] else "its prompt of"
            out.append(f"{head['request_id']} waits at the front: can_allocate needs "
                       f"{plural(head['num_required_blocks'], 'block')} for {what} "
                       f"{head['len']} tokens and {wm} left free (the watermark); {free} "
                       f"{verb(free, 'is', 'are')} free.")
    return out


def victim_notes(prev_running: list[str], events, v1: bool = False) -> list[str]:
    out = []
    for e in events:
        if isinstance(e, Preempted):
            order = ", ".join(prev_running)
            ask = "allocate_slots" if v1 else "can_append_slots"
            tail = "the last of running" if v1 else "the tail of running"
            if e.victim_is_self:
                why = (f"{ask}({e.request_id}) finds no free block and nobody "
                       f"else is left in running [{order}]: it preempts itself")
            else:
                why = (f"{ask}({e.needed_by}) finds no free block; the victim "
                       f"is {e.request_id}, {tail} [{order}]")
            out.append(f"Preempted ({e.mode}): {why}.")
    return out


def short_victim_notes(step: Step) -> list[str]:
    """The picture's line for each preemption: who asked, who was preempted, how."""
    v1 = kv_view.is_v1(step.snapshot)
    ask = "allocate_slots" if v1 else "can_append_slots"
    labels = kv_view.seq_labels(step.snapshot)
    out = []
    for e in step.of_type(Preempted):
        done = ([] if v1 or e.mode != "recompute" else
                recompute_leak.finished_samples(step.snapshot, e.request_id, labels))
        mode = f"{e.mode}: {join(done)} finished, one left" if done else e.mode
        if e.victim_is_self:
            out.append(f"{ask}({e.needed_by}): no free block, nobody else to preempt: "
                       f"{e.request_id} preempts itself ({mode})")
        else:
            out.append(f"{ask}({e.needed_by}): no free block, so the last of running, "
                       f"{e.request_id}, is preempted ({mode})")
    for e in step.of_type(PrefillRunAsDecode):
        first, survivor = labels.get(e.first_seq_id, "?"), labels.get(e.seq_id, "?")
        out.append(f"is_prefill() reads {first} (finished): {survivor}'s recompute runs as "
                   f"a decode of position {e.position}; the leaked blocks are never freed")
    return out


def short_waiting_notes(step: Step) -> list[str]:
    """The picture's line for a queue head that stays: what it waits for."""
    snap = step.snapshot
    queues, heads = snap["queues"], snap["heads"]
    free, wm = snap["gpu"]["num_free"], snap["watermark_blocks"]
    if queues["swapped"] and heads["swapped"] and heads["swapped"]["can_swap_in"] == "later":
        head = heads["swapped"]
        return [f"{head['request_id']} stays swapped: can_swap_in needs "
                f"{head['num_blocks']} + {head['num_seqs']} blocks + {wm} spare, {free} free"]
    head = heads["waiting"]
    if head is not None and head["can_allocate"] in ("later", "never"):
        ask = "allocate_slots" if kv_view.is_v1(snap) else "can_allocate"
        spare = f" + {wm} spare" if wm and (queues["running"] or not kv_view.is_v1(snap)) \
            else ""
        return [f"{head['request_id']} waits: {ask} needs {head['num_required_blocks']} "
                f"blocks{spare}, {free} free"]
    return []


def stop(step: Step) -> tuple[str, list[str], Preempted | None]:
    """(heading, explanation in three sentences, victim) for the step in which vLLM stops:
    the victim of that step could not be swapped out (no CPU space) or recomputed (several
    sequences), or a re-admitted request's first sequence waited while its other samples
    had finished (Scheduler.schedule's assert; no victim)."""
    asserted = recompute_leak.schedule_assert_words(step)
    if asserted is not None:
        return asserted[0], asserted[1], None
    victims = step.of_type(Preempted)
    victim = victims[-1] if victims else None
    # The step never finished: its snapshot is the state before it.
    running = step.snapshot["queues"]["running"]
    if victim is None:
        who = "A request must be preempted."
    elif victim.victim_is_self:
        who = (f"{victim.request_id} needs a block and nobody else is left to preempt, so it "
               "preempts itself.")
    else:
        who = (f"{victim.needed_by} needs a block; the victim is {victim.request_id}, the "
               f"tail of running [{', '.join(running)}].")
    n = step.step
    if victim is not None and victim.mode == "swap":
        return (f"Iteration {n}: not enough CPU swap space",
                [who, "It must be swapped out, but the CPU swap space has too few free "
                      "blocks, and v0.5.5 does not fall back to recompute.",
                 "The scheduler raises and the engine stops for every request: give it more "
                 "CPU blocks (swap_space), or choose recompute."], victim)
    return (f"Iteration {n}: cannot recompute this request",
            [who, "Its request has several running sequences, and vLLM v0.5.5 can recompute "
                  "only a single sequence (an assert in _preempt_by_recompute).",
             "The engine stops: leave the preemption mode on the default, which swaps such "
             "requests."], victim)
