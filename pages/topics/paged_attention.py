"""The PagedAttention page: logical blocks, physical blocks and the block table.

The widget drives sim's engine (vLLM v0.5.5's scheduler and BlockSpaceManager) on a few
requests and draws, after every step, each sequence's block table and the GPU's physical
blocks with the tokens in their slots.
"""
from __future__ import annotations

import re

from pages.views import kv_view, svg
from pages.views.narrate import blocks_list, describe_step
from pages.framework.widget import Param, Widget
from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.events import BlockAllocated
from sim.core.sequence import SamplingParams

MAX_REQUESTS = 6
MAX_LEN = 40
MAX_ARRIVAL = 40
MAX_STEPS = 120
NAMES = "ABCDEF"

_REQUEST = re.compile(r"^(\d+)\s*/\s*(\d+)(?:\s*@\s*(\d+))?$")


def parse_requests(text: str) -> tuple[tuple[int, int, int], ...]:
    """"7/3, 3/6, 5/3@4" -> ((7, 3, 0), (3, 6, 0), (5, 3, 4)): prompt/output[@arrival]."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not 1 <= len(items) <= MAX_REQUESTS:
        raise ValueError(f"1 to {MAX_REQUESTS} requests, written prompt/output[@step] and "
                         "separated by commas, e.g. 7/3, 3/6, 5/3@4")
    out = []
    for i, item in enumerate(items):
        m = _REQUEST.match(item)
        if not m:
            raise ValueError(f"request {i + 1} should look like 7/3 or 5/3@4 "
                             "(prompt tokens / output tokens @ arrival step)")
        prompt, output, arrival = int(m[1]), int(m[2]), int(m[3] or 0)
        if not (1 <= prompt <= MAX_LEN and 1 <= output <= MAX_LEN):
            raise ValueError(f"request {i + 1}: prompt and output lengths must be from 1 to "
                             f"{MAX_LEN}")
        if arrival > MAX_ARRIVAL:
            raise ValueError(f"request {i + 1}: the arrival step must be at most {MAX_ARRIVAL}")
        out.append((prompt, output, arrival))
    return tuple(out)


def format_requests(requests) -> str:
    return ", ".join(f"{p}/{o}" + (f"@{a}" if a else "") for p, o, a in requests)


def make_engine(v: dict) -> LLMEngine:
    engine = LLMEngine(
        CacheConfig(block_size=v["block_size"], num_gpu_blocks=v["num_gpu_blocks"],
                    num_cpu_blocks=0, free_order=v["free_order"], seed=v["seed"]),
        SchedulerConfig(), seed=v["seed"])
    for name, (prompt, output, arrival) in zip(NAMES, v["requests"]):
        # ignore_eos: each request generates exactly `output` tokens, as in benchmarks.
        engine.add_request(name, prompt, SamplingParams(max_tokens=output, ignore_eos=True),
                           arrival_step=arrival)
    return engine


def draw(snap: dict, events: list, heading: str) -> tuple[list[str], float]:
    h = kv_view.highlights(events)
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
    return parts, y + 20


def build(v: dict) -> list[dict]:
    engine = make_engine(v)
    n, bs = v["num_gpu_blocks"], v["block_size"]
    snap = engine.snapshot()
    first_out = engine.scheduler.block_manager.gpu_allocator.next_free_block_numbers(1)
    order = ("vLLM's free list is a stack, so the first block handed out is "
             f"block {first_out[0]} and a freed block is reused first"
             if v["free_order"] == "stack" else
             "the free list starts shuffled (seed "
             f"{v['seed']}) to show that placement does not matter")
    drawn = [(draw(snap, [], "Before the first iteration"),
              f"{len(v['requests'])} requests wait to arrive. The GPU cache has {n} physical "
              f"blocks of {bs} token slots, all free; {order}.")]
    labels: dict[int, str] = {}
    request_of: dict[int, str] = {}
    last_owner: dict[int, str] = {}     # physical block -> the request that last held it
    while engine.has_unfinished_requests() and len(drawn) <= MAX_STEPS:
        out = engine.step()
        snap = engine.snapshot()
        labels.update(kv_view.seq_labels(snap))
        for r in snap["requests"]:
            for s in r["seqs"]:
                request_of[s["seq_id"]] = r["request_id"]
        kind = ("prefill" if out.scheduler_outputs.num_prefill_groups
                else "decode" if out.scheduler_outputs.scheduled_seq_groups else "idle")
        text = describe_step(out.step, out, labels, request_of) + _reuse(out.events,
                                                                        request_of, last_owner)
        w = kv_view.waste_stats(snap)
        text += (f" {w['used_blocks']} blocks used, {w['free_blocks']} free; "
                 f"{w['empty_slots']} allocated slots are still empty.")
        drawn.append((draw(snap, out.events, f"After iteration {out.step} ({kind})"), text))
    height = max(h for (_, h), _ in drawn)
    return [{"svg": svg.document(kv_view.WIDTH, height, parts,
                                 label="Block tables and physical KV blocks"),
             "narration": text} for (parts, _), text in drawn]


def _reuse(events: list, request_of: dict[int, str], last_owner: dict[int, str]) -> str:
    """A sentence when blocks another request held come back into use, out of order."""
    reused: dict[tuple[str, str], list[int]] = {}
    for e in events:
        if isinstance(e, BlockAllocated):
            rid = request_of.get(e.seq_ids[0], "?")
            before = last_owner.get(e.physical)
            if before is not None and before != rid:
                reused.setdefault((rid, before), []).append(e.physical)
            last_owner[e.physical] = rid
    return "".join(f" {rid} reuses {blocks_list(nums)}, freed earlier by {before}: "
                   "the most recently freed block is handed out first."
                   for (rid, before), nums in reused.items())


def check(v: dict) -> dict[str, str]:
    # Each step's frame must be readable: bound the number of steps.
    longest = max(a + o for _, o, a in v["requests"])
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
        Param("requests", "requests", "text", ((7, 3, 0), (3, 6, 0), (5, 3, 4)),
              parse=parse_requests, format=format_requests,
              help="prompt/output tokens, optionally @arrival step; e.g. 7/3, 3/6, 5/3@4"),
        Param("free_order", "free list", "choice", "stack",
              choices=(("stack", "vLLM's order (a stack)"),
                       ("shuffled", "scattered (seeded shuffle)")),
              help="The order in which free blocks are handed out."),
        Param("seed", "seed", "int", 0, min=0, max=9999,
              help="Seeds the token ids and the shuffled free list."),
    ),
    build=build,
    check=check,
),)
