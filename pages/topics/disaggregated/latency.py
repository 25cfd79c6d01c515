"""The second widget: long prompts and short answers on H200s, colocated V1 (one and two
GPUs) against disaggregated prefill and decode (one GPU each), per request: time to first
token and the longest gap between two tokens (sim.studies.pd_latency). One frame: the two
dot charts and what they say.

Keys: a request's row `row:ttft:A` / `row:tbt:A`, each dot `dot:<metric>:<config>:A`.
"""
from __future__ import annotations

from dataclasses import dataclass

from pages.framework.widget import Param
from pages.topics.disaggregated.scenario import LINK_CHOICES, MODEL_ID, h200
from pages.views import fit, kv_view, svg
from pages.views.chart import nice_ticks
from sim.perf.links import get_link
from sim.perf.models import get_model
from sim.studies import pd_latency

W = kv_view.WIDTH
M = kv_view.MARGIN
F = kv_view.FONT
SERIES = (("colocated-1", "colocated, 1 GPU", "seq-1", "square"),
          ("colocated-2", "colocated, 2 GPUs", "seq-2", "diamond"),
          ("disaggregated", "P/D, 1 + 1 GPUs", "seq-0", "circle"))
BUDGETS = (("8192", "8192 (vLLM's server default on an H200)"),
           ("2048", "2048"))

PARAMS = (
    Param("link", "link", "choice", "ib-ndr", choices=LINK_CHOICES,
          help="What carries the KV from the prefill GPU to the decode GPU."),
    Param("budget", "token budget", "choice", "8192", choices=BUDGETS,
          help="max_num_batched_tokens of every GPU: how big a prompt chunk can be."),
    Param("gap", "time between arrivals (ms)", "int", 250, min=20, max=2000,
          help="The 12 documents arrive this many milliseconds apart (20 to 2000)."),
)


@dataclass(frozen=True)
class Result:
    comparison: pd_latency.Comparison


def scenario(v: dict) -> list[Result]:
    requests = pd_latency.workload(v["gap"] / 1000)
    return [Result(pd_latency.compare(requests, get_model(MODEL_ID), h200(), link=v["link"],
                                      budget=int(v["budget"])))]


def _marker(kind: str, cx: float, cy: float, r: float, color: str, tip: str, key: str) -> str:
    if kind == "square":
        shape = svg.rect(cx - r, cy - r, 2 * r, 2 * r, fill=color, rx=1)
    elif kind == "diamond":
        pts = (f"{svg.num(cx)},{svg.num(cy - r * 1.3)} {svg.num(cx + r * 1.3)},{svg.num(cy)} "
               f"{svg.num(cx)},{svg.num(cy + r * 1.3)} {svg.num(cx - r * 1.3)},{svg.num(cy)}")
        shape = f'<polygon points="{pts}" style="fill:{svg.color(color)}"/>'
    else:
        shape = (f'<circle cx="{svg.num(cx)}" cy="{svg.num(cy)}" r="{svg.num(r)}" '
                 f'style="fill:{svg.color(color)}"/>')
    return svg.group([shape], tip=tip, data_k=key)


def _chart(y: float, comparison, metric: str, title: str) -> tuple[list[str], float]:
    reqs = comparison.requests
    values = {cfg: [x * 1e3 for x in comparison.stat(cfg, metric)] for cfg, *_ in SERIES}
    top = max(max(vs) for vs in values.values())
    ticks = nice_ticks(0.0, top, 4)
    while ticks[-1] < top:
        ticks.append(ticks[-1] + (ticks[1] - ticks[0]))
    hi = ticks[-1]
    labels = [f"{r.request_id} {r.prompt_len}/{r.output_len}" for r in reqs]
    left = M + max(fit.text_width(s, F) for s in labels) + 6
    right = W - M - fit.text_width(f"{hi:g}", F) / 2
    row_h = F * 1.5
    out = [svg.text(M, y + F, title, size=F)]
    y0 = y + F * 1.6

    def px(v: float) -> float:
        return left + (right - left) * v / hi

    plot_h = row_h * len(reqs)
    for t in ticks:
        out.append(svg.line(px(t), y0, px(t), y0 + plot_h, stroke="free"))
        out.append(svg.text(px(t), y0 + plot_h + F * 1.1, f"{t:g}", size=F, anchor="middle",
                            fill="muted"))
    out.append(svg.text(right, y0 + plot_h + F * 2.3, "ms", size=F, anchor="end",
                        fill="muted"))
    for i, (r, name) in enumerate(zip(reqs, labels)):
        cy = y0 + row_h * i + row_h / 2
        row = []
        if i % 2:
            row.append(svg.rect(M, cy - row_h / 2, W - 2 * M, row_h, fill="panel", rx=0))
        row.append(svg.text(M, cy + F * 0.36, name, size=F))
        vs = [values[cfg][i] for cfg, *_ in SERIES]
        row.append(svg.line(px(min(vs)), cy, px(max(vs)), cy, stroke="line"))
        for k, (cfg, words, color, marker) in enumerate(SERIES):
            tip = (f"{r.request_id} ({r.prompt_len}-token prompt, {r.output_len} outputs, "
                   f"arrives at {r.arrival_s * 1e3:.0f} ms), {words}: {title.lower()} "
                   f"{values[cfg][i]:.1f} ms")
            row.append(_marker(marker, px(values[cfg][i]), cy + (k - 1) * row_h * 0.22,
                               F * 0.38, color, tip, f"dot:{metric}:{cfg}:{r.request_id}"))
        out.append(svg.group(row, data_k=f"row:{metric}:{r.request_id}"))
    out.append(svg.line(left, y0 + plot_h, right, y0 + plot_h, stroke="line"))
    return out, (y0 - y) + plot_h + F * 2.6


def _legend(y: float) -> tuple[list[str], float]:
    out = []
    cx, cy = M, y + F
    for cfg, words, color, marker in SERIES:
        w = F + 4 + fit.text_width(words, F)
        if cx > M and cx + w > W - M:
            cx, cy = M, cy + F * 1.5
        out.append(_marker(marker, cx + F * 0.4, cy - F * 0.35, F * 0.42, color, words,
                           f"legend:{cfg}"))
        out.append(svg.text(cx + F, cy, words, size=F))
        cx += w + F
    return out, cy - y + F * 0.6


def view(result: Result, ctx) -> svg.Figure:
    c = result.comparison
    parts = kv_view.heading(M, f"12 documents, {ctx.values['gap']} ms apart", "V1")
    legend, h = _legend(26)
    parts += legend
    y = 26 + h + 6
    chart, h = _chart(y, c, "ttft", "Time to first token")
    parts += chart
    y += h + 8
    chart, h = _chart(y, c, "max_tbt", "Longest gap between tokens")
    parts += chart
    y += h
    return svg.Figure(W, y + 4, parts, "Time to first token and longest gap between tokens "
                                       "per request, colocated against disaggregated")


def _mean(xs) -> float:
    return sum(xs) / len(xs)


def numbers(c) -> dict:
    out = {}
    for cfg, *_ in SERIES:
        out[cfg] = {
            "ttft": _mean(c.stat(cfg, "ttft")) * 1e3,
            "ttft_max": max(c.stat(cfg, "ttft")) * 1e3,
            "mean_tbt": _mean(c.stat(cfg, "mean_tbt")) * 1e3,
            "max_tbt": max(c.stat(cfg, "max_tbt")) * 1e3,
        }
    return out


def narrate(result: Result, ctx) -> str:
    c = result.comparison
    n = numbers(c)
    pd, two = n["disaggregated"], n["colocated-2"]
    link = get_link(c.link).name
    tbt = (f"Disaggregated, no prompt shares a step with the decodes: the longest gap between "
           f"two tokens is {pd['max_tbt']:.1f} ms, against {two['max_tbt']:.1f} ms on two "
           "colocated GPUs, where a prompt's chunk stalls every running decode.")
    diff = pd["ttft"] - two["ttft"]
    transfer = _mean(c.transfer_s) * 1e3
    prefill_wait = _mean(c.prefill_done_s) * 1e3
    two_prefill = _mean(c.stat("colocated-2", "ttft")) * 1e3
    ttft = (f"The first token comes {abs(diff):.1f} ms {'later' if diff > 0 else 'sooner'} "
            f"on average ({pd['ttft']:.1f} against {two['ttft']:.1f} ms): the KV takes "
            f"{transfer:.1f} ms over {link} on average")
    if prefill_wait > two_prefill:
        ttft += (f", and the one prefill GPU finishes a prompt {prefill_wait:.1f} ms after it "
                 "arrives, later than two colocated GPUs give a first token.")
    else:
        ttft += " and the decode GPU's first step recomputes the last prompt token."
    return f"{tbt} {ttft}"


def details(result: Result, ctx) -> list[str]:
    c = result.comparison
    n = numbers(c)
    out = []
    for cfg, words, *_ in SERIES:
        x = n[cfg]
        out.append(f"{words}: time to first token {x['ttft']:.1f} ms on average (at most "
                   f"{x['ttft_max']:.1f}); gaps between tokens {x['mean_tbt']:.2f} ms on "
                   f"average, the longest {x['max_tbt']:.1f} ms.")
    out.append(f"P/D: the KV transfer takes {_mean(c.transfer_s) * 1e3:.1f} ms on average "
               f"(at most {max(c.transfer_s) * 1e3:.1f}); a prompt's prefill ends "
               f"{_mean(c.prefill_done_s) * 1e3:.1f} ms after it arrives, on average.")
    out.append(f"Every GPU: Llama-3-8B in bf16 on an H200 (the ceilings measured in "
               f"data/h200-prefill-decode.json), blocks of 16 tokens, a token budget of "
               f"{c.budget}; the link: {get_link(c.link).name}.")
    return out
