"""Helpers for the offloading connector's tests, re-expressing vLLM v0.25.1's
`tests/v1/kv_connector/unit/offloading_connector/utils.py` on the simulation.

vLLM's `RequestRunner` drives a scheduler with the OffloadingConnector and a worker-side
connector, step by step, one request at a time, and checks which GPU blocks (by request and
block offset) were stored, loaded and flushed. vLLM replaces the manager with a MagicMock
(every lookup a MISS, every store what the test's `side_effect` says); here the manager is
the simulation's real `CPUOffloadingManager`, wrapped in `SpyManager`, which records every
call (`call_count`, `call_args`, `assert_called`, ...) and lets a test replace one method's
answer (`side_effect`), as the mock does, where vLLM's test forces an answer (a failed
store, say). The worker is a recording fake, as in vLLM (`MockOffloadingWorker`): it
completes jobs when the runner says so. `async_scheduling=True` runs the `AsyncScheduler`,
processing each step's output after the next step is scheduled, as vLLM's runner does."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kv_connector_utils import EOS_TOKEN_ID

from sim.v1.async_scheduler import AsyncScheduler
from sim.v1.config import CacheConfig, KVTransferConfig, SchedulerConfig
from sim.v1.kv_cache_utils import get_request_block_hasher, sha256
from sim.v1.kv_connector import KVConnectorRole
from sim.v1.kv_connector.offloading.common import OffloadingWorkerMetadata
from sim.v1.kv_connector.offloading_connector import OffloadingConnector
from sim.v1.kv_offload.base import (
    GPULoadStoreSpec,
    OffloadingWorker,
    OffloadKey,
    PrepareStoreOutput,
    TransferResult,
    make_offload_key,
)
from sim.v1.kv_offload.cpu.manager import CPUOffloadingManager
from sim.v1.kv_offload.cpu.spec import CPUOffloadingSpec
from sim.v1.request import Request
from sim.v1.scheduler import KVConnectorOutput, ModelRunnerOutput, Scheduler

__all__ = ["EOS_TOKEN_ID", "RequestRunner", "SpyManager", "generate_store_output",
           "to_key", "to_keys"]


def to_key(int_hash: int) -> OffloadKey:
    return make_offload_key(str(int_hash).encode(), 0)


def to_keys(int_hashes: list[int]) -> list[OffloadKey]:
    return [to_key(i) for i in int_hashes]


class SpyMethod:
    """One spied method: calls go to the real one unless `side_effect` is set."""

    def __init__(self, real: Callable) -> None:
        self.real = real
        self.side_effect: Callable | None = None
        self.call_args_list: list[tuple[tuple, dict]] = []

    def __call__(self, *args, **kwargs):
        self.call_args_list.append((args, kwargs))
        if self.side_effect is not None:
            return self.side_effect(*args, **kwargs)
        return self.real(*args, **kwargs)

    @property
    def call_count(self) -> int:
        return len(self.call_args_list)

    @property
    def call_args(self):
        return _Call(*self.call_args_list[-1]) if self.call_args_list else None

    def assert_called(self) -> None:
        assert self.call_count > 0, "expected a call"

    def assert_not_called(self) -> None:
        assert self.call_count == 0, f"expected no call, got {self.call_count}"

    def assert_called_once(self) -> None:
        assert self.call_count == 1, f"expected one call, got {self.call_count}"

    def reset_mock(self) -> None:
        self.call_args_list = []


@dataclass
class _Call:
    args: tuple
    kwargs: dict


SPIED = ("lookup", "prepare_load", "touch", "complete_load", "prepare_store",
         "complete_store", "on_new_request", "on_request_finished", "reset_cache")


class SpyManager(CPUOffloadingManager):
    """The real CPU manager, with every call of the methods in SPIED recorded."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in SPIED:
            setattr(self, name, SpyMethod(getattr(super(), name)))

    def reset_mock(self) -> None:
        for name in SPIED:
            getattr(self, name).reset_mock()


class MockOffloadingWorker(OffloadingWorker):
    """vLLM's test worker: records the jobs and completes them when told."""

    def __init__(self) -> None:
        self.transfer_specs: dict[int, tuple] = {}
        self.completed_transfers: list[TransferResult] = []
        self.waiting_jobs: set[int] = set()
        self.completed_jobs: list[int] = []
        self.flushed_jobs: set[int] = set()

    def get_finished(self) -> list[TransferResult]:
        finished = self.completed_transfers
        self.completed_transfers = []
        return finished

    def submit_store(self, job_id, src_spec, dst_spec) -> bool:
        self.transfer_specs[job_id] = (src_spec, dst_spec)
        self.waiting_jobs.add(job_id)
        return True

    def submit_load(self, job_id, src_spec, dst_spec) -> bool:
        self.transfer_specs[job_id] = (src_spec, dst_spec)
        self.waiting_jobs.add(job_id)
        return True

    def complete_jobs(self, job_ids: set[int]) -> None:
        for job_id in sorted(job_ids):
            if job_id in self.waiting_jobs:
                self.waiting_jobs.remove(job_id)
                self.completed_jobs.append(job_id)
                self.completed_transfers.append(TransferResult(job_id, True))

    def wait(self, job_ids: set[int]) -> None:
        self.flushed_jobs |= job_ids
        self.complete_jobs(job_ids)


class RunnerSpec(CPUOffloadingSpec):
    """The CPU spec with a spied manager and the recording worker."""

    def __init__(self, kv_transfer_config, cache_config) -> None:
        super().__init__(kv_transfer_config, cache_config)
        self.manager = SpyManager(self.num_blocks)
        self.handler = MockOffloadingWorker()

    def get_manager(self):
        return self.manager

    def get_worker(self, kv_caches):
        return self.handler

    def complete_transfers(self) -> None:
        self.handler.complete_jobs(self.handler.waiting_jobs.copy())

    def get_completed_transfers(self) -> list[tuple]:
        specs = [self.handler.transfer_specs[j] for j in self.handler.completed_jobs]
        self.handler.completed_jobs.clear()
        return specs

    def get_flushed_transfers(self) -> list[tuple]:
        specs = [self.handler.transfer_specs[j] for j in sorted(self.handler.flushed_jobs)]
        self.handler.flushed_jobs.clear()
        return specs


@dataclass(frozen=True)
class GPUBlock:
    group_idx: int
    request_block_offset: int


@dataclass
class TransferSummary:
    gpu_blocks: list[GPUBlock]
    offload_addresses: list[Any]


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 1000
    skip_reading_prefix_cache: bool | None = None


class RequestRunner:
    def __init__(self, block_size: int, num_gpu_blocks: int, block_size_factor: int = 1,
                 extra_config_overrides: dict[str, Any] | None = None,
                 num_cpu_blocks: int = 1000, async_scheduling: bool = False) -> None:
        self.async_scheduling = async_scheduling
        self.block_size_factor = block_size_factor
        self.block_size = block_size
        self.num_gpu_blocks = num_gpu_blocks
        self.req_id = -1
        extra_config: dict[str, Any] = {
            "num_cpu_blocks": num_cpu_blocks,
            # vLLM's runner keeps the legacy behaviour; tests that need it override it.
            "offload_prompt_only": False,
        }
        if block_size_factor > 1:
            extra_config["block_size"] = block_size * block_size_factor
        if extra_config_overrides:
            extra_config.update(extra_config_overrides)
        kv_transfer_config = KVTransferConfig(kv_connector="OffloadingConnector",
                                              kv_role="kv_both",
                                              kv_connector_extra_config=extra_config)
        cache_config = CacheConfig(block_size=block_size, num_gpu_blocks=num_gpu_blocks,
                                   enable_prefix_caching=True)
        self.offloading_spec = RunnerSpec(kv_transfer_config, cache_config)
        self.scheduler_connector = OffloadingConnector(
            kv_transfer_config, KVConnectorRole.SCHEDULER, cache_config,
            spec=self.offloading_spec)
        scheduler_cls = AsyncScheduler if async_scheduling else Scheduler
        self.scheduler = scheduler_cls(
            SchedulerConfig(max_num_batched_tokens=1000, max_num_seqs=16,
                            max_model_len=10000, async_scheduling=async_scheduling),
            cache_config, kv_transfer_config=kv_transfer_config,
            connector=self.scheduler_connector)
        self.worker_connector = OffloadingConnector(
            kv_transfer_config, KVConnectorRole.WORKER, cache_config,
            spec=self.offloading_spec)
        self.worker_connector.register_kv_caches(None)
        self.connector_scheduler = self.scheduler_connector.connector_scheduler
        self.manager: SpyManager = self.offloading_spec.manager
        group_config = self.connector_scheduler.config.kv_group_configs[0]
        assert group_config.gpu_block_size == block_size
        assert group_config.offloaded_block_size == block_size * block_size_factor
        # offload address (CPU block, sub-block) -> the GPU block it was stored from
        self.offloaded: dict[Any, GPUBlock] = {}
        self.completed_loads: list[TransferSummary] = []
        self.completed_stores: list[TransferSummary] = []
        self.flushed_gpu_blocks: set[GPUBlock] = set()
        self.gpu_blocks: dict[int, GPUBlock] = {}
        self._block_hasher = get_request_block_hasher(block_size, sha256)

    def new_request(self, token_ids: list[int], kv_transfer_params: dict | None = None,
                    skip_reading_prefix_cache: bool = False) -> Request:
        self.req_id += 1
        req = Request(str(self.req_id), token_ids,
                      SamplingParams(skip_reading_prefix_cache=skip_reading_prefix_cache
                                     or None),
                      EOS_TOKEN_ID, block_hasher=self._block_hasher,
                      block_size=self.block_size)
        if kv_transfer_params is not None:
            req.kv_transfer_params = kv_transfer_params
        self.scheduler.add_request(req)
        return req

    def _offload_addresses(self, cpu_block_ids: list[int]) -> list:
        return [(cpu, sub) for cpu in cpu_block_ids for sub in range(self.block_size_factor)]

    def _parse_transfers(self) -> None:
        for src_spec, dst_spec in self.offloading_spec.get_flushed_transfers():
            gpu_spec = src_spec if isinstance(src_spec, GPULoadStoreSpec) else dst_spec
            for block_id in gpu_spec.block_ids:
                self.flushed_gpu_blocks.add(self.gpu_blocks[block_id])
        for src_spec, dst_spec in self.offloading_spec.get_completed_transfers():
            store = isinstance(src_spec, GPULoadStoreSpec)
            gpu_spec, offload_spec = (src_spec, dst_spec) if store else (dst_spec, src_spec)
            gpu_blocks = [self.gpu_blocks[b] for b in gpu_spec.block_ids]
            addresses = self._offload_addresses(offload_spec.block_ids)
            # A group's first GPU block may start inside its first offloaded block.
            gpu_offset = address_offset = 0
            for group_size, logical_offset in zip(gpu_spec.group_sizes,
                                                  gpu_spec.block_indices):
                skip = logical_offset % self.block_size_factor
                addresses = addresses[:address_offset] + addresses[address_offset + skip:]
                gpu_offset += group_size
                address_offset += group_size
            assert gpu_offset == len(gpu_blocks)
            assert address_offset == len(addresses)
            summary = TransferSummary(gpu_blocks, addresses)
            (self.completed_stores if store else self.completed_loads).append(summary)

    def _update_gpu_blocks(self) -> None:
        for blocks in self.scheduler.kv_cache_manager.req_to_blocks.values():
            for block_idx, block in enumerate(blocks):
                self.gpu_blocks[block.block_id] = GPUBlock(0, block_idx)

    def model_runner_output(self, reqs, finished_sending, finished_recving, token_id,
                            worker_meta) -> ModelRunnerOutput:
        req_ids = [r.request_id for r in reqs]
        return ModelRunnerOutput(
            req_ids, {rid: i for i, rid in enumerate(req_ids)},
            [[token_id] for _ in req_ids],
            KVConnectorOutput(finished_sending=finished_sending,
                              finished_recving=finished_recving,
                              kv_connector_worker_meta=worker_meta))

    def step(self, token_id: int, complete_transfers: bool):
        """One engine step (schedule, the worker side, update_from_output), vLLM's
        runner's loop body; returns the scheduler output."""
        scheduler_output = self.scheduler.schedule()
        self._update_gpu_blocks()
        meta = scheduler_output.kv_connector_metadata
        assert meta is not None
        self.worker_connector.handle_preemptions(meta)
        self.worker_connector.bind_connector_metadata(meta)
        self.worker_connector.start_load_kv()
        if complete_transfers:
            self.offloading_spec.complete_transfers()
        finished_sending, finished_recving = self.worker_connector.get_finished(
            scheduler_output.finished_req_ids)
        worker_meta = (self.worker_connector.build_connector_worker_meta()
                       or OffloadingWorkerMetadata())
        self.worker_connector.clear_connector_metadata()
        output = self.model_runner_output(self.scheduler.running, finished_sending,
                                          finished_recving, token_id, worker_meta)
        return scheduler_output, output

    def _run(self, decoded_tokens: list[int], complete_transfers: bool,
             post_step_fn: Callable[[], None] | None = None) -> None:
        tokens_iter = iter(decoded_tokens)
        token_id = next(tokens_iter, None)
        prev_scheduler_output = prev_output = None
        while True:
            # A finished request's store may still be in flight: keep stepping until the
            # scheduler has no job left.
            if not self.scheduler.requests and not self.connector_scheduler._jobs:
                break
            scheduler_output, output = self.step(token_id or 0, complete_transfers)
            prev_token_id = token_id
            if self.scheduler.running:
                token_id = next(tokens_iter, None)
            if self.async_scheduling:
                # The output of the previous step is processed after this one is scheduled.
                if prev_output is not None:
                    self.scheduler.update_from_output(prev_scheduler_output, prev_output)
                prev_scheduler_output, prev_output = scheduler_output, output
            else:
                self.scheduler.update_from_output(scheduler_output, output)
            if post_step_fn is not None:
                post_step_fn()
            if (prev_token_id == EOS_TOKEN_ID and prev_token_id != token_id
                    and (self.scheduler.requests or self.connector_scheduler._jobs)):
                continue     # one more step, for the offloading to kick off
            if token_id is None:
                if self.async_scheduling:
                    # sample the last token
                    self.scheduler.update_from_output(prev_scheduler_output, prev_output)
                break
        self._parse_transfers()
        if EOS_TOKEN_ID in decoded_tokens:
            assert not self.scheduler.running

    def run(self, decoded_tokens: list[int], complete_transfers: bool = True,
            expected_stored: Iterable[int] = (), expected_loaded: Iterable[int] = (),
            expected_flushed: Iterable[int] = (),
            post_step_fn: Callable[[], None] | None = None) -> None:
        """Steps until the tokens run out (see `_run`), then checks the GPU blocks
        (request block offsets) stored, loaded and flushed during the run; a loaded
        block must come from the CPU address the same block offset was stored to."""
        self.manager.reset_mock()
        self._run(decoded_tokens, complete_transfers, post_step_fn)
        loaded = set()
        for transfer in self.completed_loads:
            for gpu_block, address in zip(transfer.gpu_blocks, transfer.offload_addresses):
                loaded.add(gpu_block)
                assert gpu_block == self.offloaded[address]
        assert loaded == {GPUBlock(0, b) for b in expected_loaded}
        self.completed_loads.clear()
        stored = set()
        for transfer in self.completed_stores:
            for gpu_block, address in zip(transfer.gpu_blocks, transfer.offload_addresses):
                stored.add(gpu_block)
                self.offloaded[address] = gpu_block
        assert stored == {GPUBlock(0, b) for b in expected_stored}
        self.completed_stores.clear()
        assert self.flushed_gpu_blocks == {GPUBlock(0, b) for b in expected_flushed}
        self.flushed_gpu_blocks.clear()


def generate_store_output(manager: CPUOffloadingManager, keys: Iterable[OffloadKey],
                          req_context) -> PrepareStoreOutput:
    """vLLM's helper builds a PrepareStoreOutput storing exactly `keys`; with the real
    manager, ask it to store just those keys (so the CPU blocks are real)."""
    out = CPUOffloadingManager.prepare_store(manager, list(keys), req_context)
    assert out is not None
    return out
