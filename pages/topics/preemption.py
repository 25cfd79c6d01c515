"""The preemption page: what vLLM v0.5.5 does when the GPU KV cache runs out mid-batch.

The widget drives sim's engine on a workload that overflows the GPU blocks and draws, after
every iteration, the queues, the block tables, the GPU and the CPU block pools, with arrows
for the blocks that were swapped out or in. The narration is written from the step's events
and from integrity checks the simulation makes (sim/core/invariants.py): after a swap round trip
or a recompute, the restored request's cached tokens are read back through its new block
table and compared with what it held before it was preempted.

The build-time chart draws data/h200-swap-vs-recompute.json: swap-out and swap-in time
against block size, beside recomputing the same tokens.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from pages.views import chart, kv_view, svg
from pages.views.narrate import blocks_list, describe_step, join
from pages.framework.registry import Chart
from pages.views.text import wrap
from pages.framework.widget import Param, Widget
from sim.core.block_manager import AllocStatus
from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.events import Admitted, BlockAllocated, Preempted, SwappedIn, SwappedOut
from sim.core.invariants import check_engine, read_back, seq_payload_intact
from sim.errors import SwapSpaceError
from sim.core.sequence import SamplingParams, SequenceStatus

MAX_REQUESTS = 5
MAX_LEN = 20
MAX_ARRIVAL = 30
MAX_N = 2
MAX_STEPS = 40
MAX_SLOTS = 96     # token slots per pool: every slot stays legible and a trace stays small
NAMES = "ABCDEF"
DATA_FILE = "data/h200-swap-vs-recompute.json"

MODES = (("swap", "swap (PreemptionMode.SWAP)"),
         ("recompute", "recompute (PreemptionMode.RECOMPUTE)"),
         ("auto", "vLLM's default: recompute one sequence, swap several"))

_REQUEST = re.compile(r"^(\d+)\s*/\s*(\d+)(?:\s*x\s*(\d+))?(?:\s*@\s*(\d+))?$")


def parse_requests(text: str) -> tuple[tuple[int, int, int, int], ...]:
    """"6/12, 5/12x2, 3/3@8" -> ((6, 12, 0, 1), (5, 12, 0, 2), (3, 3, 8, 1)):
    prompt/output[xN samples][@arrival]."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not 1 <= len(items) <= MAX_REQUESTS:
        raise ValueError(f"1 to {MAX_REQUESTS} requests, written prompt/output[xN][@step] and "
                         "separated by commas, e.g. 6/12, 5/12, 3/3@8")
    out = []
    for i, item in enumerate(items):
        m = _REQUEST.match(item)
        if not m:
            raise ValueError(f"request {i + 1} should look like 6/12, 5/10x2 or 3/3@8 "
                             "(prompt tokens / output tokens, x samples, @ arrival step)")
        prompt, output = int(m[1]), int(m[2])
        n, arrival = int(m[3] or 1), int(m[4] or 0)
        if not (1 <= prompt <= MAX_LEN and 1 <= output <= MAX_LEN):
            raise ValueError(f"request {i + 1}: prompt and output lengths must be from 1 to "
                             f"{MAX_LEN}")
        if not 1 <= n <= MAX_N:
            raise ValueError(f"request {i + 1}: from 1 to {MAX_N} parallel samples (x1 to "
                             f"x{MAX_N})")
        if arrival > MAX_ARRIVAL:
            raise ValueError(f"request {i + 1}: the arrival step must be at most {MAX_ARRIVAL}")
        out.append((prompt, output, arrival, n))
    return tuple(out)


def format_requests(requests) -> str:
    return ", ".join(f"{p}/{o}" + (f"x{n}" if n > 1 else "") + (f"@{a}" if a else "")
                     for p, o, a, n in requests)


def make_engine(v: dict) -> LLMEngine:
    mode = None if v["preemption_mode"] == "auto" else v["preemption_mode"]
    engine = LLMEngine(
        CacheConfig(block_size=v["block_size"], num_gpu_blocks=v["num_gpu_blocks"],
                    num_cpu_blocks=v["num_cpu_blocks"], watermark=v["watermark"]),
        SchedulerConfig(preemption_mode=mode), seed=v["seed"])
    for name, (prompt, output, arrival, n) in zip(NAMES, v["requests"]):
        # ignore_eos: each sequence generates exactly `output` tokens, as in benchmarks.
        engine.add_request(name, prompt,
                           SamplingParams(n=n, max_tokens=output, ignore_eos=True),
                           arrival_step=arrival)
    return engine


# -- drawing -------------------------------------------------------------------------------

def _arrow(x1: float, y1: float, x2: float, y2: float, tip: str) -> str:
    """A line with an arrowhead at (x2, y2), in the highlight colour."""
    dx, dy = x2 - x1, y2 - y1
    length = math.hypot(dx, dy) or 1.0
    ux, uy = dx / length, dy / length
    hx, hy = x2 - 6 * ux, y2 - 6 * uy
    p1 = (hx - 3.5 * uy, hy + 3.5 * ux)
    p2 = (hx + 3.5 * uy, hy - 3.5 * ux)
    head = (f"M{svg.num(round(x2, 2))} {svg.num(round(y2, 2))} "
            f"L{svg.num(round(p1[0], 2))} {svg.num(round(p1[1], 2))} "
            f"L{svg.num(round(p2[0], 2))} {svg.num(round(p2[1], 2))} Z")
    return svg.group([
        svg.line(round(x1, 2), round(y1, 2), round(hx, 2), round(hy, 2), stroke="highlight",
                 width=1.8),
        f"<path{svg.attrs(d=head, style='fill:' + svg.color('highlight'))}/>",
    ], tip=tip)




def draw(snap: dict, events: list, heading: str, notes: list[str],
         status: str, error: str | None = None) -> tuple[list[str], float]:
    h = kv_view.highlights(events)
    x = kv_view.MARGIN
    parts = [svg.text(x, 16, heading, size=13)]
    y = 24
    elements, dy = kv_view.queues(x, y, snap, h)
    parts += elements
    y += dy + 2
    for note, color in notes:
        for line in wrap(note, 62):
            parts.append(svg.text(x, y + 10, line, size=10, fill=color))
            y += 13
    y += 4
    elements, dy = kv_view.block_tables(x, y, snap, h)
    parts += elements
    y += dy + 6
    gpu = snap["gpu"]
    wm = snap["watermark_blocks"]
    title = (f"GPU physical blocks: {gpu['num_blocks'] - gpu['num_free']} used, "
             f"{gpu['num_free']} free; watermark {wm} block{'s' if wm != 1 else ''}")
    gpu_y = y
    elements, dy = kv_view.pool(x, y, snap, "gpu", h, title=title)
    parts += elements
    y += dy + 10
    cpu = snap["cpu"]
    cpu_y = y
    moved = [e for e in events if isinstance(e, (SwappedOut, SwappedIn))]
    if cpu["num_blocks"]:
        title = (f"CPU swap space: {cpu['num_blocks'] - cpu['num_free']} used, "
                 f"{cpu['num_free']} free")
        if moved:
            title += "; arrows: " + " and ".join(dict.fromkeys(
                "blocks_to_swap_out" if isinstance(e, SwappedOut) else "blocks_to_swap_in"
                for e in moved))
        elements, dy = kv_view.pool(x, y, snap, "cpu", h, title=title)
        parts += elements
        y += dy + 2
    else:
        parts.append(svg.text(x, y + 12, "CPU swap space: 0 blocks", size=10, fill="muted"))
        y += 20
    for e in moved:
        for a, b in e.mapping:
            g, c = (a, b) if isinstance(e, SwappedOut) else (b, a)
            gx, gy, gw, gh = kv_view.pool_block_box(x, gpu_y, snap, g)
            cx, cy, cw, _ = kv_view.pool_block_box(x, cpu_y, snap, c)
            start, end = (gx + gw / 2, gy + gh), (cx + cw / 2, cy)
            if isinstance(e, SwappedIn):
                start, end = end, start
                tip = f"{e.request_id}: CPU block {c} swapped in to GPU block {g}"
            else:
                tip = f"{e.request_id}: GPU block {g} swapped out to CPU block {c}"
            parts.append(_arrow(*start, *end, tip=tip))
    parts.append(svg.text(x, y + 12, status, size=10,
                          fill="muted" if status.startswith("check_engine: ok") else "highlight"))
    y += 18
    if error:
        lines = wrap(error, 56)
        box_h = 14 * len(lines) + 12
        parts.append(svg.rect(x, y + 2, kv_view.WIDTH - 2 * x, box_h, fill="panel",
                              stroke="highlight", stroke_width=2, tip="vLLM stops here"))
        for i, line in enumerate(lines):
            parts.append(svg.text(x + 8, y + 18 + 14 * i, line, size=10.5))
        y += box_h + 6
    return parts, y + 4


# -- what the simulation checked ---------------------------------------------------------

def _reads(engine) -> dict[int, list]:
    """What every sequence holding blocks reads back now, by seq_id."""
    tables = engine.block_manager.block_tables
    out = {}
    for group in engine.requests.values():
        for seq in group.get_seqs():
            if seq.seq_id in tables and not seq.is_finished():
                out[seq.seq_id] = read_back(engine, seq)
    return out


def _status(engine) -> str:
    problems = check_engine(engine)
    if not problems:
        return "check_engine: ok (ref counts, free lists, every token reads back)"
    return "check_engine found: " + "; ".join(problems[:2])


def _restore_sentences(engine, events, saved: dict, labels: dict) -> list[str]:
    """For each request restored this step (swapped in, or recomputed), compare what its
    sequences read back now with what they held before they were preempted."""
    out = []
    restored = [e.request_id for e in events if isinstance(e, SwappedIn)]
    restored += [e.request_id for e in events if isinstance(e, Admitted) and e.recompute]
    for rid in restored:
        group = engine.requests[rid]
        how = "swapped in" if any(isinstance(e, SwappedIn) and e.request_id == rid
                                  for e in events) else "recomputed"
        for seq in group.get_seqs():
            before = saved.pop(seq.seq_id, None)
            if before is None or seq.seq_id not in engine.block_manager.block_tables:
                continue
            now = read_back(engine, seq)
            same = now[:len(before)] == before and seq_payload_intact(engine, seq)
            table = engine.block_manager.get_block_table(seq)
            if same:
                out.append(f"Check: {labels.get(seq.seq_id, rid)}'s {len(before)} cached "
                           f"tokens, {how}, read back through its new block table "
                           f"({blocks_list(table)}) exactly as before the preemption: same "
                           "token id at the same position in every slot.")
            else:
                out.append(f"Check FAILED: {labels.get(seq.seq_id, rid)}'s tokens do not read "
                           "back as before the preemption.")
    return out


def _swap_out_sentences(engine, events, saved: dict, labels: dict) -> list[str]:
    out = []
    for e in events:
        if isinstance(e, SwappedOut):
            for seq in engine.requests[e.request_id].get_seqs(status=SequenceStatus.SWAPPED):
                before = saved.get(seq.seq_id)
                if before is not None and read_back(engine, seq) == before:
                    out.append(f"Check: {labels.get(seq.seq_id, e.request_id)}'s "
                               f"{len(before)} cached tokens read back from the CPU copy "
                               "exactly as they were on the GPU.")
    return out


def _waiting_notes(engine, events) -> list[str]:
    """Why the heads of `swapped` and `waiting` stay where they are (vLLM's own tests,
    asked of the block manager in the state the picture shows)."""
    sched = engine.scheduler
    bm = engine.block_manager
    free = bm.get_num_free_gpu_blocks()
    wm = bm.watermark_blocks
    out = []
    back = [e.request_id for e in events if isinstance(e, SwappedIn)]
    if back and sched.waiting and not sched.swapped and not any(
            isinstance(e, Admitted) for e in events):
        names = join([g.request_id for g in sched.waiting])
        out.append(f"{names} still waited this step: admission is skipped while a request is "
                   f"swapped out, and {join(back)} only came back in this step.")
    if sched.swapped:
        group = sched.swapped[0]
        status = bm.can_swap_in(group)
        if status is AllocStatus.LATER:
            blocks = bm.num_blocks_to_move(group)
            seqs = group.num_seqs(status=SequenceStatus.SWAPPED)
            out.append(f"{group.request_id} stays swapped out: can_swap_in needs its {blocks} "
                       f"block{'s' if blocks != 1 else ''} + {seqs} for the next token"
                       f"{'s' if seqs != 1 else ''} and {wm} left free (the watermark); "
                       f"{free} {'is' if free == 1 else 'are'} free.")
        if sched.waiting:
            names = join([g.request_id for g in sched.waiting])
            out.append(f"{names} wait{'s' if len(sched.waiting) == 1 else ''}: nothing is "
                       "admitted while a request is swapped out.")
    elif sched.waiting:
        group = sched.waiting[0]
        seq = group.get_seqs(status=SequenceStatus.WAITING)[0]
        if bm.can_allocate(group) is AllocStatus.LATER:
            need = seq.n_blocks
            what = "recomputing" if seq.get_output_len() else "its prompt of"
            out.append(f"{group.request_id} waits at the front: can_allocate needs {need} "
                       f"block{'s' if need != 1 else ''} for {what} {seq.get_len()} tokens "
                       f"and {wm} left free (the watermark); {free} "
                       f"{'is' if free == 1 else 'are'} free.")
    return out


def _victim_notes(prev_running: list[str], events) -> list[str]:
    out = []
    for e in events:
        if isinstance(e, Preempted):
            order = ", ".join(prev_running)
            if e.victim_is_self:
                why = (f"can_append_slots({e.request_id}) finds no free block and nobody "
                       f"else is left in running [{order}]: it preempts itself")
            else:
                why = (f"can_append_slots({e.needed_by}) finds no free block; the victim "
                       f"is {e.request_id}, the tail of running [{order}]")
            out.append(f"Preempted ({e.mode}): {why}.")
    return out


def _reuse(events, request_of: dict, last_owner: dict) -> str:
    reused: dict[tuple[str, str], list[int]] = {}
    for e in events:
        if isinstance(e, BlockAllocated) and e.device == "gpu":
            rid = request_of.get(e.seq_ids[0], "?")
            before = last_owner.get(e.physical)
            if before is not None and before != rid:
                reused.setdefault((rid, before), []).append(e.physical)
            last_owner[e.physical] = rid
        elif isinstance(e, SwappedIn):
            for _, g in e.mapping:
                last_owner[g] = e.request_id
    return "".join(f" {rid} now uses {blocks_list(nums)}, which {before} held before."
                   for (rid, before), nums in reused.items())


def build(v: dict) -> list[dict]:
    engine = make_engine(v)
    mode = dict(MODES)[v["preemption_mode"]]
    snap = engine.snapshot()
    wm = snap["watermark_blocks"]
    intro = (f"{len(v['requests'])} requests; {v['num_gpu_blocks']} GPU blocks and "
             f"{v['num_cpu_blocks']} CPU blocks of {v['block_size']} slots; watermark "
             f"int({v['watermark']:g} x {v['num_gpu_blocks']}) = {wm} block"
             f"{'s' if wm != 1 else ''}; preemption mode: {mode}.")
    drawn = [(draw(snap, [], "Before the first iteration", [], _status(engine)), intro)]
    labels: dict[int, str] = {}
    request_of: dict[int, str] = {}
    last_owner: dict[int, str] = {}
    saved: dict[int, list] = {}          # what preempted sequences held, by seq_id
    while engine.has_unfinished_requests():
        if len(drawn) > MAX_STEPS:
            parts, height = draw(snap, [], f"Stopped after {MAX_STEPS} iterations", [],
                                 _status(engine))
            drawn.append(((parts, height), f"The picture stops after {MAX_STEPS} iterations; "
                          "requests are still running. Use fewer or shorter requests."))
            break
        prev_snap, prev_reads = snap, _reads(engine)
        prev_running = list(prev_snap["queues"]["running"])
        try:
            out = engine.step()
        except SwapSpaceError as err:
            drawn.append(_error_frame(engine, prev_snap, prev_running, str(err), swap=True))
            break
        except RuntimeError as err:
            drawn.append(_error_frame(engine, prev_snap, prev_running, str(err), swap=False))
            break
        snap = engine.snapshot()
        labels.update(kv_view.seq_labels(snap))
        for r in snap["requests"]:
            for s in r["seqs"]:
                request_of[s["seq_id"]] = r["request_id"]
        for e in out.events:
            if isinstance(e, Preempted):
                for seq in engine.requests[e.request_id].get_seqs():
                    if seq.seq_id in prev_reads:
                        saved[seq.seq_id] = prev_reads[seq.seq_id]
        so = out.scheduler_outputs
        kind = ("prefill" if so.num_prefill_groups
                else "decode" if so.scheduled_seq_groups else "idle")
        text = describe_step(_as_step(out), labels, request_of)
        text += _reuse(out.events, request_of, last_owner)
        checks = (_swap_out_sentences(engine, out.events, saved, labels)
                  + _restore_sentences(engine, out.events, saved, labels))
        waits = _waiting_notes(engine, out.events)
        if checks:
            text += " " + " ".join(checks)
        if waits:
            text += " " + " ".join(waits)
        notes = ([(n, "highlight") for n in _victim_notes(prev_running, out.events)]
                 + [(n, "fg") for n in waits])
        status = _status(engine)
        drawn.append((draw(snap, out.events, f"After iteration {out.step} ({kind})", notes,
                           status), text))
    height = max(hh for (_, hh), _ in drawn)
    return [{"svg": svg.document(kv_view.WIDTH, height, parts,
                                 label="Queues, block tables, GPU and CPU block pools"),
             "narration": text} for (parts, _), text in drawn]


def _error_frame(engine, prev_snap: dict, prev_running: list[str], message: str,
                 swap: bool):
    """The last frame when vLLM would stop: the state before the failing step, the victim,
    and vLLM's own message."""
    step = engine.step_index
    pending = [e for e in (engine.scheduler.events or []) if isinstance(e, Preempted)]
    victim = pending[-1] if pending else None
    if victim is None:
        who = ""
    elif victim.victim_is_self:
        who = (f"{victim.request_id} needs a block and nobody else is left to preempt, so it "
               "preempts itself. ")
    else:
        who = (f"{victim.needed_by} needs a block; the victim is {victim.request_id}, the "
               f"tail of running [{', '.join(prev_running)}]. ")
    if swap:
        explain = (f"Iteration {step}: {who}It must be swapped out, but the CPU swap space "
                   "has too few free blocks. vLLM v0.5.5 does not fall back to recompute: "
                   "the scheduler raises and the engine stops, for every request. vLLM's "
                   "message: " + message + " Give it more CPU blocks (swap_space) or choose "
                   "recompute.")
        heading = f"Iteration {step}: not enough CPU swap space"
    else:
        explain = (f"Iteration {step}: {who}Its request has several running sequences, and "
                   "vLLM v0.5.5 can recompute only a single sequence (an assert in "
                   "_preempt_by_recompute); the engine stops. Leave the preemption mode on "
                   "the default, which swaps such requests. (" + message + ")")
        heading = f"Iteration {step}: cannot recompute this request"
    events = [victim] if victim else []
    parts, height = draw(prev_snap, events, heading, [], "The state before this iteration:",
                         error=explain)
    return (parts, height), explain


def check(v: dict) -> dict[str, str]:
    for name, label in (("num_gpu_blocks", "GPU blocks"), ("num_cpu_blocks", "CPU blocks")):
        if v[name] * v["block_size"] > MAX_SLOTS:
            return {name: f"{label}: at most {MAX_SLOTS // v['block_size']} with block size "
                          f"{v['block_size']} ({MAX_SLOTS} token slots per pool, so that every "
                          "slot fits in the picture)"}
    for i, (_, output, arrival, _) in enumerate(v["requests"]):
        if arrival + output > 32:
            return {"requests": f"requests: request {i + 1} ends too late; keep arrival step "
                                "+ output tokens within 32"}
    return {}


WIDGETS = (Widget(
    id="preemption",
    title="Preemption: swap out, swap in, or recompute",
    summary="The GPU runs out of blocks mid-batch: the tail of running is preempted. Arrows "
            "show blocks copied between the GPU and the CPU swap space.",
    params=(
        Param("preemption_mode", "preemption mode", "choice", "swap", choices=MODES,
              help="SchedulerConfig.preemption_mode; vLLM's default recomputes a request with "
                   "one sequence and swaps one with several."),
        Param("num_gpu_blocks", "GPU blocks", "int", 10, min=2, max=16,
              help="Physical blocks in the GPU KV cache."),
        Param("num_cpu_blocks", "CPU blocks", "int", 8, min=0, max=16,
              help="Blocks of CPU swap space (vLLM: swap_space, 4 GiB per GPU by default)."),
        Param("block_size", "block size", "int", 4, min=1, max=16,
              help="Token slots per block (vLLM's default is 16)."),
        Param("watermark", "watermark", "float", 0.1, min=0.0, max=0.5,
              help="Fraction of GPU blocks admission and swap-in must leave free "
                   "(vLLM's default is 0.01)."),
        Param("requests", "requests", "text", ((6, 12, 0, 1), (5, 12, 0, 1), (4, 12, 0, 1),
                                               (3, 3, 8, 1)),
              parse=parse_requests, format=format_requests,
              help="prompt/output tokens, xN parallel samples, @arrival step; "
                   "e.g. 6/12, 5/12x2, 3/3@8"),
        Param("seed", "seed", "int", 0, min=0, max=9999, help="Seeds the token ids."),
    ),
    build=build,
    check=check,
),)


# -- the H200 measurements (build time only: the browser gets no data files) ----------------

def load_measurements() -> dict:
    root = Path(__file__).resolve().parents[2]
    return json.loads((root / DATA_FILE).read_text(encoding="utf-8"))


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.1f} ms" if ms >= 1 else f"{ms:.2f} ms"


def swap_vs_recompute_svg(tokens: int, data: dict | None = None) -> str:
    data = data if data is not None else load_measurements()
    rows = sorted((r for r in data["rows"] if r["tokens"] == tokens),
                  key=lambda r: r["block_size"])
    recompute = data["recompute_prefill_s"][str(tokens)]
    mb = rows[0]["bytes"] / 2 ** 20

    def series(name, key, color, dashed=False, marker="circle"):
        pts = [(r["block_size"], r[key] * 1e3) for r in rows]
        tips = [f"{name}, block size {r['block_size']}: {_ms(r[key])} "
                f"({r['copies']:,} copies)" for r in rows]
        return chart.Series(name, pts, color=color, kind="both", dashed=dashed, tips=tips,
                            marker=marker)

    sizes = [r["block_size"] for r in rows]
    flat = [(sizes[0], recompute * 1e3), (sizes[-1], recompute * 1e3)]
    at16 = next(r for r in rows if r["block_size"] == 16)
    lines = [
        series("swap out (GPU to CPU)", "swap_out_s", "seq-0"),
        series("swap in (CPU to GPU)", "swap_in_s", "seq-1", marker="square"),
        chart.Series("recompute (one prefill)", flat, color="highlight", kind="line"),
        series("one bulk copy (PCIe floor)", "bulk_out_s", "used", dashed=True),
    ]
    body = chart.plot(0, 0, 400, 290, lines,
                      x=chart.Axis("block size (tokens)", log=True, base=2),
                      y=chart.Axis("time (ms)", log=True, fmt=lambda v: f"{v:g}"),
                      markers=[chart.Marker(x=16, label="vLLM default", color="muted")],
                      title=f"H200: one {tokens:,}-token request ({mb:.0f} MiB of KV)",
                      legend=False)
    # The legend goes under the plot, where it hides no data.
    for i, s in enumerate(lines):
        lx, ly = 14 + (i % 2) * 196, 296 + (i // 2) * 16
        body.append(svg.rect(lx, ly, 12, 10, fill=s.color, rx=1))
        body.append(svg.text(lx + 17, ly + 9, s.name, size=10))
    note = (f"Block size 16: out {_ms(at16['swap_out_s'])}, in {_ms(at16['swap_in_s'])}, "
            f"recompute {_ms(recompute)}")
    body.append(svg.text(14, 346, note, size=10, fill="muted"))
    return svg.document(400, 356, body,
                        label=f"Swap and recompute time against block size, {tokens} tokens")


CHARTS = (
    Chart("swap-vs-recompute", "Swapping vs recomputing on an H200",
          lambda: swap_vs_recompute_svg(1024),
          caption="Measured on one NVIDIA H200 with a Llama-3-8B-shaped KV cache (128 KiB per "
                  "token): one copy per layer, K or V, and block, as vLLM v0.5.5's swap_blocks "
                  "issues them, beside one bulk copy of the same bytes and the prefill that "
                  "recomputes the tokens. Data: data/h200-swap-vs-recompute.json (its method "
                  "field says how)."),
    Chart("swap-vs-recompute-2048", "The same for a 2048-token request",
          lambda: swap_vs_recompute_svg(2048),
          caption="The same measurement for a request twice as long. "
                  "Data: data/h200-swap-vs-recompute.json."),
)


def _as_step(out):
    # Transitional: a StepOutput read as a trace Step, until this topic records a Trace.
    from types import SimpleNamespace
    return SimpleNamespace(step=out.step, events=out.events, scheduled=out.scheduled())
