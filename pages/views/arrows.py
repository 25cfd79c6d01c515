"""Arrows between drawn blocks: the copies a swap makes between the GPU block pool and the CPU
swap space (`blocks_to_swap_out`, `blocks_to_swap_in`), drawn over kv_view's pools."""
from __future__ import annotations

import math

from pages.views import kv_view, svg
from sim.events import SwappedIn, SwappedOut


def arrow(x1: float, y1: float, x2: float, y2: float, tip: str, key: str | None = None) -> str:
    """A line with an arrowhead at (x2, y2), in the highlight colour."""
    dx, dy = x2 - x1, y2 - y1
    length = math.hypot(dx, dy) or 1.0
    ux, uy = dx / length, dy / length
    hx, hy = x2 - 6 * ux, y2 - 6 * uy
    p1 = (hx - 3.5 * uy, hy + 3.5 * ux)
    p2 = (hx + 3.5 * uy, hy - 3.5 * ux)
    head = (f"M{svg.num(round(x2, 2))} {svg.num(round(y2, 2))} "
            f"L{svg.num(round(p1[0], 2))} {svg.num(round(p1[1], 2))} "
            f"L{svg.num(round(p2[0], 2))} {svg.num(round(p2[1], 2))} Z")
    return svg.group([
        svg.line(round(x1, 2), round(y1, 2), round(hx, 2), round(hy, 2), stroke="highlight",
                 width=1.8),
        f"<path{svg.attrs(d=head, style='fill:' + svg.color('highlight'))}/>",
    ], tip=tip, data_k=key)


def swaps(events) -> list:
    """The step's SwappedOut and SwappedIn events, in order: what swap_arrows draws."""
    return [e for e in events if isinstance(e, (SwappedOut, SwappedIn))]


def swap_arrows(x: float, gpu_y: float, cpu_y: float, snap: dict, events) -> list[str]:
    """One arrow per block a swap copied, from the GPU block's bottom edge to the CPU
    block's top edge (swap out) or back (swap in); `gpu_y` and `cpu_y` are where
    kv_view.pool drew the two pools."""
    out = []
    for e in swaps(events):
        for a, b in e.mapping:
            g, c = (a, b) if isinstance(e, SwappedOut) else (b, a)
            gx, gy, gw, gh = kv_view.pool_block_box(x, gpu_y, snap, g)
            cx, cy, cw, _ = kv_view.pool_block_box(x, cpu_y, snap, c)
            start, end = (gx + gw / 2, gy + gh), (cx + cw / 2, cy)
            if isinstance(e, SwappedIn):
                start, end = end, start
                tip = f"{e.request_id}: CPU block {c} swapped in to GPU block {g}"
            else:
                tip = f"{e.request_id}: GPU block {g} swapped out to CPU block {c}"
            way = "in" if isinstance(e, SwappedIn) else "out"
            out.append(arrow(*start, *end, tip=tip, key=f"swap:{way}:gpu:{g}:cpu:{c}"))
    return out
