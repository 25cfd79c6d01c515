"""Words for vLLM v0.5.5's recompute of a sampling group whose other samples finished
(issue 27), for any page that draws v0.5.5's block pool.

With one running sample left, the default mode recomputes such a group. When it comes back,
vLLM v0.5.5 ends one of three ways, and the simulation with it:
- its first sequence is the one that waited: `Scheduler.schedule` asserts that a prompt has
  one sequence (the trace ends there: `schedule_assert_words`);
- a forked sample waited: `SequenceGroup.is_prefill()` reads the finished first sequence, so
  the recompute runs as a decode (`PrefillRunAsDecode`), and `allocate` counts the finished
  samples in the blocks' ref count (`BlocksLeaked`): those blocks are never freed;
- it no longer fits: it is ignored (told like any ignored prompt).
The picture marks the leaked blocks and the slots never recomputed (pages.views.kv_view);
these functions say what happened, from the events and snapshots only.
"""
from __future__ import annotations

from pages.views.kv_view import owners, seq_labels
from pages.views.narrate import FINISH_WORDS, blocks_list
from pages.views.text import join, noun, plural, verb
from sim.events import (
    Admitted,
    BlocksLeaked,
    Preempted,
    PrefillRunAsDecode,
    RequestFinished,
    SequenceFinished,
)


def leaked_blocks(snap: dict) -> list[int]:
    """GPU blocks holding references no block table holds (v0.5.5 snapshots)."""
    return [n for n, b in enumerate(snap["gpu"]["blocks"]) if b.get("leaked_refs")]


def _name(labels: dict[int, str], seq_id: int, fallback: str) -> str:
    return labels.get(seq_id, fallback)


def finished_samples(snap: dict, request_id: str, labels: dict[int, str]) -> list[str]:
    """The names of a request's finished sequences in a snapshot."""
    for r in snap["requests"]:
        if r["request_id"] == request_id:
            return [_name(labels, s["seq_id"], request_id) for s in r["seqs"]
                    if s["status"].startswith("finished")]
    return []


def samples_finished(step, labels: dict[int, str]) -> list[str]:
    """A sentence for each sample that finished while others of its request run on (what
    lets a sampling request be recomputed later)."""
    done = {e.request_id for e in step.of_type(RequestFinished)}
    out = []
    for e in step.of_type(SequenceFinished):
        if e.request_id in done:
            continue
        why = FINISH_WORDS.get(e.status, "finished")
        out.append(f"{_name(labels, e.seq_id, e.request_id)} {why}; the other samples of "
                   f"{e.request_id} run on.")
    return out


def one_left_sentence(step, labels: dict[int, str]) -> str | None:
    """Why a request with several samples is recomputed rather than swapped: its other
    samples had finished (get_max_num_running_seqs() is 1)."""
    for e in step.of_type(Preempted):
        if e.mode != "recompute":
            continue
        done = finished_samples(step.snapshot, e.request_id, labels)
        if done:
            return (f"{join(done)} had finished, so {e.request_id} has one running sequence "
                    "and the default recomputes it (get_max_num_running_seqs() is 1).")
    return None


def leak_story(step, labels: dict[int, str]) -> list[str] | None:
    """Three sentences for the step in which a recompute ran as a decode and leaked, or
    None when nothing of the kind happened in it."""
    leaks = step.of_type(BlocksLeaked)
    runs = step.of_type(PrefillRunAsDecode)
    if not runs:
        return None
    run = runs[0]
    rid = run.request_id
    first = _name(labels, run.first_seq_id, rid)
    survivor = _name(labels, run.seq_id, rid)
    tokens = next((e.num_tokens for e in step.of_type(Admitted) if e.request_id == rid),
                  run.position + 1)
    leak = next((e for e in leaks if e.request_id == rid), None)
    blocks = list(leak.blocks) if leak else []
    out = [f"{rid} comes back to recompute its {tokens} tokens"
           + (f" into {blocks_list(blocks)}" if blocks else "")
           + f", but vLLM v0.5.5 runs it as a decode: SequenceGroup.is_prefill() reads "
           f"{first}, {rid}'s first sequence, which finished.",
           f"Only position {run.position}'s KV is computed; the "
           f"{plural(run.position, 'slot')} before it {verb(run.position, 'is', 'are')} "
           "never recomputed (?)."]
    if leak:
        them = "it" if len(blocks) == 1 else "them"
        out.append(f"And allocate counted {first} in the ref count (num_seqs() = "
                   f"{leak.refs + 1}): when {survivor} lets go of {them}, "
                   f"{'it stays' if len(blocks) == 1 else 'they stay'} allocated, leaked.")
    return out


def leak_details(step, labels: dict[int, str]) -> list[str]:
    """The full account of a leaking recompute, with vLLM's names."""
    out = []
    for run in step.of_type(PrefillRunAsDecode):
        rid = run.request_id
        first = _name(labels, run.first_seq_id, rid)
        survivor = _name(labels, run.seq_id, rid)
        out.append(f"Scheduler._schedule_prefills admitted {rid} to recompute {survivor}, "
                   f"but SequenceGroup.is_prefill() reads the group's first sequence, "
                   f"{first}, which finished in the decode stage: Scheduler.schedule sends "
                   f"{rid} with is_prompt=False.")
        out.append(f"The model runner treats it as a decode (context_len = seq_len - 1): it "
                   f"computes the KV of position {run.position} only and samples one token "
                   f"for {survivor}, without forking (n is not sampled again). Positions 0 to "
                   f"{run.position - 1} count as computed but were never recomputed: their "
                   "slots hold whatever the blocks held before, and vLLM attends to that "
                   "stale KV from now on (the stand-in model does not read the KV, so its "
                   "tokens are unchanged).")
    for leak in step.of_type(BlocksLeaked):
        blocks = list(leak.blocks)
        out.append(f"BlockSpaceManagerV1.allocate set the ref count of {blocks_list(blocks)} "
                   f"to seq_group.num_seqs() = {leak.refs + 1}, counting "
                   f"{plural(leak.refs, 'finished sample')} of {leak.request_id} that "
                   f"{verb(leak.refs, 'holds', 'hold')} no block table. Nothing releases "
                   f"{verb(leak.refs, 'that reference', 'those references')}: the "
                   f"{noun(blocks, 'block')} {verb(blocks, 'is', 'are')} never freed.")
    return out


def orphaned_sentence(step, prev) -> str | None:
    """The blocks that no block table holds any more after this step but that the leak
    keeps allocated, as one sentence (None when there are none)."""
    if prev is None:
        return None
    snap, before = step.snapshot, prev.snapshot
    now_held = owners(snap)
    held_before = owners(before)
    gone = [n for n in leaked_blocks(snap)
            if ("gpu", n) in held_before and ("gpu", n) not in now_held]
    if not gone:
        return None
    return (f"{blocks_list(gone).capitalize()} {verb(gone, 'stays', 'stay')} allocated "
            f"with nobody's tokens: vLLM leaked {verb(gone, 'it', 'them')}, and "
            f"{verb(gone, 'it is', 'they are')} never freed.")


def status_words(snap: dict) -> str | None:
    """What check_engine allows in this state (the documented leak), or None."""
    leaked = leaked_blocks(snap)
    labels = seq_labels(snap)
    stale = [f"{_name(labels, s['seq_id'], r['request_id'])}'s KV below position "
             f"{s['kv_not_recomputed']}" for r in snap["requests"] for s in r["seqs"]
             if s.get("kv_not_recomputed") and s["block_table"]]
    if not leaked and not stale:
        return None
    parts = ([f"{blocks_list(leaked)} leaked"] if leaked else []) + \
        [f"{s} not recomputed" for s in stale]
    return "check_engine: ok but for vLLM's bug: " + "; ".join(parts)


def schedule_assert_words(step) -> tuple[str, list[str]] | None:
    """(heading, three sentences) for a trace that ends at Scheduler.schedule's assert (the
    group's first sequence waited to recompute while its other samples had finished)."""
    if not step.error or "in Scheduler.schedule" not in step.error:
        return None
    snap = step.snapshot            # the state before the step that never finished
    labels = seq_labels(snap)
    # The request it re-admitted (the step's events got that far) with finished samples.
    rid = next((e.request_id for e in step.of_type(Admitted)
                if e.recompute and finished_samples(snap, e.request_id, labels)), "?")
    seqs = next((r["seqs"] for r in snap["requests"] if r["request_id"] == rid), [])
    first = _name(labels, seqs[0]["seq_id"], rid) if seqs else rid
    done = [_name(labels, s["seq_id"], rid) for s in seqs if s["status"].startswith("finished")]
    return (f"Iteration {step.step}: vLLM asserts in schedule()",
            [f"{rid} comes back to recompute {first}, its first sequence; "
             f"{join(done) or 'its other samples'} had finished.",
             f"SequenceGroup.is_prefill() reads {first}, so Scheduler.schedule sends {rid} as "
             f"a prompt and asserts that a prompt has one sequence: get_seqs() returns "
             f"{len(seqs)}, {join(done) or 'the finished ones'} too.",
             "vLLM v0.5.5 stops here, for every request (preemption_mode='swap' never "
             "recomputes such a request)."])
