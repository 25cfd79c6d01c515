"""The PagedAttention page: logical blocks, physical blocks and the block table.

scenario: vLLM v0.5.5's engine (sim.core) on a few requests, recorded step by step.
view:     each sequence's block table and the GPU's physical blocks with the tokens in
          their slots (pages.views.kv_view), after the step.
narrate:  the step's events in words (pages.views.narrate), plus which freed blocks came back.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pages.framework.request_list import RequestList
from pages.framework.widget import Context, Param, Widget
from pages.views import kv_view, svg
from pages.views.narrate import blocks_list, describe_step, reuse_by_step
from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.core.sequence import SamplingParams
from sim.trace import Step, Trace, record

MAX_REQUESTS = 6
MAX_LEN = 40
MAX_ARRIVAL = 40
MAX_STEPS = 120

REQUESTS = RequestList(max_requests=MAX_REQUESTS, max_len=MAX_LEN, max_arrival=MAX_ARRIVAL)


def scenario(v: dict) -> Trace:
    engine = LLMEngine(
        CacheConfig(block_size=v["block_size"], num_gpu_blocks=v["num_gpu_blocks"],
                    num_cpu_blocks=0, free_order=v["free_order"], seed=v["seed"]),
        SchedulerConfig(), seed=v["seed"])
    for r in REQUESTS.named(v["requests"]):
        # ignore_eos: each request generates exactly `output` tokens, as in benchmarks.
        engine.add_request(r.name, r.prompt, SamplingParams(max_tokens=r.output, ignore_eos=True),
                           arrival_step=r.arrival)
    return record(engine, max_steps=MAX_STEPS)


@dataclass(frozen=True)
class PagedContext(Context):
    labels: dict = field(default_factory=dict)       # seq_id -> "A", "B.1", ...
    request_of: dict = field(default_factory=dict)   # seq_id -> request id
    reuse: list = field(default_factory=list)        # per step: [(request, before, blocks)]


def context(v: dict, trace: Trace) -> PagedContext:
    labels, request_of = kv_view.names(trace)
    return PagedContext(v, trace, labels, request_of, reuse_by_step(trace, request_of))


def view(step: Step, ctx: PagedContext) -> svg.Figure:
    snap = step.snapshot
    heading = ("Before the first iteration" if step.step is None
               else f"After iteration {step.step} ({step.kind})")
    h = kv_view.highlights(step.events)
    x = kv_view.MARGIN
    parts = [svg.text(x, 16, heading, size=13)]
    y = 24
    for panel in (kv_view.queues, kv_view.block_tables):
        elements, dy = panel(x, y, snap, h)
        parts += elements
        y += dy + 6
    pool, dy = kv_view.pool(x, y, snap, "gpu", h)
    parts += pool
    y += dy + 2
    w = kv_view.waste_stats(snap)
    parts.append(svg.text(x, y + 12, f"{w['filled_slots']} slots hold tokens; "
                          f"{w['empty_slots']} allocated but empty", size=11, fill="muted"))
    return svg.Figure(kv_view.WIDTH, y + 20, parts, "Block tables and physical KV blocks")


def narrate(step: Step, ctx: PagedContext) -> str:
    v = ctx.values
    if step.step is None:
        first = step.snapshot["gpu"]["free_order"][0]
        order = ("vLLM's free list is a stack, so the first block handed out is "
                 f"block {first} and a freed block is reused first"
                 if v["free_order"] == "stack" else
                 f"the free list starts shuffled (seed {v['seed']}) to show that placement "
                 "does not matter")
        return (f"{len(v['requests'])} requests wait to arrive. The GPU cache has "
                f"{v['num_gpu_blocks']} physical blocks of {v['block_size']} token slots, all "
                f"free; {order}.")
    text = describe_step(step, ctx.labels, ctx.request_of)
    text += "".join(f" {rid} reuses {blocks_list(nums)}, freed earlier by {before}: "
                    "freed blocks go back on top of the free stack, so they are handed out "
                    "first."
                    for rid, before, nums in ctx.reuse[step.index])
    w = kv_view.waste_stats(step.snapshot)
    return text + (f" {w['used_blocks']} blocks used, {w['free_blocks']} free; "
                   f"{w['empty_slots']} allocated slots are still empty.")


def check(v: dict) -> dict[str, str]:
    # Each step's frame must be readable: bound the number of steps.
    longest = max(r.arrival + r.output for r in REQUESTS.named(v["requests"]))
    if longest > 60:
        return {"requests": "arrival step + output tokens must stay within 60 steps"}
    return {}


WIDGETS = (Widget(
    id="paged-attention",
    title="Block tables and physical blocks, step by step",
    summary="Requests are prefilled, then decode one token per step. Each slot shows the "
            "position of the token whose key and value it holds.",
    params=(
        Param("block_size", "block size", "int", 4, min=1, max=16,
              help="Token slots per block (vLLM's default is 16; 4 keeps the picture small)."),
        Param("num_gpu_blocks", "GPU blocks", "int", 12, min=2, max=32,
              help="Physical blocks in the GPU KV cache."),
        REQUESTS.param("requests", "7/3, 3/6, 5/3@4"),
        Param("free_order", "free list", "choice", "stack",
              choices=(("stack", "vLLM's order (a stack)"),
                       ("shuffled", "scattered (seeded shuffle)")),
              help="The order in which free blocks are handed out."),
        Param("seed", "seed", "int", 0, min=0, max=9999,
              help="Seeds the token ids and the shuffled free list."),
    ),
    scenario=scenario, context=context, view=view, narrate=narrate, check=check,
),)
