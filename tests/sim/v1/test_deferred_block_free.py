"""vLLM v0.25.1's `tests/v1/core/test_deferred_block_free.py` on the simulation
(sim/v1/scheduler_kv.py): with batches in flight (async scheduling) and a consumer KV
connector, a finished or preempted request's blocks go back to the pool only once every
step that may still write them has been processed. vLLM's tests force
`defer_block_free` on a scheduler without a connector; here the gate itself turns it on,
with a consumer connector that loads nothing."""
from kv_connector_utils import create_async_scheduler, create_requests, output_for

from sim.v1.request import RequestStatus

STOP_TOKEN_ID = 42
NUM_PROMPT_TOKENS = 33   # 3 blocks of 16


def _setup_request_with_inflight_step(scheduler, max_tokens: int = 5):
    """A prefill (step 1) and one decode scheduled ahead of its output (step 2)."""
    request = create_requests(1, NUM_PROMPT_TOKENS, max_tokens=max_tokens,
                              stop_token_ids=(STOP_TOKEN_ID,))[0]
    scheduler.add_request(request)
    out0 = scheduler.schedule()
    assert out0.num_scheduled_tokens[request.request_id] == NUM_PROMPT_TOKENS
    out1 = scheduler.schedule()
    assert out1.num_scheduled_tokens[request.request_id] == 1
    return request, out0, out1


def test_gate_enabled_for_async_consumer():
    assert create_async_scheduler().defer_block_free
    assert not create_async_scheduler(kv_role="kv_producer").defer_block_free
    assert not create_async_scheduler(async_scheduling=False).defer_block_free


def test_gate_disabled_without_connector():
    from sim.v1.async_scheduler import AsyncScheduler
    from sim.v1.config import CacheConfig, SchedulerConfig
    scheduler = AsyncScheduler(SchedulerConfig(max_num_batched_tokens=8192, max_num_seqs=16,
                                               max_model_len=10000, async_scheduling=True),
                               CacheConfig(block_size=16, num_gpu_blocks=10000))
    assert not scheduler.defer_block_free
    pool = scheduler.kv_cache_manager.block_pool
    num_free_initially = pool.get_num_free_blocks()
    request, out0, out1 = _setup_request_with_inflight_step(scheduler)
    assert pool.get_num_free_blocks() < num_free_initially
    # It stops while step 2 is in flight: freed at once, deferral being off.
    scheduler.update_from_output(out0, output_for(out0, token_id=STOP_TOKEN_ID))
    assert request.is_finished()
    assert not scheduler.deferred_frees
    assert pool.get_num_free_blocks() == num_free_initially


def test_finish_defers_free_until_inflight_step_done():
    scheduler = create_async_scheduler()
    pool = scheduler.kv_cache_manager.block_pool
    num_free_initially = pool.get_num_free_blocks()
    request, out0, out1 = _setup_request_with_inflight_step(scheduler)
    num_free_running = pool.get_num_free_blocks()
    assert num_free_running < num_free_initially
    # It stops while the decode scheduled ahead is in flight: its blocks wait.
    scheduler.update_from_output(out0, output_for(out0, token_id=STOP_TOKEN_ID))
    assert request.is_finished()
    assert len(scheduler.deferred_frees) == 1
    assert pool.get_num_free_blocks() == num_free_running
    # Step 2's output: every write of step 2 is done, the blocks go back.
    scheduler.update_from_output(out1, output_for(out1))
    assert not scheduler.deferred_frees
    assert pool.get_num_free_blocks() == num_free_initially


def test_finish_frees_immediately_when_no_inflight_step():
    scheduler = create_async_scheduler()
    pool = scheduler.kv_cache_manager.block_pool
    num_free_initially = pool.get_num_free_blocks()
    request = create_requests(1, NUM_PROMPT_TOKENS, max_tokens=5,
                              stop_token_ids=(STOP_TOKEN_ID,))[0]
    scheduler.add_request(request)
    out0 = scheduler.schedule()
    # out0 is the newest step and its output is processed: nothing else can write.
    scheduler.update_from_output(out0, output_for(out0, token_id=STOP_TOKEN_ID))
    assert request.is_finished()
    assert not scheduler.deferred_frees
    assert pool.get_num_free_blocks() == num_free_initially


def test_abort_defers_free():
    scheduler = create_async_scheduler()
    pool = scheduler.kv_cache_manager.block_pool
    num_free_initially = pool.get_num_free_blocks()
    request, out0, out1 = _setup_request_with_inflight_step(scheduler)
    num_free_running = pool.get_num_free_blocks()
    # An abort while steps 1 and 2 are both in flight.
    scheduler.finish_requests(request.request_id, RequestStatus.FINISHED_ABORTED)
    assert len(scheduler.deferred_frees) == 1
    assert pool.get_num_free_blocks() == num_free_running
    # Step 1's output: step 2 is still in flight.
    scheduler.update_from_output(out0, output_for(out0))
    assert len(scheduler.deferred_frees) == 1
    assert pool.get_num_free_blocks() == num_free_running
    # Step 2's output: now they go back.
    scheduler.update_from_output(out1, output_for(out1))
    assert not scheduler.deferred_frees
    assert pool.get_num_free_blocks() == num_free_initially


def test_preempt_defers_free_and_clears_bookkeeping():
    scheduler = create_async_scheduler()
    pool = scheduler.kv_cache_manager.block_pool
    num_free_initially = pool.get_num_free_blocks()
    request, out0, out1 = _setup_request_with_inflight_step(scheduler)
    num_free_running = pool.get_num_free_blocks()
    # Preempted while steps are in flight (as schedule() does).
    scheduler.running.remove(request)
    scheduler._preempt_request(request)
    assert request.status == RequestStatus.PREEMPTED
    # Held back from the pool, but the manager forgets the request at once.
    assert len(scheduler.deferred_frees) == 1
    assert pool.get_num_free_blocks() == num_free_running
    assert request.request_id not in scheduler.kv_cache_manager.req_to_blocks
    scheduler.update_from_output(out0, output_for(out0))
    assert len(scheduler.deferred_frees) == 1
    scheduler.update_from_output(out1, output_for(out1))
    assert not scheduler.deferred_frees
    assert pool.get_num_free_blocks() == num_free_initially


def test_multiple_deferred_frees_drain_in_order():
    scheduler = create_async_scheduler()
    pool = scheduler.kv_cache_manager.block_pool
    num_free_initially = pool.get_num_free_blocks()
    for request in create_requests(2, NUM_PROMPT_TOKENS, max_tokens=5,
                                   stop_token_ids=(STOP_TOKEN_ID,)):
        scheduler.add_request(request)
    out0 = scheduler.schedule()
    out1 = scheduler.schedule()
    # Both stop at step 1's output while step 2 is in flight: two entries, one fence.
    scheduler.update_from_output(out0, output_for(out0, token_id=STOP_TOKEN_ID))
    assert len(scheduler.deferred_frees) == 2
    assert pool.get_num_free_blocks() < num_free_initially
    scheduler.update_from_output(out1, output_for(out1))
    assert not scheduler.deferred_frees
    assert pool.get_num_free_blocks() == num_free_initially


def test_fence_held_across_multiple_inflight_steps():
    """Three steps scheduled ahead: the blocks wait for the newest one's output."""
    scheduler = create_async_scheduler()
    pool = scheduler.kv_cache_manager.block_pool
    num_free_initially = pool.get_num_free_blocks()
    request = create_requests(1, NUM_PROMPT_TOKENS, max_tokens=10)[0]
    scheduler.add_request(request)
    outs = [scheduler.schedule() for _ in range(3)]
    assert outs[0].num_scheduled_tokens[request.request_id] == NUM_PROMPT_TOKENS
    assert outs[1].num_scheduled_tokens[request.request_id] == 1
    assert outs[2].num_scheduled_tokens[request.request_id] == 1
    assert scheduler.sched_step_seq == 3
    num_free_running = pool.get_num_free_blocks()
    assert num_free_running < num_free_initially
    scheduler.finish_requests(request.request_id, RequestStatus.FINISHED_ABORTED)
    assert len(scheduler.deferred_frees) == 1
    assert scheduler.deferred_frees[0][0] == 3
    for out in outs[:2]:
        scheduler.update_from_output(out, output_for(out))
        assert len(scheduler.deferred_frees) == 1
        assert pool.get_num_free_blocks() == num_free_running
    scheduler.update_from_output(outs[2], output_for(outs[2]))
    assert not scheduler.deferred_frees
    assert pool.get_num_free_blocks() == num_free_initially


def test_max_tokens_finish_frees_immediately_with_other_inflight():
    """A request finishing at max_tokens is never scheduled past its last token, so it is
    freed at once even while another request's step is in flight."""
    scheduler = create_async_scheduler()
    pool = scheduler.kv_cache_manager.block_pool
    short = create_requests(1, NUM_PROMPT_TOKENS, max_tokens=1, req_ids=["short"])[0]
    long = create_requests(1, NUM_PROMPT_TOKENS, max_tokens=100, req_ids=["long"])[0]
    scheduler.add_request(short)
    scheduler.add_request(long)
    out0 = scheduler.schedule()
    out1 = scheduler.schedule()
    assert "short" not in out1.num_scheduled_tokens
    assert "long" in out1.num_scheduled_tokens
    free_before = pool.get_num_free_blocks()
    scheduler.update_from_output(out0, output_for(out0))
    assert short.is_finished()
    assert scheduler.sched_step_seq > scheduler.processed_step_seq
    assert not scheduler.deferred_frees
    assert pool.get_num_free_blocks() > free_before


def test_abort_mid_prefill_defers_free():
    """A prefill chunk in flight (no output placeholder): an abort still waits."""
    scheduler = create_async_scheduler(long_prefill_token_threshold=16)
    pool = scheduler.kv_cache_manager.block_pool
    num_free_initially = pool.get_num_free_blocks()
    request = create_requests(1, NUM_PROMPT_TOKENS, max_tokens=5)[0]
    scheduler.add_request(request)
    out0 = scheduler.schedule()
    assert out0.num_scheduled_tokens[request.request_id] == 16
    assert request.num_output_placeholders == 0
    assert request.is_prefill_chunk
    num_free_running = pool.get_num_free_blocks()
    assert num_free_running < num_free_initially
    scheduler.finish_requests(request.request_id, RequestStatus.FINISHED_ABORTED)
    assert len(scheduler.deferred_frees) == 1
    assert pool.get_num_free_blocks() == num_free_running
    scheduler.update_from_output(out0, output_for(out0))
    assert not scheduler.deferred_frees
    assert pool.get_num_free_blocks() == num_free_initially


def test_non_async_abort_defers_via_last_sched_seq():
    """The synchronous scheduler with the gate forced on (vLLM: pipeline parallelism):
    the last-scheduled-step fence alone holds the blocks."""
    scheduler = create_async_scheduler(async_scheduling=False)
    scheduler.defer_block_free = True
    pool = scheduler.kv_cache_manager.block_pool
    num_free_initially = pool.get_num_free_blocks()
    request = create_requests(1, NUM_PROMPT_TOKENS, max_tokens=5)[0]
    scheduler.add_request(request)
    out0 = scheduler.schedule()
    assert request.num_output_placeholders == 0
    assert not request.is_prefill_chunk
    assert request.last_sched_seq > scheduler.processed_step_seq
    num_free_running = pool.get_num_free_blocks()
    assert num_free_running < num_free_initially
    scheduler.finish_requests(request.request_id, RequestStatus.FINISHED_ABORTED)
    assert len(scheduler.deferred_frees) == 1
    assert pool.get_num_free_blocks() == num_free_running
    scheduler.update_from_output(out0, output_for(out0))
    assert not scheduler.deferred_frees
    assert pool.get_num_free_blocks() == num_free_initially
