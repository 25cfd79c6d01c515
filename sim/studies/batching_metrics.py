"""Static vs continuous batching, measured in iterations.

One recorded engine run (`sim.trace.record`: v0.5.5's `LLMEngine` with vLLM's scheduler or
`scheduler=StaticBatchScheduler`, or V1's `sim.v1.engine.LLMEngine`) becomes a
*slot timeline*: for every iteration, who sits in each of the `max_num_seqs` batch slots and
what that slot did. The totals the continuous-batching page shows come from it:

- iterations until the queue drains (every request finished);
- latency of a request in iterations: from the iteration it arrived in to the one that
  produced its last token, both counted (`finished_step - arrival_step + 1`);
- mean and 90th-percentile latency (nearest rank: the smallest latency that at least 90% of
  the finished requests do not exceed);
- slot utilisation: slot-iterations that computed something (a prefill or a decode) over
  `max_num_seqs x iterations`.

A slot is our bookkeeping, not vLLM's: vLLM's batch is a list whose length `max_num_seqs`
bounds. A request takes the lowest free slot when it enters the batch and keeps it until it
leaves (finishes, or is preempted); under static batching a finished request's slot stays
taken, as padding, until the whole batch has finished.

Cell kinds:
  prefill  - the slot's request computed its prompt (or a chunk of it) this iteration;
  decode   - it computed one new token;
  paused   - it is in the batch but did not run: vLLM v0.5.5 runs prefill-only steps, so
             the running requests skip their decode in a step that admits prompts (in V1,
             which serves running requests first, only when the token budget ran out);
  padding  - static batching only: it finished, but its slot is held until the batch ends.

Pure stdlib and deterministic: no clock, no hash(); workloads come from `random.Random(seed)`.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.core.sequence import SamplingParams
from sim.events import Preempted
from sim.studies.scenarios import SCHEDULERS
from sim.studies.static_batching import StaticBatchScheduler
from sim.trace import Trace
from sim.trace import record as trace_record
from sim.v1 import config as v1_config
from sim.v1.engine import LLMEngine as V1Engine

PREFILL, DECODE, PAUSED, PADDING = "prefill", "decode", "paused", "padding"
BUSY = (PREFILL, DECODE)
SCHEDULER_NAMES = ("static", "vllm", "v1")
ENGINES = ("v0.5.5", "v1")      # the engine whose scheduler runs the iteration-level side


@dataclass(frozen=True, slots=True)
class Cell:
    request_id: str
    kind: str            # PREFILL, DECODE, PAUSED or PADDING
    tokens: int = 0      # tokens computed in this slot this iteration


@dataclass(frozen=True, slots=True)
class Seating:
    """A request entered the batch in `slot`; `after` is the finished request that held
    the slot before (a refill), or None when the slot was empty."""
    request_id: str
    slot: int
    after: str | None


@dataclass(frozen=True, slots=True)
class Iteration:
    step: int
    slots: tuple[Cell | None, ...]       # one per batch slot
    waiting: tuple[str, ...]             # arrived but not in the batch, after scheduling
    seated: tuple[Seating, ...]          # who entered the batch this iteration
    finished: tuple[str, ...]            # who produced its last token this iteration
    preempted: tuple[str, ...]
    num_batched_tokens: int
    is_prefill_only: bool                # prompts ran and no decode did


@dataclass(frozen=True, slots=True)
class Totals:
    iterations: int                      # iterations counted (so far, or in all)
    finished: int
    requests: int
    drained_at: int | None               # iterations until every request finished
    mean_latency: float | None
    p90_latency: int | None
    busy_slot_iterations: int
    utilisation: float                   # busy / (slots x iterations)


@dataclass(frozen=True, slots=True)
class Run:
    scheduler: str
    max_num_seqs: int
    iterations: tuple[Iteration, ...]
    arrival: dict                        # request id -> arrival step
    finished_step: dict                  # request id -> step of its last token
    # The recorded run the timeline was read from (sim.trace.Trace): its snapshots are the
    # engine's own (a V1 run's say "engine": "v1").
    trace: Trace | None = field(default=None, compare=False, repr=False)

    def totals(self, upto: int | None = None) -> Totals:
        """Totals over iterations [0, upto) (all iterations when `upto` is None)."""
        its = self.iterations if upto is None else self.iterations[:upto]
        n = len(its)
        done = sorted(self.finished_step[r] - self.arrival[r] + 1
                      for r, step in self.finished_step.items() if step < n)
        busy = sum(1 for it in its for c in it.slots if c is not None and c.kind in BUSY)
        drained = (max(self.finished_step.values()) + 1
                   if len(done) == len(self.arrival) and done else None)
        return Totals(
            iterations=n, finished=len(done), requests=len(self.arrival), drained_at=drained,
            mean_latency=sum(done) / len(done) if done else None,
            p90_latency=percentile(done, 90) if done else None,
            busy_slot_iterations=busy,
            utilisation=busy / (self.max_num_seqs * n) if n else 0.0)

    def refills(self) -> list[tuple[int, Seating]]:
        """(step, seating) for every seat taken over from a finished request."""
        return [(it.step, s) for it in self.iterations for s in it.seated if s.after]


def percentile(sorted_values: list, pct: int):
    """Nearest-rank percentile of an ascending list (integer arithmetic, no rounding)."""
    if not sorted_values:
        raise ValueError("percentile of an empty list")
    rank = max(1, -(-pct * len(sorted_values) // 100))
    return sorted_values[rank - 1]


def record(engine, max_steps: int = 1000) -> Run:
    """Step `engine` until every request has finished (or `max_steps`) and build the slot
    timeline (`from_trace` of `sim.trace.record`'s trace). The engine (vLLM v0.5.5's, with
    its own or the static scheduler, or V1's) must have its requests added and not have
    stepped yet."""
    if isinstance(engine, V1Engine):
        scheduler = "v1"
    elif isinstance(engine.scheduler, StaticBatchScheduler):
        scheduler = "static"
    else:
        scheduler = "vllm"
    trace = trace_record(engine, max_steps=max_steps, with_slots=False)
    return from_trace(trace, engine.scheduler_config.max_num_seqs, scheduler)


def from_trace(trace: Trace, max_num_seqs: int, scheduler: str = "vllm") -> Run:
    """The slot timeline of a recorded run: each step's engine-neutral `Step.scheduled` (who
    ran, how many tokens, prompt or decode), `Step.finished`, its Preempted events, and the
    snapshot's queues after the step. `scheduler` is "static" (finished members of a batch
    keep their slots, as padding, until the batch ends), "vllm" (v0.5.5) or "v1"."""
    if scheduler not in SCHEDULER_NAMES:
        raise ValueError(f"scheduler must be one of {SCHEDULER_NAMES}, got {scheduler!r}")
    if trace.stopped == "error":
        raise ValueError(f"the engine stopped: {trace.last.error}")
    static = scheduler == "static"
    slots_n = max_num_seqs
    seat: dict[str, int] = {}                 # request id -> slot
    holder: list[str | None] = [None] * slots_n
    last: list[str | None] = [None] * slots_n     # who held the slot most recently
    left_finished: set[str] = set()
    batch: list[str] = []                     # static: the members of the current batch
    iterations = []
    finished_step: dict[str, int] = {}
    for step in trace.steps[1:]:
        queues = step.snapshot["queues"]
        ran: dict[str, tuple[str, int]] = {
            s.request_id: (PREFILL if s.prefill else DECODE, s.num_tokens)
            for s in step.scheduled}
        prefill = any(kind == PREFILL for kind, _ in ran.values())
        members = list(ran)
        members += [r for r in queues["running"] if r not in ran]
        if static:
            # A static batch forms in a prefill step and keeps its finished members
            # (padding) while it decodes.
            if prefill:
                batch = list(ran)
            elif ran:
                members += [r for r in batch if r not in ran and r not in members]
            else:
                batch = []
        member_set = set(members)
        for slot, rid in enumerate(holder):
            if rid is not None and rid not in member_set:
                holder[slot] = None
                del seat[rid]
        seated = []
        for rid in members:
            if rid in seat:
                continue
            slot = holder.index(None)
            before = last[slot]
            seated.append(Seating(rid, slot, before if before in left_finished else None))
            holder[slot] = last[slot] = rid
            seat[rid] = slot
        cells: list[Cell | None] = [None] * slots_n
        for rid, slot in seat.items():
            if rid in ran:
                kind, tokens = ran[rid]
                cells[slot] = Cell(rid, kind, tokens)
            elif rid in finished_step:
                cells[slot] = Cell(rid, PADDING)
            else:
                cells[slot] = Cell(rid, PAUSED)
        for rid in step.finished:
            finished_step[rid] = step.step
            left_finished.add(rid)
        waiting = tuple(queues["waiting"]) + tuple(queues["swapped"])
        preempted = tuple(e.request_id for e in step.events if isinstance(e, Preempted))
        iterations.append(Iteration(
            step=step.step, slots=tuple(cells), waiting=waiting, seated=tuple(seated),
            finished=tuple(step.finished), preempted=preempted,
            num_batched_tokens=sum(s.num_tokens * s.num_seqs if not s.prefill else s.num_tokens
                                   for s in step.scheduled),
            is_prefill_only=prefill and all(k == PREFILL for k, _ in ran.values())))
    requests = trace.steps[0].snapshot["requests"]
    arrival = {r["request_id"]: r["arrival_step"] for r in requests}
    return Run(scheduler, slots_n, tuple(iterations), arrival, finished_step, trace)


# -- workloads ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BatchRequest:
    request_id: str
    prompt_len: int
    output_len: int
    arrival_step: int


def uniform_workload(count: int, prompt_range: tuple[int, int],
                     output_range: tuple[int, int], arrival_rate: float,
                     seed: int) -> list[BatchRequest]:
    """`count` requests named A, B, C, ... with lengths uniform in the (inclusive) ranges.
    Arrivals: all at step 0 when `arrival_rate` is 0, otherwise a Poisson process with that
    many requests per step (a request arriving at time t joins at step floor(t)).

    Every number comes from `random.Random(seed).random()` through our own formulas, so the
    workload is the same in every Python (lengths first, then arrivals)."""
    if not 1 <= count <= 26:
        raise ValueError(f"count must be from 1 to 26, got {count}")
    for name, (lo, hi) in (("prompt_range", prompt_range), ("output_range", output_range)):
        if not 1 <= lo <= hi:
            raise ValueError(f"{name} must be 1 <= low <= high, got {lo}-{hi}")
    if not arrival_rate >= 0 or math.isinf(arrival_rate):
        raise ValueError(f"arrival_rate must be 0 or a positive number, got {arrival_rate}")
    rng = random.Random(seed)

    def uniform(lo: int, hi: int) -> int:
        return lo + min(hi - lo, int(rng.random() * (hi - lo + 1)))

    lengths = [(uniform(*prompt_range), uniform(*output_range)) for _ in range(count)]
    t = 0.0
    steps = []
    for _ in range(count):
        if arrival_rate:
            t += -math.log(1.0 - rng.random()) / arrival_rate
        steps.append(math.floor(t))
    # The first request opens the run: shift so it arrives at step 0.
    steps = [s - steps[0] for s in steps]
    return [BatchRequest(chr(ord("A") + i), p, o, a)
            for i, ((p, o), a) in enumerate(zip(lengths, steps))]


def make_engine(requests: list[BatchRequest], scheduler: str, max_num_seqs: int,
                max_num_batched_tokens: int, chunked_prefill: bool = False,
                seed: int = 0) -> LLMEngine:
    """An engine with room for every request at once (memory never limits the batch here:
    the comparison is about scheduling), `max_model_len` = the longest request. Each request
    gets one block more than it fills, because `can_append_slots` wants a free block per
    running sequence even when the last block has room."""
    block_size = 16
    blocks = sum(-(-(r.prompt_len + r.output_len) // block_size) + 1 for r in requests)
    longest = max(r.prompt_len + r.output_len for r in requests)
    engine = LLMEngine(
        CacheConfig(block_size=block_size, num_gpu_blocks=max(1, blocks), num_cpu_blocks=0,
                    watermark=0.0),
        SchedulerConfig(max_num_batched_tokens=max_num_batched_tokens,
                        max_num_seqs=max_num_seqs, max_model_len=longest,
                        enable_chunked_prefill=chunked_prefill),
        seed=seed, scheduler=SCHEDULERS[scheduler])
    for r in requests:
        # ignore_eos: each request generates exactly output_len tokens, as in benchmarks.
        engine.add_request(r.request_id, r.prompt_len,
                           SamplingParams(max_tokens=r.output_len, ignore_eos=True),
                           arrival_step=r.arrival_step)
    return engine


def make_v1_engine(requests: list[BatchRequest], max_num_seqs: int,
                   max_num_batched_tokens: int, seed: int = 0,
                   async_scheduling: bool | None = False) -> V1Engine:
    """V1's engine (vLLM v0.25.1) on the same workload, with the same room: as many usable
    blocks of 16 as `make_engine` gives, plus block 0, V1's null block. The same
    `max_num_seqs` and token budget (`max_num_batched_tokens`; V1 schedules up to that many
    tokens per step), `max_model_len` = the longest request. Chunked prefill is always on
    in V1 (its default); prefix caching too (the made-up prompts share no block).

    The engine loop is the synchronous one unless `async_scheduling` says otherwise
    (None: vLLM's default, async): these metrics count iterations of one schedule and its
    output, as the static and v0.5.5 sides do. In vLLM's default async loop a call
    schedules before it has processed the previous output, so a finished request's seat is
    refilled one call later."""
    block_size = 16
    blocks = sum(-(-(r.prompt_len + r.output_len) // block_size) + 1 for r in requests)
    longest = max(r.prompt_len + r.output_len for r in requests)
    engine = V1Engine(
        v1_config.CacheConfig(block_size=block_size, num_gpu_blocks=max(1, blocks) + 1),
        v1_config.SchedulerConfig(max_num_batched_tokens=max_num_batched_tokens,
                                  max_num_seqs=max_num_seqs, max_model_len=longest,
                                  async_scheduling=async_scheduling),
        seed=seed)
    for r in requests:
        engine.add_request(r.request_id, r.prompt_len,
                           SamplingParams(max_tokens=r.output_len, ignore_eos=True),
                           arrival_step=r.arrival_step)
    return engine


def compare(requests: list[BatchRequest], max_num_seqs: int, max_num_batched_tokens: int,
            chunked_prefill: bool = False, seed: int = 0,
            max_steps: int = 1000, engine: str = "v0.5.5") -> tuple[Run, Run]:
    """(static run, iteration-level run) of the same workload. The iteration-level side is
    vLLM v0.5.5's scheduler (`engine="v0.5.5"`) or V1's (`engine="v1"`). Chunked prefill
    applies to v0.5.5's scheduler only: static batching has no such option, and V1 always
    chunks."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    static = record(make_engine(requests, "static", max_num_seqs, max_num_batched_tokens,
                                False, seed), max_steps)
    if engine == "v1":
        other = make_v1_engine(requests, max_num_seqs, max_num_batched_tokens, seed)
    else:
        other = make_engine(requests, "vllm", max_num_seqs, max_num_batched_tokens,
                            chunked_prefill, seed)
    return static, record(other, max_steps)
