"""Topic page "tensor parallelism": one layer split over 1, 2, 4 or 8 GPUs, driven by a real
engine run (vLLM v0.5.5 Megatron-style layers, driver worker on rank 0; VLLM.md section 6).

The scenario is an `LLMEngine` serving two small requests. Its events say what the single
scheduler and `BlockSpaceManager` on rank 0 did each step (`BlockAllocated`, `Admitted`,
`KVWritten`, `BlockFreed`); the block tables are rebuilt from those events, broadcast, and
fed to a `sim.tensor_parallel.TensorParallelGroup` of tp ranks, which writes each rank's own
KV heads into the same block numbers and computes the layer with its two all-reduces. A
second group with tp = 1 runs the same tokens, so every frame can check the sharded result
against the unsharded one. Three frames per engine step: schedule and broadcast; attention
and the first all-reduce; MLP and the second all-reduce.

Memory per GPU for a real model comes from `sim.models` / `sim.hardware` (vLLM's formulas).
"""
from __future__ import annotations

import random
from typing import Any

from pages.views import svg
from pages.framework.registry import Chart
from pages.views.text import f2, plural, span
from pages.framework.widget import Param, Widget
from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.events import (Admitted, BlockAllocated, BlockFreed, CopyOnWrite, KVWritten,
                        RequestFinished, SeqFreed)
from sim.perf.hardware import GPUS, get_gpu, memory_profile
from sim.perf.models import MODELS, get_model, kv_bytes_per_token
from sim.core.sequence import SamplingParams
from sim.perf.tensor_parallel import (TensorParallelGroup, check_tensor_parallel,
                                 num_kv_head_replicas, partition_heads, per_rank_cache,
                                 random_layer_weights)

WIDGET_ID = "tensor-parallelism"
TP_SIZES = (1, 2, 4, 8)

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



def short(xs) -> str:
    return "[" + " ".join(f2(x) for x in xs) + "]"






def size_text(n: float) -> str:
    """Bytes in binary units with one decimal (GiB/MiB/KiB)."""
    for unit, div in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= div:
            text = f"{n / div:.2f}".rstrip("0").rstrip(".") if n / div < 10 \
                else f"{n / div:.1f}".rstrip("0").rstrip(".")
            return f"{text} {unit}"
    return f"{int(n)} B"


def grouped(n: int) -> str:
    return f"{n:,}"


def heads_text(heads) -> str:
    return ("head " if len(heads) == 1 else "heads ") + span(heads)


# ------------------------------------------------------------------------- scenario

def embed(seed: int, token_id: int) -> list[float]:
    """The toy layer's input for a token: a fixed random vector per token id (the layer
    has no embedding table; hidden states stand in for token ids)."""
    rng = random.Random(seed * 1_000_003 + token_id)
    return [round(rng.uniform(-1.0, 1.0), 2) for _ in range(HIDDEN)]


def run_scenario(v: dict[str, Any]) -> dict[str, Any]:
    """`steps`: one record per engine step (its events, the block tables rank 0
    broadcast, the rows the model ran, the sharded and unsharded layer traces); and the
    two groups (`sharded`, `single`) with their workers' caches as the run left them."""
    engine = LLMEngine(CacheConfig(block_size=BLOCK_SIZE, num_gpu_blocks=NUM_GPU_BLOCKS,
                                   num_cpu_blocks=0, watermark=0.0),
                       SchedulerConfig(), seed=v["seed"])
    for rid, prompt in REQUESTS:
        engine.add_request(rid, prompt, SamplingParams(max_tokens=v["max_tokens"]))
    seq_request = {}
    for group in engine.requests.values():
        for seq in group.get_seqs():
            seq_request[seq.seq_id] = group.request_id
    weights = random_layer_weights(random.Random(v["seed"]), hidden_size=HIDDEN,
                                   num_heads=NUM_HEADS, num_kv_heads=v["kv_heads"],
                                   head_size=HEAD_SIZE, intermediate_size=INTERMEDIATE)
    sharded = TensorParallelGroup(weights, v["tp"], NUM_GPU_BLOCKS, BLOCK_SIZE)
    single = TensorParallelGroup(weights, 1, NUM_GPU_BLOCKS, BLOCK_SIZE)

    tables: dict[int, list[int]] = {}       # rank 0's block tables, rebuilt from events
    slots: dict[tuple[int, int], tuple[str, int]] = {}   # (block, slot) -> (request, pos)
    steps = []
    while engine.has_unfinished_requests():
        out = engine.step()
        allocated, admitted, freed, finished = [], [], [], []
        rows = []                            # (seq_id, position, table) in model order
        broadcast: dict[int, tuple[int, ...]] = {}
        for event in out.events:
            if isinstance(event, BlockAllocated):
                for sid in event.seq_ids:
                    table = tables.setdefault(sid, [])
                    assert len(table) == event.logical
                    table.append(event.physical)
                allocated.append((seq_request[event.seq_ids[0]], event.logical,
                                  event.physical))
            elif isinstance(event, CopyOnWrite):     # not in this scenario; kept exact
                tables[event.seq_id][event.logical] = event.dst
            elif isinstance(event, Admitted):
                admitted.append((event.request_id, event.num_tokens))
            elif isinstance(event, KVWritten):
                table = tuple(tables[event.seq_id])
                broadcast[event.seq_id] = table
                for pos in range(event.first_pos, event.first_pos + event.num_tokens):
                    rows.append((event.seq_id, pos, table))
            elif isinstance(event, BlockFreed):
                freed.append(event.physical)
            elif isinstance(event, SeqFreed):
                tables.pop(event.seq_id, None)
            elif isinstance(event, RequestFinished):
                finished.append(event.request_id)
        seqs = {seq.seq_id: seq for g in engine.requests.values() for seq in g.get_seqs()}
        ids = [sid for sid, _, _ in rows]
        positions = [pos for _, pos, _ in rows]
        hidden = [embed(v["seed"], seqs[sid].get_token_ids()[pos]) for sid, pos, _ in rows]
        block_tables = [list(t) for _, _, t in rows]
        trace = sharded.execute_model(ids, positions, hidden, block_tables)
        reference = single.execute_model(ids, positions, hidden, block_tables)
        before = dict(slots)
        written = []
        for sid, pos, table in rows:
            block, slot = table[pos // BLOCK_SIZE], pos % BLOCK_SIZE
            slots[(block, slot)] = (seq_request[sid], pos)
            written.append((seq_request[sid], pos, block, slot))
        # The newest token of each sequence: the row whose partials the picture prints.
        last_row = {}
        for i, sid in enumerate(ids):
            last_row[sid] = i
        steps.append({
            "step": out.step,
            "prefill": bool(admitted),
            "admitted": admitted,
            "allocated": allocated,
            "broadcast": {seq_request[sid]: t for sid, t in broadcast.items()},
            "written": written,
            "slots_before": before,
            "slots": dict(slots),
            "freed": freed,
            "finished": finished,
            "rows": [(seq_request[ids[i]], positions[i], trace.seqs[i], reference.seqs[i])
                     for i in sorted(last_row.values())],
            "free_after": engine.block_manager.get_num_free_gpu_blocks(),
        })
    return {"steps": steps, "sharded": sharded, "single": single}


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

def rank_lines(v) -> list[str]:
    parts = partition_heads(NUM_HEADS, v["kv_heads"], v["tp"])
    return [f"GPU {p.rank} query {heads_text(p.heads)}, KV {heads_text(p.kv_heads)}"
            for p in parts]


def intro_narration(v) -> str:
    parts = partition_heads(NUM_HEADS, v["kv_heads"], v["tp"])
    tp = v["tp"]
    if tp == 1:
        who = (f"One GPU holds all {NUM_HEADS} query heads and all "
               f"{plural(v['kv_heads'], 'KV head')}.")
    else:
        who = "; ".join(f"GPU {p.rank}: query {heads_text(p.heads)}, KV {heads_text(p.kv_heads)}"
                        for p in parts) + "."
    replicas = num_kv_head_replicas(v["kv_heads"], tp)
    rep = (f" There are fewer KV heads ({v['kv_heads']}) than GPUs ({tp}), so each KV head "
           f"is replicated on {replicas} GPUs." if replicas > 1 else "")
    return (f"tp = {tp}: the layer's {NUM_HEADS} query heads are split over "
            f"{plural(tp, 'GPU')}. {who}{rep} Every GPU has the same {NUM_GPU_BLOCKS} block "
            f"numbers; block b on GPU r holds the keys and values of GPU r's KV heads only. "
            f"Rank 0 also runs the only Scheduler and BlockSpaceManager.")


def tables_text(tables: dict[str, tuple[int, ...]]) -> str:
    return ", ".join(f"{rid}: [{', '.join(str(b) for b in t)}]" for rid, t in tables.items())


def broadcast_narration(v, st) -> str:
    tp = v["tp"]
    what = []
    if st["admitted"]:
        what.append("admits " + " and ".join(f"{rid} ({n} prompt tokens)"
                                             for rid, n in st["admitted"]))
    else:
        what.append("schedules a decode step for " + " and ".join(st["broadcast"]))
    if st["allocated"]:
        what.append("allocates " + ", ".join(
            f"physical block {p} for {rid} (logical block {lg})"
            for rid, lg, p in st["allocated"]))
    else:
        what.append("allocates nothing (every new token fits its last block)")
    send = ("hands the block tables to its own model runner" if tp == 1 else
            f"broadcasts the block tables to {'both' if tp == 2 else f'all {tp}'} GPUs, "
            f"with the new tokens")
    return (f"Step {st['step']}. The scheduler on rank 0 " + "; ".join(what)
            + f". Then it {send}: {tables_text(st['broadcast'])}.")


def attention_narration(v, st) -> str:
    tp = v["tp"]
    w = st["written"]
    if len(w) > 4:
        by_req: dict[str, list] = {}
        for rid, pos, block, slot in w:
            by_req.setdefault(rid, []).append((pos, block))
        parts = []
        for rid, xs in by_req.items():
            blocks = list(dict.fromkeys(b for _, b in xs))
            parts.append(f"{rid} positions {span([p for p, _ in xs])} into "
                         f"{'block' if len(blocks) == 1 else 'blocks'} "
                         + ", ".join(str(b) for b in blocks))
        where = "; ".join(parts)
    else:
        where = "; ".join(f"{rid} position {pos} into block {block} slot {slot}"
                          for rid, pos, block, slot in w)
    same = "the same block and slot on every GPU" if tp > 1 else "the slot its block table names"
    each = ("Each GPU writes the K and V of its own KV heads" if tp > 1
            else "The GPU writes the K and V of all its KV heads")
    comm = (f" Each GPU attends with its own query heads (no communication) and multiplies by "
            f"its rows of o_proj (RowParallelLinear): {plural(tp, 'partial output')} per token. "
            f"The all-reduce sums them, so every GPU ends with the same vector." if tp > 1 else
            " With one GPU o_proj gives the whole output; no all-reduce is needed.")
    return f"{each}: {where} ({same}).{comm}"


def mlp_narration(v, st) -> str:
    tp = v["tp"]
    ok = all(max_diff(t.output, r.output) < EQUAL_TOL for _, _, t, r in st["rows"])
    if tp > 1:
        text = (f"MLP: gate and up projections are column-parallel, down_proj row-parallel, "
                f"so a second all-reduce sums {plural(tp, 'partial')}: two all-reduces per "
                f"layer. " + ("The layer's output equals the one-GPU result (tp = 1)."
                              if ok else "The output DIFFERS from the one-GPU result (a bug)."))
    else:
        text = ("MLP on the one GPU: no all-reduce. This is the reference the sharded runs "
                "are compared with.")
    if st["finished"]:
        text += (f" {' and '.join(st['finished'])} finished: rank 0 frees physical blocks "
                 + ", ".join(str(b) for b in st["freed"])
                 + " (BlockFreed). The GPUs are not told; those slots are simply written "
                   "again later.")
    return text


def max_diff(a, b) -> float:
    return max(abs(x - y) for x, y in zip(a, b))


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
        lines.append((f"{grouped(prof.num_gpu_blocks)} blocks of 16 = "
                      f"{grouped(prof.num_token_slots)} tokens", "fg"))
    return lines


def draw(v, phase: str, st) -> str:
    """phase: intro, broadcast, attention or mlp."""
    tp = v["tp"]
    parts = partition_heads(NUM_HEADS, v["kv_heads"], tp)
    replicas = num_kv_head_replicas(v["kv_heads"], tp)
    body: list[str] = []
    y = PAD + 12

    # -- rank 0: scheduler and block manager ----------------------------------------
    body.append(svg.rect(PAD - 4, PAD - 2, WIDTH - 2 * PAD + 8, 50, fill="panel",
                         stroke="accent" if phase == "broadcast" else None,
                         tip="rank 0 (the driver): the only Scheduler and BlockSpaceManager"))
    body.append(svg.text(PAD, y, "rank 0 (driver): Scheduler, BlockSpaceManager", size=11))
    if st is None:
        tables, new = {}, set()
        status = f"{NUM_GPU_BLOCKS} free blocks"
    else:
        tables = st["broadcast"]
        new = ({(rid, lg) for rid, lg, _ in st["allocated"]} if phase == "broadcast"
               else set())
        status = f"step {st['step']}" + (" (prefill)" if st["prefill"] else " (decode)")
        if phase == "mlp" and st["finished"]:
            status = (f"{', '.join(st['finished'])} finished: "
                      f"{plural(len(st['freed']), 'block')} freed")
    if phase == "broadcast":
        body.append(svg.text(WIDTH - PAD, y, "broadcast ↓" if tp > 1 else "to the model ↓",
                             size=10, anchor="end", fill="accent"))
    ty = y + 10
    x = PAD
    for i, (rid, table) in enumerate(tables.items()):
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
    y = PAD + 60

    # -- the GPUs -------------------------------------------------------------------
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
        slots = st["slots_before"] if phase == "broadcast" else st["slots"]
    written = {(b, s) for _, _, b, s in st["written"]} if st and phase == "attention" else set()
    named = {b for t in st["broadcast"].values() for b in t} if st and phase == "broadcast" \
        else set()
    fresh_blocks = {b for _, _, b in st["allocated"]} if st and phase == "broadcast" else set()
    if phase == "broadcast":
        # The broadcast: from rank 0's panel down to every GPU.
        body.append(svg.line(PAD + 1, PAD + 48, PAD + 1, y + (tp - 1) * rh + 8,
                             stroke="accent", width=2))
        for p in parts:
            ay = y + p.rank * rh + 8
            body.append(svg.line(PAD + 1, ay, PAD + 6, ay, stroke="accent", width=2))
            body.append(svg.line(PAD + 3, ay - 3, PAD + 6, ay, stroke="accent", width=2))
            body.append(svg.line(PAD + 3, ay + 3, PAD + 6, ay, stroke="accent", width=2))
    for p in parts:
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
        body.append(svg.text(PAD + 8, y + 8, f"{v['kv_heads']} KV heads < {tp} GPUs: each "
                             f"KV head is replicated on {replicas} GPUs", size=9,
                             fill="waste"))
        y += 12
    y += 4

    # -- all-reduce panel -----------------------------------------------------------
    if phase in ("attention", "mlp") and st:
        what = "o_proj" if phase == "attention" else "down_proj"
        body.append(svg.text(PAD, y + 10, f"{what} partial outputs (newest token of each)",
                             size=10, fill="muted"))
        y += 16
        rows = st["rows"]                  # one per request (two requests)
        col = (PAD + 72, PAD + 72 + 160)
        for c, (rid, pos, _, _) in zip(col, rows):
            body.append(svg.text(c, y + 8, f"{rid} position {pos}", size=9,
                                 fill=svg.seq(request_index(rid))))
        y += 12
        for p in parts:
            body.append(svg.text(PAD, y + 9, f"GPU {p.rank}", size=10, fill="muted"))
            for c, (_, _, t, _) in zip(col, rows):
                part = t.attention[p.rank].partial if phase == "attention" \
                    else t.mlp[p.rank].partial
                body.append(svg.text(c, y + 9, short(part), size=10))
            y += 13
        body.append(svg.line(PAD, y + 1, WIDTH - PAD, y + 1, stroke="line"))
        label = "all-reduce" if tp > 1 else "output"
        body.append(svg.text(PAD, y + 12, label if tp > 1 else "sum", size=10, fill="accent"))
        for c, (_, _, t, r) in zip(col, rows):
            total = t.attn_all_reduce if phase == "attention" else t.mlp_all_reduce
            body.append(svg.text(c, y + 12, short(total), size=10, fill="accent"))
        y += 16
        if phase == "mlp":
            body.append(svg.text(PAD, y + 10, "layer out", size=10, fill="muted"))
            for c, (_, _, t, r) in zip(col, rows):
                body.append(svg.text(c, y + 10, short(t.output), size=10))
            y += 13
        if phase == "mlp" and tp > 1:
            body.append(svg.text(PAD, y + 10, "tp = 1", size=10, fill="muted"))
            for c, (_, _, t, r) in zip(col, rows):
                same = max_diff(t.output, r.output) < EQUAL_TOL
                body.append(svg.text(c, y + 10, short(r.output) + (" ✓" if same else " ✗"),
                                     size=10, fill="seq-2" if same else "highlight"))
            y += 13
        y += 4

    # -- memory for a real model ----------------------------------------------------
    lines = memory_lines(v)
    body.append(svg.rect(PAD - 4, y, WIDTH - 2 * PAD + 8, 14 * len(lines) + 8, fill="panel"))
    for i, (text, colour) in enumerate(lines):
        body.append(svg.text(PAD, y + 14 + 14 * i, text, size=9.5, fill=colour))
    y += 14 * len(lines) + 12
    return svg.document(WIDTH, y, body, label=f"Tensor parallelism, tp = {tp}: {phase}")


def request_index(rid: str) -> int:
    return [r for r, _ in REQUESTS].index(rid)


# --------------------------------------------------------------------------- build

def build(v: dict[str, Any]) -> list[dict]:
    steps = run_scenario(v)["steps"]
    frames = [{"svg": draw(v, "intro", None), "narration": intro_narration(v),
               "phase": "intro"}]
    for st in steps:
        for phase, narrate in (("broadcast", broadcast_narration),
                               ("attention", attention_narration),
                               ("mlp", mlp_narration)):
            frames.append({"svg": draw(v, phase, st),
                           "narration": narrate(v, st), "phase": phase})
    return frames


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
    build=lambda v: build(normalise(v)),
    check=lambda v: check(normalise(v)),
),)


def normalise(v: dict[str, Any]) -> dict[str, Any]:
    """Choice fields arrive as strings; the sim wants numbers."""
    return dict(v, tp=int(v["tp"]), kv_heads=int(v["kv_heads"]))


# ------------------------------------------------------------ build-time chart
# The PagedAttention paper's Table 1 (Kwon et al., SOSP 2023): the KV cache space and the
# token slots it reports for each setup, quoted as printed (GB as the paper writes it).
PAPER_TABLE_1 = (
    # (model id, gpu id, tp, paper's KV cache space in GB, paper's slots in thousands)
    ("opt-13b", "a100-40gb", 1, 12, 15.7),
    ("opt-66b", "a100-40gb", 4, 21, 9.7),
    ("opt-175b", "a100-80gb", 8, 264, 60.1),
)


def table_1_rows() -> list[dict]:
    """Per setup: KV bytes per token per GPU (vLLM's formula), the slots the paper's KV
    space holds by that formula (the paper's "GB" read as GiB), and what vLLM v0.5.5's
    own sizing gives on those GPUs (0.9 utilisation, sim.hardware's activation estimate)."""
    rows = []
    for model_id, gpu_id, tp, paper_gb, paper_k in PAPER_TABLE_1:
        model, gpu = get_model(model_id), get_gpu(gpu_id)
        per_gpu = kv_bytes_per_token(model, "fp16", tp)
        per_token = per_gpu * tp              # no replication: OPT has as many KV heads
        slots = int(paper_gb * GiB // per_token)
        prof = memory_profile(model, gpu, block_size=16, dtype="fp16", tp_size=tp)
        rows.append({"model": model.name, "gpu": gpu.name, "tp": tp, "per_gpu": per_gpu,
                     "paper_gb": paper_gb, "paper_k": paper_k, "slots": slots,
                     "v055_kv": prof.kv_cache_bytes * tp, "v055_slots": prof.num_token_slots})
    return rows


def render_table_1() -> str:
    body: list[str] = []
    y = 18
    body.append(svg.text(PAD, y, "Table 1 of the paper, recomputed per GPU", size=13))
    y += 10
    for r in table_1_rows():
        gap = r["slots"] / (r["paper_k"] * 1000) - 1
        lines = [
            (f"{r['model']} on {r['tp']} x {r['gpu']}", "fg", 12),
            (f"KV per token: {size_text(r['per_gpu'])} on each GPU "
             f"({size_text(r['per_gpu'] * r['tp'])} in all)", "muted", 10.5),
            (f"paper: {r['paper_gb']} GB of KV cache, {r['paper_k']}K token slots", "fg", 10.5),
            (f"{r['paper_gb']} GiB / {size_text(r['per_gpu'] * r['tp'])} = "
             f"{grouped(r['slots'])} slots ({gap:+.2%} vs the paper)", "seq-2", 10.5),
            (f"vLLM v0.5.5 sizing: {size_text(r['v055_kv'])}, "
             f"{grouped(r['v055_slots'])} slots", "muted", 10.5),
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
