"""Async scheduling, V1's default engine loop (a section of docs/v1-scheduler.md).

scenario: V1's engine (`sim.v1.engine.LLMEngine`) with `async_scheduling` on, as vLLM's
          default, or off (the setting), recorded with `sim.trace.record` and
          `sim.v1.invariants.check_engine`: one frame per engine call. The last request
          ends as the reader picks: at max_tokens like the others, with EOS (the stand-in
          model is scripted to sample EOS as its last output; max_tokens is larger), or
          aborted once its first output is back (an adapter calls `abort_request` between
          two engine calls, as a client disconnecting would).
view:     the call's two halves (the batch it scheduled, the output it processed), the batch
          queue after it, and per request its tokens (prompt, known outputs, placeholders
          for tokens in flight, tokens thrown away) over its KV blocks (cached or not).
narrate:  cause first: what was scheduled while what was in flight, what came back, what was
          thrown away or cached; `details` lists everything.

The build-time chart prices V1 on the latency workload of the page
(`sim.studies.latency.CHATS_AND_DOCUMENTS`, Llama-3-8B on the H200 ceilings) in both loops
for a range of stated CPU times per engine call.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from pages.framework.registry import Chart
from pages.framework.request_list import RequestList
from pages.framework.widget import Context, Param, Widget
from pages.questions import Asker, asynchrony, kv, scheduling
from pages.views import chart, fit, kv_view, svg
from pages.views.text import join, plural, verb
from sim.core.sequence import SamplingParams
from sim.events import (
    Aborted,
    BlockCached,
    BlockFreed,
    RequestArrived,
    TokenDiscarded,
    TokenSampled,
)
from sim.perf.models import get_model
from sim.studies import latency
from sim.trace import Step, Trace, record
from sim.v1.config import CacheConfig, SchedulerConfig
from sim.v1.engine import LLMEngine
from sim.v1.invariants import check_engine

WIDTH = 400
SIZE = fit.min_size(WIDTH)            # 13.5: 11 px on a phone
M = 8
MAX_STEPS = 60
MAX_LEN = 16
REQUESTS = RequestList(max_requests=4, max_len=MAX_LEN, max_arrival=8, example="6/4, 5/3")
ENDINGS = (("eos", "with EOS (its last output)"), ("length", "at max_tokens"),
           ("abort", "aborted after its first output"))
EOS_SLACK = 8                         # max_tokens beyond the EOS, so that EOS stops it
LABEL = "Async scheduling: what each engine call scheduled, processed and has in flight"
STATUS_WORDS = {"running": "running", "waiting": "waiting", "preempted": "preempted",
                "finished_stopped": "stopped: EOS", "finished_length_capped":
                "stopped: max_tokens", "finished_aborted": "aborted"}


# -- scenario ---------------------------------------------------------------------------

class _AbortAfterFirstOutput:
    """The engine as `record` drives it, aborting `request_id` between two calls once its
    first output token is back (a client that disconnects after one token)."""

    def __init__(self, engine: LLMEngine, request_id: str) -> None:
        self.engine = engine
        self.request_id = request_id
        self.done = False

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def step(self):
        out = self.engine.step()
        req = self.engine.requests[self.request_id]
        if not self.done and req.output_token_ids:
            self.done = True
            self.engine.abort_request(self.request_id)
        return out


def build_engine(v: dict) -> LLMEngine:
    engine = LLMEngine(CacheConfig(block_size=v["block_size"],
                                   num_gpu_blocks=v["num_blocks"] + 1),
                       SchedulerConfig(max_num_batched_tokens=64, max_num_seqs=8,
                                       max_model_len=2 * MAX_LEN + EOS_SLACK + 1,
                                       async_scheduling=v["async_scheduling"]),
                       seed=v["seed"])
    reqs = REQUESTS.named(v["requests"])
    for i, r in enumerate(reqs):
        last = i == len(reqs) - 1
        if last and v["ending"] == "eos":
            # The stand-in model samples EOS as output number r.output; max_tokens is
            # larger, so EOS (which no scheduler can foresee) is what stops it.
            engine.add_request(r.name, r.prompt,
                               SamplingParams(max_tokens=r.output + EOS_SLACK),
                               arrival_step=r.arrival, output_len=r.output)
        else:
            engine.add_request(r.name, r.prompt,
                               SamplingParams(max_tokens=r.output, ignore_eos=True),
                               arrival_step=r.arrival)
    return engine


def scenario(v: dict) -> Trace:
    engine = build_engine(v)
    driven = engine
    if v["ending"] == "abort":
        driven = _AbortAfterFirstOutput(engine, REQUESTS.named(v["requests"])[-1].name)
    return record(driven, max_steps=MAX_STEPS, check=check_engine)


def check(v: dict) -> dict[str, str]:
    reqs = REQUESTS.named(v["requests"])
    bs = v["block_size"]
    need = max(-(-(r.prompt + r.output + (EOS_SLACK if v["ending"] == "eos" else 0)) // bs)
               for r in reqs)
    if need > v["num_blocks"]:
        return {"num_blocks": f"KV blocks: at least {need}, so the longest request fits "
                              "alone"}
    return {}


# -- context ----------------------------------------------------------------------------

@dataclass(frozen=True)
class AsyncContext(Context):
    colors: dict                 # request id -> palette colour
    order: tuple                 # request ids in the workload's order
    seq_of: dict                 # request id -> seq id
    discarded: dict              # request id -> ((position, token, index of the step), ...)
    cols: int                    # token cells per row
    is_async: bool


def context(v: dict, trace: Trace) -> AsyncContext:
    reqs = REQUESTS.named(v["requests"])
    order = tuple(r.name for r in reqs)
    colors = {rid: svg.seq(i) for i, rid in enumerate(order)}
    last = trace.last.snapshot
    seq_of = {r["request_id"]: r["seqs"][0]["seq_id"] for r in last["requests"]}
    discarded: dict[str, list] = {}
    for step in trace:
        for e in step.of_type(TokenDiscarded):
            discarded.setdefault(e.request_id, []).append((e.position, e.token_id, step.index))
    longest = max((r["seqs"][0]["len"] for r in last["requests"]), default=1)
    cols = max(longest + 2, max(p for d in discarded.values() for p, _, _ in d) + 1
               if discarded else 0)
    return AsyncContext(v, trace, colors, order, seq_of,
                        {k: tuple(d) for k, d in discarded.items()}, cols,
                        bool(last.get("async_scheduling")))


def label(step: Step, ctx: AsyncContext | None = None) -> str:
    return "start" if step.step is None else f"call {step.step}"


# -- what happened in one call --------------------------------------------------------------

@dataclass(frozen=True)
class Call:
    scheduled: tuple             # Scheduled records of the batch scheduled in this call
    processed: int | None        # the engine step whose output came back
    sampled: tuple               # TokenSampled (appended to their requests)
    discarded: tuple             # TokenDiscarded
    finished: tuple              # request ids
    cached: tuple                # BlockCached
    freed: tuple                 # block ids
    arrived: tuple               # request ids
    aborted: tuple               # request ids
    skipped: tuple               # running, not scheduled: the token in flight is its last
    in_flight: tuple             # the batch queue after the call (snapshot entries)


def call_of(step: Step, before: Step | None, ctx: AsyncContext) -> Call:
    snap = step.snapshot
    ran = {s.request_id for s in step.scheduled}
    placeholders_before = ({r["request_id"]: r["num_output_placeholders"]
                            for r in before.snapshot["requests"]} if before else {})
    running_before = set(before.snapshot["queues"]["running"]) if before else set()
    skipped = tuple(rid for rid in ctx.order if rid in running_before and rid not in ran
                    and placeholders_before.get(rid, 0) > 0 and not step.of_type(Aborted))
    rid_of_seq = {seq: rid for rid, seq in ctx.seq_of.items()}
    sampled = tuple((rid_of_seq[e.seq_id], e) for e in step.of_type(TokenSampled))
    return Call(step.scheduled, step.processed, sampled, tuple(step.of_type(TokenDiscarded)),
                step.finished, tuple(step.of_type(BlockCached)),
                tuple(e.physical for e in step.of_type(BlockFreed) if e.device == "gpu"),
                tuple(e.request_id for e in step.of_type(RequestArrived)),
                tuple(e.request_id for e in step.of_type(Aborted)), skipped,
                tuple(snap.get("batch_queue", ())))


def _before(step: Step, ctx: AsyncContext) -> Step | None:
    return ctx.trace[step.index - 1] if step.index else None


# -- drawing --------------------------------------------------------------------------------

def _chips(x: float, y: float, items, right: float) -> tuple[list[str], float]:
    """Lettered chips in a row that wraps: items are (key, text, colour, style, tip) with
    style "solid", "light" or "outline", and optionally a sixth field: the keys of what the
    chip comes out of in the frame before (data-from)."""
    s = SIZE
    h = s * 1.45
    out = []
    cx, cy = x, y
    for key, text, color, style, tip, *origin in items:
        w = fit.text_width(text, s) + s * 0.8
        if cx > x and cx + w > right:
            cx, cy = x, cy + h + 3
        if style == "solid":
            box = svg.rect(cx, cy, w, h, fill=color, rx=3)
            ink = "bg"
        elif style == "light":
            box = svg.rect(cx, cy, w, h, fill=color, stroke=color, rx=3, fill_opacity="0.3",
                           stroke_width=1.5)
            ink = "fg"
        else:
            box = svg.rect(cx, cy, w, h, fill="bg", stroke=color, rx=3, stroke_width=1.5,
                           stroke_dasharray="3 2")
            ink = "fg"
        out.append(svg.group([box, svg.text(cx + w / 2, cy + h / 2 + s * 0.36, text, size=s,
                                            anchor="middle", fill=ink)],
                             tip=tip, data_k=key, data_from=origin[0] if origin else None))
        cx += w + 4
    return out, cy + h - y


def _halves(y: float, step: Step, call: Call, ctx: AsyncContext) -> tuple[list[str], float]:
    """Two lines: the batch scheduled in this call, and the output processed in it."""
    s = SIZE
    out = []
    label_w = fit.text_width("processed", s) + s * 0.6
    items = []
    for sch in call.scheduled:
        what = (f"{sch.request_id} {sch.num_tokens}" if sch.prefill
                else f"{sch.request_id} 1")
        tip = (f"{sch.request_id}: {plural(sch.num_tokens, 'prompt token')}" if sch.prefill
               else f"{sch.request_id}: decodes one token")
        items.append((f"chip:sched:{sch.request_id}", what, ctx.colors[sch.request_id],
                      "light" if sch.prefill else "solid", tip))
    out.append(svg.text(M, y + s * 1.05, "scheduled", size=s, fill="muted"))
    if items:
        chips, h = _chips(M + label_w, y, items, WIDTH - M)
        out += chips
    else:
        out.append(svg.text(M + label_w, y + s * 1.05, "nothing", size=s, fill="muted"))
        h = s * 1.45
    y += h + s * 0.5
    out.append(svg.text(M, y + s * 1.05, "processed", size=s, fill="muted"))
    if call.processed is None:
        text = "no output yet: the queue has room" if ctx.is_async else "nothing"
        out.append(svg.text(M + label_w, y + s * 1.05, text, size=s, fill="muted"))
        return out, y + s * 1.45
    items = []
    finished = set(call.finished)
    # The output of step N comes back from batch N, in flight in the frame before: keyed by
    # the step, so each call's output arrives out of its batch.
    came = f"chip:out:{call.processed}"
    batch = f"batch:{call.processed}"
    for rid, e in call.sampled:
        end = " ✓" if rid in finished else ""
        items.append((f"{came}:{rid}", f"{rid} +1{end}", ctx.colors[rid], "solid",
                      f"{rid} gets token {e.token_id} at position {e.position}"
                      + (" and finishes" if end else ""), batch))
    for e in call.discarded:
        items.append((f"{came}:{e.request_id}", f"{e.request_id} ✗", ctx.colors[e.request_id],
                      "outline", f"{e.request_id}'s token {e.token_id} at position "
                                 f"{e.position} is thrown away ({_reason(e.reason)})", batch))
    whose = "its own" if call.processed == step.step else f"step {call.processed}'s"
    lead = svg.text(M + label_w, y + s * 1.05, f"{whose}:", size=s, fill="muted")
    lead_w = fit.text_width(f"{whose}:", s) + s * 0.4
    out.append(lead)
    if items:
        chips, h = _chips(M + label_w + lead_w, y, items, WIDTH - M)
        out += chips
    else:
        out.append(svg.text(M + label_w + lead_w, y + s * 1.05, "no token", size=s,
                            fill="muted"))
        h = s * 1.45
    return out, y + h


def _queue(y: float, call: Call, ctx: AsyncContext) -> tuple[list[str], float]:
    """The batch queue after the call: up to two batches in flight, oldest first."""
    s = SIZE
    out = [svg.text(M, y + s * 1.05, "in flight", size=s, fill="muted")]
    x = M + fit.text_width("processed", s) + s * 0.6
    batches = [b for b in call.in_flight if b["num_scheduled_tokens"]]
    if not ctx.is_async:
        out.append(svg.text(x, y + s * 1.05, "none: the synchronous loop waits for its "
                                             "output", size=s, fill="muted"))
        return out, y + s * 1.45
    if not batches:
        out.append(svg.text(x, y + s * 1.05, "nothing", size=s, fill="muted"))
        return out, y + s * 1.45
    h = s * 1.45
    for b in batches:
        samples = b["samples"]
        text = f"step {b['step']}: " + (" ".join(f"{r}?" for r in samples) if samples
                                        else "no token")
        w = fit.text_width(text, s) + s * 0.8
        tip = (f"step {b['step']} is on the GPU: " + (
            f"it samples a token for {join(list(samples))}, which the scheduler sees when "
            "its output is processed" if samples else "it samples nothing"))
        out.append(svg.group([svg.rect(x, y, w, h, fill="panel", stroke="line", rx=3),
                              svg.text(x + w / 2, y + h / 2 + s * 0.36, text, size=s,
                                       anchor="middle")],
                             tip=tip, data_k=f"batch:{b['step']}"))
        x += w + 6
    return out, y + h


def _reason(reason: str) -> str:
    if reason == "reset_prefix_cache":
        return "reset_prefix_cache preempted it"
    return {"finished_stopped": "it had stopped with EOS",
            "finished_aborted": "it had been aborted",
            "finished_length_capped": "it had reached max_tokens"}.get(reason, reason)


def _rows(y: float, step: Step, call: Call, ctx: AsyncContext) -> tuple[list[str], float]:
    """Per request: its tokens (prompt light, outputs solid, placeholders dashed, thrown
    away crossed) and under them its blocks (filled when cached)."""
    s = SIZE
    snap = step.snapshot
    bs = snap["block_size"]
    blocks = snap["gpu"]["blocks"]
    name_w = fit.text_width("W", s) + s * 0.6
    room = WIDTH - 2 * M - name_w
    cw = min(room / ctx.cols, s * 1.3)
    ch = s * 1.2
    new_pos = {(rid, e.position) for rid, e in call.sampled}
    cached_now = {e.physical for e in call.cached}
    out = []
    by_id = {r["request_id"]: r for r in snap["requests"]}
    for rid in ctx.order:
        r = by_id.get(rid)
        if r is None:
            continue
        seq = r["seqs"][0]
        color = ctx.colors[rid]
        status = seq["status"]
        pending = rid in snap["queues"].get("pending", [])
        words = "not arrived" if pending else STATUS_WORDS.get(status, status)
        row = [svg.text(M, y + s * 1.0, rid, size=s + 0.5)]
        x0 = M + name_w
        tokens = seq["token_ids"]
        live = not status.startswith("finished")
        placeholders = r["num_output_placeholders"] if live else 0
        for pos, tok in enumerate(tokens):
            prompt = pos < seq["prompt_len"]
            tip = (f"{rid} position {pos}: " + ("prompt token" if prompt else "output token")
                   + f" {tok}")
            stroke = "highlight" if (rid, pos) in new_pos else None
            if prompt:
                cell = svg.rect(x0 + pos * cw + 0.5, y, cw - 1, ch, fill=color, rx=1,
                                fill_opacity="0.3", tip=tip, data_k=f"tok:{seq['seq_id']}:{pos}")
            else:
                cell = svg.rect(x0 + pos * cw + 0.5, y, cw - 1, ch, fill=color, rx=1,
                                stroke=stroke, stroke_width=2 if stroke else None, tip=tip,
                                data_k=f"tok:{seq['seq_id']}:{pos}")
            row.append(cell)
        n = len(tokens)
        for i in range(placeholders):
            pos = n + i
            row.append(svg.group(
                [svg.rect(x0 + pos * cw + 1, y + 0.5, cw - 2, ch - 1, fill="bg", stroke=color,
                          rx=1, stroke_width=1.5, stroke_dasharray="2 2"),
                 svg.text(x0 + pos * cw + cw / 2, y + ch * 0.8, "?", size=s,
                          anchor="middle", fill="muted")],
                tip=f"{rid} position {pos}: a placeholder; a step in flight is sampling this "
                    "token, the scheduler does not know it yet",
                data_k=f"tok:{seq['seq_id']}:{pos}"))
        for pos, tok, at in ctx.discarded.get(rid, ()):
            if at > step.index or pos < n + placeholders:
                continue
            now = at == step.index
            px = x0 + pos * cw
            row.append(svg.group(
                [svg.rect(px + 1, y + 0.5, cw - 2, ch - 1, fill="bg",
                          stroke="highlight" if now else "muted", rx=1, stroke_width=1.5),
                 svg.line(px + 2, y + 2, px + cw - 2, y + ch - 2,
                          stroke="highlight" if now else "muted", width=1.5)],
                tip=f"{rid} position {pos}: token {tok} was sampled by a step in flight and "
                    "thrown away",
                data_k=f"tok:{seq['seq_id']}:{pos}"))
        # The blocks, under the tokens they hold.
        by = y + ch + 2
        bh = s * 0.55
        for logical, (_, num, _) in enumerate(seq["block_table"]):
            block = blocks[num]
            cached = bool(block["hash"])
            bx = x0 + logical * bs * cw
            tip = (f"{rid}'s block {logical} is GPU block {num}: "
                   + ("in the prefix cache (hash " + block["hash"] + ")" if cached
                      else "not cached yet"))
            row.append(svg.rect(bx + 0.5, by, bs * cw - 1, bh, fill=color if cached else "bg",
                                stroke="highlight" if num in cached_now else color, rx=1,
                                stroke_width=2 if num in cached_now else 1, tip=tip,
                                data_k=f"blk:gpu:{num}"))
        out.append(svg.group(row, data_k=f"row:{rid}"))
        out.append(svg.text(WIDTH - M, y - s * 0.25, words, size=s, anchor="end",
                            fill="muted"))
        y += ch + bh + s * 1.6
    return out, y


def _legend(y: float) -> tuple[list[str], float]:
    s = SIZE
    out, h = fit.legend(M, y, WIDTH - M, [
        ("chip", "seq-0", "output token"), ("outline", "seq-0", "in flight (placeholder)"),
        ("text:✗", "highlight", "thrown away"), ("outline", "highlight", "new this call"),
        ("chip", "line", "block cached"), ("outline", "line", "block not cached")], size=s)
    out.append(svg.text(M, y + h + s * 1.1, "light cells: prompt tokens; bars: KV blocks",
                        size=s, fill="muted"))
    return out, h + s * 1.5


def view(step: Step, ctx: AsyncContext) -> svg.Figure:
    s = SIZE
    loop = "async scheduling" if ctx.is_async else "synchronous loop"
    out = kv_view.heading(M, label(step).capitalize() if step.step is None
                          else label(step), loop)
    y = 30
    if step.step is None:
        out.append(svg.text(M, y + s, "the requests, before the first call", size=s,
                            fill="muted"))
        y += s * 2
        call = None
    else:
        call = call_of(step, _before(step, ctx), ctx)
        elements, y = _halves(y, step, call, ctx)
        out += elements
        elements, y = _queue(y + s * 0.5, call, ctx)
        out += elements
        y += s * 1.6
    elements, y = _rows(y + s * 0.5, step, call or Call((), None, (), (), (), (), (), (), (),
                                                        (), ()), ctx)
    out += elements
    elements, h = _legend(y)
    return svg.Figure(WIDTH, y + h + 6, out + elements, LABEL)


# -- narration ------------------------------------------------------------------------------

def _scheduled_words(call: Call, before: Step | None) -> str:
    placeholders = ({r["request_id"]: r["num_output_placeholders"]
                     for r in before.snapshot["requests"]} if before else {})
    prefills = [f"{s.request_id}'s {plural(s.num_tokens, 'prompt token')}"
                for s in call.scheduled if s.prefill]
    blind = [s.request_id for s in call.scheduled
             if not s.prefill and placeholders.get(s.request_id, 0) > 0]
    known = [s.request_id for s in call.scheduled
             if not s.prefill and placeholders.get(s.request_id, 0) == 0]
    parts = []
    if prefills:
        parts.append(join(prefills))
    if blind:
        parts.append(f"a decode for {join(blind)} of the token {verb(blind, 'its', 'their')} "
                     "previous step is still sampling (the worker has it, the scheduler "
                     "does not yet)")
    if known:
        parts.append(f"a decode for {join(known)}")
    return join(parts)


def narrate(step: Step, ctx: AsyncContext) -> str:
    reqs = REQUESTS.named(ctx.values["requests"])
    if step.step is None:
        loop = ("vLLM's default loop, async scheduling: each call schedules a batch before "
                "it processes the output of the one in flight" if ctx.is_async else
                "the synchronous loop: each call schedules a batch, runs it and processes "
                "its output")
        return (f"{plural(len(reqs), 'request')} ({join([r.name for r in reqs])}); the "
                f"engine runs {loop}.")
    before = _before(step, ctx)
    call = call_of(step, before, ctx)
    n = step.step
    sentences = []
    if call.aborted:
        sentences.append(f"Before call {n} the client aborts {join(list(call.aborted))}: "
                         f"{verb(call.aborted, 'its', 'their')} blocks are freed at once.")
    what = _scheduled_words(call, before)
    if ctx.is_async:
        first = (f"Call {n} schedules step {n}: {what}" if what
                 else f"Call {n} schedules nothing")
        if call.skipped:
            first += (f"; {join(list(call.skipped))} {verb(call.skipped, 'is', 'are')} left "
                      f"out: the token in flight is {verb(call.skipped, 'its', 'their')} last "
                      "(max_tokens), so nothing is wasted")
        sentences.append(first + ".")
        if call.processed is None:
            if call.scheduled:
                sentences.append("The queue has room for a second batch, so the engine does "
                                 "not wait for this one's output.")
        else:
            sentences.append(_processed_words(call, f"Then step {call.processed}'s output "
                                                    "comes back", True))
    else:
        first = (f"Call {n} schedules {what}, runs it and processes its output"
                 if what else f"Call {n} has nothing to run")
        sentences.append(first + ".")
        if call.sampled or call.finished:
            sentences.append(_processed_words(call, "Its output", False))
    decoded = _decoded_blocks(step, call)
    if decoded:
        later = (": the token that filled it came back in this call, one call later than "
                 "the synchronous loop would cache it" if ctx.is_async and len(decoded) == 1
                 else ", one call later than the synchronous loop" if ctx.is_async else "")
        sentences.append(f"{join(decoded)}, filled by a decoded token, "
                         f"{verb(decoded, 'is', 'are')} cached now{later}.")
    return " ".join(sentences)


def _decoded_blocks(step: Step, call: Call) -> list[str]:
    """The blocks cached in this call whose last token is an output token (prompt blocks
    are cached when the prompt is scheduled, in either loop)."""
    prompt = {r["request_id"]: r["seqs"][0]["prompt_len"] for r in step.snapshot["requests"]}
    bs = step.snapshot["block_size"]
    return [f"{e.request_id}'s block {e.logical}" for e in call.cached
            if (e.logical + 1) * bs > prompt.get(e.request_id, 0)]


def _processed_words(call: Call, lead: str, is_async: bool) -> str:
    parts = []
    got = [rid for rid, _ in call.sampled]
    if got:
        parts.append(f"{join(got)} {verb(got, 'gets a token', 'get a token each')}")
    stopped = list(call.finished)
    if stopped:
        when = ", after this call's batch was chosen" if is_async else ""
        parts.append(f"{join(stopped)} {verb(stopped, 'finishes', 'finish')} and "
                     f"{verb(stopped, 'its', 'their')} blocks are freed{when}")
    for e in call.discarded:
        parts.append(f"{e.request_id}'s token is thrown away ({_reason(e.reason)}, which "
                     "the engine learned only after that step was scheduled)")
    if not parts:
        parts.append("no token (a prompt chunk)")
    return f"{lead}: {'; '.join(parts)}."


def details(step: Step, ctx: AsyncContext) -> list[str]:
    if step.step is None:
        out = [f"{r.name}: {plural(r.prompt, 'prompt token')}, {plural(r.output, 'output token')}"
               f", arrives at call {r.arrival}." for r in REQUESTS.named(ctx.values["requests"])]
        out.append(f"Block size {ctx.values['block_size']}, "
                   f"{plural(ctx.values['num_blocks'], 'usable block')}, prefix caching on; "
                   f"async_scheduling = {ctx.values['async_scheduling']}.")
        return out
    before = _before(step, ctx)
    call = call_of(step, before, ctx)
    out = []
    for rid in call.arrived:
        out.append(f"{rid} arrives.")
    for s in call.scheduled:
        out.append(f"Scheduled in step {step.step}: {s.request_id}, "
                   f"{plural(s.num_tokens, 'token')}" + (" (prompt)" if s.prefill else
                                                           " (decode)") + ".")
    for rid in call.skipped:
        out.append(f"{rid} is running but not scheduled: its token in flight is its last.")
    if call.processed is not None:
        out.append(f"Processed: the output of step {call.processed}.")
    for rid, e in call.sampled:
        out.append(f"{rid} gets token {e.token_id} at position {e.position}.")
    for e in call.discarded:
        out.append(f"{e.request_id}'s token {e.token_id} at position {e.position} is thrown "
                   f"away: {_reason(e.reason)}.")
    for rid in call.finished:
        out.append(f"{rid} finishes.")
    for rid in call.aborted:
        out.append(f"{rid} is aborted (between calls).")
    for e in call.cached:
        out.append(f"Block {e.physical} ({e.request_id}'s block {e.logical}) is cached.")
    if call.freed:
        out.append(f"Blocks freed: {', '.join(map(str, call.freed))}.")
    for r in step.snapshot["requests"]:
        p = r["num_output_placeholders"]
        if p and not r["seqs"][0]["status"].startswith("finished"):
            out.append(f"{r['request_id']}: {plural(p, 'placeholder')} (tokens in flight).")
    flight = [f"step {b['step']}" for b in call.in_flight if b["num_scheduled_tokens"]]
    if ctx.is_async:
        out.append("In flight after this call: " + (", ".join(flight) or "nothing") + ".")
    return out


def limits(v: dict) -> scheduling.Limits:
    """The scheduler settings build_engine uses, for the questions."""
    return scheduling.Limits(max_num_batched_tokens=64, max_num_seqs=8,
                             max_model_len=2 * MAX_LEN + EOS_SLACK + 1)


QUESTIONS = Asker(("discard", asynchrony.discarded), ("in-flight", asynchrony.scheduled(limits)),
                  ("next-block", kv.next_block), ("new-block", kv.new_block),
                  step_name=lambda step: f"call {step.step}")


WIDGETS = (Widget(
    id="v1-async",
    keys=("row", "tok", "chip", "blk"),
    goal=("Say which step's output each engine call processes under async scheduling, and "
          "what a length stop, an EOS stop and an abort cost."),
    title="Async scheduling: step N+1 is scheduled before step N's output is back",
    summary="vLLM's default engine loop (switch it off for the synchronous one). Each call "
            "schedules a batch, then processes the oldest batch in flight; dashed cells are "
            "tokens a step in flight is sampling, crossed ones tokens thrown away.",
    params=(
        REQUESTS.param("requests", "6/4, 5/3"),
        Param("ending", "the last request ends", "choice", "eos", choices=ENDINGS,
              help="How the last request of the list ends: with EOS as its last output "
                   "(max_tokens is larger), at max_tokens, or aborted by its client once its "
                   "first output is back."),
        Param("async_scheduling", "async scheduling", "bool", True,
              help="SchedulerConfig.async_scheduling: on by default in vLLM (V1); off runs "
                   "the synchronous loop."),
        Param("block_size", "block size", "int", 4, min=1, max=8,
              help="Tokens per KV block (1 to 8)."),
        Param("num_blocks", "usable KV blocks", "int", 16, min=2, max=32,
              help="GPU blocks the requests can use (the pool has one more, the null "
                   "block)."),
        Param("seed", "seed", "int", 0, min=0, max=9999,
              help="Seeds the stand-in model's tokens (the schedule does not depend on it)."),
    ),
    scenario=scenario, context=context, view=view, narrate=narrate, label=label,
    details=details, check=check, questions=QUESTIONS, question_kinds=QUESTIONS.kinds,
),)


# -- build-time chart: what the overlap buys on an H200 -------------------------------------

CPU_TIMES_MS = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0)
CHATS = "ABCDEF"


@functools.lru_cache(maxsize=1)
def overlap_runs() -> dict:
    """{async_scheduling: [TimedRun per CPU time]} for V1 on CHATS_AND_DOCUMENTS (budget
    2,048), Llama-3-8B on the H200 ceilings of the page."""
    from pages.topics.v1_scheduler import CHART_MODEL, h200_roofline
    model, roof = get_model(CHART_MODEL), h200_roofline()
    return {loop: [latency.run_timed("v1", latency.CHATS_AND_DOCUMENTS,
                                     latency.Setup(async_scheduling=loop,
                                                   cpu_step_s=ms / 1e3), model, roof)
                   for ms in CPU_TIMES_MS]
            for loop in (False, True)}


def chat_gap_ms(run) -> float:
    """The mean gap between two tokens of the six chats (A to F), in ms."""
    chats = [r for r in run.requests if r.request_id in CHATS]
    return sum(r.mean_tbt_s for r in chats) / len(chats) * 1e3


def gpu_busy(run) -> float:
    return sum(s.time_s for s in run.steps) / run.makespan_s


def _overlap_svg() -> str:
    runs = overlap_runs()
    fs = SIZE / 10
    series = []
    for loop, color, name in ((False, "seq-1", "synchronous loop"),
                              (True, "seq-0", "async scheduling")):
        pts = [(ms, chat_gap_ms(r)) for ms, r in zip(CPU_TIMES_MS, runs[loop])]
        series.append(chart.Series(
            name, pts, color=color, kind="both", dashed=not loop,
            tips=[f"{name}, {ms:g} ms of CPU per call: {gap:.2f} ms between a chat's tokens, "
                  f"GPU busy {100 * gpu_busy(r):.0f}%, all done after {r.makespan_s * 1e3:,.0f}"
                  " ms" for (ms, gap), r in zip(pts, runs[loop])]))
    body = chart.plot(0, 0, WIDTH, 300, series,
                      x=chart.Axis("CPU time per engine call (ms)", lo=0, hi=5,
                                   fmt=lambda t: f"{t:g}"),
                      y=chart.Axis("gap between tokens (ms)", lo=0,
                                   fmt=lambda t: f"{t:g}"),
                      title="A chat's gap between tokens", legend=False, font_scale=fs)
    items, h = fit.legend(M, 300, WIDTH - M, [("dash", "seq-1", "synchronous loop"),
                                              ("line", "seq-0", "async scheduling")],
                          size=SIZE)
    return svg.document(WIDTH, 300 + h + 10, body + items,
                        label="Mean gap between a chat's tokens against the CPU time per "
                              "engine call, synchronous loop and async scheduling")


CHARTS = (Chart(
    "v1-async-overlap", "What the overlap buys: a chat's gap between tokens",
    _overlap_svg,
    caption="V1 on the workload of the latency charts (six chats decoding, three long "
            "documents and a chat arriving at 300 ms), budget 2,048, Llama-3-8B in bf16 priced "
            "with the H200 roofline; each engine call also spends the stated CPU time "
            "(scheduling, preparing the inputs, processing an output: an assumption, not a "
            "measurement). Mean over the six chats of the mean gap between their tokens."),)
