"""KV offloading to CPU, from Python: V1 (vLLM v0.25.1) with the offloading connector's CPU
tier. C is preempted; without the tier it recomputes its prompt, with it the prompt's blocks
come back from CPU memory (a load) and only its generated token is recomputed."""
from sim.core.sequence import SamplingParams
from sim.events import Admitted, OffloadJobDone, OffloadLoadJob, OffloadStoreJob, Preempted
from sim.trace import record
from sim.v1.config import CacheConfig, KVTransferConfig, SchedulerConfig
from sim.v1.engine import LLMEngine
from sim.v1.invariants import check_engine


def engine(cpu_blocks: int) -> LLMEngine:
    """8 usable GPU blocks of 4 tokens; a CPU tier of `cpu_blocks` blocks (0: none)."""
    offload = None
    if cpu_blocks:
        # What vLLM's --kv-offloading-size sets up (cpu_bytes_to_use becomes num_cpu_blocks).
        offload = KVTransferConfig(kv_connector="OffloadingConnector", kv_role="kv_both",
                                   kv_connector_extra_config={"num_cpu_blocks": cpu_blocks})
    e = LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=9),
                  SchedulerConfig(max_num_batched_tokens=64, max_num_seqs=8),
                  kv_transfer_config=offload)
    for name in "ABC":
        e.add_request(name, 8, SamplingParams(max_tokens=6, ignore_eos=True))
    return e


for cpu_blocks in (0, 16):
    trace = record(engine(cpu_blocks), check=check_engine)   # invariants after every step
    assert not any(step.problems for step in trace)
    recomputed = 0
    for step in trace.steps[1:]:
        for e in step.events:
            if isinstance(e, Preempted):
                print(f"step {step.step}: {e.request_id} preempted")
            elif isinstance(e, OffloadStoreJob) and e.request_id == "C":
                print(f"step {step.step}: C's GPU blocks {list(e.gpu_blocks)} -> "
                      f"CPU blocks {list(e.cpu_blocks)}")
            elif isinstance(e, OffloadLoadJob):
                print(f"step {step.step}: {e.request_id} loads {e.num_tokens} tokens from "
                      f"CPU blocks {list(e.cpu_blocks)}")
            elif isinstance(e, OffloadJobDone) and e.kind == "load":
                print(f"step {step.step}: the load is done")
            elif isinstance(e, Admitted) and e.recompute:
                recomputed += e.num_tokens      # what C computes when it comes back
    print(f"CPU tier of {cpu_blocks} blocks: C computes {recomputed} "
          f"token{'' if recomputed == 1 else 's'} again\n")
# step 1: C preempted
# CPU tier of 0 blocks: C computes 9 tokens again
#
# step 0: C's GPU blocks [5, 6] -> CPU blocks [4, 5]
# step 1: C preempted
# step 6: C loads 8 tokens from CPU blocks [4, 5]
# step 6: the load is done
# CPU tier of 16 blocks: C computes 1 token again
