"""The fragmentation page: where contiguous KV memory goes (the PagedAttention paper, Fig. 2).

Widget `fragmentation`:
scenario: one stream of requests served four times (Orca Max, Pow2, Oracle on a buddy
          allocator, and vLLM's paged `BlockSpaceManager`; sim/studies/fragmentation.py);
          the trace pairs the four runs' steps.
view:     one memory bar per policy in address order, split into token states, reserved,
          internal fragmentation, external fragmentation and free, in the paper's accounting
          (a buddy chunk's rounding up is external; a paged block's unfilled tail is
          internal). The moment a request is refused although the free slots add up to
          enough is marked.
narrate:  arrivals, then what each policy admitted (with the rounding of its chunk),
          finished, preempted or refused.

Chart `fig2-reproduction` (build time): `reproduce_fig2()`'s bars beside the paper's Fig. 2,
and a table of both, category by category, with the gaps.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from pages.framework.registry import Chart
from pages.framework.request_list import RequestList
from pages.framework.widget import Context, Param, Widget
from pages.questions import Asker, allocation
from pages.views import fit, svg
from pages.views import legend as legend_mod  # this module's own legend() draws it
from pages.views.text import a, join, plural, verb, wrap_items
from sim.events import Admitted, Preempted, RequestArrived, RequestFinished
from sim.studies.contiguous import ChunkAllocated, next_power_of_two
from sim.studies.fragmentation import (
    CATEGORIES,
    FIG2_CATEGORIES,
    PAPER_FIG2,
    PAPER_KV_SLOTS,
    PolicyRun,
    StepRecord,
    reproduce_fig2,
    simulate_policies,
)
from sim.studies.workload import RequestSpec
from sim.trace import Trace

WIDTH = 400
SMALL = fit.min_size(WIDTH)         # the smallest text: 11 px on a phone (13.5 units)
PAD = 6
MAX_REQUESTS = 10
MAX_STEPS = 80
MAX_MODEL_LEN = 64      # the max_len field's top; a request's total must fit max_model_len
MAX_ARRIVAL = 60

# Category -> (palette colour, short label for the legend and the numbers).
STYLE = {
    "token_states": ("accent", "token states"),
    "reserved": ("used", "reserved"),
    "internal_fragmentation": ("waste", "internal frag."),
    "external_fragmentation": ("highlight", "external frag."),
    "free": ("free", "free"),
}

# A request's prompt and output share max_model_len: each is at most one less.
REQUESTS = RequestList(max_requests=MAX_REQUESTS, max_len=MAX_MODEL_LEN - 1,
                       max_arrival=MAX_ARRIVAL, max_total=MAX_MODEL_LEN)


def to_specs(requests) -> list[RequestSpec]:
    return [RequestSpec(r.name, r.prompt, r.output, r.arrival) for r in REQUESTS.named(requests)]


# ---------------------------------------------------------------------------- scenario

@lru_cache(maxsize=1)           # check() and scenario() see the same values: simulate once
def policy_runs(requests, pool: int, max_len: int, block_size: int) -> tuple[PolicyRun, ...]:
    return tuple(simulate_policies(to_specs(requests), pool, max_model_len=max_len,
                                   block_size=block_size, max_steps=10 * MAX_STEPS,
                                   record_layout=True))


@dataclass(frozen=True, slots=True)
class PoolStep:
    """One step of the trace: each policy's record of step `index`, in POLICIES order (None
    for a policy that had served every request before it)."""
    index: int
    records: tuple[StepRecord | None, ...]


def scenario(v: dict) -> Trace:
    runs = policy_runs(v["requests"], v["pool"], v["max_len"], v["block_size"])
    count = max(len(r.steps) for r in runs)
    steps = tuple(PoolStep(i, tuple(r.steps[i] if i < len(r.steps) else None for r in runs))
                  for i in range(count))
    return Trace(steps, meta={"runs": runs})


@dataclass(frozen=True)
class PoolContext(Context):
    runs: tuple                  # one PolicyRun per policy: labels, and earlier steps
    specs: dict                  # request id -> RequestSpec
    colors: dict                 # request id -> palette colour
    legend: tuple = ()           # (mark, label) pairs the picture explains
    number_rows: tuple = ()      # per policy: lines its numbers take at most (fixed layout)
    refusal_rows: tuple = ()     # per policy: lines a refusal message takes at most


def context(v: dict, trace: Trace) -> PoolContext:
    specs = {s.request_id: s for s in to_specs(v["requests"])}
    runs = trace.meta["runs"]
    # Every bar stays in one place from frame to frame: each policy gets the most lines its
    # numbers and its refusal message need in any step.
    number_rows = tuple(max(len(number_lines(numbers(r.breakdown))) for r in run.steps)
                        for run in runs)
    refusal_rows = tuple(max((len(refusal_lines(r.refusal)) for r in run.steps
                              if r.refused_although_free), default=0) for run in runs)
    marks = [m for m in LEGEND_MARKS if m[0] != "refused" or any(refusal_rows)]
    legend_items = tuple((kind, STYLE[kind][1]) for kind in CATEGORIES) + tuple(marks)
    return PoolContext(v, trace, runs, specs,
                       {rid: svg.seq(i) for i, rid in enumerate(specs)}, legend_items,
                       number_rows, refusal_rows)


# ---------------------------------------------------------------------------- narration

def label(step: PoolStep, ctx: PoolContext | None = None) -> str:
    return f"step {step.index}"


def _cause(step: PoolStep, ctx: PoolContext) -> str | None:
    """Arrivals and finishes: what sets the step in motion."""
    first = next(r for r in step.records if r is not None)
    arrived = [e.request_id for e in first.events if isinstance(e, RequestArrived)]
    parts = []
    if arrived:
        sizes = [f"{ctx.specs[r].prompt_len}+{ctx.specs[r].output_len}" for r in arrived]
        parts.append(f"{join(arrived)} {verb(arrived, 'arrives', 'arrive')} "
                     f"({join(sizes)} tokens)")
    finished: dict[str, list[str]] = {}
    for run, rec in zip(ctx.runs, step.records):
        if rec is not None:
            for e in rec.events:
                if isinstance(e, RequestFinished):
                    finished.setdefault(e.request_id, []).append(run.label)
    by_where: dict[tuple, list[str]] = {}
    for rid, where in finished.items():
        by_where.setdefault(tuple(where), []).append(rid)
    for where, rids in by_where.items():
        under = f"under {_policies(list(where), ctx)}"
        parts.append(f"{join(rids)} {verb(rids, 'finishes', 'finish')} {under}")
    if not parts:
        return None
    return _sentence("; ".join(parts))


def _policies(labels: list[str], ctx: PoolContext) -> str:
    """"every policy", "every policy but Orca (Max)", or the names."""
    everyone = [run.label for run in ctx.runs]
    if labels == everyone:
        return "every policy"
    if len(labels) == len(everyone) - 1 and len(everyone) > 2:
        return f"every policy but {next(x for x in everyone if x not in labels)}"
    return join(labels)


def _sentence(text: str) -> str:
    """Capitalised and closed with a full stop; "vLLM" keeps its small v."""
    if not text.startswith("vLLM"):
        text = text[0].upper() + text[1:]
    return text + "."


def _short(run_label: str) -> str:
    """"Orca (Max)" -> "Max"; "vLLM" stays."""
    return run_label[len("Orca ("):-1] if run_label.startswith("Orca (") else run_label


def _effect(step: PoolStep, ctx: PoolContext) -> str | None:
    """Preemptions (they happen first, while running requests grow), then who each policy
    admits, policies admitting the same requests grouped."""
    groups: dict[tuple, list[str]] = {}
    parts = []
    for run, rec in zip(ctx.runs, step.records):
        if rec is None:
            continue
        admitted = [e.request_id for e in rec.events if isinstance(e, Admitted)]
        for e in rec.events:
            if isinstance(e, Preempted):
                again = e.request_id in admitted
                parts.append(f"{run.label} preempts {e.request_id} (recompute) to make room "
                             f"for {e.needed_by}'s next token"
                             + (f", then admits {e.request_id} again" if again else ""))
                if again:
                    admitted.remove(e.request_id)
        if admitted:
            groups.setdefault(tuple(admitted), []).append(run.label)
    for admitted, who in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        name = _policies(who, ctx)
        parts.append(f"{name} {verb(1 if name.startswith('every') else who, 'admits', 'admit')} "
                     f"{join(list(admitted))}")
    if not parts:
        return None
    return _sentence("; ".join(parts))


def _consequence(step: PoolStep, ctx: PoolContext) -> str | None:
    """The one thing about memory this step shows best."""
    pairs = [(run, rec) for run, rec in zip(ctx.runs, step.records) if rec is not None]
    for run, rec in pairs:
        r = rec.refusal
        if rec.refused_although_free:
            return (f"{run.label} refuses {r.request_id} although {r.free_slots} slots are "
                    f"free: the buddy allocator needs one free chunk of {r.chunk_slots}, and "
                    f"the largest is {r.largest_free_chunk}.")
    for _run, rec in pairs:
        r = rec.refusal
        if r is not None and r.reason == "watermark":
            return f"vLLM keeps {r.request_id} waiting: its free blocks are the watermark."
    news = [(run, rec.refusal) for run, rec in pairs
            if rec.refusal is not None and rec.refusal.reason == "full"
            and _new_refusal(run, rec)]
    if news:
        run, r = news[0]
        if r.free_slots == 0:
            why = f"no slot is free for its {r.chunk_slots}-slot chunk"
        else:
            why = f"{r.free_slots} free slots are fewer than the {r.asked_slots} it asks for"
        return f"{run.label} makes {r.request_id} wait: {why}."
    rounded = []
    for run, rec in pairs:
        for e in rec.events:
            if isinstance(e, ChunkAllocated) and e.size > e.asked:
                rounded.append((e.size - e.asked, run.label, e))
    if rounded:
        extra, who, e = max(rounded, key=lambda x: x[0])
        return (f"{who} asks {e.asked} slots for {e.request_id} and the buddy allocator "
                f"gives it {a(f'{e.size}-slot chunk')}: {plural(extra, 'slot')} of external "
                "fragmentation.")
    done = [run.label for run, rec in zip(ctx.runs, step.records)
            if rec is None and step.index == len(run.steps)]
    if done:
        return f"{join(done)} {verb(done, 'has', 'have')} served every request."
    return None


def narrate(step: PoolStep, ctx: PoolContext) -> str:
    said = [x for x in (_cause(step, ctx), _effect(step, ctx), _consequence(step, ctx)) if x]
    if not said:
        live = [(run, rec) for run, rec in zip(ctx.runs, step.records) if rec is not None]
        names = [run.label for run, _ in live]
        paged = "vLLM" in names
        said = ["Every running request stores one more token"
                + ("" if len(live) == len(ctx.runs) else f" in {join(names)}") + ": "
                + ("reserved slots turn into token states, and vLLM takes a block only "
                   "when one fills." if paged and len(live) > 1 else
                   "vLLM takes a block only when one fills." if paged else
                   "reserved slots turn into token states."),
                "Token states fill " + join([
                    f"{100 * rec.breakdown.token_states / run.total_slots:.0f}% "
                    f"({_short(run.label)})" for run, rec in live]) + " of the pool."]
    return " ".join(said)


def details(step: PoolStep, ctx: PoolContext) -> list[str]:
    """Every event of every policy, and each bar's numbers."""
    out = []
    first = next(r for r in step.records if r is not None)
    for e in first.events:
        if isinstance(e, RequestArrived):
            spec = ctx.specs[e.request_id]
            out.append(f"{e.request_id} arrives: {plural(spec.prompt_len, 'prompt token')}, "
                       f"{plural(spec.output_len, 'output token')}.")
    for run, rec in zip(ctx.runs, step.records):
        if rec is None:
            out.append(f"{run.label} has served every request.")
            continue
        said = _policy_sentence(run, rec)
        b = rec.breakdown
        out.append(f"{run.label}: {said or 'every running request stores one more token.'}")
        out.append(f"{run.label}'s pool: {b.token_states} token states, {b.reserved} reserved, "
                   f"{b.internal_fragmentation} internal and {b.external_fragmentation} "
                   f"external fragmentation, {b.free} free.")
    return out


def _policy_sentence(run: PolicyRun, rec: StepRecord) -> str:
    bits = []
    chunks = {e.request_id: e for e in rec.events if isinstance(e, ChunkAllocated)}
    for e in rec.events:
        if isinstance(e, RequestFinished):
            bits.append(f"{e.request_id} finishes and frees its memory")
        elif isinstance(e, Preempted):
            bits.append(f"{e.request_id} is preempted (recompute) to make room for {e.needed_by}")
    for e in rec.events:
        if isinstance(e, Admitted):
            if e.request_id in chunks:
                c = chunks[e.request_id]
                rounding = (f" ({c.asked} asked; {c.size - c.asked} rounded up, external "
                            f"fragmentation)" if c.size > c.asked else "")
                bits.append(f"admits {e.request_id} into {a(f'{c.size}-slot chunk')} at slot "
                            f"{c.start}{rounding}")
            else:
                bits.append(f"admits {e.request_id}"
                            + (" to recompute its tokens" if e.recompute else ""))
    r = rec.refusal
    if r is not None:
        if r.reason == "fragmented":
            bits.append(f"refuses {r.request_id} although {r.free_slots} slots are free: it asks "
                        f"for {r.asked_slots}, the buddy allocator needs one free chunk of "
                        f"{r.chunk_slots}, and the largest is {r.largest_free_chunk} "
                        f"(external fragmentation)")
        elif r.reason == "watermark":
            bits.append(f"{r.request_id} waits: the free blocks are vLLM's watermark")
        else:
            bits.append(f"{r.request_id} waits ({plural(r.free_slots, 'slot')} free, "
                        f"{r.asked_slots} needed)")
    if not bits:
        return ""
    sentence = "; ".join(bits)
    return sentence + "."


def _new_refusal(run: PolicyRun, rec: StepRecord) -> bool:
    """A plain 'full' refusal is told once per request, not every step it waits."""
    if rec.step == 0:
        return True
    prev = run.steps[rec.step - 1].refusal
    return prev is None or prev.request_id != rec.refusal.request_id


# ------------------------------------------------------------------------------ drawing

LEGEND_MARKS = (("owner", "strip: who holds the slots"),
                ("block", "vLLM block boundary"),
                ("refused", "refused, though enough is free"))


def _swatch(kind: str, x: float, y: float) -> list[str]:
    s = 14
    if kind in STYLE:
        return [svg.rect(x, y, s, s, fill=STYLE[kind][0], stroke="line", rx=1)]
    if kind == "owner":
        return [svg.rect(x, y + 2, s, 6, fill="seq-0", rx=0),
                svg.rect(x, y + 8, s, 6, fill="accent", rx=0)]
    if kind == "block":
        return [svg.rect(x, y, s, s, fill="accent", rx=0),
                svg.line(x + s / 2, y, x + s / 2, y + s, stroke="bg", width=1.5)]
    if kind == "refused":
        return [outline(x + 1, y + 1, s - 2, s - 2, "fg", 2, dash="3 2")]
    return []


def legend(y: float, entries) -> tuple[list[str], float]:
    out = []
    cx, cy = PAD, y
    row = SMALL * 1.6
    for kind, text in entries:
        cx, cy = legend_mod.swatch_item(out, cx, cy, PAD, WIDTH - PAD, SMALL, _swatch, kind,
                                        text)
    return out, cy + row - y


def numbers(b) -> list[str]:
    """A bar's numbers, zeros left out except tokens and free."""
    items = [(b.token_states, "tokens", True), (b.reserved, "reserved", False),
             (b.internal_fragmentation, "internal", False),
             (b.external_fragmentation, "external", False), (b.free, "free", True)]
    return [f"{n} {word}" for n, word, always in items if n or always]


def number_lines(items: list[str]) -> list[str]:
    """Items joined with " · ", wrapped between items to the picture's width."""
    return wrap_items(items, fit.chars(WIDTH - 2 * PAD, SMALL), " · ")


def refusal_lines(r) -> list[str]:
    return fit.lines(f"✗ {r.request_id} refused: {r.free_slots} free, largest chunk "
                     f"{r.largest_free_chunk} < {r.chunk_slots}", SMALL, WIDTH - 2 * PAD)


def view(step: PoolStep, ctx: PoolContext) -> svg.Figure:
    v = ctx.values
    pool = v["pool"]
    left, right = PAD, WIDTH - PAD
    scale = (right - left) / pool
    body: list[str] = [
        svg.text(left, 18, label(step), size=SMALL + 2),
        svg.text(right, 18, f"{pool} slots · vLLM blocks of {v['block_size']}", size=SMALL,
                 anchor="end", fill="muted")]
    y = 28
    elements, h = legend(y, ctx.legend)
    body += elements
    y += h + 6
    for i, (run, rec) in enumerate(zip(ctx.runs, step.records)):
        y = _policy_block(body, run, rec, y, left, right, scale, ctx, i)
    return svg.Figure(WIDTH, y + 2, body, f"KV memory of four policies at {label(step)}")


def outline(x: float, y: float, w: float, h: float, stroke: str, width: float,
            rx: float = 0, dash: str | None = None, key: str | None = None) -> str:
    """An unfilled box (svg.rect always fills); `key` is its animation key."""
    style = f"fill:none;stroke:{svg.color(stroke)};stroke-width:{svg.num(width)}"
    if dash:
        style += f";stroke-dasharray:{dash}"
    return f"<rect{svg.attrs(x=x, y=y, width=w, height=h, rx=rx, style=style, data_k=key)}/>"


def _policy_block(body, run, rec, y, left, right, scale, ctx, index) -> float:
    v = ctx.values
    pool = v["pool"]
    body.append(svg.text(left, y + SMALL + 1, run.label, size=SMALL + 1))
    if rec is not None and rec.waiting:
        status = "waiting: " + " ".join(rec.waiting)
    elif rec is None:
        status = "all served"
    else:
        status = ""
    if status:
        body.append(svg.text(right, y + SMALL + 1, status, size=SMALL, anchor="end",
                             fill="muted"))
    y += SMALL + 7
    strip, bar = y, y + 17
    segments = rec.layout if rec is not None else ((0, pool, "free", None),)
    # Request strip: who owns which slots (merged runs of one owner).
    owners: list[list] = []
    for start, size, _kind, rid in segments:
        if rid is None:
            continue
        if owners and owners[-1][2] == rid and owners[-1][0] + owners[-1][1] == start:
            owners[-1][1] += size
        else:
            owners.append([start, size, rid])
    for start, size, rid in owners:
        x, w = left + start * scale, size * scale
        parts = [svg.rect(x, strip, w, 16, fill=ctx.colors[rid], rx=0)]
        if w >= fit.text_width(rid, SMALL) + 2:
            parts.append(svg.text(x + w / 2, strip + 12.5, rid, size=SMALL, anchor="middle",
                                  stroke=svg.color("bg"), stroke_width=3,
                                  paint_order="stroke"))
        body.append(svg.group(parts, tip=f"{rid}: slots {start}-{start + size - 1}",
                              data_k=f"own:{index}:{rid}:{start}"))
    # The bar: categories in address order.
    for start, size, kind, rid in segments:
        color, name = STYLE[kind]
        who = f"{rid}, " if rid else ""
        if rid and kind == "external_fragmentation":
            name += " (buddy rounding)"
        body.append(svg.rect(left + start * scale, bar, size * scale, 22, fill=color, rx=0,
                             tip=f"{who}{name}: slots {start}-{start + size - 1} ({size})",
                             data_k=f"seg:{index}:{start}"))
    if run.label == "vLLM" and v["block_size"] * scale >= 3:
        # Block boundaries of the paged pool.
        bs = v["block_size"]
        for b in range(bs, pool - pool % bs + 1, bs):
            x = left + b * scale
            body.append(svg.line(x, bar, x, bar + 22, stroke="bg", width=1))
    for start, size, rid in owners:
        body.append(outline(left + start * scale, bar, size * scale, 22, "fg", 1,
                            key=f"own:{index}:{rid}:{start}/o"))
    refused = rec is not None and rec.refused_although_free
    if refused:
        body.append(outline(left - 2, bar - 2, right - left + 4, 26, "fg", 2.5, rx=3,
                            dash="5 3", key=f"refused:{index}"))
    y = bar + 22 + 4
    lines = number_lines(numbers(rec.breakdown)) if rec is not None else [f"{pool} free"]
    for line in lines:
        body.append(svg.text(left, y + SMALL, line, size=SMALL, fill="muted"))
        y += SMALL * 1.35
    y += SMALL * 1.35 * (ctx.number_rows[index] - len(lines))
    if refused:
        for line in refusal_lines(rec.refusal):
            body.append(svg.text(left, y + SMALL, line, size=SMALL))
            y += SMALL * 1.35
    elif ctx.refusal_rows[index]:
        y += SMALL * 1.35 * ctx.refusal_rows[index]
    return y + 10


# ------------------------------------------------------------------- cross-field checks

def check(v: dict) -> dict[str, str]:
    errors: dict[str, str] = {}
    specs = to_specs(v["requests"])
    for s in specs:
        if s.total_len > v["max_len"]:
            errors["requests"] = (f"requests: {s.request_id} has {s.total_len} tokens; "
                                  f"at most max_model_len ({v['max_len']})")
            return errors
    if v["block_size"] > v["pool"]:
        errors["block_size"] = "block size: at most the pool size"
        return errors
    piece = 1 << (v["pool"].bit_length() - 1)
    if next_power_of_two(v["max_len"]) > piece:
        errors["max_len"] = (f"max_model_len: Orca (Max) needs a chunk of "
                             f"{next_power_of_two(v['max_len'])} slots; the largest a pool of "
                             f"{v['pool']} slots has is {piece}")
        return errors
    try:
        runs = policy_runs(v["requests"], v["pool"], v["max_len"], v["block_size"])
    except ValueError as err:           # the paged pool can never hold a request
        errors["pool"] = f"pool slots: {err}"
        return errors
    except RuntimeError as err:
        errors["requests"] = f"requests: {err}"
        return errors
    longest = max(len(r.steps) for r in runs)
    if longest > MAX_STEPS:
        errors["requests"] = (f"requests: this stream takes {longest} steps to serve; at most "
                              f"{MAX_STEPS}: use fewer or shorter requests, or a bigger pool")
    return errors


QUESTIONS = Asker(("frag-reserve", allocation.reserve(
    lambda ctx: ctx.trace.meta["runs"], lambda ctx: ctx.values["max_len"],
    lambda ctx: ctx.values["block_size"], lambda ctx: to_specs(ctx.values["requests"]))))


WIDGET = Widget(
    id="fragmentation",
    keys=("own", "seg"),
    goal=('Tell reserved slots, internal and external fragmentation apart, and see why paging '
          "leaves only the last block's tail unused."),
    title="One request stream, four memory policies",
    summary="Each bar is the same KV pool in address order. Orca reserves one contiguous "
            "chunk per request on a buddy allocator; vLLM allocates 16-token blocks (here "
            "smaller) as tokens arrive.",
    scenario=scenario, context=context, view=view, narrate=narrate, label=label,
    details=details, check=check, questions=QUESTIONS, question_kinds=QUESTIONS.kinds,
    params=(
        REQUESTS.param("requests", "5/11, 6/4, 8/8, 5/5@1, 10/12@5, 3/5@6"),
        Param("pool", "pool slots", "int", 64, min=16, max=128,
              help="Token slots in the KV pool (16 to 128)."),
        Param("max_len", "max_model_len", "int", 32, min=8, max=MAX_MODEL_LEN,
              help="What Orca (Max) reserves per request (8 to 64)."),
        Param("block_size", "block size (vLLM)", "int", 4, min=1, max=16,
              help="Tokens per block of vLLM's paged pool (1 to 16)."),
    ),
)

WIDGETS = (WIDGET,)


# -------------------------------------------------------------- Fig. 2 reproduction

REPRO = {"num_requests": 200, "seed": 0, "arrival_rate": 0.2, "total_slots": PAPER_KV_SLOTS,
         "block_size": 16}
CHART_WIDTH = 400

# Fig. 2's four parts: (palette colour, legend label, table heading).
FIG2_STYLE = {
    "token_states": ("accent", "token states", "tokens"),
    "reserved": ("used", "reservation", "reserved"),
    "internal_fragmentation": ("waste", "internal frag.", "internal"),
    "external_and_others": ("highlight", "external frag. & others", "ext.&oth."),
}
# Each policy's table: the row name's column, then each category's right edge.
TABLE_RIGHT = dict(zip(FIG2_CATEGORIES, (140, 222, 304, 394)))
GAP_POINTS = 5.0        # a gap wider than this is drawn in the highlight colour


def fig2_gaps(shares: dict[str, dict[str, float]]) -> dict[tuple[str, str], float]:
    """(policy, category) -> simulation minus paper, in points, for every number the paper
    prints (vLLM's split of its last 3.7% is not printed; its sum is under "vLLM" and
    "not_token_states")."""
    gaps = {}
    for label, paper in PAPER_FIG2.items():
        for kind in FIG2_CATEGORIES:
            if paper[kind] is not None:
                gaps[(label, kind)] = 100 * (shares[label][kind] - paper[kind])
    vllm = shares["vLLM"]
    gaps[("vLLM", "not_token_states")] = 100 * ((1 - vllm["token_states"])
                                                - (1 - PAPER_FIG2["vLLM"]["token_states"]))
    # Rounded to the tenth the chart prints, and never "-0.0".
    return {key: round(gap, 1) + 0.0 for key, gap in gaps.items()}


def render_fig2(shares: dict[str, dict[str, float]] | None = None) -> str:
    """Each policy's bar twice, the paper's and ours, then its numbers: paper, sim and the
    gap in points, category by category."""
    shares = shares if shares is not None else reproduce_fig2(**REPRO)
    gaps = fig2_gaps(shares)
    width = CHART_WIDTH
    left, right = PAD, width - PAD
    bar_x = 56
    row = SMALL * 1.4
    body: list[str] = []
    # Legend, wrapped.
    items = [(kind, FIG2_STYLE[kind][1]) for kind in FIG2_CATEGORIES]
    cx, y = left, 2
    for kind, text in items:
        w = 14 + 5 + fit.text_width(text, SMALL)
        if cx > left and cx + w > right:
            cx, y = left, y + SMALL * 1.6
        body.append(svg.rect(cx, y + 2, 14, 14, fill=FIG2_STYLE[kind][0], stroke="line", rx=1))
        body.append(svg.text(cx + 19, y + SMALL, text, size=SMALL))
        cx += w + 12
    y += SMALL * 1.6 + 4
    lines, h = fit.paragraph(left, y, "Share of the whole KV pool while a request waits, in %; "
                             f"gap = sim minus paper, in points (over {GAP_POINTS:g} in "
                             "colour).", size=SMALL, room=right - left, fill="muted")
    body += lines
    y += h + 8
    for label, paper in PAPER_FIG2.items():
        ours = shares[label]
        body.append(svg.line(left, y, right, y, stroke="line", width=0.5))
        body.append(svg.text(left, y + SMALL + 4, label, size=SMALL + 1))
        y += SMALL + 10
        for who, bar in (("paper", paper), ("sim", ours)):
            body.append(svg.text(left, y + 12, who, size=SMALL, fill="muted"))
            x = bar_x
            span = right - bar_x
            for kind in FIG2_CATEGORIES:
                value = bar[kind]
                if value is None:
                    continue
                color, name, _ = FIG2_STYLE[kind]
                body.append(svg.rect(x, y, span * value, 15, fill=color, rx=0,
                                     tip=f"{label}, {name}: {_pct(value)} ({who})"))
                x += span * value
            if any(v is None for v in bar.values()):    # the paper's vLLM: rest not split
                rest = (right - x) / span
                body.append(svg.rect(x, y, right - x, 15, fill="free", stroke="line", rx=0,
                                     tip=f"{label}: {_pct(rest)} not token states, split "
                                         f"not printed ({who})"))
            y += 19
        # The numbers: a heading row, then paper, sim and gap.
        y += 2
        for kind in FIG2_CATEGORIES:
            body.append(svg.text(TABLE_RIGHT[kind], y + SMALL, FIG2_STYLE[kind][2], size=SMALL,
                                 fill="muted", anchor="end"))
        y += row
        body.append(svg.text(left, y + SMALL, "paper", size=SMALL, fill="muted"))
        for kind in FIG2_CATEGORIES:
            text = f"{100 * paper[kind]:.1f}" if paper[kind] is not None else "–"
            body.append(svg.text(TABLE_RIGHT[kind], y + SMALL, text, size=SMALL, anchor="end",
                                 fill="fg" if paper[kind] is not None else "muted"))
        y += row
        body.append(svg.text(left, y + SMALL, "sim", size=SMALL, fill="muted"))
        for kind in FIG2_CATEGORIES:
            body.append(svg.text(TABLE_RIGHT[kind], y + SMALL, f"{100 * ours[kind]:.1f}",
                                 size=SMALL, anchor="end"))
        y += row
        body.append(svg.text(left, y + SMALL, "gap", size=SMALL, fill="muted"))
        for kind in FIG2_CATEGORIES:
            gap = gaps.get((label, kind))
            if gap is None:
                continue
            far = abs(gap) > GAP_POINTS
            body.append(svg.text(TABLE_RIGHT[kind], y + SMALL, f"{gap:+.1f}", size=SMALL,
                                 anchor="end", fill="highlight" if far else "fg",
                                 font_weight="bold" if far else None))
        y += row + 6
    not_tokens = 100 * (1 - shares["vLLM"]["token_states"])
    order = sorted(PAPER_FIG2, key=lambda k: shares[k]["token_states"])
    kept = order == list(PAPER_FIG2)
    body.append(svg.line(left, y, right, y, stroke="line", width=0.5))
    y += 4
    for text, fill in (
            (f"vLLM, all but token states: paper "
             f"{100 * (1 - PAPER_FIG2['vLLM']['token_states']):.1f} (split not printed), sim "
             f"{not_tokens:.1f}, gap {gaps[('vLLM', 'not_token_states')]:+.1f}.", "muted"),
            ("Ordering " + ("kept: " if kept else "NOT kept: ") + " < ".join(order) + ".",
             "fg" if kept else "highlight")):
        lines, h = fit.paragraph(left, y, text, size=SMALL, room=right - left, fill=fill)
        body += lines
        y += h + 2
    return svg.document(width, y + 6, body,
                        label="The paper's Fig. 2 and our reproduction, category by category")


def _pct(x: float, decimals: int = 1) -> str:
    return f"{100 * x:.{decimals}f}%"


FIG2 = Chart(
    id="fig2-reproduction",
    title="The paper's Figure 2, reproduced",
    render=render_fig2,
    caption=(f"{REPRO['num_requests']} ShareGPT-like requests (sim.studies.workload: log-normal "
             f"lengths, means 161 in / 338 out, seed {REPRO['seed']}), Poisson arrivals at "
             f"{REPRO['arrival_rate']} requests per step, one pool of "
             f"{REPRO['total_slots']:,} slots (OPT-13B's 12 GiB at 800 KiB a token), "
             f"max_model_len 2048, a buddy allocator for the three Orca policies, blocks of "
             f"{REPRO['block_size']} for vLLM. The paper's accounting: reservation = slots "
             f"reserved for the request's future tokens; internal = slots reserved beyond its "
             f"true length (for vLLM, the unfilled tail of each last block); external & "
             f"others = the buddy allocator's rounding up to a power of two, free chunks too "
             f"small for the waiting request, and other free slots. Each bar is averaged over "
             f"the steps in which a request waits, as a share of the whole pool."),
)

CHARTS = (FIG2,)
