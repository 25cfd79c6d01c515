"""V1's AsyncScheduler (sim/v1/async_scheduler.py), driven by hand as vLLM's own tests drive
it: schedule() is called again before the previous output is processed.

vLLM v0.25.1's `tests/v1/core/test_async_scheduler.py`, re-expressed with the same steps and
assertions (its helpers: `create_scheduler` = 16 seats, a budget of 8,192 tokens, 10,000
blocks of 16, prefix caching off unless asked; `create_requests` = 10-token prompts of
token i, max_tokens 16, EOS 50256; the fake model output samples token i for the i-th
scheduled request):

- `test_stop_by_max_tokens`, `test_abort`, `test_preempt` (at v0.25.1 a copy of
  `test_abort`: it never preempts; preemption with a step in flight is tested below and in
  test_engine.py), `test_prefix_caching_for_prefill_dedup`,
  `test_prefix_caching_for_multi_turn`.
- Not re-expressed: `test_abort_request_when_structured_output_fsm_cannot_advance`
  (structured output is not simulated) and
  `test_no_placeholder_underflow_on_discarded_spec_frame` (async speculative decoding is
  not simulated; `test_reset_prefix_cache_discards_the_outputs_in_flight` covers
  `async_tokens_to_discard` without drafts).

Then the placeholder accounting of `async_scheduler.py` and `scheduler.py` step by step.
"""
from collections import deque

import pytest

from sim.core.sequence import SamplingParams
from sim.v1.async_scheduler import AsyncScheduler
from sim.v1.config import CacheConfig, SchedulerConfig
from sim.v1.kv_cache_utils import get_request_block_hasher, sha256
from sim.v1.request import Request, RequestStatus
from sim.v1.scheduler import ModelRunnerOutput, Scheduler

EOS_TOKEN_ID = 50256


def create_scheduler(max_num_seqs=16, max_num_batched_tokens=8192, enable_prefix_caching=False,
                     num_blocks=10000, block_size=16, max_model_len=None,
                     async_scheduling=True, events=None):
    """vLLM's tests/v1/core/utils.py:create_scheduler, with the fields the simulation has."""
    config = SchedulerConfig(max_num_seqs=max_num_seqs,
                             max_num_batched_tokens=max_num_batched_tokens,
                             max_model_len=max_model_len or max_num_batched_tokens,
                             async_scheduling=async_scheduling)
    cache = CacheConfig(block_size=block_size, num_gpu_blocks=num_blocks,
                        enable_prefix_caching=enable_prefix_caching)
    cls = AsyncScheduler if async_scheduling else Scheduler
    return cls(config, cache, events)


def create_requests(num_requests, num_tokens=10, max_tokens=16, same_prompt=False,
                    block_size=16, ignore_eos=False):
    """vLLM's create_requests: request i has the prompt [i] * num_tokens ([0] * num_tokens
    with same_prompt)."""
    hasher = get_request_block_hasher(block_size, sha256)
    return [Request(f"{i}", [0] * num_tokens if same_prompt else [i] * num_tokens,
                    SamplingParams(max_tokens=max_tokens, ignore_eos=ignore_eos),
                    EOS_TOKEN_ID, block_hasher=hasher, block_size=block_size)
            for i in range(num_requests)]


def _make_model_runner_output(scheduler_output):
    """vLLM's fake model output: token i for the i-th scheduled request."""
    req_ids = list(scheduler_output.num_scheduled_tokens)
    return ModelRunnerOutput(req_ids, {rid: i for i, rid in enumerate(req_ids)},
                             [[i] for i in range(len(req_ids))])


# -- vLLM's tests ----------------------------------------------------------------------------
@pytest.mark.parametrize("max_tokens", [1, 2, 3, 5])
def test_stop_by_max_tokens(max_tokens):
    """A request whose token in flight is its last is not scheduled again: each request is
    scheduled for its prompt and max_tokens - 1 decodes, not one more."""
    scheduler = create_scheduler(async_scheduling=True)
    req0, req1 = create_requests(num_requests=2, max_tokens=max_tokens)

    expected_total_num_scheduled_tokens = 0
    sched_outputs = deque()
    scheduler.add_request(req0)
    sched_outputs.append(scheduler.schedule())
    expected_total_num_scheduled_tokens += req0.num_prompt_tokens + max_tokens - 1

    scheduler.add_request(req1)
    sched_outputs.append(scheduler.schedule())
    expected_total_num_scheduled_tokens += req1.num_prompt_tokens + max_tokens - 1

    total_num_scheduled_tokens = 0
    while sched_outputs:
        sched_output = sched_outputs.popleft()
        total_num_scheduled_tokens += sched_output.total_num_scheduled_tokens
        scheduler.update_from_output(sched_output, _make_model_runner_output(sched_output))

        sched_output = scheduler.schedule()
        if sched_output.num_scheduled_tokens:
            sched_outputs.append(sched_output)

    assert scheduler.get_num_unfinished_requests() == 0
    assert req0.num_output_tokens == max_tokens
    assert req1.num_output_tokens == max_tokens
    # Ensure we aren't scheduling more tokens than necessary.
    assert total_num_scheduled_tokens == expected_total_num_scheduled_tokens


def _abort_while_in_flight(scheduler, requests):
    """test_abort's loop: abort one request per iteration, before the oldest output is
    processed, then schedule again."""
    for req in requests:
        scheduler.add_request(req)
    sched_outputs = deque()
    sched_outputs.append(scheduler.schedule())
    sched_outputs.append(scheduler.schedule())

    abort_order = [0, 8, 3, 1, 6, 4, 2, 5, 7, 9]
    abort_order_copy = abort_order.copy()

    def abort_request():
        if not abort_order:
            return
        req = requests[abort_order.pop(0)]
        scheduler.finish_requests(req.request_id, RequestStatus.FINISHED_ABORTED)

    while sched_outputs:
        # Abort a scheduled request.
        abort_request()
        sched_output = sched_outputs.popleft()
        scheduler.update_from_output(sched_output, _make_model_runner_output(sched_output))

        sched_output = scheduler.schedule()
        if sched_output.num_scheduled_tokens:
            sched_outputs.append(sched_output)
    return abort_order_copy


def test_abort():
    """An aborted request's output in flight is dropped: the request aborted at the k-th
    iteration has exactly k output tokens (its first output comes back at the first)."""
    scheduler = create_scheduler(async_scheduling=True)
    requests = create_requests(num_requests=10, max_tokens=20)
    abort_order = _abort_while_in_flight(scheduler, requests)
    for i, req in enumerate(requests):
        assert req.status == RequestStatus.FINISHED_ABORTED
        assert req.num_output_tokens == abort_order.index(i)


def test_preempt():
    """vLLM's test_preempt at v0.25.1 repeats test_abort step for step (nothing is
    preempted with 10,000 blocks); re-expressed as it is."""
    scheduler = create_scheduler(async_scheduling=True)
    requests = create_requests(num_requests=10, max_tokens=20)
    abort_order = _abort_while_in_flight(scheduler, requests)
    for i, req in enumerate(requests):
        assert req.status == RequestStatus.FINISHED_ABORTED
        assert req.num_output_tokens == abort_order.index(i)


def test_prefix_caching_for_prefill_dedup():
    """Two identical prompts in one step share every full block (the second computes only
    the last partial block), and so does each identical prompt added later."""
    CHUNK_SIZE = 1000
    BLOCK_SIZE = 16
    num_prompt_tokens = 100
    scheduler = create_scheduler(async_scheduling=True, max_num_batched_tokens=CHUNK_SIZE,
                                 enable_prefix_caching=True, block_size=BLOCK_SIZE)
    requests = create_requests(num_requests=5, num_tokens=num_prompt_tokens, max_tokens=3,
                               same_prompt=True, block_size=BLOCK_SIZE)
    # Two requests with the same prompt.
    req0 = requests.pop(0)
    req1 = requests.pop(0)
    scheduler.add_request(req0)
    scheduler.add_request(req1)

    sched_outputs = deque()
    sched_output = scheduler.schedule()
    sched_outputs.append(sched_output)
    # Prefix caching de-duplicates the prompts in the same step, so all the blocks except
    # the last are shared between the two requests.
    assert len(sched_output.num_scheduled_tokens) == 2
    assert sched_output.num_scheduled_tokens[req0.request_id] == num_prompt_tokens
    assert sched_output.num_scheduled_tokens[req1.request_id] == num_prompt_tokens % BLOCK_SIZE

    sched_outputs.append(scheduler.schedule())
    while sched_outputs:
        added_req = None
        if requests:
            added_req = requests.pop(0)
            scheduler.add_request(added_req)
        sched_output = sched_outputs.popleft()
        scheduler.update_from_output(sched_output, _make_model_runner_output(sched_output))
        sched_output = scheduler.schedule()
        if sched_output.num_scheduled_tokens:
            sched_outputs.append(sched_output)
            if added_req:
                assert (sched_output.num_scheduled_tokens[added_req.request_id]
                        == num_prompt_tokens % BLOCK_SIZE)
    assert scheduler.get_num_unfinished_requests() == 0


def test_prefix_caching_for_multi_turn():
    """The next turn (prompt + every output of the first) hits every full block, the ones
    filled by output tokens included: blocks are cached as outputs come back."""
    CHUNK_SIZE = 1000
    BLOCK_SIZE = 16
    num_prompt_tokens = 100
    num_output_tokens = 200
    scheduler = create_scheduler(async_scheduling=True, max_num_batched_tokens=CHUNK_SIZE,
                                 enable_prefix_caching=True, block_size=BLOCK_SIZE)
    requests = create_requests(num_requests=5, num_tokens=num_prompt_tokens,
                               max_tokens=num_output_tokens, block_size=BLOCK_SIZE)
    for req in requests:
        scheduler.add_request(req)
    sched_outputs = deque()
    sched_outputs.append(scheduler.schedule())
    sched_outputs.append(scheduler.schedule())

    # Process the requests.
    while sched_outputs:
        sched_output = sched_outputs.popleft()
        scheduler.update_from_output(sched_output, _make_model_runner_output(sched_output))
        sched_output = scheduler.schedule()
        if sched_output.num_scheduled_tokens:
            sched_outputs.append(sched_output)
    assert scheduler.get_num_unfinished_requests() == 0

    # Next-turn requests whose prompts are the full output of the previous turn.
    hasher = get_request_block_hasher(BLOCK_SIZE, sha256)
    next_turn_requests = [
        Request(f"next{i}", req.prompt_token_ids + list(req.output_token_ids),
                SamplingParams(max_tokens=num_output_tokens), EOS_TOKEN_ID,
                block_hasher=hasher, block_size=BLOCK_SIZE)
        for i, req in enumerate(requests)]
    for req in next_turn_requests:
        scheduler.add_request(req)
    sched_output = scheduler.schedule()
    # The next-turn requests hit the prefix cache filled by the previous turn.
    for req in next_turn_requests:
        assert sched_output.num_scheduled_tokens[req.request_id] == (
            req.num_prompt_tokens % BLOCK_SIZE)


# -- placeholders, step by step ------------------------------------------------------------
def test_placeholder_accounting():
    """vLLM v0.25.1 (async_scheduler.py, scheduler.py): a scheduled request that is not in a
    prefill chunk gets one output placeholder per step in flight; the running loop schedules
    num_tokens + placeholders - num_computed_tokens; processing an output subtracts one."""
    s = create_scheduler(block_size=4, num_blocks=64, max_num_batched_tokens=64)
    (r,) = create_requests(1, num_tokens=6, max_tokens=5, block_size=4)
    s.add_request(r)
    so0 = s.schedule()                                  # the prompt: 6 tokens
    assert so0.num_scheduled_tokens == {"0": 6}
    assert (r.num_computed_tokens, r.num_tokens, r.num_output_placeholders) == (6, 6, 1)
    so1 = s.schedule()                                  # before so0's output is back
    # 6 tokens + 1 placeholder - 6 computed: the token in flight (position 6) is computed.
    assert so1.num_scheduled_tokens == {"0": 1}
    assert so1.scheduled_cached_reqs.num_computed_tokens == [6]
    assert so1.scheduled_cached_reqs.num_output_tokens == [1]    # outputs + placeholders
    assert (r.num_computed_tokens, r.num_tokens, r.num_output_placeholders) == (7, 6, 2)
    s.update_from_output(so0, _make_model_runner_output(so0))
    assert (r.num_computed_tokens, r.num_tokens, r.num_output_placeholders) == (7, 7, 1)
    so2 = s.schedule()
    assert so2.num_scheduled_tokens == {"0": 1}
    assert r.num_output_placeholders == 2
    s.update_from_output(so1, _make_model_runner_output(so1))
    assert (r.num_computed_tokens, r.num_tokens, r.num_output_placeholders) == (8, 8, 1)


def test_a_prefill_chunk_gets_no_placeholder():
    """Only the step that reaches the end of the prompt samples, so only it gets a
    placeholder; a chunk's output comes back empty and subtracts nothing."""
    s = create_scheduler(block_size=4, num_blocks=64, max_num_batched_tokens=16,
                         max_num_seqs=4, max_model_len=64)
    (r,) = create_requests(1, num_tokens=20, max_tokens=3, block_size=4)
    s.add_request(r)
    so0 = s.schedule()
    assert so0.num_scheduled_tokens == {"0": 16} and r.is_prefill_chunk
    assert r.num_output_placeholders == 0
    so1 = s.schedule()
    assert so1.num_scheduled_tokens == {"0": 4} and not r.is_prefill_chunk
    assert r.num_output_placeholders == 1
    s.update_from_output(so0, ModelRunnerOutput(["0"], {"0": 0}, [[]]))
    assert (r.num_tokens, r.num_output_placeholders) == (20, 1)
    s.update_from_output(so1, _make_model_runner_output(so1))
    assert (r.num_tokens, r.num_output_placeholders) == (21, 0)


def test_a_request_at_max_model_len_is_not_scheduled_again():
    """max_model_len - num_computed_tokens - 1 stops the running loop at the model length
    (vLLM: "Async scheduling and the request has reached ... its max_model_len"), so the
    length stop wastes no step either."""
    s = create_scheduler(block_size=4, num_blocks=64, max_num_batched_tokens=16,
                         max_num_seqs=4, max_model_len=10)
    (r,) = create_requests(1, num_tokens=8, max_tokens=100, block_size=4)
    s.add_request(r)
    outs = deque([s.schedule(), s.schedule()])
    assert [dict(o.num_scheduled_tokens) for o in outs] == [{"0": 8}, {"0": 1}]
    scheduled = 9
    while outs:
        so = outs.popleft()
        s.update_from_output(so, _make_model_runner_output(so))
        so = s.schedule()
        if so.num_scheduled_tokens:
            scheduled += so.total_num_scheduled_tokens
            outs.append(so)
    assert r.status == RequestStatus.FINISHED_LENGTH_CAPPED
    assert (r.num_tokens, r.num_output_tokens, scheduled) == (10, 2, 9)


def test_the_stopping_output_frees_blocks_the_next_schedule_already_missed():
    """An EOS stop is seen when its output is processed, after the next step was scheduled
    (with a decode for the request: the token it computes is thrown away). Its blocks are
    freed then, so only the schedule after can reuse them."""
    s = create_scheduler(block_size=4, num_blocks=5, max_num_batched_tokens=16,
                         max_num_seqs=4, max_model_len=16)
    a, b = create_requests(2, num_tokens=8, max_tokens=4, block_size=4)
    s.add_request(a)
    so0 = s.schedule()
    assert [b_.block_id for b_ in s.kv_cache_manager.req_to_blocks["0"]] == [1, 2]
    s.add_request(b)
    so1 = s.schedule()               # a decodes (needs block 3); b needs 2: only 1 is free
    assert so1.num_scheduled_tokens == {"0": 1}
    s.update_from_output(so0, ModelRunnerOutput(["0"], {"0": 0}, [[EOS_TOKEN_ID]]))
    assert a.status == RequestStatus.FINISHED_STOPPED
    assert s.kv_cache_manager.block_pool.get_num_free_blocks() == 4
    so2 = s.schedule()               # now b fits, in a's freed blocks
    assert so2.num_scheduled_tokens == {"1": 8}
    assert so2.finished_req_ids == {"0"}
    s.update_from_output(so1, _make_model_runner_output(so1))    # a's extra token: dropped
    assert a.output_token_ids == [EOS_TOKEN_ID]


def test_a_preempted_request_keeps_its_placeholder_and_gets_the_token_in_flight():
    """_preempt_request does not touch num_output_placeholders: the victim's output in
    flight is appended when it comes back, though its blocks are already free (and no block
    is cached for it then: status_before_update is PREEMPTED)."""
    s = create_scheduler(block_size=4, num_blocks=5, max_num_batched_tokens=16,
                         max_num_seqs=4, max_model_len=32)
    a, b = create_requests(2, num_tokens=4, max_tokens=10, block_size=4)
    s.add_request(a)
    s.add_request(b)
    so0 = s.schedule()                       # a: block 1, b: block 2
    so1 = s.schedule()                       # a: block 3, b: block 4 (positions 4)
    assert so1.num_scheduled_tokens == {"0": 1, "1": 1}
    s.update_from_output(so0, _make_model_runner_output(so0))
    for _ in range(3):                       # positions 5 to 7 fit in the blocks held
        so = s.schedule()
        s.update_from_output(so1, _make_model_runner_output(so1))
        so1 = so
    # a needs a third block for position 8: none is free, b (the last of running) goes.
    so = s.schedule()
    assert so.num_scheduled_tokens == {"0": 1} and so.preempted_req_ids == {"1"}
    assert b.status == RequestStatus.PREEMPTED and b.num_computed_tokens == 0
    assert b.num_output_placeholders == 1
    tokens_before = b.num_tokens
    s.update_from_output(so1, _make_model_runner_output(so1))
    assert b.num_tokens == tokens_before + 1 and b.num_output_placeholders == 0
    assert b.status == RequestStatus.PREEMPTED and "1" not in s.kv_cache_manager.req_to_blocks
