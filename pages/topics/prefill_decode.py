"""Prefill vs decode: one request's steps on the roofline (docs/prefill-decode.md).

The widget follows one request through vLLM v0.5.5's two kinds of step: one prefill step
that pushes every prompt token through the model at once (and samples the first output
token), then decode steps that push one token per running sequence.

scenario: `sim.perf.cost.request_steps`: each step's FLOPs and bytes (`prefill_cost`,
          `decode_cost`) and its predicted time against a GPU's two ceilings (`predict`),
          one `StepTime` record per step.
view:     the roofline chart with the steps so far, the step's two terms as bars split into
          their parts, and a timeline of all the steps.
narrate:  the same StepTime in words, so the picture and the text cannot disagree.

The build-time charts put the measurements in data/h200-prefill-decode.json beside the
model's predictions (`sim.perf.cost.compare_with_measurements`). They read the file when the site
is built; the browser's worker never needs it: the widget's one measured input, the H200
ceilings measured in that run, is written below as Python literals that a test holds equal
to the file.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from pages.framework.registry import Chart
from pages.framework.widget import Context, Param, Widget
from pages.views import chart, svg
from pages.views.text import commas
from sim.perf.cost import (Roofline, StepTime, compare_with_measurements,
                           decode_intensity_limit, request_steps)
from sim.perf.hardware import get_gpu, memory_profile
from sim.perf.models import get_model

DTYPE = "bf16"
BLOCK_SIZE = 16                       # vLLM's default block size, for the KV capacity check
MAX_NUM_SEQS = 256                    # vLLM's default SchedulerConfig.max_num_seqs
DATA_FILE = "data/h200-prefill-decode.json"

# The ceilings measured in the same run as the H200 step times (data/h200-prefill-decode.json:
# `matmul_peak_flops`, `copy_bandwidth_bytes_per_s`). Literals, because the browser's worker
# gets only .py files; tests/pages/topics/test_prefill_decode.py checks they equal the file.
H200_MEASURED_PEAK_FLOPS = 785832482732577.4
H200_MEASURED_BANDWIDTH = 4099502913721.2954

MODEL_IDS = ("llama-3-8b", "llama-2-7b", "llama-2-13b", "mistral-7b", "opt-13b")
GPU_CHOICES = (
    ("h200-measured", "H200, ceilings measured here"),
    ("h200", "H200 (datasheet)"),
    ("h100-80gb", "H100 80GB (datasheet)"),
    ("a100-80gb", "A100 80GB (datasheet)"),
    ("a100-40gb", "A100 40GB (datasheet)"),
    ("l4", "L4 (datasheet)"),
)

# The roofline chart's intensity axis is the same for every trace, so points move and the
# axis stays put: 0.5 (a decode at batch 1 is about 1 FLOP/byte) to 2^14 (a prefill of
# 8192 tokens is about 8,200).
X_LO, X_HI = 0.5, 16384.0
WIDTH = 380


def roofline_for(gpu_id: str) -> Roofline:
    if gpu_id == "h200-measured":
        return Roofline(H200_MEASURED_PEAK_FLOPS, H200_MEASURED_BANDWIDTH, "H200 (measured)")
    return Roofline.from_gpu(get_gpu(gpu_id))


def gpu_for(gpu_id: str):
    return get_gpu("h200" if gpu_id == "h200-measured" else gpu_id)


def gpu_label(gpu_id: str) -> str:
    return dict(GPU_CHOICES)[gpu_id]


# ------------------------------------------------------------------ numbers as text

def _scaled(x: float, units: tuple[tuple[float, str], ...], unit: str) -> str:
    for div, prefix in units:
        if abs(x) >= div:
            return f"{_fixed3(x / div)} {prefix}{unit}"
    return f"{_fixed3(x)} {unit}"


def _fixed3(x: float) -> str:
    """About three significant digits with a fixed number of decimals (no %g: the same text
    in CPython and Pyodide even when the last bit differs)."""
    a = abs(x)
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


_SI = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"))


def flop_text(x: float) -> str:
    return _scaled(x, _SI, "FLOP")


def byte_text(x: float) -> str:
    """Decimal units (GB = 10^9 bytes), as bandwidths are quoted (TB/s)."""
    return "0 B" if x == 0 else _scaled(x, _SI, "B")


def rate_text(x: float, unit: str) -> str:
    return _scaled(x, _SI, unit)


def ms_text(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def intensity_text(x: float) -> str:
    return _fixed3(x)


# ------------------------------------------------------------------ the trace

def steps(values: dict) -> list[StepTime]:
    """The scenario: one prefill of `prompt_len` tokens, then `decode_steps` decode steps,
    each one token for each of `batch_size` sequences at our request's context."""
    return request_steps(get_model(values["model"]), roofline_for(values["gpu"]),
                         values["prompt_len"], values["decode_steps"], values["batch_size"],
                         DTYPE)


@dataclass(frozen=True)
class StepsContext(Context):
    model_name: str = ""
    # A step's place in the trace. StepTime records are values (two could compare equal),
    # so a step is found by identity, once per trace.
    number: dict = field(default_factory=dict)       # id(step) -> index

    def index(self, step: StepTime) -> int:
        return self.number[id(step)]


def context(values: dict, trace: list[StepTime]) -> StepsContext:
    return StepsContext(values, trace, get_model(values["model"]).name,
                        {id(t): i for i, t in enumerate(trace)})


def bound_words(t: StepTime) -> str:
    return f"{t.bound}-bound"


def dominant(t: StepTime) -> str:
    """What makes up most of the winning term, in words."""
    c = t.cost
    if t.bound == "compute":
        parts = (("the projections (2 FLOPs per weight per token)", c.flops_projections),
                 ("attention over the context", c.flops_attention),
                 ("the LM head", c.flops_lm_head))
        total = c.flops
    else:
        parts = (("reading the weights", c.bytes_weights),
                 ("reading the KV cache", c.bytes_kv_read),
                 ("writing new K and V", c.bytes_kv_written))
        total = c.bytes
    name, part = max(parts, key=lambda p: p[1])
    share = part / total * 100
    return (f"almost all of it is {name}" if share >= 99.5
            else f"{share:.0f}% of it is {name}")


def narrate(t: StepTime, ctx: StepsContext) -> str:
    """One step in words, written from its StepTime (the record the picture draws)."""
    i, all_steps = ctx.index(t), ctx.trace
    c, roof = t.cost, t.roofline
    side = "above" if c.arithmetic_intensity >= roof.ridge_point else "below"
    ratio = (f"{intensity_text(c.arithmetic_intensity)} FLOPs per byte, {side} the ridge point "
             f"({intensity_text(roof.ridge_point)})")
    term = "FLOPs / peak" if t.bound == "compute" else "bytes / bandwidth"
    if c.phase == "prefill":
        head = (f"Step {i + 1}, prefill: all {commas(c.num_query_tokens)} prompt tokens go "
                f"through the model in one pass and the first output token is sampled. "
                f"{flop_text(c.flops)} against {byte_text(c.bytes)} moved: {ratio}.")
    else:
        seqs = ("1 sequence" if c.num_seqs == 1
                else f"each of {commas(c.num_seqs)} sequences")
        ctx = c.num_context_tokens // c.num_seqs
        head = (f"Step {i + 1}, decode {i} of {len(all_steps) - 1}: one new token for {seqs} "
                f"(context {commas(ctx)}). {flop_text(c.flops)} against "
                f"{byte_text(c.bytes)} moved: {ratio}.")
    tail = (f" {bound_words(t).capitalize()}: {term} = {ms_text(t.predicted_s)}; "
            f"{dominant(t)}.")
    if c.phase == "decode" and i == 1:
        prefill = all_steps[0]
        tail += (f" The prefill computed {commas(prefill.cost.num_query_tokens)} tokens in "
                 f"{ms_text(prefill.predicted_s)}; this step computes "
                 f"{commas(c.num_query_tokens)} in {ms_text(t.predicted_s)}.")
        limit = decode_intensity_limit(c)
        tail += (f" No batch size takes a decode at this context past "
                 f"{intensity_text(limit)} FLOPs per byte (each sequence reads its own KV cache)"
                 + ("; that is below the ridge point." if limit < roof.ridge_point else "."))
    return head + tail


# ------------------------------------------------------------------ the picture

def _step_tip(i: int, t: StepTime) -> str:
    c = t.cost
    what = (f"prefill of {commas(c.num_query_tokens)} tokens" if c.phase == "prefill"
            else f"decode, {commas(c.num_seqs)} seq, context "
                 f"{commas(c.num_context_tokens // c.num_seqs)}")
    return (f"step {i + 1}: {what}: {intensity_text(c.arithmetic_intensity)} FLOP/B, "
            f"{bound_words(t)}, {ms_text(t.predicted_s)}")


def roofline_series(roof: Roofline, name: str = "roofline") -> chart.Series:
    pts = [(X_LO, roof.attainable_flops(X_LO)), (roof.ridge_point, roof.peak_flops),
           (X_HI, roof.attainable_flops(X_HI))]
    return chart.Series(name, pts, color="accent", kind="line")


def intensity_axis() -> chart.Axis:
    return chart.Axis("arithmetic intensity (FLOPs per byte)", log=True, base=2,
                      lo=X_LO, hi=X_HI, fmt=_pow2_label)


def _pow2_label(v: float) -> str:
    return f"{v:.1f}" if v < 1 else f"{v:.0f}"


def flops_axis(roof: Roofline, label: str = "attainable FLOP/s") -> chart.Axis:
    lo = 10 ** math.floor(math.log10(roof.attainable_flops(X_LO)) + 1e-9)
    hi = 10 ** math.ceil(math.log10(roof.peak_flops) - 1e-9)
    return chart.Axis(label, log=True, lo=lo, hi=hi)


def roofline_plot(series: list[chart.Series], roof: Roofline, height: float,
                  title: str, y_label: str = "attainable FLOP/s") -> list[str]:
    """chart.plot with the ridge point marked; its label sits at the foot of the dashed
    line, where nothing is drawn (points sit on the roof, and the roof is high there)."""
    body = chart.plot(0, 0, WIDTH, height, series, x=intensity_axis(),
                      y=flops_axis(roof, y_label),
                      markers=[chart.Marker(x=roof.ridge_point)], title=title)
    left, right = chart.PAD_LEFT, WIDTH - chart.PAD_RIGHT
    frac = math.log2(roof.ridge_point / X_LO) / math.log2(X_HI / X_LO)
    px = left + frac * (right - left)
    body.append(svg.text(px + 4, height - chart.PAD_BOTTOM - 6,
                         f"ridge {intensity_text(roof.ridge_point)}", size=10, fill="muted"))
    return body


# The parts of each term, drawn as a stacked bar: (label, StepCost field, colour).
COMPUTE_PARTS = (("projections", "flops_projections", "accent"),
                 ("attention", "flops_attention", "seq-2"),
                 ("LM head", "flops_lm_head", "seq-3"))
MEMORY_PARTS = (("weights", "bytes_weights", "seq-0"),
                ("KV read", "bytes_kv_read", "seq-1"),
                ("KV written", "bytes_kv_written", "seq-5"))
BAR_X, BAR_W = 72, 180


def _term_rows(y: float, label: str, t: StepTime, parts, total: float, rate: float,
               fmt, unit_rate: str, seconds: float, longest: float, wins: bool) -> list[str]:
    """One term of the roofline: a bar as long as its time, split into its parts."""
    out = [svg.text(6, y + 11, label, size=12, fill="fg" if wins else "muted"),
           svg.rect(BAR_X, y, BAR_W, 14, fill="free", rx=2)]
    x = float(BAR_X)
    width = BAR_W * seconds / longest
    for name, field, color in parts:
        amount = getattr(t.cost, field)
        if amount <= 0:
            continue
        w = width * amount / total
        out.append(svg.rect(x, y, max(w, 0.5), 14, fill=color, rx=0,
                            opacity=None if wins else "0.55",
                            tip=f"{label}: {name} {fmt(amount)} "
                                f"({amount / total * 100:.1f}% of {fmt(total)})"))
        x += w
    out.append(svg.text(BAR_X + BAR_W + 6, y + 11, ms_text(seconds), size=12,
                        fill="fg" if wins else "muted"))
    if wins:
        out.append(svg.text(WIDTH - 4, y + 11, "bound", size=11, fill="highlight",
                            anchor="end"))
    out.append(svg.text(BAR_X, y + 27, f"{fmt(total)} / {rate_text(rate, unit_rate)}",
                        size=11, fill="muted"))
    lx = BAR_X
    for name, field, color in parts:
        out.append(svg.rect(lx, y + 34, 9, 9, fill=color, rx=1))
        out.append(svg.text(lx + 12, y + 42, name, size=10, fill="muted"))
        lx += 12 + 6.2 * len(name) + 10
    return out


def _timeline(y: float, i: int, all_steps: list[StepTime]) -> list[str]:
    x0, full = BAR_X, WIDTH - BAR_X - 6
    total = sum(t.predicted_s for t in all_steps)
    out = [svg.text(6, y + 11, "time", size=12)]
    x = float(x0)
    for j, t in enumerate(all_steps):
        w = full * t.predicted_s / total
        if j == i:
            fill = "highlight"
        elif j > i:
            fill = "free"
        else:
            fill = "used"
        out.append(svg.rect(x, y, max(w - 0.8, 0.4), 14, fill=fill, rx=0,
                            tip=_step_tip(j, t)))
        x += w
    lines = [f"first token after {ms_text(all_steps[0].predicted_s)}"]
    if len(all_steps) > 1:
        d = all_steps[1]
        lines[0] += f", then one every {ms_text(d.predicted_s)}"
        if d.cost.num_seqs > 1:
            lines.append(f"for each of {commas(d.cost.num_seqs)} sequences: "
                         f"{rate_text(d.cost.num_seqs / d.predicted_s, 'tokens/s')} in all")
    done = sum(t.predicted_s for t in all_steps[: i + 1])
    lines.append((f"steps 1-{i + 1} take" if i else "step 1 takes")
                 + f" {ms_text(done)} of {ms_text(total)}")
    for k, line in enumerate(lines):
        out.append(svg.text(6, y + 30 + 14 * k, line, size=11, fill="muted"))
    return out


def view(t: StepTime, ctx: StepsContext) -> svg.Figure:
    i, all_steps = ctx.index(t), ctx.trace
    roof, c = t.roofline, t.cost
    series = [roofline_series(roof),
              chart.Series("prefill", [(all_steps[0].cost.arithmetic_intensity,
                                        all_steps[0].attainable_flops)],
                           color="seq-0", kind="points", marker="square",
                           tips=[_step_tip(0, all_steps[0])])]
    decode = [(j, s) for j, s in enumerate(all_steps[: i + 1]) if s.cost.phase == "decode"]
    if decode:
        series.append(chart.Series("decode", [(s.cost.arithmetic_intensity, s.attainable_flops)
                                              for _, s in decode],
                                   color="seq-1", kind="points",
                                   tips=[_step_tip(j, s) for j, s in decode]))
    series.append(chart.Series("this step", [(c.arithmetic_intensity, t.attainable_flops)],
                               color="highlight", kind="points",
                               marker="square" if c.phase == "prefill" else "circle",
                               tips=[_step_tip(i, t)]))
    h_chart = 250
    body = roofline_plot(series, roof, h_chart,
                         f"{ctx.model_name} on {gpu_label(ctx.values['gpu'])}")

    y = h_chart + 4
    if c.phase == "prefill":
        what = f"Step {i + 1}: prefill, {commas(c.num_query_tokens)} tokens"
    else:
        what = (f"Step {i + 1}: decode, {commas(c.num_seqs)} seq x 1 token, "
                f"context {commas(c.num_context_tokens // c.num_seqs)}")
    body.append(svg.text(6, y + 12, what, size=13))
    y += 24
    longest = max(t.compute_s, t.memory_s)
    body += _term_rows(y, "compute", t, COMPUTE_PARTS, c.flops, roof.peak_flops, flop_text,
                       "FLOP/s", t.compute_s, longest, t.bound == "compute")
    y += 54
    body += _term_rows(y, "memory", t, MEMORY_PARTS, c.bytes, roof.memory_bandwidth, byte_text,
                       "B/s", t.memory_s, longest, t.bound == "memory")
    y += 62
    sign = ">=" if t.bound == "compute" else "<"
    body.append(svg.text(6, y, f"{intensity_text(c.arithmetic_intensity)} FLOP/B {sign} ridge "
                               f"{intensity_text(roof.ridge_point)}: {bound_words(t)}",
                         size=12))
    y += 14
    body += _timeline(y, i, all_steps)
    height = y + 30 + 14 * (3 if len(all_steps) > 1 and all_steps[1].cost.num_seqs > 1 else 2)
    label = f"{what}: {bound_words(t)}, {ms_text(t.predicted_s)}"
    return svg.Figure(WIDTH, height, body, label)


def check(values: dict) -> dict[str, str]:
    """Rules across fields: the sequence fits the model's context window, the weights fit
    the GPU, and the batch's KV cache fits what vLLM would allocate (its start-up sizing,
    sim.perf.hardware.memory_profile, 16-token blocks)."""
    model = get_model(values["model"])
    prompt, n_decode, batch = values["prompt_len"], values["decode_steps"], values["batch_size"]
    # The prefill samples one token and each decode step one more.
    seq_len = prompt + n_decode + 1
    if seq_len > model.max_model_len:
        return {"prompt_len": (f"prompt length: {model.name}'s max_model_len is "
                               f"{commas(model.max_model_len)}; with {n_decode + 1} output "
                               f"tokens the prompt can have at most "
                               f"{commas(model.max_model_len - n_decode - 1)}")}
    gpu = gpu_for(values["gpu"])
    profile = memory_profile(model, gpu, block_size=BLOCK_SIZE, dtype=DTYPE)
    if profile.num_gpu_blocks <= 0:
        return {"gpu": (f"GPU: {model.name}'s weights ({profile.weight_bytes / 2**30:.1f} GiB) "
                        f"leave no room for a KV cache on the {gpu.name}; choose a larger GPU")}
    # The KV cache holds every token but the last one sampled.
    blocks_per_seq = -(-(prompt + n_decode) // BLOCK_SIZE)
    if batch * blocks_per_seq > profile.num_gpu_blocks:
        most = profile.num_gpu_blocks // blocks_per_seq
        return {"batch_size": (f"batch size: {commas(batch)} sequences of "
                               f"{commas(prompt + n_decode)} tokens need "
                               f"{commas(batch * blocks_per_seq)} KV blocks of {BLOCK_SIZE}; "
                               f"{model.name} on the {gpu.name} has "
                               f"{commas(profile.num_gpu_blocks)}, so at most "
                               f"{commas(most)} sequences")}
    return {}


WIDGETS = (Widget(
    id="prefill-decode",
    title="One request's steps on the roofline",
    summary="A prefill step, then decode steps: each step's FLOPs and bytes, its predicted "
            "time, and where it sits against the GPU's two ceilings.",
    scenario=steps, context=context, view=view, narrate=narrate, check=check,
    params=(
        Param("model", "model", "choice", "llama-3-8b",
              choices=tuple((m, get_model(m).name) for m in MODEL_IDS),
              help="bf16 weights, shapes from the model's public config."),
        Param("gpu", "GPU", "choice", "h200-measured", choices=GPU_CHOICES,
              help="Its peak FLOP/s and memory bandwidth; 'measured here' uses the ceilings "
                   "measured with the H200 step times."),
        Param("prompt_len", "prompt length", "int", 512, min=1, max=8192,
              help="Prompt tokens, all computed in the prefill step (1 to 8192)."),
        Param("batch_size", "batch size", "int", 1, min=1, max=2048,
              help="Sequences decoding together, ours included, each at our context length "
                   "(1 to 2048; vLLM's default max_num_seqs is 256)."),
        Param("decode_steps", "decode steps", "int", 12, min=1, max=40,
              help="Decode steps to show, one token per sequence each (1 to 40)."),
    ),
),)


# ------------------------------------------------------------------ build-time charts

def _load() -> dict:
    root = Path(__file__).resolve().parents[2]
    return json.loads((root / DATA_FILE).read_text(encoding="utf-8"))


def measured_rows(data: dict | None = None) -> list:
    """The file's rows with sim.perf.cost's predictions, prefills then decodes, each by size."""
    rows = compare_with_measurements(data if data is not None else _load())
    return sorted(rows, key=lambda r: (r.phase != "prefill", r.ctx, r.batch))


def measured_roofline_svg(data: dict | None = None) -> str:
    data = data if data is not None else _load()
    rows = measured_rows(data)
    roof = rows[0].predicted.roofline
    series = [roofline_series(roof)]
    for phase, color, marker in (("prefill", "seq-0", "square"), ("decode", "seq-1", "circle")):
        pts, tips = [], []
        for r in rows:
            if r.phase != phase:
                continue
            c = r.predicted.cost
            achieved = c.flops / r.measured_s
            pts.append((c.arithmetic_intensity, achieved))
            size = (f"{commas(r.tokens)} tokens" if phase == "prefill"
                    else f"batch {commas(r.batch)}, context {commas(r.ctx)}")
            tips.append(f"{phase}, {size}: measured {ms_text(r.measured_s)}, predicted "
                        f"{ms_text(r.predicted.predicted_s)} ({r.ratio:.2f}x), "
                        f"{rate_text(achieved, 'FLOP/s')} achieved")
        series.append(chart.Series(f"{phase}, measured", pts, color=color, kind="points",
                                   marker=marker, tips=tips))
    height = 300
    body = roofline_plot(series, roof, height, "H200: measured steps under the roof",
                         y_label="FLOP/s (points: achieved)")
    return svg.document(WIDTH, height, body,
                        label="Measured FLOP/s of each H200 step against the roofline")


def _ratio_bar(x: float, y: float, ratio: float, scale: float) -> list[str]:
    out = [svg.rect(x, y, 4 * scale, 10, fill="free", rx=1)]
    out.append(svg.rect(x, y, min(ratio, 4.0) * scale, 10,
                        fill="waste" if ratio > 2 else "accent", rx=1))
    for k in (1, 2):
        out.append(svg.line(x + k * scale, y - 2, x + k * scale, y + 12, stroke="fg", width=1))
    return out


# Table columns: (header, x, anchor); the widths fit the longest cells at font size 11.
_SIZE_COLS = {"prefill": (("prompt", 6, "start"),),
              "decode": (("batch", 6, "start"), ("context", 48, "start"))}
_TIME_COLS = (("measured", 150, "end"), ("predicted", 214, "end"), ("ratio", 256, "end"),
              ("bound", WIDTH - 4, "end"))
_BAR_X, _BAR_SCALE = 262, 16


def measured_table_svg(phase: str, data: dict | None = None) -> str:
    """A table of one phase's rows: size, measured and predicted ms, the ratio (with a bar:
    ticks at 1x and 2x), and the bound sim.perf.cost names (checked against the file's)."""
    rows = [r for r in measured_rows(data) if r.phase == phase]
    row_h, top = 19, 40
    height = top + row_h * len(rows) + 36
    body = [svg.text(6, 16, f"{phase.capitalize()} on the H200: measured vs roofline", size=12)]
    for name, x, anchor in _SIZE_COLS[phase] + _TIME_COLS:
        body.append(svg.text(x, 34, name, size=10.5, fill="muted", anchor=anchor))
    body.append(svg.line(4, top - 2, WIDTH - 4, top - 2, stroke="line"))
    for k, r in enumerate(rows):
        y = top + row_h * k + 13
        if k % 2:
            body.append(svg.rect(2, y - 13, WIDTH - 4, row_h, fill="panel", rx=0))
        t = r.predicted
        sizes = ((commas(r.tokens),) if phase == "prefill"
                 else (commas(r.batch), commas(r.ctx)))
        same = t.bound == r.measured_bound
        texts = sizes + (f"{r.measured_s * 1e3:.2f} ms", f"{t.predicted_s * 1e3:.2f} ms",
                         f"{r.ratio:.2f}x", t.bound if same else f"{t.bound}*")
        cols = _SIZE_COLS[phase] + _TIME_COLS
        what = (f"{commas(r.tokens)} prompt tokens" if phase == "prefill"
                else f"batch {commas(r.batch)}, context {commas(r.ctx)}")
        tip = (f"{phase}, {what}: measured {ms_text(r.measured_s)}, roofline "
               f"{ms_text(t.predicted_s)}, ratio {r.ratio:.2f}, {t.bound}-bound "
               + ("(the file's roofline agrees)" if same
                  else f"(the file says {r.measured_bound})"))
        row = [svg.text(x, y, text, size=11, anchor=anchor)
               for text, (_, x, anchor) in zip(texts, cols)]
        row += _ratio_bar(_BAR_X, y - 9, r.ratio, _BAR_SCALE)
        body.append(svg.group(row, tip=tip))
    lo = min(r.ratio for r in rows)
    hi = max(r.ratio for r in rows)
    agree = sum(r.predicted.bound == r.measured_bound for r in rows)
    y = top + row_h * len(rows) + 16
    body.append(svg.text(6, y, f"measured / predicted: {lo:.2f}x to {hi:.2f}x (ticks: 1x, 2x)",
                         size=10.5, fill="muted"))
    body.append(svg.text(6, y + 14, f"bound as in the file on {agree} of {len(rows)} rows"
                         + ("" if agree == len(rows) else " (* differs)"),
                         size=10.5, fill="muted"))
    return svg.document(WIDTH, height, body,
                        label=f"Measured and predicted {phase} step times on the H200")


CHARTS = (
    Chart("h200-roofline", "Measured H200 steps under the roofline", measured_roofline_svg,
          caption="Each point is one measured step of a Llama-3-8B-shaped model on an H200: "
                  "its intensity (counted by sim.cost) against the FLOP/s it achieved "
                  "(FLOPs / measured time). The line is the roofline from the ceilings measured "
                  "in the same run; a point's distance below it is the ratio in the tables. "
                  "Data: data/h200-prefill-decode.json."),
    Chart("h200-prefill-table", "Prefill: measured vs predicted",
          lambda: measured_table_svg("prefill"),
          caption="Prefill of one prompt. Prompts of 128 tokens or fewer ran outside a CUDA "
                  "graph and carry about 10 ms of kernel-launch overhead (the file's method)."),
    Chart("h200-decode-table", "Decode: measured vs predicted",
          lambda: measured_table_svg("decode"),
          caption="Decode steps: one token for each of a batch of sequences, each with the "
                  "context length shown already cached, "
                  "replayed from a CUDA graph as vLLM does."),
)
