"""The hybrid-models picture of one step: per request, one row of blocks per KV cache group
(full attention first as the groups come, the null block drawn as an empty dashed cell),
the sliding window's reach under its rows, then the pool every group draws from and its
free queue. A 400-unit view; every text at `S` (11 px or more on a phone).

Keys (data-k): `row:A` (a request's heading), `tbl:A:g1` (its row in group 1),
`cell:A:g1:3` (block 3 of that row), `win:A:g1` (the window bracket), `blk:gpu:7` (pool
chip 7), `queue` (the free queue line), `legend`."""
from __future__ import annotations

from pages.topics.hybrid_models.scenario import HybridContext, group_name, label
from pages.topics.hybrid_models.state import changes, request, tables, window_start
from pages.views import fit, kv_view, svg
from pages.views.text import plural

WIDTH = 400
X0 = 8
S = fit.min_size(WIDTH)              # 13.5
LABEL_W = 46                         # "full", "sw 1"
CELL_H = 24
ROW_GAP = 5
POOL_PER_ROW = 12
TINT = 0.3


def cell_width(ctx: HybridContext) -> float:
    """Fixed over the trace: the room over the longest table any request reaches."""
    return min(40.0, (WIDTH - X0 * 2 - LABEL_W) / 12 - 3)


def _cell(x: float, y: float, w: float, block: int, fill: str, *, key: str, tip: str,
          mark: str | None) -> list[str]:
    parts = []
    if block == 0:
        parts.append(svg.rect(x, y, w, CELL_H, fill="bg", stroke="line",
                              stroke_dasharray="3 2"))
        parts.append(svg.text(x + w / 2, y + CELL_H / 2 + S * 0.35, "0", size=S,
                              anchor="middle", fill="muted"))
    else:
        parts.append(svg.rect(x, y, w, CELL_H, fill=fill, fill_opacity=TINT, stroke=fill))
        parts.append(svg.text(x + w / 2, y + CELL_H / 2 + S * 0.35, block, size=S,
                              anchor="middle"))
    if mark == "new":
        parts.append(svg.rect(x - 1.5, y - 1.5, w + 3, CELL_H + 3, fill="bg",
                              fill_opacity=0, stroke="highlight", stroke_width=2.5))
    elif mark == "hit":
        parts.append(svg.rect(x - 1.5, y - 1.5, w + 3, CELL_H + 3, fill="bg",
                              fill_opacity=0, stroke="accent", stroke_width=2.5))
    elif mark == "skipped":
        parts.append(svg.rect(x - 1.5, y - 1.5, w + 3, CELL_H + 3, fill="bg",
                              fill_opacity=0, stroke="waste", stroke_width=2.5,
                              stroke_dasharray="4 2"))
    # A new entry grows out of its block in the pool (the null block has no place there).
    return [svg.group(parts, tip=tip, data_k=key,
                      data_from=f"blk:gpu:{block}" if block else None)]


def _cell_tip(rid: str, group: dict, i: int, block: int, bs: int, mark: str | None) -> str:
    span = f"positions {i * bs}-{i * bs + bs - 1}"
    where = f"{rid}, {group_name(group)} group, block {i} ({span})"
    if block == 0:
        return f"{where}: the null block (nothing kept: outside the window)"
    extra = {"new": ", allocated this step", "hit": ", a prefix-cache hit this step"}
    return f"{where}: block {block}{extra.get(mark, '')}"


def request_rows(y: float, rid: str, ctx: HybridContext, step, ch) -> tuple[list[str], float]:
    snap = step.snapshot
    bs = snap["block_size"]
    r = request(snap, rid)
    out: list[str] = []
    color = ctx.colors[rid]
    seq = r["seqs"][0] if r else None
    if r is None or r["arrival_step"] > (step.step if step.step is not None else -1):
        status = f"arrives at step {ctx.values['b_step']}" if rid == "B" else "waiting"
    elif seq["status"].startswith("finished") or rid in ch.finished:
        status = "finished: every block back to the pool"
    else:
        status = (f"{seq['num_computed_tokens']} of {seq['len']} tokens computed"
                  + ("" if seq["status"] == "running" else f", {seq['status']}"))
    mark = fit.mark("chip", color, X0, y + S, S)
    head = [mark, svg.text(X0 + S * 1.2, y + S, f"{rid}: {status}", size=S)]
    out.append(svg.group(head, data_k=f"row:{rid}"))
    y += S * 1.5
    rows = (ch.final_tables or {}).get(rid) or tables(snap, rid)
    if not any(rows):
        return out, y + 2
    w = cell_width(ctx)
    computed = seq["num_computed_tokens"]
    finished = rid in ch.finished
    for g, row in enumerate(rows):
        group = ctx.groups[g]
        parts = [svg.text(X0, y + CELL_H / 2 + S * 0.35, group_name(group, short=True),
                          size=S, fill="muted")]
        x = X0 + LABEL_W
        for i, block in enumerate(row):
            key = (rid, g, i)
            mark = ("new" if key in ch.new else "hit" if key in ch.hit
                    else "skipped" if key in ch.skipped else None)
            parts += _cell(x + i * (w + 3), y, w, block, color,
                           key=f"cell:{rid}:g{g}:{i}",
                           tip=_cell_tip(rid, group, i, block, bs, mark), mark=mark)
        faded = {"opacity": 0.45} if rid in ch.finished else {}
        out.append(svg.group(parts, data_k=f"tbl:{rid}:g{g}", **faded))
        y += CELL_H + 2
        start = window_start(group, computed)
        if group["kind"] != "full_attention" and row and not finished:
            # The window of the next token: positions start..computed (it attends to itself).
            x1 = x + (start / bs) * (w + 3)
            x2 = x + min(computed / bs, len(row)) * (w + 3) - 3
            tip = (f"the next token (position {computed}) attends to positions "
                   f"{start}-{computed}: the blocks under this line")
            x2 = max(x2, x1 + 2)
            out.append(svg.group([svg.line(x1, y + 2.5, x2, y + 2.5, stroke=color, width=3),
                                  svg.line(x1, y - 1, x1, y + 4, stroke=color, width=2),
                                  svg.line(x2, y - 1, x2, y + 4, stroke=color, width=2)],
                                 tip=tip, data_k=f"win:{rid}:g{g}"))
        y += ROW_GAP
    return out, y + 2


def pool(y: float, ctx: HybridContext, step, ch) -> tuple[list[str], float]:
    snap = step.snapshot
    gpu = snap["gpu"]
    n = gpu["num_blocks"]
    owner: dict[int, str] = {}
    for rid in ("A", "B"):
        for g, row in enumerate(tables(snap, rid)):
            for b in row:
                if b:
                    owner[b] = f"{rid}, {group_name(ctx.groups[g])} group"
    lines, dh = fit.paragraph(X0, y, f"The pool: {plural(n, 'block')} of one page size, "
                                     "for every group", size=S, room=WIDTH - 2 * X0,
                              fill="muted")
    out = lines
    y += dh + 3
    w = (WIDTH - 2 * X0 - (POOL_PER_ROW - 1) * 3) / POOL_PER_ROW
    h = 22
    for b in range(n):
        x = X0 + (b % POOL_PER_ROW) * (w + 3)
        by = y + (b // POOL_PER_ROW) * (h + 4)
        info = gpu["blocks"][b]
        rid = owner.get(b, "")[:1]
        if b == 0:
            parts = [svg.rect(x, by, w, h, fill="bg", stroke="line", stroke_dasharray="3 2")]
            tip = "block 0: the null block, never handed out; it stands where a block left"
        elif rid:
            parts = [svg.rect(x, by, w, h, fill=ctx.colors[rid], fill_opacity=TINT,
                              stroke=ctx.colors[rid])]
            tip = f"block {b}: {owner[b]}" + (f", {info['ref_count']} references"
                                              if info["ref_count"] > 1 else "")
        elif info["cached"]:
            parts = [svg.rect(x, by, w, h, fill="free", stroke="muted", stroke_width=2)]
            tip = (f"block {b}: free, keeps a cached hash (hash {info['hash']}); a hit can "
                   "still take it back until it is reused")
        else:
            parts = [svg.rect(x, by, w, h, fill="free")]
            tip = f"block {b}: free"
        if b in ch.evicted:
            parts.append(svg.rect(x - 1.5, by - 1.5, w + 3, h + 3, fill="bg", fill_opacity=0,
                                  stroke="waste", stroke_width=2.5))
            tip += "; reused this step, so its cached hash was evicted"
        parts.append(svg.text(x + w / 2, by + h / 2 + S * 0.35, b, size=S, anchor="middle",
                              fill="muted" if b == 0 else "fg"))
        out.append(svg.group(parts, tip=tip, data_k=f"blk:gpu:{b}"))
    y += -(-n // POOL_PER_ROW) * (h + 4)
    order = gpu["free_order"]
    text = "free queue, head first: " + (" ".join(str(b) for b in order) if order else "empty")
    lines, dh = fit.paragraph(X0, y, text, size=S, room=WIDTH - 2 * X0, fill="muted",
                              indent="  ")
    out.append(svg.group(lines, data_k="queue"))
    return out, y + dh


LEGEND = (("outline", "highlight", "new this step"), ("outline", "accent", "prefix hit"),
          ("line", "seq-0", "the next token's window"),
          ("outline", "waste", "left the window / evicted"), ("outline", "line", "null block 0"),
          ("outline", "muted", "free, hash kept"))


def view(step, ctx: HybridContext) -> svg.Figure:
    previous = ctx.trace.previous(step)
    ch = changes(step, previous)
    body = kv_view.heading(X0, f"KV cache groups, {label(step)}", "V1")
    y = 28.0
    groups = ", ".join(f"{group_name(g, True)} = {group_name(g)} ({g['num_layers']} layers"
                       + (f", window {g['window']}" if g["window"] else "") + ")"
                       for g in ctx.groups)
    lines, dh = fit.paragraph(X0, y, groups, size=S, room=WIDTH - 2 * X0, fill="muted")
    body += lines
    y += dh + 4
    for rid in ("A", "B"):
        parts, y = request_rows(y, rid, ctx, step, ch)
        body += parts
    parts, y = pool(y + 4, ctx, step, ch)
    body += parts
    chips, dh = fit.legend(X0, y + 2, WIDTH - X0, LEGEND, size=S)
    body.append(svg.group(chips, data_k="legend"))
    y += dh + 8
    return svg.Figure(WIDTH, y, body, f"Hybrid KV cache groups, {label(step)}")
