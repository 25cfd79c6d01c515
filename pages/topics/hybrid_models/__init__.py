"""The Hybrid models page: V1's hybrid KV cache manager (vLLM v0.25.1), one pool of equal
pages for full-attention and sliding-window KV cache groups.

- `hybrid-models` (scenario.py, state.py, view.py, narration.py): request A grows through
  a full-attention group and sliding-window groups; blocks that leave the window go back
  to the pool, the null block in their place; request B, sharing A's prefix, shows the
  sliding window's hit rule (only the last window must be cached).
- `hybrid-tokens-h200` (chart.py): tokens that fit on one H200 for gpt-oss-120b and
  Gemma 3 27B, the hybrid manager against every layer as full attention.
Mamba layers are not modelled (sim/v1/kv_cache_interface.py says why).
"""
from __future__ import annotations

from pages.framework.widget import Widget
from pages.questions import Asker, kv, prefix, window
from pages.topics.hybrid_models.chart import TOKENS_CHART
from pages.topics.hybrid_models.narration import details, narrate
from pages.topics.hybrid_models.scenario import PARAMS, check, context, label, scenario
from pages.topics.hybrid_models.view import view

QUESTIONS = Asker(("window-skip", window.skipped), ("evict-next", prefix.evict_next),
                  ("next-block", kv.next_block),
                  step_name=lambda step: f"step {step.step + 1}")

WIDGETS = (Widget(
    id="hybrid-models",
    goal=("Predict which blocks a sliding-window group returns to the pool as a request "
          "grows, and why a cache hit needs only the window's last blocks."),
    title="Full attention and a sliding window in one pool",
    summary="The hybrid KV cache manager's design-doc example: one request through a "
            "full-attention group and sliding-window groups, then a second with the same "
            "prefix. The engine runs the synchronous loop, as the doc's example does.",
    params=PARAMS, scenario=scenario, context=context, view=view, narrate=narrate,
    label=label, details=details, check=check, keys=("row", "tbl", "cell", "blk"),
    questions=QUESTIONS, question_kinds=QUESTIONS.kinds,
),)
CHARTS = (TOKENS_CHART,)
