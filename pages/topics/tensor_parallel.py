"""Topic page "tensor parallelism": one layer split over 1, 2, 4 or 8 GPUs, driven by a real
engine run (vLLM v0.5.5 Megatron-style layers, driver worker on rank 0; VLLM.md section 6).

scenario: `sim.studies.sharded_layer` serves two small requests with an `LLMEngine` and runs
          every step's tokens through a toy layer on tp ranks and on one GPU. The trace is
          an intro, then three (phase, step) items per engine step: schedule and
          broadcast; attention and the first all-reduce; MLP and the second all-reduce.
view:     rank 0's block tables, every GPU's copy of the block numbers with its own KV
          heads' slots, the partial outputs and their all-reduce, and the memory per GPU
          of a real model (`sim.perf.models` / `sim.perf.hardware`, vLLM's formulas).
narrate:  what rank 0 and the GPUs did in that phase, from the same step record.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pages.framework.registry import Chart
from pages.framework.widget import Context, Param, Widget
from pages.questions import Asker, parallel
from pages.views import fit, svg
from pages.views.text import commas, join, noun, plural, span
from pages.views.vectors import short
from sim.perf.hardware import GPUS, get_gpu, memory_profile
from sim.perf.models import MODELS, get_model, kv_bytes_per_token
from sim.perf.tensor_parallel import (
    RankHeads,
    check_tensor_parallel,
    num_kv_head_replicas,
    partition_heads,
    per_rank_cache,
)
from sim.studies.paper_table_1 import table_1_rows
from sim.studies.sharded_layer import ShardedStep, run_sharded_layer

WIDGET_ID = "tensor-parallelism"
TP_SIZES = (1, 2, 4, 8)
PHASES = ("broadcast", "attention", "mlp")

# The toy layer the numbers come from (small enough to print every value).
NUM_HEADS = 8
HEAD_SIZE = 2
HIDDEN = 4
INTERMEDIATE = 8
# The toy engine: two requests on a cache of 8 blocks of 4 tokens.
BLOCK_SIZE = 4
NUM_GPU_BLOCKS = 8
REQUESTS = (("A", 6), ("B", 3))        # (request id, prompt length)
EQUAL_TOL = 1e-9

WIDTH = 400
PAD = 10
SMALL = fit.min_size(WIDTH)           # the smallest text: 11 px on a phone (13.5 units)
GiB = 1024 ** 3
KiB = 1024
MiB = 1024 ** 2


# ------------------------------------------------------------------------ formatting

def size_text(n: float) -> str:
    """Bytes in binary units with one decimal (GiB/MiB/KiB)."""
    for unit, div in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= div:
            text = f"{n / div:.2f}".rstrip("0").rstrip(".") if n / div < 10 \
                else f"{n / div:.1f}".rstrip("0").rstrip(".")
            return f"{text} {unit}"
    return f"{int(n)} B"


def heads_text(heads) -> str:
    return f"{noun(heads, 'head')} {span(heads)}"


def request_index(rid: str) -> int:
    return [r for r, _ in REQUESTS].index(rid)


def max_diff(a, b) -> float:
    return max(abs(x - y) for x, y in zip(a, b))


# ------------------------------------------------------------------------- scenario

def normalise(v: dict[str, Any]) -> dict[str, Any]:
    """Choice fields arrive as strings; the sim wants numbers."""
    return dict(v, tp=int(v["tp"]), kv_heads=int(v["kv_heads"]))


def scenario(values: dict[str, Any]) -> list[tuple[str, ShardedStep | None]]:
    """("intro", None), then (phase, step) for each engine step and phase."""
    v = normalise(values)
    run = run_sharded_layer(tp_size=v["tp"], num_kv_heads=v["kv_heads"],
                            max_tokens=v["max_tokens"], seed=v["seed"], requests=REQUESTS,
                            num_heads=NUM_HEADS, head_size=HEAD_SIZE, hidden_size=HIDDEN,
                            intermediate_size=INTERMEDIATE, block_size=BLOCK_SIZE,
                            num_gpu_blocks=NUM_GPU_BLOCKS)
    return [("intro", None)] + [(phase, st) for st in run.steps for phase in PHASES]


@dataclass(frozen=True)
class TPContext(Context):
    tp: int = 1
    kv_heads: int = 1
    parts: list[RankHeads] = field(default_factory=list)   # each GPU's heads
    replicas: int = 1                                        # GPUs per KV head
    memory: list = field(default_factory=list)               # (text, colour) lines


def context(values: dict[str, Any], trace) -> TPContext:
    v = normalise(values)
    tp, kv = v["tp"], v["kv_heads"]
    return TPContext(v, trace, tp, kv, partition_heads(NUM_HEADS, kv, tp),
                     num_kv_head_replicas(kv, tp), memory_lines(v))


def check(v: dict[str, Any]) -> dict[str, str]:
    errors = {}
    try:
        check_tensor_parallel(NUM_HEADS, v["kv_heads"], v["tp"])
    except ValueError as err:
        errors["kv_heads"] = f"KV heads: {err}"
    model = get_model(v["model"])
    try:
        check_tensor_parallel(model.num_attention_heads, model.num_kv_heads, v["tp"])
    except ValueError as err:
        errors["model"] = f"model: {err}"
    return errors


# ---------------------------------------------------------------------- step names

PHASE_NAMES = {"broadcast": "schedule", "attention": "attention", "mlp": "MLP"}


def label(item, ctx: TPContext | None = None) -> str:
    """The step's name: the counter, the picture's heading and the narration use it. Engine
    steps count from 1, as a reader counts them."""
    phase, st = item
    if phase == "intro":
        return "start"
    return f"engine step {st.step + 1}, {PHASE_NAMES[phase]}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _and(items) -> str:
    return join(list(items))


# ----------------------------------------------------------------------- narration

def narrate(item, ctx: TPContext) -> str:
    """Cause, effect, consequence: at most three sentences, starting with the step's name."""
    phase, st = item
    head = _cap(label(item)) + ": "
    if phase == "intro":
        return head + intro_narration(ctx)
    return head + {"broadcast": broadcast_narration, "attention": attention_narration,
                   "mlp": mlp_narration}[phase](ctx, st)


def gpu_heads(p: RankHeads) -> str:
    return f"query {heads_text(p.heads)} and KV {heads_text(p.kv_heads)}"


def intro_narration(ctx: TPContext) -> str:
    tp, kv = ctx.tp, ctx.kv_heads
    if tp == 1:
        who = (f"one GPU holds all {NUM_HEADS} query heads and all "
               f"{plural(kv, 'KV head')}, so nothing is split.")
    elif tp == 2:
        who = (f"tp = 2 splits the layer's {NUM_HEADS} query heads over 2 GPUs: GPU 0 gets "
               f"{gpu_heads(ctx.parts[0])}, GPU 1 {gpu_heads(ctx.parts[1])}.")
    else:
        p = ctx.parts[0]
        who = (f"tp = {tp} splits the layer's {NUM_HEADS} query heads over {tp} GPUs: each "
               f"gets {plural(len(p.heads), 'query head')} and "
               f"{plural(len(p.kv_heads), 'KV head')}"
               + (f", and with {plural(kv, 'KV head')} for {tp} GPUs each KV head is "
                  f"replicated on {ctx.replicas} GPUs." if ctx.replicas > 1 else "."))
    if tp == 1:
        return (who + f" Its cache has {NUM_GPU_BLOCKS} blocks of {BLOCK_SIZE} slots, each "
                f"holding every KV head's K and V. The Scheduler and the BlockSpaceManager run "
                f"beside it, as rank 0 (the driver).")
    return (who + f" Every GPU allocates the same {NUM_GPU_BLOCKS} block numbers, and block b "
            f"on GPU r holds only GPU r's KV heads. Rank 0 alone runs the Scheduler and the "
            f"BlockSpaceManager.")


def tables_text(tables: dict[str, tuple[int, ...]]) -> str:
    return ", ".join(f"{rid}: [{', '.join(str(b) for b in t)}]" for rid, t in tables.items())


def allocation_text(st: ShardedStep) -> str:
    """"physical block 7 for A (logical block 0), physical block 6 for A (logical block 1)"."""
    return ", ".join(f"physical block {a.physical} for {a.request_id} (logical block "
                     f"{a.logical})" for a in st.allocated)


def broadcast_narration(ctx: TPContext, st: ShardedStep) -> str:
    tp = ctx.tp
    if st.admitted:
        cause = ("the scheduler on rank 0 admits "
                 + _and(f"{a.request_id} ({plural(a.num_tokens, 'prompt token')})"
                        for a in st.admitted))
    else:
        cause = "the scheduler on rank 0 schedules a decode step for " + _and(st.broadcast)
    if st.allocated:
        by_req: dict[str, list[int]] = {}
        for al in st.allocated:
            by_req.setdefault(al.request_id, []).append(al.physical)
        cause += (", so it allocates "
                  + _and(f"{noun(bs, 'block')} {_and(str(b) for b in bs)} for {rid}"
                         for rid, bs in by_req.items()) + ".")
    else:
        cause += "; every new token fits its last block, so it allocates nothing."
    send = ("It hands the block tables to its own model runner" if tp == 1 else
            f"It broadcasts the block tables to {'both' if tp == 2 else f'all {tp}'} GPUs "
            f"with the new tokens")
    after = (" There is no other GPU to tell." if tp == 1 else
             " Every GPU uses these block numbers; none decides for itself.")
    return f"{cause} {send}: {tables_text(st.broadcast)}.{after}"


def writes_text(st: ShardedStep) -> str:
    """Where the step's K and V go: "A positions 0-5 into blocks 7, 6; B position 2 into
    block 5 slot 2"."""
    if len(st.written) > len(st.results):
        by_req: dict[str, list] = {}
        for w in st.written:
            by_req.setdefault(w.request_id, []).append((w.position, w.block))
        parts = []
        for rid, xs in by_req.items():
            blocks = list(dict.fromkeys(b for _, b in xs))
            parts.append(f"{rid} {noun(xs, 'position')} {span([p for p, _ in xs])} into "
                         f"{noun(blocks, 'block')} " + ", ".join(str(b) for b in blocks))
        return "; ".join(parts)
    return "; ".join(f"{w.request_id} position {w.position} into block {w.block} slot {w.slot}"
                     for w in st.written)


def attention_narration(ctx: TPContext, st: ShardedStep) -> str:
    tp = ctx.tp
    if tp == 1:
        return (f"the GPU writes the K and V of all its KV heads where the block table says: "
                f"{writes_text(st)}. It attends with all {NUM_HEADS} query heads, and o_proj "
                f"gives the whole output. With one GPU no all-reduce is needed.")
    return (f"each GPU writes the K and V of its own KV heads at the same block and slot: "
            f"{writes_text(st)}. Each GPU attends with its own query heads (no communication) "
            f"and multiplies by its rows of o_proj, giving {plural(tp, 'partial output')} "
            f"per token. The all-reduce sums them, so every GPU ends with the same vector.")


def mlp_ok(st: ShardedStep) -> bool:
    return all(max_diff(r.sharded.output, r.unsharded.output) < EQUAL_TOL for r in st.results)


def mlp_narration(ctx: TPContext, st: ShardedStep) -> str:
    tp = ctx.tp
    if tp > 1:
        text = (f"gate and up projections are column-parallel and down_proj row-parallel, so "
                f"a second all-reduce sums {plural(tp, 'partial')}: two all-reduces per layer. "
                + ("The layer's output equals the one-GPU result (tp = 1)."
                   if mlp_ok(st) else "The output DIFFERS from the one-GPU result (a bug)."))
    else:
        text = ("the MLP runs on the one GPU with no all-reduce. This is the reference the "
                "sharded runs are compared with.")
    if st.finished:
        text += (f" {_and(st.finished)} finished: rank 0 frees physical blocks "
                 + ", ".join(str(b) for b in st.freed)
                 + " (BlockFreed), and the GPUs are not told: those slots are simply written "
                   "again later.")
    return text


def details(item, ctx: TPContext) -> list[str]:
    """The step's whole account: who holds what, what rank 0 decided and sent, where every
    K and V went, every partial output and sum."""
    phase, st = item
    tp = ctx.tp
    if phase == "intro":
        out = [f"tp = {tp}: the toy layer has {NUM_HEADS} query heads of size {HEAD_SIZE}, "
               f"{plural(ctx.kv_heads, 'KV head')}, hidden size {HIDDEN}, MLP width "
               f"{INTERMEDIATE}."]
        out += [f"GPU {p.rank}: query {heads_text(p.heads)}, KV {heads_text(p.kv_heads)}."
                for p in ctx.parts]
        if ctx.replicas > 1:
            out.append(f"There are fewer KV heads ({ctx.kv_heads}) than GPUs ({tp}), so each "
                       f"KV head is replicated on {ctx.replicas} GPUs.")
        out.append(f"Every GPU has the same {NUM_GPU_BLOCKS} block numbers of {BLOCK_SIZE} "
                   f"slots; block b on GPU r holds the keys and values of GPU r's KV heads "
                   f"only.")
        out.append("Rank 0 (the driver) also runs the only Scheduler and BlockSpaceManager.")
        out.append("Requests: " + ", ".join(f"{rid} with {plural(n, 'prompt token')}"
                                           for rid, n in REQUESTS)
                   + f"; each generates {plural(ctx.values['max_tokens'], 'token')}.")
        return out + [text for text, _ in ctx.memory]
    if phase == "broadcast":
        out = [("Prefill step: " if st.prefill else "Decode step: ")
               + ("admits " + _and(f"{a.request_id} ({plural(a.num_tokens, 'prompt token')})"
                                   for a in st.admitted) if st.admitted
                  else "decodes one token for each of " + _and(st.broadcast)) + "."]
        out.append("Rank 0 allocates " + allocation_text(st) + "." if st.allocated else
                   "Rank 0 allocates nothing (every new token fits its last block).")
        out.append(("Rank 0 hands the block tables to its own model runner: " if tp == 1 else
                    f"Rank 0 broadcasts the block tables to "
                    f"{'both' if tp == 2 else f'all {tp}'} GPUs, with the new tokens: ")
                   + tables_text(st.broadcast) + ".")
        out.append(f"Rank 0 has {plural(st.free_after, 'free block')} left.")
        return out
    res = st.results
    if phase == "attention":
        out = ["K and V written: " + "; ".join(
            f"{w.request_id} position {w.position} into block {w.block} slot {w.slot}"
            for w in st.written) + (" (the same block and slot on every GPU)." if tp > 1
                                    else ".")]
        for r in res:
            for a in r.sharded.attention:
                out.append(f"{r.request_id} position {r.position}, GPU {a.rank}: o_proj "
                           f"partial {short(a.partial)}.")
            out.append(f"{r.request_id} position {r.position}: "
                       + ("all-reduce" if tp > 1 else "output") + " = "
                       + short(r.sharded.attn_all_reduce) + ".")
        return out
    out = []
    for r in res:
        for m in r.sharded.mlp:
            out.append(f"{r.request_id} position {r.position}, GPU {m.rank}: down_proj partial "
                       f"{short(m.partial)}.")
        out.append(f"{r.request_id} position {r.position}: "
                   + ("all-reduce" if tp > 1 else "MLP output") + " = "
                   + short(r.sharded.mlp_all_reduce) + f"; layer output "
                   f"{short(r.sharded.output)}; on one GPU {short(r.unsharded.output)}.")
    if st.finished:
        out.append(f"{_and(st.finished)} finished: rank 0 frees physical blocks "
                   + ", ".join(str(b) for b in st.freed) + " (BlockFreed).")
    return out


# ---------------------------------------------------------------------------- view

def memory_lines(v) -> list[tuple[str, str]]:
    model, gpu, tp = get_model(v["model"]), get_gpu(v["gpu"]), v["tp"]
    ranks = per_rank_cache(model, block_size=16, dtype="fp16", tp_size=tp)
    r0 = ranks[0]
    full = kv_bytes_per_token(model, "fp16", 1)
    prof = memory_profile(model, gpu, block_size=16, dtype="fp16", tp_size=tp)
    lines = [(f"{model.name}, fp16, on {tp} x {gpu.name}", "fg"),
             (f"each GPU: {len(r0.heads)}/{model.num_attention_heads} query heads, "
              f"{len(r0.kv_heads)}/{model.num_kv_heads} KV heads", "fg"),
             (f"KV per token: {size_text(r0.bytes_per_token)} per GPU "
              f"({size_text(full)} for all heads)", "fg")]
    replicas = num_kv_head_replicas(model.num_kv_heads, tp)
    if replicas > 1:
        lines.append((f"each KV head is kept on {replicas} GPUs (replicated)", "waste"))
    if prof.num_gpu_blocks == 0:
        lines.append((f"weights {size_text(prof.weight_bytes)} per GPU: no room for a "
                      f"KV cache", "highlight"))
        lines.append(("vLLM stops at start-up (no available memory)", "highlight"))
    else:
        lines.append((f"per GPU: weights {size_text(prof.weight_bytes)}, KV cache "
                      f"{size_text(prof.kv_cache_bytes)}", "fg"))
        lines.append((f"{commas(prof.num_gpu_blocks)} blocks of 16 = "
                      f"{commas(prof.num_token_slots)} tokens", "fg"))
    return lines


def view(item, ctx: TPContext) -> str:
    """Rank 0's panel, the GPUs' caches, the all-reduce panel, a legend and the memory lines.
    The phases differ in height and each frame keeps its own (a document, not a Figure)."""
    phase, st = item
    s = SMALL
    body: list[str] = [svg.text(PAD, 20, label(item), size=16)]
    sub = (f"tp = {ctx.tp}: {NUM_HEADS} query heads, {plural(ctx.kv_heads, 'KV head')}, "
           f"{plural(ctx.tp, 'GPU')}")
    body.append(svg.text(PAD, 40, sub, size=s, fill="muted"))
    marks: set[str] = set()
    y = rank0_panel(body, 50, ctx, phase, st, marks)
    y = gpu_panel(body, y, ctx, phase, st, marks)
    if phase in ("attention", "mlp"):
        y = all_reduce_panel(body, y, ctx, phase, st)
    y = legend_panel(body, y, ctx, st, marks)
    y = memory_panel(body, y, ctx)
    return svg.document(WIDTH, y, body,
                        label=f"Tensor parallelism, tp = {ctx.tp}: {label(item)}")


def rank0_panel(body: list[str], y0: float, ctx: TPContext, phase: str,
                st: ShardedStep | None, marks: set[str]) -> float:
    """Rank 0's scheduler and block manager with the block tables it holds."""
    s = SMALL
    h = 3 * (s + 9) + 6
    body.append(svg.rect(PAD - 4, y0, WIDTH - 2 * PAD + 8, h, fill="panel",
                         stroke="accent" if phase == "broadcast" else None,
                         tip="rank 0 (the driver): the only Scheduler and BlockSpaceManager",
                         data_k="rank0"))
    y = y0 + s + 5
    body.append(svg.text(PAD, y, "rank 0: Scheduler + BlockSpaceManager", size=s))
    if st is None:
        tables, new = {}, set()
        status = f"{NUM_GPU_BLOCKS} free blocks"
    else:
        tables = st.broadcast
        new = ({(a.request_id, a.logical) for a in st.allocated} if phase == "broadcast"
               else set())
        status = ("prefill" if st.prefill else "decode") + f", {st.free_after} blocks free"
        if phase == "mlp" and st.finished:
            status = f"{_and(st.finished)} finished: {plural(len(st.freed), 'block')} freed"
    ty = y + 8
    x = PAD
    for rid, table in tables.items():
        colour = svg.seq(request_index(rid))
        marks.add("request")
        body.append(svg.text(x, ty + 16, f"{rid}", size=s, fill=colour, data_k=f"row:{rid}"))
        x += 14
        for lg, b in enumerate(table):
            fresh = (rid, lg) in new
            if fresh:
                marks.add("allocated")
            body.append(svg.rect(x, ty + 2, 22, 20, fill="bg",
                                 stroke="highlight" if fresh else colour,
                                 stroke_width=2.5 if fresh else 1,
                                 tip=f"{rid}: logical block {lg} -> physical block {b}"
                                     + (" (allocated this step)" if fresh else ""),
                                 data_k=f"ent:{rid}:{lg}"))
            body.append(svg.text(x + 11, ty + 16, b, size=s, anchor="middle",
                                 data_k=f"ent:{rid}:{lg}/t"))
            x += 24
        x += 16
    if not tables:
        body.append(svg.text(PAD, ty + 16, "block tables: none yet", size=s, fill="muted"))
    y = ty + 26 + s
    body.append(svg.text(PAD, y, status, size=s, fill="muted"))
    if phase == "broadcast":
        body.append(svg.text(WIDTH - PAD, y, "broadcast ↓" if ctx.tp > 1 else "to the model ↓",
                             size=s, anchor="end", fill="accent"))
    return y0 + h + 8


def gpu_panel(body: list[str], y: float, ctx: TPContext, phase: str,
              st: ShardedStep | None, marks: set[str]) -> float:
    """One row per GPU: the same block numbers, each holding that GPU's KV heads' slice
    of the tokens in its slots."""
    s = SMALL
    tp, replicas = ctx.tp, ctx.replicas
    cache_x = PAD + 80
    bw = (WIDTH - PAD - cache_x) / NUM_GPU_BLOCKS
    body.append(svg.text(cache_x - 6, y + s, "block", size=s, anchor="end", fill="muted"))
    for b in range(NUM_GPU_BLOCKS):
        body.append(svg.text(cache_x + b * bw + bw / 2 - 1, y + s, b, size=s,
                             anchor="middle", fill="muted"))
    y += s + 6
    rh = 2 * s + 12
    if not st:
        slots = {}
    else:
        slots = st.slots_before if phase == "broadcast" else st.slots
    written = {(w.block, w.slot) for w in st.written} if st and phase == "attention" else set()
    named = {b for t in st.broadcast.values() for b in t} if st and phase == "broadcast" \
        else set()
    fresh_blocks = {a.physical for a in st.allocated} if st and phase == "broadcast" else set()
    if named - fresh_blocks:
        marks.add("named")
    if written:
        marks.add("written")
    if replicas > 1:
        marks.add("replicated")
    if phase == "broadcast" and ctx.tp > 1:
        # The broadcast: from rank 0's panel down to every GPU.
        body.append(svg.line(PAD - 2, y - s - 12, PAD - 2, y + (tp - 1) * rh + 9,
                             stroke="accent", width=2))
        for p in ctx.parts:
            ay = y + p.rank * rh + 9
            body.append(svg.line(PAD - 2, ay, PAD + 3, ay, stroke="accent", width=2))
    for p in ctx.parts:
        ry = y + p.rank * rh
        body.append(svg.text(PAD + 6, ry + s, f"GPU {p.rank}", size=s))
        body.append(svg.text(PAD + 6, ry + 2 * s + 4,
                             f"Q{span(p.heads)} KV{span(p.kv_heads)}", size=s,
                             fill="waste" if replicas > 1 else "muted"))
        for b in range(NUM_GPU_BLOCKS):
            bx = cache_x + b * bw
            outline = ("highlight" if b in fresh_blocks else "accent" if b in named
                       else None)
            cells = [svg.rect(bx + 1, ry, bw - 3, rh - 8, fill="free", rx=1, stroke=outline,
                              stroke_width=2 if outline else None)]
            sw = (bw - 5) / BLOCK_SIZE
            tips = []
            for slot in range(BLOCK_SIZE):
                owner = slots.get((b, slot))
                if owner is None:
                    continue
                rid, pos = owner
                hot = (b, slot) in written
                cells.append(svg.rect(bx + 2 + slot * sw, ry + 2, sw - 1, rh - 12,
                                      fill=svg.seq(request_index(rid)), rx=0,
                                      stroke="highlight" if hot else None,
                                      stroke_width=2 if hot else None,
                                      data_k=f"kv:{p.rank}:{rid}:{pos}"))
                tips.append(f"slot {slot}: {rid} position {pos}")
            tip = (f"GPU {p.rank}, block {b}: K and V of KV {heads_text(p.kv_heads)} "
                   f"for " + ("; ".join(tips) if tips else "no tokens (free)"))
            body.append(svg.group(cells, tip=tip, data_k=f"shard:{p.rank}:{b}"))
    y += tp * rh
    note = ("block b on every GPU: the same tokens, each GPU's own KV heads" if tp > 1
            else "block b: the K and V of every KV head for its tokens")
    lines, h = fit.paragraph(PAD, y, note, size=s, room=WIDTH - 2 * PAD, fill="muted")
    body += lines
    y += h
    if replicas > 1:
        lines, h = fit.paragraph(PAD, y, f"{ctx.kv_heads} KV heads < {tp} GPUs: each KV head "
                                         f"is replicated on {replicas} GPUs", size=s,
                                 room=WIDTH - 2 * PAD, fill="waste")
        body += lines
        y += h
    return y + 8


def all_reduce_panel(body: list[str], y: float, ctx: TPContext, phase: str,
                     st: ShardedStep) -> float:
    """The first request's partial output on each GPU and their sum; the other requests'
    sums. Every GPU ends the all-reduce holding the sum."""
    s = SMALL
    tp = ctx.tp
    what = "o_proj" if phase == "attention" else "down_proj"
    first, *others = st.results
    colour = svg.seq(request_index(first.request_id))
    title = (f"{what} partials, {first.request_id} position {first.position}" if tp > 1 else
             f"{what} output, {first.request_id} position {first.position}")
    body.append(svg.text(PAD, y + s, title, size=s, fill=colour))
    y += s + 8
    col = PAD + 112
    if tp > 1:
        for p in ctx.parts:
            t = first.sharded
            part = t.attention[p.rank].partial if phase == "attention" else t.mlp[p.rank].partial
            body.append(svg.text(PAD, y + s, f"GPU {p.rank}", size=s, fill="muted"))
            body.append(svg.text(col, y + s, short(part), size=s, data_k=f"partial:{p.rank}"))
            y += s + 5
        body.append(svg.line(PAD, y + 2, WIDTH - PAD, y + 2, stroke="line"))
        y += 4
    for r in st.results:
        t = r.sharded
        total = t.attn_all_reduce if phase == "attention" else t.mlp_all_reduce
        name = f"{r.request_id} " + ("all-reduce" if tp > 1 else "output")
        body.append(svg.text(PAD, y + s, name, size=s, fill=svg.seq(request_index(r.request_id))))
        body.append(svg.text(col, y + s, short(total), size=s, fill="accent",
                             data_k=f"sum:{r.request_id}"))
        y += s + 5
    if phase == "mlp":
        y += 4
        body.append(svg.text(PAD, y + s, "layer output" + (" vs tp = 1" if tp > 1 else ""),
                             size=s, fill="muted"))
        y += s + 5
        for r in st.results:
            same = max_diff(r.sharded.output, r.unsharded.output) < EQUAL_TOL
            mark = (" = tp 1 ✓" if same else " ≠ tp 1 ✗") if tp > 1 else ""
            body.append(svg.text(PAD, y + s, f"{r.request_id}", size=s,
                                 fill=svg.seq(request_index(r.request_id))))
            body.append(svg.text(PAD + 24, y + s, short(r.sharded.output) + mark, size=s,
                                 fill=("seq-2" if same else "highlight") if tp > 1 else "fg",
                                 data_k=f"out:{r.request_id}"))
            y += s + 5
    return y + 8


def legend_panel(body: list[str], y: float, ctx: TPContext, st: ShardedStep | None,
                 marks: set[str]) -> float:
    """What every colour and outline in this frame means."""
    items = []
    if "request" in marks:
        items += [("chip", svg.seq(request_index(rid)), f"request {rid}") for rid, _ in REQUESTS]
    if "allocated" in marks:
        items.append(("outline", "highlight", "allocated this step"))
    if "named" in marks:
        items.append(("outline", "accent", "in the broadcast"))
    if "written" in marks:
        items.append(("outline", "highlight", "K, V written this step"))
    if "replicated" in marks:
        items.append(("text:KV", "waste", "a replicated KV head"))
    if not items:
        return y
    chips, h = fit.legend(PAD, y, WIDTH - PAD, items, size=SMALL)
    body += chips
    return y + h + 10


def memory_panel(body: list[str], y: float, ctx: TPContext) -> float:
    """Memory per GPU for the chosen real model."""
    s = SMALL
    out, yy = [], y + 4
    for text, colour in ctx.memory:
        lines, h = fit.paragraph(PAD, yy, text, size=s, room=WIDTH - 2 * PAD, fill=colour,
                                 indent="  ")
        out += lines
        yy += h
    body.append(svg.rect(PAD - 4, y, WIDTH - 2 * PAD + 8, yy - y + 8, fill="panel"))
    body += out
    return yy + 14


def meta(item, ctx: TPContext) -> dict[str, str]:
    return {"phase": item[0]}


MODEL_CHOICES = tuple((mid, m.name) for mid, m in MODELS.items())
GPU_CHOICES = tuple((gid, g.name) for gid, g in GPUS.items())

QUESTIONS = Asker(("tp-partial", parallel.all_reduce))


WIDGETS = (Widget(
    id=WIDGET_ID,
    keys=("rank0", "shard", "ent", "kv", "sum"),
    goal=("Explain how one scheduler's block tables serve every GPU, each holding its own heads' "
          'slice of the KV cache.'),
    title="Tensor parallelism: one layer on several GPUs",
    summary="Rank 0 schedules and broadcasts block tables; each GPU keeps its heads' slice "
            "of every block; all-reduces combine the partial outputs.",
    params=(
        Param("tp", "GPUs (tp)", "choice", "2",
              choices=tuple((str(t), str(t)) for t in TP_SIZES),
              help="Tensor parallel size: GPUs that split every layer."),
        Param("kv_heads", "KV heads (toy layer)", "choice", "2",
              choices=(("1", "1"), ("2", "2"), ("4", "4"), ("8", "8")),
              help="KV heads of the 8-head toy layer; fewer than GPUs means replication."),
        Param("max_tokens", "tokens per request", "int", 4, min=1, max=6,
              help="New tokens each of the two requests generates."),
        Param("model", "model for the memory line", "choice", "llama-2-70b",
              choices=MODEL_CHOICES),
        Param("gpu", "GPU for the memory line", "choice", "a100-80gb", choices=GPU_CHOICES),
        Param("seed", "seed", "int", 0, min=0, max=999,
              help="Seeds the toy layer's weights and the token inputs."),
    ),
    scenario=scenario, context=context, view=view, narrate=narrate, label=label,
    details=details, meta=meta, check=lambda v: check(normalise(v)),
    questions=QUESTIONS, question_kinds=QUESTIONS.kinds,
),)


# ------------------------------------------------------------ build-time chart

def render_table_1() -> str:
    """The paper's Table 1 per GPU (`sim.studies.paper_table_1`)."""
    s = SMALL
    body: list[str] = []
    y = 6.0
    lines, h = fit.paragraph(PAD, y, "Table 1 of the paper, recomputed per GPU", size=s + 2,
                             room=WIDTH - 2 * PAD)
    body += lines
    y += h + 2
    for r in table_1_rows():
        gap = r.slots / (r.paper_k * 1000) - 1
        rows = [
            (f"{r.model} on {r.tp} x {r.gpu}", "fg", s + 1),
            (f"KV per token: {size_text(r.per_gpu)} on each GPU "
             f"({size_text(r.per_gpu * r.tp)} in all)", "muted", s),
            (f"paper: {r.paper_gb} GB of KV cache, {r.paper_k}K token slots", "fg", s),
            (f"{r.paper_gb} GiB / {size_text(r.per_gpu * r.tp)} = "
             f"{commas(r.slots)} slots ({gap:+.2%} vs the paper)", "seq-2", s),
            (f"vLLM v0.5.5 sizing: {size_text(r.v055_kv)}, "
             f"{commas(r.v055_slots)} slots", "muted", s),
        ]
        y += 8
        for text, colour, size in rows:
            lines, h = fit.paragraph(PAD, y, text, size=size, room=WIDTH - 2 * PAD,
                                     fill=colour, indent="  ")
            body += lines
            y += h
    return svg.document(WIDTH, y + 10, body, label="The paper's Table 1, recomputed")


CHARTS = (Chart(
    id="tensor-parallel-table-1",
    title="The paper's Table 1 per GPU",
    render=render_table_1,
    caption="KV bytes per token from vLLM's formula (sim.models); slots = the paper's KV "
            "space / bytes per token; last line: vLLM v0.5.5's own sizing on those GPUs "
            "(sim.hardware, gpu_memory_utilization 0.9, estimated activations).",
),)
