"""The PagedAttention paper's Fig. 6, from Python: one request's block table, step by step,
in vLLM v0.5.5 and then in vLLM V1 (v0.25.1)."""
from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.core.sequence import SamplingParams
from sim.v1 import config as v1_config
from sim.v1.engine import LLMEngine as V1Engine

# 8 GPU blocks of 4 slots; hand out blocks 7, 1, 3 first, as in the paper's figure.
engine = LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=8, num_cpu_blocks=0,
                               free_order=[7, 1, 3]), SchedulerConfig())
engine.add_request("A", prompt=7, sampling_params=SamplingParams(max_tokens=4))

while engine.has_unfinished_requests():
    out = engine.step()
    seq = engine.requests["A"].get_seqs()[0]
    table = engine.block_manager.block_tables.get(seq.seq_id, [])
    print(f"step {out.step}: {seq.get_len()} tokens, block table "
          f"{[b.block_number for b in table]}, "
          f"{engine.block_manager.get_num_free_gpu_blocks()} free blocks")
# step 0: 8 tokens, block table [7, 1], 6 free blocks
# step 1: 9 tokens, block table [7, 1], 6 free blocks
# step 2: 10 tokens, block table [7, 1, 3], 5 free blocks
# step 3: 11 tokens, block table [], 8 free blocks

# The same request in V1: its pool has one more block, block 0, the null block, which is
# never handed out; the free queue hands out block 1 first, and a freed full block stays in
# the prefix cache (read from the engine's snapshot, as the page's widget does).
v1 = V1Engine(v1_config.CacheConfig(block_size=4, num_gpu_blocks=9), v1_config.SchedulerConfig())
v1.add_request("A", prompt=7, sampling_params=SamplingParams(max_tokens=4))
while v1.has_unfinished_requests():
    out = v1.step()
    snap = v1.snapshot()
    seq = snap["requests"][0]["seqs"][0]
    cached = [n for n, b in enumerate(snap["gpu"]["blocks"]) if b["cached"]]
    print(f"V1 step {out.step}: {seq['len']} tokens, block table "
          f"{[number for _, number, _ in seq['block_table']]}, "
          f"{snap['gpu']['num_free']} free blocks, cached {cached}")
# V1 runs its default loop, async scheduling: each step's output is processed in the next
# call, so the tokens (and the finish) arrive one call later than in the loop above.
# V1 step 0: 7 tokens, block table [1, 2], 6 free blocks, cached [1]
# V1 step 1: 8 tokens, block table [1, 2], 6 free blocks, cached [1]
# V1 step 2: 9 tokens, block table [1, 2, 3], 5 free blocks, cached [1, 2]
# V1 step 3: 10 tokens, block table [1, 2, 3], 5 free blocks, cached [1, 2]
# V1 step 4: 11 tokens, block table [], 8 free blocks, cached [1, 2]
