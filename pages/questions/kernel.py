"""The PagedAttention kernel, step by step (csrc/attention/attention_kernels.cu, v0.5.5):
which maximum the softmax subtracts (padded slots are masked out) and what the output is
after the next block's values are added."""
from __future__ import annotations

from pages.framework.question import Question, ask
from pages.questions import code
from pages.views.text import f2
from sim.perf.attention import gather_kv


def _vector(v) -> str:
    return "[" + ", ".join(f2(x) for x in v) + "]"


def softmax_max(step, nxt, ctx) -> Question | None:
    """All scores of a head (or partition) are in: which maximum does the softmax use?"""
    if step is None or nxt.kind != "softmax" or step.head is None:
        return None
    rec = nxt.record
    scores = {p: s for p, s in step.head.scores.items() if p in set(rec.positions)}
    if not scores:
        return None
    correct = max(scores.values())
    padded = [x for r in _blocks_of(ctx, rec) for x in r.padded_qk if x is not None]
    candidates = [max(padded + [correct]) if padded else None, max(0.0, correct),
                  min(scores.values()), sum(scores.values()) / len(scores)]
    where = (f"partition {rec.partition}" if rec.partition is not None else "the sequence")
    prompt = (f"Every score of head {rec.head} in {where} is in"
              + (f", and the last block also scored {len(padded)} stale slots past the "
                 "length" if padded else "")
              + ". Which maximum m does the softmax subtract from each score?")
    explanation = ("The kernel takes m over the positions before the length only: a padded "
                   "slot's logit is stored as 0 and left out of the max (qk_max = mask ? "
                   "qk_max : fmaxf(qk_max, qk)), then each weight is exp(score - m) / l. "
                   f"So m = {f2(correct)}, the largest real score" +
                   (", not a stale one." if padded else "."))
    return ask("kernel-max", prompt, _round(correct), [_round(c) for c in candidates
                                                        if c is not None],
               f2, explanation, code.KERNEL, {}, order="value")


def _round(x: float) -> float:
    return round(x, 2) + 0.0


def _blocks_of(ctx, rec):
    """The score records of this head and partition so far (the walk up to the softmax)."""
    out = []
    for s in ctx.trace:
        r = s.record
        if r is rec:
            break
        if getattr(r, "kind", "") == "block_scores" and r.head == rec.head \
                and r.partition == rec.partition:
            out.append(r)
    return out


def value_block(step, nxt, ctx) -> Question | None:
    """The second walk adds a block's values, weighted: what is the running output after?"""
    if step is None or nxt.kind != "value_accumulated" or step.head is None:
        return None
    rec = nxt.record
    inputs = ctx.trace.inputs
    _, values = gather_kv(inputs.key_cache, inputs.value_cache, inputs.block_table,
                          inputs.seq_len, inputs.block_size)
    kv = inputs.kv_head(rec.head)
    weights = {p: step.head.weights.get(p, 0.0) for p in rec.positions
               if p < inputs.seq_len}
    size = len(values[0][kv])
    prev = list(step.head.output) if step.head.output is not None and \
        step.kind == "value_accumulated" and step.record.partition == rec.partition \
        else [0.0] * size
    add = [sum(w * values[p][kv][d] for p, w in weights.items()) for d in range(size)]
    unweighted = [sum(values[p][kv][d] for p in weights) for d in range(size)]
    correct = tuple(_round(a + b) for a, b in zip(prev, add))
    candidates = [tuple(_round(x) for x in add) if any(prev) else None,
                  tuple(_round(x) for x in prev),
                  tuple(_round(a + b) for a, b in zip(prev, unweighted)),
                  tuple(_round(a - b) for a, b in zip(prev, add))]
    rows = "; ".join(f"v{p} = {_vector(values[p][kv])} x {f2(w)}" for p, w in weights.items())
    prompt = (f"The second walk reaches logical block {rec.logical_block} (physical "
              f"{rec.physical_block}) for head {rec.head}: {rows}. The output is "
              f"{_vector(prev)} before it. What is it after this block?")
    explanation = ("Each block's values are multiplied by their softmax weights and added to "
                   "the running output (the weights already sum to 1 over the sequence, so "
                   f"nothing is divided afterwards): {_vector(prev)} + {_vector(add)} = "
                   f"{_vector(correct)}." + (" Padded slots past the length are loaded and "
                                              "zeroed, so they add nothing." if rec.zeroed
                                              else ""))
    return ask("kernel-partial", prompt, correct, _apart(candidates, correct), _vector,
               explanation,
               code.KERNEL, {}, order="mixed")


def _apart(candidates, correct, gap: float = 0.025) -> list:
    """Vectors that differ from the correct one by more than rounding could: an option
    that rounds to nearly the same numbers would be a second right answer."""
    return [c for c in candidates if c is not None
            and max(abs(a - b) for a, b in zip(c, correct)) > gap]

