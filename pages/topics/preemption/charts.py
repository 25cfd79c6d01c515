"""The preemption page's build-time charts: data/h200-swap-vs-recompute.json (build time
only: the browser gets no data files).
"""
from __future__ import annotations

import json
from pathlib import Path

from pages.framework.registry import Chart
from pages.topics.preemption.scenario import DATA_FILE
from pages.views import chart, kv_view, svg

# -- the H200 measurements (build time only: the browser gets no data files) ----------------

def load_measurements() -> dict:
    root = Path(__file__).resolve().parents[3]
    return json.loads((root / DATA_FILE).read_text(encoding="utf-8"))


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.1f} ms" if ms >= 1 else f"{ms:.2f} ms"


def swap_vs_recompute_svg(tokens: int, data: dict | None = None) -> str:
    data = data if data is not None else load_measurements()
    rows = sorted((r for r in data["rows"] if r["tokens"] == tokens),
                  key=lambda r: r["block_size"])
    recompute = data["recompute_prefill_s"][str(tokens)]
    mb = rows[0]["bytes"] / 2 ** 20

    def series(name, key, color, dashed=False, marker="circle"):
        pts = [(r["block_size"], r[key] * 1e3) for r in rows]
        tips = [f"{name}, block size {r['block_size']}: {_ms(r[key])} "
                f"({r['copies']:,} copies)" for r in rows]
        return chart.Series(name, pts, color=color, kind="both", dashed=dashed, tips=tips,
                            marker=marker)

    sizes = [r["block_size"] for r in rows]
    flat = [(sizes[0], recompute * 1e3), (sizes[-1], recompute * 1e3)]
    at16 = next(r for r in rows if r["block_size"] == 16)
    lines = [
        series("swap out (GPU to CPU)", "swap_out_s", "seq-0"),
        series("swap in (CPU to GPU)", "swap_in_s", "seq-1", marker="square"),
        chart.Series("recompute (one prefill)", flat, color="highlight", kind="line"),
        series("one bulk copy (PCIe floor)", "bulk_out_s", "used", dashed=True),
    ]
    fs = kv_view.FONT / 10
    title, th = kv_view.lines(8, 0, f"H200: one {tokens:,}-token request ({mb:.0f} MiB of "
                              "KV)", fill="fg", size=kv_view.HEADING)
    body = title + chart.plot(0, th, 400, 300, lines,
                              x=chart.Axis("block size (tokens)", log=True, base=2),
                              y=chart.Axis("time (ms)", log=True, fmt=lambda v: f"{v:g}"),
                              markers=[chart.Marker(x=16, label="vLLM default",
                                                    color="muted")],
                              legend=False, font_scale=fs)
    # The legend goes under the plot, where it hides no data: one entry a line.
    y = th + 304
    for s in lines:
        body.append(svg.rect(14, y + 3, 16, 11, fill=s.color, rx=1))
        body.append(svg.text(36, y + 13, s.name, size=kv_view.FONT))
        y += 19
    note = (f"Block size 16: out {_ms(at16['swap_out_s'])}, in {_ms(at16['swap_in_s'])}, "
            f"recompute {_ms(recompute)}")
    elements, dy = kv_view.lines(14, y, note)
    body += elements
    return svg.document(400, y + dy + 6, body,
                        label=f"Swap and recompute time against block size, {tokens} tokens")


CHARTS = (
    Chart("swap-vs-recompute", "Swapping vs recomputing on an H200",
          lambda: swap_vs_recompute_svg(1024),
          caption="Measured on one NVIDIA H200 with a Llama-3-8B-shaped KV cache (128 KiB per "
                  "token): one copy per layer, K or V, and block, as vLLM v0.5.5's swap_blocks "
                  "issues them, beside one bulk copy of the same bytes and the prefill that "
                  "recomputes the tokens. Data: data/h200-swap-vs-recompute.json (its method "
                  "field says how)."),
    Chart("swap-vs-recompute-2048", "The same for a 2048-token request",
          lambda: swap_vs_recompute_svg(2048),
          caption="The same measurement for a request twice as long. "
                  "Data: data/h200-swap-vs-recompute.json."),
)
