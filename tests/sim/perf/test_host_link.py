"""sim/perf/host_link.py: the H200's PCIe preset against the measurement it comes from."""
import json
import statistics
from pathlib import Path

import pytest

from sim.perf.hardware import get_gpu
from sim.perf.host_link import PCIE, HostLink, get_host_link
from sim.perf.models import cache_block_size, get_model

DATA = Path(__file__).resolve().parents[3] / "data" / "h200-swap-vs-recompute.json"


def test_h200_bandwidth_is_the_measured_bulk_copy_rate():
    rows = json.loads(DATA.read_text())["rows"]
    median = statistics.median(r["bytes"] / r["bulk_out_s"] for r in rows)
    assert PCIE["h200"].bandwidth == pytest.approx(median, rel=0.01)
    # below the line rate, which is the GPU preset's host link
    assert PCIE["h200"].bandwidth < PCIE["h200"].line_rate == get_gpu("h200").host_link_bandwidth


def test_transfer_time_of_a_block():
    block = cache_block_size(get_model("llama-3-8b"), 16, "bf16")
    assert block == 2 * 1024 * 1024                        # 2 MiB: 16 tokens x 128 KiB
    assert PCIE["h200"].transfer_time(block) == pytest.approx(2 * 2**20 / 52.6e9)
    assert HostLink("x", 1e9, 1e9, latency_s=1e-6).transfer_time(0) == 1e-6


def test_bad_input():
    with pytest.raises(ValueError, match="bandwidth"):
        HostLink("x", 0, 1)
    with pytest.raises(ValueError, match="valid: h200"):
        get_host_link("h100")
    with pytest.raises(ValueError, match="negative"):
        PCIE["h200"].transfer_time(-1)
