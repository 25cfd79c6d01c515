"""What the offloading connector's two halves exchange (vLLM v0.25.1
`vllm/distributed/kv_transfer/kv_connector/v1/offloading/common.py`).

Scheduler -> worker, each step (`OffloadingConnectorMetadata`): the load jobs and store
jobs it created, by job id, and the ids of earlier jobs the worker must wait for before the
forward pass (`jobs_to_flush`: stores whose GPU blocks are about to be reused).
Worker -> scheduler, after the forward pass (`OffloadingWorkerMetadata`): the jobs that
completed, and their bytes and seconds."""
from __future__ import annotations

from dataclasses import dataclass, field

from sim.v1.kv_connector.base import KVConnectorMetadata
from sim.v1.kv_offload.base import LoadStoreSpec

ReqId = str


@dataclass(slots=True)
class DirectionalTransferStats:
    bytes: int = 0
    time: float = 0.0
    sizes: list[int | float] = field(default_factory=list)

    def aggregate(self, other: DirectionalTransferStats) -> DirectionalTransferStats:
        return DirectionalTransferStats(self.bytes + other.bytes, self.time + other.time,
                                        [*self.sizes, *other.sizes])

    def record(self, num_bytes: int, time: float) -> None:
        self.bytes += num_bytes
        self.time += time
        self.sizes.append(num_bytes)

    def is_empty(self) -> bool:
        return self.bytes == 0 and self.time == 0.0 and not self.sizes


@dataclass(slots=True)
class TransferStats:
    load: DirectionalTransferStats = field(default_factory=DirectionalTransferStats)
    store: DirectionalTransferStats = field(default_factory=DirectionalTransferStats)

    def aggregate(self, other: TransferStats) -> TransferStats:
        return TransferStats(self.load.aggregate(other.load), self.store.aggregate(other.store))

    def is_empty(self) -> bool:
        return self.load.is_empty() and self.store.is_empty()


@dataclass
class TransferJob:
    """One transfer (a load or a store), by the job id the scheduler gave it."""
    req_id: ReqId
    src_spec: LoadStoreSpec
    dst_spec: LoadStoreSpec


@dataclass
class OffloadingConnectorMetadata(KVConnectorMetadata):
    load_jobs: dict[int, TransferJob]
    store_jobs: dict[int, TransferJob]
    jobs_to_flush: set[int] | None = None


@dataclass
class OffloadingWorkerMetadata:
    """Per worker, {job_id: 1} for each job completed; summed over workers by
    `aggregate` (one worker here: no tensor parallelism)."""
    completed_jobs: dict[int, int] = field(default_factory=dict)
    transfer_stats: TransferStats = field(default_factory=TransferStats)

    def mark_completed(self, job_id: int) -> None:
        self.completed_jobs[job_id] = 1

    def aggregate(self, other: OffloadingWorkerMetadata) -> OffloadingWorkerMetadata:
        merged = dict(self.completed_jobs)
        for job_id, v in other.completed_jobs.items():
            merged[job_id] = merged.get(job_id, 0) + v
        return OffloadingWorkerMetadata(merged,
                                        self.transfer_stats.aggregate(other.transfer_stats))
