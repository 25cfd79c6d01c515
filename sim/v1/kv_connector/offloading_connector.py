"""The offloading connector (vLLM v0.25.1
`vllm/distributed/kv_transfer/kv_connector/v1/offloading_connector.py`:
`OffloadingConnector`): the KV cache's second tier, in CPU memory.

V1 has no swap: a preempted request is recomputed. With this connector
(`--kv-offloading-size` in vLLM, which sets `kv_connector="OffloadingConnector"`,
`kv_role="kv_both"` and `cpu_bytes_to_use`), the full blocks a request computes are
copied to CPU memory as it runs (prompt blocks only, by default), the CPU tier keeps them
by block hash with its own LRU, and a request whose prefix misses the GPU prefix cache
(a new one, or the same one after a preemption) loads the blocks it finds there instead
of computing them, waiting in WAITING_FOR_REMOTE_KVS while they load.

The connector only routes calls to its half for its role: the scheduler side
(offloading/scheduler.py, with the spec's manager, sim/v1/kv_offload/cpu/manager.py) or
the worker side (offloading/worker.py, with the spec's worker,
sim/v1/kv_offload/cpu/gpu_worker.py). The spec comes from `OffloadingSpecFactory`
(sim/v1/kv_offload/factory.py).

Simulation additions, as keyword arguments: `clock` and `link` time the transfers,
`kv_bytes_per_block` prices them; `events` collects the scheduler side's records (the
Scheduler sets it to its own event list).
"""
from __future__ import annotations

from typing import Any

from sim.v1.kv_connector.base import KVConnectorBase_V1, KVConnectorRole, SupportsHMA
from sim.v1.kv_connector.offloading.common import OffloadingConnectorMetadata
from sim.v1.kv_connector.offloading.metrics import OffloadingConnectorStats
from sim.v1.kv_connector.offloading.scheduler import OffloadingConnectorScheduler
from sim.v1.kv_connector.offloading.worker import OffloadingConnectorWorker
from sim.v1.kv_offload.factory import OffloadingSpecFactory


class OffloadingConnector(KVConnectorBase_V1, SupportsHMA):
    prefer_cross_layer_blocks = True

    def __init__(self, kv_transfer_config, role: KVConnectorRole, cache_config=None,
                 clock=None, link=None, kv_bytes_per_block: int | None = None,
                 spec=None) -> None:
        super().__init__(kv_transfer_config, role, cache_config, clock=clock)
        if spec is None:
            if cache_config is None:
                raise ValueError("OffloadingConnector needs the CacheConfig")
            spec = OffloadingSpecFactory.create_spec(
                kv_transfer_config, cache_config, clock=clock, link=link,
                kv_bytes_per_block=kv_bytes_per_block)
        self.spec = spec
        self.connector_scheduler: OffloadingConnectorScheduler | None = None
        self.connector_worker: OffloadingConnectorWorker | None = None
        if role == KVConnectorRole.SCHEDULER:
            self.connector_scheduler = OffloadingConnectorScheduler(spec)
        elif role == KVConnectorRole.WORKER:
            self.connector_worker = OffloadingConnectorWorker(spec)

    @property
    def events(self):
        return self.connector_scheduler.events if self.connector_scheduler else None

    @events.setter
    def events(self, events) -> None:
        if self.connector_scheduler is not None:
            self.connector_scheduler.events = events

    @property
    def kv_landed(self):
        return self.connector_worker.kv_landed if self.connector_worker else None

    @kv_landed.setter
    def kv_landed(self, kv_landed) -> None:
        if self.connector_worker is not None:
            self.connector_worker.kv_landed = kv_landed

    def shutdown(self) -> None:
        if self.connector_worker is not None:
            self.connector_worker.shutdown()
        if self.connector_scheduler is not None:
            self.connector_scheduler.shutdown()

    # -- worker side ---------------------------------------------------------------------------
    def register_kv_caches(self, kv_caches) -> None:
        assert self.connector_worker is not None
        self.connector_worker.register_kv_caches(kv_caches)

    def handle_preemptions(self, kv_connector_metadata) -> None:
        assert self.connector_worker is not None
        assert isinstance(kv_connector_metadata, OffloadingConnectorMetadata)
        self.connector_worker.handle_preemptions(kv_connector_metadata)

    def start_load_kv(self, **kwargs: Any) -> None:
        assert self.connector_worker is not None
        assert isinstance(self._connector_metadata, OffloadingConnectorMetadata)
        self.connector_worker.start_kv_transfers(self._connector_metadata)

    def wait_for_save(self) -> None:
        # Stores are deferred in get_finished, which runs even without a forward pass.
        return

    def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str], set[str]]:
        assert self.connector_worker is not None
        assert isinstance(self._connector_metadata, OffloadingConnectorMetadata)
        self.connector_worker.prepare_store_kv(self._connector_metadata)
        return self.connector_worker.get_finished(finished_req_ids)

    def build_connector_worker_meta(self):
        if self.connector_worker is not None:
            return self.connector_worker.build_connector_worker_meta()
        return None

    # -- scheduler side ------------------------------------------------------------------------
    def on_new_request(self, request) -> None:
        assert self.connector_scheduler is not None
        self.connector_scheduler.on_new_request(request)

    def get_num_new_matched_tokens(self, request, num_computed_tokens: int
                                   ) -> tuple[int | None, bool]:
        assert self.connector_scheduler is not None
        return self.connector_scheduler.get_num_new_matched_tokens(request, num_computed_tokens)

    def update_state_after_alloc(self, request, blocks, num_external_tokens: int) -> None:
        assert self.connector_scheduler is not None
        self.connector_scheduler.update_state_after_alloc(request, blocks, num_external_tokens)

    def build_connector_meta(self, scheduler_output) -> OffloadingConnectorMetadata:
        assert self.connector_scheduler is not None
        return self.connector_scheduler.build_connector_meta(scheduler_output)

    def has_pending_push_work(self) -> bool:
        assert self.connector_scheduler is not None
        return self.connector_scheduler.has_pending_push_work()

    def update_connector_output(self, connector_output) -> None:
        assert self.connector_scheduler is not None
        self.connector_scheduler.update_connector_output(connector_output)

    def request_finished(self, request, block_ids: list[int]
                         ) -> tuple[bool, dict[str, Any] | None]:
        assert self.connector_scheduler is not None
        return self.connector_scheduler.request_finished(request)

    def request_finished_all_groups(self, request, block_ids: tuple[list[int], ...]
                                    ) -> tuple[bool, dict[str, Any] | None]:
        assert self.connector_scheduler is not None
        return self.connector_scheduler.request_finished(request)

    def take_events(self):
        assert self.connector_scheduler is not None
        return self.connector_scheduler.take_events()

    def reset_cache(self) -> bool | None:
        assert self.connector_scheduler is not None
        self.connector_scheduler.reset_cache()
        return True

    def get_kv_connector_stats(self) -> OffloadingConnectorStats | None:
        if self.connector_scheduler is not None:
            return self.connector_scheduler.get_stats()
        return None
