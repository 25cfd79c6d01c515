"""`python -m sim`: run a named or custom scenario and print every step as text.

    python -m sim --list
    python -m sim fig6
    python -m sim --block-size 4 --gpu-blocks 10 --request A:6:12 --request B:5:12:n=2
"""
from __future__ import annotations

import argparse
import sys

from sim.core.config import CacheConfig, SchedulerConfig
from sim.events import (Admitted, BlockFreed, CopyOnWrite, Forked, Preempted, PromptIgnored,
                     RequestFinished, SwappedIn, SwappedOut)
from sim.studies.scenarios import SCENARIOS, Scenario, ScenarioRequest, get_scenario


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
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        for s in SCENARIOS.values():
            print(f"{s.name:12} {s.description}")
        return 0
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
