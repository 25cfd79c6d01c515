"""V1's configuration (sim/v1/config.py): vLLM v0.25.1's defaults and checks."""
import pytest

from sim.v1.config import CacheConfig, SchedulerConfig


def test_defaults_are_v0_25_1s():
    c = CacheConfig()
    assert (c.block_size, c.enable_prefix_caching, c.prefix_caching_hash_algo) == (16, True,
                                                                                  "sha256")
    s = SchedulerConfig()
    assert (s.max_num_batched_tokens, s.max_num_seqs, s.enable_chunked_prefill) == (2048, 128,
                                                                                   True)
    assert s.max_num_scheduled_tokens == 2048
    assert (s.long_prefill_token_threshold, s.watermark, s.scheduler_reserve_full_isl) == (
        0, 0.0, True)
    assert (s.policy, s.num_speculative_tokens, s.num_lookahead_tokens) == ("fcfs", 0, 0)


def test_checks():
    with pytest.raises(ValueError):
        CacheConfig(block_size=0)
    with pytest.raises(ValueError, match="No available memory"):
        CacheConfig(num_gpu_blocks=0)
    with pytest.raises(ValueError):
        CacheConfig(prefix_caching_hash_algo="xxhash")
    with pytest.raises(ValueError, match="greater than or equal to max_num_seqs"):
        SchedulerConfig(max_num_batched_tokens=64)          # < 128 seqs
    with pytest.raises(ValueError, match="smaller than max_model_len"):
        SchedulerConfig(enable_chunked_prefill=False, max_num_batched_tokens=512,
                        max_num_seqs=8)
    with pytest.raises(ValueError):
        SchedulerConfig(policy="lifo")
    with pytest.raises(ValueError):
        SchedulerConfig(watermark=1.0)
    with pytest.raises(ValueError):
        SchedulerConfig(num_speculative_tokens=-1)
    with pytest.raises(ValueError):
        SchedulerConfig(max_num_seqs=0)
    assert SchedulerConfig(max_num_scheduled_tokens=100).max_num_scheduled_tokens == 100
