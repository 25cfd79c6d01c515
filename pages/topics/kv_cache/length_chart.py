"""The `kv-vs-length` chart: KV bytes of one sequence against its length for several
presets."""
from __future__ import annotations

from pages.framework.registry import Chart
from pages.topics.kv_cache.format import PAPER_KV_SPACE, fmt_bytes, short
from pages.views import chart, fit, svg
from pages.views.text import commas
from sim.perf.hardware import GiB
from sim.perf.models import get_model, kv_bytes_per_token

WIDTH = 400          # the chart of KV bytes against length


CHART_MODELS = ("opt-175b", "opt-13b", "llama-2-7b", "llama-2-70b", "llama-3-8b")


def render_kv_vs_length() -> str:
    series = []
    for i, mid in enumerate(CHART_MODELS):
        m = get_model(mid)
        per = kv_bytes_per_token(m, "fp16")
        lengths = [n for n in (128, 256, 512, 1024, 2048, 4096, 8192) if n <= m.max_model_len]
        series.append(chart.Series(
            f"{m.name} ({fmt_bytes(per)}/token)", [(n, per * n / GiB) for n in lengths],
            color=svg.seq(i), kind="both",
            tips=[f"{m.name}, {commas(n)} tokens: {fmt_bytes(per * n)}" for n in lengths]))
    opt = get_model("opt-13b")
    small = fit.min_size(WIDTH)
    height = 330
    body = chart.plot(
        0, 0, WIDTH, height, series,
        x=chart.Axis("sequence length (tokens)", log=True, base=2, lo=128, hi=8192,
                     fmt=lambda t: f"{t / 1024:.0f}K" if t >= 1024 else str(int(t))),
        y=chart.Axis("GiB per sequence", log=True, lo=0.01, hi=100,
                     fmt=lambda t: short(t) if t < 1 else commas(int(t))),
        markers=[chart.Marker(y=PAPER_KV_SPACE / GiB,
                              label=f"12 GiB = {commas(PAPER_KV_SPACE // kv_bytes_per_token(opt))} "
                                    f"OPT-13B tokens", color="highlight")],
        title="KV cache of one sequence, fp16", legend=False, font_scale=small / 10)
    chips, h = fit.legend(8, height, WIDTH - 4, [("line", s.color, s.name) for s in series],
                          size=small)
    return svg.document(WIDTH, height + h + 6, body + chips,
                        label="KV cache bytes of one sequence against its length, for five "
                              "models")


KV_VS_LENGTH = Chart(
    id="kv-vs-length",
    title="KV memory against sequence length",
    render=render_kv_vs_length,
    caption="Each line ends at the model's max_model_len. Bytes per token from sim.perf.models "
            "(2 x layers x KV heads x head size x 2 bytes); GQA models (Llama-2-70B, "
            "Llama-3-8B) sit far below their size class.",
)
