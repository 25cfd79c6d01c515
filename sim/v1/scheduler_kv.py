"""The scheduler's KV connector path (vLLM v0.25.1 `vllm/v1/core/sched/scheduler.py`: every
method the scheduler runs only when a connector is configured), as a mixin of
`sim.v1.scheduler.Scheduler`, which calls these from `schedule`, `update_from_output`,
`finish_requests` and `_free_request`.

What a connector changes in a step (connector names in sim/v1/kv_connector/base.py):

- Admission (`schedule`'s waiting loop): after the local prefix-cache lookup the connector
  adds external tokens. Loaded asynchronously, they get blocks (not cached yet, and only if
  the blocks in-flight prefills still need stay free: `_inflight_prefill_reserved_blocks`)
  and the request waits in `skipped_waiting` with status WAITING_FOR_REMOTE_KVS, its
  computed count already set. `skipped_waiting` is served before `waiting` (FCFS).
- `update_from_output` reads the worker side's `KVConnectorOutput`: invalid blocks first
  (`_handle_invalid_blocks`: the computed count falls back to the first invalid block;
  `kv_load_failure_policy` "fail" then finishes the request with an error, "recompute"
  lets it recompute), then finished transfers (`_update_from_kv_xfer_finished`): a request
  done receiving is promoted at the next `schedule()` (`_update_waiting_for_remote_kv`: its
  blocks are cached, and a fully received prompt recomputes its last token); a request done
  sending, or finished while receiving, has its held blocks freed.
- A finished request asks the connector (`_connector_finished`) whether to keep its blocks
  (`delay_free_blocks`): then it stays in `requests`, out of every queue, until
  `finished_sending` names it; an aborted request whose load is in flight keeps its blocks
  until `finished_recving` names it.

- With batches in flight (async scheduling) a consumer's freed blocks wait until no step
  in flight may still write them (`defer_block_free`, `_free_request_blocks`,
  `_drain_deferred_frees`: a fence counting non-empty steps scheduled and processed), so a
  load cannot race a stale write.

Two orders the simulation fixes where vLLM's come from Python sets (and so vary from run to
run): requests reported finished together are handled in the order they were added, and
requests failing a load together in queue order. Additions: the events
(WaitingForRemoteKVs, RemoteKVsReady, KVLoadFailed, BlocksHeld, KVTransferFinished).
"""
from __future__ import annotations

from collections import deque

from sim.events import KVLoadFailed, KVTransferFinished, RemoteKVsReady
from sim.v1.kv_cache_manager import PrefixCacheStats
from sim.v1.kv_connector import KVConnectorFactory, KVConnectorRole, supports_hma
from sim.v1.request import RequestStatus

_WAITING_FOR_REMOTE_KVS = RequestStatus.WAITING_FOR_REMOTE_KVS


class KVConnectorSchedulerMixin:
    """The connector's half of `Scheduler` (the attributes come from Scheduler.__init__)."""

    def _init_kv_connector(self, kv_transfer_config, connector) -> None:
        self.kv_transfer_config = kv_transfer_config
        if connector is None and kv_transfer_config is not None \
                and kv_transfer_config.kv_connector is not None:
            connector = KVConnectorFactory.create_connector(
                kv_transfer_config, KVConnectorRole.SCHEDULER, self.cache_config)
        self.connector = connector
        self.connector_prefix_cache_stats: PrefixCacheStats | None = None
        # vLLM's default policy is "fail"; without a transfer config nothing can fail.
        self.recompute_kv_load_failures = True
        if connector is not None:
            if self.kv_cache_manager.num_kv_cache_groups > 1:
                # vLLM's NIXL connector supports the hybrid allocator (SupportsHMA); the
                # simulation's connector path covers one full-attention group only.
                raise ValueError("a KV connector with several KV cache groups (a hybrid "
                                 "model) is not simulated: use one full-attention group")
            if self.log_stats:
                self.connector_prefix_cache_stats = PrefixCacheStats()
            if kv_transfer_config is not None:
                self.recompute_kv_load_failures = (
                    kv_transfer_config.kv_load_failure_policy == "recompute")
            connector.bind_gpu_block_pool(self.kv_cache_manager.block_pool)
            if hasattr(connector, "events"):
                # A connector that records events writes them into the step's list.
                connector.events = self.events
        # Requests whose asynchronous load finished (promoted at the next schedule()),
        # and those of them whose load failed.
        self.finished_recving_kv_req_ids: set[str] = set()
        self.failed_recving_kv_req_ids: set[str] = set()
        # Requests still prefilling (prefill chunks and async loads in flight): their
        # remaining blocks are reserved against new async loads. Kept only with a
        # connector (its only reader is the async-load admission).
        self._inflight_prefills: set = set()
        # With batches in flight (async scheduling) a step may still be writing a freed
        # request's blocks, and a consumer connector could reallocate and fill them by a
        # load not ordered against that write: such frees wait until every step that may
        # write them has been processed (the fence: non-empty steps scheduled/processed).
        max_concurrent_batches = 2 if self.scheduler_config.async_scheduling else 1
        self.defer_block_free = (connector is not None and max_concurrent_batches > 1
                                 and kv_transfer_config is not None
                                 and kv_transfer_config.is_kv_consumer)
        self.sched_step_seq = 0
        self.processed_step_seq = 0
        self.deferred_frees: deque[tuple[int, list]] = deque()

    def get_kv_connector(self):
        return self.connector

    # -- admission ------------------------------------------------------------------------
    def _record_connector_prefix_cache_stats(self, request, num_local_tokens: int,
                                             num_external_tokens: int) -> None:
        queries = request.num_tokens - num_local_tokens
        if self.connector_prefix_cache_stats is not None and queries != 0 \
                and request.num_computed_tokens == 0:
            self.connector_prefix_cache_stats.record(
                num_tokens=queries, num_hits=num_external_tokens,
                preempted=request.num_preemptions > 0)

    def _request_remaining_blocks(self, request) -> int:
        """Blocks the request still needs to allocate to hold its whole sequence."""
        full_num_tokens = min(request.num_tokens, self.max_model_len)
        return self.kv_cache_manager.get_num_blocks_to_allocate(
            request.request_id, full_num_tokens, ())

    def _inflight_prefill_reserved_blocks(self) -> int:
        """Blocks the in-flight prefills still need to finish (their reservation)."""
        return sum(self._request_remaining_blocks(req) for req in self._inflight_prefills)

    def _try_promote_blocked_waiting_request(self, request) -> bool:
        """A WAITING_FOR_REMOTE_KVS request whose load finished goes back to WAITING (or
        PREEMPTED, if it was preempted before)."""
        if request.status == _WAITING_FOR_REMOTE_KVS:
            if request.request_id not in self.finished_recving_kv_req_ids:
                return False
            failed = request.request_id in self.failed_recving_kv_req_ids
            self._update_waiting_for_remote_kv(request)
            request.status = (RequestStatus.PREEMPTED if request.num_preemptions
                              else RequestStatus.WAITING)
            if self.events is not None:
                self.events.append(RemoteKVsReady(request.request_id,
                                                  request.num_computed_tokens, failed))
            return True
        raise AssertionError("Unexpected blocked waiting status in promotion: "
                             f"{request.status.name} for request {request.request_id}")

    def _update_waiting_for_remote_kv(self, request) -> None:
        """The load finished: cache the blocks that arrived (after a failure, only those
        before the first invalid one; with none valid, free them all: a local hit may do
        better on retry)."""
        assert self.connector is not None
        kv = self.kv_cache_manager
        if request.request_id in self.failed_recving_kv_req_ids:
            if request.num_computed_tokens:
                # Cache the computed tokens that are valid.
                kv.cache_blocks(request, request.num_computed_tokens)
            else:
                kv.free(request)
            self.failed_recving_kv_req_ids.remove(request.request_id)
        else:
            # The blocks are ready: cache them (when prefix caching is on).
            kv.cache_blocks(request, request.num_computed_tokens)
            # A whole prompt arrived: recompute its last token to sample from.
            if request.num_computed_tokens == request.num_tokens:
                request.num_computed_tokens = request.num_tokens - 1
        self.finished_recving_kv_req_ids.remove(request.request_id)

    # -- the end of schedule() -----------------------------------------------------------------
    def _build_kv_connector_meta(self, connector, scheduler_output):
        return connector.build_connector_meta(scheduler_output)

    def _build_kv_connector_meta_for_step(self, scheduler_output, scheduled_reqs) -> None:
        """vLLM builds the connector's metadata before `_update_after_schedule`, so a
        connector reads each scheduled request's computed count from before this step;
        schedule() advanced it already (it does that work as it schedules), so it is taken
        back for the call. Then requests no longer prefilling leave `_inflight_prefills`."""
        num_scheduled_tokens = scheduler_output.num_scheduled_tokens
        for req in scheduled_reqs:
            req.num_computed_tokens -= num_scheduled_tokens[req.request_id]
        try:
            scheduler_output.kv_connector_metadata = self._build_kv_connector_meta(
                self.connector, scheduler_output)
        finally:
            for req in scheduled_reqs:
                req.num_computed_tokens += num_scheduled_tokens[req.request_id]
        if self._inflight_prefills:
            for req in scheduled_reqs:
                if not req.is_prefill_chunk:
                    self._inflight_prefills.discard(req)
        if self.defer_block_free and scheduler_output.total_num_scheduled_tokens > 0:
            # Advance the fence for a step that writes KV, and mark its requests.
            self.sched_step_seq += 1
            for req in scheduled_reqs:
                req.last_sched_seq = self.sched_step_seq

    # -- deferred frees ------------------------------------------------------------------------
    def _free_request_blocks(self, request) -> None:
        """Free the request's blocks, or (deferring) hold them back from the pool while a
        step in flight may still write them."""
        if not self.defer_block_free or request.last_sched_seq <= self.processed_step_seq:
            self.kv_cache_manager.free(request)
            return
        blocks = self.kv_cache_manager.pop_blocks_for_free(request)
        if blocks:
            self.deferred_frees.append((self.sched_step_seq, blocks))

    def _drain_deferred_frees(self) -> None:
        """Return the deferred blocks whose fence step has been processed (oldest first;
        the fences never decrease, so stop at the first still pending)."""
        while self.deferred_frees:
            fence, _ = self.deferred_frees[0]
            if fence > self.processed_step_seq:
                break
            _, blocks = self.deferred_frees.popleft()
            self.kv_cache_manager.block_pool.free_blocks(reversed(blocks))

    # -- finishing ---------------------------------------------------------------------------
    def _connector_finished(self, request) -> tuple[bool, dict | None]:
        """Ask the connector whether to keep the finished request's blocks (the ones
        covering its computed tokens are named) and what to tell the client."""
        if self.connector is None:
            return False, None
        block_ids = self.kv_cache_manager.get_block_ids_for_computed_tokens(
            request.request_id, request.num_computed_tokens)
        if not supports_hma(self.connector):
            return self.connector.request_finished(request, block_ids[0])
        return self.connector.request_finished_all_groups(request, block_ids)

    def _ordered(self, req_ids) -> list[str]:
        """Request ids of a set, in the order the requests were added (see above)."""
        if len(req_ids) <= 1:
            return list(req_ids)
        return [rid for rid in self.requests if rid in req_ids] + sorted(
            rid for rid in req_ids if rid not in self.requests)

    def _update_from_kv_xfer_finished(self, kv_connector_output) -> None:
        """The worker side's finished transfers: a received request is promoted at the
        next schedule(); a finished one's held blocks are freed."""
        if self.connector is not None:
            self.connector.update_connector_output(kv_connector_output)
        events = self.events
        for req_id in self._ordered(kv_connector_output.finished_recving or ()):
            assert req_id in self.requests
            req = self.requests[req_id]
            if events is not None:
                events.append(KVTransferFinished(req_id, "recving"))
            if req.status == _WAITING_FOR_REMOTE_KVS:
                self.finished_recving_kv_req_ids.add(req_id)
            else:
                assert RequestStatus.is_finished(req.status)
                self._free_blocks(req)
        for req_id in self._ordered(kv_connector_output.finished_sending or ()):
            assert req_id in self.requests
            if events is not None:
                events.append(KVTransferFinished(req_id, "sending"))
            self._free_blocks(self.requests[req_id])

    # -- load failures -------------------------------------------------------------------------
    def _update_requests_with_invalid_blocks(self, requests, invalid_block_ids: set[int],
                                             num_scheduled_tokens: dict[str, int],
                                             evict_blocks: bool = True
                                             ) -> tuple[dict[str, None], int, set[int]]:
        """Requests whose computed blocks include invalid ones: their computed count
        falls back to the first invalid block. A block shared by several requests is
        recomputed by the first only; the others keep what was cached before the step.
        Returns (affected ids, tokens to recompute, blocks to evict)."""
        affected_req_ids: dict[str, None] = {}
        total_affected_tokens = 0
        blocks_to_evict: set[int] = set()
        marked_invalid_block_ids: set[int] = set()
        block_size = self.block_size
        for request in requests:
            is_affected = False
            marked_invalid_block = False
            req_id = request.request_id
            (req_block_ids,) = self.kv_cache_manager.get_block_ids(req_id)
            # Only blocks that may hold externally computed tokens.
            req_num_computed_tokens = (request.num_computed_tokens
                                       - num_scheduled_tokens.get(req_id, 0))
            req_num_computed_blocks = -(-req_num_computed_tokens // block_size)
            for idx, block_id in zip(range(req_num_computed_blocks), req_block_ids):
                if block_id not in invalid_block_ids:
                    continue
                is_affected = True
                if block_id in marked_invalid_block_ids:
                    # Shared with an earlier request, which recomputes it.
                    continue
                marked_invalid_block_ids.add(block_id)
                if marked_invalid_block:
                    continue
                marked_invalid_block = True
                request.num_computed_tokens = idx * block_size
                total_affected_tokens += req_num_computed_tokens - request.num_computed_tokens
                if evict_blocks:
                    blocks_to_evict.update(req_block_ids[idx:])
            if is_affected:
                if not marked_invalid_block:
                    # Every invalid block is recomputed by an earlier request: count only
                    # what was computed before this step.
                    total_affected_tokens += (request.num_computed_tokens
                                              - req_num_computed_tokens)
                    request.num_computed_tokens = req_num_computed_tokens
                affected_req_ids[req_id] = None
                if self.events is not None:
                    self.events.append(KVLoadFailed(
                        req_id, tuple(b for b in req_block_ids if b in invalid_block_ids),
                        request.num_computed_tokens,
                        "recompute" if self.recompute_kv_load_failures else "fail"))
        return affected_req_ids, total_affected_tokens, blocks_to_evict

    def _handle_invalid_blocks(self, invalid_block_ids: set[int],
                               num_scheduled_tokens: dict[str, int]) -> dict[str, None]:
        """Requests hit by invalid blocks, to be skipped in update_from_output's loop:
        those loading asynchronously (not cached yet, nothing to evict) and running ones
        that loaded synchronously."""
        async_load_reqs = [req for req in self.skipped_waiting
                           if req.status == _WAITING_FOR_REMOTE_KVS]
        async_failed_req_ids, _, _ = self._update_requests_with_invalid_blocks(
            async_load_reqs, invalid_block_ids, num_scheduled_tokens, evict_blocks=False)
        sync_failed_req_ids, _, sync_blocks_to_evict = (
            self._update_requests_with_invalid_blocks(
                self.running, invalid_block_ids, num_scheduled_tokens, evict_blocks=True))
        if not async_failed_req_ids and not sync_failed_req_ids:
            return {}
        if sync_blocks_to_evict and not self.recompute_kv_load_failures:
            # Failing: nobody recomputes them, so they must not be hit later.
            self.kv_cache_manager.evict_blocks(sync_blocks_to_evict)
        if not self.recompute_kv_load_failures:
            return {**async_failed_req_ids, **sync_failed_req_ids}
        # Recompute: async requests retry once their load completes.
        self.failed_recving_kv_req_ids |= set(async_failed_req_ids)
        return sync_failed_req_ids
