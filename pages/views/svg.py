"""Small helpers every view uses to write SVG text.

Why these exist: every string placed in a picture is escaped here, so a reader's text can
never become markup; colours are CSS variables (declared in docs/css/widgets.css for the
light and the dark palette), so one SVG serves both themes; numbers are formatted one way,
so CPython and Pyodide produce the same bytes; every drawn block can carry a <title>, which
browsers show on hover and screen readers read.
"""

from __future__ import annotations

from dataclasses import dataclass

# The palette a view may use. docs/css/widgets.css defines --vsb-<name> for each, in the
# light and the dark scheme; tests/test_svg.py checks the two lists agree.
COLORS = (
    "fg", "muted", "bg", "panel", "line", "accent",
    "free", "used", "waste", "highlight",
    "seq-0", "seq-1", "seq-2", "seq-3", "seq-4", "seq-5", "seq-6", "seq-7",
)
SEQ_COLORS = 8

_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
                          "'": "&#39;"})


def esc(text: object) -> str:
    """Escape text for an SVG/HTML text node or a quoted attribute value."""
    # str.translate: this runs for every string in every frame, so it must be cheap.
    return str(text).translate(_ESCAPES)


def color(name: str) -> str:
    """A palette colour as a CSS value; unknown names fail loudly at build time."""
    if name not in COLORS:
        raise ValueError(f"unknown colour {name!r}; the palette is {COLORS}")
    return f"var(--vsb-{name})"


def seq(index: int) -> str:
    """The palette name of the index-th sequence's (or request's) colour, cycling."""
    return f"seq-{index % SEQ_COLORS}"


def num(x: float) -> str:
    """A coordinate as short, deterministic text: integers bare, others to 2 decimals."""
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.2f}".rstrip("0").rstrip(".")


def attrs(**kw: object) -> str:
    """Attributes in the given order; `class_` -> class, `font_size` -> font-size.
    None values are left out; numbers go through num()."""
    parts = []
    for key, value in kw.items():
        if value is None:
            continue
        name = key.rstrip("_").replace("_", "-")
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        text = num(value) if is_number else str(value)
        parts.append(f' {name}="{esc(text)}"')
    return "".join(parts)


def title(text: str) -> str:
    return f"<title>{esc(text)}</title>"


def rect(x: float, y: float, w: float, h: float, *, fill: str, stroke: str | None = None,
         tip: str | None = None, rx: float = 2, **kw: object) -> str:
    """A filled box; `fill`/`stroke` are palette names; `tip` becomes its <title>."""
    style = f"fill:{color(fill)}" + (f";stroke:{color(stroke)}" if stroke else "")
    inner = title(tip) if tip else ""
    return f"<rect{attrs(x=x, y=y, width=w, height=h, rx=rx, style=style, **kw)}>{inner}</rect>"


def text(x: float, y: float, content: object, *, fill: str = "fg", size: float = 12,
         anchor: str = "start", **kw: object) -> str:
    """A line of escaped text; `anchor` is SVG's text-anchor (start, middle, end)."""
    style = f"fill:{color(fill)}"
    return (f"<text{attrs(x=x, y=y, font_size=size, text_anchor=anchor, style=style, **kw)}>"
            f"{esc(content)}</text>")


def line(x1: float, y1: float, x2: float, y2: float, *, stroke: str = "line",
         width: float = 1, **kw: object) -> str:
    style = f"stroke:{color(stroke)};stroke-width:{num(width)}"
    return f"<line{attrs(x1=x1, y1=y1, x2=x2, y2=y2, style=style, **kw)}/>"


def group(children: list[str] | tuple[str, ...], *, tip: str | None = None, **kw: object) -> str:
    """A <g>; with `tip`, the whole group (a block with its slots) gets one <title>."""
    inner = (title(tip) if tip else "") + "".join(children)
    return f"<g{attrs(**kw)}>{inner}</g>"


def document(width: float, height: float, children: list[str] | tuple[str, ...], *,
             label: str) -> str:
    """The outer <svg>: a viewBox so it scales to any width, and an accessible name."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg"{attrs(viewBox=f"0 0 {num(width)} {num(height)}")}'
        f' role="img"{attrs(aria_label=label)} class="vsb-svg">'
        f"{title(label)}{''.join(children)}</svg>"
    )


@dataclass(frozen=True, slots=True)
class Figure:
    """A picture not yet wrapped in its <svg>: a view returns one, and `documents` gives every
    frame of a trace the same (tallest) height, so nothing under the picture moves."""
    width: float
    height: float
    body: list[str] | tuple[str, ...]
    label: str


def documents(pictures: list) -> list[str]:
    """SVG text for each picture: Figures share the tallest one's height; strings (views
    that wrap their own document) pass through."""
    height = max((p.height for p in pictures if isinstance(p, Figure)), default=0)
    return [document(p.width, height, p.body, label=p.label) if isinstance(p, Figure) else p
            for p in pictures]
