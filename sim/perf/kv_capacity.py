"""How many tokens of KV cache fit on a GPU in vLLM V1 (v0.25.1), by attention type.

V1 sizes the cache from each layer's `KVCacheSpec` (sim/v1/kv_cache_interface.py): a
block of `block_size` tokens costs `page_size_bytes` in one layer,

    full attention or sliding window: block_size x KV heads x (K + V head size) x dtype bytes
    MLA (DeepSeek):                   block_size x 1 x (kv_lora_rank + qk_rope_head_dim) x dtype

Layers are grouped (`sim.v1.kv_cache_utils.get_kv_cache_groups`: one group per
`group_size` layers of one type), every block id names one page in each of `group_size`
buffers, so `num_blocks = available // (page_size x group_size)`.

What one request holds differs by type: a full-attention group keeps every token's block;
a sliding-window group keeps at most the window, plus one scheduling chunk and one block
(`SlidingWindowSpec.max_admission_blocks_per_request`). vLLM prints the result at start-up
as "GPU KV cache size: N tokens" = max concurrency x max_model_len, where max concurrency =
num_blocks / blocks one max_model_len request needs over all groups
(`get_kv_cache_capacity`). `--disable-hybrid-kv-cache-manager` puts every layer in one
full-attention group: the window saves compute but no memory.

Memory: `available = gpu_memory x gpu_memory_utilization - weights` (vLLM's default
utilization in V1 is 0.92). vLLM also subtracts the activation peak it profiles, a few GiB;
it is left out here so that every number can be checked by hand.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from sim.perf.hardware import GPU
from sim.perf.models import ModelConfig, dtype_bytes
from sim.v1.kv_cache_interface import (
    FullAttentionSpec,
    KVCacheConfig,
    KVCacheSpec,
    MLAAttentionSpec,
    SlidingWindowSpec,
)
from sim.v1.kv_cache_utils import (
    check_enough_kv_cache_memory,
    get_kv_cache_capacity,
    get_kv_cache_config_from_groups,
    get_kv_cache_groups,
    get_uniform_page_size,
)

V1_GPU_MEMORY_UTILIZATION = 0.92     # vllm/config/cache.py at v0.25.1
# vllm serve on a GPU of 70 GiB or more (EngineArgs.get_batch_defaults): the default token
# budget, which also sizes a sliding window's admission cap.
V1_SERVER_MAX_NUM_BATCHED_TOKENS = 8192


def layer_kv_specs(model: ModelConfig, kv_dtype: str, block_size: int = 16,
                   tp_size: int = 1) -> dict[str, KVCacheSpec]:
    """One vLLM KVCacheSpec per layer of the model, on one GPU of `tp_size`."""
    if model.is_mla:
        spec = MLAAttentionSpec(block_size=block_size, num_kv_heads=1,
                                head_size=model.kv_lora_rank + model.qk_rope_head_dim,
                                dtype=kv_dtype)
        return {f"model.layers.{i}.self_attn": spec for i in range(model.num_layers)}
    common = dict(block_size=block_size, num_kv_heads=model.get_num_kv_heads(tp_size),
                  head_size=model.head_size, dtype=kv_dtype)
    full = FullAttentionSpec(**common)
    sliding = (SlidingWindowSpec(sliding_window=model.sliding_window, **common)
               if model.sliding_window else None)
    return {f"model.layers.{i}.self_attn": full if kind == "full_attention" else sliding
            for i, kind in enumerate(model.get_layer_types())}


@dataclass(frozen=True)
class LayerType:
    """The layers of one attention type and what a token costs in them."""
    kind: str                  # "full attention", "sliding window", "MLA"
    num_layers: int
    bytes_per_token: int       # in one layer (page_size_bytes / block_size)
    window: int | None         # tokens kept, for a sliding window

    @property
    def bytes_per_token_all_layers(self) -> int:
        return self.bytes_per_token * self.num_layers


@dataclass(frozen=True)
class KVCapacity:
    """vLLM V1's start-up numbers for one model on one GPU."""
    available_bytes: int       # gpu memory x utilization - weights
    weight_bytes: int
    kv_cache_config: KVCacheConfig
    page_size_bytes: int       # one layer's block
    group_size: int            # layers per group: the pages one block id names
    num_tokens: int            # vLLM's "GPU KV cache size: N tokens"
    max_concurrency: float     # max_model_len requests at once
    blocks_per_request: int    # blocks one max_model_len request needs, over all groups
    error: str = ""            # why vLLM would refuse to start ("" when it starts)

    @property
    def num_blocks(self) -> int:
        return self.kv_cache_config.num_blocks

    @property
    def num_groups(self) -> int:
        return len(self.kv_cache_config.kv_cache_groups)

    @property
    def block_bytes(self) -> int:
        """Memory one block id takes: a page in each of group_size buffers."""
        return self.page_size_bytes * self.group_size


def layer_types(model: ModelConfig, kv_dtype: str, tp_size: int = 1) -> list[LayerType]:
    """The model's layers by attention type, full attention first."""
    per_layer = (model.kv_lora_rank + model.qk_rope_head_dim if model.is_mla
                 else 2 * model.get_num_kv_heads(tp_size) * model.head_size) * dtype_bytes(kv_dtype)
    kinds = model.get_layer_types()
    out = []
    num_full = kinds.count("full_attention")
    if num_full:
        out.append(LayerType("MLA" if model.is_mla else "full attention", num_full, per_layer,
                             None))
    if len(kinds) - num_full:
        out.append(LayerType("sliding window", len(kinds) - num_full, per_layer,
                             model.sliding_window))
    return out


def v1_kv_capacity(model: ModelConfig, gpu: GPU, dtype: str = "bf16", kv_dtype: str = "auto",
                   max_model_len: int | None = None, tp_size: int = 1,
                   gpu_memory_utilization: float = V1_GPU_MEMORY_UTILIZATION,
                   block_size: int = 16,
                   max_num_batched_tokens: int = V1_SERVER_MAX_NUM_BATCHED_TOKENS,
                   disable_hybrid_kv_cache_manager: bool = False) -> KVCapacity:
    """The KV cache vLLM V1 sets up for `model` on one `gpu` (of `tp_size`): blocks, and
    tokens that fit for requests of `max_model_len` tokens (the model's by default).
    `kv_dtype` "auto" means the model's dtype."""
    if not 0 < gpu_memory_utilization <= 1:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got "
                         f"{gpu_memory_utilization}")
    kv_dtype = dtype if kv_dtype == "auto" else kv_dtype
    max_model_len = max_model_len or model.max_model_len
    weights = model.weight_bytes(dtype, tp_size)
    # vLLM: requested_memory = ceil(total x utilization), minus what the profile used.
    available = math.ceil(gpu.memory_bytes * gpu_memory_utilization) - weights
    specs = layer_kv_specs(model, kv_dtype, block_size, tp_size)
    groups = get_kv_cache_groups(specs, disable_hybrid_kv_cache_manager)
    config = get_kv_cache_config_from_groups(groups, max(available, 0))
    page = get_uniform_page_size(g.kv_cache_spec for g in groups)
    group_size = max(len(g.layer_names) for g in groups)
    blocks_per_request = sum(
        -(-g.kv_cache_spec.max_memory_usage_bytes(max_model_len, max_num_batched_tokens)
          // page) for g in groups)
    num_tokens, concurrency = get_kv_cache_capacity(config, max_model_len,
                                                    max_num_batched_tokens)
    try:
        check_enough_kv_cache_memory(groups, available, max_model_len, max_num_batched_tokens)
        error = ""
    except ValueError as err:
        error = str(err)
    return KVCapacity(available, weights, config, page, group_size, num_tokens, concurrency,
                      blocks_per_request, error)
