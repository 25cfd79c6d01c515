"""Blocks in use with sharing against the same sequences as independent copies (the paper's
measure of what sharing saves, sim/studies/sharing.py): the two bars and the sentence the
parallel sampling and beam search pages show after every step.

`u` is a `sim.studies.sharing.BlockUsage`: `used` (distinct physical blocks), `unshared`
(one block per block-table entry), `saved`, `saving`.
"""
from __future__ import annotations

from pages.views import kv_view, svg

LABEL_W = 150


def bars(x: float, y: float, u, copies: int, scale_max: int, averaged: float | None,
         what: str = "independent copies") -> tuple[list[str], float]:
    """Two bars on one scale: blocks in use with sharing, and what `copies` independent
    copies (or beams: `what`) would hold. `scale_max` is the longest bar of the whole trace,
    so bars of different steps compare; `averaged` (the time-averaged saving so far) is
    written after the saving now when known."""
    right = kv_view.WIDTH - kv_view.MARGIN - 26
    unit = (right - (x + LABEL_W)) / max(1, scale_max)
    out = [svg.text(x, y + 12, "Blocks in use", size=10, fill="muted")]
    rows = (("with sharing", u.used, "accent"),
            (f"{copies} {what}" if copies != 1 else "1 copy", u.unshared, "used"))
    yy = y + 18
    for label, value, color in rows:
        out.append(svg.text(x, yy + 11, label, size=10))
        out.append(svg.rect(x + LABEL_W, yy + 1, max(0.0, value * unit), 12, fill=color,
                            tip=f"{label}: {value} blocks"))
        out.append(svg.text(x + LABEL_W + value * unit + 4, yy + 11, str(value), size=10))
        yy += 17
    line = (f"saved now: {u.saved} of {u.unshared} ({100 * u.saving:.0f}%)" if u.unshared
            else "no blocks in use")
    if averaged is not None:
        line += f" · time-averaged so far: {100 * averaged:.0f}%"
    out.append(svg.text(x, yy + 11, line, size=10, fill="muted"))
    return out, yy + 16 - y


def sentence(u, copies: int, what: str = "independent copies") -> str:
    """The bars in words; empty while no block is in use."""
    if not u.unshared:
        return ""
    return (f"Blocks in use: {u.used}; {copies} {what} would hold {u.unshared}, so sharing "
            f"saves {u.saved} ({100 * u.saving:.0f}%).")
