"""Where KV memory goes: one request stream served under four memory policies, with the
whole pool accounted for at every step (the PagedAttention paper's Fig. 2).

The serving loop is the same for every policy, so the bars differ only by memory
management. One step (Orca-style iteration-level scheduling):

1. every running request stores one more token (prompt + output so far); when memory
   cannot take it (paged only: contiguous chunks were sized for the whole request), the
   most recently admitted request is preempted by recompute, as in vLLM v0.5.5;
2. requests that reached their true length finish and free their memory;
3. arrivals of this step join the back of the waiting queue;
4. FCFS admission: the head of the queue is admitted while the policy can allocate for it
   (its prompt lands at once); the first refusal stops admission for this step.

Unlike vLLM v0.5.5, a step that admits prompts also decodes (vLLM runs prefill-only steps):
we keep the paper's Orca batching for all four bars. Every token's KV takes a slot, the
last one included (vLLM never computes the last sampled token's KV: one slot per request).

The accounting splits the pool into five categories that sum to ``total_slots``:

- token_states: slots holding a token's KV;
- reserved: allocated slots the request will fill before it finishes;
- internal_fragmentation: allocated slots it will never fill (beyond its true length):
  the policy's over-reservation plus the allocator's rounding up (buddy power of two, or a
  paged block's unused tail); ``internal_rounding`` reports the rounding part alone;
- external_fragmentation: free slots that cannot serve the next request in line (the head
  of the waiting queue, else the next request still to arrive): free buddy chunks smaller
  than the chunk it needs, and for the paged pool the slots left over after the last
  whole block; 0 when no request is left to admit;
- free: the remaining free slots.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from sim.core.block_manager import AllocStatus, BlockSpaceManager
from sim.studies.contiguous import AdmissionRefused, ContiguousMemory, OrcaPolicy
from sim.events import Admitted, Preempted, RequestArrived, RequestFinished, event_to_dict
from sim.core.sequence import SamplingParams, Sequence, SequenceGroup, SequenceStatus
from sim.studies.workload import DEFAULT_MAX_MODEL_LEN, RequestSpec, make_workload

CATEGORIES = ("token_states", "reserved", "internal_fragmentation",
              "external_fragmentation", "free")


class MemoryBreakdown(NamedTuple):
    token_states: int
    reserved: int
    internal_fragmentation: int
    external_fragmentation: int
    free: int
    internal_rounding: int     # part of internal_fragmentation, not a sixth category

    @property
    def total(self) -> int:
        return sum(self[:5])

    @property
    def used(self) -> int:
        """Slots not free: the denominator of the paper's bars."""
        return self.total - self.free


class Segment(NamedTuple):
    """A run of slots of one category, for drawing the address space."""
    start: int
    size: int
    kind: str                  # one of CATEGORIES
    request_id: str | None


class KVMemory(Protocol):
    label: str
    total_slots: int

    def check_fits(self, request: RequestSpec) -> None: ...
    def try_admit(self, request: RequestSpec, num_tokens: int,
                  events: list) -> AdmissionRefused | None: ...
    def can_append(self, request_id: str) -> bool: ...
    def append(self, request_id: str) -> None: ...
    def release(self, request_id: str, events: list) -> None: ...
    def allocated_slots(self, request_id: str) -> int: ...
    def regions(self, request_id: str) -> list[tuple[int, int]]: ...
    def asked_slots(self, request_id: str, num_tokens: int) -> int: ...
    def free_slots(self, next_in_line: tuple[RequestSpec, int] | None) -> tuple[int, int]: ...
    def free_regions(self, next_in_line: tuple[RequestSpec, int] | None
                     ) -> list[tuple[int, int, bool]]: ...


class PagedMemory:
    """vLLM's paged KV cache, driving the real `BlockSpaceManager`: blocks for the prompt at
    admission, `append_slots` per token, `free` at the end. No swap space (recompute)."""

    def __init__(self, total_slots: int, block_size: int = 16, watermark: float = 0.01,
                 max_model_len: int = DEFAULT_MAX_MODEL_LEN) -> None:
        if block_size < 1 or total_slots < block_size:
            raise ValueError(f"total_slots ({total_slots}) must hold at least one block of "
                             f"block_size ({block_size}) slots")
        self.label = "vLLM"
        self.total_slots = total_slots
        self.block_size = block_size
        self.max_model_len = max_model_len
        self.block_manager = BlockSpaceManager(block_size, total_slots // block_size, 0,
                                               watermark)
        self._groups: dict[str, SequenceGroup] = {}
        self._next_seq_id = 0

    def _blocks(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def check_fits(self, request: RequestSpec) -> None:
        if request.total_len > self.max_model_len:
            raise ValueError(f"request {request.request_id}: prompt + output = "
                             f"{request.total_len} exceeds max_model_len {self.max_model_len}")
        bm = self.block_manager
        total, need = bm.num_total_gpu_blocks, self._blocks(request.total_len)
        # can_allocate says NEVER; or, alone in the cache, its last token could not get
        # the spare block that vLLM's conservative can_append_slots insists on, and it
        # would preempt itself for ever.
        if total - need < bm.watermark_blocks or self._blocks(request.total_len - 1) >= total:
            raise ValueError(f"request {request.request_id} needs {need} blocks; a pool of "
                             f"{total} blocks with a watermark of {bm.watermark_blocks} "
                             f"can never hold it")

    def try_admit(self, request: RequestSpec, num_tokens: int,
                  events: list) -> AdmissionRefused | None:
        # A fresh Sequence each time: a recomputed request brings back prompt + output so far.
        seq = Sequence(self._next_seq_id, [0] * request.prompt_len, self.block_size)
        for _ in range(num_tokens - request.prompt_len):
            seq.append_token_id(0)
        group = SequenceGroup(request.request_id, [seq], SamplingParams(max_tokens=request.output_len),
                              request.arrival_step, request.output_len)
        bm = self.block_manager
        status = bm.can_allocate(group)
        if status is not AllocStatus.OK:
            # NEVER was excluded by check_fits; LATER is either full or held by watermark.
            asked = seq.n_blocks * self.block_size
            free = bm.get_num_free_gpu_blocks() * self.block_size
            return AdmissionRefused(request.request_id, asked, self.block_size, free,
                                    self.block_size if free else 0,
                                    "watermark" if free >= asked else "full")
        self._next_seq_id += 1
        bm.events = events
        bm.allocate(group)
        bm.events = None
        seq.status = SequenceStatus.RUNNING
        self._groups[request.request_id] = group
        return None

    def _seq(self, request_id: str) -> Sequence:
        return self._groups[request_id].get_seqs()[0]

    def can_append(self, request_id: str) -> bool:
        return self.block_manager.can_append_slots(self._groups[request_id])

    def append(self, request_id: str) -> None:
        seq = self._seq(request_id)
        seq.append_token_id(0)
        self.block_manager.append_slots(seq)

    def release(self, request_id: str, events: list) -> None:
        seq = self._groups.pop(request_id).get_seqs()[0]
        self.block_manager.events = events
        self.block_manager.free(seq)
        self.block_manager.events = None

    def allocated_slots(self, request_id: str) -> int:
        return len(self.block_manager.block_tables[self._seq(request_id).seq_id]) \
            * self.block_size

    def regions(self, request_id: str) -> list[tuple[int, int]]:
        bs = self.block_size
        return [(b * bs, bs) for b in self.block_manager.get_block_table(self._seq(request_id))]

    def asked_slots(self, request_id: str, num_tokens: int) -> int:
        return num_tokens      # it asks for what it holds; the block tail is rounding

    def free_slots(self, next_in_line: tuple[RequestSpec, int] | None) -> tuple[int, int]:
        """(free, external): every free block serves anyone; the tail is external."""
        blocks = self.block_manager.get_num_free_gpu_blocks() * self.block_size
        tail = self.total_slots - self.block_manager.num_total_gpu_blocks * self.block_size
        return (blocks + tail, 0) if next_in_line is None else (blocks, tail)

    def free_regions(self, next_in_line: tuple[RequestSpec, int] | None
                     ) -> list[tuple[int, int, bool]]:
        bs = self.block_size
        regions = sorted((b.block_number * bs, bs, True)
                         for b in self.block_manager.gpu_allocator.free_blocks)
        tail = self.block_manager.num_total_gpu_blocks * bs
        if tail < self.total_slots:
            regions.append((tail, self.total_slots - tail, next_in_line is None))
        return regions


@dataclass(frozen=True, slots=True)
class StepRecord:
    step: int
    breakdown: MemoryBreakdown
    events: tuple
    running: tuple[str, ...]
    waiting: tuple[str, ...]
    refusal: AdmissionRefused | None
    layout: tuple[Segment, ...] | None = None

    @property
    def refused_although_free(self) -> bool:
        """The moment to mark: the head was refused though the free slots would hold it."""
        return self.refusal is not None and self.refusal.reason == "fragmented"

    def to_dict(self) -> dict:
        return {"step": self.step, "breakdown": self.breakdown._asdict(),
                "events": [event_to_dict(e) for e in self.events],
                "running": list(self.running), "waiting": list(self.waiting),
                "refusal": None if self.refusal is None else self.refusal._asdict(),
                "layout": None if self.layout is None else [list(s) for s in self.layout]}


@dataclass(slots=True)
class PolicyRun:
    label: str
    total_slots: int
    steps: list[StepRecord] = field(default_factory=list)

    def time_averaged_shares(self, denominator: str = "used") -> dict[str, float]:
        """Each category summed over the steps (a time integral), as a share of the used
        slots summed the same way (``"used"``: the paper's bars, which leave free memory
        out; no "free" key then) or of the whole pool (``"total"``)."""
        if denominator not in ("used", "total"):
            raise ValueError(f"denominator must be 'used' or 'total', got {denominator!r}")
        names = CATEGORIES if denominator == "total" else CATEGORIES[:-1]
        sums = [sum(r.breakdown[i] for r in self.steps) for i in range(len(names))]
        whole = sum(sums)
        return {name: (s / whole if whole else 0.0) for name, s in zip(names, sums)}


def account(memory: KVMemory, running: list[str], tokens: dict[str, int],
            specs: dict[str, RequestSpec], next_in_line: tuple[RequestSpec, int] | None
            ) -> MemoryBreakdown:
    """Of a request's allocated slots, the first ``tokens`` hold KV, the next ones up to its
    true length are reserved, the rest are internal waste."""
    token_states = reserved = internal = rounding = 0
    for rid in running:
        filled, true_len = tokens[rid], specs[rid].total_len
        allocated = memory.allocated_slots(rid)
        fillable = min(allocated, true_len)
        token_states += filled
        reserved += fillable - filled
        internal += allocated - fillable
        rounding += allocated - max(memory.asked_slots(rid, filled), fillable)
    free, external = memory.free_slots(next_in_line)
    breakdown = MemoryBreakdown(token_states, reserved, internal, external, free, rounding)
    if breakdown.total != memory.total_slots:
        raise AssertionError(f"{memory.label}: the categories sum to {breakdown.total}, "
                             f"not {memory.total_slots}")
    return breakdown


def layout(memory: KVMemory, running: list[str], tokens: dict[str, int],
           specs: dict[str, RequestSpec], next_in_line: tuple[RequestSpec, int] | None
           ) -> tuple[Segment, ...]:
    """The same split slot by slot, in address order, for drawing: each request's regions
    are walked in logical order (a paged request's blocks are scattered). Neighbouring
    pieces of one kind and owner are merged into one run."""
    pieces: list[tuple[int, int, str, str | None]] = []
    for rid in running:
        filled = tokens[rid]
        bounds = (("token_states", filled), ("reserved", specs[rid].total_len),
                  ("internal_fragmentation", None))
        offset = 0                      # logical slot index within the request
        for start, size in memory.regions(rid):
            end_of_region = offset + size
            if end_of_region <= filled:             # the common case: a full block
                pieces.append((start, size, "token_states", rid))
                offset = end_of_region
                continue
            for kind, upto in bounds:
                end = end_of_region if upto is None else max(offset, min(upto, end_of_region))
                if end > offset:
                    pieces.append((start, end - offset, kind, rid))
                    start += end - offset
                    offset = end
    for start, size, usable in memory.free_regions(next_in_line):
        pieces.append((start, size, "free" if usable else "external_fragmentation", None))
    pieces.sort()
    merged: list[list] = []
    for start, size, kind, rid in pieces:
        last = merged[-1] if merged else None
        if last and last[0] + last[1] == start and last[2] == kind and last[3] == rid:
            last[1] += size
        else:
            merged.append([start, size, kind, rid])
    return tuple(Segment(*m) for m in merged)


def simulate(requests: list[RequestSpec], memory: KVMemory, *, max_steps: int | None = None,
             record_layout: bool = False) -> PolicyRun:
    """Serve ``requests`` with ``memory``; one record per step until every request has
    finished (or ``max_steps`` steps)."""
    ids = [r.request_id for r in requests]
    if len(set(ids)) != len(ids):
        raise ValueError("request ids must be unique")
    for request in requests:
        memory.check_fits(request)
    # Stable: requests arriving in the same step keep their list order.
    pending = deque(sorted(requests, key=lambda r: r.arrival_step))
    specs = {r.request_id: r for r in requests}
    tokens: dict[str, int] = {}
    waiting: deque[str] = deque()
    running: list[str] = []
    run = PolicyRun(memory.label, memory.total_slots)
    # A guard against a livelock bug, far above any real run's length.
    limit = max_steps if max_steps is not None else \
        10 * (max((r.arrival_step for r in requests), default=0)
              + sum(r.total_len for r in requests)) + 10
    step = 0
    while (pending or waiting or running) and step < limit:
        events: list = []
        _grow(memory, running, waiting, tokens, events)
        for rid in [r for r in running if tokens[r] == specs[r].total_len]:
            running.remove(rid)
            memory.release(rid, events)
            events.append(RequestFinished(rid, "finished_stopped"))
        while pending and pending[0].arrival_step == step:
            request = pending.popleft()
            waiting.append(request.request_id)
            tokens[request.request_id] = request.prompt_len
            events.append(RequestArrived(request.request_id, request.prompt_len))
        refusal = None
        while waiting:
            head = specs[waiting[0]]
            refusal = memory.try_admit(head, tokens[head.request_id], events)
            if refusal is not None:
                events.append(refusal)
                break
            waiting.popleft()
            running.append(head.request_id)
            events.append(Admitted(head.request_id, tokens[head.request_id],
                                   tokens[head.request_id] > head.prompt_len))
        if waiting:
            next_in_line = (specs[waiting[0]], tokens[waiting[0]])
        elif pending:
            next_in_line = (pending[0], pending[0].prompt_len)
        else:
            next_in_line = None
        run.steps.append(StepRecord(
            step, account(memory, running, tokens, specs, next_in_line), tuple(events),
            tuple(running), tuple(waiting), refusal,
            layout(memory, running, tokens, specs, next_in_line) if record_layout else None))
        step += 1
    if max_steps is None and (pending or waiting or running):
        raise RuntimeError(f"{memory.label}: requests still unfinished after {limit} steps")
    return run


def _grow(memory: KVMemory, running: list[str], waiting: deque[str],
          tokens: dict[str, int], events: list) -> None:
    """One more token for every running request, front to back. While one cannot get a
    slot, the tail of ``running`` (the latest admitted) is preempted by recompute and goes
    to the front of ``waiting``, keeping its tokens to recompute (vLLM v0.5.5)."""
    i = 0
    while i < len(running):
        rid = running[i]
        while not memory.can_append(rid):
            victim = running.pop()
            memory.release(victim, events)
            waiting.appendleft(victim)
            events.append(Preempted(victim, "recompute", rid, victim == rid))
            if victim == rid:
                return
        memory.append(rid)
        tokens[rid] += 1
        i += 1


def make_memory(policy: str, total_slots: int, *, max_model_len: int = DEFAULT_MAX_MODEL_LEN,
                block_size: int = 16, watermark: float = 0.01) -> KVMemory:
    """"max", "pow2", "oracle" (the Orca variants) or "paged" (vLLM)."""
    if policy == "paged":
        return PagedMemory(total_slots, block_size, watermark, max_model_len)
    try:
        orca = OrcaPolicy(policy)
    except ValueError:
        raise ValueError(f"policy must be one of max, pow2, oracle, paged; got {policy!r}") \
            from None
    return ContiguousMemory(orca, total_slots, max_model_len)


POLICIES = ("max", "pow2", "oracle", "paged")


def simulate_policies(requests: list[RequestSpec], total_slots: int, *,
                      max_model_len: int = DEFAULT_MAX_MODEL_LEN, block_size: int = 16,
                      max_steps: int | None = None, record_layout: bool = False
                      ) -> list[PolicyRun]:
    """The same stream served under each of POLICIES, in that order, each on a fresh pool of
    ``total_slots``: the four bars of the paper's Fig. 2. Raises what `simulate` raises
    (ValueError when a request can never fit a policy's pool)."""
    return [simulate(requests, make_memory(policy, total_slots, max_model_len=max_model_len,
                                           block_size=block_size),
                     max_steps=max_steps, record_layout=record_layout)
            for policy in POLICIES]

# Fig. 2 of the paper: share of the KV memory in use that holds token states.
PAPER_TOKEN_STATE_SHARE = {"Orca (Max)": 0.204, "Orca (Pow2)": 0.268,
                           "Orca (Oracle)": 0.382, "vLLM": 0.963}

# OPT-13B on one A100-40GB: 12 GiB of KV cache at 800 KiB per token (the paper's Table 1).
PAPER_KV_SLOTS = 12 * 1024 * 1024 // 800


def reproduce_fig2(num_requests: int = 200, seed: int = 0, arrival_rate: float = 0.2,
                   total_slots: int = PAPER_KV_SLOTS, block_size: int = 16
                   ) -> dict[str, dict[str, float]]:
    """A ShareGPT-like workload (`sim.workload`: log-normal lengths with the paper's means,
    Poisson arrivals) through the four policies; each policy's time-averaged shares of the
    used memory, by category: compare ``["token_states"]`` with PAPER_TOKEN_STATE_SHARE.

    The pool is OPT-13B's on an A100-40GB (15,728 slots). At 0.2 requests per step the
    Orca queues are non-empty for 70-85% of the run and vLLM's for about a third of it
    (vLLM serves about 0.15 requests per step here), so every policy is under memory
    pressure. The shares barely move with the rate (0.05 to 5) or the seed (a few points
    for Orca, a tenth of a point for vLLM). Free memory is left out of the denominator as
    in the paper's bars, whose four parts add up to 100% of the memory in use.
    """
    requests = make_workload("sharegpt", num_requests, seed, arrival_rate=arrival_rate)
    return {run.label: run.time_averaged_shares("used")
            for run in simulate_policies(requests, total_slots, block_size=block_size)}
