"""How big the KV cache is: the bytes a step writes (the KV cache page's growth widget) and
how many sequences fit (its cost calculator). Both follow vLLM v0.5.5's
CacheEngine.get_cache_block_size: K and V, every layer, every KV head (not query head), at
the cache's dtype; the calculator's one frame is asked about from its settings alone."""
from __future__ import annotations

from pages.framework.question import Question, ask
from pages.questions import code
from pages.views.text import a, commas, plural


def _bytes(n: int) -> str:
    return f"{commas(n)} bytes"


def growth_bytes(model_of, dtype_bytes):
    """How many bytes of KV does the next step write? Asked of the prefill and of the first
    decode (after that the narration says it is the same every step)."""

    def generate(step, nxt, ctx) -> Question | None:
        if nxt is None or nxt.phase not in ("prefill", "decode") or nxt.step > 1:
            return None
        v = ctx.values
        model = model_of(v)
        size = dtype_bytes(v["dtype"])
        per_token = 2 * model.num_layers * model.num_kv_heads * model.head_size * size
        n = nxt.num_new
        correct = per_token * n
        candidates = [correct * model.num_attention_heads // model.num_kv_heads, correct // 2,
                      correct // model.num_layers if model.num_layers > 1 else None,
                      per_token * (nxt.first_pos + n), correct * 2]
        what = (f"the prefill feeds the {plural(n, 'prompt token')}" if nxt.phase == "prefill"
                else f"decode step {nxt.step} feeds token {nxt.first_pos} alone")
        prompt = (f"Next, {what}. How many bytes of keys and values does it write to the "
                  "cache?")
        explanation = (f"Each token stores a key and a value (x2) in each of the "
                       f"{plural(model.num_layers, 'layer')}, for each of the "
                       f"{plural(model.num_kv_heads, 'KV head')} (not the "
                       f"{model.num_attention_heads} query heads: grouped-query attention "
                       f"shares them), {model.head_size} numbers of {size} bytes: "
                       f"2 x {model.num_layers} x {model.num_kv_heads} x {model.head_size} x "
                       f"{size} = {commas(per_token)} bytes per token, times {n} = "
                       f"{commas(correct)}. Tokens already cached are not written again.")
        return ask("kv-bytes", prompt, correct, candidates, _bytes, explanation,
                   code.CACHE_BLOCK_SIZE, {})

    return generate


def sequences_fit(step, nxt, ctx) -> Question | None:
    """The calculator's frame, asked before it is shown: how many sequences of the chosen
    length fit in the KV cache at once?"""
    if step is not None or not isinstance(nxt, dict) or nxt.get("error"):
        return None
    n = nxt
    if n.get("engine") == "v1":
        return _hybrid_fit(n, ctx)
    v = ctx.values
    profile = n["profile"]
    per_block = profile.cache_block_size
    blocks_per_seq = -(-v["seq_len"] // profile.block_size)
    correct = profile.num_gpu_blocks // blocks_per_seq
    model = n["model"]
    per_query_head = n["per_token"] * model.num_attention_heads // max(1, n["kv_heads"] *
                                                                         n["tp"])
    candidates = [int(profile.usable_memory // (n["per_token"] * v["seq_len"])),
                  v["batch"], correct * 2,
                  int(profile.kv_cache_bytes // (per_query_head * v["seq_len"])),
                  correct + 1]
    prompt = (f"{model.name} on {n['gpu'].name} (tensor parallel {n['tp']}, "
              f"{v['dtype']} weights, KV cache {n['kv_dtype']}), gpu_memory_utilization "
              f"{v['utilization']}: how many {commas(v['seq_len'])}-token sequences fit in the "
              "KV cache at once?")
    explanation = (f"vLLM profiles the GPU at start-up: of {v['utilization']:.0%} of its memory "
                   "it takes away the weights and the activations' peak, and cuts the rest into "
                   f"blocks of {profile.block_size} tokens ({commas(per_block)} bytes each): "
                   f"{commas(profile.num_gpu_blocks)} blocks. A {commas(v['seq_len'])}-token "
                   f"sequence needs {blocks_per_seq} of them, so {commas(correct)} fit. "
                   "Counting all of the GPU's memory, or the query heads instead of the KV "
                   "heads, gives the wrong answer.")
    return ask("kv-fit", prompt, correct, candidates, lambda k: plural(k, "sequence"),
               explanation, code.AVAILABLE_BLOCKS + "; " + code.CACHE_BLOCK_SIZE, {})


def _hybrid_fit(n: dict, ctx) -> Question | None:
    """A model with sliding-window (or latent) layers, sized by V1's start-up: its blocks are
    pages shared by every KV cache group, and a sliding-window group needs only the pages
    of its window, so more sequences fit than if every layer were full attention."""
    v = ctx.values
    hybrid, full = n["hybrid"], n["full"]
    if not hybrid.blocks_per_request:
        return None
    correct = hybrid.num_blocks // hybrid.blocks_per_request
    all_full = int(full.max_concurrency)
    candidates = [all_full, v["batch"], correct * 2, correct + 1]
    model = n["model"]
    one = a(f"{commas(v['seq_len'])}-token request")
    compare = ("the same" if all_full == correct else commas(all_full))
    prompt = (f"{model.name} on {n['gpu'].name} (tensor parallel {n['tp']}, KV cache "
              f"{n['kv_dtype']}), gpu_memory_utilization {v['utilization']}: how many "
              f"{commas(v['seq_len'])}-token sequences fit in the KV cache at once?")
    explanation = (f"V1 cuts the memory left after the weights into "
                   f"{commas(hybrid.num_blocks)} blocks, each a page in every layer of a KV "
                   f"cache group; {one} needs "
                   f"{commas(hybrid.blocks_per_request)} of them over all its groups (a "
                   "sliding-window group only its window's), so "
                   f"{commas(hybrid.num_blocks)} // {commas(hybrid.blocks_per_request)} = "
                   f"{commas(correct)} fit (get_max_concurrency_for_kv_cache_config). With "
                   "every layer as full attention (--disable-hybrid-kv-cache-manager) it would "
                   f"be {compare}.")
    return ask("kv-fit", prompt, correct, candidates, lambda k: plural(k, "sequence"),
               explanation, code.at("vllm/v1/core/kv_cache_utils.py",
                                    "get_max_concurrency_for_kv_cache_config", code.V1), {})
