"""Drawing one engine step as the scheduler sees it: the token budget split into decode and
prefill tokens, the queues as lettered chips, the pool of KV blocks as a strip, and dot rows
for per-request numbers (a chart that reads on a phone).

Every function takes the text size `size` (at least `fit.min_size(width)`, so labels read at
11 px on a phone) and returns (elements, height). Colours are palette names; a request's
colour is `svg.seq(i)` for its place in the workload, so it is the same in every panel.
Snapshots may come from either engine (sim/core/snapshot.py, sim/v1/snapshot.py): V1's
blocks carry "hash" and "cached", and block 0 (its null block) is left out of the strip.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pages.views import fit, svg
from pages.views.text import plural

DECODE, PREFILL = "decode", "prefill"


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of budget tokens given to one request in one step."""
    request_id: str
    tokens: int
    kind: str            # DECODE or PREFILL (a prompt chunk, or a recomputed prefix)
    color: str           # the request's palette colour
    tip: str = ""


def segments(scheduled, colors: dict[str, str]) -> list[Segment]:
    """A step's `Scheduled` records (sim.trace) as budget segments, in scheduling order."""
    out = []
    for s in scheduled:
        kind = PREFILL if s.prefill else DECODE
        what = (f"{plural(s.num_tokens, 'prompt token')}" if s.prefill
                else f"decode, {plural(s.num_tokens, 'token')}")
        out.append(Segment(s.request_id, s.num_tokens, kind, colors.get(s.request_id, "seq-0"),
                           f"{s.request_id}: {what}"))
    return out


def bar(x: float, y: float, width: float, budget: int, segs: Sequence[Segment], *,
        size: float, height: float | None = None,
        key: str = "budget") -> tuple[list[str], float]:
    """The budget as a bar `width` wide: one cell per token; decode tokens solid, prefill
    tokens light with an outline, the unused rest empty. A segment is lettered (its request,
    and its token count when there is room). Keys: the bar `key`, a request's segment
    <key>:<request id> (a request's share grows and shrinks from step to step)."""
    h = height or size * 1.6
    cell = width / budget
    out = [svg.rect(x, y, width, h, fill="free", rx=2,
                    tip=f"token budget: {plural(budget, 'token')} per step", data_k=key)]
    cx = x
    for seg in segs:
        w = cell * seg.tokens
        k = f"{key}:{seg.request_id}"
        if seg.kind == DECODE:
            out.append(svg.rect(cx + 0.5, y + 0.5, w - 1, h - 1, fill=seg.color, rx=1.5,
                                tip=seg.tip, data_k=k))
            ink = "bg"
        else:
            out.append(svg.rect(cx + 0.75, y + 0.75, w - 1.5, h - 1.5, fill=seg.color,
                                stroke=seg.color, rx=1.5, fill_opacity="0.3",
                                stroke_width=1.5, tip=seg.tip, data_k=k))
            ink = "fg"
        label = f"{seg.request_id} {seg.tokens}" if seg.kind == PREFILL else seg.request_id
        if fit.text_width(label, size) + 4 > w:
            label = seg.request_id
        if fit.text_width(label, size) + 2 <= w:
            out.append(svg.text(cx + w / 2, y + h / 2 + size * 0.36, label, size=size,
                                anchor="middle", fill=ink, data_k=f"{k}/t"))
        cx += w
    return out, h


# Chip styles: "ran" (it computed tokens this step), "idle" (in the queue, did not run),
# "paused" (running, but the step did not run it: dashed), "preempted" (highlight outline).
def chip(x: float, y: float, text: str, color: str, style: str, *, size: float,
         tip: str = "", key: str | None = None) -> tuple[str, float]:
    """A lettered chip (keyed `key`); returns (element, width)."""
    w = fit.text_width(text, size) + size * 0.7
    h = size * 1.35
    if style == "ran":
        box = svg.rect(x, y, w, h, fill=color, stroke=color, rx=3, fill_opacity="0.3",
                       stroke_width=1.5)
    elif style == "paused":
        box = svg.rect(x + 0.75, y + 0.75, w - 1.5, h - 1.5, fill="bg", stroke=color, rx=3,
                       stroke_width=1.5, stroke_dasharray="3 2")
    elif style == "preempted":
        box = svg.rect(x + 1, y + 1, w - 2, h - 2, fill="bg", stroke="highlight", rx=3,
                       stroke_width=2.5)
    else:
        box = svg.rect(x, y, w, h, fill="panel", stroke=color, rx=3, stroke_width=1)
    label = svg.text(x + w / 2, y + h / 2 + size * 0.36, text, size=size, anchor="middle")
    return svg.group([box, label], tip=tip or None, data_k=key), w


def chip_row(x: float, y: float, right: float, groups, *, size: float) -> tuple[list[str], float]:
    """Labelled groups of chips, e.g. ("running", [(text, color, style, tip), ...]), in one
    line that wraps before `right`; an item may add a fifth field, the chip's key (a
    request's chip keeps it from queue to queue). Returns (elements, height)."""
    out: list[str] = []
    gap = size * 0.35
    h = size * 1.35
    cx, cy = x, y
    for name, items in groups:
        need = fit.text_width(name, size) + gap + sum(
            fit.text_width(t, size) + size * 0.7 + gap for t, *_ in items[:1])
        if cx > x and cx + need > right:
            cx, cy = x, cy + h + gap
        out.append(svg.text(cx, cy + h / 2 + size * 0.36, name, size=size, fill="muted"))
        cx += fit.text_width(name, size) + gap
        if not items:
            out.append(svg.text(cx, cy + h / 2 + size * 0.36, "-", size=size, fill="muted"))
            cx += fit.text_width("-", size) + gap
        for text, color, style, tip, *key in items:
            w = fit.text_width(text, size) + size * 0.7
            if cx + w > right:
                cx, cy = x + size, cy + h + gap
            element, w = chip(cx, cy, text, color, style, size=size, tip=tip,
                              key=key[0] if key else None)
            out.append(element)
            cx += w + gap
        cx += size * 0.8
    return out, cy + h - y


def pool(x: float, y: float, width: float, snap: dict, colors: dict[str, str], *,
         size: float, highlight: set[int] = frozenset(),
         key: str = "blk:gpu") -> tuple[list[str], float]:
    """The usable GPU blocks as a strip of squares: a block held by requests in its first
    holder's colour; a free block that keeps its prefix-cache hash (V1) outlined; other free
    blocks empty. `highlight` outlines blocks (by number) that changed this step. Block n
    is keyed <key>:<n>, its outline <key>:<n>/h."""
    blocks = snap["gpu"]["blocks"]
    null = snap.get("null_block")
    numbers = [i for i in range(len(blocks)) if i != null]
    owner: dict[int, list[str]] = {}
    for r in snap["requests"]:
        for s in r["seqs"]:
            for dev, num, _ in s["block_table"]:
                if dev == "gpu":
                    owner.setdefault(num, []).append(r["request_id"])
    n = len(numbers)
    per_row = n if n <= 32 else -(-n // 2)
    cell = width / per_row
    h = min(size * 1.1, cell * 1.6)
    out = []
    for k, num in enumerate(numbers):
        row, col = divmod(k, per_row)
        bx, by = x + col * cell, y + row * (h + 3)
        held = owner.get(num)
        b = blocks[num]
        bk = f"{key}:{num}"
        if held:
            out.append(svg.rect(bx + 0.5, by, cell - 1, h, fill=colors.get(held[0], "used"),
                                rx=1, tip=f"block {num}: {', '.join(held)}", data_k=bk))
        elif b.get("hash"):
            out.append(svg.rect(bx + 1, by + 1, cell - 2, h - 2, fill="free", stroke="accent",
                                rx=1, stroke_width=1.5,
                                tip=f"block {num}: free, still cached (hash {b['hash']})",
                                data_k=bk))
        else:
            out.append(svg.rect(bx + 0.5, by, cell - 1, h, fill="free", rx=1,
                                tip=f"block {num}: free", data_k=bk))
        if num in highlight:
            out.append(svg.rect(bx + 0.5, by - 1.5, cell - 1, h + 3, fill="bg",
                                fill_opacity="0", stroke="highlight", stroke_width=2, rx=1,
                                data_k=f"{bk}/h"))
    rows = -(-n // per_row)
    return out, rows * (h + 3) - 3


def dot_rows(x: float, y: float, width: float, rows: Sequence[tuple[str, Sequence[float | None]]],
             series: Sequence[tuple[str, str, str]], *, size: float, title: str,
             unit: str = "ms", hi: float | None = None,
             tips: Sequence[Sequence[str]] | None = None) -> tuple[list[str], float]:
    """A dot chart: one row per item (label, one value per series), a shared linear axis
    from 0. `series`: (name, colour, marker) with marker "circle", "square" or "diamond".
    Returns (elements, height); the legend is the caller's (fit.legend)."""
    from pages.views.chart import nice_ticks
    values = [v for _, vs in rows for v in vs if v is not None]
    top = max(values) if values else 1.0
    ticks = nice_ticks(0.0, hi if hi is not None else top, 4)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    while ticks[-1] < top:
        ticks.append(ticks[-1] + step)
    hi = ticks[-1]
    label_w = max(fit.text_width(name, size) for name, _ in rows) + size * 0.6
    left, right = x + label_w, x + width - fit.text_width(_tick(ticks[-1]), size) / 2 - 2
    row_h = size * 1.6
    out = [svg.text(x, y + size, title, size=size)]
    y0 = y + size * 1.6
    plot_h = row_h * len(rows)

    def px(v: float) -> float:
        return left + (right - left) * v / hi

    for t in ticks:
        out.append(svg.line(px(t), y0, px(t), y0 + plot_h, stroke="free"))
        out.append(svg.text(px(t), y0 + plot_h + size * 1.1, _tick(t), size=size,
                            anchor="middle", fill="muted"))
    out.append(svg.text(right, y0 + plot_h + size * 2.3, unit, size=size, anchor="end",
                        fill="muted"))
    for i, (name, vs) in enumerate(rows):
        cy = y0 + row_h * i + row_h / 2
        if i % 2:
            out.append(svg.rect(x, cy - row_h / 2, width, row_h, fill="panel", rx=0))
        out.append(svg.text(x, cy + size * 0.36, name, size=size))
        present = [v for v in vs if v is not None]
        if len(present) > 1:
            out.append(svg.line(px(min(present)), cy, px(max(present)), cy, stroke="line"))
        # Series sit a little above and below the row's line, so equal values stay visible.
        mid = (len(series) - 1) / 2
        for k, (v, (sname, color, marker)) in enumerate(zip(vs, series)):
            if v is None:
                continue
            tip = tips[i][k] if tips else f"{name}, {sname}: {v:.1f} {unit}"
            dy = (k - mid) * row_h * 0.22
            out.append(_marker(marker, px(v), cy + dy, size * 0.38, color, tip,
                               key=f"dot:{i}:{k}"))
    out.append(svg.line(left, y0 + plot_h, right, y0 + plot_h, stroke="line"))
    return out, (y0 - y) + plot_h + size * 2.6


def _tick(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _marker(kind: str, cx: float, cy: float, r: float, color: str, tip: str,
            key: str | None = None) -> str:
    style = f"fill:{svg.color(color)};stroke:{svg.color('bg')};stroke-width:1"
    if kind == "square":
        return svg.rect(cx - r, cy - r, 2 * r, 2 * r, fill=color, rx=1, tip=tip, data_k=key)
    if kind == "diamond":
        pts = (f"{svg.num(cx)},{svg.num(cy - r * 1.3)} {svg.num(cx + r * 1.3)},{svg.num(cy)} "
               f"{svg.num(cx)},{svg.num(cy + r * 1.3)} {svg.num(cx - r * 1.3)},{svg.num(cy)}")
        return (f"<polygon{svg.attrs(points=pts, style=style, data_k=key)}>"
                f"{svg.title(tip)}</polygon>")
    return (f"<circle{svg.attrs(cx=cx, cy=cy, r=r * 1.1, style=style, data_k=key)}>"
            f"{svg.title(tip)}</circle>")


# Legend entries for the marks above: (kind, palette colour, label). Kinds: "decode" (a solid
# cell), "prefill" (a light cell with an outline), "free" (an empty cell), "cached" (a free
# block that keeps its hash), "paused" (a dashed chip), "highlight" (an outline in the
# highlight colour), "text:<s>" (a few characters in the colour), and the dot-chart markers
# "circle", "square", "diamond".
def legend(x: float, y: float, right: float, items, *, size: float) -> tuple[list[str], float]:
    """Legend entries in rows that wrap before `right`; y is the top. Returns (elements,
    height)."""
    gap = size * 1.1
    row_h = size * 1.5
    box = size * 0.9
    out: list[str] = []
    cx, cy = x, y + size * 1.1
    for kind, color, text in items:
        mark_w = fit.text_width(kind[5:], size) if kind.startswith("text:") else box
        w = mark_w + size * 0.4 + fit.text_width(text, size)
        if cx > x and cx + w > right:
            cx, cy = x, cy + row_h
        top = cy - box + 1
        if kind == "decode":
            out.append(svg.rect(cx, top, box, box, fill=color, rx=1.5))
        elif kind == "prefill":
            out.append(svg.rect(cx + 0.75, top + 0.75, box - 1.5, box - 1.5, fill=color,
                                stroke=color, rx=1.5, fill_opacity="0.3", stroke_width=1.5))
        elif kind == "free":
            out.append(svg.rect(cx, top, box, box, fill="free", rx=1.5))
        elif kind == "cached":
            out.append(svg.rect(cx + 1, top + 1, box - 2, box - 2, fill="free", stroke=color,
                                rx=1, stroke_width=1.5))
        elif kind == "paused":
            out.append(svg.rect(cx + 0.75, top + 0.75, box - 1.5, box - 1.5, fill="bg",
                                stroke=color, rx=2, stroke_width=1.5, stroke_dasharray="3 2"))
        elif kind == "highlight":
            out.append(svg.rect(cx + 1, top + 1, box - 2, box - 2, fill="bg", stroke=color,
                                rx=1, stroke_width=2.5))
        elif kind in ("circle", "square", "diamond"):
            out.append(_marker(kind, cx + box / 2, top + box / 2, size * 0.42, color, text))
        elif kind.startswith("text:"):
            out.append(svg.text(cx, cy, kind[5:], size=size, fill=color))
        else:
            raise ValueError(f"unknown legend mark {kind!r}")
        out.append(svg.text(cx + mark_w + size * 0.4, cy, text, size=size))
        cx += w + gap
    return out, cy - y + size * 0.45


def legend_marker(kind: str, color: str, x: float, y: float, size: float) -> str:
    """A series marker for a legend row whose text baseline is y."""
    return _marker(kind, x + size * 0.4, y - size * 0.35, size * 0.42, color, "")
