"""vLLM v0.25.1's `tests/v1/kv_connector/unit/test_kv_load_failure_recovery.py` on the
simulation: blocks loaded by a connector (asynchronously or not) are reported invalid; with
`kv_load_failure_policy="recompute"` the request's computed count falls back to the first
invalid block. vLLM's tests put a Mock in place of the connector; `ScriptedConnector` is
that Mock."""
import pytest
from kv_connector_utils import (
    ScriptedConnector,
    create_model_runner_output,
    create_request,
    create_scheduler,
)

from sim.v1.request import RequestStatus


def _scheduler(connector):
    return create_scheduler(kv_load_failure_policy="recompute", connector=connector)


@pytest.mark.parametrize("num_prompt_blocks,num_external_computed_blocks,invalid_block_idxs",
                         [(100, 99, {0, 98}), (100, 99, {50, 98}), (100, 99, {98})])
def test_async_load_failure(num_prompt_blocks, num_external_computed_blocks,
                            invalid_block_idxs):
    connector = ScriptedConnector(load_async=True)
    scheduler = _scheduler(connector)
    num_prompt_tokens = num_prompt_blocks * scheduler.block_size
    num_external_computed_tokens = num_external_computed_blocks * scheduler.block_size
    request1, request2, request3 = (create_request(num_tokens=num_prompt_tokens)
                                    for _ in range(3))
    for r in (request1, request2, request3):
        scheduler.add_request(r)
        connector.matched[r.request_id] = num_external_computed_tokens

    scheduler_output = scheduler.schedule()
    assert len(scheduler.waiting) == 0
    assert len(scheduler.skipped_waiting) == 3
    for request in scheduler.skipped_waiting:
        assert request.num_computed_tokens == num_external_computed_tokens
        assert request.status == RequestStatus.WAITING_FOR_REMOTE_KVS
    assert connector.calls["get_num_new_matched_tokens"] == 3

    # Some of request2's blocks fail to load.
    (req2_block_ids,) = scheduler.kv_cache_manager.get_block_ids(request2.request_id)
    invalid_block_ids = {req2_block_ids[i] for i in invalid_block_idxs}
    scheduler.update_from_output(scheduler_output, create_model_runner_output(
        reqs=[], finished_recving={request1.request_id, request3.request_id},
        invalid_block_ids=invalid_block_ids, use_eos=True))

    assert len(scheduler.waiting) == 0
    assert len(scheduler.skipped_waiting) == 3
    for request in scheduler.skipped_waiting:
        if request.request_id == request2.request_id:
            assert request.num_computed_tokens == (min(invalid_block_idxs)
                                                   * scheduler.block_size)
        else:
            assert request.num_computed_tokens == num_external_computed_tokens
        assert request.status == RequestStatus.WAITING_FOR_REMOTE_KVS
    assert scheduler.failed_recving_kv_req_ids == {request2.request_id}
    assert connector.calls["get_num_new_matched_tokens"] == 3


@pytest.mark.parametrize("num_prompt_blocks,num_external_computed_blocks,invalid_block_idxs",
                         [(100, 99, {0, 98}), (100, 99, {50, 98}), (100, 99, {98})])
def test_sync_load_failure(num_prompt_blocks, num_external_computed_blocks,
                           invalid_block_idxs):
    connector = ScriptedConnector(load_async=False)
    scheduler = _scheduler(connector)
    num_prompt_tokens = num_prompt_blocks * scheduler.block_size
    num_external_computed_tokens = num_external_computed_blocks * scheduler.block_size
    request1, request2, request3 = (create_request(num_tokens=num_prompt_tokens)
                                    for _ in range(3))
    for r in (request1, request2, request3):
        scheduler.add_request(r)
        connector.matched[r.request_id] = num_external_computed_tokens

    scheduler_output = scheduler.schedule()
    assert len(scheduler.running) == 3
    assert len(scheduler_output.scheduled_new_reqs) == 3
    for request in scheduler_output.scheduled_new_reqs:
        assert request.num_computed_tokens == num_external_computed_tokens
    assert connector.calls["get_num_new_matched_tokens"] == 3

    # Some of request2's blocks fail to load.
    req2_block_ids = scheduler_output.scheduled_new_reqs[1].block_ids[0]
    invalid_block_ids = {req2_block_ids[i] for i in invalid_block_idxs}
    scheduler.update_from_output(scheduler_output, create_model_runner_output(
        [request1, request2, request3], invalid_block_ids=invalid_block_ids, use_eos=True))

    assert len(scheduler.running) == 1
    assert scheduler.running[0].request_id == request2.request_id
    assert scheduler.running[0].num_computed_tokens == (min(invalid_block_idxs)
                                                        * scheduler.block_size)
    assert connector.calls["get_num_new_matched_tokens"] == 3
    assert connector.calls["request_finished"] == 2


@pytest.mark.parametrize(
    "num_prompt_blocks,num_external_computed_blocks,num_common_prefix_blocks,"
    "invalid_block_idxs",
    [(100, 99, 50, {0, 49}), (100, 99, 50, {25, 49}), (100, 99, 50, {49})])
def test_sync_load_failure_with_shared_blocks(num_prompt_blocks,
                                              num_external_computed_blocks,
                                              num_common_prefix_blocks, invalid_block_idxs):
    connector = ScriptedConnector(load_async=False)
    scheduler = _scheduler(connector)
    num_prompt_tokens = num_prompt_blocks * scheduler.block_size
    num_external_computed_tokens = num_external_computed_blocks * scheduler.block_size
    common_prefix_len = num_common_prefix_blocks * scheduler.block_size
    request1 = create_request(num_tokens=num_prompt_tokens,
                              common_prefix_len=common_prefix_len)
    request2 = create_request(num_tokens=num_prompt_tokens,
                              common_prefix_len=common_prefix_len)
    scheduler.add_request(request1)
    scheduler.add_request(request2)
    connector.matched[request1.request_id] = num_external_computed_tokens

    scheduler_output = scheduler.schedule()
    expected_computed_tokens = {request1.request_id: num_external_computed_tokens,
                                request2.request_id: common_prefix_len}
    assert len(scheduler.running) == 2
    assert len(scheduler_output.scheduled_new_reqs) == 2
    for request in scheduler_output.scheduled_new_reqs:
        assert request.num_computed_tokens == expected_computed_tokens[request.req_id]
    assert connector.calls["get_num_new_matched_tokens"] == 2

    # Some of the shared blocks fail to load.
    req1_block_ids = scheduler_output.scheduled_new_reqs[0].block_ids[0]
    invalid_block_ids = {req1_block_ids[i] for i in invalid_block_idxs}
    scheduler.update_from_output(scheduler_output, create_model_runner_output(
        [request1, request2], invalid_block_ids=invalid_block_ids, use_eos=True))

    # request1 recomputes every shared block; request2 keeps its prefix hit.
    expected_computed_tokens = {
        request1.request_id: min(invalid_block_idxs) * scheduler.block_size,
        request2.request_id: common_prefix_len}
    assert len(scheduler.running) == 2
    for request in scheduler.running:
        assert request.num_computed_tokens == expected_computed_tokens[request.request_id]
    assert connector.calls["get_num_new_matched_tokens"] == 2


@pytest.mark.parametrize("num_prompt_blocks,num_external_computed_blocks,invalid_block_idxs",
                         [(100, 99, (0, 50, 98)), (100, 99, (98, 50, 0))])
def test_async_progressive_load_failure(num_prompt_blocks, num_external_computed_blocks,
                                        invalid_block_idxs):
    connector = ScriptedConnector(load_async=True)
    scheduler = _scheduler(connector)
    num_prompt_tokens = num_prompt_blocks * scheduler.block_size
    num_external_computed_tokens = num_external_computed_blocks * scheduler.block_size
    request = create_request(num_tokens=num_prompt_tokens)
    scheduler.add_request(request)
    connector.matched[request.request_id] = num_external_computed_tokens

    scheduler_output = scheduler.schedule()
    assert len(scheduler.waiting) == 0
    assert len(scheduler.skipped_waiting) == 1
    assert scheduler.skipped_waiting.peek_request().request_id == request.request_id
    assert request.num_computed_tokens == num_external_computed_tokens
    assert request.status == RequestStatus.WAITING_FOR_REMOTE_KVS
    assert connector.calls["get_num_new_matched_tokens"] == 1

    min_invalid_block_idx = max(invalid_block_idxs) + 1
    # Failures reported one block at a time while the load goes on.
    for invalid_block_idx in invalid_block_idxs:
        (req_block_ids,) = scheduler.kv_cache_manager.get_block_ids(request.request_id)
        scheduler.update_from_output(scheduler_output, create_model_runner_output(
            reqs=[], finished_recving=set(),
            invalid_block_ids={req_block_ids[invalid_block_idx]}, use_eos=True))
        min_invalid_block_idx = min(min_invalid_block_idx, invalid_block_idx)
        assert len(scheduler.waiting) == 0
        assert len(scheduler.skipped_waiting) == 1
        assert scheduler.skipped_waiting.peek_request().request_id == request.request_id
        assert request.num_computed_tokens == min_invalid_block_idx * scheduler.block_size
        assert request.status == RequestStatus.WAITING_FOR_REMOTE_KVS
        assert scheduler.failed_recving_kv_req_ids == {request.request_id}
        assert connector.calls["get_num_new_matched_tokens"] == 1
