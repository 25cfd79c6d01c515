"""Checks that hold after every V1 engine step (used by tests and by `sim.trace.record`).

- the free queue is a well-formed doubly linked list whose length is `num_free_blocks`;
  every non-null block with `ref_cnt == 0` is in it exactly once, no block in use is, and
  the null block never is;
- a block's `ref_cnt` equals the number of block tables holding it, over every KV cache
  group; a block sits in one group's tables only; no block is both in a table and free;
- the prefix-cache map and the blocks agree: every map entry's block carries that key, and
  every block carrying a hash is in the map under it;
- a request's first `num_cached_block` blocks (in each group) carry its own block hashes
  with that group's id, in order (null blocks and blocks no hit could use excepted);
- a request's block table covers its computed tokens plus the lookahead slots, and every
  group's table has the same length;
- windows (sliding window, chunked local attention): the blocks the next token attends to
  are present (not the null block) and read back; a request scheduled in the last step
  holds no block wholly before the window of its first token of that step (those went
  back to the pool, the null block in their place);
- every live request's computed tokens read back, through its block table, exactly as its
  own token ids at their positions (so a prefix hit reads what the request would have
  computed itself); a cached block's slots hold the positions its hash covers;
- waiting (and preempted) requests hold no blocks and have nothing computed; finished ones
  hold no blocks; every live request is in exactly one queue; `running` respects
  `max_num_seqs`. With a KV connector: a WAITING_FOR_REMOTE_KVS request is in
  `skipped_waiting` with blocks for its tokens; a request whose KVs arrived may wait there
  with them (and its blocks); a finished request may keep its blocks only while the
  scheduler still holds it (the connector is sending them, or its load is in flight);
- the engine loop (async scheduling): a live request's output placeholders plus its
  tokens to discard equal the batches in flight that sample a token for it (none in the
  synchronous loop); its cached blocks cover only tokens whose value the scheduler knows
  and whose KV is computed; the worker's copy of a running request's tokens is the
  scheduler's tokens followed by the ones in flight.

With the offloading connector, sim/v1/kv_offload/invariants.py's checks run too (the CPU
tier, its payloads against the GPU's, its jobs).
"""
from __future__ import annotations

from sim.v1.kv_cache_utils import make_block_hash_with_group_id
from sim.v1.request import RequestStatus


def check_engine(engine) -> list[str]:
    """Every violated invariant, as a sentence; an empty list when all hold."""
    problems = (check_free_queue(engine.block_pool) + check_ref_counts(engine)
                + check_hash_map(engine.block_pool) + check_requests(engine)
                + check_windows(engine) + check_payloads(engine) + check_in_flight(engine))
    if engine.scheduler.connector is not None:
        from sim.v1.kv_offload.invariants import check_offloading
        problems += check_offloading(engine)
    return problems


def _managers(engine):
    return engine.kv_cache_manager.coordinator.single_type_managers


def check_free_queue(pool) -> list[str]:
    problems = []
    queue = pool.free_block_queue
    seen: list[int] = []
    ids = set()
    prev = queue.fake_free_list_head
    curr = prev.next_free_block
    limit = len(pool.blocks) + 1
    while curr is not None and curr is not queue.fake_free_list_tail:
        if curr.prev_free_block is not prev:
            problems.append(f"free queue: block {curr.block_id}'s prev link is broken")
        if curr.block_id in ids:
            problems.append(f"free queue: block {curr.block_id} is in it twice")
            break
        ids.add(curr.block_id)
        seen.append(curr.block_id)
        if len(seen) > limit:
            problems.append("free queue: it loops")
            break
        prev, curr = curr, curr.next_free_block
    if curr is None:
        problems.append("free queue: the list does not reach the tail")
    elif queue.fake_free_list_tail.prev_free_block is not prev:
        problems.append("free queue: the tail's prev link is broken")
    if len(seen) != queue.num_free_blocks:
        problems.append(f"free queue: {len(seen)} blocks linked but num_free_blocks is "
                        f"{queue.num_free_blocks}")
    for block in pool.blocks:
        if block.is_null:
            if block.block_id in ids:
                problems.append("the null block is in the free queue")
            continue
        if block.ref_cnt < 0:
            problems.append(f"block {block.block_id}: ref_cnt {block.ref_cnt} < 0")
        if block.ref_cnt == 0 and block.block_id not in ids:
            problems.append(f"block {block.block_id} has ref_cnt 0 but is not in the free "
                            "queue (leaked)")
        if block.ref_cnt > 0 and block.block_id in ids:
            problems.append(f"block {block.block_id} is in use (ref_cnt {block.ref_cnt}) "
                            "and in the free queue")
    return problems


def check_ref_counts(engine) -> list[str]:
    counts: dict[int, int] = {}
    group_of: dict[int, int] = {}
    # Blocks a scheduler holds back from the pool (deferred frees) keep their reference.
    for _, blocks in engine.scheduler.deferred_frees:
        for block in blocks:
            counts[block.block_id] = counts.get(block.block_id, 0) + 1
    problems = []
    for manager in _managers(engine):
        gid = manager.kv_cache_group_id
        for rid, table in manager.req_to_blocks.items():
            for block in table:
                if block.is_null:
                    continue
                counts[block.block_id] = counts.get(block.block_id, 0) + 1
                if group_of.setdefault(block.block_id, gid) != gid:
                    problems.append(f"block {block.block_id} is in the tables of KV cache "
                                    f"groups {group_of[block.block_id]} and {gid}")
                if block.prev_free_block is not None or block.next_free_block is not None:
                    problems.append(f"block {block.block_id} is in {rid}'s table and in the "
                                    "free queue")
    for block in engine.block_pool.blocks:
        if block.is_null:
            continue
        expected = counts.get(block.block_id, 0)
        if block.ref_cnt != expected:
            problems.append(f"block {block.block_id}: ref_cnt {block.ref_cnt} but "
                            f"{expected} block-table entries")
    return problems


def check_hash_map(pool) -> list[str]:
    problems = []
    in_map: dict[int, bytes] = {}
    for key, block in pool.cached_block_hash_to_block.items():
        if block.block_hash != key:
            problems.append(f"prefix cache: block {block.block_id} is under a key it does "
                            "not carry")
        if block.block_id in in_map:
            problems.append(f"prefix cache: block {block.block_id} is in the map twice")
        in_map[block.block_id] = key
    for block in pool.blocks:
        if block.block_hash is not None and block.block_id not in in_map:
            problems.append(f"block {block.block_id} carries a hash that is not in the "
                            "prefix cache")
        if block.block_hash is not None and block.is_null:
            problems.append("the null block carries a hash")
    if not pool.enable_caching and in_map:
        problems.append("prefix caching is off but the map holds blocks")
    return problems


def check_requests(engine) -> list[str]:
    problems = []
    sched = engine.scheduler
    managers = _managers(engine)
    bs = engine.cache_config.block_size
    lookahead = engine.scheduler_config.num_lookahead_tokens
    max_model_len = engine.scheduler_config.max_model_len
    running = [r.request_id for r in sched.running]
    # The skipped queue (requests waiting for remote KVs) counts as waiting.
    skipped = [r.request_id for r in sched.skipped_waiting]
    waiting = [r.request_id for r in sched.waiting] + skipped
    if len(running) > sched.max_num_running_reqs:
        problems.append(f"{len(running)} running requests > max_num_seqs "
                        f"{sched.max_num_running_reqs}")
    if len(set(running)) != len(running) or len(set(waiting)) != len(waiting) \
            or set(running) & set(waiting):
        problems.append("a request is in a queue twice")
    pending = {r.request_id for r in engine.pending}
    for rid, req in engine.requests.items():
        tables = [m.req_to_blocks.get(rid) for m in managers]
        table = tables[0]
        status = req.status
        if req.is_finished():
            # Only a KV connector may keep a finished request's blocks (still sending
            # them, or its load in flight); it then stays in the scheduler's requests.
            if any(t is not None for t in tables) and sched.requests.get(rid) is not req:
                problems.append(f"finished request {rid} still holds blocks")
            if table is None and sched.requests.get(rid) is req:
                problems.append(f"finished request {rid} is still in the scheduler but "
                                "holds no blocks")
            if rid in running or rid in waiting:
                problems.append(f"finished request {rid} is still queued")
            continue
        if rid in pending:
            if rid in running or rid in waiting or any(t is not None for t in tables):
                problems.append(f"request {rid} has not arrived but is scheduled")
            continue
        if status == RequestStatus.RUNNING:
            if rid not in running or rid in waiting:
                problems.append(f"running request {rid} is not (only) in running")
            if table is None:
                problems.append(f"running request {rid} holds no blocks")
                continue
            if any(t is None or len(t) != len(table) for t in tables[1:]):
                problems.append(f"request {rid}: its block tables differ in length across "
                                "KV cache groups")
            need = min(req.num_computed_tokens + lookahead, max_model_len)
            if len(table) * bs < need:
                problems.append(f"request {rid}: {len(table)} blocks do not cover "
                                f"{req.num_computed_tokens} computed tokens + {lookahead} "
                                "lookahead")
            if req.num_computed_tokens > req.num_tokens:
                problems.append(f"request {rid}: {req.num_computed_tokens} computed tokens "
                                f"> {req.num_tokens} tokens")
            for manager, group_table in zip(managers, tables):
                if group_table is not None:
                    problems += _check_cached_prefix(engine, manager, req, group_table)
        elif status == RequestStatus.WAITING_FOR_REMOTE_KVS:
            if rid not in skipped or rid in running:
                problems.append(f"request {rid} waits for remote KVs but is not (only) in "
                                "skipped_waiting")
            if table is None or len(table) * bs < req.num_computed_tokens:
                problems.append(f"request {rid} waits for remote KVs without blocks for "
                                f"its {req.num_computed_tokens} tokens")
        else:
            if rid not in waiting or rid in running:
                problems.append(f"waiting request {rid} is not (only) in waiting")
            # A request whose remote KVs arrived waits in skipped_waiting with them
            # computed, in its blocks, until it is scheduled.
            promoted = rid in skipped and req.num_computed_tokens > 0
            if any(t is not None for t in tables) and not promoted:
                problems.append(f"waiting request {rid} holds blocks")
            if req.num_computed_tokens != 0 and not promoted:
                problems.append(f"waiting request {rid} has {req.num_computed_tokens} "
                                "computed tokens")
            if promoted and (table is None or len(table) * bs < req.num_computed_tokens):
                problems.append(f"request {rid}: {req.num_computed_tokens} received tokens "
                                "without blocks for them")
    return problems


def _check_cached_prefix(engine, manager, req, table) -> list[str]:
    """The first num_cached_block blocks carry the request's hashes (with this group's id),
    except null blocks and blocks the group never caches."""
    rid = req.request_id
    gid = manager.kv_cache_group_id
    n_cached = manager.num_cached_block.get(rid, 0)
    if n_cached > len(table) or n_cached > len(req.block_hashes):
        return [f"request {rid}: num_cached_block {n_cached} is too large in KV cache group "
                f"{gid}"]
    if not engine.cache_config.enable_prefix_caching:
        return []
    mask = manager.reachable_block_mask(0, n_cached, manager.scheduler_block_size,
                                        manager.kv_cache_spec, manager.use_eagle)
    for i in range(n_cached):
        block = table[i]
        if block.is_null or (mask is not None and not mask[i]):
            continue
        if block.block_hash != make_block_hash_with_group_id(req.block_hashes[i], gid):
            where = f" in KV cache group {gid}" if gid else ""
            return [f"request {rid}: block {block.block_id} at {i}{where} does not carry "
                    "the request's hash there"]
    return []


def check_windows(engine) -> list[str]:
    """Sliding-window and chunked-local groups: the window is present, and what left it
    (at the last allocation) went back to the pool."""
    problems = []
    managers = [m for m in _managers(engine) if m.get_num_skipped_tokens(1 << 30) > 0]
    if not managers:
        return problems
    bs = engine.cache_config.block_size
    out = engine.scheduler.last_scheduler_output
    before: dict[str, int] = {}
    if out is not None:
        for new_req in out.scheduled_new_reqs:
            before[new_req.req_id] = new_req.num_computed_tokens
        cached = out.scheduled_cached_reqs
        before.update(zip(cached.req_ids, cached.num_computed_tokens))
    for rid, req in engine.requests.items():
        if req.status != RequestStatus.RUNNING:
            continue
        for manager in managers:
            table = manager.req_to_blocks.get(rid)
            if table is None:
                continue
            gid = manager.kv_cache_group_id
            computed = min(req.num_computed_tokens, req.num_tokens)
            first = manager.get_num_skipped_tokens(computed)
            for pos in range(first, computed):
                if pos // bs >= len(table) or table[pos // bs].is_null:
                    problems.append(f"request {rid}: position {pos} is inside the window of "
                                    f"KV cache group {gid} but its block is gone")
                    break
            if rid in before:
                skipped = manager.get_num_skipped_tokens(before[rid]) // bs
                kept = [b.block_id for b in table[:skipped] if not b.is_null]
                if kept:
                    problems.append(f"request {rid}: blocks {kept} left the window of KV "
                                    f"cache group {gid} but were not returned to the pool")
    return problems


def check_in_flight(engine) -> list[str]:
    """Output placeholders against the batches in flight (see the module docstring)."""
    problems = []
    batch_queue = getattr(engine, "batch_queue", None) or ()
    if len(batch_queue) > getattr(engine, "batch_queue_size", 1):
        problems.append(f"{len(batch_queue)} batches in flight > batch_queue_size "
                        f"{engine.batch_queue_size}")
    samples: dict[str, int] = {}
    for batch in batch_queue:
        for rid in batch.sampled:
            samples[rid] = samples.get(rid, 0) + 1
    bs = engine.cache_config.block_size
    runner = getattr(engine, "runner_token_ids", {})
    pending = {r.request_id for r in engine.pending}
    for rid, req in engine.requests.items():
        if req.is_finished() or rid in pending:
            continue
        placeholders, to_discard = req.num_output_placeholders, req.async_tokens_to_discard
        if placeholders < 0 or to_discard < 0:
            problems.append(f"request {rid}: {placeholders} placeholders, {to_discard} "
                            "tokens to discard")
        in_flight = samples.get(rid, 0)
        if placeholders + to_discard != in_flight:
            problems.append(f"request {rid}: {placeholders} placeholders + {to_discard} to "
                            f"discard, but {in_flight} batches in flight sample for it")
        for manager in _managers(engine):
            n_cached = manager.num_cached_block.get(rid, 0)
            if n_cached * bs > min(req.num_tokens, req.num_computed_tokens):
                where = (f" in KV cache group {manager.kv_cache_group_id}"
                         if manager.kv_cache_group_id else "")
                problems.append(f"request {rid}: {n_cached} cached blocks{where} cover more "
                                f"than its {req.num_tokens} known and "
                                f"{req.num_computed_tokens} computed tokens")
        if req.status == RequestStatus.RUNNING and rid in runner:
            tokens = runner[rid]
            if (tokens[:req.num_tokens] != req.all_token_ids
                    or len(tokens) != req.num_tokens + placeholders):
                problems.append(f"request {rid}: the worker's {len(tokens)} tokens are not "
                                f"its {req.num_tokens} tokens and {placeholders} in flight")
    return problems


def read_back(engine, request_id: str) -> list:
    """The payloads a request's block table reaches, for its computed tokens."""
    return engine.read_back(request_id)


def request_payload_intact(engine, req) -> bool:
    tokens = req.all_token_ids
    n = min(req.num_computed_tokens, req.num_tokens)
    return engine.read_back(req.request_id, n) == [(tokens[p], p) for p in range(n)]


def check_payloads(engine) -> list[str]:
    problems = []
    bs = engine.cache_config.block_size
    managers = _managers(engine)
    for rid, req in engine.requests.items():
        if req.status != RequestStatus.RUNNING:
            continue
        n = min(req.num_computed_tokens, req.num_tokens)
        tokens = req.all_token_ids
        for manager in managers:
            table = manager.req_to_blocks.get(rid, ())
            if len(table) * bs < n:
                continue   # reported by check_requests
            gid = manager.kv_cache_group_id
            # Full attention: every computed token; a window: the tokens still in it.
            first = manager.get_num_skipped_tokens(n)
            got = (engine.read_back(rid, n, gid) if gid else engine.read_back(rid, n))[first:]
            if got != [(tokens[p], p) for p in range(first, n)]:
                where = f" in KV cache group {gid}" if gid else ""
                problems.append(f"request {rid}: computed tokens{where} do not read back as "
                                "its own tokens")
    for block in engine.block_pool.blocks:
        if block.block_hash is None:
            continue
        slots = engine.gpu_cache[block.block_id]
        first = block.block_hash_num_tokens - bs
        if [s[1] if s else None for s in slots] != list(range(first, first + bs)):
            problems.append(f"cached block {block.block_id}: its slots do not hold "
                            f"positions {first}..{first + bs - 1}")
    return problems
