"""Model presets: the shapes that decide how big the weights and the KV cache are.

Each preset copies the fields of the model's public Hugging Face `config.json` (the source
is named beside it) into vLLM's vocabulary (`ModelConfig.get_num_layers`,
`get_num_kv_heads`, `get_head_size`, `max_model_len`).

KV cache per token. Every layer keeps a key and a value vector per KV head, so one token
costs ``2 x num_layers x num_kv_heads x head_size x dtype_bytes``. OPT-13B in fp16:
2 x 40 x 40 x 128 x 2 = 819,200 bytes = 800 KiB (the PagedAttention paper, section 3).

Grouped-query attention (GQA). Multi-head attention gives every query head its own key and
value head. GQA lets a group of query heads share one KV head: Llama-2-70B has 64 query
heads but only 8 KV heads, so each KV head serves 8 query heads. The queries (and the
compute) are unchanged, but only 8 heads' K and V are cached: 2 x 80 x 8 x 128 x 2 =
327,680 bytes (320 KiB) per token in fp16, where 64 KV heads would need 2,621,440 (2.5 MiB),
8x more. Multi-query attention is the extreme with one KV head. Llama-3 and Mistral use
GQA with 8 KV heads; Llama-2-7B/13B and OPT do not (KV heads = query heads).

With tensor parallelism each GPU keeps only its own heads' KV: vLLM gives a GPU
``max(1, num_kv_heads // tp_size)`` KV heads, replicating a KV head when there are more GPUs
than KV heads (VLLM.md section 2; `sim.tensor_parallel` shows the split).
"""
from __future__ import annotations

from dataclasses import dataclass

# Bytes per element. The short names are the ones pages use; the long ones are vLLM's
# `--dtype` / `--kv-cache-dtype` spellings (`STR_DTYPE_TO_TORCH_DTYPE`). fp8 caches store
# one byte per element whichever fp8 format is chosen.
DTYPE_BYTES = {
    "fp32": 4, "float32": 4, "float": 4,
    "fp16": 2, "float16": 2, "half": 2,
    "bf16": 2, "bfloat16": 2,
    "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1,
}


def check_tensor_parallel(num_heads: int, num_kv_heads: int, tp_size: int) -> None:
    """vLLM's rules: the heads must split evenly (`ModelConfig.
    verify_with_parallel_config`), and either tp divides the KV heads or the KV heads
    divide tp (`QKVParallelLinear` calls `divide`, which asserts divisibility)."""
    if tp_size < 1:
        raise ValueError(f"tensor parallel size must be at least 1, got {tp_size}")
    if num_kv_heads < 1 or num_heads % num_kv_heads:
        raise ValueError(f"number of attention heads ({num_heads}) must be a multiple of "
                         f"the number of KV heads ({num_kv_heads})")
    if num_heads % tp_size:
        raise ValueError(f"Total number of attention heads ({num_heads}) must be "
                         f"divisible by tensor parallel size ({tp_size}).")
    if tp_size >= num_kv_heads and tp_size % num_kv_heads:
        raise ValueError(f"tensor parallel size ({tp_size}) is not a multiple of the "
                         f"number of KV heads ({num_kv_heads}): KV heads cannot be "
                         f"replicated evenly")
    if tp_size < num_kv_heads and num_kv_heads % tp_size:
        raise ValueError(f"number of KV heads ({num_kv_heads}) is not divisible by "
                         f"tensor parallel size ({tp_size})")


def dtype_bytes(dtype: str) -> int:
    try:
        return DTYPE_BYTES[dtype]
    except (KeyError, TypeError):
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPE_BYTES)}") from None


@dataclass(frozen=True, slots=True)
class ParamCount:
    """Parameters of a model, or of one GPU's shard of it, by where they sit.

    The counts follow the weight shapes (`nn.Linear` weights are out x in):
      embed_tokens      vocab x hidden (the LM head reuses it when tied)
      embed_positions   learned position table (OPT: (max_positions + 2) x hidden; 0 for RoPE)
      attention         per layer: hidden x (q + 2 x kv) head dims for QKV,
                        q head dims x hidden for O
      mlp               per layer: 3 x hidden x intermediate when gated (gate, up, down),
                        2 x hidden x intermediate otherwise (fc1, fc2)
      norms_and_biases  per layer the two norms (weight, plus bias for LayerNorm) and, when the
                        linears have biases, their biases; plus the final norm
      lm_head           vocab x hidden, 0 when tied to embed_tokens
    """
    embed_tokens: int
    embed_positions: int
    attention: int
    mlp: int
    norms_and_biases: int
    lm_head: int
    lm_head_rows: int   # vocab entries on this GPU: the LM head's output width (tied or not)
    hidden_size: int

    @property
    def total(self) -> int:
        return (self.embed_tokens + self.embed_positions + self.attention + self.mlp
                + self.norms_and_biases + self.lm_head)

    @property
    def matmul_per_token(self) -> int:
        """Weights every token is multiplied through in the decoder layers: a token costs
        2 FLOPs (multiply, add) per such weight. The LM head is separate because vLLM runs
        it only on the tokens it samples from."""
        return self.attention + self.mlp

    @property
    def lm_head_matrix(self) -> int:
        """Size of the LM head's matrix, which is the embedding table when tied."""
        return self.lm_head_rows * self.hidden_size

    @property
    def streamed(self) -> int:
        """Weights a forward pass reads from GPU memory in full: everything but the
        embedding tables, which are only gathered row by row (one row per token). A tied
        table is still read in full, as the LM head."""
        return self.attention + self.mlp + self.norms_and_biases + self.lm_head_matrix


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    num_layers: int               # HF num_hidden_layers
    hidden_size: int
    num_attention_heads: int      # query heads
    num_kv_heads: int             # HF num_key_value_heads (= query heads without GQA)
    head_size: int                # hidden_size // num_attention_heads for all presets here
    intermediate_size: int        # HF intermediate_size (Llama) / ffn_dim (OPT)
    vocab_size: int
    max_model_len: int            # what vLLM derives from max_position_embeddings
    tie_word_embeddings: bool
    gated_mlp: bool               # SwiGLU gate_proj/up_proj/down_proj (Llama, Mistral)
                                  # vs fc1/fc2 (OPT)
    bias: bool = False            # linear layers carry biases and the norms are LayerNorm (OPT)
    num_position_embeddings: int = 0   # learned position table rows (OPT); 0 for RoPE
    source: str = ""
    # Today's models (RECENT_MODELS below); the defaults describe the presets above.
    # HF `layer_types`, one per layer: "full_attention" or "sliding_attention"; () = all full.
    layer_types: tuple[str, ...] = ()
    sliding_window: int = 0       # HF sliding_window: tokens a sliding layer attends to
    # Multi-head latent attention (DeepSeek): per token and layer one latent of
    # kv_lora_rank numbers plus the qk_rope_head_dim RoPE key is cached, shared by all heads.
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    # When the shapes above do not give the weights (mixture of experts, quantized
    # checkpoints): the model card's total parameter count, and the checkpoint's bytes.
    total_params: int = 0
    checkpoint_bytes: int = 0

    def __post_init__(self) -> None:
        for field in ("num_layers", "hidden_size", "num_attention_heads", "num_kv_heads",
                      "head_size", "intermediate_size", "vocab_size", "max_model_len"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{self.name}: {field} must be a positive integer, got {value!r}")
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError(f"{self.name}: {self.num_attention_heads} query heads cannot be "
                             f"grouped over {self.num_kv_heads} KV heads")
        if self.layer_types:
            if len(self.layer_types) != self.num_layers:
                raise ValueError(f"{self.name}: {len(self.layer_types)} layer types for "
                                 f"{self.num_layers} layers")
            unknown = set(self.layer_types) - {"full_attention", "sliding_attention"}
            if unknown:
                raise ValueError(f"{self.name}: unknown layer types {sorted(unknown)}")
            if "sliding_attention" in self.layer_types and self.sliding_window < 1:
                raise ValueError(f"{self.name}: sliding layers need a sliding_window")
        if (self.kv_lora_rank > 0) != (self.qk_rope_head_dim > 0):
            raise ValueError(f"{self.name}: MLA needs both kv_lora_rank and qk_rope_head_dim")

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    def get_layer_types(self) -> tuple[str, ...]:
        return self.layer_types or ("full_attention",) * self.num_layers

    @property
    def is_hybrid(self) -> bool:
        """Layers of more than one attention type (sliding window and full)."""
        return len(set(self.get_layer_types())) > 1

    # vLLM's accessor names, so code reads like vLLM's.
    def get_head_size(self) -> int:
        return self.head_size

    def get_num_layers(self) -> int:
        return self.num_layers

    def get_num_kv_heads(self, tp_size: int = 1) -> int:
        """KV heads on one GPU (vLLM `ModelConfig.get_num_kv_heads`)."""
        check_tensor_parallel(self.num_attention_heads, self.num_kv_heads, tp_size)
        return max(1, self.num_kv_heads // tp_size)

    def param_count(self, tp_size: int = 1) -> ParamCount:
        """Parameters on one GPU of `tp_size` (the whole model for 1), from the shapes.

        Sharding as in vLLM: QKV, O, the MLP and both vocabulary tables are split over the
        GPUs (KV heads replicated when fewer than GPUs, see the module docstring); norms,
        the row-parallel layers' biases and OPT's position table are replicated. vLLM pads
        the vocabulary to a multiple of 64 before splitting; that padding (under 0.01% of
        the weights) is left out.
        """
        tp = tp_size
        self.get_num_kv_heads(tp)    # validates tp_size
        if self.intermediate_size % tp:
            raise ValueError(f"intermediate size {self.intermediate_size} is not divisible "
                             f"by tensor parallel size {tp}")
        h, d = self.hidden_size, self.head_size
        q = self.num_attention_heads // tp * d
        kv = self.get_num_kv_heads(tp) * d
        inter = self.intermediate_size // tp
        vocab = -(-self.vocab_size // tp)
        L = self.num_layers

        attention = L * (h * (q + 2 * kv) + q * h)
        mlp = L * (3 if self.gated_mlp else 2) * h * inter
        norm = 2 * h if self.bias else h            # LayerNorm has a bias, RMSNorm does not
        per_layer_biases = (q + 2 * kv) + h + inter + h if self.bias else 0
        norms_and_biases = L * (2 * norm + per_layer_biases) + norm
        return ParamCount(
            embed_tokens=vocab * h,
            embed_positions=self.num_position_embeddings * h,
            attention=attention,
            mlp=mlp,
            norms_and_biases=norms_and_biases,
            lm_head=0 if self.tie_word_embeddings else vocab * h,
            lm_head_rows=vocab,
            hidden_size=h,
        )

    @property
    def num_params(self) -> int:
        return self.total_params or self.param_count().total

    def weight_bytes(self, dtype: str = "fp16", tp_size: int = 1) -> int:
        """Bytes of weights on one GPU: parameters x bytes per element; for presets with a
        checkpoint size (quantized or mixture-of-experts checkpoints), that size split over
        the GPUs (what a GPU replicates is left out)."""
        if self.checkpoint_bytes:
            return self.checkpoint_bytes // tp_size
        if self.total_params:
            return self.total_params * dtype_bytes(dtype) // tp_size
        return self.param_count(tp_size).total * dtype_bytes(dtype)


def kv_bytes_per_token(model: ModelConfig, dtype: str = "fp16", tp_size: int = 1) -> int:
    """KV cache bytes one token takes on one GPU: K and V, every layer, that GPU's KV heads
    (every layer counted as if it kept every token: see kv_bytes_per_layer for what a
    sliding window saves). MLA: one latent of kv_lora_rank + qk_rope_head_dim numbers per
    layer, the same on every GPU (vLLM replicates it)."""
    if model.is_mla:
        return (model.num_layers * (model.kv_lora_rank + model.qk_rope_head_dim)
                * dtype_bytes(dtype))
    return (2 * model.num_layers * model.get_num_kv_heads(tp_size) * model.head_size
            * dtype_bytes(dtype))


def kv_bytes_per_layer(model: ModelConfig, dtype: str = "fp16", tp_size: int = 1) -> int:
    """KV cache bytes of one token in one layer on one GPU (vLLM's
    `KVCacheSpec.page_size_bytes / block_size`): 2 x KV heads x head size x dtype bytes,
    or the MLA latent."""
    return kv_bytes_per_token(model, dtype, tp_size) // model.num_layers


def cache_block_size(model: ModelConfig, block_size: int = 16, dtype: str = "fp16",
                     tp_size: int = 1) -> int:
    """vLLM v0.5.5 `CacheEngine.get_cache_block_size`: key block = block_size x kv heads
    per GPU x head_size elements, value block the same, times layers, times dtype bytes."""
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    if model.is_mla:
        return block_size * kv_bytes_per_token(model, dtype, tp_size)
    key_cache_block = block_size * model.get_num_kv_heads(tp_size) * model.head_size
    value_cache_block = key_cache_block
    total = model.num_layers * (key_cache_block + value_cache_block)
    return dtype_bytes(dtype) * total


def _hf(repo: str) -> str:
    return f"https://huggingface.co/{repo}/blob/main/config.json"


MODELS: dict[str, ModelConfig] = {
    # facebook/opt-13b: hidden_size 5120, num_hidden_layers 40, num_attention_heads 40,
    # ffn_dim 20480, vocab_size 50272, max_position_embeddings 2048, enable_bias,
    # LayerNorm, tied LM head; the position table has 2 extra rows (OPT's offset).
    "opt-13b": ModelConfig("OPT-13B", 40, 5120, 40, 40, 128, 20480, 50272, 2048,
                           tie_word_embeddings=True, gated_mlp=False, bias=True,
                           num_position_embeddings=2050, source=_hf("facebook/opt-13b")),
    # facebook/opt-66b: hidden 9216, 64 layers, 72 heads, ffn_dim 36864 (Table 1 of the paper).
    "opt-66b": ModelConfig("OPT-66B", 64, 9216, 72, 72, 128, 36864, 50272, 2048,
                           tie_word_embeddings=True, gated_mlp=False, bias=True,
                           num_position_embeddings=2050, source=_hf("facebook/opt-66b")),
    # OPT-175B has no public config.json (weights on request); shape from the OPT paper
    # (Zhang et al. 2022, arXiv 2205.01068, Table 1): 96 layers, 96 heads, d_model 12288,
    # ffn 4 x d_model, OPT's vocabulary and positions.
    "opt-175b": ModelConfig("OPT-175B", 96, 12288, 96, 96, 128, 49152, 50272, 2048,
                            tie_word_embeddings=True, gated_mlp=False, bias=True,
                            num_position_embeddings=2050,
                            source="https://arxiv.org/abs/2205.01068 (Table 1)"),
    # meta-llama/Llama-2-7b-hf: hidden 4096, 32 layers, 32 heads (no GQA), intermediate
    # 11008, vocab 32000, max_position_embeddings 4096, RMSNorm, untied.
    "llama-2-7b": ModelConfig("Llama-2-7B", 32, 4096, 32, 32, 128, 11008, 32000, 4096,
                              tie_word_embeddings=False, gated_mlp=True,
                              source=_hf("meta-llama/Llama-2-7b-hf")),
    # meta-llama/Llama-2-13b-hf: hidden 5120, 40 layers, 40 heads, intermediate 13824.
    "llama-2-13b": ModelConfig("Llama-2-13B", 40, 5120, 40, 40, 128, 13824, 32000, 4096,
                               tie_word_embeddings=False, gated_mlp=True,
                               source=_hf("meta-llama/Llama-2-13b-hf")),
    # meta-llama/Llama-2-70b-hf: hidden 8192, 80 layers, 64 heads, 8 KV heads, intermediate 28672.
    "llama-2-70b": ModelConfig("Llama-2-70B", 80, 8192, 64, 8, 128, 28672, 32000, 4096,
                               tie_word_embeddings=False, gated_mlp=True,
                               source=_hf("meta-llama/Llama-2-70b-hf")),
    # meta-llama/Meta-Llama-3-8B: hidden 4096, 32 layers, 32 heads, 8 KV heads, intermediate
    # 14336, vocab 128256, max_position_embeddings 8192.
    "llama-3-8b": ModelConfig("Llama-3-8B", 32, 4096, 32, 8, 128, 14336, 128256, 8192,
                              tie_word_embeddings=False, gated_mlp=True,
                              source=_hf("meta-llama/Meta-Llama-3-8B")),
    # meta-llama/Meta-Llama-3-70B: hidden 8192, 80 layers, 64 heads, 8 KV heads,
    # intermediate 28672, vocab 128256, 8192 positions.
    "llama-3-70b": ModelConfig("Llama-3-70B", 80, 8192, 64, 8, 128, 28672, 128256, 8192,
                               tie_word_embeddings=False, gated_mlp=True,
                               source=_hf("meta-llama/Meta-Llama-3-70B")),
    # mistralai/Mistral-7B-v0.1: hidden 4096, 32 layers, 32 heads, 8 KV heads, intermediate
    # 14336, vocab 32000, max_position_embeddings 32768. Its sliding window (4096) is not
    # modelled: vLLM v0.5.5 still sizes max_model_len from the 32768 positions unless the
    # window is disabled, and the window does not change the size of a cache block.
    "mistral-7b": ModelConfig("Mistral-7B-v0.1", 32, 4096, 32, 8, 128, 14336, 32000, 32768,
                              tie_word_embeddings=False, gated_mlp=True,
                              source=_hf("mistralai/Mistral-7B-v0.1")),
}


GIB = 1 << 30


def _alternate(num_layers: int, every: int) -> tuple[str, ...]:
    """Sliding layers with a full-attention layer every `every` layers, the last of each
    run: every=2 -> sliding, full, sliding, full, ... (gpt-oss); every=6 -> five sliding,
    one full (Gemma 3's sliding_window_pattern 6)."""
    return tuple("full_attention" if (i + 1) % every == 0 else "sliding_attention"
                 for i in range(num_layers))


# Today's models (issue 24), from their public config.json files. They are kept apart from
# MODELS because their weights are not the dense shapes' count (mixture of experts, MXFP4 or
# FP8 checkpoints: `total_params` and `checkpoint_bytes` say it instead) and their KV cache
# needs V1's groups (sliding windows) or MLA: pages that analyse dense shapes (tensor
# parallelism, prefill vs decode) offer MODELS; the KV cache calculator offers both.
RECENT_MODELS: dict[str, ModelConfig] = {
    # openai/gpt-oss-20b: num_hidden_layers 24, hidden_size 2880, num_attention_heads 64,
    # num_key_value_heads 8, head_dim 64, intermediate_size 2880 (per expert; 32 experts,
    # 4 per token), vocab_size 201088, max_position_embeddings 131072, sliding_window 128,
    # layer_types alternating sliding_attention / full_attention from layer 0.
    # Weights: 20.91B parameters, a 12.8 GiB checkpoint (experts in MXFP4): the gpt-oss
    # model card (OpenAI, arXiv 2508.10925), Table 1.
    "gpt-oss-20b": ModelConfig("gpt-oss-20b", 24, 2880, 64, 8, 64, 2880, 201088, 131072,
                               tie_word_embeddings=False, gated_mlp=True,
                               layer_types=_alternate(24, 2), sliding_window=128,
                               total_params=20_910_000_000,
                               checkpoint_bytes=int(12.8 * GIB),
                               source=_hf("openai/gpt-oss-20b")),
    # openai/gpt-oss-120b: the same but 36 layers and 128 experts; 116.83B parameters,
    # a 60.8 GiB checkpoint (model card, Table 1).
    "gpt-oss-120b": ModelConfig("gpt-oss-120b", 36, 2880, 64, 8, 64, 2880, 201088, 131072,
                                tie_word_embeddings=False, gated_mlp=True,
                                layer_types=_alternate(36, 2), sliding_window=128,
                                total_params=116_830_000_000,
                                checkpoint_bytes=int(60.8 * GIB),
                                source=_hf("openai/gpt-oss-120b")),
    # google/gemma-3-27b-it, text_config: num_hidden_layers 62, hidden_size 5376,
    # num_attention_heads 32, num_key_value_heads 16, head_dim 128, intermediate_size
    # 21504, vocab_size 262208, max_position_embeddings 131072, sliding_window 1024,
    # sliding_window_pattern 6 (layers 5, 11, ..., 59 full: 10 full, 52 sliding), tied
    # embeddings. Weights: 27.4B parameters in bf16 (the model card's count, with the
    # vision encoder; rounded).
    "gemma-3-27b": ModelConfig("Gemma-3-27B", 62, 5376, 32, 16, 128, 21504, 262208, 131072,
                               tie_word_embeddings=True, gated_mlp=True,
                               layer_types=_alternate(62, 6), sliding_window=1024,
                               total_params=27_400_000_000,
                               source=_hf("google/gemma-3-27b-it")),
    # meta-llama/Llama-3.1-8B: 32 layers, hidden 4096, 32 heads, 8 KV heads, head_dim 128,
    # intermediate 14336, vocab 128256, max_position_embeddings 131072, untied. 8.03B
    # parameters from these shapes.
    "llama-3.1-8b": ModelConfig("Llama-3.1-8B", 32, 4096, 32, 8, 128, 14336, 128256, 131072,
                                tie_word_embeddings=False, gated_mlp=True,
                                source=_hf("meta-llama/Llama-3.1-8B")),
    # meta-llama/Llama-3.1-70B: 80 layers, hidden 8192, 64 heads, 8 KV heads, head_dim 128,
    # intermediate 28672, vocab 128256, 131072 positions. 70.55B parameters.
    "llama-3.1-70b": ModelConfig("Llama-3.1-70B", 80, 8192, 64, 8, 128, 28672, 128256, 131072,
                                 tie_word_embeddings=False, gated_mlp=True,
                                 source=_hf("meta-llama/Llama-3.1-70B")),
    # Qwen/Qwen3-32B (dense): num_hidden_layers 64, hidden_size 5120, num_attention_heads
    # 64, num_key_value_heads 8, head_dim 128, intermediate_size 25600, vocab_size 151936,
    # max_position_embeddings 40960, untied. 32.8B parameters (model card; the shapes give
    # 32.76B).
    "qwen3-32b": ModelConfig("Qwen3-32B", 64, 5120, 64, 8, 128, 25600, 151936, 40960,
                             tie_word_embeddings=False, gated_mlp=True,
                             source=_hf("Qwen/Qwen3-32B")),
    # Qwen/Qwen3-30B-A3B (mixture of experts): num_hidden_layers 48, hidden_size 2048,
    # num_attention_heads 32, num_key_value_heads 4, head_dim 128, moe_intermediate_size
    # 768 (128 experts, 8 per token), vocab_size 151936, max_position_embeddings 40960.
    # 30.5B parameters in bf16 (model card, rounded).
    "qwen3-30b-a3b": ModelConfig("Qwen3-30B-A3B", 48, 2048, 32, 4, 128, 768, 151936, 40960,
                                 tie_word_embeddings=False, gated_mlp=True,
                                 total_params=30_500_000_000,
                                 source=_hf("Qwen/Qwen3-30B-A3B")),
    # deepseek-ai/DeepSeek-V3: num_hidden_layers 61, hidden_size 7168, num_attention_heads
    # 128, kv_lora_rank 512, qk_rope_head_dim 64, qk_nope_head_dim 128 (a query/key head is
    # 128 + 64 = 192), v_head_dim 128, moe_intermediate_size 2048 (256 routed experts, 8
    # per token), vocab_size 129280, max_position_embeddings 163840. MLA caches 512 + 64 =
    # 576 numbers per token and layer. Weights: 671B parameters (the MTP layer's 14B not
    # loaded) in FP8, about one byte each (model card; block scales left out).
    "deepseek-v3": ModelConfig("DeepSeek-V3", 61, 7168, 128, 128, 192, 2048, 129280, 163840,
                               tie_word_embeddings=False, gated_mlp=True,
                               kv_lora_rank=512, qk_rope_head_dim=64,
                               total_params=671_000_000_000,
                               checkpoint_bytes=671_000_000_000,
                               source=_hf("deepseek-ai/DeepSeek-V3")),
}


def get_model(model_id: str) -> ModelConfig:
    try:
        return MODELS[model_id] if model_id in MODELS else RECENT_MODELS[model_id]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {model_id!r}; valid ids: "
                         f"{', '.join(sorted(MODELS) + sorted(RECENT_MODELS))}") from None
