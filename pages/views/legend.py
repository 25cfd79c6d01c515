"""A legend of colour chips: a small square in a palette colour and its label, wrapped to
the picture's width. For pictures whose colours mean something the shared panels cannot say
themselves (which blocks are shared, which sample owns the rest)."""
from __future__ import annotations

from pages.views import kv_view, svg


def chips(x: float, y: float, items: list[tuple[str, str]],
          right: float = kv_view.WIDTH - kv_view.MARGIN) -> tuple[list[str], float]:
    """(palette colour, label) pairs in a row, wrapping before `right`; returns (elements,
    height)."""
    out = []
    cx, cy = x, y
    for color, label in items:
        # SVG cannot measure text: about 6 units a character at size 10.
        w = 14 + 6 * len(label) + 10
        if cx > x and cx + w > right:
            cx, cy = x, cy + 16
        out.append(svg.rect(cx, cy + 2, 10, 10, fill=color, rx=1))
        out.append(svg.text(cx + 14, cy + 11, label, size=10))
        cx += w
    return out, cy - y + 16
