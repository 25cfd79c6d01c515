"""KV cache specs (sim/v1/kv_cache_interface.py): page sizes by vLLM v0.25.1's formulas,
merging a group's specs, and the admission caps; vLLM's `test_merge_kv_cache_spec` and
`test_get_kv_cache_spec_sliding_window_reads_windowed_specs`
(tests/v1/core/test_kv_cache_utils.py) re-expressed."""
import pytest

from sim.v1.kv_cache_interface import (
    ChunkedLocalAttentionSpec,
    FullAttentionSpec,
    MLAAttentionSpec,
    SlidingWindowSpec,
    get_kv_cache_spec_sliding_window,
)


def new_kv_cache_spec(block_size=16, num_kv_heads=2, head_size=64, dtype="float32",
                      page_size_padded=None, sliding_window=None, attention_chunk_size=None,
                      indexes_kv_by_block_stride=False):
    return FullAttentionSpec(block_size=block_size, num_kv_heads=num_kv_heads,
                             head_size=head_size, dtype=dtype,
                             page_size_padded=page_size_padded, sliding_window=sliding_window,
                             attention_chunk_size=attention_chunk_size,
                             indexes_kv_by_block_stride=indexes_kv_by_block_stride)


def test_merge_kv_cache_spec():
    same_layer_specs = [new_kv_cache_spec(num_kv_heads=32), new_kv_cache_spec(num_kv_heads=32)]
    merged = same_layer_specs[0].merge(same_layer_specs)
    assert merged.block_size == 16
    assert merged.num_kv_heads == 32
    assert merged.head_size == 64
    assert merged.dtype == "float32"
    assert merged.sliding_window is None

    different = [new_kv_cache_spec(num_kv_heads=32), new_kv_cache_spec(num_kv_heads=16)]
    with pytest.raises(AssertionError):
        different[0].merge(different)

    full = new_kv_cache_spec(num_kv_heads=32)
    different_type = [full, SlidingWindowSpec(block_size=full.block_size,
                                              num_kv_heads=full.num_kv_heads,
                                              head_size=full.head_size, dtype=full.dtype,
                                              sliding_window=1)]
    with pytest.raises(AssertionError):
        different_type[0].merge(different_type)
    with pytest.raises(AssertionError):
        different_type[1].merge(different_type)

    different_windows = [new_kv_cache_spec(num_kv_heads=32),
                         new_kv_cache_spec(num_kv_heads=32, sliding_window=1),
                         new_kv_cache_spec(num_kv_heads=32, sliding_window=2)]
    with pytest.raises(ValueError):
        different_windows[0].merge(different_windows)

    same_windows = [new_kv_cache_spec(num_kv_heads=32, sliding_window=1),
                    new_kv_cache_spec(num_kv_heads=32, sliding_window=1)]
    assert same_windows[0].merge(same_windows).sliding_window == 1

    with_none = [new_kv_cache_spec(num_kv_heads=32, sliding_window=1),
                 new_kv_cache_spec(num_kv_heads=32, sliding_window=None)]
    assert with_none[0].merge(with_none).sliding_window == 1


def test_get_kv_cache_spec_sliding_window_reads_windowed_specs():
    full = FullAttentionSpec(block_size=16, num_kv_heads=1, head_size=64, dtype="float32")
    sliding = SlidingWindowSpec(block_size=16, num_kv_heads=1, head_size=64, dtype="float32",
                                sliding_window=128)
    assert get_kv_cache_spec_sliding_window(full) is None
    assert get_kv_cache_spec_sliding_window(sliding) == 128


def test_page_size_bytes_formulas():
    """block_size x heads x (K + V numbers) x dtype bytes; MLA caches one latent."""
    # 16 x 8 KV heads x (64 + 64) x 2 bytes (bf16): gpt-oss's page per layer.
    assert FullAttentionSpec(block_size=16, num_kv_heads=8, head_size=64,
                             dtype="bfloat16").page_size_bytes == 32768
    assert SlidingWindowSpec(block_size=16, num_kv_heads=8, head_size=64, dtype="bfloat16",
                             sliding_window=128).page_size_bytes == 32768
    # head_size_v may differ from head_size.
    assert FullAttentionSpec(block_size=16, num_kv_heads=1, head_size=192, head_size_v=128,
                             dtype="bfloat16").page_size_bytes == 16 * (192 + 128) * 2
    # Chunked local attention: 2 x 16 x 8 x 128 x 2.
    assert ChunkedLocalAttentionSpec(block_size=16, num_kv_heads=8, head_size=128,
                                     dtype="bfloat16",
                                     attention_chunk_size=8192).page_size_bytes == 65536
    # DeepSeek-V3: 16 x 1 x (512 + 64) x 2 = 18,432 bytes; fp8: 9,216.
    assert MLAAttentionSpec(block_size=16, num_kv_heads=1, head_size=576,
                            dtype="bfloat16").page_size_bytes == 18432
    assert MLAAttentionSpec(block_size=16, num_kv_heads=1, head_size=576,
                            dtype="fp8").page_size_bytes == 9216
    # Padding replaces the page size, never shrinks it.
    assert new_kv_cache_spec(page_size_padded=20000).page_size_bytes == 20000


def test_max_memory_usage_bytes():
    full = new_kv_cache_spec(block_size=16, num_kv_heads=32, head_size=128, dtype="float16")
    page = full.page_size_bytes
    assert full.max_memory_usage_bytes(16384) == 1024 * page
    sw = SlidingWindowSpec(block_size=16, num_kv_heads=32, head_size=128, dtype="float16",
                           sliding_window=1024)
    # cdiv(min(1023 + 1024, 16384), 16) + 1 = 128 + 1 blocks.
    assert sw.max_memory_usage_bytes(16384, 1024) == 129 * page
    assert sw.max_admission_blocks_per_request(1024, 16384) == 129
    # The window never needs more than max_model_len (+ one block).
    assert sw.max_admission_blocks_per_request(8192, 100) == 7 + 1
