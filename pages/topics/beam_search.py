"""The beam search page: k beams share their common history as a tree of KV blocks.

The widget runs one request with `SamplingParams(use_beam_search=True, best_of=k)` through
sim's engine (vLLM v0.5.5, where beam search still lived in the engine: each step the
beams propose 2k candidates, the best k by cumulative log-probability are kept, the kept
ones are forked from their parents before the parents that were not kept are freed). Each
frame draws the step's 2k candidates, the beam tree (every live beam is a path through the
blocks of its block table; a shared block is one node, its reference count the number of
beams below it) and the GPU pool, where blocks whose count reaches zero come back "freed".

Chart `fig15-beam` (build time): sim/studies/sharing.py's reproduction of the paper's Fig. 15 (b).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pages.views import kv_view, svg
from pages.views.narrate import blocks_list, describe_step, join
from pages.topics.parallel_sampling import _caption, fig15_chart, legend, usage_bars
from pages.framework.registry import Chart
from pages.framework.widget import Param, Widget
from sim.studies import sharing
from sim.core.engine import LLMEngine
from sim.studies.workload import RequestSpec
from sim.events import BeamSearchStep, BlockFreed, SeqFreed
from sim.studies.sharing import usage_from_snapshot

WIDTH = kv_view.WIDTH
X = kv_view.MARGIN
MAX_DEPTH = 8          # logical blocks per beam that the tree draws side by side
MAX_POOL = 40


def blocks_per_beam(v: dict) -> int:
    return -(-(v["prompt_len"] + v["output_len"]) // v["block_size"])


def pool_size(v: dict) -> int:
    """Room for k independent copies plus one spare block each: nothing is preempted."""
    return v["k"] * sharing.copy_blocks(v["prompt_len"], v["output_len"], v["block_size"])


def make_engine(v: dict) -> LLMEngine:
    # Every sequence runs to max_tokens (ignore_eos), as in vLLM's throughput benchmark.
    return sharing.sharing_engine("beam", v["k"],
                                  [RequestSpec("A", v["prompt_len"], v["output_len"])],
                                  v["block_size"], v["seed"])


def run_trace(v: dict) -> list[tuple[dict, object]]:
    """(snapshot, StepOutput or None) before the first step and after every step."""
    return sharing.trace(make_engine(v))


# ------------------------------------------------------------------------------ the tree
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
    return [s for r in snap["requests"] for s in r["seqs"] if s["block_table"]]


def beam_tree(snap: dict) -> tuple[list[Node], list[int]]:
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


def beam_colors(order: list[int]) -> dict[int, str]:
    """Leaf row i -> palette colour seq-(i+1) (seq-0 is close to the shared accent)."""
    return {sid: svg.seq(i + 1) for i, sid in enumerate(order)}


def draw_tree(x: float, y: float, snap: dict, h: kv_view.Highlights, depth_max: int,
              colors: dict[int, str], labels: dict[int, str]) -> tuple[list[str], float]:
    nodes, order = beam_tree(snap)
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
    col_w = min(66.0, (WIDTH - 2 * X - label_w) / max(1, depth_max))
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


def draw_candidates(x: float, y: float, step_event: BeamSearchStep | None, k: int,
                    colors: dict[int, str], labels: dict[int, str]) -> tuple[list[str], float]:
    """The step's 2k candidates, best first: the kept ones in the colour of the beam that
    carries them on, the pruned ones pale and dashed."""
    out = [svg.text(x, y + 12, f"This step's 2k = {2 * k} candidates, best first "
                    "(cumulative logprob)", size=10, fill="muted")]
    top = y + 18
    per_row = 4
    cw, ch = (WIDTH - 2 * X - (per_row - 1) * 4) / per_row, 30
    if step_event is None:
        out.append(svg.text(x + 4, top + 14, "(none: the prompt has not run yet)", size=10,
                            fill="muted"))
        return out, 40
    for i, c in enumerate(step_event.candidates):
        cx = x + (i % per_row) * (cw + 4)
        cy = top + (i // per_row) * (ch + 4)
        parent = labels.get(c.parent_seq_id, f"A.{c.parent_seq_id}")
        score = f"{c.cumulative_logprob:.2f}"
        if c.outcome == "pruned":
            body = [svg.rect(cx, cy, cw, ch, fill="free", stroke="line",
                             stroke_dasharray="3 2"),
                    svg.text(cx + 5, cy + 12, f"from {parent}", size=10, fill="muted"),
                    svg.text(cx + 5, cy + 25, f"{score} pruned", size=9, fill="muted")]
            tip = (f"candidate from {parent}: token {c.token_id}, cumulative logprob "
                   f"{score}: pruned (not among the best {k})")
        else:
            who = labels.get(c.seq_id, f"A.{c.seq_id}")
            fill = colors.get(c.seq_id, "used")
            word = "kept" if c.outcome == "kept" else "finished"
            body = [svg.rect(cx, cy, cw, ch, fill=fill, stroke="line"),
                    svg.text(cx + 5, cy + 12, f"{who} \u2190 {parent}", size=10, fill="bg"),
                    svg.text(cx + 5, cy + 25, f"{score} {word}", size=9, fill="bg")]
            tip = (f"candidate from {parent}: token {c.token_id}, cumulative logprob "
                   f"{score}: {word}, carried on by {who}")
        out.append(svg.group(body, tip=tip))
    rows = (len(step_event.candidates) - 1) // per_row + 1
    return out, 18 + rows * (ch + 4)


def draw(v: dict, snap: dict, out, heading: str, depth_max: int, scale_max: int,
         averaged: float | None, labels: dict[int, str]) -> tuple[list[str], float]:
    events = out.events if out is not None else []
    h = kv_view.highlights(events)
    _, order = beam_tree(snap)
    colors = beam_colors(order)
    # Candidates carried on by a beam that finished this step have no row in the tree.
    step_event = next((e for e in events if isinstance(e, BeamSearchStep)), None)
    if step_event is not None:
        extra = [c.seq_id for c in step_event.candidates
                 if c.seq_id is not None and c.seq_id not in colors]
        colors.update({sid: svg.seq(len(order) + 1 + i) for i, sid in enumerate(extra)})
    parts = [svg.text(X, 16, heading, size=13),
             svg.text(X, 32, f"Request A: beam width k = {v['k']}, prompt of "
                      f"{v['prompt_len']} tokens, max_tokens {v['output_len']}", size=10,
                      fill="muted")]
    y = 38
    for panel in (lambda yy: draw_candidates(X, yy, step_event, v["k"], colors, labels),
                  lambda yy: draw_tree(X, yy, snap, h, depth_max, colors, labels)):
        elements, dy = panel(y)
        parts += elements
        y += dy + 6
    pool, dy = kv_view.pool(X, y, snap, "gpu", h, seq_colors=colors)
    parts += pool
    y += dy
    chips, dy = legend(X, y, [("accent", "shared by several beams (ref > 1)"),
                              ("free", "free (dashed) or freed this step")])
    parts += chips
    y += dy + 4
    bars, dy = usage_bars(X, y, usage_from_snapshot(snap), v["k"], scale_max, averaged,
                          what="independent beams")
    parts += bars
    return parts, y + dy + 4


# ---------------------------------------------------------------------------- narration
def beam_sentences(step_event: BeamSearchStep | None, events: list, snap: dict,
                   labels: dict[int, str]) -> list[str]:
    """What the selection did: kept and pruned candidates, the beams that ended, and the
    blocks that went back to the pool because their last beam ended."""
    out = []
    name = lambda sid: labels.get(sid, str(sid))   # noqa: E731
    live_after = {s["seq_id"] for s in live_beams(snap)}
    if step_event is not None:
        cands = step_event.candidates
        kept = [c for c in cands if c.outcome != "pruned"]
        parents = list(dict.fromkeys(c.parent_seq_id for c in cands))
        children: dict[int, list[str]] = {}
        itself = []
        for c in kept:
            if c.seq_id == c.parent_seq_id:
                itself.append(name(c.seq_id))
            else:
                children.setdefault(c.parent_seq_id, []).append(name(c.seq_id))
        went_on = [f"{join(kids)} from {name(par)}" for par, kids in children.items()]
        if itself:
            went_on.append(f"{join(itself)} continue{'s' if len(itself) == 1 else ''} "
                           f"{'itself' if len(itself) == 1 else 'themselves'}")
        source = "the prompt sequence" if parents == [0] else "the live beams"
        out.append(f"Beam search takes the best 2k = {len(cands)} continuations of {source} "
                   f"by cumulative log-probability: {len(kept)} are kept "
                   f"({'; '.join(went_on)}) and {len(cands) - len(kept)} are pruned.")
        finished = [c for c in kept if c.outcome == "finished"]
        if finished:
            out.append(f"{len(finished)} kept candidate{'s' if len(finished) != 1 else ''} "
                       f"reached max_tokens and finish{'es' if len(finished) == 1 else ''}.")
        if finished and not live_after:
            best = max(finished, key=lambda c: c.cumulative_logprob)
            out.append(f"With n = 1, vLLM returns the best finished beam, {name(best.seq_id)}.")
    if not live_after:
        return out
    proposed = ({c.parent_seq_id for c in step_event.candidates}
                if step_event is not None else set())
    ended = [e.seq_id for e in events if isinstance(e, SeqFreed) and e.seq_id not in live_after]
    silent = [s for s in ended if s not in proposed]
    ended = [s for s in ended if s in proposed]
    if silent:
        names = [name(s) for s in silent]
        out.append(f"{join(names)} had no candidate among the best 2k, so "
                   f"{'it is' if len(names) == 1 else 'they are'} dropped at once, before "
                   "any fork.")
    if ended:
        names = [name(s) for s in ended]
        out.append(f"{join(names)} {'is' if len(names) == 1 else 'are'} not kept and "
                   f"{'is' if len(names) == 1 else 'are'} freed after the forks.")
    freed = [e.physical for e in events if isinstance(e, BlockFreed) and e.device == "gpu"]
    held_after = {num for s in live_beams(snap) for _, num, _ in s["block_table"]}
    freed = [b for b in freed if b not in held_after]
    if freed:
        out.append(f"Their last beam gone, {blocks_list(freed)} "
                   f"reach{'es' if len(freed) == 1 else ''} ref count 0.")
    elif ended or silent:
        one = len(ended) + len(silent) == 1
        out.append(f"Every block {'it' if one else 'they'} held is still used by a kept beam.")
    shared = sorted(((len(n.leaves), n.depth, n.block) for n in beam_tree(snap)[0]
                     if len(n.leaves) > 1), key=lambda t: (-t[0], t[1]))
    if shared:
        out.append("Ref count = live beams below in the tree: "
                   + ", ".join(f"block {b} has {c}" for c, _, b in shared) + ".")
    return out


def build(v: dict) -> list[dict]:
    trace = run_trace(v)
    depth_max = max([len(s["block_table"]) for snap, _ in trace for s in live_beams(snap)]
                    + [1])
    scale_max = max(max(usage_from_snapshot(s).unshared for s, _ in trace), 1)
    k, bs = v["k"], v["block_size"]
    # One request: sequence i is "A.i", as on the other pages.
    labels = {sid: f"A.{sid}" for sid in all_seq_ids(trace)}
    request_of = {sid: "A" for sid in labels}
    snap0 = trace[0][0]
    drawn = [(draw(v, snap0, None, "Before the first iteration", depth_max, scale_max, None,
                   labels),
              f"Request A asks for beam search with width k = {k} on a {v['prompt_len']}-token "
              f"prompt (blocks of {bs} slots). The GPU pool has {pool_size(v)} blocks: room "
              f"for {k} independent beams plus one spare block per beam.")]
    used_sum = unshared_sum = 0
    for snap, out in trace[1:]:
        u = usage_from_snapshot(snap)
        used_sum += u.used
        unshared_sum += u.unshared
        averaged = (unshared_sum - used_sum) / unshared_sum if unshared_sum else None
        kind = "prefill" if out.scheduler_outputs.num_prefill_groups else "decode"
        step_event = next((e for e in out.events if isinstance(e, BeamSearchStep)), None)
        text = " ".join([describe_step(_as_step(out), labels, request_of)]
                        + beam_sentences(step_event, out.events, snap, labels))
        if u.unshared:
            text += (f" Blocks in use: {u.used}; {k} independent beams would hold "
                     f"{u.unshared}, so sharing saves {u.saved} ({100 * u.saving:.0f}%).")
        drawn.append((draw(v, snap, out, f"After iteration {out.step} ({kind})", depth_max,
                           scale_max, averaged, labels), text))
    height = max(h for (_, h), _ in drawn)
    return [{"svg": svg.document(WIDTH, height, parts,
                                 label="Beam search: candidates, the beam tree of shared "
                                       "blocks, and the GPU pool"),
             "narration": text} for (parts, _), text in drawn]


def all_seq_ids(trace) -> set[int]:
    """Every sequence id that appears in the trace, including candidates' parents that
    lived only inside one step."""
    ids = {s["seq_id"] for snap, _ in trace for r in snap["requests"] for s in r["seqs"]}
    for _, out in trace[1:]:
        for e in out.events:
            if isinstance(e, BeamSearchStep):
                ids.update(c.parent_seq_id for c in e.candidates)
                ids.update(c.seq_id for c in e.candidates if c.seq_id is not None)
                continue
            for name in ("seq_id", "parent_seq_id", "child_seq_id"):
                value = getattr(e, name, None)
                if isinstance(value, int):
                    ids.add(value)
            ids.update(getattr(e, "seq_ids", ()))
    return ids


def check(v: dict) -> dict[str, str]:
    errors = {}
    if blocks_per_beam(v) > MAX_DEPTH:
        errors["block_size"] = (f"prompt + output must fit in {MAX_DEPTH} blocks per beam so "
                                f"the tree fits the picture; here {v['prompt_len']} + "
                                f"{v['output_len']} tokens need {blocks_per_beam(v)} blocks of "
                                f"{v['block_size']}. Raise the block size or lower the lengths")
    elif pool_size(v) > MAX_POOL:
        errors["k"] = (f"k x (blocks per beam + 1) must be at most {MAX_POOL} so the pool "
                       f"stays readable; here {v['k']} x {blocks_per_beam(v) + 1} = "
                       f"{pool_size(v)}. Lower k or the lengths, or raise the block size")
    return errors


WIDGETS = (Widget(
    id="beam-search",
    title="Beam search: k beams share their history as a tree of blocks",
    summary="Each step the beams propose 2k candidates and the best k are kept. The tree "
            "shows each live beam as a path through its blocks; shared blocks are one node "
            "whose ref count is the number of beams below it. Blocks whose last beam is "
            "dropped come back to the pool in the same step.",
    params=(
        Param("k", "beam width k", "int", 4, min=2, max=6,
              help="Beams kept each step (SamplingParams best_of with use_beam_search, 2 to 6)."),
        Param("prompt_len", "prompt length", "int", 6, min=1, max=24,
              help="Prompt tokens (1 to 24)."),
        Param("output_len", "output length", "int", 8, min=1, max=16,
              help="Tokens each beam generates (max_tokens, 1 to 16)."),
        Param("block_size", "block size", "int", 4, min=1, max=16,
              help="Token slots per block (vLLM's default is 16; 4 keeps the picture small)."),
        Param("seed", "seed", "int", 0, min=0, max=9999,
              help="Seeds the stand-in model's candidates and their log-probabilities: a "
                   "different seed grows a different tree."),
    ),
    build=build,
    check=check,
),)


FIG15_BEAM = Chart(
    id="fig15-beam",
    title="The paper's Figure 15 (b), reproduced: beam search",
    render=lambda: fig15_chart("beam"),
    caption=_caption("beam"),
)

CHARTS = (FIG15_BEAM,)


def _as_step(out):
    # Transitional: a StepOutput read as a trace Step, until this topic records a Trace.
    from types import SimpleNamespace
    return SimpleNamespace(step=out.step, events=out.events, scheduled=out.scheduled())
