"""Drawing an engine snapshot: block tables, the physical block pools, the queues.

Shared by every page that shows vLLM's KV blocks (PagedAttention, sampling, beam search,
preemption). A view is a pure function of a snapshot (sim/core/snapshot.py) and the step's
events: layout here, narration in pages/views/narrate.py.

The picture is laid out for a narrow viewBox (400 wide) with no text under 9 units, so it
stays legible when a phone scales it down.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pages.views import svg
from sim.events import (BlockAllocated, BlockFreed, CopyOnWrite, Preempted, SwappedIn,
                        SwappedOut)

WIDTH = 400
MARGIN = 8
SLOT = 16           # width of one token slot when its text is shown
SLOT_SMALL = 7      # when blocks are big, slots shrink and lose their text
ROW = 34            # height of a block, label included


@dataclass
class Highlights:
    """What changed in this step, by (device, block number)."""
    allocated: set = field(default_factory=set)
    freed: set = field(default_factory=set)
    copied_to: dict = field(default_factory=dict)      # dst -> src (GPU)
    swapped_out: set = field(default_factory=set)      # cpu blocks that received data
    swapped_in: set = field(default_factory=set)       # gpu blocks that received data
    victims: set = field(default_factory=set)          # preempted request ids


def highlights(events: list) -> Highlights:
    h = Highlights()
    # In event order: a block freed and then handed out again in the same step shows as
    # allocated; one allocated and then freed (a copy made for a beam that is pruned in
    # the same step) shows as freed.
    for e in events:
        if isinstance(e, BlockAllocated):
            h.allocated.add((e.device, e.physical))
            h.freed.discard((e.device, e.physical))
        elif isinstance(e, BlockFreed):
            h.freed.add((e.device, e.physical))
            h.allocated.discard((e.device, e.physical))
        elif isinstance(e, CopyOnWrite):
            h.copied_to[e.dst] = e.src
            h.allocated.add(("gpu", e.dst))
            h.freed.discard(("gpu", e.dst))
        elif isinstance(e, SwappedOut):
            h.swapped_out.update(("cpu", c) for _, c in e.mapping)
        elif isinstance(e, SwappedIn):
            h.swapped_in.update(("gpu", g) for _, g in e.mapping)
        elif isinstance(e, Preempted):
            h.victims.add(e.request_id)
    h.freed -= h.swapped_in | h.swapped_out
    return h


def request_colors(snap: dict) -> dict[str, str]:
    return {r["request_id"]: svg.seq(i) for i, r in enumerate(snap["requests"])}


def seq_labels(snap: dict) -> dict[int, str]:
    """Short names for sequences: "A" for a single-sequence request, "A.1", "A.2" for the
    samples or beams of a multi-sequence one (numbered in order of appearance)."""
    labels = {}
    for r in snap["requests"]:
        seqs = r["seqs"]
        if len(seqs) == 1 and r["best_of"] == 1:
            labels[seqs[0]["seq_id"]] = r["request_id"]
        else:
            for s in seqs:
                labels[s["seq_id"]] = f'{r["request_id"]}.{s["seq_id"]}'
    return labels


def names(trace) -> tuple[dict[int, str], dict[int, str]]:
    """(labels, request_of) over a whole trace: every sequence's short name (seq_labels) and
    its request id. A sequence keeps its name for life, so one pass serves every step."""
    labels: dict[int, str] = {}
    request_of: dict[int, str] = {}
    for step in trace:
        labels.update(seq_labels(step.snapshot))
        for r in step.snapshot["requests"]:
            for s in r["seqs"]:
                request_of[s["seq_id"]] = r["request_id"]
    return labels, request_of


def owners(snap: dict) -> dict[tuple[str, int], list[tuple[str, int]]]:
    """(device, block) -> [(request_id, seq_id), ...] for every table entry."""
    out: dict[tuple[str, int], list] = {}
    for r in snap["requests"]:
        for s in r["seqs"]:
            for dev, num, _ in s["block_table"]:
                out.setdefault((dev, num), []).append((r["request_id"], s["seq_id"]))
    return out


def _slot_width(block_size: int) -> float:
    return SLOT if block_size <= 8 else SLOT_SMALL


def block_tables(x: float, y: float, snap: dict, h: Highlights,
                 title: str = "Block tables (logical block -> physical block, filled slots)",
                 seq_colors: dict[int, str] | None = None,
                 shared_color: str = "accent") -> tuple[list[str], float]:
    """One row per live sequence with a block table: its logical blocks in order.
    `seq_colors` (seq_id -> palette name) colours rows by sequence instead of request, and
    outlines an entry whose block other tables share in `shared_color`, as pool() does."""
    colors = request_colors(snap)
    who = owners(snap) if seq_colors is not None else {}
    labels = seq_labels(snap)
    bs = snap["block_size"]
    out = [svg.text(x, y + 12, title, size=10, fill="muted")]
    yy = y + 18
    cell_w, cell_h = 44, 30
    any_row = False
    for r in snap["requests"]:
        for s in r["seqs"]:
            table = s["block_table"]
            if not table:
                continue
            any_row = True
            color = (seq_colors or {}).get(s["seq_id"]) or colors[r["request_id"]]
            out.append(svg.text(x, yy + 19, labels[s["seq_id"]], size=12))
            per_row = max(1, int((WIDTH - 2 * MARGIN - 40) // (cell_w + 4)))
            for i, (dev, num, filled) in enumerate(table):
                cx = x + 40 + (i % per_row) * (cell_w + 4)
                cy = yy + (i // per_row) * (cell_h + 4)
                changed = (dev, num) in h.allocated or (dev, num) in h.swapped_in \
                    or (dev, num) in h.swapped_out
                edge = shared_color if len(who.get((dev, num), ())) > 1 else color
                tip = (f"{labels[s['seq_id']]}: logical block {i} -> {dev.upper()} physical "
                       f"block {num}, {filled} of {bs} slots filled")
                cell = [svg.rect(cx, cy, cell_w, cell_h, fill="panel",
                                 stroke="highlight" if changed else edge,
                                 stroke_width=2.5 if changed else 1.5),
                        svg.text(cx + 3, cy + 12, f"L{i}", size=9, fill="muted"),
                        svg.text(cx + cell_w - 3, cy + 12,
                                 ("C" if dev == "cpu" else "") + f"#{num}", size=11,
                                 anchor="end"),
                        svg.text(cx + cell_w / 2, cy + 26, f"{filled}/{bs}", size=10,
                                 anchor="middle", fill="muted")]
                out.append(svg.group(cell, tip=tip))
            rows = (len(table) - 1) // per_row + 1
            yy += rows * (cell_h + 4) + 2
    if not any_row:
        out.append(svg.text(x + 8, yy + 14, "(no sequence holds blocks)", size=10,
                            fill="muted"))
        yy += 22
    return out, yy - y


def _pool_geometry(block_size: int) -> tuple[float, float, int]:
    """(slot width, block width, blocks per row) of pool()'s layout."""
    slot_w = _slot_width(block_size)
    block_w = block_size * slot_w + 4
    cols = max(1, int((WIDTH - 2 * MARGIN + 8) // (block_w + 8)))
    return slot_w, block_w, cols


def pool_block_box(x: float, y: float, snap: dict, n: int) -> tuple[float, float, float, float]:
    """Where pool(x, y, snap, ...) draws the body of block `n`: (left, top, width, height).
    For pictures that point at blocks (swap arrows, copies)."""
    _, block_w, cols = _pool_geometry(snap["block_size"])
    bx = x + (n % cols) * (block_w + 8)
    by = y + 18 + (n // cols) * (ROW + 4)
    return bx, by + 11, block_w, ROW - 12


def pool(x: float, y: float, snap: dict, device: str, h: Highlights,
         title: str | None = None, token_text=None, seq_colors: dict[int, str] | None = None,
         shared_color: str = "accent") -> tuple[list[str], float]:
    """The physical blocks of one device: each block's slots, coloured by the request whose
    token sits there; free blocks pale; a reference count badge where blocks are shared.
    With `seq_colors` (seq_id -> palette name), a block held by one sequence takes that
    sequence's colour and a block shared by several takes `shared_color`."""
    dev = snap[device]
    bs = snap["block_size"]
    colors = request_colors(snap)
    labels = seq_labels(snap)
    who = owners(snap)
    slot_w, block_w, cols = _pool_geometry(bs)
    used = dev["num_blocks"] - dev["num_free"]
    heading = title or (f"{device.upper()} physical blocks: {used} used, "
                        f"{dev['num_free']} free")
    out = [svg.text(x, y + 12, heading, size=10, fill="muted")]
    top = y + 18
    tok = token_text or (lambda token_id, pos: str(pos))
    for n, block in enumerate(dev["blocks"]):
        bx = x + (n % cols) * (block_w + 8)
        by = top + (n // cols) * (ROW + 4)
        key = (device, n)
        sharers = who.get(key, [])
        ref = block["ref_count"]
        parts = [svg.text(bx, by + 9, f"#{n}", size=9, fill="muted")]
        if ref > 1:
            parts.append(svg.text(bx + block_w, by + 9, f"ref {ref}", size=9,
                                  fill="highlight", anchor="end"))
        elif ref and device == "gpu" and n in h.copied_to and key in h.allocated:
            src = h.copied_to[n]
            parts.append(svg.text(bx + block_w, by + 9, f"copy #{src}" if block_w >= 64
                                  else f"\u2190#{src}", size=9, fill="highlight", anchor="end"))
        body_y = by + 11
        stroke, width = "line", 1
        if key in h.allocated or key in h.swapped_in or key in h.swapped_out:
            stroke, width = "highlight", 2.5
        elif key in h.freed:
            stroke, width = "waste", 2.5
        if ref == 0:
            parts.append(svg.rect(bx, body_y, block_w, ROW - 12, fill="free",
                                  stroke=stroke, stroke_width=width,
                                  stroke_dasharray=None if key in h.freed else "3 2"))
            note = "freed" if key in h.freed else "free"
            parts.append(svg.text(bx + block_w / 2, body_y + 15, note, size=9,
                                  anchor="middle", fill="muted"))
            tip = f"{device.upper()} block {n}: {note}"
        else:
            rid = sharers[0][0] if sharers else None
            color = colors.get(rid, "used")
            if seq_colors is not None and sharers:
                color = (shared_color if len(sharers) > 1
                         else seq_colors.get(sharers[0][1], color))
            parts.append(svg.rect(bx, body_y, block_w, ROW - 12, fill="panel",
                                  stroke=stroke, stroke_width=width))
            slots = block.get("slots", [])
            for i in range(bs):
                sx = bx + 2 + i * slot_w
                if i < len(slots):
                    token_id, pos = slots[i]
                    parts.append(svg.rect(sx, body_y + 2, slot_w - 1, ROW - 16, fill=color,
                                          rx=1, tip=f"slot {i}: token {token_id} at position {pos}"))
                    if slot_w >= SLOT:
                        parts.append(svg.text(sx + slot_w / 2 - 0.5, body_y + 15,
                                              tok(token_id, pos), size=9, anchor="middle",
                                              fill="bg"))
                else:
                    parts.append(svg.rect(sx, body_y + 2, slot_w - 1, ROW - 16, fill="free",
                                          rx=1, tip=f"slot {i}: empty (reserved, not yet "
                                                    "written)"))
            names = ", ".join(labels.get(sid, str(sid)) for _, sid in sharers)
            tip = (f"{device.upper()} block {n}: {len(slots)} of {bs} slots filled; "
                   f"ref count {ref} ({names})")
            if key in h.allocated and n in h.copied_to and device == "gpu":
                tip += f"; copy of block {h.copied_to[n]} (copy-on-write)"
        out.append(svg.group(parts, tip=tip))
    rows = (len(dev["blocks"]) - 1) // cols + 1 if dev["blocks"] else 0
    return out, 18 + rows * (ROW + 4)


def queues(x: float, y: float, snap: dict, h: Highlights) -> tuple[list[str], float]:
    """Every request as a coloured chip, grouped by where it is: the scheduler's three
    queues, then the finished ones and those that have not arrived yet."""
    colors = request_colors(snap)
    q = snap["queues"]
    finished = [r["request_id"] for r in snap["requests"] if r["finished_step"] is not None]
    arrival = {r["request_id"]: r["arrival_step"] for r in snap["requests"]}
    groups = [("running", q["running"]), ("waiting", q["waiting"]),
              ("swapped", q["swapped"]), ("done", finished), ("later", q["pending"])]
    out = []
    cx, cy = x, y
    for name, ids in groups:
        if not ids and name in ("done", "later"):
            continue
        width = 6 * len(name) + 10 + sum(10 + 7 * len(r) + 4 for r in ids) + (14 if not ids else 0)
        if cx > x and cx + width > WIDTH - MARGIN:
            cx, cy = x, cy + 20
        out.append(svg.text(cx, cy + 13, f"{name}:", size=10, fill="muted"))
        cx += 6 * len(name) + 10
        if not ids:
            out.append(svg.text(cx, cy + 13, "-", size=10, fill="muted"))
            cx += 14
        for rid in ids:
            label = f"{rid}@{arrival[rid]}" if name == "later" else rid
            w = 10 + 7 * len(label)
            faded = name in ("done", "later")
            out.append(svg.rect(cx, cy + 2, w, 16, fill="free" if faded else colors[rid],
                                stroke="highlight" if rid in h.victims else colors[rid],
                                tip=f"{rid}: {name}" + (f" (arrives at iteration "
                                                        f"{arrival[rid]})" if name == "later"
                                                        else "")))
            out.append(svg.text(cx + w / 2, cy + 14, label, size=10, anchor="middle",
                                fill="fg" if faded else "bg"))
            cx += w + 4
        cx += 8
    return out, cy - y + 22


def waste_stats(snap: dict, device: str = "gpu") -> dict:
    """Slots in allocated blocks that hold a token vs. slots reserved but empty."""
    bs = snap["block_size"]
    blocks = snap[device]["blocks"]
    used_blocks = [b for b in blocks if b["ref_count"] > 0]
    filled = sum(len(b.get("slots", [])) for b in used_blocks)
    return {"used_blocks": len(used_blocks), "free_blocks": len(blocks) - len(used_blocks),
            "filled_slots": filled, "empty_slots": len(used_blocks) * bs - filled}
