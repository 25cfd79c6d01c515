"""Topic page "paged attention kernel": one query attending over a block table, block by
block (vLLM v0.5.5 `paged_attention_v1` / `paged_attention_v2`, VLLM.md section 7).

scenario: `sim.perf.kernel_walk` runs the kernel on seeded inputs and walks its records
          (sim.perf.attention): per head a `BlockScores` per logical block, one `Softmax`, a
          `ValueAccumulated` per block; in v2 those per partition, each partition ending in
          a `PartitionResult`, and each head in a `PartitionsMerged`. The steps follow the
          watched head, after a first step that introduces the scenario, and end with every
          head's output beside plain (contiguous) softmax attention.
view:     the physical cache, the block table with the current head's scores or weights,
          v2's partitions, and the numbers of the step.
narrate:  the same step in words, from the same record.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from pages.framework.registry import Chart
from pages.framework.widget import Context, Param, Widget
from pages.views import chart, svg
from pages.views.text import f2, noun, plural, span, verb
from pages.views.vectors import short, vec
from sim.perf.attention import (PARTITION_SIZE, V1_MAX_SEQ_LEN, random_paged_attention_inputs,
                                use_v1)
from sim.perf.kernel_walk import KernelStep, KernelWalk, walk_kernel

WIDGET_ID = "paged-attention-kernel"
MAX_BLOCKS = 12           # logical blocks a sequence may need (rows of the picture)
SPARE_BLOCKS = 2          # physical blocks that belong to someone else
EQUAL_TOL = 1e-9          # "equal" in the last frame: float64 agrees far below this

WIDTH = 400
PAD = 10
TABLE_COLUMNS = (0, 32, 86, 140, 240)   # x of the reduce table's columns
OUTPUT_COLUMNS = (0, 54, 134)           # x of the last frame's output table

# The page's names for the walk's first and last steps.
FRAME_KIND = {"before": "intro", "attention_output": "final"}


# ------------------------------------------------------------------------- scenario

def scenario(v: dict[str, Any]) -> KernelWalk:
    inp = random_paged_attention_inputs(
        random.Random(v["seed"]), num_heads=v["num_heads"], num_kv_heads=v["num_kv_heads"],
        head_size=v["head_size"], block_size=v["block_size"], seq_len=v["seq_len"],
        spare_blocks=SPARE_BLOCKS, decimals=1)
    return walk_kernel(inp, partition_size=v["partition_size"] if v["kernel"] == "v2" else None,
                       head=v["head"])


@dataclass(frozen=True)
class KernelContext(Context):
    # Pieces of SVG that repeat from frame to frame, drawn once per trace: the build stays
    # fast in the browser. A cache only: a view's output does not depend on what is in it.
    memo: dict = field(default_factory=dict)


def context(v: dict[str, Any], trace: KernelWalk) -> KernelContext:
    return KernelContext(v, trace)


def check(v: dict[str, Any]) -> dict[str, str]:
    errors = {}
    if v["num_heads"] % v["num_kv_heads"]:
        errors["num_kv_heads"] = (f"KV heads: must divide the number of query heads "
                                  f"({v['num_heads']}): each KV head serves a group of "
                                  f"query heads")
    needed = -(-v["seq_len"] // v["block_size"])
    if needed > MAX_BLOCKS:
        errors["seq_len"] = (f"length: {v['seq_len']} tokens need {needed} blocks of "
                             f"{v['block_size']}; at most {MAX_BLOCKS} blocks fit the "
                             f"picture (use at most {MAX_BLOCKS * v['block_size']} tokens "
                             f"or a larger block size)")
    if v["kernel"] == "v2" and v["partition_size"] % v["block_size"]:
        errors["partition_size"] = (f"partition size: must be a multiple of the block size "
                                    f"({v['block_size']}): a partition owns whole blocks, "
                                    f"as vLLM asserts")
    if v["head"] >= v["num_heads"]:
        errors["head"] = (f"watched head: a query head from 0 to {v['num_heads'] - 1} "
                          f"(there are {v['num_heads']})")
    return errors


def frame_kind(step: KernelStep) -> str:
    return FRAME_KIND.get(step.kind, step.kind)


def meta(step: KernelStep, ctx: KernelContext) -> dict[str, str]:
    return {"kind": frame_kind(step)}


def max_diff(a, b) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


# ----------------------------------------------------------------------- narration

def narrate(step: KernelStep, ctx: KernelContext) -> str:
    v, inp = ctx.values, ctx.trace.inputs
    rec = step.record
    kind = frame_kind(step)
    bs, n = inp.block_size, inp.seq_len
    needed = -(-n // bs)
    if kind == "intro":
        table = ", ".join(str(b) for b in inp.block_table[:needed])
        used = inp.block_table[:needed]
        layout = ("consecutive here by chance; the kernel does not rely on it"
                  if all(b == a + 1 for a, b in zip(used, used[1:]))
                  else "scattered over the cache, not in order")
        heads = len(inp.query)
        group = (f"{plural(heads, 'query head')}, each with its own KV head"
                 if heads == inp.num_kv_heads else
                 f"{plural(heads, 'query head')} sharing {plural(inp.num_kv_heads, 'KV head')}"
                 f" (grouped-query attention)")
        kernel = ("paged_attention_v1: per head, one walk over the blocks for the scores, one "
                  "softmax, a second walk for the values" if v["kernel"] == "v1" else
                  f"paged_attention_v2 with partitions of {v['partition_size']} tokens: each "
                  f"partition does the v1 walk on its own, then a reduce merges them")
        return (f"One decode step of one sequence: {n} cached tokens in {plural(needed, 'block')} "
                f"of {bs}. Its block table maps logical blocks to physical blocks {table}: "
                f"{layout}. {group}. "
                f"Kernel: {kernel}.")
    if kind == "final":
        ref = ctx.trace.reference
        same = max_diff(rec.output, ref) < EQUAL_TOL
        chosen = use_v1(n, 1, len(inp.query))
        verdict = "the same numbers" if same else "DIFFERENT numbers (a bug)"
        parts = -(-n // PARTITION_SIZE)
        why = (f"{n} tokens fit one {PARTITION_SIZE}-token partition" if parts == 1
               else f"{n} tokens need {parts} partitions of {PARTITION_SIZE}")
        return (f"The paged output of every head next to plain softmax attention over the keys "
                f"and values gathered into one contiguous array: {verdict}. For this sequence "
                f"vLLM would launch {'v1' if chosen else 'v2'}: use_v1({n} tokens, 1 sequence, "
                f"{plural(len(inp.query), 'head')}) is {chosen}, since {why}.")
    h = rec.head
    part = getattr(rec, "partition", None)
    where = f"Head {h}" + (f", partition {part}" if part is not None else "")
    if kind == "block_scores":
        scored = [(p, s) for p, s in zip(rec.positions, rec.scores) if s is not None]
        masked = [p for p, m in zip(rec.positions, rec.masked) if m]
        text = (f"{where}: logical block {rec.logical_block} -> block table -> physical "
                f"block {rec.physical_block}. Read its keys (KV head {rec.kv_head}) and "
                f"score {noun(scored, 'position')} "
                f"{span(p for p, _ in scored)}: q.k x {f2(inp.scale)} = "
                + ", ".join(f2(s) for _, s in scored) + ".")
        if masked:
            stale = [q for q in rec.padded_qk if q is not None]
            text += (f" {noun(masked, 'Position')} {span(masked)} "
                     f"{verb(masked, 'is', 'are')} past the length {n}: the kernel loads the "
                     f"whole block, so it scores {verb(masked, 'that slot', 'those slots')}' "
                     f"stale {noun(masked, 'key')} too (q.k = "
                     + ", ".join(f2(q) for q in stale)
                     + "), then stores 0 for "
                     f"{verb(masked, 'that logit', 'those logits')} and leaves "
                     f"{verb(masked, 'it', 'them')} out of the max and the softmax.")
        return text
    if kind == "softmax":
        count = len(rec.positions)
        scope = "all" if part is None else "this partition's"
        return (f"{where}: one softmax over {scope} {count} scores. Max logit m = "
                f"{f2(rec.max_logit)}, exp sum l = sum of exp(score - m) = "
                f"{f2(rec.exp_sum)}; each weight is exp(score - m) / l.")
    if kind == "value_accumulated":
        text = (f"{where}, second walk: logical block {rec.logical_block} -> physical block "
                f"{rec.physical_block}. Its values, weighted by "
                + ", ".join(f2(w) for w in rec.weights)
                + f", are added to the output: {vec(rec.output)}.")
        if rec.zeroed:
            text += (f" The padded {noun(rec.zeroed, 'slot')} {span(rec.zeroed)} "
                     f"{verb(rec.zeroed, 'is', 'are')} loaded too and zeroed (stale slots may "
                     "hold NaNs), so with logit 0 they add nothing.")
        return text
    if kind == "partition_result":
        return (f"{where} done (positions {rec.start}-{rec.end - 1}): it hands the reduce "
                f"its max logit m{part} = {f2(rec.max_logit)}, its exp sum "
                f"l{part} = {f2(rec.exp_sum)} and its partial output "
                f"{vec(rec.partial_output)}, already divided by l{part} (vLLM's max_logits, "
                f"exp_sums, tmp_out).")
    # partitions_merged
    if len(rec.max_logits) == 1:
        return (f"Head {h}, reduce: only one partition, so the reduce kernel copies its "
                f"output as it is: {vec(rec.output)}.")
    return (f"Head {h}, reduce: global max M = {f2(rec.global_max)}. Each partition is "
            f"rescaled by exp(m_i - M) = " + ", ".join(f2(x) for x in rec.rescale_factors)
            + ", so its exp sum becomes "
            + ", ".join(f2(x) for x in rec.rescaled_exp_sums)
            + f" (total L = {f2(rec.global_exp_sum)}). Output = sum of o_i x l_i x "
            f"exp(m_i - M) / L = {vec(rec.output)}.")


# ---------------------------------------------------------------------------- view

def view(step: KernelStep, ctx: KernelContext) -> str:
    """One frame's SVG. Frames keep their own heights (the panels under the grid differ
    from step to step), so the view wraps its own document."""
    memo = ctx.memo

    def once(key, make):
        if key not in memo:
            memo[key] = make()
        return memo[key]

    v, inp = ctx.values, ctx.trace.inputs
    bs, n = inp.block_size, inp.seq_len
    needed = -(-n // bs)
    num_blocks = len(inp.key_cache)
    rec = step.record
    hs = step.head
    kind = frame_kind(step)
    current_logical = getattr(rec, "logical_block", None)
    current_physical = getattr(rec, "physical_block", None)
    owner = {p: l for l, p in enumerate(inp.block_table[:needed])}
    body: list[str] = []
    y = PAD + 11

    # -- the physical KV cache ------------------------------------------------------
    body.append(svg.text(PAD, y, "KV cache: physical blocks", size=11, fill="muted"))
    lx = WIDTH - PAD - 206
    for fill, name in (("seq-0", "this sequence"), ("waste", "unused"), ("used", "other")):
        body.append(svg.rect(lx, y - 8, 8, 8, fill=fill, rx=0))
        body.append(svg.text(lx + 11, y, name, size=10, fill="muted"))
        lx += 22 + 6 * len(name)
    y += 5
    gap = 3
    bw = min(40.0, (WIDTH - 2 * PAD + gap) / num_blocks - gap)

    def cache_block(p: int, here: bool) -> str:
        x = PAD + p * (bw + gap)
        mine = p in owner
        if mine:
            logical = owner[p]
            first = logical * bs
            tip = (f"physical block {p}: logical block {logical} of this sequence "
                   f"(positions {first}-{min(first + bs, n) - 1})")
        else:
            tip = f"physical block {p}: another sequence's data (never read here)"
        cells = [svg.rect(x, y, bw, 28, fill="panel", stroke="highlight" if here else "line",
                          stroke_width=3 if here else 1)]
        sw = (bw - 4) / bs
        for s in range(bs):
            pos = owner[p] * bs + s if mine else None
            fill = "seq-0" if mine and pos < n else "waste" if mine else "used"
            cells.append(svg.rect(x + 2 + s * sw, y + 16, max(sw - 1, 1), 9, fill=fill, rx=0))
        cells.append(svg.text(x + bw / 2, y + 12, p, size=11, anchor="middle",
                              fill="fg" if mine else "muted"))
        return svg.group(cells, tip=tip)

    for p in range(num_blocks):
        here = p == current_physical
        body.append(once(("cache", p, here), lambda: cache_block(p, here)))
    y += 28 + 20

    # -- header of the current head -------------------------------------------------
    if kind == "intro":
        label = "Block table: logical → physical"
    elif kind == "final":
        label = "Every head's output"
    else:
        h = rec.head
        label = f"Head {h} of {len(inp.query)}, KV head {inp.kv_head(h)}"
        if getattr(rec, "partition", None) is not None:
            label += f", partition {rec.partition}"
    body.append(svg.text(PAD, y, label, size=12))
    y += 6

    # -- the grid: one row per logical block ----------------------------------------
    left = PAD + 76
    status_w = 44
    cw = min(52.0, (WIDTH - PAD - left - status_w) / bs)
    rh = 24
    cell_note = {"intro": "positions", "block_scores": "scores  q.k x scale",
                 "softmax": "softmax weights", "value_accumulated": "weights",
                 "partition_result": "weights (this partition)",
                 "partitions_merged": "weights (per partition)",
                 "final": "positions"}[kind]
    body.append(svg.text(PAD, y + 10, "logical", size=9, fill="muted"))
    body.append(svg.text(PAD + 42, y + 10, "phys.", size=9, fill="muted"))
    body.append(svg.text(left + 1, y + 10, cell_note, size=9, fill="muted"))
    y += 14
    partition_size = ctx.trace.partition_size
    weights = hs.weights if hs else {}
    scores = hs.scores if hs else {}
    accumulated = hs.accumulated if hs else frozenset()
    top_weight = max(weights.values()) if weights else 1.0

    def table_entry(ry: float, logical: int, physical: int, edge: str) -> str:
        return "".join((
            svg.rect(PAD, ry + 2, 30, rh - 4, fill="panel", stroke=edge,
                     tip=f"logical block {logical}"),
            svg.text(PAD + 15, ry + rh / 2 + 4, logical, size=11, anchor="middle"),
            svg.text(PAD + 37, ry + rh / 2 + 4, "→", size=10, anchor="middle", fill="muted"),
            svg.rect(PAD + 44, ry + 2, 28, rh - 4, fill="panel", stroke=edge,
                     tip=f"block table[{logical}] = physical block {physical}"),
            svg.text(PAD + 58, ry + rh / 2 + 4, physical, size=11, anchor="middle")))

    for logical in range(needed):
        ry = y + logical * rh
        physical = inp.block_table[logical]
        is_current = logical == current_logical
        edge = "highlight" if is_current else "line"
        if partition_size and (logical * bs) % partition_size == 0:
            part = logical * bs // partition_size
            if logical:
                body.append(svg.line(PAD, ry, WIDTH - PAD, ry, stroke="accent",
                                     stroke_dasharray="4 3"))
            body.append(svg.text(WIDTH - PAD, ry + rh / 2 + 4, f"p{part}", size=10,
                                 anchor="end", fill="accent"))
        body.append(once(("row", logical, is_current),
                         lambda: table_entry(ry, logical, physical, edge)))
        for s in range(bs):
            pos = logical * bs + s
            cx = left + s * cw
            text, fill, opacity, tip = str(pos), "free", None, f"position {pos}"
            ink = "muted"
            stroke = "highlight" if is_current and pos < n else None
            if pos >= n:
                text, fill, stroke = "mask", "bg", "waste"
                tip = (f"slot {s}: past the length {n}: loaded and scored with the block, "
                       "then masked (logit 0, left out of the max and the softmax; its value "
                       "is zeroed)")
            elif kind not in ("intro", "final"):
                ink = "fg"
                if pos in weights and kind != "block_scores":
                    w = weights[pos]
                    text, fill = f2(w), "seq-0"
                    opacity = round(0.15 + 0.6 * (w / top_weight), 2)
                    tip = f"position {pos}: score {f2(scores[pos])}, weight {f2(w)}"
                elif pos in scores:
                    text, fill = f2(scores[pos]), "panel"
                    tip = f"position {pos}: score {f2(scores[pos])}"
                else:
                    text, fill = "", "free"
            key = ("cell", pos, text, fill, opacity, tip, stroke, ink)
            body.append(once(key, lambda: (
                svg.rect(cx + 1, ry + 2, cw - 2, rh - 4, fill=fill, rx=1, tip=tip,
                         fill_opacity=opacity, stroke=stroke)
                + svg.text(cx + cw / 2, ry + rh / 2 + 4, text, anchor="middle",
                           size=10 if cw >= 34 else 9, fill=ink))))
        if logical in accumulated:
            body.append(svg.text(WIDTH - PAD - 22, ry + rh / 2 + 4, "+V", size=10,
                                 anchor="end", fill="seq-2"))
    y += needed * rh + 8

    # -- partitions (v2) ------------------------------------------------------------
    if partition_size and kind not in ("intro", "final"):
        parts = hs.partitions
        count = -(-n // partition_size)
        cols = (PAD, PAD + 70, PAD + 170, PAD + 250)
        for x, head in zip(cols, ("partition", "positions", "max m_i", "sum l_i")):
            body.append(svg.text(x, y + 6, head, size=9, fill="muted"))
        y += 8
        for p in range(count):
            start, end = p * partition_size, min((p + 1) * partition_size, n)
            res = parts.get(p)
            cells = (f"p{p}", f"{start}-{end - 1}",
                     f2(res.max_logit) if res else "...", f2(res.exp_sum) if res else "...")
            for x, text in zip(cols, cells):
                body.append(svg.text(x, y + 10, text, size=10, fill="fg" if res else "muted"))
            y += 14
        y += 6

    # -- detail panel ---------------------------------------------------------------
    lines = detail_lines(step, ctx)
    top = y
    lh = 15
    body.append(svg.rect(PAD - 4, top - 2, WIDTH - 2 * PAD + 8, lh * len(lines) + 8,
                         fill="panel"))
    for i, (text, colour, *columns) in enumerate(lines):
        if isinstance(text, tuple):       # a table row: fixed columns
            for x, cell in zip(columns[0] if columns else TABLE_COLUMNS, text):
                body.append(svg.text(PAD + 2 + x, top + 11 + lh * i, cell, size=10,
                                     fill=colour))
        else:
            body.append(svg.text(PAD + 2, top + 11 + lh * i, text, size=10, fill=colour))
    y = top + lh * len(lines) + 12
    return svg.document(WIDTH, y, body, label=f"Paged attention {v['kernel']}: "
                                              f"{frame_label(step)}")


def frame_label(step: KernelStep) -> str:
    kind = frame_kind(step)
    if kind == "intro":
        return "the scenario"
    if kind == "final":
        return "the output"
    return f"head {step.record.head}, {kind.replace('_', ' ')}"


def detail_lines(step: KernelStep, ctx: KernelContext) -> list[tuple]:
    """The panel under the grid: the numbers of the current step."""
    inp = ctx.trace.inputs
    rec, kind = step.record, frame_kind(step)
    lines: list[tuple] = []
    if kind == "intro":
        lines.append((f"scale = 1/sqrt(head size {len(inp.query[0])}) = {f2(inp.scale)}",
                      "muted"))
        for h, q in enumerate(inp.query):
            lines.append((f"head {h} (KV head {inp.kv_head(h)}): q = {short(q, 1)}", "fg"))
        return lines
    if kind == "final":
        ref = ctx.trace.reference
        for h, (out, r) in enumerate(zip(rec.output, ref)):
            lines.append(((f"head {h}", "paged", short(out)), "fg", OUTPUT_COLUMNS))
            lines.append((("", "contiguous", short(r)), "muted", OUTPUT_COLUMNS))
        same = max_diff(rec.output, ref) < EQUAL_TOL
        lines.append(("equal (to within 1e-9, float64)" if same else "NOT equal",
                      "seq-2" if same else "highlight"))
        return lines
    h = rec.head
    lines.append((f"q (head {h}) = {short(inp.query[h], 1)}", "muted"))
    if kind == "block_scores":
        keys = inp.key_cache[rec.physical_block][rec.kv_head]
        for s, (pos, score) in enumerate(zip(rec.positions, rec.scores)):
            if score is None:
                stale = rec.padded_qk[s]
                lines.append((f"pos {pos:>2}: stale k -> {f2(stale)}, masked: logit 0", "muted"))
            else:
                lines.append((f"pos {pos:>2}: k = {short(keys[s], 1)} -> {f2(score)}", "fg"))
    elif kind == "softmax":
        lines.append((f"m = max score = {f2(rec.max_logit)}", "fg"))
        lines.append((f"l = sum of exp(score - m) = {f2(rec.exp_sum)}", "fg"))
        lines.append(("weight = exp(score - m) / l", "muted"))
    elif kind == "value_accumulated":
        values = inp.value_cache[rec.physical_block][inp.kv_head(h)]
        for s, (pos, w) in enumerate(zip(rec.positions, rec.weights)):
            lines.append((f"pos {pos:>2}: {f2(w)} x v = {short(values[s], 1)}", "fg"))
        lines.append((f"output so far = {short(rec.output)}", "seq-2"))
    elif kind == "partition_result":
        p = rec.partition
        lines.append((f"m{p} = {f2(rec.max_logit)}, l{p} = {f2(rec.exp_sum)}", "fg"))
        lines.append((f"o{p} = {short(rec.partial_output)} (divided by l{p})", "fg"))
    elif kind == "partitions_merged":
        lines.append((f"M = max of the m_i = {f2(rec.global_max)}", "fg"))
        lines.append((("", "m_i", "l_i", "exp(m_i - M)", "l_i x exp(m_i - M)"), "muted"))
        for i, (m, l, f, r) in enumerate(zip(rec.max_logits, rec.exp_sums,
                                             rec.rescale_factors, rec.rescaled_exp_sums)):
            lines.append(((f"p{i}", f2(m), f2(l), f2(f), f2(r)), "fg"))
        for i, res in enumerate(step.head.partitions.values()):
            lines.append((f"o{i} = {short(res.partial_output)}", "muted"))
        lines.append((f"L = {f2(rec.global_exp_sum)}, output = {short(rec.output)}",
                      "seq-2"))
    return lines


WIDGETS = (Widget(
    id=WIDGET_ID,
    title="Paged attention, block by block",
    summary="One query attends over keys and values scattered in physical blocks.",
    params=(
        Param("kernel", "kernel", "choice", "v1",
              choices=(("v1", "v1"), ("v2", "v2 (partitions)")),
              help="v1: one softmax over the whole sequence. v2: partitions merged by a reduce."),
        Param("partition_size", "partition size", "int", 8, min=1, max=40,
              help="v2 only: tokens per partition, a multiple of the block size (vLLM: 512)."),
        Param("seq_len", "length", "int", 13, min=1, max=40,
              help="Tokens already in the KV cache, the new one included."),
        Param("block_size", "block size", "int", 4, min=2, max=8, help="Tokens per block."),
        Param("num_heads", "query heads", "int", 2, min=1, max=4),
        Param("num_kv_heads", "KV heads", "int", 1, min=1, max=4,
              help="Fewer KV heads than query heads is grouped-query attention."),
        Param("head_size", "head size", "int", 4, min=2, max=8),
        Param("head", "watched head", "int", 0, min=0, max=3,
              help="The query head whose walk the steps follow; the others run the same "
                   "walk in their own thread blocks."),
        Param("seed", "seed", "int", 0, min=0, max=999, help="Seeds the random query and cache."),
    ),
    scenario=scenario, context=context, view=view, narrate=narrate, meta=meta, check=check,
),)


# ------------------------------------------------------------ build-time chart

CHART_HEADS = 32          # Llama-2-7B's query heads on one GPU


def render_kernel_choice() -> str:
    """Which kernel vLLM v0.5.5 launches for a decode batch, from `sim.perf.attention.use_v1`,
    over the longest sequence and the number of sequences (32 heads)."""
    lengths = [2 ** k for k in range(7, 16)]          # 128 .. 32768 tokens
    batch = [2 ** k for k in range(0, 10)]            # 1 .. 512 sequences
    v1, v2 = [], []
    for n in lengths:
        for b in batch:
            (v1 if use_v1(n, b, CHART_HEADS) else v2).append((n, b))

    def tips(points, name):
        return [f"{name}: longest sequence {n:,} tokens, {b} sequences x {CHART_HEADS} heads "
                f"= {b * CHART_HEADS:,} (sequence, head) pairs" for n, b in points]

    series = [chart.Series("v1 (one pass)", v1, color="seq-0", kind="points",
                           tips=tips(v1, "v1")),
              chart.Series("v2 (partitions + reduce)", v2, color="seq-1", kind="points",
                           marker="square", tips=tips(v2, "v2"))]
    markers = [chart.Marker(x=PARTITION_SIZE, color="muted"),
               chart.Marker(x=V1_MAX_SEQ_LEN, color="muted"),
               chart.Marker(y=512 / CHART_HEADS, color="muted")]
    width, height = 460, 330
    body = chart.plot(0, 0, width, height, series,
                      x=chart.Axis("longest sequence in the batch (tokens)", log=True, base=2,
                                   fmt=lambda t: str(int(t))),
                      y=chart.Axis("sequences in the batch", log=True, base=2,
                                   fmt=lambda t: str(int(t))),
                      markers=markers, title=f"Which kernel vLLM v0.5.5 launches "
                                             f"({CHART_HEADS} heads)", legend=False)
    y = height + 4
    for i, s in enumerate(series):
        x = 62 + i * 170
        body.append(svg.rect(x, y, 12, 10, fill=s.color, rx=1))
        body.append(svg.text(x + 17, y + 9, s.name, size=11))
    body.append(svg.text(62, y + 28, f"dashed: {PARTITION_SIZE} tokens (one partition), "
                                     f"{V1_MAX_SEQ_LEN} tokens,", size=10, fill="muted"))
    body.append(svg.text(62, y + 42, f"{512 // CHART_HEADS} sequences x {CHART_HEADS} heads = "
                                     f"512 thread blocks", size=10, fill="muted"))
    return svg.document(width, y + 52, body, label="v1 or v2 by batch shape")


CHARTS = (Chart(
    id="paged-attention-kernel-choice",
    title="v1 or v2: vLLM's choice per decode batch",
    render=render_kernel_choice,
    caption="Drawn from sim.perf.attention.use_v1, the rule in PagedAttention.forward_decode "
            "(vLLM v0.5.5): v1 when the longest sequence is at most 8192 tokens and either "
            "fits one 512-token partition or there are more than 512 (sequence, head) pairs.",
),)
