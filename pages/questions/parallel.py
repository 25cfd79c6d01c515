"""Tensor parallelism (vLLM v0.5.5's Megatron-style layers): what the all-reduce hands every
GPU after the row-parallel projections (o_proj after attention, down_proj after the MLP).
Each GPU's partial output is stated; the rule is the sum (RowParallelLinear.forward calls
tensor_model_parallel_all_reduce), the same on every GPU."""
from __future__ import annotations

from pages.framework.question import Question, ask
from pages.questions import code
from pages.views.vectors import vec


def _round(v) -> tuple[float, ...]:
    return tuple(round(x, 2) + 0.0 for x in v)


def all_reduce(step, nxt, ctx) -> Question | None:
    """Next comes the attention (or MLP) phase: given each GPU's partial output for the first
    request's newest token, what does every GPU hold after the all-reduce?"""
    if step is None or nxt[0] not in ("attention", "mlp") or nxt[1] is None:
        return None
    phase, st = nxt
    if not st.results:
        return None
    res = st.results[0]
    parts = [a.partial for a in (res.sharded.attention if phase == "attention"
                                 else res.sharded.mlp)]
    tp = len(parts)
    if tp < 2:
        return None
    size = len(parts[0])
    total = [sum(p[d] for p in parts) for d in range(size)]
    correct = _round(total)
    candidates = [_round([x / tp for x in total]), _round(parts[0]), _round(parts[-1]),
                  _round([max(p[d] for p in parts) for d in range(size)])]
    proj = "o_proj" if phase == "attention" else "down_proj"
    listed = "; ".join(f"GPU {r}: {vec(p)}" for r, p in enumerate(parts))
    prompt = (f"{res.request_id}'s token at position {res.position}: each GPU multiplies its "
              f"own heads' output by its rows of {proj}, giving a partial vector ({listed}). "
              "What does every GPU hold after the all-reduce?")
    explanation = (f"{proj} is row-parallel: each GPU holds the rows that match its share of "
                   "the input, so its product is one term of the full sum, and the all-reduce "
                   f"adds the {tp} terms and gives every GPU the total, {vec(correct)}: the "
                   "one-GPU result, not an average.")
    return ask("tp-partial", prompt, correct, _apart(candidates, correct), vec, explanation,
               code.ROW_PARALLEL,
               {"phase": phase}, order="mixed")


def _apart(candidates, correct, gap: float = 0.025) -> list:
    """Vectors that differ from the correct one by more than rounding could: an option
    that rounds to nearly the same numbers would be a second right answer."""
    return [c for c in candidates if c is not None
            and max(abs(a - b) for a, b in zip(c, correct)) > gap]

