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
from pages.views import svg
from pages.views.text import join, verb
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

WIDTH = 420
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

REQUESTS = RequestList(max_requests=MAX_REQUESTS, max_len=MAX_MODEL_LEN,
                       max_arrival=MAX_ARRIVAL)


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


def context(v: dict, trace: Trace) -> PoolContext:
    specs = {s.request_id: s for s in to_specs(v["requests"])}
    return PoolContext(v, trace, trace.meta["runs"], specs,
                       {rid: svg.seq(i) for i, rid in enumerate(specs)})


# ---------------------------------------------------------------------------- narration

def narrate(step: PoolStep, ctx: PoolContext) -> str:
    specs = ctx.specs
    parts = [f"Step {step.index}."]
    first = next(r for r in step.records if r is not None)
    arrived = [e for e in first.events if isinstance(e, RequestArrived)]
    if arrived:
        parts.append(join([f"{e.request_id} arrives ({specs[e.request_id].prompt_len} prompt, "
                           f"{specs[e.request_id].output_len} output tokens)" for e in arrived])
                     + ".")
    quiet = []
    for run, rec in zip(ctx.runs, step.records):
        if rec is None:
            quiet.append(run.label)
            continue
        said = _policy_sentence(run, rec)
        if said:
            parts.append(f"{run.label}: {said}")
    if quiet:
        parts.append(f"{join(quiet)} {verb(quiet, 'has', 'have')} served every request.")
    if len(parts) == 1:
        parts.append("Every running request stores one more token.")
    return " ".join(parts)


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
                bits.append(f"admits {e.request_id} into a {c.size}-slot chunk at slot "
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
        elif _new_refusal(run, rec):
            bits.append(f"{r.request_id} waits ({r.free_slots} slots free, "
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

def view(step: PoolStep, ctx: PoolContext) -> str:
    # A refusal adds a line under its bar, so frames differ in height. The view wraps its own
    # document: a Figure would be padded to the tallest frame, and the frames would change.
    v = ctx.values
    pool = v["pool"]
    left, right = 10, WIDTH - 10
    scale = (right - left) / pool
    body: list[str] = []
    # Legend, two rows.
    y = 4
    x = left
    for i, kind in enumerate(CATEGORIES):
        color, label = STYLE[kind]
        if i == 3:
            x, y = left, y + 16
        body.append(svg.rect(x, y + 2, 12, 12, fill=color, stroke="line", rx=1))
        body.append(svg.text(x + 16, y + 12.5, label, size=12))
        x += 30 + 7.2 * len(label)
    body.append(svg.text(right, y + 12.5, f"step {step.index}", size=13, anchor="end"))
    y += 26
    for run, rec in zip(ctx.runs, step.records):
        y = _policy_block(body, run, rec, y, left, right, scale, ctx.colors, v)
    return svg.document(WIDTH, y + 4, body,
                        label=f"KV memory of four policies at step {step.index}")


def outline(x: float, y: float, w: float, h: float, stroke: str, width: float,
            rx: float = 0) -> str:
    """An unfilled box (svg.rect always fills)."""
    style = f"fill:none;stroke:{svg.color(stroke)};stroke-width:{svg.num(width)}"
    return f"<rect{svg.attrs(x=x, y=y, width=w, height=h, rx=rx, style=style)}/>"


def _policy_block(body, run, rec, y, left, right, scale, colors, v) -> float:
    pool = v["pool"]
    body.append(svg.text(left, y + 13, run.label, size=13))
    if rec is not None and rec.waiting:
        body.append(svg.text(right, y + 13, "waiting: " + " ".join(rec.waiting), size=11,
                             anchor="end", fill="muted"))
    elif rec is None:
        body.append(svg.text(right, y + 13, "all served", size=11, anchor="end", fill="muted"))
    y += 18
    strip, bar = y, y + 13
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
        body.append(svg.rect(x, strip, w, 11, fill=colors[rid], rx=0,
                             tip=f"{rid}: slots {start}-{start + size - 1}"))
        if w >= 9:
            body.append(svg.text(x + w / 2, strip + 9.5, rid, size=10, anchor="middle",
                                 fill="bg"))
    # The bar: categories in address order.
    for start, size, kind, rid in segments:
        color, label = STYLE[kind]
        who = f"{rid}, " if rid else ""
        if rid and kind == "external_fragmentation":
            label += " (buddy rounding)"
        body.append(svg.rect(left + start * scale, bar, size * scale, 22, fill=color, rx=0,
                             tip=f"{who}{label}: slots {start}-{start + size - 1} ({size})"))
    if run.label == "vLLM" and v["block_size"] * scale >= 3:
        # Block boundaries of the paged pool.
        bs = v["block_size"]
        for b in range(bs, pool - pool % bs + 1, bs):
            x = left + b * scale
            body.append(svg.line(x, bar, x, bar + 22, stroke="bg", width=1))
    for start, size, _rid in owners:
        body.append(outline(left + start * scale, bar, size * scale, 22, "fg", 1))
    refused = rec is not None and rec.refused_although_free
    if refused:
        body.append(outline(left - 2, bar - 2, right - left + 4, 26, "highlight", 2.5, rx=3))
    y = bar + 22
    b = rec.breakdown if rec is not None else None
    if b is not None:
        nums = (f"{b.token_states} tokens · {b.reserved} reserved · "
                f"{b.internal_fragmentation} int. · {b.external_fragmentation} ext. · "
                f"{b.free} free")
    else:
        nums = f"{pool} free"
    body.append(svg.text(left, y + 14, nums, size=12, fill="muted"))
    y += 18
    if refused:
        r = rec.refusal
        body.append(svg.text(left, y + 12, f"✗ {r.request_id} refused: {r.free_slots} slots free, "
                             f"largest chunk {r.largest_free_chunk} < {r.chunk_slots}",
                             size=12, fill="highlight"))
        y += 17
    return y + 8


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


WIDGET = Widget(
    id="fragmentation",
    title="One request stream, four memory policies",
    summary="Each bar is the same KV pool in address order. Orca reserves one contiguous "
            "chunk per request on a buddy allocator; vLLM allocates 16-token blocks (here "
            "smaller) as tokens arrive.",
    scenario=scenario, context=context, view=view, narrate=narrate, check=check,
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
    "external_and_others": ("highlight", "external frag. & others", "ext. & others"),
}
# The table: policy name, row kind ("paper" / "sim"), then each category's right edge.
TABLE_KIND_X = 84
TABLE_RIGHT = dict(zip(FIG2_CATEGORIES, (176, 244, 312, 398)))
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
    """Each policy's bar twice, the paper's and ours, then a table of the same numbers side
    by side per category, with the gap in points."""
    shares = shares if shares is not None else reproduce_fig2(**REPRO)
    gaps = fig2_gaps(shares)
    width = CHART_WIDTH
    left, right = 2, width - 2
    bar_x = 40
    body: list[str] = []
    # Legend, two rows.
    y = 2
    x = left
    for i, kind in enumerate(FIG2_CATEGORIES):
        color, label, _ = FIG2_STYLE[kind]
        if i == 2:
            x, y = left, y + 16
        body.append(svg.rect(x, y + 2, 11, 11, fill=color, stroke="line", rx=1))
        body.append(svg.text(x + 15, y + 11.5, label, size=11))
        x += 26 + 6.5 * len(label)
    y += 22
    body.append(svg.text(left, y + 10, "Share of the whole KV pool while a request waits",
                         size=11, fill="muted"))
    y += 18
    for label, paper in PAPER_FIG2.items():
        ours = shares[label]
        worst = max(((abs(g), k) for (lab, k), g in gaps.items() if lab == label
                     and k in FIG2_CATEGORIES))
        body.append(svg.text(left, y + 11, label, size=12))
        note = (f"largest gap {gaps[(label, worst[1])]:+.1f} points "
                f"({FIG2_STYLE[worst[1]][2]})")
        body.append(svg.text(right, y + 11, note, size=10, anchor="end",
                             fill="highlight" if worst[0] > GAP_POINTS else "muted"))
        y += 16
        for who, bar in (("paper", paper), ("sim", ours)):
            body.append(svg.text(left, y + 11, who, size=10, fill="muted"))
            x = bar_x
            span = right - bar_x
            for kind in FIG2_CATEGORIES:
                value = bar[kind]
                if value is None:
                    continue
                color, name, _ = FIG2_STYLE[kind]
                body.append(svg.rect(x, y, span * value, 14, fill=color, rx=0,
                                     tip=f"{label}, {name}: {_pct(value)} ({who})"))
                x += span * value
            if any(v is None for v in bar.values()):    # the paper's vLLM: rest not split
                rest = (right - x) / span
                body.append(svg.rect(x, y, right - x, 14, fill="free", stroke="line", rx=0,
                                     tip=f"{label}: {_pct(rest)} not token states, split "
                                         f"not printed ({who})"))
            y += 17
        y += 7
    # The table: paper and simulation side by side per category.
    y += 2
    body.append(svg.text(left, y + 10, "% of the pool", size=10, fill="muted"))
    for kind in FIG2_CATEGORIES:
        body.append(svg.text(TABLE_RIGHT[kind], y + 10, FIG2_STYLE[kind][2], size=10,
                             fill="muted", anchor="end"))
    y += 4
    for label, paper in PAPER_FIG2.items():
        ours = shares[label]
        y += 15
        body.append(svg.line(left, y - 2, right, y - 2, stroke="line", width=0.5))
        body.append(svg.text(left, y + 10, label, size=10))
        body.append(svg.text(TABLE_KIND_X, y + 10, "paper", size=10, fill="muted"))
        for kind in FIG2_CATEGORIES:
            if paper[kind] is not None:
                body.append(svg.text(TABLE_RIGHT[kind], y + 10, f"{100 * paper[kind]:.1f}",
                                     size=10, anchor="end"))
        if any(paper[kind] is None for kind in FIG2_CATEGORIES):
            rest = 100 * (1 - paper["token_states"])
            body.append(svg.text(right, y + 10, f"{rest:.1f} in all, split not printed",
                                 size=10, anchor="end", fill="muted"))
        y += 15
        body.append(svg.text(TABLE_KIND_X, y + 10, "sim", size=10, fill="muted"))
        for kind in FIG2_CATEGORIES:
            cell = f"{100 * ours[kind]:.1f}"
            gap = gaps.get((label, kind))
            if gap is not None:
                cell += f" ({gap:+.1f})"
            far = gap is not None and abs(gap) > GAP_POINTS
            body.append(svg.text(TABLE_RIGHT[kind], y + 10, cell, size=10, anchor="end",
                                 fill="highlight" if far else "fg"))
    y += 20
    not_tokens = 100 * (1 - shares["vLLM"]["token_states"])
    footer = [
        f"(gap) = sim minus paper, in points; over {GAP_POINTS:g} in colour.",
        f"vLLM, all but token states: paper "
        f"{100 * (1 - PAPER_FIG2['vLLM']['token_states']):.1f}, sim {not_tokens:.1f} "
        f"({gaps[('vLLM', 'not_token_states')]:+.1f}).",
    ]
    order = sorted(PAPER_FIG2, key=lambda k: shares[k]["token_states"])
    kept = order == list(PAPER_FIG2)
    for line in footer:
        body.append(svg.text(left, y + 10, line, size=10, fill="muted"))
        y += 14
    body.append(svg.text(left, y + 10, "Ordering " + ("kept: " if kept else "NOT kept: ")
                         + " < ".join(order), size=10, fill="fg" if kept else "highlight"))
    return svg.document(width, y + 16, body,
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
