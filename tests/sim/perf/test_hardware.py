import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.perf.hardware import (
    GPU,
    GPUS,
    GiB,
    MiB,
    activation_bytes,
    get_gpu,
    initialize_cache,
    memory_profile,
    num_cpu_blocks,
    num_gpu_blocks,
    raise_if_cache_size_invalid,
)
from sim.perf.models import MODELS, cache_block_size, get_model, kv_bytes_per_token


def gpu_with(memory_bytes: int) -> GPU:
    return dataclasses.replace(get_gpu("a100-40gb"), memory_bytes=memory_bytes)


def kv_slots(model_id: str, kv_space_bytes: int, tp: int) -> int:
    """Token slots when `kv_space_bytes` (over all GPUs) is left for the cache, through the
    same formula vLLM uses: peak = total - kv space per GPU, utilization 1, block size 1."""
    per_gpu = kv_space_bytes // tp
    gpu = gpu_with(per_gpu + 10 * GiB)
    return num_gpu_blocks(get_model(model_id), gpu, block_size=1, dtype="fp16",
                          gpu_memory_utilization=1.0, tp_size=tp, peak_memory_bytes=10 * GiB)


# ----------------------------------------------------------- the paper's Table 1

def test_table_1_13b_on_one_a100_gives_15_7k_slots():
    # "12 GB" is 12 GiB: 12 x 2^30 / 819,200 = 15,728.6 -> 15.7K. In decimal GB it
    # would be 12e9 / 819,200 = 14,648 -> 14.6K, which is not the paper's number.
    assert kv_slots("opt-13b", 12 * GiB, tp=1) == 15_728 == math.floor(12 * 2**30 / 819_200)
    assert round(15_728 / 1000, 1) == 15.7
    assert round(12 * 10**9 // 819_200 / 1000, 1) == 14.6
    # Block size 16 changes nothing here: 983 blocks of 12.5 MiB.
    gpu = gpu_with(22 * GiB)
    assert num_gpu_blocks(get_model("opt-13b"), gpu, block_size=16, gpu_memory_utilization=1.0,
                          peak_memory_bytes=10 * GiB) * 16 == 15_728


def test_table_1_175b_on_8_a100_80gb_gives_60_1k_slots():
    # OPT-175B: 2 x 96 x 12288 x 2 = 4.5 MiB per token; per GPU (tp 8) a twelfth of the heads.
    assert kv_bytes_per_token(get_model("opt-175b"), "fp16") == 4_718_592
    assert kv_bytes_per_token(get_model("opt-175b"), "fp16", tp_size=8) * 8 == 4_718_592
    slots = kv_slots("opt-175b", 264 * GiB, tp=8)
    assert slots == 60_074 and round(slots / 1000, 1) == 60.1


def test_table_1_66b_on_4_a100_is_close_to_the_papers_9_7k():
    # OPT-66B: 2 x 64 x 9216 x 2 = 2.25 MiB per token. 21 GiB gives 9,557 slots (9.6K); the
    # paper prints 9.7K, which needs 21.3 GiB, printed as "21 GB". We reproduce the formula,
    # not the paper's rounding: within 2%.
    assert kv_bytes_per_token(get_model("opt-66b"), "fp16") == 2_359_296
    slots = kv_slots("opt-66b", 21 * GiB, tp=4)
    assert slots == 9_557
    assert abs(slots / 9_700 - 1) < 0.02
    assert round(9_700 * 2_359_296 / GiB) == 21


# ------------------------------------------------------------ vLLM's formula, exactly

@given(total=st.integers(1 * GiB, 200 * GiB), util=st.floats(0.05, 1.0),
       peak=st.integers(0, 200 * GiB), block_size=st.sampled_from([1, 8, 16, 32, 128]),
       model_id=st.sampled_from(sorted(MODELS)), tp=st.sampled_from([1, 2, 8]))
def test_num_gpu_blocks_is_floor_of_free_over_block(total, util, peak, block_size, model_id, tp):
    model = get_model(model_id)
    try:
        block = cache_block_size(model, block_size, "fp16", tp)
    except ValueError:
        return                                                    # tp does not divide the heads
    got = num_gpu_blocks(model, gpu_with(total), block_size, "fp16", util, tp, peak)
    assert got == max(0, int((total * util - peak) // block))


def test_default_peak_is_weights_plus_the_activation_estimate():
    model, gpu = get_model("llama-2-7b"), get_gpu("a100-80gb")
    p = memory_profile(model, gpu, dtype="fp16")
    assert p.weight_bytes == model.weight_bytes("fp16") == 2 * 6_738_415_616
    assert p.activation_bytes == activation_bytes(model, "fp16")
    assert p.peak_memory == p.weight_bytes + p.activation_bytes
    assert p.num_gpu_blocks == int((gpu.memory_bytes * 0.9 - p.peak_memory) // p.cache_block_size)
    # the breakdown adds up
    assert p.peak_memory + p.kv_cache_bytes + p.unused_bytes == gpu.memory_bytes
    assert 0 <= p.usable_memory - p.peak_memory - p.kv_cache_bytes < p.cache_block_size
    assert p.num_token_slots == 16 * p.num_gpu_blocks


def test_activation_estimate_counted_by_hand():
    # Llama-3-8B, 8192 tokens (max(max_model_len, 2048)), bf16: residual + hidden (2 x 4096)
    # plus the widest layer output, the MLP's gate+up (2 x 14336) and its activated output
    # (14336), which beats QKV (32 + 2 x 8) x 128 = 6144.
    per_token = (2 * 4096 + 3 * 14336) * 2
    sampler = 3 * 256 * 128_256 * 4        # float32 logits, probs, logprobs for 256 seqs
    assert activation_bytes(get_model("llama-3-8b"), "bf16") == 8192 * per_token + sampler


def test_tensor_parallel_profiles_one_gpu_with_its_shard():
    model, gpu = get_model("llama-2-70b"), get_gpu("h100-80gb")
    p = memory_profile(model, gpu, dtype="bf16", tp_size=4)
    assert p.weight_bytes == model.weight_bytes("bf16", tp_size=4)
    assert p.cache_block_size == 16 * kv_bytes_per_token(model, "bf16", tp_size=4)
    # 70B in bf16 does not fit one H100 at all.
    assert memory_profile(model, gpu, dtype="bf16").num_gpu_blocks == 0


def test_fp8_kv_cache_doubles_the_blocks_it_can_hold():
    model, gpu = get_model("llama-3-8b"), get_gpu("h100-80gb")
    auto = memory_profile(model, gpu, dtype="bf16", peak_memory_bytes=20 * GiB)
    fp8 = memory_profile(model, gpu, dtype="bf16", kv_cache_dtype="fp8",
                         peak_memory_bytes=20 * GiB)
    assert fp8.cache_block_size * 2 == auto.cache_block_size
    assert fp8.num_gpu_blocks in (2 * auto.num_gpu_blocks, 2 * auto.num_gpu_blocks + 1)


def test_cpu_blocks_from_swap_space():
    # OPT-13B: 4 GiB / 12.5 MiB = 327.68 -> 327.
    assert num_cpu_blocks(get_model("opt-13b")) == 327
    # Llama-3-8B bf16: 4 GiB / 2 MiB = 2048, the "# CPU blocks: 2048" vLLM logs for it
    # (github.com/vllm-project/vllm/issues/6623).
    assert num_cpu_blocks(get_model("llama-3-8b"), dtype="bf16") == 2048
    # Per GPU with tensor parallelism: Llama-2-70B tp 4 keeps 2 KV heads, 1.25 MiB a block.
    assert num_cpu_blocks(get_model("llama-2-70b"), 4, 16, "fp16", tp_size=4) == 3276
    assert num_cpu_blocks(get_model("opt-13b"), swap_space_gib=0) == 0
    with pytest.raises(ValueError):
        num_cpu_blocks(get_model("opt-13b"), swap_space_gib=-1)


# ------------------------------------------------------------------- start-up failures

def test_no_blocks_fails_like_vllm():
    with pytest.raises(ValueError, match="No available memory for the cache blocks"):
        raise_if_cache_size_invalid(0, 16, 2048)
    # Llama-3-70B (141 GB of bf16 weights) on a 24 GB L4.
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        initialize_cache(get_model("llama-3-70b"), get_gpu("l4"), dtype="bf16")


def test_cache_smaller_than_one_max_length_request_fails_like_vllm():
    raise_if_cache_size_invalid(128, 16, 2048)                  # exactly enough: fine
    with pytest.raises(ValueError, match=r"max seq len \(2049\) is larger than .* \(2048\)"):
        raise_if_cache_size_invalid(128, 16, 2049)
    # Mistral-7B's 32768 positions on an L4 with a measured-style peak of 17 GiB: the
    # cache holds fewer tokens than one full-length request; a shorter max_model_len works.
    model, gpu = get_model("mistral-7b"), get_gpu("l4")
    with pytest.raises(ValueError, match=r"max seq len \(32768\)"):
        initialize_cache(model, gpu, dtype="bf16", peak_memory_bytes=17 * GiB)
    p = initialize_cache(model, gpu, dtype="bf16", peak_memory_bytes=17 * GiB, max_model_len=8192)
    assert 8192 <= p.num_token_slots < 32768


# ----------------------------------------------------------------------------- presets

def test_gpu_memory_is_what_cuda_reports_not_the_label():
    # CUDA's total sits a little under the binary size on the label.
    for gpu_id, label_gib in [("a100-40gb", 40), ("a100-80gb", 80), ("h100-80gb", 80)]:
        gpu = get_gpu(gpu_id)
        assert 0.97 * label_gib * GiB < gpu.memory_bytes < label_gib * GiB, gpu_id
    # Readings taken for this project (torch.cuda.mem_get_info):
    assert get_gpu("h100-80gb").memory_bytes == 81_079 * MiB
    assert get_gpu("h200").memory_bytes == 150_109_880_320
    assert get_gpu("a100-40gb").memory_bytes == 40_536 * MiB


def test_datasheet_ceilings():
    assert get_gpu("a100-40gb").peak_flops == 312e12
    assert get_gpu("h100-80gb").peak_flops == 1979e12 / 2         # dense = sparse / 2
    assert get_gpu("h200").memory_bandwidth == 4.8e12
    # Ridge points in FLOP per byte: decode at small batch sits far below all of them.
    ridges = {g: round(gpu.ridge_point) for g, gpu in GPUS.items()}
    assert ridges == {"a100-40gb": 201, "a100-80gb": 153, "h100-80gb": 295, "h200": 206,
                      "b200": 281, "l4": 403}
    # B200: 2.25 PFLOPS dense BF16 (4.5 with sparsity), 8 TB/s; 183,359 MiB as nvidia-smi
    # prints it.
    assert get_gpu("b200").peak_flops == 4.5e15 / 2
    assert get_gpu("b200").memory_bytes == 183359 * 2**20
    for gpu in GPUS.values():
        assert gpu.source and gpu.memory_source


def test_get_gpu_lists_valid_ids():
    with pytest.raises(ValueError) as err:
        get_gpu("tpu-v5")
    for gpu_id in GPUS:
        assert gpu_id in str(err.value)


def test_bad_utilization_is_rejected():
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        memory_profile(get_model("opt-13b"), get_gpu("a100-40gb"), gpu_memory_utilization=1.5)


def test_opt_13b_on_a100_40gb_with_vllm_defaults():
    # Not a paper number: the paper's 12 GB comes from its own measurement, vLLM's default
    # 0.90 utilization and our activation estimate leave about 11.3 GiB, 14.9K slots.
    p = memory_profile(get_model("opt-13b"), get_gpu("a100-40gb"))
    assert round(p.weight_bytes / 1e9) == 26                     # Table 1: 26 GB
    assert 10.5 * GiB < p.kv_cache_bytes < 12 * GiB
    assert p.num_cpu_blocks == 327
