"""How fast is the simulation itself? (issue 2's benchmark)

OPT-13B on one A100-40GB as in the paper's Table 1: block size 16 and the blocks that
12 GiB of KV space gives (983 GPU blocks, 15.7K token slots), vLLM's default 4 GiB of swap
(327 CPU blocks). 1,000 requests with ShareGPT-like lengths (sim/studies/workload.py: log-normal,
means 161 prompt / 338 output tokens as in the paper's Fig. 11, prompt + output <= 2048),
Poisson arrivals at 1 request per step -- far faster than the cache drains, so preemption
happens. One request in twenty asks for n=2 parallel samples, so preemption swaps as well as
recomputes. Each request decodes to its sampled output length.

It prints steps, preemptions (recompute and swap), blocks swapped, wall time and steps per
second, then the same workload on a 4x larger block pool: the cost per step follows the
number of running sequences, not the size of the pool.

    python bench/sim_throughput.py [--requests 1000] [--rate 1.0] [--repeat 3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.core.config import CacheConfig, SchedulerConfig  # noqa: E402
from sim.core.engine import LLMEngine  # noqa: E402
from sim.events import Preempted  # noqa: E402
from sim.perf.hardware import num_cpu_blocks  # noqa: E402
from sim.perf.models import cache_block_size, get_model  # noqa: E402
from sim.core.sequence import SamplingParams  # noqa: E402
from sim.studies.workload import make_workload  # noqa: E402

KV_SPACE_BYTES = 12 * 2 ** 30   # the paper's "12 GB" for OPT-13B on an A100-40GB


def build(num_gpu_blocks: int, num_cpu: int, requests, record_events: bool) -> LLMEngine:
    engine = LLMEngine(CacheConfig(block_size=16, num_gpu_blocks=num_gpu_blocks,
                                   num_cpu_blocks=num_cpu),
                       SchedulerConfig(max_model_len=2048), record_events=record_events)
    for i, r in enumerate(requests):
        n = 2 if i % 20 == 19 else 1
        engine.add_request(r.request_id, r.prompt_len,
                           SamplingParams(n=n, max_tokens=r.output_len, ignore_eos=True),
                           arrival_step=r.arrival_step)
    return engine


def run(engine: LLMEngine) -> dict:
    steps = preempt_recompute = preempt_swap = swapped_blocks = 0
    running_seq_steps = 0
    start = time.perf_counter()
    while engine.has_unfinished_requests():
        out = engine.step()
        steps += 1
        so = out.scheduler_outputs
        swapped_blocks += len(so.blocks_to_swap_out)
        running_seq_steps += len(out.tokens)   # one token per running sequence per step
        for e in out.events:
            if isinstance(e, Preempted):
                if e.mode == "swap":
                    preempt_swap += 1
                else:
                    preempt_recompute += 1
    wall = time.perf_counter() - start
    return dict(steps=steps, recompute=preempt_recompute, swap=preempt_swap,
                swapped_blocks=swapped_blocks, wall=wall,
                per_step_us=wall / steps * 1e6,
                per_seq_step_us=wall / max(1, running_seq_steps) * 1e6,
                mean_running=running_seq_steps / steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=1.0, help="arrivals per step")
    ap.add_argument("--repeat", type=int, default=3, help="report the median of N runs")
    ap.add_argument("--no-events", action="store_true", help="switch the event log off")
    args = ap.parse_args()

    model = get_model("opt-13b")
    block_bytes = cache_block_size(model, 16, "fp16")
    gpu_blocks = KV_SPACE_BYTES // block_bytes
    cpu_blocks = num_cpu_blocks(model, 4, 16, "fp16")
    requests = make_workload("sharegpt", args.requests, seed=0, arrival_rate=args.rate)
    tokens = sum(r.output_len for r in requests)
    print(f"OPT-13B, block size 16: {gpu_blocks} GPU blocks ({gpu_blocks * 16} token slots), "
          f"{cpu_blocks} CPU blocks")
    print(f"{args.requests} ShareGPT-like requests, {sum(r.prompt_len for r in requests)} "
          f"prompt and {tokens} output tokens, {args.rate} arrivals per step, "
          f"events {'off' if args.no_events else 'on'}; median of {args.repeat} runs")

    for label, blocks in (("12 GiB pool", gpu_blocks), ("4x pool", 4 * gpu_blocks)):
        runs = [run(build(blocks, cpu_blocks, requests, not args.no_events))
                for _ in range(args.repeat)]
        r = sorted(runs, key=lambda x: x["wall"])[len(runs) // 2]
        print(f"\n{label}: {blocks} GPU blocks")
        print(f"  steps {r['steps']}, preemptions {r['recompute'] + r['swap']} "
              f"({r['recompute']} recompute, {r['swap']} swap), "
              f"{r['swapped_blocks']} blocks swapped out")
        print(f"  wall {r['wall']:.2f} s (runs: "
              + ", ".join(f"{x['wall']:.2f}" for x in runs) + f"), "
              f"{r['steps'] / r['wall']:.0f} steps/s")
        print(f"  {r['mean_running']:.1f} running sequences per step on average: "
              f"{r['per_step_us']:.0f} us per step, "
              f"{r['per_seq_step_us']:.2f} us per running sequence per step")


if __name__ == "__main__":
    main()
