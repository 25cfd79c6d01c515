"""Preemption under memory pressure, from Python: the page's default scenario, swap mode."""
from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.events import Preempted, SwappedIn, SwappedOut
from sim.core.invariants import check_engine, read_back
from sim.core.sequence import SamplingParams

engine = LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=10, num_cpu_blocks=8,
                               watermark=0.1),
                   SchedulerConfig(preemption_mode="swap"))   # or "recompute", or None
for name, prompt, output, arrival in [("A", 6, 12, 0), ("B", 5, 12, 0), ("C", 4, 12, 0),
                                      ("D", 3, 3, 8)]:
    engine.add_request(name, prompt, SamplingParams(max_tokens=output, ignore_eos=True),
                       arrival_step=arrival)

c = engine.requests["C"].get_seqs()[0]
before = None
while engine.has_unfinished_requests():
    cached = read_back(engine, c) if c.seq_id in engine.block_manager.block_tables else None
    out = engine.step()
    assert check_engine(engine) == []            # every invariant, after every step
    for e in out.events:
        if isinstance(e, Preempted):
            print(f"step {out.step}: {e.request_id} preempted by {e.mode} "
                  f"(room for {e.needed_by})")
            before = cached
        elif isinstance(e, (SwappedOut, SwappedIn)):
            print(f"step {out.step}: {type(e).__name__} {e.request_id} {list(e.mapping)}")
            if isinstance(e, SwappedIn):
                after = read_back(engine, c)[:len(before)]
                print(f"  C reads back {len(before)} tokens exactly as before: "
                      f"{after == before}")
# step 7: C preempted by swap (room for B)
# step 7: SwappedOut C [(5, 7), (4, 6), (1, 5)]
# step 12: SwappedIn C [(7, 1), (6, 2), (5, 6)]
#   C reads back 10 tokens exactly as before: True
