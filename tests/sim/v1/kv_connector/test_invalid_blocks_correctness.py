"""vLLM v0.25.1's `tests/v1/kv_connector/unit/test_invalid_blocks_correctness.py` on the
simulation: a running request that must recompute invalid blocks keeps its blocks; with
`kv_load_failure_policy="fail"` the invalid blocks leave the prefix cache; an asynchronous
load's invalid blocks are never cached. The connector's prefix-cache statistics are read
from the scheduler (vLLM hands them out in its stats)."""
from kv_connector_utils import (
    ScriptedConnector,
    create_model_runner_output,
    create_request,
    create_scheduler,
)

from sim.v1.request import RequestStatus

NUM_PROMPT_BLOCKS = 100
NUM_EXTERNAL_COMPUTED_BLOCKS = 99
INVALID_BLOCK_IDX = 50


def _setup(policy: str, load_async: bool):
    connector = ScriptedConnector(load_async=load_async)
    scheduler = create_scheduler(kv_load_failure_policy=policy, connector=connector)
    request = create_request(num_tokens=NUM_PROMPT_BLOCKS * scheduler.block_size)
    scheduler.add_request(request)
    connector.matched[request.request_id] = (NUM_EXTERNAL_COMPUTED_BLOCKS
                                             * scheduler.block_size)
    return scheduler, connector, request


def test_sync_recompute_blocks_not_freed_for_running_requests():
    """Sync load, "recompute": the request stays RUNNING, its computed count is cut to
    the invalid block, it keeps its blocks, produces nothing, and is scheduled again."""
    scheduler, _, request = _setup("recompute", load_async=False)
    scheduler_output = scheduler.schedule()
    assert len(scheduler.running) == 1
    assert len(scheduler_output.scheduled_new_reqs) == 1
    assert request.status == RequestStatus.RUNNING

    req_block_ids = scheduler_output.scheduled_new_reqs[0].block_ids[0]
    original_num_computed_tokens = request.num_computed_tokens
    outputs = scheduler.update_from_output(scheduler_output, create_model_runner_output(
        [request], invalid_block_ids={req_block_ids[INVALID_BLOCK_IDX]}, use_eos=False))

    assert request.status == RequestStatus.RUNNING
    assert request.num_computed_tokens == INVALID_BLOCK_IDX * scheduler.block_size
    assert request.num_computed_tokens < original_num_computed_tokens
    assert request.request_id not in [out.request_id for out in outputs]
    assert request in scheduler.running
    assert request.request_id in scheduler.requests
    assert len(scheduler.kv_cache_manager.get_block_ids(request.request_id)[0]) > 0

    scheduler_output_2 = scheduler.schedule()
    assert request.request_id in scheduler_output_2.num_scheduled_tokens


def test_sync_fail_invalid_blocks_evicted():
    """Sync load, "fail": the request finishes with an error, is removed, and the invalid
    block is evicted from the prefix cache."""
    scheduler, _, request = _setup("fail", load_async=False)
    scheduler_output = scheduler.schedule()
    assert len(scheduler.running) == 1
    assert request.status == RequestStatus.RUNNING

    invalid_block_id = scheduler_output.scheduled_new_reqs[0].block_ids[0][INVALID_BLOCK_IDX]
    block = scheduler.kv_cache_manager.block_pool.blocks[invalid_block_id]
    assert block.block_hash is not None   # cached when scheduled
    outputs = scheduler.update_from_output(scheduler_output, create_model_runner_output(
        [request], invalid_block_ids={invalid_block_id}, use_eos=True))

    assert request.status == RequestStatus.FINISHED_ERROR
    assert request.get_finished_reason() == "error"
    assert len(outputs) == 1
    assert outputs[0].request_id == request.request_id
    assert outputs[0].finish_reason == "error"
    assert request.request_id not in scheduler.requests
    assert len(scheduler.running) == 0
    assert scheduler.kv_cache_manager.get_block_ids(request.request_id) == ([],)
    # Evicted: a later request cannot hit the invalid data.
    assert block.block_hash is None
    stats = scheduler.connector_prefix_cache_stats
    assert stats.requests == 1
    assert stats.queries == NUM_PROMPT_BLOCKS * scheduler.block_size
    assert stats.hits == NUM_EXTERNAL_COMPUTED_BLOCKS * scheduler.block_size


def test_async_recompute_blocks_not_cached_when_invalid(monkeypatch):
    """Async load, "recompute": nothing is evicted (nothing was cached), the request
    keeps waiting with its count cut, and when the load completes only the valid blocks
    are cached before it is scheduled."""
    scheduler, _, request = _setup("recompute", load_async=True)
    scheduler_output = scheduler.schedule()
    assert len(scheduler.skipped_waiting) == 1
    assert request.status == RequestStatus.WAITING_FOR_REMOTE_KVS
    assert request.num_computed_tokens == NUM_EXTERNAL_COMPUTED_BLOCKS * scheduler.block_size

    (req_block_ids,) = scheduler.kv_cache_manager.get_block_ids(request.request_id)
    invalid_block_id = req_block_ids[INVALID_BLOCK_IDX]
    block = scheduler.kv_cache_manager.block_pool.blocks[invalid_block_id]
    assert block.block_hash is None   # an async load's blocks are not cached yet

    kv = scheduler.kv_cache_manager
    evict_blocks_calls = []
    original_evict_blocks = kv.evict_blocks
    monkeypatch.setattr(kv, "evict_blocks",
                        lambda ids: (evict_blocks_calls.append(set(ids)),
                                     original_evict_blocks(ids)))
    scheduler.update_from_output(scheduler_output, create_model_runner_output(
        reqs=[], finished_recving=None, invalid_block_ids={invalid_block_id}))
    assert evict_blocks_calls == []
    assert request.status == RequestStatus.WAITING_FOR_REMOTE_KVS
    assert request.request_id in scheduler.failed_recving_kv_req_ids
    expected_valid_tokens = INVALID_BLOCK_IDX * scheduler.block_size
    assert request.num_computed_tokens == expected_valid_tokens
    assert block.block_hash is None
    stats = scheduler.connector_prefix_cache_stats
    assert (stats.requests, stats.queries, stats.hits) == (
        1, NUM_PROMPT_BLOCKS * scheduler.block_size,
        NUM_EXTERNAL_COMPUTED_BLOCKS * scheduler.block_size)

    # The load completes.
    scheduler.update_from_output(scheduler_output, create_model_runner_output(
        reqs=[], finished_recving={request.request_id}))
    assert request.request_id in scheduler.finished_recving_kv_req_ids
    assert request.request_id in scheduler.failed_recving_kv_req_ids
    assert block.block_hash is None

    cache_blocks_calls = []
    original_cache_blocks = kv.cache_blocks
    monkeypatch.setattr(kv, "cache_blocks",
                        lambda req, n: (cache_blocks_calls.append((req.request_id, n)),
                                        original_cache_blocks(req, n)))
    scheduler.schedule()
    # Cached once, up to the valid tokens only; then scheduled in the same call.
    assert cache_blocks_calls == [(request.request_id, expected_valid_tokens)]
    assert request.status == RequestStatus.RUNNING
    assert request.num_computed_tokens >= expected_valid_tokens
    assert request.request_id not in scheduler.failed_recving_kv_req_ids
    assert request.request_id not in scheduler.finished_recving_kv_req_ids
    assert request in scheduler.running
