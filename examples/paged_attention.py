"""The PagedAttention paper's Fig. 6, from Python: one request's block table, step by step."""
from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.core.sequence import SamplingParams

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
