"""Engine configuration (vLLM v0.5.5 `CacheConfig` and `SchedulerConfig`, `vllm/config.py`).

Only the fields that change what the scheduler and block manager do. `num_gpu_blocks` is
given directly here; `sim.hardware.num_gpu_blocks` derives it from a model and a GPU with
vLLM's profiling formula.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PREEMPTION_MODES = (None, "swap", "recompute")


@dataclass(frozen=True, slots=True)
class CacheConfig:
    block_size: int = 16
    num_gpu_blocks: int = 64
    num_cpu_blocks: int = 64
    # vLLM passes the watermark to the block manager (default 0.01); kept here so one
    # object describes the cache.
    watermark: float = 0.01
    # Additions for pictures: the initial free order of GPU blocks ("stack" is vLLM's)
    # and the seed of the "shuffled" order.
    free_order: str | Sequence[int] = "stack"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {self.block_size}")
        if self.num_gpu_blocks < 1:
            # vLLM: "No available memory for the cache blocks. Try increasing
            # `gpu_memory_utilization` when initializing the engine."
            raise ValueError("No available memory for the cache blocks (num_gpu_blocks "
                             f"must be at least 1, got {self.num_gpu_blocks})")
        if self.num_cpu_blocks < 0:
            raise ValueError(f"num_cpu_blocks must not be negative, got {self.num_cpu_blocks}")
        if not 0.0 <= self.watermark < 1.0:
            raise ValueError(f"watermark must be a fraction in [0, 1), got {self.watermark}")


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    max_num_batched_tokens: int | None = None
    max_num_seqs: int = 256
    max_model_len: int = 2048
    enable_chunked_prefill: bool = False
    # None: RECOMPUTE for single-sequence groups, SWAP for multi-sequence groups.
    preemption_mode: str | None = None

    def __post_init__(self) -> None:
        if self.max_num_batched_tokens is None:
            default = 512 if self.enable_chunked_prefill else max(self.max_model_len, 2048)
            object.__setattr__(self, "max_num_batched_tokens", default)
        if self.preemption_mode not in PREEMPTION_MODES:
            raise ValueError(f"preemption_mode must be None, 'swap' or 'recompute', "
                             f"got {self.preemption_mode!r}")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be at least 1, got {self.max_num_seqs}")
        if self.max_model_len < 1:
            raise ValueError(f"max_model_len must be at least 1, got {self.max_model_len}")
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

    @property
    def chunked_prefill_enabled(self) -> bool:
        return self.enable_chunked_prefill
