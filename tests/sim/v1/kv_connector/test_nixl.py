"""NIXL's connector (sim/v1/kv_connector/nixl.py) beyond vLLM's lifecycle tests: the
aborts on both sides, the blocks a partial local hit reads into, the kv_transfer_params of
a finished prefill, heartbeats and leases, and the worker side's reads, notifications,
expiries and failures over a fake transport."""
from kv_connector_utils import (
    assert_scheduler_empty,
    create_model_runner_output,
    create_request,
    create_scheduler,
    empty_model_runner_output,
)

from sim.v1.config import CacheConfig, KVTransferConfig
from sim.v1.kv_connector import KVConnectorFactory, KVConnectorRole
from sim.v1.kv_connector.nixl import NixlConnector, NixlConnectorMetadata
from sim.v1.request import RequestStatus


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_factory_builds_nixl_and_rejects_unknown_names():
    config = KVTransferConfig(kv_connector="NixlConnector", engine_id="e", kv_role="kv_both")
    connector = KVConnectorFactory.create_connector(config, KVConnectorRole.SCHEDULER,
                                                    CacheConfig(block_size=4))
    assert isinstance(connector, NixlConnector) and connector.connector_scheduler.block_size == 4
    try:
        KVConnectorFactory.create_connector(
            KVTransferConfig(kv_connector="Nope", kv_role="kv_both"), KVConnectorRole.SCHEDULER)
    except ValueError as err:
        assert "Unsupported connector type: Nope" in str(err)
    else:
        raise AssertionError("an unknown connector was built")


def test_kv_transfer_config_checks():
    for bad in (dict(kv_role="kv_sideways"), dict(kv_connector="NixlConnector"),
                dict(kv_load_failure_policy="retry")):
        try:
            KVTransferConfig(**bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")
    assert KVTransferConfig().kv_load_failure_policy == "fail"   # v0.25.1's default


def test_prefill_side_kv_transfer_params_name_the_computed_blocks():
    clock = Clock()
    clock.t = 7.0
    scheduler = create_scheduler(kv_role="kv_producer", connector=NixlConnector(
        KVTransferConfig(kv_connector="NixlConnector", engine_id="prefill",
                         kv_role="kv_producer"), KVConnectorRole.SCHEDULER,
        CacheConfig(block_size=16), clock=clock))
    request = create_request(num_tokens=40, do_remote_decode=True)
    scheduler.add_request(request)
    so = scheduler.schedule()
    blocks = [b.block_id for b in scheduler.kv_cache_manager.req_to_blocks[request.request_id]]
    out = scheduler.update_from_output(so, create_model_runner_output([request]))
    params = out[0].kv_transfer_params
    assert params == dict(do_remote_prefill=True, do_remote_decode=False,
                          remote_block_ids=(blocks,), remote_engine_id="prefill",
                          remote_request_id=request.request_id, remote_host="localhost",
                          remote_port=5600, tp_size=1, remote_num_tokens=40)
    # The lease starts with the step that hands the request to the worker.
    meta = scheduler.schedule().kv_connector_metadata
    assert meta.reqs_to_send == {request.request_id: 7.0 + 30}
    assert meta.reqs_in_batch == set()


def test_prefill_request_aborted_before_it_finishes_frees_at_once():
    scheduler = create_scheduler(kv_role="kv_producer", max_num_batched_tokens=16)
    request = create_request(num_tokens=40, do_remote_decode=True)
    scheduler.add_request(request)
    so = scheduler.schedule()                       # a first chunk of 16
    assert scheduler.update_from_output(so, create_model_runner_output([])) == []
    assert so.kv_connector_metadata.reqs_in_batch == {request.request_id}
    scheduler.finish_requests(request.request_id, RequestStatus.FINISHED_ABORTED)
    assert request.request_id not in scheduler.requests
    meta = scheduler.schedule().kv_connector_metadata
    assert meta.reqs_not_processed == {request.request_id}
    assert_scheduler_empty(scheduler)


def test_decode_request_aborted_before_its_read_tells_the_prefill_side_to_free():
    """No room for its blocks: it waits unallocated; aborted, NIXL adds a read with no
    local blocks, which makes the worker notify the prefill side."""
    scheduler = create_scheduler(num_blocks=3)      # 2 usable blocks: 40 tokens need 3
    request = create_request(num_tokens=40, do_remote_prefill=True)
    scheduler.add_request(request)
    so = scheduler.schedule()
    assert request.status == RequestStatus.WAITING and not so.kv_connector_metadata.reqs_to_recv
    scheduler.finish_requests(request.request_id, RequestStatus.FINISHED_ABORTED)
    meta = scheduler.schedule().kv_connector_metadata
    assert list(meta.reqs_to_recv) == [request.request_id]
    assert meta.reqs_to_recv[request.request_id].local_block_ids == ()
    assert meta.reqs_to_recv[request.request_id].remote.request_id == "prefill-" + \
        request.request_id.split("-")[1]
    assert request.kv_transfer_params["do_remote_prefill"] is False
    assert_scheduler_empty(scheduler)


def test_decode_request_aborted_during_its_read_keeps_its_blocks_until_it_lands():
    scheduler = create_scheduler()
    request = create_request(num_tokens=40, do_remote_prefill=True)
    scheduler.add_request(request)
    scheduler.update_from_output(scheduler.schedule(), empty_model_runner_output())
    assert request.status == RequestStatus.WAITING_FOR_REMOTE_KVS
    scheduler.finish_requests(request.request_id, RequestStatus.FINISHED_ABORTED)
    assert request.request_id in scheduler.requests
    assert len(scheduler.kv_cache_manager.req_to_blocks[request.request_id]) == 3
    assert not scheduler.skipped_waiting
    scheduler.update_from_output(scheduler.schedule(), empty_model_runner_output(
        finished_recving={request.request_id}))
    assert_scheduler_empty(scheduler)


def test_a_partial_local_hit_reads_into_the_unhashed_blocks_only():
    scheduler = create_scheduler()
    local = create_request(request_id=1, num_tokens=48, common_prefix_len=32)
    scheduler.add_request(local)
    so = scheduler.schedule()
    scheduler.update_from_output(so, create_model_runner_output([local], use_eos=True))
    remote = create_request(request_id=2, num_tokens=48, common_prefix_len=32,
                            do_remote_prefill=True)
    scheduler.add_request(remote)
    so = scheduler.schedule()
    table = [b.block_id for b in scheduler.kv_cache_manager.req_to_blocks[remote.request_id]]
    assert remote.num_computed_tokens == 48       # 32 hit locally + 16 from the remote
    meta = so.kv_connector_metadata
    assert meta.reqs_to_recv[remote.request_id].local_block_ids == (table[2:],)


def test_heartbeats_keep_the_prefill_side_leases_alive():
    clock = Clock()
    connector = NixlConnector(KVTransferConfig(kv_connector="NixlConnector", engine_id="d",
                                               kv_role="kv_consumer",
                                               kv_connector_extra_config={
                                                   "kv_lease_duration": 12}),
                              KVConnectorRole.SCHEDULER, CacheConfig(), clock=clock)
    scheduler = create_scheduler(num_blocks=3, connector=connector)   # no room: it waits
    request = create_request(num_tokens=40, do_remote_prefill=True)
    scheduler.add_request(request)
    assert connector.connector_scheduler.next_heartbeat_s() == 2.0   # 12 // 6
    clock.t = 1.0
    assert not scheduler.schedule().kv_connector_metadata.heartbeat_by_engine
    clock.t = 2.5
    hb = scheduler.schedule().kv_connector_metadata.heartbeat_by_engine
    assert set(hb) == {"my-engine-id"} and hb["my-engine-id"].req_ids == {"prefill-" +
                                                                           request.request_id[3:]}
    assert connector.connector_scheduler.next_heartbeat_s() == 4.5
    scheduler.finish_requests(request.request_id, RequestStatus.FINISHED_ABORTED)
    assert connector.connector_scheduler.next_heartbeat_s() is None


class FakeTransport:
    def __init__(self, clock) -> None:
        self.clock = clock
        self.reads = []
        self.notifs = []
        self.states = {}

    def make_prepped_xfer(self, op, local_engine_id, req_id, local_ids, remote_engine_id,
                          remote_ids, notif_msg):
        self.reads.append((req_id, local_ids, remote_ids, notif_msg))
        self.states[len(self.reads) - 1] = "PROC"
        return len(self.reads) - 1

    def check_xfer_state(self, handle):
        return self.states[handle]

    def send_notif(self, from_engine, to_engine, msg):
        self.notifs.append((to_engine, msg))

    def get_new_notifs(self, engine_id):
        got = [m for e, m in self.notifs if e == engine_id]
        self.notifs = [(e, m) for e, m in self.notifs if e != engine_id]
        return got


def _worker(engine_id, clock, transport, lease=30):
    return NixlConnector(KVTransferConfig(kv_connector="NixlConnector", engine_id=engine_id,
                                          kv_role="kv_both",
                                          kv_connector_extra_config={"kv_lease_duration": lease}),
                         KVConnectorRole.WORKER, clock=clock, transport=transport)


def _recv_meta(req_id, local, remote, remote_req="p-1"):
    meta = NixlConnectorMetadata()
    meta.add_new_req_to_recv(req_id, (local,), dict(
        remote_block_ids=(remote,), remote_engine_id="prefill", remote_request_id=remote_req,
        remote_host="h", remote_port=1, tp_size=1))
    return meta


def test_worker_reads_the_tail_of_the_remote_blocks_and_reports_when_done():
    clock = Clock()
    transport = FakeTransport(clock)
    worker = _worker("decode", clock, transport)
    worker.bind_connector_metadata(_recv_meta("d-1", [7, 8], [1, 2, 3, 4]))
    worker.start_load_kv()
    assert transport.reads == [("d-1", [7, 8], [3, 4], "p-1:1")]
    assert worker.get_finished(set()) == (set(), set())
    transport.states[0] = "DONE"
    assert worker.get_finished(set()) == (set(), {"d-1"})
    assert worker.get_block_ids_with_load_errors() == set()


def test_worker_failed_read_marks_every_local_block_invalid():
    clock = Clock()
    transport = FakeTransport(clock)
    worker = _worker("decode", clock, transport)
    worker.bind_connector_metadata(_recv_meta("d-1", [7, 8, 9], [1, 2, 3]))
    worker.start_load_kv()
    transport.states[0] = "ERR"
    assert worker.get_finished(set()) == (set(), {"d-1"})
    assert worker.get_block_ids_with_load_errors() == {7, 8, 9}
    assert worker.get_block_ids_with_load_errors() == set()


def test_worker_prefill_side_frees_on_notification_or_when_the_lease_runs_out():
    clock = Clock()
    transport = FakeTransport(clock)
    worker = _worker("prefill", clock, transport, lease=30)
    meta = NixlConnectorMetadata()
    meta.reqs_in_batch = {"a", "b", "c"}
    meta.reqs_to_send = {"a": 30.0, "b": 30.0, "c": 31.0}
    worker.bind_connector_metadata(meta)
    worker.start_load_kv()
    transport.notifs.append(("prefill", "a:1"))
    transport.notifs.append(("prefill", "zzz:1"))       # unknown: ignored
    assert worker.get_finished(set()) == ({"a"}, set())
    # A heartbeat at 15 s extends b's lease to 15 + 20 (2/3 of 30).
    clock.t = 15.0
    transport.notifs.append(("prefill", "HB:b"))
    assert worker.get_finished(set()) == (set(), set())
    assert worker.connector_worker.lease_expiry("b") == 35.0
    # The oldest lease first, and the loop stops at the first that has not run out.
    clock.t = 32.0
    assert worker.get_finished(set()) == (set(), set())    # b (35) is first, not due
    clock.t = 35.0
    assert worker.get_finished(set()) == ({"b", "c"}, set())
    assert worker.connector_worker.num_expired_reqs == 2


def test_a_connector_with_a_hybrid_model_is_refused():
    # The simulation's connector path covers one full-attention group (the P/D page's
    # model); a hybrid model with a connector is refused with a message, not mis-simulated.
    import pytest

    from sim.v1.config import CacheConfig, KVTransferConfig, SchedulerConfig
    from sim.v1.engine import LLMEngine
    from sim.v1.kv_cache_utils import attention_layer_specs, make_kv_cache_config

    specs = attention_layer_specs(["full_attention", "sliding_attention"], 16, sliding_window=32)
    config = make_kv_cache_config(20, specs, False)
    with pytest.raises(ValueError, match="hybrid model"):
        LLMEngine(CacheConfig(block_size=16, num_gpu_blocks=20), SchedulerConfig(),
                  kv_cache_config=config,
                  kv_transfer_config=KVTransferConfig(kv_connector="NixlConnector", engine_id="d",
                                                      kv_role="kv_both"))
