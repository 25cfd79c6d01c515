"""The offloading connector's worker side (vLLM v0.25.1
`vllm/distributed/kv_transfer/kv_connector/v1/offloading/worker.py`:
`OffloadingConnectorWorker`).

Per step, in the model runner's order:
1. `handle_preemptions` (before the forward pass): submit the stores deferred from the
   last step, then wait for `jobs_to_flush` (stores whose GPU blocks are about to change
   hands);
2. `start_kv_transfers` (`start_load_kv`): submit any deferred stores, then this step's
   loads;
3. after the forward pass, `prepare_store_kv` defers this step's store jobs to the next
   step (so they start after the step's sampling transfers), and `get_finished` reports
   the finished loads as `finished_recving` (stores never appear in `finished_sending`:
   the scheduler learns of them from `build_connector_worker_meta`'s completed jobs).

`register_kv_caches` takes the simulation's GPU payload store instead of tensors."""
from __future__ import annotations

from sim.v1.kv_connector.offloading.common import (
    OffloadingConnectorMetadata,
    OffloadingWorkerMetadata,
    ReqId,
)
from sim.v1.kv_offload.base import OffloadingSpec, OffloadingWorker


class OffloadingConnectorWorker:
    def __init__(self, spec: OffloadingSpec) -> None:
        self.spec = spec
        self.worker: OffloadingWorker | None = None
        self._load_jobs: dict[int, ReqId] = {}
        self._unsubmitted_store_jobs: list = []
        self._connector_worker_meta = OffloadingWorkerMetadata()
        # An addition: the engine's `kv_landed` (request id -> tokens landed of its load in
        # flight), so that a picture does not show a loading request's blocks filled.
        self.kv_landed: dict[str, int] | None = None

    def register_kv_caches(self, kv_caches) -> None:
        self.worker = self.spec.get_worker(kv_caches)

    def _submit_deferred_stores(self) -> None:
        assert self.worker is not None
        for job_id, src_spec, dst_spec in self._unsubmitted_store_jobs:
            success = self.worker.submit_store(job_id, src_spec, dst_spec)
            assert success
        self._unsubmitted_store_jobs.clear()

    def handle_preemptions(self, metadata: OffloadingConnectorMetadata) -> None:
        self._submit_deferred_stores()
        if metadata.jobs_to_flush:
            self.worker.wait(metadata.jobs_to_flush)

    def start_kv_transfers(self, metadata: OffloadingConnectorMetadata) -> None:
        self._submit_deferred_stores()
        for job_id, entry in metadata.load_jobs.items():
            self._load_jobs[job_id] = entry.req_id
            if self.kv_landed is not None:
                self.kv_landed[entry.req_id] = 0
            success = self.worker.submit_load(job_id, entry.src_spec, entry.dst_spec)
            assert success

    def prepare_store_kv(self, metadata: OffloadingConnectorMetadata) -> None:
        for job_id, entry in metadata.store_jobs.items():
            # Deferred to the beginning of the next step.
            self._unsubmitted_store_jobs.append((job_id, entry.src_spec, entry.dst_spec))

    def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str], set[str]]:
        assert self.worker is not None
        finished_recving: set[str] = set()
        for transfer_result in self.worker.get_finished():
            job_id = transfer_result.job_id
            assert transfer_result.success   # failures are not supported (as in vLLM)
            is_load = job_id in self._load_jobs
            if transfer_result.transfer_time is not None \
                    and transfer_result.transfer_size is not None:
                stats = (self._connector_worker_meta.transfer_stats.load if is_load
                         else self._connector_worker_meta.transfer_stats.store)
                stats.record(transfer_result.transfer_size, transfer_result.transfer_time)
            self._connector_worker_meta.mark_completed(job_id)
            req_id = self._load_jobs.pop(job_id, None)
            if req_id is not None:
                finished_recving.add(req_id)
                if self.kv_landed is not None:
                    self.kv_landed.pop(req_id, None)
        return set(), finished_recving

    def build_connector_worker_meta(self) -> OffloadingWorkerMetadata | None:
        if not self._connector_worker_meta.completed_jobs:
            return None
        meta = self._connector_worker_meta
        self._connector_worker_meta = OffloadingWorkerMetadata()
        return meta

    def has_unsubmitted_stores(self) -> bool:
        """Stores deferred to the next step (an addition)."""
        return bool(self._unsubmitted_store_jobs)

    def shutdown(self) -> None:
        self._unsubmitted_store_jobs.clear()
        self._load_jobs.clear()
        self._connector_worker_meta = OffloadingWorkerMetadata()
        if self.worker is not None:
            self.worker.shutdown()
