"""vLLM v0.25.1 `vllm/v1/kv_offload/cpu/spec.py`: `CPUOffloadingSpec`, the CPU tier's size,
its manager and its worker.

vLLM sizes the tier from `kv_connector_extra_config["cpu_bytes_to_use"]` (what
`--kv-offloading-size` GiB becomes): CPU blocks = bytes // (bytes of one GPU block, all
layers, x `block_size_factor`). The simulation's cache has no bytes, so it also takes
`num_cpu_blocks` directly (an addition; `--cpu-offload-blocks` in the CLI); with
`cpu_bytes_to_use` it needs `kv_bytes_per_block` (sim.perf.models.cache_block_size).
Other extra config: `eviction_policy` ("lru" only), `store_threshold` (a block is stored
after that many lookups; below 2: always), `max_tracker_size`.

Simulation additions, given to the constructor: `clock` and `link` time the transfers
(cpu/gpu_worker.py), `kv_bytes_per_block` prices them.
"""
from __future__ import annotations

from sim.v1.kv_offload.base import OffloadingManager, OffloadingSpec, OffloadingWorker
from sim.v1.kv_offload.cpu.gpu_worker import CPUOffloadingWorker
from sim.v1.kv_offload.cpu.manager import CPUOffloadingManager


class CPUOffloadingSpec(OffloadingSpec):
    def __init__(self, kv_transfer_config, cache_config, clock=None, link=None,
                 kv_bytes_per_block: int | None = None) -> None:
        super().__init__(kv_transfer_config, cache_config)
        extra = self.extra_config
        bytes_per_block = kv_bytes_per_block or int(extra.get("kv_bytes_per_block", 0))
        self.kv_bytes_per_block = bytes_per_block
        self.kv_bytes_per_offloaded_block = bytes_per_block * self.block_size_factor
        if extra.get("num_cpu_blocks") is not None:
            num_blocks = extra["num_cpu_blocks"]
            if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) \
                    or num_blocks < 0:
                raise ValueError("num_cpu_blocks: a whole number of CPU blocks, 0 or more "
                                 f"(got {num_blocks!r})")
            self.num_blocks = num_blocks
        elif extra.get("cpu_bytes_to_use"):
            if not bytes_per_block:
                raise ValueError("cpu_bytes_to_use needs kv_bytes_per_block (the bytes of "
                                 "one GPU block) to size the CPU tier")
            self.num_blocks = int(extra["cpu_bytes_to_use"]) // self.kv_bytes_per_offloaded_block
        else:
            raise ValueError("cpu_bytes_to_use (or the simulation's num_cpu_blocks) must be "
                             "specified in kv_connector_extra_config")
        self.eviction_policy: str = extra.get("eviction_policy", "lru")
        self.clock = clock
        self.link = link
        self._manager: OffloadingManager | None = None
        self._worker: CPUOffloadingWorker | None = None

    def get_manager(self) -> OffloadingManager:
        if self._manager is None:
            self._manager = CPUOffloadingManager(
                num_blocks=self.num_blocks, cache_policy=self.eviction_policy,
                enable_events=False,
                store_threshold=int(self.extra_config.get("store_threshold", 0)),
                max_tracker_size=int(self.extra_config.get("max_tracker_size", 64_000)))
        return self._manager

    def get_worker(self, kv_caches) -> OffloadingWorker:
        if self._worker is None:
            self._worker = CPUOffloadingWorker(
                kv_caches, self.num_blocks, self.gpu_block_size[0], self.block_size_factor,
                block_bytes=self.kv_bytes_per_block, link=self.link, clock=self.clock)
        return self._worker
