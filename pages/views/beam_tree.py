"""The beam tree: the live beams' block tables drawn as one tree of physical blocks.

In vLLM v0.5.5's beam search a kept candidate is forked from its parent beam, so beams that
share a block share every block before it: their block tables form a trie. A shared block is
one node whose reference count is the number of live beams below it; a beam is a path from
the root to its row. `tree` builds the trie from an engine snapshot, `draw` lays it out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pages.views import kv_view, svg


@dataclass
class Node:
    """One physical block in the beam tree: the block at logical index `depth` of every
    beam in `leaves` (their block tables agree up to here)."""
    depth: int
    block: int
    ref_count: int
    filled: int
    leaves: list = field(default_factory=list)      # seq ids of the live beams below
    children: list = field(default_factory=list)    # indices into the node list
    parent: int | None = None


def live_beams(snap: dict) -> list[dict]:
    """The sequences that hold blocks: the live beams (a beam that finished or was dropped
    has already given its table back)."""
    return [s for r in snap["requests"] for s in r["seqs"] if s["block_table"]]


def tree(snap: dict) -> tuple[list[Node], list[int]]:
    """(nodes, leaf order): the trie of the live beams' block tables. Beams that share a
    block share every block before it (they were forked from one ancestor), so the tables
    form a tree; leaves are ordered depth first, so no two edges cross."""
    refs = [b["ref_count"] for b in snap["gpu"]["blocks"]]
    nodes: list[Node] = []
    roots: list[int] = []
    index: dict[tuple, int] = {}          # path prefix of block numbers -> node
    for s in live_beams(snap):
        prefix: tuple = ()
        parent = None
        for depth, (_, num, filled) in enumerate(s["block_table"]):
            prefix += (num,)
            i = index.get(prefix)
            if i is None:
                i = len(nodes)
                index[prefix] = i
                nodes.append(Node(depth, num, refs[num], filled, parent=parent))
                (nodes[parent].children if parent is not None else roots).append(i)
            nodes[i].leaves.append(s["seq_id"])
            nodes[i].filled = max(nodes[i].filled, filled)
            parent = i
    order: list[int] = []

    def walk(i: int) -> None:
        node = nodes[i]
        ends_here = [sid for sid in node.leaves
                     if not any(sid in nodes[c].leaves for c in node.children)]
        order.extend(ends_here)
        for c in node.children:
            walk(c)

    for r in roots:
        walk(r)
    return nodes, order


def leaf_colors(order: list[int]) -> dict[int, str]:
    """Leaf row i -> palette colour seq-(i+1) (seq-0 is close to the shared accent)."""
    return {sid: svg.seq(i + 1) for i, sid in enumerate(order)}


NODE_GAP = 12       # between a node and the next column's
LABEL_GAP = 16      # between the deepest column and a beam's row label
CHIP = 11
STRIP = 6           # the beam's colour on the left of a block only it holds


def node_words(num: int, ref: int, width: float) -> tuple[str, str]:
    """A node's two lines, its block number and its ref count, as wide as fit `width`:
    ("#19", "ref 4"), else ("#19", "\u00d74"), else ("19", "4")."""
    for top, bottom in ((f"#{num}", f"ref {ref}"), (f"#{num}", f"\u00d7{ref}"),
                        (str(num), str(ref))):
        if kv_view.fits(top, width - 4) and kv_view.fits(bottom, width - 4):
            return top, bottom
    return str(num), str(ref)


def layout(depth_max: int, labels: list[str]) -> tuple[float, float, bool]:
    """(column width, node width, scores shown): the columns share what the row labels
    leave; a beam's score is left out of its label (it stays in the candidates and the hover
    text) when the columns would otherwise be too narrow for "#19" over "ref 4"."""
    room = kv_view.WIDTH - 2 * kv_view.MARGIN
    for scores in (True, False):
        widest = max([kv_view.text_width(t + (" -00.00" if scores else "")) for t in labels]
                     + [0])
        label_w = LABEL_GAP + CHIP + 5 + widest
        col_w = min(80.0, (room - label_w) / max(1, depth_max))
        if col_w - NODE_GAP >= kv_view.text_width("ref 4") + 6 or not scores:
            return col_w, col_w - NODE_GAP, scores
    raise AssertionError("unreachable")


def draw(x: float, y: float, snap: dict, h: kv_view.Highlights, depth_max: int,
         colors: dict[int, str], labels: dict[int, str],
         rows_max: int = 1) -> tuple[list[str], float]:
    """The tree after a step: one node per physical block (its number over its ref count),
    the blocks made in this step outlined, and after the deepest column of the trace every
    beam's row: a chip in the beam's colour, its label and its cumulative logprob.
    `depth_max` (the deepest table of the whole trace) fixes the columns and `rows_max` (the
    most live beams at once) the height, so nothing moves between steps. With no live beam,
    the finished beams instead, best first."""
    font = kv_view.FONT
    nodes, order = tree(snap)
    bs = snap["block_size"]
    out, dy = kv_view.lines(x, y, "Beam tree: each live beam is a path of blocks; ref n = "
                                  "the n beams below a block")
    top = y + dy + 4
    node_h = 2 * font + 8
    row_h = node_h + 6
    height = top - y + max(rows_max, 1) * row_h
    if not nodes:
        finished = [s for r in snap["requests"] for s in r["seqs"]
                    if s["status"].startswith("finished")]
        finished.sort(key=lambda s: -s["cumulative_logprob"])
        words = ("No live beams: every block is back in the pool." if finished else
                 "No beams yet: the prompt has not run.")
        elements, dy = kv_view.lines(x, top, words, fill="fg")
        out += elements
        yy = top + dy
        n = snap["requests"][0]["n"] if snap["requests"] else 1
        lead = round(font * 1.35, 2)
        for i, s in enumerate(finished[:6]):
            name = labels.get(s["seq_id"], str(s["seq_id"]))
            out.append(svg.text(x, yy + font, f"{name} finished: {s['cumulative_logprob']:.2f}"
                                + (", returned" if i < n else ""), size=font,
                                fill="fg" if i < n else "muted", data_k=f"done:{s['seq_id']}"))
            yy += lead
        return out, max(height, yy + 4 - y)
    col_w, nw, scores = layout(depth_max, list(labels.values()))
    row = {sid: i for i, sid in enumerate(order)}
    ys = {}
    for i, node in enumerate(nodes):
        rows = [row[sid] for sid in node.leaves]
        ys[i] = top + node_h / 2 + (min(rows) + max(rows)) / 2 * row_h
    edge = "fill:none;stroke:" + svg.color("line") + ";stroke-width:1.5"
    for i, node in enumerate(nodes):
        nx = x + node.depth * col_w
        if node.parent is not None:
            px = x + nodes[node.parent].depth * col_w + nw
            py = ys[node.parent]
            mid = px + NODE_GAP / 2
            d = (f"M{svg.num(px)} {svg.num(py)} L{svg.num(mid)} {svg.num(py)} "
                 f"L{svg.num(mid)} {svg.num(ys[i])} L{svg.num(nx)} {svg.num(ys[i])}")
            out.append(f"<path{svg.attrs(d=d, style=edge, data_k=f'edge:{node.block}')}/>")
    for i, node in enumerate(nodes):
        nx, ny = x + node.depth * col_w, ys[i]
        shared = len(node.leaves) > 1
        fill = "accent" if shared else colors[node.leaves[0]]
        key = ("gpu", node.block)
        changed = key in h.allocated
        who = ", ".join(labels[s] for s in node.leaves)
        tip = (f"GPU block {node.block}: logical block {node.depth} of {who}; "
               f"{node.filled} of {bs} slots filled; ref count {node.ref_count}")
        if node.block in h.copied_to and changed:
            tip += f"; copy of block {h.copied_to[node.block]} (copy-on-write)"
        upper, lower = node_words(node.block, node.ref_count, nw - (0 if shared else STRIP))
        # A shared block in the accent colour; a beam's own block pale with a strip and an
        # outline in the beam's colour, so its text reads in either theme.
        stroke = "highlight" if changed else ("line" if shared else fill)
        parts = [svg.rect(nx, ny - node_h / 2, nw, node_h, fill=fill if shared else "panel",
                          stroke=stroke, stroke_width=3 if changed else (1 if shared else 2))]
        cx, ink = nx + nw / 2, "bg" if shared else "fg"
        if not shared:
            parts.append(svg.rect(nx + 1.5, ny - node_h / 2 + 1.5, STRIP - 1.5, node_h - 3,
                                  fill=fill, rx=1))
            cx += STRIP / 2
        parts += [svg.text(cx, ny - 2, upper, size=font, anchor="middle", fill=ink),
                  svg.text(cx, ny + font - 1, lower, size=font, anchor="middle", fill=ink)]
        # A node that appears grows out of the block it was copied from (copy-on-write) or
        # else its parent: the beam forked there.
        origin = h.copied_to.get(node.block) if changed else None
        if origin is None and node.parent is not None:
            origin = nodes[node.parent].block
        out.append(svg.group(parts, tip=tip, data_k=f"node:{node.block}",
                             data_from=None if origin is None else f"node:{origin}"))
    lx = x + depth_max * col_w - NODE_GAP + LABEL_GAP
    cum = {s["seq_id"]: s["cumulative_logprob"] for s in live_beams(snap)}
    last = {sid: i for i, node in enumerate(nodes) for sid in node.leaves}   # deepest wins
    for sid in order:
        ly = top + node_h / 2 + row[sid] * row_h
        node = nodes[last[sid]]
        px, py = x + node.depth * col_w + nw, ys[last[sid]]
        mid = px + 5
        d = (f"M{svg.num(px)} {svg.num(py)} L{svg.num(mid)} {svg.num(py)} "
             f"L{svg.num(mid)} {svg.num(ly)} L{svg.num(lx - 3)} {svg.num(ly)}")
        stub = "fill:none;stroke:" + svg.color(colors[sid]) + ";stroke-width:2"
        words = f"{labels[sid]} {cum[sid]:.2f}" if scores else labels[sid]
        out.append(svg.group(
            [f"<path{svg.attrs(d=d, style=stub)}/>",
             svg.rect(lx, ly - CHIP / 2, CHIP, CHIP, fill=colors[sid], rx=1),
             svg.text(lx + CHIP + 5, ly + font / 2 - 1, words, size=font)],
            tip=f"{labels[sid]}: cumulative logprob {cum[sid]:.4f}", data_k=f"seq:{sid}"))
    return out, height
