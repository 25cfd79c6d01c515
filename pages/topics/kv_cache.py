"""The KV cache page: why keys and values are cached, and what the cache costs.

Widgets:
- `kv-growth`: one sequence generating with a tiny model. scenario: the empty cache, then
  sim/studies/kv_growth.py's steps; view: each step's K and V appended per layer and KV
  head, and the attention work with the cache against recomputing the whole prefix
  (sim/perf/cost.py), as a chart that grows with the steps; narrate: the step's numbers.
- `kv-cost`: a one-frame calculator over the model and GPU presets (its trace is one set of
  numbers): bytes per token with the formula, bytes per sequence and batch, and how many
  tokens fit by vLLM v0.5.5's memory formula (sim/perf/hardware.py).
Chart:
- `kv-vs-length`: KV bytes of one sequence against its length for several presets.
"""
from __future__ import annotations

from dataclasses import dataclass

from pages.framework.registry import Chart
from pages.framework.widget import Context, Param, Widget
from pages.views import chart, svg
from pages.views.text import commas, plural, wrap
from sim.perf.hardware import GPUS, GiB, MiB, get_gpu, memory_profile, raise_if_cache_size_invalid
from sim.perf.models import (MODELS, ModelConfig, check_tensor_parallel, dtype_bytes, get_model,
                             kv_bytes_per_token)
from sim.studies.kv_growth import (CacheAppended, GrowthStep, KVWritten, TokenSampled, generate,
                                   tiny_model)

WIDTH = 480          # the chart of KV bytes against length
GROWTH_WIDTH = 400   # the growth widget: narrower, so a phone shows it larger
KiB = 1024

# The paper's Table 1 input: "13B, 1 x A100 40GB: KV cache size 12 GB". Its 15.7K slots
# come out only if that GB is binary (see sim/perf/hardware.py's docstring).
PAPER_KV_SPACE = 12 * GiB


# ----------------------------------------------------------------------------- formatting

def fmt_bytes(n: float) -> str:
    """Binary units, at most two decimals: 819200 -> '800 KiB', 13107200 -> '12.5 MiB'."""
    for unit, size in (("TiB", 1 << 40), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{_short(n / size)} {unit}"
    return f"{commas(int(n))} B"


def _short(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


# ------------------------------------------------------------------------ kv-growth widget

GROWTH_DTYPES = (("fp16", "fp16 (2 bytes)"), ("fp32", "fp32 (4 bytes)"), ("fp8", "fp8 (1 byte)"))


def growth_model(v: dict) -> ModelConfig:
    return tiny_model(v["layers"], v["kv_heads"], v["group"], v["head_size"])


def growth_scenario(v: dict) -> list[GrowthStep | None]:
    """None (the empty cache, before the prefill), then one GrowthStep per model step."""
    return [None, *generate(growth_model(v), v["prompt_len"], v["new_tokens"], v["dtype"])]


@dataclass(frozen=True)
class GrowthContext(Context):
    model: ModelConfig
    steps: tuple                 # the GrowthSteps: the trace after its empty first step
    positions: int               # prompt + new tokens: the width of the token row
    ymax: int                    # the chart's top: the most attention FLOPs of a recompute


def growth_context(v: dict, trace: list) -> GrowthContext:
    steps = tuple(trace[1:])
    return GrowthContext(v, trace, growth_model(v), steps, v["prompt_len"] + v["new_tokens"],
                         max(s.recompute.flops_attention for s in steps))


def growth_narrate(step: GrowthStep | None, ctx: GrowthContext) -> str:
    if step is None:
        return growth_intro(ctx.model, ctx.values)
    return growth_narration(ctx.model, ctx.values, step)


def growth_intro(model: ModelConfig, v: dict) -> str:
    heads = model.num_attention_heads
    gqa = (f" Its {heads} query heads share {model.num_kv_heads} KV heads "
           f"({v['group']} each, grouped-query attention), so only {model.num_kv_heads} heads' "
           f"keys and values are cached." if v["group"] > 1 else
           f" Each of its {heads} query heads has its own KV head.")
    return (f"A request arrives with a prompt of {plural(v['prompt_len'], 'token')} and will "
            f"generate {v['new_tokens']}. The model is a {model.name}.{gqa} "
            f"The KV cache is empty.")


def growth_narration(model: ModelConfig, v: dict, s: GrowthStep) -> str:
    written = next(e for e in s.events if isinstance(e, KVWritten))
    layers = [e for e in s.events if isinstance(e, CacheAppended)]
    sampled = next(e for e in s.events if isinstance(e, TokenSampled))
    kvh, hs = layers[0].num_kv_heads, layers[0].head_size
    numbers = written.num_tokens * 2 * len(layers) * kvh * hs
    first, n = written.first_pos, written.num_tokens
    if s.phase == "prefill":
        head = (f"Prefill: the {n} prompt tokens (positions 0-{n - 1}) go through the model "
                f"together.")
        what = "for every prompt position"
        attn = (f" Attention: {s.pairs_with_cache} query-key pairs per head and layer, with "
                f"or without a cache (nothing was cached before).")
    else:
        head = (f"Decode step {s.step}: token {first}, sampled in the step before, goes in "
                f"alone.")
        what = "for that one position"
        ratio = s.recompute.flops / s.with_cache.flops
        attn = (f" Its query reads {s.cached_after} cached keys (its own included): "
                f"{s.pairs_with_cache} pairs per head and layer, "
                f"{chart.si(s.with_cache.flops_attention)} attention FLOPs. Without the cache "
                f"the model would rerun all {s.cached_after} "
                f"tokens: {s.pairs_recompute} pairs, {chart.si(s.recompute.flops_attention)} "
                f"attention FLOPs, and {ratio:.1f}x the work of the whole step.")
    return (f"{head} Each of the {len(layers)} layers appends a K and a V vector of {hs} "
            f"numbers {what} and each of its {kvh} KV heads: {commas(numbers)} numbers, "
            f"{commas(s.bytes_appended)} bytes in {v['dtype']}.{attn} The model samples token "
            f"{sampled.position}; its K and V are written in the next step.")


def growth_view(cur: GrowthStep | None, ctx: GrowthContext) -> svg.Figure:
    model, v, steps, total_positions = ctx.model, ctx.values, ctx.steps, ctx.positions
    cached = cur.cached_after if cur else 0
    new_from = cur.cached_before if cur else 0
    sampled = cur.sampled_position if cur else None
    prompt_len = v["prompt_len"]
    L, H = model.num_layers, model.num_kv_heads
    left, right = 96, GROWTH_WIDTH - 10
    cw = min(24.0, (right - left) / total_positions)
    rh, lgap = 14, 8
    body: list[str] = []

    # Header: what is cached, and what this step added.
    nbytes = cur.cache_bytes if cur else 0
    body.append(svg.text(10, 17, f"cache: {plural(cached, 'token')}, {commas(nbytes)} B",
                         size=14))
    if cur:
        body.append(svg.text(right, 17, f"+{commas(cur.bytes_appended)} B this step",
                             size=13, anchor="end", fill="highlight"))

    # Token positions: prompt and generated, the sampled one marked.
    y = 30
    for p in range(total_positions):
        x = left + p * cw
        if p == sampled:
            fill, tip = "highlight", f"token {p}: just sampled, its K and V not computed yet"
        elif p < cached:
            fill, tip = ("used", f"token {p} (prompt): K and V cached" if p < prompt_len
                         else f"token {p} (generated): K and V cached")
        elif p < prompt_len:
            fill, tip = "panel", f"token {p} (prompt): not fed yet"
        else:
            fill, tip = "panel", f"token {p}: not generated yet"
        body.append(svg.rect(x + 1, y, cw - 2, 16, fill=fill, stroke="line", tip=tip, rx=2))
        if cw >= 14 or p % 5 == 0:
            body.append(svg.text(x + cw / 2, y + 12.5, p, size=10 if cw < 18 else 11,
                                 anchor="middle", fill="bg" if p == sampled else "fg"))
    body.append(svg.text(left - 6, y + 12.5, "token", size=12, anchor="end"))
    # Brackets: prompt / generated.
    by = y + 22
    px = left + prompt_len * cw
    body.append(svg.line(left + 1, by, px - 1, by, stroke="muted"))
    body.append(svg.text((left + px) / 2, by + 13, "prompt", size=11, anchor="middle", fill="muted"))
    if total_positions > prompt_len:
        body.append(svg.line(px + 1, by, right, by, stroke="muted"))
        body.append(svg.text((px + right) / 2, by + 13, "generated", size=11, anchor="middle",
                             fill="muted"))

    # The cache: per layer, per KV head, a K row and a V row; one cell per position.
    y = by + 24
    for layer in range(L):
        top = y
        for h in range(H):
            for kind, color in (("K", "seq-0"), ("V", "seq-2")):
                cells = []
                for p in range(cached):
                    cells.append(svg.rect(left + p * cw + 1, y + 1, cw - 2, rh - 2, fill=color,
                                          stroke="highlight" if p >= new_from else None, rx=1))
                tip = (f"layer {layer}, KV head {h}, {kind}: " +
                       (f"tokens 0-{cached - 1} cached, {model.head_size} numbers each"
                        if cached else "empty"))
                body.append(svg.group([svg.rect(left, y, right - left, rh, fill="free", rx=1),
                                       *cells], tip=tip))
                body.append(svg.text(left - 6, y + rh - 3, f"{kind} h{h}", size=11, anchor="end",
                                     fill="muted"))
                y += rh
        body.append(svg.line(4, top + 1, 4, y - 1, stroke="muted"))
        body.append(svg.text(9, (top + y) / 2 + 4, f"layer {layer}", size=12))
        y += lgap

    # Legend.
    ly = y + 4
    items = (("seq-0", "K (key)"), ("seq-2", "V (value)"), ("highlight", "written this step"))
    lx = 10
    for color, label in items:
        if color == "highlight":
            body.append(svg.rect(lx, ly, 13, 12, fill="free", stroke="highlight", rx=1))
        else:
            body.append(svg.rect(lx, ly, 13, 12, fill=color, rx=1))
        body.append(svg.text(lx + 18, ly + 10.5, label, size=12))
        lx += 34 + 7.2 * len(label)
    y = ly + 20

    # The chart: attention FLOPs per step, with the cache and recomputing the prefix.
    shown = steps[: cur.step + 1] if cur else []
    xs = [s.cached_after for s in steps]
    series = [
        chart.Series("recompute the prefix", [(s.cached_after, s.recompute.flops_attention)
                                              for s in shown], color="waste", kind="both",
                     tips=[f"step {s.step}: recompute {s.cached_after} tokens, "
                           f"{s.pairs_recompute} pairs, {commas(s.recompute.flops_attention)} "
                           f"attention FLOPs" for s in shown]),
        chart.Series("with the KV cache", [(s.cached_after, s.with_cache.flops_attention)
                                           for s in shown], color="accent", kind="both",
                     tips=[f"step {s.step}: {s.num_new} new token(s) against {s.cached_after} "
                           f"keys, {s.pairs_with_cache} pairs, "
                           f"{commas(s.with_cache.flops_attention)} attention FLOPs"
                           for s in shown]),
    ]
    height = 210
    body += chart.plot(0, y, GROWTH_WIDTH, height, series,
                       x=chart.Axis("tokens in the cache after the step", lo=0, hi=max(xs)),
                       y=chart.Axis("attention FLOPs per step", lo=0, hi=ctx.ymax),
                       title="Attention work per step")
    if not shown:
        body.append(svg.text(GROWTH_WIDTH / 2, y + height / 2, "(no step yet)", size=11,
                             anchor="middle", fill="muted"))
    label = (f"KV cache of one sequence: {cached} tokens cached" if cur else
             "KV cache of one sequence: empty")
    return svg.Figure(GROWTH_WIDTH, y + height, body, label)


GROWTH = Widget(
    id="kv-growth",
    title="One sequence filling its KV cache",
    summary="Each step appends one token's K and V in every layer and KV head; the chart "
            "compares the attention work with the cache and without it.",
    scenario=growth_scenario, context=growth_context, view=growth_view,
    narrate=growth_narrate,
    params=(
        Param("prompt_len", "prompt tokens", "int", 4, min=1, max=12,
              help="Tokens in the prompt (1 to 12): all written in the prefill step."),
        Param("new_tokens", "new tokens", "int", 12, min=1, max=16,
              help="Tokens to generate (1 to 16): one prefill, then one decode step each."),
        Param("layers", "layers", "int", 2, min=1, max=4, help="Decoder layers (1 to 4)."),
        Param("kv_heads", "KV heads", "int", 2, min=1, max=4,
              help="Key/value heads per layer (1 to 4): what the cache stores."),
        Param("group", "query heads per KV head", "int", 2, min=1, max=4,
              help="1 is multi-head attention; more is grouped-query attention (1 to 4)."),
        Param("head_size", "head size", "int", 16, min=1, max=256,
              help="Numbers in one K or V vector (1 to 256; real models use 64-128)."),
        Param("dtype", "dtype", "choice", "fp16", choices=GROWTH_DTYPES,
              help="Bytes per cached number."),
    ),
)


# -------------------------------------------------------------------------- kv-cost widget

MODEL_CHOICES = tuple((mid, m.name) for mid, m in MODELS.items())
GPU_CHOICES = tuple((gid, g.name) for gid, g in GPUS.items())
DTYPES = (("fp16", "fp16"), ("bf16", "bf16"), ("fp32", "fp32"))
KV_DTYPES = (("auto", "auto (the model's dtype)"), ("fp8", "fp8"))
TP = (("1", "1"), ("2", "2"), ("4", "4"), ("8", "8"))


def check_cost(v: dict) -> dict[str, str]:
    errors = {}
    model = get_model(v["model"])
    try:
        check_tensor_parallel(model.num_attention_heads, model.num_kv_heads, int(v["tp"]))
        model.param_count(int(v["tp"]))
    except ValueError as err:
        errors["tp"] = f"tensor parallel GPUs: {err}"
    if v["seq_len"] > model.max_model_len:
        errors["seq_len"] = (f"sequence length: at most {commas(model.max_model_len)}, "
                             f"{model.name}'s max_model_len")
    return errors


def cost_numbers(v: dict) -> dict:
    """Everything the calculator shows, from sim (kept apart from drawing for the tests)."""
    model, gpu, tp = get_model(v["model"]), get_gpu(v["gpu"]), int(v["tp"])
    kv_dtype = v["dtype"] if v["kv_dtype"] == "auto" else v["kv_dtype"]
    per_token = kv_bytes_per_token(model, kv_dtype, tp)
    profile = memory_profile(model, gpu, 16, v["dtype"], v["utilization"], tp,
                             kv_cache_dtype=v["kv_dtype"])
    try:
        raise_if_cache_size_invalid(profile.num_gpu_blocks, 16, model.max_model_len)
        error = ""
    except ValueError as err:
        error = str(err)
    blocks_per_seq = -(-v["seq_len"] // 16)
    return {
        "model": model, "gpu": gpu, "tp": tp, "kv_dtype": kv_dtype,
        "per_token": per_token, "kv_heads": model.get_num_kv_heads(tp),
        "per_seq": per_token * v["seq_len"], "per_batch": per_token * v["seq_len"] * v["batch"],
        "profile": profile, "error": error, "blocks_per_seq": blocks_per_seq,
        "seqs_fit": profile.num_gpu_blocks // blocks_per_seq,
        "paper_slots": PAPER_KV_SPACE // kv_bytes_per_token(model, "fp16"),
    }


def cost_scenario(v: dict) -> list[dict]:
    return [cost_numbers(v)]          # a calculator: one step, its numbers


def cost_narrate(n: dict, ctx: Context) -> str:
    v, p = ctx.values, n["profile"]
    text = (f"{n['model'].name} caches {fmt_bytes(n['per_token'])} per token"
            f"{' on each GPU' if n['tp'] > 1 else ''} in {n['kv_dtype']}: "
            f"{fmt_bytes(n['per_seq'])} for {commas(v['seq_len'])} tokens, "
            f"{fmt_bytes(n['per_batch'])} for a batch of {v['batch']}. ")
    if n["error"]:
        return text + f"On {n['gpu'].name} vLLM would not start: {n['error']}"
    return text + (f"On {n['gpu'].name} vLLM's formula leaves {fmt_bytes(p.kv_cache_bytes)} for "
                   f"KV: {commas(p.num_gpu_blocks)} blocks, {commas(p.num_token_slots)} token "
                   f"slots, {commas(n['seqs_fit'])} sequences of {commas(v['seq_len'])} tokens "
                   f"at once.")


COST_WIDTH = 360      # narrow: a phone shows the calculator's text at a readable size
CHAR = 0.6            # width of a monospace character, in ems


def cost_view(n: dict, ctx: Context) -> svg.Figure:
    v = ctx.values
    model, gpu, p, tp = n["model"], n["gpu"], n["profile"], n["tp"]
    W = COST_WIDTH
    body: list[str] = []
    y = 0.0

    def line(text: str, *, size: float = 12, fill: str = "fg", gap: float = 0) -> None:
        """Text, wrapped at the picture's width; continuation lines are indented."""
        nonlocal y
        y += gap
        width = int((W - 20) / (CHAR * size))
        chunks = wrap(text, width - 2) if len(text) > width else [text]
        for i, chunk in enumerate(chunks):
            y += size * 1.35
            body.append(svg.text(10, y, chunk if i == 0 else "  " + chunk, size=size, fill=fill))

    def heading(text: str) -> None:
        line(text, size=13, fill="accent", gap=10)

    gpus = f"{tp} × {gpu.name}" if tp > 1 else gpu.name
    line(f"{model.name}, {v['dtype']}", size=14)
    line(f"on {gpus}", size=12, fill="muted")

    heading("KV cache per token" + (" (one GPU's share)" if tp > 1 else ""))
    kvh = n["kv_heads"]
    nb = dtype_bytes(n["kv_dtype"])
    line(f"2 (K and V) × {model.num_layers} layers")
    line(f"× {kvh} KV heads" + (f" ({model.num_kv_heads} / {tp} GPUs)" if tp > 1 else ""))
    line(f"× {model.head_size} numbers per head × {nb} B ({n['kv_dtype']})")
    line(f"= 2 × {model.num_layers} × {kvh} × {model.head_size} × {nb}")
    line(f"= {commas(n['per_token'])} B = {fmt_bytes(n['per_token'])}", size=13, fill="highlight")
    q, k = model.num_attention_heads, model.num_kv_heads
    if q == k:
        line(f"No GQA: each of the {q} query heads has its own K and V head.", size=11,
             fill="muted", gap=2)
    else:
        mha = n["per_token"] * q // k
        line(f"GQA: {q} query heads share {k} KV heads ({q // k} per group). One KV head per "
             f"query head would cache {fmt_bytes(mha)}, {q // k}× more.", size=11,
             fill="muted", gap=2)

    heading("Per sequence and per batch")
    line(f"{commas(v['seq_len'])} tokens × {fmt_bytes(n['per_token'])} = "
         f"{fmt_bytes(n['per_seq'])}")
    line(f"batch of {v['batch']}: {fmt_bytes(n['per_batch'])}")

    heading("What fits: vLLM v0.5.5 at start-up")
    total = p.total_gpu_memory
    bx, bw, bh = 10, W - 20, 22
    y += 8
    parts = [("weights", p.weight_bytes, "used"),
             ("activations*", p.activation_bytes, "waste"),
             ("KV cache", p.kv_cache_bytes, "accent"),
             ("unused", max(0, total - p.peak_memory - p.kv_cache_bytes), "free")]
    body.append(svg.rect(bx, y, bw, bh, fill="free", stroke="line", rx=0,
                         tip=f"GPU memory: {fmt_bytes(total)}"))
    x = bx
    for name, size, color in parts[:3]:
        w = min(bw * size / total, bx + bw - x)      # weights alone may exceed the GPU
        if w > 0:
            body.append(svg.rect(x, y, w, bh, fill=color, rx=0,
                                 tip=f"{name}: {fmt_bytes(size)}"))
            x += w
    util_x = bx + bw * p.gpu_memory_utilization
    body.append(svg.line(util_x, y - 4, util_x, y + bh + 4, stroke="fg", width=2))
    y += bh
    line(f"{fmt_bytes(total)} in all; the mark is gpu_memory_utilization = "
         f"{_short(p.gpu_memory_utilization)}", size=11, fill="muted")
    for i, (name, size, color) in enumerate(parts):
        lx = 10 + (i % 2) * (W - 20) / 2
        if i % 2 == 0:
            y += 16
        body.append(svg.rect(lx, y - 10, 12, 12, fill=color, stroke="line", rx=1))
        body.append(svg.text(lx + 16, y, f"{name} {fmt_bytes(size)}", size=11))
    line("num_gpu_blocks = floor((total × utilization − peak) / block bytes)", size=11, gap=6)
    line(f"= floor(({fmt_bytes(total)} × {_short(p.gpu_memory_utilization)} − "
         f"{fmt_bytes(p.peak_memory)}) / {fmt_bytes(p.cache_block_size)})", size=11)
    line(f"= {commas(p.num_gpu_blocks)} blocks of 16 tokens", size=13, fill="highlight")
    line(f"= {commas(p.num_token_slots)} token slots", size=13, fill="highlight")
    line("peak = weights + activations. *vLLM measures the activations; sim.hardware "
         "estimates them.", size=11, fill="muted")
    if n["error"]:
        line("vLLM refuses to start:", fill="highlight", gap=4)
        line(n["error"].split(". ")[0] + ".", size=11)
    else:
        fit = n["seqs_fit"]
        need = n["blocks_per_seq"] * v["batch"]
        line(f"A {commas(v['seq_len'])}-token sequence takes {n['blocks_per_seq']} blocks: "
             f"{commas(fit)} fit at once.", gap=4)
        if need <= p.num_gpu_blocks:
            line(f"The batch of {v['batch']} takes {commas(need)} blocks: it fits "
                 f"({_short(100 * need / p.num_gpu_blocks)}% of the cache).", fill="seq-2")
        else:
            line(f"The batch of {v['batch']} needs {commas(need)} blocks: it does not fit; "
                 f"{commas(fit)} run, the rest wait.", fill="highlight")
    if v["model"] == "opt-13b":
        heading("The paper's Table 1 (OPT-13B, A100-40GB)")
        line(f"12 GiB / {fmt_bytes(kv_bytes_per_token(model, 'fp16'))} = "
             f"{commas(n['paper_slots'])} slots ({n['paper_slots'] / 1000:.1f}K)", size=13)
        line("It assumed fp16 and 12 GB left for KV beside 26 GB of weights; its GB is "
             "binary: 12 × 2^30 bytes.", size=11, fill="muted")
    return svg.Figure(W, y + 10, body, f"KV cache cost of {model.name} on {gpus}")


COST = Widget(
    id="kv-cost",
    title="What the KV cache costs",
    summary="Bytes per token from the model's shape, and how many tokens fit after the "
            "weights by vLLM's start-up formula.",
    scenario=cost_scenario, view=cost_view, narrate=cost_narrate,
    check=check_cost,
    params=(
        Param("model", "model", "choice", "opt-13b", choices=MODEL_CHOICES),
        Param("gpu", "GPU", "choice", "a100-40gb", choices=GPU_CHOICES),
        Param("tp", "tensor parallel GPUs", "choice", "1", choices=TP,
              help="GPUs sharing the model (tensor_parallel_size); each keeps its heads' KV."),
        Param("dtype", "dtype", "choice", "fp16", choices=DTYPES,
              help="The model's dtype (weights and, with auto, the cache)."),
        Param("kv_dtype", "KV cache dtype", "choice", "auto", choices=KV_DTYPES,
              help="vLLM's --kv-cache-dtype."),
        Param("utilization", "gpu_memory_utilization", "float", 0.9, min=0.5, max=1.0,
              help="Share of GPU memory vLLM may use (0.5 to 1; default 0.9)."),
        Param("seq_len", "sequence length", "int", 2048, min=1, max=32768,
              help="Tokens in one sequence (prompt + output), up to the model's max_model_len."),
        Param("batch", "batch", "int", 8, min=1, max=1024, help="Sequences at once (1 to 1024)."),
    ),
)


# ------------------------------------------------------------------ kv-vs-length chart

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
    return chart.chart(
        series, width=WIDTH, height=340,
        x=chart.Axis("sequence length (tokens)", log=True, base=2, lo=128, hi=8192,
                     fmt=lambda t: commas(int(t))),
        y=chart.Axis("KV cache of one sequence (GiB)", log=True, lo=0.01, hi=1000,
                     fmt=lambda t: _short(t) if t < 1 else commas(int(t))),
        markers=[chart.Marker(y=PAPER_KV_SPACE / GiB,
                              label=f"12 GiB = {commas(PAPER_KV_SPACE // kv_bytes_per_token(opt))} "
                                    f"OPT-13B tokens", color="highlight")],
        title="KV cache of one sequence, fp16, whole model",
        label="KV cache bytes of one sequence against its length, for five models")


KV_VS_LENGTH = Chart(
    id="kv-vs-length",
    title="KV memory against sequence length",
    render=render_kv_vs_length,
    caption="Each line ends at the model's max_model_len. Bytes per token from sim.perf.models "
            "(2 x layers x KV heads x head size x 2 bytes); GQA models (Llama-2-70B, "
            "Llama-3-8B) sit far below their size class.",
)

WIDGETS = (GROWTH, COST)
CHARTS = (KV_VS_LENGTH,)
