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
          count reaches zero come back "freed", a legend of every mark, and the blocks in use
          with sharing against k independent beams (pages.views.usage). Before the first
          iteration, the prompt laid out in blocks (pages.views.prompt_plan).
narrate:  three sentences in the engine's causal order: the selection (cause), the forks
          and then the frees (effect), the blocks that go back and the saving (consequence);
          `details` gives every event, copy-on-write and new blocks included.

Chart `fig15-beam` (build time): the paper's Fig. 15 (b) beside sim's reproduction
(pages.views.fig15).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pages.framework.registry import Chart
from pages.framework.widget import Context, Param, Widget
from pages.questions import Asker, beams, kv
from pages.views import beam_tree, fig15, kv_view, prompt_plan, svg, usage
from pages.views.beam_tree import live_beams
from pages.views.narrate import blocks_list
from pages.views.text import a, join, plural, verb
from sim.events import (
    Admitted,
    BeamSearchStep,
    BlockAllocated,
    BlockFreed,
    CopyOnWrite,
    Forked,
    SeqFreed,
)
from sim.studies import sharing
from sim.studies.sharing import reproduce_fig15, usage_from_snapshot
from sim.studies.workload import RequestSpec
from sim.trace import Step, Trace, record

X = kv_view.MARGIN
MAX_DEPTH = 8          # logical blocks per beam that the tree draws side by side
MAX_POOL = 40
FONT = kv_view.FONT
STRIP = beam_tree.STRIP


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
    rows_max: int = 1                                # the most live beams at once
    scale_max: int = 1                               # the longest usage bar of the trace
    averaged: list = field(default_factory=list)     # per step: time-averaged saving so far
    legend: list = field(default_factory=list)       # kv_view legend keys of the trace


def context(v: dict, trace: Trace) -> BeamContext:
    # One request: sequence i is "A.i", as on the other pages, beams that lived only inside
    # one step (a pruned candidate's parent) included.
    labels = {sid: f"A.{sid}" for sid in all_seq_ids(trace)}
    request_of = dict.fromkeys(labels, "A")
    depth_max = max([len(s["block_table"]) for step in trace
                     for s in live_beams(step.snapshot)] + [1])
    rows_max = max([len(live_beams(step.snapshot)) for step in trace] + [1])
    scale_max = max(max(usage_from_snapshot(s.snapshot).unshared for s in trace), 1)
    keys = set(kv_view.legend_keys(trace)) | {"shared"}
    return BeamContext(v, trace, labels, request_of, depth_max, rows_max, scale_max,
                       sharing.saving_so_far(trace), [k for k in kv_view.LEGEND if k in keys])


def selection(step: Step) -> BeamSearchStep | None:
    """The step's beam search selection (None before the prompt has run)."""
    return next(iter(step.of_type(BeamSearchStep)), None)


def label(step: Step, ctx: BeamContext | None = None) -> str:
    """The step's name in the counter, the heading and the narration."""
    return "start" if step.step is None else f"iteration {step.step}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


# -- the picture -----------------------------------------------------------------------------

def candidates(x: float, y: float, step_event: BeamSearchStep, k: int,
               colors: dict[int, str], labels: dict[int, str]) -> tuple[list[str], float]:
    """The step's 2k candidates, best first, four to a row: a kept one in the colour of the
    beam that carries it on ("A.8\u2190A.1": A.8 carries on a candidate of A.1), a pruned
    one pale and dashed; each with its cumulative logprob."""
    out, dy = kv_view.lines(x, y, f"2k = {2 * k} candidates, best first: kept in their beam's "
                                  "colour (new\u2190parent), pruned dashed")
    top = y + dy + 2
    per_row = 4
    cw = (kv_view.WIDTH - 2 * X - (per_row - 1) * 4) / per_row
    ch = 2 * FONT + 8
    for i, c in enumerate(step_event.candidates):
        cx = x + (i % per_row) * (cw + 4)
        cy = top + (i // per_row) * (ch + 4)
        parent = labels.get(c.parent_seq_id, f"A.{c.parent_seq_id}")
        score = f"{c.cumulative_logprob:.2f}"
        if c.outcome == "pruned":
            body = [svg.rect(cx, cy, cw, ch, fill="free", stroke="line",
                             stroke_dasharray="4 3"),
                    svg.text(cx + 4, cy + FONT + 1, f"from {parent}", size=FONT, fill="muted"),
                    svg.text(cx + 4, cy + 2 * FONT + 4, score, size=FONT, fill="muted")]
            tip = (f"candidate from {parent}: token {c.token_id}, cumulative logprob "
                   f"{score}: pruned (not among the best {k})")
        else:
            who = labels.get(c.seq_id, f"A.{c.seq_id}")
            fill = colors.get(c.seq_id, "used")
            word = "kept" if c.outcome == "kept" else "finished"
            second = f"{score} done" if c.outcome == "finished" else score
            if not kv_view.fits(second, cw - STRIP - 6):
                second = score
            first = f"{who}\u2190{parent}"
            if not kv_view.fits(first, cw - STRIP - 6):
                first = who
            body = [svg.rect(cx, cy, cw, ch, fill="panel", stroke=fill, stroke_width=2.5),
                    svg.rect(cx + 1.5, cy + 1.5, STRIP - 1.5, ch - 3, fill=fill, rx=1),
                    svg.text(cx + STRIP + 3, cy + FONT + 1, first, size=FONT),
                    svg.text(cx + STRIP + 3, cy + 2 * FONT + 4, second, size=FONT)]
            tip = (f"candidate from {parent}: token {c.token_id}, cumulative logprob "
                   f"{score}: {word}, carried on by {who}")
        out.append(svg.group(body, tip=tip, data_k=f"cand:{i}"))
    rows = (len(step_event.candidates) - 1) // per_row + 1
    return out, top - y + rows * (ch + 4)


def start_words(v: dict) -> str:
    """Under the prompt's blocks at the start: what every iteration will do."""
    k = v["k"]
    return (f"Every iteration the beams propose their best next tokens; the best 2k = {2 * k} "
            f"(beam, token) pairs are the candidates and the best {k} live on as beams.")


def view(step: Step, ctx: BeamContext) -> svg.Figure:
    v, snap = ctx.values, step.snapshot
    name = label(step)
    kind = "before the first iteration" if step.step is None else step.kind
    h = kv_view.highlights(step.events)
    _, order = beam_tree.tree(snap)
    colors = beam_tree.leaf_colors(order)
    # Candidates carried on by a beam that finished this step have no row in the tree.
    step_event = selection(step)
    if step_event is not None:
        extra = [c.seq_id for c in step_event.candidates
                 if c.seq_id is not None and c.seq_id not in colors]
        colors.update({sid: svg.seq(len(order) + 1 + i) for i, sid in enumerate(extra)})
    parts, y = usage.request_heading(X, f"{_cap(name)} ({kind})",
                                     f"k = {v['k']}", v)
    if step_event is None:
        elements, dy = prompt_plan.plan(X, y, v["prompt_len"], v["block_size"],
                                        note=start_words(v))
    else:
        elements, dy = candidates(X, y, step_event, v["k"], colors, ctx.labels)
    parts += elements
    y += dy + 6
    elements, dy = beam_tree.draw(X, y, snap, h, ctx.depth_max, colors, ctx.labels,
                                  ctx.rows_max)
    parts += elements
    y += dy + 6
    elements, dy = kv_view.pool(X, y, snap, "gpu", h, seq_colors=colors)
    parts += elements
    y += dy + 4
    elements, dy = kv_view.legend(X, y, ctx.legend)
    parts += elements
    y += dy + 6
    elements, dy = usage.bars(X, y, usage_from_snapshot(snap), v["k"], ctx.scale_max,
                              ctx.averaged[step.index], what=usage.BEAMS)
    parts += elements
    y += dy
    return svg.Figure(kv_view.WIDTH, y + 4, parts,
                      f"Beam search, {name}: candidates, the beam tree of shared blocks, and "
                      "the GPU pool")


# -- words -----------------------------------------------------------------------------------

@dataclass
class Selection:
    """What one step's beam search did, in the engine's order: the candidates (cause), the
    beams dropped at once, the forks, the beams freed after them, the blocks that went back
    (effect and consequence)."""
    kept: list                   # kept candidates, best first
    pruned: int
    before: list                 # the beams (or the prompt sequence) that proposed
    from_parent: dict            # parent -> number of kept candidates
    none_kept: list              # beams before with no kept candidate
    silent: list                 # beams with no candidate at all: dropped before the forks
    silent_blocks: list          # blocks freed with them
    forks: dict                  # parent -> children forked from it, in order
    itself: list                 # parents that carry one of their candidates on themselves
    ended: list                  # beams freed after the forks
    freed: list                  # blocks freed after the forks
    finished: list               # kept candidates that finished


def _selection(step: Step, ctx: BeamContext) -> Selection | None:
    ev = selection(step)
    if ev is None:
        return None
    events = list(step.events)
    at = events.index(ev)
    cands = ev.candidates
    kept = [c for c in cands if c.outcome != "pruned"]
    prev = ctx.trace.previous(step)
    before = [s["seq_id"] for s in live_beams(prev.snapshot)] if prev is not None else []
    proposed = list(dict.fromkeys(c.parent_seq_id for c in cands))
    if not before:
        before = proposed
    from_parent: dict[int, int] = {}
    for c in kept:
        from_parent[c.parent_seq_id] = from_parent.get(c.parent_seq_id, 0) + 1
    live_after = {s["seq_id"] for s in live_beams(step.snapshot)}
    silent = [e.seq_id for e in events[:at] if isinstance(e, SeqFreed)]
    silent_blocks = [e.physical for e in events[:at]
                     if isinstance(e, BlockFreed) and e.device == "gpu"]
    forks: dict[int, list[int]] = {}
    for e in events[at:]:
        if isinstance(e, Forked):
            forks.setdefault(e.parent_seq_id, []).append(e.child_seq_id)
    ended = sorted(e.seq_id for e in events[at:]
                   if isinstance(e, SeqFreed) and e.seq_id not in live_after)
    freed = [e.physical for e in events[at:] if isinstance(e, BlockFreed) and e.device == "gpu"]
    return Selection(kept, len(cands) - len(kept), before, from_parent,
                     [b for b in before if b not in from_parent], silent, silent_blocks,
                     forks, [c.seq_id for c in kept if c.seq_id == c.parent_seq_id], ended,
                     freed, [c for c in kept if c.outcome == "finished"])


def _or(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def story(step: Step, ctx: BeamContext) -> list[str]:
    """Three short sentences: the selection (cause), the forks and then the frees (effect),
    the blocks that go back and the saving (consequence)."""
    v = ctx.values
    k, m = v["k"], v["output_len"]
    sel = _selection(step, ctx)
    name = lambda sid: ctx.labels.get(sid, f"A.{sid}")   # noqa: E731
    u = usage_from_snapshot(step.snapshot)
    saves = usage.saving_words(u)
    n_cands = len(sel.kept) + sel.pruned
    prefill = bool(step.of_type(Admitted))
    # The cause: the selection.
    if prefill:
        blocks = [e.physical for e in step.of_type(BlockAllocated) if e.device == "gpu"]
        root = name(sel.before[0])
        cause = (f"A's {v['prompt_len']}-token prompt runs once, as {root}, into "
                 f"{blocks_list(blocks)}; its best {n_cands} next tokens are the candidates.")
    elif len(sel.from_parent) == len(sel.before):
        cause = (f"The best {k} of the {n_cands} candidates come one from each beam.")
    else:
        parts = [f"{name(p)} ({c})" for p, c in sel.from_parent.items()]
        cause = (f"The best {k} of the {n_cands} candidates come from {join(parts)}, none "
                 f"from {_or([name(b) for b in sel.none_kept])}.")
    if sel.finished and not live_beams(step.snapshot):
        best = max(sel.finished, key=lambda c: c.cumulative_logprob)
        n_done = len(sel.finished)
        who = "Both" if n_done == 2 else f"All {n_done}"
        effect = (f"{who} reach max_tokens ({m}) and finish; with n = 1, vLLM returns the "
                  f"best, {name(best.seq_id)} (cumulative logprob "
                  f"{best.cumulative_logprob:.2f}).")
        freed = sel.silent_blocks + sel.freed
        avg = ctx.averaged[step.index]
        every = "both blocks" if len(freed) == 2 else f"all {plural(len(freed), 'block')}"
        tail = f"No live beam is left, so {every} go back to the pool"
        if avg is not None:
            tail += f"; over the run, sharing saved {100 * avg:.0f}% of the blocks"
        return [cause, effect, tail + "."]
    # The effect: forks first, then frees.
    clauses = []
    if sel.silent:
        names = [name(s) for s in sel.silent]
        clauses.append(f"{join(names)}, with no candidate at all, "
                       f"{verb(names, 'is', 'are')} dropped first")
    fork_words = []
    for parent, kids in sel.forks.items():
        kid_names = [name(c) for c in kids]
        fork_words.append(f"{join(kid_names)} {verb(kid_names, 'forks', 'fork')} from "
                          f"{name(parent)}" if not fork_words else
                          f"{join(kid_names)} from {name(parent)}")
    if sel.itself:
        names = [name(s) for s in sel.itself]
        fork_words.append(f"{join(names)} {verb(names, 'continues', 'continue')} "
                          f"{verb(names, 'itself', 'themselves')}")
    if fork_words:
        clauses.append(", ".join(fork_words))
    ended = [name(s) for s in sel.ended]
    if len(ended) > 4:
        clauses.append(f"then the {len(ended)} beams not kept are freed")
    elif ended:
        clauses.append(f"then {join(ended)} {verb(ended, 'is', 'are')} freed")
    effect = _cap("; ".join(clauses)) + "."
    if prefill:
        refs = step.snapshot["gpu"]["blocks"]
        beams = live_beams(step.snapshot)
        shared = [num for _, num, _ in (beams[0]["block_table"] if beams else ())
                  if refs[num]["ref_count"] > 1]
        effect = (f"The best {k} become {join([name(c.seq_id) for c in sel.kept])}, forked "
                  f"from {name(sel.before[0])}; then {name(sel.before[0])} itself is freed.")
        counted = (f"{_cap(blocks_list(shared))} now {verb(shared, 'has', 'have')} ref count "
                   f"{k}" if shared else "No block is shared yet")
        return [cause, effect, f"{counted}: sharing {saves}."]
    # The consequence: the blocks whose last beam went, and the saving.
    freed = sel.silent_blocks + sel.freed
    copies = {e.dst: e.seq_id for e in step.of_type(CopyOnWrite)}
    made = [b for b in freed if b in copies]
    if freed:
        tail = (f"{_cap(blocks_list(freed))} {verb(freed, 'loses its', 'lose their')} last "
                f"beam and {verb(freed, 'returns', 'return')} to the pool")
        if len(made) == 1:
            what = "it" if made == freed else str(made[0])
            tail += f" ({what} was {name(copies[made[0]])}'s copy from this iteration)"
        elif made:
            what = "they" if made == freed else join([str(b) for b in made])
            tail += f" ({what} were copies made this iteration)"
        tail += f"; sharing {saves}."
    else:
        tail = (f"No block is freed, as every block they held is still used by a kept beam; "
                f"sharing {saves}.")
    return [cause, effect, tail]


def narrate(step: Step, ctx: BeamContext) -> str:
    v = ctx.values
    k = v["k"]
    if step.step is None:
        return " ".join([
            f"Start: request A asks for beam search with k = {k} beams on "
            f"{a(str(v['prompt_len']) + '-token prompt')}, in blocks of {v['block_size']}.",
            f"Each iteration the beams propose 2k = {2 * k} candidates and the best {k} by "
            "cumulative log-probability live on; a beam that is not kept is freed.",
            f"Beams that share history share its blocks, so the pool, sized for "
            f"{usage.copies_words(k, usage.BEAMS)}, stays mostly free."])
    return f"{_cap(label(step))}: " + " ".join(story(step, ctx))


def details(step: Step, ctx: BeamContext) -> list[str]:
    """The full account, in the engine's order: the model step with its new blocks and
    copies, the selection, the beams dropped at once, the forks, the beams freed after them,
    the blocks that went back, the finish, the tree's counts and the saving."""
    v = ctx.values
    k, p, bs, m = v["k"], v["prompt_len"], v["block_size"], v["output_len"]
    name = lambda sid: ctx.labels.get(sid, f"A.{sid}")   # noqa: E731
    if step.step is None:
        per = sharing.copy_blocks(p, m, bs)
        return [
            f"Request A: {a(str(p) + '-token prompt')}, beam search with width k = {k} "
            f"(best_of = {k}, use_beam_search), max_tokens {m}; every beam runs to "
            "max_tokens (ignore_eos, as in vLLM's benchmark).",
            f"GPU pool: {step.snapshot['gpu']['num_blocks']} blocks = {k} x {per} (the "
            f"{plural(per - 1, 'block')} one beam needs, plus the spare block "
            "can_append_slots wants per running sequence): nothing is preempted.",
            "The stand-in model makes up the candidates and their log-probabilities from the "
            "seed: another seed grows another tree."]
    out = []
    sel = _selection(step, ctx)
    events = step.events
    if step.of_type(Admitted):
        blocks = [e.physical for e in step.of_type(BlockAllocated) if e.device == "gpu"]
        out.append(f"Prefill step: A's {p}-token prompt runs as one sequence, "
                   f"{name(sel.before[0])}, into {blocks_list(blocks)}.")
    else:
        names = [name(b) for b in sel.before]
        out.append(f"Decode step: {join(names)} each add one token.")
        new: dict[int, list] = {}
        for e in events:
            if isinstance(e, BlockAllocated) and e.device == "gpu":
                new.setdefault(e.logical, []).append(e)
        for logical, es in new.items():
            who = [name(e.seq_ids[0]) for e in es]
            if len(es) == 1:
                out.append(f"{who[0]}'s last block was full, so its new token starts logical "
                           f"block {logical} in physical block {es[0].physical}.")
            else:
                out.append(f"The last blocks of {join(who)} were full, so each new token "
                           f"starts logical block {logical} (physical "
                           f"{blocks_list([e.physical for e in es])}).")
        for e in step.of_type(CopyOnWrite):
            out.append(f"{name(e.seq_id)} writes into shared block {e.src}: copy-on-write to "
                       f"block {e.dst} (append_slots, before the model runs).")
    carried: dict[int, list[str]] = {}
    for c in sel.kept:
        if c.seq_id != c.parent_seq_id:
            carried.setdefault(c.parent_seq_id, []).append(name(c.seq_id))
    went_on = [f"{join(kids)} from {name(par)}" for par, kids in carried.items()]
    if sel.itself:
        names = [name(s) for s in sel.itself]
        went_on.append(f"{join(names)} {verb(names, 'continues', 'continue')} "
                       f"{verb(names, 'itself', 'themselves')}")
    if sel.finished:
        went_on.append(f"{'all' if len(sel.finished) == len(sel.kept) else len(sel.finished)}"
                       f" {verb(sel.finished, 'finishes', 'finish')}")
    source = "the prompt sequence" if step.of_type(Admitted) else "the live beams"
    n_cands = len(sel.kept) + sel.pruned
    out.append(f"The sampler takes the best 2k = {n_cands} (beam, token) pairs of {source} by "
               f"cumulative log-probability; the output processor keeps the best {k} "
               f"({'; '.join(went_on)}) and prunes {sel.pruned}.")
    if sel.silent:
        names = [name(s) for s in sel.silent]
        out.append(f"{join(names)} had no candidate among the best 2k, so "
                   f"{verb(names, 'it is', 'they are')} dropped at once, before any fork"
                   + (f"; {blocks_list(sel.silent_blocks)} "
                      f"{verb(sel.silent_blocks, 'goes', 'go')} back to the free list."
                      if sel.silent_blocks else "."))
    for parent, kids in sel.forks.items():
        shared = next(e.shared_blocks for e in step.of_type(Forked)
                      if e.parent_seq_id == parent)
        kid_names = [name(c) for c in kids]
        out.append(f"{join(kid_names)} {verb(kid_names, 'forks', 'fork')} from {name(parent)}, "
                   f"sharing {blocks_list(list(shared))}.")
    if sel.ended:
        names = [name(s) for s in sel.ended]
        if live_beams(step.snapshot):
            out.append(f"{join(names)} {verb(names, 'is', 'are')} not kept and "
                       f"{verb(names, 'is', 'are')} freed after the forks.")
        else:
            out.append(f"{join(names)} {verb(names, 'is', 'are')} freed: no beam goes on.")
        if sel.freed:
            out.append(f"Their last beam gone, {blocks_list(sel.freed)} "
                       f"{verb(sel.freed, 'reaches', 'reach')} ref count 0 and "
                       f"{verb(sel.freed, 'returns', 'return')} to the free list.")
        else:
            out.append(f"Every block {verb(names, 'it', 'they')} held is still used by a "
                       "kept beam.")
    if sel.finished:
        out.append(f"{plural(len(sel.finished), 'kept candidate')} reached max_tokens and "
                   f"{verb(sel.finished, 'finishes', 'finish')}.")
        if not live_beams(step.snapshot):
            best = max(sel.finished, key=lambda c: c.cumulative_logprob)
            out.append(f"With n = 1, vLLM returns the best finished beam, {name(best.seq_id)} "
                       f"(cumulative logprob {best.cumulative_logprob:.2f}).")
    shared = sorted(((len(n.leaves), n.depth, n.block) for n in beam_tree.tree(step.snapshot)[0]
                     if len(n.leaves) > 1), key=lambda t: (-t[0], t[1]))
    if shared:
        out.append("Ref count = live beams below in the tree: "
                   + ", ".join(f"block {b} has {c}" for c, _, b in shared) + ".")
    words = usage.sentence(usage_from_snapshot(step.snapshot), k, usage.BEAMS)
    if words:
        out.append(words)
    out += usage.averaged_sentence(ctx.averaged[step.index])
    return out


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


QUESTIONS = Asker(("beam-survivors", beams.survivors), ("blocks-freed", beams.freed_blocks),
                  ("cow", kv.cow), ("next-block", kv.next_block), ("new-block", kv.new_block))


WIDGETS = (Widget(
    id="beam-search",
    keys=("blk", "tok", "node", "seq", "bar", "cand"),
    goal=('Follow k beams as a tree of shared blocks: which candidates survive, what is forked, '
          'what is freed.'),
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
    scenario=scenario, context=context, view=view, narrate=narrate, label=label,
    details=details, check=check, questions=QUESTIONS, question_kinds=QUESTIONS.kinds,
),)

CHARTS = (Chart(
    id="fig15-beam",
    title="The paper's Figure 15 (b), reproduced: beam search",
    render=lambda: fig15.panel("beam", reproduce_fig15(("beam",))["beam"]),
    caption=fig15.caption("beam"),
),)
