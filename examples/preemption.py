"""Preemption under memory pressure, from Python: the page's default scenario, swap mode in
vLLM v0.5.5, then the same workload in vLLM V1 (v0.25.1), which only recomputes."""
from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.core.invariants import check_engine
from sim.core.sequence import SamplingParams
from sim.core.snapshot import read_back
from sim.events import Preempted, PrefixCacheHit, SwappedIn, SwappedOut
from sim.trace import record
from sim.v1 import config as v1_config
from sim.v1 import invariants as v1_invariants
from sim.v1.engine import LLMEngine as V1Engine

WORKLOAD = [("A", 6, 12, 0), ("B", 5, 12, 0), ("C", 4, 12, 0), ("D", 3, 3, 8)]

engine = LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=10, num_cpu_blocks=8,
                               watermark=0.1),
                   SchedulerConfig(preemption_mode="swap"))   # or "recompute", or None
for name, prompt, output, arrival in WORKLOAD:
    engine.add_request(name, prompt, SamplingParams(max_tokens=output, ignore_eos=True),
                       arrival_step=arrival)

trace = record(engine, check=check_engine)       # every invariant, after every step
assert not any(step.problems for step in trace)


def cached(snap, request_id):
    """What the request's sequence reads back through its block table: (token id, position)."""
    request = next(r for r in snap["requests"] if r["request_id"] == request_id)
    return read_back(snap, request["seqs"][0])


before = None
for prev, step in zip(trace, trace.steps[1:]):
    for e in step.events:
        if isinstance(e, Preempted):
            print(f"step {step.step}: {e.request_id} preempted by {e.mode} "
                  f"(room for {e.needed_by})")
            before = cached(prev.snapshot, e.request_id)
        elif isinstance(e, (SwappedOut, SwappedIn)):
            print(f"step {step.step}: {type(e).__name__} {e.request_id} {list(e.mapping)}")
            if isinstance(e, SwappedIn):
                after = cached(step.snapshot, e.request_id)[:len(before)]
                print(f"  {e.request_id} reads back {len(before)} tokens exactly as before: "
                      f"{after == before}")
# step 7: C preempted by swap (room for B)
# step 7: SwappedOut C [(5, 7), (4, 6), (1, 5)]
# step 12: SwappedIn C [(7, 1), (6, 2), (5, 6)]
#   C reads back 10 tokens exactly as before: True

# V1: the same 10 usable blocks (plus block 0, its null block) and watermark; no swap space.
v1 = V1Engine(v1_config.CacheConfig(block_size=4, num_gpu_blocks=11),
              v1_config.SchedulerConfig(watermark=0.1))
for name, prompt, output, arrival in WORKLOAD:
    v1.add_request(name, prompt, SamplingParams(max_tokens=output, ignore_eos=True),
                   arrival_step=arrival)
trace = record(v1, check=v1_invariants.check_engine)
assert not any(step.problems for step in trace)
for step in trace.steps[1:]:
    for e in step.events:
        if isinstance(e, Preempted):
            print(f"V1 step {step.step}: {e.request_id} preempted by {e.mode} "
                  f"(room for {e.needed_by})")
        elif isinstance(e, PrefixCacheHit):
            print(f"V1 step {step.step}: {e.request_id} comes back; its first {e.num_tokens} "
                  f"tokens are still cached in blocks {list(e.blocks)}")
# V1 step 8: C preempted by recompute (room for B)
# V1 step 13: C comes back; its first 4 tokens are still cached in blocks [5]
# (V1's default loop, async scheduling, processes A's and B's last outputs in step 12,
# after that step's batch was chosen: C comes back one step after them.)
