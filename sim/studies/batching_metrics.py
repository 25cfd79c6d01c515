"""Static vs continuous batching, measured in iterations.

One engine run (either scheduler: `LLMEngine(..., scheduler=StaticBatchScheduler)` or vLLM's) becomes a
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
             the running requests skip their decode in a step that admits prompts;
  padding  - static batching only: it finished, but its slot is held until the batch ends.

Pure stdlib and deterministic: no clock, no hash(); workloads come from `random.Random(seed)`.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.studies.scenarios import SCHEDULERS
from sim.studies.static_batching import StaticBatchScheduler
from sim.events import Preempted
from sim.core.sequence import SamplingParams

PREFILL, DECODE, PAUSED, PADDING = "prefill", "decode", "paused", "padding"
BUSY = (PREFILL, DECODE)


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


def record(engine: LLMEngine, max_steps: int = 1000) -> Run:
    """Step `engine` until every request has finished (or `max_steps`) and build the slot
    timeline. The engine must have its requests added and not have stepped yet."""
    sched = engine.scheduler
    slots_n = engine.scheduler_config.max_num_seqs
    static = isinstance(sched, StaticBatchScheduler)
    seat: dict[str, int] = {}                 # request id -> slot
    holder: list[str | None] = [None] * slots_n
    last: list[str | None] = [None] * slots_n     # who held the slot most recently
    left_finished: set[str] = set()
    iterations = []
    finished_step: dict[str, int] = {}
    while engine.has_unfinished_requests() and len(iterations) < max_steps:
        batch_before = [g.request_id for g in sched.batch] if static else []
        out = engine.step()
        so = out.scheduler_outputs
        ran: dict[str, tuple[str, int]] = {}
        for i, s in enumerate(so.scheduled_seq_groups):
            kind = PREFILL if i < so.num_prefill_groups else DECODE
            ran[s.seq_group.request_id] = (kind, s.token_chunk_size)
        members = list(ran)
        members += [g.request_id for g in sched.running if g.request_id not in ran]
        # A static batch keeps its finished members (padding) until it ends.
        if static and ran:
            members += [r for r in batch_before if r not in ran and r not in members]
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
        for rid in out.finished:
            finished_step[rid] = out.step
            left_finished.add(rid)
        waiting = tuple(g.request_id for g in list(sched.waiting) + list(sched.swapped))
        preempted = tuple(e.request_id for e in out.events if isinstance(e, Preempted))
        iterations.append(Iteration(
            step=out.step, slots=tuple(cells), waiting=waiting, seated=tuple(seated),
            finished=tuple(out.finished), preempted=preempted,
            num_batched_tokens=so.num_batched_tokens,
            is_prefill_only=bool(so.num_prefill_groups) and all(
                k == PREFILL for k, _ in ran.values())))
    arrival = {rid: g.arrival_step for rid, g in engine.requests.items()}
    return Run("static" if static else "vllm", slots_n, tuple(iterations), arrival,
               finished_step)


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


def compare(requests: list[BatchRequest], max_num_seqs: int, max_num_batched_tokens: int,
            chunked_prefill: bool = False, seed: int = 0,
            max_steps: int = 1000) -> tuple[Run, Run]:
    """(static run, vLLM run) of the same workload. Chunked prefill applies to vLLM's
    scheduler only (static batching has no such option)."""
    static = record(make_engine(requests, "static", max_num_seqs, max_num_batched_tokens,
                                False, seed), max_steps)
    vllm = record(make_engine(requests, "vllm", max_num_seqs, max_num_batched_tokens,
                              chunked_prefill, seed), max_steps)
    return static, vllm
