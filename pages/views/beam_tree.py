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


def draw(x: float, y: float, snap: dict, h: kv_view.Highlights, depth_max: int,
         colors: dict[int, str], labels: dict[int, str]) -> tuple[list[str], float]:
    """The tree after a step: one node per physical block (its number and ref count), the
    blocks made in this step outlined, and after the deepest node of every beam its row: a
    chip in the beam's colour, its label and its cumulative logprob. `depth_max` (the
    deepest table of the whole trace) fixes the column width, so nodes do not move between
    steps. With no live beam, the finished beams instead, best first."""
    nodes, order = tree(snap)
    bs = snap["block_size"]
    out = [svg.text(x, y + 12, "Beam tree: each live beam is a path through its blocks",
                    size=10, fill="muted")]
    top = y + 20
    if not nodes:
        finished = [s for r in snap["requests"] for s in r["seqs"]
                    if s["status"].startswith("finished")]
        finished.sort(key=lambda s: -s["cumulative_logprob"])
        out.append(svg.text(x + 4, top + 14, "No live beams: every block is back in the pool."
                            if finished else "No beams yet: the prompt has not run.", size=10))
        yy = top + 18
        n = snap["requests"][0]["n"] if snap["requests"] else 1
        for i, s in enumerate(finished[:6]):
            yy += 15
            out.append(svg.text(x + 4, yy + 10, f"{labels.get(s['seq_id'], s['seq_id'])} "
                                f"finished, cumulative logprob {s['cumulative_logprob']:.2f}"
                                + (" (returned)" if i < n else ""),
                                size=10, fill="fg" if i < n else "muted"))
        return out, yy + 16 - y
    label_w = 100
    col_w = min(66.0, (kv_view.WIDTH - 2 * kv_view.MARGIN - label_w) / max(1, depth_max))
    gap = min(14.0, col_w * 0.25)
    nw, nh, row_h = col_w - gap, 24, 30
    row = {sid: i for i, sid in enumerate(order)}
    ys = {}
    for i, node in enumerate(nodes):
        rows = [row[sid] for sid in node.leaves]
        ys[i] = top + 14 + (min(rows) + max(rows)) / 2 * row_h
    for i, node in enumerate(nodes):
        nx = x + node.depth * col_w
        if node.parent is not None:
            px = x + nodes[node.parent].depth * col_w + nw
            py = ys[node.parent]
            mid = px + gap / 2
            d = (f"M{svg.num(px)} {svg.num(py)} L{svg.num(mid)} {svg.num(py)} "
                 f"L{svg.num(mid)} {svg.num(ys[i])} L{svg.num(nx)} {svg.num(ys[i])}")
            edge = "fill:none;stroke:" + svg.color("line") + ";stroke-width:1.5"
            out.append(f"<path{svg.attrs(d=d, style=edge)}/>")
    for i, node in enumerate(nodes):
        nx, ny = x + node.depth * col_w, ys[i]
        shared = len(node.leaves) > 1
        fill = "accent" if shared else colors[node.leaves[0]]
        key = ("gpu", node.block)
        changed = key in h.allocated
        names = ", ".join(labels[s] for s in node.leaves)
        tip = (f"GPU block {node.block}: logical block {node.depth} of {names}; "
               f"{node.filled} of {bs} slots filled; ref count {node.ref_count}")
        if node.block in h.copied_to and changed:
            tip += f"; copy of block {h.copied_to[node.block]} (copy-on-write)"
        parts = [svg.rect(nx, ny - nh / 2, nw, nh, fill=fill,
                          stroke="highlight" if changed else "line",
                          stroke_width=2.5 if changed else 1),
                 svg.text(nx + nw / 2, ny - 1.5, f"#{node.block}", size=10, anchor="middle",
                          fill="bg"),
                 svg.text(nx + nw / 2, ny + 9.5, f"ref {node.ref_count}", size=9,
                          anchor="middle", fill="bg")]
        out.append(svg.group(parts, tip=tip))
    lx = x + (max(n.depth for n in nodes) + 1) * col_w - gap + 18
    cum = {s["seq_id"]: s["cumulative_logprob"] for s in live_beams(snap)}
    last = {sid: i for i, node in enumerate(nodes) for sid in node.leaves}   # deepest wins
    for sid in order:
        ly = top + 14 + row[sid] * row_h
        node = nodes[last[sid]]
        px, py = x + node.depth * col_w + nw, ys[last[sid]]
        mid = px + 6
        d = (f"M{svg.num(px)} {svg.num(py)} L{svg.num(mid)} {svg.num(py)} "
             f"L{svg.num(mid)} {svg.num(ly)} L{svg.num(lx - 3)} {svg.num(ly)}")
        stub = "fill:none;stroke:" + svg.color(colors[sid]) + ";stroke-width:1.5"
        out.append(f"<path{svg.attrs(d=d, style=stub)}/>")
        out.append(svg.rect(lx, ly - 5, 10, 10, fill=colors[sid], rx=1))
        out.append(svg.text(lx + 14, ly + 4, f"{labels[sid]} {cum[sid]:.2f}", size=10,
                            tip=f"{labels[sid]}: cumulative logprob {cum[sid]:.4f}"))
    return out, 20 + len(order) * row_h + 2
