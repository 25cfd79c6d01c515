"""The KV cache page: why keys and values are cached, and what the cache costs.

Widgets:
- `kv-growth` (growth.py): one sequence filling its cache with a tiny model, and the
  attention work with the cache against recomputing the prefix.
- `kv-cost` (cost.py, cost_v1.py): a one-frame calculator over the model and GPU presets:
  bytes per token, per sequence and batch, and how many tokens fit after the weights.
Chart:
- `kv-vs-length` (length_chart.py): KV bytes of one sequence against its length.
"""
from __future__ import annotations

from pages.topics.kv_cache.cost import (
    COST,
    COST_WIDTH,
    check_cost,
    cost_details,
    cost_narrate,
    cost_numbers,
    cost_scenario,
    cost_view,
)
from pages.topics.kv_cache.format import PAPER_KV_SPACE, count, fmt_bytes
from pages.topics.kv_cache.growth import (
    GROWTH,
    GROWTH_WIDTH,
    growth_context,
    growth_details,
    growth_label,
    growth_model,
    growth_narrate,
    growth_scenario,
    growth_view,
)
from pages.topics.kv_cache.length_chart import KV_VS_LENGTH, WIDTH, render_kv_vs_length

__all__ = ["COST", "COST_WIDTH", "GROWTH", "GROWTH_WIDTH", "KV_VS_LENGTH", "PAPER_KV_SPACE",
           "WIDTH", "check_cost", "cost_details", "cost_narrate", "cost_numbers",
           "cost_scenario", "cost_view", "count", "fmt_bytes", "growth_context",
           "growth_details", "growth_label", "growth_model", "growth_narrate",
           "growth_scenario", "growth_view", "render_kv_vs_length"]

WIDGETS = (GROWTH, COST)
CHARTS = (KV_VS_LENGTH,)
