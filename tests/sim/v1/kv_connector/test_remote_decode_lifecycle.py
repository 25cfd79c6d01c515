"""vLLM v0.25.1's `tests/v1/kv_connector/unit/test_remote_decode_lifecycle.py`, step for
step on the simulation: the PREFILL instance's side of P/D (requests sent with
`do_remote_decode` and max_tokens=1). Same steps, same assertions on queues, statuses,
reference counts and what is freed when."""
from kv_connector_utils import (
    EMPTY_MODEL_RUNNER_OUTPUT,
    assert_scheduler_empty,
    create_model_runner_output,
    create_request,
    create_scheduler,
    empty_model_runner_output,
)

from sim.v1.request import RequestStatus


def test_basic_lifecycle():
    """Lifecycle of a remote decode request."""
    scheduler = create_scheduler(kv_role="kv_producer")
    BLOCK_SIZE = scheduler.block_size
    NUM_TOKENS = int(BLOCK_SIZE * 2.5)
    request = create_request(request_id=1, block_size=BLOCK_SIZE, max_tokens=1,
                             num_tokens=NUM_TOKENS, do_remote_decode=True)
    scheduler.add_request(request)
    request_id = request.request_id

    # STEP (1): prefill.
    scheduler_output = scheduler.schedule()
    assert len(scheduler.requests) == 1
    assert len(scheduler.running) == 1
    assert len(scheduler_output.scheduled_new_reqs) == 1
    engine_core_outputs = scheduler.update_from_output(
        scheduler_output, create_model_runner_output(reqs=[request]))
    # Finished after 1 token ...
    assert request.is_finished()
    assert request.status == RequestStatus.FINISHED_LENGTH_CAPPED
    output = engine_core_outputs[0]
    assert output.finish_reason == "length"
    assert output.kv_transfer_params is not None
    # ... out of the scheduler's queues ...
    assert request_id in scheduler.finished_req_ids
    assert len(scheduler.running) == 0
    assert len(scheduler.waiting) == 0
    # ... but its blocks are not freed.
    assert len(scheduler.requests) == 1
    for block in scheduler.kv_cache_manager.req_to_blocks[request_id]:
        assert block.ref_cnt == 1

    # STEP (2): the finished request is passed to the workers.
    scheduler_output = scheduler.schedule()
    assert len(scheduler.requests) == 1
    assert len(scheduler.running) == 0
    assert len(scheduler_output.finished_req_ids) == 1
    assert request_id in scheduler_output.finished_req_ids
    assert len(scheduler_output.scheduled_new_reqs) == 0
    assert scheduler_output.scheduled_cached_reqs.num_reqs == 0
    assert len(scheduler.finished_req_ids) == 0
    scheduler.update_from_output(scheduler_output, EMPTY_MODEL_RUNNER_OUTPUT)

    # STEP (3): finished sending.
    scheduler_output = scheduler.schedule()
    assert len(scheduler.requests) == 1
    assert len(scheduler.running) == 0
    assert len(scheduler_output.finished_req_ids) == 0
    assert len(scheduler_output.scheduled_new_reqs) == 0
    assert scheduler_output.scheduled_cached_reqs.num_reqs == 0
    assert len(scheduler.finished_req_ids) == 0
    scheduler.update_from_output(scheduler_output,
                                 empty_model_runner_output(finished_sending={request_id}))
    # No leak after the request's lifecycle.
    assert_scheduler_empty(scheduler)


def test_short_prompt_lifecycle():
    """A remote decode request with a prompt shorter than a block."""
    scheduler = create_scheduler(kv_role="kv_producer")
    BLOCK_SIZE = scheduler.block_size
    NUM_TOKENS = BLOCK_SIZE // 2
    request = create_request(request_id=1, block_size=BLOCK_SIZE, max_tokens=1,
                             num_tokens=NUM_TOKENS, do_remote_decode=True)
    scheduler.add_request(request)

    # STEP (1): prefill.
    scheduler_output = scheduler.schedule()
    assert len(scheduler.requests) == 1
    assert len(scheduler.running) == 1
    assert len(scheduler_output.scheduled_new_reqs) == 1
    # Fewer tokens than a block: the partial block is transferred.
    eco = scheduler.update_from_output(scheduler_output,
                                       create_model_runner_output(reqs=[request]))
    kv_transfer_params = eco[0].kv_transfer_params
    assert len(kv_transfer_params["remote_block_ids"]) == 1

    # Mark the send finished to clear everything.
    scheduler_output = scheduler.schedule()
    scheduler.update_from_output(
        scheduler_output,
        create_model_runner_output(reqs=[request], finished_sending={request.request_id}))
    assert_scheduler_empty(scheduler)


def test_prefix_cache_lifecycle():
    """Remote decode params still name every block with a prefix-cache hit."""
    scheduler = create_scheduler(kv_role="kv_producer")
    BLOCK_SIZE = scheduler.block_size
    NUM_EXTERNAL_FULL_BLOCKS = 3
    NUM_TOKENS = int(BLOCK_SIZE * (NUM_EXTERNAL_FULL_BLOCKS + 0.5))
    request_normal = create_request(request_id=1, block_size=BLOCK_SIZE,
                                    num_tokens=NUM_TOKENS)
    scheduler.add_request(request_normal)
    scheduler_output = scheduler.schedule()
    scheduler.update_from_output(
        scheduler_output, create_model_runner_output(reqs=[request_normal], use_eos=True))
    scheduler_output = scheduler.schedule()
    scheduler.update_from_output(scheduler_output, EMPTY_MODEL_RUNNER_OUTPUT)

    # Step (1): send the KV transfer.
    NUM_EXTERNAL_FULL_BLOCKS -= 1
    NUM_TOKENS = int(BLOCK_SIZE * (NUM_EXTERNAL_FULL_BLOCKS + 0.5))
    request_remote = create_request(request_id=1, block_size=BLOCK_SIZE,
                                    num_tokens=NUM_TOKENS, do_remote_decode=True)
    scheduler.add_request(request_remote)
    scheduler_output = scheduler.schedule()
    eco = scheduler.update_from_output(scheduler_output,
                                       create_model_runner_output(reqs=[request_remote]))
    kv_transfer_params = eco[0].kv_transfer_params
    # Every block is named, the partial one included, though some were hits.
    num_remote_blocks = sum(len(g) for g in kv_transfer_params["remote_block_ids"])
    assert num_remote_blocks == NUM_EXTERNAL_FULL_BLOCKS + 1

    # STEP (2): it is freed.
    scheduler_output = scheduler.schedule()
    scheduler.update_from_output(
        scheduler_output,
        empty_model_runner_output(finished_sending={request_remote.request_id}))
    assert_scheduler_empty(scheduler)


def test_abort_during_kv_transfer():
    """Aborting a remote decode request does not release its blocks."""
    scheduler = create_scheduler(kv_role="kv_producer")
    BLOCK_SIZE = scheduler.block_size
    NUM_TOKENS = int(BLOCK_SIZE * 2.5)
    request = create_request(request_id=1, block_size=BLOCK_SIZE, num_tokens=NUM_TOKENS,
                             do_remote_decode=True)
    scheduler.add_request(request)
    scheduler_output = scheduler.schedule()
    scheduler.update_from_output(scheduler_output, create_model_runner_output(reqs=[request]))
    scheduler_output = scheduler.schedule()
    scheduler.update_from_output(scheduler_output, EMPTY_MODEL_RUNNER_OUTPUT)

    # Out of the persistent batch, blocks not freed.
    assert len(scheduler.requests) == 1
    # An abort does not free them either.
    scheduler.finish_requests([request.request_id], RequestStatus.FINISHED_ABORTED)
    assert len(scheduler.requests) == 1

    # A finished-sending notification does.
    scheduler_output = scheduler.schedule()
    scheduler.update_from_output(
        scheduler_output, empty_model_runner_output(finished_sending={request.request_id}))
    assert_scheduler_empty(scheduler)
