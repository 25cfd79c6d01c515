"""The KV cache page from Python: one sequence's cache growing, and what a token costs."""
from sim.perf.hardware import get_gpu, memory_profile
from sim.perf.models import get_model, kv_bytes_per_token
from sim.studies.kv_growth import generate, tiny_model, totals

# One sequence: a 4-token prompt, 12 new tokens, on a 2-layer model with 2 KV heads.
model = tiny_model(num_layers=2, num_kv_heads=2, queries_per_kv_head=2, head_size=16)
steps = generate(model, prompt_len=4, new_tokens=12, dtype="fp16")
for s in steps:
    print(f"step {s.step:2} {s.phase:7} +{s.num_new} token(s) -> {s.cached_after:2} cached, "
          f"{s.cache_bytes:5} B; attention FLOPs {s.with_cache.flops_attention:6} "
          f"(recompute: {s.recompute.flops_attention})")
t = totals(steps)
print(f"whole generation: {t['flops_with_cache']:,} FLOPs with the cache, "
      f"{t['flops_recompute']:,} without")

# What a token costs, and how many fit on a GPU by vLLM's start-up formula.
opt = get_model("opt-13b")
print(kv_bytes_per_token(opt, "fp16") // 1024, "KiB per token")            # 800
print(12 * 2**30 // kv_bytes_per_token(opt, "fp16"), "slots in 12 GiB")    # 15728
p = memory_profile(opt, get_gpu("a100-40gb"), block_size=16, dtype="fp16")
print(p.num_gpu_blocks, "blocks,", p.num_token_slots, "token slots on an A100-40GB")
