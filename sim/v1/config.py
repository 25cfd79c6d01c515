"""V1's engine configuration: the fields of vLLM v0.25.1's `CacheConfig`
(`vllm/config/cache.py`) and `SchedulerConfig` (`vllm/config/scheduler.py`) that change what
the KV cache manager and the scheduler decide, with v0.25.1's defaults.

`num_gpu_blocks` is given directly and INCLUDES the null block (block 0), as
`KVCacheConfig.num_blocks` does in vLLM: a pool of N blocks has N - 1 usable ones.
Speculative decoding (`vllm/config/speculative.py`) is reduced to two numbers here:
`num_speculative_tokens` (K draft tokens proposed per request per step) and
`num_lookahead_tokens` (extra slots allocated ahead; vLLM sets it to K for EAGLE-style
drafters only, and EAGLE also drops the last block of a prefix hit, which the simulation does
whenever `num_lookahead_tokens > 0`).

`async_scheduling` is vLLM's `SchedulerConfig.async_scheduling` (`bool | None`, default
None). vLLM's `VllmConfig.__post_init__` (`vllm/config/vllm.py`) resolves None to True
unless the model is a pooling model, the speculative method has no async path, or the
executor cannot; `resolve_async_scheduling` does the same here, and the engine
(`sim/v1/engine.py`) calls it: None becomes True (the async loop, `AsyncScheduler` and a
batch queue of two) unless speculative decoding is on, because the simulation does not
model async speculative decoding (vLLM has it for EAGLE, MTP and GPU n-gram drafters).
False is the synchronous loop.

`KVTransferConfig` (`vllm/config/kv_transfer.py`) turns on a KV connector (P/D
disaggregation, sim/v1/kv_connector/): which connector, this instance's role, its engine id,
the connector's extra config and `kv_load_failure_policy` ("fail", v0.25.1's default, or
"recompute").

Left out: the hash algorithm choice (only `sha256`, the default), LoRA, multimodal inputs,
async speculative decoding, pipeline parallelism, `max_num_partial_prefills`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

POLICIES = ("fcfs", "priority")
DEFAULT_MAX_NUM_BATCHED_TOKENS = 2048   # vllm/config/scheduler.py
DEFAULT_MAX_NUM_SEQS = 128              # vllm/config/scheduler.py


@dataclass(frozen=True, slots=True)
class CacheConfig:
    block_size: int = 16                 # CacheConfig.DEFAULT_BLOCK_SIZE
    num_gpu_blocks: int = 64             # KVCacheConfig.num_blocks: the null block included
    enable_prefix_caching: bool = True
    prefix_caching_hash_algo: str = "sha256"
    # vLLM seeds the hash chain with 32 random bytes unless PYTHONHASHSEED is set, and then
    # with sha256(PYTHONHASHSEED). The simulation always fixes it, as with PYTHONHASHSEED=0.
    hash_seed: str = "0"

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {self.block_size}")
        if self.num_gpu_blocks < 1:
            # vLLM's BlockPool asserts num_gpu_blocks > 0 (block 0 is the null block).
            raise ValueError("No available memory for the cache blocks (num_gpu_blocks "
                             f"must be at least 1, got {self.num_gpu_blocks})")
        if self.prefix_caching_hash_algo != "sha256":
            raise ValueError("only the default prefix_caching_hash_algo 'sha256' is "
                             f"simulated, got {self.prefix_caching_hash_algo!r}")


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS
    max_model_len: int = 2048
    # None: = max_num_batched_tokens (vLLM's default).
    max_num_scheduled_tokens: int | None = None
    enable_chunked_prefill: bool = True
    long_prefill_token_threshold: int = 0
    # Admit a waiting request only if blocks for its whole current sequence fit.
    scheduler_reserve_full_isl: bool = True
    watermark: float = 0.0
    policy: str = "fcfs"
    # Speculative decoding (SpeculativeConfig): drafts per step, and lookahead slots.
    num_speculative_tokens: int = 0
    num_lookahead_tokens: int = 0
    # None: resolved by the engine (resolve_async_scheduling), True unless drafts are on.
    async_scheduling: bool | None = None

    def __post_init__(self) -> None:
        if self.max_num_scheduled_tokens is None:
            object.__setattr__(self, "max_num_scheduled_tokens", self.max_num_batched_tokens)
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be 'fcfs' or 'priority', got {self.policy!r}")
        for name in ("max_num_batched_tokens", "max_num_seqs", "max_model_len",
                     "max_num_scheduled_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("long_prefill_token_threshold", "num_speculative_tokens",
                     "num_lookahead_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if not 0.0 <= self.watermark < 1.0:
            raise ValueError(f"watermark must be a fraction in [0, 1), got {self.watermark}")
        # The checks of vLLM's SchedulerConfig._verify_args.
        if (not self.enable_chunked_prefill
                and self.max_num_batched_tokens < self.max_model_len):
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) is smaller than "
                f"max_model_len ({self.max_model_len}). This effectively limits the maximum "
                "sequence length to max_num_batched_tokens and makes vLLM reject longer "
                "sequences. Please increase max_num_batched_tokens or decrease max_model_len.")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be greater "
                f"than or equal to max_num_seqs ({self.max_num_seqs}).")
        if self.async_scheduling not in (None, True, False):
            raise ValueError("async_scheduling must be True, False or None, got "
                             f"{self.async_scheduling!r}")
        if self.async_scheduling and self.num_speculative_tokens:
            # vLLM supports it for EAGLE/MTP/GPU n-gram drafters; the simulation does not.
            raise ValueError("async_scheduling with speculative decoding is not simulated: "
                             "set async_scheduling=False (or leave it None) when "
                             "num_speculative_tokens > 0")


def resolve_async_scheduling(config: SchedulerConfig) -> SchedulerConfig:
    """`VllmConfig.__post_init__`'s default for `async_scheduling`, on the fields the
    simulation has: None becomes True unless speculative decoding is on (then False, as
    vLLM does for a drafter without an async path). An explicit True or False stays."""
    if config.async_scheduling is not None:
        return config
    return dataclasses.replace(config, async_scheduling=not config.num_speculative_tokens)


KV_ROLES = ("kv_producer", "kv_consumer", "kv_both")
KV_LOAD_FAILURE_POLICIES = ("recompute", "fail")


@dataclass(frozen=True, slots=True)
class KVTransferConfig:
    """vLLM's `KVTransferConfig`, the fields the scheduler side reads. `engine_id` is a
    random UUID in vLLM when unset; here it must be named (no global random state)."""
    kv_connector: str | None = None
    engine_id: str | None = None
    kv_role: str | None = None
    kv_connector_extra_config: dict = field(default_factory=dict)
    kv_load_failure_policy: str = "fail"

    def __post_init__(self) -> None:
        if self.kv_role is not None and self.kv_role not in KV_ROLES:
            raise ValueError(f"Unsupported kv_role: {self.kv_role}. Supported roles are "
                             f"{KV_ROLES}")
        if self.kv_connector is not None and self.kv_role is None:
            raise ValueError("Please specify kv_role when kv_connector is set, supported "
                             f"roles are {KV_ROLES}")
        if self.kv_load_failure_policy not in KV_LOAD_FAILURE_POLICIES:
            raise ValueError("kv_load_failure_policy must be 'recompute' or 'fail', got "
                             f"{self.kv_load_failure_policy!r}")

    @property
    def is_kv_transfer_instance(self) -> bool:
        return self.kv_connector is not None and self.kv_role in KV_ROLES

    @property
    def is_kv_producer(self) -> bool:
        return self.kv_connector is not None and self.kv_role in ("kv_producer", "kv_both")

    @property
    def is_kv_consumer(self) -> bool:
        return self.kv_connector is not None and self.kv_role in ("kv_consumer", "kv_both")

    def get_from_extra_config(self, key, default):
        return self.kv_connector_extra_config.get(key, default)
