"""GPU presets, and how many KV blocks vLLM v0.5.5 fits on one.

How vLLM sizes the cache (`Worker.determine_num_available_blocks`, VLLM.md section 2):
it loads the weights, runs one dummy forward pass with the largest batch the scheduler
allows (`max_num_batched_tokens` tokens over `max_num_seqs` sequences), reads the peak
memory that used, and gives the KV cache what is left of its share of the GPU:

    num_gpu_blocks = floor((total_gpu_memory x gpu_memory_utilization - peak_memory)
                           / cache_block_size)
    num_cpu_blocks = floor(swap_space_bytes / cache_block_size)

Memory sizes. `memory_bytes` is the total that vLLM multiplies by the utilization:
`torch.cuda.mem_get_info()[1]`, the device's memory minus what the driver reserves. It is
less than the marketing number: NVIDIA's "40GB" and "80GB" are binary (40 GiB and 80 GiB of
HBM), and CUDA shows a few hundred MiB less. Where we have a reading of that total we use it;
`memory_source` says where each number comes from. The paper's "12 GB" of KV space is also
binary (GiB): 12 x 2^30 / 819,200 bytes per token gives its 15.7K slots, 12 x 10^9 would give
14.6K.

Peak FLOP/s are dense BF16 Tensor Core rates (the datasheets print the 2:4-sparsity rate
beside them; we halve that). Host links are one direction of PCIe x16 (datasheets print the
two directions added), the ceiling for swapping blocks between GPU and CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

from sim.perf.models import ModelConfig, cache_block_size, dtype_bytes

GiB = 1 << 30
MiB = 1 << 20

_A100_DATASHEET = ("NVIDIA A100 Tensor Core GPU datasheet "
                   "(nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf)")


@dataclass(frozen=True, slots=True)
class GPU:
    name: str
    memory_bytes: int                 # total as CUDA reports it (see module docstring)
    memory_bandwidth: float           # bytes/s, datasheet
    peak_flops: float                 # dense BF16 FLOP/s, datasheet
    host_link_bandwidth: float        # bytes/s, one direction of the PCIe link
    memory_source: str = ""
    source: str = ""

    @property
    def ridge_point(self) -> float:
        """FLOPs per byte at which the datasheet roofline turns from memory- to compute-bound."""
        return self.peak_flops / self.memory_bandwidth


GPUS: dict[str, GPU] = {
    # A100 SXM4 40GB: HBM2 1,555 GB/s; BF16 Tensor Core 312 TFLOPS (624 with sparsity);
    # PCIe Gen4 64 GB/s both directions.
    "a100-40gb": GPU("A100-SXM4-40GB", 40536 * MiB, 1555e9, 312e12, 32e9,
                     memory_source="CUDA device properties, total_memory=40536MB (PaddlePaddle's "
                     "get_device_properties docs); PyTorch out-of-memory messages on other "
                     "drivers show 39.39-39.59 GiB",
                     source=_A100_DATASHEET),
    # A100 SXM4 80GB: HBM2e 2,039 GB/s; same compute as the 40GB part.
    "a100-80gb": GPU("A100-SXM4-80GB", int(79.25 * GiB), 2039e9, 312e12, 32e9,
                     memory_source="PyTorch out-of-memory messages on A100 80GB GPUs: 'a total "
                     "capacity of 79.25 GiB' (e.g. github.com/wbfwonderful/Vad-R1/issues/11); "
                     "printed to 0.01 GiB",
                     source=_A100_DATASHEET),
    # H100 SXM5 80GB: HBM3 3.35 TB/s; BF16 1,979 TFLOPS with sparsity -> 989.5 dense;
    # PCIe Gen5 128 GB/s both directions.
    "h100-80gb": GPU("H100-SXM5-80GB", 85_017_493_504, 3.35e12, 989.5e12, 64e9,
                     memory_source="measured for this project: torch.cuda.mem_get_info() on an "
                     "'NVIDIA H100 80GB HBM3' (nvidia-smi: 81559 MiB total, 480 MiB reserved)",
                     source="NVIDIA H100 Tensor Core GPU datasheet (H100 SXM column)"),
    # H200 SXM 141GB: HBM3e 4.8 TB/s; BF16 1,979 TFLOPS with sparsity -> 989.5 dense; PCIe Gen5.
    "h200": GPU("H200-SXM-141GB", 150_109_880_320, 4.8e12, 989.5e12, 64e9,
                memory_source="measured for this project: torch.cuda.mem_get_info() on an "
                "'NVIDIA H200' (nvidia-smi: 143771 MiB total, 616 MiB reserved)",
                source="NVIDIA H200 Tensor Core GPU datasheet (H200 SXM column)"),
    # B200 (HGX/DGX B200): HBM3e 8 TB/s; BF16 Tensor Core 4.5 PFLOPS with sparsity -> 2.25
    # dense (DGX B200 datasheet: 8 GPUs, 1,440 GB, 64 TB/s, 72 PFLOPS FP8 training);
    # PCIe Gen5 x16 to the host.
    "b200": GPU("B200-180GB", 183359 * MiB, 8.0e12, 2.25e15, 64e9,
                memory_source="nvidia-smi memory.total 183359 MiB as public logs print it "
                "(NVIDIA's '180 GB' per GPU of the DGX B200's 1,440 GB); not measured for this "
                "project, and the driver's reservation is not subtracted",
                source="NVIDIA DGX B200 datasheet (per-GPU share)"),
    # L4 24GB: GDDR6 300 GB/s; BF16 242 TFLOPS with sparsity -> 121 dense; PCIe Gen4 x16.
    "l4": GPU("L4-24GB", 23034 * MiB, 300e9, 121e12, 32e9,
              memory_source="nvidia-smi memory.total 23034 MiB as many logs print it; the "
              "driver's reservation (480-616 MiB on the Hopper parts above) is not subtracted, "
              "so this overstates what CUDA reports by about 2-3%",
              source="NVIDIA L4 Tensor Core GPU datasheet"),
}


def get_gpu(gpu_id: str) -> GPU:
    try:
        return GPUS[gpu_id]
    except (KeyError, TypeError):
        raise ValueError(f"unknown GPU {gpu_id!r}; valid ids: {', '.join(sorted(GPUS))}") from None


def _resolve_kv_dtype(dtype: str, kv_cache_dtype: str) -> str:
    # vLLM's cache_dtype "auto" means: the same as the model's dtype.
    return dtype if kv_cache_dtype == "auto" else kv_cache_dtype


def default_max_num_batched_tokens(model: ModelConfig) -> int:
    """vLLM v0.5.5 `SchedulerConfig` without chunked prefill: max(max_model_len, 2048)."""
    return max(model.max_model_len, 2048)


def activation_bytes(model: ModelConfig, dtype: str = "fp16", tp_size: int = 1,
                     max_num_batched_tokens: int | None = None, max_num_seqs: int = 256) -> int:
    """An ESTIMATE of what vLLM's profiling forward pass needs on top of the weights.

    vLLM measures this; we cannot, so we count the largest tensors alive at once:
      - per token, in the model dtype: the residual stream and the hidden state (2 x hidden)
        plus the widest layer output on this GPU, either the fused QKV projection or the
        MLP's up projection (x2 when gated) together with its activated output;
      - the sampler's float32 logits, probabilities and log-probabilities, one row of the
        full vocabulary per sequence (vLLM gathers the logits on the driver GPU).
    Left out: PyTorch's caching-allocator slack, attention workspaces, the CUDA context
    (vLLM does not count it in the peak either) and CUDA graphs (captured after the cache
    is allocated, out of the 1 - gpu_memory_utilization margin). Pass `peak_memory_bytes`
    to `memory_profile` to use a measured peak instead.
    """
    n = max_num_batched_tokens or default_max_num_batched_tokens(model)
    d = model.head_size
    q = model.num_attention_heads // tp_size * d
    kv = model.get_num_kv_heads(tp_size) * d
    inter = model.intermediate_size // tp_size
    widest = max(q + 2 * kv, (2 if model.gated_mlp else 1) * inter + inter)
    per_token = (2 * model.hidden_size + widest) * dtype_bytes(dtype)
    sampler = 3 * min(max_num_seqs, n) * model.vocab_size * 4
    return n * per_token + sampler


@dataclass(frozen=True, slots=True)
class MemoryProfile:
    """One GPU's memory split as vLLM's start-up sees it, for a page to draw."""
    total_gpu_memory: int
    gpu_memory_utilization: float
    weight_bytes: int
    activation_bytes: int            # estimate, or 0 when peak_memory was given
    peak_memory: int                 # weights + activations (the profiled peak)
    block_size: int
    cache_block_size: int
    num_gpu_blocks: int
    num_cpu_blocks: int

    @property
    def usable_memory(self) -> float:
        return self.total_gpu_memory * self.gpu_memory_utilization

    @property
    def kv_cache_bytes(self) -> int:
        return self.num_gpu_blocks * self.cache_block_size

    @property
    def num_token_slots(self) -> int:
        return self.num_gpu_blocks * self.block_size

    @property
    def unused_bytes(self) -> float:
        """What the utilization cap leaves over, plus the remainder smaller than a block."""
        return self.total_gpu_memory - self.peak_memory - self.kv_cache_bytes


def memory_profile(model: ModelConfig, gpu: GPU, block_size: int = 16, dtype: str = "fp16",
                   gpu_memory_utilization: float = 0.90, tp_size: int = 1,
                   peak_memory_bytes: int | None = None, swap_space_gib: float = 4,
                   kv_cache_dtype: str = "auto", max_num_batched_tokens: int | None = None,
                   max_num_seqs: int = 256) -> MemoryProfile:
    """vLLM's cache sizing for one GPU of `tp_size` (every GPU gets the same count: vLLM
    takes the minimum over the workers, and ours are identical)."""
    if not 0 < gpu_memory_utilization <= 1:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    weights = model.weight_bytes(dtype, tp_size)
    if peak_memory_bytes is None:
        activations = activation_bytes(model, dtype, tp_size, max_num_batched_tokens, max_num_seqs)
        peak = weights + activations
    else:
        activations, peak = 0, peak_memory_bytes
    block_bytes = cache_block_size(model, block_size, _resolve_kv_dtype(dtype, kv_cache_dtype),
                                   tp_size)
    gpu_blocks = int((gpu.memory_bytes * gpu_memory_utilization - peak) // block_bytes)
    return MemoryProfile(
        total_gpu_memory=gpu.memory_bytes,
        gpu_memory_utilization=gpu_memory_utilization,
        weight_bytes=weights,
        activation_bytes=activations,
        peak_memory=peak,
        block_size=block_size,
        cache_block_size=block_bytes,
        num_gpu_blocks=max(gpu_blocks, 0),          # vLLM clamps, then fails at start-up
        num_cpu_blocks=num_cpu_blocks(model, swap_space_gib, block_size,
                                      _resolve_kv_dtype(dtype, kv_cache_dtype), tp_size),
    )


def num_gpu_blocks(model: ModelConfig, gpu: GPU, block_size: int = 16, dtype: str = "fp16",
                   gpu_memory_utilization: float = 0.90, tp_size: int = 1,
                   peak_memory_bytes: int | None = None, kv_cache_dtype: str = "auto") -> int:
    return memory_profile(model, gpu, block_size, dtype, gpu_memory_utilization, tp_size,
                          peak_memory_bytes, kv_cache_dtype=kv_cache_dtype).num_gpu_blocks


def num_cpu_blocks(model: ModelConfig, swap_space_gib: float = 4, block_size: int = 16,
                   dtype: str = "fp16", tp_size: int = 1) -> int:
    """Swap space is per GPU (vLLM `CacheConfig.swap_space`, in GiB)."""
    if swap_space_gib < 0:
        raise ValueError(f"swap_space must not be negative, got {swap_space_gib}")
    swap_space_bytes = int(swap_space_gib * GiB)
    return max(swap_space_bytes // cache_block_size(model, block_size, dtype, tp_size), 0)


def raise_if_cache_size_invalid(num_gpu_blocks: int, block_size: int, max_model_len: int) -> None:
    """vLLM v0.5.5's start-up check (`vllm/worker/worker.py`), with its messages."""
    if num_gpu_blocks <= 0:
        raise ValueError("No available memory for the cache blocks. Try increasing "
                         "`gpu_memory_utilization` when initializing the engine.")
    max_seq_len = block_size * num_gpu_blocks
    if max_model_len > max_seq_len:
        raise ValueError(f"The model's max seq len ({max_model_len}) is larger than the maximum "
                         f"number of tokens that can be stored in KV cache ({max_seq_len}). Try "
                         "increasing `gpu_memory_utilization` or decreasing `max_model_len` when "
                         "initializing the engine.")


def initialize_cache(model: ModelConfig, gpu: GPU, block_size: int = 16, dtype: str = "fp16",
                     gpu_memory_utilization: float = 0.90, tp_size: int = 1,
                     peak_memory_bytes: int | None = None, swap_space_gib: float = 4,
                     kv_cache_dtype: str = "auto",
                     max_model_len: int | None = None) -> MemoryProfile:
    """Size the cache and fail the way vLLM's start-up does when it cannot serve one
    request of `max_model_len` tokens (the model's own by default)."""
    max_model_len = max_model_len or model.max_model_len
    # vLLM profiles with its default token budget, which follows the chosen max_model_len.
    profile = memory_profile(model, gpu, block_size, dtype, gpu_memory_utilization, tp_size,
                             peak_memory_bytes, swap_space_gib, kv_cache_dtype,
                             max_num_batched_tokens=max(max_model_len, 2048))
    raise_if_cache_size_invalid(profile.num_gpu_blocks, block_size, max_model_len)
    return profile
