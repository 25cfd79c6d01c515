"""V1's KV cache arithmetic for today's models (sim/perf/kv_capacity.py, the presets of
sim/perf/models.py RECENT_MODELS): bytes per token per layer type as vLLM v0.25.1's
`KVCacheSpec.page_size_bytes / block_size`, and the tokens that fit ("GPU KV cache size"
at start-up) with the hybrid KV cache manager and with every layer treated as full
attention, each checked against values computed by hand below.

Hand derivation, for every preset and GPU (block size 16, gpu_memory_utilization 0.92,
max_num_batched_tokens 8192, max_model_len = min(131072, the model's)):
  available = ceil(GPU memory x 0.92) - weights
  page      = 16 x (bytes of one token in one layer)
  hybrid:   group_size = min(#full, #sliding) (max of the two when within 1.5x);
            cdiv(#full, group_size) full groups, cdiv(#sliding, group_size) sliding ones
  all full: one group of every layer
  num_blocks = available // (page x group_size)
  per request: cdiv(L, 16) blocks per full group,
               cdiv(min(window - 1 + 8192, L), 16) + 1 per sliding group
  tokens = int(num_blocks / per request x L)
"""
import math

import pytest

from sim.perf.hardware import get_gpu
from sim.perf.kv_capacity import layer_kv_specs, layer_types, v1_kv_capacity
from sim.perf.models import RECENT_MODELS, get_model, kv_bytes_per_layer, kv_bytes_per_token

GIB = 1 << 30
MEMORY = {"h100-80gb": 85_017_493_504, "h200": 150_109_880_320, "b200": 183359 * (1 << 20)}

# Weights (bytes) from the model cards: checkpoint sizes, or parameters x 2 (bf16).
WEIGHTS = {
    "gpt-oss-20b": int(12.8 * GIB),            # 12.8 GiB checkpoint (MXFP4 experts)
    "gpt-oss-120b": int(60.8 * GIB),           # 60.8 GiB
    "gemma-3-27b": 27_400_000_000 * 2,         # 27.4B x 2 bytes
    "llama-3.1-8b": 8_030_261_248 * 2,         # the shapes' 8.03B x 2
    "llama-3.1-70b": 70_553_706_496 * 2,
    "qwen3-32b": 32_762_106_880 * 2,
    "qwen3-30b-a3b": 30_500_000_000 * 2,
    "deepseek-v3": 671_000_000_000,            # FP8: one byte per parameter
}

# Bytes of one token in one layer, bf16 (fp8 halves them):
#   gpt-oss:     2 (K, V) x 8 KV heads x 64 x 2 bytes   = 2,048
#   Gemma 3 27B: 2 x 16 x 128 x 2                         = 8,192
#   Llama 3.1:   2 x 8 x 128 x 2                          = 4,096
#   Qwen3-32B:   2 x 8 x 128 x 2                          = 4,096
#   Qwen3-30B-A3B: 2 x 4 x 128 x 2                        = 2,048
#   DeepSeek-V3: (kv_lora_rank 512 + qk_rope_head_dim 64) x 2 = 1,152 (one latent, no K/V)
# (full layers, sliding layers, window, bytes per token per layer)
LAYERS = {
    "gpt-oss-20b": (12, 12, 128, 2048),
    "gpt-oss-120b": (18, 18, 128, 2048),
    "gemma-3-27b": (10, 52, 1024, 8192),
    "llama-3.1-8b": (32, 0, None, 4096),
    "llama-3.1-70b": (80, 0, None, 4096),
    "qwen3-32b": (64, 0, None, 4096),
    "qwen3-30b-a3b": (48, 0, None, 2048),
    "deepseek-v3": (61, 0, None, 1152),
}


def cdiv(a, b):
    return -(-a // b)


def hand_tokens(mid, gpu, hybrid, kv_bytes=2, tp=1):
    full, sliding, window, per_layer = LAYERS[mid]
    per_layer = per_layer * kv_bytes // 2
    if mid != "deepseek-v3":
        per_layer //= tp          # KV heads split over the GPUs (MLA is replicated)
    L = min(131072, get_model(mid).max_model_len)
    available = math.ceil(MEMORY[gpu] * 0.92) - WEIGHTS[mid] // tp
    page = 16 * per_layer
    if hybrid and sliding:
        group_size = min(full, sliding)
        if max(full, sliding) < 1.5 * group_size:
            group_size = max(full, sliding)
        full_groups, sliding_groups = cdiv(full, group_size), cdiv(sliding, group_size)
    else:
        group_size, full_groups, sliding_groups = full + sliding, 1, 0
    num_blocks = max(available // (page * group_size), 0)
    per_request = full_groups * cdiv(L, 16)
    if sliding_groups:
        per_request += sliding_groups * (cdiv(min(window - 1 + 8192, L), 16) + 1)
    return int(num_blocks / per_request * L)


# vLLM's "GPU KV cache size" (tokens), hybrid manager and all-full, bf16 KV:
PINNED = [
    # gpt-oss-120b on H200: available = 138,101,089,895 - 65,283,502,899 = 72,817,586,996;
    # 2 groups of 18, page 32,768: 72,817,586,996 // 589,824 = 123,456 blocks; a 131072
    # request: 8,192 (full) + cdiv(8,319, 16) + 1 = 521 (sliding) = 8,713 blocks ->
    # 123,456 / 8,713 x 131,072 = 1,857,181. All full: one group of 36, 61,728 blocks /
    # 8,192 x 131,072 = 987,648.
    ("gpt-oss-120b", "h200", 1_857_181, 987_648),
    ("gpt-oss-120b", "h100-80gb", 329_838, 175_408),
    ("gpt-oss-120b", "b200", 2_846_336, 1_513_680),
    ("gpt-oss-20b", "h100-80gb", 2_466_509, 1_311_680),
    ("gpt-oss-20b", "h200", 4_757_523, 2_530_048),
    ("gpt-oss-20b", "b200", 6_241_271, 3_319_104),
    # Gemma 3 27B on H200: available = 138,101,089,895 - 54,800,000,000 = 83,301,089,895;
    # 1 full group + cdiv(52, 10) = 6 sliding groups, group size 10, page 131,072:
    # 83,301,089,895 // 1,310,720 = 63,553 blocks; a request: 8,192 + 6 x (cdiv(9,215, 16)
    # + 1 = 577) = 11,654 -> 63,553 / 11,654 x 131,072 = 714,777. All full (62 layers):
    # 10,250 blocks x 16 = 164,000.
    ("gemma-3-27b", "h200", 714_777, 164_000),
    ("gemma-3-27b", "h100-80gb", 200_926, 46_096),
    ("gemma-3-27b", "b200", 1_047_575, 240_368),
    ("llama-3.1-8b", "h100-80gb", 474_208, 474_208),
    ("llama-3.1-8b", "h200", 931_088, 931_088),
    ("llama-3.1-8b", "b200", 1_226_976, 1_226_976),
    ("qwen3-32b", "h100-80gb", 48_400, 48_400),
    ("qwen3-32b", "h200", 276_848, 276_848),
    ("qwen3-32b", "b200", 424_800, 424_800),
    ("qwen3-30b-a3b", "h100-80gb", 175_120, 175_120),
    ("qwen3-30b-a3b", "h200", 784_304, 784_304),
    ("qwen3-30b-a3b", "b200", 1_178_832, 1_178_832),
]


@pytest.mark.parametrize("mid", list(RECENT_MODELS))
def test_bytes_per_token_per_layer_type(mid):
    full, sliding, window, per_layer = LAYERS[mid]
    model = get_model(mid)
    assert kv_bytes_per_layer(model, "bf16") == per_layer
    assert kv_bytes_per_layer(model, "fp8") == per_layer // 2
    assert kv_bytes_per_token(model, "bf16") == per_layer * (full + sliding)
    kinds = layer_types(model, "bf16")
    assert [(k.num_layers, k.bytes_per_token, k.window) for k in kinds] == (
        [(full, per_layer, None)] + ([(sliding, per_layer, window)] if sliding else []))
    # vLLM's page_size_bytes, for a block of 16 tokens in one layer.
    specs = layer_kv_specs(model, "bfloat16")
    assert {s.page_size_bytes for s in specs.values()} == {16 * per_layer}


@pytest.mark.parametrize("mid,gpu,hybrid_tokens,full_tokens", PINNED)
def test_tokens_that_fit_after_the_weights(mid, gpu, hybrid_tokens, full_tokens):
    model = get_model(mid)
    L = min(131072, model.max_model_len)
    hybrid = v1_kv_capacity(model, get_gpu(gpu), max_model_len=L)
    everything_full = v1_kv_capacity(model, get_gpu(gpu), max_model_len=L,
                                     disable_hybrid_kv_cache_manager=True)
    assert hybrid.weight_bytes == WEIGHTS[mid]
    assert hybrid.num_tokens == hybrid_tokens == hand_tokens(mid, gpu, True)
    assert everything_full.num_tokens == full_tokens == hand_tokens(mid, gpu, False)
    assert hybrid.error == ""


@pytest.mark.parametrize("mid", list(RECENT_MODELS))
@pytest.mark.parametrize("gpu", list(MEMORY))
def test_fp8_kv_cache_doubles_the_blocks(mid, gpu):
    model = get_model(mid)
    tp = 8 if mid == "deepseek-v3" else 1
    L = min(131072, model.max_model_len)
    for hybrid in (True, False):
        got = v1_kv_capacity(model, get_gpu(gpu), kv_dtype="fp8", max_model_len=L, tp_size=tp,
                             disable_hybrid_kv_cache_manager=not hybrid)
        assert got.num_tokens == hand_tokens(mid, gpu, hybrid, kv_bytes=1, tp=tp)


def test_models_too_big_for_one_gpu_say_why():
    """Llama 3.1 70B (141 GB in bf16) does not fit an H200's 138 GB share; DeepSeek-V3
    (671 GB) needs 8 H200s. vLLM refuses to start with a message."""
    h200 = get_gpu("h200")
    too_big = v1_kv_capacity(get_model("llama-3.1-70b"), h200, max_model_len=131072)
    assert too_big.num_blocks == 0 and "No available memory" in too_big.error
    # On a B200 it starts, but one 131072-token request does not fit in bf16 ...
    b200 = v1_kv_capacity(get_model("llama-3.1-70b"), get_gpu("b200"), max_model_len=131072)
    assert b200.num_tokens == 109_168 and "max seq len" in b200.error
    # ... and does in fp8.
    assert v1_kv_capacity(get_model("llama-3.1-70b"), get_gpu("b200"), kv_dtype="fp8",
                          max_model_len=131072).error == ""
    ds = v1_kv_capacity(get_model("deepseek-v3"), h200, max_model_len=131072, tp_size=8)
    # Per GPU: 138,101,089,895 - 671e9 / 8 = 54,226,089,895 bytes; MLA is the same on every
    # GPU: page 16 x 1,152 = 18,432, 61 layers -> 54,226,089,895 // 1,124,352 = 48,228
    # blocks; 8,192 per request -> 48,228 / 8,192 x 131,072 = 771,648 tokens.
    assert (ds.num_blocks, ds.num_tokens, ds.error) == (48_228, 771_648, "")
    assert ds.num_tokens == hand_tokens("deepseek-v3", "h200", False, tp=8)


def test_the_sliding_window_saving_grows_with_the_context():
    """Short contexts: a sliding group's admission cap (window + one 8192-token chunk)
    exceeds the request, so the hybrid layout fits no more than all-full; long ones: the
    full groups dominate."""
    model, h200 = get_model("gemma-3-27b"), get_gpu("h200")
    ratio = []
    for L in (4096, 16384, 65536, 131072):
        hybrid = v1_kv_capacity(model, h200, max_model_len=L).num_tokens
        full = v1_kv_capacity(model, h200, max_model_len=L,
                              disable_hybrid_kv_cache_manager=True).num_tokens
        ratio.append(hybrid / full)
    assert ratio == sorted(ratio)
    assert ratio[0] < 1.0 < 4 < ratio[-1]
