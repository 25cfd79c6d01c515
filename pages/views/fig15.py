"""The paper's Fig. 15 (memory saved by sharing KV blocks) beside the simulation's
reproduction (sim/studies/sharing.py: `reproduce_fig15`): panel (a) parallel sampling on the
parallel sampling page, panel (b) beam search on the beam search page, with the caption that
says how the numbers were measured."""
from __future__ import annotations

from pages.views import chart, kv_view, svg
from sim.studies.sharing import (
    CALIBRATION_GRID,
    CALIBRATION_REQUESTS,
    CALIBRATION_SEEDS,
    FIG15_BEAM_TOP_MARGIN,
    FIG15_BLOCK_SIZE,
    FIG15_REQUESTS,
    FIG15_SEED,
    PAPER_FIG15,
)

# The panels are 400 units wide and keep every text at FONT (13.5 units) or more, so a phone
# (which draws them about 330 px wide) shows no text under 11 px.
WIDTH = 400
FONT = kv_view.FONT
SCALE = FONT / 10           # chart.plot's tick labels are 10 units at font_scale 1

# The table under the plot: (heading, right edge). Paper and simulation side by side, then
# the gap between them, then the saving at peak; every cell fits 400 units at FONT.
COLUMNS = (("k", 24), ("paper", 104), ("sim, avg", 188), ("sim \u2212 paper", 290),
           ("sim, peak", 384))


def _legend(x: float, y: float, series: list) -> tuple[list[str], float]:
    """The series' names under the plot, each after a sample of its line and marker."""
    out = []
    lead = round(FONT * 1.45, 2)
    for i, s in enumerate(series):
        yy = y + i * lead
        cy = yy + FONT / 2 - 4
        if s.kind in ("line", "both"):
            style = (f"stroke:{svg.color(s.color)};stroke-width:2"
                     + (";stroke-dasharray:6 4" if s.dashed else ""))
            out.append(f"<line{svg.attrs(x1=x, y1=cy, x2=x + 26, y2=cy, style=style)}/>")
        if s.marker == "square":
            out.append(svg.rect(x + 9, cy - 4, 8, 8, fill=s.color, rx=1))
        else:
            out.append(f"<circle{svg.attrs(cx=x + 13, cy=cy, r=4.5)}"
                       f" style=\"fill:{svg.color(s.color)}\"></circle>")
        out.append(svg.text(x + 34, yy + FONT - 3, s.name, size=FONT))
    return out, len(series) * lead


def panel(mode: str, results: dict) -> str:
    """The panel for `mode` ("parallel" or "beam"): our time-averaged and peak savings
    (`results`: width -> SharingResult) beside the paper's, and under the plot a table of
    the paper's number and the simulation's side by side for every width, with the gap."""
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
    # The title over the plot, wrapped (chart.plot would centre it on one line).
    body, dy = kv_view.lines(2, 0, f"Fig. 15 {letter}: {what}", fill="fg",
                             size=kv_view.HEADING, right=WIDTH - 2)
    plot_h = 280
    body += chart.plot(0, dy - 18, WIDTH, plot_h, series,
                       x=chart.Axis(symbol, lo=1, hi=7, fmt=lambda t: str(int(t))),
                       y=chart.Axis("memory saving (%)", lo=0, hi=ceiling,
                                    fmt=lambda t: f"{t:.0f}"),
                       legend=False, font_scale=SCALE)
    y = dy - 18 + plot_h + 6
    elements, dy = _legend(chart.PAD_LEFT * SCALE, y, series)
    body += elements
    y += dy + 4
    # The numbers, in columns (SVG collapses runs of spaces, so one text per cell).
    columns = ((symbol, COLUMNS[0][1]),) + COLUMNS[1:]
    lead = round(FONT * 1.4, 2)
    for head, cx in columns:
        body.append(svg.text(cx, y + FONT, head, size=FONT, fill="muted", anchor="end"))
    for w, (_, a), (_, p), (_, t) in zip(widths, avg, peak, theirs):
        y += lead
        gap = f"{a - t:+.1f}".replace("-", "\u2212")
        cells = (str(w), f"{t:.2f}%", f"{a:.1f}%", f"{gap} points", f"{p:.1f}%")
        for text, (_, cx) in zip(cells, columns):
            body.append(svg.text(cx, y + FONT, text, size=FONT, anchor="end"))
    y += lead
    if mode == "beam":
        elements, dy = kv_view.lines(2, y + 2, "sim: stand-in model with a top-token margin of "
                                     f"{FIG15_BEAM_TOP_MARGIN:g} nats, calibrated once for "
                                     "all k", right=WIDTH - 2)
        body += elements
        y += dy + 2
    return svg.document(WIDTH, y + 6, body,
                        label=f"Memory saving from sharing KV blocks, {what}: simulation "
                              "beside the paper's Fig. 15")


def caption(mode: str) -> str:
    """How the panel's numbers were measured, under the chart."""
    text = (f"{FIG15_REQUESTS[mode]} Alpaca-like requests (sim.workload: log-normal lengths, "
            f"means 19.31 tokens in and 58.45 out, seed {FIG15_SEED}), all at step 0, "
            f"blocks of {FIG15_BLOCK_SIZE}, every sequence generating its request's output "
            "length (ignore_eos, as vLLM's throughput benchmark does), a pool large enough "
            "that nothing is preempted. Saving = blocks saved by sharing / blocks without "
            "sharing, summed over every engine step (time-averaged) or at the peak of each. "
            "Paper: OPT-13B serving the Alpaca trace.")
    if mode == "beam":
        text += (" Calibrated once for all k: the stand-in model's top-token margin "
                 "(beam_top_margin: how many nats more likely each beam's best next token is "
                 "than its second best, on top of made-up gaps of 0.05 to 2.05 nats) is "
                 f"{FIG15_BEAM_TOP_MARGIN:g}, the value on a grid of "
                 f"{CALIBRATION_GRID[0]:g} to {CALIBRATION_GRID[-1]:g} nats that comes "
                 "closest to the paper's three points together (least squares) on "
                 f"{len(CALIBRATION_SEEDS)} workloads of {CALIBRATION_REQUESTS} requests "
                 "pooled. Without it (margin 0) these requests save 42.9, 63.2 and 69.3%.")
    return text
