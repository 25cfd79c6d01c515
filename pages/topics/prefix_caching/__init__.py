"""The prefix caching page (vLLM V1, v0.25.1): requests that share prefixes share KV blocks.

A package: `scenario.py` (settings, engine, context, step names), `narration.py` (the
words), `view.py` (the picture), `charts.py` (build-time charts); this module assembles the
widget.

Widget `prefix-caching`:
- scenario: sim/v1's engine on prompts written as shared parts + own tokens
  (pages/framework/prompt_list.py), recorded step by step, then split into phases
  (pages/views/prefix_view.py: a step's scheduling and forward pass, then the freeing of
  each request that finished in it, one by one, as vLLM frees them). Its default is the
  example of vLLM's design doc (docs/design/prefix_caching.md) as v0.25.1 runs it
  (VLLM-V1.md section 6): block size 4, num_gpu_blocks 11 (the docs' 10 + the null block).
  The engine runs the synchronous loop (async_scheduling=False), the loop of that worked
  example: with vLLM's default async loop each block a decode fills is cached, and each
  finished request freed, one engine call later, so the steps would not line up with the
  doc's times (the V1 scheduler page shows that loop).
- view: each request's blocks (tokens, hash, block id and ref_cnt; hit / computed / not
  yet), the null block and the free queue from head to tail, what moved, a legend.
- narrate: cause, effect, consequence in at most three sentences; `details` has the whole
  account; on the default scenario both say where the docs' pictures differ.
Chart `prefix-sharing`: hit rate and tokens per step against pool size on a chat workload
with a shared system prompt, caching on and off (sim/studies/prefix_sharing.py), on vLLM's
default engine loop (async scheduling).
"""
from __future__ import annotations

from pages.framework.widget import Widget
from pages.topics.prefix_caching.charts import CHARTS, sharing_svg
from pages.topics.prefix_caching.narration import details, narrate
from pages.topics.prefix_caching.questions import QUESTIONS
from pages.topics.prefix_caching.scenario import (
    WIDGET_PARAMS,
    check,
    context,
    engine_for,
    label,
    scenario,
)
from pages.topics.prefix_caching.view import meta, view

__all__ = ["CHARTS", "WIDGETS", "engine_for", "sharing_svg"]

WIDGETS = (Widget(
    id="prefix-caching",
    keys=("row", "ent", "fq", "blk"),
    goal=('Trace a prefix-cache hit through block hashes, touch and the free queue, and predict '
          'which cached block is evicted first.'),
    title="Prefix caching in vLLM V1, block by block",
    summary="The design docs' example as vLLM v0.25.1 runs it: hashes of full blocks, hits "
            "that touch cached blocks, and the free queue that decides what is evicted. "
            "The engine runs the synchronous loop, the loop of the docs' example (vLLM's "
            "default, async scheduling, caches each decoded block one step later).",
    params=WIDGET_PARAMS,
    scenario=scenario, context=context, view=view, narrate=narrate, label=label,
    details=details, meta=meta, check=check, questions=QUESTIONS,
    question_kinds=QUESTIONS.kinds,
),)

