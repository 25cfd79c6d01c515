"""Drawing V1's prefix cache (sim/v1, vLLM v0.25.1): block tables with their hash chains, the
free queue from head to tail, the null block, and what a step hit, touched, cached, evicted
and freed. Shared by the pages that show V1's KV cache (prefix caching, the V1 scheduler).

A trace (sim.trace) has one snapshot per engine step, taken after the step. In V1 a finished
request's blocks are freed at the very end of its step, one request after another, and the
order in which they go back (unhashed ones to the head of the free queue, hashed ones to the
tail, last block first) is the lesson; so `phases` splits each engine step into a "run"
phase (after scheduling and the forward pass, nothing freed yet) and one "free" phase per
finished request. The run phase is the step's snapshot with the finished requests' tables
put back: their tables from the step before plus this step's hits and allocations, their
blocks' references added back, the blocks they freed taken out of the free queue (a free
only prepends and appends, so the rest of the queue keeps its order). Nothing else changes
at the end of a step: hashes are dropped only when a block is popped for reuse.

Layout: a 400-unit view, all text at `S` units (11 px or more on a phone, pages/views/fit.py):
one row of cells per request, `PER_ROW` cells to a row; one row of chips for the pool.
"""
from __future__ import annotations

from dataclasses import dataclass

from pages.views import fit, svg
from sim.events import (
    Admitted,
    BlockAllocated,
    BlockCached,
    BlockEvicted,
    BlockFreed,
    BlockTouched,
    PrefixCacheHit,
    RequestFinished,
)

WIDTH = 400
X0 = 8
S = fit.min_size(WIDTH)          # 13.5: every text in the picture
HEAD = 16                        # the picture's heading
CELL_W, CELL_H, GAP = 44, 50, 4
PER_ROW = 8                      # 8 * 44 + 7 * 4 = 380 units
ROW_PITCH = CELL_H + 6
LINE = S * 1.45                  # one line of text
CHIP_W, CHIP_H, CHIP_GAP = 31, 24, 3.5
TINT = 0.3                       # fill opacity of the cell colours, so text reads on them


# ------------------------------------------------------------------------------ phases

@dataclass(frozen=True)
class Phase:
    """One frame of a V1 trace: the start, a step's scheduling and forward pass ("run"), or
    the freeing of one request that finished in it ("free")."""
    index: int
    step: object                             # the sim.trace.Step this phase belongs to
    kind: str                                # "start", "run" or "free"
    freed_request: str | None                # kind "free": whose blocks go back
    tables: dict                             # request id -> tuple of block ids
    refs: tuple[int, ...]                    # ref_cnt per block id
    free_order: tuple[int, ...]              # the free queue, head first
    released: tuple[tuple[int, str], ...] = ()   # kind "free": (block, "head"/"tail"/"held")
    last_of_step: bool = True                # no free phase of the same step follows
    previous: dict | None = None             # the snapshot of the step before

    @property
    def snapshot(self) -> dict:
        return self.step.snapshot

    @property
    def before(self) -> dict:
        """The state before this phase's step (the start: the start)."""
        return self.previous if self.previous is not None else self.step.snapshot


def request_tables(snap: dict) -> dict[str, tuple[int, ...]]:
    return {r["request_id"]: tuple(b for _, b, _ in r["seqs"][0]["block_table"])
            for r in snap["requests"] if r["seqs"][0]["block_table"]}


def finished_frees(events) -> list[tuple[str, list[int]]]:
    """(request id, blocks that reached ref 0, in release order) for every request that
    finished in the step, in the order they were freed."""
    groups: list[tuple[str, list[int]]] = []
    current = None
    for e in events:
        if isinstance(e, RequestFinished):
            current = (e.request_id, [])
            groups.append(current)
        elif isinstance(e, BlockFreed) and current is not None:
            current[1].append(e.physical)
        else:
            current = None
    return groups


def table_before_free(prev: dict, step, request_id: str) -> tuple[int, ...]:
    """A request's block table at the end of scheduling in `step`: its table in the step
    before (unless it was admitted now), with this step's hit blocks and new blocks."""
    seq_id = next(r["seqs"][0]["seq_id"] for r in step.snapshot["requests"]
                  if r["request_id"] == request_id)
    admitted = any(isinstance(e, Admitted) and e.request_id == request_id for e in step.events)
    table = [] if admitted else list(request_tables(prev).get(request_id, ()))
    for e in step.events:
        if isinstance(e, PrefixCacheHit) and e.request_id == request_id:
            table[:len(e.blocks)] = e.blocks
        elif isinstance(e, BlockAllocated) and seq_id in e.seq_ids:
            while len(table) <= e.logical:
                table.append(-1)
            table[e.logical] = e.physical
    return tuple(table)


def phases(trace) -> list[Phase]:
    """Every phase of a V1 trace, in order (see the module docstring)."""
    first = trace[0]
    out = [Phase(0, first, "start", None, request_tables(first.snapshot),
                 tuple(b["ref_count"] for b in first.snapshot["gpu"]["blocks"]),
                 tuple(first.snapshot["gpu"]["free_order"]))]
    for prev, step in zip(trace, list(trace)[1:]):
        snap = step.snapshot
        final_tables = request_tables(snap)
        final_refs = [b["ref_count"] for b in snap["gpu"]["blocks"]]
        hashed = {i for i, b in enumerate(snap["gpu"]["blocks"]) if b["hash"] is not None}
        groups = finished_frees(step.events) if step.error is None else []
        before = {rid: table_before_free(prev.snapshot, step, rid) for rid, _ in groups}
        order = [r["request_id"] for r in snap["requests"]]
        for k in range(len(groups) + 1):
            pending = groups[k:]
            tables = dict(final_tables)
            refs = list(final_refs)
            for rid, _ in pending:
                tables[rid] = before[rid]
                for b in before[rid]:
                    if b >= 0:
                        refs[b] += 1
            tables = {rid: tables[rid] for rid in order if rid in tables}
            waiting_frees = {b for _, freed in pending for b in freed}
            free_order = tuple(b for b in snap["gpu"]["free_order"] if b not in waiting_frees)
            if k == 0:
                out.append(Phase(len(out), step, "run", None, tables, tuple(refs), free_order,
                                 last_of_step=not groups, previous=prev.snapshot))
                continue
            rid, freed = groups[k - 1]
            released = tuple((b, ("tail" if b in hashed else "head") if b in freed else "held")
                             for b in reversed(before[rid]) if b >= 0)
            out.append(Phase(len(out), step, "free", rid, tables, tuple(refs), free_order,
                             released, last_of_step=k == len(groups), previous=prev.snapshot))
    return out


@dataclass(frozen=True)
class StepMarks:
    """What changed in a phase, by block id."""
    allocated: frozenset = frozenset()
    touched: frozenset = frozenset()
    cached: frozenset = frozenset()
    evicted: tuple = ()              # (block, hash prefix) popped with a hash
    entered: frozenset = frozenset()  # blocks that went into the free queue
    hits: dict = None                # request id -> hit blocks (this step)


def marks(phase: Phase) -> StepMarks:
    if phase.kind == "start":
        return StepMarks(hits={})
    if phase.kind == "free":
        return StepMarks(entered=frozenset(b for b, where in phase.released if where != "held"),
                         hits={})
    ev = phase.step.events
    return StepMarks(
        allocated=frozenset(e.physical for e in ev if isinstance(e, BlockAllocated)),
        touched=frozenset(e.physical for e in ev if isinstance(e, BlockTouched)),
        cached=frozenset(e.physical for e in ev if isinstance(e, BlockCached)),
        evicted=tuple((e.physical, e.block_hash) for e in ev if isinstance(e, BlockEvicted)),
        hits={e.request_id: e.blocks for e in ev if isinstance(e, PrefixCacheHit)})


def cached_hashes(snap: dict) -> dict[str, int]:
    """Hash prefix -> a block that holds it in the prefix cache (the lowest id when two
    blocks hold one hash)."""
    out: dict[str, int] = {}
    for i, b in enumerate(snap["gpu"]["blocks"]):
        if b["cached"] and b["hash"] is not None and b["hash"] not in out:
            out[b["hash"]] = i
    return out


def would_hit(request: dict, snap: dict) -> list[int]:
    """The blocks a lookup for this waiting request would find now: its block hashes from
    the first, while cached, at most (tokens - 1) // block_size of them (the last token is
    always computed)."""
    seq = request["seqs"][0]
    cap = (seq["len"] - 1) // snap["block_size"]
    where = cached_hashes(snap)
    out = []
    for h in request["block_hashes"][:cap]:
        if h not in where:
            break
        out.append(where[h])
    return out


def short(block_hash: str | None) -> str:
    """The hash as the picture prints it: 4 hex digits."""
    return block_hash[:4] if block_hash else "\u2014"


# ------------------------------------------------------------------------------ drawing

@dataclass(frozen=True)
class Cell:
    """One logical block of a request, as drawn."""
    block: int | None            # physical block id, None before it is allocated
    tokens: str                  # the first line: token letters, "5/16", or where it went
    block_hash: str | None
    origin: str                  # "hit", "computed" or "pending"
    changed: bool
    ref: int = 0
    note: str = ""               # third line when not allocated ("=#1": a lookup would hit)
    tip: str = ""
    tokens_fill: str = "fg"


def cell_rows(x: float, y: float, cells: list[Cell],
              key: str | None = None) -> tuple[list[str], float]:
    """Cells in rows of PER_ROW, with the hash chain (a line through the hashed cells, each
    hash covering the one before) under each row. Returns (elements, height).

    `key` ("ent:<seq id>") keys cell i as <key>:<i> and its block number as <key>:<i>/b,
    which appears out of the block's chip in the free queue (fq:<block>) when it is taken."""
    out: list[str] = []
    rows = max(1, -(-len(cells) // PER_ROW))
    for i, c in enumerate(cells):
        cx = x + (i % PER_ROW) * (CELL_W + GAP)
        cy = y + (i // PER_ROW) * ROW_PITCH
        kw = {}
        if c.origin == "hit":
            fill, kw = "seq-2", {"fill_opacity": TINT}
        elif c.origin == "computed":
            fill, kw = "seq-0", {"fill_opacity": TINT}
        else:
            fill = "bg"
        if c.changed:
            stroke, width, dash = "highlight", 2.5, None
        elif c.origin == "pending":
            stroke, width, dash = "line", 1.2, "4 3"
        else:
            stroke, width, dash = "line", 1, None
        parts = [svg.rect(cx, cy, CELL_W, CELL_H, fill=fill, stroke=stroke, stroke_width=width,
                          stroke_dasharray=dash, **kw),
                 svg.text(cx + CELL_W / 2, cy + 14, c.tokens, size=S, anchor="middle",
                          fill=c.tokens_fill),
                 svg.text(cx + CELL_W / 2, cy + 30, short(c.block_hash), size=S,
                          anchor="middle", fill="muted")]
        k = f"{key}:{i}" if key else None
        if c.block is not None:
            third = f"#{c.block}" + (f" \u00d7{c.ref}" if c.ref != 1 else "")
            parts.append(svg.text(cx + CELL_W / 2, cy + 45, third, size=S, anchor="middle",
                                  data_k=k and f"{k}/b", data_from=k and f"fq:{c.block}"))
        elif c.note:
            parts.append(svg.text(cx + CELL_W / 2, cy + 45, c.note, size=S, anchor="middle",
                                  fill="accent"))
        out.append(svg.group(parts, tip=c.tip or None, data_k=k))
    # The chain: a line joining the hashed cells of each row (a cell's hash covers the
    # hash of the cell before it), a dot on each.
    for r in range(rows):
        row = [(i, c) for i, c in enumerate(cells[r * PER_ROW:(r + 1) * PER_ROW])
               if c.block_hash]
        if not row:
            continue
        ly = y + r * ROW_PITCH + CELL_H + 2.5
        first = x + row[0][0] * (CELL_W + GAP) + CELL_W / 2
        last = x + row[-1][0] * (CELL_W + GAP) + CELL_W / 2
        if len(row) > 1 or r > 0:
            out.append(svg.line(x if r > 0 else first, ly, last, ly, stroke="muted", width=1.5))
        for i, _ in row:
            out.append(f"<circle{svg.attrs(cx=x + i * (CELL_W + GAP) + CELL_W / 2, cy=ly, r=2.5)}"
                       f" style=\"fill:{svg.color('muted')}\"></circle>")
    return out, rows * ROW_PITCH


def pool_row(x: float, y: float, phase: Phase, entered: frozenset,
             right: float = WIDTH - X0) -> tuple[list[str], float]:
    """The null block, then the free queue from head (next handed out, and the next evicted
    if it holds a hash) to tail, wrapping before `right`. Returns (elements, height)."""
    snap = phase.snapshot
    blocks = snap["gpu"]["blocks"]
    null = snap["null_block"]
    out = [svg.text(x, y + S, "free queue: head (next out) \u2192 tail", size=S, fill="muted")]
    top = y + S + 6
    out.append(svg.group([
        svg.rect(x, top, CHIP_W, CHIP_H, fill="used", stroke="line"),
        svg.text(x + CHIP_W / 2, top + 17, f"#{null}", size=S, anchor="middle")],
        tip=f"block {null}: the null block, never handed out and never free",
        data_k=f"blk:gpu:{null}"))
    out.append(svg.line(x + CHIP_W + 5, top - 2, x + CHIP_W + 5, top + CHIP_H + 2,
                        stroke="line", width=1.5))
    qx = x + CHIP_W + 10
    per_row = max(1, int((right - qx + CHIP_GAP) // (CHIP_W + CHIP_GAP)))
    order = phase.free_order
    # A block freed in this phase comes out of its cell's block number (cell_rows' keys).
    came_from = {}
    if phase.kind == "free":
        seq = next(r["seqs"][0]["seq_id"] for r in snap["requests"]
                   if r["request_id"] == phase.freed_request)
        table = [b for b, _ in reversed(phase.released)]
        came_from = {b: f"ent:{seq}:{i}/b" for i, b in enumerate(table)}
    for i, b in enumerate(order):
        cx = qx + (i % per_row) * (CHIP_W + CHIP_GAP)
        cy = top + (i // per_row) * (CHIP_H + 5)
        h = blocks[b]["hash"]
        kw = {"fill_opacity": TINT} if h else {}
        stroke = "highlight" if b in entered else ("accent" if h else "line")
        where = ("head" if i == 0 else "tail" if i == len(order) - 1 else f"{i + 1}th")
        tip = (f"block {b}, free ({where} of the queue): "
               + (f"still holds hash {h}, in the prefix cache: a hit takes it back, reuse "
                  "evicts it" if h else "no hash, nothing to reuse"))
        out.append(svg.group([
            svg.rect(cx, cy, CHIP_W, CHIP_H, fill="accent" if h else "free", stroke=stroke,
                     stroke_width=2.5 if b in entered else 1.2,
                     stroke_dasharray=None if h or b in entered else "3 2", **kw),
            svg.text(cx + CHIP_W / 2, cy + 17, b, size=S, anchor="middle")], tip=tip,
            data_k=f"fq:{b}", data_from=came_from.get(b)))
    if not order:
        out.append(svg.text(qx, top + 17, "empty: every block is in use", size=S,
                            fill="muted"))
    rows = max(1, -(-len(order) // per_row))
    return out, S + 6 + rows * (CHIP_H + 5)


LEGEND = (
    ("cell:seq-2", "hit: from cache"),
    ("cell:seq-0", "computed"),
    ("cell:pending", "not yet"),
    ("chip:used", "null"),
    ("cell:changed", "changed this step"),
    ("chip:accent", "free, hashed"),
    ("text:\u00d72", "ref_cnt"),
    ("chip:free", "free, no hash"),
    ("text:\u2014", "not full"),
    ("chain", "hash chain"),
    ("text:=#1", "lookup would hit #1"),
)


def legend(x: float, y: float, items=LEGEND, right: float = WIDTH - 4) -> tuple[list[str], float]:
    """Every mark the cells and chips use, in rows; y is the top. Returns (elements,
    height)."""
    out: list[str] = []
    row_h = S * 1.5
    cx, cy = x, y + S
    sw = S * 0.9                     # a mark's width (text marks: their own width)
    for kind, label in items:
        mark_w = fit.text_width(kind[5:], S) if kind.startswith("text:") else (
            S * 1.6 if kind == "chain" else sw)
        w = mark_w + S * 0.4 + fit.text_width(label, S)
        if cx > x and cx + w > right:
            cx, cy = x, cy + row_h
        top = cy - S * 0.8
        if kind.startswith("text:"):
            out.append(svg.text(cx, cy, kind[5:], size=S, fill="muted"
                                if kind[5:] == "\u2014" else "accent" if "#" in kind
                                else "fg"))
        elif kind == "chain":
            out.append(svg.line(cx, top + sw / 2, cx + mark_w, top + sw / 2, stroke="muted",
                                width=1.5))
            for dx in (sw * 0.3, mark_w - sw * 0.3):
                out.append(f"<circle{svg.attrs(cx=cx + dx, cy=top + sw / 2, r=2.5)}"
                           f" style=\"fill:{svg.color('muted')}\"></circle>")
        else:
            what, color = kind.split(":")
            if what == "cell" and color == "pending":
                out.append(svg.rect(cx, top, sw, sw, fill="bg", stroke="line",
                                    stroke_dasharray="3 2", rx=1))
            elif what == "cell" and color == "changed":
                out.append(svg.rect(cx + 1, top + 1, sw - 2, sw - 2, fill="bg",
                                    stroke="highlight", stroke_width=2.5, rx=1))
            elif color in ("seq-0", "seq-2", "accent"):
                out.append(svg.rect(cx, top, sw, sw, fill=color, fill_opacity=TINT,
                                    stroke="accent" if what == "chip" else "line", rx=1))
            else:
                out.append(svg.rect(cx, top, sw, sw, fill=color, stroke="line", rx=1,
                                    stroke_dasharray="3 2" if color == "free" else None))
        out.append(svg.text(cx + mark_w + S * 0.4, cy, label, size=S))
        cx += w + S * 0.9
    return out, cy - y + S * 0.5
