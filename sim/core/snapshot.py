"""A JSON-ready copy of the engine's state, for frames and for the command line.

Everything a picture needs and nothing it must compute from live objects: the queues,
each sequence's tokens and block table (with how many slots of each block it has filled),
each physical block's owner count and slot payloads, and what the block manager answers for
the heads of `swapped` and `waiting` (`heads`). Only where vLLM v0.5.5's leak happened
(issue 27): a GPU block's `leaked_refs` (references no table holds, never released) and a
sequence's `kv_not_recomputed` (its KV below that position was never recomputed).
"""
from __future__ import annotations

from sim.core.sequence import SequenceStatus


def engine_snapshot(engine, with_slots: bool = True) -> dict:
    bm = engine.block_manager
    bs = engine.cache_config.block_size
    sched = engine.scheduler
    filled: dict[tuple[str, int], int] = {}
    requests = []
    stale = getattr(engine, "kv_not_recomputed", None)
    for group in engine.requests.values():
        seqs = []
        for seq in group.get_seqs():
            table = bm.block_tables.get(seq.seq_id)
            entries = []
            if table is not None:
                for logical, block in enumerate(table):
                    n = min(bs, max(0, seq.num_computed_tokens - logical * bs))
                    key = (block.device.value, block.block_number)
                    filled[key] = max(filled.get(key, 0), n)
                    entries.append([block.device.value, block.block_number, n])
            seqs.append({
                "seq_id": seq.seq_id,
                "parent_seq_id": seq.parent_seq_id,
                "status": seq.status.label,
                "prompt_len": seq.get_prompt_len(),
                "len": seq.get_len(),
                "num_computed_tokens": seq.num_computed_tokens,
                "token_ids": seq.get_token_ids(),
                "cumulative_logprob": seq.cumulative_logprob,
                "block_table": entries,
            })
            if stale and stale.get(seq.seq_id):
                seqs[-1]["kv_not_recomputed"] = stale[seq.seq_id]
        requests.append({
            "request_id": group.request_id,
            "arrival_step": group.arrival_step,
            "first_scheduled_step": group.first_scheduled_step,
            "finished_step": group.finished_step,
            "n": group.sampling_params.n,
            "best_of": group.sampling_params.best_of,
            "use_beam_search": group.sampling_params.use_beam_search,
            "max_tokens": group.sampling_params.max_tokens,
            "seqs": seqs,
        })
    pending = [g.request_id for g in engine.pending]
    snap = {
        "step": engine.step_index,
        "block_size": bs,
        "watermark_blocks": bm.watermark_blocks,
        "queues": {
            "pending": pending,
            "waiting": [g.request_id for g in sched.waiting],
            "running": [g.request_id for g in sched.running],
            "swapped": [g.request_id for g in sched.swapped],
        },
        "requests": requests,
        "heads": queue_heads(engine),
    }
    for allocator, cache in ((bm.gpu_allocator, engine.cache_engine.gpu_cache),
                             (bm.cpu_allocator, engine.cache_engine.cpu_cache)):
        dev = allocator.device.value
        leaked = getattr(bm, "leaked_refs", None) if dev == "gpu" else None
        blocks = []
        for block in allocator.blocks:
            entry = {"ref_count": block.ref_count}
            if leaked and leaked.get(block.block_number):
                entry["leaked_refs"] = leaked[block.block_number]
            if with_slots:
                n = filled.get((dev, block.block_number), 0) if block.ref_count else 0
                # Slots past the filled count hold stale data on a real GPU; show them empty.
                # A filled slot is None only where vLLM never wrote it (kv_not_recomputed).
                entry["slots"] = [None if s is None else list(s)
                                  for s in cache[block.block_number][:n]]
            blocks.append(entry)
        snap[dev] = {
            "num_blocks": allocator.num_blocks,
            "num_free": allocator.get_num_free_blocks(),
            "free_order": allocator.next_free_block_numbers(),
            "blocks": blocks,
        }
    return snap


def queue_heads(engine) -> dict:
    """What the block manager answers now for the request at the head of `swapped` and the
    one at the head of `waiting`: the first questions the next step's scheduler asks
    (`can_swap_in`, `can_allocate`), so a picture can say why a request stays where it is
    without the live objects. Each is None when its queue is empty."""
    bm = engine.block_manager
    sched = engine.scheduler
    swapped = waiting = None
    if sched.swapped:
        group = sched.swapped[0]
        swapped = {
            "request_id": group.request_id,
            "can_swap_in": bm.can_swap_in(group).value,
            # can_swap_in asks for these blocks plus one new block per sequence.
            "num_blocks": bm.num_blocks_to_move(group),
            "num_seqs": group.num_seqs(status=SequenceStatus.SWAPPED),
        }
    if sched.waiting:
        group = sched.waiting[0]
        seqs = group.get_seqs(status=SequenceStatus.WAITING)
        if seqs:
            seq = seqs[0]
            waiting = {
                "request_id": group.request_id,
                "can_allocate": bm.can_allocate(group).value,
                "num_required_blocks": seq.n_blocks,
                "len": seq.get_len(),
                # Non-zero for a request preempted by recompute: its prompt is recomputed
                # together with the tokens it had generated.
                "output_len": seq.get_output_len(),
            }
    return {"swapped": swapped, "waiting": waiting}


def read_back(snap: dict, seq: dict) -> list[list[int]]:
    """The [token_id, position] payloads that `seq` (one of `snap`'s sequences) reaches
    through its block table, for its computed tokens: the snapshot's twin of
    `sim.core.invariants.read_back`, so a page can compare a sequence's cache before a
    preemption and after it from a trace alone. `snap` must hold slots."""
    out: list[list[int]] = []
    for device, number, filled in seq["block_table"]:
        out += snap[device]["blocks"][number]["slots"][:filled]
    return out


def payload_intact(snap: dict, seq: dict) -> bool:
    """Every computed token of `seq` reads back as written: its own token id at its own
    position (`sim.core.invariants.seq_payload_intact`, from a snapshot)."""
    tokens = seq["token_ids"]
    return read_back(snap, seq) == [[tokens[p], p] for p in range(seq["num_computed_tokens"])]
