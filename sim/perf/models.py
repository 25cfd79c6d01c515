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

    def __post_init__(self) -> None:
        for field in ("num_layers", "hidden_size", "num_attention_heads", "num_kv_heads",
                      "head_size", "intermediate_size", "vocab_size", "max_model_len"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{self.name}: {field} must be a positive integer, got {value!r}")
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError(f"{self.name}: {self.num_attention_heads} query heads cannot be "
                             f"grouped over {self.num_kv_heads} KV heads")

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
        return self.param_count().total

    def weight_bytes(self, dtype: str = "fp16", tp_size: int = 1) -> int:
        """Bytes of weights on one GPU: parameters x bytes per element."""
        return self.param_count(tp_size).total * dtype_bytes(dtype)


def kv_bytes_per_token(model: ModelConfig, dtype: str = "fp16", tp_size: int = 1) -> int:
    """KV cache bytes one token takes on one GPU: K and V, every layer, that GPU's KV heads."""
    return (2 * model.num_layers * model.get_num_kv_heads(tp_size) * model.head_size
            * dtype_bytes(dtype))


def cache_block_size(model: ModelConfig, block_size: int = 16, dtype: str = "fp16",
                     tp_size: int = 1) -> int:
    """vLLM v0.5.5 `CacheEngine.get_cache_block_size`: key block = block_size x kv heads
    per GPU x head_size elements, value block the same, times layers, times dtype bytes."""
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
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


def get_model(model_id: str) -> ModelConfig:
    try:
        return MODELS[model_id]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {model_id!r}; valid ids: "
                         f"{', '.join(sorted(MODELS))}") from None
