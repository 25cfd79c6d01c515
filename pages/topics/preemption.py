"""The preemption page: what vLLM does when the GPU KV cache runs out mid-batch.

scenario: sim's engine on a workload that overflows the GPU blocks, recorded step by step,
          with the simulation's integrity checks after every step: vLLM v0.5.5's engine
          (sim.core, sim/core/invariants.py) or V1's (sim.v1, sim/v1/invariants.py; the
          `engine` switch; V1 runs its default engine loop, async scheduling). "GPU blocks"
          counts the usable blocks (V1's pool adds block 0, its null block); V1 has no CPU
          swap space and no preemption mode, so those two settings only drive v0.5.5. When
          vLLM would stop (no CPU swap space left, or a recompute it cannot do), the trace
          ends on that step and vLLM's message. With an EOS probability, samples of a
          request end at different steps, and v0.5.5's recompute of a request whose other
          samples finished leaks blocks or asserts (issue 27; pages.views.recompute_leak
          tells it, kv_view marks the leaked blocks).
view:     the queues, the block tables, the GPU and the CPU block pools, with arrows for the
          blocks swapped out or in (pages.views.arrows), a legend, and why the heads of
          `swapped` and `waiting` stay there (what the block manager answers, from the
          snapshot).
narrate:  cause, effect and consequence in three sentences (pages.views.narrate.story),
          naming what V1 does differently; `details` gives every event and, after a swap
          round trip or a recompute, whether the restored request's cached tokens, read
          back through its new block table, are what it held before it was preempted
          (compared from the snapshots).

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
from pages.questions import Asker, kv, prefix, scheduling
from pages.views import arrows, chart, kv_view, recompute_leak, svg
from pages.views.narrate import blocks_list, reuse_by_step, step_sentences, story, story_kind
from pages.views.text import a, join, noun, plural, verb
from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.core.invariants import check_engine
from sim.core.sequence import SamplingParams
from sim.core.snapshot import payload_intact, read_back
from sim.events import (
    Admitted,
    Preempted,
    PrefillRunAsDecode,
    RequestArrived,
    SwappedIn,
    SwappedOut,
)
from sim.stand_in_model import StandInModel
from sim.trace import Step, Trace, record
from sim.v1 import config as v1_config
from sim.v1.engine import LLMEngine as V1Engine
from sim.v1.invariants import check_engine as v1_check_engine

MAX_REQUESTS = 5
MAX_LEN = 20
MAX_ARRIVAL = 30
MAX_STEPS = 40
MAX_SLOTS = 96     # token slots per pool: every slot stays legible and a trace stays small
DATA_FILE = "data/h200-swap-vs-recompute.json"
X = kv_view.MARGIN

MODES = (("swap", "swap (PreemptionMode.SWAP)"),
         ("recompute", "recompute (PreemptionMode.RECOMPUTE)"),
         ("auto", "vLLM's default: recompute one sequence, swap several"))
ENGINES = (("v0.5.5", "vLLM v0.5.5"), ("v1", "vLLM V1 (v0.25.1)"))

REQUESTS = RequestList(max_requests=MAX_REQUESTS, max_len=MAX_LEN, max_arrival=MAX_ARRIVAL,
                       max_n=2)
CHECK_OK = "check_engine: ok, every token reads back"


def build_engine(v: dict):
    """The page's engine with its requests added, before the first step: vLLM v0.5.5's, or
    V1's with the same usable GPU blocks (plus its null block) and watermark, V1's defaults
    for the rest (prefix caching on; no swap space, no preemption mode)."""
    model = StandInModel(seed=v["seed"], eos_prob=v["eos_prob"])
    if v["engine"] == "v1":
        engine = V1Engine(v1_config.CacheConfig(block_size=v["block_size"],
                                                num_gpu_blocks=v["num_gpu_blocks"] + 1),
                          v1_config.SchedulerConfig(watermark=v["watermark"]), seed=v["seed"],
                          model=model)
    else:
        mode = None if v["preemption_mode"] == "auto" else v["preemption_mode"]
        engine = LLMEngine(
            CacheConfig(block_size=v["block_size"], num_gpu_blocks=v["num_gpu_blocks"],
                        num_cpu_blocks=v["num_cpu_blocks"], watermark=v["watermark"]),
            SchedulerConfig(preemption_mode=mode), seed=v["seed"], model=model)
    for r in REQUESTS.named(v["requests"]):
        # Without an EOS probability, ignore_eos: each sequence generates exactly `output`
        # tokens, as in benchmarks. With one, samples of a request end at different steps.
        engine.add_request(r.name, r.prompt,
                           SamplingParams(n=r.n, max_tokens=r.output,
                                          ignore_eos=not v["eos_prob"]),
                           arrival_step=r.arrival)
    return engine


def scenario(v: dict) -> Trace:
    check = v1_check_engine if v["engine"] == "v1" else check_engine
    trace = record(build_engine(v), max_steps=MAX_STEPS, check=check)
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
    legend: tuple = ()                               # the legend's keys, the same every step
    later: str | None = None                         # a "D@8" chip for the legend


def context(v: dict, trace: Trace) -> PreemptionContext:
    labels, request_of = kv_view.names(trace)
    return PreemptionContext(v, trace, labels, request_of, reuse_by_step(trace, request_of),
                             cache_checks(trace, labels),
                             tuple(kv_view.legend_keys(trace, device="all")),
                             kv_view.first_later(trace))


def is_v1(v: dict) -> bool:
    return v["engine"] == "v1"


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
        # vLLM ran these as decodes: their KV was not recomputed (recompute_leak says so).
        as_decode = {e.seq_id for e in step.of_type(PrefillRunAsDecode)}
        for rid in swapped_in + recomputed:
            how = "swapped in" if rid in swapped_in else "recomputed"
            for s in seqs[rid]:
                before = saved.pop(s["seq_id"], None)
                if before is None or not s["block_table"] or s["seq_id"] in as_decode:
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
        # v0.5.5's leak (issue 27) is vLLM's own: the checker allows it, the line names it.
        return recompute_leak.status_words(step.snapshot) or CHECK_OK
    return "check_engine found: " + "; ".join(step.problems[:2])


def waiting_notes(snap: dict, events) -> list[str]:
    """Why the heads of `swapped` and `waiting` stay where they are: vLLM's own tests
    (v0.5.5: can_swap_in, can_allocate; V1: allocate_slots), as the block manager answered
    them in this state."""
    queues, heads = snap["queues"], snap["heads"]
    waiting = queues["waiting"]
    free = snap["gpu"]["num_free"]
    wm = snap["watermark_blocks"]
    out = []
    if kv_view.is_v1(snap):
        preempted = [e.request_id for e in events if isinstance(e, Preempted)]
        if preempted and waiting:
            out.append(f"{join(waiting)} {verb(waiting, 'waits', 'wait')}: V1 admits nobody "
                       "in a step that preempted.")
            return out
        head = heads["waiting"]
        if head is not None and head["can_allocate"] != "ok":
            hits = head["num_hit_blocks"]
            cached = f", {hits} of them still cached" if hits else ""
            spare = (f" and {wm} left free (the watermark)"
                     if wm and queues["running"] else "")
            never = " It never will: the pool is too small." \
                if head["can_allocate"] == "never" else ""
            out.append(f"{head['request_id']} waits at the front: allocate_slots needs "
                       f"{plural(head['num_required_blocks'], 'block')} for its "
                       f"{head['len']} tokens{cached}{spare}; {free} "
                       f"{verb(free, 'is', 'are')} free.{never}")
        return out
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


def victim_notes(prev_running: list[str], events, v1: bool = False) -> list[str]:
    out = []
    for e in events:
        if isinstance(e, Preempted):
            order = ", ".join(prev_running)
            ask = "allocate_slots" if v1 else "can_append_slots"
            tail = "the last of running" if v1 else "the tail of running"
            if e.victim_is_self:
                why = (f"{ask}({e.request_id}) finds no free block and nobody "
                       f"else is left in running [{order}]: it preempts itself")
            else:
                why = (f"{ask}({e.needed_by}) finds no free block; the victim "
                       f"is {e.request_id}, {tail} [{order}]")
            out.append(f"Preempted ({e.mode}): {why}.")
    return out


def short_victim_notes(step: Step) -> list[str]:
    """The picture's line for each preemption: who asked, who was preempted, how."""
    v1 = kv_view.is_v1(step.snapshot)
    ask = "allocate_slots" if v1 else "can_append_slots"
    labels = kv_view.seq_labels(step.snapshot)
    out = []
    for e in step.of_type(Preempted):
        done = ([] if v1 or e.mode != "recompute" else
                recompute_leak.finished_samples(step.snapshot, e.request_id, labels))
        mode = f"{e.mode}: {join(done)} finished, one left" if done else e.mode
        if e.victim_is_self:
            out.append(f"{ask}({e.needed_by}): no free block, nobody else to preempt: "
                       f"{e.request_id} preempts itself ({mode})")
        else:
            out.append(f"{ask}({e.needed_by}): no free block, so the last of running, "
                       f"{e.request_id}, is preempted ({mode})")
    for e in step.of_type(PrefillRunAsDecode):
        first, survivor = labels.get(e.first_seq_id, "?"), labels.get(e.seq_id, "?")
        out.append(f"is_prefill() reads {first} (finished): {survivor}'s recompute runs as "
                   f"a decode of position {e.position}; the leaked blocks are never freed")
    return out


def short_waiting_notes(step: Step) -> list[str]:
    """The picture's line for a queue head that stays: what it waits for."""
    snap = step.snapshot
    queues, heads = snap["queues"], snap["heads"]
    free, wm = snap["gpu"]["num_free"], snap["watermark_blocks"]
    if queues["swapped"] and heads["swapped"] and heads["swapped"]["can_swap_in"] == "later":
        head = heads["swapped"]
        return [f"{head['request_id']} stays swapped: can_swap_in needs "
                f"{head['num_blocks']} + {head['num_seqs']} blocks + {wm} spare, {free} free"]
    head = heads["waiting"]
    if head is not None and head["can_allocate"] in ("later", "never"):
        ask = "allocate_slots" if kv_view.is_v1(snap) else "can_allocate"
        spare = f" + {wm} spare" if wm and (queues["running"] or not kv_view.is_v1(snap)) \
            else ""
        return [f"{head['request_id']} waits: {ask} needs {head['num_required_blocks']} "
                f"blocks{spare}, {free} free"]
    return []


def stop(step: Step) -> tuple[str, list[str], Preempted | None]:
    """(heading, explanation in three sentences, victim) for the step in which vLLM stops:
    the victim of that step could not be swapped out (no CPU space) or recomputed (several
    sequences), or a re-admitted request's first sequence waited while its other samples
    had finished (Scheduler.schedule's assert; no victim)."""
    asserted = recompute_leak.schedule_assert_words(step)
    if asserted is not None:
        return asserted[0], asserted[1], None
    victims = step.of_type(Preempted)
    victim = victims[-1] if victims else None
    # The step never finished: its snapshot is the state before it.
    running = step.snapshot["queues"]["running"]
    if victim is None:
        who = "A request must be preempted."
    elif victim.victim_is_self:
        who = (f"{victim.request_id} needs a block and nobody else is left to preempt, so it "
               "preempts itself.")
    else:
        who = (f"{victim.needed_by} needs a block; the victim is {victim.request_id}, the "
               f"tail of running [{', '.join(running)}].")
    n = step.step
    if victim is not None and victim.mode == "swap":
        return (f"Iteration {n}: not enough CPU swap space",
                [who, "It must be swapped out, but the CPU swap space has too few free "
                      "blocks, and v0.5.5 does not fall back to recompute.",
                 "The scheduler raises and the engine stops for every request: give it more "
                 "CPU blocks (swap_space), or choose recompute."], victim)
    return (f"Iteration {n}: cannot recompute this request",
            [who, "Its request has several running sequences, and vLLM v0.5.5 can recompute "
                  "only a single sequence (an assert in _preempt_by_recompute).",
             "The engine stops: leave the preemption mode on the default, which swaps such "
             "requests."], victim)


# -- the picture and the words -------------------------------------------------------------

def label(step: Step, ctx: PreemptionContext | None = None) -> str:
    """The step's name in the counter, the heading and the narration."""
    if step.step is None:
        return "start"
    if ctx is not None and cut_off(step, ctx.trace):
        return "cut off"
    return f"iteration {step.step}"


def _title(name: str) -> str:
    return name[0].upper() + name[1:]


def view(step: Step, ctx: PreemptionContext) -> svg.Figure:
    snap = step.snapshot
    if step.error:
        heading, explain, victim = stop(step)
        return draw(snap, [victim] if victim else [], heading, [], "The state before this "
                    "iteration:", ctx, error=" ".join(explain) + " vLLM's message: "
                    + step.error)
    if cut_off(step, ctx.trace):
        return draw(snap, [], f"Cut off: stopped after {MAX_STEPS} iterations", [],
                    status_line(step), ctx)
    if step.step is None:
        return draw(snap, [], "Start (before the first iteration)", [], status_line(step),
                    ctx)
    notes = ([(n, "highlight") for n in short_victim_notes(step)]
             + [(n, "fg") for n in short_waiting_notes(step)])
    return draw(snap, step.events, f"{_title(label(step, ctx))} ({step.kind})", notes,
                status_line(step), ctx)


def _start_words(v: dict, snap: dict) -> str:
    reqs = REQUESTS.named(v["requests"])
    by_step: dict[int, list[str]] = {}
    for r in reqs:
        by_step.setdefault(r.arrival, []).append(r.name)
    when = join([f"{join(names)} at iteration {n}" for n, names in sorted(by_step.items())])
    wm = snap["watermark_blocks"]
    if is_v1(v):
        return (f"Start: {plural(len(reqs), 'request')} will arrive, {when}. V1's pool has "
                f"{v['num_gpu_blocks'] + 1} blocks of {v['block_size']} slots (block 0 is its "
                f"null block, so {v['num_gpu_blocks']} are usable), and its watermark, "
                f"int({v['watermark']:g} x {v['num_gpu_blocks'] + 1}) = "
                f"{plural(wm, 'block')}, holds back admissions only while others run. V1 "
                "always preempts by recompute: it has no CPU swap space and no preemption "
                "mode, so those two settings do nothing here.")
    mode = dict(MODES)[v["preemption_mode"]]
    return (f"Start: {plural(len(reqs), 'request')} will arrive, {when}. The GPU has "
            f"{v['num_gpu_blocks']} blocks of {v['block_size']} slots and the CPU swap space "
            f"{v['num_cpu_blocks']}; admission keeps a watermark of int({v['watermark']:g} x "
            f"{v['num_gpu_blocks']}) = {plural(wm, 'block')} free. Preemption mode: {mode}.")


def _wait_sentence(step: Step) -> str:
    """The one reason a queue head stays where it is, short, for the narration."""
    snap, ev = step.snapshot, step.events
    queues, heads = snap["queues"], snap["heads"]
    free = snap["gpu"]["num_free"]
    wm = snap["watermark_blocks"]
    arrived = [e.request_id for e in ev if isinstance(e, RequestArrived)
               and e.request_id in queues["waiting"]]
    if arrived and queues["swapped"]:
        return (f"{join(arrived)} {verb(arrived, 'arrives', 'arrive')} but "
                f"{verb(arrived, 'waits', 'wait')}: v0.5.5 admits nobody while a request is "
                "swapped out.")
    if queues["swapped"] and heads["swapped"] and heads["swapped"]["can_swap_in"] == "later":
        head = heads["swapped"]
        return (f"{head['request_id']} stays swapped out: can_swap_in wants "
                f"{head['num_blocks']} + {head['num_seqs']} blocks and {wm} spare, and "
                f"{_free(free)}.")
    head = heads["waiting"]
    if head is not None and head["can_allocate"] in ("later", "never"):
        ask = "allocate_slots" if kv_view.is_v1(snap) else "can_allocate"
        spare = f" and {wm} spare" if wm and (queues["running"] or
                                              not kv_view.is_v1(snap)) else ""
        return (f"{head['request_id']} waits: {ask} wants "
                f"{plural(head['num_required_blocks'], 'block')}{spare}, and "
                f"{_free(free)}.")
    if arrived:
        return (f"{join(arrived)} {verb(arrived, 'arrives', 'arrive')} and "
                f"{verb(arrived, 'waits', 'wait')}.")
    return ""


def _free(n: int) -> str:
    return f"{plural(n, 'block')} {verb(n, 'is', 'are')} free" if n else "none is free"


def _check_sentence(checks: list[str]) -> str:
    """The restore checks in one short sentence (the details keep the full ones)."""
    for c in checks:
        if c.startswith("Check FAILED"):
            return c
    restored = []
    for c in checks:
        if ", swapped in," in c or ", recomputed," in c:
            who, rest = c[len("Check: "):].split("'s ", 1)
            restored.append((who, rest.split(" ", 1)[0]))
    if not restored:
        return ""
    if len(restored) == 1:
        who, n = restored[0]
        return (f"Check: {who}'s {n} cached tokens read back through its new block table "
                "exactly as before.")
    return (f"Check: the cached tokens of {join([w for w, _ in restored])} read back through "
            "their new block tables exactly as before.")


def narrate(step: Step, ctx: PreemptionContext) -> str:
    v = ctx.values
    if step.error:
        return f"{_title(label(step, ctx))}: " + " ".join(stop(step)[1])
    if cut_off(step, ctx.trace):
        return (f"Cut off: the picture stops after {MAX_STEPS} iterations; requests are "
                "still running. Use fewer or shorter requests.")
    if step.step is None:
        return _start_words(v, step.snapshot)
    prev = ctx.trace.previous(step)
    sentences = story(step, ctx.labels, ctx.request_of, prev, ctx.reuse[step.index])
    kind = story_kind(step, ctx.request_of)
    check = _check_sentence(ctx.checks[step.index])
    wait = _wait_sentence(step)
    # vLLM v0.5.5's recompute of a sampling group whose other samples finished (issue 27).
    leak = recompute_leak.leak_story(step, ctx.labels)
    one_left = recompute_leak.one_left_sentence(step, ctx.labels)
    orphaned = recompute_leak.orphaned_sentence(step, prev)
    if leak:
        sentences = leak
    elif one_left and kind == "preemption":
        sentences = sentences[:2] + [one_left]
    elif check and kind in ("admission", "swap_in"):
        sentences = sentences[:2] + [check]
    elif orphaned:
        sentences = sentences[:2] + [orphaned]
    elif wait and kind in ("new_blocks", "decode", "idle", "finish"):
        sentences = sentences[:2] + [wait]
    return f"{_title(label(step, ctx))}: " + " ".join(sentences[:3])


def details(step: Step, ctx: PreemptionContext) -> list[str]:
    v = ctx.values
    if step.error:
        heading, explain, _ = stop(step)
        return explain + [f"vLLM's message: {step.error}"]
    if cut_off(step, ctx.trace):
        return [f"The trace is cut after {MAX_STEPS} iterations; this frame repeats the last "
                "state.", status_line(step)]
    if step.step is None:
        out = [f"{r.name}: {a(f'{r.prompt}-token prompt')}, {plural(r.output, 'output token')}"
               + (f" for each of {r.n} samples" if r.n > 1 else "")
               + f", arrives at iteration {r.arrival}." for r in REQUESTS.named(v["requests"])]
        if is_v1(v):
            out.append("V1 runs with its defaults otherwise: prefix caching on, chunked "
                       "prefill on, a budget of 2048 tokens per step; a request with two "
                       "samples becomes two requests, 0_X and 1_X, that share the prompt "
                       "through the prefix cache.")
        out.append(status_line(step))
        return out
    out = step_sentences(step, ctx.labels, ctx.request_of)
    out += [f"{rid} now uses {blocks_list(nums)}, which {before} held before."
            for rid, before, nums in ctx.reuse[step.index]]
    prev = ctx.trace.previous(step)
    prev_running = prev.snapshot["queues"]["running"]
    out += victim_notes(prev_running, step.events, is_v1(v))
    one_left = recompute_leak.one_left_sentence(step, ctx.labels)
    out += recompute_leak.samples_finished(step, ctx.labels)
    out += ([one_left] if one_left else []) + recompute_leak.leak_details(step, ctx.labels)
    orphaned = recompute_leak.orphaned_sentence(step, prev)
    out += [orphaned] if orphaned else []
    out += ctx.checks[step.index] + waiting_notes(step.snapshot, step.events)
    out.append(status_line(step))
    return out


def draw(snap: dict, events, heading: str, notes: list[tuple[str, str]], status: str,
         ctx: PreemptionContext, error: str | None = None) -> svg.Figure:
    """Queues, block tables, the GPU pool, the CPU pool with swap arrows, the legend, the
    check line, the notes and (when vLLM stops) its message, top to bottom."""
    v1 = kv_view.is_v1(snap)
    h = kv_view.highlights(events)
    parts = kv_view.heading(X, heading, "V1" if v1 else "v0.5.5")
    if kv_view.text_width(heading, kv_view.HEADING) > kv_view.WIDTH - 2 * X - 50:
        parts.pop()   # a long heading (vLLM stops) takes the whole line
    elements, y = kv_view.queues_and_tables(X, 28, snap, h)
    parts += elements
    gpu = snap["gpu"]
    used = gpu["num_blocks"] - gpu["num_free"] - (1 if v1 else 0)
    leaked = [] if v1 else recompute_leak.leaked_blocks(snap)
    title = (f"GPU blocks: {used} used" + (f" ({len(leaked)} leaked)" if leaked else "")
             + f", {gpu['num_free']} free, watermark {snap['watermark_blocks']}")
    gpu_y = y
    elements, dy = kv_view.pool(X, y, snap, "gpu", h, title=title)
    parts += elements
    y += dy + 8
    cpu = snap["cpu"]
    cpu_y = y
    moved = arrows.swaps(events)
    if cpu["num_blocks"]:
        title = (f"CPU swap space: {cpu['num_blocks'] - cpu['num_free']} used, "
                 f"{cpu['num_free']} free")
        elements, dy = kv_view.pool(X, y, snap, "cpu", h, title=title)
        parts += elements
        y += dy
        if moved:
            words = " and ".join(dict.fromkeys(
                "blocks_to_swap_out" if isinstance(e, SwappedOut) else "blocks_to_swap_in"
                for e in moved))
            elements, dy = kv_view.lines(X, y, f"Arrows: {words}", fill="highlight")
            parts += elements
            y += dy
        y += 2
    else:
        words = ("CPU swap space: none, V1 only recomputes" if v1 else
                 "CPU swap space: 0 blocks")
        elements, dy = kv_view.lines(X, y, words)
        parts += elements
        y += dy + 2
    parts += arrows.swap_arrows(X, gpu_y, cpu_y, snap, events)
    elements, dy = kv_view.legend(X, y, ctx.legend, later=ctx.later)
    parts += elements
    y += dy + 2
    elements, dy = kv_view.lines(X, y, status,
                                 fill="muted" if status.startswith("check_engine: ok")
                                 else "highlight")
    parts += elements
    y += dy
    for note, color in notes:
        elements, dy = kv_view.lines(X, y, note, fill=color)
        parts += elements
        y += dy + 2
    if error:
        elements, dy = kv_view.lines(X + 8, y + 6, error, fill="fg",
                                     right=kv_view.WIDTH - X - 8)
        box_h = dy + 10
        parts.append(svg.rect(X, y + 2, kv_view.WIDTH - 2 * X, box_h, fill="panel",
                              stroke="highlight", stroke_width=2, tip="vLLM stops here",
                              data_k="stop"))
        parts += elements
        y += box_h + 6
    return svg.Figure(kv_view.WIDTH, y + 4, parts,
                      "Queues, block tables, GPU and CPU block pools")


def check(v: dict) -> dict[str, str]:
    for name, label_ in (("num_gpu_blocks", "GPU blocks"), ("num_cpu_blocks", "CPU blocks")):
        if v[name] * v["block_size"] > MAX_SLOTS:
            return {name: f"{label_}: at most {MAX_SLOTS // v['block_size']} with block size "
                          f"{v['block_size']} ({MAX_SLOTS} token slots per pool, so that every "
                          "slot fits in the picture)"}
    for i, r in enumerate(REQUESTS.named(v["requests"])):
        if r.arrival + r.output > 32:
            return {"requests": f"requests: request {i + 1} ends too late; keep arrival step "
                                "+ output tokens within 32"}
    if v["engine"] == "v1":
        for r in REQUESTS.named(v["requests"]):
            need = -(-(r.prompt + r.output - 1) // v["block_size"])
            if need > v["num_gpu_blocks"]:
                return {"requests": f"requests: in V1, {r.name} ({r.prompt} + {r.output} "
                                    f"tokens) needs {need} blocks and only "
                                    f"{v['num_gpu_blocks']} are usable: it would wait forever "
                                    "(raise GPU blocks or the block size)"}
    return {}


def limits(v: dict) -> scheduling.Limits:
    """The scheduler settings build_engine uses, for the questions."""
    mode = None if v["engine"] == "v1" or v["preemption_mode"] == "auto" \
        else v["preemption_mode"]
    return scheduling.Limits(preemption_mode=mode)


QUESTIONS = Asker(("preempt", scheduling.preempt(limits)), ("prefix-hit", prefix.prefix_hit),
                  ("evict-next", prefix.evict_next), ("admit", scheduling.admit(limits)),
                  ("next-block", kv.next_block), ("blocks-freed", kv.finished_frees),
                  ("new-block", kv.new_block))

WIDGETS = (Widget(
    id="preemption",
    keys=("chip", "seq", "ent", "blk", "tok"),
    goal=('Predict which request is preempted when blocks run out, and trace a swap round trip or'
          ' a recompute back to intact tokens.'),
    title="Preemption: swap out, swap in, or recompute",
    summary="The GPU runs out of blocks mid-batch: the tail of running is preempted. Arrows "
            "show blocks copied between the GPU and the CPU swap space. Switch the engine to "
            "see V1, which only recomputes; it runs its default loop, async scheduling (each "
            "step is scheduled before the previous step's output is processed).",
    params=(
        Param("engine", "engine", "choice", "v0.5.5", choices=ENGINES,
              help="Which vLLM runs the requests: v0.5.5, or V1 (v0.25.1) with its defaults "
                   "(prefix caching on, its null block added to the pool). V1 has no swap "
                   "space and no preemption mode: it always recomputes."),
        Param("preemption_mode", "preemption mode", "choice", "swap", choices=MODES,
              help="v0.5.5's SchedulerConfig.preemption_mode; vLLM's default recomputes a "
                   "request with one sequence and swaps one with several. V1 ignores it."),
        Param("num_gpu_blocks", "GPU blocks", "int", 10, min=2, max=16,
              help="Usable physical blocks in the GPU KV cache (V1 adds block 0, its null "
                   "block)."),
        Param("num_cpu_blocks", "CPU blocks", "int", 8, min=0, max=16,
              help="v0.5.5's CPU swap space in blocks (vLLM: swap_space, 4 GiB per GPU by "
                   "default). V1 has none."),
        Param("block_size", "block size", "int", 4, min=1, max=16,
              help="Token slots per block (vLLM's default is 16)."),
        Param("watermark", "watermark", "float", 0.1, min=0.0, max=0.5,
              help="Fraction of GPU blocks admission (and v0.5.5's swap-in) must leave free "
                   "(v0.5.5's default is 0.01, V1's 0)."),
        REQUESTS.param("requests", "6/12, 5/12, 4/12, 3/3@8"),
        Param("eos_prob", "EOS probability", "float", 0.0, min=0.0, max=0.5,
              help="Chance that a sampled token is the end-of-sequence token, so requests "
                   "and samples end early and at different steps (0: each generates exactly "
                   "its output tokens)."),
        Param("seed", "seed", "int", 0, min=0, max=9999,
              help="Seeds the token ids (and where EOS falls)."),
    ),
    scenario=scenario, context=context, view=view, narrate=narrate, label=label,
    details=details, check=check, questions=QUESTIONS, question_kinds=QUESTIONS.kinds,
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
    fs = kv_view.FONT / 10
    title, th = kv_view.lines(8, 0, f"H200: one {tokens:,}-token request ({mb:.0f} MiB of "
                              "KV)", fill="fg", size=kv_view.HEADING)
    body = title + chart.plot(0, th, 400, 300, lines,
                              x=chart.Axis("block size (tokens)", log=True, base=2),
                              y=chart.Axis("time (ms)", log=True, fmt=lambda v: f"{v:g}"),
                              markers=[chart.Marker(x=16, label="vLLM default",
                                                    color="muted")],
                              legend=False, font_scale=fs)
    # The legend goes under the plot, where it hides no data: one entry a line.
    y = th + 304
    for s in lines:
        body.append(svg.rect(14, y + 3, 16, 11, fill=s.color, rx=1))
        body.append(svg.text(36, y + 13, s.name, size=kv_view.FONT))
        y += 19
    note = (f"Block size 16: out {_ms(at16['swap_out_s'])}, in {_ms(at16['swap_in_s'])}, "
            f"recompute {_ms(recompute)}")
    elements, dy = kv_view.lines(14, y, note)
    body += elements
    return svg.document(400, y + dy + 6, body,
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
