"""Checks that hold after every engine step with the offloading connector (part of
`sim.v1.invariants.check_engine` when the engine has one; additions, as the rest).

- The CPU tier's bookkeeping: slots are handed out at most once (in use + free = all);
  the count of evictable blocks and the LRU list are exactly the blocks with ref_cnt 0;
  a block being loaded (ref_cnt > 0) is ready.
- No block in two places that disagree: every ready CPU block holds exactly the tokens,
  at their positions, of the offloaded block its key names (the tokens behind a hash come
  from the requests that produced it), and so does every cached GPU block with a hash; so
  a GPU copy and a CPU copy of a block agree.
- Jobs: every job in flight belongs to a tracked request; a store's blocks are in the CPU
  tier and not ready, a load's are ready and pinned.
- Nothing is stored for a request after its blocks were freed: a store still in flight on
  the worker reads GPU blocks that are its own request's, or free; never a block another
  request holds (the flush before reuse guarantees it). A finished request's pending store
  jobs have their blocks in the fence.
"""
from __future__ import annotations

from sim.v1.kv_offload.base import get_offload_block_hash


def offloading_parts(engine):
    """(scheduler side, manager, worker connector's OffloadingConnectorWorker, the
    simulated CPU worker) of an engine with the offloading connector, else None."""
    connector = engine.scheduler.connector
    sched = getattr(connector, "connector_scheduler", None)
    if sched is None or not hasattr(sched, "manager") or not hasattr(sched.manager, "blocks"):
        return None
    worker_connector = getattr(engine.kv_connector_worker, "connector_worker", None)
    worker = getattr(worker_connector, "worker", None)
    return sched, sched.manager, worker_connector, worker


def _requests_by_hash(engine) -> dict[bytes, tuple[int, object]]:
    """Block hash -> (index of the GPU block it ends, a request with that block), from
    every request the engine has seen (the tokens behind a hash are the same in all)."""
    out: dict[bytes, tuple[int, object]] = {}
    for req in engine.requests.values():
        for i, h in enumerate(req.block_hashes):
            out.setdefault(h, (i, req))
    return out


def _payloads(req, first: int, end: int) -> list[tuple[int, int]]:
    tokens = req.all_token_ids
    return [(tokens[p], p) for p in range(first, end)]


def check_offloading(engine) -> list[str]:
    parts = offloading_parts(engine)
    if parts is None:
        return []
    sched, manager, worker_connector, worker = parts
    problems: list[str] = []
    bs = engine.cache_config.block_size
    factor = sched.config.block_size_factor
    blocks = manager.blocks()

    # -- the CPU tier's bookkeeping ----------------------------------------------------------
    ids = [b.block_id for _, b in blocks]
    if len(set(ids)) != len(ids):
        problems.append("CPU tier: a CPU block holds two offloaded blocks")
    if any(not 0 <= i < manager.num_blocks for i in ids):
        problems.append("CPU tier: a block id is out of range")
    if len(blocks) + manager.get_num_free_blocks() != manager.num_blocks:
        problems.append(f"CPU tier: {len(blocks)} in use + {manager.get_num_free_blocks()} "
                        f"free != {manager.num_blocks} blocks")
    idle = {k for k, b in blocks if b.ref_cnt == 0}
    if set(manager.lru_order()) != idle or len(manager.lru_order()) != len(idle):
        problems.append("CPU tier: the LRU list is not the set of idle blocks")
    if manager.get_num_evictable_blocks() != len(idle):
        problems.append("CPU tier: the evictable count is not the number of idle blocks")

    # -- payloads: no block in two places that disagree --------------------------------------
    by_hash = _requests_by_hash(engine)
    if worker is not None:
        for key, status in blocks:
            if not status.is_ready:
                continue
            found = by_hash.get(get_offload_block_hash(key))
            if found is None:
                problems.append(f"CPU block {status.block_id}: its hash names no request's "
                                "block")
                continue
            last, req = found
            expected = _payloads(req, (last - factor + 1) * bs, (last + 1) * bs)
            got = [tuple(s) if s is not None else None
                   for s in worker.cpu_cache[status.block_id]]
            if got != expected:
                problems.append(f"CPU block {status.block_id}: its slots do not hold the "
                                "tokens its hash names")
    for block in engine.block_pool.blocks:
        if block.block_hash is None:
            continue
        found = by_hash.get(block.block_hash[:-4])
        if found is None:
            continue
        i, req = found
        slots = [tuple(s) if s is not None else None
                 for s in engine.gpu_cache[block.block_id]]
        if slots != _payloads(req, i * bs, (i + 1) * bs):
            problems.append(f"GPU block {block.block_id}: its slots do not hold the tokens "
                            "its hash names")

    # -- jobs ----------------------------------------------------------------------------------
    jobs = sched.jobs()
    for job_id, job in jobs.items():
        state = sched.request_state(job.req_id)
        if state is None or job_id not in state.transfer_jobs:
            problems.append(f"offload job {job_id}: its request is not tracked")
        for key in job.keys:
            status = dict(blocks).get(key)
            if status is None:
                problems.append(f"offload job {job_id}: a block is not in the CPU tier")
            elif job.is_store and status.is_ready:
                problems.append(f"store job {job_id}: a block is ready before the store "
                                "completed")
            elif not job.is_store and status.ref_cnt < 1:
                problems.append(f"load job {job_id}: a block is not pinned")
        req = engine.requests.get(job.req_id)
        if job.is_store and req is not None and req.is_finished():
            for bid in job.non_sliding_window_block_ids or ():
                if job_id not in sched.fenced_jobs(bid):
                    problems.append(f"store job {job_id}: finished request {job.req_id}'s "
                                    f"block {bid} is not fenced")

    # -- nothing stored from a block someone else holds -----------------------------------------
    if worker is not None and hasattr(worker, "in_flight"):
        tables = engine.kv_cache_manager.req_to_blocks
        for transfer in worker.in_flight():
            if transfer.kind != "store":
                continue
            job = jobs.get(transfer.job_id)
            owner = job.req_id if job is not None else None
            own = {b.block_id for b in tables.get(owner, ())}
            for gpu_block, _, _ in transfer.pairs:
                block = engine.block_pool.blocks[gpu_block]
                if gpu_block not in own and block.ref_cnt > 0:
                    problems.append(f"store job {transfer.job_id} reads GPU block "
                                    f"{gpu_block}, which another request holds")
    return problems

