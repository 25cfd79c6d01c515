"""`python -m sim`: run a named or custom scenario and print every step as text.

    python -m sim --list
    python -m sim fig6
    python -m sim --block-size 4 --gpu-blocks 10 --request A:6:12 --request B:5:12:n=2
    python -m sim --engine v1 --block-size 4 --gpu-blocks 11 --prefix 8 \
        --request A:3:4 --request B:5:4:arrival=2

`--engine v1` runs vLLM v0.25.1's V1 engine (sim/v1) instead of v0.5.5's: prefix caching and
chunked prefill on, `--gpu-blocks` counts the null block, `--prefix N` starts every
prompt with the same N tokens (a shared system prompt) before its own PROMPT_LEN tokens.
"""
from __future__ import annotations

import argparse
import sys

from sim.core.config import CacheConfig, SchedulerConfig
from sim.events import (Admitted, BlockFreed, CopyOnWrite, Forked, Preempted, PromptIgnored,
                     RequestFinished, SwappedIn, SwappedOut)
from sim.studies.scenarios import SCENARIOS, Scenario, ScenarioRequest, get_scenario
from sim.v1 import config as v1_config


def parse_request(text: str) -> ScenarioRequest:
    """ID:PROMPT_LEN:MAX_TOKENS[:key=value...] with keys n, best_of, beam, arrival, output_len."""
    parts = text.split(":")
    if len(parts) < 3:
        raise ValueError(f"request {text!r}: expected ID:PROMPT_LEN:MAX_TOKENS[:key=value]")
    kw: dict = {}
    names = {"n": "n", "best_of": "best_of", "beam": "best_of", "arrival": "arrival_step",
             "output_len": "output_len"}
    for opt in parts[3:]:
        key, _, value = opt.partition("=")
        if key not in names or not value.isdigit():
            raise ValueError(f"request {text!r}: option {opt!r} must be one of "
                             + ", ".join(f"{k}=N" for k in names))
        kw[names[key]] = int(value)
        if key == "beam":
            kw["use_beam_search"] = True
    try:
        return ScenarioRequest(parts[0], int(parts[1]), int(parts[2]), **kw)
    except ValueError:
        raise ValueError(f"request {text!r}: PROMPT_LEN and MAX_TOKENS must be whole "
                         "numbers") from None


def describe_event(ev) -> str | None:
    if isinstance(ev, Admitted):
        return f"admit {ev.request_id} ({ev.num_tokens} tokens{', recompute' if ev.recompute else ''})"
    if isinstance(ev, PromptIgnored):
        return f"ignore {ev.request_id} ({ev.num_tokens} tokens: {ev.reason})"
    if isinstance(ev, Preempted):
        return f"preempt {ev.request_id} by {ev.mode} (room for {ev.needed_by})"
    if isinstance(ev, SwappedOut):
        return f"swap out {ev.request_id}: " + ", ".join(f"gpu {g}->cpu {c}" for g, c in ev.mapping)
    if isinstance(ev, SwappedIn):
        return f"swap in {ev.request_id}: " + ", ".join(f"cpu {c}->gpu {g}" for c, g in ev.mapping)
    if isinstance(ev, CopyOnWrite):
        return f"copy-on-write seq {ev.seq_id}: block {ev.src} -> {ev.dst}"
    if isinstance(ev, Forked):
        return f"fork seq {ev.parent_seq_id} -> seq {ev.child_seq_id}"
    if isinstance(ev, BlockFreed):
        return f"free {ev.device} block {ev.physical}"
    if isinstance(ev, RequestFinished):
        return f"finished {ev.request_id} ({ev.status})"
    return None


def format_step(engine, out) -> str:
    so = out.scheduler_outputs
    kinds = []
    for i, s in enumerate(so.scheduled_seq_groups):
        kind = "prefill" if i < so.num_prefill_groups else "decode"
        kinds.append(f"{s.seq_group.request_id}({kind} {s.token_chunk_size})")
    snap = engine.snapshot(with_slots=False)
    q = snap["queues"]
    lines = [f"step {out.step}: scheduled {' '.join(kinds) or '-'}; "
             f"{so.num_batched_tokens} tokens"]
    lines.append(f"  queues  waiting={q['waiting']} running={q['running']} "
                 f"swapped={q['swapped']}")
    for r in snap["requests"]:
        for s in r["seqs"]:
            if s["block_table"]:
                table = " ".join(f"{d[0]}{n}({f})" for d, n, f in s["block_table"])
                lines.append(f"  {r['request_id']} seq {s['seq_id']}: len {s['len']}  "
                             f"blocks {table}")
    lines.append(f"  free    gpu {snap['gpu']['num_free']}/{snap['gpu']['num_blocks']}  "
                 f"cpu {snap['cpu']['num_free']}/{snap['cpu']['num_blocks']}")
    for ev in out.events:
        text = describe_event(ev)
        if text:
            lines.append(f"  - {text}")
    return "\n".join(lines)


def describe_v1_event(ev) -> str | None:
    """V1's own events, then the ones it shares with v0.5.5."""
    from sim.events import Aborted, BlockCached, BlockEvicted, PrefixCacheHit
    if isinstance(ev, PrefixCacheHit):
        blocks = ",".join(str(b) for b in ev.blocks)
        return f"hit {ev.request_id}: blocks {blocks} ({ev.num_tokens} tokens cached)"
    if isinstance(ev, BlockEvicted):
        return f"evict block {ev.physical} (#{ev.block_hash})"
    if isinstance(ev, BlockCached):
        return (f"cache block {ev.physical} (#{ev.block_hash}) as {ev.request_id}'s block "
                f"{ev.logical}")
    if isinstance(ev, Aborted):
        return f"abort {ev.request_id} ({ev.queue})"
    return describe_event(ev)


def format_step_v1(engine, out) -> str:
    so = out.scheduler_outputs
    kinds = [f"{s.request_id}({'prefill' if s.prefill else 'decode'} {s.num_tokens})"
             for s in out.scheduled()]
    snap = engine.snapshot(with_slots=False)
    q = snap["queues"]
    gpu = snap["gpu"]
    lines = [f"step {out.step}: scheduled {' '.join(kinds) or '-'}; "
             f"{so.total_num_scheduled_tokens} tokens"]
    lines.append(f"  queues  waiting={q['waiting']} running={q['running']}")
    for r in snap["requests"]:
        for s in r["seqs"]:
            if s["block_table"]:
                table = " ".join(f"g{n}({f}){'*' if gpu['blocks'][n]['hash'] else ''}"
                                 for _, n, f in s["block_table"])
                lines.append(f"  {r['request_id']} seq {s['seq_id']}: len {s['len']}  "
                             f"blocks {table}")
    cached_free = sum(1 for n in gpu["free_order"] if gpu["blocks"][n]["cached"])
    lines.append(f"  free    gpu {gpu['num_free']}/{gpu['num_blocks']} (block "
                 f"{snap['null_block']} is the null block; {cached_free} free blocks "
                 f"still cached)  free queue {gpu['free_order']}")
    for ev in out.events:
        text = describe_v1_event(ev)
        if text:
            lines.append(f"  - {text}")
    return "\n".join(lines)


def build_v1_engine(args, scenario: Scenario | None):
    """A V1 engine for the command line's requests, or for a named (v0.5.5) scenario's:
    its block size and GPU blocks + 1 (the null block), V1's defaults otherwise."""
    from sim.v1.engine import LLMEngine as V1Engine
    if scenario is not None:
        block_size = scenario.cache_config.block_size
        num_gpu_blocks = scenario.cache_config.num_gpu_blocks + 1
        requests = scenario.requests
        seed = scenario.seed
    else:
        block_size, num_gpu_blocks = args.block_size, args.gpu_blocks
        requests = tuple(parse_request(r) for r in args.request)
        seed = args.seed
    budget = args.max_num_batched_tokens or v1_config.DEFAULT_MAX_NUM_BATCHED_TOKENS
    engine = V1Engine(
        v1_config.CacheConfig(block_size=block_size, num_gpu_blocks=num_gpu_blocks,
                              enable_prefix_caching=not args.no_prefix_caching),
        v1_config.SchedulerConfig(
            max_num_batched_tokens=budget, max_num_seqs=min(args.max_num_seqs, budget),
            enable_chunked_prefill=not args.no_chunked_prefill,
            long_prefill_token_threshold=args.long_prefill_token_threshold,
            watermark=args.watermark, policy=args.policy,
            num_speculative_tokens=args.num_speculative_tokens,
            num_lookahead_tokens=args.num_lookahead_tokens),
        seed=seed, spec_acceptance_rate=args.spec_acceptance_rate)
    for r in requests:
        if r.use_beam_search or (r.best_of is not None and r.best_of != r.n):
            raise ValueError(f"request {r.request_id!r}: V1 has no best_of and no beam "
                             "search in the engine")
        engine.add_request(r.request_id, r.prompt_len, r.sampling_params(),
                           arrival_step=r.arrival_step, output_len=r.output_len,
                           shared_prefix=args.prefix)
    return engine


def main_v1(args) -> int:
    scenario = get_scenario(args.scenario) if args.scenario else None
    if scenario is None and not args.request:
        print("give a scenario name or at least one --request", file=sys.stderr)
        return 2
    engine = build_v1_engine(args, scenario)
    if scenario is not None:
        print(f"# {scenario.name} (V1, vLLM v0.25.1): {scenario.description}")
    else:
        print("# custom (V1, vLLM v0.25.1): from the command line")
    steps = 0
    while engine.has_unfinished_requests() and steps < args.max_steps:
        print(format_step_v1(engine, engine.step()))
        steps += 1
    stats = engine.kv_cache_manager.prefix_cache_stats
    print(f"# prefix cache: {stats.hits} of {stats.queries} looked-up tokens hit "
          f"({stats.requests} lookups); after preemption {stats.preempted_hits} of "
          f"{stats.preempted_queries}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sim", description=__doc__.splitlines()[0])
    p.add_argument("scenario", nargs="?", help="a named scenario (see --list)")
    p.add_argument("--list", action="store_true", help="list the named scenarios")
    p.add_argument("--block-size", type=int, default=4)
    p.add_argument("--gpu-blocks", type=int, default=16)
    p.add_argument("--cpu-blocks", type=int, default=16)
    p.add_argument("--watermark", type=float, default=0.0)
    p.add_argument("--free-order", choices=["stack", "shuffled"], default="stack")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--max-num-batched-tokens", type=int, default=None)
    p.add_argument("--chunked-prefill", action="store_true")
    p.add_argument("--preemption-mode", choices=["swap", "recompute"], default=None)
    p.add_argument("--scheduler", choices=["vllm", "static"], default="vllm")
    p.add_argument("--request", action="append", default=[], metavar="ID:PROMPT:MAX[:k=v]",
                   help="a request (repeatable); options n=, beam=, arrival=, output_len=")
    p.add_argument("--max-steps", type=int, default=1000)
    v1 = p.add_argument_group("V1 engine (--engine v1)")
    p.add_argument("--engine", choices=["v0.5.5", "v1"], default="v0.5.5",
                   help="vLLM v0.5.5's engine (default) or v0.25.1's V1 engine")
    v1.add_argument("--prefix", type=int, default=0, metavar="N",
                    help="every prompt starts with the same N tokens (V1 only)")
    v1.add_argument("--no-prefix-caching", action="store_true")
    v1.add_argument("--no-chunked-prefill", action="store_true")
    v1.add_argument("--long-prefill-token-threshold", type=int, default=0)
    v1.add_argument("--policy", choices=["fcfs", "priority"], default="fcfs")
    v1.add_argument("--num-speculative-tokens", type=int, default=0)
    v1.add_argument("--num-lookahead-tokens", type=int, default=0)
    v1.add_argument("--spec-acceptance-rate", type=float, default=0.7)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        for s in SCENARIOS.values():
            print(f"{s.name:12} {s.description}")
        return 0
    if args.engine == "v1":
        try:
            return main_v1(args)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if args.prefix:
        print("error: --prefix needs --engine v1 (v0.5.5 has no prefix caching here)",
              file=sys.stderr)
        return 2
    try:
        if args.scenario:
            scenario = get_scenario(args.scenario)
        else:
            if not args.request:
                print("give a scenario name or at least one --request", file=sys.stderr)
                return 2
            scenario = Scenario(
                "custom", "from the command line",
                CacheConfig(block_size=args.block_size, num_gpu_blocks=args.gpu_blocks,
                            num_cpu_blocks=args.cpu_blocks, watermark=args.watermark,
                            free_order=args.free_order, seed=args.seed),
                SchedulerConfig(max_num_seqs=args.max_num_seqs,
                                max_num_batched_tokens=args.max_num_batched_tokens,
                                enable_chunked_prefill=args.chunked_prefill,
                                preemption_mode=args.preemption_mode),
                tuple(parse_request(r) for r in args.request), seed=args.seed,
                scheduler=args.scheduler)
        engine = scenario.build_engine()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"# {scenario.name}: {scenario.description}")
    steps = 0
    while engine.has_unfinished_requests() and steps < args.max_steps:
        try:
            out = engine.step()
        except RuntimeError as e:   # e.g. vLLM's "lack of CPU swap space" abort
            print(f"engine stopped: {e}")
            return 1
        print(format_step(engine, out))
        steps += 1
    return 0
