"""The CPU tier in a frame (an addition): `LLMEngine.snapshot()` adds it as "cpu_tier"
when the engine has the offloading connector.

    "cpu_tier": {
      "num_blocks", "block_size_factor", "offloaded_block_size", "num_free",
      "blocks": one per CPU block, by id: {"state": "free" | "storing" (its store is in
                flight: not readable) | "ready" | "loading" (pinned by loads),
                "hash" (short hex prefix of the block hash its key holds, as the GPU
                blocks' "hash"), "ref_cnt", "lru" (its place in the eviction order, 0 =
                next; None unless idle), "slots" (the payloads it holds, when readable)},
      "jobs": the transfers in flight, by job id: {"job_id", "kind" ("store" | "load"),
                "request_id", "gpu_blocks", "cpu_blocks", "submitted" (on the link yet;
                stores wait for the next step), "start_s", "end_s"},
      "stored": request id -> offloaded blocks of it stored or being stored
                (`next_stored_block_idx`),
      "stats": {"queries", "hits"}: the connector's lookup statistics (tokens asked for
                beyond the GPU prefix hit, and found in the CPU tier), cumulative,
      "stall_s": seconds the engine waited for flushes, "now_s": the engine's clock,
    }
"""
from __future__ import annotations

from sim.v1.kv_cache_utils import hash_prefix
from sim.v1.kv_offload.base import get_offload_block_hash
from sim.v1.kv_offload.invariants import offloading_parts


def offload_snapshot(engine, with_slots: bool = True) -> dict | None:
    parts = offloading_parts(engine)
    if parts is None:
        return None
    sched, manager, _, worker = parts
    lru = {key: i for i, key in enumerate(manager.lru_order())}
    blocks = [{"state": "free", "hash": None, "ref_cnt": None, "lru": None, "slots": []}
              for _ in range(manager.num_blocks)]
    for key, status in manager.blocks():
        state = ("storing" if not status.is_ready
                 else "loading" if status.ref_cnt > 0 else "ready")
        entry = blocks[status.block_id]
        entry.update(state=state, hash=hash_prefix(get_offload_block_hash(key)),
                     ref_cnt=status.ref_cnt, lru=lru.get(key))
        if with_slots and status.is_ready and worker is not None:
            entry["slots"] = [list(s) for s in worker.cpu_cache[status.block_id]
                              if s is not None]
    transfers = {}
    if worker is not None and hasattr(worker, "in_flight"):
        transfers = {t.job_id: t for t in worker.in_flight()}
    jobs = []
    for job_id, job in sorted(sched.jobs().items()):
        t = transfers.get(job_id)
        jobs.append({"job_id": job_id, "kind": "store" if job.is_store else "load",
                     "request_id": job.req_id, "gpu_blocks": list(job.gpu_block_ids),
                     "cpu_blocks": list(job.cpu_block_ids), "submitted": t is not None,
                     "start_s": t.start_s if t is not None else None,
                     "end_s": t.end_s if t is not None else None})
    stored = {}
    for rid in engine.requests:
        state = sched.request_state(rid)
        if state is not None:
            stored[rid] = state.group_states[0].next_stored_block_idx
    stats = engine.scheduler.connector_prefix_cache_stats
    return {
        "num_blocks": manager.num_blocks,
        "block_size_factor": sched.config.block_size_factor,
        "offloaded_block_size": sched.config.kv_group_configs[0].offloaded_block_size,
        "num_free": manager.get_num_free_blocks(),
        "blocks": blocks,
        "jobs": jobs,
        "stored": stored,
        "stats": {"queries": stats.queries if stats else 0,
                  "hits": stats.hits if stats else 0},
        "stall_s": getattr(worker, "stall_s", 0.0),
        "now_s": engine.now_s,
    }
