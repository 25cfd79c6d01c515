"""The CPU tier's transfers (vLLM v0.25.1 `vllm/v1/kv_offload/cpu/gpu_worker.py`:
`CPUOffloadingWorker`), simulated.

vLLM copies blocks between the GPU's KV cache and a pinned CPU buffer on CUDA streams, one
for each direction, and reports a job when its copies are done. Here the GPU cache is the
engine's payload store (`LLMEngine.gpu_cache`: one list of slots per GPU block) and the CPU
buffer is `cpu_cache` (one list of `block_size x block_size_factor` slots per CPU block).
A job copies its payloads when it completes, not when it is submitted: a job whose GPU
blocks were overwritten before it completed would copy the wrong tokens, and the
simulation's checks would see it (that is what vLLM's flushes prevent).

Time. With a `clock` (seconds) and a `link` (anything with `transfer_time(bytes)`, e.g.
sim/perf/host_link.py's PCIe presets), a job submitted at time t starts when the link is
free in its direction (PCIe is full duplex: stores and loads do not wait for each other)
and takes `link.transfer_time(bytes)`, bytes = GPU blocks x `block_bytes`. `get_finished`
reports the jobs done by `clock()`; `wait` (a flush) finishes jobs at once and adds how
long the caller had to wait to `stall_s`. Without a clock, every job submitted is done at
the next `get_finished`: a transfer takes the rest of the step it started in (vLLM's unit
tests' `complete_transfers=True`).

Left out: CUDA streams and events, the batched copy kernels (`swap_blocks_batch`), the
per-layer tensors and their layout (a block's payload stands for all layers).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sim.v1.kv_offload.base import (
    GPULoadStoreSpec,
    LoadStoreSpec,
    OffloadingWorker,
    TransferResult,
)

STORE, LOAD = "store", "load"


@dataclass(slots=True)
class SimTransfer:
    """One job on the link (an addition: what a picture or a study needs)."""
    job_id: int
    kind: str                            # "store" (GPU -> CPU) or "load" (CPU -> GPU)
    pairs: tuple[tuple[int, int, int], ...]   # (gpu block, cpu block, sub-block)
    num_bytes: int
    submit_s: float
    start_s: float
    end_s: float
    done: bool = False


def block_pairs(gpu_spec: GPULoadStoreSpec, cpu_block_ids: list[int],
                block_size_factor: int) -> tuple[tuple[int, int, int], ...]:
    """Which GPU block goes with which part of which CPU block: an offloaded block holds
    `block_size_factor` GPU blocks; a group's first GPU block may start inside its first
    offloaded block (`block_indices[i] % factor` sub-blocks are skipped)."""
    addresses = [(cpu, sub) for cpu in cpu_block_ids for sub in range(block_size_factor)]
    pairs = []
    gpu_offset = 0
    address_offset = 0
    for group_size, logical_offset in zip(gpu_spec.group_sizes, gpu_spec.block_indices):
        skip = logical_offset % block_size_factor
        address_offset += skip
        for i in range(group_size):
            cpu, sub = addresses[address_offset + i]
            pairs.append((gpu_spec.block_ids[gpu_offset + i], cpu, sub))
        gpu_offset += group_size
        address_offset += group_size
    return tuple(pairs)


class CPUOffloadingWorker(OffloadingWorker):
    def __init__(self, gpu_cache: list[list], num_cpu_blocks: int, block_size: int,
                 block_size_factor: int = 1, block_bytes: int = 0, link=None,
                 clock: Callable[[], float] | None = None) -> None:
        self.gpu_cache = gpu_cache
        self.block_size = block_size
        self.block_size_factor = block_size_factor
        self.cpu_cache: list[list] = [[None] * (block_size * block_size_factor)
                                      for _ in range(num_cpu_blocks)]
        self.block_bytes = block_bytes      # bytes of one GPU block (0: not priced)
        self.link = link
        self.clock = clock
        # Jobs in submission order; when each direction of the link is free again.
        self.transfers: dict[int, SimTransfer] = {}
        self._link_free_s = {STORE: 0.0, LOAD: 0.0}
        self._finished: list[int] = []
        # Seconds callers waited in `wait` (flushes), in all.
        self.stall_s = 0.0

    def _now(self) -> float:
        return self.clock() if self.clock is not None else 0.0

    def _submit(self, job_id: int, kind: str, pairs) -> bool:
        now = self._now()
        num_bytes = len(pairs) * self.block_bytes
        if self.link is not None and self.clock is not None:
            start = max(now, self._link_free_s[kind])
            end = start + self.link.transfer_time(num_bytes)
            self._link_free_s[kind] = end
        else:
            start = end = now
        self.transfers[job_id] = SimTransfer(job_id, kind, tuple(pairs), num_bytes, now,
                                             start, end)
        return True

    def submit_store(self, job_id: int, src_spec: GPULoadStoreSpec,
                     dst_spec: LoadStoreSpec) -> bool:
        return self._submit(job_id, STORE, block_pairs(src_spec, dst_spec.block_ids,
                                                       self.block_size_factor))

    def submit_load(self, job_id: int, src_spec: LoadStoreSpec,
                    dst_spec: GPULoadStoreSpec) -> bool:
        return self._submit(job_id, LOAD, block_pairs(dst_spec, src_spec.block_ids,
                                                      self.block_size_factor))

    def _complete(self, transfer: SimTransfer) -> None:
        """The copies, done now (see the module docstring)."""
        bs = self.block_size
        gpu, cpu = self.gpu_cache, self.cpu_cache
        for gpu_block, cpu_block, sub in transfer.pairs:
            if transfer.kind == STORE:
                cpu[cpu_block][sub * bs:(sub + 1) * bs] = gpu[gpu_block]
            else:
                gpu[gpu_block][:] = cpu[cpu_block][sub * bs:(sub + 1) * bs]
        transfer.done = True
        self._finished.append(transfer.job_id)

    def get_finished(self) -> list[TransferResult]:
        now = self._now()
        timed = self.link is not None and self.clock is not None
        for transfer in self.transfers.values():
            if not transfer.done and (not timed or transfer.end_s <= now):
                self._complete(transfer)
        results = []
        for job_id in self._finished:
            transfer = self.transfers.pop(job_id)
            results.append(TransferResult(job_id, True, transfer.num_bytes,
                                          transfer.end_s - transfer.start_s))
        self._finished = []
        return results

    def wait(self, job_ids: set[int]) -> None:
        now = self._now()
        for job_id in sorted(job_ids):
            transfer = self.transfers.get(job_id)
            if transfer is None or transfer.done:
                continue
            if self.link is not None and self.clock is not None:
                self.stall_s += max(0.0, transfer.end_s - now)
                now = max(now, transfer.end_s)
            self._complete(transfer)

    def in_flight(self) -> list[SimTransfer]:
        """Jobs submitted and not done yet, in submission order (an addition)."""
        return [t for t in self.transfers.values() if not t.done]

    def next_end_s(self) -> float | None:
        """When the next job in flight ends (None: none; an addition for drivers that
        wait for a transfer when there is nothing else to do)."""
        ends = [t.end_s for t in self.transfers.values() if not t.done]
        return min(ends) if ends else None
