"""Link presets (sim/perf/links.py): line rates of one direction with their sources, and
the transfer time of a prompt's KV over each."""
import pytest

from sim.perf.links import GBIT, LINKS, Link, get_link
from sim.perf.models import cache_block_size, get_model


def test_presets_and_sources():
    assert get_link("nvlink").bandwidth == 450e9            # 900 GB/s, both directions
    assert get_link("ib-ndr").bandwidth == 400 * GBIT == 50e9
    assert get_link("ib-hdr").bandwidth == 25e9
    assert get_link("ethernet-100g").bandwidth == 12.5e9
    assert get_link("ethernet-25g").bandwidth == 3.125e9
    assert all(link.source for link in LINKS.values())
    with pytest.raises(ValueError, match="unknown link 'x'"):
        get_link("x")
    with pytest.raises(ValueError):
        Link("bad", 0)
    with pytest.raises(ValueError):
        Link("bad", 1.0, latency_s=-1)


def test_a_4000_token_prompt_of_llama_3_8b():
    """128 KiB of KV per token in bf16: 500 MiB for 4,000 tokens (250 blocks of 2 MiB)."""
    block = cache_block_size(get_model("llama-3-8b"), 16, "bf16")
    assert block == 2 * 2 ** 20
    size = 250 * block
    assert get_link("ib-ndr").transfer_time(size) == pytest.approx(10.49e-3, rel=1e-3)
    assert get_link("nvlink").transfer_time(size) == pytest.approx(1.165e-3, rel=1e-3)
    assert get_link("ethernet-100g").transfer_time(size) == pytest.approx(41.94e-3, rel=1e-3)
    assert Link("x", 1e9, latency_s=0.5).transfer_time(1e9) == 1.5
    with pytest.raises(ValueError):
        get_link("nvlink").transfer_time(-1)
