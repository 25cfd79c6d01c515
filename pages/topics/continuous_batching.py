"""The continuous-batching page: static batching and vLLM's scheduler on the same workload.

scenario: both schedulers run the same requests (sim/studies/batching_metrics.py turns each
          run into a slot timeline and its totals); the trace pairs their iterations, one
          step per iteration, after a step 0 before the first.
view:     one timeline per scheduler, drawn up to the step: rows are batch slots, columns
          are iterations, each cell says what the slot's request did (prefill, decode,
          paused by a prefill-only step, or idle padding).
narrate:  what each scheduler did in the step's iteration, and the first moment vLLM refills
          a slot while the static batch keeps one idle.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import zip_longest

from pages.framework.widget import Context, Param, Widget
from pages.views import svg
from pages.views.text import join, plural, verb
from sim.studies.batching_metrics import (DECODE, PADDING, PAUSED, PREFILL, Iteration, Run,
                                          compare, uniform_workload)
from sim.trace import Trace

WIDTH = 400
LEFT = 50           # room for the row labels
RIGHT = 8
ROW = 17
MAX_ITERATIONS = 40
MAX_LEN = 32

STATIC_HEAD = "Static batching: the batch runs to its end"
LABEL = "Batch slots per iteration: static batching above, vLLM below"

_RANGE = re.compile(r"^([0-9]{1,4})\s*(?:-\s*([0-9]{1,4}))?$")


def parse_range(text: str) -> tuple[int, int]:
    """"3-10" -> (3, 10); "5" -> (5, 5)."""
    m = _RANGE.match(text.strip())
    if not m:
        raise ValueError(f"a range of token counts such as 3-10, each from 1 to {MAX_LEN}")
    lo, hi = int(m[1]), int(m[2] or m[1])
    if not 1 <= lo <= hi <= MAX_LEN:
        raise ValueError(f"a range low-high with 1 <= low <= high <= {MAX_LEN}, e.g. 3-10")
    return lo, hi


def format_range(r: tuple[int, int]) -> str:
    return f"{r[0]}-{r[1]}" if r[0] != r[1] else str(r[0])


def workload(v: dict):
    return uniform_workload(v["count"], v["prompt_lens"], v["output_lens"], v["arrival_rate"],
                            v["seed"])


def runs(v: dict) -> tuple[Run, Run]:
    return compare(workload(v), v["max_num_seqs"], v["max_num_batched_tokens"],
                   v["chunked_prefill"], v["seed"], max_steps=MAX_ITERATIONS + 1)


# -- scenario ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Column:
    """One step of the trace: `index` iterations are drawn. `static` and `vllm` are each
    run's iteration `index - 1` (None in step 0, and once that run has drained)."""
    index: int
    static: Iteration | None
    vllm: Iteration | None


def scenario(v: dict) -> Trace:
    static, vllm = runs(v)
    pairs = zip_longest(static.iterations, vllm.iterations)
    steps = [Column(0, None, None)] + [Column(i + 1, s, m) for i, (s, m) in enumerate(pairs)]
    # The views draw each run's history and totals up to the step: the runs travel along.
    return Trace(tuple(steps), meta={"static": static, "vllm": vllm,
                                     "requests": tuple(workload(v))})


def first_contrast(static: Run, vllm: Run):
    """The first iteration in which vLLM refills a slot a finished request left while the
    static batch holds a finished request's slot idle: (step, seating) or None."""
    for step, seating in vllm.refills():
        if step < len(static.iterations) and any(
                c is not None and c.kind == PADDING for c in static.iterations[step].slots):
            return step, seating
    return None


@dataclass(frozen=True)
class BatchingContext(Context):
    static: Run
    vllm: Run
    requests: tuple
    columns: int                 # iterations of the longer run: the grid's width
    contrast: tuple | None       # first_contrast(static, vllm)
    static_marks: dict           # {"idle": (step, [slots])}: the static slots to outline
    vllm_marks: dict             # {"refill": (step, slot)}: the refill to highlight


def context(v: dict, trace: Trace) -> BatchingContext:
    static, vllm = trace.meta["static"], trace.meta["vllm"]
    contrast = first_contrast(static, vllm)
    static_marks, vllm_marks = {}, {}
    if contrast:
        step, seating = contrast
        vllm_marks["refill"] = (step, seating.slot)
        static_marks["idle"] = (step, [s for s, c in enumerate(static.iterations[step].slots)
                                       if c is not None and c.kind == PADDING])
    return BatchingContext(v, trace, static, vllm, trace.meta["requests"], len(trace) - 1,
                           contrast, static_marks, vllm_marks)


# -- drawing ---------------------------------------------------------------------------

def _color(rid: str) -> str:
    return svg.seq(ord(rid[0]) - ord("A"))


def _cell(x: float, y: float, w: float, cell, step: int, rid_text: bool) -> list[str]:
    rid, kind = cell.request_id, cell.kind
    h = ROW - 3
    color = _color(rid)
    if kind == PREFILL:
        what = f"prefill of {plural(cell.tokens, 'prompt token')}"
        box = svg.rect(x, y, w, h, fill=color, rx=1.5)
        ink = "bg"
    elif kind == DECODE:
        what = "decode: one new token"
        box = svg.rect(x, y, w, h, fill=color, rx=1.5, fill_opacity="0.45")
        ink = "fg"
    elif kind == PAUSED:
        what = "in the batch but not run: this iteration is prefill-only"
        box = svg.rect(x + 0.75, y + 0.75, w - 1.5, h - 1.5, fill="bg", stroke=color, rx=1.5,
                       stroke_width=1.5, stroke_dasharray="2 1.5")
        ink = "muted"
    else:
        what = "finished; its slot idles (padding) until the whole batch is done"
        box = svg.rect(x, y, w, h, fill="waste", rx=1.5, fill_opacity="0.35")
        ink = "muted"
    parts = [box]
    if rid_text:
        label = rid if kind != PREFILL else rid + ("" if w < 16 else "P")
        parts.append(svg.text(x + w / 2, y + h - 3.5, label, size=9, anchor="middle", fill=ink))
    return [svg.group(parts, tip=f"iteration {step}: {rid}, {what}")]


def _legend(x: float, y: float) -> list[str]:
    items = (("prefill", dict(fill="seq-0")), ("decode", dict(fill="seq-0", fill_opacity="0.45")),
             ("paused (prefill-only step)", dict(fill="bg", stroke="seq-0",
                                                  stroke_dasharray="2 1.5")),
             ("idle padding", dict(fill="waste", fill_opacity="0.35")))
    out = []
    cx = x
    for label, style in items:
        out.append(svg.rect(cx, y, 12, 10, rx=1.5, **style))
        out.append(svg.text(cx + 15, y + 9, label, size=9, fill="muted"))
        cx += 15 + 5.6 * len(label) + 10
    return out


def panel(x: float, y: float, run: Run, heading: str, shown: int, columns: int,
          marks: dict) -> tuple[list[str], float]:
    """One scheduler's timeline with its first `shown` iterations drawn."""
    cw = min(24.0, (WIDTH - LEFT - RIGHT) / columns)
    slots = run.max_num_seqs
    out = [svg.text(x, y + 11, heading, size=11)]
    top = y + 16
    grid_w = cw * columns
    # Column guides, the current column, and iteration numbers every few columns.
    every = 1 if cw >= 14 else 2 if cw >= 8 else 5
    for i in range(columns):
        cx = LEFT + i * cw
        if i == shown - 1:
            out.append(svg.rect(cx - 0.5, top - 1, cw + 1, slots * ROW + ROW + 1, fill="panel",
                                stroke="accent", rx=1, tip=f"iteration {i} (this step)"))
        if i % every == 0:
            out.append(svg.text(cx + cw / 2, top + slots * ROW + ROW + 10, i, size=9,
                                anchor="middle", fill="muted"))
    for s in range(slots):
        ry = top + s * ROW
        out.append(svg.text(x, ry + ROW - 5, f"slot {s}", size=9, fill="muted"))
        out.append(svg.rect(LEFT, ry + 1, grid_w, ROW - 3, fill="free", rx=1, fill_opacity="0.5"))
    for it in run.iterations[:shown]:
        cx = LEFT + it.step * cw
        for s, cell in enumerate(it.slots):
            if cell is not None:
                out += _cell(cx + 0.5, top + s * ROW + 1, cw - 1, cell, it.step, cw >= 9)
        for seating in it.seated:
            if seating.after:
                # A small notch where a slot is refilled with a new request.
                sy = top + seating.slot * ROW + 1
                stroke = "highlight" if marks.get("refill") == (it.step, seating.slot) else "fg"
                out.append(svg.line(cx + 0.5, sy - 1, cx + 0.5, sy + ROW - 2, stroke=stroke,
                                    width=2.5 if stroke == "highlight" else 1.5))
        # Waiting requests under the slots.
        wy = top + slots * ROW
        if it.waiting:
            n = len(it.waiting)
            out.append(svg.rect(cx + 0.5, wy + 2, cw - 1, ROW - 5, fill="used", rx=1.5,
                                fill_opacity="0.6",
                                tip=f"iteration {it.step}: {join(list(it.waiting))} waiting"))
            if cw >= 9:
                out.append(svg.text(cx + cw / 2, wy + ROW - 6, n, size=9, anchor="middle"))
    out.append(svg.text(x, top + slots * ROW + ROW - 6, "waiting", size=9, fill="muted"))
    idle = marks.get("idle")
    if idle is not None and idle[0] < shown:
        step, slot_list = idle
        for s in slot_list:
            out.append(svg.rect(LEFT + step * cw + 0.5, top + s * ROW + 1, cw - 1, ROW - 3,
                                fill="bg", fill_opacity="0", stroke="highlight",
                                stroke_width=2.5, tip=f"iteration {step}: this slot idles"))
    bottom = top + slots * ROW + ROW + 14
    out.append(svg.text(x, bottom + 10, totals_line(run, shown), size=9.5))
    return out, bottom + 16 - y


def totals_line(run: Run, shown: int) -> str:
    t = run.totals(shown)
    if t.drained_at is not None:
        head = f"drained after {t.drained_at} iterations"
    else:
        head = f"{t.finished} of {t.requests} done"
    if t.mean_latency is None:
        lat = "latency: -"
    else:
        lat = f"latency mean {t.mean_latency:.1f}, p90 {t.p90_latency}"
    return f"{head} · {lat} · slots busy {100 * t.utilisation:.0f}%"


def view(step: Column, ctx: BatchingContext) -> svg.Figure:
    vllm_head = ("vLLM v0.5.5 with chunked prefill" if ctx.values["chunked_prefill"]
                 else "vLLM v0.5.5: continuous (iteration-level) batching")
    parts = []
    y = 4
    for run, head, marks in ((ctx.static, STATIC_HEAD, ctx.static_marks),
                             (ctx.vllm, vllm_head, ctx.vllm_marks)):
        elements, dy = panel(8, y, run, head, min(step.index, len(run.iterations)),
                             ctx.columns, marks)
        parts += elements
        y += dy + 8
    parts += _legend(8, y)
    return svg.Figure(WIDTH, y + 16, parts, LABEL)


# -- narration ---------------------------------------------------------------------------

def intro(reqs, v: dict) -> str:
    desc = ", ".join(f"{r.request_id} {r.prompt_len}+{r.output_len}"
                     + (f" at {r.arrival_step}" if r.arrival_step else "") for r in reqs)
    return (f"{len(reqs)} requests (prompt + output tokens, arrival iteration): {desc}. "
            f"Both schedulers have {v['max_num_seqs']} batch slots (max_num_seqs) and a "
            f"budget of {v['max_num_batched_tokens']} tokens per iteration "
            "(max_num_batched_tokens).")


def _static_text(it: Iteration, run: Run) -> str:
    ran = [c for c in it.slots if c is not None and c.kind in (PREFILL, DECODE)]
    pads = [c.request_id for c in it.slots if c is not None and c.kind == PADDING]
    s = []
    if it.seated:
        tokens = sum(c.tokens for c in ran)
        first = ("A new batch" if any(x.seated for x in run.iterations[:it.step])
                 else "The first batch")
        s.append(f"{first}: {join([x.request_id for x in it.seated])} prefill "
                 f"({tokens} tokens).")
    elif ran:
        s.append(f"{join([c.request_id for c in ran])} {verb(ran, 'decodes', 'decode')}.")
        if pads:
            s.append(f"{join(pads)} {verb(pads, 'is', 'are')} done but "
                     f"{verb(pads, 'its slot idles', 'their slots idle')} until the batch ends.")
    elif not it.waiting:
        s.append("Nothing to run.")
    if it.finished:
        s.append(f"{join(list(it.finished))} {verb(it.finished, 'finishes', 'finish')}.")
    if it.waiting:
        why = ("nobody joins a running batch" if ran and not it.seated
               else "the batch is full" if None not in it.slots
               else "the token budget or memory is spent")
        s.append(f"{join(list(it.waiting))} {verb(it.waiting, 'waits', 'wait')} ({why}).")
    return " ".join(s)


def _vllm_text(it: Iteration, chunked: bool) -> str:
    cells = [c for c in it.slots if c is not None]
    pre = [c for c in cells if c.kind == PREFILL]
    dec = [c.request_id for c in cells if c.kind == DECODE]
    paused = [c.request_id for c in cells if c.kind == PAUSED]
    s = []
    for seating in it.seated:
        if seating.after:
            s.append(f"{seating.request_id} takes slot {seating.slot}, which "
                     f"{seating.after} left.")
    if pre:
        what = join([f"{c.request_id} ({c.tokens} tokens)" for c in pre])
        if chunked and dec:
            s.append(f"Prefill of {what} runs together with the decode of {join(dec)}: "
                     "chunked prefill mixes them in one step.")
        else:
            s.append(f"Prefill of {what}.")
        if paused:
            s.append(f"{join(paused)} {verb(paused, 'skips its', 'skip their')} decode: v0.5.5 "
                     "runs prefill-only steps.")
    elif dec:
        s.append(f"{join(dec)} {verb(dec, 'decodes', 'decode')}.")
    elif not it.waiting:
        s.append("Nothing to run.")
    if it.finished:
        s.append(f"{join(list(it.finished))} {verb(it.finished, 'finishes', 'finish')}; "
                 f"{verb(it.finished, 'its slot is', 'their slots are')} free for the next "
                 "iteration.")
    if it.waiting:
        why = ("every slot is taken" if None not in it.slots else "the token budget is spent")
        s.append(f"{join(list(it.waiting))} {verb(it.waiting, 'waits', 'wait')} ({why}).")
    return " ".join(s)


def narrate(step: Column, ctx: BatchingContext) -> str:
    if step.index == 0:
        return intro(ctx.requests, ctx.values)
    i = step.index - 1                  # the iteration this step shows last
    parts = [f"Iteration {i}."]
    said = (_static_text(step.static, ctx.static) if step.static else None,
            _vllm_text(step.vllm, ctx.values["chunked_prefill"]) if step.vllm else None)
    for name, run, body in zip(("Static", "vLLM"), (ctx.static, ctx.vllm), said):
        if body is None:
            body = f"drained after {len(run.iterations)} iterations."
        parts.append(f"{name}: {body}")
    if ctx.contrast and ctx.contrast[0] == i:
        seating = ctx.contrast[1]
        members = [c.request_id for c in step.static.slots if c is not None]
        batch_end = max(ctx.static.finished_step.get(r, i) for r in members)
        parts.append(f"This is the difference: vLLM refilled {seating.after}'s slot at once, "
                     f"while the static batch keeps finished requests' slots idle until its "
                     f"longest request finishes (iteration {batch_end}).")
    return " ".join(parts)


def check(v: dict) -> dict[str, str]:
    reqs = workload(v)
    longest = max(r.prompt_len + r.output_len for r in reqs)
    if v["max_num_batched_tokens"] < longest:
        return {"max_num_batched_tokens":
                f"token budget: at least {longest}, the longest request (prompt + output): "
                "without chunked prefill vLLM requires max_num_batched_tokens >= "
                "max_model_len, and the static baseline never chunks"}
    if v["max_num_batched_tokens"] < v["max_num_seqs"]:
        return {"max_num_batched_tokens": "token budget: at least max_num_seqs (vLLM requires "
                                          "max_num_batched_tokens >= max_num_seqs)"}
    static, vllm = runs(v)
    longest_run = max(len(static.iterations), len(vllm.iterations))
    if longest_run > MAX_ITERATIONS or static.totals().drained_at is None:
        return {"count": f"requests: this workload takes more than {MAX_ITERATIONS} iterations "
                         "to drain; use fewer or shorter requests, or more slots"}
    return {}


WIDGETS = (Widget(
    id="continuous-batching",
    title="Static vs continuous batching, iteration by iteration",
    summary="Rows are batch slots, columns are iterations. Static batching keeps a finished "
            "request's slot idle until its batch ends; vLLM refills it at the next iteration.",
    params=(
        Param("max_num_seqs", "batch slots", "int", 3, min=1, max=8,
              help="max_num_seqs: requests in the batch at once (vLLM's default is 256)."),
        Param("max_num_batched_tokens", "token budget", "int", 32, min=1, max=256,
              help="max_num_batched_tokens: tokens computed per iteration (vLLM's default is "
                   "2048; 512 with chunked prefill)."),
        Param("count", "requests", "int", 5, min=1, max=12, help="How many requests (A, B, ...)."),
        Param("prompt_lens", "prompt lengths", "text", (3, 10), parse=parse_range,
              format=format_range, help="Prompt tokens, drawn uniformly from this range."),
        Param("output_lens", "output lengths", "text", (2, 10), parse=parse_range,
              format=format_range, help="Output tokens, drawn uniformly from this range."),
        Param("arrival_rate", "arrivals per iteration", "float", 1.0, min=0.0, max=4.0,
              help="Poisson arrivals, requests per iteration (0: all at iteration 0)."),
        Param("chunked_prefill", "chunked prefill (vLLM side)", "bool", False,
              help="enable_chunked_prefill: mix prompt chunks and decodes in one step."),
        Param("seed", "seed", "int", 31, min=0, max=9999, help="Seeds lengths and arrivals."),
    ),
    scenario=scenario, context=context, view=view, narrate=narrate, check=check,
),)
