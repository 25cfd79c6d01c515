"""`python -m sim`: run a named or custom scenario and print every step as text.

    python -m sim --list
    python -m sim fig6
    python -m sim --block-size 4 --gpu-blocks 10 --request A:6:12 --request B:5:12:n=2
    python -m sim --engine v1 --block-size 4 --gpu-blocks 11 --prefix 8 \
        --request A:3:4 --request B:5:4:arrival=2

A request is ID:PROMPT_LEN:MAX_TOKENS[:key=value...]: `A:6:12` is request A with a 6-token
prompt that may generate up to 12 tokens; options n=N (parallel samples), beam=K (beam search
of width K), arrival=STEP (it arrives at that step), output_len=N (the stand-in model ends it
with EOS after N tokens).

`--engine v1` runs vLLM v0.25.1's V1 engine (sim/v1) instead of v0.5.5's: prefix caching and
chunked prefill on, `--gpu-blocks` counts the null block, `--prefix N` starts every
prompt with the same N tokens (a shared system prompt) before its own PROMPT_LEN tokens.
`--cpu-offload-blocks N` adds a CPU tier of N blocks through the offloading connector (what
vLLM's `--kv-offloading-size` turns on): prompt blocks are stored to CPU memory as they are
computed, and a request that misses the GPU prefix cache loads what the CPU tier holds.
Its engine loop is vLLM's default, async scheduling (each step is scheduled before the
previous step's output is processed; every step says whose output it processed);
`--no-async-scheduling` runs the synchronous loop.

Hybrid models (V1): `--model gpt-oss-20b` takes a preset's layer types and sliding window
(sim/perf/models.py), `--sliding-window N --sliding-per-full K` a pattern of one
full-attention layer and K sliding-window layers of N tokens; each KV cache group's table is
printed (G0, G1, ...; g0 is the null block where a block left the window).
`--disable-hybrid-kv-cache-manager` keeps every layer as full attention.

    python -m sim --engine v1 --block-size 16 --gpu-blocks 18 --max-num-batched-tokens 16 \
        --sliding-window 32 --sliding-per-full 2 --request A:112:4

`--engine v1 --disaggregated` runs a prefill and a decode instance with NIXL's KV connector
(sim/cli_pd.py); there `--model` names the dense model whose KV size and step times are used
(default llama-3-8b).
"""
from __future__ import annotations

import argparse
import sys
import textwrap

from sim.core.config import CacheConfig, SchedulerConfig
from sim.events import (
    Admitted,
    BlockAllocated,
    BlockFreed,
    BlocksLeaked,
    CopyOnWrite,
    Forked,
    Preempted,
    PrefillRunAsDecode,
    PromptIgnored,
    RequestFinished,
    SwappedIn,
    SwappedOut,
)
from sim.perf.hardware import GPUS
from sim.perf.links import LINKS
from sim.studies.scenarios import SCENARIOS, Scenario, ScenarioRequest, get_scenario
from sim.v1 import config as v1_config

REQUEST_FORMAT = "ID:PROMPT_LEN:MAX_TOKENS[:key=value...]"
REQUEST_OPTIONS = {"n": "n", "best_of": "best_of", "beam": "best_of", "arrival": "arrival_step",
                   "output_len": "output_len"}


def parse_request(text: str) -> ScenarioRequest:
    """ID:PROMPT_LEN:MAX_TOKENS[:key=value...] with keys n, best_of, beam, arrival, output_len."""
    parts = text.split(":")
    if len(parts) < 3:
        raise ValueError(f"request {text!r}: expected {REQUEST_FORMAT}, e.g. A:6:12")
    kw: dict = {}
    for opt in parts[3:]:
        key, _, value = opt.partition("=")
        if key not in REQUEST_OPTIONS or not (value.isascii() and value.isdigit()):
            raise ValueError(f"request {text!r}: option {opt!r} must be one of "
                             + ", ".join(f"{k}=N" for k in REQUEST_OPTIONS))
        kw[REQUEST_OPTIONS[key]] = int(value)
        if key == "beam":
            kw["use_beam_search"] = True
    if not all(p.isascii() and p.isdigit() for p in parts[1:3]):
        raise ValueError(f"request {text!r}: PROMPT_LEN and MAX_TOKENS must be whole numbers "
                         f"({REQUEST_FORMAT}, e.g. A:6:12)")
    return ScenarioRequest(parts[0], int(parts[1]), int(parts[2]), **kw)


def _tokens(n: int) -> str:
    return f"{n} token" if n == 1 else f"{n} tokens"


def _blocks(numbers: list[int]) -> str:
    return ("block " if len(numbers) == 1 else "blocks ") + ", ".join(str(n) for n in numbers)


def describe_event(ev) -> str | None:
    if isinstance(ev, Admitted):
        return (f"admit {ev.request_id} ({_tokens(ev.num_tokens)}"
                f"{', recompute' if ev.recompute else ''})")
    if isinstance(ev, PromptIgnored):
        return f"ignore {ev.request_id} ({_tokens(ev.num_tokens)}: {ev.reason})"
    if isinstance(ev, Preempted):
        why = ("nobody else is left to preempt" if ev.victim_is_self
               else f"so that {ev.needed_by} gets a block for its next token")
        return f"preempt {ev.request_id} by {ev.mode} ({why})"
    if isinstance(ev, SwappedOut):
        return f"swap out {ev.request_id}: " + ", ".join(f"gpu {g}->cpu {c}" for g, c in ev.mapping)
    if isinstance(ev, SwappedIn):
        return f"swap in {ev.request_id}: " + ", ".join(f"cpu {c}->gpu {g}" for c, g in ev.mapping)
    if isinstance(ev, CopyOnWrite):
        return f"copy-on-write seq {ev.seq_id}: block {ev.src} -> {ev.dst}"
    if isinstance(ev, Forked):
        return f"fork seq {ev.parent_seq_id} -> seq {ev.child_seq_id}"
    if isinstance(ev, BlocksLeaked):
        return (f"leak {_blocks(list(ev.blocks))}: allocate counted {ev.refs} finished "
                f"{'sample' if ev.refs == 1 else 'samples'} of {ev.request_id} in the ref count")
    if isinstance(ev, PrefillRunAsDecode):
        return (f"run seq {ev.seq_id}'s recompute as a decode (first seq {ev.first_seq_id} "
                f"finished): KV of position {ev.position} only")
    if isinstance(ev, RequestFinished):
        return f"finished {ev.request_id} ({ev.status})"
    return None


def new_blocks(events) -> list[str]:
    """The step's new GPU blocks, by the sequences that got them ("new gpu blocks 7, 1
    (seq 0)"), so a block that came and went within the step (a sequence's last token
    starting a block just before it finished) is seen arriving before it is seen freed."""
    by_seqs: dict[tuple, list[int]] = {}
    for e in events:
        if isinstance(e, BlockAllocated) and e.device == "gpu":
            by_seqs.setdefault(e.seq_ids, []).append(e.physical)
    parts = [f"{', '.join(map(str, blocks))} (seq {'+'.join(map(str, seqs))})"
             for seqs, blocks in by_seqs.items()]
    count = sum(len(b) for b in by_seqs.values())
    return [("new gpu block " if count == 1 else "new gpu blocks ") + ", ".join(parts)] \
        if parts else []


def freed_blocks(events) -> list[str]:
    lines = []
    for device in ("gpu", "cpu"):
        freed = [e.physical for e in events if isinstance(e, BlockFreed) and e.device == device]
        if freed:
            lines.append(f"free {device} " + _blocks(freed))
    return lines


def step_lines(events, describe) -> list[str]:
    """New blocks first, then what happened, then the blocks freed."""
    texts = new_blocks(events) + [t for t in map(describe, events) if t] + freed_blocks(events)
    return [f"  - {t}" for t in texts]


def format_step(engine, out) -> str:
    so = out.scheduler_outputs
    kinds = []
    for s in out.scheduled():
        if s.prefill:
            kinds.append(f"{s.request_id}(prefill {s.num_tokens})")
        else:   # one token per running sequence
            seqs = f" x{s.num_seqs} seqs" if s.num_seqs > 1 else ""
            kinds.append(f"{s.request_id}(decode{seqs})")
    snap = engine.snapshot(with_slots=False)
    q = snap["queues"]
    lines = [f"step {out.step}: scheduled {' '.join(kinds) or '-'}; "
             f"{_tokens(so.num_batched_tokens)}"]
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
    lines += step_lines(out.events, describe_event)
    return "\n".join(lines)


def describe_v1_event(ev) -> str | None:
    """V1's own events, then the ones it shares with v0.5.5."""
    from sim.events import (
        Aborted,
        BlockCached,
        BlockEvicted,
        BlockSkipped,
        GroupBlockAllocated,
        PrefixCacheHit,
        TokenDiscarded,
    )
    if isinstance(ev, GroupBlockAllocated):
        return (f"alloc {ev.request_id} G{ev.kv_cache_group_id} block {ev.logical} -> "
                f"gpu {ev.physical}")
    if isinstance(ev, BlockSkipped):
        return (f"block {ev.physical} left {ev.request_id}'s G{ev.kv_cache_group_id} window "
                f"(its block {ev.logical} is the null block now)")
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
    if isinstance(ev, TokenDiscarded):
        why = ("it was preempted by reset_prefix_cache" if ev.reason == "reset_prefix_cache"
               else f"it is {ev.reason.replace('_', ' ')}")
        return (f"discard {ev.request_id}'s token {ev.token_id} at position {ev.position} "
                f"(sampled by a step in flight; {why})")
    return describe_offload_event(ev) or describe_event(ev)


def describe_offload_event(ev) -> str | None:
    """The offloading connector's events (--cpu-offload-blocks)."""
    from sim.events import (
        OffloadJobDone,
        OffloadJobsFlushed,
        OffloadLoadJob,
        OffloadLookupDeferred,
        OffloadStoreJob,
        OffloadStoreSkipped,
        RemoteKVsReady,
    )
    if isinstance(ev, OffloadStoreJob):
        evicted = f", evicting #{', #'.join(ev.evicted)}" if ev.evicted else ""
        return (f"store job {ev.job_id} for {ev.request_id}: gpu "
                f"{','.join(map(str, ev.gpu_blocks))} -> cpu "
                f"{','.join(map(str, ev.cpu_blocks))}{evicted}")
    if isinstance(ev, OffloadLoadJob):
        return (f"load job {ev.job_id} for {ev.request_id}: {_tokens(ev.num_tokens)} after "
                f"{ev.num_local_tokens} cached on the GPU, cpu "
                f"{','.join(map(str, ev.cpu_blocks))} -> gpu "
                f"{','.join(map(str, ev.gpu_blocks))}")
    if isinstance(ev, OffloadJobDone):
        return f"{ev.kind} job {ev.job_id} of {ev.request_id} done"
    if isinstance(ev, OffloadJobsFlushed):
        return (f"flush job{'s' if len(ev.job_ids) > 1 else ''} "
                f"{', '.join(map(str, ev.job_ids))} ({ev.reason})")
    if isinstance(ev, OffloadStoreSkipped):
        return f"cannot store {ev.request_id}'s {ev.num_blocks} block(s): the CPU tier is busy"
    if isinstance(ev, OffloadLookupDeferred):
        return f"{ev.request_id} waits ({ev.reason})"
    if isinstance(ev, RemoteKVsReady):
        return f"{ev.request_id} loaded: {_tokens(ev.num_computed_tokens)} computed"
    return None


def format_step_v1(engine, out) -> str:
    so = out.scheduler_outputs
    kinds = [f"{s.request_id}(prefill {s.num_tokens})" if s.prefill
             else f"{s.request_id}(decode)" if s.num_tokens == 1
             else f"{s.request_id}(decode {s.num_tokens}, drafts included)"
             for s in out.scheduled()]
    snap = engine.snapshot(with_slots=False)
    q = snap["queues"]
    gpu = snap["gpu"]
    lines = [f"step {out.step}: scheduled {' '.join(kinds) or '-'}; "
             f"{_tokens(so.total_num_scheduled_tokens)}"]
    if snap["async_scheduling"]:
        # The async loop: whose output this step processed, and what is still in flight.
        done = (f"processed step {out.processed_step}'s output"
                if out.processed_step is not None else "processed no output")
        flight = ", ".join(f"step {b['step']}" for b in snap["batch_queue"]) or "nothing"
        lines.append(f"  async   {done}; in flight: {flight}")
    lines.append(f"  queues  waiting={q['waiting']} running={q['running']}")
    groups = snap.get("kv_cache_groups")
    for r in snap["requests"]:
        if groups and any(r["group_block_tables"]):
            ahead = r["num_output_placeholders"]
            lines.append(f"  {r['request_id']} seq {r['seqs'][0]['seq_id']}: "
                         f"len {r['seqs'][0]['len']}"
                         f"{f' (+{ahead} in flight)' if ahead else ''}")
            for g, table in zip(groups, r["group_block_tables"]):
                kind = (f"sliding {g['window']}" if g["kind"] == "sliding_window"
                        else f"chunked {g['window']}" if g["kind"] != "full_attention"
                        else "full")
                cells = " ".join(f"g{n}({f}){'*' if gpu['blocks'][n]['hash'] else ''}"
                                 for _, n, f in table)
                lines.append(f"    G{g['kv_cache_group_id']} {kind}: {cells}")
            continue
        for s in r["seqs"]:
            if s["block_table"]:
                table = " ".join(f"g{n}({f}){'*' if gpu['blocks'][n]['hash'] else ''}"
                                 for _, n, f in s["block_table"])
                ahead = r["num_output_placeholders"]
                lines.append(f"  {r['request_id']} seq {s['seq_id']}: len {s['len']}"
                             f"{f' (+{ahead} in flight)' if ahead else ''}  blocks {table}")
    cached_free = sum(1 for n in gpu["free_order"] if gpu["blocks"][n]["cached"])
    lines.append(f"  free    gpu {gpu['num_free']}/{gpu['num_blocks']} (block "
                 f"{snap['null_block']} is the null block; {cached_free} free blocks "
                 f"still cached)  free queue {gpu['free_order']}")
    cpu = snap.get("cpu_tier")
    if cpu is not None:
        held = [f"c{i}#{b['hash'][:4]}{'' if b['state'] == 'ready' else '(' + b['state'] + ')'}"
                for i, b in enumerate(cpu["blocks"]) if b["state"] != "free"]
        lines.append(f"  cpu     {cpu['num_blocks'] - cpu['num_free']}/{cpu['num_blocks']} "
                     f"used {' '.join(held)}")
    lines += step_lines(out.events, describe_v1_event)
    return "\n".join(lines)


def hybrid_kv_cache_config(args, block_size: int, num_gpu_blocks: int):
    """The KV cache groups of --model / --sliding-window, or None (one full group)."""
    from sim.v1.kv_cache_utils import attention_layer_specs, make_kv_cache_config
    if args.model and args.sliding_window:
        raise ValueError("give --model or --sliding-window, not both")
    if args.model:
        from sim.perf.models import get_model
        model = get_model(args.model)
        layer_types, window = model.get_layer_types(), model.sliding_window or None
    elif args.sliding_window:
        if args.sliding_window < 1 or args.sliding_per_full < 1:
            raise ValueError("--sliding-window and --sliding-per-full: whole numbers from 1")
        layer_types = (["full_attention"] + ["sliding_attention"] * args.sliding_per_full)
        window = args.sliding_window
    elif args.disable_hybrid_kv_cache_manager:
        raise ValueError("--disable-hybrid-kv-cache-manager needs --model or --sliding-window")
    else:
        return None
    specs = attention_layer_specs(layer_types, block_size, sliding_window=window)
    return make_kv_cache_config(num_gpu_blocks, specs, args.disable_hybrid_kv_cache_manager)


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
    if args.cpu_offload_blocks < 0:
        raise ValueError("--cpu-offload-blocks: a whole number of CPU blocks, 0 or more")
    kv_transfer_config = None
    if args.cpu_offload_blocks:
        kv_transfer_config = v1_config.KVTransferConfig(
            kv_connector="OffloadingConnector", kv_role="kv_both",
            kv_connector_extra_config={"num_cpu_blocks": args.cpu_offload_blocks,
                                       "offload_prompt_only": not args.offload_generated})
    kv_cache_config = hybrid_kv_cache_config(args, block_size, num_gpu_blocks)
    engine = V1Engine(
        v1_config.CacheConfig(block_size=block_size, num_gpu_blocks=num_gpu_blocks,
                              enable_prefix_caching=not args.no_prefix_caching),
        v1_config.SchedulerConfig(
            max_num_batched_tokens=budget, max_num_seqs=min(args.max_num_seqs, budget),
            enable_chunked_prefill=not args.no_chunked_prefill,
            long_prefill_token_threshold=args.long_prefill_token_threshold,
            watermark=args.watermark, policy=args.policy,
            num_speculative_tokens=args.num_speculative_tokens,
            num_lookahead_tokens=args.num_lookahead_tokens,
            async_scheduling=args.async_scheduling),
        seed=seed, spec_acceptance_rate=args.spec_acceptance_rate,
        kv_cache_config=kv_cache_config,
        kv_transfer_config=kv_transfer_config)
    for r in requests:
        if r.use_beam_search or (r.best_of is not None and r.best_of != r.n):
            raise ValueError(f"request {r.request_id!r}: V1 has no best_of and no beam "
                             "search in the engine")
        engine.add_request(r.request_id, r.prompt_len, r.sampling_params(),
                           arrival_step=r.arrival_step, output_len=r.output_len,
                           shared_prefix=args.prefix)
    return engine


def main_v1(args) -> int:
    if args.disaggregated:
        from sim.cli_pd import main_disaggregated
        return main_disaggregated(args)
    scenario = get_scenario(args.scenario) if args.scenario else None
    if scenario is None and not args.request:
        return usage()
    engine = build_v1_engine(args, scenario)
    if scenario is not None:
        print(f"# {scenario.name} (V1, vLLM v0.25.1): {scenario.description}")
    else:
        print("# custom (V1, vLLM v0.25.1): from the command line")
    steps = 0
    # With a CPU tier, also the steps that finish the last stores.
    while engine.has_requests() and steps < args.max_steps:
        print(format_step_v1(engine, engine.step()))
        steps += 1
    stats = engine.kv_cache_manager.prefix_cache_stats
    print(f"# prefix cache: {stats.hits} of {stats.queries} looked-up tokens hit "
          f"({stats.requests} lookups); after preemption {stats.preempted_hits} of "
          f"{stats.preempted_queries}")
    cstats = engine.scheduler.connector_prefix_cache_stats
    if cstats is not None:
        print(f"# CPU tier: {cstats.hits} of {cstats.queries} tokens looked up beyond the "
              f"GPU hit were loaded ({cstats.requests} lookups); after preemption "
              f"{cstats.preempted_hits} of {cstats.preempted_queries}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sim", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Run a named scenario (see --list) or your own requests through vLLM v0.5.5's "
            "engine (default) or the V1 engine, and print every step: the scheduled requests, "
            "the queues, each sequence's block table (g7(4) = GPU block 7 holding 4 tokens), "
            "free blocks and what happened.", 79),
        epilog=textwrap.fill(
            f"A request is {REQUEST_FORMAT}: A:6:12 is request A with a 6-token prompt that "
            "may generate up to 12 tokens. Options: n=N parallel samples, beam=K beam search "
            "of width K, arrival=STEP arrives at that step, output_len=N ends with EOS after "
            "N tokens.", 79) + "\n\nexamples:\n"
               "  python -m sim fig8\n"
               "  python -m sim --block-size 4 --gpu-blocks 10 --request A:6:16 "
               "--request C:5:10:n=2\n"
               "  python -m sim --engine v1 --gpu-blocks 11 --prefix 8 --request A:3:4 "
               "--request B:5:4:arrival=2\n"
               "  python -m sim --engine v1 --gpu-blocks 9 --cpu-offload-blocks 16 "
               "--request A:8:6 --request B:8:6 --request C:8:6")
    d = " (default: %(default)s)"
    p.add_argument("scenario", nargs="?", help="a named scenario (see --list)")
    p.add_argument("--list", action="store_true", help="list the named scenarios and exit")
    p.add_argument("--request", action="append", default=[], metavar=REQUEST_FORMAT,
                   help="a request; repeat for more (see the format below)")
    p.add_argument("--block-size", type=int, default=4, help="token slots per block" + d)
    p.add_argument("--gpu-blocks", type=int, default=16,
                   help="blocks in the GPU KV cache (V1: the null block included)" + d)
    p.add_argument("--cpu-blocks", type=int, default=16,
                   help="blocks of CPU swap space (v0.5.5 only)" + d)
    p.add_argument("--watermark", type=float, default=0.0,
                   help="fraction of GPU blocks admission leaves free (vLLM v0.5.5's own "
                        "default is 0.01)" + d)
    p.add_argument("--free-order", choices=["stack", "shuffled"], default="stack",
                   help="the GPU free list's first order (v0.5.5): vLLM's stack, or a seeded "
                        "shuffle" + d)
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the stand-in model's tokens and the shuffle" + d)
    p.add_argument("--max-num-seqs", type=int, default=256,
                   help="SchedulerConfig.max_num_seqs: sequences per step" + d)
    p.add_argument("--max-num-batched-tokens", type=int, default=None,
                   help="tokens per step; default: vLLM's (v0.5.5: max(max_model_len, 2048), "
                        "512 with chunked prefill; V1: 2048)")
    p.add_argument("--chunked-prefill", action="store_true",
                   help="v0.5.5: enable_chunked_prefill (V1 has it on)")
    p.add_argument("--preemption-mode", choices=["swap", "recompute"], default=None,
                   help="v0.5.5: force one mode (default: recompute one sequence, swap several)")
    p.add_argument("--scheduler", choices=["vllm", "static"], default="vllm",
                   help="v0.5.5: vLLM's scheduler, or static batching for comparison" + d)
    p.add_argument("--max-steps", type=int, default=1000, help="stop after this many steps" + d)
    p.add_argument("--engine", choices=["v0.5.5", "v1"], default="v0.5.5",
                   help="vLLM v0.5.5's engine or vLLM v0.25.1's V1 engine" + d)
    v1 = p.add_argument_group("V1 engine (with --engine v1)")
    v1.add_argument("--prefix", type=int, default=0, metavar="N",
                    help="every prompt starts with the same N tokens, a shared system "
                         "prompt" + d)
    v1.add_argument("--no-prefix-caching", action="store_true",
                    help="turn prefix caching off (V1 has it on)")
    v1.add_argument("--no-chunked-prefill", action="store_true",
                    help="turn chunked prefill off (V1 has it on)")
    v1.add_argument("--long-prefill-token-threshold", type=int, default=0,
                    help="cap a prompt chunk at this many tokens (0: no cap)" + d)
    v1.add_argument("--policy", choices=["fcfs", "priority"], default="fcfs",
                    help="scheduling policy" + d)
    v1.add_argument("--num-speculative-tokens", type=int, default=0,
                    help="draft tokens proposed per step (speculative decoding)" + d)
    v1.add_argument("--num-lookahead-tokens", type=int, default=0,
                    help="slots allocated ahead for drafts" + d)
    v1.add_argument("--spec-acceptance-rate", type=float, default=0.7,
                    help="the stand-in drafter's chance that a draft token is right" + d)
    v1.add_argument("--async-scheduling", action=argparse.BooleanOptionalAction, default=None,
                    help="the engine loop: async scheduling schedules each step before the "
                         "previous step's output is processed (vLLM's default, unless "
                         "speculative decoding is on); --no-async-scheduling runs the "
                         "synchronous loop")
    v1.add_argument("--cpu-offload-blocks", type=int, default=0, metavar="N",
                    help="a CPU tier of N blocks (the offloading connector; 0: none)" + d)
    v1.add_argument("--offload-generated", action="store_true",
                    help="with --cpu-offload-blocks: offload the blocks of generated tokens "
                         "too (vLLM's offload_prompt_only: false)")
    v1.add_argument("--model", default=None, metavar="ID",
                    help="a model preset's attention layers (e.g. gpt-oss-20b: sliding "
                         "window 128 every other layer): one KV cache group per type; with "
                         "--disaggregated, the dense model whose KV size and step times are "
                         "used (default llama-3-8b)")
    v1.add_argument("--sliding-window", type=int, default=0, metavar="N",
                    help="a hybrid model whose sliding-window layers attend to N tokens")
    v1.add_argument("--sliding-per-full", type=int, default=1, metavar="K",
                    help="with --sliding-window: K sliding-window layers per full-attention "
                         "layer" + d)
    v1.add_argument("--disable-hybrid-kv-cache-manager", action="store_true",
                    help="treat every layer as full attention (one KV cache group)")
    pd = p.add_argument_group(
        "disaggregated prefill and decode (with --engine v1 --disaggregated)",
        "Two V1 instances with NIXL's KV connector, priced on a GPU's roofline. A request's "
        "arrival is in milliseconds; abort=MS and fail=1 are options too.")
    pd.add_argument("--disaggregated", action="store_true",
                    help="run the requests through a prefill and a decode instance")
    pd.add_argument("--link", choices=list(LINKS), default="ib-ndr",
                    help="what carries the KV between them" + d)
    pd.add_argument("--decode-gpu-blocks", type=int, default=None,
                    help="the decode instance's blocks, null block included (default: "
                         "--gpu-blocks)")
    pd.add_argument("--kv-load-failure-policy", choices=["fail", "recompute"], default="fail",
                    help="what the decode instance does with a failed read" + d)
    pd.add_argument("--gpu", choices=sorted(GPUS), default="h200",
                    help="the GPU whose datasheet roofline prices each step" + d)
    return p


def usage() -> int:
    """No scenario and no request: say what to give, with the full help."""
    build_parser().print_help(sys.stderr)
    print("\nerror: give a scenario name (python -m sim --list) or at least one --request",
          file=sys.stderr)
    return 2


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
    if args.disaggregated:
        print("error: --disaggregated needs --engine v1 (vLLM v0.5.5 has no KV connector)",
              file=sys.stderr)
        return 2
    try:
        if args.scenario:
            scenario = get_scenario(args.scenario)
        else:
            if not args.request:
                return usage()
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
