"""The prefix caching page's chart of a CPU tier (built at build time from
sim/studies/cpu_offloading.py): a chat whose conversations outgrow the GPU pool, with GPU
prefix caching alone and with the offloading connector's CPU tier of 1x, 4x and 16x the
pool; the hit rate and the prompt tokens computed per step over time, and what the tier
saves and costs (tokens, link time, time to first token on an H200)."""
from __future__ import annotations

from functools import lru_cache

from pages.views import chart, fit, kv_view, svg
from pages.views import prefix_view as pv
from pages.views.text import f2
from sim.perf.host_link import PCIE
from sim.studies.cpu_offloading import (
    CPU_FACTORS,
    OFFLOAD_CHAT,
    OffloadRun,
    OffloadSetup,
    sweep,
    windowed,
)

W, S, X0 = pv.WIDTH, pv.S, pv.X0
SETUP = OffloadSetup()
WINDOW_S = 5.0
COLORS = {0: "muted", 1: "seq-1", 4: "seq-2", 16: "accent"}


@lru_cache(maxsize=1)
def runs() -> tuple[OffloadRun, ...]:
    """The four runs (the chart and the page's numbers share them)."""
    return tuple(sweep(SETUP))


def tier_name(run: OffloadRun) -> str:
    if not run.cpu_blocks:
        return "GPU only"
    return f"+ CPU {run.cpu_blocks // SETUP.pool_blocks}x"


def follow_up_ttft_s(run: OffloadRun) -> float:
    """Mean time to first token of the conversations' later turns (the first turns can only
    hit the system prompt)."""
    later = [t for rid, t in run.ttft_s.items() if not rid.endswith("t0")]
    return sum(later) / len(later)


def hit_rate_series(run: OffloadRun) -> list[tuple[float, float]]:
    found = windowed(run.steps, lambda r: r.gpu_hit_tokens + r.cpu_hit_tokens, WINDOW_S)
    computed = windowed(run.steps, lambda r: r.computed_prompt_tokens, WINDOW_S)
    return [(t, 100 * f / (f + c)) for (t, f), (_, c) in zip(found, computed) if f + c]


def computed_series(run: OffloadRun) -> list[tuple[float, float]]:
    computed = windowed(run.steps, lambda r: r.computed_prompt_tokens, WINDOW_S)
    steps = windowed(run.steps, lambda r: 1, WINDOW_S)
    return [(t, c / n) for (t, c), (_, n) in zip(computed, steps) if n]


def summary_rows(rs=None) -> list[tuple[str, str, str, str]]:
    """(tier, found, prompt tokens computed, TTFT) per run, as the chart's table shows them."""
    rs = rs if rs is not None else runs()
    return [(tier_name(r), f"{100 * r.hit_rate:.0f}%", f"{r.computed_prompt_tokens:,}",
             f"{f2(1e3 * follow_up_ttft_s(r))} ms") for r in rs]


def cost_line(run: OffloadRun) -> str:
    """What the largest tier moved over PCIe."""
    return (f"{tier_name(run)} loads {run.cpu_hit_tokens:,} tokens "
            f"({run.load_bytes / 2**30:.1f} GiB) in {1e3 * run.load_s:.0f} ms of PCIe time "
            f"in all; it stores {run.store_bytes / 2**30:.1f} GiB.")


def offloading_svg() -> str:
    rs = runs()
    fs = S / 10
    xs = chart.Axis("time (s)", lo=0, fmt=lambda t: f"{t:.0f}")
    body = chart.plot(0, 0, W, 240, [
        chart.Series(tier_name(r), hit_rate_series(r), color=COLORS[r.cpu_blocks
                                                                     // SETUP.pool_blocks],
                     kind="line", dashed=not r.cpu_blocks,
                     tips=[f"{tier_name(r)}, {t - WINDOW_S:.0f}-{t:.0f} s: {v:.0f}% of prompt "
                           "tokens found" for t, v in hit_rate_series(r)])
        for r in reversed(rs)], x=xs, y=chart.Axis("prompt tokens found (%)", lo=0, hi=100,
                                          fmt=lambda t: f"{t:.0f}"),
        title="Prompt tokens found in a cache", legend=False, font_scale=fs)
    items, h = fit.legend(X0, 240, W - 4, [
        ("dash" if not r.cpu_blocks else "line", COLORS[r.cpu_blocks // SETUP.pool_blocks],
         tier_name(r)) for r in rs], size=S)
    body += items
    y = 240 + h + 14
    top = max(v for r in rs for _, v in computed_series(r))
    body += chart.plot(0, y, W, 240, [
        chart.Series(tier_name(r), computed_series(r),
                     color=COLORS[r.cpu_blocks // SETUP.pool_blocks], kind="line",
                     dashed=not r.cpu_blocks,
                     tips=[f"{tier_name(r)}, {t - WINDOW_S:.0f}-{t:.0f} s: {v:.1f} prompt "
                           "tokens computed per step" for t, v in computed_series(r)])
        for r in reversed(rs)], x=xs, y=chart.Axis("prompt tokens per step", lo=0, hi=top * 1.05,
                                          fmt=lambda t: f"{t:.0f}"),
        title="Prompt tokens computed per step", legend=False, font_scale=fs)
    y += 244
    body += _table(X0, y, [("", "found", "computed", "TTFT")] + summary_rows(rs))
    y += 5 * ROW_H + 4
    elements, dy = kv_view.lines(X0, y, cost_line(rs[-1]))
    body += elements
    y += dy
    return svg.document(W, y + 6, body, label="Prompt tokens found and computed per step "
                                              "over time, GPU prefix caching alone and with "
                                              "CPU tiers of 1x, 4x and 16x the GPU pool")


ROW_H = S * 1.45
COLUMNS = (0, 120, 200, 300)     # left edges of the table's columns (the last right-aligned)


def _table(x: float, y: float, rows) -> list[str]:
    out = []
    for i, row in enumerate(rows):
        ty = y + (i + 1) * ROW_H - 4
        fill = "muted" if i == 0 else "fg"
        for j, (cell, cx) in enumerate(zip(row, COLUMNS)):
            if j == len(row) - 1:
                out.append(svg.text(W - 8, ty, cell, fill=fill, size=S, anchor="end"))
            else:
                out.append(svg.text(x + cx, ty, cell, fill=fill, size=S))
        if i == 0:
            out.append(svg.line(x, y + ROW_H + 1, W - 8, y + ROW_H + 1, stroke="line"))
    return [svg.group(out, tip="Per CPU tier: prompt tokens found in a cache (GPU or CPU), "
                               "prompt tokens computed, mean time to first token of the "
                               "follow-up turns", data_k="table")]


def caption() -> str:
    link = PCIE[SETUP.link_id]
    return (f"{OFFLOAD_CHAT.conversations} conversations of {OFFLOAD_CHAT.turns} turns, a "
            f"{OFFLOAD_CHAT.system_prompt:,}-token system prompt shared by all, ShareGPT-like "
            f"messages (up to {OFFLOAD_CHAT.max_user}) and answers (up to "
            f"{OFFLOAD_CHAT.max_answer}), first turns {SETUP.rate_per_s:g} per second, each "
            f"follow-up {SETUP.think_s:g} s after its answer; sim/v1's engine with a GPU pool "
            f"of {SETUP.pool_blocks} blocks of 16 tokens and the offloading connector's CPU "
            f"tier of {', '.join(str(f * SETUP.pool_blocks) for f in CPU_FACTORS[1:])} blocks "
            "(prompt blocks only, vLLM's default), the synchronous engine loop. Steps priced "
            "with the roofline for "
            "Llama-3-8B in bf16 on an H200; loads and stores over PCIe at "
            f"{link.bandwidth / 1e9:.1f} GB/s (measured). Counted in {WINDOW_S:g}-second "
            "windows; TTFT is the mean of the follow-up turns. Computed at build time by "
            "sim/studies/cpu_offloading.py.")
