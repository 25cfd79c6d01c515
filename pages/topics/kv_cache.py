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
from pages.questions import Asker, memory
from pages.views import chart, fit, svg
from pages.views.text import a, commas, noun, plural, verb
from sim.perf.hardware import GPUS, GiB, MiB, get_gpu, memory_profile, raise_if_cache_size_invalid
from sim.perf.models import (
    MODELS,
    ModelConfig,
    check_tensor_parallel,
    dtype_bytes,
    get_model,
    kv_bytes_per_token,
)
from sim.studies.kv_growth import (
    CacheAppended,
    GrowthStep,
    KVWritten,
    TokenSampled,
    generate,
    tiny_model,
)

WIDTH = 400          # the chart of KV bytes against length
GROWTH_WIDTH = 400   # the growth widget
GROWTH_SMALL = fit.min_size(GROWTH_WIDTH)      # 13.5: 11 px on a phone
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


def count(n: int, word: str) -> str:
    """"1 block", "1,024 blocks"."""
    return f"{commas(n)} {noun(n, word)}"


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


def growth_label(step: GrowthStep | None, ctx: GrowthContext | None = None) -> str:
    """The step's name: the counter, the picture's heading and the narration use it."""
    if step is None:
        return "start"
    return "prefill" if step.phase == "prefill" else f"decode step {step.step}"


def model_words(model: ModelConfig, v: dict) -> str:
    """"2 layers, 4 query heads sharing 2 KV heads, 16 numbers per head"."""
    heads = model.num_attention_heads
    share = (f"{plural(heads, 'query head')} sharing {plural(model.num_kv_heads, 'KV head')}"
             if v["group"] > 1 else f"{plural(heads, 'head')}, each with its own K and V")
    return (f"{plural(model.num_layers, 'layer')}, {share}, "
            f"{plural(model.head_size, 'number')} per head")


def growth_narrate(step: GrowthStep | None, ctx: GrowthContext) -> str:
    """Cause, effect, consequence, in at most three sentences."""
    model, v = ctx.model, ctx.values
    if step is None:
        prompt = a(f"{v['prompt_len']}-token prompt")
        return (f"Start: {prompt} arrives, and the request "
                f"will generate {plural(v['new_tokens'], 'token')}. The model is tiny: "
                f"{model_words(model, v)}. Nothing is cached yet, so the prefill must compute "
                f"K and V for every prompt position.")
    n, first = step.num_new, step.first_pos
    layers = plural(model.num_layers, "layer")
    if step.phase == "prefill":
        return (f"Prefill: the {plural(n, 'prompt token')} go through the model together, "
                f"so each of the {layers} writes a K and a V for "
                f"{_positions(first, n)} in each of its {plural(model.num_kv_heads, 'KV head')}"
                f": {commas(step.bytes_appended)} bytes. The model samples token "
                f"{step.sampled_position}, whose K and V wait for the next step.")
    ratio = step.recompute.flops / step.with_cache.flops
    return (f"Decode step {step.step}: token {first}, sampled in the step before, goes in "
            f"alone, so each layer appends one K and one V per KV head: "
            f"{commas(step.bytes_appended)} bytes, the same every step. Its query reads all "
            f"{step.cached_after} cached keys: {step.pairs_with_cache} pairs per head and "
            f"layer. Without the cache the model would rerun all {step.cached_after} tokens: "
            f"{step.pairs_recompute} pairs, and {ratio:.1f}x the work of the whole step.")


def _positions(first: int, n: int) -> str:
    return f"position {first}" if n == 1 else f"positions {first}-{first + n - 1}"


def growth_details(step: GrowthStep | None, ctx: GrowthContext) -> list[str]:
    """The step's whole account, from its events and its two costs."""
    model, v = ctx.model, ctx.values
    per_token = kv_bytes_per_token(model, v["dtype"])
    if step is None:
        q, kvh = model.num_attention_heads, model.num_kv_heads
        gqa = (f"{plural(q, 'query head')} share {plural(kvh, 'KV head')} ({v['group']} per "
               f"KV head: grouped-query attention), so only {plural(kvh, 'head')}' keys and "
               f"values are cached." if v["group"] > 1 else
               f"Each of the {plural(q, 'query head')} has its own KV head (multi-head "
               f"attention).")
        return [f"Prompt: {plural(v['prompt_len'], 'token')} (positions "
                f"0-{v['prompt_len'] - 1}); the request will generate "
                f"{plural(v['new_tokens'], 'token')}: one prefill step, then "
                f"{plural(v['new_tokens'] - 1, 'decode step')}.",
                f"Model: {model_words(model, v)}; hidden size {model.hidden_size}.",
                gqa,
                f"One token caches 2 (K and V) x {plural(model.num_layers, 'layer')} x "
                f"{plural(model.num_kv_heads, 'KV head')} x {model.head_size} numbers x "
                f"{dtype_bytes(v['dtype'])} bytes ({v['dtype']}) = {commas(per_token)} bytes.",
                "The KV cache is empty."]
    written = next(e for e in step.events if isinstance(e, KVWritten))
    layers = [e for e in step.events if isinstance(e, CacheAppended)]
    sampled = next(e for e in step.events if isinstance(e, TokenSampled))
    kvh, hs = layers[0].num_kv_heads, layers[0].head_size
    numbers = written.num_tokens * 2 * len(layers) * kvh * hs
    out = [f"Fed: {_positions(written.first_pos, written.num_tokens)} "
           + ("(the whole prompt)." if step.phase == "prefill"
              else "(the token sampled in the step before).")]
    for e in layers:
        out.append(f"Layer {e.layer} writes K and V for {_positions(e.first_pos, e.num_tokens)}"
                   f" in each of its {plural(e.num_kv_heads, 'KV head')} "
                   f"({plural(e.head_size, 'number')} each).")
    out.append(f"Written: {commas(numbers)} numbers, {commas(step.bytes_appended)} bytes in "
               f"{v['dtype']}; the cache now holds {plural(step.cached_after, 'token')}, "
               f"{commas(step.cache_bytes)} bytes.")
    out.append(f"Attention with the cache: {plural(step.num_new, 'query', 'queries')} against "
               f"{plural(step.cached_after, 'key')}: {step.pairs_with_cache} query-key pairs "
               f"per head and layer, {commas(step.with_cache.flops_attention)} attention "
               f"FLOPs, {commas(step.with_cache.flops)} FLOPs for the whole step.")
    out.append(f"Without a cache: the whole prefix of {plural(step.cached_after, 'token')} "
               f"again, {step.pairs_recompute} pairs per head and layer, "
               f"{commas(step.recompute.flops_attention)} attention FLOPs, "
               f"{commas(step.recompute.flops)} FLOPs for the whole step "
               f"({step.recompute.flops / step.with_cache.flops:.1f}x).")
    last = step.step == len(ctx.steps) - 1
    out.append(f"Sampled: token {sampled.position}; its K and V are written in the next step"
               + (" (this is the last step, so they never are)." if last else "."))
    return out


def growth_view(cur: GrowthStep | None, ctx: GrowthContext) -> svg.Figure:
    model, v, steps, total_positions = ctx.model, ctx.values, ctx.steps, ctx.positions
    W, s = GROWTH_WIDTH, GROWTH_SMALL
    cached = cur.cached_after if cur else 0
    new_from = cur.cached_before if cur else 0
    sampled = cur.sampled_position if cur else None
    prompt_len = v["prompt_len"]
    L, H = model.num_layers, model.num_kv_heads
    left, right = 50, W - 8
    cw = (right - left) / total_positions
    rh = 17
    body: list[str] = []

    # Heading: the step's name, what is cached, and what this step added.
    body.append(svg.text(8, 19, growth_label(cur), size=16))
    if cur:
        body.append(svg.text(right, 19, f"+{commas(cur.bytes_appended)} B this step", size=s,
                             anchor="end", fill="highlight"))
    nbytes = cur.cache_bytes if cur else 0
    body.append(svg.text(8, 40, f"cache: {plural(cached, 'token')}, {commas(nbytes)} B",
                         size=s))

    # Token positions: prompt and generated, the sampled one marked.
    y = 50
    inside = cw >= fit.text_width("00", s) + 3
    every = 1 if inside else next(k for k in (2, 4, 5, 10) if k * cw >= 26)
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
        body.append(svg.rect(x + 1, y, cw - 2, 20, fill=fill, stroke="line", tip=tip, rx=2))
        if inside:
            body.append(svg.text(x + cw / 2, y + 15, p, size=s, anchor="middle",
                                 fill="bg" if p == sampled else "fg"))
        elif p % every == 0:
            body.append(svg.text(x + cw / 2, y + 36, p, size=s, anchor="middle",
                                 fill="muted"))
    body.append(svg.text(left - 6, y + 15, "tok", size=s, anchor="end", fill="muted"))
    # Brackets: prompt / generated.
    by = y + (26 if inside else 42)
    px = left + prompt_len * cw

    def bracket(x0: float, x1: float, word: str) -> None:
        body.append(svg.line(x0 + 1, by, x1 - 1, by, stroke="muted"))
        half = fit.text_width(word, s) / 2
        cx = min(max((x0 + x1) / 2, 8 + half), W - 4 - half)
        body.append(svg.text(cx, by + 16, word, size=s, anchor="middle", fill="muted"))

    bracket(left, px, "prompt")
    if total_positions > prompt_len:
        bracket(px, right, "generated")

    # The cache: per layer, per KV head, a K row and a V row; one cell per position.
    y = by + 26
    for layer in range(L):
        body.append(svg.text(8, y + s, f"layer {layer}", size=s))
        y += s + 5
        top = y
        for h in range(H):
            for kind, color in (("K", "seq-0"), ("V", "seq-2")):
                cells = []
                for p in range(cached):
                    cells.append(svg.rect(left + p * cw + 1, y + 1, cw - 2, rh - 2, fill=color,
                                          stroke="highlight" if p >= new_from else None,
                                          stroke_width=2 if p >= new_from else None, rx=1))
                tip = (f"layer {layer}, KV head {h}, {kind}: " +
                       (f"tokens 0-{cached - 1} cached, {model.head_size} numbers each"
                        if cached else "empty"))
                body.append(svg.group([svg.rect(left, y, right - left, rh, fill="free", rx=1),
                                       *cells], tip=tip))
                body.append(svg.text(left - 6, y + rh - 4, f"{kind}{h}", size=s,
                                     anchor="end", fill="muted"))
                y += rh
        if not cached and layer == 0:
            body.append(svg.text((left + right) / 2, (top + y) / 2 + s / 2 - 1,
                                 "empty: nothing cached yet", size=s, anchor="middle",
                                 fill="muted"))
        y += 6

    # Legend: every colour and outline above.
    items = [("chip", "seq-0", "K (key)"), ("chip", "seq-2", "V (value)"),
             ("outline", "highlight", "written this step"), ("chip", "used", "token cached"),
             ("chip", "highlight", "sampled, no K and V yet"),
             ("outline", "line", "not fed yet")]
    chips, h = fit.legend(8, y + 2, W - 4, items, size=s)
    body += chips
    body.append(svg.text(8, y + h + s + 6, "K0, V0: the K and V rows of KV head 0",
                         size=s, fill="muted"))
    y += h + s + 16

    # The chart: attention FLOPs per step, with the cache and recomputing the prefix.
    shown = steps[: cur.step + 1] if cur else []
    xs = [st.cached_after for st in steps]
    series = [
        chart.Series("recompute the prefix", [(st.cached_after, st.recompute.flops_attention)
                                              for st in shown], color="waste", kind="both",
                     tips=[f"{growth_label(st)}: recompute {st.cached_after} tokens, "
                           f"{st.pairs_recompute} pairs, "
                           f"{commas(st.recompute.flops_attention)} attention FLOPs"
                           for st in shown]),
        chart.Series("with the KV cache", [(st.cached_after, st.with_cache.flops_attention)
                                           for st in shown], color="accent", kind="both",
                     tips=[f"{growth_label(st)}: {plural(st.num_new, 'new token')} against "
                           f"{st.cached_after} keys, {st.pairs_with_cache} pairs, "
                           f"{commas(st.with_cache.flops_attention)} attention FLOPs"
                           for st in shown]),
    ]
    height = 226
    body += chart.plot(0, y, W, height, series,
                       x=chart.Axis("tokens cached after the step", lo=0, hi=max(xs)),
                       y=chart.Axis("attention FLOPs", lo=0, hi=ctx.ymax),
                       title="Attention work per step", legend=False, font_scale=s / 10)
    plot_mid = y + (chart.PAD_TOP + (height / (s / 10) - chart.PAD_BOTTOM)) * s / 20
    if not shown:
        body.append(svg.text(W / 2 + 30, plot_mid, "the prefill comes next", size=s,
                             anchor="middle", fill="muted"))
    y += height
    chips, h = fit.legend(8, y, W - 4, [("line", "accent", "with the KV cache"),
                                        ("line", "waste", "recomputing the prefix")], size=s)
    body += chips
    y += h + 6
    label = (f"KV cache of one sequence, {growth_label(cur)}: {plural(cached, 'token')} cached")
    return svg.Figure(W, y, body, label)


GROWTH_QUESTIONS = Asker(("kv-bytes", memory.growth_bytes(growth_model, dtype_bytes)))
COST_QUESTIONS = Asker(("kv-fit", memory.sequences_fit))


GROWTH = Widget(
    id="kv-growth",
    goal=('Explain why each new token adds one key and one value per layer and KV head, and what '
          'the cache saves against recomputing the prefix.'),
    title="One sequence filling its KV cache",
    summary="Each step appends one token's K and V in every layer and KV head; the chart "
            "compares the attention work with the cache and without it.",
    scenario=growth_scenario, context=growth_context, view=growth_view,
    narrate=growth_narrate, label=growth_label, details=growth_details,
    questions=GROWTH_QUESTIONS, question_kinds=GROWTH_QUESTIONS.kinds,
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
    """Cause (bytes per token), effect (what the GPU holds), consequence (how many run)."""
    v, p, model = ctx.values, n["profile"], n["model"]
    seq = a(f"{commas(v['seq_len'])}-token sequence")
    text = (f"{model.name} caches {fmt_bytes(n['per_token'])} per token"
            f"{' on each GPU' if n['tp'] > 1 else ''} in {n['kv_dtype']} (K and V in "
            f"{plural(model.num_layers, 'layer')} x {plural(n['kv_heads'], 'KV head')}), so "
            f"{seq} holds {fmt_bytes(n['per_seq'])}. ")
    if n["error"]:
        return text + (f"On the {n['gpu'].name} vLLM would not start: "
                       f"{n['error'].split('. ')[0].rstrip('.')}.")
    need = n["blocks_per_seq"] * v["batch"]
    batch = (f"the batch of {v['batch']} fits" if need <= p.num_gpu_blocks else
             f"the batch of {v['batch']} does not: "
             f"{plural(v['batch'] - n['seqs_fit'], 'sequence')} "
             f"{verb(v['batch'] - n['seqs_fit'], 'waits', 'wait')}")
    return text + (f"On the {n['gpu'].name}, vLLM's start-up formula leaves "
                   f"{fmt_bytes(p.kv_cache_bytes)} for the cache after the weights: "
                   f"{commas(p.num_gpu_blocks)} blocks, {commas(p.num_token_slots)} token slots. "
                   f"So {commas(n['seqs_fit'])} such {noun(n['seqs_fit'], 'sequence')} run at "
                   f"once, and {batch}.")


def cost_details(n: dict, ctx: Context) -> list[str]:
    """Every number of the calculator, in words."""
    v, p, model, tp = ctx.values, n["profile"], n["model"], n["tp"]
    out = [f"Bytes per token{' on one GPU' if tp > 1 else ''}: 2 (K and V) x "
           f"{plural(model.num_layers, 'layer')} x {plural(n['kv_heads'], 'KV head')} x "
           f"{model.head_size} numbers x {dtype_bytes(n['kv_dtype'])} bytes ({n['kv_dtype']}) = "
           f"{commas(n['per_token'])} bytes, {fmt_bytes(n['per_token'])}."]
    if tp > 1:
        out.append(f"With {tp} GPUs each keeps max(1, {model.num_kv_heads} // {tp}) = "
                   f"{plural(n['kv_heads'], 'KV head')}.")
    q, k = model.num_attention_heads, model.num_kv_heads
    out.append(f"No GQA: each of the {q} query heads has its own K and V head." if q == k else
               f"GQA: {q} query heads share {k} KV heads ({q // k} per group); one KV head "
               f"per query head would cache {q // k}x more.")
    out.append(f"One sequence of {count(v['seq_len'], 'token')}: {fmt_bytes(n['per_seq'])}; "
               f"a batch of {v['batch']}: {fmt_bytes(n['per_batch'])}.")
    out.append(f"GPU memory: {fmt_bytes(p.total_gpu_memory)}; vLLM may use "
               f"{_short(p.gpu_memory_utilization)} of it (gpu_memory_utilization).")
    out.append(f"Peak at start-up: weights {fmt_bytes(p.weight_bytes)} + activations "
               f"{fmt_bytes(p.activation_bytes)} (estimated by sim.hardware; vLLM measures "
               f"them) = {fmt_bytes(p.peak_memory)}.")
    out.append(f"num_gpu_blocks = floor(({fmt_bytes(p.total_gpu_memory)} x "
               f"{_short(p.gpu_memory_utilization)} - {fmt_bytes(p.peak_memory)}) / "
               f"{fmt_bytes(p.cache_block_size)} per block) = {commas(p.num_gpu_blocks)} blocks "
               f"of 16 tokens, {commas(p.num_token_slots)} token slots.")
    if n["error"]:
        out.append(f"vLLM refuses to start: {n['error']}")
        return out
    need = n["blocks_per_seq"] * v["batch"]
    out.append(f"A {commas(v['seq_len'])}-token sequence takes "
               f"{count(n['blocks_per_seq'], 'block')}: {commas(n['seqs_fit'])} fit at once.")
    out.append(f"The batch of {v['batch']} takes {count(need, 'block')}: "
               + (f"it fits ({_short(100 * need / p.num_gpu_blocks)}% of the cache)."
                  if need <= p.num_gpu_blocks else
                  f"it does not fit; {commas(n['seqs_fit'])} run, the rest wait."))
    if v["model"] == "opt-13b":
        out.append(f"The paper's Table 1: 12 GiB / {fmt_bytes(kv_bytes_per_token(model, 'fp16'))}"
                   f" = {commas(n['paper_slots'])} slots; it assumed fp16 and 12 GB left for "
                   f"KV beside 26 GB of weights, with GB meaning 2^30 bytes.")
    return out


COST_WIDTH = 360      # narrow: a phone shows the calculator's text at a readable size
COST_SMALL = fit.min_size(COST_WIDTH)      # 12.5: 11 px on a phone
CHAR = fit.CHAR_EM    # width of a monospace character, in ems


def cost_view(n: dict, ctx: Context) -> svg.Figure:
    v = ctx.values
    model, gpu, p, tp = n["model"], n["gpu"], n["profile"], n["tp"]
    W, small = COST_WIDTH, COST_SMALL
    body: list[str] = []
    y = 0.0

    def line(text: str, *, size: float = small + 0.5, fill: str = "fg", gap: float = 0) -> None:
        """Text, wrapped at the picture's width; continuation lines are indented."""
        nonlocal y
        y += gap
        lines, h = fit.paragraph(10, y, text, size=size, room=W - 20, fill=fill, indent="  ")
        body.extend(lines)
        y += h

    def heading(text: str) -> None:
        line(text, size=small + 1.5, fill="accent", gap=10)

    gpus = f"{tp} × {gpu.name}" if tp > 1 else gpu.name
    line(f"{model.name}, {v['dtype']}", size=small + 2.5)
    line(f"on {gpus}", fill="muted")

    heading("KV cache per token" + (" (one GPU's share)" if tp > 1 else ""))
    kvh = n["kv_heads"]
    nb = dtype_bytes(n["kv_dtype"])
    line(f"2 (K and V) × {plural(model.num_layers, 'layer')}")
    line(f"× {plural(kvh, 'KV head')}" + (f" ({model.num_kv_heads} / {tp} GPUs)" if tp > 1
                                          else ""))
    line(f"× {model.head_size} numbers per head × {nb} B ({n['kv_dtype']})")
    line(f"= 2 × {model.num_layers} × {kvh} × {model.head_size} × {nb}")
    line(f"= {commas(n['per_token'])} B = {fmt_bytes(n['per_token'])}", size=small + 1.5,
         fill="highlight")
    q, k = model.num_attention_heads, model.num_kv_heads
    if q == k:
        line(f"No GQA: each of the {q} query heads has its own K and V head.", size=small,
             fill="muted", gap=2)
    else:
        mha = n["per_token"] * q // k
        line(f"GQA: {q} query heads share {k} KV heads ({q // k} per group). One KV head per "
             f"query head would cache {fmt_bytes(mha)}, {q // k}× more.", size=small,
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
    line(f"{fmt_bytes(total)} in all; the tick marks gpu_memory_utilization = "
         f"{_short(p.gpu_memory_utilization)}", size=small, fill="muted")
    chips, h = fit.legend(10, y, W - 6, [("outline" if color == "free" else "chip",
                                          "line" if color == "free" else color,
                                          f"{name} {fmt_bytes(size)}")
                                         for name, size, color in parts], size=small)
    body += chips
    y += h
    line("num_gpu_blocks = floor(", size=small, gap=6)
    line("  (total × utilization − peak) / block bytes)", size=small)
    line(f"= floor(({fmt_bytes(total)} × {_short(p.gpu_memory_utilization)} − "
         f"{fmt_bytes(p.peak_memory)})", size=small)
    line(f"  / {fmt_bytes(p.cache_block_size)})", size=small)
    line(f"= {commas(p.num_gpu_blocks)} blocks of 16 tokens", size=small + 1.5,
         fill="highlight")
    line(f"= {commas(p.num_token_slots)} token slots", size=small + 1.5, fill="highlight")
    line("peak = weights + activations. *vLLM measures the activations; sim.hardware "
         "estimates them.", size=small, fill="muted")
    if n["error"]:
        line("vLLM refuses to start:", fill="highlight", gap=4)
        line(n["error"].split(". ")[0] + ".", size=small)
    else:
        fits = n["seqs_fit"]
        need = n["blocks_per_seq"] * v["batch"]
        line(f"{a(commas(v['seq_len']) + '-token sequence').capitalize()} takes "
             f"{count(n['blocks_per_seq'], 'block')}: {commas(fits)} fit at once.", gap=4)
        if need <= p.num_gpu_blocks:
            line(f"The batch of {v['batch']} takes {count(need, 'block')}: it fits "
                 f"({_short(100 * need / p.num_gpu_blocks)}% of the cache).", fill="seq-2")
        else:
            line(f"The batch of {v['batch']} needs {count(need, 'block')}: it does not fit; "
                 f"{commas(fits)} run, the rest wait.", fill="highlight")
    if v["model"] == "opt-13b":
        heading("The paper's Table 1 (OPT-13B, A100-40GB)")
        line(f"12 GiB / {fmt_bytes(kv_bytes_per_token(model, 'fp16'))} = "
             f"{commas(n['paper_slots'])} slots ({n['paper_slots'] / 1000:.1f}K)",
             size=small + 1.5)
        line("It assumed fp16 and 12 GB left for KV beside 26 GB of weights; its GB is "
             "binary: 12 × 2^30 bytes.", size=small, fill="muted")
    return svg.Figure(W, y + 10, body, f"KV cache cost of {model.name} on {gpus}")


COST = Widget(
    id="kv-cost",
    goal=("Compute a model's KV bytes per token and how many tokens and sequences fit on a GPU "
          'after the weights.'),
    title="What the KV cache costs",
    summary="Bytes per token from the model's shape, and how many tokens fit after the "
            "weights by vLLM's start-up formula.",
    scenario=cost_scenario, view=cost_view, narrate=cost_narrate, details=cost_details,
    check=check_cost, questions=COST_QUESTIONS, question_kinds=COST_QUESTIONS.kinds,
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
    small = fit.min_size(WIDTH)
    height = 330
    body = chart.plot(
        0, 0, WIDTH, height, series,
        x=chart.Axis("sequence length (tokens)", log=True, base=2, lo=128, hi=8192,
                     fmt=lambda t: f"{t / 1024:.0f}K" if t >= 1024 else str(int(t))),
        y=chart.Axis("GiB per sequence", log=True, lo=0.01, hi=100,
                     fmt=lambda t: _short(t) if t < 1 else commas(int(t))),
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

WIDGETS = (GROWTH, COST)
CHARTS = (KV_VS_LENGTH,)
