"""Prefill vs decode: steps on the roofline (docs/prefill-decode.md).

The widget is a tour of vLLM v0.5.5's two kinds of step, each step teaching one thing: one
request's prefill (every prompt token in one pass), its first decode (one token through
all the weights), decodes at growing batch sizes until the step turns compute-bound (or
the KV cache is full), then a decode at a longer prompt's context.

scenario: `steps`: each step's FLOPs and bytes (`sim.perf.cost.prefill_cost`,
          `decode_cost`), its predicted time against a GPU's two ceilings (`predict`), the
          first compute-bound batch (`decode_compute_bound_batch`) and how many sequences
          the KV cache holds (`sim.perf.hardware.memory_profile`): one `TourStep` per step.
view:     the roofline chart with the steps so far, the step's two terms as bars split into
          their parts, and its throughput.
narrate:  the same TourStep in words (cause, effect, consequence); `details` gives every
          number.

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
from pages.questions import Asker, roofline
from pages.views import chart, fit, svg
from pages.views.text import commas, noun
from sim.perf.cost import (
    Roofline,
    StepTime,
    compare_with_measurements,
    decode_compute_bound_batch,
    decode_cost,
    decode_intensity_limit,
    predict,
    prefill_cost,
)
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
WIDTH = 400
SMALL = fit.min_size(WIDTH)           # the smallest text: 11 px on a phone
FONT_SCALE = SMALL / 10               # chart.plot's tick labels are 10 units at scale 1


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
        return f"{x:,.0f}"
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

# The batches the tour passes through before its last decode step: 256 is vLLM's default
# max_num_seqs. The last decode step is the first compute-bound batch, or the largest batch
# the KV cache holds when that comes first (or when no batch is compute-bound).
TOUR_BATCHES = (16, 64, 256)
MAX_BATCH = 4096                      # the tour stops here whatever fits


@dataclass(frozen=True)
class TourStep:
    """One step of the tour: what runs, and the roofline's prediction for it.

    kind: "prefill" (one request's prompt), "first" (its first decode, batch 1), "batch" (a
    bigger decode batch), "crossover" (the first compute-bound batch), "capped" (the KV cache
    holds no bigger batch, and compute-bound would need one), "never" (no batch at this
    context is compute-bound; the largest that fits), "long" (the longer prompt's decode)."""
    kind: str
    time: StepTime
    batch: int
    context: int                      # tokens cached before the step (0 for the prefill)
    fit: int                          # sequences of this context the KV cache holds
    crossover: int | None             # the first compute-bound batch at this context

    @property
    def cost(self):
        return self.time.cost


def kv_fit(values: dict, context: int) -> tuple[int, int, int]:
    """(sequences that fit, blocks per sequence, blocks in all) for decodes at `context`:
    each sequence holds context + 1 tokens once the step has written its new token's K and V
    (vLLM's start-up sizing, sim.perf.hardware.memory_profile, 16-token blocks)."""
    profile = memory_profile(get_model(values["model"]), gpu_for(values["gpu"]),
                             block_size=BLOCK_SIZE, dtype=DTYPE)
    per_seq = -(-(context + 1) // BLOCK_SIZE)
    return profile.num_gpu_blocks // per_seq, per_seq, profile.num_gpu_blocks


def steps(values: dict) -> list[TourStep]:
    """The scenario: one request's prefill, its first decode, decodes at growing batches
    until the step turns compute-bound (or the KV cache is full), then a decode at the longer
    prompt's context. Every number comes from sim.perf.cost."""
    model, roof = get_model(values["model"]), roofline_for(values["gpu"])
    prompt, long_ = values["prompt_len"], values["long_prompt"]

    def decode(kind: str, batch: int, context: int, fit: int, cross: int | None) -> TourStep:
        return TourStep(kind, predict(decode_cost(model, [context] * batch, DTYPE), roof),
                        batch, context, fit, cross)

    room, _, _ = kv_fit(values, prompt)
    cross = decode_compute_bound_batch(model, roof, prompt, DTYPE)
    most = min(room, MAX_BATCH)
    if cross is not None and cross <= most:
        last_kind, last = "crossover", cross
    else:
        last_kind, last = ("never" if cross is None else "capped"), most
    out = [TourStep("prefill", predict(prefill_cost(model, prompt, DTYPE), roof), 1, 0, room,
                    None),
           decode("first", 1, prompt, room, cross)]
    out += [decode("batch", b, prompt, room, cross) for b in TOUR_BATCHES if 1 < b < last]
    if last > 1:
        out.append(decode(last_kind, last, prompt, room, cross))
    long_fit, _, _ = kv_fit(values, long_)
    out.append(decode("long", min(last, long_fit), long_, long_fit,
                      decode_compute_bound_batch(model, roof, long_, DTYPE)))
    return out


@dataclass(frozen=True)
class StepsContext(Context):
    model_name: str = ""
    # A step's place in the trace. TourStep records are values (two could compare equal),
    # so a step is found by identity, once per trace.
    number: dict = field(default_factory=dict)       # id(step) -> index

    def index(self, step: TourStep) -> int:
        return self.number[id(step)]


def context(values: dict, trace: list[TourStep]) -> StepsContext:
    return StepsContext(values, trace, get_model(values["model"]).name,
                        {id(t): i for i, t in enumerate(trace)})


def label(t: TourStep, ctx: StepsContext | None = None) -> str:
    """The step's name: the counter, the picture's heading and the narration use it."""
    if t.kind == "prefill":
        return f"prefill, {commas(t.cost.num_query_tokens)} tokens"
    name = f"decode, batch {commas(t.batch)}"
    return name + (f", context {commas(t.context)}" if t.kind == "long" else "")


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


def tokens_per_s(t: TourStep) -> float:
    """Tokens the step produces per second: one per sequence."""
    return t.batch / t.time.predicted_s


def rate(t: TourStep) -> str:
    return f"{commas(round(tokens_per_s(t)))} tokens/s"


def count(n: int, word: str) -> str:
    """"1 token", "2,048 tokens"."""
    return f"{commas(n)} {noun(n, word)}"


def kv_share(t: TourStep) -> float:
    c = t.cost
    return (c.bytes_kv_read + c.bytes_kv_written) / c.bytes * 100


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def narrate(t: TourStep, ctx: StepsContext) -> str:
    """Cause, effect, consequence, in at most three sentences, from the step's record."""
    first = ctx.trace[1]
    c, roof, time = t.cost, t.time.roofline, t.time
    head = _cap(label(t)) + ": "
    ridge = intensity_text(roof.ridge_point)
    inten = intensity_text(c.arithmetic_intensity)
    ms = ms_text(time.predicted_s)
    if t.kind == "prefill":
        if time.bound == "compute":
            return (head + f"all {commas(c.num_query_tokens)} prompt tokens go through the "
                    f"weights in one pass, so each byte read feeds {inten} FLOPs, right of "
                    f"the ridge point ({ridge}). The step is compute-bound: {ms}, set by the "
                    f"FLOPs. That is the time to the first token.")
        return (head + f"{commas(c.num_query_tokens)} prompt tokens share one read of the "
                f"weights, so each byte feeds only {inten} FLOPs, left of the ridge point "
                f"({ridge}). The step is memory-bound: {ms}, like a decode step. A longer "
                f"prompt moves the prefill right, past the ridge.")
    if t.kind == "first":
        prefill = ctx.trace[0].time
        return (head + f"the request's next token goes through the same "
                f"{byte_text(c.bytes_weights)} of weights alone, so the step does {inten} "
                f"FLOPs per byte, far left of the ridge ({ridge}). It is memory-bound: {ms}, "
                f"{time.predicted_s / prefill.predicted_s * 100:.0f}% of the prefill's time "
                f"for 1 token instead of {commas(ctx.trace[0].cost.num_query_tokens)}. Other "
                f"sequences could share that read: that is why vLLM batches decodes.")
    if t.kind == "batch":
        growth = (c.bytes / first.cost.bytes - 1) * 100
        text = (head + f"{t.batch} sequences share one read of the weights, so the FLOPs grow "
                f"{t.batch}x while the bytes grow {growth:.0f}%: {inten} FLOPs per byte. The step "
                f"takes {ms} instead "
                f"of {ms_text(first.time.predicted_s)}: {rate(t)} against {rate(first)}.")
        if t.batch == MAX_NUM_SEQS:
            return text + (f" This is vLLM's default max_num_seqs, still memory-bound: each "
                           f"sequence's own KV cache is now {kv_share(t):.0f}% of the bytes.")
        if kv_share(t) >= 10:
            return text + (f" Each sequence still reads its own KV cache ({kv_share(t):.0f}% "
                           f"of the bytes), so the point moves right more slowly than the "
                           f"batch grows.")
        return text + f" Still memory-bound: {dominant(time)}."
    if t.kind == "crossover":
        more = (f"; vLLM needs max_num_seqs raised above {MAX_NUM_SEQS} to run it"
                if t.batch > MAX_NUM_SEQS else "")
        where = "at" if inten == ridge else "past"
        return (head + f"at this batch the FLOPs catch up with the bytes: {inten} FLOPs per "
                f"byte, {where} the ridge ({ridge}). The step is compute-bound: {ms} for "
                f"{count(t.batch, 'token')}, {rate(t)}. Beyond this batch each sequence adds "
                f"time in proportion, so throughput stops growing{more}.")
    limit = intensity_text(decode_intensity_limit(c))
    if t.kind == "never":
        why = ("the most that fit in the KV cache" if t.batch == t.fit
               else "the largest batch this widget tries")
        return (head + f"{count(t.batch, 'sequence')} with {commas(t.context)}-token contexts "
                f"{'is' if t.batch == 1 else 'are'} {why}, and the step is still memory-bound "
                f"at {inten} FLOPs per byte. Each "
                f"sequence reads its own KV cache, so no batch at this context passes {limit} "
                f"FLOPs per byte, below the ridge ({ridge}). Only a shorter context or a "
                f"smaller KV cache per token would help.")
    if t.kind == "capped":
        return (head + f"the KV cache holds at most {count(t.batch, 'sequence')} with "
                f"{commas(t.context)}-token contexts, and that batch is still memory-bound at "
                f"{inten} FLOPs per byte. Compute-bound would take {commas(t.crossover)} "
                f"sequences. Memory, not the roofline, caps the batch here.")
    # long
    prompt = ctx.trace[0].cost.num_query_tokens
    fewer = (f"; only {commas(t.batch)} such {noun(t.batch, 'sequence')} fit in the KV "
             f"cache" if t.batch < ctx.trace[-2].batch else "")
    times = t.context / prompt
    times_text = f"{times:.0f}x" if times >= 10 else f"{times:.1f}x"
    cause = (head + f"each sequence now reads a {commas(t.context)}-token KV cache, "
             f"{times_text} the {commas(prompt)}-token one{fewer}. ")
    effect = (f"KV reads are {kv_share(t):.0f}% of the bytes and the step is "
              f"{bound_words(time)} at {inten} FLOPs per byte ({ms}, {rate(t)}). ")
    if decode_intensity_limit(c) < roof.ridge_point:
        return cause + effect + (f"No batch at this context passes {limit} FLOPs per byte, "
                                 f"below the ridge: long contexts keep decoding memory-bound.")
    if time.bound == "memory" and t.crossover is not None:
        return cause + effect + (f"Compute-bound would take {commas(t.crossover)} sequences "
                                 f"at this context.")
    return cause + effect + "A longer context moves the point left, toward memory."


def details(t: TourStep, ctx: StepsContext) -> list[str]:
    """The whole account of the step: what ran, its FLOPs and bytes part by part, both
    terms, the throughput, the KV cache it needs, and what vLLM would do."""
    c, roof, time = t.cost, t.time.roofline, t.time
    v = ctx.values
    out = []
    if c.phase == "prefill":
        out.append(f"One request's prefill: {count(c.num_query_tokens, 'prompt token')} "
                   f"computed in one pass; it samples the first output token.")
    else:
        out.append(f"One decode step of {count(t.batch, 'sequence')}, each with "
                   f"{count(t.context, 'token')} already cached: one new token each "
                   f"({commas(c.num_query_tokens)} in all).")
    out.append(f"FLOPs: {flop_text(c.flops)} = projections {flop_text(c.flops_projections)} "
               f"+ attention {flop_text(c.flops_attention)} + LM head "
               f"{flop_text(c.flops_lm_head)}.")
    out.append(f"Bytes: {byte_text(c.bytes)} = weights {byte_text(c.bytes_weights)} + KV read "
               f"{byte_text(c.bytes_kv_read)} + KV written {byte_text(c.bytes_kv_written)}.")
    out.append(f"Arithmetic intensity: {intensity_text(c.arithmetic_intensity)} FLOPs per "
               f"byte; the ridge point of the {gpu_label(v['gpu'])} is "
               f"{rate_text(roof.peak_flops, 'FLOP/s')} / {rate_text(roof.memory_bandwidth, 'B/s')}"
               f" = {intensity_text(roof.ridge_point)}.")
    out.append(f"Compute term (FLOPs / peak): {ms_text(time.compute_s)}. Memory term (bytes / "
               f"bandwidth): {ms_text(time.memory_s)}. The longer one is the predicted time: "
               f"{bound_words(time)}, {ms_text(time.predicted_s)}; {dominant(time)}.")
    if c.phase == "prefill":
        out.append("vLLM computes logits only for the last prompt token "
                   "(LogitsProcessor, selected_token_indices), so the LM head costs one row.")
        out.append(f"Time to the first token: {ms_text(time.predicted_s)}.")
        return out
    out.append(f"Throughput: {count(t.batch, 'token')} in {ms_text(time.predicted_s)}, "
               f"{rate(t)}.")
    limit = decode_intensity_limit(c)
    out.append(f"However big the batch, a decode at this context stays below "
               f"{intensity_text(limit)} FLOPs per byte (one sequence's FLOPs over its own KV "
               f"bytes): " + (f"compute-bound from batch {commas(t.crossover)} on."
                              if t.crossover is not None else "never compute-bound."))
    room, per_seq, blocks = kv_fit(v, t.context)
    out.append(f"KV cache: {count(t.batch, 'sequence')} of {commas(t.context + 1)} tokens "
               f"take {count(t.batch * per_seq, 'block')} of {BLOCK_SIZE}; {ctx.model_name} "
               f"on the {gpu_for(v['gpu']).name} has {commas(blocks)}, enough for "
               f"{count(room, 'sequence')}.")
    if t.batch > MAX_NUM_SEQS:
        out.append(f"Above vLLM's default max_num_seqs ({MAX_NUM_SEQS}): the batch needs it "
                   f"raised, and v0.5.5 captures CUDA graphs only up to batch 256, so this step "
                   f"would run eagerly.")
    return out


# ------------------------------------------------------------------ the picture

def _step_tip(i: int, t: TourStep) -> str:
    return (f"{label(t)}: {intensity_text(t.cost.arithmetic_intensity)} FLOP/B, "
            f"{bound_words(t.time)}, {ms_text(t.time.predicted_s)}")


def roofline_series(roof: Roofline, name: str = "roofline") -> chart.Series:
    pts = [(X_LO, roof.attainable_flops(X_LO)), (roof.ridge_point, roof.peak_flops),
           (X_HI, roof.attainable_flops(X_HI))]
    return chart.Series(name, pts, color="accent", kind="line")


def intensity_axis() -> chart.Axis:
    return chart.Axis("FLOPs per byte (intensity)", log=True, base=2,
                      lo=X_LO, hi=X_HI, fmt=_pow2_label)


def _pow2_label(v: float) -> str:
    if v < 1:
        return f"{v:.1f}"
    return f"{v / 1024:.0f}K" if v >= 1024 else f"{v:.0f}"


def flops_axis(roof: Roofline, label: str = "attainable FLOP/s") -> chart.Axis:
    lo = 10 ** math.floor(math.log10(roof.attainable_flops(X_LO)) + 1e-9)
    hi = 10 ** math.ceil(math.log10(roof.peak_flops) - 1e-9)
    return chart.Axis(label, log=True, lo=lo, hi=hi)


def roofline_plot(y0: float, series: list[chart.Series], roof: Roofline, height: float,
                  title: str = "", y_label: str = "attainable FLOP/s") -> list[str]:
    """chart.plot at a phone-readable size with the ridge point marked; its label sits at
    the foot of the dashed line, where nothing is drawn (points sit on the roof, and the roof
    is high there)."""
    # Without a title the plot's top padding is only room for the top tick label.
    lift = 0 if title else chart.PAD_TOP * FONT_SCALE - SMALL
    y0, height = y0 - lift, height + lift
    body = chart.plot(0, y0, WIDTH, height, series, x=intensity_axis(),
                      y=flops_axis(roof, y_label), markers=[chart.Marker(x=roof.ridge_point)],
                      title=title, legend=False, font_scale=FONT_SCALE)
    left, right = chart.PAD_LEFT * FONT_SCALE, WIDTH - chart.PAD_RIGHT
    frac = math.log2(roof.ridge_point / X_LO) / math.log2(X_HI / X_LO)
    px = left + frac * (right - left)
    text = f"ridge {intensity_text(roof.ridge_point)}"
    x = min(px + 4, right - fit.text_width(text, SMALL) - 2)
    body.append(svg.text(x, y0 + height - chart.PAD_BOTTOM * FONT_SCALE - 6, text,
                         size=SMALL, fill="muted"))
    return body


# The parts of each term, drawn as a stacked bar: (label, StepCost field, colour).
COMPUTE_PARTS = (("projections", "flops_projections", "accent"),
                 ("attention", "flops_attention", "seq-2"),
                 ("LM head", "flops_lm_head", "seq-3"))
MEMORY_PARTS = (("weights", "bytes_weights", "seq-0"),
                ("KV read", "bytes_kv_read", "seq-1"),
                ("KV written", "bytes_kv_written", "seq-5"))
BAR_X, BAR_W = 74, 168


def _term_rows(y: float, label: str, t: StepTime, parts, total: float, rate: float,
               fmt, unit_rate: str, seconds: float, longest: float,
               wins: bool) -> tuple[list[str], float]:
    """One term of the roofline: a bar as long as its time, split into its parts; the
    parts' legend under it. Returns (elements, height)."""
    s = SMALL
    out = [svg.text(6, y + 13, label, size=s, fill="fg" if wins else "muted"),
           svg.rect(BAR_X, y, BAR_W, 16, fill="free", rx=2)]
    x = float(BAR_X)
    width = BAR_W * seconds / longest
    for name, field_, color in parts:
        amount = getattr(t.cost, field_)
        if amount <= 0:
            continue
        w = width * amount / total
        out.append(svg.rect(x, y, max(w, 0.5), 16, fill=color, rx=0,
                            opacity=None if wins else "0.55",
                            tip=f"{label}: {name} {fmt(amount)} "
                                f"({amount / total * 100:.1f}% of {fmt(total)})",
                            data_k=f"term:{label}:{field_}"))
        x += w
    out.append(svg.text(BAR_X + BAR_W + 6, y + 13, ms_text(seconds), size=s,
                        fill="fg" if wins else "muted", data_k=f"term:{label}/t"))
    if wins:
        out.append(svg.text(WIDTH - 4, y + 13, "bound", size=s, fill="highlight",
                            anchor="end"))
    out.append(svg.text(BAR_X, y + 33, f"{fmt(total)} / {rate_text(rate, unit_rate)}",
                        size=s, fill="muted"))
    chips, h = fit.legend(BAR_X, y + 38, WIDTH - 4, [("chip", c, n) for n, _, c in parts],
                          size=s)
    return out + chips, 38 + h


def view(t: TourStep, ctx: StepsContext) -> svg.Figure:
    i, all_steps = ctx.index(t), ctx.trace
    roof, c, time = t.time.roofline, t.cost, t.time
    s = SMALL
    body = [svg.text(6, 18, label(t), size=16),
            svg.text(6, 38, f"{ctx.model_name}, {gpu_label(ctx.values['gpu'])}", size=s,
                     fill="muted")]
    series = [roofline_series(roof),
              chart.Series("prefill", [(all_steps[0].cost.arithmetic_intensity,
                                        all_steps[0].time.attainable_flops)],
                           color="seq-0", kind="points", marker="square",
                           tips=[_step_tip(0, all_steps[0])])]
    decode = [(j, d) for j, d in enumerate(all_steps[: i + 1]) if d.cost.phase == "decode"]
    if decode:
        series.append(chart.Series("decode", [(d.cost.arithmetic_intensity,
                                               d.time.attainable_flops) for _, d in decode],
                                   color="seq-1", kind="points",
                                   tips=[_step_tip(j, d) for j, d in decode]))
    series.append(chart.Series("this step", [(c.arithmetic_intensity, time.attainable_flops)],
                               color="highlight", kind="points",
                               marker="square" if c.phase == "prefill" else "circle",
                               tips=[_step_tip(i, t)]))
    y = 46
    h_chart = 214
    body += roofline_plot(y, series, roof, h_chart)
    y += h_chart
    chips, h = fit.legend(6, y, WIDTH - 4,
                          [("chip", "seq-0", "prefill"), ("dot", "seq-1", "decode"),
                           ("dot", "highlight", "this step"), ("line", "accent", "roofline"),
                           ("dash", "muted", "ridge point")], size=s)
    body += chips
    y += h + 14
    longest = max(time.compute_s, time.memory_s)
    rows, h = _term_rows(y, "compute", time, COMPUTE_PARTS, c.flops, roof.peak_flops,
                         flop_text, "FLOP/s", time.compute_s, longest, time.bound == "compute")
    body += rows
    y += h + 10
    rows, h = _term_rows(y, "memory", time, MEMORY_PARTS, c.bytes, roof.memory_bandwidth,
                         byte_text, "B/s", time.memory_s, longest, time.bound == "memory")
    body += rows
    y += h + 8
    sign = ">=" if time.bound == "compute" else "<"
    body.append(svg.text(6, y + 14, f"{intensity_text(c.arithmetic_intensity)} FLOP/B {sign} "
                                    f"ridge {intensity_text(roof.ridge_point)}: "
                                    f"{bound_words(time)}", size=s + 0.5))
    y += 22
    if c.phase == "prefill":
        what = f"first token after {ms_text(time.predicted_s)}"
    else:
        what = f"{count(t.batch, 'token')} in {ms_text(time.predicted_s)}: {rate(t)}"
    body.append(svg.text(6, y + 14, what, size=s))
    y += 22
    return svg.Figure(WIDTH, y + 4, body,
                      f"{label(t)}: {bound_words(time)}, {ms_text(time.predicted_s)}")


def check(values: dict) -> dict[str, str]:
    """Rules across fields: the longer prompt is longer, both fit the model's context
    window, the weights fit the GPU, and one sequence of each length fits the KV cache vLLM
    would allocate (its start-up sizing, sim.perf.hardware.memory_profile, 16-token
    blocks)."""
    model = get_model(values["model"])
    prompt, long_ = values["prompt_len"], values["long_prompt"]
    if long_ <= prompt:
        return {"long_prompt": (f"longer prompt: more than the prompt length "
                                f"({commas(prompt)} tokens)")}
    for name, n, field_ in (("prompt length", prompt, "prompt_len"),
                            ("longer prompt", long_, "long_prompt")):
        # The prefill samples one token and the decode step writes its K and V.
        if n + 1 > model.max_model_len:
            return {field_: (f"{name}: {model.name}'s max_model_len is "
                             f"{commas(model.max_model_len)}; with the token the step adds, "
                             f"the prompt can have at most {commas(model.max_model_len - 1)}")}
    gpu = gpu_for(values["gpu"])
    profile = memory_profile(model, gpu, block_size=BLOCK_SIZE, dtype=DTYPE)
    if profile.num_gpu_blocks <= 0:
        return {"gpu": (f"GPU: {model.name}'s weights ({profile.weight_bytes / 2**30:.1f} GiB) "
                        f"leave no room for a KV cache on the {gpu.name}; choose a larger GPU")}
    fits, per_seq, blocks = kv_fit(values, long_)
    if not fits:
        return {"long_prompt": (f"longer prompt: one sequence of {commas(long_ + 1)} tokens "
                                f"needs {commas(per_seq)} KV blocks of {BLOCK_SIZE}; "
                                f"{model.name} on the {gpu.name} has {commas(blocks)}")}
    return {}


QUESTIONS = Asker(("roofline", roofline.step_time(roofline_for, flop_text, byte_text)))


WIDGETS = (Widget(
    id="prefill-decode",
    keys=("pt", "line", "term"),
    goal=('Place prefill and decode on the roofline and find the batch size where decoding stops '
          'being memory-bound.'),
    title="Prefill and decode on the roofline",
    summary="One request's prefill, then decode steps with growing batches until one turns "
            "compute-bound, then a longer prompt: each step's FLOPs and bytes, its predicted "
            "time, and where it sits against the GPU's two ceilings.",
    scenario=steps, context=context, view=view, narrate=narrate, label=label,
    details=details, check=check, questions=QUESTIONS, question_kinds=QUESTIONS.kinds,
    params=(
        Param("model", "model", "choice", "llama-3-8b",
              choices=tuple((m, get_model(m).name) for m in MODEL_IDS),
              help="bf16 weights, shapes from the model's public config."),
        Param("gpu", "GPU", "choice", "h200-measured", choices=GPU_CHOICES,
              help="Its peak FLOP/s and memory bandwidth; 'measured here' uses the ceilings "
                   "measured with the H200 step times."),
        Param("prompt_len", "prompt length", "int", 512, min=1, max=8192,
              help="Prompt tokens, all computed in the prefill step; the decode steps run at "
                   "this context (1 to 8192)."),
        # Past the prompt length's maximum, so that maximum has a longer prompt to go with
        # it (on a model whose context window is longer than 8,192: Mistral-7B's 32,768).
        Param("long_prompt", "longer prompt", "int", 2048, min=2, max=16384,
              help="The last step's context: a decode with this many tokens cached "
                   "(2 to 16384; more than the prompt length, within the model's "
                   "max_model_len)."),
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
    body = roofline_plot(0, series, roof, height, "Measured H200 steps",
                         y_label="achieved FLOP/s")
    chips, h = fit.legend(6, height, WIDTH - 4,
                          [("chip", "seq-0", "prefill, measured"),
                           ("dot", "seq-1", "decode, measured"), ("line", "accent", "roofline"),
                           ("dash", "muted", "ridge point")], size=SMALL)
    return svg.document(WIDTH, height + h + 6, body + chips,
                        label="Measured FLOP/s of each H200 step against the roofline")


def measured_table_svg(phase: str, data: dict | None = None) -> str:
    """A table of one phase's rows: size, measured and predicted ms, their ratio, and the
    bound sim.perf.cost names (checked against the file's). Columns are as wide as their
    longest text, so the table reads on a phone."""
    rows = [r for r in measured_rows(data) if r.phase == phase]
    s = SMALL
    heads = (("prompt",) if phase == "prefill" else ("batch", "context")) + (
        "measured", "roofline", "ratio", "bound")
    cells = []
    for r in rows:
        t = r.predicted
        sizes = ((commas(r.tokens),) if phase == "prefill"
                 else (commas(r.batch), commas(r.ctx)))
        same = t.bound == r.measured_bound
        cells.append(sizes + (f"{r.measured_s * 1e3:.2f}", f"{t.predicted_s * 1e3:.2f}",
                              f"{r.ratio:.2f}x", t.bound if same else f"{t.bound}*"))
    widths = [max(fit.text_width(x, s) for x in [h] + [row[k] for row in cells])
              for k, h in enumerate(heads)]
    gap = (WIDTH - 12 - sum(widths)) / (len(widths) - 1)
    # Numbers line up on the right; the bound reads from the left.
    xs, x = [], 6.0
    for k, w in enumerate(widths):
        xs.append((x, "start") if k == len(widths) - 1 else (x + w, "end"))
        x += w + gap
    row_h, top = s * 1.55, 30 + s * 1.5
    body = [svg.text(6, 20, f"{phase.capitalize()} on the H200: measured vs roofline",
                     size=s + 0.5)]
    for name, (x, anchor) in zip(heads, xs):
        body.append(svg.text(x, top - 8, name, size=s, fill="muted", anchor=anchor))
    body.append(svg.line(4, top - 2, WIDTH - 4, top - 2, stroke="line"))
    for k, (r, texts) in enumerate(zip(rows, cells)):
        y = top + row_h * k + s + 1
        if k % 2:
            body.append(svg.rect(2, y - s - 1, WIDTH - 4, row_h, fill="panel", rx=0))
        t = r.predicted
        same = t.bound == r.measured_bound
        what = (f"{commas(r.tokens)} prompt tokens" if phase == "prefill"
                else f"batch {commas(r.batch)}, context {commas(r.ctx)}")
        tip = (f"{phase}, {what}: measured {ms_text(r.measured_s)}, roofline "
               f"{ms_text(t.predicted_s)}, ratio {r.ratio:.2f}, {t.bound}-bound "
               + ("(the file's roofline agrees)" if same
                  else f"(the file says {r.measured_bound})"))
        row = [svg.text(x, y, text, size=s, anchor=anchor)
               for text, (x, anchor) in zip(texts, xs)]
        body.append(svg.group(row, tip=tip))
    lo = min(r.ratio for r in rows)
    hi = max(r.ratio for r in rows)
    agree = sum(r.predicted.bound == r.measured_bound for r in rows)
    notes = [f"times in ms; ratio = measured / roofline, {lo:.2f}x to {hi:.2f}x",
             f"bound as in the file on {agree} of {len(rows)} rows"
             + ("" if agree == len(rows) else " (* differs)")]
    y = top + row_h * len(rows) + 4
    for note in notes:
        lines, h = fit.paragraph(6, y, note, size=s, room=WIDTH - 12, fill="muted")
        body += lines
        y += h
    return svg.document(WIDTH, y + 8, body,
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
