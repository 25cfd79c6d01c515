"""The parallel sampling page: n samples of one prompt share its KV blocks.

scenario: one request with `SamplingParams(n=...)` through vLLM v0.5.5's engine (sim.core),
          in a pool with room for n independent copies (sim/studies/sharing.py), so nothing
          is preempted. The prompt step forks best_of - 1 children from the prompt
          sequence; they share the prompt's blocks, and the first write into the shared
          partly filled block copies it.
view:     the samples' block tables, the GPU pool with reference counts (shared blocks in
          one colour, each sample's own blocks in its colour), a legend of every mark, and
          the blocks in use with sharing against n independent copies (pages.views.usage).
          Before the first iteration, the prompt laid out in blocks (pages.views.prompt_plan).
narrate:  three sentences, cause, effect, consequence: the fork, the copies, a sample's new
          block, the finish; `details` gives every event and the saving.

Chart `fig15-parallel` (build time): the paper's Fig. 15 (a) beside sim's reproduction
(pages.views.fig15).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pages.framework.registry import Chart
from pages.framework.widget import Context, Param, Widget
from pages.questions import Asker, kv
from pages.views import fig15, kv_view, legend, prompt_plan, svg, usage
from pages.views.narrate import blocks_list, step_sentences
from pages.views.text import a, join, plural, verb
from sim.events import Admitted, BlockAllocated, BlockFreed, CopyOnWrite, Forked, RequestFinished
from sim.studies import sharing
from sim.studies.sharing import reproduce_fig15, usage_from_snapshot
from sim.studies.workload import RequestSpec
from sim.trace import Step, Trace, record

MAX_POOL = 40          # blocks drawn in the pool: keeps the picture readable on a phone
X = kv_view.MARGIN


def blocks_per_copy(v: dict) -> int:
    return -(-(v["prompt_len"] + v["output_len"]) // v["block_size"])


def pool_size(v: dict) -> int:
    """Room for n independent copies plus one spare block each: nothing is preempted."""
    return v["n"] * sharing.copy_blocks(v["prompt_len"], v["output_len"], v["block_size"])


def scenario(v: dict) -> Trace:
    # Every sequence runs to max_tokens (ignore_eos), as in vLLM's throughput benchmark.
    return record(sharing.sharing_engine("parallel", v["n"],
                                         [RequestSpec("A", v["prompt_len"], v["output_len"])],
                                         v["block_size"], v["seed"]))


@dataclass(frozen=True)
class SamplingContext(Context):
    labels: dict = field(default_factory=dict)       # seq_id -> "A.0", "A.1", ...
    request_of: dict = field(default_factory=dict)   # seq_id -> request id
    colors: dict = field(default_factory=dict)       # seq_id -> palette colour
    scale_max: int = 1                               # the longest usage bar of the trace
    averaged: list = field(default_factory=list)     # per step: time-averaged saving so far
    legend: list = field(default_factory=list)       # kv_view legend keys of the trace


def context(v: dict, trace: Trace) -> SamplingContext:
    labels, request_of = kv_view.names(trace)
    scale_max = max(max(usage_from_snapshot(s.snapshot).unshared for s in trace), 1)
    keys = set(kv_view.legend_keys(trace))
    if v["n"] > 1:
        keys.add("shared")
    return SamplingContext(v, trace, labels, request_of,
                           {sid: svg.seq(i + 1) for i, sid in enumerate(sorted(labels))},
                           scale_max, sharing.saving_so_far(trace),
                           [k for k in kv_view.LEGEND if k in keys])


def sample_colors(snap: dict) -> dict[int, str]:
    """Sample i (in order of seq id) -> palette colour seq-(i+1); seq-0 is close to the
    accent colour that marks shared blocks."""
    ids = sorted(s["seq_id"] for r in snap["requests"] for s in r["seqs"])
    return {sid: svg.seq(i + 1) for i, sid in enumerate(ids)}


def label(step: Step, ctx: SamplingContext | None = None) -> str:
    """The step's name in the counter, the heading and the narration."""
    return "start" if step.step is None else f"iteration {step.step}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def view(step: Step, ctx: SamplingContext) -> svg.Figure:
    v, snap = ctx.values, step.snapshot
    name = label(step)
    kind = "before the first iteration" if step.step is None else step.kind
    parts, y = usage.request_heading(X, f"{_cap(name)} ({kind})",
                                     f"n = {v['n']}", v)
    h = kv_view.highlights(step.events)
    if step.step is None:
        elements, dy = prompt_plan.plan(X, y, v["prompt_len"], v["block_size"],
                                        note=plan_note(v))
    else:
        elements, dy = kv_view.block_tables(X, y, snap, h, seq_colors=ctx.colors)
    parts += elements
    y += dy + 6
    elements, dy = kv_view.pool(X, y, snap, "gpu", h, seq_colors=ctx.colors)
    parts += elements
    y += dy + 4
    elements, dy = kv_view.legend(X, y, ctx.legend)
    parts += elements
    y += dy
    elements, dy = legend.chips(X, y, [(ctx.colors[sid], ctx.labels[sid])
                                       for sid in sorted(ctx.labels)],
                                title="One sample's blocks:")
    parts += elements
    y += dy + 6
    elements, dy = usage.bars(X, y, usage_from_snapshot(snap), v["n"], ctx.scale_max,
                              ctx.averaged[step.index])
    parts += elements
    y += dy
    return svg.Figure(kv_view.WIDTH, y + 4, parts,
                      f"Parallel sampling, {name}: block tables, the GPU pool with shared "
                      "blocks and copies, and blocks in use")


def plan_note(v: dict) -> str:
    """Under the prompt's blocks at the start: where the samples' first tokens go."""
    bs, p, n = v["block_size"], v["prompt_len"], v["n"]
    filled = p % bs
    if n == 1:
        return ("With n = 1 there is one sequence and nothing to share."
                if not filled else
                f"Its last block has {plural(bs - filled, 'free slot')}: the one sample's "
                "tokens go there, with nothing to share.")
    if filled:
        return (f"The last block has {plural(bs - filled, 'free slot')}: "
                f"{all_of(n, 'sample')}' first tokens belong there, so it will be copied.")
    return (f"The prompt fills its {plural(p // bs, 'block')} exactly: each sample's first "
            "token starts a block of its own, so nothing will be copied.")


# -- words -----------------------------------------------------------------------------------

def sharing_sentences(step: Step, ctx: SamplingContext) -> list[str]:
    """What the step means for sharing: the shared partial block, the copies, the
    write in place that ends them."""
    v = ctx.values
    bs = v["block_size"]
    out = []
    forks = step.of_type(Forked)
    if forks:
        filled = v["prompt_len"] % bs
        last = forks[0].shared_blocks[-1]
        if filled:
            out.append(f"The prompt's last block, block {last}, holds {filled} of {bs} tokens "
                       f"and is shared by {len(forks) + 1} samples (ref count "
                       f"{len(forks) + 1}): each sample's next token goes into it, so every "
                       f"writer but the last will copy it first.")
        else:
            out.append(f"The prompt fills its last block exactly ({v['prompt_len']} tokens = "
                       f"{v['prompt_len'] // bs} x {bs}): every sample's next token starts a "
                       "new block of its own, so nothing will ever be copied.")
    cows = step.of_type(CopyOnWrite)
    if cows:
        in_place = in_place_writer(step)
        if in_place is not None:
            out.append(f"{ctx.labels[in_place]} then finds block {cows[-1].src} with ref "
                       f"count 1 and writes in place: {plural(len(cows), 'copy', 'copies')} "
                       "in all, best_of - 1.")
    return out


def in_place_writer(step: Step) -> int | None:
    """The sample that wrote into the shared block in place after the others copied it: the
    one still holding the copies' source at the same logical index."""
    cows = step.of_type(CopyOnWrite)
    if not cows:
        return None
    src, logical = cows[-1].src, cows[-1].logical
    return next((s["seq_id"] for r in step.snapshot["requests"] for s in r["seqs"]
                 if len(s["block_table"]) > logical and s["block_table"][logical][1] == src),
                None)


def blocks_words(nums: list[int]) -> str:
    """"blocks 14 and 13"; a long run as "8 blocks, 38 to 31"."""
    if len(nums) > 4:
        return f"{len(nums)} blocks, {nums[0]} to {nums[-1]}"
    return blocks_list(nums)


def all_of(count: int, word: str, many: str | None = None) -> str:
    """"both blocks", "all 7 blocks"."""
    return f"both {many or word + 's'}" if count == 2 else f"all {plural(count, word, many)}"


def full_words(bs: int) -> str:
    return "full" if bs == 1 else f"full ({bs} of {bs} slots)"


def _names(ctx: SamplingContext, ids) -> list[str]:
    return [ctx.labels.get(sid, str(sid)) for sid in ids]


def story(step: Step, ctx: SamplingContext) -> list[str]:
    """Three short sentences: the cause, the effect, the consequence."""
    v = ctx.values
    n, bs, p, m = v["n"], v["block_size"], v["prompt_len"], v["output_len"]
    u = usage_from_snapshot(step.snapshot)
    saves = usage.saving_words(u)
    freed = [e.physical for e in step.of_type(BlockFreed) if e.device == "gpu"]
    finished = step.of_type(RequestFinished)
    seqs = sorted(ctx.labels)
    done = (f"with max_tokens {m} reached, A finishes and "
            + ("its block returns" if len(freed) == 1 else f"{all_of(len(freed), 'block')} return")
            + " to the free list")
    if step.of_type(Admitted):
        blocks = [e.physical for e in step.of_type(BlockAllocated) if e.device == "gpu"]
        forks = step.of_type(Forked)
        first = _names(ctx, [seqs[0]])[0]
        cause = (f"A's {p}-token prompt runs once, as one sequence, {first}, into "
                 f"{blocks_words(blocks)}." if n > 1 else
                 f"A's {p}-token prompt runs as one sequence into {blocks_words(blocks)}.")
        if forks:
            kids = _names(ctx, [f.child_seq_id for f in forks])
            effect = (f"The sampler draws n = {n} first tokens, so {join(kids)} "
                      f"{verb(kids, 'forks', 'fork')} from {first}: the tables point at the "
                      f"same blocks, now at ref count {n}.")
        elif n > 1:
            effect = (f"The sampler draws n = {n} first tokens, and with max_tokens {m} every "
                      "sample is finished at once, so none is forked.")
        else:
            effect = "With n = 1 the sampler draws one token and nothing is forked."
        last, filled = blocks[-1] if blocks else None, p % bs
        if finished:
            return [cause, effect, _cap(done) + "."]
        if n == 1:
            tail = (f"Its next token goes into the free slot of block {last}."
                    if filled else "Its next token starts a new block.")
        elif filled:
            tail = (f"Block {last} holds {filled} of {bs} tokens and every sample's next "
                    "token belongs in it, so the next iteration copies it for all but one.")
        else:
            tail = (f"The prompt fills block {last} exactly, so each sample's next token starts "
                    "a block of its own: nothing will be copied.")
        return [cause, effect, tail]
    cows = step.of_type(CopyOnWrite)
    if cows:
        src = cows[0].src
        writers = _names(ctx, [c.seq_id for c in cows])
        last = next((sid for sid in seqs if sid not in {c.seq_id for c in cows}), None)
        sharers = "both" if n == 2 else f"all {n}"
        cause = f"Every sample's next token belongs in block {src}, which {sharers} share."
        copies = blocks_list([c.dst for c in cows])
        effect = (f"{join(writers)} {verb(writers, 'writes', 'write')} first, so "
                  f"{'it gets a copy' if len(cows) == 1 else 'each gets a copy'} "
                  f"({copies}: copy-on-write)")
        if last is not None:
            effect += (f"; {ctx.labels[last]}, the last, finds ref count 1 and writes in "
                       "place")
        n_copies = plural(len(cows), "copy", "copies")
        if finished:
            return [cause, effect + ".", f"That is {n_copies}, best_of - 1; {done}."]
        now = f"sharing now {saves}" if u.saved else "nothing is shared any more"
        return [cause, effect + ".", f"That is {n_copies}, best_of - 1, once per request; {now}."]
    if finished:
        who = _names(ctx, seqs)
        cause = (f"A has generated its {plural(m, 'token')} (max_tokens), so it finishes."
                 if n == 1 else
                 f"{join(who)} have generated their {plural(m, 'token')} (max_tokens), so A "
                 "finishes.")
        prev = ctx.trace.previous(step)
        was_shared = prev is not None and any(b["ref_count"] > 1
                                              for b in prev.snapshot["gpu"]["blocks"])
        effect = (f"Every block's ref count drops to 0, so {all_of(len(freed), 'block')}"
                  f"{', shared ones too,' if was_shared else ''} return to the free list."
                  if len(freed) != 1 else
                  "Its one block's ref count drops to 0 and it returns to the free list.")
        avg = ctx.averaged[step.index]
        if n == 1 or avg is None:
            return [cause, effect, "With n = 1 nothing was shared: the request held exactly "
                                   "the blocks one independent copy holds."]
        return [cause, effect,
                f"Over the {plural(step.step + 1, 'iteration')}, sharing saved "
                f"{100 * avg:.0f}% of the blocks {usage.copies_words(n)} would have held."]
    new = [e for e in step.of_type(BlockAllocated) if e.device == "gpu"]
    shared = [num for num, b in enumerate(step.snapshot["gpu"]["blocks"])
              if b["ref_count"] > 1]
    if new:
        who = _names(ctx, [e.seq_ids[0] for e in new])
        logical = new[0].logical
        if len(new) == 1:
            cause = f"{who[0]}'s last block is {full_words(bs)}."
            effect = (f"Its next token starts logical block {logical} in block "
                      f"{new[0].physical}.")
        else:
            cause = f"The last blocks of {join(who)} are {full_words(bs)}."
            effect = (f"Each next token starts logical block {logical} in a block of its own "
                      f"({blocks_words([e.physical for e in new])}).")
    else:
        if n == 1:
            cause = "A's last block has a free slot."
            effect = "It writes its next token there: no block is taken."
        else:
            cause = "Each sample's last block has a free slot."
            effect = "Each writes its next token there: no block is taken, none is copied."
    if n == 1:
        return [cause, effect,
                f"With n = 1 nothing is shared: {plural(u.used, 'block')} in use."]
    if not shared:
        return [cause, effect, "No block is shared any more: every sample's blocks are its "
                               "own, so sharing saves nothing now."]
    avg = ctx.averaged[step.index]
    which = (_cap(blocks_list(shared)) if len(shared) <= 3 else
             f"The prompt's {len(shared)} full blocks")
    tail = f"{which} {verb(shared, 'is', 'are')} still shared: sharing {saves} now"
    if avg is not None and not new:
        tail += f", {100 * avg:.0f}% averaged so far, falling as the samples grow"
    return [cause, effect, tail + "."]


def narrate(step: Step, ctx: SamplingContext) -> str:
    v = ctx.values
    n, bs, p = v["n"], v["block_size"], v["prompt_len"]
    if step.step is None:
        filled = p % bs
        if filled and p > bs:
            shape = (f"in blocks of {bs} it fills {plural(p // bs, 'block')} and "
                     f"{plural(filled, 'slot')} of one more")
        elif filled:
            shape = f"in blocks of {bs} it fills {plural(filled, 'slot')} of one block"
        else:
            shape = f"in blocks of {bs} it fills {plural(p // bs, 'block')} exactly"
        what = ("one sample" if n == 1 else f"n = {n} samples")
        return " ".join([
            f"Start: request A asks for {what} of {a(str(p) + '-token prompt')}; {shape}.",
            ("vLLM will compute the prompt once and let the samples share its blocks, "
             "counting references." if n > 1 else
             "With n = 1 there is nothing to share: one sequence, as in any request."),
            f"The pool's {step.snapshot['gpu']['num_blocks']} blocks have room for "
            f"{usage.copies_words(n)}, so what sharing saves stays free."])
    return f"{_cap(label(step))}: " + " ".join(story(step, ctx))


def details(step: Step, ctx: SamplingContext) -> list[str]:
    v = ctx.values
    n, bs, p, m = v["n"], v["block_size"], v["prompt_len"], v["output_len"]
    if step.step is None:
        per = sharing.copy_blocks(p, m, bs)
        return [
            f"Request A: {a(str(p) + '-token prompt')}, n = best_of = {n}, max_tokens {m}; "
            "every sample runs to max_tokens (ignore_eos, as in vLLM's benchmark).",
            f"Blocks of {plural(bs, 'slot')}. {plan_note(v)}",
            f"GPU pool: {step.snapshot['gpu']['num_blocks']} blocks = {n} x {per} (the "
            f"{plural(per - 1, 'block')} one sample needs, plus the spare block "
            "can_append_slots wants per running sequence): nothing is preempted.",
            "The seed changes the sampled token ids only, never the blocks."]
    out = step_sentences(step, ctx.labels, ctx.request_of) + sharing_sentences(step, ctx)
    u = usage_from_snapshot(step.snapshot)
    words = usage.sentence(u, n)
    if words:
        out.append(words)
    out += usage.averaged_sentence(ctx.averaged[step.index])
    return out


def check(v: dict) -> dict[str, str]:
    size = pool_size(v)
    if size > MAX_POOL:
        return {"n": f"n x (blocks per sample + 1) must be at most {MAX_POOL} so the picture "
                     f"stays readable; here {v['n']} x {blocks_per_copy(v) + 1} = {size}. "
                     "Lower n or the lengths, or raise the block size"}
    return {}


QUESTIONS = Asker(("cow", kv.cow), ("blocks-freed", kv.finished_frees),
                  ("next-block", kv.next_block), ("new-block", kv.new_block))


WIDGETS = (Widget(
    id="parallel-sampling",
    keys=("plan", "blk", "ent", "tok", "bar", "seq"),
    goal=("Show how n samples share the prompt's blocks and why exactly best_of - 1 copies are "
          'made.'),
    title="Parallel sampling: n samples share one prompt's blocks",
    summary="One request, n samples. Shared blocks are drawn in one colour with their "
            "reference count; each sample's own blocks in its colour. The pool has room for "
            "n independent copies: what sharing saves stays free.",
    params=(
        Param("prompt_len", "prompt length", "int", 7, min=1, max=32,
              help="Prompt tokens (1 to 32). Try a multiple of the block size."),
        Param("n", "n (samples)", "int", 3, min=1, max=6,
              help="Samples of the one prompt (SamplingParams n = best_of, 1 to 6)."),
        Param("output_len", "output length", "int", 6, min=1, max=16,
              help="Tokens each sample generates (max_tokens, 1 to 16)."),
        Param("block_size", "block size", "int", 4, min=1, max=16,
              help="Token slots per block (vLLM's default is 16; 4 keeps the picture small)."),
        Param("seed", "seed", "int", 0, min=0, max=9999,
              help="Seeds the stand-in model's token ids (hover a slot); the blocks do not "
                   "depend on it."),
    ),
    scenario=scenario, context=context, view=view, narrate=narrate, label=label,
    details=details, check=check, questions=QUESTIONS, question_kinds=QUESTIONS.kinds,
),)

CHARTS = (Chart(
    id="fig15-parallel",
    title="The paper's Figure 15 (a), reproduced: parallel sampling",
    render=lambda: fig15.panel("parallel", reproduce_fig15(("parallel",))["parallel"]),
    caption=fig15.caption("parallel"),
),)
