"""Hybrid models in vLLM V1 (v0.25.1), from Python: the hybrid KV cache manager design doc's
example (10 full-attention and 20 sliding-window layers, window 32, block size 16, a
112-token request), then a second request with the same prefix, then what fits on one H200
for today's models."""
from sim.core.sequence import SamplingParams
from sim.events import BlockSkipped, PrefixCacheHit
from sim.perf.hardware import get_gpu
from sim.perf.kv_capacity import v1_kv_capacity
from sim.perf.models import get_model
from sim.v1.config import CacheConfig, SchedulerConfig
from sim.v1.engine import LLMEngine
from sim.v1.invariants import check_engine
from sim.v1.kv_cache_utils import attention_layer_specs, make_kv_cache_config

# 1 full : 2 sliding, ten times: three KV cache groups of 10 layers, one pool of 18 blocks.
layers = ["full_attention", "sliding_attention", "sliding_attention"] * 10
config = make_kv_cache_config(18, attention_layer_specs(layers, 16, sliding_window=32))
print([(type(g.kv_cache_spec).__name__, len(g.layer_names)) for g in config.kv_cache_groups])
# [('FullAttentionSpec', 10), ('SlidingWindowSpec', 10), ('SlidingWindowSpec', 10)]

engine = LLMEngine(CacheConfig(block_size=16, num_gpu_blocks=18),
                   SchedulerConfig(max_num_batched_tokens=16, max_num_seqs=4,
                                   async_scheduling=False),      # the doc's steps
                   kv_cache_config=config)
a = engine.add_request("A", 112, SamplingParams(max_tokens=4, ignore_eos=True))
engine.add_request("B", a.prompt_token_ids[:96] + list(range(900, 916)),
                   SamplingParams(max_tokens=2, ignore_eos=True), arrival_step=10)


def block_ids(rid):
    return [[b.block_id for b in t]
            for t in engine.kv_cache_manager.coordinator.get_blocks(rid)]


while engine.has_unfinished_requests():
    out = engine.step()
    assert not check_engine(engine)           # every group: ref counts, windows, payloads
    left = [(e.kv_cache_group_id, e.physical) for e in out.events
            if isinstance(e, BlockSkipped)]
    hits = [(e.request_id, e.num_tokens) for e in out.events if isinstance(e, PrefixCacheHit)]
    print(f"step {out.step + 1}: A {block_ids('A')} B {block_ids('B')} "
          f"left the window {left} hits {hits}")
# step 8: A [[1, 4, 7, 10, 13, 16, 3, 8], [0, 0, 0, 0, 0, 17, 5, 9], [0, 0, 0, 0, 0, 2, 6, 11]]
#   left the window [(1, 14), (2, 15)]
# step 11: B [[1, 4, 7, 10, 13, 16, 11], [0, 0, 0, 0, 14, 17, 9], [0, 0, 0, 0, 15, 2, 8]]
#   hits [('B', 96)]: all 6 full-attention blocks, the last 2 of each sliding group

# What fits on one H200 (bf16 KV, after the weights, requests of 131,072 tokens).
h200 = get_gpu("h200")
for model_id in ("gpt-oss-120b", "gemma-3-27b", "llama-3.1-8b"):
    model = get_model(model_id)
    hybrid = v1_kv_capacity(model, h200, max_model_len=131072)
    full = v1_kv_capacity(model, h200, max_model_len=131072,
                          disable_hybrid_kv_cache_manager=True)
    print(f"{model.name}: {hybrid.num_tokens:,} tokens with the hybrid manager, "
          f"{full.num_tokens:,} with every layer as full attention")
# gpt-oss-120b: 1,857,181 tokens with the hybrid manager, 987,648 with every layer as full ...
# Gemma-3-27B: 714,777 tokens with the hybrid manager, 164,000 with every layer as full ...
