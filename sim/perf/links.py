"""Links between two GPUs, and how long a KV transfer takes over one.

P/D disaggregation moves a request's KV cache from the prefill instance's GPU to the
decode instance's: NIXL reads the prefill's blocks with RDMA (InfiniBand, or Ethernet with
RoCE) between machines, or over NVLink between GPUs of one machine. A transfer of B bytes
over a link of bandwidth W bytes/s (one direction) takes

    time = latency + B / W

and B is the blocks read times the bytes of one block: 2 (K and V) x block_size x KV heads
on the GPU x head size x layers x bytes per element (`sim.perf.models.cache_block_size`).
Llama-3-8B in bf16 with blocks of 16 tokens: 2 x 16 x 8 x 128 x 32 x 2 = 2 MiB per block,
128 KiB per token; a 4,000-token prompt is 500 MiB: 10.5 ms over InfiniBand NDR, 1.2 ms over
NVLink, 42 ms over 100 Gb Ethernet.

Bandwidths are the line rates of one direction (the datasheets print NVLink's two directions
added): a real transfer reaches less than the line rate, and the per-transfer latency (a
few microseconds on these links) is 0 unless given; both make the times here a lower bound,
as the page's "Where this picture simplifies" says. One link per GPU: with
tensor parallelism each GPU sends its own shard over its own NIC, at the same time.
"""
from __future__ import annotations

from dataclasses import dataclass

GBIT = 1e9 / 8          # bytes/s in one Gb/s


@dataclass(frozen=True, slots=True)
class Link:
    name: str
    bandwidth: float          # bytes/s, one direction
    latency_s: float = 0.0    # per transfer (0: left out)
    source: str = ""

    def __post_init__(self) -> None:
        if not self.bandwidth > 0:
            raise ValueError(f"{self.name}: bandwidth must be positive")
        if not self.latency_s >= 0:
            raise ValueError(f"{self.name}: latency_s must not be negative")

    def transfer_time(self, num_bytes: int) -> float:
        """Seconds to move `num_bytes` over this link (latency + bytes / bandwidth)."""
        if num_bytes < 0:
            raise ValueError("num_bytes must not be negative")
        return self.latency_s + num_bytes / self.bandwidth


LINKS: dict[str, Link] = {
    # NVLink 4 (H100/H200 SXM): 900 GB/s per GPU, both directions added -> 450 GB/s each
    # way. P and D on GPUs of one HGX machine.
    "nvlink": Link("NVLink (H200, one direction)", 450e9,
                   source="NVIDIA H200 Tensor Core GPU datasheet (NVLink: 900 GB/s, both "
                          "directions)"),
    # InfiniBand NDR, 400 Gb/s per port (ConnectX-7: one NIC per GPU in an HGX H200).
    "ib-ndr": Link("InfiniBand NDR (400 Gb/s)", 400 * GBIT,
                   source="NVIDIA ConnectX-7 400G adapter datasheet (InfiniBand NDR "
                          "400 Gb/s)"),
    # InfiniBand HDR, 200 Gb/s per port (ConnectX-6, the A100 generation).
    "ib-hdr": Link("InfiniBand HDR (200 Gb/s)", 200 * GBIT,
                   source="NVIDIA ConnectX-6 VPI adapter datasheet (InfiniBand HDR "
                          "200 Gb/s)"),
    # 100 Gb Ethernet (RoCE), a common datacenter NIC.
    "ethernet-100g": Link("Ethernet 100 Gb/s", 100 * GBIT,
                          source="IEEE 802.3ba (100 Gb/s Ethernet)"),
    # 25 Gb Ethernet, a cloud VM's network.
    "ethernet-25g": Link("Ethernet 25 Gb/s", 25 * GBIT,
                         source="IEEE 802.3by (25GBASE-R: 25 Gb/s)"),
}


def get_link(link_id: str) -> Link:
    try:
        return LINKS[link_id]
    except (KeyError, TypeError):
        raise ValueError(f"unknown link {link_id!r}; valid ids: "
                         f"{', '.join(LINKS)}") from None
