"""Numbers in words for the KV cache page's widgets and chart."""
from __future__ import annotations

from pages.views.text import commas, noun
from sim.perf.hardware import GiB, MiB

KiB = 1024

# The paper's Table 1 input: "13B, 1 x A100 40GB: KV cache size 12 GB". Its 15.7K slots
# come out only if that GB is binary (see sim/perf/hardware.py's docstring).
PAPER_KV_SPACE = 12 * GiB


def fmt_bytes(n: float) -> str:
    """Binary units, at most two decimals: 819200 -> '800 KiB', 13107200 -> '12.5 MiB'."""
    for unit, size in (("TiB", 1 << 40), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{short(n / size)} {unit}"
    return f"{commas(int(n))} B"


def count(n: int, word: str) -> str:
    """"1 block", "1,024 blocks"."""
    return f"{commas(n)} {noun(n, word)}"


def short(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")

