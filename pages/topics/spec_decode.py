"""Speculative decoding's KV in V1 (a section of docs/v1-scheduler.md).

scenario: V1's engine (`sim.v1.engine.LLMEngine`) with `num_speculative_tokens` drafts per
          step (and, for an EAGLE-style drafter, as many lookahead slots), the stand-in
          drafter's `spec_acceptance_rate`, recorded with `sim.trace.record`; the same
          requests without drafts run beside it, for the steps saved. Both run the
          synchronous engine loop: the simulation does not model async scheduling with
          drafts (vLLM has it for EAGLE, MTP and GPU n-gram drafters), so a config with
          drafts resolves to it, and the run without drafts uses the same loop so that the
          steps compare.
view:     each request's block table as slots: KV kept, this step's drafts accepted or
          rejected, the slot the next step writes, slots allocated ahead; then output
          tokens so far with and without drafts.
narrate:  the step's verification, cause first: what was written, what was kept, what the
          next step reuses; `details` lists every number.
"""
from __future__ import annotations

from dataclasses import dataclass

from pages.framework.request_list import RequestList
from pages.framework.widget import Context, Param, Widget
from pages.questions import Asker, spec
from pages.views import budget_view, fit, svg
from pages.views.text import a, plural, span, verb
from sim.core.sequence import SamplingParams
from sim.events import BlockAllocated, BlockFreed, KVWritten, TokenSampled
from sim.trace import Step, Trace, record
from sim.v1.config import CacheConfig, SchedulerConfig
from sim.v1.engine import LLMEngine

WIDTH = 400
SIZE = fit.min_size(WIDTH)
M = 8
SLOT = 20                      # a slot's width: one character of text fits
GAP = 5                        # between blocks
MAX_STEPS = 60
REQUESTS = RequestList(max_requests=2, max_len=32, max_arrival=8, example="6/16, 4/12@2")
LABEL = "Speculative decoding: each request's KV slots, drafts verified step by step"


def build_engine(v: dict, drafts: bool = True) -> LLMEngine:
    k = v["num_spec"] if drafts else 0
    longest = max(r.prompt + r.output for r in v["requests"])
    engine = LLMEngine(
        CacheConfig(block_size=v["block_size"], num_gpu_blocks=64),
        SchedulerConfig(max_num_batched_tokens=256, max_num_seqs=8,
                        max_model_len=longest + 2 * 6 + 1,
                        num_speculative_tokens=k,
                        num_lookahead_tokens=k if v["lookahead"] else 0,
                        async_scheduling=False),    # see the module docstring
        seed=v["seed"], spec_acceptance_rate=v["acceptance"])
    for r in REQUESTS.named(v["requests"]):
        engine.add_request(r.name, r.prompt, SamplingParams(max_tokens=r.output, ignore_eos=True),
                           arrival_step=r.arrival)
    return engine


def scenario(v: dict) -> Trace:
    trace = record(build_engine(v), max_steps=MAX_STEPS)
    plain = record(build_engine(v, drafts=False), max_steps=MAX_STEPS, with_slots=False)
    return Trace(trace.steps, trace.stopped, {"plain": plain})


# -- one request in one step ---------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    """What one request's block table shows after a step."""
    request_id: str
    seq_id: int
    color: str
    prompt_len: int
    output_len: int             # tokens it must generate
    computed: int               # KV kept (num_computed_tokens, after the rollback)
    length: int                 # tokens it has (prompt + outputs)
    capacity: int               # slots its blocks hold
    blocks: tuple[int, ...]     # its block table
    written: tuple[int, int]    # positions [first, end) written this step (0, 0: none)
    drafts: int                 # drafts verified this step
    accepted: int
    kept: int                   # output tokens gained this step
    finished: bool
    new_blocks: tuple[int, ...]  # allocated this step

    @property
    def rejected(self) -> int:
        return self.drafts - self.accepted

    @property
    def outputs(self) -> int:
        return self.length - self.prompt_len


def rows(step: Step, before: Step | None, colors: dict[str, str],
         outputs: dict[str, int]) -> list[Row]:
    snap = step.snapshot
    spec = (step.outputs.scheduled_spec_decode_tokens if step.outputs is not None else {})
    out = []
    for r in snap["requests"]:
        rid = r["request_id"]
        if rid in snap["queues"]["pending"]:
            continue
        s = r["seqs"][0]
        sid = s["seq_id"]
        written = next(((e.first_pos, e.first_pos + e.num_tokens)
                        for e in step.of_type(KVWritten) if e.seq_id == sid), (0, 0))
        kept = sum(1 for e in step.of_type(TokenSampled) if e.seq_id == sid)
        drafts = len(spec.get(rid, ()))
        accepted = max(0, kept - 1) if drafts else 0
        finished = rid in step.finished
        table = tuple(b for _, b, _ in s["block_table"])
        if finished and before is not None:
            prev = next(x for x in before.snapshot["requests"] if x["request_id"] == rid)
            table = tuple(b for _, b, _ in prev["seqs"][0]["block_table"])
            # A finished request's drafts past its last token are never checked.
            accepted = min(accepted, kept - 1) if drafts else 0
        new = tuple(e.physical for e in step.of_type(BlockAllocated) if sid in e.seq_ids)
        table = table + tuple(b for b in new if b not in table)
        computed = min(s["num_computed_tokens"], s["len"]) if not finished else s["len"]
        out.append(Row(rid, sid, colors[rid], s["prompt_len"], outputs[rid], computed,
                       s["len"], len(table) * snap["block_size"], table, written, drafts,
                       accepted, kept, finished, new))
    return out


# -- context ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SpecContext(Context):
    colors: dict
    outputs: dict               # request id -> output tokens asked for
    plain: Trace                # the same requests without drafts
    plain_done: dict            # request id -> iteration it finished without drafts
    done: dict                  # request id -> iteration it finished with drafts


def context(v: dict, trace: Trace) -> SpecContext:
    reqs = REQUESTS.named(v["requests"])
    plain = trace.meta["plain"]

    def finished(t):
        return {r["request_id"]: r["finished_step"] for r in t.last.snapshot["requests"]}

    return SpecContext(v, trace, {r.name: svg.seq(i) for i, r in enumerate(reqs)},
                       {r.name: r.output for r in reqs}, plain, finished(plain),
                       finished(trace))


def label(step: Step, ctx: SpecContext | None = None) -> str:
    return "start" if step.step is None else f"iteration {step.step}"


def _plain_outputs(ctx: SpecContext, index: int, rid: str) -> int:
    """Output tokens `rid` has after the same number of steps without drafts."""
    t = ctx.plain
    snap = t[min(index, len(t) - 1)].snapshot
    r = next(x for x in snap["requests"] if x["request_id"] == rid)
    return r["seqs"][0]["len"] - r["seqs"][0]["prompt_len"]


# -- drawing ----------------------------------------------------------------------------------

def _slot_state(row: Row, pos: int) -> tuple[str, str]:
    """(kind, mark) of one slot: kept, accepted, rejected, next, ahead, or (empty)."""
    w0, w1 = row.written
    if w0 <= pos < w1 and row.drafts:
        k = pos - w0          # 0: the real token fed in; 1..drafts: the drafts
        if k == 0:
            return "kept", ""
        if k <= row.accepted:
            return "accepted", "✓"
        if row.finished:
            return "ahead", ""          # never checked: the request stopped before them
        return "rejected", "✗"
    if pos < row.computed:
        return "kept", ""
    if pos == row.computed and row.length > row.computed and not row.finished:
        return "next", ""
    return "ahead", ""


def draw_row(y: float, row: Row, size: float) -> tuple[list[str], float]:
    out = []
    bs = row.capacity // max(1, len(row.blocks)) if row.blocks else 1
    per_block = bs * SLOT + GAP
    per_row = max(1, int((WIDTH - 2 * M + GAP) // per_block))
    h = SLOT * 1.1
    for k, block in enumerate(row.blocks):
        line, col = divmod(k, per_row)
        bx = M + col * per_block
        by = y + line * (h + 6)
        entry = f"ent:{row.seq_id}:{k}"
        out.append(svg.rect(bx - 1, by - 1, bs * SLOT + 2, h + 2, fill="panel", rx=2,
                            tip=f"block {block}" + (" (allocated this step)"
                                                    if block in row.new_blocks else ""),
                            data_k=entry))
        for j in range(bs):
            pos = k * bs + j
            kind, mark = _slot_state(row, pos)
            sx = bx + j * SLOT
            tip = f"{row.request_id}, position {pos}: {_KIND_WORDS[kind]}"
            tk = f"tok:{row.seq_id}:{pos}"
            if kind == "kept":
                fill = "prompt" if pos < row.prompt_len else "out"
                if fill == "prompt":
                    out.append(svg.rect(sx + 1.25, by + 0.75, SLOT - 2.5, h - 1.5,
                                        fill=row.color, stroke=row.color, rx=1,
                                        fill_opacity="0.3", stroke_width=1.5, tip=tip, data_k=tk))
                else:
                    out.append(svg.rect(sx + 0.5, by, SLOT - 1, h, fill=row.color, rx=1,
                                        tip=tip, data_k=tk))
            elif kind == "accepted":
                out.append(svg.rect(sx + 0.5, by, SLOT - 1, h, fill=row.color, rx=1, tip=tip,
                                    data_k=tk))
            elif kind == "rejected":
                out.append(svg.rect(sx + 0.5, by, SLOT - 1, h, fill="waste", rx=1, tip=tip,
                                    data_k=tk))
            elif kind == "next":
                out.append(svg.rect(sx + 1.25, by + 0.75, SLOT - 2.5, h - 1.5, fill="bg",
                                    stroke=row.color, rx=1, stroke_width=1.5,
                                    stroke_dasharray="3 2", tip=tip, data_k=tk))
            else:
                out.append(svg.rect(sx + 1, by + 0.5, SLOT - 2, h - 1, fill="free",
                                    stroke="line", rx=1, stroke_width=0.75, tip=tip, data_k=tk))
            if mark:
                out.append(svg.text(sx + SLOT / 2, by + h / 2 + size * 0.36, mark, size=size,
                                    anchor="middle", fill="bg" if kind == "accepted" else "fg",
                                    data_k=f"{tk}/t"))
        if block in row.new_blocks:
            out.append(svg.rect(bx - 2, by - 2, bs * SLOT + 4, h + 4, fill="bg",
                                fill_opacity="0", stroke="highlight", stroke_width=2, rx=2,
                                data_k=f"{entry}/new"))
    lines = -(-len(row.blocks) // per_row) if row.blocks else 1
    return out, lines * (h + 6)


_KIND_WORDS = {"kept": "KV kept", "accepted": "draft accepted this step (KV kept)",
               "rejected": "draft rejected this step: its KV is dropped, the slot is "
                           "written again next step",
               "next": "the next step writes the newest token here",
               "ahead": "allocated ahead, empty"}


def progress(y: float, label_text: str, done: int, total: int, color: str,
             size: float, key: str | None = None) -> tuple[list[str], float]:
    """An output-token bar: `done` of `total`; `key` keys the bar and its count."""
    lw = fit.text_width("no drafts", size) + size * 0.5
    room = WIDTH - 2 * M - lw - fit.text_width("32/32", size) - size * 0.5
    w = room * done / max(1, total)
    h = size * 1.1
    out = [svg.text(M, y + h - 2, label_text, size=size, fill="muted"),
           svg.rect(M + lw, y, room, h, fill="free", rx=2),
           svg.rect(M + lw, y, max(w, 0.01), h, fill=color, rx=2, data_k=key),
           svg.text(M + lw + room + size * 0.4, y + h - 2, f"{done}/{total}", size=size,
                    data_k=key and f"{key}/t")]
    return out, h + size * 0.5


def view(step: Step, ctx: SpecContext) -> svg.Figure:
    s = SIZE
    prev = ctx.trace[step.index - 1] if step.index else None
    out = [svg.text(M, s + 2, label(step), size=s + 1)]
    y = s * 2.1
    for row in rows(step, prev, ctx.colors, ctx.outputs):
        head = (f"{row.request_id}: {row.computed} KV kept, "
                f"{plural(row.capacity, 'slot')} allocated")
        if row.finished:
            head = f"{row.request_id}: finished, blocks freed"
        out.append(svg.text(M, y + s, head, size=s, data_k=f"row:{row.request_id}"))
        y += s * 1.5
        elements, h = draw_row(y, row, s)
        out += elements
        y += h
        plain = _plain_outputs(ctx, step.index, row.request_id)
        for name, done, color in (("drafts", row.outputs, row.color),
                                  ("no drafts", plain, "used")):
            elements, h = progress(y, name, min(done, row.output_len), row.output_len, color, s,
                                   key=f"prog:{row.request_id}:{name.replace(' ', '-')}")
            out += elements
            y += h
        y += s * 0.4
    if step.index == 0:
        reqs = REQUESTS.named(ctx.values["requests"])
        for r in reqs:
            text = (f"{r.name}: {a(f'{r.prompt}-token prompt')}, "
                    f"{plural(r.output, 'output token')}"
                    + (f", arrives at iteration {r.arrival}" if r.arrival else ""))
            lines, h = fit.paragraph(M, y, text, size=s, room=WIDTH - 2 * M, indent="   ")
            out += lines
            y += h + s * 0.2
        v = ctx.values
        for line in (f"{plural(v['num_spec'], 'draft')} per step, acceptance rate "
                     f"{v['acceptance']:.2f}",
                     "lookahead slots: " + (str(v["num_spec"]) if v["lookahead"] else "none"),
                     f"block size {v['block_size']}"):
            out.append(svg.text(M, y + s, line, size=s, fill="muted"))
            y += s * 1.45
    items = [("prefill", "seq-0", "prompt KV"), ("decode", "seq-0", "output KV / accepted ✓"),
             ("decode", "waste", "rejected draft ✗"), ("paused", "seq-0", "next step writes"),
             ("free", "free", "allocated, empty"), ("highlight", "highlight", "new block"),
             ("decode", "used", "output without drafts")]
    elements, h = budget_view.legend(M, y + 2, WIDTH - M, items, size=s)
    return svg.Figure(WIDTH, y + h + 8, out + elements, LABEL)


# -- narration --------------------------------------------------------------------------------

def narrate(step: Step, ctx: SpecContext) -> str:
    v = ctx.values
    k = v["num_spec"]
    if step.index == 0:
        return (f"With speculative decoding a drafter proposes {plural(k, 'token')} per step, "
                "and one forward pass of the model checks them all. The scheduler gives the "
                "drafts KV slots before they are checked"
                + (f", plus {plural(k, 'lookahead slot')} for the next drafts" if v["lookahead"]
                   else "") + ".")
    prev = ctx.trace[step.index - 1]
    ran = [row for row in rows(step, prev, ctx.colors, ctx.outputs) if row.written != (0, 0)]
    if not ran:
        return f"{label(step).capitalize()}: nothing runs."
    sentences = [_row_sentence(row) for row in ran]
    sentences.append(_so_far(ran, ctx, step))
    return f"{label(step).capitalize()}: " + " ".join(sentences)


def _row_sentence(row: Row) -> str:
    """One request's step, cause then effect, in one sentence."""
    rid = row.request_id
    w0, w1 = row.written
    slots = span(range(w0, w1))
    if not row.drafts:
        ahead = row.capacity - w1
        return (f"{rid} computes its {plural(w1 - w0, 'prompt token')} (slots {slots}) and "
                f"samples one; its blocks hold {plural(row.capacity, 'slot')}"
                + (f", {ahead} ahead for the next token and its drafts." if ahead > 0 else "."))
    first = f"{rid} writes its newest token and {plural(row.drafts, 'draft')} (slots {slots})"
    if row.finished:
        return (f"{first}; it needed only {plural(row.kept, 'more token')}, so it keeps "
                f"{'that one' if row.kept == 1 else 'those'} and stops.")
    if not row.rejected:
        return f"{first}; the model accepts all {row.drafts}, so {rid} gains {row.kept} tokens."
    again = span(range(w0 + 1 + row.accepted, w1))
    accepts = str(row.accepted) if row.accepted else "none"
    return (f"{first}; the model accepts {accepts}, so {rid} gains "
            f"{plural(row.kept, 'token')} and {'slot' if row.rejected == 1 else 'slots'} "
            f"{again} {verb(row.rejected, 'is', 'are')} written again next step.")


def _so_far(ran: list[Row], ctx: SpecContext, step: Step) -> str:
    """The consequence: outputs so far against the same steps without drafts."""
    parts = []
    for row in ran:
        rid = row.request_id
        if row.finished:
            parts.append(f"{rid} finishes at {label(step)}, against iteration "
                         f"{ctx.plain_done[rid]} without drafts")
        else:
            parts.append(f"{rid} has {row.outputs} of {row.output_len} outputs, against "
                         f"{_plain_outputs(ctx, step.index, rid)} without drafts")
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def details(step: Step, ctx: SpecContext) -> list[str]:
    v = ctx.values
    if step.index == 0:
        return [f"V1: num_speculative_tokens = {v['num_spec']}, num_lookahead_tokens = "
                f"{v['num_spec'] if v['lookahead'] else 0}, spec_acceptance_rate = "
                f"{v['acceptance']:.2f} (the stand-in drafter's chance that each draft is the "
                "model's own token).",
                "Verification keeps the drafts up to the first that differs from the model's "
                "token, plus the model's token there (or after the last draft).",
                f"Block size {v['block_size']}; the pool is ample, so nothing is preempted."]
    prev = ctx.trace[step.index - 1]
    out = []
    for row in rows(step, prev, ctx.colors, ctx.outputs):
        rid = row.request_id
        w0, w1 = row.written
        if (w0, w1) == (0, 0):
            out.append(f"{rid}: not scheduled.")
            continue
        out.append(f"{rid}: {plural(w1 - w0, 'token')} scheduled, KV written at positions "
                   f"{span(range(w0, w1))}.")
        if row.drafts:
            out.append(f"{rid}: {plural(row.drafts, 'draft')} verified: {row.accepted} accepted, "
                       f"{row.rejected} rejected; num_computed_tokens rolls back by "
                       f"{row.rejected} (update_from_output).")
        out.append(f"{rid}: {plural(row.kept, 'token')} sampled and kept; "
                   f"{row.outputs} of {row.output_len} outputs so far.")
        if row.new_blocks:
            out.append(f"{rid}: {plural(len(row.new_blocks), 'block')} allocated "
                       f"({', '.join(map(str, row.new_blocks))}): allocate_slots covers the "
                       "scheduled tokens"
                       + (" and the lookahead slots" if v["lookahead"] else "") + ".")
        out.append(f"{rid}: block table of {plural(len(row.blocks), 'block')} = "
                   f"{plural(row.capacity, 'slot')}, {row.computed} holding kept KV.")
        if row.finished:
            freed = [e.physical for e in step.of_type(BlockFreed)]
            out.append(f"{rid}: finishes; its blocks are freed ({', '.join(map(str, freed))}).")
    return out


QUESTIONS = Asker(("spec-rollback", spec.rollback), ("spec-accept", spec.accepted))


WIDGETS = (Widget(
    id="spec-decode",
    keys=("row", "ent", "tok", "prog"),
    goal=('Explain why draft tokens need slots ahead of time and what a rejected draft costs in '
          'memory and steps.'),
    title="Speculative decoding: draft slots, kept and rejected",
    summary="Each square is a KV slot. Drafts get slots before the model checks them; "
            "rejected drafts' slots are written again by the next step. The engine runs "
            "the synchronous loop, with and without drafts (async scheduling with drafts "
            "is not simulated).",
    params=(
        REQUESTS.param("requests", "6/16"),
        Param("num_spec", "drafts per step", "int", 3, min=1, max=6,
              help="num_speculative_tokens: tokens the drafter proposes per step (1 to 6)."),
        Param("acceptance", "acceptance rate", "float", 0.6, min=0.0, max=1.0,
              help="The chance that each draft is the model's own token (0 to 1)."),
        Param("lookahead", "lookahead slots (EAGLE)", "bool", True,
              help="An EAGLE-style drafter: allocate as many slots again for the next drafts."),
        Param("block_size", "block size", "int", 4, min=1, max=8,
              help="Tokens per KV block (1 to 8)."),
        Param("seed", "seed", "int", 0, min=0, max=9999,
              help="Seeds the model and which drafts are accepted."),
    ),
    scenario=scenario, context=context, view=view, narrate=narrate, label=label,
    details=details, questions=QUESTIONS, question_kinds=QUESTIONS.kinds,
),)
