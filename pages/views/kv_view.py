"""Drawing an engine snapshot: block tables, the physical block pools, the queues, a legend.

Shared by every page that shows vLLM's KV blocks (PagedAttention, sampling, beam search,
preemption), for either engine: a snapshot of vLLM v0.5.5 (sim/core/snapshot.py) or of V1
(sim/v1/snapshot.py, which adds the null block, block hashes and the prefix cache). A view is
a pure function of a snapshot and the step's events: layout here, words in
pages/views/narrate.py.

The picture is laid out for a 400-unit viewBox that a phone draws about 330 px wide, so no
text is smaller than FONT (13.5 units, 11 px there) and every label is placed where it fits:
SVG cannot measure text, so widths are estimated from the monospace advance (`text_width`)
and anything that would not fit is wrapped, shortened or left to the hover text and the
legend (`legend`, `legend_keys`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pages.views import svg
from pages.views.text import plural, wrap
from sim.events import (
    BlockAllocated,
    BlockCached,
    BlockEvicted,
    BlockFreed,
    BlockTouched,
    CopyOnWrite,
    Preempted,
    SwappedIn,
    SwappedOut,
)

WIDTH = 400
MARGIN = 8
FONT = 13.5         # the smallest text: 11 px on a 390 px phone (a 330 px picture)
HEADING = 15        # a picture's heading
CHAR_EM = 0.61      # a monospace character's advance in ems, rounded up
SLOT = 20           # width of one token slot when its text (a position) is shown
SLOT_SMALL = 7      # when blocks are big, slots shrink and lose their text
HEAD = 16           # the line above a pool block: its number and its badges
BODY = 23           # a pool block's body: its slots
ROW = HEAD + BODY + 5   # one row of the pool
CHIP_H = 20         # a queue chip
CELL_H = 2 * FONT + 10  # a block-table entry: two lines


def _text(x: float, y: float, content: object, **kw) -> str:
    """svg.text at FONT unless told otherwise."""
    kw.setdefault("size", FONT)
    return svg.text(x, y, content, **kw)


def text_width(text: object, size: float = FONT) -> float:
    """About how wide `text` is drawn at `size` (monospace)."""
    return len(str(text)) * size * CHAR_EM


def fits(text: object, room: float, size: float = FONT) -> bool:
    return text_width(text, size) <= room


def lines(x: float, y: float, text: str, *, fill: str = "muted", size: float = FONT,
          right: float = WIDTH - MARGIN) -> tuple[list[str], float]:
    """`text` wrapped to the room between x and `right`; the first baseline is at
    y + size. Returns (elements, height)."""
    per_line = max(1, int((right - x) / (size * CHAR_EM)))
    rows = wrap(text, per_line) or [""]
    lead = round(size * 1.3, 2)
    out = [_text(x, y + size + i * lead, row, size=size, fill=fill)
           for i, row in enumerate(rows)]
    return out, len(rows) * lead + 2


@dataclass
class Highlights:
    """What changed in this step, by (device, block number)."""
    allocated: set = field(default_factory=set)
    freed: set = field(default_factory=set)
    copied_to: dict = field(default_factory=dict)      # dst -> src (GPU)
    swapped_out: set = field(default_factory=set)      # cpu blocks that received data
    swapped_in: set = field(default_factory=set)       # gpu blocks that received data
    victims: set = field(default_factory=set)          # preempted request ids
    touched: set = field(default_factory=set)          # V1: prefix-cache hits taken
    evicted: set = field(default_factory=set)          # V1: cached blocks reused (hash dropped)
    cached: set = field(default_factory=set)           # V1: blocks that got their hash

    def changed(self, key: tuple[str, int]) -> bool:
        """Drawn with the "new this step" outline."""
        return (key in self.allocated or key in self.swapped_in or key in self.swapped_out
                or key in self.touched)


def highlights(events: list) -> Highlights:
    h = Highlights()
    # In event order: a block freed and then handed out again in the same step shows as
    # allocated; one allocated and then freed (a copy made for a beam that is pruned in
    # the same step, a block a finishing request took for its last token) shows as freed.
    for e in events:
        if isinstance(e, BlockAllocated):
            h.allocated.add((e.device, e.physical))
            h.freed.discard((e.device, e.physical))
        elif isinstance(e, BlockFreed):
            h.freed.add((e.device, e.physical))
            h.allocated.discard((e.device, e.physical))
            h.touched.discard((e.device, e.physical))
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
        elif isinstance(e, BlockTouched):
            h.touched.add(("gpu", e.physical))
            h.freed.discard(("gpu", e.physical))
        elif isinstance(e, BlockEvicted):
            h.evicted.add(("gpu", e.physical))
        elif isinstance(e, BlockCached):
            h.cached.add(("gpu", e.physical))
    h.freed -= h.swapped_in | h.swapped_out
    return h


def is_v1(snap: dict) -> bool:
    return snap.get("engine") == "v1"


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


def not_recomputed(snap: dict) -> dict[tuple[str, int], set[int]]:
    """(device, block) -> the slots whose KV vLLM never recomputed: v0.5.5 ran a sampling
    group's recompute as a decode (issue 27), so of the positions its sequence counts as
    computed only the last was written (the snapshot's `kv_not_recomputed`)."""
    out: dict[tuple[str, int], set[int]] = {}
    bs = snap["block_size"]
    for r in snap["requests"]:
        for s in r["seqs"]:
            first = s.get("kv_not_recomputed", 0)
            if not first:
                continue
            for logical, (dev, num, filled) in enumerate(s["block_table"]):
                stale = {i for i in range(filled) if logical * bs + i < first}
                if stale:
                    out.setdefault((dev, num), set()).update(stale)
    return out


def hash_owners(snap: dict) -> dict[str, str]:
    """V1: block hash prefix -> the first request whose block hashes include it (whose
    tokens a cached block holds)."""
    out: dict[str, str] = {}
    for r in snap["requests"]:
        for h in r.get("block_hashes", ()):
            out.setdefault(h, r["request_id"])
    return out


def _slot_width(block_size: int) -> float:
    return SLOT if block_size <= 8 else SLOT_SMALL


# -- the queues ------------------------------------------------------------------------------

def queues(x: float, y: float, snap: dict, h: Highlights) -> tuple[list[str], float]:
    """Every request as a coloured chip, grouped by where it is: the scheduler's queues
    (V1 has no `swapped`), then the finished ones and those that have not arrived yet
    ("D@8": arrives at iteration 8). A request preempted in this step has the highlight
    outline."""
    colors = request_colors(snap)
    q = snap["queues"]
    finished = [r["request_id"] for r in snap["requests"] if r["finished_step"] is not None]
    arrival = {r["request_id"]: r["arrival_step"] for r in snap["requests"]}
    # V1 with a KV connector: `skipped_waiting` is served before `waiting`; its requests
    # whose KV is still loading are shown apart.
    skipped = q.get("skipped_waiting", [])
    status = {r["request_id"]: r["seqs"][0]["status"] for r in snap["requests"]}
    loading = [rid for rid in skipped if status.get(rid) == "waiting_for_remote_kvs"]
    waiting = [rid for rid in skipped if rid not in loading] + q["waiting"]
    groups = [("running", q["running"])]
    if loading:
        groups.append(("loading KV", loading))
    groups.append(("waiting", waiting))
    if not is_v1(snap):
        groups.append(("swapped", q["swapped"]))
    groups += [("done", finished), ("later", q["pending"])]
    right = WIDTH - MARGIN
    row_h = CHIP_H + 5
    out: list[str] = []
    cx, cy = x, y
    for name, ids in groups:
        if not ids and name in ("done", "later"):
            continue
        label = f"{name}:"
        chips = [f"{rid}@{arrival[rid]}" if name == "later" else rid for rid in ids] or ["-"]
        first_w = text_width(label) + 6 + text_width(chips[0]) + 10
        if cx > x and cx + first_w > right:
            cx, cy = x, cy + row_h
        out.append(_text(cx, cy + 15, label, fill="muted", data_k=f"queue:{name}"))
        cx += text_width(label) + 6
        if not ids:
            out.append(_text(cx, cy + 15, "-", fill="muted"))
            cx += text_width("-") + 14
            continue
        for rid, chip in zip(ids, chips):
            w = text_width(chip) + 10
            if cx + w > right:
                cx, cy = x + 12, cy + row_h
            faded = name in ("done", "later")
            victim = rid in h.victims
            tip = f"{rid}: {name}" + (f" (arrives at iteration {arrival[rid]})"
                                      if name == "later" else
                                      " (WAITING_FOR_REMOTE_KVS: its KV is being loaded)"
                                      if name == "loading KV" else "")
            if victim:
                tip += "; preempted in this step"
            out.append(svg.rect(cx, cy + 1, w, CHIP_H, fill="free" if faded else colors[rid],
                                stroke="highlight" if victim else
                                ("line" if faded else colors[rid]),
                                stroke_width=2.5 if victim else 1, tip=tip, data_k=f"chip:{rid}"))
            out.append(_text(cx + w / 2, cy + 15.5, chip, anchor="middle",
                             fill="fg" if faded else "bg", data_k=f"chip:{rid}/t"))
            cx += w + 4
        cx += 12
    return out, cy - y + row_h


# -- block tables ----------------------------------------------------------------------------

def heading(x: float, title: str, engine: str) -> list[str]:
    """A picture's first line: its title on the left, the engine ("v0.5.5", "V1") on the
    right, muted."""
    return [svg.text(x, 18, title, size=HEADING),
            svg.text(WIDTH - x, 18, engine, size=HEADING, anchor="end", fill="muted")]


def queues_and_tables(x: float, y: float, snap: dict, h: Highlights) -> tuple[list[str], float]:
    """The queues, then every request's block tables (with the other requests' blocks
    marked), 6 units apart; returns (elements, the y below them plus 6)."""
    parts, dy = queues(x, y, snap, h)
    y += dy + 6
    elements, dy = block_tables(x, y, snap, h, others=True)
    return parts + elements, y + dy + 6


def _table_geometry(snap: dict, x: float, labels: dict[int, str]) -> tuple[float, float, int]:
    """(label column width, cell width, cells per row): fixed by the pool sizes and names,
    so the tables do not move between the steps of one trace."""
    biggest = max(snap["gpu"]["num_blocks"], snap["cpu"]["num_blocks"], 2) - 1
    number = ("C#" if snap["cpu"]["num_blocks"] else "#") + str(biggest)
    bs = snap["block_size"]
    cell_w = max(text_width(f"L{biggest}") + text_width(number) + 12,
                 text_width(f"{bs}/{bs}") + 10)
    label_w = max([text_width(n) for n in labels.values()] + [text_width("A")]) + 8
    per_row = max(1, int((WIDTH - MARGIN - x - label_w + 4) // (cell_w + 4)))
    return label_w, cell_w, per_row


def table_title(snap: dict) -> str:
    """The default heading of block_tables: how to read an entry."""
    bs = snap["block_size"]
    f = min(3, bs)
    return (f"Block tables: L1 #5 {f}/{bs} = logical block 1 in physical block 5, "
            f"{f} of its {plural(bs, 'slot')} filled")


def _waiting_words(snap: dict, r: dict, s: dict, any_table: bool) -> str:
    """What a sequence without a block table is doing, for block_tables(others=True): why
    it waits, or (while no request holds blocks yet) when it arrives."""
    if r["request_id"] in snap["queues"]["pending"]:
        if any_table:
            return ""
        return f"arrives at iteration {r['arrival_step']} ({s['prompt_len']}-token prompt)"
    status = s["status"]
    if status.startswith("finished"):
        return ""
    outputs = s["len"] - s["prompt_len"]
    if outputs:
        return (f"preempted: waits to recompute {s['len']} tokens ({s['prompt_len']} "
                f"prompt + {outputs} generated)")
    return f"waiting: {s['prompt_len']}-token prompt, no blocks yet"


def block_tables(x: float, y: float, snap: dict, h: Highlights,
                 title: str | None = None,
                 seq_colors: dict[int, str] | None = None,
                 shared_color: str = "accent", *,
                 others: bool = False) -> tuple[list[str], float]:
    """One row per live sequence with a block table: its logical blocks in order, each entry
    "L<logical> #<physical>" over "<filled>/<block size>" (C#n: a CPU block); an entry
    taken or moved in this step has the highlight outline. `seq_colors` (seq_id -> palette
    name) colours rows by sequence instead of request, and outlines an entry whose block
    other tables share in `shared_color`, as pool() does. `others`: a line for every request
    that holds no blocks (not arrived, waiting, preempted, finished), saying why."""
    colors = request_colors(snap)
    who = owners(snap) if seq_colors is not None else {}
    labels = seq_labels(snap)
    bs = snap["block_size"]
    out, dy = lines(x, y, title if title is not None else table_title(snap))
    yy = y + dy + 2
    label_w, cell_w, per_row = _table_geometry(snap, x, labels)
    any_row = False
    any_table = any(s["block_table"] for r in snap["requests"] for s in r["seqs"])
    for r in snap["requests"]:
        for s in r["seqs"]:
            table = s["block_table"]
            name = labels[s["seq_id"]]
            if not table:
                words = _waiting_words(snap, r, s, any_table) if others else ""
                if words:
                    out.append(_text(x, yy + FONT + 2, name, data_k=f"seq:{s['seq_id']}"))
                    elements, wh = lines(x + label_w, yy + 2, words)
                    out += elements
                    yy += max(wh, FONT * 1.3 + 2) + 4
                continue
            any_row = True
            color = (seq_colors or {}).get(s["seq_id"]) or colors[r["request_id"]]
            out.append(_text(x, yy + FONT + 4, name, data_k=f"seq:{s['seq_id']}"))
            for i, (dev, num, filled) in enumerate(table):
                cx = x + label_w + (i % per_row) * (cell_w + 4)
                cy = yy + (i // per_row) * (CELL_H + 4)
                changed = h.changed((dev, num))
                edge = shared_color if len(who.get((dev, num), ())) > 1 else color
                tip = (f"{name}: logical block {i} -> {dev.upper()} physical "
                       f"block {num}, {filled} of {bs} slots filled")
                cell = [svg.rect(cx, cy, cell_w, CELL_H, fill="panel",
                                 stroke="highlight" if changed else edge,
                                 stroke_width=3 if changed else 1.5),
                        _text(cx + 4, cy + FONT + 1, f"L{i}", fill="muted"),
                        _text(cx + cell_w - 4, cy + FONT + 1,
                                 ("C" if dev == "cpu" else "") + f"#{num}", anchor="end"),
                        _text(cx + cell_w / 2, cy + 2 * FONT + 5, f"{filled}/{bs}",
                                 anchor="middle", fill="muted")]
                # An entry that appears grows out of the prompt's plan (prompt_plan, the
                # frame before the first step) or else its physical block in the pool.
                out.append(svg.group(cell, tip=tip, data_k=f"ent:{s['seq_id']}:{i}",
                                     data_from=f"plan:{i} blk:{dev}:{num}"))
            rows = (len(table) - 1) // per_row + 1
            yy += rows * (CELL_H + 4) + 2
    if not any_row and not others:
        out.append(_text(x + 8, yy + FONT + 2, "(no sequence holds blocks)", fill="muted"))
        yy += FONT + 8
    return out, yy - y


# -- the block pools -------------------------------------------------------------------------

def _pool_geometry(block_size: int, num_blocks: int = 100,
                   v1: bool = False) -> tuple[float, float, int]:
    """(slot width, block width, blocks per row) of pool()'s layout. A block is at least
    wide enough for its number and a short badge ("x2", a ref count) in its header line."""
    slot_w = _slot_width(block_size)
    number = text_width(f"#{max(num_blocks - 1, 0)}")
    badge = text_width("x2") + (9 if v1 else 0)
    block_w = max(block_size * slot_w + 4, number + badge + 8)
    cols = max(1, int((WIDTH - 2 * MARGIN + 8) // (block_w + 8)))
    return slot_w, block_w, cols


def _geometry_of(snap: dict, device: str) -> tuple[float, float, int]:
    blocks = max(snap["gpu"]["num_blocks"], snap["cpu"]["num_blocks"])
    return _pool_geometry(snap["block_size"], blocks, is_v1(snap))


def pool_block_box(x: float, y: float, snap: dict, n: int) -> tuple[float, float, float, float]:
    """Where pool(x, y, snap, ...) draws the body of block `n`: (left, top, width, height).
    For pictures that point at blocks (swap arrows, copies). The GPU and CPU pools of one
    snapshot share one geometry."""
    _, block_w, cols = _geometry_of(snap, "gpu")
    top = y + _pool_title_height(snap)
    bx = x + (n % cols) * (block_w + 8)
    by = top + (n // cols) * ROW
    return bx, by + HEAD, block_w, BODY


def _pool_title_height(snap: dict) -> float:
    return FONT * 1.3 + 4


def _pool_heading(snap: dict, device: str) -> str:
    dev = snap[device]
    if device == "gpu" and is_v1(snap):
        free = dev["num_free"]
        cached = sum(1 for b in dev["blocks"] if not b["ref_count"] and b.get("hash"))
        used = dev["num_blocks"] - 1 - free
        return (f"GPU blocks: {used} used, {free} free"
                + (f" ({cached} still cached)" if cached else ""))
    used = dev["num_blocks"] - dev["num_free"]
    return f"{device.upper()} physical blocks: {used} used, {dev['num_free']} free"


def pool(x: float, y: float, snap: dict, device: str, h: Highlights,
         title: str | None = None, token_text=None, seq_colors: dict[int, str] | None = None,
         shared_color: str = "accent") -> tuple[list[str], float]:
    """The physical blocks of one device: each block's number over its slots, each slot
    showing the position of the token it holds (in the colour of the request it belongs to);
    free blocks dashed; "ref 2" (or "x2") where two block tables share a block. With
    `seq_colors` (seq_id -> palette name), a block held by one sequence takes that
    sequence's colour and a block shared by several takes `shared_color`.

    V1 snapshots add: the null block (block 0, crossed out), a dot after the number of a
    block that is in the prefix cache, and free blocks that are still cached (their tokens
    drawn pale: a prefix hit can take them back until they are reused).

    vLLM v0.5.5's leak (issue 27): a block with references no table holds has a dashed
    outline and a "leaked" badge ("leaked" in its body once no table holds it), and a slot
    whose KV was never recomputed shows "?"."""
    dev = snap[device]
    bs = snap["block_size"]
    v1 = is_v1(snap) and device == "gpu"
    null = snap.get("null_block") if v1 else None
    colors = request_colors(snap)
    labels = seq_labels(snap)
    who = owners(snap)
    by_hash = hash_owners(snap) if v1 else {}
    stale = {} if is_v1(snap) else not_recomputed(snap)
    slot_w, block_w, cols = _geometry_of(snap, device)
    heading = title or _pool_heading(snap, device)
    out, head_h = lines(x, y, heading)
    top = y + max(head_h, _pool_title_height(snap))
    extra = max(0.0, head_h - _pool_title_height(snap))
    tok = token_text or (lambda token_id, pos: str(pos))
    badge_room = block_w - text_width(f"#{dev['num_blocks'] - 1}") - 6
    for n, block in enumerate(dev["blocks"]):
        bx = x + (n % cols) * (block_w + 8)
        by = top + (n // cols) * ROW
        key = (device, n)
        sharers = who.get(key, [])
        ref = block["ref_count"]
        body_y = by + HEAD
        parts = [_text(bx, by + FONT, f"#{n}", fill="muted")]
        hashed = v1 and block.get("cached") and n != null
        if hashed:
            parts.append(_dot(bx + text_width(f"#{n}") + 5, by + FONT - 4.5, 3.5))
        leaked = block.get("leaked_refs", 0)
        badge = None
        if n == null:
            pass
        elif leaked and sharers:     # still in a table; once in none, its body says so
            badge = next((b for b in ("leaked", "leak", "!") if fits(b, badge_room)), None)
        elif ref > 1:
            badge = next((b for b in (f"ref {ref}", f"x{ref}") if fits(b, badge_room)), None)
        elif ref and device == "gpu" and n in h.copied_to and key in h.allocated:
            src = h.copied_to[n]
            badge = next((b for b in (f"copy #{src}", f"\u2190#{src}") if fits(b, badge_room)),
                         None)
        if badge:
            parts.append(_text(bx + block_w, by + FONT, badge, fill="highlight",
                               anchor="end"))
        stroke, width, dashes = "line", 1, None
        if h.changed(key):
            stroke, width = "highlight", 3
        elif key in h.freed:
            stroke, width = "waste", 3
        elif leaked:
            stroke, width, dashes = "waste", 2.5, "5 3"
        if n == null:
            parts.append(svg.rect(bx, body_y, block_w, BODY, fill="panel", stroke="muted",
                                  stroke_width=2))
            if fits("null", block_w - 4):
                parts.append(_text(bx + block_w / 2, body_y + 16.5, "null", anchor="middle",
                                   fill="muted"))
            else:
                parts.append(svg.line(bx + 2, body_y + BODY - 2, bx + block_w - 2, body_y + 2,
                                      stroke="muted"))
            tip = (f"GPU block {n}: the null block. V1 reserves block 0; it is never "
                   "handed out and holds no tokens")
        elif ref == 0:
            slots = block.get("slots", [])
            cached = v1 and block.get("hash") and slots
            parts.append(svg.rect(bx, body_y, block_w, BODY, fill="free", stroke=stroke,
                                  stroke_width=width,
                                  stroke_dasharray=None if width > 1 else "4 3"))
            if cached:
                rid = by_hash.get(block["hash"])
                color = colors.get(rid, "used")
                parts += _slots(bx, body_y, slots, bs, slot_w, color, tok, pale=True)
                note = "free, still cached"
                tip = (f"GPU block {n}: free but still in the prefix cache (hash "
                       f"{block['hash']}, {rid or 'an earlier request'}'s tokens): a prefix "
                       "hit can take it back until it is handed out again")
            else:
                note = "freed" if key in h.freed else "free"
                if fits(note, block_w - 4):
                    parts.append(_text(bx + block_w / 2, body_y + 16.5, note,
                                          anchor="middle", fill="muted"))
                tip = f"{device.upper()} block {n}: {note}"
                if key in h.evicted:
                    tip += " (its cached hash was dropped)"
        elif leaked and not sharers:
            parts.append(svg.rect(bx, body_y, block_w, BODY, fill="panel", stroke=stroke,
                                  stroke_width=width, stroke_dasharray=dashes))
            if fits("leaked", block_w - 4):
                parts.append(_text(bx + block_w / 2, body_y + 16.5, "leaked",
                                   anchor="middle", fill="fg"))
            tip = (f"GPU block {n}: leaked. Its ref count is {ref} and no block table holds "
                   f"it: vLLM v0.5.5's allocate counted {plural(leaked, 'finished sample')}"
                   " that nothing will release, so it is never freed")
        else:
            rid = sharers[0][0] if sharers else None
            color = colors.get(rid, "used")
            if seq_colors is not None and sharers:
                color = (shared_color if len(sharers) > 1
                         else seq_colors.get(sharers[0][1], color))
            parts.append(svg.rect(bx, body_y, block_w, BODY, fill="panel",
                                  stroke=stroke, stroke_width=width,
                                  stroke_dasharray=dashes))
            slots = block.get("slots", [])
            # A copy-on-write copy's tokens come out of the block they were copied from,
            # where they were keyed by whichever sibling sequence drew them first.
            copied = (device == "gpu" and n in h.copied_to and key in h.allocated
                      and sharers)
            siblings = ([s_["seq_id"] for r in snap["requests"]
                         if r["request_id"] == sharers[0][0] for s_ in r["seqs"]]
                        if copied else None)
            parts += _slots(bx, body_y, slots, bs, slot_w, color, tok,
                            owner=sharers[0][1] if sharers else None, siblings=siblings,
                            stale=stale.get(key, ()))
            names_ = ", ".join(labels.get(sid, str(sid)) for _, sid in sharers)
            tip = (f"{device.upper()} block {n}: {len(slots)} of {bs} slots filled; "
                   f"ref count {ref} ({names_})")
            if leaked:
                tip += (f", {leaked} of it leaked: vLLM v0.5.5's allocate counted "
                        f"{plural(leaked, 'finished sample')}, so the block is never freed")
            if key in h.allocated and n in h.copied_to and device == "gpu":
                tip += f"; copy of block {h.copied_to[n]} (copy-on-write)"
            if hashed:
                tip += f"; in the prefix cache (hash {block['hash']})"
            if key in h.touched:
                tip += "; taken from the prefix cache in this step"
        out.append(svg.group(parts, tip=tip, data_k=f"blk:{device}:{n}"))
    rows = (len(dev["blocks"]) - 1) // cols + 1 if dev["blocks"] else 0
    return out, _pool_title_height(snap) + extra + rows * ROW


def _dot(cx: float, cy: float, r: float) -> str:
    """The prefix-cache mark: a small disc in the accent colour."""
    return (f"<circle{svg.attrs(cx=cx, cy=cy, r=r)}"
            f' style="fill:{svg.color("accent")}"></circle>')


def _slots(bx: float, body_y: float, slots: list, bs: int, slot_w: float, color: str, tok,
           pale: bool = False, owner: int | None = None,
           siblings: list[int] | None = None, stale=()) -> list[str]:
    """A block's slots; with `owner` (the first sequence whose table holds the block), each
    token is keyed tok:<owner>:<position>, so a token swapped out or copied moves. With
    `siblings` (a copy-on-write copy's request's sequences), a token that appears grows out
    of the same position of a sibling in the frame before. Those in `stale` (KV vLLM never
    recomputed) show "?"."""
    parts = []
    for i in range(bs):
        sx = bx + 2 + i * slot_w
        if i in stale:
            held = (f"token {slots[i][0]} at position {slots[i][1]}, left from before"
                    if slots[i] else "nothing")
            parts.append(svg.rect(sx, body_y + 2, slot_w - 1, BODY - 4, fill="free", rx=1,
                                  stroke="waste",
                                  tip=f"slot {i}: KV never recomputed (vLLM ran the "
                                      f"recompute as a decode); it holds {held}"))
            if slot_w >= SLOT:
                parts.append(_text(sx + slot_w / 2 - 0.5, body_y + 16.5, "?",
                                   anchor="middle", fill="fg"))
        elif i < len(slots):
            token_id, pos = slots[i]
            extra = {"opacity": 0.4} if pale else {}
            k = f"tok:{owner}:{pos}" if owner is not None else None
            origin = " ".join(f"tok:{sid}:{pos}" for sid in siblings) if siblings else None
            parts.append(svg.rect(sx, body_y + 2, slot_w - 1, BODY - 4, fill=color, rx=1,
                                  tip=f"slot {i}: token {token_id} at position {pos}",
                                  **extra, data_k=k, data_from=origin))
            if slot_w >= SLOT:
                parts.append(_text(sx + slot_w / 2 - 0.5, body_y + 16.5, tok(token_id, pos),
                                   anchor="middle", fill="fg" if pale else "bg",
                                   data_k=k and f"{k}/t",
                                   data_from=origin and " ".join(f"{o}/t" for o in origin.split())))
        else:
            parts.append(svg.rect(sx, body_y + 2, slot_w - 1, BODY - 4, fill="free", rx=1,
                                  tip=f"slot {i}: empty (reserved, not yet written)"))
    return parts


def free_list(x: float, y: float, snap: dict, device: str = "gpu",
              right: float = WIDTH - MARGIN) -> tuple[list[str], float]:
    """The order in which free blocks are handed out, on one or two lines: vLLM v0.5.5's
    free list is a stack (last freed, first out); V1's free queue is handed out from its
    head (freed blocks without a hash go to the head, cached ones to the tail)."""
    order = snap[device]["free_order"]
    word = "free queue, head first" if is_v1(snap) else "free list, next out first"
    if not order:
        return lines(x, y, f"{word}: (empty)", right=right)
    per_line = int((right - x) / (FONT * CHAR_EM))
    text = f"{word}: " + " ".join(str(n) for n in order)
    if len(text) > 2 * per_line:
        text = text[:2 * per_line - 2].rsplit(" ", 1)[0] + " \u2026"
    return lines(x, y, text, right=right)


# -- the legend ------------------------------------------------------------------------------

# Legend entries by key: what the mark means. legend_keys() says which a trace uses.
LEGEND = {
    "new": "new this step",
    "freed": "freed this step",
    "free": "free",
    "cached": "free, still cached",
    "hashed": "in the prefix cache",
    "null": "null block (V1)",
    "shared": "shared by several tables",
    "ref": "ref 2 or x2: in two tables",
    "leaked": "leaked: never freed (vLLM bug)",
    "stale": "?: KV never recomputed",
    "cpu": "C#7: CPU block 7",
    "victim": "preempted",
    "slot": "token position",
}


def _mark(key: str, x: float, y: float) -> str:
    """A small picture of the mark `key`, 18 x 14, its top left at (x, y)."""
    if key == "new":
        return svg.rect(x + 1, y + 1, 16, 12, fill="panel", stroke="highlight", stroke_width=3)
    if key == "freed":
        return svg.rect(x + 1, y + 1, 16, 12, fill="free", stroke="waste", stroke_width=3)
    if key == "free":
        return svg.rect(x, y, 18, 14, fill="free", stroke="line", stroke_dasharray="4 3")
    if key == "cached":
        return svg.group([svg.rect(x, y, 18, 14, fill="free", stroke="line",
                                   stroke_dasharray="4 3"),
                          svg.rect(x + 3, y + 3, 12, 8, fill="seq-0", opacity=0.4, rx=1)])
    if key == "hashed":
        return _dot(x + 9, y + 7, 4)
    if key == "null":
        return svg.rect(x + 1, y + 1, 16, 12, fill="panel", stroke="muted", stroke_width=2)
    if key == "shared":
        return svg.rect(x, y, 18, 14, fill="accent")
    if key == "victim":
        return svg.rect(x + 1, y + 1, 16, 12, fill="seq-2", stroke="highlight", stroke_width=3)
    if key == "leaked":
        return svg.rect(x + 1, y + 1, 16, 12, fill="panel", stroke="waste", stroke_width=2.5,
                        stroke_dasharray="5 3")
    if key == "stale":
        return svg.group([svg.rect(x, y - 2, 18, 18, fill="free", stroke="waste", rx=1),
                          _text(x + 9, y + 12, "?", anchor="middle", fill="fg")])
    if key == "slot":
        return svg.group([svg.rect(x, y - 2, 18, 18, fill="seq-0", rx=1),
                          _text(x + 9, y + 12, "5", anchor="middle", fill="bg")])
    if key in ("ref", "cpu"):
        return ""
    raise ValueError(f"unknown legend key {key!r}")


def legend(x: float, y: float, keys, right: float = WIDTH - MARGIN,
           later: str | None = None) -> tuple[list[str], float]:
    """A legend for the marks `keys` (see LEGEND and legend_keys), in rows that wrap before
    `right`; `later` ("D@8") adds what a not-yet-arrived chip says. Returns (elements,
    height)."""
    items = [(k, LEGEND[k]) for k in keys]
    if later:
        at = later.split("@", 1)[1]
        items.append(("later", f"{later}: arrives in iteration {at}"))
    out = [_text(x, y + FONT, "Key:", fill="muted")]
    cx, cy = x + text_width("Key:") + 8, y
    row_h = FONT * 1.5
    for key, label in items:
        if key == "later":
            mark_w = 0.0
        elif key in ("ref", "cpu"):
            mark_w = 0.0
        else:
            mark_w = 24.0
        w = mark_w + text_width(label)
        if cx > x and cx + w > right:
            cx, cy = x, cy + row_h
        if mark_w:
            out.append(_mark(key, cx, cy + 2))
        out.append(_text(cx + mark_w, cy + FONT, label,
                            fill="highlight" if key == "ref" else "fg"))
        cx += w + 12
    return out, cy - y + row_h


def legend_keys(trace, device: str = "gpu", pool_shown: bool = True) -> list[str]:
    """The legend entries a trace's pictures need, in LEGEND's order: only marks that
    appear in some step, so the legend is the same on every frame."""
    found: set[str] = set()
    for step in trace:
        snap = step.snapshot
        h = highlights(step.events)
        if h.allocated or h.swapped_in or h.swapped_out or h.touched:
            found.add("new")
        if h.freed:
            found.add("freed")
        if h.victims:
            found.add("victim")
        if not pool_shown:
            continue
        v1 = is_v1(snap)
        if v1:
            found.add("null")
        if any(dev == "cpu" for r in snap["requests"] for s in r["seqs"]
               for dev, _, _ in s["block_table"]):
            found.add("cpu")
        if snap["block_size"] <= 8:
            found.add("slot")
        if not v1 and not_recomputed(snap):
            found.add("stale")
        for dev in ("gpu", "cpu") if device == "all" else (device,):
            for n, b in enumerate(snap[dev]["blocks"]):
                if v1 and dev == "gpu" and n == snap.get("null_block"):
                    continue
                if b.get("leaked_refs"):
                    found.add("leaked")
                elif b["ref_count"] > 1:
                    found.add("ref")
                if v1 and dev == "gpu" and b.get("cached"):
                    found.add("cached" if not b["ref_count"] else "hashed")
                    if not b["ref_count"]:
                        found.add("hashed")
                elif not b["ref_count"]:
                    found.add("free")
    return [k for k in LEGEND if k in found]


def first_later(trace) -> str | None:
    """The chip of the first request that is not there from the start ("C@4"), for
    legend(later=...); None when every request arrives at iteration 0."""
    for step in trace:
        snap = step.snapshot
        arrival = {r["request_id"]: r["arrival_step"] for r in snap["requests"]}
        for rid in snap["queues"]["pending"]:
            if arrival[rid] > 0:
                return f"{rid}@{arrival[rid]}"
    return None


def waste_stats(snap: dict, device: str = "gpu") -> dict:
    """Slots in allocated blocks that hold a token vs. slots reserved but empty (V1's null
    block counts as neither used nor free)."""
    bs = snap["block_size"]
    null = snap.get("null_block") if is_v1(snap) and device == "gpu" else None
    blocks = [b for n, b in enumerate(snap[device]["blocks"]) if n != null]
    used_blocks = [b for b in blocks if b["ref_count"] > 0]
    filled = sum(len(b.get("slots", [])) for b in used_blocks)
    return {"used_blocks": len(used_blocks), "free_blocks": len(blocks) - len(used_blocks),
            "filled_slots": filled, "empty_slots": len(used_blocks) * bs - filled}
