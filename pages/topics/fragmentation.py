"""The fragmentation page: where contiguous KV memory goes (the PagedAttention paper, Fig. 2).

Widget `fragmentation`: one stream of requests served four times (Orca Max, Pow2, Oracle on
a buddy allocator, and vLLM's paged `BlockSpaceManager`; sim/studies/fragmentation.py), one memory
bar per policy in address order, split into token states, reserved, internal
fragmentation, external fragmentation and free. The moment a request is refused although
the free slots add up to enough is marked.

Chart `fig2-reproduction` (build time): `reproduce_fig2()`'s time-averaged shares beside
the paper's token-state shares.
"""
from __future__ import annotations

import re

from pages.views import svg
from pages.framework.registry import Chart
from pages.framework.widget import Param, Widget
from sim.studies.contiguous import ChunkAllocated, next_power_of_two
from sim.events import Admitted, Preempted, RequestArrived, RequestFinished
from sim.studies.fragmentation import (CATEGORIES, PAPER_KV_SLOTS, PAPER_TOKEN_STATE_SHARE, POLICIES,
                               make_memory, reproduce_fig2, simulate)
from sim.studies.workload import RequestSpec

WIDTH = 420
MAX_REQUESTS = 10
MAX_STEPS = 80
IDS = "ABCDEFGHIJ"

# Category -> (palette colour, short label for the legend and the numbers).
STYLE = {
    "token_states": ("accent", "token states"),
    "reserved": ("used", "reserved"),
    "internal_fragmentation": ("waste", "internal frag."),
    "external_fragmentation": ("highlight", "external frag."),
    "free": ("free", "free"),
}

# --------------------------------------------------------------- the request list field

_ITEM = re.compile(r"^(\d{1,3})[/+](\d{1,3})(?:@(\d{1,3}))?$")
REQUESTS_HELP = ("Up to 10 requests, comma-separated, each prompt/output@arrival step "
                 "(e.g. 5/11@0 or 5/11 for step 0); named A, B, C... in order.")


def parse_requests(text: str) -> tuple[tuple[int, int, int], ...]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError("give at least one request, e.g. 5/11@0")
    if len(items) > MAX_REQUESTS:
        raise ValueError(f"at most {MAX_REQUESTS} requests")
    out = []
    for i, item in enumerate(items):
        m = _ITEM.match(item.replace(" ", ""))
        if not m:
            raise ValueError(f"request {i + 1} should look like 5/11@0 (prompt/output@arrival)")
        prompt, output, arrival = int(m[1]), int(m[2]), int(m[3] or 0)
        if prompt < 1 or output < 1:
            raise ValueError(f"request {IDS[i]}: prompt and output need at least 1 token")
        if arrival > 60:
            raise ValueError(f"request {IDS[i]}: arrival step at most 60")
        out.append((prompt, output, arrival))
    return tuple(out)


def format_requests(reqs: tuple[tuple[int, int, int], ...]) -> str:
    return ", ".join(f"{p}/{o}@{a}" for p, o, a in reqs)


def to_specs(reqs) -> list[RequestSpec]:
    return [RequestSpec(IDS[i], p, o, a) for i, (p, o, a) in enumerate(reqs)]


DEFAULT_REQUESTS = ((5, 11, 0), (6, 4, 0), (8, 8, 0), (5, 5, 1), (10, 12, 5), (3, 5, 6))


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
        runs = run_all(v)
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


_last_runs: dict = {}      # check() and build() see the same values: simulate once


def run_all(v: dict):
    key = (v["requests"], v["pool"], v["max_len"], v["block_size"])
    if key not in _last_runs:
        _last_runs.clear()
        _last_runs[key] = _run_all(v)
    return _last_runs[key]


def _run_all(v: dict):
    specs = to_specs(v["requests"])
    return [simulate(specs, make_memory(p, v["pool"], max_model_len=v["max_len"],
                                        block_size=v["block_size"]),
                     record_layout=True, max_steps=10 * MAX_STEPS)
            for p in POLICIES]


# ---------------------------------------------------------------------------- frames

def build(v: dict) -> list[dict]:
    runs = run_all(v)
    specs = {s.request_id: s for s in to_specs(v["requests"])}
    colors = {rid: svg.seq(i) for i, rid in enumerate(specs)}
    count = max(len(r.steps) for r in runs)
    frames = []
    for i in range(count):
        recs = [r.steps[i] if i < len(r.steps) else None for r in runs]
        frames.append({"svg": frame_svg(v, runs, recs, i, colors),
                       "narration": narrate(runs, recs, i, specs, v)})
    return frames


def narrate(runs, recs, step: int, specs, v: dict) -> str:
    parts = [f"Step {step}."]
    first = next(r for r in recs if r is not None)
    arrived = [e for e in first.events if isinstance(e, RequestArrived)]
    if arrived:
        parts.append(_join([f"{e.request_id} arrives ({specs[e.request_id].prompt_len} prompt, "
                            f"{specs[e.request_id].output_len} output tokens)" for e in arrived])
                     + ".")
    quiet = []
    for run, rec in zip(runs, recs):
        if rec is None:
            quiet.append(run.label)
            continue
        said = _policy_sentence(run, rec, v)
        if said:
            parts.append(f"{run.label}: {said}")
    if any(r is None for r in recs):
        parts.append(_join(quiet) + (" has" if len(quiet) == 1 else " have")
                     + " served every request.")
    if len(parts) == 1:
        parts.append("Every running request stores one more token.")
    return " ".join(parts)


def _policy_sentence(run, rec, v: dict) -> str:
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


def _new_refusal(run, rec) -> bool:
    """A plain 'full' refusal is told once per request, not every step it waits."""
    if rec.step == 0:
        return True
    prev = run.steps[rec.step - 1].refusal
    return prev is None or prev.request_id != rec.refusal.request_id


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def frame_svg(v: dict, runs, recs, step: int, colors: dict[str, str]) -> str:
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
    body.append(svg.text(right, y + 12.5, f"step {step}", size=13, anchor="end"))
    y += 26
    for run, rec in zip(runs, recs):
        y = _policy_block(body, run, rec, y, left, right, scale, colors, v)
    return svg.document(WIDTH, y + 4, body, label=f"KV memory of four policies at step {step}")


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


WIDGET = Widget(
    id="fragmentation",
    title="One request stream, four memory policies",
    summary="Each bar is the same KV pool in address order. Orca reserves one contiguous "
            "chunk per request on a buddy allocator; vLLM allocates 16-token blocks (here "
            "smaller) as tokens arrive.",
    build=build,
    check=check,
    params=(
        Param("requests", "requests", "text", DEFAULT_REQUESTS, parse=parse_requests,
              format=format_requests, help=REQUESTS_HELP),
        Param("pool", "pool slots", "int", 64, min=16, max=128,
              help="Token slots in the KV pool (16 to 128)."),
        Param("max_len", "max_model_len", "int", 32, min=8, max=64,
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
