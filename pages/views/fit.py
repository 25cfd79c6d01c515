"""Text that reads on a phone: sizes, widths, wrapped lines and legends for pictures whose
text must stay at 11 px or more when the picture is drawn at a phone's column width.

A picture takes the column's width (docs/css/widgets.css); on a 390 px phone that column
is about 330 px (measured by tests/browser/test_reading.py: an 11-unit text in a 360-unit
view renders at 10.1 px). So a view `width` units wide needs text of at least
`min_size(width)` units: 13.5 for a 400-unit view. SVG cannot measure text, so widths are
estimated from the monospace advance (0.6 em in DejaVu Sans Mono and Menlo, less in
Consolas), with a little room to spare.
"""
from __future__ import annotations

import math

from pages.views import svg
from pages.views.text import wrap

PHONE_PX = 330          # the picture's width on a 390 px phone
MIN_PX = 11             # the smallest text a reader should get
CHAR_EM = 0.61          # a monospace character's advance, in ems, rounded up


def min_size(width: float) -> float:
    """The smallest font size (user units) for a view `width` units wide, to half a unit
    above 11 px on a phone."""
    return math.ceil(MIN_PX * 1.01 * width / PHONE_PX * 2) / 2


def text_width(text: str, size: float) -> float:
    return len(str(text)) * size * CHAR_EM


def chars(room: float, size: float) -> int:
    """How many characters fit in `room` units at `size`."""
    return max(1, int(room / (size * CHAR_EM)))


def lines(text: str, size: float, room: float) -> list[str]:
    """`text` wrapped to `room` units at `size`."""
    return wrap(text, chars(room, size)) or [""]


def paragraph(x: float, y: float, text: str, *, size: float, room: float, fill: str = "fg",
              leading: float = 1.3, indent: str = "") -> tuple[list[str], float]:
    """Wrapped lines whose first baseline is y + size; returns (elements, height). Lines after
    the first are indented by the width of `indent`; leading spaces of `text` indent it all
    (SVG would drop them)."""
    lead = text_width(" " * (len(text) - len(text.lstrip(" "))), size)
    x, room, text = x + lead, room - lead, text.lstrip(" ")
    out, h = [], 0.0
    first, *rest = lines(text, size, room)
    step = text_width(indent, size)
    if rest and indent:
        rest = lines(" ".join(rest), size, room - step)
    for i, line in enumerate([first, *rest]):
        h += size * leading
        out.append(svg.text(x + (step if i else 0), y + h - size * (leading - 1) / 2 - 1,
                            line, size=size, fill=fill))
    return out, h


# A legend entry: (mark, palette colour, label). Marks: "chip" (a filled square),
# "outline" (an empty square with a coloured border), "dot" (a filled circle), "line" (a
# short stroke), "dash" (a dashed stroke), "text:<s>" (a few characters in that colour).
def mark(kind: str, color: str, x: float, y: float, size: float) -> str:
    s = size * 0.8
    if kind == "chip":
        return svg.rect(x, y - s, s, s, fill=color, rx=1)
    if kind == "outline":
        return svg.rect(x + 1, y - s + 1, s - 2, s - 2, fill="bg", stroke=color,
                        stroke_width=2.5, rx=1)
    if kind == "dot":
        return (f"<circle{svg.attrs(cx=x + s / 2, cy=y - s / 2, r=s / 2.4)}"
                f" style=\"fill:{svg.color(color)}\"></circle>")
    if kind in ("line", "dash"):
        extra = {"stroke_dasharray": "4 3"} if kind == "dash" else {}
        return svg.line(x, y - s / 2, x + s * 1.6, y - s / 2, stroke=color, width=2, **extra)
    if kind.startswith("text:"):
        return svg.text(x, y, kind[5:], size=size, fill=color)
    raise ValueError(f"unknown legend mark {kind!r}")


def mark_width(kind: str, size: float) -> float:
    if kind.startswith("text:"):
        return text_width(kind[5:], size)
    return size * (1.3 if kind in ("line", "dash") else 0.8)


def legend(x: float, y: float, right: float, items, *, size: float,
           gap: float | None = None) -> tuple[list[str], float]:
    """Legend entries in rows that wrap before `right`; y is the top. Returns (elements,
    height)."""
    gap = size * 1.2 if gap is None else gap
    row_h = size * 1.45
    out: list[str] = []
    cx, cy = x, y + size * 1.1
    for kind, color, label in items:
        w = mark_width(kind, size) + size * 0.4 + text_width(label, size)
        if cx > x and cx + w > right:
            cx, cy = x, cy + row_h
        out.append(mark(kind, color, cx, cy, size))
        out.append(svg.text(cx + mark_width(kind, size) + size * 0.4, cy, label, size=size))
        cx += w + gap
    return out, cy - y + size * 0.45
