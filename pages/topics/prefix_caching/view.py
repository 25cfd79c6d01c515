"""The prefix caching widget's picture: each request's blocks (tokens, hash, block id and
ref_cnt), the null block and the free queue, what moved, a legend.
"""
from __future__ import annotations

from pages.topics.prefix_caching.narration import blocks, capped_block, covered, request, toks
from pages.topics.prefix_caching.scenario import (
    DOCS_PICTURE,
    DOCS_TIME,
    X0,
    S,
    TourContext,
    W,
    label,
)
from pages.views import fit, svg
from pages.views import prefix_view as pv
from sim.events import (
    BlockAllocated,
    TokenSampled,
)

# ------------------------------------------------------------------------------ picture

def status(phase: pv.Phase, ctx: TourContext, r: dict) -> str:
    rid = r["request_id"]
    seq = r["seqs"][0]
    snap = phase.snapshot
    outs = seq["len"] - seq["prompt_len"]
    size = f"{seq['prompt_len']}+{outs} tokens"
    if rid in snap["queues"]["pending"]:
        return f"{seq['prompt_len']} tokens, arrives in step {ctx.arrival[rid]}"
    if phase.kind == "free" and rid == phase.freed_request:
        return f"{size}, finished: freed"
    if seq["status"].startswith("finished"):
        if phase.kind == "run" and rid in phase.step.finished:
            return f"{size}, done after this step"
        return f"{size}, finished, freed next" if rid in phase.tables else f"finished, {size}"
    if seq["status"] == "preempted":
        return f"{size}, preempted"
    if seq["status"] == "waiting":
        return f"{size}, waiting"
    hit = ctx.origin[phase.index].get(rid, 0)
    return f"{size}, running" + (f", hit {hit * snap['block_size']}" if hit else "")


def cells_of(phase: pv.Phase, ctx: TourContext, r: dict, marks: pv.StepMarks) -> list[pv.Cell]:
    snap = phase.snapshot
    bs = snap["block_size"]
    rid = r["request_id"]
    seq = r["seqs"][0]
    ids = seq["token_ids"]
    hashes = r["block_hashes"]
    gpu = snap["gpu"]["blocks"]
    letters_fit = ctx.letters is not None and bs <= 5
    out = []
    if phase.kind == "free" and rid == phase.freed_request:
        where = dict(phase.released)
        table = [b for b, _ in reversed(phase.released)]
        for i, b in enumerate(table):
            out.append(pv.Cell(b, where[b], gpu[b]["hash"], "pending", True, phase.refs[b],
                               tip=f"{rid}'s block {i}: #{b}, ref_cnt now {phase.refs[b]}: "
                                   + {"head": "no hash, prepended at the head of the free queue",
                                      "tail": "hashed, appended at the tail of the free queue",
                                      "held": "still held by another request"}[where[b]],
                               tokens_fill="highlight"))
        return out
    table = phase.tables.get(rid, ())
    computed = seq["num_computed_tokens"] if table else 0
    hit = ctx.origin[phase.index].get(rid, 0) if table else 0
    waiting = not table
    look = pv.would_hit(r, snap) if waiting and ctx.values["enable_prefix_caching"] else []
    n_cells = len(table) if table else -(-seq["prompt_len"] // bs)
    for i in range(n_cells):
        chunk = ids[i * bs:(i + 1) * bs]
        if waiting:
            chunk = chunk[:max(0, seq["prompt_len"] - i * bs)]
        filled = len(chunk) if waiting else max(0, min(bs, computed - i * bs))
        if letters_fit:
            text = "".join(ctx.letters[t] for t in chunk[:filled]) + "\u00b7" * (bs - filled)
        else:
            text = f"{filled}/{bs}"
        b = table[i] if i < len(table) else None
        if b is not None:
            h = gpu[b]["hash"]
        else:
            h = hashes[i] if i < len(hashes) else None
        if b is None:
            origin = "pending"
        elif i < hit:
            origin = "hit"
        else:
            origin = "computed" if filled else "pending"
        changed = b is not None and (b in marks.allocated or b in marks.touched
                                     or b in marks.cached)
        covers = covered(ctx, ids[:(i + 1) * bs]) if h else ""
        parent = (f"#{table[i - 1]}'s hash" if b is not None and i else
                  "the seed" if not i else "the hash before")
        what = (f"hash {h} = hash of {parent} and these tokens, covering {covers}" if h else
                "no hash (not full)" if ctx.values["enable_prefix_caching"] else "no hash")
        if b is None:
            tip = (f"{rid}'s block {i}: tokens {toks(ctx, chunk)}; {what}; not allocated yet"
                   + (f"; a lookup now would find it in #{look[i]}" if i < len(look) else ""))
        else:
            tip = (f"{rid}'s block {i} -> #{b}, ref_cnt {phase.refs[b]}: {filled} of {bs} "
                   f"tokens computed ({toks(ctx, chunk[:filled]) or 'none'}); {what}; "
                   + ("read from the prefix cache (a hit)" if origin == "hit"
                      else "computed by this request"))
        out.append(pv.Cell(b, text, h, origin, changed, phase.refs[b] if b is not None else 0,
                           note=f"=#{look[i]}" if i < len(look) else "", tip=tip,
                           tokens_fill="muted" if b is None else "fg"))
    return out


def view(phase: pv.Phase, ctx: TourContext) -> svg.Figure:
    snap = phase.snapshot
    marks = pv.marks(phase)
    name = label(phase)
    body = [svg.text(X0, 20, name, size=pv.HEAD)]
    if ctx.docs and name in DOCS_TIME:
        body.append(svg.text(W - X0, 20, f"docs' time {DOCS_TIME[name]}", size=S,
                             anchor="end", fill="muted"))
    elif not ctx.values["enable_prefix_caching"]:
        body.append(svg.text(W - X0, 20, "prefix caching off", size=S, anchor="end",
                             fill="muted"))
    y = 30
    for r in snap["requests"]:
        rid = r["request_id"]
        body.append(svg.text(X0, y + S, rid, size=S, data_k=f"row:{rid}"))
        body.append(svg.text(X0 + fit.text_width(rid, S) + 8, y + S, status(phase, ctx, r),
                             size=S, fill="muted", data_k=f"row:{rid}/s"))
        y += pv.LINE + 2
        finished = r["seqs"][0]["status"].startswith("finished")
        if finished and rid not in phase.tables and not (
                phase.kind == "free" and rid == phase.freed_request):
            continue
        cells = cells_of(phase, ctx, r, marks)
        elements, h = pv.cell_rows(X0, y, cells, key=f"ent:{r['seqs'][0]['seq_id']}")
        body += elements
        y += h + 4
    y += 2
    elements, h = pv.pool_row(X0, y, phase, marks.entered)
    body += elements
    y += h + 2
    moves = []
    if phase.kind == "run":
        touched_out = [b for b in sorted(marks.touched) if phase.refs[b] == 1
                       and any(b in hit for hit in marks.hits.values())]
        new = [e.physical for e in phase.step.events if isinstance(e, BlockAllocated)]
        sampled = {e.seq_id for e in phase.step.events if isinstance(e, TokenSampled)}
        for rid, hit in marks.hits.items():
            seq = request(snap, rid)["seqs"][0]
            n = seq["len"] - (1 if seq["seq_id"] in sampled else 0)
            bs = snap["block_size"]
            capped = capped_block(phase, rid, hit, n)
            moves.append(f"{rid} hit {len(hit) * bs} of {n} tokens" + (
                f": block {capped} is cached but computed again, as the last token always is"
                if capped is not None else
                f"; at most {(n - 1) // bs * bs} could, as the last token is always computed"))
        if touched_out:
            moves.append(f"out by a hit: {blocks(touched_out)}")
        if new:
            moves.append(f"popped from the head: {blocks(new)}")
        if marks.evicted:
            moves.append("evicted: " + ", ".join(f"#{b} ({pv.short(h)})"
                                                 for b, h in marks.evicted))
    elif phase.kind == "free":
        head = [b for b, w in phase.released if w == "head"]
        tail = [b for b, w in phase.released if w == "tail"]
        if head:
            moves.append(f"to the head: {blocks(head)}")
        if tail:
            moves.append(f"to the tail: {blocks(tail)}")
    for line in moves:
        lines, lh = fit.paragraph(X0, y, line, size=S, room=W - 2 * X0,
                                  fill="highlight" if line.startswith("evicted") else "fg")
        body += lines
        y += lh
    if ctx.docs and name in DOCS_PICTURE:
        lines, lh = fit.paragraph(X0, y, DOCS_PICTURE[name], size=S, room=W - 2 * X0,
                                  fill="muted")
        body += lines
        y += lh
    y += 6
    elements, h = pv.legend(X0, y)
    body += elements
    y += h + 6
    return svg.Figure(W, y, body, f"Prefix caching, {name}: block tables with hashes, the "
                                   "free queue from head to tail")


def meta(phase: pv.Phase, ctx: TourContext) -> dict:
    """The state a test compares with VLLM-V1.md section 6."""
    return {"state": {"tables": {rid: [[b, phase.refs[b]] for b in t]
                                 for rid, t in phase.tables.items()},
                      "free": list(phase.free_order)}}
