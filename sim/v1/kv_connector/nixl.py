"""NIXL's connector, pull mode, as vLLM v0.25.1 runs it for P/D disaggregation
(`vllm/distributed/kv_transfer/kv_connector/v1/nixl/`: `connector.py` `NixlConnector`,
`base_scheduler.py` + `pull_scheduler.py` `NixlConnectorScheduler`, `metadata.py`,
`base_worker.py` + `pull_worker.py` for the worker side).

The lifecycle of one request, both instances running this connector:

1. The proxy sends the request to the PREFILL instance with
   `kv_transfer_params={"do_remote_decode": True}` and `max_tokens=1`. It is scheduled like
   any request (`update_state_after_alloc` notes it in `_reqs_in_batch`), samples one token
   and finishes `FINISHED_LENGTH_CAPPED`. `request_finished` then answers
   `delay_free_blocks=True` and the `kv_transfer_params` the proxy forwards: the block ids
   covering its computed tokens (`remote_block_ids`), this engine's id, the request id. The
   scheduler keeps the blocks; the worker side starts a lease (`kv_lease_duration`, 30 s).
2. The proxy sends the request to the DECODE instance with those params
   (`do_remote_prefill: True`). `get_num_new_matched_tokens` answers: every prompt token not
   hit in the local prefix cache, loaded asynchronously. The scheduler allocates blocks for
   them (not cached yet), the request waits in `WAITING_FOR_REMOTE_KVS`, and
   `update_state_after_alloc` records the unhashed local blocks to receive into; the
   next `build_connector_meta` hands them to the worker, which reads the remote blocks
   (the tail of `remote_block_ids`, as many as there are local blocks to fill).
3. When the read is done the decode worker reports `finished_recving`: the scheduler caches
   the blocks and schedules the request with its prompt computed, except the last token,
   which is recomputed to sample from. The read also notifies the prefill worker, which
   reports `finished_sending`: the prefill scheduler frees the blocks.

Aborts: a prefill request aborted before it finishes frees at once (`_reqs_not_processed`);
a finished one keeps its blocks until read or until the lease expires (an abort does not
reach it). A decode request aborted before its read was set up (`do_remote_prefill` still
set) sends a notification without reading, so the prefill side frees. A failed read marks
every block of the request invalid and reports it received: the scheduler's
`kv_load_failure_policy` decides. The decode side renews the prefill side's leases with
heartbeats while its requests wait.

Left out (none of it changes which blocks are held, copied or freed, and when, for one
prefill and one decode instance of the same model): push mode, the bidirectional
(decode-to-prefill) transfer and its `kv_recompute_threshold`, host buffers
(`kv_buffer_device="cpu"`), hybrid models (sliding-window clipping, Mamba's state; the
Mamba N-1 prompt truncation is kept as a flag, `has_mamba`, for vLLM's test of it),
heterogeneous TP and block sizes, the handshake (done before the first request here),
MLA, stats and the side channel's host and port (kept as plain values).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sim.v1.kv_connector.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
    SupportsHMA,
)

ReqId = str
EngineId = str
BlockIds = tuple[list[int], ...]

DEFAULT_KV_LEASE_DURATION = 30          # seconds (extra config "kv_lease_duration")
DEFAULT_SIDE_CHANNEL_HOST = "localhost"  # envs.VLLM_NIXL_SIDE_CHANNEL_HOST
DEFAULT_SIDE_CHANNEL_PORT = 5600         # envs.VLLM_NIXL_SIDE_CHANNEL_PORT


# -- metadata.py ---------------------------------------------------------------------------
@dataclass
class HeartbeatInfo:
    """Heartbeat data for one remote (prefill) engine, sent by the decode worker."""
    req_ids: set[ReqId]
    host: str
    port: int
    tp_size: int


@dataclass
class RemoteMeta:
    block_ids: BlockIds
    host: str
    port: int
    engine_id: EngineId
    request_id: ReqId


@dataclass
class ReqMeta:
    local_block_ids: BlockIds
    tp_size: int
    remote: RemoteMeta | None = None


class NixlConnectorMetadata(KVConnectorMetadata):
    def __init__(self) -> None:
        self.reqs_to_recv: dict[ReqId, ReqMeta] = {}
        self.reqs_to_send: dict[ReqId, float] = {}
        self.reqs_in_batch: set[ReqId] = set()
        self.reqs_not_processed: set[ReqId] = set()
        self.heartbeat_by_engine: dict[EngineId, HeartbeatInfo] = {}

    def add_new_req_to_recv(self, request_id: ReqId, local_block_ids: BlockIds,
                            kv_transfer_params: dict[str, Any]) -> None:
        self.reqs_to_recv[request_id] = ReqMeta(
            local_block_ids=local_block_ids,
            tp_size=kv_transfer_params.get("tp_size", 1),
            remote=RemoteMeta(
                block_ids=kv_transfer_params["remote_block_ids"],
                engine_id=kv_transfer_params["remote_engine_id"],
                request_id=kv_transfer_params["remote_request_id"],
                host=kv_transfer_params["remote_host"],
                port=kv_transfer_params["remote_port"]))


_REMOTE_FIELDS = ("remote_engine_id", "remote_request_id", "remote_host", "remote_port")


# -- base_scheduler.py + pull_scheduler.py ------------------------------------------------
class NixlConnectorScheduler:
    """The scheduler side (pull mode: the decode instance READs the prefill's blocks)."""

    def __init__(self, kv_transfer_config, engine_id: EngineId, block_size: int,
                 clock=None, tp_size: int = 1, has_mamba: bool = False) -> None:
        self.block_size = block_size
        self.engine_id = engine_id
        self.clock = clock or (lambda: 0.0)
        self.tp_size = tp_size
        self.side_channel_host = DEFAULT_SIDE_CHANNEL_HOST
        self.side_channel_port = DEFAULT_SIDE_CHANNEL_PORT
        self._kv_lease_duration: int = kv_transfer_config.get_from_extra_config(
            "kv_lease_duration", DEFAULT_KV_LEASE_DURATION)
        self._heartbeat_interval = self._kv_lease_duration // 6
        self._has_mamba = has_mamba
        # Requests whose recv (decode side) is to start, and requests read by a remote
        # instance (prefill side) with their lease's expiry; the per-step sets below.
        self._reqs_need_recv: dict[ReqId, tuple[Any, BlockIds]] = {}
        self._reqs_need_send: dict[ReqId, float] = {}
        self._reqs_in_batch: set[ReqId] = set()
        self._reqs_not_processed: set[ReqId] = set()
        # Decode side: the remote requests to keep alive, by remote engine.
        self._heartbeat_by_engine: dict[EngineId, HeartbeatInfo] = {}
        self._heartbeat_req_engine: dict[ReqId, tuple[EngineId, ReqId]] = {}
        self._last_heartbeat_time: float = 0.0

    def on_new_request(self, request) -> None:
        """Track a decode-side request whose remote blocks need heartbeats."""
        params = request.kv_transfer_params
        if params is None or not params.get("do_remote_prefill"):
            return
        remote_engine_id = params.get("remote_engine_id")
        remote_request_id = params.get("remote_request_id")
        host, port = params.get("remote_host"), params.get("remote_port")
        tp_size = params.get("tp_size")
        if None in (remote_engine_id, remote_request_id, host, port, tp_size):
            return
        if remote_engine_id not in self._heartbeat_by_engine:
            self._heartbeat_by_engine[remote_engine_id] = HeartbeatInfo(set(), host, port,
                                                                        tp_size)
        self._heartbeat_by_engine[remote_engine_id].req_ids.add(remote_request_id)
        self._heartbeat_req_engine[request.request_id] = (remote_engine_id, remote_request_id)

    def _stop_heartbeat(self, req_id: ReqId) -> None:
        key = self._heartbeat_req_engine.pop(req_id, None)
        if key:
            engine_id, remote_id = key
            info = self._heartbeat_by_engine.get(engine_id)
            if info:
                info.req_ids.discard(remote_id)
                if not info.req_ids:
                    del self._heartbeat_by_engine[engine_id]

    def next_heartbeat_s(self) -> float | None:
        """When build_connector_meta next sends heartbeats (an addition: a caller with a
        clock wakes an idle engine then); None when no remote request needs them."""
        if not self._heartbeat_by_engine:
            return None
        return self._last_heartbeat_time + self._heartbeat_interval

    def _get_remote_prefill_token_count(self, num_prompt_tokens: int) -> int:
        """Decode side: N - 1 for Mamba models (the decoder recomputes the last token)."""
        if self._has_mamba and num_prompt_tokens > 1:
            return num_prompt_tokens - 1
        return num_prompt_tokens

    def _truncate_mamba_request_for_prefill(self, request) -> None:
        """Prefill side, Mamba models: drop the last prompt token (once) so the prefiller
        computes the state before it; the decoder recomputes that token."""
        params = request.kv_transfer_params
        if (params is not None and not params.get("_p_side_truncated")
                and request.num_prompt_tokens > 1):
            request.truncate_last_prompt_token()
            request.max_tokens = 1
            params["_p_side_truncated"] = True

    def get_num_new_matched_tokens(self, request, num_computed_tokens: int
                                   ) -> tuple[int, bool]:
        """Remote prefill: every prompt token beyond the local hit, loaded asynchronously."""
        params = request.kv_transfer_params
        if params is not None and params.get("do_remote_prefill"):
            actual = self._get_remote_prefill_token_count(len(request.prompt_token_ids))
            count = actual - num_computed_tokens
            if count > 0:
                return count, True
        if params is not None and params.get("do_remote_decode") and self._has_mamba:
            self._truncate_mamba_request_for_prefill(request)
        # (The bidirectional decode-to-prefill pull is not simulated.)
        return 0, False

    def update_state_after_alloc(self, request, blocks, num_external_tokens: int) -> None:
        params = request.kv_transfer_params
        if not params:
            return
        if params.get("do_remote_decode"):
            self._reqs_in_batch.add(request.request_id)
        elif params.get("do_remote_prefill"):
            if params.get("remote_block_ids"):
                if all(p in params for p in _REMOTE_FIELDS):
                    # Receive into the blocks allocated for the external tokens (the
                    # unhashed ones: local hits are hashed). An empty list, a full local
                    # hit, still tells the prefill side to free.
                    local_block_ids: BlockIds = (
                        (blocks.get_unhashed_block_ids(),) if num_external_tokens > 0
                        else ())
                    self._reqs_need_recv[request.request_id] = (request, local_block_ids)
                # else: invalid params (vLLM logs a warning): no transfer.
            else:
                assert num_external_tokens == 0
            # Only one KV transfer per request.
            params["do_remote_prefill"] = False
            params["_remote_blocks_processed"] = True

    def build_connector_meta(self, scheduler_output) -> NixlConnectorMetadata:
        meta = NixlConnectorMetadata()
        for req_id, (req, block_ids) in self._reqs_need_recv.items():
            meta.add_new_req_to_recv(req_id, block_ids, req.kv_transfer_params)
        meta.reqs_to_send = self._reqs_need_send
        meta.reqs_in_batch = self._reqs_in_batch
        meta.reqs_not_processed = self._reqs_not_processed
        if self._heartbeat_by_engine:
            now = self.clock()
            if now - self._last_heartbeat_time >= self._heartbeat_interval:
                self._last_heartbeat_time = now
                meta.heartbeat_by_engine = {
                    e: HeartbeatInfo(set(i.req_ids), i.host, i.port, i.tp_size)
                    for e, i in self._heartbeat_by_engine.items()}
        self._reqs_need_recv.clear()
        self._reqs_in_batch = set()
        self._reqs_not_processed = set()
        self._reqs_need_send = {}
        return meta

    def update_connector_output(self, connector_output) -> None:
        """Stop heartbeating for requests whose transfer completed."""
        for req_id in connector_output.finished_recving or ():
            self._stop_heartbeat(req_id)

    def request_finished(self, request, block_ids: BlockIds
                         ) -> tuple[bool, dict[str, Any] | None]:
        """Prefill side: keep the blocks for the decode side to read, and say where they
        are. Decode side: nothing to keep (unless the read was never set up: then the
        prefill side is told to free)."""
        from sim.v1.request import RequestStatus
        params = request.kv_transfer_params
        if not params:
            return False, None
        is_p_node = bool(params.get("do_remote_decode"))
        self._stop_heartbeat(request.request_id)
        if params.get("do_remote_prefill"):
            # Finished before update_state_after_alloc (aborted while waiting): a read
            # with no local blocks makes the worker notify the prefill side to free.
            self._reqs_need_recv[request.request_id] = (request, ())
            params["do_remote_prefill"] = False
            return False, None
        if not is_p_node:
            return False, None
        if request.status not in (RequestStatus.FINISHED_LENGTH_CAPPED,
                                  RequestStatus.FINISHED_STOPPED):
            # Aborted (or failed) before its prefill finished: free now, stop tracking.
            self._reqs_not_processed.add(request.request_id)
            return False, None
        delay_free_blocks = any(len(group) > 0 for group in block_ids)
        if delay_free_blocks:
            self._reqs_need_send[request.request_id] = self.clock() + self._kv_lease_duration
        return delay_free_blocks, dict(
            do_remote_prefill=True,
            do_remote_decode=False,
            remote_block_ids=block_ids,
            remote_engine_id=self.engine_id,
            remote_request_id=request.request_id,
            remote_host=self.side_channel_host,
            remote_port=self.side_channel_port,
            tp_size=self.tp_size,
            remote_num_tokens=request.num_computed_tokens if delay_free_blocks else 0,
        )


NixlPullConnectorScheduler = NixlConnectorScheduler


# -- base_worker.py + pull_worker.py, without the tensors -------------------------------
class NixlConnectorWorker:
    """The worker side. What nixl moves it asks of `transport` (the caller's stand-in for
    the NIXL agent and the link), with NIXL's calls: `make_prepped_xfer` (a READ of remote
    blocks into local ones, with a notification to the remote side when it completes),
    `check_xfer_state`, `send_notif`, `get_new_notifs`."""

    def __init__(self, kv_transfer_config, engine_id: EngineId, transport, clock=None,
                 world_size: int = 1) -> None:
        self.engine_id = engine_id
        self.transport = transport
        self.clock = clock or (lambda: 0.0)
        self.world_size = world_size
        kv_lease_duration = kv_transfer_config.get_from_extra_config(
            "kv_lease_duration", DEFAULT_KV_LEASE_DURATION)
        self._lease_extension = kv_lease_duration * 2 // 3
        self._recving_metadata: dict[ReqId, ReqMeta] = {}
        self._recving_transfers: dict[ReqId, list] = {}
        # Prefill side: requests read by a remote instance, with their lease's expiry
        # (insertion order, so the oldest come first), and those of the batch.
        self._reqs_to_send: dict[ReqId, float] = {}
        self._reqs_to_process: set[ReqId] = set()
        self.consumer_notification_counts_by_req: dict[ReqId, int] = {}
        self._invalid_block_ids: set[int] = set()
        self._failed_recv_reqs: set[ReqId] = set()
        self.num_expired_reqs = 0   # an addition: leases that ran out (vLLM counts them too)

    def start_load_kv(self, metadata: NixlConnectorMetadata) -> None:
        for req_id, meta in metadata.reqs_to_recv.items():
            self._recving_metadata[req_id] = meta
            self._read_blocks_for_req(req_id, meta)
        for req_id in metadata.reqs_in_batch:
            self._reqs_to_process.add(req_id)
        for req_id in metadata.reqs_not_processed:
            self._reqs_to_process.discard(req_id)
            assert req_id not in self._reqs_to_send
        for req_id, expiration_time in metadata.reqs_to_send.items():
            if req_id in self._reqs_to_process:
                self._reqs_to_send[req_id] = expiration_time
        for engine_id, hb_info in metadata.heartbeat_by_engine.items():
            self.transport.send_notif(self.engine_id, engine_id,
                                      "HB:" + ",".join(sorted(hb_info.req_ids)))

    def _read_blocks_for_req(self, req_id: ReqId, meta: ReqMeta) -> None:
        remote = meta.remote
        notif_id = f"{remote.request_id}:{self.world_size}"
        local_block_ids = list(meta.local_block_ids[0]) if meta.local_block_ids else []
        if not local_block_ids:
            # A full local prefix hit (or an aborted request): nothing to read, but the
            # prefill side is told it may free.
            self.transport.send_notif(self.engine_id, remote.engine_id, notif_id)
            self._recving_metadata.pop(req_id, None)
            return
        remote_block_ids = list(remote.block_ids[0])
        assert len(local_block_ids) <= len(remote_block_ids)
        # Partial local hit: read only the remote blocks the local ones do not have.
        if len(local_block_ids) < len(remote_block_ids):
            remote_block_ids = remote_block_ids[-len(local_block_ids):]
        try:
            handle = self.transport.make_prepped_xfer(
                "READ", self.engine_id, req_id, local_block_ids, remote.engine_id,
                remote_block_ids, notif_msg=notif_id)
        except Exception:   # the transport refused the transfer: its blocks are invalid
            self._handle_failed_transfer(req_id)
            return
        self._recving_transfers.setdefault(req_id, []).append(handle)

    def _handle_failed_transfer(self, req_id: ReqId) -> None:
        meta = self._recving_metadata.get(req_id)
        if meta is not None and meta.local_block_ids:
            self._invalid_block_ids |= set(meta.local_block_ids[0])
        self._failed_recv_reqs.add(req_id)

    def _pop_done_transfers(self) -> set[ReqId]:
        done: set[ReqId] = set()
        for req_id, handles in list(self._recving_transfers.items()):
            in_progress = []
            for handle in handles:
                state = self.transport.check_xfer_state(handle)
                if state == "DONE":
                    continue
                if state == "PROC":
                    in_progress.append(handle)
                    continue
                self._handle_failed_transfer(req_id)
            if not in_progress:
                done.add(req_id)
                del self._recving_transfers[req_id]
            else:
                self._recving_transfers[req_id] = in_progress
        return done

    def _get_new_notifs(self) -> set[ReqId]:
        notified: set[ReqId] = set()
        for msg in self.transport.get_new_notifs(self.engine_id):
            if msg.startswith("HB:"):
                new_expiry = self.clock() + self._lease_extension
                for req_id in msg[3:].split(","):
                    if req_id in self._reqs_to_send:
                        self._reqs_to_send[req_id] = max(self._reqs_to_send[req_id],
                                                         new_expiry)
                continue
            req_id, _tp_size = msg.rsplit(":", 1)
            if req_id not in self._reqs_to_send and req_id not in self._reqs_to_process:
                continue   # vLLM logs: blocks of an unknown (expired?) request were read
            count = self.consumer_notification_counts_by_req.get(req_id, 0) + 1
            self.consumer_notification_counts_by_req[req_id] = count
            if count == 1:   # one consumer per producer (same TP on both sides)
                notified.add(req_id)
                del self.consumer_notification_counts_by_req[req_id]
                self._reqs_to_process.remove(req_id)
                self._reqs_to_send.pop(req_id, None)
        return notified

    def get_finished(self) -> tuple[set[ReqId], set[ReqId]]:
        done_sending = self._get_new_notifs()
        done_recving = self._pop_done_transfers()
        done_recving |= self._failed_recv_reqs
        self._failed_recv_reqs = set()
        for req_id in done_recving:
            self._recving_metadata.pop(req_id, None)
        # Leases that ran out: free the blocks so they are not stranded.
        now = self.clock()
        while self._reqs_to_send:
            req_id, expires = next(iter(self._reqs_to_send.items()))
            if now < expires:
                break
            self.consumer_notification_counts_by_req.pop(req_id, None)
            self._reqs_to_process.remove(req_id)
            del self._reqs_to_send[req_id]
            self.num_expired_reqs += 1
            done_sending.add(req_id)
        return done_sending, done_recving

    def get_block_ids_with_load_errors(self) -> set[int]:
        result = self._invalid_block_ids
        self._invalid_block_ids = set()
        return result

    def lease_expiry(self, req_id: ReqId) -> float | None:
        """When the lease on a request's blocks runs out (None: not waiting to be read)."""
        return self._reqs_to_send.get(req_id)

    def next_expiry(self) -> float | None:
        """When the oldest lease runs out (an addition: the caller's clock jumps there
        when nothing else happens)."""
        return next(iter(self._reqs_to_send.values()), None)


# -- connector.py ------------------------------------------------------------------------
class NixlConnector(KVConnectorBase_V1, SupportsHMA):
    """One connector per role, as in vLLM: the scheduler's half or a worker's half."""

    def __init__(self, kv_transfer_config, role: KVConnectorRole, cache_config=None,
                 clock=None, transport=None, has_mamba: bool = False) -> None:
        super().__init__(kv_transfer_config, role, cache_config, clock)
        assert kv_transfer_config.engine_id is not None
        self.engine_id = kv_transfer_config.engine_id
        self.kv_transfer_config = kv_transfer_config
        self.connector_scheduler: NixlConnectorScheduler | None = None
        self.connector_worker: NixlConnectorWorker | None = None
        if role == KVConnectorRole.SCHEDULER:
            block_size = cache_config.block_size if cache_config is not None else 16
            self.connector_scheduler = NixlConnectorScheduler(
                kv_transfer_config, self.engine_id, block_size, self.clock,
                has_mamba=has_mamba)
        else:
            if transport is None:
                raise ValueError("the NIXL worker side needs a transport (the link to "
                                 "the other instance)")
            self.connector_worker = NixlConnectorWorker(kv_transfer_config, self.engine_id,
                                                        transport, self.clock)

    # scheduler side
    def get_num_new_matched_tokens(self, request, num_computed_tokens: int):
        return self.connector_scheduler.get_num_new_matched_tokens(request,
                                                                   num_computed_tokens)

    def update_state_after_alloc(self, request, blocks, num_external_tokens: int) -> None:
        return self.connector_scheduler.update_state_after_alloc(request, blocks,
                                                                 num_external_tokens)

    def build_connector_meta(self, scheduler_output) -> NixlConnectorMetadata:
        return self.connector_scheduler.build_connector_meta(scheduler_output)

    def on_new_request(self, request) -> None:
        self.connector_scheduler.on_new_request(request)

    def update_connector_output(self, connector_output) -> None:
        self.connector_scheduler.update_connector_output(connector_output)

    def request_finished(self, request, block_ids: list[int]):
        return self.connector_scheduler.request_finished(request, (block_ids,))

    def request_finished_all_groups(self, request, block_ids: BlockIds):
        return self.connector_scheduler.request_finished(request, block_ids)

    # worker side
    def start_load_kv(self, **kwargs: Any) -> None:
        self.connector_worker.start_load_kv(self._get_connector_metadata())

    def get_finished(self, finished_req_ids: set[str]):
        return self.connector_worker.get_finished()

    def get_block_ids_with_load_errors(self) -> set[int]:
        return self.connector_worker.get_block_ids_with_load_errors()

