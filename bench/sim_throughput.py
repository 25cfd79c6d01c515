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

Then the same 1,000 requests through V1 (vLLM v0.25.1, sim/v1): block size 16, the same
983 usable blocks + 1 for the null block, V1's defaults otherwise (prefix caching and
chunked prefill on) with the A100 budget of VLLM-V1.md section 8 (max_num_batched_tokens
2048, max_num_seqs 256); n=2 requests fan out into two child requests. Once with distinct
prompts, once with a shared 300-token system prompt before each prompt (its own part
clipped so the prompt stays under max_model_len 2048), and on the 4x pool. Each runs V1's
default engine loop, async scheduling (a step is one engine call), then the synchronous loop
(`async_scheduling=False`) for comparison. It prints steps, preemptions (all by recompute),
the prefix-cache hit rate (hits over looked-up tokens, as vLLM logs it, lookups of preempted
requests apart) and wall time.

    python bench/sim_throughput.py [--requests 1000] [--rate 1.0] [--repeat 3] [--no-v0]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.core.config import CacheConfig, SchedulerConfig  # noqa: E402
from sim.core.engine import LLMEngine  # noqa: E402
from sim.core.sequence import SamplingParams  # noqa: E402
from sim.events import Preempted  # noqa: E402
from sim.perf.hardware import num_cpu_blocks  # noqa: E402
from sim.perf.models import cache_block_size, get_model  # noqa: E402
from sim.studies.workload import make_workload  # noqa: E402
from sim.v1.config import CacheConfig as V1CacheConfig  # noqa: E402
from sim.v1.config import SchedulerConfig as V1SchedulerConfig  # noqa: E402
from sim.v1.engine import LLMEngine as V1Engine  # noqa: E402

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
    ap.add_argument("--no-v0", action="store_true", help="run V1 only")
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

    for label, blocks in (() if args.no_v0 else
                          (("12 GiB pool", gpu_blocks), ("4x pool", 4 * gpu_blocks))):
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

    print(f"\nV1 (vLLM v0.25.1): block size 16, {gpu_blocks} usable blocks + the null block, "
          f"max_num_batched_tokens {V1_BUDGET}, max_num_seqs {V1_MAX_NUM_SEQS}, prefix "
          "caching and chunked prefill on")
    loops = ((None, "async scheduling (the default)"), (False, "synchronous loop"))
    for label, blocks, prefix in (("12 GiB pool", gpu_blocks, 0),
                                  ("12 GiB pool, shared 300-token system prompt",
                                   gpu_blocks, SYSTEM_PROMPT_LEN),
                                  ("4x pool", 4 * gpu_blocks, 0)):
        for loop, loop_name in loops:
            runs = [run_v1(build_v1(blocks + 1, requests, prefix, not args.no_events, loop))
                    for _ in range(args.repeat)]
            r = sorted(runs, key=lambda x: x["wall"])[len(runs) // 2]
            print(f"\nV1 {label}, {loop_name}: {blocks + 1} GPU blocks")
            print(f"  steps {r['steps']}, preemptions {r['preemptions']} (recompute)")
            print(f"  prefix cache: hit rate {r['hit_rate']:.1%} ({r['hits']} of {r['queries']} "
                  f"looked-up tokens, a blocked request counted at every retry); after "
                  f"preemption {r['preempted_hit_rate']:.1%} ({r['preempted_hits']} of "
                  f"{r['preempted_queries']})")
            print(f"  at first admission {r['admitted_hits']} of {r['prompt_tokens']} prompt "
                  f"tokens ({r['admitted_hits'] / r['prompt_tokens']:.1%}) came from the cache")
            print(f"  wall {r['wall']:.2f} s (runs: "
                  + ", ".join(f"{x['wall']:.2f}" for x in runs) + f"; CPU {r['cpu']:.2f} s), "
                  f"{r['steps'] / r['wall']:.0f} steps/s")
            print(f"  {r['mean_running']:.1f} running requests per step on average: "
                  f"{r['per_step_us']:.0f} us per step, "
                  f"{r['per_req_step_us']:.2f} us per running request per step")


V1_BUDGET = 2048          # max_num_batched_tokens: VLLM-V1.md section 8, A100 (server)
V1_MAX_NUM_SEQS = 256     # max_num_seqs for GPUs under 70 GiB
SYSTEM_PROMPT_LEN = 300
MAX_MODEL_LEN = 2048


def build_v1(num_gpu_blocks: int, requests, prefix: int, record_events: bool,
             async_scheduling: bool | None = None) -> V1Engine:
    engine = V1Engine(V1CacheConfig(block_size=16, num_gpu_blocks=num_gpu_blocks),
                      V1SchedulerConfig(max_num_batched_tokens=V1_BUDGET,
                                        max_num_seqs=V1_MAX_NUM_SEQS,
                                        max_model_len=MAX_MODEL_LEN,
                                        async_scheduling=async_scheduling),
                      record_events=record_events)
    for i, r in enumerate(requests):
        n = 2 if i % 20 == 19 else 1
        engine.add_request(r.request_id, min(r.prompt_len, MAX_MODEL_LEN - prefix - 1),
                           SamplingParams(n=n, max_tokens=r.output_len, ignore_eos=True),
                           arrival_step=r.arrival_step, shared_prefix=prefix)
    return engine


def run_v1(engine: V1Engine) -> dict:
    steps = running_req_steps = 0
    start, start_cpu = time.perf_counter(), time.process_time()
    while engine.has_unfinished_requests():
        out = engine.step()
        steps += 1
        running_req_steps += len(out.scheduler_outputs.num_scheduled_tokens)
    wall = time.perf_counter() - start
    cpu = time.process_time() - start_cpu
    stats = engine.kv_cache_manager.prefix_cache_stats
    reqs = engine.requests.values()
    return dict(steps=steps, wall=wall, cpu=cpu,
                admitted_hits=sum(max(0, r.num_cached_tokens) for r in reqs),
                prompt_tokens=sum(r.num_prompt_tokens for r in reqs),
                preemptions=sum(r.num_preemptions for r in engine.requests.values()),
                hits=stats.hits, queries=stats.queries, hit_rate=stats.hit_rate,
                preempted_hits=stats.preempted_hits, preempted_queries=stats.preempted_queries,
                preempted_hit_rate=(stats.preempted_hits / stats.preempted_queries
                                    if stats.preempted_queries else 0.0),
                per_step_us=wall / steps * 1e6,
                per_req_step_us=wall / max(1, running_req_steps) * 1e6,
                mean_running=running_req_steps / steps)


if __name__ == "__main__":
    main()
