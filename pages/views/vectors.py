"""Vectors as a picture prints them: a handful of rounded numbers in brackets. The pages that
show a layer's or a kernel's arithmetic (tensor parallelism, the paged attention kernel)
print every partial output this way, so equal vectors read the same on both."""
from __future__ import annotations

from pages.views.text import f2


def f1(x: float) -> str:
    """A float with one decimal, never "-0.0" (as `text.f2` with two)."""
    text = f"{x:.1f}"
    return "0.0" if text == "-0.0" else text


def short(xs, decimals: int = 2) -> str:
    """A vector in few characters, for tables and panels: "[0.12 -0.50 1.00]"."""
    fmt = f2 if decimals == 2 else f1
    return "[" + " ".join(fmt(x) for x in xs) + "]"


def vec(xs) -> str:
    """A vector in a sentence: "[0.12, -0.50, 1.00]"."""
    return "[" + ", ".join(f2(x) for x in xs) + "]"
