"""The offloading connector's scheduler side (vLLM v0.25.1
`vllm/distributed/kv_transfer/kv_connector/v1/offloading/scheduler.py`:
`OffloadingConnectorScheduler`).

What it does for the scheduler, in the order the scheduler calls it:

- `on_new_request`: a `RequestOffloadState` per request (its offload keys, the GPU block
  ids it has been given, how far its blocks are stored, its in-flight jobs).
- `get_num_new_matched_tokens` (a waiting request, after the GPU prefix-cache lookup):
  while the request has a transfer in flight, None ("ask again next step"). Otherwise its
  offload keys are extended to its block hashes and the manager is asked, block by block
  from the end of the GPU hit (`_lookup`, `_maximal_prefix_lookup`), how many more tokens
  it holds: whole offloaded blocks, at least one, never more than the request's tokens;
  if another request is loading one of those blocks (`_blocks_being_loaded`), None again.
  The request's blocks are touched in the manager (most recently used), hit or not. A hit
  is loaded asynchronously: (tokens, True).
- `update_state_after_alloc` (the request got GPU blocks for the hit): a load job from the
  CPU blocks into its unhashed GPU blocks (`prepare_load` pins the CPU blocks); blocks
  from there on count as stored (block-level policy).
- `build_connector_meta` (the end of `schedule()`): the step's block ids are recorded
  (`_update_req_states`), the store jobs of preempted requests are flushed, and so are
  store jobs of finished requests whose GPU blocks were just handed out again (the
  fence, `_block_id_to_pending_jobs`); then `_build_store_jobs`: for each scheduled
  request, the offloaded blocks that this step's tokens complete (prompt blocks only when
  `offload_prompt_only`, capped by `max_offload_tokens`), from `next_stored_block_idx` on,
  go to `prepare_store`; its answer (the keys not already offloaded, their CPU blocks,
  what was evicted) becomes one store job, and the request's keys are touched.
- `update_connector_output` (after the forward pass): each completed job ends in
  `complete_store` or `complete_load` (which lets the CPU blocks be evicted again); a
  finished request with no job left is forgotten.
- `request_finished`: never holds the GPU blocks (`(False, None)`); store jobs still in
  flight register their GPU blocks in the fence instead, so the blocks are flushed before
  anyone overwrites them.

The simulation has one KV cache group of full attention, so the sliding-window and Mamba
paths (`_sliding_window_lookup`, the window's touch and store skipping, stale block ids),
EAGLE groups, KV events (`take_events` yields nothing) and several workers (tensor
parallelism: `num_workers` is 1) are left out. Additions: `events` (when given) receives
OffloadStoreJob, OffloadStoreSkipped, OffloadLoadJob, OffloadJobDone, OffloadJobsFlushed
and OffloadLookupDeferred records.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from typing import Any, NamedTuple

from sim.events import (
    OffloadJobDone,
    OffloadJobsFlushed,
    OffloadLoadJob,
    OffloadLookupDeferred,
    OffloadStoreJob,
    OffloadStoreSkipped,
)
from sim.v1.kv_cache_utils import hash_prefix
from sim.v1.kv_connector.offloading.common import (
    OffloadingConnectorMetadata,
    OffloadingWorkerMetadata,
    ReqId,
    TransferJob,
)
from sim.v1.kv_connector.offloading.metrics import OffloadingConnectorStats, _TransferMetricName
from sim.v1.kv_offload.base import (
    GPULoadStoreSpec,
    LookupResult,
    OffloadingManager,
    OffloadingSpec,
    OffloadKey,
    OffloadPolicy,
    ReqContext,
    RequestOffloadingContext,
    ScheduleEndContext,
    get_offload_block_hash,
    make_offload_key,
)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def yield_req_data(scheduler_output):
    """(req_id, new block ids per group or None, resumed after preemption) of every
    scheduled request (vLLM's `kv_connector/utils.py:yield_req_data`)."""
    for req_data in scheduler_output.scheduled_new_reqs:
        yield req_data.req_id, req_data.block_ids, False
    cached = scheduler_output.scheduled_cached_reqs
    yield from zip(cached.req_ids, cached.new_block_ids,
                   (req_id in cached.resumed_req_ids for req_id in cached.req_ids))


@dataclass(slots=True)
class TransferJobStatus:
    req_id: ReqId
    pending_count: int                  # workers yet to report it done
    # What complete_store / complete_load get. vLLM keeps a set, whose order (it decides
    # the CPU tier's LRU order) varies from run to run with Python's hash seed; the
    # simulation keeps the request's block order.
    keys: list[OffloadKey]
    is_store: bool
    # A store's source GPU blocks: watched by the fence once the request has finished
    # (until then the request's reference keeps them).
    non_sliding_window_block_ids: list[int] | None = None
    # Additions, for pictures: the job's GPU and CPU blocks.
    gpu_block_ids: tuple[int, ...] = ()
    cpu_block_ids: tuple[int, ...] = ()


class GroupOffloadConfig(NamedTuple):
    group_idx: int
    gpu_block_size: int
    offloaded_block_size: int
    hash_block_size_factor: int


class SchedulerOffloadConfig(NamedTuple):
    kv_group_configs: tuple[GroupOffloadConfig, ...]
    block_size_factor: int
    num_workers: int
    offload_prompt_only: bool

    @classmethod
    def from_spec(cls, spec: OffloadingSpec) -> SchedulerOffloadConfig:
        return cls(
            kv_group_configs=tuple(
                GroupOffloadConfig(
                    group_idx=idx, gpu_block_size=gpu_block_size,
                    offloaded_block_size=gpu_block_size * spec.block_size_factor,
                    hash_block_size_factor=(gpu_block_size * spec.block_size_factor
                                            // spec.hash_block_size))
                for idx, gpu_block_size in enumerate(spec.gpu_block_size)),
            block_size_factor=spec.block_size_factor,
            num_workers=1,
            offload_prompt_only=spec.offload_prompt_only)


@dataclass
class RequestGroupState:
    offload_keys: list[OffloadKey] = field(default_factory=list)
    block_ids: list[int] = field(default_factory=list)
    # index of the next offloaded block to store
    next_stored_block_idx: int = 0
    # offloaded blocks hit (GPU prefix cache included) when the request started
    num_hit_blocks: int = 0


@dataclass(slots=True)
class RequestOffloadState:
    config: SchedulerOffloadConfig
    req: Any
    req_context: ReqContext
    offloading_context: RequestOffloadingContext
    group_states: tuple[RequestGroupState, ...] = field(init=False)
    # at most this many tokens are offloaded (kv_transfer_params "max_offload_tokens")
    max_offload_tokens: int | None = None
    num_locally_computed_tokens: int = 0
    # In-flight jobs: either one load, or any number of stores.
    transfer_jobs: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.group_states = tuple(RequestGroupState() for _ in self.config.kv_group_configs)
        params = self.req.kv_transfer_params
        raw = params.get("max_offload_tokens") if params else None
        # A non-negative int only (vLLM warns and ignores anything else, a bool included).
        if type(raw) is int and raw >= 0:
            self.max_offload_tokens = raw

    def update_offload_keys(self) -> None:
        """One key per offloaded block: the hash of the last GPU block in it."""
        for group_config, group_state in zip(self.config.kv_group_configs, self.group_states):
            factor = group_config.hash_block_size_factor
            for req_block_hash in islice(self.req.block_hashes,
                                         factor * len(group_state.offload_keys) + factor - 1,
                                         None, factor):
                group_state.offload_keys.append(
                    make_offload_key(req_block_hash, group_config.group_idx))

    def update_block_id_groups(self, new_block_id_groups) -> None:
        if new_block_id_groups is None:
            return
        assert len(new_block_id_groups) == len(self.group_states)
        for group_state, new_blocks in zip(self.group_states, new_block_id_groups):
            group_state.block_ids.extend(new_blocks)

    def advance_stored_idx(self, num_offloadable_tokens: int) -> None:
        for group_config, group_state in zip(self.config.kv_group_configs, self.group_states):
            group_state.next_stored_block_idx = (num_offloadable_tokens
                                                 // group_config.offloaded_block_size)

    def update_num_hit_blocks(self, num_cached_tokens: int) -> None:
        for group_config, group_state in zip(self.config.kv_group_configs, self.group_states):
            group_state.num_hit_blocks = num_cached_tokens // group_config.offloaded_block_size


def _create_req_context(req) -> ReqContext:
    return ReqContext(req_id=req.request_id, kv_transfer_params=req.kv_transfer_params)


class OffloadingConnectorScheduler:
    # The simulation's event list (None: no events); the Scheduler sets it.
    events: list | None = None

    def __init__(self, spec: OffloadingSpec, events: list | None = None) -> None:
        self.config = SchedulerOffloadConfig.from_spec(spec)
        self.manager: OffloadingManager = spec.get_manager()
        self.events = events
        self._connector_stats: OffloadingConnectorStats | None = None
        self._lookup_groups = tuple(g.group_idx for g in self.config.kv_group_configs)
        self._req_status: dict[ReqId, RequestOffloadState] = {}
        self._current_batch_load_jobs: dict[int, TransferJob] = {}
        self._current_batch_jobs_to_flush: set[int] = set()
        # GPU block ids handed out in the current step
        self._current_batch_allocated_block_ids: set[int] = set()
        # With GPU prefix caching, keys being loaded: a second request asking for them
        # waits and then finds them in the GPU prefix cache.
        self._blocks_being_loaded: set[OffloadKey] | None = (
            set() if spec.enable_prefix_caching else None)
        self._job_counter = 0
        # Jobs with ids below this were discarded by reset_cache (their completions too).
        self._stale_job_threshold = 0
        self._jobs: dict[int, TransferJobStatus] = {}
        # GPU block id -> pending store jobs reading it (finished requests only)
        self._block_id_to_pending_jobs: dict[int, set[int]] = {}

    def _event(self, record) -> None:
        if self.events is not None:
            self.events.append(record)

    def _generate_job_id(self) -> int:
        job_id = self._job_counter
        self._job_counter += 1
        return job_id

    def _remove_pending_job(self, job_id: int, block_ids: list[int] | None) -> None:
        for bid in block_ids or ():
            pending = self._block_id_to_pending_jobs[bid]
            pending.remove(job_id)
            if not pending:
                del self._block_id_to_pending_jobs[bid]

    # -- lookup ----------------------------------------------------------------------------
    def _maximal_prefix_lookup(self, keys, req_context: ReqContext) -> int | None:
        """Consecutive offloaded blocks from the start; None if the manager asked to
        defer (HIT_PENDING counts as a hit but defers; RETRY defers; a MISS ends it)."""
        hit_count = 0
        defer_lookup = False
        for key in keys:
            result = self.manager.lookup(key, req_context)
            if result is LookupResult.HIT:
                hit_count += 1
            elif result is LookupResult.HIT_PENDING:
                defer_lookup = True
                hit_count += 1
            elif result is LookupResult.RETRY:
                defer_lookup = True
            else:
                break
        return hit_count if not defer_lookup else None

    def _touch(self, req_status: RequestOffloadState) -> None:
        for group_state in req_status.group_states:
            self.manager.touch(group_state.offload_keys, req_status.req_context)

    def _lookup(self, req_status: RequestOffloadState) -> int | None:
        """Tokens beyond `num_locally_computed_tokens` that can be loaded (0: none, or
        less than one offloaded block); None: ask again later."""
        num_computed_tokens = req_status.num_locally_computed_tokens
        max_hit_size_tokens: int = req_status.req.num_tokens
        num_hit_tokens = 0
        defer_lookup = False
        for group_idx in self._lookup_groups:
            group_config = self.config.kv_group_configs[group_idx]
            group_state = req_status.group_states[group_idx]
            offloaded_block_size = group_config.offloaded_block_size
            offload_keys = group_state.offload_keys
            assert len(offload_keys) >= req_status.req.num_tokens // offloaded_block_size
            max_hit_size_tokens = min(max_hit_size_tokens,
                                      len(offload_keys) * offloaded_block_size)
            if max_hit_size_tokens - num_computed_tokens < offloaded_block_size:
                return 0         # less than a block could load: not worth it
            num_blocks = min(cdiv(max_hit_size_tokens, offloaded_block_size), len(offload_keys))
            start_block_idx = num_computed_tokens // offloaded_block_size
            num_hit_blocks = self._maximal_prefix_lookup(
                offload_keys[start_block_idx:num_blocks], req_status.req_context)
            if num_hit_blocks == 0:
                return 0
            if num_hit_blocks is None:
                defer_lookup = True
            else:
                max_hit_size_tokens = min(max_hit_size_tokens, offloaded_block_size
                                          * (start_block_idx + num_hit_blocks))
            num_hit_tokens = max_hit_size_tokens - num_computed_tokens
            if num_hit_tokens < offloaded_block_size:
                return 0
        if defer_lookup:
            return None
        # Wait if another request is loading any of these blocks.
        if self._blocks_being_loaded:
            for group_config, group_state in zip(self.config.kv_group_configs,
                                                 req_status.group_states):
                offloaded_block_size = group_config.offloaded_block_size
                num_blocks = cdiv(num_computed_tokens + num_hit_tokens, offloaded_block_size)
                start_block_idx = num_computed_tokens // offloaded_block_size
                if any(key in self._blocks_being_loaded
                       for key in group_state.offload_keys[start_block_idx:num_blocks]):
                    self._event(OffloadLookupDeferred(req_status.req.request_id,
                                                      "being loaded"))
                    return None
        return num_hit_tokens

    # -- the scheduler's calls ----------------------------------------------------------------
    def on_new_request(self, request) -> None:
        req_context = _create_req_context(request)
        offloading_context = self.manager.on_new_request(req_context)
        self._req_status[request.request_id] = RequestOffloadState(
            config=self.config, req=request, req_context=req_context,
            offloading_context=offloading_context)

    def get_num_new_matched_tokens(self, request, num_computed_tokens: int
                                   ) -> tuple[int | None, bool]:
        req_status = self._req_status[request.request_id]
        for group_state in req_status.group_states:
            group_state.block_ids.clear()
        if req_status.transfer_jobs:
            # Its own store (a preempted request) or load is still in flight.
            self._event(OffloadLookupDeferred(request.request_id, "transfer in flight"))
            return None, False
        req_status.update_offload_keys()
        req_status.num_locally_computed_tokens = num_computed_tokens
        if request.skip_reading_prefix_cache:
            num_hit_tokens: int | None = 0
        else:
            num_hit_tokens = self._lookup(req_status)
        req_status.update_num_hit_blocks(num_computed_tokens + (num_hit_tokens or 0))
        self._touch(req_status)
        return num_hit_tokens, bool(num_hit_tokens)

    def update_state_after_alloc(self, request, blocks, num_external_tokens: int) -> None:
        if num_external_tokens == 0:
            return
        req_status = self._req_status[request.request_id]
        num_locally_computed_tokens = req_status.num_locally_computed_tokens
        num_cached_tokens = num_locally_computed_tokens + num_external_tokens
        keys_to_load: list[OffloadKey] = []
        dst_block_ids: list[int] = []
        group_sizes: list[int] = []
        block_indices: list[int] = []
        for group_config, group_state, group_blocks in zip(
                self.config.kv_group_configs, req_status.group_states, blocks.blocks):
            self._current_batch_allocated_block_ids.update(
                block.block_id for block in group_blocks if block.block_id != 0)
            gpu_block_size = group_config.gpu_block_size
            offloaded_block_size = group_config.offloaded_block_size
            offload_keys = group_state.offload_keys
            num_gpu_blocks = cdiv(num_cached_tokens, gpu_block_size)
            assert len(group_blocks) >= num_gpu_blocks
            # The GPU prefix hit ends at the first block without a hash.
            num_locally_computed_gpu_blocks = num_gpu_blocks
            for i, block in enumerate(group_blocks[:num_gpu_blocks]):
                if not block.is_null and block.block_hash is None:
                    num_locally_computed_gpu_blocks = i
                    break
            assert (num_locally_computed_tokens
                    <= num_locally_computed_gpu_blocks * gpu_block_size)
            num_pending_gpu_blocks = num_gpu_blocks - num_locally_computed_gpu_blocks
            num_blocks = cdiv(num_cached_tokens, offloaded_block_size)
            assert len(offload_keys) >= num_blocks
            if num_pending_gpu_blocks:
                start_block_idx = num_locally_computed_gpu_blocks // self.config.block_size_factor
                keys_to_load.extend(offload_keys[start_block_idx:num_blocks])
            dst_block_ids.extend(block.block_id for block in
                                 group_blocks[num_locally_computed_gpu_blocks:num_gpu_blocks])
            group_sizes.append(num_pending_gpu_blocks)
            block_indices.append(num_locally_computed_gpu_blocks)
            # Block-level policy: what was hit is not stored again.
            if req_status.offloading_context.policy == OffloadPolicy.BLOCK_LEVEL:
                group_state.next_stored_block_idx = num_blocks
        src_spec = self.manager.prepare_load(keys_to_load, req_status.req_context)
        dst_spec = GPULoadStoreSpec(dst_block_ids, group_sizes=group_sizes,
                                    block_indices=block_indices)
        load_job_id = self._generate_job_id()
        self._current_batch_load_jobs[load_job_id] = TransferJob(
            req_id=request.request_id, src_spec=src_spec, dst_spec=dst_spec)
        # A load is issued only when no other job of the request is pending.
        assert not req_status.transfer_jobs
        req_status.transfer_jobs.add(load_job_id)
        self._jobs[load_job_id] = TransferJobStatus(
            req_id=request.request_id, pending_count=self.config.num_workers,
            keys=list(dict.fromkeys(keys_to_load)), is_store=False,
            gpu_block_ids=tuple(dst_block_ids),
            cpu_block_ids=tuple(getattr(src_spec, "block_ids", ())))
        if self._blocks_being_loaded is not None:
            self._blocks_being_loaded.update(keys_to_load)
        self._event(OffloadLoadJob(request.request_id, load_job_id,
                                   tuple(getattr(src_spec, "block_ids", ())),
                                   tuple(dst_block_ids), num_locally_computed_tokens,
                                   num_external_tokens))

    def _update_req_states(self, scheduler_output) -> None:
        """Each scheduled request's offload keys and GPU block ids (a resumed request's
        list starts again)."""
        for req_id, new_block_id_groups, preempted in yield_req_data(scheduler_output):
            req_status = self._req_status[req_id]
            req_status.update_offload_keys()
            if preempted:
                for group_state in req_status.group_states:
                    group_state.block_ids.clear()
            if new_block_id_groups:
                req_status.update_block_id_groups(new_block_id_groups)
                for new_blocks in new_block_id_groups:
                    for bid in new_blocks:
                        if bid != 0:
                            self._current_batch_allocated_block_ids.add(bid)

    def _build_store_jobs(self, scheduler_output) -> dict[int, TransferJob]:
        block_size_factor = self.config.block_size_factor
        store_jobs: dict[int, TransferJob] = {}
        for req_id, num_scheduled_tokens in scheduler_output.num_scheduled_tokens.items():
            req_status = self._req_status.get(req_id)
            if req_status is None:
                continue
            req = req_status.req
            num_tokens_after_batch = req.num_computed_tokens + num_scheduled_tokens
            num_offloadable_tokens = min(num_tokens_after_batch, req.num_tokens)
            if req_status.max_offload_tokens is not None:
                num_offloadable_tokens = min(num_offloadable_tokens,
                                             req_status.max_offload_tokens)
            # Prompt blocks only: decode blocks never become eligible.
            if self.config.offload_prompt_only:
                num_offloadable_tokens = min(num_offloadable_tokens, req.num_prompt_tokens)

            new_offload_keys: list[OffloadKey] = []
            for group_config, group_state in zip(self.config.kv_group_configs,
                                                 req_status.group_states):
                num_blocks = num_offloadable_tokens // group_config.offloaded_block_size
                start_block_idx = group_state.next_stored_block_idx
                if num_blocks <= start_block_idx:
                    continue
                offload_keys = group_state.offload_keys[start_block_idx:num_blocks]
                # Each offloaded block's last GPU block (0: skipped; never here).
                offload_block_ids = group_state.block_ids[
                    start_block_idx * block_size_factor + block_size_factor - 1:
                    num_blocks * block_size_factor:block_size_factor]
                assert len(offload_keys) == len(offload_block_ids)
                for offload_key, block_id in zip(offload_keys, offload_block_ids):
                    if block_id == 0:
                        continue
                    new_offload_keys.append(offload_key)
            if not new_offload_keys:
                req_status.advance_stored_idx(num_offloadable_tokens)
                continue

            store_output = self.manager.prepare_store(new_offload_keys,
                                                      req_status.req_context)
            if store_output is None:
                # The CPU tier is full of blocks in use: try again at the next block.
                self._event(OffloadStoreSkipped(req_id, len(new_offload_keys)))
                continue
            if not store_output.keys_to_store:
                req_status.advance_stored_idx(num_offloadable_tokens)
                continue
            self._touch(req_status)
            keys_to_store = set(store_output.keys_to_store)

            group_sizes: list[int] = []
            block_indices: list[int] = []
            src_block_ids: list[int] = []
            non_sliding_window_block_ids: list[int] = []
            for group_config, group_state in zip(self.config.kv_group_configs,
                                                 req_status.group_states):
                num_blocks = num_offloadable_tokens // group_config.offloaded_block_size
                start_block_idx = group_state.next_stored_block_idx
                block_ids = group_state.block_ids
                num_group_blocks = 0
                start_gpu_block_idx: int | None = None
                for idx, offload_key in enumerate(
                        group_state.offload_keys[start_block_idx:num_blocks]):
                    if offload_key not in keys_to_store:
                        continue
                    gpu_block_idx = (start_block_idx + idx) * block_size_factor
                    for i in range(block_size_factor):
                        block_id = block_ids[gpu_block_idx + i]
                        if block_id == 0:
                            continue
                        if start_gpu_block_idx is None:
                            start_gpu_block_idx = gpu_block_idx + i
                        src_block_ids.append(block_id)
                        num_group_blocks += 1
                        non_sliding_window_block_ids.append(block_id)
                group_sizes.append(num_group_blocks)
                block_indices.append(start_gpu_block_idx or 0)
                group_state.next_stored_block_idx = num_blocks

            src_spec = GPULoadStoreSpec(src_block_ids, group_sizes=group_sizes,
                                        block_indices=block_indices)
            dst_spec = store_output.store_spec
            job_id = self._generate_job_id()
            # A store is issued only when no load of the request is pending.
            if req_status.transfer_jobs:
                any_jid = next(iter(req_status.transfer_jobs))
                assert self._jobs[any_jid].is_store
            req_status.transfer_jobs.add(job_id)
            self._jobs[job_id] = TransferJobStatus(
                req_id=req_id, pending_count=self.config.num_workers,
                keys=list(store_output.keys_to_store), is_store=True,
                non_sliding_window_block_ids=non_sliding_window_block_ids,
                gpu_block_ids=tuple(src_block_ids),
                cpu_block_ids=tuple(getattr(dst_spec, "block_ids", ())))
            store_jobs[job_id] = TransferJob(req_id=req_id, src_spec=src_spec,
                                             dst_spec=dst_spec)
            self._event(OffloadStoreJob(
                req_id, job_id, tuple(src_block_ids),
                tuple(getattr(dst_spec, "block_ids", ())),
                tuple(hash_prefix(get_offload_block_hash(k))
                      for k in store_output.evicted_keys)))
        return store_jobs

    def build_connector_meta(self, scheduler_output) -> OffloadingConnectorMetadata:
        self._update_req_states(scheduler_output)
        self.manager.on_schedule_end(ScheduleEndContext(
            new_req_ids=[req.req_id for req in scheduler_output.scheduled_new_reqs],
            preempted_req_ids=scheduler_output.preempted_req_ids or ()))

        # Flush the store jobs of preempted requests (their blocks are free now).
        flushed_preempted: set[int] = set()
        for req_id in sorted(scheduler_output.preempted_req_ids or ()):
            req_status = self._req_status.get(req_id)
            if req_status is None or not req_status.transfer_jobs:
                continue
            any_jid = next(iter(req_status.transfer_jobs))
            assert self._jobs[any_jid].is_store
            flushed_preempted.update(req_status.transfer_jobs)
        self._current_batch_jobs_to_flush.update(flushed_preempted)
        if flushed_preempted:
            self._event(OffloadJobsFlushed(tuple(sorted(flushed_preempted)), "preempted"))

        # Flush the jobs whose (finished request's) blocks were handed out again.
        if (self._block_id_to_pending_jobs
                and not self._block_id_to_pending_jobs.keys().isdisjoint(
                    self._current_batch_allocated_block_ids)):
            reused = {jid for bid in self._current_batch_allocated_block_ids
                      if bid in self._block_id_to_pending_jobs
                      for jid in self._block_id_to_pending_jobs[bid]}
            self._current_batch_jobs_to_flush.update(reused)
            self._event(OffloadJobsFlushed(tuple(sorted(reused)), "reused"))

        meta = OffloadingConnectorMetadata(
            load_jobs=self._current_batch_load_jobs,
            store_jobs=self._build_store_jobs(scheduler_output),
            jobs_to_flush=self._current_batch_jobs_to_flush)
        self._current_batch_load_jobs = {}
        self._current_batch_jobs_to_flush = set()
        self._current_batch_allocated_block_ids = set()
        return meta

    def has_pending_push_work(self) -> bool:
        """Whether the engine must keep stepping (jobs still in flight)."""
        return bool(self._jobs) or self.manager.has_pending_work()

    def update_connector_output(self, connector_output) -> None:
        meta = getattr(connector_output, "kv_connector_worker_meta", None)
        if not isinstance(meta, OffloadingWorkerMetadata):
            assert meta is None
            meta = OffloadingWorkerMetadata()
        if not meta.transfer_stats.is_empty():
            transfer_stats = OffloadingConnectorStats()
            for name_bytes, name_time, name_size, stats in (
                    (_TransferMetricName.LOAD_BYTES, _TransferMetricName.LOAD_TIME,
                     _TransferMetricName.LOAD_SIZE, meta.transfer_stats.load),
                    (_TransferMetricName.STORE_BYTES, _TransferMetricName.STORE_TIME,
                     _TransferMetricName.STORE_SIZE, meta.transfer_stats.store)):
                if not stats.is_empty():
                    transfer_stats.increase_counter(name_bytes, stats.bytes)
                    transfer_stats.increase_counter(name_time, stats.time)
                    for size in stats.sizes:
                        transfer_stats.observe_histogram(name_size, size)
            if self._connector_stats is None:
                self._connector_stats = transfer_stats
            else:
                self._connector_stats.aggregate(transfer_stats)

        for job_id, count in meta.completed_jobs.items():
            assert count > 0
            if job_id < self._stale_job_threshold:
                continue      # a job from before reset_cache
            job_status = self._jobs[job_id]
            job_status.pending_count -= count
            if job_status.pending_count > 0:
                continue
            assert job_status.pending_count == 0
            req_status = self._req_status[job_status.req_id]
            if job_status.is_store:
                self.manager.complete_store(job_status.keys, req_status.req_context)
            else:
                self.manager.complete_load(job_status.keys, req_status.req_context)
                if self._blocks_being_loaded:
                    self._blocks_being_loaded.difference_update(job_status.keys)
            if self._block_id_to_pending_jobs and req_status.req.is_finished():
                # Its blocks are watched only once the request has finished.
                self._remove_pending_job(job_id, job_status.non_sliding_window_block_ids)
            del self._jobs[job_id]
            req_status.transfer_jobs.remove(job_id)
            self._event(OffloadJobDone(job_status.req_id, job_id,
                                       "store" if job_status.is_store else "load"))
            if not req_status.transfer_jobs and req_status.req.is_finished():
                del self._req_status[job_status.req_id]

    def get_stats(self) -> OffloadingConnectorStats | None:
        stats = self._connector_stats
        self._connector_stats = None
        manager_stats = self.manager.get_stats()
        if manager_stats is not None:
            if stats is None:
                stats = manager_stats
            else:
                stats.aggregate(manager_stats)
        return stats

    def request_finished(self, request) -> tuple[bool, dict[str, Any] | None]:
        """Never keeps the GPU blocks: stores still in flight are fenced instead."""
        req_status = self._req_status.get(request.request_id)
        if req_status is None:
            # Never tracked: nothing in flight.
            req_context = _create_req_context(request)
            self.manager.on_new_request(req_context)
            self.manager.on_request_finished(req_context)
            return False, None
        self.manager.on_request_finished(req_status.req_context)
        if not req_status.transfer_jobs:
            del self._req_status[request.request_id]
            return False, None
        # Jobs in flight: keep the state for their completions, and watch the blocks
        # their stores read, so that handing them out again flushes the stores first.
        for job_id in req_status.transfer_jobs:
            job_status = self._jobs[job_id]
            for bid in job_status.non_sliding_window_block_ids or ():
                self._block_id_to_pending_jobs.setdefault(bid, set()).add(job_id)
        return False, None

    def take_events(self):
        """vLLM turns the manager's OffloadingEvents into KV cache events for subscribers;
        the simulation publishes none (the manager's events are drained)."""
        for _ in self.manager.take_events():
            pass
        return ()

    def reset_cache(self) -> None:
        """Forget every offloaded block: in-flight jobs are flushed, their completions
        ignored, and active requests store again from their first block."""
        assert not self._current_batch_load_jobs
        assert not self._current_batch_jobs_to_flush
        assert not self._current_batch_allocated_block_ids
        self._current_batch_jobs_to_flush.update(self._jobs.keys())
        for req_id, status in list(self._req_status.items()):
            if status.req.is_finished():
                del self._req_status[req_id]
        self.manager.reset_cache()
        for status in self._req_status.values():
            for group_state in status.group_states:
                group_state.next_stored_block_idx = 0
        self._stale_job_threshold = self._job_counter
        self._jobs.clear()
        self._block_id_to_pending_jobs.clear()
        # _current_batch_jobs_to_flush is kept: the workers must still wait for them.
        if self._blocks_being_loaded is not None:
            self._blocks_being_loaded.clear()

    def shutdown(self) -> None:
        self.manager.shutdown()

    # -- additions: reading the state -----------------------------------------------------------
    def jobs(self) -> dict[int, TransferJobStatus]:
        """The jobs in flight, by id."""
        return dict(self._jobs)

    def request_state(self, req_id: str) -> RequestOffloadState | None:
        return self._req_status.get(req_id)

    def fenced_jobs(self, block_id: int) -> set[int]:
        """The store jobs a GPU block is fenced for (flushed if it is handed out)."""
        return set(self._block_id_to_pending_jobs.get(block_id, ()))
