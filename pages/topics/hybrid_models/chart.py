"""The `hybrid-tokens-h200` chart: vLLM V1's "GPU KV cache size" (tokens) on one H200
against max_model_len, for gpt-oss-120b and Gemma 3 27B, with the hybrid KV cache manager
and with every layer treated as full attention (`--disable-hybrid-kv-cache-manager`).
Numbers from sim/perf/kv_capacity.py (bf16 KV, gpu_memory_utilization 0.92, after the
weights, max_num_batched_tokens 8192)."""
from __future__ import annotations

from pages.framework.registry import Chart
from pages.views import chart, fit, svg
from pages.views.text import commas
from sim.perf.hardware import get_gpu
from sim.perf.kv_capacity import v1_kv_capacity
from sim.perf.models import get_model

WIDTH = 400
LENGTHS = (4096, 8192, 16384, 32768, 65536, 131072)
MODELS = ("gpt-oss-120b", "gemma-3-27b")


def points(model_id: str, hybrid: bool) -> list[tuple[int, int]]:
    model, gpu = get_model(model_id), get_gpu("h200")
    return [(n, v1_kv_capacity(model, gpu, max_model_len=n,
                               disable_hybrid_kv_cache_manager=not hybrid).num_tokens)
            for n in LENGTHS]


def render() -> str:
    series = []
    for i, mid in enumerate(MODELS):
        name = get_model(mid).name
        for hybrid in (True, False):
            pts = points(mid, hybrid)
            how = "hybrid manager" if hybrid else "all full attention"
            series.append(chart.Series(
                f"{name}, {how}", [(n, t / 1000) for n, t in pts], color=svg.seq(i),
                kind="both", dashed=not hybrid,
                tips=[f"{name}, {how}, max_model_len {commas(n)}: {commas(t)} tokens"
                      for n, t in pts]))
    small = fit.min_size(WIDTH)
    height = 330
    body = chart.plot(
        0, 0, WIDTH, height, series,
        x=chart.Axis("max_model_len (tokens)", log=True, base=2, lo=4096, hi=131072,
                     fmt=lambda t: f"{t / 1024:.0f}K"),
        y=chart.Axis("tokens that fit (thousands)", lo=0, hi=2000,
                     fmt=lambda t: commas(int(t))),
        title="KV cache on one H200, bf16", legend=False, font_scale=small / 10)
    chips, h = fit.legend(8, height, WIDTH - 4,
                          [("dash" if s.dashed else "line", s.color, s.name) for s in series],
                          size=small)
    return svg.document(WIDTH, height + h + 6, body + chips,
                        label="Tokens of KV cache that fit on one H200 against max_model_len, "
                              "for gpt-oss-120b and Gemma 3 27B, with and without the hybrid "
                              "KV cache manager")


TOKENS_CHART = Chart(
    id="hybrid-tokens-h200",
    title="Tokens that fit on one H200",
    render=render,
    caption="vLLM V1's start-up figure (\"GPU KV cache size\": requests of max_model_len at "
            "once, times max_model_len) after the weights, from sim/perf/kv_capacity.py. "
            "Dashed: every layer kept as full attention. The hybrid manager's gain grows "
            "with the context, as the sliding layers' share stays a window.",
)
