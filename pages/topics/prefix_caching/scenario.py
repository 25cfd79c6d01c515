"""The prefix caching widget's scenario: its settings, the engine, the phases of a step
(pages/views/prefix_view.py), the context computed once over a trace, and the step names.
"""
from __future__ import annotations

from dataclasses import dataclass

from pages.framework.prompt_list import PromptList, token_ids
from pages.framework.widget import Context, Param
from pages.views import prefix_view as pv
from pages.views.text import plural
from sim.core.sequence import SamplingParams
from sim.events import (
    Admitted,
    PrefixCacheHit,
)
from sim.trace import record
from sim.v1.config import CacheConfig, SchedulerConfig
from sim.v1.engine import LLMEngine

W, S, X0 = pv.WIDTH, pv.S, pv.X0
BUDGET = 64                  # max_num_batched_tokens, as in VLLM-V1.md section 6
MAX_STEPS = 60
PROMPTS = PromptList(max_requests=5, max_prompt=48, max_output=8, max_arrival=12,
                     example="sys:8+4/2, sys+6/2@2")
DOCS_PROMPTS = "x:10+y:2+3/3, x+4/1@3, x+y+17/2@4"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

# The docs' pictures (docs/design/prefix_caching.md) next to v0.25.1, by the phase's label,
# from VLLM-V1.md section 6. Block ids are the docs' + 1, so they compare with ours.
DOCS_TIME = {"step 1": 1, "step 2": 2, "step 3": 3, "step 3, R0 freed": 4,
             "step 3, R1 freed": 5, "step 4": 6}
DOCS_PICTURE = {
    "step 3, R0 freed": "docs' time 4 (ids + 1): 8 9 10 5 4 3",
    "step 3, R1 freed": "docs' time 5: 8 9 10 5 4 3 7 6 2 1",
    "step 4": "docs' time 6: 7 6, A-P (#4) evicted",
}
DOCS_NOTE = {
    "start": "The docs' 10 blocks are #1-#10 here: v0.25.1 keeps block #0 as the null "
             "block, so num_gpu_blocks is 11.",
    "step 2": "The docs' time 2 also hands R0 its next block; v0.25.1 does that in step 3, "
              "when Q needs it.",
    "step 3, R0 freed": "The docs' time 4 puts #5 at the tail (8 9 10 5 4 3); v0.25.1 sends "
                        "unhashed blocks to the head.",
    "step 3, R1 freed": "The docs' time 5 has 8 9 10 5 4 3 7 6 2 1; v0.25.1 puts the "
                        "unhashed #7 and #5 first.",
    "step 4": "The docs evict A-P (#4) at time 6; in v0.25.1 the unhashed blocks at the "
              "head are enough, so nothing is evicted.",
}



# ------------------------------------------------------------------------------ scenario

def names(prompts) -> list[str]:
    return [f"R{i}" for i in range(len(prompts))]


def engine_for(v: dict) -> LLMEngine:
    engine = LLMEngine(CacheConfig(block_size=v["block_size"],
                                   num_gpu_blocks=v["num_gpu_blocks"],
                                   enable_prefix_caching=v["enable_prefix_caching"]),
                       # The worked example's loop (see the package docstring).
                       SchedulerConfig(max_num_batched_tokens=BUDGET, max_num_seqs=16,
                                       async_scheduling=False))
    for name, prompt, ids in zip(names(v["prompts"]), v["prompts"], token_ids(v["prompts"])):
        engine.add_request(name, ids, SamplingParams(max_tokens=prompt.output, ignore_eos=True),
                           arrival_step=prompt.arrival - 1)
    return engine


def scenario(v: dict) -> list[pv.Phase]:
    return pv.phases(record(engine_for(v), max_steps=MAX_STEPS))


def blocks_needed(prompt, block_size: int) -> int:
    """Blocks for every token whose KV is written (the last sampled token's never is)."""
    return -(-(prompt.length + prompt.output - 1) // block_size)


def check(v: dict) -> dict[str, str]:
    usable = v["num_gpu_blocks"] - 1
    for name, p in zip(names(v["prompts"]), v["prompts"]):
        need = blocks_needed(p, v["block_size"])
        if need > usable:
            return {"num_gpu_blocks": (
                f"GPU blocks: {name} needs {plural(need, 'block')} ({p.length} + {p.output} "
                f"tokens in blocks of {v['block_size']}); give at least {need + 1} "
                f"(block #0 is the null block)")}
    return {}


WIDGET_PARAMS = (
    Param("block_size", "block size", "int", 4, min=1, max=16,
          help="Tokens per KV block (vLLM's default is 16; the docs' example uses 4)."),
    Param("num_gpu_blocks", "GPU blocks (num_gpu_blocks)", "int", 11, min=2, max=32,
          help="vLLM's num_gpu_blocks, the null block #0 included: 11 gives the docs' 10 "
               "usable blocks, #1-#10."),
    PROMPTS.param("prompts", DOCS_PROMPTS),
    Param("enable_prefix_caching", "prefix caching", "bool", True,
          help="vLLM's enable_prefix_caching (on by default in V1)."),
)


# ------------------------------------------------------------------------------ context

@dataclass(frozen=True)
class TourContext(Context):
    names: tuple = ()
    letters: dict | None = None          # token id -> one character, or None
    docs: bool = False                   # the default scenario: compare with the docs
    origin: tuple = ()                   # per phase: {request id: blocks read by a hit}
    arrival: dict | None = None          # request id -> arrival step (from 1)


def context(v: dict, tour: list[pv.Phase]) -> TourContext:
    final = tour[-1].snapshot
    seen: dict[int, str] = {}
    for r in final["requests"]:
        for t in r["seqs"][0]["token_ids"]:
            if t not in seen:
                seen[t] = LETTERS[len(seen)] if len(seen) < len(LETTERS) else ""
    letters = seen if all(seen.values()) else None
    origin, current = [], {}
    for phase in tour:
        if phase.kind == "run":
            hits = {e.request_id: len(e.blocks) for e in phase.step.events
                    if isinstance(e, PrefixCacheHit)}
            for e in phase.step.events:
                if isinstance(e, Admitted):
                    current[e.request_id] = hits.get(e.request_id, 0)
        origin.append(dict(current))
    defaults = {p.name: p.default for p in WIDGET_PARAMS}
    arrival = {n: p.arrival for n, p in zip(names(v["prompts"]), v["prompts"])}
    return TourContext(v, tour, tuple(names(v["prompts"])), letters, v == defaults,
                       tuple(origin), arrival)


def label(phase: pv.Phase, ctx=None) -> str:
    if phase.kind == "start":
        return "start"
    name = f"step {phase.step.step + 1}"
    return f"{name}, {phase.freed_request} freed" if phase.kind == "free" else name
