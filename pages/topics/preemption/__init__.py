"""The preemption page: what vLLM does when the GPU KV cache runs out mid-batch.

A package: `scenario.py` (settings, engine, trace, context, step names), `checks.py` (what
the simulation checked and answered), `narration.py`, `view.py`, `charts.py` (the H200
measurements); this module assembles the widget.

scenario: sim's engine on a workload that overflows the GPU blocks, recorded step by step,
          with the simulation's integrity checks after every step: vLLM v0.5.5's engine
          (sim.core, sim/core/invariants.py) or V1's (sim.v1, sim/v1/invariants.py; the
          `engine` switch; V1 runs its default engine loop, async scheduling). "GPU blocks"
          counts the usable blocks (V1's pool adds block 0, its null block); V1 has no CPU
          swap space and no preemption mode, so those two settings only drive v0.5.5. When
          vLLM would stop (no CPU swap space left, or a recompute it cannot do), the trace
          ends on that step and vLLM's message. With an EOS probability, samples of a
          request end at different steps, and v0.5.5's recompute of a request whose other
          samples finished leaks blocks or asserts (issue 27; pages.views.recompute_leak
          tells it, kv_view marks the leaked blocks).
view:     the queues, the block tables, the GPU and the CPU block pools, with arrows for the
          blocks swapped out or in (pages.views.arrows), a legend, and why the heads of
          `swapped` and `waiting` stay there (what the block manager answers, from the
          snapshot).
narrate:  cause, effect and consequence in three sentences (pages.views.narrate.story),
          naming what V1 does differently; `details` gives every event and, after a swap
          round trip or a recompute, whether the restored request's cached tokens, read
          back through its new block table, are what it held before it was preempted
          (compared from the snapshots).

The build-time chart draws data/h200-swap-vs-recompute.json: swap-out and swap-in time
against block size, beside recomputing the same tokens.
"""
from __future__ import annotations

from pages.framework.widget import Param, Widget
from pages.topics.preemption.charts import CHARTS, load_measurements, swap_vs_recompute_svg
from pages.topics.preemption.narration import details, narrate
from pages.topics.preemption.questions import QUESTIONS
from pages.topics.preemption.scenario import (
    ENGINES,
    MODES,
    OFFLOAD,
    REQUESTS,
    build_engine,
    check,
    context,
    label,
    recomputed_by_step,
    scenario,
)
from pages.topics.preemption.view import view

__all__ = ["CHARTS", "REQUESTS", "WIDGETS", "build_engine", "context", "load_measurements",
           "narrate", "recomputed_by_step", "scenario", "swap_vs_recompute_svg", "view"]

WIDGETS = (Widget(
    id="preemption",
    keys=("chip", "seq", "ent", "blk", "tok"),
    goal=('Predict which request is preempted when blocks run out, and trace a swap round trip or'
          ' a recompute back to intact tokens.'),
    title="Preemption: swap out, swap in, or recompute",
    summary="The GPU runs out of blocks mid-batch: the tail of running is preempted. Arrows "
            "show blocks copied between the GPU and the CPU swap space. Switch the engine to "
            "see V1, which only recomputes; it runs its default loop, async scheduling (each "
            "step is scheduled before the previous step's output is processed).",
    params=(
        Param("engine", "engine", "choice", "v0.5.5", choices=ENGINES,
              help="Which vLLM runs the requests: v0.5.5, or V1 (v0.25.1) with its defaults "
                   "(prefix caching on, its null block added to the pool). V1 has no swap "
                   "space and no preemption mode: it always recomputes."),
        Param("preemption_mode", "preemption mode", "choice", "swap", choices=MODES,
              help="v0.5.5's SchedulerConfig.preemption_mode; vLLM's default recomputes a "
                   "request with one sequence and swaps one with several. V1 ignores it."),
        Param("num_gpu_blocks", "GPU blocks", "int", 10, min=2, max=16,
              help="Usable physical blocks in the GPU KV cache (V1 adds block 0, its null "
                   "block)."),
        Param("num_cpu_blocks", "CPU blocks", "int", 8, min=0, max=16,
              help="v0.5.5's CPU swap space in blocks (vLLM: swap_space, 4 GiB per GPU by "
                   "default). V1 has none; with V1's CPU tier on, they are the tier's "
                   "blocks."),
        Param("cpu_offload", "V1's CPU tier", "choice", "off", choices=OFFLOAD,
              help="V1 with the offloading connector (vLLM's --kv-offloading-size): full "
                   "blocks are copied to CPU memory as they are computed (only the prompt's, "
                   "by default) and a request that comes back loads them instead of "
                   "recomputing them. v0.5.5 ignores it."),
        Param("block_size", "block size", "int", 4, min=1, max=16,
              help="Token slots per block (vLLM's default is 16)."),
        Param("watermark", "watermark", "float", 0.1, min=0.0, max=0.5,
              help="Fraction of GPU blocks admission (and v0.5.5's swap-in) must leave free "
                   "(v0.5.5's default is 0.01, V1's 0)."),
        REQUESTS.param("requests", "6/12, 5/12, 4/12, 3/3@8"),
        Param("eos_prob", "EOS probability", "float", 0.0, min=0.0, max=0.5,
              help="Chance that a sampled token is the end-of-sequence token, so requests "
                   "and samples end early and at different steps (0: each generates exactly "
                   "its output tokens)."),
        Param("seed", "seed", "int", 0, min=0, max=9999,
              help="Seeds the token ids (and where EOS falls)."),
    ),
    scenario=scenario, context=context, view=view, narrate=narrate, label=label,
    details=details, check=check, questions=QUESTIONS, question_kinds=QUESTIONS.kinds,
),)
