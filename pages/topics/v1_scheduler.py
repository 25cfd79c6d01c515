"""The V1 scheduler page (docs/v1-scheduler.md): vLLM v0.5.5 and V1 on the same requests.

scenario: the same requests, pool of usable KV blocks, token budget and seat limit run
          through v0.5.5's engine (`sim.core.engine.LLMEngine`) and V1's
          (`sim.v1.engine.LLMEngine`), both recorded with `sim.trace.record`; the trace
          lines the two up by engine step (`Pair`), one frame per iteration, after a frame
          before the first. V1 runs its synchronous engine loop: the widget compares the
          two schedulers' choices step for step, and v0.5.5 has only that loop (in V1's
          default async loop every output, and so every finish, is seen one call later;
          the `v1-async` widget, pages/topics/async_scheduling.py, shows it).
view:     the workload (first frame), then for each engine: the budget bar split into
          decode and prefill tokens, the queues as chips, and the pool of KV blocks
          (pages/views/budget_view.py).
narrate:  what the two schedulers did differently, cause first; `details` lists every
          event of both engines.

The build-time chart prices both engines' steps on an H200 with the prefill vs decode
page's roofline (`sim.studies.latency`) and plots each request's time to first token and
longest gap between tokens; V1 runs the synchronous loop there too, with no CPU time, so
that the charts compare schedules (the async chart prices the loop).
"""
from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path

from pages.framework.registry import Chart
from pages.framework.request_list import RequestList
from pages.framework.widget import Context, Param, Widget
from pages.questions import Asker, scheduling, via
from pages.views import budget_view, fit, svg
from pages.views.text import a, join, plural, verb
from sim.core.config import CacheConfig as CacheConfigV0
from sim.core.config import SchedulerConfig as SchedulerConfigV0
from sim.core.engine import LLMEngine as EngineV0
from sim.core.sequence import SamplingParams
from sim.events import (
    Admitted,
    BlockAllocated,
    BlockCached,
    BlockEvicted,
    BlockFreed,
    ChunkScheduled,
    Preempted,
    PrefixCacheHit,
    RequestArrived,
)
from sim.perf.cost import Roofline
from sim.perf.models import get_model
from sim.studies import latency
from sim.trace import Step, Trace, record
from sim.v1.config import CacheConfig as CacheConfigV1
from sim.v1.config import SchedulerConfig as SchedulerConfigV1
from sim.v1.engine import LLMEngine as EngineV1

WIDTH = 400
SIZE = fit.min_size(WIDTH)            # 13.5: 11 px on a phone
M = 8                                 # margin
MAX_STEPS = 40
MAX_NUM_SEQS = 8
MAX_BUDGET = 64
# v0.5.5 needs the budget to hold a whole request (it never chunks a prompt), so a request's
# prompt + output is at most the budget's maximum.
REQUESTS = RequestList(max_requests=6, max_len=40, max_arrival=20, max_total=MAX_BUDGET)
ENGINE_NAMES = {"v0": "v0.5.5", "v1": "V1"}
LABEL = "The token budget of each step: vLLM v0.5.5 above, V1 below"


# -- scenario ---------------------------------------------------------------------------

def build_engines(v: dict) -> tuple[EngineV0, EngineV1]:
    """Both engines with the page's requests added, before their first step: the same
    usable blocks (V1's pool has one more, its null block 0), the same budget (and
    max_model_len: v0.5.5 requires the budget to hold the longest request, since it never
    chunks a prompt), the same seat limit."""
    budget, blocks, bs = v["budget"], v["num_blocks"], v["block_size"]
    v0 = EngineV0(CacheConfigV0(block_size=bs, num_gpu_blocks=blocks, num_cpu_blocks=0),
                  SchedulerConfigV0(max_num_batched_tokens=budget, max_model_len=budget,
                                    max_num_seqs=MAX_NUM_SEQS), seed=v["seed"])
    v1 = EngineV1(CacheConfigV1(block_size=bs, num_gpu_blocks=blocks + 1),
                  SchedulerConfigV1(max_num_batched_tokens=budget, max_model_len=budget,
                                    max_num_seqs=MAX_NUM_SEQS,
                                    long_prefill_token_threshold=v["threshold"],
                                    # Step for step beside v0.5.5 (module docstring).
                                    async_scheduling=False),
                  seed=v["seed"])
    for engine in (v0, v1):
        for r in REQUESTS.named(v["requests"]):
            # ignore_eos: each request generates exactly `output` tokens in both engines.
            engine.add_request(r.name, r.prompt,
                               SamplingParams(max_tokens=r.output, ignore_eos=True),
                               arrival_step=r.arrival)
    return v0, v1


@dataclass(frozen=True, slots=True)
class Pair:
    """Frame `index`: each engine's trace step of the same number (None once that engine
    has finished: it finished sooner)."""
    index: int
    v0: Step | None
    v1: Step | None


def scenario(v: dict) -> Trace:
    e0, e1 = build_engines(v)
    t0, t1 = record(e0, max_steps=MAX_STEPS), record(e1, max_steps=MAX_STEPS)
    n = max(len(t0), len(t1))
    steps = tuple(Pair(i, t0[i] if i < len(t0) else None, t1[i] if i < len(t1) else None)
                  for i in range(n))
    return Trace(steps, meta={"v0": t0, "v1": t1})


def check(v: dict) -> dict[str, str]:
    reqs = REQUESTS.named(v["requests"])
    longest = max(r.prompt + r.output for r in reqs)
    if v["budget"] < longest:
        return {"budget": f"token budget: at least {longest}, the longest request (prompt + "
                          "output): v0.5.5 never chunks a prompt, so it requires "
                          "max_num_batched_tokens >= max_model_len"}
    need = max(-(-(r.prompt + r.output) // v["block_size"]) for r in reqs)
    if need > v["num_blocks"]:
        return {"num_blocks": f"KV blocks: at least {need}, so the longest request fits "
                              "alone (otherwise both engines would wait for ever)"}
    e0, e1 = build_engines(v)
    for name, engine in (("v0.5.5", e0), ("V1", e1)):
        trace = record(engine, max_steps=MAX_STEPS, with_slots=False)
        if trace.stopped:
            return {"requests": f"requests: {name} takes more than {MAX_STEPS} iterations "
                                "here; use fewer or shorter requests, or more blocks"}
    return {}


# -- what happened in one engine's step ---------------------------------------------------

@dataclass(frozen=True)
class Facts:
    """One engine's step, read from its trace step."""
    engine: str                      # "v0" or "v1"
    step: Step
    decodes: tuple[str, ...]         # requests that decoded one token
    prefills: tuple[tuple[str, int, int, int], ...]   # (rid, tokens, computed before, len)
    paused: tuple[str, ...]          # running after the step, but not run in it
    preempted: tuple[Preempted, ...]
    arrived: tuple[str, ...]
    finished: tuple[str, ...]
    waiting: tuple[str, ...]         # after the step
    running: tuple[str, ...]
    hits: tuple[PrefixCacheHit, ...]
    used: int                        # budget tokens used


def facts(engine: str, step: Step, before: Step | None) -> Facts:
    """`before`: the engine's trace step before this one (its snapshot says how many tokens
    each request had when this step was scheduled)."""
    snap = step.snapshot
    chunks = {e.request_id: e.num_computed_before for e in step.of_type(ChunkScheduled)}
    scheduled = step.scheduled
    decodes = tuple(s.request_id for s in scheduled if not s.prefill)
    sizes = ({r["request_id"]: r["seqs"][0]["len"] for r in before.snapshot["requests"]}
             if before is not None else {})
    prefills = []
    for s in scheduled:
        if s.prefill:
            first = chunks.get(s.request_id, 0)
            # Its tokens when scheduled: the prompt, or prompt and outputs when recomputed.
            total = max(sizes.get(s.request_id, 0), first + s.num_tokens)
            prefills.append((s.request_id, s.num_tokens, first, total))
    ran = {s.request_id for s in scheduled}
    running = tuple(snap["queues"]["running"])
    return Facts(engine, step, decodes, tuple(prefills),
                 tuple(r for r in running if r not in ran),
                 tuple(step.of_type(Preempted)),
                 tuple(e.request_id for e in step.of_type(RequestArrived)),
                 tuple(step.finished), tuple(snap["queues"]["waiting"]), running,
                 tuple(step.of_type(PrefixCacheHit)),
                 sum(s.num_tokens for s in scheduled))


# -- context --------------------------------------------------------------------------------

@dataclass(frozen=True)
class SchedContext(Context):
    colors: dict                     # request id -> palette colour
    lengths: dict                    # request id -> prompt length
    workload: tuple                  # REQUESTS.named(...)
    ends: dict                       # "v0"/"v1" -> the iteration its last request finished
    finished: dict                   # "v0"/"v1" -> {request id: iteration it finished}


def context(v: dict, trace: Trace) -> SchedContext:
    reqs = REQUESTS.named(v["requests"])
    colors = {r.name: svg.seq(i) for i, r in enumerate(reqs)}
    ends = {k: len(trace.meta[k]) - 2 for k in ("v0", "v1")}
    finished = {k: {r["request_id"]: r["finished_step"]
                    for r in trace.meta[k].last.snapshot["requests"]} for k in ("v0", "v1")}
    return SchedContext(v, trace, colors, {r.name: r.prompt for r in reqs}, tuple(reqs), ends,
                        finished)


def pair_facts(pair: Pair, ctx: SchedContext) -> tuple[Facts | None, Facts | None]:
    """Each engine's Facts for this frame (None once it has finished)."""
    out = []
    for key in ("v0", "v1"):
        step = getattr(pair, key)
        trace = ctx.trace.meta[key]
        out.append(facts(key, step, trace[step.index - 1] if step.index else None)
                   if step is not None else None)
    return out[0], out[1]


def label(pair: Pair, ctx: SchedContext | None = None) -> str:
    """The step's name: the counter, the picture's heading and the narration use it.
    Iterations are numbered as the engines number them (from 0), as "@2" in the request
    list means "arrives at iteration 2"."""
    return "start" if pair.index == 0 else f"iteration {pair.index - 1}"


# -- drawing --------------------------------------------------------------------------------

def _step_kind(f: Facts) -> str:
    if not f.step.scheduled:
        return "nothing to run" if not f.preempted else "preemption, nothing runs"
    if f.prefills and f.decodes:
        return "decodes and prefill chunks"
    if f.prefills:
        return "prefill-only step" if (f.engine == "v0" and f.paused) else "prefill"
    return "decode step"


def _queue_groups(f: Facts, ctx: SchedContext, key: str = "chip"):
    colors = ctx.colors
    victims = {p.request_id for p in f.preempted}
    ran = {s.request_id for s in f.step.scheduled}
    running = []
    for rid in f.running:
        style = "ran" if rid in ran else "paused"
        tip = (f"{rid}: ran this step" if rid in ran
               else f"{rid}: running, but not run this step")
        running.append((rid, colors[rid], style, tip, f"{key}:{rid}"))
    for rid in f.finished:
        running.append((rid + "✓", colors[rid], "ran", f"{rid}: finished this step",
                        f"{key}:{rid}"))
    waiting = [(rid, colors[rid], "preempted" if rid in victims else "idle",
                f"{rid}: preempted this step, back to the front of waiting" if rid in victims
                else f"{rid}: waiting", f"{key}:{rid}") for rid in f.waiting]
    return (("running", running), ("waiting", waiting))


def _changed_blocks(step: Step) -> set[int]:
    return {e.physical for e in step.events
            if isinstance(e, (BlockAllocated, BlockFreed)) and getattr(e, "device", "gpu") == "gpu"}


def panel(y: float, f: Facts | None, name: str, end: int, ctx: SchedContext,
          budget: int, key: str = "v1") -> tuple[list[str], float]:
    """One engine's step: heading, budget bar and its numbers, queues, KV blocks; `key`
    ("v0", "v1") keeps the two engines' keys apart (budget:v1:A, chip:v1:A, blk:v1:gpu:7)."""
    s = SIZE
    right = WIDTH - M
    if f is None:
        out = [svg.text(M, y + s, f"vLLM {name}: done", size=s + 0.5),
               svg.text(M, y + s * 2.5, f"every request finished by iteration {end}",
                        size=s, fill="muted")]
        return out, y + s * 3
    out = [svg.text(M, y + s, f"vLLM {name}: {_step_kind(f)}", size=s + 0.5)]
    y += s * 1.6
    segs = budget_view.segments(f.step.scheduled, ctx.colors)
    elements, h = budget_view.bar(M, y, WIDTH - 2 * M, budget, segs, size=s,
                                  key=f"budget:{key}")
    out += elements
    y += h + s * 1.2
    dec = len(f.decodes)
    pre = sum(n for _, n, _, _ in f.prefills)
    out.append(svg.text(M, y, f"{dec} decode + {pre} prefill, {budget - f.used} unused",
                        size=s, fill="muted"))
    y += s * 0.6
    elements, h = budget_view.chip_row(M, y, right, _queue_groups(f, ctx, f"chip:{key}"),
                                       size=s)
    out += elements
    y += h + s * 0.5
    snap = f.step.snapshot
    usable = snap["gpu"]["num_blocks"] - (1 if snap.get("null_block") is not None else 0)
    free = snap["gpu"]["num_free"]
    out.append(svg.text(M, y + s, f"KV blocks: {usable - free} of {usable} held", size=s,
                        fill="muted"))
    y += s * 1.4
    elements, h = budget_view.pool(M, y, WIDTH - 2 * M, snap, ctx.colors, size=s,
                                   highlight=_changed_blocks(f.step), key=f"blk:{key}:gpu")
    out += elements
    return out, y + h


def _legend(y: float, ctx: SchedContext) -> tuple[list[str], float]:
    items = [("decode", "seq-0", "decode token"), ("prefill", "seq-0", "prompt token"),
             ("free", "free", "unused / free"),
             ("paused", "line", "running, not run"), ("text:✓", "fg", "finished"),
             ("cached", "accent", "free, still cached (V1)"),
             ("highlight", "highlight", "preempted / block changed")]
    return budget_view.legend(M, y, WIDTH - M, items, size=SIZE)


def workload_view(ctx: SchedContext) -> tuple[list[str], float]:
    """The first frame: the requests as prompt and output token bars, with arrivals."""
    s = SIZE
    v = ctx.values
    out = [svg.text(M, s + 2, "start: the same requests for both", size=s + 0.5)]
    y = s * 2.4
    longest = max(r.prompt + r.output for r in ctx.workload)
    label_w = fit.text_width("A @20", s) + s * 0.5
    widest = max(fit.text_width(f"{r.prompt}+{r.output}", s) for r in ctx.workload)
    room = WIDTH - 2 * M - label_w - widest - 4
    unit = room / max(longest, 1)
    for r in ctx.workload:
        color = ctx.colors[r.name]
        name = r.name + (f" @{r.arrival}" if r.arrival else "")
        out.append(svg.text(M, y + s, name, size=s))
        x0 = M + label_w
        pw, ow = r.prompt * unit, r.output * unit
        out.append(svg.rect(x0, y + 2, pw, s, fill=color, stroke=color, rx=1.5,
                            fill_opacity="0.3", stroke_width=1.5,
                            tip=f"{r.name}: {plural(r.prompt, 'prompt token')}",
                            data_k=f"req:{r.name}:prompt"))
        out.append(svg.rect(x0 + pw + 1, y + 2, ow - 1, s, fill=color, rx=1.5,
                            tip=f"{r.name}: {plural(r.output, 'output token')}, one per "
                                "decode", data_k=f"req:{r.name}:output"))
        out.append(svg.text(x0 + pw + ow + 4, y + s, f"{r.prompt}+{r.output}", size=s,
                            fill="muted"))
        y += s * 1.55
    y += s * 0.4
    lines = [f"budget: {plural(v['budget'], 'token')} per step",
             f"KV: {plural(v['num_blocks'], 'block')} of {plural(v['block_size'], 'token')}",
             "V1 long_prefill_token_threshold: " + (str(v["threshold"]) if v["threshold"]
                                                    else "0 (off)")]
    for line in lines:
        out.append(svg.text(M, y + s, line, size=s, fill="muted"))
        y += s * 1.45
    elements, h = budget_view.legend(M, y + 2, WIDTH - M,
                                     [("prefill", "seq-0", "prompt tokens"),
                                      ("decode", "seq-0", "output tokens")], size=s)
    out.append(svg.text(M, y + h + s * 1.3, "@2: arrives at iteration 2", size=s,
                        fill="muted"))
    h += s * 1.6
    return out + elements, y + h + 8


def view(pair: Pair, ctx: SchedContext) -> svg.Figure:
    if pair.index == 0:
        body, height = workload_view(ctx)
        return svg.Figure(WIDTH, height, body, LABEL)
    s = SIZE
    out = [svg.text(M, s + 2, label(pair), size=s + 1)]
    y = s * 2
    for key, f in zip(("v0", "v1"), pair_facts(pair, ctx)):
        elements, bottom = panel(y, f, ENGINE_NAMES[key], ctx.ends[key], ctx,
                                 ctx.values["budget"], key)
        out += elements
        y = bottom + s * 0.9
        if key == "v0":
            out.append(svg.line(M, y - s * 0.45, WIDTH - M, y - s * 0.45, stroke="free"))
    elements, h = _legend(y, ctx)
    return svg.Figure(WIDTH, y + h + 6, out + elements, LABEL)


# -- narration --------------------------------------------------------------------------------

def _prefill_words(prefills, lengths) -> list[str]:
    out = []
    for rid, n, before, total in prefills:
        if before == 0 and n >= total:
            out.append(f"{rid}'s {plural(n, 'token')}")
        elif before == 0:
            out.append(f"the first {n} of {rid}'s {total}")
        elif before + n >= total:
            out.append(f"the last {n} of {rid}'s {total}")
        else:
            out.append(f"{n} more of {rid}'s {total}")
    return out


def _why_waiting(f: Facts, budget: int) -> str:
    """Why the head of waiting was not admitted (empty when nothing waits)."""
    if not f.waiting:
        return ""
    head = f.waiting[0]
    heads = f.step.snapshot.get("heads") or {}
    info = heads.get("waiting") or {}
    left = budget - f.used
    if f.preempted:
        if head in {p.request_id for p in f.preempted}:
            return ""
        return f"{head} waits: a step that preempts admits no one"
    if f.engine == "v0" and info.get("len", 0) > left:
        return f"{head}'s {info['len']} tokens do not fit in the {left} left"
    if f.engine == "v1" and left <= 0:
        return f"{head} waits: the budget is spent"
    if info.get("can_allocate") not in (None, "ok"):
        return f"{head} waits for free KV blocks"
    if len(f.running) >= MAX_NUM_SEQS:
        return f"{head} waits for a seat (max_num_seqs)"
    return f"{head} waits"


def _effect(f: Facts, budget: int, kept: list[str] = ()) -> str:
    """One engine's step in one clause, without its name; `kept`: requests the other engine
    paused that this one decoded."""
    parts = []
    for p in f.preempted:
        if p.victim_is_self:
            what = (f"preempts {p.request_id} itself: it needs a block, none is free and no "
                    "one runs behind it")
        else:
            what = f"preempts {p.request_id}, the last one running, to give {p.needed_by} a block"
        kept_hash = _still_cached(f, p.request_id)
        if f.engine == "v1" and kept_hash:
            what += (f" ({plural(kept_hash, 'freed block')} "
                     f"{verb(kept_hash, 'keeps its', 'keep their')} hash in the prefix cache)")
        parts.append(what)
    hit_ids = {h.request_id for h in f.hits}
    for h in f.hits:
        total = next((t for rid, _, _, t in f.prefills if rid == h.request_id),
                     h.num_tokens + 1)
        n = next((n for rid, n, _, _ in f.prefills if rid == h.request_id), None)
        n = n if n is not None else total - h.num_tokens
        parts.append(f"re-admits {h.request_id} with a prefix-cache hit on {h.num_tokens} of "
                     f"its {total} tokens, so it computes only {n}")
    if hit_ids:
        f = dataclasses.replace(
            f, decodes=tuple(r for r in f.decodes if r not in hit_ids),
            prefills=tuple(p for p in f.prefills if p[0] not in hit_ids))
    pre = _prefill_words(f.prefills, {})
    if f.prefills and not f.decodes:
        what = f"prefills {join(pre)}"
        if f.engine == "v0" and f.paused:
            what = (f"runs a prefill-only step ({join(pre)}), so {join(list(f.paused))} "
                    f"{verb(f.paused, 'skips its', 'skip their')} decode")
        parts.append(what)
    elif f.prefills:
        parts.append(f"decodes {join(list(f.decodes))} first, then "
                     + (f"fills the rest with {join(pre)}" if f.used == budget
                        else f"adds {join(pre)}")
                     + (f", so {join(kept)} still {verb(kept, 'gets its', 'get their')} "
                        "token" if kept else ""))
    elif f.decodes:
        parts.append(f"decodes {join(list(f.decodes))}")
        if f.paused:
            parts.append(f"{join(list(f.paused))} {verb(f.paused, 'waits', 'wait')}")
    elif not f.preempted:
        parts.append("runs nothing")
    why = _why_waiting(f, budget)
    text = "; ".join(parts)
    if why and (f.prefills or f.preempted or f.decodes):
        text += f" ({why})"
    if f.finished:
        text += f"; {join(list(f.finished))} {verb(f.finished, 'finishes', 'finish')}"
    return text


def _still_cached(f: Facts, rid: str) -> int:
    """How many of the blocks freed in this step still carry a prefix-cache hash."""
    blocks = f.step.snapshot["gpu"]["blocks"]
    freed = {e.physical for e in f.step.of_type(BlockFreed) if e.device == "gpu"}
    return sum(1 for b in freed if blocks[b].get("hash") and not blocks[b]["ref_count"])


def _same(f0: Facts, f1: Facts) -> bool:
    return ([(s.request_id, s.num_tokens) for s in f0.step.scheduled]
            == [(s.request_id, s.num_tokens) for s in f1.step.scheduled]
            and not f0.preempted and not f1.preempted and f0.waiting == f1.waiting)


def _cause(f0: Facts | None, f1: Facts | None, ctx: SchedContext) -> str:
    """What drives this step: arrivals, a preemption, prompts still being computed, or
    only decodes."""
    here = [f for f in (f0, f1) if f is not None]
    arrived = list(here[0].arrived)
    if arrived:
        lens = [ctx.lengths[r] for r in arrived]
        size = (a(f"{lens[0]}-token prompt") if len(arrived) == 1
                else f"{lens[0]}-token prompts" if len(set(lens)) == 1
                else "prompts of " + join([str(n) for n in lens]) + " tokens")
        return f"{join(arrived)} {verb(arrived, 'arrives', 'arrive')} with {size}."
    for f in here:
        if f.preempted:
            return f"{f.preempted[0].needed_by} needs a new KV block and none is free."
    pending = {f.engine: sorted({rid for rid, *_ in f.prefills} | set(f.waiting))
               for f in here}
    names = sorted(set().union(*pending.values()))
    if names:
        where = ""
        if len(here) == 2 and pending["v0"] != pending["v1"]:
            only = [ENGINE_NAMES[k] for k, v in pending.items() if set(names) <= set(v)]
            where = f" in {only[0]}" if len(only) == 1 else ""
        return (f"{join(names)} still {verb(names, 'has', 'have')} prompt tokens to "
                f"compute{where}.")
    if any(f.step.scheduled for f in here):
        return "every request in the batch is past its prompt."
    return "nothing is left to run."


def narrate(pair: Pair, ctx: SchedContext) -> str:
    v = ctx.values
    budget = v["budget"]
    if pair.index == 0:
        reqs = ctx.workload
        return (f"{plural(len(reqs), 'request')} ({join([r.name for r in reqs])}) go to both "
                f"engines, with the same {plural(v['num_blocks'], 'KV block')} and the same "
                f"budget of {budget} tokens per step. v0.5.5 runs a step of prompts or a step "
                "of decodes; V1 fills one budget with decodes first, then prompt chunks.")
    f0, f1 = pair_facts(pair, ctx)
    head = f"{label(pair).capitalize()}: {_cause(f0, f1, ctx)}"
    if f0 and f1 and _same(f0, f1):
        if f0.finished == f1.finished:
            return f"{head} The two engines agree: each {_effect(f0, budget)}."
        f0_only = dataclasses.replace(f0, finished=())
        text = f"{head} The two engines agree: each {_effect(f0_only, budget)}."
        for key, f in (("v0", f0), ("v1", f1)):
            if f.finished:
                text += (f" {join(list(f.finished))} {verb(f.finished, 'finishes', 'finish')} "
                         f"in {ENGINE_NAMES[key]}.")
        return text
    sentences = [head]
    kept = [r for r in f0.paused if r in f1.decodes] if f0 and f1 else []
    for key, f in (("v0", f0), ("v1", f1)):
        nm = ENGINE_NAMES[key]
        if f is None:
            sentences.append(f"{nm} is done: it finished at iteration {ctx.ends[key]}.")
        else:
            sentences.append(f"{nm} {_effect(f, budget, kept if key == 'v1' else [])}.")
    if f0 and f1 and not kept:
        done = [r for r in f0.running + f0.finished
                if (ctx.finished["v1"].get(r) if ctx.finished["v1"].get(r) is not None
                    else 10**9) < pair.index - 1]
        if done:
            sentences[-1] = sentences[-1][:-1] + f" ({join(done)} finished earlier in V1)."
    return " ".join(sentences)


def _details_for(f: Facts, budget: int, ctx: SchedContext) -> list[str]:
    nm = ENGINE_NAMES[f.engine]
    step = f.step
    out = []
    if f.arrived:
        out.append(f"{nm}: {join(list(f.arrived))} {verb(f.arrived, 'arrives', 'arrive')} and "
                   f"{verb(f.arrived, 'joins', 'join')} the back of waiting.")
    for p in f.preempted:
        out.append(f"{nm}: {p.needed_by} needs a block and none is free; {p.request_id} "
                   f"(the last of running) is preempted by {p.mode}: its blocks are freed and "
                   "it goes back to the front of waiting.")
    for e in step.of_type(Admitted):
        out.append(f"{nm}: {e.request_id} is admitted with {plural(e.num_tokens, 'token')}"
                   + (" (recomputing its prompt and outputs)" if e.recompute else "") + ".")
    for h in f.hits:
        out.append(f"{nm}: {h.request_id} hits the prefix cache: {plural(h.num_tokens, 'token')}"
                   f" in {plural(len(h.blocks), 'block')} ({', '.join(map(str, h.blocks))}) "
                   "are not computed again.")
    for rid, n, before, total in f.prefills:
        out.append(f"{nm}: {rid} computes prompt tokens {before}-{before + n - 1} "
                   f"({n} of {total}).")
    if f.decodes:
        out.append(f"{nm}: {join(list(f.decodes))} {verb(f.decodes, 'decodes', 'decode')} one "
                   f"token{'' if len(f.decodes) == 1 else ' each'}.")
    if f.paused:
        out.append(f"{nm}: {join(list(f.paused))} {verb(f.paused, 'is', 'are')} running but "
                   f"{verb(f.paused, 'does', 'do')} not run in this step.")
    dec = len(f.decodes)
    pre = sum(n for _, n, _, _ in f.prefills)
    out.append(f"{nm}: budget {f.used} of {budget} tokens used ({dec} decode, {pre} prefill).")
    alloc = [e.physical for e in step.of_type(BlockAllocated) if e.device == "gpu"]
    freed = [e.physical for e in step.of_type(BlockFreed) if e.device == "gpu"]
    if alloc:
        out.append(f"{nm}: {plural(len(alloc), 'block')} allocated ({', '.join(map(str, alloc))}).")
    if freed:
        out.append(f"{nm}: {plural(len(freed), 'block')} freed ({', '.join(map(str, freed))}).")
    evicted = step.of_type(BlockEvicted)
    if evicted:
        out.append(f"{nm}: {plural(len(evicted), 'cached block')} evicted for reuse "
                   f"({', '.join(str(e.physical) for e in evicted)}).")
    cached = step.of_type(BlockCached)
    if cached:
        out.append(f"{nm}: {plural(len(cached), 'full block')} hashed into the prefix cache.")
    if f.finished:
        out.append(f"{nm}: {join(list(f.finished))} {verb(f.finished, 'finishes', 'finish')}.")
    why = _why_waiting(f, budget)
    if why:
        out.append(f"{nm}: {why}.")
    out.append(f"{nm}: running {', '.join(f.running) or 'none'}; waiting "
               f"{', '.join(f.waiting) or 'none'}.")
    return out


def details(pair: Pair, ctx: SchedContext) -> list[str]:
    v = ctx.values
    if pair.index == 0:
        out = [f"{r.name}: {plural(r.prompt, 'prompt token')}, {plural(r.output, 'output token')}"
               f", arrives at iteration {r.arrival}." for r in ctx.workload]
        out.append(f"Both engines: max_num_batched_tokens = max_model_len = {v['budget']}, "
                   f"max_num_seqs = {MAX_NUM_SEQS}, {plural(v['num_blocks'], 'usable block')} "
                   f"of {plural(v['block_size'], 'token')} (V1's pool has one more, its null "
                   "block 0).")
        out.append("v0.5.5: chunked prefill off (its default), no prefix caching (off by "
                   "default), recompute preemption for one-sequence requests.")
        out.append("V1: chunked prefill and prefix caching on (its defaults), "
                   f"long_prefill_token_threshold = {v['threshold']}.")
        return out
    out = []
    for key, f in zip(("v0", "v1"), pair_facts(pair, ctx)):
        if f is None:
            out.append(f"{ENGINE_NAMES[key]}: finished at iteration {ctx.ends[key]}.")
        else:
            out += _details_for(f, v["budget"], ctx)
    return out


def limits(v: dict) -> scheduling.Limits:
    """The scheduler settings build_engines gives both engines, for the questions."""
    return scheduling.Limits(max_num_batched_tokens=v["budget"], max_model_len=v["budget"],
                             max_num_seqs=MAX_NUM_SEQS, threshold=v["threshold"])


QUESTIONS = Asker(*via("v1", ("budget-share", scheduling.budget_share(limits))),
                  *via("v0", ("step-plan", scheduling.step_plan(limits))),
                  *via("v1", ("preempt", scheduling.preempt(limits)),
                       ("step-plan", scheduling.step_plan(limits)),
                       ("admit", scheduling.admit(limits))),
                  *via("v0", ("preempt", scheduling.preempt(limits)),
                       ("admit", scheduling.admit(limits))))


WIDGETS = (Widget(
    id="v1-scheduler",
    keys=("req", "budget", "chip", "blk"),
    goal=("Contrast v0.5.5's prefill-only steps with V1's one token budget, and read time to "
          'first token and between tokens off the two schedules.'),
    title="One token budget: v0.5.5 and V1 on the same requests",
    summary="Each bar is one step's token budget: solid cells are decode tokens, light "
            "ones prompt (prefill) tokens. v0.5.5 runs prompts and decodes in separate "
            "steps; V1 decodes first and fills the rest with prompt chunks. V1 runs its "
            "synchronous loop here, to line up with v0.5.5 step for step (its default, "
            "async scheduling, is the widget below).",
    params=(
        REQUESTS.param("requests", "6/8, 5/8, 20/3@2, 20/3@2, 4/4@5"),
        Param("budget", "token budget", "int", 32, min=8, max=MAX_BUDGET,
              help=f"max_num_batched_tokens for both engines (8 to {MAX_BUDGET}); v0.5.5 "
                   "needs it to hold the longest request."),
        Param("threshold", "long_prefill_token_threshold (V1)", "int", 0, min=0, max=64,
              help="V1 caps each prompt's chunk per step at this many tokens (0: off, "
                   "vLLM's default)."),
        Param("num_blocks", "usable KV blocks", "int", 24, min=2, max=48,
              help="GPU blocks both engines can use (2 to 48)."),
        Param("block_size", "block size", "int", 4, min=1, max=16,
              help="Tokens per KV block (1 to 16)."),
        Param("seed", "seed", "int", 0, min=0, max=9999,
              help="Seeds the stand-in model's tokens (the schedule does not depend on it)."),
    ),
    scenario=scenario, context=context, view=view, narrate=narrate, label=label,
    details=details, check=check, questions=QUESTIONS, question_kinds=QUESTIONS.kinds,
),)


# -- build-time charts: latency on an H200 ----------------------------------------------------

DATA_FILE = "data/h200-prefill-decode.json"
CHART_MODEL = "llama-3-8b"
THRESHOLD = 256
SERIES = (("v0.5.5", "seq-1", "square"), ("V1", "seq-0", "circle"),
          (f"V1, threshold {THRESHOLD}", "seq-2", "diamond"))


def h200_roofline() -> Roofline:
    """The ceilings measured on the H200 in the same run as the prefill vs decode page's
    step times (data/h200-prefill-decode.json): that page's default GPU."""
    root = Path(__file__).resolve().parents[2]
    data = json.loads((root / DATA_FILE).read_text(encoding="utf-8"))
    return Roofline(data["matmul_peak_flops"], data["copy_bandwidth_bytes_per_s"], "H200")


@functools.lru_cache(maxsize=1)
def latency_runs() -> tuple:
    """v0.5.5, V1 and V1 with long_prefill_token_threshold on CHATS_AND_DOCUMENTS, with the
    defaults both share (budget 2,048 tokens, max_model_len 2,048, 256 seats, ample KV). V1
    runs the synchronous loop, like v0.5.5, so that the charts compare schedules."""
    model, roof = get_model(CHART_MODEL), h200_roofline()
    work = latency.CHATS_AND_DOCUMENTS
    sync = latency.Setup(async_scheduling=False)
    return (latency.run_timed("v0.5.5", work, sync, model, roof),
            latency.run_timed("v1", work, sync, model, roof),
            latency.run_timed("v1", work,
                              latency.Setup(long_prefill_token_threshold=THRESHOLD,
                                            async_scheduling=False), model, roof))


def _latency_svg(metric: str) -> str:
    runs = latency_runs()
    s = SIZE
    reqs = latency.CHATS_AND_DOCUMENTS
    rows, tips = [], []
    for i, r in enumerate(reqs):
        lats = [run.requests[i] for run in runs]
        if metric == "ttft":
            vals = [lat.ttft_s * 1e3 for lat in lats]
        else:
            vals = [lat.max_tbt_s * 1e3 for lat in lats]
        rows.append((f"{r.request_id} {r.prompt_len}/{r.output_len}", vals))
        tips.append([f"{r.request_id} ({r.prompt_len}-token prompt, {r.output_len} outputs, "
                     f"arrives at {r.arrival_s * 1e3:.0f} ms), {name}: time to first token "
                     f"{lat.ttft_s * 1e3:.1f} ms, gaps between tokens mean "
                     f"{lat.mean_tbt_s * 1e3:.2f} ms, longest {lat.max_tbt_s * 1e3:.1f} ms"
                     for lat, (name, _, _) in zip(lats, SERIES)])
    title = ("Time to first token" if metric == "ttft"
             else "Longest gap between two tokens")
    body, h = budget_view.dot_rows(M, 4, WIDTH - 2 * M, rows, SERIES, size=s, title=title,
                                   unit="ms", tips=tips)
    items = [(marker, color, name) for name, color, marker in SERIES]
    chips, lh = budget_view.legend(M, h + 6, WIDTH - M, items, size=s)
    label_text = (f"{title} per request on an H200 ({CHART_MODEL}), v0.5.5 against V1")
    return svg.document(WIDTH, h + lh + 14, body + chips, label=label_text)


CHARTS = (
    Chart("v1-ttft", "Time to first token, v0.5.5 and V1", lambda: _latency_svg("ttft"),
          caption="Each row is one request (prompt/output tokens); its arrival is in the table "
                  "below. Every engine step is priced with the prefill vs decode page's "
                  "roofline (Llama-3-8B, bf16, the H200 ceilings measured in "
                  "data/h200-prefill-decode.json). V1 runs its synchronous loop, like "
                  "v0.5.5, and no CPU time is counted."),
    Chart("v1-tbt", "Longest gap between tokens, v0.5.5 and V1", lambda: _latency_svg("tbt"),
          caption="The longest wait between two successive output tokens of each request, on "
                  "the same runs (V1's synchronous loop). A request decoding while a long "
                  "prompt is prefilled waits for that prefill."),
)
