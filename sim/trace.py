"""A trace: what an engine did, step by step, in the one shape every page draws from.

    sim (an engine's step())  ->  trace (a list of Steps)  ->  view and narration  ->  player

A `Step` holds the engine's public snapshot after the step, the step's events (in the order
they happened) and the scheduler's outputs; `record` runs any engine that has `step()`,
`snapshot()` and `has_unfinished_requests()` (vLLM v0.5.5's `sim.core.engine.LLMEngine`,
V1's `sim.v1.engine.LLMEngine`) and returns the whole `Trace`. Pages read the simulation only
through these records, never through live objects, so the same views draw either engine.

One Step is one call of the engine's step function. With V1's async loop (vLLM's default,
sim/v1/engine.py) a call schedules one batch and processes the output of an earlier one:
`outputs` and `scheduled` are the batch scheduled in the call, `processed` the engine step
whose batch's output the call processed (the call itself for a synchronous engine, None
when nothing was processed), and `finished` and the TokenSampled/TokenDiscarded events
come from that output.

Step 0 is the state before the first engine step. When vLLM would stop (an abort or an
assertion, `sim.errors.EngineStopped`), the trace ends with a Step whose `error` says why,
whose events are those of the unfinished step (the preemption that failed, say) and whose
snapshot is the state before it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sim.errors import EngineStopped


@dataclass(frozen=True, slots=True)
class Scheduled:
    """One request the scheduler ran in a step, engine-neutral."""
    request_id: str
    num_tokens: int      # tokens computed for it this step (a chunk, a prompt, or decodes)
    prefill: bool        # it computed prompt (or recomputed) tokens, not only decodes
    num_seqs: int = 1    # its sequences after the step (v0.5.5 forks samples and beams)


@dataclass(frozen=True, slots=True)
class Step:
    index: int                        # position in the trace; 0 is before the first step
    step: int | None                  # the engine's step number (None before the first)
    snapshot: dict                    # engine.snapshot() after the step
    events: tuple = ()                # what happened, in order
    outputs: Any = None               # the scheduler's outputs (engine-specific record)
    scheduled: tuple[Scheduled, ...] = ()
    finished: tuple[str, ...] = ()    # requests that finished in this step
    problems: tuple[str, ...] = ()    # invariants broken after the step (with `check`)
    error: str | None = None          # vLLM stops in this step; the snapshot is from before
    # The engine step whose output this step processed (= `step` for a synchronous loop;
    # an earlier one, or None, in V1's async loop).
    processed: int | None = None

    @property
    def kind(self) -> str:
        """"prefill" when any request computed prompt tokens, "decode" when some ran and
        none did, "idle" when nothing ran (and "before" for step 0)."""
        if self.step is None:
            return "before"
        if any(s.prefill for s in self.scheduled):
            return "prefill"
        return "decode" if self.scheduled else "idle"

    def of_type(self, *kinds: type) -> list:
        """This step's events of the given record types, in order."""
        return [e for e in self.events if isinstance(e, kinds)]


@dataclass(frozen=True, slots=True)
class Trace:
    steps: tuple[Step, ...]
    stopped: str | None = None        # "max_steps" when cut short, "error" when vLLM stopped
    meta: dict = field(default_factory=dict)   # what the scenario wants its views to know

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i):
        return self.steps[i]

    @property
    def last(self) -> Step:
        return self.steps[-1]

    def previous(self, step: Step) -> Step | None:
        return self.steps[step.index - 1] if step.index else None


def record(engine, max_steps: int | None = None,
           check: Callable[[Any], list[str]] | None = None,
           with_slots: bool = True, meta: dict | None = None) -> Trace:
    """Step `engine` until every request has finished (or `max_steps` engine steps), keeping
    a Step before the first step and after each one. `check(engine)` (an invariant checker
    such as `sim.core.invariants.check_engine`) runs after every step; what it finds is kept
    in `Step.problems`."""
    problems = tuple(check(engine)) if check else ()
    steps = [Step(0, None, engine.snapshot(with_slots), problems=problems)]
    stopped = None
    while engine.has_unfinished_requests():
        if max_steps is not None and len(steps) > max_steps:
            stopped = "max_steps"
            break
        try:
            out = engine.step()
        except EngineStopped as err:
            steps.append(Step(len(steps), engine.step_index, steps[-1].snapshot,
                              tuple(engine.take_events()), error=str(err)))
            stopped = "error"
            break
        problems = tuple(check(engine)) if check else ()
        steps.append(Step(len(steps), out.step, engine.snapshot(with_slots), tuple(out.events),
                          out.scheduler_outputs, out.scheduled(), tuple(out.finished),
                          problems, processed=getattr(out, "processed_step", out.step)))
    return Trace(tuple(steps), stopped, dict(meta or {}))
