"""The PagedAttention page: logical blocks, physical blocks and the block table.

scenario: vLLM v0.5.5's engine (sim.core) or V1's (sim.v1, the `engine` switch) on the same
          few requests, recorded step by step. "GPU blocks" counts the usable blocks: V1's
          pool gets one more, block 0, its null block.
view:     the queues, each request's block table and the GPU's physical blocks with the
          tokens in their slots (pages.views.kv_view), after the step, and a legend.
narrate:  cause, effect and consequence in three sentences (pages.views.narrate.story),
          naming what V1 does differently; `details` gives every event of the step.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pages.framework.request_list import RequestList
from pages.framework.widget import Context, Param, Widget
from pages.questions import Asker, kv, prefix, scheduling
from pages.views import kv_view, svg
from pages.views.narrate import blocks_list, reuse_by_step, step_sentences, story
from pages.views.text import a, join, plural, verb
from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.core.sequence import SamplingParams
from sim.trace import Step, Trace, record
from sim.v1 import config as v1_config
from sim.v1.engine import LLMEngine as V1Engine

MAX_REQUESTS = 6
MAX_LEN = 40
MAX_ARRIVAL = 40
MAX_STEPS = 120
X = kv_view.MARGIN

REQUESTS = RequestList(max_requests=MAX_REQUESTS, max_len=MAX_LEN, max_arrival=MAX_ARRIVAL)
ENGINES = (("v0.5.5", "vLLM v0.5.5"), ("v1", "vLLM V1 (v0.25.1)"))


def build_engine(v: dict):
    """The page's engine, before its first step: vLLM v0.5.5's, or V1's with the same
    usable blocks (plus its null block), V1's defaults for the rest (prefix caching on)."""
    if v["engine"] == "v1":
        engine = V1Engine(v1_config.CacheConfig(block_size=v["block_size"],
                                                num_gpu_blocks=v["num_gpu_blocks"] + 1),
                          v1_config.SchedulerConfig(), seed=v["seed"])
    else:
        engine = LLMEngine(
            CacheConfig(block_size=v["block_size"], num_gpu_blocks=v["num_gpu_blocks"],
                        num_cpu_blocks=0, free_order=v["free_order"], seed=v["seed"]),
            SchedulerConfig(), seed=v["seed"])
    for r in REQUESTS.named(v["requests"]):
        # ignore_eos: each request generates exactly `output` tokens, as in benchmarks.
        engine.add_request(r.name, r.prompt, SamplingParams(max_tokens=r.output, ignore_eos=True),
                           arrival_step=r.arrival)
    return engine


def scenario(v: dict) -> Trace:
    return record(build_engine(v), max_steps=MAX_STEPS)


@dataclass(frozen=True)
class PagedContext(Context):
    labels: dict = field(default_factory=dict)       # seq_id -> "A", "B.1", ...
    request_of: dict = field(default_factory=dict)   # seq_id -> request id
    reuse: list = field(default_factory=list)        # per step: [(request, before, blocks)]
    legend: tuple = ()                               # the legend's keys, the same every step
    later: str | None = None                         # a "C@4" chip for the legend


def context(v: dict, trace: Trace) -> PagedContext:
    labels, request_of = kv_view.names(trace)
    return PagedContext(v, trace, labels, request_of, reuse_by_step(trace, request_of),
                        tuple(kv_view.legend_keys(trace)), kv_view.first_later(trace))


def label(step: Step, ctx: PagedContext | None = None) -> str:
    """The step's name in the counter, the heading and the narration."""
    return "start" if step.step is None else f"iteration {step.step}"


def kind_words(step: Step) -> str:
    if step.step is None:
        return "before the first iteration"
    prefill = any(s.prefill for s in step.scheduled)
    decode = any(not s.prefill for s in step.scheduled)
    if prefill and decode:
        return "prompts and decodes"
    return step.kind


def view(step: Step, ctx: PagedContext) -> svg.Figure:
    v, snap = ctx.values, step.snapshot
    h = kv_view.highlights(step.events)
    name = label(step)
    parts = kv_view.heading(X, f"{name[0].upper()}{name[1:]} ({kind_words(step)})",
                            "V1" if v["engine"] == "v1" else "v0.5.5")
    elements, y = kv_view.queues_and_tables(X, 28, snap, h)
    parts += elements
    elements, dy = kv_view.pool(X, y, snap, "gpu", h)
    parts += elements
    y += dy
    elements, dy = kv_view.free_list(X, y, snap)
    parts += elements
    y += dy
    w = kv_view.waste_stats(snap)
    elements, dy = kv_view.lines(X, y, f"Slots: {w['filled_slots']} hold tokens, "
                                       f"{w['empty_slots']} allocated but empty")
    parts += elements
    y += dy + 6
    elements, dy = kv_view.legend(X, y, ctx.legend, later=ctx.later)
    parts += elements
    y += dy
    return svg.Figure(kv_view.WIDTH, y + 4, parts,
                      f"Block tables and physical KV blocks, {name}")


def _requests_words(v: dict) -> str:
    reqs = REQUESTS.named(v["requests"])
    by_step: dict[int, list[str]] = {}
    for r in reqs:
        by_step.setdefault(r.arrival, []).append(r.name)
    when = join([f"{join(names)} at iteration {n}" for n, names in sorted(by_step.items())])
    return f"{plural(len(reqs), 'request')} will arrive: {when}."


def narrate(step: Step, ctx: PagedContext) -> str:
    v = ctx.values
    v1 = v["engine"] == "v1"
    if step.step is None:
        first = step.snapshot["gpu"]["free_order"][0]
        if v1:
            pool = (f"V1's pool has {v['num_gpu_blocks'] + 1} blocks of {v['block_size']} "
                    f"slots: block 0 is its null block, so {v['num_gpu_blocks']} are usable, "
                    "as in the v0.5.5 run.")
            order = (f"Its free queue hands out block {first} first (the free-list setting "
                     "is v0.5.5's and does not apply).")
        else:
            pool = (f"The GPU cache has {v['num_gpu_blocks']} free physical blocks of "
                    f"{v['block_size']} token slots.")
            order = ("vLLM's free list is a stack, so the first block handed out is "
                     f"block {first}." if v["free_order"] == "stack" else
                     f"The free list starts shuffled (seed {v['seed']}), so block {first} is "
                     "handed out first: placement does not matter.")
        return f"Start: {_requests_words(v)} {pool} {order}"
    text = " ".join(story(step, ctx.labels, ctx.request_of, ctx.trace.previous(step),
                          ctx.reuse[step.index]))
    return f"{label(step)[0].upper()}{label(step)[1:]}: {text}"


def details(step: Step, ctx: PagedContext) -> list[str]:
    v = ctx.values
    if step.step is None:
        out = [f"{r.name}: {a(f'{r.prompt}-token prompt')}, {plural(r.output, 'output token')}, "
               f"arrives at iteration {r.arrival}." for r in REQUESTS.named(v["requests"])]
        out.append(f"GPU blocks: {v['num_gpu_blocks']} usable, {v['block_size']} token slots "
                   "each" + ("; V1 adds block 0, the null block, which is never handed out."
                             if v["engine"] == "v1" else "."))
        out.append("Free order, first out first: "
                   + " ".join(str(n) for n in step.snapshot["gpu"]["free_order"]) + ".")
        if v["engine"] == "v1":
            out.append("V1 runs with its defaults: prefix caching on, chunked prefill on, a "
                       "budget of 2048 tokens per step, no watermark, no CPU swap space.")
        return out
    out = step_sentences(step, ctx.labels, ctx.request_of)
    out += [f"{rid} reuses {blocks_list(nums)}, freed earlier by {before}"
            + (": freed blocks go back on top of the free stack, so they are handed out "
               "first." if v["engine"] != "v1" else
               ": V1 hands out the head of its free queue first.")
            for rid, before, nums in ctx.reuse[step.index]]
    w = kv_view.waste_stats(step.snapshot)
    out.append(f"{plural(w['used_blocks'], 'block')} used, {w['free_blocks']} free; "
               f"{plural(w['empty_slots'], 'allocated slot')} "
               f"{verb(w['empty_slots'], 'is', 'are')} still empty.")
    return out


def check(v: dict) -> dict[str, str]:
    # Each step's frame must be readable: bound the number of steps.
    longest = max(r.arrival + r.output for r in REQUESTS.named(v["requests"]))
    if longest > 60:
        return {"requests": "arrival step + output tokens must stay within 60 steps"}
    return v1_fits(v)


def v1_fits(v: dict) -> dict[str, str]:
    """V1 holds a request that can never fit at the head of `waiting` for good (vLLM checks
    at start-up that one request of max_model_len fits): refuse it instead."""
    if v["engine"] != "v1":
        return {}
    for r in REQUESTS.named(v["requests"]):
        need = -(-(r.prompt + r.output - 1) // v["block_size"])
        if need > v["num_gpu_blocks"]:
            return {"requests": f"requests: in V1, {r.name} ({r.prompt} + {r.output} tokens) "
                                f"needs {need} blocks and only {v['num_gpu_blocks']} are "
                                "usable: it would wait forever (raise GPU blocks or the block "
                                "size)"}
    return {}


QUESTIONS = Asker(("preempt", scheduling.preempt()), ("evict-next", prefix.evict_next),
                  ("admit", scheduling.admit()), ("next-block", kv.next_block),
                  ("new-block", kv.new_block))

WIDGETS = (Widget(
    id="paged-attention",
    keys=("chip", "seq", "ent", "blk", "tok"),
    goal=('Map each token to a slot through the block table, and say why a new block appears '
          'exactly when the last one is full.'),
    title="Block tables and physical blocks, step by step",
    summary="Requests are prefilled, then decode one token per step. Each slot shows the "
            "position of the token whose key and value it holds. Switch the engine to see "
            "V1 run the same requests, in its default loop, async scheduling (each step is "
            "scheduled before the previous step's output is processed).",
    params=(
        Param("engine", "engine", "choice", "v0.5.5", choices=ENGINES,
              help="Which vLLM runs the requests: v0.5.5, or V1 (v0.25.1) with its defaults "
                   "(prefix caching on, its null block added to the pool)."),
        Param("block_size", "block size", "int", 4, min=1, max=16,
              help="Token slots per block (vLLM's default is 16; 4 keeps the picture small)."),
        Param("num_gpu_blocks", "GPU blocks", "int", 12, min=2, max=32,
              help="Usable physical blocks in the GPU KV cache (V1 adds block 0, its null "
                   "block)."),
        REQUESTS.param("requests", "7/3, 3/6, 5/3@4"),
        Param("free_order", "free list", "choice", "stack",
              choices=(("stack", "vLLM's order (a stack)"),
                       ("shuffled", "scattered (seeded shuffle)")),
              help="v0.5.5 only: the order in which free blocks are handed out (V1 always "
                   "takes the head of its free queue)."),
        Param("seed", "seed", "int", 0, min=0, max=9999,
              help="Seeds the token ids and the shuffled free list."),
    ),
    scenario=scenario, context=context, view=view, narrate=narrate, label=label,
    details=details, check=check, questions=QUESTIONS, question_kinds=QUESTIONS.kinds,
),)
