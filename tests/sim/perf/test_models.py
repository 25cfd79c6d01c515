import dataclasses
import json
from pathlib import Path

import pytest

from sim.perf import tensor_parallel
from sim.perf.models import (
    DTYPE_BYTES,
    MODELS,
    ModelConfig,
    cache_block_size,
    dtype_bytes,
    get_model,
    kv_bytes_per_token,
)

DATA = Path(__file__).resolve().parents[3] / "data"


def tiny(**kw) -> ModelConfig:
    """A model small enough to count by hand."""
    base = dict(name="tiny", num_layers=2, hidden_size=8, num_attention_heads=2,
                num_kv_heads=1, head_size=4, intermediate_size=16, vocab_size=10,
                max_model_len=32, tie_word_embeddings=False, gated_mlp=True)
    base.update(kw)
    return ModelConfig(**base)


# ------------------------------------------------------------------ KV bytes per token

def test_opt_13b_fp16_is_800_kib_per_token():
    # The paper, section 3: 2 (K, V) x 5120 (hidden) x 40 (layers) x 2 bytes.
    assert kv_bytes_per_token(get_model("opt-13b"), "fp16") == 819_200 == 800 * 1024
    assert 2 * 5120 * 40 * 2 == 819_200


def test_llama_3_8b_bf16_matches_the_h200_measurements():
    data = json.loads((DATA / "h200-prefill-decode.json").read_text())
    assert kv_bytes_per_token(get_model("llama-3-8b"), "bf16") == 131_072
    assert data["kv_bytes_per_token"] == 131_072


def test_grouped_query_attention_shrinks_llama_2_70b_kv_8x():
    gqa = get_model("llama-2-70b")
    mha = dataclasses.replace(gqa, num_kv_heads=64)
    assert kv_bytes_per_token(gqa, "fp16") == 2 * 80 * 8 * 128 * 2 == 327_680
    assert kv_bytes_per_token(mha, "fp16") == 8 * kv_bytes_per_token(gqa, "fp16")


@pytest.mark.parametrize("dtype,nbytes", [("fp32", 4), ("fp16", 2), ("bf16", 2), ("fp8", 1),
                                          ("half", 2), ("bfloat16", 2), ("fp8_e5m2", 1)])
def test_dtype_scales_the_cache(dtype, nbytes):
    m = get_model("llama-2-7b")
    assert kv_bytes_per_token(m, dtype) == 2 * 32 * 32 * 128 * nbytes


def test_unknown_dtype_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown dtype 'int3'.*fp16"):
        dtype_bytes("int3")


def test_tensor_parallel_splits_kv_heads_and_replicates_below_one_per_gpu():
    m = get_model("llama-2-70b")                      # 8 KV heads
    assert [m.get_num_kv_heads(tp) for tp in (1, 2, 4, 8, 16)] == [8, 4, 2, 1, 1]
    # With 16 GPUs each still holds a whole KV head: max(1, 8 // 16) = 1.
    assert kv_bytes_per_token(m, "fp16", tp_size=16) == 2 * 80 * 1 * 128 * 2
    with pytest.raises(ValueError, match="divisible"):
        kv_bytes_per_token(m, "fp16", tp_size=3)


def test_cache_block_size_is_vllms_formula():
    # CacheEngine.get_cache_block_size: dtype_size x layers x (key + value block), each
    # block_size x kv heads per GPU x head_size.
    for model_id, model in MODELS.items():
        for block_size in (1, 16, 32):
            for tp in (1, 2, 8):
                try:
                    heads = max(1, model.num_kv_heads // tp)
                    model.get_num_kv_heads(tp)
                except ValueError:
                    continue
                expected = 2 * model.num_layers * 2 * block_size * heads * model.head_size
                assert cache_block_size(model, block_size, "fp16", tp) == expected, model_id
    assert cache_block_size(get_model("opt-13b"), 16, "fp16") == 16 * 819_200  # 12.5 MiB


def test_cache_block_size_agrees_with_the_tensor_parallel_module():
    for model in MODELS.values():
        for tp in (1, 2, 4, 8):
            try:
                mine = cache_block_size(model, 16, "float16", tp)
            except ValueError:
                continue
            assert mine == tensor_parallel.cache_block_size(model, 16, "float16", tp)


# --------------------------------------------------------------------- parameter counts

def test_tiny_model_parameters_counted_by_hand():
    m = tiny()
    p = m.param_count()
    # q: 2 heads x 4 = 8 wide, k and v: 1 head x 4 = 4 wide each, hidden 8:
    # QKV 8 x (8 + 4 + 4) = 128, O 8 x 8 = 64 -> 192 per layer, 2 layers.
    assert p.attention == 2 * 192
    # gate, up, down: 3 x 8 x 16 = 384 per layer.
    assert p.mlp == 2 * 384
    # two RMSNorm weights per layer (8 each) + the final norm.
    assert p.norms_and_biases == 2 * 16 + 8
    assert p.embed_tokens == 80 and p.lm_head == 80 and p.embed_positions == 0
    assert p.total == 384 + 768 + 40 + 160
    assert p.streamed == p.total - 80            # the input table is only gathered
    assert m.weight_bytes("fp16") == 2 * p.total


def test_tiny_opt_style_model_with_biases_layernorm_and_tied_head():
    m = tiny(gated_mlp=False, bias=True, tie_word_embeddings=True, num_position_embeddings=34,
             num_kv_heads=2)
    p = m.param_count()
    assert p.attention == 2 * (8 * (8 + 8 + 8) + 8 * 8)          # QKV 8x24, O 8x8
    assert p.mlp == 2 * (2 * 8 * 16)                             # fc1, fc2
    # per layer: two LayerNorms (weight + bias) 2 x 16, biases q,k,v 24 + o 8 + fc1 16 + fc2 8.
    assert p.norms_and_biases == 2 * (32 + 24 + 8 + 16 + 8) + 16
    assert p.lm_head == 0 and p.lm_head_matrix == 80            # tied: the table is the head
    assert p.embed_positions == 34 * 8
    assert p.streamed == p.attention + p.mlp + p.norms_and_biases + 80


# Published totals (Hugging Face model pages / safetensors metadata).
@pytest.mark.parametrize("model_id,params", [
    ("llama-2-7b", 6_738_415_616),
    ("llama-2-13b", 13_015_864_320),
    ("llama-2-70b", 68_976_648_192),
    ("llama-3-8b", 8_030_261_248),
    ("llama-3-70b", 70_553_706_496),
    ("mistral-7b", 7_241_732_096),
])
def test_parameter_counts_match_the_published_ones(model_id, params):
    assert get_model(model_id).num_params == params


def test_opt_sizes_are_near_their_names():
    assert 12.8e9 < get_model("opt-13b").num_params < 13.0e9
    assert 65e9 < get_model("opt-66b").num_params < 66.5e9
    assert 174e9 < get_model("opt-175b").num_params < 176e9
    # The paper's Table 1: parameter size 26 GB and 132 GB in fp16.
    assert round(get_model("opt-13b").weight_bytes("fp16") / 1e9) == 26
    assert round(get_model("opt-66b").weight_bytes("fp16") / 1e9) == 131  # paper says 132


def test_tensor_parallel_shards_cover_the_model():
    m = get_model("llama-3-70b")
    full = m.param_count()
    shard = m.param_count(tp_size=8)
    # Split layers divide exactly; norms are replicated on every GPU.
    assert shard.attention * 8 == full.attention
    assert shard.mlp * 8 == full.mlp
    assert shard.norms_and_biases == full.norms_and_biases
    assert shard.lm_head * 8 == full.lm_head
    # KV heads replicated: with tp=16 > 8 KV heads each GPU still holds one.
    m70 = get_model("llama-2-70b")
    s16 = m70.param_count(16)
    assert s16.attention == 80 * (8192 * (4 * 128 + 2 * 128) + 4 * 128 * 8192)


# ------------------------------------------------------------------ presets and registry

def test_every_preset_is_consistent():
    for model_id, m in MODELS.items():
        assert m.head_size * m.num_attention_heads == m.hidden_size, model_id
        assert m.source, model_id
        assert m.gated_mlp == (not model_id.startswith("opt")), model_id


def test_presets_are_frozen_and_slotted():
    m = get_model("opt-13b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.num_layers = 1
    assert not hasattr(m, "__dict__")


def test_get_model_lists_valid_ids():
    assert get_model("llama-3-8b").name == "Llama-3-8B"
    with pytest.raises(ValueError) as err:
        get_model("gpt-5")
    for model_id in MODELS:
        assert model_id in str(err.value)


def test_invalid_shapes_are_rejected():
    with pytest.raises(ValueError, match="num_layers"):
        tiny(num_layers=0)
    with pytest.raises(ValueError, match="grouped"):
        tiny(num_attention_heads=3, num_kv_heads=2)


def test_short_and_vllm_dtype_names_agree():
    assert DTYPE_BYTES["fp16"] == DTYPE_BYTES["float16"] == DTYPE_BYTES["half"]
    assert DTYPE_BYTES["bf16"] == DTYPE_BYTES["bfloat16"]
    assert DTYPE_BYTES["fp32"] == DTYPE_BYTES["float"] == 4


def test_recent_presets_layer_types_and_validation():
    from sim.perf.models import RECENT_MODELS, ModelConfig, get_model
    oss = get_model("gpt-oss-120b")
    assert oss.get_layer_types()[:3] == ("sliding_attention", "full_attention",
                                         "sliding_attention")
    assert oss.is_hybrid and not get_model("llama-3.1-8b").is_hybrid
    gemma = get_model("gemma-3-27b").get_layer_types()
    assert [i for i, t in enumerate(gemma) if t == "full_attention"] == list(range(5, 62, 6))
    assert get_model("deepseek-v3").is_mla
    assert set(RECENT_MODELS).isdisjoint({"opt-13b"})
    with pytest.raises(ValueError, match="layer types"):
        ModelConfig("x", 2, 8, 2, 1, 4, 8, 10, 10, tie_word_embeddings=False, gated_mlp=True,
                    layer_types=("full_attention",))
    with pytest.raises(ValueError, match="sliding_window"):
        ModelConfig("x", 1, 8, 2, 1, 4, 8, 10, 10, tie_word_embeddings=False, gated_mlp=True,
                    layer_types=("sliding_attention",))
    with pytest.raises(ValueError, match="MLA"):
        ModelConfig("x", 1, 8, 2, 1, 4, 8, 10, 10, tie_word_embeddings=False, gated_mlp=True,
                    kv_lora_rank=8)
    with pytest.raises(ValueError, match="unknown model"):
        get_model("gpt-5")


def test_checkpoint_bytes_and_total_params_give_the_weights():
    from sim.perf.models import get_model
    assert get_model("gpt-oss-120b").weight_bytes("bf16") == int(60.8 * (1 << 30))
    assert get_model("gpt-oss-120b").weight_bytes("bf16", 2) == int(60.8 * (1 << 30)) // 2
    assert get_model("qwen3-30b-a3b").weight_bytes("bf16") == 61_000_000_000
    assert get_model("qwen3-30b-a3b").num_params == 30_500_000_000
    # Dense presets keep the shapes' count.
    assert get_model("llama-3.1-8b").num_params == 8_030_261_248
