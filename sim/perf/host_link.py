"""The GPU's host link: how long the offloading connector's copies between GPU and CPU
memory take (sim/v1/kv_offload/cpu/gpu_worker.py).

A copy of B bytes over a link of bandwidth W bytes/s (one direction; PCIe is full duplex,
so stores and loads run side by side) takes `latency + B / W`, and B is the GPU blocks
copied times the bytes of one block, all layers: 2 (K and V) x block_size x KV heads x head
size x layers x bytes per element (`sim.perf.models.cache_block_size`). vLLM's offloading
connector lays the KV cache out so that one block of every layer is contiguous
(`prefer_cross_layer_blocks`) and copies whole blocks, so its transfers run near the bulk
copy rate, not at the rate of the per-layer small copies v0.5.5's swap made.

H200 (`PCIE["h200"]`): PCIe Gen5 x16, 64 GB/s each way on the datasheet (128 GB/s both
directions; NVIDIA H200 Tensor Core GPU datasheet, H200 SXM column). The effective
bandwidth used is the one measured for this project on an H200: one bulk copy of a
Llama-3-8B-shaped cache from GPU to pinned CPU memory, 128 or 256 MiB, 18 runs
(data/h200-swap-vs-recompute.json, `bytes / bulk_out_s`): median 52.6 GB/s, range 51.2 to
53.7. Only the GPU-to-CPU direction was measured; loads (CPU to GPU) are taken to run at
the same rate. Per-transfer latency (a few microseconds) is left out.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HostLink:
    name: str
    bandwidth: float              # bytes/s, one direction, effective
    line_rate: float              # bytes/s, one direction, datasheet
    latency_s: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        if not self.bandwidth > 0 or not self.line_rate > 0:
            raise ValueError(f"{self.name}: bandwidth must be positive")
        if not self.latency_s >= 0:
            raise ValueError(f"{self.name}: latency_s must not be negative")

    def transfer_time(self, num_bytes: int) -> float:
        """Seconds to copy `num_bytes` one way (latency + bytes / bandwidth)."""
        if num_bytes < 0:
            raise ValueError("num_bytes must not be negative")
        return self.latency_s + num_bytes / self.bandwidth


PCIE: dict[str, HostLink] = {
    "h200": HostLink(
        "PCIe Gen5 x16 (H200), measured", 52.6e9, 64e9,
        source="effective: measured on an NVIDIA H200, GPU to pinned CPU memory, bulk "
               "copies (data/h200-swap-vs-recompute.json, median of 18); line rate: NVIDIA "
               "H200 Tensor Core GPU datasheet (PCIe Gen5: 128 GB/s both directions)"),
}


def get_host_link(name: str) -> HostLink:
    try:
        return PCIE[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown host link {name!r}; valid: {', '.join(sorted(PCIE))}") \
            from None
