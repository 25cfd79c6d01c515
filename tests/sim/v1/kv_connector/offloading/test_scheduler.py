"""vLLM v0.25.1's `tests/v1/kv_connector/unit/offloading_connector/test_scheduler.py`, on
the simulation: the scheduler with the OffloadingConnector, driven step by step by
`RequestRunner` (tests/offloading_utils.py), the same steps and the same assertions on what
is stored, loaded and flushed (GPU blocks by request block offset), on manager calls, the
fence and the job bookkeeping.

Where vLLM mocks the manager, the simulation's real `CPUOffloadingManager` answers (spied).
It gives vLLM's forced answers by itself in most places (the lookups vLLM forces with
`_maximal_prefix_lookup = lambda ...: n` hit for real here, so the override is dropped);
where a test forces an answer a real CPU tier would not give on its own (a failed or a
partial store), the same answer is forced through the real manager. Two expectations
differ, each marked "real manager": a block already in the CPU tier is not stored again
(the mock's `generate_store_output(keys)` stores it twice). The cases vLLM runs with both
schedulers run with both here too (`async_scheduling`).
Left out: the sliding-window, mixed-group, EAGLE and KV-event cases (one full-attention
group is simulated), `test_request_level_policy_stores_all_blocks` (the CPU manager never
asks for the request-level policy), `test_fence_at_update_state_after_alloc` (it forces a
load of a block whose store is still in flight; the real manager answers HIT_PENDING and
the request waits instead, so that path cannot arise; the fence itself is the same set of
blocks allocated in the step, tested through `_build_store_jobs`) and the async-only
`test_async_preempt_readmit_before_transfer_output_is_deferred`.
"""
from types import SimpleNamespace

import pytest
from offloading_utils import (
    EOS_TOKEN_ID,
    RequestRunner,
    SpyManager,
    generate_store_output,
    to_keys,
)

from sim.v1.kv_connector.offloading.scheduler import OffloadingConnectorScheduler
from sim.v1.kv_offload.base import LookupResult, ReqContext, get_offload_block_hash
from sim.v1.request import RequestStatus

BLOCK_SIZE = 4
FACTOR = 3
OFFLOADED = BLOCK_SIZE * FACTOR


def make_runner(block_size=BLOCK_SIZE, num_gpu_blocks=100, block_size_factor=FACTOR,
                **kwargs) -> RequestRunner:
    return RequestRunner(block_size=block_size, num_gpu_blocks=num_gpu_blocks,
                         block_size_factor=block_size_factor, **kwargs)


def store_keys(runner, pick=lambda keys: keys):
    """prepare_store answers as vLLM's side effect `generate_store_output(pick(keys))`."""
    def side_effect(keys, req_context):
        return generate_store_output(runner.manager, pick(list(keys)), req_context)
    runner.manager.prepare_store.side_effect = side_effect


def store_all(runner):
    runner.manager.prepare_store.side_effect = None      # the real manager decides


@pytest.mark.parametrize("async_scheduling", [True, False])
def test_offloading_connector(async_scheduling):
    runner = make_runner(async_scheduling=async_scheduling)
    # 3 blocks, store just the middle one
    runner.new_request(token_ids=[0] * OFFLOADED * 3)
    store_keys(runner, lambda keys: keys[1:2])
    runner.run(decoded_tokens=[0])

    # a block missing 1 token -> no offload
    runner.run(decoded_tokens=[0] * (OFFLOADED - 1), expected_stored=(3, 4, 5))
    runner.manager.touch.assert_not_called()

    # +1 token -> a full block, and prepare_store fails
    runner.manager.prepare_store.side_effect = lambda keys, req_context: None
    runner.run(decoded_tokens=[0])
    runner.manager.prepare_store.assert_called()

    # 1 more block: nothing to store
    store_keys(runner, lambda keys: [])
    runner.run(decoded_tokens=[0] * (OFFLOADED + 1))

    # 1 more block (+ a token to start the offload): touch gets all 6 blocks
    store_all(runner)
    runner.run(decoded_tokens=[0] * (OFFLOADED + 1), expected_stored=(15, 16, 17))
    runner.manager.touch.assert_called()
    block_hashes1 = list(runner.manager.touch.call_args.args[0])
    assert len(block_hashes1) == 6

    runner.run(decoded_tokens=[EOS_TOKEN_ID])

    # a new request differing only in its last token
    runner.new_request(token_ids=[0] * (OFFLOADED * 6 - 1) + [1])
    runner.run(decoded_tokens=[0])
    runner.manager.touch.assert_called()
    block_hashes2 = list(runner.manager.touch.call_args.args[0])
    assert len(block_hashes2) == 6
    assert block_hashes1[:5] == block_hashes2[:5]
    assert block_hashes1[5] != block_hashes2[5]

    # vLLM's mock stores all 6 blocks again (0..17); the real manager leaves out the
    # middle block (offsets 3-5), already in the CPU tier since the first request.
    runner.run(decoded_tokens=[EOS_TOKEN_ID],
               expected_stored=tuple(b for b in range(6 * FACTOR) if b not in (3, 4, 5)))

    # full-block tokens - computed tokens < one offloaded block: no lookup
    runner.new_request(token_ids=[0] * BLOCK_SIZE + [1] * (OFFLOADED - BLOCK_SIZE))
    store_keys(runner, lambda keys: [])
    runner.run(decoded_tokens=[EOS_TOKEN_ID])
    runner.manager.lookup.assert_not_called()

    # a single-block lookup, no hit
    runner.new_request(token_ids=[1] * OFFLOADED)
    store_keys(runner, lambda keys: [])
    runner.run(decoded_tokens=[EOS_TOKEN_ID])
    runner.manager.lookup.assert_called_once()

    # a single-block lookup with a hit (vLLM forces it; the first block is in the CPU tier)
    runner.scheduler.reset_prefix_cache()
    runner.new_request(token_ids=[0] * OFFLOADED)
    store_keys(runner, lambda keys: [])
    runner.run(decoded_tokens=[EOS_TOKEN_ID], expected_loaded=(0, 1, 2))

    # a single-block hit in a middle block (the first is in the GPU prefix cache now)
    runner.new_request(token_ids=[0] * OFFLOADED * 2 + [1] * OFFLOADED)
    store_keys(runner, lambda keys: [])
    runner.run(decoded_tokens=[EOS_TOKEN_ID], expected_loaded=(3, 4, 5))


@pytest.mark.parametrize("async_scheduling", [True, False])
def test_request_preemption(async_scheduling):
    runner = make_runner(async_scheduling=async_scheduling)
    free_block_queue = runner.scheduler.kv_cache_manager.block_pool.free_block_queue
    num_free_blocks_empty = free_block_queue.num_free_blocks

    # 2 blocks, store all, without flushing
    runner.new_request(token_ids=[0] * OFFLOADED * 2)
    store_all(runner)
    runner.run(decoded_tokens=[0], complete_transfers=False)
    # decode 2 more blocks - 1 GPU block, storing [6, 7, 8] (no flush)
    runner.run(decoded_tokens=[0] * (2 * OFFLOADED - BLOCK_SIZE), complete_transfers=False)

    # the KV cache runs out of space: the request is preempted, its stores flushed
    free_block_queue.num_free_blocks = 0
    runner.run(decoded_tokens=[], complete_transfers=False,
               expected_flushed=tuple(range(9)), expected_stored=tuple(range(9)))

    free_block_queue.num_free_blocks = num_free_blocks_empty
    runner.scheduler.reset_prefix_cache()

    # back from preemption: load [0..8] from the CPU, then store [9, 10, 11]
    # (vLLM forces 3 hits; the CPU tier holds those 3 blocks)
    store_all(runner)
    runner.run(decoded_tokens=[0] * BLOCK_SIZE, expected_loaded=tuple(range(9)))
    runner.run(decoded_tokens=[EOS_TOKEN_ID], expected_stored=(9, 10, 11))
    assert runner.connector_scheduler._block_id_to_pending_jobs == {}


@pytest.mark.parametrize("async_scheduling", [True, False])
def test_on_request_finished_is_not_deferred_until_store_completion(async_scheduling):
    runner = make_runner(async_scheduling=async_scheduling)
    calls: list[tuple[str, str]] = []
    real_finished = runner.manager.on_request_finished.real
    real_complete_store = runner.manager.complete_store.real

    def on_request_finished(req_context):
        calls.append(("on_request_finished", req_context.req_id))
        return real_finished(req_context)

    def complete_store(keys, req_context, *args, **kwargs):
        calls.append(("complete_store", req_context.req_id))
        return real_complete_store(keys, req_context, *args, **kwargs)

    runner.manager.on_request_finished.side_effect = on_request_finished
    runner.manager.complete_store.side_effect = complete_store
    store_all(runner)

    # every transfer stays in flight while the request runs
    runner.new_request(token_ids=[0] * OFFLOADED * 2)
    runner.run(decoded_tokens=[0], complete_transfers=False)
    runner.run(decoded_tokens=[0] * (2 * OFFLOADED), complete_transfers=False)
    # finish it with its stores in flight: the hook fires at once
    runner.run(decoded_tokens=[EOS_TOKEN_ID], complete_transfers=False)
    req_id = str(runner.req_id)
    assert calls == [("on_request_finished", req_id)], calls

    # drain the stores: complete_store may come after on_request_finished
    runner.run(decoded_tokens=[], complete_transfers=True,
               expected_stored=tuple(range(4 * FACTOR)))
    assert calls.count(("on_request_finished", req_id)) == 1
    finished_idx = calls.index(("on_request_finished", req_id))
    store_indices = [i for i, c in enumerate(calls) if c == ("complete_store", req_id)]
    assert store_indices
    assert finished_idx < min(store_indices)


@pytest.mark.parametrize("async_scheduling", [True, False])
def test_concurrent_lookups_of_the_same_prefix(async_scheduling):
    runner = make_runner(async_scheduling=async_scheduling)
    runner.new_request(token_ids=[0] * OFFLOADED)
    store_all(runner)
    runner.run(decoded_tokens=[EOS_TOKEN_ID], expected_stored=(0, 1, 2))

    # a request loads the first block; the load does not complete
    runner.scheduler.reset_prefix_cache()
    runner.new_request(token_ids=[0] * OFFLOADED)
    runner.run(decoded_tokens=[], complete_transfers=False)
    transfer_jobs = list(runner.offloading_spec.handler.transfer_specs)
    assert transfer_jobs

    # a second request for the same block waits instead of loading it too
    runner.new_request(token_ids=[0] * OFFLOADED)
    runner.run(decoded_tokens=[], complete_transfers=False)
    assert transfer_jobs == list(runner.offloading_spec.handler.transfer_specs)

    store_keys(runner, lambda keys: [])
    runner.run(decoded_tokens=[EOS_TOKEN_ID], expected_loaded=(0, 1, 2))
    # the second request hit the GPU prefix cache
    assert transfer_jobs == list(runner.offloading_spec.handler.transfer_specs)
    assert runner.connector_scheduler._block_id_to_pending_jobs == {}


@pytest.mark.parametrize("async_scheduling", [True, False])
def test_abort_loading_requests(async_scheduling):
    runner = make_runner(async_scheduling=async_scheduling)
    runner.new_request(token_ids=[0] * OFFLOADED)
    store_all(runner)
    runner.run(decoded_tokens=[EOS_TOKEN_ID], expected_stored=(0, 1, 2))

    runner.scheduler.reset_prefix_cache()
    runner.new_request(token_ids=[0] * OFFLOADED)
    runner.run(decoded_tokens=[], complete_transfers=False)
    assert list(runner.offloading_spec.handler.transfer_specs)

    req_id = str(runner.req_id)
    runner.scheduler.finish_requests((req_id,), RequestStatus.FINISHED_ABORTED)
    # its load is in flight: the request (and its blocks) stay
    assert req_id in runner.scheduler.requests
    runner.run(decoded_tokens=[], expected_loaded=(0, 1, 2))
    assert req_id not in runner.scheduler.requests


@pytest.mark.parametrize("async_scheduling", [True, False])
def test_offload_prompt_only(async_scheduling):
    num_prompt_blocks, num_decode_blocks = 2, 4
    runner = make_runner(async_scheduling=async_scheduling,
                         extra_config_overrides={"offload_prompt_only": True})
    store_all(runner)
    runner.new_request(token_ids=[0] * OFFLOADED * num_prompt_blocks)
    runner.run(decoded_tokens=[0] * (OFFLOADED * num_decode_blocks),
               expected_stored=(0, 1, 2, 3, 4, 5))
    offered_keys = {key for call in runner.manager.prepare_store.call_args_list
                    for key in call[0][0]}
    assert len(offered_keys) == num_prompt_blocks


@pytest.mark.parametrize("async_scheduling", [True, False])
def test_reset_cache(async_scheduling):
    runner = make_runner(async_scheduling=async_scheduling)
    runner.new_request(token_ids=[0] * OFFLOADED)
    store_all(runner)
    runner.run(decoded_tokens=[EOS_TOKEN_ID], expected_stored=(0, 1, 2))

    # a load from the CPU, left in flight
    runner.scheduler.reset_prefix_cache()
    runner.new_request(token_ids=[0] * OFFLOADED)
    store_keys(runner, lambda keys: [])
    runner.run(decoded_tokens=[], complete_transfers=False)
    cs = runner.connector_scheduler
    load_job_ids = {jid for jid, status in cs._jobs.items() if not status.is_store}
    assert load_job_ids
    job_counter_before_reset = cs._job_counter
    for req_status in cs._req_status.values():
        for group_state in req_status.group_states:
            assert group_state.next_stored_block_idx > 0

    cs.reset_cache()
    runner.manager.reset_cache.assert_called_once()
    assert load_job_ids <= cs._current_batch_jobs_to_flush
    assert not cs._jobs
    assert not cs._block_id_to_pending_jobs
    assert not cs._blocks_being_loaded
    assert cs._stale_job_threshold == job_counter_before_reset
    for req_status in cs._req_status.values():
        for group_state in req_status.group_states:
            assert group_state.next_stored_block_idx == 0


@pytest.mark.parametrize("async_scheduling", [True, False])
def test_reset_cache_finalizes_finished_request_with_pending_store(async_scheduling):
    runner = make_runner(async_scheduling=async_scheduling)
    finalized: list[str] = []
    real = runner.manager.on_request_finished.real
    runner.manager.on_request_finished.side_effect = lambda ctx: (
        finalized.append(ctx.req_id), real(ctx))[1]
    store_all(runner)
    runner.new_request(token_ids=[0] * OFFLOADED * 2)
    runner.run(decoded_tokens=[0], complete_transfers=False)
    runner.run(decoded_tokens=[0] * (2 * OFFLOADED), complete_transfers=False)

    cs = runner.connector_scheduler
    req_id = str(runner.req_id)
    req_status = cs._req_status[req_id]
    assert req_status.transfer_jobs
    assert any(job.is_store for job in cs._jobs.values())

    req_status.req.status = RequestStatus.FINISHED_STOPPED
    cs.request_finished(req_status.req)
    assert finalized == [req_id]
    assert req_id in cs._req_status
    cs.reset_cache()
    assert finalized == [req_id]
    assert req_id not in cs._req_status


def test_pending_transfer_defers_prefix_lookup():
    scheduler = object.__new__(OffloadingConnectorScheduler)
    scheduler.manager = SpyManager(4)
    request = SimpleNamespace(request_id="req-0")
    group_state = SimpleNamespace(block_ids=[1, 2, 3])
    req_status = SimpleNamespace(group_states=[group_state], transfer_jobs={123})
    scheduler._req_status = {request.request_id: req_status}
    matched_tokens, is_async = scheduler.get_num_new_matched_tokens(request,
                                                                    num_computed_tokens=0)
    assert matched_tokens is None
    assert is_async is False
    assert group_state.block_ids == []
    scheduler.manager.lookup.assert_not_called()


@pytest.mark.parametrize("async_scheduling", [True, False])
def test_skip_reading_prefix_cache(async_scheduling):
    runner = make_runner(async_scheduling=async_scheduling)
    runner.new_request(token_ids=[0] * OFFLOADED)
    store_all(runner)
    runner.run(decoded_tokens=[EOS_TOKEN_ID], expected_stored=(0, 1, 2))
    runner.scheduler.reset_prefix_cache()

    runner.new_request(token_ids=[0] * OFFLOADED, skip_reading_prefix_cache=True)
    # Nothing is loaded, and the block is offered for storing again (vLLM's mock stores
    # it; the real manager already holds it, so nothing is stored: real manager).
    runner.run(decoded_tokens=[EOS_TOKEN_ID], expected_loaded=(), expected_stored=())
    runner.manager.prepare_store.assert_called_once()
    assert len(runner.manager.prepare_store.call_args.args[0]) == 1
    runner.manager.lookup.assert_not_called()


@pytest.mark.parametrize("async_scheduling", [True, False])
def test_complete_store_called_per_job(async_scheduling):
    runner = make_runner(async_scheduling=async_scheduling)
    runner.new_request(token_ids=[0] * OFFLOADED)
    store_all(runner)
    runner.run(decoded_tokens=[0, 0], expected_stored=(0, 1, 2))
    assert runner.manager.complete_store.call_count == 1
    first_call_keys = set(runner.manager.complete_store.call_args.args[0])
    assert len(first_call_keys) == 1

    runner.run(decoded_tokens=[0] * (OFFLOADED + 1), expected_stored=(3, 4, 5))
    assert runner.manager.complete_store.call_count == 1
    assert set(runner.manager.complete_store.call_args.args[0]) != first_call_keys
    runner.run(decoded_tokens=[EOS_TOKEN_ID])
    assert runner.manager.complete_store.call_count == 0


@pytest.mark.parametrize("async_scheduling", [True, False])
def test_max_offload_tokens_validation(async_scheduling):
    all_offsets = tuple(range(9))

    def run(max_offload_tokens, expected):
        r = make_runner(async_scheduling=async_scheduling)
        r.new_request(token_ids=[0] * OFFLOADED * 3,
                      kv_transfer_params={"max_offload_tokens": max_offload_tokens})
        store_all(r)
        r.run(decoded_tokens=[EOS_TOKEN_ID], expected_stored=expected)

    run(None, all_offsets)
    for invalid in ("24", 24.5, -1, True):       # ignored: no cap
        run(invalid, all_offsets)
    run(0, ())
    run(24, (0, 1, 2, 3, 4, 5))                  # 2 offloaded blocks


def test_loads_do_not_populate_fence_index():
    """A load in flight registers nothing in the fence (its blocks are held by the
    request, and freed only when the load lands). vLLM forces a hit on an empty tier; the
    real manager needs the block stored first."""
    runner = make_runner(block_size_factor=3, block_size=4, num_gpu_blocks=100)
    runner.new_request(token_ids=[0] * 12)
    store_all(runner)
    runner.run(decoded_tokens=[EOS_TOKEN_ID], expected_stored=(0, 1, 2))
    runner.scheduler.reset_prefix_cache()
    runner.new_request(token_ids=[0] * 12)
    runner.run(decoded_tokens=[], complete_transfers=False)
    assert any(not j.is_store for j in runner.connector_scheduler._jobs.values())
    assert runner.connector_scheduler._block_id_to_pending_jobs == {}


def test_fence_at_build_store_jobs():
    runner = make_runner(num_gpu_blocks=2, block_size_factor=1)
    runner.new_request(token_ids=[0] * 4)
    store_all(runner)
    fence_snapshots: list[dict] = []

    def capture_fence():
        fence_snapshots.append(dict(runner.connector_scheduler._block_id_to_pending_jobs))

    runner.run(decoded_tokens=[EOS_TOKEN_ID], complete_transfers=False,
               post_step_fn=capture_fence)
    assert runner.connector_scheduler._block_id_to_pending_jobs
    assert next((f for f in fence_snapshots if f), None)

    # a new prefill takes the same GPU block: the pending store is flushed first
    runner.scheduler.reset_prefix_cache()
    runner.new_request(token_ids=[1] * 4)
    store_keys(runner, lambda keys: [])
    runner.run(decoded_tokens=[EOS_TOKEN_ID], expected_stored=(0,), expected_flushed=(0,))
    assert runner.connector_scheduler._block_id_to_pending_jobs == {}


def test_request_finished_with_pending_stores_populates_fence():
    runner = make_runner(num_gpu_blocks=2, block_size_factor=1)
    runner.new_request(token_ids=[0] * BLOCK_SIZE)
    store_all(runner)
    fence_snapshots: list[dict] = []
    job_block_ids: set[int] = set()

    def capture_fence():
        fence_snapshots.append(dict(runner.connector_scheduler._block_id_to_pending_jobs))
        for js in runner.connector_scheduler._jobs.values():
            if js.is_store:
                job_block_ids.update(js.non_sliding_window_block_ids or [])

    runner.run(decoded_tokens=[EOS_TOKEN_ID], complete_transfers=False,
               post_step_fn=capture_fence)
    assert job_block_ids
    populated = next((f for f in fence_snapshots if f), None)
    assert populated is not None
    assert all(bid in populated for bid in job_block_ids)

    # The same tokens again (the GPU cache reset): the block goes to the new request,
    # and the old store is flushed first. vLLM's mock answers every lookup with a MISS;
    # the real manager would find the block (pending, then ready) and load it, so the
    # request skips reading the prefix cache to get vLLM's scenario. The block is being
    # stored already, so it is not stored twice (real manager).
    runner.scheduler.reset_prefix_cache()
    runner.new_request(token_ids=[0] * BLOCK_SIZE, skip_reading_prefix_cache=True)
    runner.run(decoded_tokens=[EOS_TOKEN_ID], expected_stored=(0,), expected_flushed=(0,))
    assert runner.connector_scheduler._block_id_to_pending_jobs == {}
    assert str(runner.req_id) not in runner.connector_scheduler._req_status


def test_multiple_in_flight_stores_all_flushed_by_fence():
    runner = make_runner(num_gpu_blocks=4, block_size_factor=1)
    runner.new_request(token_ids=[0] * BLOCK_SIZE)
    store_all(runner)
    runner.run(decoded_tokens=[0] * BLOCK_SIZE, complete_transfers=False)
    assert len(runner.connector_scheduler._jobs) >= 1
    runner.run(decoded_tokens=[0] * BLOCK_SIZE + [EOS_TOKEN_ID], complete_transfers=False)
    assert len(runner.connector_scheduler._jobs) >= 2

    runner.scheduler.reset_prefix_cache()
    runner.new_request(token_ids=[7] * BLOCK_SIZE * 3)
    runner.run(decoded_tokens=[EOS_TOKEN_ID], expected_stored=(0, 1, 2),
               expected_flushed=(0, 1, 2))
    assert runner.connector_scheduler._block_id_to_pending_jobs == {}
    assert len(runner.connector_scheduler._jobs) == 0


class TestMaximalPrefixLookup:
    @staticmethod
    def sched(lookup_results):
        manager = SpyManager(4)
        manager.lookup.side_effect = lambda key, req_context: lookup_results.get(
            int(get_offload_block_hash(key).decode()), LookupResult.MISS)
        scheduler = object.__new__(OffloadingConnectorScheduler)
        scheduler.manager = manager
        return scheduler

    CTX = ReqContext(req_id="")
    H, P, R, M = (LookupResult.HIT, LookupResult.HIT_PENDING, LookupResult.RETRY,
                  LookupResult.MISS)

    def test_all_hit(self):
        assert self.sched({1: self.H, 2: self.H})._maximal_prefix_lookup(
            to_keys([1, 2]), self.CTX) == 2

    def test_all_miss(self):
        assert self.sched({})._maximal_prefix_lookup(to_keys([1, 2]), self.CTX) == 0

    def test_partial_prefix(self):
        assert self.sched({1: self.H, 2: self.H})._maximal_prefix_lookup(
            to_keys([1, 2, 3]), self.CTX) == 2

    def test_miss_then_hit(self):
        assert self.sched({2: self.H})._maximal_prefix_lookup(to_keys([1, 2]), self.CTX) == 0

    def test_single_hit(self):
        assert self.sched({1: self.H})._maximal_prefix_lookup(to_keys([1]), self.CTX) == 1

    def test_empty(self):
        assert self.sched({})._maximal_prefix_lookup([], self.CTX) == 0

    def test_retry_defers(self):
        s = self.sched({1: self.R, 2: self.H})
        assert s._maximal_prefix_lookup(to_keys([1, 2]), self.CTX) is None
        assert s.manager.lookup.call_count == 2

    def test_retry_after_hit_defers(self):
        assert self.sched({1: self.H, 2: self.R})._maximal_prefix_lookup(
            to_keys([1, 2]), self.CTX) is None

    def test_hit_pending_defers(self):
        s = self.sched({1: self.P, 2: self.H})
        assert s._maximal_prefix_lookup(to_keys([1, 2]), self.CTX) is None
        assert s.manager.lookup.call_count == 2

    def test_hit_pending_does_not_stop_scan(self):
        s = self.sched({1: self.P, 2: self.M, 3: self.H})
        assert s._maximal_prefix_lookup(to_keys([1, 2, 3]), self.CTX) is None
        assert s.manager.lookup.call_count == 2

    def test_retry_stops_at_miss(self):
        s = self.sched({1: self.R, 2: self.M, 3: self.H})
        assert s._maximal_prefix_lookup(to_keys([1, 2, 3]), self.CTX) is None
        assert s.manager.lookup.call_count == 2
