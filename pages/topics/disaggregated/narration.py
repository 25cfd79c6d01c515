"""The words for one row of the P/D trace: what the GPU that stepped did, cause first
(`narrate`, at most four sentences), and every event of the step (`details`)."""
from __future__ import annotations

from pages.topics.disaggregated.view import SIDE_TITLE, groups, ms
from pages.views.text import join, plural, verb
from sim.events import (
    Aborted,
    BlocksHeld,
    ChunkScheduled,
    KVLoadFailed,
    KVTransferFinished,
    Preempted,
    PrefixCacheHit,
    RemoteKVsReady,
    RequestFinished,
    WaitingForRemoteKVs,
)
from sim.studies.disaggregated import DECODE, PREFILL


def _of(step, kind) -> list:
    return [e for e in step.events if isinstance(e, kind)]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _landing(step) -> str:
    """Reads under way at the end of this row (the picture's link)."""
    snap = step.snapshot
    parts = []
    for t in snap["link"]["transfers"]:
        if t["done"] or t["failed"] or t["start_s"] > snap["time_s"]:
            continue
        n = len(t["local_block_ids"])
        if t["num_landed"]:
            parts.append(f"{t['num_landed']} of {t['request_id']}'s {n} blocks")
        else:
            parts.append(f"none of {t['request_id']}'s {n} blocks yet")
    if not parts:
        return ""
    return f"Over the link, the decode GPU has {join(parts)}."


def start(step, ctx) -> str:
    v = ctx.values
    reqs = join([f"{r.name} ({r.prompt} prompt tokens, {plural(r.output, 'output')}) at "
                 f"{r.arrival_ms} ms" for r in v["requests"]])
    per_block = ctx.block_bytes / step.snapshot["link"]["bandwidth"]
    return (f"Start: {reqs} will reach the proxy. Each goes first to the prefill GPU (one "
            "output token, do_remote_decode), then, with where its blocks are, to the decode "
            f"GPU. A 2 MiB block of Llama-3-8B's KV takes {per_block * 1e3:.2f} ms over "
            f"{step.snapshot['link']['link']}.")


def _prefill_sentences(step) -> list[str]:
    out = []
    chunks = _of(step, ChunkScheduled)
    if chunks:
        work = join([f"{c.request_id}'s tokens {c.num_computed_before}-"
                     f"{c.num_computed_before + c.num_tokens - 1}" for c in chunks])
        out.append(f"it computes {work}.")
    held = _of(step, BlocksHeld)
    for e in held:
        out.append(f"{e.request_id}'s prefill is done: it samples one token (the proxy drops "
                   f"it) and finishes, but NIXL keeps its {plural(len(e.blocks), 'block')} "
                   "(delay_free_blocks) for the decode GPU to read; the proxy sends "
                   f"{e.request_id} on with their ids.")
    sent = [e.request_id for e in _of(step, KVTransferFinished) if e.direction == "sending"]
    if sent:
        out.append(f"The decode GPU is done reading {join(sent)}: finished_sending frees "
                   f"{'its' if len(sent) == 1 else 'their'} blocks here.")
    return out


def _decode_sentences(step) -> list[str]:
    out = []
    for e in _of(step, KVLoadFailed):
        if e.policy == "fail":
            out.append(f"{e.request_id}'s read failed: every block it read is invalid, and "
                       "with kv_load_failure_policy fail the request ends with an error; the "
                       "prefill GPU is never told.")
        else:
            out.append(f"{e.request_id}'s read failed: every block it read is invalid, so its "
                       f"computed tokens fall back to {e.num_computed_tokens} and it will "
                       "prefill here.")
    for e in _of(step, WaitingForRemoteKVs):
        local = (f" after {e.num_local_tokens} hit in its own prefix cache"
                 if e.num_local_tokens else "")
        out.append(f"{e.request_id} arrives: get_num_new_matched_tokens counts "
                   f"{e.num_external_tokens} prompt tokens as remote{local}; "
                   f"{plural(len(e.blocks), 'block')} are allocated (not cached) and "
                   f"{e.request_id} waits in WAITING_FOR_REMOTE_KVS while NIXL reads them.")
    recv = [e.request_id for e in _of(step, KVTransferFinished) if e.direction == "recving"]
    status = {r["request_id"]: r["seqs"][0]["status"]
              for r in step.snapshot[DECODE]["requests"]}
    gone = [rid for rid in recv if status.get(rid, "finished").startswith("finished")]
    failed = {e.request_id for e in _of(step, KVLoadFailed)}
    retry = [rid for rid in recv if rid not in gone and rid in failed]
    ready = [rid for rid in recv if rid not in gone and rid not in failed]
    if retry:
        out.append(f"The read of {join(retry)} is over (finished_recving): the next "
                   "schedule() keeps what is valid and schedules the rest to be computed "
                   "here.")
    if ready:
        out.append(f"The worker reports {join(ready)} received (finished_recving): the next "
                   "schedule() caches the blocks and schedules "
                   f"{'it' if len(ready) == 1 else 'them'}.")
    if gone:
        out.append(f"The read of {join(gone)} is over (finished_recving), so the blocks kept "
                   "for it are freed.")
    for e in _of(step, RemoteKVsReady):
        if e.failed:
            continue
        out.append(f"{e.request_id} leaves WAITING_FOR_REMOTE_KVS with {e.num_computed_tokens} "
                   "prompt tokens computed: its last prompt token is recomputed to sample "
                   "its first output token.")
    decodes = [s.request_id for s in step.scheduled if not s.prefill]
    if decodes:
        out.append(f"it decodes {join(decodes)} (one token "
                   f"{'each' if len(decodes) > 1 else ''}".rstrip() + ").")
    # A received request's one recomputed token is told above.
    received = {e.request_id for e in _of(step, RemoteKVsReady) if not e.failed}
    prefills = [c for c in _of(step, ChunkScheduled) if c.request_id not in received]
    if prefills:
        out.append("it prefills " + join([f"{c.request_id}'s tokens {c.num_computed_before}-"
                                          f"{c.num_computed_before + c.num_tokens - 1}"
                                          for c in prefills]) + " itself.")
    return out


def _common(step, side: str) -> list[str]:
    out = []
    for e in _of(step, Aborted):
        out.append(f"{e.request_id}'s client gave up: aborted on the {side} GPU"
                   + (" (its blocks stay until its read lands)"
                      if e.queue == "waiting_for_remote_kvs" else "") + ".")
    done = [e.request_id for e in _of(step, RequestFinished)
            if side == DECODE and e.status != "finished_error"]
    if done:
        out.append(f"{join(done)} {verb(len(done), 'finishes', 'finish')}: "
                   f"{'its' if len(done) == 1 else 'their'} blocks are freed.")
    return out


def narrate(step, ctx) -> str:
    if step.step is None:
        return start(step, ctx)
    side = step.snapshot["engine"]
    sentences = _common(step, side) + (_prefill_sentences(step) if side == PREFILL
                                       else _decode_sentences(step))
    if not sentences:
        sentences = [f"The {side} GPU steps with nothing to run."]
    sentences = sentences[:3]
    landing = _landing(step)
    if landing and len(sentences) < 4:
        sentences.append(landing)
    return f"{when(step)}: " + " ".join(_cap(s) for s in sentences)


def when(step) -> str:
    """"Prefill GPU, 3.7-7.3 ms", or "Decode GPU at 7.3 ms" for a step that ran nothing."""
    snap = step.snapshot
    side = SIDE_TITLE[snap["engine"]]
    if snap["time_s"] - snap["start_s"] < 5e-7:
        return f"{side} at {ms(snap['time_s'])} (nothing to run)"
    return f"{side}, {snap['start_s'] * 1e3:.1f}-{ms(snap['time_s'])}"


def details(step, ctx) -> list[str]:
    snap = step.snapshot
    if step.step is None:
        return [f"{r.name}: {r.prompt} prompt tokens, {plural(r.output, 'output token')}, "
                f"arrives at {r.arrival_ms} ms." for r in ctx.values["requests"]] + [
                "Both GPUs run vLLM V1 (v0.25.1) with NIXL's connector: Llama-3-8B, bf16, "
                "blocks of 16 tokens; every step is priced with the roofline of the H200 "
                "measured in data/h200-prefill-decode.json."]
    side = snap["engine"]
    out = [f"The {side} GPU's step (its {step.step + 1}th, empty ones included) runs from "
           f"{ms(snap['start_s'])} to {ms(snap['time_s'])}."]
    sched = [f"{s.request_id} ({plural(s.num_tokens, 'token')})" for s in step.scheduled]
    out.append("Scheduled: " + (join(sched) if sched else "nothing") + ".")
    for e in step.events:
        words = _event(e)
        if words:
            out.append(words)
    for s in (PREFILL, DECODE):
        q = "; ".join(f"{name}: {', '.join(ids) if ids else '-'}"
                      for name, ids in groups(s, snap[s]))
        out.append(f"{SIDE_TITLE[s]}: {q}; {snap[s]['gpu']['num_free']} blocks free.")
    return out


def _event(e) -> str | None:
    if isinstance(e, ChunkScheduled):
        return (f"{e.request_id} computes tokens {e.num_computed_before}-"
                f"{e.num_computed_before + e.num_tokens - 1}.")
    if isinstance(e, WaitingForRemoteKVs):
        return (f"{e.request_id}: {e.num_external_tokens} remote tokens, blocks "
                f"{', '.join(map(str, e.blocks))}; WAITING_FOR_REMOTE_KVS.")
    if isinstance(e, RemoteKVsReady):
        return (f"{e.request_id}: remote KVs ready, {e.num_computed_tokens} tokens computed"
                + (" (after a failed read)" if e.failed else "") + ".")
    if isinstance(e, KVLoadFailed):
        return (f"{e.request_id}: invalid blocks {', '.join(map(str, e.invalid_blocks))}; "
                f"computed tokens now {e.num_computed_tokens} (policy {e.policy}).")
    if isinstance(e, BlocksHeld):
        return (f"{e.request_id} finished; blocks {', '.join(map(str, e.blocks))} are kept "
                "for the transfer.")
    if isinstance(e, KVTransferFinished):
        return f"{e.request_id}: finished_{e.direction}."
    if isinstance(e, RequestFinished):
        return f"{e.request_id} finishes ({e.status})."
    if isinstance(e, Aborted):
        return f"{e.request_id} aborted ({e.queue})."
    if isinstance(e, Preempted):
        return f"{e.request_id} is preempted (recompute) for {e.needed_by}."
    if isinstance(e, PrefixCacheHit):
        return (f"{e.request_id} hits blocks {', '.join(map(str, e.blocks))} in the prefix "
                "cache.")
    return None
