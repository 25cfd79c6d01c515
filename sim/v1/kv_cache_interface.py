"""What one layer's KV cache looks like, and how layers are grouped (vLLM v0.25.1
`vllm/v1/kv_cache_interface.py`).

A `KVCacheSpec` describes one attention layer's cache: how many tokens a block holds
(`block_size`) and how many bytes that block takes in this layer (`page_size_bytes`):

- `FullAttentionSpec`: K and V of every token: `block_size x num_kv_heads x (head_size +
  head_size_v) x dtype bytes` (head_size_v = head_size unless the model says otherwise).
- `SlidingWindowSpec`: the same page, but a token only attends to the last
  `sliding_window` tokens, so blocks before the window can be dropped.
- `ChunkedLocalAttentionSpec` (Llama 4): attention within chunks of
  `attention_chunk_size` tokens; `2 x block_size x num_kv_heads x head_size x dtype`.
- `MLAAttentionSpec` (DeepSeek): one compressed latent per token (`head_size` =
  `kv_lora_rank + qk_rope_head_dim`, `num_kv_heads` = 1), no separate K and V:
  `block_size x num_kv_heads x head_size x dtype`.

`max_memory_usage_bytes` is what one request of `max_model_len` tokens may hold in one
layer: every block for full attention; for a window (or chunk), vLLM's admission cap
`max_admission_blocks_per_request` (the window, plus one scheduling chunk, plus one block
because the window need not start on a block boundary). vLLM reads `max_model_len` and
`max_num_batched_tokens` from its `VllmConfig`; here they are arguments.

`KVCacheGroupSpec` (layers that share one block table), `KVCacheTensor` (one buffer and
the layers that share it) and `KVCacheConfig` (`num_blocks`, the tensors, the groups) are
what `kv_cache_utils.get_kv_cache_groups` and `get_kv_cache_config_from_groups` produce.

Dtypes are names (`"float32"`, `"bfloat16"`, `"fp8"`, ...; sim/perf/models.py's
`DTYPE_BYTES`) instead of torch dtypes. Left out: quantization modes (NVFP4, int4,
per-token-head scales), cross-attention, encoder-only and sink specs, DeepSeek V3.2/V4's
custom MLA layouts and the `UniformTypeKVCacheSpecs` of layers that differ only in size.
Not modelled at all: Mamba (`MambaSpec`, `MambaManager`): its per-request state is a
fixed-size block rather than one slot per token, and its prefix caching needs
block-aligned chunks, which the simulation's pictures of token slots do not show.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from sim.perf.models import dtype_bytes


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def get_dtype_size(dtype: str) -> int:
    return dtype_bytes(dtype)


@dataclass(frozen=True)
class KVCacheSpec:
    """One layer's KV cache format: `block_size` tokens per block."""
    block_size: int

    @property
    def page_size_bytes(self) -> int:
        raise NotImplementedError

    def max_memory_usage_bytes(self, max_model_len: int,
                               max_num_batched_tokens: int | None = None) -> int:
        raise NotImplementedError

    def copy_with_new_block_size(self, block_size: int):
        return replace(self, block_size=block_size)

    @classmethod
    def merge(cls, specs: list):
        """One spec for a group of layers; they must all be the same."""
        if not all(spec == specs[0] for spec in specs[1:]):
            raise AssertionError("All layers in the same KV cache group must be the same.")
        return specs[0]


@dataclass(frozen=True, kw_only=True)
class AttentionSpec(KVCacheSpec):
    num_kv_heads: int
    head_size: int
    dtype: str
    page_size_padded: int | None = None
    # Whether the attention backend reads a padded page through a strided view (only such
    # layers may be padded to a common page size).
    indexes_kv_by_block_stride: bool = False

    @property
    def page_size_bytes(self) -> int:
        real_page_size = self.real_page_size_bytes
        if self.page_size_padded is not None:
            assert self.page_size_padded >= real_page_size
            return self.page_size_padded
        return real_page_size

    @property
    def real_page_size_bytes(self) -> int:
        return (2 * self.block_size * self.num_kv_heads * self.head_size
                * get_dtype_size(self.dtype))


@dataclass(frozen=True, kw_only=True)
class FullAttentionSpec(AttentionSpec):
    """Every token of the request keeps its KV. `sliding_window` / `attention_chunk_size`
    are set only when the hybrid manager is disabled and windowed layers are treated as
    full attention (their compute is still windowed; their memory is not saved)."""
    head_size_v: int = None  # type: ignore[assignment]
    sliding_window: int | None = None
    attention_chunk_size: int | None = None

    def __post_init__(self) -> None:
        if self.head_size_v is None:
            object.__setattr__(self, "head_size_v", self.head_size)

    @property
    def real_page_size_bytes(self) -> int:
        return (self.block_size * self.num_kv_heads * (self.head_size + self.head_size_v)
                * get_dtype_size(self.dtype))

    def max_memory_usage_bytes(self, max_model_len: int,
                               max_num_batched_tokens: int | None = None) -> int:
        return cdiv(max_model_len, self.block_size) * self.page_size_bytes

    @classmethod
    def merge_window_sizes(cls, window_sizes: set[int]) -> int | None:
        if len(window_sizes) == 0:
            return None
        if len(window_sizes) == 1:
            return next(iter(window_sizes))
        raise ValueError("All attention layers in the same KV cache group must have the "
                         "same window size.")

    @classmethod
    def merge(cls, specs: list):
        if not all(isinstance(spec, FullAttentionSpec) for spec in specs):
            raise AssertionError("All attention layers in the same KV cache group must be "
                                 "FullAttentionSpec.")
        if any(isinstance(spec, MLAAttentionSpec) for spec in specs):
            raise AssertionError("MLAAttentionSpec should be merged in "
                                 "MLAAttentionSpec.merge")
        sliding_window = {s.sliding_window for s in specs if s.sliding_window is not None}
        chunk = {s.attention_chunk_size for s in specs if s.attention_chunk_size is not None}
        first = specs[0]
        merged = cls(block_size=first.block_size, num_kv_heads=first.num_kv_heads,
                     head_size=first.head_size, head_size_v=first.head_size_v,
                     dtype=first.dtype, page_size_padded=first.page_size_padded,
                     indexes_kv_by_block_stride=first.indexes_kv_by_block_stride,
                     sliding_window=cls.merge_window_sizes(sliding_window),
                     attention_chunk_size=cls.merge_window_sizes(chunk))
        for spec in specs:
            for f in fields(AttentionSpec):
                if getattr(spec, f.name) != getattr(merged, f.name):
                    raise AssertionError("All attention layers in the same KV cache group "
                                         "must have the same attention spec.")
        if merged.sliding_window is not None and merged.attention_chunk_size is not None:
            raise AssertionError("Model with both sliding window layers and chunked local "
                                 "attention layers is not supported.")
        return merged


@dataclass(frozen=True, kw_only=True)
class MLAAttentionSpec(FullAttentionSpec):
    """Multi-head latent attention: one latent vector per token and layer, shared by every
    head (so `num_kv_heads` is 1 and tensor parallelism replicates it)."""

    @property
    def real_page_size_bytes(self) -> int:
        return (self.block_size * self.num_kv_heads * self.head_size
                * get_dtype_size(self.dtype))

    @classmethod
    def merge(cls, specs: list):
        if not all(isinstance(spec, MLAAttentionSpec) for spec in specs):
            raise AssertionError("All attention layers in the same KV cache group must be "
                                 "MLAAttentionSpec.")
        if not all(spec == specs[0] for spec in specs[1:]):
            raise AssertionError("All attention layers in the same KV cache group must "
                                 "have the same MLA spec.")
        return specs[0]


@dataclass(frozen=True, kw_only=True)
class SlidingWindowSpec(AttentionSpec):
    sliding_window: int
    head_size_v: int = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.head_size_v is None:
            object.__setattr__(self, "head_size_v", self.head_size)

    @property
    def real_page_size_bytes(self) -> int:
        return (self.block_size * self.num_kv_heads * (self.head_size + self.head_size_v)
                * get_dtype_size(self.dtype))

    def max_admission_blocks_per_request(self, max_num_batched_tokens: int,
                                         max_model_len: int) -> int:
        """During chunked prefill a request holds the last `sliding_window - 1` computed
        tokens plus the chunk being computed (never more than max_model_len), and one more
        block because the window need not start at a block boundary."""
        num_tokens = min(self.sliding_window - 1 + max_num_batched_tokens, max_model_len)
        return cdiv(num_tokens, self.block_size) + 1

    def max_memory_usage_bytes(self, max_model_len: int,
                               max_num_batched_tokens: int | None = None) -> int:
        if max_num_batched_tokens is None:
            max_num_batched_tokens = max_model_len
        return (self.max_admission_blocks_per_request(max_num_batched_tokens, max_model_len)
                * self.page_size_bytes)


@dataclass(frozen=True, kw_only=True)
class ChunkedLocalAttentionSpec(AttentionSpec):
    attention_chunk_size: int

    def max_admission_blocks_per_request(self, max_num_batched_tokens: int,
                                         max_model_len: int) -> int:
        """At most one chunk of context plus the tokens being computed."""
        num_tokens = min(self.attention_chunk_size + max_num_batched_tokens, max_model_len)
        return cdiv(num_tokens, self.block_size)

    def max_memory_usage_bytes(self, max_model_len: int,
                               max_num_batched_tokens: int | None = None) -> int:
        if max_num_batched_tokens is None:
            max_num_batched_tokens = max_model_len
        return (self.max_admission_blocks_per_request(max_num_batched_tokens, max_model_len)
                * self.page_size_bytes)


def get_kv_cache_spec_sliding_window(spec: KVCacheSpec) -> int | None:
    return spec.sliding_window if isinstance(spec, SlidingWindowSpec) else None


@dataclass
class KVCacheTensor:
    """One KV cache buffer of `size` bytes, shared by one layer of each group."""
    size: int
    shared_by: list[str]


@dataclass
class KVCacheGroupSpec:
    """Layers that share one block table (they need the same blocks for every request)."""
    layer_names: list[str]
    kv_cache_spec: KVCacheSpec


@dataclass
class KVCacheConfig:
    """`num_blocks` blocks (the null block included), the buffers, and the groups."""
    num_blocks: int
    kv_cache_tensors: list[KVCacheTensor] = field(default_factory=list)
    kv_cache_groups: list[KVCacheGroupSpec] = field(default_factory=list)
