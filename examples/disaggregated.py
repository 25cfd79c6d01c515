"""Disaggregated prefill and decode from Python: the page's three requests through a
prefill GPU and a decode GPU (vLLM V1 with NIXL's connector on each), every step of either
GPU as a row; then the page's latency comparison on twelve long documents."""
import json
from pathlib import Path

from sim.perf.cost import Roofline
from sim.perf.models import get_model
from sim.studies import pd_latency
from sim.studies.disaggregated import DisaggregatedServing, PDRequest, PDSetup, check_pd

# The H200 ceilings measured in data/h200-prefill-decode.json price every step.
data = json.loads(Path("data/h200-prefill-decode.json").read_text())
h200 = Roofline(data["matmul_peak_flops"], data["copy_bandwidth_bytes_per_s"], "H200")
model = get_model("llama-3-8b")

# The widget's default: 24 usable blocks of 16 tokens on each GPU, a budget of 64 tokens
# per step, 25 Gb Ethernet between them. Arrivals in seconds.
requests = [PDRequest("A", 96, 4, 0.0), PDRequest("B", 160, 3, 0.001),
            PDRequest("C", 64, 2, 0.009)]
setup = PDSetup(block_size=16, prefill_blocks=24, decode_blocks=24,
                max_num_batched_tokens=64, max_num_seqs=16, max_model_len=1024,
                link="ethernet-25g")
serving = DisaggregatedServing(requests, setup, model, h200)
trace = serving.run(check=check_pd)          # both engines' invariants after every step
assert not serving.problems

for row in trace.steps[1:]:
    snap = row.snapshot
    ran = " ".join(f"{s.request_id}{s.num_tokens}" for s in row.scheduled) or "-"
    held = [r["request_id"] for r in snap["prefill"]["requests"]
            if r["finished_step"] is not None and r["seqs"][0]["block_table"]]
    waiting = snap["decode"]["queues"]["skipped_waiting"]
    print(f"{snap['start_s'] * 1e3:5.1f}-{snap['time_s'] * 1e3:5.1f} ms {snap['engine']:7} "
          f"ran {ran:10} prefill holds {held}, decode waits for KVs: {waiting}")

for rid, rec in trace.meta["records"].items():
    print(f"{rid}: prefill done {rec.prefill_done_s * 1e3:.1f} ms, read "
          f"{rec.transfer_start_s * 1e3:.1f}-{rec.transfer_end_s * 1e3:.1f} ms, "
          f"first token {rec.token_times_s[0] * 1e3:.1f} ms")

# The latency widget's default: 12 documents 250 ms apart, InfiniBand NDR, vLLM's server
# budget on an H200 (8192 tokens).
comparison = pd_latency.compare(pd_latency.workload(0.25), model, h200, link="ib-ndr")
for config in pd_latency.CONFIGS:
    ttft = comparison.stat(config, "ttft")
    gap = comparison.stat(config, "max_tbt")
    print(f"{config:14}: mean time to first token {sum(ttft) / len(ttft) * 1e3:.1f} ms, "
          f"longest gap between tokens {max(gap) * 1e3:.1f} ms")
