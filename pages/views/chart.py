"""Line and scatter charts as SVG, drawn by Python (shared by every page's charts).

A chart is data in, SVG text out: `plot(...)` returns the elements for a box inside a larger
picture, `chart(...)` wraps them in a document. Axes may be linear or logarithmic (base 10
or 2); ticks are chosen so the labels are round numbers. Every series point can carry a
hover text, and all text is escaped by pages/views/svg.py.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pages.views import svg

PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 62, 14, 30, 44


@dataclass(frozen=True)
class Series:
    """One line or set of points. `color` is a palette name (pages/views/svg.py COLORS)."""
    name: str
    points: Sequence[tuple[float, float]]
    color: str = "seq-0"
    kind: str = "line"              # "line", "points" or "both"
    dashed: bool = False
    tips: Sequence[str] = ()        # one hover text per point (optional)
    marker: str = "circle"          # "circle" or "square" (for points)


@dataclass(frozen=True)
class Axis:
    label: str
    log: bool = False
    base: int = 10                  # 10 or 2 for a log axis
    lo: float | None = None         # limits; None = from the data
    hi: float | None = None
    fmt: Callable[[float], str] | None = None


@dataclass(frozen=True)
class Marker:
    """A vertical or horizontal reference line with a label (a ridge point, a limit).
    `label_at`: "start" puts a vertical line's label at its top (a horizontal line's at the
    right end), "end" at its foot (the left end), away from data near the other end."""
    x: float | None = None
    y: float | None = None
    label: str = ""
    color: str = "muted"
    label_at: str = "start"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round-number ticks covering [lo, hi] (steps of 1, 2 or 5 x 10^k)."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


def log_ticks(lo: float, hi: float, base: int) -> list[float]:
    k0 = math.floor(math.log(lo, base) + 1e-9)
    k1 = math.ceil(math.log(hi, base) - 1e-9)
    ticks = [float(base ** k) for k in range(k0, k1 + 1)]
    # Too many labels on a base-2 axis: keep every other one.
    while len(ticks) > 9:
        ticks = ticks[::2]
    return ticks


def si(x: float) -> str:
    """Compact numbers for tick labels: 1.5K, 2M, 3G, 0.01."""
    ax = abs(x)
    for div, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if ax >= div:
            return f"{x / div:.3g}{suffix}"
    if ax == 0 or ax >= 1:
        return f"{x:.4g}"
    return f"{x:.2g}"


class _Scale:
    def __init__(self, axis: Axis, lo: float, hi: float, a: float, b: float) -> None:
        self.axis, self.a, self.b = axis, a, b
        if axis.log:
            lo = max(lo, 1e-300)
            self.lo, self.hi = math.log(lo, axis.base), math.log(hi, axis.base)
        else:
            self.lo, self.hi = lo, hi
        if self.hi == self.lo:
            self.hi = self.lo + 1

    def __call__(self, v: float) -> float:
        if self.axis.log:
            v = math.log(max(v, 1e-300), self.axis.base)
        return self.a + (v - self.lo) / (self.hi - self.lo) * (self.b - self.a)


def _limits(axis: Axis, values: list[float]) -> tuple[float, float]:
    if axis.log:
        values = [v for v in values if v > 0]
    lo = axis.lo if axis.lo is not None else (min(values) if values else 0.0)
    hi = axis.hi if axis.hi is not None else (max(values) if values else 1.0)
    if axis.log:
        lo = axis.base ** math.floor(math.log(lo, axis.base) + 1e-9) if axis.lo is None else lo
        hi = axis.base ** math.ceil(math.log(hi, axis.base) - 1e-9) if axis.hi is None else hi
    elif axis.lo is None and lo > 0:
        lo = 0.0
    if hi <= lo:
        hi = lo + 1
    return lo, hi


def plot(x0: float, y0: float, width: float, height: float, series: Sequence[Series], *,
         x: Axis, y: Axis, markers: Sequence[Marker] = (), title: str = "",
         legend: bool = True, font_scale: float = 1.0, key: str = "c") -> list[str]:
    """The elements of one chart whose outer box is (x0, y0, width, height).
    `font_scale` enlarges every label (e.g. 1.3 for a picture that a phone shrinks).
    Series and points are keyed for the player's transitions (line:<key>:<series name>,
    pt:<key>:<series name>:<point>; spaces in the name become '-'): two charts in one
    picture need different `key`s."""
    xs = [p[0] for s in series for p in s.points]
    ys = [p[1] for s in series for p in s.points]
    xs += [m.x for m in markers if m.x is not None]
    ys += [m.y for m in markers if m.y is not None]
    xlo, xhi = _limits(x, xs)
    ylo, yhi = _limits(y, ys)
    fs = font_scale
    left, right = x0 + PAD_LEFT * fs, x0 + width - PAD_RIGHT
    top, bottom = y0 + PAD_TOP * fs, y0 + height - PAD_BOTTOM * fs
    sx = _Scale(x, xlo, xhi, left, right)
    sy = _Scale(y, ylo, yhi, bottom, top)
    fx = x.fmt or si
    fy = y.fmt or si
    out: list[str] = []
    if title:
        out.append(svg.text(x0 + width / 2, y0 + 16 * fs, title, anchor="middle", size=13 * fs))
    xt = log_ticks(xlo, xhi, x.base) if x.log else nice_ticks(xlo, xhi)
    yt = log_ticks(ylo, yhi, y.base) if y.log else nice_ticks(ylo, yhi)
    for t in yt:
        py = sy(t)
        out.append(svg.line(left, py, right, py, stroke="free"))
        out.append(svg.text(left - 6, py + 4 * fs, fy(t), anchor="end", size=10 * fs, fill="muted"))
    for t in xt:
        px = sx(t)
        out.append(svg.line(px, top, px, bottom, stroke="free"))
        out.append(svg.text(px, bottom + 14 * fs, fx(t), anchor="middle", size=10 * fs,
                            fill="muted"))
    out.append(svg.line(left, bottom, right, bottom, stroke="line"))
    out.append(svg.line(left, top, left, bottom, stroke="line"))
    out.append(svg.text((left + right) / 2, bottom + 32 * fs, x.label, anchor="middle",
                        size=11 * fs))
    out.append(svg.text(x0 + 12 * fs, (top + bottom) / 2, y.label, anchor="middle",
                        size=11 * fs, transform=f"rotate(-90 {svg.num(x0 + 12 * fs)} "
                                                f"{svg.num((top + bottom) / 2)})"))
    for m in markers:
        if m.x is not None:
            px = sx(m.x)
            out.append(svg.line(px, top, px, bottom, stroke=m.color, width=1.5,
                                stroke_dasharray="5 3"))
            if m.label:
                ly = top + 12 * fs if m.label_at == "start" else bottom - 6
                out.append(svg.text(px + 4, ly, m.label, size=10 * fs, fill=m.color))
        if m.y is not None:
            py = sy(m.y)
            out.append(svg.line(left, py, right, py, stroke=m.color, width=1.5,
                                stroke_dasharray="5 3"))
            if m.label:
                at_end = m.label_at == "start"
                out.append(svg.text(right - 4 if at_end else left + 4, py - 4, m.label,
                                    size=10 * fs, fill=m.color,
                                    anchor="end" if at_end else "start"))
    for s in series:
        si_ = "-".join(s.name.split())
        pts = [(sx(px), sy(py)) for px, py in s.points
               if not (x.log and px <= 0) and not (y.log and py <= 0)]
        if s.kind in ("line", "both") and len(pts) > 1:
            d = "M" + " L".join(f"{svg.num(a)} {svg.num(b)}" for a, b in pts)
            style = (f"fill:none;stroke:{svg.color(s.color)};stroke-width:2"
                     + (";stroke-dasharray:6 4" if s.dashed else ""))
            out.append(f"<path{svg.attrs(d=d, style=style, data_k=f'line:{key}:{si_}')}>"
                       f"{svg.title(s.name)}</path>")
        if s.kind in ("points", "both"):
            for i, (a, b) in enumerate(pts):
                tip = (s.tips[i] if i < len(s.tips)
                       else f"{s.name}: {fx(s.points[i][0])}, {fy(s.points[i][1])}")
                k = f"pt:{key}:{si_}:{i}"
                if s.marker == "square":
                    out.append(svg.rect(a - 4, b - 4, 8, 8, fill=s.color, tip=tip, rx=1,
                                        data_k=k))
                else:
                    dot_style = f"fill:{svg.color(s.color)}"
                    out.append(f"<circle{svg.attrs(cx=a, cy=b, r=4.5, style=dot_style, data_k=k)}>"
                               f"{svg.title(tip)}</circle>")
    if legend and len(series) > 1:
        lx, ly = left + 8, top + 6
        for i, s in enumerate(series):
            yy = ly + i * 15 * fs
            out.append(svg.rect(lx, yy, 12 * fs, 10 * fs, fill=s.color, rx=1))
            out.append(svg.text(lx + 17 * fs, yy + 9 * fs, s.name, size=10 * fs))
    return out


def chart(series: Sequence[Series], *, x: Axis, y: Axis, width: float = 640,
          height: float = 360, markers: Sequence[Marker] = (), title: str = "",
          label: str | None = None, legend: bool = True, font_scale: float = 1.0) -> str:
    """A whole SVG document with one chart."""
    body = plot(0, 0, width, height, series, x=x, y=y, markers=markers, title=title,
                legend=legend, font_scale=font_scale)
    return svg.document(width, height, body, label=label or title or y.label)
