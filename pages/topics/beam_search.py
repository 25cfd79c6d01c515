"""The beam search page: k beams share their common history as a tree of KV blocks.

scenario: one request with `SamplingParams(use_beam_search=True, best_of=k)` through vLLM
          v0.5.5's engine (sim.core), where beam search still lived in the engine: each step
          the beams propose 2k candidates, the best k by cumulative log-probability are
          kept, the kept ones are forked from their parents before the parents that were not
          kept are freed. The pool has room for k independent beams (sim/studies/sharing.py),
          so nothing is preempted.
view:     the step's 2k candidates, the beam tree (pages.views.beam_tree: every live beam is
          a path through the blocks of its block table; a shared block is one node, its
          reference count the number of beams below it), the GPU pool, where blocks whose
          count reaches zero come back "freed", and the blocks in use with sharing against k
          independent beams (pages.views.usage).
narrate:  the step's events in words, what the selection kept, dropped and freed, and the
          saving.

Chart `fig15-beam` (build time): the paper's Fig. 15 (b) beside sim's reproduction
(pages.views.fig15).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pages.framework.registry import Chart
from pages.framework.widget import Context, Param, Widget
from pages.views import beam_tree, fig15, kv_view, legend, svg, usage
from pages.views.beam_tree import live_beams
from pages.views.narrate import blocks_list, describe_step
from pages.views.text import join, plural, verb
from sim.events import BeamSearchStep, BlockFreed, SeqFreed
from sim.studies import sharing
from sim.studies.sharing import reproduce_fig15, usage_from_snapshot
from sim.studies.workload import RequestSpec
from sim.trace import Step, Trace, record

X = kv_view.MARGIN
MAX_DEPTH = 8          # logical blocks per beam that the tree draws side by side
MAX_POOL = 40


def blocks_per_beam(v: dict) -> int:
    return -(-(v["prompt_len"] + v["output_len"]) // v["block_size"])


def pool_size(v: dict) -> int:
    """Room for k independent copies plus one spare block each: nothing is preempted."""
    return v["k"] * sharing.copy_blocks(v["prompt_len"], v["output_len"], v["block_size"])


def scenario(v: dict) -> Trace:
    # Every sequence runs to max_tokens (ignore_eos), as in vLLM's throughput benchmark.
    return record(sharing.sharing_engine("beam", v["k"],
                                         [RequestSpec("A", v["prompt_len"], v["output_len"])],
                                         v["block_size"], v["seed"]))


def all_seq_ids(trace: Trace) -> set[int]:
    """Every sequence id that appears in the trace, including candidates' parents that
    lived only inside one step."""
    ids = {s["seq_id"] for step in trace for r in step.snapshot["requests"] for s in r["seqs"]}
    for step in trace:
        for e in step.events:
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


@dataclass(frozen=True)
class BeamContext(Context):
    labels: dict = field(default_factory=dict)       # seq_id -> "A.0", "A.1", ...
    request_of: dict = field(default_factory=dict)   # seq_id -> request id
    depth_max: int = 1                               # the deepest block table of the trace
    scale_max: int = 1                               # the longest usage bar of the trace
    averaged: list = field(default_factory=list)     # per step: time-averaged saving so far


def context(v: dict, trace: Trace) -> BeamContext:
    # One request: sequence i is "A.i", as on the other pages, beams that lived only inside
    # one step (a pruned candidate's parent) included.
    labels = {sid: f"A.{sid}" for sid in all_seq_ids(trace)}
    request_of = dict.fromkeys(labels, "A")
    depth_max = max([len(s["block_table"]) for step in trace
                     for s in live_beams(step.snapshot)] + [1])
    scale_max = max(max(usage_from_snapshot(s.snapshot).unshared for s in trace), 1)
    return BeamContext(v, trace, labels, request_of, depth_max, scale_max,
                       sharing.saving_so_far(trace))


def selection(step: Step) -> BeamSearchStep | None:
    """The step's beam search selection (None before the prompt has run)."""
    return next(iter(step.of_type(BeamSearchStep)), None)


def candidates(x: float, y: float, step_event: BeamSearchStep | None, k: int,
               colors: dict[int, str], labels: dict[int, str]) -> tuple[list[str], float]:
    """The step's 2k candidates, best first: the kept ones in the colour of the beam that
    carries them on, the pruned ones pale and dashed."""
    out = [svg.text(x, y + 12, f"This step's 2k = {2 * k} candidates, best first "
                    "(cumulative logprob)", size=10, fill="muted")]
    top = y + 18
    per_row = 4
    cw, ch = (kv_view.WIDTH - 2 * X - (per_row - 1) * 4) / per_row, 30
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


def view(step: Step, ctx: BeamContext) -> svg.Figure:
    v, snap = ctx.values, step.snapshot
    heading = ("Before the first iteration" if step.step is None
               else f"After iteration {step.step} ({step.kind})")
    h = kv_view.highlights(step.events)
    _, order = beam_tree.tree(snap)
    colors = beam_tree.leaf_colors(order)
    # Candidates carried on by a beam that finished this step have no row in the tree.
    step_event = selection(step)
    if step_event is not None:
        extra = [c.seq_id for c in step_event.candidates
                 if c.seq_id is not None and c.seq_id not in colors]
        colors.update({sid: svg.seq(len(order) + 1 + i) for i, sid in enumerate(extra)})
    parts = [svg.text(X, 16, heading, size=13),
             svg.text(X, 32, f"Request A: beam width k = {v['k']}, prompt of "
                      f"{v['prompt_len']} tokens, max_tokens {v['output_len']}", size=10,
                      fill="muted")]
    y = 38
    chosen, dy = candidates(X, y, step_event, v["k"], colors, ctx.labels)
    parts += chosen
    y += dy + 6
    tree, dy = beam_tree.draw(X, y, snap, h, ctx.depth_max, colors, ctx.labels)
    parts += tree
    y += dy + 6
    pool, dy = kv_view.pool(X, y, snap, "gpu", h, seq_colors=colors)
    parts += pool
    y += dy
    chips, dy = legend.chips(X, y, [("accent", "shared by several beams (ref > 1)"),
                                    ("free", "free (dashed) or freed this step")])
    parts += chips
    y += dy + 4
    bars, dy = usage.bars(X, y, usage_from_snapshot(snap), v["k"], ctx.scale_max,
                          ctx.averaged[step.index], what="independent beams")
    parts += bars
    return svg.Figure(kv_view.WIDTH, y + dy + 4, parts,
                      "Beam search: candidates, the beam tree of shared blocks, and the GPU "
                      "pool")


def beam_sentences(step: Step, labels: dict[int, str]) -> list[str]:
    """What the selection did: kept and pruned candidates, the beams that ended, and the
    blocks that went back to the pool because their last beam ended."""
    out = []
    name = lambda sid: labels.get(sid, str(sid))   # noqa: E731
    snap, events, step_event = step.snapshot, step.events, selection(step)
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
            went_on.append(f"{join(itself)} {verb(itself, 'continues', 'continue')} "
                           f"{verb(itself, 'itself', 'themselves')}")
        source = "the prompt sequence" if parents == [0] else "the live beams"
        out.append(f"Beam search takes the best 2k = {len(cands)} continuations of {source} "
                   f"by cumulative log-probability: {len(kept)} are kept "
                   f"({'; '.join(went_on)}) and {len(cands) - len(kept)} are pruned.")
        finished = [c for c in kept if c.outcome == "finished"]
        if finished:
            out.append(f"{plural(len(finished), 'kept candidate')} reached max_tokens and "
                       f"{verb(finished, 'finishes', 'finish')}.")
        if finished and not live_after:
            best = max(finished, key=lambda c: c.cumulative_logprob)
            out.append(f"With n = 1, vLLM returns the best finished beam, {name(best.seq_id)}.")
    if not live_after:
        return out
    proposed = ({c.parent_seq_id for c in step_event.candidates}
                if step_event is not None else set())
    ended = [e.seq_id for e in events if isinstance(e, SeqFreed) and e.seq_id not in live_after]
    # A beam freed without proposing a candidate was dropped before the forks.
    silent = [s for s in ended if s not in proposed]
    ended = [s for s in ended if s in proposed]
    if silent:
        names = [name(s) for s in silent]
        out.append(f"{join(names)} had no candidate among the best 2k, so "
                   f"{verb(names, 'it is', 'they are')} dropped at once, before any fork.")
    if ended:
        names = [name(s) for s in ended]
        out.append(f"{join(names)} {verb(names, 'is', 'are')} not kept and "
                   f"{verb(names, 'is', 'are')} freed after the forks.")
    freed = [e.physical for e in events if isinstance(e, BlockFreed) and e.device == "gpu"]
    held_after = {num for s in live_beams(snap) for _, num, _ in s["block_table"]}
    freed = [b for b in freed if b not in held_after]
    if freed:
        out.append(f"Their last beam gone, {blocks_list(freed)} "
                   f"{verb(freed, 'reaches', 'reach')} ref count 0.")
    elif ended or silent:
        out.append(f"Every block {verb(len(ended) + len(silent), 'it', 'they')} held is still "
                   "used by a kept beam.")
    shared = sorted(((len(n.leaves), n.depth, n.block) for n in beam_tree.tree(snap)[0]
                     if len(n.leaves) > 1), key=lambda t: (-t[0], t[1]))
    if shared:
        out.append("Ref count = live beams below in the tree: "
                   + ", ".join(f"block {b} has {c}" for c, _, b in shared) + ".")
    return out


def narrate(step: Step, ctx: BeamContext) -> str:
    v = ctx.values
    k = v["k"]
    if step.step is None:
        return (f"Request A asks for beam search with width k = {k} on a {v['prompt_len']}-"
                f"token prompt (blocks of {v['block_size']} slots). The GPU pool has "
                f"{step.snapshot['gpu']['num_blocks']} blocks: room for {k} independent beams "
                "plus one spare block per beam.")
    words = usage.sentence(usage_from_snapshot(step.snapshot), k, "independent beams")
    return " ".join([describe_step(step, ctx.labels, ctx.request_of)]
                    + beam_sentences(step, ctx.labels) + ([words] if words else []))


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
    scenario=scenario, context=context, view=view, narrate=narrate, check=check,
),)

CHARTS = (Chart(
    id="fig15-beam",
    title="The paper's Figure 15 (b), reproduced: beam search",
    render=lambda: fig15.panel("beam", reproduce_fig15(("beam",))["beam"]),
    caption=fig15.caption("beam"),
),)
