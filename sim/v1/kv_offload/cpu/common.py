"""vLLM v0.25.1 `vllm/v1/kv_offload/cpu/common.py`: where blocks are in CPU memory, and the
CPU manager's metric names."""
from __future__ import annotations

from sim.v1.kv_offload.base import BlockIDsLoadStoreSpec


class CPUOffloadingMetrics:
    STORES_SKIPPED = "vllm:kv_offload_stores_skipped"
    CPU_CACHE_USAGE_PERC = "vllm:kv_offload_cpu_cache_usage_perc"


class CPULoadStoreSpec(BlockIDsLoadStoreSpec):
    """CPU blocks (slots of the pinned CPU buffer), by number."""

    @staticmethod
    def medium() -> str:
        return "CPU"
