"""Questions about the next step, written from traces (predict mode; issue 25).

A question kind is a generator `(step, next_step, ctx) -> Question | None` (see
pages/framework/question.py for the record): it reads the state `step` shows and what
`next_step` did, and asks what a reader who knows vLLM's rule would predict, with options
drawn from the state (the free list, the queues, the numbers a wrong rule would give).
Kinds two topics share live here, one module per area (kv: blocks; scheduling: admission
and preemption; prefix: V1's prefix cache and free queue; beams; spec; and the kinds of the
cost and kernel pages); `asker` makes a widget's `questions` from its kinds.

KINDS names every kind in words, for the Instructors page and for the check
(tests/pages/test_questions.py), which holds every question to the engine's events.
"""
from __future__ import annotations

KINDS: dict[str, str] = {
    "next-block": "which physical block a new block is (free list order)",
    "new-block": "whether a sequence's next token needs a new block, or a copy",
    "cow": "copy-on-write: which sequence writes a shared block in place",
    "blocks-freed": "which blocks go back to the free list",
    "preempt": "which request is preempted, and swapped or recomputed",
    "admit": "which waiting requests are admitted, or why none is",
    "prefix-hit": "how many prompt tokens hit the prefix cache (and why not the last one)",
    "free-queue": "where freed blocks go in V1's free queue (head or tail)",
    "evict-next": "which cached block is evicted next",
    "beam-survivors": "which beams survive the selection",
    "budget-share": "how many tokens of the step's budget a request gets (V1)",
    "step-plan": "what a step computes: prompts, decodes or both",
    "spec-accept": "how many tokens a step with draft tokens gains",
    "spec-rollback": "which draft slots are rolled back and written again",
    "batch-join": "who joins the batch: static batching against vLLM",
    "frag-reserve": "how many slots each allocation policy sets aside for a request",
    "kv-bytes": "how many bytes of KV cache a step writes",
    "kv-fit": "how many sequences fit in the KV cache at once",
    "kernel-max": "which maximum the kernel's softmax uses (padding masked)",
    "kernel-partial": "the kernel's output after the next block's values",
    "tp-partial": "what the tensor-parallel all-reduce gives every GPU",
    "roofline": "how long the next step takes, and what bounds it",
    "in-flight": "which requests a call schedules while a step is in flight (async)",
    "discard": "what becomes of a token in flight after its request stopped (async)",
    "window-skip": "which blocks a sliding-window group gives back as a request grows",
    "pd-remote": "what the decode GPU does with a request whose prompt the prefill GPU "
                 "computed, and how many blocks it takes",
    "pd-landed": "how many tokens the decode GPU computes for a request whose KV has landed",
    "pd-hold": "what happens to a finished prompt's blocks on the prefill GPU",
    "pd-ttft": "which configuration gives the first token soonest: colocated or "
               "disaggregated",
    "pd-gap": "which configuration has the shortest longest gap between two tokens",
    "cpu-load": "whether a request that comes back loads its KV from the CPU tier or "
                "recomputes it, and how many tokens",
}


class Asker:
    """A widget's `questions`: its kinds' generators in order of preference (the first
    question a step has goes on its frame); `kinds` lists them for the Instructors page."""

    def __init__(self, *kinds: tuple[str, object], step_name=None) -> None:
        for kind, _ in kinds:
            if kind not in KINDS:
                raise ValueError(f"unknown question kind {kind!r}")
        self.generators = kinds
        self.kinds = tuple(dict.fromkeys(kind for kind, _ in kinds))
        # The page's own name for an engine step ("call 3"), for the prompts.
        self.step_name = step_name

    def __call__(self, step, next_step, ctx) -> list:
        from pages.questions.state import Named

        if self.step_name is not None:
            ctx = Named(ctx, self.step_name)
        out = []
        for kind, generate in self.generators:
            q = generate(step, next_step, ctx)
            if q is not None:
                if q.kind != kind:
                    raise ValueError(f"a {kind} generator asked a {q.kind} question")
                remember(q, step, next_step)
                out.append(q)
        return out


def remember(q, before, step):
    """Note on a question which two steps (engine steps where an adapter unwrapped them) it
    is about, for the check; the first note wins."""
    q.about.setdefault("before", before)
    q.about.setdefault("step", step)
    return q


def via(attr: str, *kinds: tuple[str, object]) -> list[tuple[str, object]]:
    """Kinds that read engine steps, asked about frames that hold one as `attr` (the V1
    scheduler page's frames hold each engine's step as `v0` and `v1`)."""

    def adapt(generate):
        def on_attr(frame, nxt, ctx):
            a = getattr(frame, attr, None) if frame is not None else None
            b = getattr(nxt, attr, None)
            if a is None or b is None:
                return None
            q = generate(a, b, ctx)
            return remember(q, a, b) if q is not None else None
        return on_attr

    return [(kind, adapt(g)) for kind, g in kinds]
