"""A legend of colour chips: a small mark in a palette colour and its label, wrapped to the
picture's width. For pictures whose colours mean something the shared panels cannot say
themselves (which sample owns a block, which candidate was kept). Text is kv_view.FONT, the
size every picture keeps so that a phone draws it at 11 px or more."""
from __future__ import annotations

from pages.views import fit, kv_view, svg

CHIP = 12           # the mark's side
GAP = 14            # between one item and the next


def mark(x: float, y: float, color: str, style: str = "fill") -> str:
    """The chip itself, its top left at (x, y): "fill" a filled square, "dashed" a pale
    dashed box (free, pruned), "outline" a box drawn in the colour."""
    if style == "dashed":
        return svg.rect(x, y, CHIP, CHIP, fill="free", stroke=color, rx=1,
                        stroke_dasharray="3 2")
    if style == "outline":
        return svg.rect(x + 1, y + 1, CHIP - 2, CHIP - 2, fill="panel", stroke=color,
                        stroke_width=2.5, rx=1)
    return svg.rect(x, y, CHIP, CHIP, fill=color, rx=1)


def chips(x: float, y: float, items: list[tuple], right: float = kv_view.WIDTH - kv_view.MARGIN,
          title: str | None = None) -> tuple[list[str], float]:
    """Items (palette colour, label) or (palette colour, label, style) in rows that wrap
    before `right`, after an optional muted `title`; returns (elements, height)."""
    font = kv_view.FONT
    row_h = round(font * 1.5, 2)
    out = []
    cx, cy = x, y
    if title:
        out.append(svg.text(cx, cy + font, title, size=font, fill="muted"))
        cx += kv_view.text_width(title) + 8
    for item in items:
        color, label = item[0], item[1]
        style = item[2] if len(item) > 2 else "fill"
        w = CHIP + 5 + kv_view.text_width(label)
        if cx > x and cx + w > right:
            cx, cy = x, cy + row_h
        out.append(mark(cx, cy + font - CHIP + 1.5, color, style))
        out.append(svg.text(cx + CHIP + 5, cy + font, label, size=font))
        cx += w + GAP
    return out, cy - y + row_h


SWATCH = 14         # a topic's own legend sample, drawn by its `swatch(kind, x, y)`


def swatch_item(out: list[str], cx: float, cy: float, left: float, right: float, size: float,
                swatch, kind: str, text: str) -> tuple[float, float]:
    """Append one legend item (the topic's 14-unit sample of `kind`, then `text`) at (cx,
    cy), starting a new row at `left` when it would cross `right`; returns the next (cx,
    cy)."""
    w = SWATCH + 5 + fit.text_width(text, size)
    if cx > left and cx + w > right:
        cx, cy = left, cy + size * 1.6
    out += swatch(kind, cx, cy + 2)
    out.append(svg.text(cx + SWATCH + 5, cy + size, text, size=size))
    return cx + w + 12, cy
