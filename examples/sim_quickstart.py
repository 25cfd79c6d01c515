"""Using sim from Python: a scenario, the engine loop, the events and a snapshot."""
from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.core.invariants import check_engine
from sim.core.sequence import SamplingParams
from sim.events import CopyOnWrite, Preempted

engine = LLMEngine(
    CacheConfig(block_size=4, num_gpu_blocks=10, num_cpu_blocks=10),  # vLLM's CacheConfig
    SchedulerConfig(max_num_seqs=8),                                  # and SchedulerConfig
    seed=0)
engine.add_request("A", prompt=6, sampling_params=SamplingParams(max_tokens=16))
engine.add_request("B", prompt=3, sampling_params=SamplingParams(max_tokens=6))
engine.add_request("C", prompt=5, sampling_params=SamplingParams(n=2, max_tokens=10))

while engine.has_unfinished_requests():
    out = engine.step()                      # one iteration of vLLM's engine loop
    so = out.scheduler_outputs               # vLLM's SchedulerOutputs
    for event in out.events:                 # what changed, as records
        if isinstance(event, (Preempted, CopyOnWrite)):
            print(f"iteration {out.step}: {event}")
    if so.blocks_to_swap_out or so.blocks_to_swap_in:
        print(f"iteration {out.step}: swap out {so.blocks_to_swap_out}, "
              f"swap in {so.blocks_to_swap_in}")
    assert not check_engine(engine)          # ref counts, free lists, cached tokens intact

snap = engine.snapshot()                     # JSON-ready state, as the pictures use it
print(snap["gpu"]["num_free"], "of", snap["gpu"]["num_blocks"], "GPU blocks free at the end")
