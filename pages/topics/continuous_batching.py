"""The continuous-batching page: static batching and vLLM's scheduler on the same workload.

scenario: both schedulers run the same requests (sim/studies/batching_metrics.py records each
          engine run with sim.trace.record and turns the trace into a slot timeline and its
          totals); the iteration-level side is vLLM v0.5.5's scheduler or, with the engine
          switch on V1, V1's (one token budget, chunked prefill always on) in its
          synchronous engine loop: the page counts iterations of one schedule and its
          output, and in vLLM's default async loop a finished request's seat is refilled one
          engine call later (the next batch is scheduled before its last output is
          processed), which would hide the point of the page behind the loop's pipelining.
          The trace pairs the two runs' iterations, one step per iteration, from iteration 0.
view:     the workload, then one timeline per scheduler drawn up to the step: rows are batch
          slots, columns are iterations, each cell says what the slot's request did
          (prefill, decode, in the batch but not run, or idle padding); under each, the
          waiting queue and the totals so far; a legend for every mark.
narrate:  at most three sentences, cause then effect then consequence: what both did, or
          what each did and what it costs the static batch; `details` has every slot.
label:    "iteration N", the column the picture outlines.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import zip_longest

from pages.framework.widget import Context, Param, Widget
from pages.questions import Asker, batching, scheduling
from pages.views import fit, svg
from pages.views import legend as legend_mod  # this module's own legend() draws it
from pages.views.text import join, noun, plural, verb
from sim.studies.batching_metrics import (
    DECODE,
    PADDING,
    PAUSED,
    PREFILL,
    Iteration,
    Run,
    compare,
    uniform_workload,
)
from sim.trace import Trace

WIDTH = 400
SMALL = fit.min_size(WIDTH)         # the smallest text: 11 px on a phone (13.5 units)
HEAD = SMALL + 1                    # panel headings
PAD = 6                             # left and right margin
LEFT = 68                           # the grid starts here: room for "waiting" and "slot 7"
ROW = 21                            # one batch slot
CELL = ROW - 3
MAX_CW = 26                         # widest iteration column
MAX_ITERATIONS = 40
MAX_LEN = 32
ENGINES = (("v0.5.5", "vLLM v0.5.5"), ("v1", "vLLM V1 (v0.25.1)"))

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


RANGE_EXTREMES = (("the shortest", "1"), ("the longest", str(MAX_LEN)))


def workload(v: dict):
    return uniform_workload(v["count"], v["prompt_lens"], v["output_lens"], v["arrival_rate"],
                            v["seed"])


def runs(v: dict) -> tuple[Run, Run]:
    """(static run, iteration-level run): the second is vLLM v0.5.5's scheduler or V1's."""
    return compare(workload(v), v["max_num_seqs"], v["max_num_batched_tokens"],
                   v["chunked_prefill"], v["seed"], max_steps=MAX_ITERATIONS + 1,
                   engine=v["engine"])


def is_v1(v: dict) -> bool:
    return v["engine"] == "v1"


def vllm_name(v: dict) -> str:
    """What the narration calls the iteration-level scheduler."""
    return "V1" if is_v1(v) else "vLLM"


# -- scenario ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Column:
    """One step of the trace: iteration `index`, drawn with every iteration before it.
    `static` and `vllm` are each run's iteration `index` (None once that run has
    drained)."""
    index: int
    static: Iteration | None
    vllm: Iteration | None


def scenario(v: dict) -> Trace:
    static, vllm = runs(v)
    pairs = zip_longest(static.iterations, vllm.iterations)
    steps = [Column(i, s, m) for i, (s, m) in enumerate(pairs)]
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
    legend: tuple                # the legend's entries (what the runs use)
    prompt: dict                 # request id -> prompt length


def context(v: dict, trace: Trace) -> BatchingContext:
    static, vllm = trace.meta["static"], trace.meta["vllm"]
    contrast = first_contrast(static, vllm)
    static_marks, vllm_marks = {}, {}
    if contrast:
        step, seating = contrast
        vllm_marks["refill"] = (step, seating.slot)
        static_marks["idle"] = (step, [s for s, c in enumerate(static.iterations[step].slots)
                                       if c is not None and c.kind == PADDING])
    requests = trace.meta["requests"]
    return BatchingContext(v, trace, static, vllm, requests, len(trace), contrast,
                           static_marks, vllm_marks,
                           legend_entries(static, vllm, contrast, v, requests),
                           {r.request_id: r.prompt_len for r in requests})


def label(step: Column, ctx: BatchingContext | None = None) -> str:
    return f"iteration {step.index}"


# -- drawing ---------------------------------------------------------------------------

def _color(rid: str) -> str:
    return svg.seq(ord(rid[0]) - ord("A"))


def _letter(x: float, y: float, rid: str, halo: bool) -> str:
    """A request's letter in a cell; on a solid cell it gets a halo of the background
    colour, so it reads on every palette colour in both themes."""
    extra = dict(stroke=svg.color("bg"), stroke_width=3, paint_order="stroke") if halo else {}
    return svg.text(x, y, rid, size=SMALL, anchor="middle", **extra)


def _cell(x: float, y: float, w: float, cell, step: int, letters: bool, v1: bool,
          key: str | None = None, origin: str | None = None) -> str:
    rid, kind = cell.request_id, cell.kind
    color = _color(rid)
    if kind == PREFILL:
        what = f"prefill of {plural(cell.tokens, 'prompt token')}"
        parts = [svg.rect(x, y, w, CELL, fill=color, rx=1.5)]
    elif kind == DECODE:
        what = "decode: one new token"
        parts = [svg.rect(x, y, w, CELL, fill=color, rx=1.5, fill_opacity="0.5")]
    elif kind == PAUSED:
        what = ("in the batch but not run: the token budget is spent" if v1 else
                "in the batch but not run: this iteration is prefill-only")
        parts = [svg.rect(x + 0.75, y + 0.75, w - 1.5, CELL - 1.5, fill="bg", stroke=color,
                          rx=1.5, stroke_width=1.5, stroke_dasharray="3 2")]
    else:
        what = "finished; its slot idles (padding) until the whole batch is done"
        parts = [svg.rect(x, y, w, CELL, fill="waste", rx=1.5, fill_opacity="0.45")]
    if letters:
        parts.append(_letter(x + w / 2, y + CELL - 4.5, rid, kind == PREFILL))
    return svg.group(parts, tip=f"iteration {step}: {rid}, {what}", data_k=key,
                     data_from=origin)


def workload_key(requests) -> str:
    """The legend's line for the request chips, on a request of this workload."""
    r = next((r for r in requests if r.arrival_step), requests[0])
    chip = f"{r.request_id} {r.prompt_len}+{r.output_len}"
    words = f"{r.prompt_len} prompt + {r.output_len} output tokens"
    if r.arrival_step:
        return f"{chip}@{r.arrival_step}: {words}, arrives in iteration {r.arrival_step}"
    return f"{chip}: {words}"


def legend_entries(static: Run, vllm: Run, contrast, v: dict, requests) -> tuple:
    """(mark, label) for every mark the two runs draw, in reading order."""
    kinds = {c.kind for r in (static, vllm) for it in r.iterations for c in it.slots if c}
    out = [("prefill", "prefill (the prompt)"), ("decode", "decode: one token")]
    if PADDING in kinds:
        out.append(("padding", "done, slot idles"))
    if PAUSED in kinds:
        out.append(("paused", "in the batch, not run"))
    if any(it.waiting for r in (static, vllm) for it in r.iterations):
        out.append(("waiting", "requests waiting"))
    if vllm.refills():
        out.append(("refill", "a freed slot refilled"))
    out.append(("now", "this iteration"))
    if contrast:
        out.append(("contrast", f"idle here, refilled in {vllm_name(v)}"))
    out.append(("workload", workload_key(requests)))
    return tuple(out)


def _swatch(kind: str, x: float, y: float) -> list[str]:
    """The legend's sample of a mark, 14 x 14 with its top at y."""
    s = 14
    if kind == "prefill":
        return [svg.rect(x, y, s, s, fill="seq-0", rx=1.5)]
    if kind == "decode":
        return [svg.rect(x, y, s, s, fill="seq-0", rx=1.5, fill_opacity="0.5")]
    if kind == "padding":
        return [svg.rect(x, y, s, s, fill="waste", rx=1.5, fill_opacity="0.45")]
    if kind == "paused":
        return [svg.rect(x + 0.75, y + 0.75, s - 1.5, s - 1.5, fill="bg", stroke="seq-0",
                         rx=1.5, stroke_width=1.5, stroke_dasharray="3 2")]
    if kind == "waiting":
        return [svg.rect(x, y, s, s, fill="used", rx=1.5, fill_opacity="0.6")]
    if kind == "refill":
        return [svg.rect(x, y, s, s, fill="seq-1", rx=1.5, fill_opacity="0.5"),
                svg.line(x, y - 1, x, y + s + 1, stroke="fg", width=2)]
    if kind == "now":
        return [outline(x, y, s, s, "accent", 1.5)]
    if kind == "contrast":
        return [outline(x + 1, y + 1, s - 2, s - 2, "highlight", 2.5)]
    return []


def outline(x: float, y: float, w: float, h: float, stroke: str, width: float) -> str:
    """An unfilled box (svg.rect always fills)."""
    style = f"fill:none;stroke:{svg.color(stroke)};stroke-width:{svg.num(width)}"
    return f"<rect{svg.attrs(x=x, y=y, width=w, height=h, rx=1.5, style=style)}/>"


def legend(y: float, entries) -> tuple[list[str], float]:
    """The legend in rows that wrap before the right margin; returns (elements, height)."""
    out = [svg.text(PAD, y + SMALL, "Legend", size=SMALL, fill="muted")]
    cx, cy = PAD + fit.text_width("Legend", SMALL) + 10, y
    row = SMALL * 1.6
    for kind, text in entries:
        if kind == "workload":
            # A sentence of its own, wrapped.
            cx, cy = PAD, cy + row
            lines, h = fit.paragraph(PAD, cy, text, size=SMALL, room=WIDTH - 2 * PAD,
                                     fill="fg")
            out += lines
            cy += h - row
            continue
        cx, cy = legend_mod.swatch_item(out, cx, cy, PAD, WIDTH - PAD, SMALL, _swatch, kind,
                                        text)
    return out, cy + row - y


def workload_row(y: float, requests) -> tuple[list[str], float]:
    """The requests as chips: "A 3+3", "D 4+8@1" (prompt + output tokens, @ arrival)."""
    out = [svg.text(PAD, y + SMALL, "requests", size=SMALL, fill="muted")]
    start = PAD + fit.text_width("requests", SMALL) + 8
    cx, cy = start, y
    row = SMALL * 1.6
    for r in requests:
        text = f"{r.request_id} {r.prompt_len}+{r.output_len}" + (
            f"@{r.arrival_step}" if r.arrival_step else "")
        w = 12 + 4 + fit.text_width(text, SMALL)
        if cx > start and cx + w > WIDTH - PAD:
            cx, cy = start, cy + row
        out.append(svg.group([svg.rect(cx, cy + 3, 12, 12, fill=_color(r.request_id), rx=1.5),
                              svg.text(cx + 16, cy + SMALL, text, size=SMALL)],
                             tip=f"{r.request_id}: {r.prompt_len} prompt + {r.output_len} "
                                 f"output tokens, arrives in iteration {r.arrival_step}",
                             data_k=f"chip:{r.request_id}"))
        cx += w + 10
    return out, cy + row - y


def panel(y: float, run: Run, heading: str, shown: int, columns: int, marks: dict,
          v1: bool, name: str = "vllm") -> tuple[list[str], float]:
    """One scheduler's timeline with iterations 0 .. shown - 1 drawn, the last outlined.
    `name` keys its marks (cell:<name>:<iteration>:<slot>, ...): the two panels differ."""
    cw = min(MAX_CW, (WIDTH - LEFT - PAD) / columns)
    letters = cw >= 11
    slots = run.max_num_seqs
    out = [svg.text(PAD, y + HEAD, heading, size=HEAD)]
    top = y + HEAD + 7
    grid_w = cw * columns
    wy = top + slots * ROW                  # the waiting row
    # The current column, then iteration numbers as often as they fit.
    now = shown - 1
    if 0 <= now < columns:
        out.append(svg.rect(LEFT + now * cw - 1, top - 2, cw + 2, slots * ROW + ROW + 2,
                            fill="panel", stroke="accent", rx=1.5, stroke_width=1.5,
                            tip=f"iteration {now} (this step)", data_k=f"now:{name}"))
    every = 1
    while every * cw < fit.text_width("00", SMALL) + 8:
        every += 1
    for i in range(0, columns, every):
        out.append(svg.text(LEFT + i * cw + cw / 2, wy + ROW + SMALL + 1, i, size=SMALL,
                            anchor="middle", fill="fg" if i == now else "muted"))
    for s in range(slots):
        ry = top + s * ROW
        out.append(svg.text(PAD, ry + CELL - 4.5, f"slot {s}", size=SMALL, fill="muted"))
        out.append(svg.rect(LEFT, ry, grid_w, CELL, fill="free", rx=1, fill_opacity="0.5"))
    out.append(svg.text(PAD, wy + CELL - 4.5, "waiting", size=SMALL, fill="muted"))
    for it in run.iterations[:shown]:
        cx = LEFT + it.step * cw
        seated = {seating.slot for seating in it.seated}
        for s, cell in enumerate(it.slots):
            if cell is not None:
                # A request seated now comes out of the waiting row (or its chip).
                origin = (f"wait:{name}:{it.step - 1} chip:{cell.request_id}"
                          if s in seated else None)
                out.append(_cell(cx + 0.5, top + s * ROW, cw - 1, cell, it.step, letters, v1,
                                 key=f"cell:{name}:{it.step}:{s}", origin=origin))
        for seating in it.seated:
            if seating.after:
                # A bar at the cell's left edge where a freed slot is refilled.
                sy = top + seating.slot * ROW
                mark = marks.get("refill") == (it.step, seating.slot)
                out.append(svg.line(cx + 0.5, sy - 1, cx + 0.5, sy + CELL + 1,
                                    stroke="highlight" if mark else "fg",
                                    width=3 if mark else 2,
                                    tip=f"iteration {it.step}: {seating.request_id} takes the "
                                        f"slot {seating.after} left",
                                    data_k=f"refill:{name}:{it.step}:{seating.slot}"))
        if it.waiting:
            n = len(it.waiting)
            parts = [svg.rect(cx + 0.5, wy, cw - 1, CELL, fill="used", rx=1.5,
                              fill_opacity="0.6")]
            if cw >= fit.text_width(str(n), SMALL) + 3:
                parts.append(svg.text(cx + cw / 2, wy + CELL - 4.5, n, size=SMALL,
                                      anchor="middle"))
            out.append(svg.group(parts, tip=f"iteration {it.step}: {join(list(it.waiting))} "
                                            f"{verb(it.waiting, 'waits', 'wait')}",
                                 data_k=f"wait:{name}:{it.step}"))
    idle = marks.get("idle")
    if idle is not None and idle[0] < shown:
        step, slot_list = idle
        for s in slot_list:
            out.append(svg.group([outline(LEFT + step * cw + 1, top + s * ROW + 0.5,
                                              cw - 3, CELL - 1, "highlight", 2.5)],
                                 tip=f"iteration {step}: this slot idles",
                                 data_k=f"idle:{name}:{step}:{s}"))
    y2 = wy + ROW + SMALL + 8
    for line in totals_lines(run, shown):
        out.append(svg.text(PAD, y2 + SMALL, line, size=SMALL))
        y2 += SMALL * 1.35
    return out, y2 + 4 - y


def totals_lines(run: Run, shown: int) -> tuple[str, str]:
    """Two lines under a timeline: progress and busy slots, then latency."""
    t = run.totals(shown)
    if t.drained_at is not None:
        head = f"drained after {plural(t.drained_at, 'iteration')}"
    else:
        head = f"{t.finished} of {plural(t.requests, 'request')} done"
    busy = f"{head}, slots busy {100 * t.utilisation:.0f}%"
    if t.mean_latency is None:
        lat = "latency: none finished yet"
    else:
        lat = f"latency: mean {t.mean_latency:.1f}, p90 {t.p90_latency} iterations"
    return busy, lat


def vllm_head(v: dict) -> str:
    if is_v1(v):
        return "vLLM V1: prompts and decodes share a step"
    if v["chunked_prefill"]:
        return "vLLM v0.5.5 with chunked prefill"
    return "vLLM v0.5.5: a new batch every iteration"


def view(step: Column, ctx: BatchingContext) -> svg.Figure:
    v = ctx.values
    parts = [svg.text(PAD, 17, label(step), size=HEAD + 2),
             svg.text(WIDTH - PAD, 17, f"{plural(v['max_num_seqs'], 'slot')} · "
                      f"{v['max_num_batched_tokens']}-token budget", size=SMALL,
                      anchor="end", fill="muted")]
    y = 26
    elements, h = workload_row(y, ctx.requests)
    parts += elements
    y += h + 6
    for run, head, marks, name in ((ctx.static, STATIC_HEAD, ctx.static_marks, "static"),
                                   (ctx.vllm, vllm_head(v), ctx.vllm_marks, "vllm")):
        elements, h = panel(y, run, head, min(step.index + 1, len(run.iterations)),
                            ctx.columns, marks, is_v1(v), name)
        parts += elements
        y += h + 8
    parts.append(svg.line(PAD, y - 4, WIDTH - PAD, y - 4, stroke="line", width=0.5))
    elements, h = legend(y + 2, ctx.legend)
    parts += elements
    return svg.Figure(WIDTH, y + h + 8, parts, f"{LABEL}, {label(step)}")


# -- narration ---------------------------------------------------------------------------

def _ids(items) -> str:
    return join(list(items))


def _poss(ids) -> str:
    """"A's", "A's and C's"."""
    return join([f"{r}'s" for r in ids])


def _cells(it: Iteration, kind: str) -> list:
    return [c for c in it.slots if c is not None and c.kind == kind]


def _signature(it: Iteration):
    return (tuple((c.request_id, c.kind, c.tokens) if c else None for c in it.slots),
            it.waiting, it.finished)


def _arrived(ctx: BatchingContext, i: int) -> list[str]:
    return [r.request_id for r in ctx.requests if r.arrival_step == i]


def _done_before(run: Run, step: int, rid: str) -> int:
    """Prompt tokens `rid` computed before iteration `step` (earlier chunks)."""
    return sum(c.tokens for it in run.iterations[:step] for c in it.slots
               if c is not None and c.request_id == rid and c.kind == PREFILL)


def _is_chunk(c, ctx: BatchingContext) -> bool:
    """A prefill cell that computed part of its request's prompt."""
    return c.tokens < ctx.prompt[c.request_id]


def _chunk_words(c, run: Run, step: int, ctx: BatchingContext) -> str:
    """"B computes 12 of its 24 prompt tokens", "... the last 12 of its 24 ..."."""
    total = ctx.prompt[c.request_id]
    before = _done_before(run, step, c.request_id)
    part = "the last " if before + c.tokens >= total else ("the next " if before else "")
    return f"{c.request_id} computes {part}{c.tokens} of its {total} prompt tokens"


def _both(it: Iteration, ctx: BatchingContext) -> list[str]:
    """Both schedulers did the same this iteration: say it once."""
    i = it.step
    s = []
    pre, dec = _cells(it, PREFILL), _cells(it, DECODE)
    arrived = _arrived(ctx, i)
    if it.seated:
        seated = [x.request_id for x in it.seated]
        came = [r for r in seated if r in arrived]
        lead = f"{_ids(seated)} {verb(seated, 'arrives', 'arrive')} and" if came == seated \
            else _ids(seated)
        n = len(seated)
        where = "a free slot" if n == 1 else (
            f"the {n} slots" if n == len(it.slots) else f"{n} free slots")
        tokens = sum(c.tokens for c in pre)
        s.append(f"{lead} {verb(seated, 'takes', 'take')} {where} in both schedulers; "
                 f"{'its' if n == 1 else 'their'} {plural(tokens, 'prompt token')} run as "
                 "one prefill step.")
        if dec:
            ids = [c.request_id for c in dec]
            s.append(f"{_ids(ids)} {verb(ids, 'decodes', 'decode')} in the same step.")
        elif not it.waiting:
            s.append(verb(seated, "The prefill also samples its first output token.",
                          "Each prefill also samples its request's first output token."))
    elif dec or pre:
        ran = [c.request_id for c in dec + pre]
        s.append(f"Both schedulers run {_ids(ran)}, "
                 f"{'one new token' if len(ran) == 1 else 'one new token each'}.")
    else:
        s.append("Neither scheduler has anything to run.")
    if it.finished:
        s.append(f"{_ids(it.finished)} {verb(it.finished, 'produces its', 'produce their')} "
                 f"last {noun(it.finished, 'token')} and "
                 f"{verb(it.finished, 'finishes', 'finish')}.")
    if it.waiting:
        new = [r for r in it.waiting if r in arrived]
        old = [r for r in it.waiting if r not in arrived]
        if new and not old:
            who = f"{_ids(new)} {verb(new, 'arrives and waits', 'arrive and wait')}"
        elif new:
            who = (f"{_ids(new)} {verb(new, 'arrives', 'arrive')}; {_ids(it.waiting)} "
                   f"{verb(it.waiting, 'waits', 'wait')}")
        else:
            who = f"{_ids(it.waiting)} {verb(it.waiting, 'waits', 'wait')}"
        n = len(it.slots)
        s.append(f"{who}: " + ("the one slot is taken." if n == 1
                               else f"all {n} slots are taken."))
    return s


def _static_sentence(it: Iteration | None, ctx: BatchingContext) -> str:
    run = ctx.static
    if it is None:
        return f"Static batching drained after {plural(len(run.iterations), 'iteration')}."
    pre, dec = _cells(it, PREFILL), _cells(it, DECODE)
    pads = [c.request_id for c in _cells(it, PADDING)]
    if it.seated:
        seated = [x.request_id for x in it.seated]
        if not any(x.seated for x in run.iterations[:it.step]):
            return (f"Static: {_ids(seated)} {verb(seated, 'forms', 'form')} the first batch "
                    f"and {verb(seated, 'prefills', 'prefill')}.")
        waited = [it.step - run.arrival[r] for r in seated]
        if len(set(waited)) == 1:
            waited = waited[:1]
        ago = (f", {join([str(w) for w in waited])} {noun(max(waited), 'iteration')} after "
               f"{verb(seated, 'it', 'they')} arrived" if any(waited) else "")
        return (f"Static: its last batch has ended, so {_ids(seated)} "
                f"{verb(seated, 'forms', 'form')} a new one and "
                f"{verb(seated, 'prefills', 'prefill')}{ago}.")
    ran = [c.request_id for c in dec + pre]
    if not ran:
        return "Static: nothing to run." if not it.waiting else "Static: nothing runs."
    if it.finished and not any(c.request_id not in it.finished for c in dec + pre):
        return (f"Static: {_ids(ran)} {verb(ran, 'decodes its', 'decode their')} last "
                f"{noun(ran, 'token')}, and the batch ends.")
    text = f"Static: {_ids(ran)} {verb(ran, 'decodes', 'decode')}"
    if pads:
        text += (f" while {_poss(pads)} {noun(pads, 'slot')} {verb(pads, 'idles', 'idle')}"
                 " until the batch ends")
    if it.finished:
        text += f"; {_ids(it.finished)} {verb(it.finished, 'finishes', 'finish')}"
    return text + "."


def _vllm_sentence(it: Iteration | None, ctx: BatchingContext) -> str:
    v = ctx.values
    run = ctx.vllm
    name = vllm_name(v)
    if it is None:
        return f"{name} drained after {plural(len(run.iterations), 'iteration')}."
    pre, dec = _cells(it, PREFILL), _cells(it, DECODE)
    paused = [c.request_id for c in _cells(it, PAUSED)]
    chunks = [c for c in pre if _is_chunk(c, ctx)]
    whole = [c.request_id for c in pre if c not in chunks]
    seated = [x.request_id for x in it.seated]
    finished = list(it.finished)
    bits = []
    refills = [x for x in it.seated if x.after]
    fresh = [x.request_id for x in it.seated if not x.after]
    if refills:
        ids = [x.request_id for x in refills]
        bits.append(f"{_ids(ids)} {verb(ids, 'takes the slot', 'take the slots')} "
                    f"{_ids([x.after for x in refills])} left")
    if fresh:
        bits.append(f"{_ids(fresh)} {verb(fresh, 'takes a free slot', 'take free slots')}")
    if whole and set(whole) == set(seated):
        bits = [join(bits) + f" and {verb(seated, 'prefills', 'prefill')}"]
    elif whole:
        bits.append(f"{_ids(whole)} {verb(whole, 'prefills', 'prefill')}")
    if chunks:
        bits.append(join([_chunk_words(c, run, it.step, ctx) for c in chunks]))
    if dec:
        ids = [c.request_id for c in dec]
        last = [r for r in ids if r in finished]
        if last == ids:
            bits.append(f"{_ids(ids)} {verb(ids, 'decodes its', 'decode their')} last "
                        f"{noun(ids, 'token')} and {verb(ids, 'finishes', 'finish')}")
            finished = []
        else:
            bits.append(f"{_ids(ids)} {verb(ids, 'decodes', 'decode')}")
    if paused:
        if is_v1(v) or v["chunked_prefill"]:
            bits.append(f"{_ids(paused)} {verb(paused, 'gets', 'get')} no token: "
                        "the budget is spent")
        else:
            bits.append(f"{_ids(paused)} {verb(paused, 'skips its', 'skip their')} decode "
                        "(a prefill-only step)")
    if finished:
        bits.append(f"{_ids(finished)} {verb(finished, 'finishes', 'finish')}")
    if not bits:
        bits.append("nothing to run")
    return f"{name}: " + "; ".join(bits) + "."


def _consequence(step: Column, ctx: BatchingContext) -> str | None:
    """The third sentence: what the step costs or buys, when something is worth saying."""
    s, m = step.static, step.vllm
    name = vllm_name(ctx.values)
    if s is None and m is None:
        return None
    if m is not None and m.step == len(ctx.vllm.iterations) - 1:
        t = ctx.vllm.totals()
        return (f"{name} has served every request: mean latency {t.mean_latency:.1f} "
                f"iterations, slots busy {100 * t.utilisation:.0f}%.")
    if s is not None and s.step == len(ctx.static.iterations) - 1:
        st, vt = ctx.static.totals(), ctx.vllm.totals()
        return (f"Static batching took {st.drained_at} iterations to {name}'s "
                f"{vt.drained_at}, with slots busy {100 * st.utilisation:.0f}% against "
                f"{100 * vt.utilisation:.0f}%.")
    if s is not None and s.waiting and s.step > 0:
        queued = [r for r in s.waiting if m is None or r not in m.waiting]
        if queued and not s.seated:
            since = sorted({ctx.static.arrival[r] for r in queued})
            return (f"{_ids(queued)} {verb(queued, 'waits', 'wait')} in the static queue "
                    f"(since {noun(since, 'iteration')} {join([str(x) for x in since])}): "
                    "nobody joins a "
                    "running batch.")
    return None


def _contrast(step: Column, ctx: BatchingContext) -> list[str]:
    """The iteration the page is about: vLLM refills at once, the static batch pads."""
    v = ctx.values
    name = vllm_name(v)
    it, s = step.vllm, step.static
    refills = [x for x in it.seated if x.after]
    left = [x.after for x in refills]
    came = [x.request_id for x in refills]
    when = sorted({ctx.vllm.finished_step[r] for r in left})
    out = [f"{_ids(left)} finished in iteration {join([str(w) for w in when])}, so {name} "
           f"gives {'its slot' if len(left) == 1 else 'their slots'} to {_ids(came)} at "
           "once."]
    dec = [c.request_id for c in _cells(it, DECODE)]
    paused = [c.request_id for c in _cells(it, PAUSED)]
    if paused and not (is_v1(v) or v["chunked_prefill"]):
        out.append(f"{_ids(paused)} {verb(paused, 'skips its', 'skip their')} decode: "
                   "v0.5.5 runs a step that admits prompts as prefill only.")
    elif dec:
        budget = v["max_num_batched_tokens"]
        how = ("V1 has no separate prefill step" if is_v1(v)
               else "chunked prefill mixes them")
        out.append(f"{_poss(dec)} {noun(dec, 'decode')} and {_poss(came)} "
                   f"{noun(came, 'prompt')} share this step's {budget}-token budget: {how}.")
    pads = [c.request_id for c in _cells(s, PADDING)]
    members = [c.request_id for c in s.slots if c is not None]
    end = max(ctx.static.finished_step[r] for r in members)
    longest = [r for r in members if ctx.static.finished_step[r] == end]
    out.append(f"Static batching keeps {_poss(pads)} {noun(pads, 'slot')} idle until "
               f"{_ids(longest)}, its longest {noun(longest, 'request')}, "
               f"{verb(longest, 'finishes', 'finish')} in iteration {end}.")
    return out


def narrate(step: Column, ctx: BatchingContext) -> str:
    s, m = step.static, step.vllm
    if ctx.contrast and ctx.contrast[0] == step.index:
        return " ".join(_contrast(step, ctx))
    if s is not None and m is not None and _signature(s) == _signature(m):
        said = _both(s, ctx)
        if step.index == 0 and is_v1(ctx.values):
            said = said[:2] + ["V1 always chunks prompts, so the chunked-prefill setting "
                               "does not apply."]
        return " ".join(said[:3])
    said = [_static_sentence(s, ctx), _vllm_sentence(m, ctx)]
    more = _consequence(step, ctx)
    if more:
        said.append(more)
    return " ".join(said)


# -- details: the full account ------------------------------------------------------------

def _slot_words(it: Iteration, run: Run, ctx: BatchingContext, v1: bool) -> list[str]:
    out = []
    for slot, c in enumerate(it.slots):
        if c is None:
            out.append(f"slot {slot}: empty")
            continue
        if c.kind == PREFILL:
            what = ("a prefill chunk: " + _chunk_words(c, run, it.step, ctx)
                    if _is_chunk(c, ctx)
                    else f"prefill of its {plural(c.tokens, 'prompt token')}")
        elif c.kind == DECODE:
            what = "decode, one new token"
        elif c.kind == PAUSED:
            what = ("in the batch, not run: the token budget went to requests ahead of it"
                    if v1 or (run.scheduler == "vllm" and ctx.values["chunked_prefill"])
                    else "in the batch, not run: this step admits prompts, so it runs "
                         "prefills only")
        else:
            what = "done; its slot idles (padding) until the batch ends"
        out.append(f"slot {slot}: {c.request_id}, {what}")
    return out


def _lane_details(name: str, it: Iteration | None, run: Run, ctx: BatchingContext,
                  v1: bool) -> list[str]:
    if it is None:
        return [f"{name}: drained after {plural(len(run.iterations), 'iteration')}."]
    out = []
    for x in it.seated:
        out.append(f"{name}: {x.request_id} enters the batch in slot {x.slot}"
                   + (f", which {x.after} left." if x.after else "."))
    budget = ctx.values["max_num_batched_tokens"]
    out.append(f"{name}: " + "; ".join(_slot_words(it, run, ctx, v1)) + ".")
    out.append(f"{name}: {plural(it.num_batched_tokens, 'token')} computed this iteration "
               f"(budget {budget}).")
    done = it.finished
    if done:
        out.append(f"{name}: {_ids(done)} {verb(done, 'produces its', 'produce their')} last "
                   f"{noun(done, 'token')} and {verb(done, 'finishes', 'finish')}.")
    if it.waiting:
        if run.scheduler == "static":
            why = ("nobody joins a running batch" if any(
                c is not None and c.kind != PADDING for c in it.slots) or it.seated
                else "the batch is full")
        else:
            why = ("every slot is taken" if None not in it.slots
                   else "the token budget is spent")
        out.append(f"{name}: {_ids(it.waiting)} {verb(it.waiting, 'waits', 'wait')} ({why}).")
    busy, lat = totals_lines(run, it.step + 1)
    out.append(f"{name} so far: {busy}; {lat}.")
    return out


def details(step: Column, ctx: BatchingContext) -> list[str]:
    v = ctx.values
    name = vllm_name(v)
    out = []
    if step.index == 0:
        out.append(f"{plural(len(ctx.requests), 'request')} (prompt + output tokens, arrival "
                   "iteration): " + ", ".join(
                       f"{r.request_id} {r.prompt_len}+{r.output_len} at {r.arrival_step}"
                       for r in ctx.requests) + ".")
        out.append(f"Both schedulers have {plural(v['max_num_seqs'], 'batch slot')} "
                   f"(max_num_seqs) and a budget of {v['max_num_batched_tokens']} tokens per "
                   "iteration (max_num_batched_tokens).")
        if is_v1(v):
            out.append("V1 (v0.25.1) gets the same max_num_seqs and max_num_batched_tokens; "
                       "it serves the running requests first (decodes and unfinished prompt "
                       "chunks), then admits waiting ones with what is left of the one "
                       "budget. Chunked prefill is always on in V1, so the chunked-prefill "
                       "setting applies to v0.5.5 only.")
        elif v["chunked_prefill"]:
            out.append("v0.5.5 with chunked prefill serves the running requests first, then "
                       "new prompts, cut to what is left of the token budget.")
        else:
            out.append("v0.5.5 without chunked prefill admits waiting prompts first; a step "
                       "that admits any prompt runs no decodes (a prefill-only step).")
    out += _lane_details("Static", step.static, ctx.static, ctx, False)
    out += _lane_details(name, step.vllm, ctx.vllm, ctx, is_v1(v))
    return out


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


def limits(v: dict) -> scheduling.Limits:
    """The iteration-level scheduler's settings (sim.studies.batching_metrics.make_engine),
    for the questions."""
    return scheduling.Limits(max_num_batched_tokens=v["max_num_batched_tokens"],
                             max_num_seqs=v["max_num_seqs"],
                             max_model_len=max(p + o for p, o in zip(v["prompt_lens"],
                                                                     v["output_lens"])),
                             chunked=None if is_v1(v) else v["chunked_prefill"])


QUESTIONS = Asker(("batch-join", batching.batch_join(limits)))


WIDGETS = (Widget(
    id="continuous-batching",
    keys=("chip", "cell", "now", "wait"),
    goal=('Compare static and iteration-level batching slot by slot, and measure what the refill '
          'buys in latency and utilisation.'),
    title="Static vs continuous batching, iteration by iteration",
    summary="Rows are batch slots, columns are iterations. Static batching keeps a finished "
            "request's slot idle until its batch ends; vLLM refills it at the next iteration. "
            "V1 runs its synchronous loop here (its default async loop refills a seat one "
            "iteration later).",
    params=(
        Param("engine", "engine", "choice", "v0.5.5", choices=ENGINES,
              help="Whose scheduler runs the iteration-level side: vLLM v0.5.5's, or V1's "
                   "(one token budget for prompts and decodes, chunked prefill always on)."),
        Param("max_num_seqs", "batch slots", "int", 3, min=1, max=8,
              help="max_num_seqs: requests in the batch at once (v0.5.5's default is 256; "
                   "V1's 128 to 1024)."),
        # At least 2: the budget holds the longest request (a prompt token and an output
        # token at the least), since the static baseline never chunks.
        Param("max_num_batched_tokens", "token budget", "int", 32, min=2, max=256,
              help="max_num_batched_tokens: tokens computed per iteration (v0.5.5's default "
                   "is 2048, 512 with chunked prefill; V1's 2048 to 16384)."),
        Param("count", "requests", "int", 5, min=1, max=12, help="How many requests (A, B, ...)."),
        Param("prompt_lens", "prompt lengths", "text", (3, 10), parse=parse_range,
              format=format_range, help="Prompt tokens, drawn uniformly from this range.",
              extremes=RANGE_EXTREMES),
        Param("output_lens", "output lengths", "text", (2, 10), parse=parse_range,
              format=format_range, help="Output tokens, drawn uniformly from this range.",
              extremes=RANGE_EXTREMES),
        Param("arrival_rate", "arrivals per iteration", "float", 1.0, min=0.0, max=4.0,
              help="Poisson arrivals, requests per iteration (0: all at iteration 0)."),
        Param("chunked_prefill", "chunked prefill (v0.5.5 only)", "bool", False,
              help="enable_chunked_prefill for v0.5.5: mix prompt chunks and decodes in one "
                   "step. V1 always does, so this setting does not apply to it."),
        Param("seed", "seed", "int", 31, min=0, max=9999, help="Seeds lengths and arrivals."),
    ),
    scenario=scenario, context=context, view=view, narrate=narrate, label=label,
    details=details, check=check, questions=QUESTIONS, question_kinds=QUESTIONS.kinds,
),)
