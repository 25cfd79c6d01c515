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

The accounting is the paper's (section 3.1 and Fig. 3: "three primary sources of memory
wastes: reserved slots for future tokens, internal fragmentation due to over-provisioning
for potential maximum sequence lengths, and external fragmentation from the memory
allocator like the buddy allocator"). It splits the pool into five categories that sum to
``total_slots``:

- token_states: slots holding a token's KV;
- reserved: slots a contiguous policy asked for at admission that the request will fill
  before it finishes (paged memory reserves nothing ahead);
- internal_fragmentation: over-provisioning, known only once the request finishes: the
  slots a policy asked for beyond the request's true length (Max: 2048 minus the true
  length; Pow2: the output rounded up to a power of two; Oracle: none); for paged memory,
  the unfilled tail of each request's last block (section 1: small blocks allocated on
  demand "alleviate internal fragmentation"; section 4.2: a request's waste is within its
  last block);
- external_fragmentation: the allocator's waste, known before the request is served: the
  slots a buddy chunk adds by rounding the policy's request up to a power of two
  (``external_rounding`` reports them alone), plus free slots that cannot serve the next
  request in line (the head of the waiting queue, else the next request still to arrive):
  free buddy chunks smaller than the chunk it needs, and for the paged pool the slots left
  over after the last whole block; free slots are never external when no request is left
  to admit;
- free: the remaining free slots.

Orca (Oracle) asks for exactly the true length, so its internal fragmentation is 0, as in
the paper's Fig. 2; everything its buddy allocator adds is external.

The paper's Fig. 2 bars are shares of the whole KV pool measured while the server is
memory-bound; its fourth part is "External frag. & Others". `PolicyRun.fig2_shares` does
the same: the steps in which a request waits, the whole pool as the denominator, and free
slots (which the next request in line cannot use, or it would have been admitted) counted
with external fragmentation.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from sim.core.block_manager import AllocStatus, BlockSpaceManager
from sim.core.sequence import SamplingParams, Sequence, SequenceGroup, SequenceStatus
from sim.events import Admitted, Preempted, RequestArrived, RequestFinished, event_to_dict
from sim.studies.contiguous import AdmissionRefused, ContiguousMemory, OrcaPolicy
from sim.studies.workload import DEFAULT_MAX_MODEL_LEN, Dataset, RequestSpec, make_workload

CATEGORIES = ("token_states", "reserved", "internal_fragmentation",
              "external_fragmentation", "free")
# The four parts of the paper's Fig. 2 bars; the last is "External frag. & Others".
FIG2_CATEGORIES = ("token_states", "reserved", "internal_fragmentation", "external_and_others")


class MemoryBreakdown(NamedTuple):
    token_states: int
    reserved: int
    internal_fragmentation: int
    external_fragmentation: int
    free: int
    external_rounding: int     # part of external_fragmentation, not a sixth category

    @property
    def total(self) -> int:
        return sum(self[:5])

    @property
    def used(self) -> int:
        """Slots not free."""
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
    def split_unfilled(self, request_id: str, filled: int,
                       true_len: int) -> tuple[int, int, int]: ...
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
        group = SequenceGroup(request.request_id, [seq],
                              SamplingParams(max_tokens=request.output_len),
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

    def split_unfilled(self, request_id: str, filled: int, true_len: int) -> tuple[int, int, int]:
        """(reserved, internal, rounding) of the allocated slots after the ``filled`` ones:
        nothing is reserved ahead; the tail of the last block is internal fragmentation
        (the paper's accounting for paged memory), whether or not the request will still
        fill it."""
        return 0, self.allocated_slots(request_id) - filled, 0

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
        slots summed the same way (``"used"``: free memory left out; no "free" key then)
        or of the whole pool (``"total"``)."""
        if denominator not in ("used", "total"):
            raise ValueError(f"denominator must be 'used' or 'total', got {denominator!r}")
        names = CATEGORIES if denominator == "total" else CATEGORIES[:-1]
        sums = [sum(r.breakdown[i] for r in self.steps) for i in range(len(names))]
        whole = sum(sums)
        return {name: (s / whole if whole else 0.0) for name, s in zip(names, sums)}

    def memory_bound_steps(self) -> list[StepRecord]:
        """The steps that end with a request waiting: memory, not demand, limits the batch."""
        return [r for r in self.steps if r.waiting]

    def fig2_shares(self) -> dict[str, float]:
        """The paper's Fig. 2 bar: over the memory-bound steps, each of FIG2_CATEGORIES
        summed over time as a share of the whole pool summed the same way. The fourth part
        is the paper's "External frag. & Others": external fragmentation (buddy rounding
        included) plus the free slots, which the waiting request could not use."""
        steps = self.memory_bound_steps()
        if not steps:
            raise ValueError(f"{self.label}: no request ever waited; Fig. 2 measures a "
                             f"memory-bound server (raise the arrival rate)")
        sums = [sum(r.breakdown[i] for r in steps) for i in range(len(CATEGORIES))]
        whole = sum(sums)
        return dict(zip(FIG2_CATEGORIES, (sums[0] / whole, sums[1] / whole, sums[2] / whole,
                                          (sums[3] + sums[4]) / whole)))

    def mean_batch(self, steps: list[StepRecord] | None = None) -> float:
        """Running requests per step, averaged over ``steps`` (all of them by default)."""
        steps = self.steps if steps is None else steps
        return sum(len(r.running) for r in steps) / len(steps) if steps else 0.0


def account(memory: KVMemory, running: list[str], tokens: dict[str, int],
            specs: dict[str, RequestSpec], next_in_line: tuple[RequestSpec, int] | None
            ) -> MemoryBreakdown:
    """Each running request's tokens, and how its allocated slots beyond them split
    (`split_unfilled`); the free slots split by the next request in line."""
    token_states = reserved = internal = rounding = 0
    for rid in running:
        filled = tokens[rid]
        r, i, x = memory.split_unfilled(rid, filled, specs[rid].total_len)
        token_states += filled
        reserved += r
        internal += i
        rounding += x
    free, external = memory.free_slots(next_in_line)
    breakdown = MemoryBreakdown(token_states, reserved, internal, external + rounding, free,
                                rounding)
    if breakdown.total != memory.total_slots:
        raise AssertionError(f"{memory.label}: the categories sum to {breakdown.total}, "
                             f"not {memory.total_slots}")
    return breakdown


def layout(memory: KVMemory, running: list[str], tokens: dict[str, int],
           specs: dict[str, RequestSpec], next_in_line: tuple[RequestSpec, int] | None
           ) -> tuple[Segment, ...]:
    """The same split slot by slot, in address order, for drawing: each request's regions
    are walked in logical order (a paged request's blocks are scattered) and filled with
    its token states, then reserved, internal and (buddy rounding) external slots.
    Neighbouring pieces of one kind and owner are merged into one run."""
    pieces: list[tuple[int, int, str, str | None]] = []
    for rid in running:
        filled = tokens[rid]
        r, i, x = memory.split_unfilled(rid, filled, specs[rid].total_len)
        parts = [[kind, n] for kind, n in (("token_states", filled), ("reserved", r),
                                           ("internal_fragmentation", i),
                                           ("external_fragmentation", x)) if n > 0]
        k = 0
        for start, size in memory.regions(rid):
            while size:
                kind, left = parts[k]
                take = min(left, size)
                pieces.append((start, take, kind, rid))
                start += take
                size -= take
                parts[k][1] -= take
                if parts[k][1] == 0:
                    k += 1
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

# The paper's Fig. 2 ("Average percentage of memory wastes in different LLM serving systems
# during the experiment in section 6.2": OPT-13B, ShareGPT), the numbers printed on its
# bars, as shares of the KV cache. vLLM's bar prints only its token states; the other 3.7%
# is drawn as slivers too thin to label, so its split is not readable: None.
PAPER_FIG2 = {
    "Orca (Max)": {"token_states": 0.204, "reserved": 0.133, "internal_fragmentation": 0.573,
                   "external_and_others": 0.089},
    "Orca (Pow2)": {"token_states": 0.268, "reserved": 0.179, "internal_fragmentation": 0.136,
                    "external_and_others": 0.416},
    "Orca (Oracle)": {"token_states": 0.382, "reserved": 0.252, "internal_fragmentation": 0.0,
                      "external_and_others": 0.366},
    "vLLM": {"token_states": 0.963, "reserved": None, "internal_fragmentation": None,
             "external_and_others": None},
}
PAPER_TOKEN_STATE_SHARE = {label: bar["token_states"] for label, bar in PAPER_FIG2.items()}

# OPT-13B on one A100-40GB: 12 GiB of KV cache at 800 KiB per token (the paper's Table 1).
PAPER_KV_SLOTS = 12 * 1024 * 1024 // 800


def reproduce_fig2(num_requests: int = 200, seed: int = 0, arrival_rate: float = 0.2,
                   total_slots: int = PAPER_KV_SLOTS, block_size: int = 16,
                   dataset: Dataset | str = "sharegpt") -> dict[str, dict[str, float]]:
    """A ShareGPT-like workload (`sim.studies.workload`: log-normal lengths with the
    paper's means, Poisson arrivals) through the four policies; each policy's Fig. 2 bar
    (`PolicyRun.fig2_shares`): compare with PAPER_FIG2, category by category.

    The pool is OPT-13B's on an A100-40GB (15,728 slots). The bars average the steps in
    which a request waits, as the paper measured a memory-bound server (its Orca (Max) bar
    is 7 chunks of 2,048 slots at every moment: 91.1% of the pool, 8.9% left over); at 0.2
    requests per step that is most of every Orca run and about a third of vLLM's.
    """
    requests = make_workload(dataset, num_requests, seed, arrival_rate=arrival_rate)
    return {run.label: run.fig2_shares()
            for run in simulate_policies(requests, total_slots, block_size=block_size)}
