"""`python -m sim --engine v1 --disaggregated ...`: requests through a prefill and a decode
instance of the V1 engine with NIXL's connector (sim/studies/disaggregated.py), every step of
either instance printed as it ends, on one clock priced with the roofline.

    python -m sim --engine v1 --disaggregated --block-size 16 --gpu-blocks 25 \
        --link ethernet-25g --max-num-batched-tokens 64 \
        --request A:96:4 --request B:160:3:arrival=1 --request C:64:2:arrival=9

In this mode a request's `arrival` is in milliseconds, and two more options apply:
`abort=MS` (its client gives up then) and `fail=1` (its KV read fails). `--gpu-blocks`
counts each instance's blocks, the null block included, as for V1; `--decode-gpu-blocks`
sets the decode instance's apart. Both instances run V1's synchronous loop (the driver
prices each step's two halves on its clock), whatever `--async-scheduling` says.
"""
from __future__ import annotations

from sim.events import (
    Aborted,
    BlocksHeld,
    KVLoadFailed,
    KVTransferFinished,
    RemoteKVsReady,
    RequestFinished,
    WaitingForRemoteKVs,
)
from sim.perf.cost import Roofline
from sim.perf.hardware import get_gpu
from sim.perf.models import MODELS, get_model
from sim.studies.disaggregated import DECODE, PREFILL, DisaggregatedServing, PDRequest, PDSetup

PD_REQUEST_FORMAT = "ID:PROMPT_LEN:MAX_TOKENS[:arrival=MS][:abort=MS][:fail=1]"


def parse_pd_request(text: str) -> PDRequest:
    parts = text.split(":")
    if len(parts) < 3 or not all(p.isascii() and p.isdigit() for p in parts[1:3]):
        raise ValueError(f"request {text!r}: expected {PD_REQUEST_FORMAT}, e.g. A:96:4")
    kw: dict = {}
    for opt in parts[3:]:
        key, _, value = opt.partition("=")
        if key not in ("arrival", "abort", "fail") or not (value.isascii() and value.isdigit()):
            raise ValueError(f"request {text!r}: option {opt!r} must be arrival=MS, abort=MS "
                             "or fail=1")
        kw[key] = int(value)
    arrival = kw.get("arrival", 0) / 1000
    abort = kw.get("abort")
    return PDRequest(parts[0], int(parts[1]), int(parts[2]), arrival,
                     abort_s=None if abort is None else abort / 1000,
                     fail_transfer=bool(kw.get("fail", 0)))


def describe_pd_event(ev) -> str | None:
    if isinstance(ev, WaitingForRemoteKVs):
        return (f"{ev.request_id} waits for remote KVs: {ev.num_external_tokens} tokens into "
                f"blocks {', '.join(map(str, ev.blocks))}"
                + (f" ({ev.num_local_tokens} hit locally)" if ev.num_local_tokens else ""))
    if isinstance(ev, RemoteKVsReady):
        return (f"{ev.request_id}'s KVs are in: {ev.num_computed_tokens} tokens computed"
                + (" (after a failed read)" if ev.failed else ""))
    if isinstance(ev, BlocksHeld):
        return f"{ev.request_id} finished, blocks {', '.join(map(str, ev.blocks))} held"
    if isinstance(ev, KVTransferFinished):
        return f"{ev.request_id}: finished_{ev.direction}"
    if isinstance(ev, KVLoadFailed):
        return (f"{ev.request_id}: load failed (blocks {', '.join(map(str, ev.invalid_blocks))}"
                f"), {ev.num_computed_tokens} tokens left computed, policy {ev.policy}")
    if isinstance(ev, RequestFinished):
        return f"{ev.request_id} finished ({ev.status})"
    if isinstance(ev, Aborted):
        return f"{ev.request_id} aborted ({ev.queue})"
    return None


def format_row(row) -> str:
    snap = row.snapshot
    side = snap["engine"]
    ran = " ".join(f"{s.request_id}({'prefill' if s.prefill else 'decode'} {s.num_tokens})"
                   for s in row.scheduled) or "-"
    lines = [f"{snap['start_s'] * 1e3:8.2f}-{snap['time_s'] * 1e3:8.2f} ms  {side:7} step: "
             f"ran {ran}"]
    for name in (PREFILL, DECODE):
        s = snap[name]
        q = s["queues"]
        held = [r["request_id"] for r in s["requests"]
                if r["finished_step"] is not None and r["seqs"][0]["block_table"]]
        lines.append(f"  {name:7} running={q['running']} waiting={q['pending'] + q['waiting']} "
                     f"skipped_waiting={q['skipped_waiting']} held={held} "
                     f"free {s['gpu']['num_free']}/{s['gpu']['num_blocks'] - 1}")
    for t in snap["link"]["transfers"]:
        if t["end_s"] > snap["start_s"] or not t["done"]:
            state = ("failed" if t["failed"] and t["done"] else
                     f"{t['num_landed']}/{len(t['local_block_ids'])} blocks landed")
            lines.append(f"  link    {t['request_id']}: prefill blocks {t['remote_block_ids']} "
                         f"-> decode blocks {t['local_block_ids']}, {t['start_s'] * 1e3:.2f}-"
                         f"{t['end_s'] * 1e3:.2f} ms, {state}")
    lines += [f"  - {d}" for d in map(describe_pd_event, row.events) if d]
    return "\n".join(lines)


def main_disaggregated(args) -> int:
    if args.scenario or not args.request:
        raise ValueError("--disaggregated takes --request arguments (no named scenario)")
    requests = [parse_pd_request(r) for r in args.request]
    budget = args.max_num_batched_tokens or 2048
    decode_blocks = args.decode_gpu_blocks or args.gpu_blocks
    setup = PDSetup(block_size=args.block_size, prefill_blocks=args.gpu_blocks - 1,
                    decode_blocks=decode_blocks - 1, max_num_batched_tokens=budget,
                    max_num_seqs=min(args.max_num_seqs, budget),
                    max_model_len=max(r.prompt_len + r.output_len for r in requests),
                    link=args.link, kv_load_failure_policy=args.kv_load_failure_policy,
                    enable_prefix_caching=not args.no_prefix_caching)
    model_id = args.model or "llama-3-8b"
    if model_id not in MODELS:
        raise ValueError(f"--disaggregated prices steps with a dense model's shapes: --model "
                         f"must be one of {', '.join(sorted(MODELS))} (got {model_id!r})")
    model = get_model(model_id)
    gpu = get_gpu(args.gpu)
    serving = DisaggregatedServing(requests, setup, model, Roofline.from_gpu(gpu),
                                   seed=args.seed, with_slots=False)
    print(f"# disaggregated (V1, vLLM v0.25.1, NIXL): {model.name} on {gpu.name} (datasheet "
          f"roofline), link {serving.link.name}, {serving.block_bytes:,} bytes per block")
    trace = serving.run(max_rows=args.max_steps)
    for row in trace.steps[1:]:
        print(format_row(row))
    if trace.stopped:
        print(f"# stopped: {trace.stopped}")
    for rid, rec in trace.meta["records"].items():
        first = (f"first token {rec.token_times_s[0] * 1e3:.2f} ms" if rec.token_times_s
                 else "no token")
        read = (f"read {rec.transfer_start_s * 1e3:.2f}-{rec.transfer_end_s * 1e3:.2f} ms, "
                if rec.transfer_start_s is not None else "")
        print(f"# {rid}: {rec.outcome}; {read}{first}, {len(rec.token_times_s)} tokens")
    return 1 if trace.stopped else 0
