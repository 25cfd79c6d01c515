"""A JSON-ready copy of the engine's state, for frames and for the command line.

Everything a picture needs and nothing it must compute from live objects: the queues,
each sequence's tokens and block table (with how many slots of each block it has filled),
and each physical block's owner count and slot payloads.
"""
from __future__ import annotations



def engine_snapshot(engine, with_slots: bool = True) -> dict:
    bm = engine.block_manager
    bs = engine.cache_config.block_size
    sched = engine.scheduler
    filled: dict[tuple[str, int], int] = {}
    requests = []
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
    }
    for allocator, cache in ((bm.gpu_allocator, engine.cache_engine.gpu_cache),
                             (bm.cpu_allocator, engine.cache_engine.cpu_cache)):
        dev = allocator.device.value
        blocks = []
        for block in allocator.blocks:
            entry = {"ref_count": block.ref_count}
            if with_slots:
                n = filled.get((dev, block.block_number), 0) if block.ref_count else 0
                # Slots past the filled count hold stale data on a real GPU; show them empty.
                entry["slots"] = [list(s) for s in cache[block.block_number][:n]]
            blocks.append(entry)
        snap[dev] = {
            "num_blocks": allocator.num_blocks,
            "num_free": allocator.get_num_free_blocks(),
            "free_order": allocator.next_free_block_numbers(),
            "blocks": blocks,
        }
    return snap
