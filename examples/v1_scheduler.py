"""vLLM v0.5.5 and V1 on the same requests, from Python: each step's token budget, then the
latency of a larger workload priced on an H200, then what V1's default loop, async
scheduling, buys there."""
import json
from pathlib import Path

from sim.core.config import CacheConfig as CacheConfigV0
from sim.core.config import SchedulerConfig as SchedulerConfigV0
from sim.core.engine import LLMEngine as EngineV0
from sim.core.sequence import SamplingParams
from sim.perf.cost import Roofline
from sim.perf.models import get_model
from sim.studies import latency
from sim.trace import record
from sim.v1.config import CacheConfig as CacheConfigV1
from sim.v1.config import SchedulerConfig as SchedulerConfigV1
from sim.v1.engine import LLMEngine as EngineV1

# The page's default: 24 usable blocks of 4 tokens and a budget of 32 tokens for both
# (V1's pool has one block more: block 0 is its null block). V1 runs its synchronous loop,
# to line up with v0.5.5 step for step.
v0 = EngineV0(CacheConfigV0(block_size=4, num_gpu_blocks=24, num_cpu_blocks=0),
              SchedulerConfigV0(max_num_batched_tokens=32, max_model_len=32, max_num_seqs=8))
v1 = EngineV1(CacheConfigV1(block_size=4, num_gpu_blocks=25),
              SchedulerConfigV1(max_num_batched_tokens=32, max_model_len=32, max_num_seqs=8,
                                async_scheduling=False))
for engine in (v0, v1):
    for name, prompt, output, arrival in (("A", 6, 8, 0), ("B", 5, 8, 0), ("C", 20, 3, 2),
                                          ("D", 20, 3, 2), ("E", 4, 4, 5)):
        engine.add_request(name, prompt, SamplingParams(max_tokens=output, ignore_eos=True),
                           arrival_step=arrival)

for name, engine in (("v0.5.5", v0), ("V1", v1)):
    print(name)
    for step in record(engine).steps[1:]:
        # "C20" is a prompt chunk of 20 tokens, "A" a decode.
        ran = " ".join(f"{s.request_id}{s.num_tokens}" if s.prefill else s.request_id
                       for s in step.scheduled)
        print(f"  iteration {step.step:2}: {ran}")

# The chart on the page: ten requests on Llama-3-8B, every step priced with the roofline of
# the H200 ceilings measured in data/h200-prefill-decode.json.
data = json.loads(Path("data/h200-prefill-decode.json").read_text())
h200 = Roofline(data["matmul_peak_flops"], data["copy_bandwidth_bytes_per_s"], "H200")
model = get_model("llama-3-8b")
sync = latency.Setup(async_scheduling=False)
runs = {"v0.5.5": latency.run_timed("v0.5.5", latency.CHATS_AND_DOCUMENTS, sync, model, h200),
        "V1": latency.run_timed("v1", latency.CHATS_AND_DOCUMENTS, sync, model, h200)}
for name, run in runs.items():
    worst = max(r.max_tbt_s for r in run.requests)
    ttft = {r.request_id: r.ttft_s for r in run.requests}
    print(f"{name}: longest gap between tokens {worst * 1e3:.1f} ms, "
          f"time to first token of G {ttft['G'] * 1e3:.1f} ms")
# v0.5.5: longest gap between tokens 99.6 ms, time to first token of G 38.0 ms
# V1: longest gap between tokens 37.6 ms, time to first token of G 40.9 ms

# V1's two loops with a stated 1 ms of CPU time per engine call: the synchronous loop adds it
# to every step, the async loop hides it behind the GPU's step.
for loop in (False, True):
    run = latency.run_timed("v1", latency.CHATS_AND_DOCUMENTS,
                            latency.Setup(async_scheduling=loop, cpu_step_s=1e-3), model, h200)
    chats = [r for r in run.requests if r.request_id in "ABCDEF"]
    gap = sum(r.mean_tbt_s for r in chats) / len(chats)
    print(f"V1, async_scheduling={loop}: a chat's gap between tokens {gap * 1e3:.1f} ms, "
          f"all done after {run.makespan_s * 1e3:,.0f} ms")
# V1, async_scheduling=False: a chat's gap between tokens 5.1 ms, all done after 1,635 ms
# V1, async_scheduling=True: a chat's gap between tokens 4.1 ms, all done after 1,316 ms
