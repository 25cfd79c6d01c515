"""Continuous batching against static batching (the continuous-batching page): which waiting
requests join the batch in the next iteration, under each.

Static batching forms a batch from the front of the queue only when every member of the
last one has finished (sim/studies/static_batching.py); vLLM admits waiting requests at any
iteration, as soon as seats, budget and blocks allow (pages/questions/scheduling.py). The
page's frames hold one iteration of each run; the runs' recorded engine steps are in
`ctx.trace.meta`.
"""
from __future__ import annotations

from pages.framework.question import Question, ask
from pages.questions import code
from pages.questions.scheduling import Limits, _arrivals, waiting_pass
from pages.views.text import join


def _steps(ctx, key: str, frame, nxt):
    run = ctx.trace.meta[key]
    trace = run.trace
    i = nxt.index + 1                      # trace step 0 is before iteration 0
    if frame is None or i >= len(trace) or getattr(nxt, key) is None:
        return None
    return trace[i - 1], trace[i]


def _static_joins(before, nxt, seats: int, budget: int) -> tuple[str, ...]:
    snap = before.snapshot
    if snap["queues"]["running"]:
        return ()
    out, tokens = [], 0
    for rid in list(snap["queues"]["waiting"]) + _arrivals(before, nxt):
        n = next(r for r in snap["requests"] if r["request_id"] == rid)["seqs"][0]["len"]
        if len(out) + 1 > seats or tokens + n > budget:
            break
        out.append(rid)
        tokens += n
    return tuple(out)


def batch_join(limits):
    """Which waiting requests join the batch in the next iteration, under static batching
    and under vLLM's iteration-level scheduler?"""

    def generate(frame, nxt, ctx) -> Question | None:
        s = _steps(ctx, "static", frame, nxt)
        m = _steps(ctx, "vllm", frame, nxt)
        if s is None or m is None:
            return None
        lim: Limits = limits(ctx.values)
        queue = list(m[0].snapshot["queues"]["waiting"]) + _arrivals(*m)
        squeue = list(s[0].snapshot["queues"]["waiting"]) + _arrivals(*s)
        if not queue and not squeue:
            return None
        running = s[0].snapshot["queues"]["running"]
        if not queue and running:
            return None      # nobody waits for vLLM and the static batch goes on: no news
        w = waiting_pass(m[0], m[1], lim)
        if w is None:
            return None
        static = _static_joins(s[0], s[1], lim.seats(False), lim.budget(False))
        vllm = w.admitted
        correct = (static, vllm)
        everyone = tuple(dict.fromkeys(squeue + queue))
        candidates = [(vllm, vllm), ((), ()), (static, static), ((), everyone),
                      (everyone, everyone), (vllm, ())]
        if queue == squeue:
            waits = (f"{join(queue)} {'waits' if len(queue) == 1 else 'wait'} for a seat in "
                     "both schedulers")
        else:
            waits = "; ".join(f"{side}, {join(q) if q else 'nobody'} "
                              f"{'waits' if len(q) <= 1 else 'wait'}"
                              for side, q in (("under static batching", squeue),
                                              ("under vLLM", queue)))
        prompt = (f"In iteration {nxt.index}, {waits}. Who joins the batch under static "
                  "batching, and who under vLLM?")
        static_why = (f"static batching lets nobody in while its batch ({join(running)}) is "
                      "still running" if running else
                      "the static batch has ended, so a new one forms from the front of the "
                      "queue")
        vllm_why = ("vLLM admits waiting requests at every iteration, in order, while seats, "
                    "budget and blocks last" + (f" (then {w.stop})" if w.stop and vllm else
                                                f": here {w.stop}" if w.stop else ""))
        explanation = f"{static_why[0].upper()}{static_why[1:]}; {vllm_why}."
        return ask("batch-join", prompt, correct, candidates, _join_words, explanation,
                   code.SCHEDULE_PREFILLS if not m[0].snapshot.get("engine") else
                   code.V1_SCHEDULE, {"runs": {"static": s, "vllm": m}}, order="mixed")

    return generate


def _join_words(value: tuple) -> str:
    static, vllm = value
    return (f"Static: {join(list(static)) if static else 'nobody'}; "
            f"vLLM: {join(list(vllm)) if vllm else 'nobody'}")
