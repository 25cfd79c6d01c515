"""A JSON-ready copy of a V1 engine's state, for frames and the command line.

The same keys as the v0.5.5 snapshot (`sim/core/snapshot.py`), so the views that draw one
draw the other: "step", "block_size", "watermark_blocks", "queues" (with "swapped" always
empty: V1 does not swap), "requests" (one sequence per request: V1 fans n > 1 out into
separate requests), "gpu" and an empty "cpu". Block 0, the null block, is listed in "gpu"
like any block (it is never free and never holds tokens).

"heads" answers, for the request at the head of `waiting`, what allocate_slots would
say now if it were admitted with the whole budget ("can_allocate": "ok", "later", or
"never" when even the empty pool is too small, so it blocks the FCFS queue for good); it
looks the prefix cache up without counting a lookup. "swapped" is always None.

V1's own keys: "engine": "v1", "null_block": 0, per GPU block "hash" (an 8-hex-digit
prefix, or None) and "cached" (in the prefix-cache map), per request "block_hashes"
(prefixes), "num_cached_block", "num_preemptions", "parent_request_id",
"num_output_placeholders" (output tokens a step in flight is sampling for it), and
"prefix_cache" (cumulative lookup statistics).

The engine loop: "async_scheduling" (True for vLLM's default loop) and "batch_queue", the
batches scheduled but not processed yet, oldest first: each with its "step", its
"num_scheduled_tokens" and the requests it samples a token for ("samples"); always empty
in the synchronous loop.

With a KV connector (P/D): "queues" gains "skipped_waiting" (requests waiting for remote
KVs, or promoted and not scheduled yet), each request "kv_transfer_params"; a finished
request whose blocks the connector holds keeps its block table; a WAITING_FOR_REMOTE_KVS
request's blocks show the local hits and the tokens that have landed (`engine.kv_landed`),
not the count vLLM already calls computed.

Slots: a block held by requests shows the slots its holders have computed; a free block
that keeps its hash (an eviction candidate) still holds valid KV and shows all of it; other
free blocks show nothing (a real GPU keeps stale data there).

Hybrid models (several KV cache groups): the keys above describe group 0 (a request's
"block_table", "num_cached_block"), and three keys are added: "kv_cache_groups" (per group
its "kind" -- "full_attention", "sliding_window" or "chunked_local_attention" --, the
window or chunk in tokens, and its layer names), per request "group_block_tables" and
"group_num_cached_block" (one entry per group, group 0's first; the null block, where a
block left a window, shows 0 slots) and per GPU block "group" (the group whose table holds
it or whose hash it keeps; None when neither). One group: none of these keys.
"""
from __future__ import annotations

from sim.v1.kv_cache_interface import ChunkedLocalAttentionSpec, SlidingWindowSpec
from sim.v1.kv_cache_utils import get_block_hash, get_group_id, hash_prefix
from sim.v1.request import RequestStatus

_WAITING_FOR_REMOTE_KVS = RequestStatus.WAITING_FOR_REMOTE_KVS


def engine_snapshot(engine, with_slots: bool = True) -> dict:
    kv = engine.kv_cache_manager
    pool = kv.block_pool
    bs = engine.cache_config.block_size
    sched = engine.scheduler
    req_to_blocks = kv.req_to_blocks
    managers = kv.coordinator.single_type_managers
    hybrid = len(managers) > 1
    connector = sched.connector
    filled: dict[int, int] = {}
    group_of: dict[int, int] = {}
    requests = []
    for req in engine.requests.values():
        table = req_to_blocks.get(req.request_id)
        entries = []
        if table is not None:
            num_valid = req.num_computed_tokens
            if connector is not None and req.request_id in engine.kv_landed and (
                    req.status == _WAITING_FOR_REMOTE_KVS or req.is_finished()):
                # Its load is in flight: counted as computed already, but what is there
                # is the local hit and what has landed.
                num_valid = min(num_valid, kv.num_cached_block.get(req.request_id, 0) * bs
                                + engine.kv_landed.get(req.request_id, 0))
            for logical, block in enumerate(table):
                n = min(bs, max(0, num_valid - logical * bs))
                if hybrid and block.is_null:
                    n = 0
                filled[block.block_id] = max(filled.get(block.block_id, 0), n)
                entries.append(["gpu", block.block_id, n])
        group_tables = [entries]
        if hybrid:
            group_of.update((b.block_id, 0) for b in table or () if not b.is_null)
            for manager in managers[1:]:
                group_entries = []
                for logical, block in enumerate(
                        manager.req_to_blocks.get(req.request_id) or ()):
                    n = 0 if block.is_null else min(
                        bs, max(0, req.num_computed_tokens - logical * bs))
                    filled[block.block_id] = max(filled.get(block.block_id, 0), n)
                    if not block.is_null:
                        group_of[block.block_id] = manager.kv_cache_group_id
                    group_entries.append(["gpu", block.block_id, n])
                group_tables.append(group_entries)
        requests.append({
            "request_id": req.request_id,
            "arrival_step": req.arrival_step,
            "first_scheduled_step": req.first_scheduled_step,
            "finished_step": req.finished_step,
            "n": getattr(req.sampling_params, "n", 1),
            "best_of": 1,
            "use_beam_search": False,
            "max_tokens": req.max_tokens,
            "seqs": [{
                "seq_id": req.seq_id,
                "parent_seq_id": None,
                "status": req.status.label,
                "prompt_len": req.num_prompt_tokens,
                "len": req.num_tokens,
                "num_computed_tokens": req.num_computed_tokens,
                "token_ids": list(req.all_token_ids),
                "cumulative_logprob": req.cumulative_logprob,
                "block_table": entries,
            }],
            "parent_request_id": req.parent_request_id,
            "block_hashes": [hash_prefix(h) for h in req.block_hashes],
            "num_cached_block": kv.num_cached_block.get(req.request_id, 0),
            "num_preemptions": req.num_preemptions,
            "num_output_placeholders": req.num_output_placeholders,
        })
        if hybrid:
            requests[-1]["group_block_tables"] = group_tables
            requests[-1]["group_num_cached_block"] = [
                m.num_cached_block.get(req.request_id, 0) for m in managers]
        if connector is not None:
            requests[-1]["kv_transfer_params"] = _json_params(req.kv_transfer_params)
    cached_ids = {block.block_id for _, block in pool.cached_block_hash_to_block.items()}
    blocks = []
    cache = engine.gpu_cache
    for block in pool.blocks:
        key = block.block_hash
        entry = {"ref_count": block.ref_cnt,
                 "hash": hash_prefix(get_block_hash(key)) if key is not None else None,
                 "cached": block.block_id in cached_ids}
        if with_slots:
            if block.is_null:
                n = 0
            elif block.ref_cnt:
                n = filled.get(block.block_id, 0)
            else:
                n = bs if key is not None else 0
            entry["slots"] = [list(s) for s in cache[block.block_id][:n]]
        if hybrid:
            entry["group"] = group_of.get(block.block_id,
                                          get_group_id(key) if key is not None else None)
        blocks.append(entry)
    stats = kv.prefix_cache_stats
    queues = {
        "pending": [r.request_id for r in engine.pending],
        "waiting": [r.request_id for r in sched.waiting],
        "running": [r.request_id for r in sched.running],
        "swapped": [],
    }
    if connector is not None:
        queues["skipped_waiting"] = [r.request_id for r in sched.skipped_waiting]
    snapshot = {
        "engine": "v1",
        "step": engine.step_index,
        "block_size": bs,
        "watermark_blocks": kv.watermark_blocks,
        "null_block": pool.null_block.block_id,
        "queues": queues,
        "requests": requests,
        "heads": queue_heads(engine),
        "gpu": {
            "num_blocks": pool.num_gpu_blocks,
            "num_free": pool.get_num_free_blocks(),
            "free_order": [b.block_id for b in pool.free_block_queue.get_all_free_blocks()],
            "blocks": blocks,
        },
        "cpu": {"num_blocks": 0, "num_free": 0, "free_order": [], "blocks": []},
        "async_scheduling": bool(engine.async_scheduling),
        "batch_queue": [{"step": b.step,
                         "num_scheduled_tokens": dict(b.scheduler_output.num_scheduled_tokens),
                         "samples": list(b.sampled)}
                        for b in reversed(engine.batch_queue or ())],
        "prefix_cache": {
            "queries": stats.queries,
            "hits": stats.hits,
            "preempted_queries": stats.preempted_queries,
            "preempted_hits": stats.preempted_hits,
        },
    }
    if hybrid:
        snapshot["kv_cache_groups"] = [group_summary(i, g) for i, g in
                                       enumerate(kv.kv_cache_config.kv_cache_groups)]
    return snapshot


def group_summary(group_id: int, group) -> dict:
    """A KV cache group as the snapshot lists it."""
    spec = group.kv_cache_spec
    if isinstance(spec, SlidingWindowSpec):
        kind, window = "sliding_window", spec.sliding_window
    elif isinstance(spec, ChunkedLocalAttentionSpec):
        kind, window = "chunked_local_attention", spec.attention_chunk_size
    else:
        kind, window = "full_attention", None
    return {"kv_cache_group_id": group_id, "kind": kind, "window": window,
            "layer_names": list(group.layer_names)}


def _json_params(params: dict | None) -> dict | None:
    """A connector's kv_transfer_params as JSON-ready data (tuples of block ids become
    lists; the connector's private flags are left out)."""
    if params is None:
        return None
    out = {}
    for key, value in params.items():
        if key.startswith("_"):
            continue
        if isinstance(value, tuple):
            value = [list(v) if isinstance(v, (list, tuple)) else v for v in value]
        out[key] = value
    return out


def queue_heads(engine) -> dict:
    """What the KV cache manager would answer now for the head of `waiting` (see the
    module docstring), and None for `swapped` (V1 has no swapping)."""
    sched = engine.scheduler
    kv = engine.kv_cache_manager
    waiting = None
    if sched.waiting:
        req = sched.waiting.peek_request()
        cfg = engine.scheduler_config
        bs = engine.cache_config.block_size
        hits = []
        if kv.enable_caching and not req.skip_reading_prefix_cache:
            hits = kv.find_longest_cache_hit(req.block_hashes, req.num_tokens - 1)
        num_hit_tokens = len(hits) * bs
        seq_len = min(req.num_tokens, cfg.max_model_len)
        if cfg.scheduler_reserve_full_isl:
            need_tokens = seq_len
        else:
            need_tokens = min(num_hit_tokens + min(req.num_tokens - num_hit_tokens,
                                                   cfg.max_num_scheduled_tokens)
                              + cfg.num_lookahead_tokens, cfg.max_model_len)
        if kv.num_kv_cache_groups == 1:
            num_required = kv.get_num_blocks_to_allocate(req.request_id, need_tokens, hits)
            num_never = -(-need_tokens // bs)
        else:
            # Every group: its hit (nulls outside windows), windows capped at admission.
            coordinator = kv.coordinator
            group_hits, _ = (coordinator.find_longest_cache_hit(req.block_hashes,
                                                                req.num_tokens - 1)
                             if hits else (kv.empty_kv_cache_blocks.blocks, 0))
            cap = cfg.scheduler_reserve_full_isl
            num_required = coordinator.get_num_blocks_to_allocate(
                req.request_id, need_tokens, group_hits, 0, num_hit_tokens, need_tokens,
                apply_admission_cap=cap)
            num_never = coordinator.get_num_blocks_to_allocate(
                req.request_id, need_tokens, kv.empty_kv_cache_blocks.blocks, 0, 0,
                need_tokens, apply_admission_cap=cap)
        watermark = kv.watermark_blocks if sched.running else 0
        num_free = kv.block_pool.get_num_free_blocks()
        usable = kv.block_pool.num_gpu_blocks - 1
        if num_never + kv.watermark_blocks > usable:
            can_allocate = "never"
        elif num_required + watermark <= num_free:
            can_allocate = "ok"
        else:
            can_allocate = "later"
        waiting = {
            "request_id": req.request_id,
            "can_allocate": can_allocate,
            "num_required_blocks": num_required,
            "num_hit_blocks": len(hits),
            "num_free_blocks": num_free,
            "len": req.num_tokens,
            # Non-zero for a request preempted by recompute: it recomputes its outputs too.
            "output_len": req.num_tokens - req.num_prompt_tokens,
        }
    return {"swapped": None, "waiting": waiting}
