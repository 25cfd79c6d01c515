"""The parallel sampling page: n samples of one prompt share its KV blocks.

scenario: one request with `SamplingParams(n=...)` through vLLM v0.5.5's engine (sim.core),
          in a pool with room for n independent copies (sim/studies/sharing.py), so nothing
          is preempted. The prompt step forks best_of - 1 children from the prompt
          sequence; they share the prompt's blocks, and the first write into the shared
          partly filled block copies it.
view:     the samples' block tables, the GPU pool with reference counts (shared blocks in
          one colour, each sample's own blocks in its colour), and the blocks in use with
          sharing against n independent copies (pages.views.usage).
narrate:  the step's events in words, what they mean for sharing, and the saving.

Chart `fig15-parallel` (build time): the paper's Fig. 15 (a) beside sim's reproduction
(pages.views.fig15).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pages.framework.registry import Chart
from pages.framework.widget import Context, Param, Widget
from pages.views import fig15, kv_view, legend, svg, usage
from pages.views.narrate import describe_step
from pages.views.text import plural
from sim.events import CopyOnWrite, Forked
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
    scale_max: int = 1                               # the longest usage bar of the trace
    averaged: list = field(default_factory=list)     # per step: time-averaged saving so far


def context(v: dict, trace: Trace) -> SamplingContext:
    labels, request_of = kv_view.names(trace)
    scale_max = max(max(usage_from_snapshot(s.snapshot).unshared for s in trace), 1)
    return SamplingContext(v, trace, labels, request_of, scale_max,
                           sharing.saving_so_far(trace))


def sample_colors(snap: dict) -> dict[int, str]:
    """Sample i (in order of seq id) -> palette colour seq-(i+1); seq-0 is close to the
    accent colour that marks shared blocks."""
    ids = sorted(s["seq_id"] for r in snap["requests"] for s in r["seqs"])
    return {sid: svg.seq(i + 1) for i, sid in enumerate(ids)}


def view(step: Step, ctx: SamplingContext) -> svg.Figure:
    v, snap = ctx.values, step.snapshot
    heading = ("Before the first iteration" if step.step is None
               else f"After iteration {step.step} ({step.kind})")
    h = kv_view.highlights(step.events)
    colors = sample_colors(snap)
    labels = kv_view.seq_labels(snap)
    parts = [svg.text(X, 16, heading, size=13),
             svg.text(X, 32, f"Request A: prompt of {v['prompt_len']} tokens, n = {v['n']} "
                      f"samples, max_tokens {v['output_len']}", size=10, fill="muted")]
    y = 38
    tables, dy = kv_view.block_tables(X, y, snap, h, seq_colors=colors)
    parts += tables
    y += dy + 4
    pool, dy = kv_view.pool(X, y, snap, "gpu", h, seq_colors=colors)
    parts += pool
    y += dy
    live = [s["seq_id"] for r in snap["requests"] for s in r["seqs"] if s["block_table"]]
    if live:
        chips, dy = legend.chips(X, y, [("accent", "shared (ref > 1)")]
                                 + [(colors[sid], f"{labels[sid]} only") for sid in live])
        parts += chips
        y += dy + 4
    bars, dy = usage.bars(X, y, usage_from_snapshot(snap), v["n"], ctx.scale_max,
                          ctx.averaged[step.index])
    parts += bars
    return svg.Figure(kv_view.WIDTH, y + dy + 4, parts,
                      "Parallel sampling: shared blocks, copy-on-write and blocks in use")


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
        # The sample still holding the source block at the same logical index is the last
        # writer: its ref count had dropped to 1, so it wrote in place.
        src = cows[-1].src
        in_place = [s["seq_id"] for r in step.snapshot["requests"] for s in r["seqs"]
                    if any(num == src and i == cows[-1].logical
                           for i, (_, num, _) in enumerate(s["block_table"]))]
        if in_place:
            out.append(f"{ctx.labels[in_place[0]]} then finds block {src} with ref count 1 "
                       f"and writes in place: {plural(len(cows), 'copy', 'copies')} in all, "
                       "best_of - 1.")
    return out


def narrate(step: Step, ctx: SamplingContext) -> str:
    v = ctx.values
    n, bs = v["n"], v["block_size"]
    if step.step is None:
        partial = v["prompt_len"] % bs
        tail = (f"its last block holds {partial} of {bs} tokens" if partial else
                "it fills its last block exactly")
        return (f"Request A asks for n = {n} samples of a {v['prompt_len']}-token prompt; "
                f"with blocks of {bs} slots, {tail}. The GPU pool has "
                f"{step.snapshot['gpu']['num_blocks']} blocks: room for {n} independent "
                "copies of the request, plus one spare block per sample.")
    words = usage.sentence(usage_from_snapshot(step.snapshot), n)
    return " ".join([describe_step(step, ctx.labels, ctx.request_of)]
                    + sharing_sentences(step, ctx) + ([words] if words else []))


def check(v: dict) -> dict[str, str]:
    size = pool_size(v)
    if size > MAX_POOL:
        return {"n": f"n x (blocks per sample + 1) must be at most {MAX_POOL} so the picture "
                     f"stays readable; here {v['n']} x {blocks_per_copy(v) + 1} = {size}. "
                     "Lower n or the lengths, or raise the block size"}
    return {}


WIDGETS = (Widget(
    id="parallel-sampling",
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
    scenario=scenario, context=context, view=view, narrate=narrate, check=check,
),)

CHARTS = (Chart(
    id="fig15-parallel",
    title="The paper's Figure 15 (a), reproduced: parallel sampling",
    render=lambda: fig15.panel("parallel", reproduce_fig15(("parallel",))["parallel"]),
    caption=fig15.caption("parallel"),
),)
