"""The `kv-cost` calculator for today's models (sim/perf/models.py RECENT_MODELS): bytes per
token by layer type (full attention, sliding window, MLA), and how many tokens fit after the
weights in vLLM V1, with the hybrid KV cache manager and with every layer treated as full
attention (sim/perf/kv_capacity.py, which follows vLLM v0.25.1's KVCacheSpec page sizes,
KV cache groups and start-up log line)."""
from __future__ import annotations

from pages.framework.widget import Context
from pages.topics.kv_cache.format import count, fmt_bytes, short
from pages.views import fit, svg
from pages.views.text import a, commas, plural
from sim.perf.hardware import get_gpu
from sim.perf.kv_capacity import (
    V1_GPU_MEMORY_UTILIZATION,
    V1_SERVER_MAX_NUM_BATCHED_TOKENS,
    KVCapacity,
    layer_types,
    v1_kv_capacity,
)
from sim.perf.models import dtype_bytes, get_model, kv_bytes_per_token
from sim.v1.kv_cache_interface import SlidingWindowSpec

BLOCK_SIZE = 16


def v1_numbers(v: dict) -> dict:
    """Everything the V1 calculator shows (kept apart from drawing for the tests)."""
    model, gpu, tp = get_model(v["model"]), get_gpu(v["gpu"]), int(v["tp"])
    kv_dtype = v["dtype"] if v["kv_dtype"] == "auto" else v["kv_dtype"]
    common = dict(dtype=v["dtype"], kv_dtype=v["kv_dtype"], max_model_len=v["seq_len"],
                  tp_size=tp, gpu_memory_utilization=v["utilization"])
    hybrid = v1_kv_capacity(model, gpu, **common)
    full = v1_kv_capacity(model, gpu, disable_hybrid_kv_cache_manager=True, **common)
    kinds = layer_types(model, kv_dtype, tp)
    # One sequence once its window has moved on: sliding layers keep the last window only.
    per_seq = sum(k.bytes_per_token_all_layers * (min(v["seq_len"], k.window) if k.window
                                                  else v["seq_len"]) for k in kinds)
    return {
        "engine": "v1", "model": model, "gpu": gpu, "tp": tp, "kv_dtype": kv_dtype,
        "kinds": kinds, "hybrid": hybrid, "full": full,
        "per_token": kv_bytes_per_token(model, kv_dtype, tp),
        "per_seq": per_seq, "per_batch": per_seq * v["batch"],
        "seqs_fit": int(hybrid.max_concurrency), "seqs_fit_full": int(full.max_concurrency),
        "error": hybrid.error,
    }


def kind_formula(model, kind, n: dict) -> str:
    """"2 × 18 layers × 8 KV heads × 64 × 2 B" (or the MLA latent)."""
    nb = dtype_bytes(n["kv_dtype"])
    if kind.kind == "MLA":
        return (f"{plural(kind.num_layers, 'layer')} × ({model.kv_lora_rank} + "
                f"{model.qk_rope_head_dim}) × {nb} B")
    return (f"2 × {plural(kind.num_layers, 'layer')} × "
            f"{plural(model.get_num_kv_heads(n['tp']), 'KV head')} × {model.head_size} × {nb} B")


def groups_words(cap: KVCapacity) -> str:
    """"2 KV cache groups of 18 layers (1 full attention, 1 sliding window)"."""
    groups = cap.kv_cache_config.kv_cache_groups
    sliding = sum(1 for g in groups if isinstance(g.kv_cache_spec, SlidingWindowSpec))
    kinds = (f" ({len(groups) - sliding} full attention, {sliding} sliding window)"
             if sliding else "")
    return f"{plural(len(groups), 'KV cache group')} of {plural(cap.group_size, 'layer')}{kinds}"


def v1_narrate(n: dict, ctx: Context) -> str:
    v, model, hybrid, full = ctx.values, n["model"], n["hybrid"], n["full"]
    parts = []
    for kind in n["kinds"]:
        what = fmt_bytes(kind.bytes_per_token_all_layers)
        if kind.window:
            parts.append(f"{what} in its {kind.num_layers} sliding-window layers (those only "
                         f"for the last {commas(kind.window)} tokens)")
        elif kind.kind == "MLA":
            parts.append(f"{what}: one latent per layer, shared by all "
                         f"{model.num_attention_heads} heads")
        else:
            parts.append(f"{what} in its {kind.num_layers} full-attention layers")
    where = " on each GPU" if n["tp"] > 1 else ""
    text = f"Per token{where}, {model.name} caches {' and '.join(parts)}. "
    if n["error"]:
        return text + (f"On the {n['gpu'].name} vLLM would not start: "
                       f"{n['error'].split('. ')[0].rstrip('.')}.")
    text += (f"After the weights, vLLM V1 fits {commas(hybrid.num_tokens)} tokens of "
             f"{commas(v['seq_len'])}-token requests on the {n['gpu'].name} "
             f"({short(hybrid.max_concurrency)} at once)")
    if len(n["kinds"]) > 1:
        text += (f"; treating every layer as full attention would fit "
                 f"{commas(full.num_tokens)} ({short(full.max_concurrency)} at once).")
    else:
        text += "."
    return text


def v1_details(n: dict, ctx: Context) -> list[str]:
    v, model, hybrid, full, tp = ctx.values, n["model"], n["hybrid"], n["full"], n["tp"]
    out = []
    for kind in n["kinds"]:
        window = f", kept for the last {commas(kind.window)} tokens" if kind.window else ""
        out.append(f"{kind.kind.capitalize()}: {kind_formula(model, kind, n)} = "
                   f"{commas(kind.bytes_per_token_all_layers)} bytes per token{window}.")
    if len(n["kinds"]) > 1:
        out.append(f"Every layer keeping every token would cost {fmt_bytes(n['per_token'])} "
                   f"per token.")
    out.append(f"One sequence of {count(v['seq_len'], 'token')} (its window moved on): "
               f"{fmt_bytes(n['per_seq'])}; a batch of {v['batch']}: "
               f"{fmt_bytes(n['per_batch'])}.")
    out.append(f"Available for the KV cache: {fmt_bytes(get_gpu(v['gpu']).memory_bytes)} × "
               f"{short(v['utilization'])} − weights {fmt_bytes(hybrid.weight_bytes)} = "
               f"{fmt_bytes(max(hybrid.available_bytes, 0))} (vLLM V1's default utilization is "
               f"{V1_GPU_MEMORY_UTILIZATION}; it also subtracts the activation peak it "
               "measures, left out here).")
    if n["error"]:
        out.append(f"vLLM refuses to start: {n['error']}")
        return out
    out.append(f"Hybrid KV cache manager: {groups_words(hybrid)}; one block id is "
               f"{plural(hybrid.group_size, 'page')} of {fmt_bytes(hybrid.page_size_bytes)} = "
               f"{fmt_bytes(hybrid.block_bytes)}: {commas(hybrid.num_blocks)} blocks.")
    out.append(f"A {commas(v['seq_len'])}-token request needs "
               f"{count(hybrid.blocks_per_request, 'block')} over the groups (a sliding group "
               f"at most its window plus one {commas(V1_SERVER_MAX_NUM_BATCHED_TOKENS)}-token "
               f"chunk, plus one block): {short(hybrid.max_concurrency)} at once, "
               f"'GPU KV cache size: {commas(hybrid.num_tokens)} tokens'.")
    if len(n["kinds"]) > 1:
        out.append(f"Every layer as full attention (--disable-hybrid-kv-cache-manager): one "
                   f"group of {plural(full.group_size, 'layer')}, {commas(full.num_blocks)} "
                   f"blocks, {short(full.max_concurrency)} at once, "
                   f"{commas(full.num_tokens)} tokens.")
    if tp > 1:
        out.append(f"With {tp} GPUs each holds its share of the weights and "
                   + ("the whole latent (MLA is not split)." if model.is_mla else
                      f"max(1, {model.num_kv_heads} // {tp}) = "
                      f"{plural(model.get_num_kv_heads(tp), 'KV head')} per layer."))
    return out


def v1_view(n: dict, ctx: Context, width: int, small: float) -> svg.Figure:
    v = ctx.values
    model, gpu, tp, hybrid, full = n["model"], n["gpu"], n["tp"], n["hybrid"], n["full"]
    W = width
    body: list[str] = []
    y = 0.0

    def line(text: str, *, size: float = small + 0.5, fill: str = "fg", gap: float = 0) -> None:
        nonlocal y
        y += gap
        lines, h = fit.paragraph(10, y, text, size=size, room=W - 20, fill=fill, indent="  ")
        body.extend(lines)
        y += h

    def heading(text: str) -> None:
        line(text, size=small + 1.5, fill="accent", gap=10)

    gpus = f"{tp} × {gpu.name}" if tp > 1 else gpu.name
    line(f"{model.name}, {v['dtype']}", size=small + 2.5)
    line(f"on {gpus}, vLLM V1", fill="muted")

    heading("KV cache per token, by layer type" + (" (one GPU)" if tp > 1 else ""))
    for kind in n["kinds"]:
        label = (f"sliding window ({commas(kind.window)} tokens)" if kind.window
                 else "MLA latent" if kind.kind == "MLA" else "full attention")
        line(f"{label}: {kind_formula(model, kind, n)}")
        line(f"= {fmt_bytes(kind.bytes_per_token_all_layers)}"
             + (f", only for the last {commas(kind.window)} tokens" if kind.window else ""),
             fill="highlight")
    if model.is_mla:
        line(f"One latent per token and layer, shared by all {model.num_attention_heads} "
             "heads: no separate K and V.", size=small, fill="muted", gap=2)
    if len(n["kinds"]) > 1:
        line(f"If every layer kept every token: {fmt_bytes(n['per_token'])} per token.",
             size=small, fill="muted", gap=2)

    heading("Per sequence and per batch")
    line(f"{commas(v['seq_len'])} tokens: {fmt_bytes(n['per_seq'])}"
         + (" (window moved on)" if len(n["kinds"]) > 1 else ""))
    line(f"batch of {v['batch']}: {fmt_bytes(n['per_batch'])}")

    heading("What fits: vLLM V1 at start-up")
    total = gpu.memory_bytes
    kv_bytes = hybrid.num_blocks * hybrid.block_bytes
    parts = [("weights", hybrid.weight_bytes, "used"), ("KV cache", kv_bytes, "accent"),
             ("unused", max(0, total - hybrid.weight_bytes - kv_bytes), "free")]
    bx, bw, bh = 10, W - 20, 22
    y += 8
    body.append(svg.rect(bx, y, bw, bh, fill="free", stroke="line", rx=0,
                         tip=f"GPU memory: {fmt_bytes(total)}", data_k="mem:gpu"))
    x = bx
    for name, size, color in parts[:2]:
        w = min(bw * size / total, bx + bw - x)      # weights alone may exceed the GPU
        if w > 0:
            body.append(svg.rect(x, y, w, bh, fill=color, rx=0,
                                 tip=f"{name}: {fmt_bytes(size)}", data_k=f"mem:{name}"))
            x += w
    util_x = bx + bw * v["utilization"]
    body.append(svg.line(util_x, y - 4, util_x, y + bh + 4, stroke="fg", width=2))
    y += bh
    chips, h = fit.legend(10, y, W - 6, [("outline" if color == "free" else "chip",
                                          "line" if color == "free" else color,
                                          f"{name} {fmt_bytes(size)}")
                                         for name, size, color in parts], size=small)
    body += chips
    y += h
    if n["error"]:
        line("vLLM refuses to start:", fill="highlight", gap=4)
        line(n["error"].split(". ")[0] + ".", size=small)
        return svg.Figure(W, y + 10, body, f"KV cache cost of {model.name} on {gpus}")
    line(groups_words(hybrid) + ";", size=small, gap=4)
    line(f"a block = {plural(hybrid.group_size, 'page')} × "
         f"{fmt_bytes(hybrid.page_size_bytes)} = {fmt_bytes(hybrid.block_bytes)}", size=small)
    line(f"num_blocks = floor(({fmt_bytes(total)} × {short(v['utilization'])} − weights) / "
         f"{fmt_bytes(hybrid.block_bytes)}) = {commas(hybrid.num_blocks)}", size=small)
    line(f"{a(commas(v['seq_len']) + '-token request').capitalize()} needs "
         f"{count(hybrid.blocks_per_request, 'block')}: {short(hybrid.max_concurrency)} at once",
         gap=4)
    line(f"GPU KV cache size: {commas(hybrid.num_tokens)} tokens", size=small + 1.5,
         fill="highlight")
    if len(n["kinds"]) > 1:
        line("Every layer as full attention (no hybrid manager):", gap=4)
        line(f"{commas(full.num_blocks)} blocks of {plural(full.group_size, 'layer')}, "
             f"{short(full.max_concurrency)} at once: {commas(full.num_tokens)} tokens",
             fill="seq-2")
        if full.num_tokens:
            line(f"The hybrid manager fits {short(hybrid.num_tokens / full.num_tokens)}× as "
                 "many.", size=small, fill="muted")
    fits = n["seqs_fit"]
    line(f"The batch of {v['batch']}: " + ("it fits." if v["batch"] <= fits else
                                          f"{commas(fits)} run, the rest wait."),
         fill="seq-2" if v["batch"] <= fits else "highlight", gap=4)
    line("Weights from the model card (checkpoint size or parameters × dtype); vLLM also "
         "subtracts the activations it measures.", size=small, fill="muted", gap=2)
    return svg.Figure(W, y + 10, body, f"KV cache cost of {model.name} on {gpus}")

