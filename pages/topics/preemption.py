"""The preemption page: what vLLM v0.5.5 does when the GPU KV cache runs out mid-batch.

scenario: sim's engine on a workload that overflows the GPU blocks, recorded step by step,
          with the simulation's integrity checks (sim/core/invariants.py) after every step.
          When vLLM would stop (no CPU swap space left, or a recompute it cannot do), the
          trace ends on that step and vLLM's message.
view:     the queues, the block tables, the GPU and the CPU block pools, with arrows for the
          blocks swapped out or in (pages.views.arrows), and why the heads of `swapped` and
          `waiting` stay there (what the block manager answers, from the snapshot).
narrate:  the step's events in words, and after a swap round trip or a recompute, whether the
          restored request's cached tokens, read back through its new block table, are what
          it held before it was preempted (compared from the snapshots).

The build-time chart draws data/h200-swap-vs-recompute.json: swap-out and swap-in time
against block size, beside recomputing the same tokens.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pages.framework.registry import Chart
from pages.framework.request_list import RequestList
from pages.framework.widget import Context, Param, Widget
from pages.views import arrows, chart, kv_view, svg
from pages.views.narrate import blocks_list, describe_step, reuse_by_step
from pages.views.text import join, noun, plural, verb, wrap
from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.core.invariants import check_engine
from sim.core.sequence import SamplingParams
from sim.core.snapshot import payload_intact, read_back
from sim.events import Admitted, Preempted, SwappedIn, SwappedOut
from sim.trace import Step, Trace, record

MAX_REQUESTS = 5
MAX_LEN = 20
MAX_ARRIVAL = 30
MAX_STEPS = 40
MAX_SLOTS = 96     # token slots per pool: every slot stays legible and a trace stays small
DATA_FILE = "data/h200-swap-vs-recompute.json"

MODES = (("swap", "swap (PreemptionMode.SWAP)"),
         ("recompute", "recompute (PreemptionMode.RECOMPUTE)"),
         ("auto", "vLLM's default: recompute one sequence, swap several"))

REQUESTS = RequestList(max_requests=MAX_REQUESTS, max_len=MAX_LEN, max_arrival=MAX_ARRIVAL,
                       max_n=2)
CHECK_OK = "check_engine: ok (ref counts, free lists, every token reads back)"


def build_engine(v: dict) -> LLMEngine:
    """The page's engine with its requests added, before the first step."""
    mode = None if v["preemption_mode"] == "auto" else v["preemption_mode"]
    engine = LLMEngine(
        CacheConfig(block_size=v["block_size"], num_gpu_blocks=v["num_gpu_blocks"],
                    num_cpu_blocks=v["num_cpu_blocks"], watermark=v["watermark"]),
        SchedulerConfig(preemption_mode=mode), seed=v["seed"])
    for r in REQUESTS.named(v["requests"]):
        # ignore_eos: each sequence generates exactly `output` tokens, as in benchmarks.
        engine.add_request(r.name, r.prompt,
                           SamplingParams(n=r.n, max_tokens=r.output, ignore_eos=True),
                           arrival_step=r.arrival)
    return engine


def scenario(v: dict) -> Trace:
    trace = record(build_engine(v), max_steps=MAX_STEPS, check=check_engine)
    if trace.stopped != "max_steps":
        return trace
    # One more frame says that the picture stops here: the last state again, nothing new.
    last = trace.last
    cut = Step(len(trace), last.step, last.snapshot, problems=last.problems)
    return Trace(trace.steps + (cut,), trace.stopped, trace.meta)


def cut_off(step: Step, trace: Trace) -> bool:
    """Whether `step` is the frame that says the trace was cut short (see scenario)."""
    return trace.stopped == "max_steps" and step.index == len(trace) - 1


@dataclass(frozen=True)
class PreemptionContext(Context):
    labels: dict = field(default_factory=dict)       # seq_id -> "A", "B.1", ...
    request_of: dict = field(default_factory=dict)   # seq_id -> request id
    reuse: list = field(default_factory=list)        # per step: [(request, before, blocks)]
    checks: list = field(default_factory=list)       # per step: cache checks, as sentences


def context(v: dict, trace: Trace) -> PreemptionContext:
    labels, request_of = kv_view.names(trace)
    return PreemptionContext(v, trace, labels, request_of, reuse_by_step(trace, request_of),
                             cache_checks(trace, labels))


# -- what the simulation checked ---------------------------------------------------------

def _live_seqs(snap: dict):
    for r in snap["requests"]:
        for s in r["seqs"]:
            if s["block_table"] and not s["status"].startswith("finished"):
                yield s


def cache_checks(trace: Trace, labels: dict[int, str]) -> list[list[str]]:
    """Per step, sentences comparing what a preempted sequence's cache held just before its
    preemption with what it reads back from the CPU copy after a swap out, and through its
    new block table once it is restored (swapped in, or recomputed)."""
    saved: dict[int, list] = {}          # what preempted sequences held, by seq_id
    out: list[list[str]] = [[]]
    for prev, step in zip(trace, trace.steps[1:]):
        sentences: list[str] = []
        out.append(sentences)
        if step.error:
            continue
        snap = step.snapshot
        seqs = {r["request_id"]: r["seqs"] for r in snap["requests"]}
        held = {s["seq_id"]: read_back(prev.snapshot, s) for s in _live_seqs(prev.snapshot)}
        for e in step.of_type(Preempted):
            for s in seqs[e.request_id]:
                if s["seq_id"] in held:
                    saved[s["seq_id"]] = held[s["seq_id"]]
        for e in step.of_type(SwappedOut):
            for s in seqs[e.request_id]:
                before = saved.get(s["seq_id"])
                if s["status"] == "swapped" and before is not None \
                        and read_back(snap, s) == before:
                    sentences.append(f"Check: {labels.get(s['seq_id'], e.request_id)}'s "
                                     f"{len(before)} cached tokens read back from the CPU "
                                     "copy exactly as they were on the GPU.")
        swapped_in = [e.request_id for e in step.of_type(SwappedIn)]
        recomputed = [e.request_id for e in step.of_type(Admitted) if e.recompute]
        for rid in swapped_in + recomputed:
            how = "swapped in" if rid in swapped_in else "recomputed"
            for s in seqs[rid]:
                before = saved.pop(s["seq_id"], None)
                if before is None or not s["block_table"]:
                    continue
                name = labels.get(s["seq_id"], rid)
                if read_back(snap, s)[:len(before)] == before and payload_intact(snap, s):
                    table = [number for _, number, _ in s["block_table"]]
                    sentences.append(f"Check: {name}'s {len(before)} cached tokens, {how}, "
                                     "read back through its new block table "
                                     f"({blocks_list(table)}) exactly as before the "
                                     "preemption: same token id at the same position in "
                                     "every slot.")
                else:
                    sentences.append(f"Check FAILED: {name}'s tokens do not read back as "
                                     "before the preemption.")
    return out


def status_line(step: Step) -> str:
    if not step.problems:
        return CHECK_OK
    return "check_engine found: " + "; ".join(step.problems[:2])


def waiting_notes(snap: dict, events) -> list[str]:
    """Why the heads of `swapped` and `waiting` stay where they are: vLLM's own tests
    (can_swap_in, can_allocate), as the block manager answered them in this state."""
    queues, heads = snap["queues"], snap["heads"]
    waiting = queues["waiting"]
    free = snap["gpu"]["num_free"]
    wm = snap["watermark_blocks"]
    out = []
    back = [e.request_id for e in events if isinstance(e, SwappedIn)]
    if back and waiting and not queues["swapped"] and not any(
            isinstance(e, Admitted) for e in events):
        out.append(f"{join(waiting)} still waited this step: admission is skipped while a "
                   f"request is swapped out, and {join(back)} only came back in this step.")
    if queues["swapped"]:
        head = heads["swapped"]
        if head["can_swap_in"] == "later":
            seqs = head["num_seqs"]
            out.append(f"{head['request_id']} stays swapped out: can_swap_in needs its "
                       f"{plural(head['num_blocks'], 'block')} + {seqs} for the next "
                       f"{noun(seqs, 'token')} and {wm} left free (the watermark); "
                       f"{free} {verb(free, 'is', 'are')} free.")
        if waiting:
            out.append(f"{join(waiting)} {verb(waiting, 'waits', 'wait')}: nothing is "
                       "admitted while a request is swapped out.")
    elif waiting:
        head = heads["waiting"]
        if head is not None and head["can_allocate"] == "later":
            what = "recomputing" if head["output_len"] else "its prompt of"
            out.append(f"{head['request_id']} waits at the front: can_allocate needs "
                       f"{plural(head['num_required_blocks'], 'block')} for {what} "
                       f"{head['len']} tokens and {wm} left free (the watermark); {free} "
                       f"{verb(free, 'is', 'are')} free.")
    return out


def victim_notes(prev_running: list[str], events) -> list[str]:
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


def stop(step: Step) -> tuple[str, str, Preempted | None]:
    """(heading, explanation, victim) for the step in which vLLM stops: the victim of that
    step could not be swapped out (no CPU space) or recomputed (several sequences)."""
    victims = step.of_type(Preempted)
    victim = victims[-1] if victims else None
    # The step never finished: its snapshot is the state before it.
    running = step.snapshot["queues"]["running"]
    if victim is None:
        who = ""
    elif victim.victim_is_self:
        who = (f"{victim.request_id} needs a block and nobody else is left to preempt, so it "
               "preempts itself. ")
    else:
        who = (f"{victim.needed_by} needs a block; the victim is {victim.request_id}, the "
               f"tail of running [{', '.join(running)}]. ")
    n = step.step
    if victim is not None and victim.mode == "swap":
        explain = (f"Iteration {n}: {who}It must be swapped out, but the CPU swap space "
                   "has too few free blocks. vLLM v0.5.5 does not fall back to recompute: "
                   "the scheduler raises and the engine stops, for every request. vLLM's "
                   "message: " + step.error + " Give it more CPU blocks (swap_space) or "
                   "choose recompute.")
        return f"Iteration {n}: not enough CPU swap space", explain, victim
    explain = (f"Iteration {n}: {who}Its request has several running sequences, and "
               "vLLM v0.5.5 can recompute only a single sequence (an assert in "
               "_preempt_by_recompute); the engine stops. Leave the preemption mode on "
               "the default, which swaps such requests. (" + step.error + ")")
    return f"Iteration {n}: cannot recompute this request", explain, victim


# -- the picture and the words -------------------------------------------------------------

def view(step: Step, ctx: PreemptionContext) -> svg.Figure:
    snap = step.snapshot
    if step.error:
        heading, explain, victim = stop(step)
        return draw(snap, [victim] if victim else [], heading, [],
                    "The state before this iteration:", error=explain)
    if cut_off(step, ctx.trace):
        return draw(snap, [], f"Stopped after {MAX_STEPS} iterations", [], status_line(step))
    if step.step is None:
        return draw(snap, [], "Before the first iteration", [], status_line(step))
    prev_running = ctx.trace.previous(step).snapshot["queues"]["running"]
    notes = ([(n, "highlight") for n in victim_notes(prev_running, step.events)]
             + [(n, "fg") for n in waiting_notes(snap, step.events)])
    return draw(snap, step.events, f"After iteration {step.step} ({step.kind})", notes,
                status_line(step))


def narrate(step: Step, ctx: PreemptionContext) -> str:
    v = ctx.values
    if step.error:
        return stop(step)[1]
    if cut_off(step, ctx.trace):
        return (f"The picture stops after {MAX_STEPS} iterations; requests are still "
                "running. Use fewer or shorter requests.")
    if step.step is None:
        mode = dict(MODES)[v["preemption_mode"]]
        wm = step.snapshot["watermark_blocks"]
        return (f"{len(v['requests'])} requests; {v['num_gpu_blocks']} GPU blocks and "
                f"{v['num_cpu_blocks']} CPU blocks of {v['block_size']} slots; watermark "
                f"int({v['watermark']:g} x {v['num_gpu_blocks']}) = {plural(wm, 'block')}; "
                f"preemption mode: {mode}.")
    text = describe_step(step, ctx.labels, ctx.request_of)
    text += "".join(f" {rid} now uses {blocks_list(nums)}, which {before} held before."
                    for rid, before, nums in ctx.reuse[step.index])
    for sentences in (ctx.checks[step.index], waiting_notes(step.snapshot, step.events)):
        if sentences:
            text += " " + " ".join(sentences)
    return text


def draw(snap: dict, events, heading: str, notes: list[tuple[str, str]], status: str,
         error: str | None = None) -> svg.Figure:
    """Queues, notes, block tables, the GPU pool, the CPU pool with swap arrows, the check
    line and (when vLLM stops) its message, top to bottom."""
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
    title = (f"GPU physical blocks: {gpu['num_blocks'] - gpu['num_free']} used, "
             f"{gpu['num_free']} free; watermark {plural(snap['watermark_blocks'], 'block')}")
    gpu_y = y
    elements, dy = kv_view.pool(x, y, snap, "gpu", h, title=title)
    parts += elements
    y += dy + 10
    cpu = snap["cpu"]
    cpu_y = y
    moved = arrows.swaps(events)
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
    parts += arrows.swap_arrows(x, gpu_y, cpu_y, snap, events)
    parts.append(svg.text(x, y + 12, status, size=10,
                          fill="muted" if status == CHECK_OK else "highlight"))
    y += 18
    if error:
        lines = wrap(error, 56)
        box_h = 14 * len(lines) + 12
        parts.append(svg.rect(x, y + 2, kv_view.WIDTH - 2 * x, box_h, fill="panel",
                              stroke="highlight", stroke_width=2, tip="vLLM stops here"))
        for i, line in enumerate(lines):
            parts.append(svg.text(x + 8, y + 18 + 14 * i, line, size=10.5))
        y += box_h + 6
    return svg.Figure(kv_view.WIDTH, y + 4, parts,
                      "Queues, block tables, GPU and CPU block pools")


def check(v: dict) -> dict[str, str]:
    for name, label in (("num_gpu_blocks", "GPU blocks"), ("num_cpu_blocks", "CPU blocks")):
        if v[name] * v["block_size"] > MAX_SLOTS:
            return {name: f"{label}: at most {MAX_SLOTS // v['block_size']} with block size "
                          f"{v['block_size']} ({MAX_SLOTS} token slots per pool, so that every "
                          "slot fits in the picture)"}
    for i, r in enumerate(REQUESTS.named(v["requests"])):
        if r.arrival + r.output > 32:
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
        REQUESTS.param("requests", "6/12, 5/12, 4/12, 3/3@8"),
        Param("seed", "seed", "int", 0, min=0, max=9999, help="Seeds the token ids."),
    ),
    scenario=scenario, context=context, view=view, narrate=narrate, check=check,
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
