"""V1's async scheduling (vLLM v0.25.1 `AsyncScheduler`, `EngineCore.step_with_batch_queue`):
which requests a call schedules while a step is still in flight, and what becomes of a token
in flight for a request that has already stopped.

A call schedules the next batch before the output of the one in flight comes back: each
running request is scheduled the token its step in flight is still sampling (a placeholder),
except one whose token in flight is its last (max_tokens), which would waste a step. An EOS
cannot be foreseen, so the step already scheduled after it samples a token that is thrown
away when its output comes back.
"""
from __future__ import annotations

from pages.framework.question import Question, ask
from pages.questions import code
from pages.questions.scheduling import Limits, plan
from pages.questions.state import in_flight, last_in_flight, name
from pages.views.text import join


def scheduled(limits):
    """Which requests does the next call schedule, while a step is in flight?"""

    def generate(step, nxt, ctx) -> Question | None:
        if step is None or step.step is None or nxt.step is None or nxt.error:
            return None
        snap = step.snapshot
        flying = [r["request_id"] for r in snap["requests"]
                  if r["request_id"] in snap["queues"]["running"] and in_flight(r)]
        if not flying:
            return None
        lim: Limits = limits(ctx.values)
        planned = plan(step, nxt, lim)
        if planned is None:
            return None
        correct = tuple(sorted(planned))
        running = tuple(sorted(snap["queues"]["running"]))
        last = [r["request_id"] for r in snap["requests"]
                if r["request_id"] in running and last_in_flight(r, r["seqs"][0])]
        waiting = tuple(sorted(snap["queues"]["waiting"]))
        sampling = tuple(sorted(r["request_id"] for r in snap["requests"] if in_flight(r)))
        candidates = [running, (), sampling, tuple(sorted(set(running) | set(waiting))),
                      tuple(sorted(set(correct) - set(flying[:1])))]
        prompt = (f"In {name(nxt, ctx)}, the step in flight is still sampling a token for "
                  f"{join(flying)}. Which requests does this call schedule?")
        parts = ["With async scheduling the call does not wait for the output in flight: it "
                 "schedules each running request the token its step in flight is sampling "
                 "(a placeholder: the worker takes the value from the GPU)"]
        if last:
            parts.append(f"{join(last)} {'is' if len(last) == 1 else 'are'} left out: the "
                         "token in flight is the last one max_tokens allows, so another step "
                         "would be wasted")
        if waiting:
            parts.append("waiting requests come after, while the budget and the blocks last")
        parts.append(f"so it schedules {join(list(correct)) if correct else 'nobody'}")
        return ask("in-flight", prompt, correct, candidates, _names, "; ".join(parts) + ".",
                   code.ASYNC_SCHEDULE, {}, order="mixed")

    return generate


def _names(value: tuple) -> str:
    return "Nobody" if not value else join(list(value))


def discarded(step, nxt, ctx) -> Question | None:
    """A request stopped on EOS while its next step was already in flight: what becomes of
    the token that step sampled for it?"""
    if step is None or step.step is None or nxt.step is None:
        return None
    snap = step.snapshot
    queue = snap.get("batch_queue") or []
    if not queue:
        return None
    oldest = queue[0]
    for r in snap["requests"]:
        rid = r["request_id"]
        status = r["seqs"][0]["status"]
        if status == "finished_stopped" and in_flight(r) and rid in oldest.get("samples", ()):
            prompt = (f"{rid} stopped on its end-of-sequence token, but step "
                      f"{oldest['step']}, scheduled before the engine knew, is still "
                      f"sampling a token for it. When that output comes back in "
                      f"{name(nxt, ctx)}, what happens to {rid}'s token?")
            texts = {"discard": "It is thrown away: the request has finished",
                     "append": f"It is appended after the EOS as {rid}'s last output",
                     "resume": f"{rid} starts running again with it"}
            explanation = ("No scheduler can foresee an EOS, so with async scheduling the step "
                           f"after it was already scheduled for {rid}, and its token is "
                           "sampled anyway. When that output comes back, the request has "
                           "stopped: the token is discarded (TokenDiscarded here), a step of "
                           "work wasted; a stop at max_tokens wastes nothing, since the "
                           "scheduler sees it coming.")
            return ask("discard", prompt, "discard", ["append", "resume"], texts.__getitem__,
                       explanation, code.ASYNC_OUTPUT, {"request_id": rid},
                       order=("discard", "append", "resume"))
    return None

