"""Preemption under memory pressure, from Python: the page's default scenario, swap mode."""
from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.core.invariants import check_engine
from sim.core.sequence import SamplingParams
from sim.core.snapshot import read_back
from sim.events import Preempted, SwappedIn, SwappedOut
from sim.trace import record

engine = LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=10, num_cpu_blocks=8,
                               watermark=0.1),
                   SchedulerConfig(preemption_mode="swap"))   # or "recompute", or None
for name, prompt, output, arrival in [("A", 6, 12, 0), ("B", 5, 12, 0), ("C", 4, 12, 0),
                                      ("D", 3, 3, 8)]:
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
