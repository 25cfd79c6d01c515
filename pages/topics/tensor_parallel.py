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
from pages.views import svg
from pages.views.text import commas, noun, plural, span
from pages.views.vectors import short
from sim.perf.hardware import GPUS, get_gpu, memory_profile
from sim.perf.models import MODELS, get_model, kv_bytes_per_token
from sim.perf.tensor_parallel import (RankHeads, check_tensor_parallel, num_kv_head_replicas,
                                      partition_heads, per_rank_cache)
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


# ----------------------------------------------------------------------- narration

def narrate(item, ctx: TPContext) -> str:
    phase, st = item
    if phase == "intro":
        return intro_narration(ctx)
    return {"broadcast": broadcast_narration, "attention": attention_narration,
            "mlp": mlp_narration}[phase](ctx, st)


def intro_narration(ctx: TPContext) -> str:
    tp, kv = ctx.tp, ctx.kv_heads
    if tp == 1:
        who = (f"One GPU holds all {NUM_HEADS} query heads and all "
               f"{plural(kv, 'KV head')}.")
    else:
        who = "; ".join(f"GPU {p.rank}: query {heads_text(p.heads)}, KV {heads_text(p.kv_heads)}"
                        for p in ctx.parts) + "."
    rep = (f" There are fewer KV heads ({kv}) than GPUs ({tp}), so each KV head "
           f"is replicated on {ctx.replicas} GPUs." if ctx.replicas > 1 else "")
    return (f"tp = {tp}: the layer's {NUM_HEADS} query heads are split over "
            f"{plural(tp, 'GPU')}. {who}{rep} Every GPU has the same {NUM_GPU_BLOCKS} block "
            f"numbers; block b on GPU r holds the keys and values of GPU r's KV heads only. "
            f"Rank 0 also runs the only Scheduler and BlockSpaceManager.")


def tables_text(tables: dict[str, tuple[int, ...]]) -> str:
    return ", ".join(f"{rid}: [{', '.join(str(b) for b in t)}]" for rid, t in tables.items())


def broadcast_narration(ctx: TPContext, st: ShardedStep) -> str:
    tp = ctx.tp
    what = []
    if st.admitted:
        what.append("admits " + " and ".join(f"{a.request_id} ({a.num_tokens} prompt tokens)"
                                             for a in st.admitted))
    else:
        what.append("schedules a decode step for " + " and ".join(st.broadcast))
    if st.allocated:
        what.append("allocates " + ", ".join(
            f"physical block {a.physical} for {a.request_id} (logical block {a.logical})"
            for a in st.allocated))
    else:
        what.append("allocates nothing (every new token fits its last block)")
    send = ("hands the block tables to its own model runner" if tp == 1 else
            f"broadcasts the block tables to {'both' if tp == 2 else f'all {tp}'} GPUs, "
            f"with the new tokens")
    return (f"Step {st.step}. The scheduler on rank 0 " + "; ".join(what)
            + f". Then it {send}: {tables_text(st.broadcast)}.")


def attention_narration(ctx: TPContext, st: ShardedStep) -> str:
    tp = ctx.tp
    if len(st.written) > 4:
        by_req: dict[str, list] = {}
        for w in st.written:
            by_req.setdefault(w.request_id, []).append((w.position, w.block))
        parts = []
        for rid, xs in by_req.items():
            blocks = list(dict.fromkeys(b for _, b in xs))
            parts.append(f"{rid} positions {span([p for p, _ in xs])} into "
                         f"{noun(blocks, 'block')} " + ", ".join(str(b) for b in blocks))
        where = "; ".join(parts)
    else:
        where = "; ".join(f"{w.request_id} position {w.position} into block {w.block} "
                          f"slot {w.slot}" for w in st.written)
    same = "the same block and slot on every GPU" if tp > 1 else "the slot its block table names"
    each = ("Each GPU writes the K and V of its own KV heads" if tp > 1
            else "The GPU writes the K and V of all its KV heads")
    comm = (f" Each GPU attends with its own query heads (no communication) and multiplies by "
            f"its rows of o_proj (RowParallelLinear): {plural(tp, 'partial output')} per token. "
            f"The all-reduce sums them, so every GPU ends with the same vector." if tp > 1 else
            " With one GPU o_proj gives the whole output; no all-reduce is needed.")
    return f"{each}: {where} ({same}).{comm}"


def mlp_narration(ctx: TPContext, st: ShardedStep) -> str:
    tp = ctx.tp
    ok = all(max_diff(r.sharded.output, r.unsharded.output) < EQUAL_TOL for r in st.results)
    if tp > 1:
        text = (f"MLP: gate and up projections are column-parallel, down_proj row-parallel, "
                f"so a second all-reduce sums {plural(tp, 'partial')}: two all-reduces per "
                f"layer. " + ("The layer's output equals the one-GPU result (tp = 1)."
                              if ok else "The output DIFFERS from the one-GPU result (a bug)."))
    else:
        text = ("MLP on the one GPU: no all-reduce. This is the reference the sharded runs "
                "are compared with.")
    if st.finished:
        text += (f" {' and '.join(st.finished)} finished: rank 0 frees physical blocks "
                 + ", ".join(str(b) for b in st.freed)
                 + " (BlockFreed). The GPUs are not told; those slots are simply written "
                   "again later.")
    return text


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
    """Rank 0's panel, the GPUs' caches, the all-reduce panel and the memory lines. The
    phases differ in height and each frame keeps its own (a document, not a Figure)."""
    phase, st = item
    body: list[str] = []
    y = rank0_panel(body, ctx, phase, st)
    y = gpu_panel(body, y, ctx, phase, st)
    if phase in ("attention", "mlp"):
        y = all_reduce_panel(body, y, ctx, phase, st)
    y = memory_panel(body, y, ctx)
    return svg.document(WIDTH, y, body, label=f"Tensor parallelism, tp = {ctx.tp}: {phase}")


def rank0_panel(body: list[str], ctx: TPContext, phase: str, st: ShardedStep | None) -> float:
    """Rank 0's scheduler and block manager with the block tables it holds."""
    y = PAD + 12
    body.append(svg.rect(PAD - 4, PAD - 2, WIDTH - 2 * PAD + 8, 50, fill="panel",
                         stroke="accent" if phase == "broadcast" else None,
                         tip="rank 0 (the driver): the only Scheduler and BlockSpaceManager"))
    body.append(svg.text(PAD, y, "rank 0 (driver): Scheduler, BlockSpaceManager", size=11))
    if st is None:
        tables, new = {}, set()
        status = f"{NUM_GPU_BLOCKS} free blocks"
    else:
        tables = st.broadcast
        new = ({(a.request_id, a.logical) for a in st.allocated} if phase == "broadcast"
               else set())
        status = f"step {st.step}" + (" (prefill)" if st.prefill else " (decode)")
        if phase == "mlp" and st.finished:
            status = (f"{', '.join(st.finished)} finished: "
                      f"{plural(len(st.freed), 'block')} freed")
    if phase == "broadcast":
        body.append(svg.text(WIDTH - PAD, y, "broadcast ↓" if ctx.tp > 1 else "to the model ↓",
                             size=10, anchor="end", fill="accent"))
    ty = y + 10
    x = PAD
    for rid, table in tables.items():
        colour = svg.seq(request_index(rid))
        body.append(svg.text(x, ty + 15, f"{rid}", size=11, fill=colour))
        x += 12
        for lg, b in enumerate(table):
            fresh = (rid, lg) in new
            body.append(svg.rect(x, ty + 3, 20, 17, fill="bg",
                                 stroke="highlight" if fresh else colour,
                                 stroke_width=2.5 if fresh else 1,
                                 tip=f"{rid}: logical block {lg} -> physical block {b}"
                                     + (" (allocated this step)" if fresh else "")))
            body.append(svg.text(x + 10, ty + 15, b, size=10, anchor="middle"))
            x += 22
        x += 14
    if not tables:
        body.append(svg.text(PAD, ty + 15, "block tables: none yet", size=10, fill="muted"))
    body.append(svg.text(WIDTH - PAD, ty + 15, status, size=10, anchor="end", fill="muted"))
    return PAD + 60


def gpu_panel(body: list[str], y: float, ctx: TPContext, phase: str,
              st: ShardedStep | None) -> float:
    """One row per GPU: the same block numbers, each holding that GPU's KV heads' slice
    of the tokens in its slots."""
    tp, replicas = ctx.tp, ctx.replicas
    cache_x = PAD + 118
    bw = (WIDTH - PAD - cache_x) / NUM_GPU_BLOCKS
    for b in range(NUM_GPU_BLOCKS):
        body.append(svg.text(cache_x + b * bw + bw / 2 - 1, y + 8, b, size=9,
                             anchor="middle", fill="muted"))
    body.append(svg.text(cache_x - 4, y + 8, "block", size=9, anchor="end", fill="muted"))
    y += 12
    rh = 30
    if not st:
        slots = {}
    else:
        slots = st.slots_before if phase == "broadcast" else st.slots
    written = {(w.block, w.slot) for w in st.written} if st and phase == "attention" else set()
    named = {b for t in st.broadcast.values() for b in t} if st and phase == "broadcast" \
        else set()
    fresh_blocks = {a.physical for a in st.allocated} if st and phase == "broadcast" else set()
    if phase == "broadcast":
        # The broadcast: from rank 0's panel down to every GPU.
        body.append(svg.line(PAD + 1, PAD + 48, PAD + 1, y + (tp - 1) * rh + 8,
                             stroke="accent", width=2))
        for p in ctx.parts:
            ay = y + p.rank * rh + 8
            body.append(svg.line(PAD + 1, ay, PAD + 6, ay, stroke="accent", width=2))
            body.append(svg.line(PAD + 3, ay - 3, PAD + 6, ay, stroke="accent", width=2))
            body.append(svg.line(PAD + 3, ay + 3, PAD + 6, ay, stroke="accent", width=2))
    for p in ctx.parts:
        ry = y + p.rank * rh
        body.append(svg.text(PAD + 8, ry + 10, f"GPU {p.rank}", size=11))
        body.append(svg.text(PAD + 8, ry + 22, f"Q {span(p.heads)}", size=9, fill="muted"))
        body.append(svg.text(PAD + 62, ry + 22, f"KV {span(p.kv_heads)}", size=9,
                             fill="waste" if replicas > 1 else "muted"))
        for b in range(NUM_GPU_BLOCKS):
            bx = cache_x + b * bw
            outline = ("highlight" if b in fresh_blocks else "accent" if b in named
                       else None)
            cells = [svg.rect(bx + 1, ry, bw - 3, rh - 8, fill="free", rx=1, stroke=outline,
                              stroke_width=2 if outline else None)]
            sw = (bw - 5) / BLOCK_SIZE
            tips = []
            for s in range(BLOCK_SIZE):
                owner = slots.get((b, s))
                if owner is None:
                    continue
                rid, pos = owner
                hot = (b, s) in written
                cells.append(svg.rect(bx + 2 + s * sw, ry + 2, sw - 1, rh - 12,
                                      fill=svg.seq(request_index(rid)), rx=0,
                                      stroke="highlight" if hot else None,
                                      stroke_width=2 if hot else None))
                tips.append(f"slot {s}: {rid} position {pos}")
            tip = (f"GPU {p.rank}, block {b}: K and V of KV {heads_text(p.kv_heads)} "
                   f"for " + ("; ".join(tips) if tips else "no tokens (free)"))
            body.append(svg.group(cells, tip=tip))
    y += tp * rh
    note = ("block b on every GPU: the same tokens, that GPU's KV heads" if tp > 1
            else "block b: the K and V of every KV head for its tokens")
    body.append(svg.text(PAD + 8, y + 4, note, size=9, fill="muted"))
    y += 8
    if replicas > 1:
        body.append(svg.text(PAD + 8, y + 8, f"{ctx.kv_heads} KV heads < {tp} GPUs: each "
                             f"KV head is replicated on {replicas} GPUs", size=9,
                             fill="waste"))
        y += 12
    return y + 4


def all_reduce_panel(body: list[str], y: float, ctx: TPContext, phase: str,
                     st: ShardedStep) -> float:
    """Each GPU's partial output for the newest token of each request, and their sum."""
    tp = ctx.tp
    what = "o_proj" if phase == "attention" else "down_proj"
    body.append(svg.text(PAD, y + 10, f"{what} partial outputs (newest token of each)",
                         size=10, fill="muted"))
    y += 16
    rows = st.results                  # one per request (two requests)
    col = (PAD + 72, PAD + 72 + 160)
    for c, r in zip(col, rows):
        body.append(svg.text(c, y + 8, f"{r.request_id} position {r.position}", size=9,
                             fill=svg.seq(request_index(r.request_id))))
    y += 12
    for p in ctx.parts:
        body.append(svg.text(PAD, y + 9, f"GPU {p.rank}", size=10, fill="muted"))
        for c, r in zip(col, rows):
            t = r.sharded
            part = t.attention[p.rank].partial if phase == "attention" \
                else t.mlp[p.rank].partial
            body.append(svg.text(c, y + 9, short(part), size=10))
        y += 13
    body.append(svg.line(PAD, y + 1, WIDTH - PAD, y + 1, stroke="line"))
    body.append(svg.text(PAD, y + 12, "all-reduce" if tp > 1 else "sum", size=10,
                         fill="accent"))
    for c, r in zip(col, rows):
        t = r.sharded
        total = t.attn_all_reduce if phase == "attention" else t.mlp_all_reduce
        body.append(svg.text(c, y + 12, short(total), size=10, fill="accent"))
    y += 16
    if phase == "mlp":
        body.append(svg.text(PAD, y + 10, "layer out", size=10, fill="muted"))
        for c, r in zip(col, rows):
            body.append(svg.text(c, y + 10, short(r.sharded.output), size=10))
        y += 13
    if phase == "mlp" and tp > 1:
        body.append(svg.text(PAD, y + 10, "tp = 1", size=10, fill="muted"))
        for c, r in zip(col, rows):
            same = max_diff(r.sharded.output, r.unsharded.output) < EQUAL_TOL
            mark = " ✓" if same else " ✗"
            body.append(svg.text(c, y + 10, short(r.unsharded.output) + mark, size=10,
                                 fill="seq-2" if same else "highlight"))
        y += 13
    return y + 4


def memory_panel(body: list[str], y: float, ctx: TPContext) -> float:
    """Memory per GPU for the chosen real model."""
    lines = ctx.memory
    body.append(svg.rect(PAD - 4, y, WIDTH - 2 * PAD + 8, 14 * len(lines) + 8, fill="panel"))
    for i, (text, colour) in enumerate(lines):
        body.append(svg.text(PAD, y + 14 + 14 * i, text, size=9.5, fill=colour))
    return y + 14 * len(lines) + 12


def meta(item, ctx: TPContext) -> dict[str, str]:
    return {"phase": item[0]}


MODEL_CHOICES = tuple((mid, m.name) for mid, m in MODELS.items())
GPU_CHOICES = tuple((gid, g.name) for gid, g in GPUS.items())

WIDGETS = (Widget(
    id=WIDGET_ID,
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
    scenario=scenario, context=context, view=view, narrate=narrate, meta=meta,
    check=lambda v: check(normalise(v)),
),)


# ------------------------------------------------------------ build-time chart

def render_table_1() -> str:
    """The paper's Table 1 per GPU (`sim.studies.paper_table_1`)."""
    body: list[str] = []
    y = 18
    body.append(svg.text(PAD, y, "Table 1 of the paper, recomputed per GPU", size=13))
    y += 10
    for r in table_1_rows():
        gap = r.slots / (r.paper_k * 1000) - 1
        lines = [
            (f"{r.model} on {r.tp} x {r.gpu}", "fg", 12),
            (f"KV per token: {size_text(r.per_gpu)} on each GPU "
             f"({size_text(r.per_gpu * r.tp)} in all)", "muted", 10.5),
            (f"paper: {r.paper_gb} GB of KV cache, {r.paper_k}K token slots", "fg", 10.5),
            (f"{r.paper_gb} GiB / {size_text(r.per_gpu * r.tp)} = "
             f"{commas(r.slots)} slots ({gap:+.2%} vs the paper)", "seq-2", 10.5),
            (f"vLLM v0.5.5 sizing: {size_text(r.v055_kv)}, "
             f"{commas(r.v055_slots)} slots", "muted", 10.5),
        ]
        y += 8
        for text, colour, size in lines:
            y += 15
            body.append(svg.text(PAD, y, text, size=size, fill=colour))
        y += 6
    return svg.document(WIDTH, y + 8, body, label="The paper's Table 1, recomputed")


CHARTS = (Chart(
    id="tensor-parallel-table-1",
    title="The paper's Table 1 per GPU",
    render=render_table_1,
    caption="KV bytes per token from vLLM's formula (sim.models); slots = the paper's KV "
            "space / bytes per token; last line: vLLM v0.5.5's own sizing on those GPUs "
            "(sim.hardware, gpu_memory_utilization 0.9, estimated activations).",
),)
