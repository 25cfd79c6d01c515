"""V1's engine loop (vLLM v0.25.1 `vllm/v1/engine/core.py:EngineCore`, driven like
`vllm/v1/engine/llm_engine.py`): one call of `step()` is one call of EngineCore's step
function, and one row of a trace.

    engine = LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=11), SchedulerConfig())
    engine.add_request("A", prompt=15, sampling_params=SamplingParams(max_tokens=3))
    while engine.has_unfinished_requests():
        out = engine.step()     # StepOutput: scheduler output, events, tokens made

It plugs into `sim.trace.record` exactly like `sim.core.engine.LLMEngine`.

Two loops, as in vLLM (`SchedulerConfig.async_scheduling`; None resolves as
`VllmConfig` does, to True unless speculative decoding is on: `resolve_async_scheduling`):

- Async (vLLM's default): `EngineCore.step_with_batch_queue` with `AsyncScheduler` and a
  batch queue of two (`max_concurrent_batches`). A call schedules a new batch if there is
  anything to schedule and hands it to the model; if the queue is not full yet (and the
  batch ran something, or more can be scheduled) it returns without an output. Otherwise
  it takes the oldest batch in the queue, waits for its model output and processes it
  (`update_from_output`). So step N+1 is scheduled before step N's output is processed,
  and the CPU's scheduling overlaps the GPU's step. What one call (one trace row) holds:
  `scheduler_outputs` is the batch scheduled in this call (empty when nothing was
  scheduled), `processed_step` the call whose batch's output was processed in it (None
  when none was: the first call, or an idle one), `tokens` and `finished` what that
  output did, `discarded` the sampled tokens thrown away (the request had stopped or was
  aborted while its step was in flight, or `reset_prefix_cache` preempted it), and the
  snapshot shows the batches still in flight and each request's output placeholders.
- Sync (`async_scheduling=False`): `EngineCore.step` with the synchronous `Scheduler`:
  schedule, run the model, `update_from_output`, take the drafter's proposals, in one
  call; `processed_step` is the call itself.

- Requests with `n > 1` are fanned out as V1's frontend does
  (`vllm/v1/engine/parallel_sampling.py`): n child requests `"{i}_{request_id}"`, added in
  order, that share the prompt through the prefix cache.
- The model (`sim.stand_in_model.StandInModel`) writes the KV payload `(token_id, position)`
  of every scheduled token into the slot its block table points at (drafts included), and
  samples exactly one token for a request whose computed count reaches its token count in
  this step (partial prefill chunks sample nothing), plus accepted draft tokens with
  speculative decoding. Drafts come from `StandInModel.draft_token_ids` with the engine's
  `spec_acceptance_rate`; rejection leaves outputs unchanged. In the async loop the model
  runs when its batch is scheduled, and the worker keeps its own copy of each request's
  tokens (vLLM's `CachedRequestState`, whose last token may still be in flight to the
  scheduler): a decode computes the KV of the token the previous step sampled, which the
  scheduler has not seen yet.
- The engine also plays vLLM's frontend where the trace needs it: it emits KVWritten and
  TokenSampled events and keeps each request's cumulative log probability.
- `best_of` and beam search are not part of V1's engine: add_request rejects them.
- Arrival: a request added with `arrival_step` reaches the scheduler at that step (an
  addition, as in the v0.5.5 engine: vLLM's requests arrive when they are added).
- A prompt of `max_model_len` tokens or more is refused when it is added, as vLLM's
  `InputProcessor._validate_prompt_len` does (`vllm/v1/engine/input_processor.py`).
- The engine has unfinished work while a batch that computes anything is still in flight,
  so that a trace shows its output processed (and its discarded tokens); vLLM's offline
  `LLM` loop returns once the frontend has every request's final output and processes
  that batch at its next call.
- A KV connector (P/D disaggregation): the scheduler's half from `kv_transfer_config` or
  `kv_connector`, the worker's half (`kv_connector_worker`) asked around every forward pass,
  as vLLM's model runner does: metadata bound and loads started before, `get_finished` and
  the failed blocks after (a `KVConnectorOutput`); in the async loop, around each batch's
  forward pass when it is launched, the report travelling with that batch's output. The
  offloading connector's worker side also flushes before the forward pass
  (`handle_preemptions`) and reports its completed jobs (`build_connector_worker_meta`);
  the engine builds that worker side itself, since it registers the KV caches (it gets
  `gpu_cache`); `kv_connector_kwargs` go to the connectors the engine builds (a link, bytes
  per block).
- Time (an addition): `now_s`, seconds, starts at 0 and advances after each forward pass
  by `step_time(scheduler_output)` when given (a cost model); connectors the engine builds
  read it as their clock. Without `step_time` it stays 0 and the offloading connector's
  transfers take one step each.
- The synchronous `step()` is `begin_step()` then `finish_step()`, so a driver of two engines
  (sim/studies/disaggregated.py) can interleave them on one clock.
"""
from __future__ import annotations

import bisect
import dataclasses
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from sim.events import (
    Aborted,
    ChunkScheduled,
    KVWritten,
    RequestArrived,
    TokenDiscarded,
    TokenSampled,
    fast_event,
)
from sim.stand_in_model import StandInModel
from sim.trace import Scheduled
from sim.v1.async_scheduler import AsyncScheduler
from sim.v1.config import CacheConfig, KVTransferConfig, SchedulerConfig, resolve_async_scheduling
from sim.v1.kv_cache_interface import KVCacheConfig
from sim.v1.kv_cache_utils import get_request_block_hasher, init_none_hash, sha256
from sim.v1.kv_connector import KVConnectorBase_V1, KVConnectorFactory, KVConnectorRole
from sim.v1.kv_offload.snapshot import offload_snapshot
from sim.v1.request import Request, RequestStatus
from sim.v1.scheduler import KVConnectorOutput, ModelRunnerOutput, Scheduler, SchedulerOutput
from sim.v1.snapshot import engine_snapshot

Slot = tuple[int, int] | None   # (token_id, position) or empty
_PREEMPTED = RequestStatus.PREEMPTED    # every status after it is a finished one


@dataclass(slots=True)
class StepOutput:
    step: int                              # the index of this step, from 0
    scheduler_outputs: SchedulerOutput
    events: list = field(default_factory=list)
    # (request_id, seq_id, position, token_id) of every token sampled this step
    tokens: list = field(default_factory=list)
    finished: list = field(default_factory=list)   # request ids that finished this step
    # Requests that computed prompt (or recomputed) tokens this step.
    prefill_req_ids: set = field(default_factory=set)
    # The step (engine call) whose batch's output this call processed: this one in the
    # synchronous loop, usually the previous one in the async loop, None when none was.
    processed_step: int | None = None
    # (request_id, seq_id, position, token_id, reason) of each sampled token thrown away
    # (async loop): reason is the request's status label ("finished_stopped",
    # "finished_aborted", ...) or "reset_prefix_cache".
    discarded: list = field(default_factory=list)
    # With a KV connector: request id -> the kv_transfer_params of its output (a
    # prefill-side request's blocks, for the proxy), and the worker side's report.
    kv_transfer_params: dict = field(default_factory=dict)
    kv_connector_output: KVConnectorOutput | None = None

    def scheduled(self) -> tuple[Scheduled, ...]:
        """The scheduled requests in the engine-neutral form a trace keeps, in V1's
        scheduling order (running requests first, then newly admitted ones)."""
        prefill = self.prefill_req_ids
        return tuple(Scheduled(rid, n, rid in prefill, 1)
                     for rid, n in self.scheduler_outputs.num_scheduled_tokens.items())


class StepInFlight(NamedTuple):
    """A step between begin_step and finish_step."""
    step: int
    scheduler_output: SchedulerOutput
    model_runner_output: ModelRunnerOutput
    tokens: list | None
    prefill_req_ids: set


def _child_sampling_params(sp):
    """The sampling parameters of one child of an n > 1 request: n = 1."""
    if dataclasses.is_dataclass(sp):
        changes = {"n": 1}
        if any(f.name == "best_of" for f in dataclasses.fields(sp)):
            changes["best_of"] = None
        return dataclasses.replace(sp, **changes)
    return sp


@dataclass(slots=True)
class InFlightBatch:
    """One entry of the batch queue: a scheduled step whose output is not processed yet.
    `sampled`: request id -> (position, token_id, logprob) of the token its step samples
    (the GPU has it; the scheduler sees it when the output is processed)."""
    step: int
    scheduler_output: SchedulerOutput
    model_runner_output: ModelRunnerOutput
    sampled: dict
    prefill_req_ids: set


@dataclass(frozen=True, slots=True)
class _DefaultSamplingParams:
    n: int = 1
    max_tokens: int = 16
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    min_tokens: int = 0


class LLMEngine:
    def __init__(self, cache_config: CacheConfig | None = None,
                 scheduler_config: SchedulerConfig | None = None, *, seed: int = 0,
                 model: StandInModel | None = None, record_events: bool = True,
                 spec_acceptance_rate: float = 0.7,
                 kv_cache_config: KVCacheConfig | None = None,
                 kv_transfer_config: KVTransferConfig | None = None,
                 kv_connector: KVConnectorBase_V1 | None = None,
                 kv_connector_worker: KVConnectorBase_V1 | None = None,
                 kv_connector_kwargs: dict | None = None,
                 step_time=None) -> None:
        """`kv_cache_config`: the KV cache groups of a hybrid model
        (`sim.v1.kv_cache_utils.make_kv_cache_config`); its `num_blocks` and block size
        must match `cache_config`. Default: one group of full attention.
        `kv_transfer_config` (or a scheduler-side `kv_connector` built already) turns on
        the scheduler's KV connector path; `kv_connector_worker` is the connector beside the
        model runner, asked after every forward pass what finished: NIXL's needs the
        caller's transport (sim/v1/kv_connector/nixl.py); a connector whose worker side
        registers the KV caches (the offloading connector) is built by the engine; with a
        hybrid model, a connector that models KV cache groups (the offloading connector)
        gets `kv_cache_config` too (others refuse several groups).
        `kv_connector_kwargs` go to the connectors the engine builds; `step_time` runs the
        engine's clock (see the module docstring)."""
        self.cache_config = cache_config or CacheConfig()
        # VllmConfig's default: async scheduling unless something rules it out.
        self.scheduler_config = resolve_async_scheduling(scheduler_config or SchedulerConfig())
        self.async_scheduling = self.scheduler_config.async_scheduling
        if not 0.0 <= spec_acceptance_rate <= 1.0:
            raise ValueError(f"spec_acceptance_rate must be in [0, 1], got "
                             f"{spec_acceptance_rate}")
        self.spec_acceptance_rate = spec_acceptance_rate
        self.model = model or StandInModel(seed=seed)
        self._events: list | None = [] if record_events else None
        self.now_s = 0.0
        self.step_time = step_time
        connector_kwargs = dict(kv_connector_kwargs or {})
        # Connectors read the engine's time only when it runs (step_time given).
        clock = self.clock if step_time is not None else None
        connector_cls = None
        if kv_transfer_config is not None and kv_transfer_config.kv_connector is not None:
            connector_cls = KVConnectorFactory.get_connector_class(
                kv_transfer_config.kv_connector)
            if kv_cache_config is not None \
                    and getattr(connector_cls, "simulates_kv_cache_groups", False):
                # vLLM hands every connector the KVCacheConfig; here only those that
                # model its groups (the offloading connector) take it.
                connector_kwargs.setdefault("kv_cache_config", kv_cache_config)
            if kv_connector is None:
                kv_connector = connector_cls(kv_transfer_config, KVConnectorRole.SCHEDULER,
                                             self.cache_config, clock=clock,
                                             **connector_kwargs)
        scheduler_cls = AsyncScheduler if self.async_scheduling else Scheduler
        self.scheduler = scheduler_cls(self.scheduler_config, self.cache_config, self._events,
                                       kv_cache_config=kv_cache_config,
                                       kv_transfer_config=kv_transfer_config,
                                       connector=kv_connector)
        # With a KV connector, the tokens of each WAITING_FOR_REMOTE_KVS request whose KV
        # has landed (its transport counts them; the picture fills its blocks with them).
        self.kv_landed: dict[str, int] = {}
        # EngineCore's batch queue (max_concurrent_batches = 2 with async scheduling and
        # no pipeline parallelism), newest first; None in the synchronous loop.
        self.batch_queue_size = 2 if self.async_scheduling else 1
        self.batch_queue: deque[InFlightBatch] | None = (
            deque(maxlen=self.batch_queue_size) if self.async_scheduling else None)
        # The worker's copy of each request's token ids (async loop only), the tokens its
        # steps sampled included.
        self.runner_token_ids: dict[str, list[int]] = {}
        self.kv_cache_manager = self.scheduler.kv_cache_manager
        # Every group's tables (one per group; the first is kv_cache_manager.req_to_blocks).
        self.group_tables = [m.req_to_blocks for m in
                             self.kv_cache_manager.coordinator.single_type_managers]
        self.block_pool = self.kv_cache_manager.block_pool
        cc = self.cache_config
        # EngineCore builds the request block hasher when prefix caching or a KV connector
        # is on.
        self.none_hash = init_none_hash(sha256, cc.hash_seed)
        self.block_hasher = (get_request_block_hasher(cc.block_size, sha256, self.none_hash)
                             if cc.enable_prefix_caching or kv_connector is not None
                             else None)
        # The KV payload of every GPU slot (the stand-in for the KV cache tensors).
        self.gpu_cache: list[list[Slot]] = [[None] * cc.block_size
                                            for _ in range(cc.num_gpu_blocks)]
        if kv_connector_worker is None and connector_cls is not None \
                and hasattr(connector_cls, "register_kv_caches"):
            kv_connector_worker = connector_cls(kv_transfer_config, KVConnectorRole.WORKER,
                                                self.cache_config, clock=clock,
                                                **connector_kwargs)
            kv_connector_worker.register_kv_caches(self.gpu_cache)
        self.kv_connector_worker = kv_connector_worker
        if kv_connector_worker is not None and hasattr(kv_connector_worker, "kv_landed"):
            # The offloading worker says which loads are still in flight (the picture).
            kv_connector_worker.kv_landed = self.kv_landed
        self.step_index = 0
        # Every (child) request ever added, in order; parents of n > 1 requests.
        self.requests: dict[str, Request] = {}
        self.parents: dict[str, list[str]] = {}
        # Added, not arrived yet, by arrival step (stable).
        self.pending: list[Request] = []
        self._num_prompts = 0
        self._seq_counter = 0
        self._spec_logprobs: dict[str, list[float]] = {}

    # -- requests ----------------------------------------------------------------------
    def add_request(self, request_id: str, prompt: int | list[int],
                    sampling_params=None, arrival_step: int = 0,
                    output_len: int | None = None, *, priority: int = 0,
                    cache_salt: str | None = None, shared_prefix: int = 0,
                    kv_transfer_params: dict | None = None):
        """`prompt`: a list of token ids, or a prompt length (ids made up by the model,
        after `shared_prefix` ids that every request asking for them shares). `output_len`
        scripts the stand-in model to emit EOS as that output token. `kv_transfer_params`
        are the KV connector's (P/D: `{"do_remote_decode": True}` on the prefill
        instance, the prefill's answer on the decode one); the connector changes them, so
        each request gets its own copy. Returns the Request, or the list of child
        Requests when n > 1."""
        if request_id in self.requests or request_id in self.parents:
            raise ValueError(f"request_id {request_id!r} was already added")
        sp = sampling_params or _DefaultSamplingParams()
        if getattr(sp, "use_beam_search", False):
            raise ValueError("V1 has no beam search in the engine (vLLM runs it outside, "
                             "as max_tokens=1 requests per beam and position)")
        n = getattr(sp, "n", 1)
        best_of = getattr(sp, "best_of", None)
        if best_of is not None and best_of != n:
            raise ValueError(f"V1 has no best_of (got best_of={best_of} with n={n})")
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        if isinstance(prompt, int):
            if prompt < 1:
                raise ValueError(f"prompt length must be at least 1, got {prompt}")
            prompt = (self.model.shared_prefix_token_ids(shared_prefix)
                      + self.model.prompt_token_ids(self._num_prompts, prompt))
        else:
            if not prompt:
                raise ValueError("prompt must hold at least one token")
            prompt = list(prompt)
        max_model_len = self.scheduler_config.max_model_len
        # InputProcessor._validate_prompt_len (vllm/v1/engine/input_processor.py): the
        # prompt and at least one output token must fit in max_model_len.
        if len(prompt) > max_model_len:
            raise ValueError(f"The decoder prompt (length {len(prompt)}) is longer than the "
                             f"maximum model length of {max_model_len}. Make sure that "
                             "`max_model_len` is no smaller than the number of text tokens.")
        if len(prompt) == max_model_len:
            raise ValueError(f"The decoder prompt (length {len(prompt)}) plus the number of "
                             "requested output tokens (at least 1) is longer than the "
                             f"maximum model length of {max_model_len}. Make sure that "
                             "`max_model_len` is no smaller than the number of text tokens "
                             "(prompt + requested output tokens).")
        if arrival_step < 0:
            raise ValueError(f"arrival_step must not be negative, got {arrival_step}")
        if output_len is not None and output_len < 1:
            raise ValueError(f"output_len must be at least 1, got {output_len}")
        self._num_prompts += 1
        if n == 1:
            ids = [(request_id, sp, None)]
        else:
            child_sp = _child_sampling_params(sp)
            ids = [(f"{i}_{request_id}", child_sp, request_id) for i in range(n)]
            for child_id, _, _ in ids:
                if child_id in self.requests:
                    raise ValueError(f"request_id {child_id!r} was already added")
            self.parents[request_id] = [child_id for child_id, _, _ in ids]
        made = []
        for rid, params, parent in ids:
            req = Request(rid, prompt, params, self.model.eos_token_id,
                          arrival_time=arrival_step, priority=priority, cache_salt=cache_salt,
                          block_hasher=self.block_hasher, block_size=self.cache_config.block_size,
                          seq_id=self._seq_counter, output_len=output_len,
                          parent_request_id=parent)
            self._seq_counter += 1
            if kv_transfer_params is not None:
                req.kv_transfer_params = dict(kv_transfer_params)
            self.requests[rid] = req
            # Stable: equal arrival steps keep the order of add_request.
            bisect.insort_right(self.pending, req, key=lambda r: r.arrival_step)
            made.append(req)
        return made[0] if n == 1 else made

    def abort_request(self, request_id: str) -> bool:
        """Abort a request (or every child of an n > 1 request) wherever it is."""
        ids = self.parents.get(request_id, [request_id])
        done = False
        for rid in ids:
            req = self.requests.get(rid)
            if req is None or req.is_finished():
                continue
            if req in self.pending:
                self.pending.remove(req)
                req.status = RequestStatus.FINISHED_ABORTED
                if self._events is not None:
                    self._events.append(Aborted(rid, "pending"))
                done = True
            elif self.scheduler.finish_requests(rid, RequestStatus.FINISHED_ABORTED):
                done = True
        return done

    def has_unfinished_requests(self) -> bool:
        """Requests not finished yet, or (async loop) a batch still in flight that
        computes something (see the module docstring)."""
        if self.pending or self.scheduler.has_unfinished_requests():
            return True
        batch_queue = self.batch_queue
        return bool(batch_queue) and any(
            b.scheduler_output.total_num_scheduled_tokens for b in batch_queue)

    def get_num_unfinished_requests(self) -> int:
        return len(self.pending) + self.scheduler.get_num_unfinished_requests()

    def has_requests(self) -> bool:
        """vLLM's EngineCore keeps stepping while this holds: unfinished requests, or
        finished ones whose blocks a KV connector still holds (or, async loop, a batch in
        flight)."""
        return bool(self.pending) or self.scheduler.has_requests() or bool(self.batch_queue)

    def reset_prefix_cache(self, reset_running_requests: bool = False,
                           reset_connector: bool = False) -> bool:
        """Scheduler.reset_prefix_cache: empty the prefix cache (False while a request
        holds blocks, unless `reset_running_requests` preempts them all first);
        `reset_connector` empties the connector's cache too (the CPU tier)."""
        return self.scheduler.reset_prefix_cache(reset_running_requests, reset_connector)

    def clock(self) -> float:
        """The engine's time in seconds (see the module docstring)."""
        return self.now_s

    # -- one iteration -----------------------------------------------------------------
    def step(self) -> StepOutput:
        """One call of EngineCore's step function: `step_with_batch_queue` in the async
        loop; in the synchronous one begin_step (schedule, the forward pass), then
        finish_step (the connector's report, update_from_output)."""
        if self.batch_queue is not None:
            step = self.step_index
            pending = self.pending
            if pending and pending[0].arrival_step <= step:
                self._add_arrivals(step)
            return self.step_with_batch_queue(step)
        return self.finish_step(self.begin_step())

    def _add_arrivals(self, step: int) -> None:
        """Hand the requests due by this step to the scheduler."""
        events = self._events
        pending = self.pending
        while pending and pending[0].arrival_step <= step:
            req = pending.pop(0)
            self.scheduler.add_request(req)
            if events is not None:
                events.append(RequestArrived(req.request_id, req.num_prompt_tokens))

    def begin_step(self) -> StepInFlight:
        """The synchronous loop's first half of a step: arrivals, schedule(), the KV
        connector's loads started, the stand-in forward pass. A caller that prices steps in
        time (the P/D driver, sim/studies/disaggregated.py) runs the other engine's steps
        between the two halves, so what reaches this engine during the step is seen at its
        end."""
        if self.batch_queue is not None:
            raise ValueError("begin_step and finish_step drive the synchronous loop "
                             "(async_scheduling=False)")
        step = self.step_index
        pending = self.pending
        if pending and pending[0].arrival_step <= step:
            self._add_arrivals(step)

        scheduler_output = self.scheduler.schedule()
        worker = self.kv_connector_worker
        if worker is not None:
            # The model runner flushes what it must, binds the step's connector metadata
            # and starts the loads before the forward pass.
            kv_connector_metadata = scheduler_output.kv_connector_metadata
            worker.handle_preemptions(kv_connector_metadata)
            worker.bind_connector_metadata(kv_connector_metadata)
            worker.start_load_kv()
        num_spec = self.scheduler_config.num_speculative_tokens
        # Without drafts every sampled token is kept, so the model pass lists them.
        tokens: list | None = None if num_spec else []
        model_runner_output, prefill_req_ids = self._execute_model(scheduler_output, step,
                                                                   tokens)
        # StepInFlight(...) without NamedTuple's Python-level __new__ (sim.events.fast_event)
        return fast_event(StepInFlight, (step, scheduler_output, model_runner_output, tokens,
                                         prefill_req_ids))

    def finish_step(self, inflight: StepInFlight) -> StepOutput:
        """The second half: the connector's report (after the forward pass), then
        update_from_output and the step's record."""
        step, scheduler_output, model_runner_output, tokens, prefill_req_ids = inflight
        events = self._events
        if self.step_time is not None:
            self.now_s += self.step_time(scheduler_output)
        worker = self.kv_connector_worker
        if worker is not None:
            model_runner_output.kv_connector_output = self._kv_connector_output(
                worker, scheduler_output)
        outputs = self.scheduler.update_from_output(scheduler_output, model_runner_output)
        num_spec = self.scheduler_config.num_speculative_tokens

        requests = self.requests
        finished = [out.request_id for out in outputs if out.finish_reason is not None]
        for rid in finished:
            requests[rid].finished_step = step
        kv_transfer_params = None
        if self.scheduler.connector is not None:
            kv_transfer_params = {out.request_id: out.kv_transfer_params for out in outputs
                                  if out.kv_transfer_params is not None}
            kv_output = model_runner_output.kv_connector_output
            if tokens and kv_output is not None and kv_output.invalid_block_ids:
                # Requests whose loaded blocks failed keep no token this step.
                kept = {out.request_id for out in outputs if out.new_token_ids}
                tokens[:] = [t for t in tokens if t[0] in kept]
        if num_spec:
            # Accepted drafts past a stop were dropped: list what was kept, and take the
            # drafter's proposals for the next step.
            tokens = []
            drafts: dict[str, list[int]] = {}
            logprobs = self._spec_logprobs
            for out in outputs:
                rid = out.request_id
                req = requests[rid]
                new = out.new_token_ids
                first = req.num_tokens - len(new)
                tokens.extend((rid, req.seq_id, first + i, t) for i, t in enumerate(new))
                for i, t in enumerate(new):
                    logprob = logprobs[rid][i]
                    req.cumulative_logprob += logprob
                    if events is not None:
                        events.append(TokenSampled(req.seq_id, first + i, t, logprob))
                if out.finish_reason is None and not req.is_prefill_chunk:
                    drafts[rid] = self.model.draft_token_ids(
                        req.seq_id, req.num_tokens, req.num_tokens - req.num_prompt_tokens,
                        num_spec, self.spec_acceptance_rate, req.output_len)
            if drafts:
                self.scheduler.update_draft_token_ids(drafts)

        if events is not None:
            step_events = list(events)
            events.clear()
        else:
            step_events = []
        self.step_index += 1
        out = StepOutput(step, scheduler_output, step_events, tokens, finished,
                         prefill_req_ids, step)
        if kv_transfer_params is not None:
            out.kv_transfer_params = kv_transfer_params
            out.kv_connector_output = model_runner_output.kv_connector_output
        return out

    def step_with_batch_queue(self, step: int) -> StepOutput:
        """EngineCore.step_with_batch_queue (the async loop; see the module docstring):
        schedule and launch a batch if there is anything to schedule; return at once if
        the queue still has room, else process the oldest batch's output."""
        scheduler = self.scheduler
        batch_queue = self.batch_queue
        scheduler_output = None
        prefill_req_ids: set[str] = set()
        if scheduler.has_requests():
            scheduler_output = scheduler.schedule()
            batch = self._execute_model_async(scheduler_output, step)
            prefill_req_ids = batch.prefill_req_ids
            model_executed = scheduler_output.total_num_scheduled_tokens > 0
            batch_queue.appendleft(batch)
            if len(batch_queue) < self.batch_queue_size and (
                    model_executed or scheduler.has_requests()):
                # Do not wait for a model output while the queue has room.
                return self._step_output(step, scheduler_output, prefill_req_ids)
        elif not batch_queue:
            return self._step_output(step, scheduler_output, prefill_req_ids)
        # Block until the oldest batch's output is there, and process it.
        batch = batch_queue.pop()
        tokens, discarded = self._take_sampled(batch)
        outputs = scheduler.update_from_output(batch.scheduler_output,
                                               batch.model_runner_output)
        finished = [out.request_id for out in outputs if out.finish_reason is not None]
        requests = self.requests
        for rid in finished:
            requests[rid].finished_step = step
        out = self._step_output(step, scheduler_output, prefill_req_ids, batch.step, tokens,
                                finished, discarded)
        if scheduler.connector is not None:
            out.kv_transfer_params = {o.request_id: o.kv_transfer_params for o in outputs
                                      if o.kv_transfer_params is not None}
            out.kv_connector_output = batch.model_runner_output.kv_connector_output
        return out

    def _step_output(self, step: int, scheduler_output: SchedulerOutput | None,
                     prefill_req_ids: set, processed_step: int | None = None,
                     tokens: list | None = None, finished: list | None = None,
                     discarded: list | None = None) -> StepOutput:
        events = self._events
        if events is not None:
            step_events = list(events)
            events.clear()
        else:
            step_events = []
        self.step_index += 1
        return StepOutput(step, scheduler_output or SchedulerOutput.make_empty(), step_events,
                          tokens or [], finished or [], prefill_req_ids, processed_step,
                          discarded or [])

    def _take_sampled(self, batch: InFlightBatch) -> tuple[list, list]:
        """Before a batch's output is processed: the tokens it sampled that the scheduler
        will append (TokenSampled, in scheduling order) and the ones it will throw away:
        the request stopped or was aborted while the step was in flight (its blocks are
        already free), or reset_prefix_cache preempted it (async_tokens_to_discard)."""
        events = self._events
        requests = self.requests
        tokens = []
        discarded = []
        append_token = tokens.append
        for rid, (position, token_id, logprob) in batch.sampled.items():
            req = requests[rid]
            status = req.status
            if status <= _PREEMPTED and not req.async_tokens_to_discard:
                seq_id = req.seq_id
                append_token((rid, seq_id, position, token_id))
                req.cumulative_logprob += logprob
                if events is not None:
                    events.append(fast_event(TokenSampled, (seq_id, position, token_id,
                                                            logprob)))
                continue
            reason = status.label if status > _PREEMPTED else "reset_prefix_cache"
            discarded.append((rid, req.seq_id, position, token_id, reason))
            if events is not None:
                events.append(TokenDiscarded(rid, req.seq_id, position, token_id, reason))
        return tokens, discarded

    def _execute_model_async(self, scheduler_output: SchedulerOutput,
                             step: int) -> InFlightBatch:
        """The stand-in forward pass of the async loop, run when the batch is launched:
        the worker updates its copy of the requests (finished ones dropped, new ones
        added, resumed ones reset to the scheduler's tokens), writes the KV of every
        scheduled token from that copy (a decode's input is the token the previous step
        sampled, which only the worker knows yet), and samples for each request that
        reaches the end of its tokens."""
        runner = self.runner_token_ids
        for rid in scheduler_output.finished_req_ids:
            runner.pop(rid, None)
        worker = self.kv_connector_worker
        if worker is not None:
            # Flushes first (handle_preemptions), then the metadata and the loads.
            worker.handle_preemptions(scheduler_output.kv_connector_metadata)
            worker.bind_connector_metadata(scheduler_output.kv_connector_metadata)
            worker.start_load_kv()
        requests = self.requests
        for new_req in scheduler_output.scheduled_new_reqs:
            requests[new_req.req_id].first_scheduled_step = step
            runner[new_req.req_id] = list(new_req.prompt_token_ids)
        cached = scheduler_output.scheduled_cached_reqs
        for rid in cached.resumed_req_ids:
            # Resumed from preemption: the tokens the scheduler has (vLLM's worker takes
            # them from CachedRequestData.all_token_ids).
            runner[rid] = list(cached.all_token_ids[rid])
        req_to_blocks = self.kv_cache_manager.req_to_blocks
        other_tables = self.group_tables[1:]     # a hybrid model's other KV cache groups
        cache = self.gpu_cache
        bs = self.cache_config.block_size
        events = self._events
        sample = self.model.sample_token
        num_scheduled_tokens = scheduler_output.num_scheduled_tokens
        req_ids = list(num_scheduled_tokens)
        sampled_token_ids: list[list[int]] = []
        sampled: dict[str, tuple[int, int, float]] = {}
        prefill_req_ids: set[str] = set()
        assert scheduler_output is self.scheduler.last_scheduler_output
        append_sampled = sampled_token_ids.append
        for req, n in zip(self.scheduler.scheduled_reqs, num_scheduled_tokens.values()):
            rid = req.request_id
            token_ids = runner[rid]
            num_tokens = len(token_ids)          # with the token in flight, if any
            c1 = req.num_computed_tokens         # advanced by schedule()
            if n == 1 and c1 == num_tokens and c1 > req.num_prompt_tokens:
                # A decode (the hot path): the KV of the token the previous step sampled,
                # then one sample. The general path below does the same, with more
                # questions.
                c0 = c1 - 1
                cache[req_to_blocks[rid][c0 // bs].block_id][c0 % bs] = (token_ids[c0], c0)
                if other_tables:
                    for tables in other_tables:
                        cache[tables[rid][c0 // bs].block_id][c0 % bs] = (token_ids[c0], c0)
                seq_id = req.seq_id
                if events is not None:
                    events.append(fast_event(KVWritten, (seq_id, c0, 1)))
                token_id, logprob = sample(seq_id, num_tokens,
                                           num_tokens - req.num_prompt_tokens, req.output_len)
                token_ids.append(token_id)
                append_sampled([token_id])
                sampled[rid] = (num_tokens, token_id, logprob)
                continue
            c0 = c1 - n
            assert c1 <= num_tokens, (rid, c1, num_tokens)
            seq_id = req.seq_id
            if n == 1:
                cache[req_to_blocks[rid][c0 // bs].block_id][c0 % bs] = (token_ids[c0], c0)
                for tables in other_tables:
                    cache[tables[rid][c0 // bs].block_id][c0 % bs] = (token_ids[c0], c0)
            else:
                self._write_kv(req_to_blocks[rid], c0, c1, token_ids)
                for tables in other_tables:
                    self._write_kv(tables[rid], c0, c1, token_ids)
            if c0 < num_tokens - 1 or c0 < req.num_prompt_tokens:
                prefill_req_ids.add(rid)
                if events is not None:
                    events.append(ChunkScheduled(rid, n, c0))
            if events is not None:
                events.append(fast_event(KVWritten, (seq_id, c0, n)))
            if c1 < num_tokens:
                sampled_token_ids.append([])     # a prefill chunk short of the end
                continue
            token_id, logprob = sample(seq_id, num_tokens, num_tokens - req.num_prompt_tokens,
                                       req.output_len)
            token_ids.append(token_id)
            sampled_token_ids.append([token_id])
            sampled[rid] = (num_tokens, token_id, logprob)
        model_runner_output = ModelRunnerOutput(
            req_ids, {rid: i for i, rid in enumerate(req_ids)}, sampled_token_ids)
        if self.step_time is not None:
            self.now_s += self.step_time(scheduler_output)
        if worker is not None:
            # After this batch's forward pass: what finished, reported with its output.
            model_runner_output.kv_connector_output = self._kv_connector_output(
                worker, scheduler_output)
        return InFlightBatch(step, scheduler_output, model_runner_output, sampled,
                             prefill_req_ids)

    def _kv_connector_output(self, worker, scheduler_output: SchedulerOutput
                             ) -> KVConnectorOutput:
        """The worker-side connector's report after a forward pass (vLLM's model runner
        builds it in KVConnectorModelRunnerMixin)."""
        finished_sending, finished_recving = worker.get_finished(
            scheduler_output.finished_req_ids)
        output = KVConnectorOutput(finished_sending or set(), finished_recving or set(),
                                   worker.get_block_ids_with_load_errors(),
                                   worker.build_connector_worker_meta())
        worker.clear_connector_metadata()
        return output

    def _execute_model(self, scheduler_output: SchedulerOutput, step: int,
                       tokens_out: list | None) -> tuple[ModelRunnerOutput, set]:
        """The stand-in forward pass: write the KV payload of every scheduled token, then
        sample for the requests whose computed count reached their token count.
        `tokens_out` (when given) receives (request_id, seq_id, position, token_id) for
        every sampled token."""
        requests = self.requests
        req_to_blocks = self.kv_cache_manager.req_to_blocks
        # A hybrid model's other groups: each token's KV goes to its block in every group
        # (their layers' share of the page).
        other_tables = self.group_tables[1:]
        cache = self.gpu_cache
        bs = self.cache_config.block_size
        events = self._events
        sample = self.model.sample_token
        spec_tokens = scheduler_output.scheduled_spec_decode_tokens
        num_scheduled_tokens = scheduler_output.num_scheduled_tokens
        for new_req in scheduler_output.scheduled_new_reqs:
            requests[new_req.req_id].first_scheduled_step = step
        req_ids = list(num_scheduled_tokens)
        req_id_to_index = {rid: i for i, rid in enumerate(req_ids)}
        sampled_token_ids: list[list[int]] = []
        append_sampled = sampled_token_ids.append
        # With drafts, the tokens kept (and their log probabilities) are known only after
        # update_from_output; without, every sampled token is kept and listed here.
        spec_logprobs: dict[str, list[float]] = {}
        self._spec_logprobs = spec_logprobs
        prefill_req_ids: set[str] = set()
        # The scheduler's scheduled requests, in the order of num_scheduled_tokens (vLLM's
        # worker keeps its own copy of each request's state instead).
        assert scheduler_output is self.scheduler.last_scheduler_output
        for req, n in zip(self.scheduler.scheduled_reqs, num_scheduled_tokens.values()):
            rid = req.request_id
            c1 = req.num_computed_tokens          # advanced by schedule()
            num_tokens = req.num_tokens
            if n == 1 and c1 == num_tokens and c1 > req.num_prompt_tokens:
                # A decode (the hot path): the newest token's KV, then one sample. The
                # general path below does the same, with more questions.
                c0 = c1 - 1
                cache[req_to_blocks[rid][c0 // bs].block_id][c0 % bs] = (
                    req.all_token_ids[c0], c0)
                for tables in other_tables:
                    cache[tables[rid][c0 // bs].block_id][c0 % bs] = (
                        req.all_token_ids[c0], c0)
                seq_id = req.seq_id
                if events is not None:
                    events.append(fast_event(KVWritten, (seq_id, c0, 1)))
                token_id, logprob = sample(seq_id, num_tokens,
                                           num_tokens - req.num_prompt_tokens, req.output_len)
                append_sampled([token_id])
                if tokens_out is not None:
                    tokens_out.append((rid, seq_id, num_tokens, token_id))
                    req.cumulative_logprob += logprob
                    if events is not None:
                        events.append(fast_event(TokenSampled, (seq_id, num_tokens, token_id,
                                                                logprob)))
                else:
                    spec_logprobs[rid] = [logprob]
                continue
            c0 = c1 - n
            for table in ([req_to_blocks[rid]] + [tables[rid] for tables in other_tables]
                          if other_tables else (req_to_blocks[rid],)):
                if n == 1:
                    cache[table[c0 // bs].block_id][c0 % bs] = (req.all_token_ids[c0], c0)
                else:
                    self._write_kv(table, c0, c1 if c1 < num_tokens else num_tokens,
                                   req.all_token_ids)
                    if c1 > num_tokens:
                        # Draft tokens are computed too (their KV is written), after the
                        # last real token.
                        self._write_kv(table, num_tokens, c1, spec_tokens[rid], num_tokens)
            if c0 < num_tokens - 1 or c0 < req.num_prompt_tokens:
                prefill_req_ids.add(rid)
                if events is not None:
                    events.append(ChunkScheduled(rid, n, c0))
            if events is not None:
                events.append(fast_event(KVWritten, (req.seq_id, c0, n)))
            if c1 < num_tokens:
                # A prefill chunk short of the end: nothing to sample.
                append_sampled([])
                continue
            num_out = num_tokens - req.num_prompt_tokens
            if c1 == num_tokens:
                token_id, logprob = sample(req.seq_id, num_tokens, num_out, req.output_len)
                append_sampled([token_id])
                if tokens_out is not None:
                    tokens_out.append((rid, req.seq_id, num_tokens, token_id))
                    req.cumulative_logprob += logprob
                    if events is not None:
                        events.append(fast_event(TokenSampled, (req.seq_id, num_tokens,
                                                                token_id, logprob)))
                else:
                    spec_logprobs[rid] = [logprob]
                continue
            # Speculative decoding: verify the drafts against the model's own tokens; keep
            # the agreeing run and the model's token at the first disagreement (or after
            # the last draft).
            drafts = spec_tokens[rid]
            generated: list[int] = []
            logprobs: list[float] = []
            for i in range(len(drafts) + 1):
                token_id, logprob = sample(req.seq_id, num_tokens + i, num_out + i,
                                           req.output_len)
                generated.append(token_id)
                logprobs.append(logprob)
                if i == len(drafts) or drafts[i] != token_id:
                    break
            append_sampled(generated)
            spec_logprobs[rid] = logprobs
        return ModelRunnerOutput(req_ids, req_id_to_index, sampled_token_ids), prefill_req_ids

    def _write_kv(self, table: list, first: int, end: int, token_ids: list[int],
                  offset: int = 0) -> None:
        """The KV payloads of positions [first, end): token_ids[pos - offset] at pos, in
        the slot pos % block_size of block table[pos // block_size]."""
        cache = self.gpu_cache
        bs = self.cache_config.block_size
        pos = first
        while pos < end:
            slot = pos % bs
            take = min(bs - slot, end - pos)
            cache[table[pos // bs].block_id][slot:slot + take] = zip(
                token_ids[pos - offset:pos - offset + take], range(pos, pos + take))
            pos += take

    # -- reading the state -------------------------------------------------------------
    def read_back(self, request_id: str, num_tokens: int | None = None,
                  kv_cache_group_id: int = 0) -> list[Slot]:
        """The payloads a request's block table (in one KV cache group) reaches, for its
        first `num_tokens` positions (default: its computed tokens); None where the null
        block stands (a position that left a sliding window)."""
        req = self.requests[request_id]
        table = self.group_tables[kv_cache_group_id].get(request_id, [])
        bs = self.cache_config.block_size
        if num_tokens is None:
            num_tokens = req.num_computed_tokens
        return [None if table[p // bs].is_null else self.gpu_cache[table[p // bs].block_id][p % bs]
                for p in range(num_tokens)]

    def take_events(self) -> list:
        """The events recorded since the last step returned, and forget them."""
        if self._events is None:
            return []
        taken = list(self._events)
        self._events.clear()
        return taken

    def snapshot(self, with_slots: bool = True) -> dict:
        """A JSON-ready copy of the state (see sim/v1/snapshot.py; with the offloading
        connector, "cpu_tier" too: sim/v1/kv_offload/snapshot.py)."""
        snap = engine_snapshot(self, with_slots)
        if self.scheduler.connector is not None:
            cpu_tier = offload_snapshot(self, with_slots)
            if cpu_tier is not None:
                snap["cpu_tier"] = cpu_tier
        return snap

    def run(self, max_steps: int = 100_000) -> list[StepOutput]:
        """Step until every request has finished (or max_steps)."""
        outputs = []
        while self.has_unfinished_requests() and len(outputs) < max_steps:
            outputs.append(self.step())
        return outputs
