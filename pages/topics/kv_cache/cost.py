"""The `kv-cost` widget: a one-frame calculator over the model and GPU presets (its trace
is one set of numbers): bytes per token with the formula, bytes per sequence and batch, and
how many tokens fit: by vLLM v0.5.5's memory formula (sim/perf/hardware.py) for the classic
presets, by V1's KV cache groups (sim/perf/kv_capacity.py, drawn by cost_v1.py) for today's
models (sliding windows, MLA)."""
from __future__ import annotations

from pages.framework.widget import Context, Param, Widget
from pages.questions import Asker, memory
from pages.topics.kv_cache.cost_v1 import v1_details, v1_narrate, v1_numbers, v1_view
from pages.topics.kv_cache.format import PAPER_KV_SPACE, count, fmt_bytes, short
from pages.views import fit, svg
from pages.views.text import a, commas, noun, plural, verb
from sim.perf.hardware import GPUS, get_gpu, memory_profile, raise_if_cache_size_invalid
from sim.perf.models import (
    MODELS,
    RECENT_MODELS,
    check_tensor_parallel,
    dtype_bytes,
    get_model,
    kv_bytes_per_token,
)

# The classic presets (vLLM v0.5.5's start-up formula), then today's models (V1's groups).
MODEL_CHOICES = (tuple((mid, m.name) for mid, m in MODELS.items())
                 + tuple((mid, m.name) for mid, m in RECENT_MODELS.items()))
GPU_CHOICES = tuple((gid, g.name) for gid, g in GPUS.items())
DTYPES = (("fp16", "fp16"), ("bf16", "bf16"), ("fp32", "fp32"))
KV_DTYPES = (("auto", "auto (the model's dtype)"), ("fp8", "fp8"))
TP = (("1", "1"), ("2", "2"), ("4", "4"), ("8", "8"))


def check_cost(v: dict) -> dict[str, str]:
    errors = {}
    model = get_model(v["model"])
    try:
        if not model.is_mla:     # MLA's one latent is replicated, not split
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
    if v["model"] in RECENT_MODELS:
        return v1_numbers(v)
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
    if n.get("engine") == "v1":
        return v1_narrate(n, ctx)
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
    if n.get("engine") == "v1":
        return v1_details(n, ctx)
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
               f"{short(p.gpu_memory_utilization)} of it (gpu_memory_utilization).")
    out.append(f"Peak at start-up: weights {fmt_bytes(p.weight_bytes)} + activations "
               f"{fmt_bytes(p.activation_bytes)} (estimated by sim.hardware; vLLM measures "
               f"them) = {fmt_bytes(p.peak_memory)}.")
    out.append(f"num_gpu_blocks = floor(({fmt_bytes(p.total_gpu_memory)} x "
               f"{short(p.gpu_memory_utilization)} - {fmt_bytes(p.peak_memory)}) / "
               f"{fmt_bytes(p.cache_block_size)} per block) = {commas(p.num_gpu_blocks)} blocks "
               f"of 16 tokens, {commas(p.num_token_slots)} token slots.")
    if n["error"]:
        out.append(f"vLLM refuses to start: {n['error']}")
        return out
    need = n["blocks_per_seq"] * v["batch"]
    out.append(f"A {commas(v['seq_len'])}-token sequence takes "
               f"{count(n['blocks_per_seq'], 'block')}: {commas(n['seqs_fit'])} fit at once.")
    out.append(f"The batch of {v['batch']} takes {count(need, 'block')}: "
               + (f"it fits ({short(100 * need / p.num_gpu_blocks)}% of the cache)."
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
    if n.get("engine") == "v1":
        return v1_view(n, ctx, COST_WIDTH, COST_SMALL)
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
                         tip=f"GPU memory: {fmt_bytes(total)}", data_k="mem:gpu"))
    x = bx
    for name, size, color in parts[:3]:
        w = min(bw * size / total, bx + bw - x)      # weights alone may exceed the GPU
        if w > 0:
            body.append(svg.rect(x, y, w, bh, fill=color, rx=0,
                                 tip=f"{name}: {fmt_bytes(size)}", data_k=f"mem:{name}"))
            x += w
    util_x = bx + bw * p.gpu_memory_utilization
    body.append(svg.line(util_x, y - 4, util_x, y + bh + 4, stroke="fg", width=2))
    y += bh
    line(f"{fmt_bytes(total)} in all; the tick marks gpu_memory_utilization = "
         f"{short(p.gpu_memory_utilization)}", size=small, fill="muted")
    chips, h = fit.legend(10, y, W - 6, [("outline" if color == "free" else "chip",
                                          "line" if color == "free" else color,
                                          f"{name} {fmt_bytes(size)}")
                                         for name, size, color in parts], size=small)
    body += chips
    y += h
    line("num_gpu_blocks = floor(", size=small, gap=6)
    line("  (total × utilization − peak) / block bytes)", size=small)
    line(f"= floor(({fmt_bytes(total)} × {short(p.gpu_memory_utilization)} − "
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
                 f"({short(100 * need / p.num_gpu_blocks)}% of the cache).", fill="seq-2")
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


COST_QUESTIONS = Asker(("kv-fit", memory.sequences_fit))

COST = Widget(
    id="kv-cost",
    keys=("mem",),
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
        Param("seq_len", "sequence length", "int", 2048, min=1, max=163840,
              help="Tokens in one sequence (prompt + output), up to the model's max_model_len."),
        Param("batch", "batch", "int", 8, min=1, max=1024, help="Sequences at once (1 to 1024)."),
    ),
)

