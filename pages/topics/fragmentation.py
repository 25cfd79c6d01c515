"""The fragmentation page: where contiguous KV memory goes (the PagedAttention paper, Fig. 2).

Widget `fragmentation`:
scenario: one stream of requests served four times (Orca Max, Pow2, Oracle on a buddy
          allocator, and vLLM's paged `BlockSpaceManager`; sim/studies/fragmentation.py);
          the trace pairs the four runs' steps.
view:     one memory bar per policy in address order, split into token states, reserved,
          internal fragmentation, external fragmentation and free. The moment a request is
          refused although the free slots add up to enough is marked.
narrate:  arrivals, then what each policy admitted, finished, preempted or refused.

Chart `fig2-reproduction` (build time): `reproduce_fig2()`'s time-averaged shares beside
the paper's token-state shares.
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
from sim.studies.fragmentation import (CATEGORIES, PAPER_KV_SLOTS, PAPER_TOKEN_STATE_SHARE,
                                       PolicyRun, StepRecord, reproduce_fig2,
                                       simulate_policies)
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
                bits.append(f"admits {e.request_id} into a {c.size}-slot chunk at slot {c.start}")
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
    for start, size, kind, rid in segments:
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
        body.append(svg.rect(left + start * scale, bar, size * scale, 22, fill=color, rx=0,
                             tip=f"{who}{label}: slots {start}-{start + size - 1} ({size})"))
    if run.label == "vLLM" and v["block_size"] * scale >= 3:
        # Block boundaries of the paged pool.
        bs = v["block_size"]
        for b in range(bs, pool - pool % bs + 1, bs):
            x = left + b * scale
            body.append(svg.line(x, bar, x, bar + 22, stroke="bg", width=1))
    for start, size, rid in owners:
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


def render_fig2(shares: dict[str, dict[str, float]] | None = None) -> str:
    shares = shares if shares is not None else reproduce_fig2(**REPRO)
    left, right = 10, WIDTH - 10
    body: list[str] = []
    y = 4
    x = left
    for i, kind in enumerate(CATEGORIES[:4]):
        color, label = STYLE[kind]
        if i == 2:
            x, y = left, y + 16
        body.append(svg.rect(x, y + 2, 12, 12, fill=color, stroke="line", rx=1))
        body.append(svg.text(x + 16, y + 12.5, label, size=12))
        x += 30 + 7.2 * len(label)
    y += 24
    body.append(svg.text(left, y + 10, "Share of the KV memory in use, averaged over time",
                         size=12, fill="muted"))
    y += 18
    for label, paper in PAPER_TOKEN_STATE_SHARE.items():
        ours = shares[label]
        body.append(svg.text(left, y + 13, label, size=13))
        gap = 100 * (ours["token_states"] - paper)
        body.append(svg.text(right, y + 13, f"ours {_pct(ours['token_states'])} · paper "
                             f"{_pct(paper)} ({gap:+.1f} points)", size=11.5, anchor="end"))
        y += 18
        x = left
        for kind in CATEGORIES[:4]:
            w = (right - left) * ours[kind]
            color, name = STYLE[kind]
            body.append(svg.rect(x, y, w, 22, fill=color, rx=0,
                                 tip=f"{label}, {name}: {_pct(ours[kind])} (ours)"))
            if w > 28:
                body.append(svg.text(x + w / 2, y + 15, _pct(ours[kind], 0), size=10.5,
                                     anchor="middle", fill="bg" if kind != "free" else "fg"))
            x += w
        px = left + (right - left) * paper
        body.append(svg.line(px, y - 4, px, y + 26, stroke="fg", width=2,
                             stroke_dasharray="3 2"))
        body.append(svg.rect(px - 3, y + 24, 6, 6, fill="fg", rx=0,
                             tip=f"{label}: the paper's token states, {_pct(paper)}"))
        y += 36
    order = sorted(PAPER_TOKEN_STATE_SHARE, key=lambda k: shares[k]["token_states"])
    kept = order == list(PAPER_TOKEN_STATE_SHARE)
    body.append(svg.text(left, y + 8, "dashed mark: the paper's token-state share (Fig. 2)",
                         size=10.5, fill="muted"))
    body.append(svg.text(left, y + 24, "Ordering " + ("kept: " if kept else "NOT kept: ")
                         + " < ".join(order), size=11, fill="fg" if kept else "highlight"))
    return svg.document(WIDTH, y + 32, body,
                        label="Our time-averaged KV memory shares beside the paper's Fig. 2")


def _pct(x: float, decimals: int = 1) -> str:
    return f"{100 * x:.{decimals}f}%"


FIG2 = Chart(
    id="fig2-reproduction",
    title="The paper's Figure 2, reproduced",
    render=render_fig2,
    caption=(f"{REPRO['num_requests']} ShareGPT-like requests (sim.workload: log-normal "
             f"lengths, means 161 in / 338 out, seed {REPRO['seed']}), Poisson arrivals at "
             f"{REPRO['arrival_rate']} requests per step, one pool of "
             f"{REPRO['total_slots']:,} slots (OPT-13B's 12 GiB at 800 KiB a token), "
             f"max_model_len 2048, a buddy allocator for the three Orca policies, blocks of "
             f"{REPRO['block_size']} for vLLM."),
)

CHARTS = (FIG2,)
