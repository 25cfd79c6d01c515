"""V1's scheduler (vLLM v0.25.1 `vllm/v1/core/sched/scheduler.py`, with
`sched/output.py`'s `SchedulerOutput`, `NewRequestData`, `CachedRequestData`,
`sched/request_queue.py`'s queues and `sched/utils.py`'s `check_stop`).

One `schedule()` call is one engine step's plan, in one loop over a shared token budget:

1. Running requests, in order: each gets `num_tokens_with_spec - num_computed_tokens`
   tokens, cut to `long_prefill_token_threshold`, the remaining budget and
   `max_model_len - num_computed_tokens - 1`. When `allocate_slots` cannot fit them, the
   scheduler preempts a victim (FCFS: the last of `running`, possibly the request itself;
   PRIORITY: the largest (priority, arrival)) by recompute (its blocks are freed, its
   computed count reset to 0, it goes to the front of `waiting`) and retries.
2. Waiting requests, only if nothing was preempted in this step: prefix-cache lookup, the
   token budget (chunked prefill: a prompt takes what is left), `max_num_seqs`, and
   `allocate_slots` with the full-sequence gate; the first that does not fit stops
   admission (no skipping ahead).
3. `_update_after_schedule`: every scheduled request's `num_computed_tokens` advances now.

`update_from_output` appends the sampled tokens (rolling back rejected draft tokens),
checks stop conditions and frees finished requests at once (blocks reversed), in
scheduling order.

With a KV connector (`kv_transfer_config` or `connector`; sim/v1/kv_connector/) the waiting
loop also serves `skipped_waiting` (requests waiting for remote KVs, served first under FCFS),
admits requests whose external tokens load asynchronously, and `update_from_output` reads
the worker side's `KVConnectorOutput`; those branches live in sim/v1/scheduler_kv.py and
cost nothing without a connector.

This is the synchronous `Scheduler` (the one vLLM's scheduler tests use), FCFS or PRIORITY,
one KV cache group of full attention, or a hybrid model's groups when given a
`kv_cache_config` (kv_cache_manager.py). As in vLLM, its running loop already counts a
request's `num_output_placeholders` (always 0 here); `AsyncScheduler`
(`sim/v1/async_scheduler.py`) is the subclass that sets them. Left out: pipeline
parallelism, LoRA, multimodal/encoder inputs, structured output, streaming sessions,
pausing, Mamba alignment.
Additions: `events` receives Admitted, Preempted, RequestFinished and Aborted records (the
KV cache manager and block pool add theirs; the engine adds KVWritten and TokenSampled).
"""
from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from sim.events import (
    Aborted,
    Admitted,
    BlocksHeld,
    Preempted,
    RequestFinished,
    WaitingForRemoteKVs,
    fast_event,
)
from sim.v1.config import CacheConfig, KVTransferConfig, SchedulerConfig
from sim.v1.kv_cache_interface import KVCacheConfig
from sim.v1.kv_cache_manager import KVCacheManager
from sim.v1.kv_connector import KVConnectorBase_V1
from sim.v1.request import Request, RequestStatus
from sim.v1.scheduler_kv import KVConnectorSchedulerMixin

_WAITING, _RUNNING, _PREEMPTED = (RequestStatus.WAITING, RequestStatus.RUNNING,
                                  RequestStatus.PREEMPTED)
_STOPPED, _LENGTH_CAPPED = RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH_CAPPED
_WAITING_FOR_REMOTE_KVS = RequestStatus.WAITING_FOR_REMOTE_KVS


# -- sched/request_queue.py ---------------------------------------------------------------
class FCFSRequestQueue(deque):
    """Waiting requests, first come first served; preempted ones are put back in front."""

    def add_request(self, request: Request) -> None:
        self.append(request)

    def pop_request(self) -> Request:
        return self.popleft()

    def peek_request(self) -> Request:
        if not self:
            raise IndexError("peek from an empty queue")
        return self[0]

    def prepend_request(self, request: Request) -> None:
        self.appendleft(request)

    def prepend_requests(self, requests: Iterable[Request]) -> None:
        """As vLLM's: the requests end up in front in the REVERSE of their order in
        `requests` (the scheduler builds that queue by prepending, so the two reversals
        keep the order in which requests were skipped)."""
        self.extendleft(requests)

    def remove_request(self, request: Request) -> None:
        self.remove(request)

    def remove_requests(self, requests: Iterable[Request]) -> None:
        requests_to_remove = set(requests)
        filtered = [req for req in self if req not in requests_to_remove]
        self.clear()
        self.extend(filtered)


class PriorityRequestQueue:
    """Waiting requests as a heap by (priority, arrival, id); "prepend" is a push."""

    def __init__(self) -> None:
        self._heap: list[Request] = []

    def add_request(self, request: Request) -> None:
        heapq.heappush(self._heap, request)

    def pop_request(self) -> Request:
        if not self._heap:
            raise IndexError("pop from empty heap")
        return heapq.heappop(self._heap)

    def peek_request(self) -> Request:
        if not self._heap:
            raise IndexError("peek from empty heap")
        return self._heap[0]

    def prepend_request(self, request: Request) -> None:
        self.add_request(request)

    def prepend_requests(self, requests: Iterable[Request]) -> None:
        for request in requests:
            self.add_request(request)

    def remove_request(self, request: Request) -> None:
        self._heap.remove(request)
        heapq.heapify(self._heap)

    def remove_requests(self, requests: Iterable[Request]) -> None:
        requests_to_remove = set(requests)
        self._heap = [r for r in self._heap if r not in requests_to_remove]
        heapq.heapify(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self):
        heap_copy = self._heap[:]
        while heap_copy:
            yield heapq.heappop(heap_copy)


def create_request_queue(policy: str):
    if policy == "priority":
        return PriorityRequestQueue()
    if policy == "fcfs":
        return FCFSRequestQueue()
    raise ValueError(f"Unknown scheduling policy: {policy}")


# -- sched/output.py ----------------------------------------------------------------------
@dataclass(slots=True)
class NewRequestData:
    """A request scheduled for the first time: the worker caches all of this."""
    req_id: str
    prompt_token_ids: list[int]
    sampling_params: object
    block_ids: tuple[list[int], ...]      # its full block table, per KV cache group
    num_computed_tokens: int              # its prefix hit (before this step's tokens)

    @classmethod
    def from_request(cls, request: Request, block_ids: tuple[list[int], ...]) -> NewRequestData:
        return cls(request.request_id, request.prompt_token_ids, request.sampling_params,
                   block_ids, request.num_computed_tokens)


@dataclass(slots=True)
class CachedRequestData:
    """Requests the worker already knows: running ones, then resumed ones (parallel lists).
    For a resumed request `new_block_ids` is its whole new table (it replaces the old)."""
    req_ids: list[str] = field(default_factory=list)
    resumed_req_ids: set[str] = field(default_factory=set)
    new_token_ids: list[list[int]] = field(default_factory=list)   # pipeline parallel only
    all_token_ids: dict[str, list[int]] = field(default_factory=dict)
    new_block_ids: list[tuple[list[int], ...] | None] = field(default_factory=list)
    num_computed_tokens: list[int] = field(default_factory=list)
    num_output_tokens: list[int] = field(default_factory=list)

    @property
    def num_reqs(self) -> int:
        return len(self.req_ids)

    @classmethod
    def make_empty(cls) -> CachedRequestData:
        return cls()


@dataclass(slots=True)
class SchedulerOutput:
    scheduled_new_reqs: list[NewRequestData]
    scheduled_cached_reqs: CachedRequestData
    # request id -> tokens this step, in scheduling order (running, then admitted)
    num_scheduled_tokens: dict[str, int]
    total_num_scheduled_tokens: int
    scheduled_spec_decode_tokens: dict[str, list[int]]
    scheduled_encoder_inputs: dict[str, list[int]]
    num_common_prefix_blocks: list[int]
    finished_req_ids: set[str]                # finished since the previous schedule()
    free_encoder_mm_hashes: list[str]
    preempted_req_ids: set[str] = field(default_factory=set)
    # The KV connector's work for this step (None without a connector).
    kv_connector_metadata: object = None

    @classmethod
    def make_empty(cls) -> SchedulerOutput:
        return cls(scheduled_new_reqs=[], scheduled_cached_reqs=CachedRequestData.make_empty(),
                   num_scheduled_tokens={}, total_num_scheduled_tokens=0,
                   scheduled_spec_decode_tokens={}, scheduled_encoder_inputs={},
                   num_common_prefix_blocks=[], finished_req_ids=set(),
                   free_encoder_mm_hashes=[])


# -- vllm/v1/outputs.py and vllm/v1/engine/__init__.py (what update_from_output reads and
# returns) ----------------------------------------------------------------------------
@dataclass(slots=True)
class KVConnectorOutput:
    """The KV connector's worker side, after a forward pass: requests whose asynchronous
    sends and receives finished, and blocks whose load failed."""
    finished_sending: set[str] | None = None
    finished_recving: set[str] | None = None
    invalid_block_ids: set[int] = field(default_factory=set)
    # What the connector's worker side tells its scheduler side
    # (`build_connector_worker_meta`: e.g. the offloading connector's completed jobs).
    kv_connector_worker_meta: object = None

    def is_empty(self) -> bool:
        return (not self.finished_sending and not self.finished_recving
                and not self.invalid_block_ids and not self.kv_connector_worker_meta)


@dataclass(slots=True)
class ModelRunnerOutput:
    req_ids: list[str]
    req_id_to_index: dict[str, int]
    # One list per request: the sampled token (plus accepted drafts), or [] for a request
    # whose prefill chunk did not reach the end of its tokens.
    sampled_token_ids: list[list[int]]
    kv_connector_output: KVConnectorOutput | None = None


class EngineCoreOutput(NamedTuple):
    """One request's result of a step (vLLM's is a msgspec Struct; a NamedTuple here, made
    for every request on every step)."""
    request_id: str
    new_token_ids: list[int]
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    num_cached_tokens: int = 0
    # P/D: what the connector tells the client (the prefill side's block ids, say).
    kv_transfer_params: dict | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


# -- sched/utils.py -------------------------------------------------------------------------
def check_stop(request: Request, max_model_len: int) -> bool:
    """Sets a finished status and returns True when the request must stop, in vLLM's
    order: min_tokens, EOS, stop tokens, model length and max_tokens."""
    num_output_tokens = request.num_tokens - request.num_prompt_tokens
    if num_output_tokens < request.min_tokens:
        return False
    last_token_id = request.output_token_ids[-1]
    if not request.ignore_eos and last_token_id == request.eos_token_id:
        request.status = _STOPPED
        return True
    if last_token_id in request.stop_token_ids:
        request.status = _STOPPED
        request.stop_reason = last_token_id
        return True
    if request.num_tokens >= max_model_len or num_output_tokens >= request.max_tokens:
        request.status = _LENGTH_CAPPED
        return True
    return False


def remove_all(lst: list, items_to_remove: set) -> list:
    if len(items_to_remove) == 1:
        lst.remove(next(iter(items_to_remove)))
        return lst
    return [item for item in lst if item not in items_to_remove]


# -- the scheduler --------------------------------------------------------------------------
class Scheduler(KVConnectorSchedulerMixin):
    # update_from_output appends a single sampled token itself, without calling
    # _update_request_with_output (the per-token hot path); a subclass that overrides
    # that method (AsyncScheduler) sets this False so that its override always runs.
    _inline_single_token_update = True
    _inline_async_token_update = False
    # Output placeholders schedule() gives each scheduled request that samples: the async
    # scheduler's (AsyncScheduler sets it; vLLM adds them in its _update_after_schedule).
    _schedule_placeholder_step = 0

    def __init__(self, scheduler_config: SchedulerConfig, cache_config: CacheConfig,
                 events: list | None = None, log_stats: bool = True,
                 kv_cache_config: KVCacheConfig | None = None,
                 kv_transfer_config: KVTransferConfig | None = None,
                 connector: KVConnectorBase_V1 | None = None) -> None:
        """`kv_cache_config`: a hybrid model's KV cache groups (default: one group of full
        attention). `kv_transfer_config` builds the scheduler side of its connector (vLLM's
        `KVConnectorFactory.create_connector`); `connector` passes one built already (a
        test's, or one given a clock)."""
        self.scheduler_config = scheduler_config
        self.cache_config = cache_config
        self.events = events
        self.log_stats = log_stats
        self.max_num_running_reqs = scheduler_config.max_num_seqs
        self.max_num_scheduled_tokens = scheduler_config.max_num_scheduled_tokens
        self.max_model_len = scheduler_config.max_model_len
        self.block_size = cache_config.block_size
        self.policy = scheduler_config.policy
        self.scheduler_reserve_full_isl = scheduler_config.scheduler_reserve_full_isl
        # Speculative decoding: drafts per step; lookahead slots (EAGLE-style drafters).
        self.num_spec_tokens = scheduler_config.num_speculative_tokens
        self.num_lookahead_tokens = scheduler_config.num_lookahead_tokens
        self.use_eagle = self.num_lookahead_tokens > 0
        self.requests: dict[str, Request] = {}
        self.waiting = create_request_queue(self.policy)
        # Requests skipped in the waiting loop: blocked (WAITING_FOR_REMOTE_KVS) or
        # promoted from there but not scheduled yet; served before `waiting` (FCFS).
        self.skipped_waiting = create_request_queue(self.policy)
        self.running: list[Request] = []
        # Finished since the last schedule() (handed to the workers in the next output).
        self.finished_req_ids: set[str] = set()
        self.preempted_req_ids: set[str] = set()
        self.prev_step_scheduled_req_ids: set[str] = set()
        # The requests of the last schedule(), in the order of its num_scheduled_tokens,
        # and of the one before (an addition: the async loop processes that one's output).
        self.scheduled_reqs: list[Request] = []
        self.last_scheduler_output: SchedulerOutput | None = None
        self.prev_scheduled_reqs: list[Request] = []
        self.prev_scheduler_output: SchedulerOutput | None = None
        self.kv_cache_manager = KVCacheManager(
            cache_config.block_size, cache_config.num_gpu_blocks,
            scheduler_config.max_model_len, enable_caching=cache_config.enable_prefix_caching,
            use_eagle=self.use_eagle, watermark=scheduler_config.watermark,
            log_stats=log_stats, events=events, kv_cache_config=kv_cache_config,
            max_num_batched_tokens=scheduler_config.max_num_batched_tokens)
        self.num_kv_cache_groups = self.kv_cache_manager.num_kv_cache_groups
        self._init_kv_connector(kv_transfer_config, connector)

    # -- requests ----------------------------------------------------------------------
    def add_request(self, request: Request) -> None:
        self.waiting.add_request(request)
        self.requests[request.request_id] = request
        if self.connector is not None:
            self.connector.on_new_request(request)

    def finish_requests(self, request_ids: str | Iterable[str],
                        finished_status: RequestStatus) -> list[Request]:
        """Abort (or otherwise finish) requests from outside: out of their queue, blocks
        freed. Returns the requests finished."""
        assert RequestStatus.is_finished(finished_status)
        if isinstance(request_ids, str):
            request_ids = (request_ids,)
        else:
            request_ids = list(dict.fromkeys(request_ids))
        running_requests_to_remove = set()
        waiting_requests_to_remove = []
        valid_requests = []
        for req_id in request_ids:
            request = self.requests.get(req_id)
            if request is None or request.is_finished():
                continue
            valid_requests.append(request)
            if request.status == _RUNNING:
                running_requests_to_remove.add(request)
            else:
                waiting_requests_to_remove.append(request)
        if running_requests_to_remove:
            self.running = remove_all(self.running, running_requests_to_remove)
        if waiting_requests_to_remove:
            self.waiting.remove_requests(waiting_requests_to_remove)
            if self.skipped_waiting:
                self.skipped_waiting.remove_requests(waiting_requests_to_remove)
        for request in valid_requests:
            delay_free_blocks = False
            if request in running_requests_to_remove:
                queue = "running"
            elif request.status == _WAITING_FOR_REMOTE_KVS:
                queue = "waiting_for_remote_kvs"
                # Its load is still in flight: the blocks are freed when it lands.
                delay_free_blocks = request.request_id not in self.finished_recving_kv_req_ids
                self.finished_recving_kv_req_ids.discard(request.request_id)
                self.failed_recving_kv_req_ids.discard(request.request_id)
            else:
                queue = "waiting"
            request.status = finished_status
            if self.events is not None and finished_status == RequestStatus.FINISHED_ABORTED:
                self.events.append(Aborted(request.request_id, queue))
            self._free_request(request, delay_free_blocks=delay_free_blocks)
        return valid_requests

    def get_num_unfinished_requests(self) -> int:
        return len(self.waiting) + len(self.skipped_waiting) + len(self.running)

    def has_unfinished_requests(self) -> bool:
        return self.get_num_unfinished_requests() > 0

    def has_finished_requests(self) -> bool:
        if self.finished_req_ids:
            return True
        if self.connector is None:
            return False
        # Finished requests whose blocks the connector still holds stay in `requests`.
        num_in_queues = len(self.waiting) + len(self.skipped_waiting) + len(self.running)
        return len(self.requests) > num_in_queues

    def has_requests(self) -> bool:
        """Whether the engine must keep stepping: unfinished requests, or finished ones
        the workers have not been told of yet (the next schedule() hands them
        `finished_req_ids`) or whose blocks a KV connector still holds."""
        return (self.has_unfinished_requests() or self.has_finished_requests()
                or (self.connector is not None and self.connector.has_pending_push_work()))

    def reset_prefix_cache(self, reset_running_requests: bool = False,
                           reset_connector: bool = False) -> bool:
        """Empty the prefix cache; it fails (False) while any request holds blocks, unless
        `reset_running_requests` preempts every running request first (last first, so
        they come back in order). Tokens in flight for them (async scheduling) are then
        stale: `async_tokens_to_discard` drops them when their output comes back.
        `reset_connector` also empties the connector's cache (the CPU tier)."""
        if reset_running_requests:
            while self.running:
                request = self.running.pop()
                # (No Preempted event: that record names the request that needed a block.)
                self._preempt_request(request)
                request.async_tokens_to_discard = request.num_output_placeholders
                request.num_output_placeholders = 0
            # Preempted and resumed in one step: the worker must get all their tokens.
            self.prev_step_scheduled_req_ids.clear()
        reset_successful = self.kv_cache_manager.reset_prefix_cache()
        if reset_running_requests and not reset_successful:
            raise RuntimeError("Failed to reset KV cache even when all the running requests "
                               "are preempted and moved to the waiting queue.")
        if reset_connector:
            reset_successful = self.reset_connector_cache() and reset_successful
        return reset_successful

    def reset_connector_cache(self) -> bool:
        if self.connector is None:
            return True
        return self.connector.reset_cache() is not False

    # -- one step's plan -------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        """One step's plan. For speed, the per-request work of vLLM's three passes (the
        scheduling loops, `_make_cached_request_data`, `_update_after_schedule`) is done as
        each request is scheduled, with the same result: the output records each
        request's values from before this step, and nothing later in schedule() reads a
        scheduled request's `num_computed_tokens` (a request preempted after it was
        scheduled is reset to 0 anyway)."""
        events = self.events
        kv_cache_manager = self.kv_cache_manager
        allocate_slots = kv_cache_manager.allocate_slots
        req_to_blocks = kv_cache_manager.req_to_blocks
        num_cached_block = kv_cache_manager.num_cached_block
        caching = kv_cache_manager.enable_caching
        empty_blocks = kv_cache_manager.empty_kv_cache_blocks
        # With windows (hybrid models), every allocate_slots may free blocks that left a
        # window, so the shortcut below is for full attention only.
        full_attention_only = kv_cache_manager.full_attention_only
        block_size = self.block_size
        scheduled_new_reqs: list[Request] = []
        scheduled_resumed_reqs: list[Request] = []
        scheduled_running_reqs: list[Request] = []
        preempted_reqs: list[Request] = []
        num_scheduled_tokens: dict[str, int] = {}
        token_budget = self.max_num_scheduled_tokens
        scheduled_spec_decode_tokens: dict[str, list[int]] = {}
        threshold = self.scheduler_config.long_prefill_token_threshold
        max_model_len = self.max_model_len
        num_lookahead_tokens = self.num_lookahead_tokens
        prefill_scheduled = False   # a running request continues a prefill this step
        # CachedRequestData's lists (running requests, then resumed ones).
        prev_scheduled = self.prev_step_scheduled_req_ids
        cached_new_block_ids: list[tuple[list[int], ...] | None] = []
        cached_num_computed: list[int] = []
        cached_all_token_ids: dict[str, list[int]] = {}
        cached_num_output: list[int] = []
        # The output placeholders of vLLM's AsyncScheduler._update_after_schedule, added
        # here as each request is scheduled (0: the synchronous scheduler adds none).
        placeholder_step = self._schedule_placeholder_step

        # First, the RUNNING requests.
        running = self.running
        num_running = len(running)
        req_index = 0
        while req_index < num_running and token_budget > 0:
            request = running[req_index]
            num_computed = request.num_computed_tokens
            placeholders = request.num_output_placeholders
            if placeholders and (num_computed + 2 - placeholders
                                 >= request.num_prompt_tokens + request.max_tokens):
                # Async scheduling: the token in flight is its last (max_tokens), so
                # another step would be wasted. (The - placeholders + 2 leaves room for
                # draft placeholders that might all be rejected.)
                req_index += 1
                continue
            request_id = request.request_id
            num_tokens = request.num_tokens
            # With the tokens in flight (async scheduling; 0 here otherwise).
            num_tokens_to_compute = num_tokens + placeholders
            # num_tokens_with_spec + num_output_placeholders - num_computed_tokens
            spec_token_ids = request.spec_token_ids
            if spec_token_ids:
                num_new_tokens = num_tokens_to_compute + len(spec_token_ids) - num_computed
            else:
                num_new_tokens = num_tokens_to_compute - num_computed
            if 0 < threshold < num_new_tokens:
                num_new_tokens = threshold
            if num_new_tokens > token_budget:
                num_new_tokens = token_budget
            # Make sure the input position does not exceed the max model len (1 = tokens
            # sampled per step).
            if num_new_tokens > max_model_len - num_computed - 1:
                num_new_tokens = max_model_len - num_computed - 1
            if num_new_tokens <= 0:
                # Nothing to schedule (e.g. at max_model_len): it keeps its place.
                req_index += 1
                continue

            # allocate_slots' answer when the request needs no new block and fills no new
            # block (most decode steps): the empty KVCacheBlocks, nothing changed. Checked
            # here to save the call; any other case goes through allocate_slots.
            need = num_computed + num_new_tokens + num_lookahead_tokens
            if need > max_model_len:
                need = max_model_len
            to_cache = num_computed + num_new_tokens
            if to_cache > num_tokens:
                to_cache = num_tokens
            if (full_attention_only and need <= len(req_to_blocks[request_id]) * block_size
                    and (not caching
                         or to_cache // block_size <= num_cached_block.get(request_id, 0))):
                new_blocks = empty_blocks
            else:
                while True:
                    new_blocks = allocate_slots(request, num_new_tokens,
                                                num_lookahead_tokens=num_lookahead_tokens)
                    if new_blocks is not None:
                        break
                    # Not enough blocks: preempt the lowest-priority request and retry.
                    if self.policy == "priority":
                        preempted_req = max(running,
                                            key=lambda r: (r.priority, r.arrival_time))
                        running.remove(preempted_req)
                        if preempted_req in scheduled_running_reqs:
                            # Already scheduled in this step: take it all back.
                            preempted_req_id = preempted_req.request_id
                            k = scheduled_running_reqs.index(preempted_req)
                            del scheduled_running_reqs[k]
                            del cached_new_block_ids[k], cached_num_computed[k]
                            del cached_num_output[k]
                            if placeholder_step and not preempted_req.is_prefill_chunk:
                                preempted_req.num_output_placeholders -= placeholder_step
                            cached_all_token_ids.pop(preempted_req_id, None)
                            token_budget += num_scheduled_tokens.pop(preempted_req_id)
                            scheduled_spec_decode_tokens.pop(preempted_req_id, None)
                            req_index -= 1
                    else:
                        preempted_req = running.pop()
                    if events is not None:
                        events.append(Preempted(preempted_req.request_id, "recompute",
                                                request_id, preempted_req is request))
                    self._preempt_request(preempted_req)
                    preempted_reqs.append(preempted_req)
                    num_running = len(running)
                    if preempted_req is request:
                        break   # no request left to preempt: cannot schedule this one

                if new_blocks is None:
                    break   # it preempted itself

            scheduled_running_reqs.append(request)
            if request.is_prefill_chunk:
                prefill_scheduled = True
            num_scheduled_tokens[request_id] = num_new_tokens
            token_budget -= num_new_tokens
            req_index += 1
            # _make_cached_request_data, for this request: its values before this step
            # (its id is listed after the loop).
            # Outputs so far, the ones in flight included (async scheduling).
            cached_num_output.append(num_tokens - request.num_prompt_tokens + placeholders)
            # new_blocks.get_block_ids(allow_none=True), written out:
            cached_new_block_ids.append(None if new_blocks is empty_blocks else
                                        ([b.block_id for b in new_blocks.blocks[0]],)
                                        if full_attention_only else
                                        new_blocks.get_block_ids())
            cached_num_computed.append(num_computed)
            if request_id not in prev_scheduled:
                # The worker did not see it in the previous step: all its tokens.
                cached_all_token_ids[request_id] = list(request.all_token_ids)
            # _update_after_schedule, for this request.
            request.num_computed_tokens = num_computed + num_new_tokens
            if num_computed + num_new_tokens < num_tokens_to_compute:
                request.is_prefill_chunk = True   # a chunk short of the end samples nothing
            else:
                request.is_prefill_chunk = False
                if placeholder_step:
                    # The step samples for it: a placeholder until its output is back.
                    request.num_output_placeholders = placeholders + placeholder_step

            # Speculative decoding: the drafts that fit in the scheduled tokens.
            if spec_token_ids:
                num_scheduled_spec_tokens = (num_new_tokens + num_computed
                                             - num_tokens_to_compute)
                if num_scheduled_spec_tokens > 0:
                    if len(spec_token_ids) > num_scheduled_spec_tokens:
                        spec_token_ids = spec_token_ids[:num_scheduled_spec_tokens]
                    scheduled_spec_decode_tokens[request_id] = spec_token_ids
                # New drafts are set by update_draft_token_ids before the next step.
                request.spec_token_ids = []

        cached_req_ids = [r.request_id for r in scheduled_running_reqs]
        # The scheduled requests in the order of num_scheduled_tokens (an addition: saves
        # looking each one up again after scheduling).
        scheduled_reqs = scheduled_running_reqs
        new_reqs_data: list[NewRequestData] = []
        # Next, the WAITING requests, only if nothing was preempted in this step.
        if not preempted_reqs:
            waiting = self.waiting
            skipped_waiting = self.skipped_waiting
            connector = self.connector
            step_skipped_waiting = None   # created when a request is skipped
            chunked = self.scheduler_config.enable_chunked_prefill
            num_spec_tokens = self.num_spec_tokens
            while (waiting or skipped_waiting) and token_budget > 0:
                if len(running) >= self.max_num_running_reqs:
                    break
                # _select_waiting_queue_for_scheduling
                if self.policy == "fcfs":
                    request_queue = skipped_waiting or waiting
                elif waiting and skipped_waiting:
                    request_queue = (waiting if waiting.peek_request()
                                     < skipped_waiting.peek_request() else skipped_waiting)
                else:
                    request_queue = waiting or skipped_waiting
                request = request_queue.peek_request()
                request_id = request.request_id

                # A request still waiting for remote KVs stays skipped; one whose load
                # finished is promoted (back to WAITING, its blocks cached).
                if (request.status is _WAITING_FOR_REMOTE_KVS
                        and not self._try_promote_blocked_waiting_request(request)):
                    request_queue.pop_request()
                    if step_skipped_waiting is None:
                        step_skipped_waiting = create_request_queue(self.policy)
                    step_skipped_waiting.prepend_request(request)
                    continue

                num_external_computed_tokens = 0
                load_kv_async = False
                # Already-cached tokens (new and preempted requests start from 0).
                if request.num_computed_tokens == 0:
                    new_computed_blocks, num_new_local_computed_tokens = (
                        kv_cache_manager.get_computed_blocks(request))
                    if connector is not None:
                        # Tokens the connector can load beyond the local hit.
                        ext_tokens, load_kv_async = connector.get_num_new_matched_tokens(
                            request, num_new_local_computed_tokens)
                        if ext_tokens is None:
                            # The connector cannot tell yet: ask again next step.
                            request_queue.pop_request()
                            if step_skipped_waiting is None:
                                step_skipped_waiting = create_request_queue(self.policy)
                            step_skipped_waiting.prepend_request(request)
                            continue
                        num_external_computed_tokens = ext_tokens
                    num_computed_tokens = (num_new_local_computed_tokens
                                           + num_external_computed_tokens)
                    assert num_computed_tokens <= request.num_tokens
                else:   # only with a KV connector: its remote KVs have arrived
                    new_computed_blocks = empty_blocks
                    num_new_local_computed_tokens = 0
                    num_computed_tokens = request.num_computed_tokens

                pad_spec_decode = False
                if load_kv_async:
                    # Loading remote KV: no new work to allocate for.
                    assert num_external_computed_tokens > 0
                    num_new_tokens = 0
                else:
                    # `num_tokens`, not the prompt: a resumed request recomputes its
                    # outputs.
                    num_new_tokens = request.num_tokens - num_computed_tokens
                    # Pad a one-token request to the uniform spec-decode size (1 + K) when
                    # it joins running decodes, so the step keeps one cudagraph shape.
                    if (num_spec_tokens > 0 and num_new_tokens == 1 and scheduled_running_reqs
                            and not prefill_scheduled):
                        padded_num_tokens = 1 + num_spec_tokens
                        if num_computed_tokens + padded_num_tokens + 1 <= max_model_len:
                            if padded_num_tokens > token_budget:
                                break   # rather not schedule it than schedule it unpadded
                            num_new_tokens = padded_num_tokens
                            pad_spec_decode = True
                    if 0 < threshold < num_new_tokens:
                        num_new_tokens = threshold
                    if not chunked and num_new_tokens > token_budget:
                        break   # without chunked prefill the whole prompt must fit the budget
                    num_new_tokens = min(num_new_tokens, token_budget)
                    assert num_new_tokens > 0

                if connector is None:
                    new_blocks = allocate_slots(
                        request, num_new_tokens,
                        num_new_computed_tokens=num_new_local_computed_tokens,
                        new_computed_blocks=new_computed_blocks,
                        num_lookahead_tokens=num_lookahead_tokens,
                        full_sequence_must_fit=self.scheduler_reserve_full_isl,
                        has_scheduled_reqs=bool(running))
                else:
                    new_blocks = allocate_slots(
                        request, num_new_tokens,
                        num_new_computed_tokens=num_new_local_computed_tokens,
                        new_computed_blocks=new_computed_blocks,
                        # An async load runs no forward pass yet: lookahead slots later.
                        num_lookahead_tokens=0 if load_kv_async else num_lookahead_tokens,
                        num_external_computed_tokens=num_external_computed_tokens,
                        delay_cache_blocks=load_kv_async,
                        full_sequence_must_fit=self.scheduler_reserve_full_isl,
                        # An async load holds its blocks for the whole transfer and is not
                        # preemptible: leave in-flight prefills the blocks they still need.
                        reserved_blocks=(self._inflight_prefill_reserved_blocks()
                                         if load_kv_async else 0),
                        has_scheduled_reqs=bool(running))
                if new_blocks is None:
                    break   # does not fit: stop admitting (FCFS head-of-line blocking)

                if connector is not None:
                    connector.update_state_after_alloc(
                        request, kv_cache_manager.get_blocks(request_id),
                        num_external_computed_tokens)
                    self._record_connector_prefix_cache_stats(
                        request, num_new_local_computed_tokens, num_external_computed_tokens)

                request = request_queue.pop_request()
                if load_kv_async:
                    # Blocks allocated; the request waits for its KVs (its computed count
                    # is set now and corrected if the load fails).
                    request.status = _WAITING_FOR_REMOTE_KVS
                    if step_skipped_waiting is None:
                        step_skipped_waiting = create_request_queue(self.policy)
                    step_skipped_waiting.prepend_request(request)
                    request.num_computed_tokens = num_computed_tokens
                    self._inflight_prefills.add(request)
                    if events is not None:
                        events.append(WaitingForRemoteKVs(
                            request_id, num_new_local_computed_tokens,
                            num_external_computed_tokens,
                            tuple(b.block_id for b in req_to_blocks[request_id])))
                    continue

                running.append(request)
                if scheduled_reqs is scheduled_running_reqs:
                    scheduled_reqs = list(scheduled_running_reqs)
                scheduled_reqs.append(request)
                resumed = request.status == _PREEMPTED
                # Its whole block table goes out (new requests and resumed ones alike).
                block_ids = kv_cache_manager.get_blocks(request_id).get_block_ids()
                if request.status == _WAITING:
                    scheduled_new_reqs.append(request)
                    new_reqs_data.append(NewRequestData(
                        request_id, request.prompt_token_ids, request.sampling_params,
                        block_ids, num_computed_tokens))
                elif resumed:
                    scheduled_resumed_reqs.append(request)
                    cached_req_ids.append(request_id)
                    cached_new_block_ids.append(block_ids)
                    cached_num_computed.append(num_computed_tokens)
                    cached_num_output.append(request.num_tokens - request.num_prompt_tokens
                                             + request.num_output_placeholders)
                    cached_all_token_ids[request_id] = list(request.all_token_ids)
                else:
                    raise RuntimeError(f"Invalid request status: {request.status}")
                num_scheduled_tokens[request_id] = num_new_tokens
                token_budget -= num_new_tokens
                request.status = _RUNNING
                request.num_computed_tokens = num_computed_tokens
                if request.num_cached_tokens < 0:
                    request.num_cached_tokens = num_computed_tokens
                if pad_spec_decode:
                    scheduled_spec_decode_tokens[request_id] = [-1] * num_spec_tokens
                if connector is not None and num_computed_tokens + num_new_tokens < \
                        request.num_tokens:
                    # Still prefilling after this chunk: it reserves its remaining blocks.
                    self._inflight_prefills.add(request)
                if events is not None:
                    events.append(Admitted(request_id, num_new_tokens, resumed))
                # _update_after_schedule, for this request.
                computed = request.num_computed_tokens = num_computed_tokens + num_new_tokens
                request.is_prefill_chunk = computed < (request.num_tokens
                                                       + request.num_output_placeholders)
                if placeholder_step and not request.is_prefill_chunk:
                    request.num_output_placeholders += placeholder_step

            # Requests skipped in this pass go back in front of older skipped ones.
            if step_skipped_waiting:
                skipped_waiting.prepend_requests(step_skipped_waiting)

        total_num_scheduled_tokens = self.max_num_scheduled_tokens - token_budget
        assert token_budget >= 0
        assert len(running) <= self.max_num_running_reqs

        # The longest prefix shared by every request holding blocks (cascade attention).
        num_common_prefix_blocks = [0] * self.num_kv_cache_groups
        if running:
            num_common_prefix_blocks = kv_cache_manager.get_num_common_prefix_blocks(
                running[0].request_id)

        cached_reqs_data = CachedRequestData(
            req_ids=cached_req_ids,
            resumed_req_ids={req.request_id for req in scheduled_resumed_reqs},
            new_token_ids=[],
            all_token_ids=cached_all_token_ids,
            new_block_ids=cached_new_block_ids,
            num_computed_tokens=cached_num_computed,
            num_output_tokens=cached_num_output)
        self.prev_step_scheduled_req_ids = set(num_scheduled_tokens)

        scheduler_output = SchedulerOutput(
            scheduled_new_reqs=new_reqs_data,
            scheduled_cached_reqs=cached_reqs_data,
            num_scheduled_tokens=num_scheduled_tokens,
            total_num_scheduled_tokens=total_num_scheduled_tokens,
            scheduled_spec_decode_tokens=scheduled_spec_decode_tokens,
            scheduled_encoder_inputs={},
            num_common_prefix_blocks=num_common_prefix_blocks,
            finished_req_ids=self.finished_req_ids,
            free_encoder_mm_hashes=[],
            preempted_req_ids=self.preempted_req_ids,
        )
        self.prev_scheduled_reqs = self.scheduled_reqs
        self.prev_scheduler_output = self.last_scheduler_output
        self.scheduled_reqs = scheduled_reqs
        self.last_scheduler_output = scheduler_output
        if self.connector is not None:
            # Plans the step's loads and saves (before _update_after_schedule, as in vLLM).
            self._build_kv_connector_meta_for_step(scheduler_output, scheduled_reqs)
        self._update_after_schedule(scheduler_output)
        return scheduler_output

    def _preempt_request(self, request: Request) -> None:
        """Preemption by recompute: free its blocks, back to the front of `waiting` with
        every token kept and nothing computed."""
        assert request.status == _RUNNING, "Only running requests can be preempted"
        if self.defer_block_free:
            self._free_request_blocks(request)
        else:
            self.kv_cache_manager.free(request)
        self._inflight_prefills.discard(request)
        request.status = _PREEMPTED
        request.num_computed_tokens = 0
        if request.spec_token_ids:
            request.spec_token_ids = []
        request.num_preemptions += 1
        self.waiting.prepend_request(request)
        self.preempted_req_ids.add(request.request_id)

    def _update_after_schedule(self, scheduler_output: SchedulerOutput) -> None:
        """What is left of vLLM's `_update_after_schedule` once schedule() has advanced
        each scheduled request's `num_computed_tokens` (and `is_prefill_chunk`, and the
        async scheduler's output placeholders): new sets of finished and preempted ids (the
        output keeps the old ones)."""
        self.finished_req_ids = set()
        self.preempted_req_ids = set()

    # -- after the model ran ---------------------------------------------------------------
    def update_from_output(self, scheduler_output: SchedulerOutput,
                           model_runner_output: ModelRunnerOutput) -> list[EngineCoreOutput]:
        """Append the sampled tokens, roll back rejected drafts, stop and free finished
        requests (in scheduling order). Returns one output per request that got tokens or
        finished."""
        sampled_token_ids = model_runner_output.sampled_token_ids
        spec_decode_tokens = scheduler_output.scheduled_spec_decode_tokens
        events = self.events
        max_model_len = self.max_model_len
        outputs: list[EngineCoreOutput] = []
        append_output = outputs.append
        stopped_running_reqs: set[Request] = set()
        if self.defer_block_free and scheduler_output.total_num_scheduled_tokens > 0:
            # Every write of this and earlier steps is done: deferred blocks may go back.
            self.processed_step_seq += 1
            self._drain_deferred_frees()
        kv_connector_output = model_runner_output.kv_connector_output
        failed_kv_load_req_ids = None
        if kv_connector_output is not None and kv_connector_output.invalid_block_ids:
            # Blocks of externally computed tokens failed to load: the requests using
            # them fall back to recomputing them (or fail), and get no token this step.
            failed_kv_load_req_ids = self._handle_invalid_blocks(
                kv_connector_output.invalid_block_ids, scheduler_output.num_scheduled_tokens)
        if scheduler_output is self.last_scheduler_output:
            scheduled_reqs = self.scheduled_reqs
        elif scheduler_output is self.prev_scheduler_output:
            scheduled_reqs = self.prev_scheduled_reqs      # the async loop's case
        else:
            scheduled_reqs = None
        if (scheduled_reqs is not None
                and model_runner_output.req_ids is not None
                and len(model_runner_output.req_ids) == len(scheduled_reqs)):
            # The engine's case: the output of the last (or, async, the previous)
            # schedule(), one model output per scheduled request in the same order: the
            # requests schedule() kept (a request finished since is skipped below).
            items = zip(scheduled_reqs, sampled_token_ids)
        else:
            # vLLM's way: look each scheduled id up (the request may be gone).
            req_id_to_index = model_runner_output.req_id_to_index
            items = [(self.requests.get(req_id), sampled_token_ids[req_id_to_index[req_id]])
                     for req_id in scheduler_output.num_scheduled_tokens
                     if req_id in req_id_to_index]
        if failed_kv_load_req_ids:
            items = [(r, t) for r, t in items
                     if r is None or r.request_id not in failed_kv_load_req_ids]
        stopped_preempted_reqs: list[Request] = []
        inline = self._inline_single_token_update
        # The async scheduler's one-token update, written out the same way (see
        # AsyncScheduler._update_request_with_output, which every other case still calls).
        inline_async = self._inline_async_token_update
        kv_cache_manager = self.kv_cache_manager
        cache_blocks = kv_cache_manager.cache_blocks
        caching = kv_cache_manager.enable_caching
        full_attention_only = kv_cache_manager.full_attention_only
        num_cached_block = kv_cache_manager.num_cached_block
        block_size = self.block_size
        for request, generated_token_ids in items:
            if request is None:
                continue
            status_before_stop = request.status
            if status_before_stop > _PREEMPTED:
                continue   # finished (aborted) while the model ran
            req_id = request.request_id
            if not generated_token_ids:
                continue   # a prefill chunk short of the end: nothing sampled

            if spec_decode_tokens:
                scheduled_spec_token_ids = spec_decode_tokens.get(req_id)
                if scheduled_spec_token_ids:
                    num_draft_tokens = len(scheduled_spec_token_ids)
                    num_accepted = len(generated_token_ids) - 1
                    num_rejected = num_draft_tokens - num_accepted
                    # The rejected drafts' KV is dropped; their slots stay allocated.
                    if request.num_computed_tokens > 0:
                        request.num_computed_tokens -= num_rejected

            if len(generated_token_ids) == 1 and (
                    inline or (inline_async and not request.async_tokens_to_discard)):
                # One token (most steps): _update_request_with_output, written out (the
                # synchronous one, or AsyncScheduler's when no discard is pending).
                token_id = generated_token_ids[0]
                # request.append_output_token_ids(token_id), written out (once per token).
                request.output_token_ids.append(token_id)
                request.all_token_ids.append(token_id)
                num_tokens = request.num_tokens = request.num_tokens + 1
                if num_tokens >= request.next_block_hash_at:
                    request.update_block_hashes()
                # check_stop can only stop it at its length limit, on EOS or on a stop
                # token: ask it only then.
                stopped = ((num_tokens >= max_model_len
                            or num_tokens - request.num_prompt_tokens >= request.max_tokens
                            or token_id == request.eos_token_id
                            or token_id in request.stop_token_ids)
                           and check_stop(request, max_model_len))
                new_token_ids = generated_token_ids
                if inline_async:
                    placeholders = request.num_output_placeholders - 1
                    request.num_output_placeholders = placeholders
                    assert placeholders >= 0
                    # Cache the blocks the known tokens fill; with one full-attention group,
                    # only when one became full (cache_blocks' own early return, checked
                    # here).
                    if status_before_stop is _RUNNING and caching:
                        known = request.num_computed_tokens - placeholders
                        if (not full_attention_only
                                or known // block_size > num_cached_block.get(req_id, 0)):
                            cache_blocks(request, known)
            else:
                new_token_ids, stopped = self._update_request_with_output(
                    request, generated_token_ids, max_model_len)
            if stopped:
                if events is not None:
                    events.append(RequestFinished(req_id, request.status.label))
                kv_transfer_params = self._free_request(request)
                if status_before_stop is _RUNNING:
                    stopped_running_reqs.add(request)
                else:   # preempted after it was scheduled (two steps in flight)
                    stopped_preempted_reqs.append(request)
                append_output(EngineCoreOutput(req_id, new_token_ids,
                                               request.get_finished_reason(),
                                               request.stop_reason,
                                               request.num_cached_tokens,
                                               kv_transfer_params))
            elif new_token_ids:   # (none when an async output was discarded)
                # EngineCoreOutput(req_id, new_token_ids), without NamedTuple's Python-level
                # __new__ (see sim.events.fast_event).
                append_output(fast_event(EngineCoreOutput,
                                        (req_id, new_token_ids, None, None, 0, None)))
        if stopped_running_reqs:
            self.running = remove_all(self.running, stopped_running_reqs)
        if stopped_preempted_reqs:
            self.waiting.remove_requests(stopped_preempted_reqs)
        if failed_kv_load_req_ids and not self.recompute_kv_load_failures:
            # kv_load_failure_policy "fail": the requests end with an error.
            failed = [self.requests[rid] for rid in failed_kv_load_req_ids]
            self.finish_requests(failed_kv_load_req_ids, RequestStatus.FINISHED_ERROR)
            for request in failed:
                append_output(EngineCoreOutput(request.request_id, [],
                                               request.get_finished_reason()))
        if kv_connector_output is not None:
            self._update_from_kv_xfer_finished(kv_connector_output)
        return outputs

    def _update_request_with_output(self, request: Request, new_token_ids: list[int],
                                    max_model_len: int) -> tuple[list[int], bool]:
        """Append tokens one by one, checking stop after each; on a stop the rest are
        dropped."""
        stopped = False
        for num_new, output_token_id in enumerate(new_token_ids, 1):
            request.append_output_token_ids(output_token_id)
            stopped = check_stop(request, max_model_len)
            if stopped:
                del new_token_ids[num_new:]
                break
        return new_token_ids, stopped

    def update_draft_token_ids(self, draft_token_ids: dict[str, list[int]]) -> None:
        """The drafter's proposals for the next step (ignored for prefill chunks)."""
        requests = self.requests
        for req_id, spec_token_ids in draft_token_ids.items():
            request = requests.get(req_id)
            if request is None or request.is_finished():
                continue
            if request.is_prefill_chunk:
                if request.spec_token_ids:
                    request.spec_token_ids = []
                continue
            request.spec_token_ids = list(spec_token_ids)

    def _free_request(self, request: Request, delay_free_blocks: bool = False
                      ) -> dict | None:
        """A finished request leaves: its id goes to the workers next step and its blocks
        are freed, unless the KV connector keeps them (still sending them) or its load is
        in flight. Returns the connector's kv_transfer_params for the client."""
        assert request.is_finished()
        if self.connector is None:
            self.finished_req_ids.add(request.request_id)
            self.kv_cache_manager.free(request)
            del self.requests[request.request_id]
            return None
        self._inflight_prefills.discard(request)
        connector_delay_free_blocks, kv_xfer_params = self._connector_finished(request)
        self.finished_req_ids.add(request.request_id)
        if delay_free_blocks or connector_delay_free_blocks:
            if self.events is not None:
                self.events.append(BlocksHeld(request.request_id, tuple(
                    b.block_id for b in self.kv_cache_manager.req_to_blocks.get(
                        request.request_id, ()))))
        else:
            self._free_blocks(request)
        return kv_xfer_params

    def _free_blocks(self, request: Request) -> None:
        assert request.is_finished()
        self._free_request_blocks(request)
        del self.requests[request.request_id]
