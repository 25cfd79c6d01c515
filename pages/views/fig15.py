"""The paper's Fig. 15 (memory saved by sharing KV blocks) beside the simulation's
reproduction (sim/studies/sharing.py: `reproduce_fig15`): panel (a) parallel sampling on the
parallel sampling page, panel (b) beam search on the beam search page, with the caption that
says how the numbers were measured."""
from __future__ import annotations

from pages.views import chart, svg
from sim.studies.sharing import FIG15_BLOCK_SIZE, FIG15_REQUESTS, FIG15_SEED, PAPER_FIG15


def panel(mode: str, results: dict) -> str:
    """The panel for `mode` ("parallel" or "beam"): our time-averaged and peak savings
    (`results`: width -> SharingResult) beside the paper's, with the numbers and the gap
    written out under the plot."""
    paper = PAPER_FIG15[mode]
    widths = sorted(results)
    symbol = "n" if mode == "parallel" else "k"
    what = "parallel sampling, n samples" if mode == "parallel" else "beam search, width k"
    letter = "(a)" if mode == "parallel" else "(b)"
    avg = [(w, 100 * results[w].time_averaged) for w in widths]
    peak = [(w, 100 * results[w].at_peak) for w in widths]
    theirs = [(w, 100 * paper[w]) for w in widths]
    series = [
        chart.Series("sim, time-averaged", avg, color="seq-0", kind="both",
                     tips=[f"{symbol} = {w}: {y:.1f}% (sim, time-averaged)" for w, y in avg]),
        chart.Series("sim, at peak", peak, color="seq-2", kind="both", dashed=True,
                     tips=[f"{symbol} = {w}: {y:.1f}% (sim, at peak)" for w, y in peak]),
        chart.Series("paper, Fig. 15", theirs, color="seq-1", kind="points", marker="square",
                     tips=[f"{symbol} = {w}: {y:.2f}% (paper)" for w, y in theirs]),
    ]
    top = max(y for s in series for _, y in s.points)
    ceiling = 10 * (int(top // 10) + 1)
    width, plot_h = 400, 250
    body = chart.plot(0, 0, width, plot_h, series,
                      x=chart.Axis(symbol, lo=1, hi=7, fmt=lambda t: str(int(t))),
                      y=chart.Axis("memory saving (%)", lo=0, hi=ceiling,
                                  fmt=lambda t: f"{t:.0f}"),
                      title=f"Fig. 15 {letter}: {what}")
    # The numbers, in columns (SVG collapses runs of spaces, so one text per cell).
    columns = ((symbol, 24), ("sim, avg", 120), ("sim, peak", 206), ("paper", 282),
               ("gap (avg)", 380))
    y = plot_h + 6
    for head, cx in columns:
        body.append(svg.text(cx, y + 10, head, size=10, fill="muted", anchor="end"))
    for w, (_, a), (_, p), (_, t) in zip(widths, avg, peak, theirs):
        y += 15
        cells = (str(w), f"{a:.1f}%", f"{p:.1f}%", f"{t:.2f}%", f"{a - t:+.1f} points")
        for text, (_, cx) in zip(cells, columns):
            body.append(svg.text(cx, y + 10, text, size=10, anchor="end"))
    return svg.document(width, y + 18, body,
                        label=f"Memory saving from sharing KV blocks, {what}: simulation "
                              "beside the paper's Fig. 15")


def caption(mode: str) -> str:
    """How the panel's numbers were measured, under the chart."""
    return (f"{FIG15_REQUESTS[mode]} Alpaca-like requests (sim.workload: log-normal lengths, "
            f"means 19.31 tokens in and 58.45 out, seed {FIG15_SEED}), all at step 0, "
            f"blocks of {FIG15_BLOCK_SIZE}, every sequence generating its request's output "
            "length (ignore_eos, as vLLM's throughput benchmark does), a pool large enough "
            "that nothing is preempted. Saving = blocks saved by sharing / blocks without "
            "sharing, summed over every engine step (time-averaged) or at the peak of each. "
            "Paper: OPT-13B serving the Alpaca trace.")
