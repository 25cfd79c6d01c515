"""Tensor parallelism from Python: one BlockSpaceManager on the driver, block tables
broadcast to tp workers, each with its own KV heads in the same block numbers; the sharded
layer (two all-reduces) equals the unsharded one; KV bytes per GPU for a real model; and
the widget's run, an engine's block tables driving the sharded layer step by step."""
import random

from sim.core.block_manager import BlockSpaceManager
from sim.core.sequence import SamplingParams, Sequence, SequenceGroup
from sim.perf.models import get_model
from sim.perf.tensor_parallel import (
    TensorParallelGroup,
    partition_heads,
    per_rank_cache,
    random_layer_weights,
)
from sim.studies.sharded_layer import run_sharded_layer

# Which heads each of 4 GPUs holds: 8 query heads, 2 KV heads -> each KV head on 2 GPUs.
for part in partition_heads(num_heads=8, num_kv_heads=2, tp_size=4):
    print(f"GPU {part.rank}: query heads {part.heads}, KV heads {part.kv_heads}")

# One block manager (rank 0) allocates a 6-token prompt; its table drives every GPU.
bm = BlockSpaceManager(block_size=4, num_gpu_blocks=8, num_cpu_blocks=0, watermark=0.0)
seq = Sequence(0, list(range(100, 106)), block_size=4, eos_token_id=2)
bm.allocate(SequenceGroup("A", [seq], SamplingParams()))
table = bm.get_block_table(seq)
print("block table from rank 0:", table)                        # [7, 6]

rng = random.Random(0)
weights = random_layer_weights(rng, hidden_size=4, num_heads=8, num_kv_heads=2,
                               head_size=2, intermediate_size=8)
hidden = [[rng.uniform(-1, 1) for _ in range(4)] for _ in range(6)]
sharded = TensorParallelGroup(weights, tp_size=4, num_gpu_blocks=8, block_size=4)
single = TensorParallelGroup(weights, tp_size=1, num_gpu_blocks=8, block_size=4)
# The prompt, token by token (one broadcast: six rows of the same sequence).
step = sharded.execute_model([0] * 6, list(range(6)), hidden, [table] * 6)
ref = single.execute_model([0] * 6, list(range(6)), hidden, [table] * 6)
last = step.seqs[-1]
print("token 5 wrote block/slot", [a.kv_slot for a in last.attention])  # same on every GPU
print("o_proj partials:", [[round(x, 3) for x in a.partial] for a in last.attention])
print("all-reduce:     ", [round(x, 3) for x in last.attn_all_reduce])
print("sharded == unsharded:",
      max(abs(a - b) for a, b in zip(last.output, ref.seqs[-1].output)) < 1e-12)

# KV bytes per token on each GPU for Llama-2-70B (64 query heads, 8 KV heads), fp16.
for tp in (1, 2, 4, 8):
    r0 = per_rank_cache(get_model("llama-2-70b"), block_size=16, dtype="fp16", tp_size=tp)[0]
    print(f"tp={tp}: {len(r0.kv_heads)} KV heads per GPU, "
          f"{r0.bytes_per_token // 1024} KiB per token, {r0.bytes_per_block / 2**20} MiB per block")

# The widget's run: a real engine's block tables drive the sharded layer, step by step.
run = run_sharded_layer(tp_size=2, num_kv_heads=2, max_tokens=4, seed=0,
                        requests=(("A", 6), ("B", 3)), num_heads=8, head_size=2,
                        hidden_size=4, intermediate_size=8, block_size=4, num_gpu_blocks=8)
for st in run.steps:
    same = all(max(abs(a - b) for a, b in zip(r.sharded.output, r.unsharded.output)) < 1e-12
               for r in st.results)
    print(f"step {st.step}: tables {st.broadcast}, {len(st.written)} tokens written, "
          f"sharded == unsharded: {same}")
# GPU 0: query heads (0, 1), KV heads (0,)     ... GPU 3: query heads (6, 7), KV heads (1,)
# block table from rank 0: [7, 6]
# token 5 wrote block/slot [(6, 1), (6, 1), (6, 1), (6, 1)]
# sharded == unsharded: True
# tp=1: 8 KV heads per GPU, 320 KiB per token, 5.0 MiB per block
# ...
# tp=8: 1 KV heads per GPU, 40 KiB per token, 0.625 MiB per block
# step 0: tables {'A': (7, 6), 'B': (5,)}, 9 tokens written, sharded == unsharded: True
# ...
# step 3: tables {'A': (7, 6, 3), 'B': (5, 4)}, 2 tokens written, sharded == unsharded: True
