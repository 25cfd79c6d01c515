"""The prefill vs decode page's roofline: how long the next step takes, and whether the
FLOPs or the bytes set it. time = max(FLOPs / peak FLOP/s, bytes / bandwidth) (sim.perf.cost,
the roofline model; vLLM batches decodes, up to max_num_seqs, to share each read of the
weights)."""
from __future__ import annotations

from pages.framework.question import Question, ask
from pages.questions import code


def _ms(s: float) -> float:
    return round(s * 1000, 2)


def _words(value) -> str:
    ms, bound = value
    return f"{ms:.2f} ms, {bound}-bound"


def step_time(roofline_of, flop_text, byte_text):
    def generate(step, nxt, ctx) -> Question | None:
        if step is None or nxt.kind == "prefill":
            return None
        roof = roofline_of(ctx.values["gpu"])
        c = nxt.cost
        compute, memory = c.flops / roof.peak_flops, c.bytes / roof.memory_bandwidth
        bound = "compute" if compute >= memory else "memory"
        other = "memory" if bound == "compute" else "compute"
        correct = (_ms(max(compute, memory)), bound)
        prev = step.time.predicted_s
        candidates = [(_ms(max(compute, memory)), other), (_ms(prev * nxt.batch / step.batch),
                                                          bound),
                      (_ms(min(compute, memory)), other), (_ms(compute + memory), bound)]
        prompt = (f"Next: a decode step for a batch of {nxt.batch:,} at a context of "
                  f"{nxt.context:,} tokens: {flop_text(c.flops)} and {byte_text(c.bytes)} "
                  f"moved, on a GPU that does {flop_text(roof.peak_flops)}/s and moves "
                  f"{byte_text(roof.memory_bandwidth)}/s. How long does the step take, and "
                  "what sets it?")
        explanation = (f"A step takes as long as the slower of its two demands: the FLOPs at "
                       f"the peak rate ({compute * 1000:.2f} ms) and the bytes at the "
                       f"bandwidth ({memory * 1000:.2f} ms), so {correct[0]:.2f} ms, "
                       f"{bound}-bound. Batching more decodes adds FLOPs but reads the "
                       "weights once for all of them, so the time does not grow with the "
                       "batch until the FLOPs catch up.")
        return ask("roofline", prompt, correct, candidates, _words, explanation,
                   code.MAX_NUM_SEQS, {}, order="mixed")

    return generate
