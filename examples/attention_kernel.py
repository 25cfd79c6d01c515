"""Paged attention v1 and v2 over a scattered block table, from Python, next to plain
(contiguous) softmax attention: the widget's default scenario."""
import random

from sim.perf.attention import (
    contiguous_attention,
    gather_kv,
    paged_attention_v1,
    paged_attention_v1_trace,
    paged_attention_v2,
    random_paged_attention_inputs,
    use_v1,
)
from sim.perf.kernel_walk import walk_kernel

# 13 tokens in blocks of 4, two query heads sharing one KV head, head size 4.
inp = random_paged_attention_inputs(random.Random(0), num_heads=2, num_kv_heads=1,
                                    head_size=4, block_size=4, seq_len=13, decimals=1)
print("block table:", inp.block_table)                 # physical blocks, out of order

v1 = paged_attention_v1(**inp.args())
v2 = paged_attention_v2(**inp.args(), partition_size=8)  # vLLM's partitions are 512 tokens
keys, values = gather_kv(inp.key_cache, inp.value_cache, inp.block_table, inp.seq_len,
                         inp.block_size)
reference = contiguous_attention(inp.query, keys, values, inp.scale)
for head, (a, b, r) in enumerate(zip(v1, v2, reference)):
    print(f"head {head}: v1 {[round(x, 4) for x in a]}  v2 {[round(x, 4) for x in b]}  "
          f"contiguous {[round(x, 4) for x in r]}")
    assert max(abs(x - y) for x, y in zip(a, r)) < 1e-12
    assert max(abs(x - y) for x, y in zip(b, r)) < 1e-12

# The same computation, step by step (the widget's frames are drawn from these records).
for record in paged_attention_v1_trace(**inp.args())[:5]:
    print(record.kind, getattr(record, "physical_block", ""),
          [None if s is None else round(s, 2) for s in getattr(record, "scores", ())])

# The widget's steps: each record with what head 0 has computed so far.
walk = walk_kernel(inp, partition_size=8, head=0)
merge = next(step for step in walk if step.kind == "partitions_merged")
print("v2 partitions of head 0:", {p: round(r.max_logit, 2)
                                   for p, r in merge.head.partitions.items()})

print("vLLM would launch v1 here:", use_v1(max_seq_len=13, num_seqs=1, num_heads=2))
# block table: [5, 4, 3, 0]
# head 0: v1 [-0.1203, 0.0679, -0.2764, -0.1538]  v2 (the same)  contiguous (the same)
# head 1: v1 [-0.0536, 0.053, -0.2977, -0.169]  v2 (the same)  contiguous (the same)
# block_scores 5 [0.08, 0.14, 0.62, 0.27]
# ...
# block_scores 0 [0.61, None, None, None]     <- positions 13-15 are masked
# softmax  []
# v2 partitions of head 0: {0: 0.87, 1: 0.61}
# vLLM would launch v1 here: True
