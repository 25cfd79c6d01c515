"""The two GPUs side by side, after one step of either: each one's queues and its pool of
KV blocks (a block fills with its owner's colour as far as its KV is there: computed on the
prefill side, landed on the decode side), and the link below with the reads under way.

Keys (pages/views/svg.py `data_k`): blocks `blk:prefill:7` and `blk:decode:7`, queue chips
`chip:prefill:A` and `chip:decode:A`, transfers `xfer:A`, the two columns `col:prefill` and
`col:decode`.
"""
from __future__ import annotations

from pages.views import kv_view, svg
from sim.studies.disaggregated import DECODE, PREFILL

W = kv_view.WIDTH
M = kv_view.MARGIN
F = kv_view.FONT
GAP = 12
COL_W = (W - 2 * M - GAP) / 2
COLS = 6
CELL_GAP = 3
CELL_W = (COL_W - (COLS - 1) * CELL_GAP) / COLS
CELL_H = 27
CHIP_H = 19
SIDE_TITLE = {PREFILL: "Prefill GPU", DECODE: "Decode GPU"}


def _x0(side: str) -> float:
    return M if side == PREFILL else M + COL_W + GAP


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def request_of(snap: dict) -> dict[str, dict]:
    return {r["request_id"]: r for r in snap["requests"]}


def status(r: dict) -> str:
    return r["seqs"][0]["status"]


def held(r: dict) -> bool:
    """Finished, its blocks kept (being sent, or its read in flight)."""
    return r["finished_step"] is not None and bool(r["seqs"][0]["block_table"])


def groups(side: str, snap: dict) -> list[tuple[str, list[str]]]:
    """The queue lines of one side, as (name, request ids)."""
    reqs = request_of(snap)
    q = snap["queues"]
    skipped = q.get("skipped_waiting", [])
    held_ids = [rid for rid, r in reqs.items() if held(r)]
    if side == PREFILL:
        return [("running", q["running"]), ("waiting", q["pending"] + q["waiting"]),
                ("held for the read", held_ids)]
    for_kv = [rid for rid in skipped if status(reqs[rid]) == "waiting_for_remote_kvs"]
    ready = [rid for rid in skipped if rid not in for_kv]
    return [("running", q["running"]), ("waiting for KVs", for_kv),
            ("waiting", q["pending"] + ready + q["waiting"]), ("held", held_ids)]


def _chips(side: str, x: float, y: float, snap: dict, colors: dict) -> tuple[list[str], float]:
    out: list[str] = []
    right = x + COL_W
    cy = y
    for name, ids in groups(side, snap):
        if not ids and name in ("held", "held for the read"):
            continue
        label = f"{name}:"
        out.append(svg.text(x, cy + CHIP_H - 5, label, size=F, fill="muted"))
        cx = x + kv_view.text_width(label) + 5
        if not ids:
            out.append(svg.text(cx, cy + CHIP_H - 5, "-", size=F, fill="muted"))
        for rid in ids:
            w = kv_view.text_width(rid) + 10
            if cx + w > right:
                cx, cy = x + 12, cy + CHIP_H + 3
            out.append(svg.group([
                svg.rect(cx, cy + 1, w, CHIP_H - 2, fill=colors.get(rid, "muted"), rx=4),
                svg.text(cx + 5, cy + CHIP_H - 5, rid, size=F, fill="bg")],
                tip=f"{rid}: {name} on the {side} GPU", data_k=f"chip:{side}:{rid}"))
            cx += w + 4
        cy += CHIP_H + 3
    return out, cy - y


def _owners(snap: dict) -> dict[int, tuple[str, int, int]]:
    """block id -> (request id, position in its table, tokens of KV there)."""
    out = {}
    for r in snap["requests"]:
        for logical, (_, block, filled) in enumerate(r["seqs"][0]["block_table"]):
            out[block] = (r["request_id"], logical, filled)
    return out


def _pool(side: str, x: float, y: float, snap: dict, colors: dict, changed: set[int]
          ) -> tuple[list[str], float]:
    gpu = snap["gpu"]
    bs = snap["block_size"]
    owners = _owners(snap)
    reqs = request_of(snap)
    out: list[str] = []
    usable = range(1, gpu["num_blocks"])     # block 0 is V1's null block: not drawn
    for i, n in enumerate(usable):
        bx = x + (i % COLS) * (CELL_W + CELL_GAP)
        by = y + (i // COLS) * (CELL_H + CELL_GAP)
        block = gpu["blocks"][n]
        owner = owners.get(n)
        parts = []
        if owner is None:
            tip = f"{side} block {n}: free"
            parts.append(svg.rect(bx, by, CELL_W, CELL_H, fill="free", rx=2))
            num_fill = "muted"
        else:
            rid, logical, filled = owner
            color = colors.get(rid, "muted")
            r = reqs[rid]
            is_held = held(r)
            first = logical * bs
            parts.append(svg.rect(bx + 0.75, by + 0.75, CELL_W - 1.5, CELL_H - 1.5, fill="bg",
                                  stroke=color, rx=2, stroke_width=1.5,
                                  stroke_dasharray="3 2" if is_held else None))
            if filled:
                h = (CELL_H - 3) * filled / bs
                parts.append(svg.rect(bx + 1.5, by + CELL_H - 1.5 - h, CELL_W - 3, h,
                                      fill=color, rx=1))
            where = ("computed" if side == PREFILL else "there")
            tip = (f"{side} block {n}: {rid}'s block {logical} (tokens {first}-"
                   f"{first + bs - 1}), KV of {filled} of {bs} tokens {where}"
                   + ("; finished, kept for the decode GPU's read" if is_held and side == PREFILL
                      else "; finished, kept until its read lands" if is_held else ""))
            num_fill = "fg" if filled < bs / 2 else "bg"
        if block["ref_count"] > 1:
            tip += f"; {block['ref_count']} requests share it"
        parts.append(svg.text(bx + 3, by + F + 1, n, size=F, fill=num_fill))
        if n in changed:
            parts.append(svg.rect(bx - 1.5, by - 1.5, CELL_W + 3, CELL_H + 3, fill="bg",
                                  stroke="highlight", rx=3, fill_opacity="0",
                                  stroke_width=2))
        out.append(svg.group(parts, tip=tip, data_k=f"blk:{side}:{n}"))
    rows = -(-len(usable) // COLS)
    height = rows * (CELL_H + CELL_GAP)
    free = gpu["num_free"]
    out.append(svg.text(x, y + height + F, f"{free} of {len(usable)} free", size=F,
                        fill="muted"))
    return out, height + F + 6


def _changed_blocks(step, side: str) -> set[int]:
    """Blocks this step allocated or freed on the side that stepped."""
    if step.step is None or step.snapshot["engine"] != side:
        return set()
    out = set()
    for e in step.events:
        name = type(e).__name__
        if name == "BlockAllocated":
            out.add(e.physical)
        elif name == "BlockFreed":
            out.add(e.physical)
    return out


def _link(y: float, snap: dict, colors: dict, block_bytes: int) -> tuple[list[str], float]:
    """The link and the reads that ran during this step or are still running; returns
    (elements, the y below them)."""
    link = snap["link"]
    per_block = block_bytes / link["bandwidth"]
    out = [svg.text(M, y + F, f"Link: {link['link']}", size=F)]
    y += F * 1.3 + 2
    out += kv_view.lines(M, y, f"{block_bytes / 2 ** 20:g} MiB per block: "
                               f"{per_block * 1e3:.2f} ms each", size=F)[0]
    y += F * 1.3 + 4
    shown = [t for t in link["transfers"] if t["end_s"] > snap["start_s"] or not t["done"]]
    if not shown:
        out.append(svg.text(M, y + F, "no read under way", size=F, fill="muted"))
        return out, y + F + 6
    bar_x = M + kv_view.text_width("A") + 8
    bar_w = W - M - bar_x
    for t in shown:
        rid = t["request_id"]
        n = len(t["local_block_ids"])
        landed = t["num_landed"] if not t["failed"] else 0
        color = colors.get(rid, "muted")
        parts = [svg.text(M, y + F, rid, size=F)]
        seg = bar_w / max(n, 1)
        for i in range(n):
            fill = color if i < landed else "free"
            parts.append(svg.rect(bar_x + i * seg + 0.5, y + 2, max(seg - 1, 0.5), F - 1,
                                  fill=fill, rx=1))
        if t["failed"] and t["done"]:
            state = "failed: every block invalid"
        elif t["done"]:
            state = f"all {n} landed at {ms(t['end_s'])}"
        else:
            state = f"{landed} of {n} landed; ends at {ms(t['end_s'])}"
        tip = (f"{rid}: read of prefill blocks {', '.join(map(str, t['remote_block_ids']))} "
               f"into decode blocks {', '.join(map(str, t['local_block_ids']))}, "
               f"{ms(t['start_s'])} to {ms(t['end_s'])}: {state}")
        parts += kv_view.lines(bar_x, y + F + 2, state, size=F)[0]
        out.append(svg.group(parts, tip=tip, data_k=f"xfer:{rid}"))
        y += 2 * F * 1.3 + 6
    return out, y


LEGEND = (("filled", "KV there (computed or landed)"),
          ("outline", "allocated, its KV not there yet"),
          ("dashed", "finished, blocks kept for the transfer"),
          ("free", "free"))


def _legend(y: float) -> tuple[list[str], float]:
    out = []
    box = F * 0.95
    cy = y
    for kind, words in LEGEND:
        top = cy + 2
        if kind == "filled":
            out.append(svg.rect(M, top, box, box, fill="seq-0", rx=1.5))
        elif kind == "outline":
            out.append(svg.rect(M + 0.75, top + 0.75, box - 1.5, box - 1.5, fill="bg",
                                stroke="seq-0", rx=1.5, stroke_width=1.5))
        elif kind == "dashed":
            out.append(svg.rect(M + 0.75, top + 0.75, box - 1.5, box - 1.5, fill="bg",
                                stroke="seq-0", rx=1.5, stroke_width=1.5,
                                stroke_dasharray="3 2"))
        else:
            out.append(svg.rect(M, top, box, box, fill="free", rx=1.5))
        out += kv_view.lines(M + box + 6, cy, words, size=F)[0]
        cy += F * 1.3 + 3
    return out, cy - y


def label(step, ctx=None) -> str:
    """The row's name: which GPU stepped, and when its step ended."""
    if step.step is None:
        return "start"
    snap = step.snapshot
    return f"{snap['engine']}, {ms(snap['time_s'])}"


def view(step, ctx) -> svg.Figure:
    snap = step.snapshot
    colors = ctx.colors
    if step.step is None:
        title = "Before the first step"
    elif snap["time_s"] - snap["start_s"] < 5e-7:
        title = f"{SIDE_TITLE[snap['engine']]} at {ms(snap['time_s'])}"
    else:
        title = (f"{SIDE_TITLE[snap['engine']]} step: "
                 f"{snap['start_s'] * 1e3:.1f}-{ms(snap['time_s'])}")
    parts = [svg.text(M, 18, title, size=kv_view.HEADING)]
    y = 30
    heights = []
    columns = {}
    for side in (PREFILL, DECODE):
        x = _x0(side)
        col: list[str] = []
        active = step.step is not None and snap["engine"] == side
        col.append(svg.text(x, y + F, SIDE_TITLE[side] + (" (stepped)" if active else ""),
                            size=F, fill="fg" if active else "muted"))
        cy = y + F + 6
        chips, h = _chips(side, x, cy, snap[side], colors)
        col += chips
        columns[side] = (col, cy + h)
    pool_y = max(end for _, end in columns.values()) + 4
    for side in (PREFILL, DECODE):
        col, _ = columns[side]
        pool, h = _pool(side, _x0(side), pool_y, snap[side], colors,
                        _changed_blocks(step, side))
        col += pool
        heights.append(pool_y + h)
        parts.append(svg.group(col, data_k=f"col:{side}"))
    y = max(heights) + 6
    parts.append(svg.line(M, y, W - M, y, stroke="line"))
    link, y = _link(y + 4, snap, colors, ctx.block_bytes)
    parts += link
    legend, h = _legend(y + 4)
    parts += legend
    y += h + 8
    return svg.Figure(W, y, parts, f"Prefill and decode GPUs, {label(step)}")

