"""The scheduler of V1's default engine loop (vLLM v0.25.1
`vllm/v1/core/sched/async_scheduler.py`: `AsyncScheduler`).

With async scheduling (`SchedulerConfig.async_scheduling`, on by default in vLLM) the
engine schedules step N+1 before it processes step N's output (`EngineCore.
step_with_batch_queue`, sim/v1/engine.py). The scheduler then does not know the token that
step N is sampling for a request, but it knows one is coming: each scheduled request that
is not in a prefill chunk gets an output placeholder (`num_output_placeholders += 1`, plus
its draft tokens with speculative decoding), and the base `Scheduler.schedule` counts the
placeholders:

- a running request is scheduled `num_tokens + num_output_placeholders -
  num_computed_tokens` tokens: the token in flight is computed in the next step, its value
  taken from the GPU by the worker;
- a request whose token in flight is its last (`max_tokens`) is not scheduled again, and
  `max_model_len - num_computed_tokens - 1` stops it at the model length, so a length stop
  wastes no step; an EOS (or stop-token) stop cannot be foreseen, so the step already
  scheduled after it computes a token that is thrown away (and an abort likewise);
- a preempted request keeps its placeholders: the token in flight is still appended when
  its output comes back (the request may even finish while preempted).

When an output comes back (`_update_request_with_output`), the placeholder is subtracted and
the request's full blocks are cached only up to the tokens whose value is known
(`num_computed_tokens - num_output_placeholders`): `allocate_slots` caps its caching at
`num_tokens`, which no longer covers the token in flight, so a block completed by a decode
is cached one engine call later than with the synchronous loop. A request preempted by
`reset_prefix_cache(reset_running_requests=True)` drops the outputs already in flight
(`async_tokens_to_discard`).

Left out: speculative decoding with async scheduling (the config refuses it), structured
output, pipeline parallelism and the V2 model runner's decode throttling.
"""
from __future__ import annotations

from sim.v1.request import Request, RequestStatus
from sim.v1.scheduler import Scheduler, check_stop

_RUNNING = RequestStatus.RUNNING


class AsyncScheduler(Scheduler):
    # Every output goes through _update_request_with_output below, but for one token
    # without a discard, which update_from_output writes out (the per-token hot path).
    _inline_single_token_update = False
    _inline_async_token_update = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.num_spec_tokens:
            raise ValueError("async scheduling with speculative decoding is not simulated")
        # vLLM: tokens sampled per step (0 only for diffusion models).
        self.num_sampled_tokens_per_step = 1
        # vLLM's _update_after_schedule: each scheduled request that is not in a prefill
        # chunk gets num_sampled_tokens_per_step output placeholders. Scheduler.schedule()
        # adds them as it schedules each request (after the output has recorded its output
        # count, as vLLM's _make_cached_request_data runs first), saving a pass over the
        # scheduled requests; no connector reads them while its metadata is built.
        self._schedule_placeholder_step = self.num_sampled_tokens_per_step

    def _update_request_with_output(self, request: Request, new_token_ids: list[int],
                                    max_model_len: int) -> tuple[list[int], bool]:
        if request.async_tokens_to_discard > 0:
            # Preempted by reset_prefix_cache while this output was in flight: stale.
            request.async_tokens_to_discard -= 1
            return [], False
        status_before_update = request.status
        if len(new_token_ids) == 1:
            # One token (every step without drafts): the base class's loop, written out as
            # Scheduler.update_from_output does; check_stop only when it can stop.
            token_id = new_token_ids[0]
            request.append_output_token_ids(token_id)
            num_tokens = request.num_tokens
            stopped = ((num_tokens >= max_model_len
                        or num_tokens - request.num_prompt_tokens >= request.max_tokens
                        or token_id == request.eos_token_id
                        or token_id in request.stop_token_ids)
                       and check_stop(request, max_model_len))
        else:
            new_token_ids, stopped = super()._update_request_with_output(
                request, new_token_ids, max_model_len)
        placeholders = request.num_output_placeholders - len(new_token_ids)
        request.num_output_placeholders = placeholders
        assert placeholders >= 0
        # Cache the blocks the known tokens fill (a preempted request holds none).
        # (vLLM's KVCacheManager.cache_blocks does nothing with prefix caching off.)
        kv_cache_manager = self.kv_cache_manager
        if status_before_update is _RUNNING and kv_cache_manager.enable_caching:
            kv_cache_manager.cache_blocks(request, request.num_computed_tokens - placeholders)
        return new_token_ids, stopped
