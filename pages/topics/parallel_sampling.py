"""The parallel sampling page: n samples of one prompt share its KV blocks.

The widget runs one request with `SamplingParams(n=...)` through sim's engine (vLLM v0.5.5:
the prompt step forks best_of - 1 children from the prompt sequence, they share the prompt's
blocks, and the first write into the shared partly filled block copies it). Each frame draws
the samples' block tables, the GPU pool with reference counts (shared blocks in one colour,
each sample's own blocks in its colour) and the blocks in use with sharing against n
independent copies of the request.

Chart `fig15-parallel` (build time): sim/studies/sharing.py's reproduction of the paper's Fig. 15
(a) beside the paper's numbers. `fig15_chart` draws both panels; pages/topics/beam_search.py uses
it for (b).
"""
from __future__ import annotations

from pages.views import chart, kv_view, svg
from pages.views.narrate import describe_step
from pages.framework.registry import Chart
from pages.framework.widget import Param, Widget
from sim.studies import sharing
from sim.core.engine import LLMEngine
from sim.studies.workload import RequestSpec
from sim.events import CopyOnWrite, Forked
from sim.studies.sharing import (FIG15_BLOCK_SIZE, FIG15_REQUESTS, FIG15_SEED, PAPER_FIG15,
                         BlockUsage, reproduce_fig15, usage_from_snapshot)

MAX_POOL = 40          # blocks drawn in the pool: keeps the picture readable on a phone
WIDTH = kv_view.WIDTH
X = kv_view.MARGIN


def blocks_per_copy(v: dict) -> int:
    return -(-(v["prompt_len"] + v["output_len"]) // v["block_size"])


def pool_size(v: dict) -> int:
    """Room for n independent copies plus one spare block each: nothing is preempted."""
    return v["n"] * sharing.copy_blocks(v["prompt_len"], v["output_len"], v["block_size"])


def make_engine(v: dict) -> LLMEngine:
    # Every sequence runs to max_tokens (ignore_eos), as in vLLM's throughput benchmark.
    return sharing.sharing_engine("parallel", v["n"],
                                  [RequestSpec("A", v["prompt_len"], v["output_len"])],
                                  v["block_size"], v["seed"])


def sample_colors(snap: dict) -> dict[int, str]:
    """Sample i (in order of seq id) -> palette colour seq-(i+1); seq-0 is close to the
    accent colour that marks shared blocks."""
    ids = sorted(s["seq_id"] for r in snap["requests"] for s in r["seqs"])
    return {sid: svg.seq(i + 1) for i, sid in enumerate(ids)}


def run_trace(v: dict) -> list[tuple[dict, object]]:
    """(snapshot, StepOutput or None) before the first step and after every step."""
    return sharing.trace(make_engine(v))


# ----------------------------------------------------------------------------- drawing
def usage_bars(x: float, y: float, u: BlockUsage, copies: int, scale_max: int,
               averaged: float | None, what: str = "independent copies"
               ) -> tuple[list[str], float]:
    """Two bars: blocks in use with sharing, and what `copies` independent copies (or
    beams: `what`) would hold."""
    label_w, right = 150, WIDTH - X - 26
    unit = (right - (x + label_w)) / max(1, scale_max)
    out = [svg.text(x, y + 12, "Blocks in use", size=10, fill="muted")]
    rows = (("with sharing", u.used, "accent"),
            (f"{copies} {what}" if copies != 1 else "1 copy", u.unshared, "used"))
    yy = y + 18
    for label, value, color in rows:
        out.append(svg.text(x, yy + 11, label, size=10))
        out.append(svg.rect(x + label_w, yy + 1, max(0.0, value * unit), 12, fill=color,
                            tip=f"{label}: {value} blocks"))
        out.append(svg.text(x + label_w + value * unit + 4, yy + 11, str(value), size=10))
        yy += 17
    line = (f"saved now: {u.saved} of {u.unshared} ({100 * u.saving:.0f}%)" if u.unshared
            else "no blocks in use")
    if averaged is not None:
        line += f" · time-averaged so far: {100 * averaged:.0f}%"
    out.append(svg.text(x, yy + 11, line, size=10, fill="muted"))
    return out, yy + 16 - y


def legend(x: float, y: float, items: list[tuple[str, str]]) -> tuple[list[str], float]:
    """Colour chips with labels, wrapped to the picture's width."""
    out = []
    cx, cy = x, y
    for color, label in items:
        w = 14 + 6 * len(label) + 10
        if cx > x and cx + w > WIDTH - X:
            cx, cy = x, cy + 16
        out.append(svg.rect(cx, cy + 2, 10, 10, fill=color, rx=1))
        out.append(svg.text(cx + 14, cy + 11, label, size=10))
        cx += w
    return out, cy - y + 16


def draw(v: dict, snap: dict, events: list, heading: str, scale_max: int,
         averaged: float | None) -> tuple[list[str], float]:
    h = kv_view.highlights(events)
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
    items = [("accent", "shared (ref > 1)")] + [(colors[sid], f"{labels[sid]} only")
                                                for sid in live]
    if live:
        chips, dy = legend(X, y, items)
        parts += chips
        y += dy + 4
    bars, dy = usage_bars(X, y, usage_from_snapshot(snap), v["n"], scale_max, averaged)
    parts += bars
    return parts, y + dy + 4


# ---------------------------------------------------------------------------- narration
def sharing_sentences(v: dict, snap: dict, events: list,
                      labels: dict[int, str]) -> list[str]:
    """What the step means for sharing: the shared partial block, the copies, the
    write in place that ends them."""
    bs = v["block_size"]
    out = []
    forks = [e for e in events if isinstance(e, Forked)]
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
    cows = [e for e in events if isinstance(e, CopyOnWrite)]
    if cows:
        src = cows[-1].src
        in_place = [s["seq_id"] for r in snap["requests"] for s in r["seqs"]
                    if any(num == src and i == cows[-1].logical
                           for i, (_, num, _) in enumerate(s["block_table"]))]
        if in_place:
            out.append(f"{labels[in_place[0]]} then finds block {src} with ref count 1 and "
                       f"writes in place: {len(cows)} cop{'y' if len(cows) == 1 else 'ies'} "
                       f"in all, best_of - 1.")
    return out


def usage_sentence(u: BlockUsage, n: int) -> str:
    if not u.unshared:
        return ""
    return (f" Blocks in use: {u.used}; {n} independent copies would hold {u.unshared}, so "
            f"sharing saves {u.saved} ({100 * u.saving:.0f}%).")


def build(v: dict) -> list[dict]:
    trace = run_trace(v)
    scale_max = max(max(usage_from_snapshot(s).unshared for s, _ in trace), 1)
    snap0 = trace[0][0]
    n, bs = v["n"], v["block_size"]
    partial = v["prompt_len"] % bs
    tail = (f"its last block holds {partial} of {bs} tokens" if partial else
            "it fills its last block exactly")
    drawn = [(draw(v, snap0, [], "Before the first iteration", scale_max, None),
              f"Request A asks for n = {n} samples of a {v['prompt_len']}-token prompt; with "
              f"blocks of {bs} slots, {tail}. The GPU pool has {pool_size(v)} blocks: room for "
              f"{n} independent copies of the request, plus one spare block per sample.")]
    labels: dict[int, str] = {}
    request_of: dict[int, str] = {}
    used_sum = unshared_sum = 0
    for snap, out in trace[1:]:
        labels.update(kv_view.seq_labels(snap))
        for r in snap["requests"]:
            for s in r["seqs"]:
                request_of[s["seq_id"]] = r["request_id"]
        u = usage_from_snapshot(snap)
        used_sum += u.used
        unshared_sum += u.unshared
        averaged = (unshared_sum - used_sum) / unshared_sum if unshared_sum else None
        kind = "prefill" if out.scheduler_outputs.num_prefill_groups else "decode"
        text = " ".join([describe_step(_as_step(out), labels, request_of)]
                        + sharing_sentences(v, snap, out.events, labels))
        text += usage_sentence(u, n)
        drawn.append((draw(v, snap, out.events, f"After iteration {out.step} ({kind})",
                           scale_max, averaged), text))
    height = max(h for (_, h), _ in drawn)
    return [{"svg": svg.document(WIDTH, height, parts,
                                 label="Parallel sampling: shared blocks, copy-on-write and "
                                       "blocks in use"),
             "narration": text} for (parts, _), text in drawn]


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
    build=build,
    check=check,
),)


# ------------------------------------------------------------ Fig. 15 reproduction
def fig15_chart(mode: str, results=None) -> str:
    """The paper's Fig. 15 panel for `mode` ("parallel" or "beam"): our time-averaged and
    peak savings beside the paper's, with the numbers and the gap written out."""
    results = results if results is not None else reproduce_fig15((mode,))[mode]
    paper = PAPER_FIG15[mode]
    widths = sorted(results)
    symbol = "n" if mode == "parallel" else "k"
    what = "parallel sampling, n samples" if mode == "parallel" else "beam search, width k"
    panel = "(a)" if mode == "parallel" else "(b)"
    avg = [(w, 100 * results[w].time_averaged) for w in widths]
    peak = [(w, 100 * results[w].at_peak) for w in widths]
    theirs = [(w, 100 * paper[w]) for w in widths]
    series = [
        chart.Series("sim, time-averaged", avg, color="seq-0", kind="both",
                     tips=[f"{symbol} = {w}: {y:.1f}% (sim, time-averaged)" for w, y in avg]),
        chart.Series("sim, at peak", peak, color="seq-2", kind="both", dashed=True,
                     tips=[f"{symbol} = {w}: {y:.1f}% (sim, at peak)" for w, y in peak]),
        chart.Series("paper, Fig. 15", theirs, color="seq-1", kind="points", marker="square",
                     tips=[f"{symbol} = {w}: {y:.2f}% (paper)" for w, y in theirs]),
    ]
    top = max(y for s in series for _, y in s.points)
    ceiling = 10 * (int(top // 10) + 1)
    width, plot_h = 400, 250
    body = chart.plot(0, 0, width, plot_h, series,
                      x=chart.Axis(symbol, lo=1, hi=7, fmt=lambda t: str(int(t))),
                      y=chart.Axis("memory saving (%)", lo=0, hi=ceiling,
                                   fmt=lambda t: f"{t:.0f}"),
                      title=f"Fig. 15 {panel}: {what}")
    # The numbers, in columns (SVG collapses runs of spaces, so one text per cell).
    columns = ((symbol, 24), ("sim, avg", 120), ("sim, peak", 206), ("paper", 282),
               ("gap (avg)", 380))
    y = plot_h + 6
    for head, cx in columns:
        body.append(svg.text(cx, y + 10, head, size=10, fill="muted", anchor="end"))
    for w, (_, a), (_, p), (_, t) in zip(widths, avg, peak, theirs):
        y += 15
        cells = (str(w), f"{a:.1f}%", f"{p:.1f}%", f"{t:.2f}%", f"{a - t:+.1f} points")
        for text, (_, cx) in zip(cells, columns):
            body.append(svg.text(cx, y + 10, text, size=10, anchor="end"))
    return svg.document(width, y + 18, body,
                        label=f"Memory saving from sharing KV blocks, {what}: simulation "
                              "beside the paper's Fig. 15")


def _caption(mode: str) -> str:
    return (f"{FIG15_REQUESTS[mode]} Alpaca-like requests (sim.workload: log-normal lengths, "
            f"means 19.31 tokens in and 58.45 out, seed {FIG15_SEED}), all at step 0, "
            f"blocks of {FIG15_BLOCK_SIZE}, every sequence generating its request's output "
            "length (ignore_eos, as vLLM's throughput benchmark does), a pool large enough "
            "that nothing is preempted. Saving = blocks saved by sharing / blocks without "
            "sharing, summed over every engine step (time-averaged) or at the peak of each. "
            "Paper: OPT-13B serving the Alpaca trace.")


FIG15_PARALLEL = Chart(
    id="fig15-parallel",
    title="The paper's Figure 15 (a), reproduced: parallel sampling",
    render=lambda: fig15_chart("parallel"),
    caption=_caption("parallel"),
)

CHARTS = (FIG15_PARALLEL,)


def _as_step(out):
    # Transitional: a StepOutput read as a trace Step, until this topic records a Trace.
    from types import SimpleNamespace
    return SimpleNamespace(step=out.step, events=out.events, scheduled=out.scheduled())
