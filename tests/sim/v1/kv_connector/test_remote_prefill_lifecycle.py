"""vLLM v0.25.1's `tests/v1/kv_connector/unit/test_remote_prefill_lifecycle.py`, step for
step on the simulation: the DECODE instance's side of P/D (requests sent with
`do_remote_prefill`). Same steps, same assertions on queues, statuses, blocks and hashes.

`test_p_side_chunked_prefill_mamba` runs on a full-attention cache with the connector's
`has_mamba` flag: the simulation has no Mamba layers, and what the test checks is the
connector's N-1 truncation of the prefill request and its chunked prefill.
"""
from kv_connector_utils import (
    EMPTY_MODEL_RUNNER_OUTPUT,
    ScriptedConnector,
    assert_scheduler_empty,
    create_model_runner_output,
    create_request,
    create_scheduler,
    empty_model_runner_output,
)

from sim.v1.config import KVTransferConfig
from sim.v1.kv_connector import KVConnectorRole
from sim.v1.kv_connector.nixl import NixlConnector
from sim.v1.request import RequestStatus
from sim.v1.scheduler import ModelRunnerOutput


def _num_waiting_requests(scheduler) -> int:
    return len(scheduler.waiting) + len(scheduler.skipped_waiting)


def _blocks(scheduler, request_id):
    return scheduler.kv_cache_manager.req_to_blocks[request_id]


def test_basic_lifecycle():
    """Lifecycle of a remote prefill."""
    scheduler = create_scheduler()
    BLOCK_SIZE = scheduler.block_size
    NUM_EXTERNAL_FULL_BLOCKS = 2
    NUM_TOKENS = int(BLOCK_SIZE * (NUM_EXTERNAL_FULL_BLOCKS + 0.5))
    START_FREE_BLOCK_QUEUE_SIZE = (
        scheduler.kv_cache_manager.block_pool.free_block_queue.num_free_blocks)
    request = create_request(request_id=1, block_size=BLOCK_SIZE, num_tokens=NUM_TOKENS,
                             do_remote_prefill=True)
    scheduler.add_request(request)
    request_id = request.request_id

    # STEP (1): schedule(): nothing runs, the scheduler output is empty ...
    scheduler_output = scheduler.schedule()
    assert len(scheduler.running) == 0
    assert len(scheduler_output.scheduled_new_reqs) == 0
    assert scheduler_output.scheduled_cached_reqs.num_reqs == 0
    assert len(scheduler_output.num_scheduled_tokens) == 0
    assert scheduler_output.total_num_scheduled_tokens == 0
    # ... the request waits for KVs, its tokens counted as computed ...
    assert _num_waiting_requests(scheduler) == 1
    assert request in scheduler.skipped_waiting
    assert request.status == RequestStatus.WAITING_FOR_REMOTE_KVS
    assert request.num_computed_tokens == NUM_TOKENS
    # ... with (uncached) blocks allocated to it.
    block_pool = scheduler.kv_cache_manager.block_pool
    assert block_pool.free_block_queue.num_free_blocks < START_FREE_BLOCK_QUEUE_SIZE
    assert len(block_pool.cached_block_hash_to_block) == 0
    for block in _blocks(scheduler, request_id):
        assert block.block_hash is None
    # The connector asks its worker to read the remote blocks into them.
    meta = scheduler_output.kv_connector_metadata
    assert list(meta.reqs_to_recv) == [request_id]
    assert meta.reqs_to_recv[request_id].local_block_ids == (
        [b.block_id for b in _blocks(scheduler, request_id)],)
    engine_core_outputs = scheduler.update_from_output(scheduler_output,
                                                       EMPTY_MODEL_RUNNER_OUTPUT)
    assert not engine_core_outputs

    # STEP (2): schedule(): nothing happens; the worker reports the recv finished.
    scheduler_output = scheduler.schedule()
    assert _num_waiting_requests(scheduler) == 1
    assert len(scheduler.running) == 0
    scheduler.update_from_output(scheduler_output,
                                 empty_model_runner_output(finished_recving={request_id}))
    assert _num_waiting_requests(scheduler) == 1
    assert request_id in scheduler.finished_recving_kv_req_ids

    # STEP (3): schedule() actually schedules it.
    scheduler_output = scheduler.schedule()
    assert len(scheduler.running) == 1
    num_hashed_blocks = 0
    for block in _blocks(scheduler, request_id):
        assert block.ref_cnt == 1
        num_hashed_blocks += 1 if block.block_hash is not None else 0
    assert num_hashed_blocks == NUM_EXTERNAL_FULL_BLOCKS
    # The rest of the prompt is scheduled in this step.
    scheduled_req = scheduler_output.scheduled_new_reqs[0]
    num_scheduled_tokens = scheduler_output.num_scheduled_tokens[request_id]
    assert num_scheduled_tokens == (len(scheduled_req.prompt_token_ids)
                                    - scheduled_req.num_computed_tokens)
    scheduler.update_from_output(scheduler_output, create_model_runner_output([request]))

    # STEP (4): hit EOS.
    scheduler_output = scheduler.schedule()
    engine_core_outputs = scheduler.update_from_output(
        scheduler_output, create_model_runner_output([request], use_eos=True))
    scheduler.schedule()
    assert len(engine_core_outputs) == 1
    assert engine_core_outputs[0].finish_reason == "stop"
    assert_scheduler_empty(scheduler)


def test_interleaved_lifecycle():
    """Remote prefills work well with other requests."""
    scheduler = create_scheduler()
    BLOCK_SIZE = scheduler.block_size
    NUM_TOKENS = int(BLOCK_SIZE * 2.5)
    request_remote = create_request(request_id=1, block_size=BLOCK_SIZE,
                                    num_tokens=NUM_TOKENS, do_remote_prefill=True)
    request_local_a = create_request(request_id=2, block_size=BLOCK_SIZE,
                                     num_tokens=NUM_TOKENS)
    request_local_b = create_request(request_id=3, block_size=BLOCK_SIZE,
                                     num_tokens=NUM_TOKENS)

    # STEP 1: a regular request is running.
    scheduler.add_request(request_local_a)
    scheduler_output = scheduler.schedule()
    assert len(scheduler.running) == 1
    scheduler.update_from_output(scheduler_output,
                                 create_model_runner_output([request_local_a]))

    # STEP 2: add a local and a remote request.
    scheduler.add_request(request_local_b)
    scheduler.add_request(request_remote)
    scheduler_output = scheduler.schedule()
    assert len(scheduler.running) == 2
    assert _num_waiting_requests(scheduler) == 1
    assert len(scheduler_output.scheduled_new_reqs) == 1
    assert scheduler_output.scheduled_cached_reqs.num_reqs == 1
    scheduler.update_from_output(
        scheduler_output, create_model_runner_output([request_local_a, request_local_b]))

    # STEP 3: continue running, KVs not arrived yet.
    scheduler_output = scheduler.schedule()
    assert len(scheduler.running) == 2
    assert _num_waiting_requests(scheduler) == 1
    assert len(scheduler_output.scheduled_new_reqs) == 0
    assert scheduler_output.scheduled_cached_reqs.num_reqs == 2
    scheduler.update_from_output(
        scheduler_output, create_model_runner_output([request_local_a, request_local_b]))
    assert len(scheduler.running) == 2
    assert _num_waiting_requests(scheduler) == 1

    # STEP 4: KVs arrive.
    scheduler_output = scheduler.schedule()
    assert len(scheduler.running) == 2
    assert _num_waiting_requests(scheduler) == 1
    assert len(scheduler_output.scheduled_new_reqs) == 0
    assert scheduler_output.scheduled_cached_reqs.num_reqs == 2
    scheduler.update_from_output(
        scheduler_output,
        create_model_runner_output([request_local_a, request_local_b],
                                   finished_recving={request_remote.request_id}))

    # STEP 5: the received request is sent to the model runner.
    scheduler_output = scheduler.schedule()
    assert len(scheduler.running) == 3
    assert _num_waiting_requests(scheduler) == 0
    assert len(scheduler_output.scheduled_new_reqs) == 1
    assert scheduler_output.scheduled_cached_reqs.num_reqs == 2
    scheduler.update_from_output(
        scheduler_output,
        create_model_runner_output([request_local_a, request_local_b, request_remote]))

    # STEP 6: hit EOS and free.
    scheduler_output = scheduler.schedule()
    scheduler.update_from_output(
        scheduler_output,
        create_model_runner_output([request_local_a, request_local_b, request_remote],
                                   use_eos=True))
    scheduler.schedule()
    assert_scheduler_empty(scheduler)


def test_no_spurious_prefix_caching():
    """Blocks allocated for a remote prefill stay uncomputed for several steps: no other
    request may hit them."""
    scheduler = create_scheduler()
    BLOCK_SIZE = scheduler.block_size
    NUM_TOKENS = int(BLOCK_SIZE * 2.5)
    # Both prompts are [1, 1, 1, ...].
    request_remote = create_request(request_id=1, block_size=BLOCK_SIZE,
                                    num_tokens=NUM_TOKENS, common_prefix_len=NUM_TOKENS,
                                    do_remote_prefill=True)
    request_local = create_request(request_id=2, block_size=BLOCK_SIZE, num_tokens=NUM_TOKENS,
                                   common_prefix_len=NUM_TOKENS, do_remote_prefill=False)

    # The remote prefill caches no block.
    scheduler.add_request(request_remote)
    scheduler_output = scheduler.schedule()
    scheduler.update_from_output(scheduler_output, EMPTY_MODEL_RUNNER_OUTPUT)
    assert _num_waiting_requests(scheduler) == 1

    # The local prefill caches its own blocks, separately.
    scheduler.add_request(request_local)
    scheduler_output = scheduler.schedule()
    assert len(scheduler.running) == 1
    assert _num_waiting_requests(scheduler) == 1
    local_blocks = _blocks(scheduler, request_local.request_id)
    remote_blocks = _blocks(scheduler, request_remote.request_id)
    num_hashed_blocks = 0
    for block in local_blocks:
        assert block.ref_cnt == 1
        num_hashed_blocks += 1 if block.block_hash is not None else 0
    assert num_hashed_blocks > 0
    for block in remote_blocks:
        assert block.ref_cnt == 1
        assert block.block_hash is None


def test_full_block_prompt():
    """A prompt of whole blocks: the last token is recomputed, in the last block."""
    scheduler = create_scheduler()
    BLOCK_SIZE = scheduler.block_size
    NUM_EXTERNAL_FULL_BLOCKS = 2
    NUM_TOKENS = int(BLOCK_SIZE * NUM_EXTERNAL_FULL_BLOCKS)
    request = create_request(request_id=1, block_size=BLOCK_SIZE, num_tokens=NUM_TOKENS,
                             do_remote_prefill=True)
    scheduler.add_request(request)
    request_id = request.request_id

    # STEP (1): initialize a recv; every block is allocated.
    scheduler_output = scheduler.schedule()
    assert len(_blocks(scheduler, request_id)) == NUM_EXTERNAL_FULL_BLOCKS
    scheduler.update_from_output(scheduler_output, EMPTY_MODEL_RUNNER_OUTPUT)

    # STEP (2): recv.
    scheduler_output = scheduler.schedule()
    scheduler.update_from_output(scheduler_output,
                                 empty_model_runner_output(finished_recving={request_id}))
    assert _num_waiting_requests(scheduler) == 1
    assert request_id in scheduler.finished_recving_kv_req_ids

    # STEP (3): run as usual: the final prompt token is recomputed to sample the first
    # new token, so no new block.
    scheduler_output = scheduler.schedule()
    assert len(_blocks(scheduler, request_id)) == NUM_EXTERNAL_FULL_BLOCKS
    assert scheduler_output.scheduled_new_reqs[0].num_computed_tokens == NUM_TOKENS - 1
    assert scheduler_output.num_scheduled_tokens[request_id] == 1
    scheduler.update_from_output(scheduler_output, create_model_runner_output([request]))

    # STEP (4): hit EOS.
    scheduler_output = scheduler.schedule()
    engine_core_outputs = scheduler.update_from_output(
        scheduler_output, create_model_runner_output([request], use_eos=True))
    scheduler.schedule()
    assert len(engine_core_outputs) == 1
    assert engine_core_outputs[0].finish_reason == "stop"
    assert_scheduler_empty(scheduler)


def test_cannot_schedule_after_recv():
    """No room to schedule a received request: it is preempted, then resumes with its
    computed tokens recomputed."""
    # 6 blocks, one of them the null block: 5 usable.
    TOTAL_NUM_BLOCKS = 6
    scheduler = create_scheduler(num_blocks=TOTAL_NUM_BLOCKS)
    NUM_PROMPT_BLOCKS = 2
    BLOCK_SIZE = scheduler.block_size
    NUM_TOKENS_LOCAL = int(BLOCK_SIZE * NUM_PROMPT_BLOCKS)
    NUM_TOKENS_REMOTE = int(BLOCK_SIZE * NUM_PROMPT_BLOCKS)
    request_normal = create_request(request_id=1, block_size=BLOCK_SIZE,
                                    num_tokens=NUM_TOKENS_LOCAL)
    request_remote = create_request(request_id=2, block_size=BLOCK_SIZE,
                                    num_tokens=NUM_TOKENS_REMOTE, do_remote_prefill=True)

    # STEP 1: 3 blocks in use (2 for the prompt, 1 for decode).
    scheduler.add_request(request_normal)
    scheduler_output = scheduler.schedule()
    scheduler.update_from_output(scheduler_output,
                                 create_model_runner_output(reqs=[request_normal]))
    assert len(scheduler.running) == 1
    assert _num_waiting_requests(scheduler) == 0

    # STEP 2: 5 blocks in use (2 new ones for the remote blocks).
    scheduler.add_request(request_remote)
    scheduler_output = scheduler.schedule()
    scheduler.update_from_output(scheduler_output,
                                 create_model_runner_output(reqs=[request_normal]))
    assert len(scheduler.running) == 1
    assert _num_waiting_requests(scheduler) == 1

    # STEP 3: recv finished (5 blocks in use).
    scheduler_output = scheduler.schedule()
    scheduler.update_from_output(
        scheduler_output,
        create_model_runner_output(reqs=[request_normal],
                                   finished_recving={request_remote.request_id}))
    assert len(scheduler.running) == 1
    assert _num_waiting_requests(scheduler) == 1

    # STEP 4: the remote request runs: its transfer is complete.
    scheduler_output = scheduler.schedule()
    scheduler.update_from_output(
        scheduler_output, create_model_runner_output(reqs=[request_normal, request_remote]))
    assert len(scheduler.running) == 2
    assert _num_waiting_requests(scheduler) == 0

    # STEP 5: the remote request goes back to waiting: it needs a new block for its
    # generated token.
    scheduler_output = scheduler.schedule()
    scheduler.update_from_output(scheduler_output,
                                 create_model_runner_output(reqs=[request_normal]))
    assert len(scheduler.running) == 1
    assert _num_waiting_requests(scheduler) == 1

    # STEP 6: the normal request finishes and is freed.
    scheduler_output = scheduler.schedule()
    scheduler.update_from_output(
        scheduler_output, create_model_runner_output(reqs=[request_normal], use_eos=True))
    assert len(scheduler.running) == 0
    assert _num_waiting_requests(scheduler) == 1

    # STEP 7: now it is scheduled (2 blocks computed), resumed from preemption.
    scheduler_output = scheduler.schedule()
    cached = scheduler_output.scheduled_cached_reqs
    assert cached.num_computed_tokens[0] == NUM_PROMPT_BLOCKS * BLOCK_SIZE
    scheduler.update_from_output(scheduler_output,
                                 create_model_runner_output(reqs=[request_remote]))
    assert len(scheduler.running) == 1
    assert _num_waiting_requests(scheduler) == 0

    # STEP 8: free everything.
    scheduler_output = scheduler.schedule()
    scheduler.update_from_output(
        scheduler_output, create_model_runner_output(reqs=[request_remote], use_eos=True))
    scheduler.schedule()
    assert_scheduler_empty(scheduler)


def test_cannot_recv():
    """No room for the blocks of a KV transfer: it starts once there is."""
    TOTAL_NUM_BLOCKS = 6
    scheduler = create_scheduler(num_blocks=TOTAL_NUM_BLOCKS)
    NUM_PROMPT_BLOCKS = 2
    BLOCK_SIZE = scheduler.block_size
    NUM_TOKENS_LOCAL = int(BLOCK_SIZE * NUM_PROMPT_BLOCKS)
    NUM_TOKENS_REMOTE = int(BLOCK_SIZE * (NUM_PROMPT_BLOCKS + 0.5))
    request_normal = create_request(request_id=1, block_size=BLOCK_SIZE,
                                    num_tokens=NUM_TOKENS_LOCAL)
    request_remote = create_request(request_id=2, block_size=BLOCK_SIZE,
                                    num_tokens=NUM_TOKENS_REMOTE, do_remote_prefill=True)

    # STEP 1: 3 blocks in use (2 for the prompt, 1 for decode).
    scheduler.add_request(request_normal)
    scheduler_output = scheduler.schedule()
    scheduler.update_from_output(scheduler_output,
                                 create_model_runner_output(reqs=[request_normal]))
    assert len(scheduler.running) == 1
    assert _num_waiting_requests(scheduler) == 0

    # STEP 2: 3 blocks in use; the remote request needs 3 but only 2 are free.
    scheduler.add_request(request_remote)
    scheduler_output = scheduler.schedule()
    scheduler.update_from_output(scheduler_output,
                                 create_model_runner_output(reqs=[request_normal]))
    assert len(scheduler.running) == 1
    assert _num_waiting_requests(scheduler) == 1
    # No KV transfer in progress.
    assert request_remote.status != RequestStatus.WAITING_FOR_REMOTE_KVS

    # STEP 3: the normal request finishes and is freed.
    scheduler_output = scheduler.schedule()
    scheduler.update_from_output(
        scheduler_output, create_model_runner_output(reqs=[request_normal], use_eos=True))
    assert len(scheduler.running) == 0
    assert _num_waiting_requests(scheduler) == 1

    # STEP 4: now the KV transfer starts.
    scheduler_output = scheduler.schedule()
    scheduler.update_from_output(scheduler_output, create_model_runner_output(reqs=[]))
    assert len(scheduler.running) == 0
    assert _num_waiting_requests(scheduler) == 1
    assert request_remote.status == RequestStatus.WAITING_FOR_REMOTE_KVS

    # STEP 5: recv finished.
    scheduler_output = scheduler.schedule()
    scheduler.update_from_output(
        scheduler_output,
        create_model_runner_output(reqs=[], finished_recving={request_remote.request_id}))
    assert len(scheduler.running) == 0
    assert _num_waiting_requests(scheduler) == 1

    # STEP 6: the remote request runs.
    scheduler_output = scheduler.schedule()
    scheduler.update_from_output(scheduler_output,
                                 create_model_runner_output(reqs=[request_remote]))
    assert len(scheduler.running) == 1
    assert _num_waiting_requests(scheduler) == 0

    # STEP 7: free everything.
    scheduler_output = scheduler.schedule()
    scheduler.update_from_output(
        scheduler_output, create_model_runner_output(reqs=[request_remote], use_eos=True))
    scheduler.schedule()
    assert_scheduler_empty(scheduler)


def test_p_side_chunked_prefill_mamba():
    """Prefill side, a Mamba model: the 64-token request is cut to 63 (N - 1), prefilled
    in two chunks (32 + 31) and finishes LENGTH_CAPPED (max_tokens set to 1)."""
    BATCH_SIZE = 32
    NUM_TOKENS = 64
    BLOCK_SIZE = 16
    kv_transfer_config = KVTransferConfig(kv_connector="NixlConnector",
                                          engine_id="my-engine-id", kv_role="kv_producer")
    scheduler = create_scheduler(
        max_num_batched_tokens=BATCH_SIZE, block_size=BLOCK_SIZE, max_num_seqs=16,
        connector=NixlConnector(kv_transfer_config, KVConnectorRole.SCHEDULER,
                                has_mamba=True))
    request = create_request(num_tokens=NUM_TOKENS, do_remote_decode=True,
                             block_size=BLOCK_SIZE)
    request.max_tokens = 128
    scheduler.add_request(request)
    request_id = request.request_id

    # Step 1: the first chunk.
    scheduler_output = scheduler.schedule()
    assert len(request.prompt_token_ids) == NUM_TOKENS - 1
    assert request.max_tokens == 1
    assert scheduler_output.num_scheduled_tokens[request_id] == BATCH_SIZE
    assert request.num_computed_tokens == BATCH_SIZE
    # No token for an intermediate chunk.
    scheduler.update_from_output(scheduler_output,
                                 ModelRunnerOutput([request_id], {request_id: 0}, [[]]))

    # Step 2: the remaining chunk.
    scheduler_output = scheduler.schedule()
    assert scheduler_output.num_scheduled_tokens[request_id] == NUM_TOKENS - 1 - BATCH_SIZE
    assert request.num_computed_tokens == NUM_TOKENS - 1
    outputs = scheduler.update_from_output(scheduler_output,
                                           create_model_runner_output([request]))
    assert len(outputs) == 1
    assert outputs[0].finish_reason == "length"


def test_async_load_reserves_blocks_for_inflight():
    """A second async load is not admitted if its blocks would eat into those an
    in-flight sequence still needs: req_a loads 1 block of its 4 (reserving 3 more); req_b
    would need 4 blocks but only 7 - 1 - 3 = 3 are available to it, so it waits, holding
    nothing, instead of wedging req_a."""
    BLOCK_SIZE = 16
    connector = ScriptedConnector(side_effect=[(BLOCK_SIZE, True), (BLOCK_SIZE * 4, True)])
    scheduler = create_scheduler(num_blocks=8, connector=connector)   # 7 usable
    req_a = create_request(request_id=1, block_size=BLOCK_SIZE, num_tokens=BLOCK_SIZE * 4,
                           do_remote_prefill=True, num_remote_blocks=1)
    req_b = create_request(request_id=2, block_size=BLOCK_SIZE, num_tokens=BLOCK_SIZE * 5,
                           do_remote_prefill=True, num_remote_blocks=1)
    scheduler.add_request(req_a)
    scheduler.add_request(req_b)
    scheduler.schedule()
    assert req_a.status == RequestStatus.WAITING_FOR_REMOTE_KVS
    assert req_b.status == RequestStatus.WAITING
    req_to_blocks = scheduler.kv_cache_manager.req_to_blocks
    assert req_a.request_id in req_to_blocks
    assert req_b.request_id not in req_to_blocks


def test_async_loads_both_admitted_when_pool_fits():
    """With a pool large enough, the reservation admits both async loads."""
    BLOCK_SIZE = 16
    connector = ScriptedConnector(side_effect=[(BLOCK_SIZE, True), (BLOCK_SIZE, True)])
    scheduler = create_scheduler(num_blocks=64, connector=connector)
    reqs = [create_request(request_id=i, block_size=BLOCK_SIZE, num_tokens=BLOCK_SIZE * 5,
                           do_remote_prefill=True, num_remote_blocks=1) for i in (1, 2)]
    for req in reqs:
        scheduler.add_request(req)
    scheduler.schedule()
    for req in reqs:
        assert req.status == RequestStatus.WAITING_FOR_REMOTE_KVS
