"""The prefix caching page's build-time charts.
"""
from __future__ import annotations

import math

from pages.framework.registry import Chart
from pages.topics.prefix_caching.offloading import caption as offloading_caption
from pages.topics.prefix_caching.offloading import offloading_svg
from pages.views import chart, fit, svg
from pages.views import prefix_view as pv
from sim.studies.prefix_sharing import CHAT, POOL_SIZES, sweep

W, S, X0 = pv.WIDTH, pv.S, pv.X0


# ------------------------------------------------------------------------------ chart

def sharing_svg() -> str:
    """Hit rate, then tokens per step, against the pool size: two stacked 400-unit plots
    whose text reads on a phone."""
    results = sweep()
    on, off = results[True], results[False]
    fs = S / 10
    xs = chart.Axis("usable KV blocks (16 tokens each)", log=True, base=2,
                    fmt=lambda t: f"{t:.0f}")
    body = chart.plot(0, 0, W, 250, [
        chart.Series("vLLM's logged rate", [(r.pool_blocks, 100 * r.hit_rate_logged)
                                            for r in on], color="accent", kind="both",
                     tips=[f"{r.pool_blocks} blocks: {r.lookup_hits:,} of "
                           f"{r.lookup_queries:,} looked-up tokens hit" for r in on]),
        chart.Series("at admission", [(r.pool_blocks, 100 * r.hit_rate_admitted)
                                      for r in on], color="seq-2", kind="both", dashed=True,
                     tips=[f"{r.pool_blocks} blocks: {r.cached_prompt_tokens:,} of "
                           f"{r.prompt_tokens:,} prompt tokens read from the cache, "
                           f"{r.evictions} evictions" for r in on]),
    ], x=xs, y=chart.Axis("hit rate (%)", lo=0, hi=100, fmt=lambda t: f"{t:.0f}"),
        title="Prefix cache hit rate", legend=False, font_scale=fs, key="hits")
    items, h = fit.legend(X0, 250, W - 4, [
        ("line", "accent", "vLLM's logged rate (every lookup)"),
        ("dash", "seq-2", "at first admission (prefill saved)")], size=S)
    body += items
    y = 250 + h + 16
    top = 20 * math.ceil(max(r.served_per_step for r in on + off) / 20)
    body += chart.plot(0, y, W, 270, [
        chart.Series("served, caching on", [(r.pool_blocks, r.served_per_step) for r in on],
                     color="accent", kind="both",
                     tips=[f"caching on, {r.pool_blocks} blocks: {r.steps} steps, "
                           f"{r.served_per_step:.1f} tokens served per step" for r in on]),
        chart.Series("served, caching off", [(r.pool_blocks, r.served_per_step) for r in off],
                     color="waste", kind="both",
                     tips=[f"caching off, {r.pool_blocks} blocks: {r.steps} steps, "
                           f"{r.served_per_step:.1f} tokens served per step" for r in off]),
        chart.Series("computed, caching on", [(r.pool_blocks, r.computed_per_step) for r in on],
                     color="accent", dashed=True,
                     tips=[f"caching on: {r.computed_per_step:.1f} tokens computed per step"
                           for r in on]),
        chart.Series("computed, caching off", [(r.pool_blocks, r.computed_per_step)
                                               for r in off], color="waste", dashed=True,
                     tips=[f"caching off: {r.computed_per_step:.1f} tokens computed per step"
                           for r in off]),
    ], x=xs, y=chart.Axis("tokens per step", lo=0, hi=top, fmt=lambda t: f"{t:.0f}"),
        title="Throughput: tokens per engine step", legend=False, font_scale=fs)
    y += 270
    items, h = fit.legend(X0, y, W - 4, [
        ("line", "accent", "served, caching on"), ("line", "waste", "served, off"),
        ("dash", "accent", "computed, on"), ("dash", "waste", "computed, off")], size=S)
    body += items
    y += h + 8
    return svg.document(W, y, body, label="Prefix cache hit rate and tokens per step against "
                                          "the pool size, prefix caching on and off")


CHARTS = (Chart(
    "prefix-sharing", "Hit rate and throughput against pool size", sharing_svg,
    caption=(f"A chat workload: {CHAT.conversations} conversations of {CHAT.turns} turns "
             f"({CHAT.num_requests} requests), a {CHAT.system_prompt}-token system prompt "
             "shared by all, Alpaca-like user messages and answers, each follow-up sending "
             "the whole conversation again; sim/v1's engine (vLLM v0.25.1) with its default "
             "async engine loop, block size 16, "
             f"pools of {POOL_SIZES[0]} to {POOL_SIZES[-1]} blocks. Computed at build time "
             "by sim/studies/prefix_sharing.py.")), Chart(
    "cpu-offloading", "A CPU tier under a chat that outgrows the GPU", offloading_svg,
    caption=offloading_caption()))
