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
from pages.questions import Asker, kernel
from pages.views import chart, fit, svg
from pages.views.text import f2, noun, plural, span, verb
from pages.views.vectors import short, vec
from sim.perf.attention import PARTITION_SIZE, V1_MAX_SEQ_LEN, random_paged_attention_inputs, use_v1
from sim.perf.kernel_walk import KernelStep, KernelWalk, walk_kernel

WIDGET_ID = "paged-attention-kernel"
MAX_BLOCKS = 12           # logical blocks a sequence may need (rows of the picture)
SPARE_BLOCKS = 2          # physical blocks that belong to someone else
EQUAL_TOL = 1e-9          # "equal" in the last frame: float64 agrees far below this

WIDTH = 400
PAD = 10
SMALL = fit.min_size(WIDTH)             # the smallest text: 11 px on a phone (13.5 units)
CELL_MIN = fit.text_width("-0.00", SMALL) + 6     # a grid cell that holds a score
TABLE_COLUMNS = (0, 44, 118, 192, 266)  # x of the reduce table's columns

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


# ---------------------------------------------------------------------- step names

def label(step: KernelStep, ctx: KernelContext | None = None) -> str:
    """The step's name: the counter, the picture's heading and the narration use it."""
    kind = frame_kind(step)
    if kind == "intro":
        return "start"
    if kind == "final":
        return "result"
    rec = step.record
    part = getattr(rec, "partition", None)
    where = f"head {rec.head}" + (f", p{part}" if part is not None and
                                  kind != "partition_result" else "")
    if kind == "block_scores":
        return f"{where}, block {rec.logical_block} scores"
    if kind == "softmax":
        return f"{where} softmax"
    if kind == "value_accumulated":
        return f"{where}, block {rec.logical_block} values"
    if kind == "partition_result":
        return f"{where}, partition {part} result"
    return f"{where} reduce"


def frame_label(step: KernelStep) -> str:
    return label(step)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _list(xs) -> str:
    return ", ".join(f2(x) for x in xs)


# ----------------------------------------------------------------------- narration

def narrate(step: KernelStep, ctx: KernelContext) -> str:
    """Cause, effect, consequence: at most three sentences, starting with the step's name."""
    v, inp = ctx.values, ctx.trace.inputs
    rec = step.record
    kind = frame_kind(step)
    bs, n = inp.block_size, inp.seq_len
    needed = -(-n // bs)
    head = _cap(label(step)) + ": "
    if kind == "intro":
        table = ", ".join(str(b) for b in inp.block_table[:needed])
        used = inp.block_table[:needed]
        layout = ("consecutive by chance" if all(b == a + 1 for a, b in zip(used, used[1:]))
                  else "scattered, not in order")
        kernel = ("The kernel, paged_attention_v1, walks the blocks once for the scores, "
                  "takes one softmax, then walks them again for the values"
                  if v["kernel"] == "v1" else
                  f"The kernel, paged_attention_v2, cuts the walk into partitions of "
                  f"{plural(v['partition_size'], 'token')} and merges them in a reduce")
        return (head + f"one sequence decodes its next token, so its query must attend to "
                f"{plural(n, 'cached token')} in {plural(needed, 'block')} of {bs}. The block "
                f"table says where they are: physical blocks {table}, {layout}. "
                f"{kernel}.")
    if kind == "final":
        ref = ctx.trace.reference
        same = max_diff(rec.output, ref) < EQUAL_TOL
        chosen = use_v1(n, 1, len(inp.query))
        verdict = "the same numbers" if same else "DIFFERENT numbers (a bug)"
        parts = -(-n // PARTITION_SIZE)
        why = (f"{n} tokens fit one {PARTITION_SIZE}-token partition" if parts == 1
               else f"{n} tokens need {parts} partitions of {PARTITION_SIZE}")
        return (head + f"every head's paged output next to plain softmax attention over the "
                f"keys and values gathered into one contiguous array: {verdict}. For this "
                f"sequence vLLM would launch {'v1' if chosen else 'v2'}: use_v1({n} tokens, "
                f"1 sequence, {plural(len(inp.query), 'head')}) is {chosen}, since {why}.")
    part = getattr(rec, "partition", None)
    if kind == "block_scores":
        scored = [(p, s) for p, s in zip(rec.positions, rec.scores) if s is not None]
        masked = [p for p, m in zip(rec.positions, rec.masked) if m]
        cause = (f"the block table maps logical block {rec.logical_block} to physical block "
                 f"{rec.physical_block}, so the kernel reads that block's keys (KV head "
                 f"{rec.kv_head}).")
        effect = (f" {_cap(noun(scored, 'position'))} {span(p for p, _ in scored)} "
                  f"{verb(scored, 'scores', 'score')} q.k x {f2(inp.scale)} = "
                  f"{_list(s for _, s in scored)}.")
        if masked:
            stale = [q for q in rec.padded_qk if q is not None]
            return (head + cause + effect +
                    f" {_cap(noun(masked, 'position'))} {span(masked)} "
                    f"{verb(masked, 'is', 'are')} past the length {n}, but the whole block is "
                    f"loaded, so {verb(masked, 'its', 'their')} stale "
                    f"{noun(masked, 'key')} {verb(masked, 'is', 'are')} scored too "
                    f"({_list(stale)}), then stored as 0 and left out of the max and the "
                    f"softmax.")
        scope = "the sequence" if part is None else f"partition {part}"
        return (head + cause + effect + f" The scores wait in shared memory until every "
                f"block of {scope} is scored.")
    if kind == "softmax":
        count = len(rec.positions)
        scope = "all" if part is None else f"partition {part}'s"
        return (head + f"{scope} {count} scores are in, so the kernel takes their max "
                f"m = {f2(rec.max_logit)} and l = sum of exp(score - m) = {f2(rec.exp_sum)}. "
                f"Each weight is exp(score - m) / l: the shaded cells, darker for larger. "
                f"A second walk over the blocks mixes the values with these weights.")
    if kind == "value_accumulated":
        text = (head + f"the second walk reads physical block {rec.physical_block}'s values "
                f"and weights them by {_list(rec.weights)}. Their sum is added to the "
                f"output, now {vec(rec.output)}.")
        if rec.zeroed:
            text += (f" The padded {noun(rec.zeroed, 'slot')} {span(rec.zeroed)} "
                     f"{verb(rec.zeroed, 'is', 'are')} loaded too and zeroed (stale memory "
                     "may hold NaNs), so with logit 0 they add nothing.")
        return text
    if kind == "partition_result":
        return (head + f"positions {rec.start}-{rec.end - 1} are done, so the partition hands "
                f"the reduce its max m{part} = {f2(rec.max_logit)}, its exp sum "
                f"l{part} = {f2(rec.exp_sum)} and its output o{part} = "
                f"{vec(rec.partial_output)}, already divided by l{part}. These are vLLM's "
                f"max_logits, exp_sums and tmp_out.")
    # partitions_merged
    if len(rec.max_logits) == 1:
        return (head + f"there is only one partition, so the reduce kernel copies its output "
                f"as it is: {vec(rec.output)}. That is why vLLM runs v1 when a sequence fits "
                f"one partition.")
    return (head + f"the global max M = {f2(rec.global_max)} is the largest m_i, so partition "
            f"i is rescaled by exp(m_i - M) = {_list(rec.rescale_factors)}, and its exp sum "
            f"becomes {_list(rec.rescaled_exp_sums)} (total L = {f2(rec.global_exp_sum)}). "
            f"The output is the sum of o_i x l_i x exp(m_i - M) / L = {vec(rec.output)}, "
            f"exactly what one softmax over every score gives.")


def details(step: KernelStep, ctx: KernelContext) -> list[str]:
    """The step's whole account: every number the kernel read or wrote in it."""
    v, inp = ctx.values, ctx.trace.inputs
    rec, kind = step.record, frame_kind(step)
    bs, n = inp.block_size, inp.seq_len
    needed = -(-n // bs)
    if kind == "intro":
        heads = len(inp.query)
        group = (f"{plural(heads, 'query head')}, each with its own KV head"
                 if heads == inp.num_kv_heads else
                 f"{plural(heads, 'query head')} sharing {plural(inp.num_kv_heads, 'KV head')}"
                 f" (grouped-query attention): query head h reads KV head "
                 f"h // {heads // inp.num_kv_heads}")
        others = [b for b in range(len(inp.key_cache)) if b not in inp.block_table[:needed]]
        out = [f"Sequence: {plural(n, 'token')} cached, the new one included, in "
               f"{plural(needed, 'block')} of {bs}.",
               "Block table: " + ", ".join(f"logical {i} -> physical {b}"
                                            for i, b in enumerate(inp.block_table[:needed]))
               + ".",
               f"Physical blocks {', '.join(str(b) for b in others)} belong to other "
               f"sequences; the kernel never reads them.",
               f"{_cap(group)}.",
               f"Scale = 1/sqrt(head size {len(inp.query[0])}) = {f2(inp.scale)}."]
        out += [f"Query of head {h} (KV head {inp.kv_head(h)}): {short(q, 1)}."
                for h, q in enumerate(inp.query)]
        out.append(f"The steps follow head {v['head']}; the other heads run the same walk in "
                   f"their own thread blocks at the same time.")
        return out
    if kind == "final":
        ref = ctx.trace.reference
        out = []
        for h, (o, r) in enumerate(zip(rec.output, ref)):
            out.append(f"Head {h}: paged {vec(o)}, contiguous {vec(r)}.")
        same = max_diff(rec.output, ref) < EQUAL_TOL
        out.append("Every number agrees to within 1e-9: float64 rounding only." if same else
                   "The outputs differ by more than 1e-9: a bug.")
        return out
    h = rec.head
    out = [f"Query of head {h}: {short(inp.query[h], 1)}."]
    if kind == "block_scores":
        keys = inp.key_cache[rec.physical_block][rec.kv_head]
        out.append(f"Logical block {rec.logical_block} -> block table -> physical block "
                   f"{rec.physical_block}; its keys for KV head {rec.kv_head}:")
        for slot, (pos, score) in enumerate(zip(rec.positions, rec.scores)):
            if score is None:
                out.append(f"Slot {slot} (position {pos}, past the length {n}): stale key "
                           f"{short(keys[slot], 1)}, q.k x scale = {f2(rec.padded_qk[slot])}, "
                           f"stored as logit 0 and left out of the max and the softmax.")
            else:
                out.append(f"Slot {slot} (position {pos}): key {short(keys[slot], 1)}, "
                           f"q.k x {f2(inp.scale)} = {f2(score)}.")
    elif kind == "softmax":
        out.append(f"m = max of {plural(len(rec.positions), 'score')} = {f2(rec.max_logit)}.")
        out.append(f"l = sum of exp(score - m) = {f2(rec.exp_sum)}.")
        out += [f"Position {p}: weight {f2(w)}." for p, w in zip(rec.positions, rec.weights)]
    elif kind == "value_accumulated":
        values = inp.value_cache[rec.physical_block][inp.kv_head(h)]
        out.append(f"Logical block {rec.logical_block} -> physical block "
                   f"{rec.physical_block}; its values for KV head {inp.kv_head(h)}:")
        for slot, (pos, w) in enumerate(zip(rec.positions, rec.weights)):
            out.append(f"Position {pos}: {f2(w)} x {short(values[slot], 1)}.")
        if rec.zeroed:
            out.append(f"Padded {noun(rec.zeroed, 'slot')} {span(rec.zeroed)}: loaded, "
                       f"zeroed, weight 0.")
        out.append(f"Output so far: {vec(rec.output)}.")
    elif kind == "partition_result":
        out.append(f"Partition {rec.partition}: positions {rec.start}-{rec.end - 1}.")
        out.append(f"m{rec.partition} = {f2(rec.max_logit)}, l{rec.partition} = "
                   f"{f2(rec.exp_sum)}, o{rec.partition} = {vec(rec.partial_output)} "
                   f"(divided by l{rec.partition}).")
    else:
        out.append(f"M = max of the m_i = {f2(rec.global_max)}.")
        for i, (m, l, f, r) in enumerate(zip(rec.max_logits, rec.exp_sums,
                                             rec.rescale_factors, rec.rescaled_exp_sums)):
            out.append(f"Partition {i}: m = {f2(m)}, l = {f2(l)}, exp(m - M) = {f2(f)}, "
                       f"l x exp(m - M) = {f2(r)}.")
        for i, res in enumerate(step.head.partitions.values()):
            out.append(f"o{i} = {vec(res.partial_output)}.")
        out.append(f"L = {f2(rec.global_exp_sum)}; output = {vec(rec.output)}.")
    return out


# ---------------------------------------------------------------------------- view

def _cursor(x: float, y: float, w: float, h: float, key: str) -> str:
    """An outline around what the kernel reads in this step (keyed, so it moves)."""
    style = f"fill:none;stroke:{svg.color('highlight')};stroke-width:1.5"
    return f"<rect{svg.attrs(x=x, y=y, width=w, height=h, rx=3, style=style, data_k=key)}/>"


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
    s = SMALL
    body: list[str] = []

    # -- heading: the step's name and whose walk it is ------------------------------
    body.append(svg.text(PAD, 20, label(step), size=16))
    if kind == "intro":
        sub = f"{plural(n, 'token')} in {plural(needed, 'block')} of {bs}, kernel {v['kernel']}"
    elif kind == "final":
        sub = "every head: paged vs contiguous"
    else:
        sub = f"query head {rec.head} of {len(inp.query)} reads KV head {inp.kv_head(rec.head)}"
    body.append(svg.text(PAD, 40, sub, size=s, fill="muted"))
    y = 52

    # -- the physical KV cache ------------------------------------------------------
    body.append(svg.text(PAD, y + s, "KV cache: physical blocks", size=s))
    y += s + 6
    gap = 3
    bw = min(44.0, (WIDTH - 2 * PAD + gap) / num_blocks - gap)

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
        cells = [svg.rect(x, y, bw, 32, fill="panel", stroke="highlight" if here else "line",
                          stroke_width=3 if here else 1)]
        sw = (bw - 4) / bs
        for slot in range(bs):
            pos = owner[p] * bs + slot if mine else None
            fill = "seq-0" if mine and pos < n else "waste" if mine else "used"
            cells.append(svg.rect(x + 2 + slot * sw, y + 21, max(sw - 1, 1), 8, fill=fill,
                                  rx=0))
        cells.append(svg.text(x + bw / 2, y + 16, p, size=s, anchor="middle",
                              fill="fg" if mine else "muted"))
        return svg.group(cells, tip=tip, data_k=f"blk:gpu:{p}")

    for p in range(num_blocks):
        here = p == current_physical
        body.append(once(("cache", p, here), lambda: cache_block(p, here)))
    if current_physical is not None:
        # The kernel's read position: it travels from block to block as the walk goes on.
        body.append(_cursor(PAD + current_physical * (bw + gap) - 3, y - 3, bw + 6, 38,
                            "cursor:block"))
    y += 32 + 4
    chips, h = fit.legend(PAD, y, WIDTH - PAD, [("chip", "seq-0", "this sequence"),
                                                ("chip", "waste", "padding"),
                                                ("chip", "used", "other sequences")], size=s)
    body += chips
    y += h + 12

    # -- the grid: one row per logical block ----------------------------------------
    left = PAD + 76
    right = WIDTH - PAD - 46                         # "+V" and "p0" sit right of the cells
    per_row = min(bs, max(1, int((right - left) // CELL_MIN)))
    lines_per_block = -(-bs // per_row)
    per_row = -(-bs // lines_per_block)              # balance the lines
    cw = min(60.0, (right - left) / per_row)
    rh = 26
    cell_note = {"intro": "positions", "block_scores": "scores: q.k x scale",
                 "softmax": "softmax weights", "value_accumulated": "weights",
                 "partition_result": "weights (this partition)",
                 "partitions_merged": "weights (per partition)",
                 "final": "positions"}[kind]
    body.append(svg.text(PAD, y + s, "table", size=s, fill="muted"))
    body.append(svg.text(left + 1, y + s, cell_note, size=s, fill="muted"))
    y += s + 6
    partition_size = ctx.trace.partition_size
    weights = hs.weights if hs else {}
    scores = hs.scores if hs else {}
    accumulated = hs.accumulated if hs else frozenset()
    top_weight = max(weights.values()) if weights else 1.0
    marks = {"current": False, "mask": False, "weight": False, "values": False,
             "partition": bool(partition_size)}

    def table_entry(ry: float, block_h: float, logical: int, physical: int, edge: str) -> str:
        mid = ry + block_h / 2 + s / 2 - 2
        return "".join((
            svg.rect(PAD, ry + 2, 30, block_h - 4, fill="panel", stroke=edge,
                     tip=f"logical block {logical}", data_k=f"logical:{logical}"),
            svg.text(PAD + 15, mid, logical, size=s, anchor="middle",
                     data_k=f"logical:{logical}/t"),
            svg.text(PAD + 37, mid, "→", size=s, anchor="middle", fill="muted"),
            svg.rect(PAD + 44, ry + 2, 30, block_h - 4, fill="panel", stroke=edge,
                     tip=f"block table[{logical}] = physical block {physical}",
                     data_k=f"ent:0:{logical}"),
            svg.text(PAD + 59, mid, physical, size=s, anchor="middle",
                     data_k=f"ent:0:{logical}/t")))

    block_h = rh * lines_per_block
    for logical in range(needed):
        ry = y + logical * block_h
        physical = inp.block_table[logical]
        is_current = logical == current_logical
        marks["current"] |= is_current
        edge = "highlight" if is_current else "line"
        if partition_size and (logical * bs) % partition_size == 0:
            part = logical * bs // partition_size
            if logical:
                body.append(svg.line(PAD, ry, WIDTH - PAD, ry, stroke="accent",
                                     stroke_dasharray="4 3"))
            body.append(svg.text(WIDTH - PAD, ry + rh / 2 + s / 2 - 2, f"p{part}", size=s,
                                 anchor="end", fill="accent", data_k=f"part:{part}"))
        body.append(once(("row", logical, is_current, block_h),
                         lambda: table_entry(ry, block_h, logical, physical, edge)))
        for slot in range(bs):
            pos = logical * bs + slot
            cx = left + (slot % per_row) * cw
            cy = ry + (slot // per_row) * rh
            text, fill, opacity, tip = str(pos), "free", None, f"position {pos}"
            ink = "muted"
            stroke = "highlight" if is_current and pos < n else None
            if pos >= n:
                marks["mask"] = True
                text, fill, stroke = "mask", "bg", "waste"
                tip = (f"slot {slot}: past the length {n}: loaded and scored with the block, "
                       "then masked (logit 0, left out of the max and the softmax; its value "
                       "is zeroed)")
            elif kind not in ("intro", "final"):
                ink = "fg"
                if pos in weights and kind != "block_scores":
                    marks["weight"] = True
                    w = weights[pos]
                    text, fill = f2(w), "seq-0"
                    opacity = round(0.15 + 0.6 * (w / top_weight), 2)
                    tip = f"position {pos}: score {f2(scores[pos])}, weight {f2(w)}"
                elif pos in scores:
                    text, fill = f2(scores[pos]), "panel"
                    tip = f"position {pos}: score {f2(scores[pos])}"
                else:
                    text, fill = "", "free"
            key = ("cell", pos, text, fill, opacity, tip, stroke, ink, cx, cy)
            body.append(once(key, lambda: (
                svg.rect(cx + 1, cy + 2, cw - 2, rh - 4, fill=fill, rx=1, tip=tip,
                         fill_opacity=opacity, stroke=stroke, data_k=f"tok:0:{pos}")
                + svg.text(cx + cw / 2, cy + rh / 2 + s / 2 - 2, text, anchor="middle",
                           size=s, fill=ink, data_k=f"tok:0:{pos}/t"))))
        if logical in accumulated:
            marks["values"] = True
            body.append(svg.text(WIDTH - PAD - 24, ry + rh / 2 + s / 2 - 2, "+V", size=s,
                                 anchor="end", fill="seq-2", data_k=f"acc:{logical}"))
    if current_logical is not None:
        body.append(_cursor(PAD - 3, y + current_logical * block_h, left + per_row * cw - PAD + 5,
                            block_h, "cursor:row"))
    y += needed * block_h + 6

    # -- what the marks mean ----------------------------------------------------------
    items = []
    if marks["current"]:
        items.append(("outline", "highlight", "read this step"))
    if marks["mask"]:
        items.append(("outline", "waste", "mask: past the length"))
    if marks["weight"]:
        items.append(("chip", "seq-0", "weight (darker: larger)"))
    if marks["values"]:
        items.append(("text:+V", "seq-2", "values added"))
    if marks["partition"]:
        items.append(("dash", "accent", "partition boundary"))
    if items:
        chips, h = fit.legend(PAD, y, WIDTH - PAD, items, size=s)
        body += chips
        y += h + 10

    # -- partitions (v2) ------------------------------------------------------------
    if partition_size and kind not in ("intro", "final"):
        parts = hs.partitions
        count = -(-n // partition_size)
        cols = (PAD, PAD + 60, PAD + 190, PAD + 290)
        for x, name in zip(cols, ("part", "positions", "max m_i", "sum l_i")):
            body.append(svg.text(x, y + s, name, size=s, fill="muted"))
        y += s + 4
        for p in range(count):
            start, end = p * partition_size, min((p + 1) * partition_size, n)
            res = parts.get(p)
            cells = (f"p{p}", f"{start}-{end - 1}",
                     f2(res.max_logit) if res else "...", f2(res.exp_sum) if res else "...")
            for x, text in zip(cols, cells):
                body.append(svg.text(x, y + s, text, size=s, fill="fg" if res else "muted"))
            y += s + 5
        y += 8

    # -- detail panel ---------------------------------------------------------------
    panel: list[str] = []
    top = y
    yy = top + 4
    for text, colour, *columns in detail_lines(step, ctx):
        if isinstance(text, tuple):       # a table row: fixed columns
            for x, cell in zip(columns[0] if columns else TABLE_COLUMNS, text):
                panel.append(svg.text(PAD + 2 + x, yy + s, cell, size=s, fill=colour))
            yy += s * 1.35
        else:
            lines, h = fit.paragraph(PAD + 2, yy, text, size=s, room=WIDTH - 2 * PAD - 4,
                                     fill=colour, indent="  ")
            panel += lines
            yy += h
    body.append(svg.rect(PAD - 4, top - 2, WIDTH - 2 * PAD + 8, yy - top + 10, fill="panel"))
    body += panel
    y = yy + 14
    return svg.document(WIDTH, y, body, label=f"Paged attention {v['kernel']}: {label(step)}")


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
            lines.append((f"head {h} paged {short(out)}", "fg"))
            lines.append((f"  contiguous {short(r)}", "muted"))
        same = max_diff(rec.output, ref) < EQUAL_TOL
        lines.append(("equal (to within 1e-9, float64)" if same else "NOT equal",
                      "seq-2" if same else "highlight"))
        return lines
    h = rec.head
    lines.append((f"q (head {h}) = {short(inp.query[h], 1)}", "muted"))
    if kind == "block_scores":
        keys = inp.key_cache[rec.physical_block][rec.kv_head]
        for slot, (pos, score) in enumerate(zip(rec.positions, rec.scores)):
            if score is None:
                stale = rec.padded_qk[slot]
                lines.append((f"pos {pos:>2}: stale k -> {f2(stale)}, masked: logit 0", "muted"))
            else:
                lines.append((f"pos {pos:>2}: k = {short(keys[slot], 1)} -> {f2(score)}", "fg"))
    elif kind == "softmax":
        lines.append((f"m = max score = {f2(rec.max_logit)}", "fg"))
        lines.append((f"l = sum of exp(score - m) = {f2(rec.exp_sum)}", "fg"))
        lines.append(("weight = exp(score - m) / l", "muted"))
    elif kind == "value_accumulated":
        values = inp.value_cache[rec.physical_block][inp.kv_head(h)]
        for slot, (pos, w) in enumerate(zip(rec.positions, rec.weights)):
            lines.append((f"pos {pos:>2}: {f2(w)} x v = {short(values[slot], 1)}", "fg"))
        lines.append((f"output so far = {short(rec.output)}", "seq-2"))
    elif kind == "partition_result":
        p = rec.partition
        lines.append((f"m{p} = {f2(rec.max_logit)}, l{p} = {f2(rec.exp_sum)}", "fg"))
        lines.append((f"o{p} = {short(rec.partial_output)} (divided by l{p})", "fg"))
    elif kind == "partitions_merged":
        lines.append((f"M = max of the m_i = {f2(rec.global_max)}", "fg"))
        lines.append(("w_i = exp(m_i - M)", "muted"))
        lines.append((("", "m_i", "l_i", "w_i", "l_i x w_i"), "muted"))
        for i, (m, l, f, r) in enumerate(zip(rec.max_logits, rec.exp_sums,
                                             rec.rescale_factors, rec.rescaled_exp_sums)):
            lines.append(((f"p{i}", f2(m), f2(l), f2(f), f2(r)), "fg"))
        for i, res in enumerate(step.head.partitions.values()):
            lines.append((f"o{i} = {short(res.partial_output)}", "muted"))
        lines.append((f"L = {f2(rec.global_exp_sum)}, output = {short(rec.output)}",
                      "seq-2"))
    return lines


QUESTIONS = Asker(("kernel-max", kernel.softmax_max), ("kernel-partial", kernel.value_block))


WIDGETS = (Widget(
    id=WIDGET_ID,
    keys=("blk", "logical", "ent", "tok", "cursor"),
    goal=('Walk the PagedAttention kernel block by block and show it computes the same attention '
          'as a contiguous cache.'),
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
    scenario=scenario, context=context, view=view, narrate=narrate, label=label,
    details=details, meta=meta, check=check, questions=QUESTIONS,
    question_kinds=QUESTIONS.kinds,
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
    width, height = WIDTH, 330
    body = chart.plot(0, 0, width, height, series,
                      x=chart.Axis("longest sequence (tokens)", log=True, base=2,
                                   fmt=lambda t: f"{t / 1024:.0f}K" if t >= 1024
                                   else str(int(t))),
                      y=chart.Axis("sequences in the batch", log=True, base=2,
                                   fmt=lambda t: str(int(t))),
                      markers=markers, title="Which kernel v0.5.5 launches",
                      legend=False, font_scale=SMALL / 10)
    y = height
    chips, h = fit.legend(PAD, y, width - PAD,
                          [("chip" if s.marker == "square" else "dot", s.color, s.name)
                           for s in series], size=SMALL)
    body += chips
    y += h + 6
    notes = [f"{CHART_HEADS} query heads. Dashed: {PARTITION_SIZE} tokens (one partition), "
             f"{V1_MAX_SEQ_LEN} tokens (v1's limit), and {512 // CHART_HEADS} sequences x "
             f"{CHART_HEADS} heads = 512 thread blocks."]
    for note in notes:
        lines, h = fit.paragraph(PAD, y, note, size=SMALL, room=width - 2 * PAD, fill="muted")
        body += lines
        y += h
    return svg.document(width, y + 8, body, label="v1 or v2 by batch shape")


CHARTS = (Chart(
    id="paged-attention-kernel-choice",
    title="v1 or v2: vLLM's choice per decode batch",
    render=render_kernel_choice,
    caption="Drawn from sim.perf.attention.use_v1, the rule in PagedAttention.forward_decode "
            "(vLLM v0.5.5): v1 when the longest sequence is at most 8192 tokens and either "
            "fits one 512-token partition or there are more than 512 (sequence, head) pairs.",
),)
