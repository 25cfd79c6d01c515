"""Prefix caching in vLLM V1 (v0.25.1), from Python: the design docs' example, step by step,
and what a cache salt changes."""
from sim.core.sequence import SamplingParams
from sim.events import BlockEvicted, PrefixCacheHit
from sim.v1.config import CacheConfig, SchedulerConfig
from sim.v1.engine import LLMEngine
from sim.v1.invariants import check_engine

A_TO_O = list(range(100, 115))                      # the docs' tokens A..O as ids
R0 = A_TO_O                                         # A..O, 15 tokens
R1 = A_TO_O[:10] + [115, 116, 117, 118]             # A..J and 4 of its own
R2 = A_TO_O[:12] + list(range(119, 136))            # A..L and 17 of its own


def docs_example(num_gpu_blocks):
    # The synchronous loop, the loop of the docs' example (vLLM's default, async
    # scheduling, caches a decoded block and frees a finished request one call later).
    engine = LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=num_gpu_blocks),
                       SchedulerConfig(max_num_batched_tokens=64, max_num_seqs=16,
                                       async_scheduling=False))
    engine.add_request("R0", R0, SamplingParams(max_tokens=3, ignore_eos=True))
    engine.add_request("R1", R1, SamplingParams(max_tokens=1, ignore_eos=True),
                       arrival_step=2)              # arrives in the 3rd step
    engine.add_request("R2", R2, SamplingParams(max_tokens=2, ignore_eos=True),
                       arrival_step=3)
    return engine


# 11 blocks: block 0 is the null block, 1..10 are the docs' 10 (doc id + 1).
engine = docs_example(11)
while engine.has_unfinished_requests():
    out = engine.step()
    assert not check_engine(engine)                 # ref counts, free queue, hash map
    snap = engine.snapshot(with_slots=False)
    blocks = snap["gpu"]["blocks"]
    tables = {r["request_id"]: [(b, blocks[b]["ref_count"]) for _, b, _ in
                                r["seqs"][0]["block_table"]] for r in snap["requests"]}
    hits = [(e.request_id, e.blocks) for e in out.events if isinstance(e, PrefixCacheHit)]
    evicted = [e.physical for e in out.events if isinstance(e, BlockEvicted)]
    print(f"step {out.step + 1}: hits {hits}, evicted {evicted}, "
          f"free queue {snap['gpu']['free_order']}")
    print(f"  tables (block, ref_cnt): { {k: v for k, v in tables.items() if v} }")
# step 1: hits [], evicted [], free queue [5, 6, 7, 8, 9, 10]
# step 3: hits [('R1', (1, 2))], evicted [], free queue [7, 5, 8, 9, 10, 4, 3, 6, 2, 1]
# step 4: hits [('R2', (1, 2, 3))], evicted [], free queue [4, 6]

# With the docs' 10 blocks and no room for the null block, R2 evicts R0's A-P (block 4).
engine = docs_example(10)
steps = engine.run()
assert [e.physical for e in steps[3].events if isinstance(e, BlockEvicted)] == [4]

# A cache salt goes into the first block's hash, so the whole chain differs: two prompts
# with the same tokens and different salts share nothing.
engine = LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=11), SchedulerConfig())
engine.add_request("alice", R0, SamplingParams(max_tokens=1), cache_salt="alice")
engine.add_request("bob", R0, SamplingParams(max_tokens=1), cache_salt="bob",
                   arrival_step=2)
engine.add_request("alice-again", R0, SamplingParams(max_tokens=1), cache_salt="alice",
                   arrival_step=4)
hits = [e for out in engine.run() for e in out.events if isinstance(e, PrefixCacheHit)]
print([(e.request_id, e.num_tokens) for e in hits])   # [('alice-again', 12)]
assert [e.request_id for e in hits] == ["alice-again"]
