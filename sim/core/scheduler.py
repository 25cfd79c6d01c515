"""vLLM's iteration-level scheduler (v0.5.5 `vllm/core/scheduler.py`).

Every engine step, `schedule()` decides which sequence groups run, which are preempted
and which blocks move. It never moves memory: swap mappings and copy-on-write pairs go out
in `SchedulerOutputs` and the engine carries them out.

Three FCFS queues of groups: `waiting` (new requests and recompute-preempted ones),
`running` and `swapped`. The default policy (chunked prefill off):
  1. charge the running groups' seats to the budget;
  2. only if nothing is swapped out, admit waiting prompts in order;
  3. if any prompt was admitted, the step is prefill-only;
  4. otherwise decode the running groups, preempting from the tail of `running` while a
     group cannot get a slot for its next token;
  5. only if nothing was preempted, swap groups back in.
"""
from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from sim.core.block_manager import AllocStatus, BlockSpaceManager
from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.sequence import SequenceGroup, SequenceStage, SequenceStatus
from sim.errors import RecomputeAssertionError, SwapSpaceError
from sim.events import Aborted, Admitted, Preempted, PromptIgnored, SwappedIn, SwappedOut

# Enum members as module constants: on CPython 3.11 `SequenceStatus.RUNNING` is a
# descriptor lookup (~0.1 us), and these are read for every sequence on every step.
_RUNNING, _PREFILL = SequenceStatus.RUNNING, SequenceStage.PREFILL


class PreemptionMode(enum.Enum):
    SWAP = "swap"
    RECOMPUTE = "recompute"


@dataclass(slots=True)
class SchedulingBudget:
    """Token and sequence budget of one step. Request-id aware, as in vLLM, so that a
    group charged twice (seats charged up front, then scheduled) counts once."""
    token_budget: int
    max_num_seqs: int
    _request_ids_num_batched_tokens: set = field(default_factory=set)
    _request_ids_num_curr_seqs: set = field(default_factory=set)
    num_batched_tokens: int = 0
    num_curr_seqs: int = 0

    def can_schedule(self, *, num_new_tokens: int, num_new_seqs: int) -> bool:
        return (self.num_batched_tokens + num_new_tokens <= self.token_budget
                and self.num_curr_seqs + num_new_seqs <= self.max_num_seqs)

    def remaining_token_budget(self) -> int:
        return self.token_budget - self.num_batched_tokens

    def add_num_batched_tokens(self, req_id: str, num_batched_tokens: int) -> None:
        if req_id not in self._request_ids_num_batched_tokens:
            self._request_ids_num_batched_tokens.add(req_id)
            self.num_batched_tokens += num_batched_tokens

    def subtract_num_batched_tokens(self, req_id: str, num_batched_tokens: int) -> None:
        if req_id in self._request_ids_num_batched_tokens:
            self._request_ids_num_batched_tokens.remove(req_id)
            self.num_batched_tokens -= num_batched_tokens

    def add_num_seqs(self, req_id: str, num_curr_seqs: int) -> None:
        if req_id not in self._request_ids_num_curr_seqs:
            self._request_ids_num_curr_seqs.add(req_id)
            self.num_curr_seqs += num_curr_seqs

    def subtract_num_seqs(self, req_id: str, num_curr_seqs: int) -> None:
        if req_id in self._request_ids_num_curr_seqs:
            self._request_ids_num_curr_seqs.remove(req_id)
            self.num_curr_seqs -= num_curr_seqs


@dataclass(slots=True)
class ScheduledSequenceGroup:
    seq_group: SequenceGroup
    # Tokens to process this step: 1 per sequence for a decode, the prompt (or a chunk of
    # it) for a prefill.
    token_chunk_size: int
    # Addition: the group's running sequences as the scheduler saw them, so the engine
    # need not scan the group again (None: ask the group).
    seqs: list | None = None


@dataclass(slots=True)
class SchedulerOutputs:
    scheduled_seq_groups: list[ScheduledSequenceGroup]   # prefills first
    num_prefill_groups: int
    num_batched_tokens: int
    blocks_to_swap_in: list[tuple[int, int]]      # (cpu, gpu)
    blocks_to_swap_out: list[tuple[int, int]]     # (gpu, cpu)
    blocks_to_copy: list[tuple[int, int]]         # (src, dst) on the GPU
    ignored_seq_groups: list[SequenceGroup]
    preempted: int                                # recompute and swap victims together

    def is_empty(self) -> bool:
        return not (self.scheduled_seq_groups or self.blocks_to_swap_in
                    or self.blocks_to_swap_out or self.blocks_to_copy)


@dataclass(slots=True)
class _RunningOutputs:
    decode_seq_groups: list = field(default_factory=list)
    prefill_seq_groups: list = field(default_factory=list)
    preempted: list = field(default_factory=list)
    swapped_out: list = field(default_factory=list)
    blocks_to_swap_out: list = field(default_factory=list)
    blocks_to_copy: list = field(default_factory=list)


@dataclass(slots=True)
class _SwappedInOutputs:
    decode_seq_groups: list = field(default_factory=list)
    prefill_seq_groups: list = field(default_factory=list)
    blocks_to_swap_in: list = field(default_factory=list)
    blocks_to_copy: list = field(default_factory=list)
    infeasible_seq_groups: list = field(default_factory=list)


@dataclass(slots=True)
class _PrefillOutputs:
    seq_groups: list = field(default_factory=list)
    ignored_seq_groups: list = field(default_factory=list)


class SchedulerBase:
    """What the engine needs from a scheduler: the three queues, `schedule()`, and the
    block-manager calls the output processor makes. vLLM's `Scheduler` below and the
    static-batching baseline (`sim.studies.static_batching`) both build on it."""

    def __init__(self, scheduler_config: SchedulerConfig, cache_config: CacheConfig,
                 events: list | None = None) -> None:
        self.scheduler_config = scheduler_config
        self.cache_config = cache_config
        self.events = events
        self.block_manager = BlockSpaceManager.from_cache_config(cache_config, events)
        self.waiting: deque[SequenceGroup] = deque()
        self.running: deque[SequenceGroup] = deque()
        self.swapped: deque[SequenceGroup] = deque()
        self.total_preempted = 0

    # -- queues ------------------------------------------------------------------------
    def add_seq_group(self, seq_group: SequenceGroup) -> None:
        self.waiting.append(seq_group)

    def abort_seq_group(self, request_id: str) -> bool:
        """Remove the group from whichever queue holds it and free its sequences."""
        for name in ("waiting", "running", "swapped"):
            queue: deque = getattr(self, name)
            for seq_group in queue:
                if seq_group.request_id == request_id:
                    queue.remove(seq_group)
                    for seq in seq_group.get_seqs():
                        if seq.is_finished():
                            continue
                        seq.status = SequenceStatus.FINISHED_ABORTED
                        self.free_seq(seq)
                    self._emit(Aborted(request_id, name))
                    return True
        return False

    def has_unfinished_seqs(self) -> bool:
        return bool(self.waiting or self.running or self.swapped)

    def get_num_unfinished_seq_groups(self) -> int:
        return len(self.waiting) + len(self.running) + len(self.swapped)

    def schedule(self) -> SchedulerOutputs:
        raise NotImplementedError

    # -- what the output processor asks ------------------------------------------------
    def fork_seq(self, parent_seq, child_seq) -> None:
        self.block_manager.fork(parent_seq, child_seq)

    def free_seq(self, seq) -> None:
        self.block_manager.free(seq)

    def free_seq_group(self, seq_group: SequenceGroup) -> None:
        for seq in seq_group.get_seqs():
            self.block_manager.free(seq)

    def free_finished_seq_groups(self) -> None:
        self.running = deque(g for g in self.running if not g.is_finished())

    def _emit(self, event) -> None:
        if self.events is not None:
            self.events.append(event)


class Scheduler(SchedulerBase):
    def __init__(self, scheduler_config: SchedulerConfig, cache_config: CacheConfig,
                 events: list | None = None) -> None:
        super().__init__(scheduler_config, cache_config, events)
        if scheduler_config.chunked_prefill_enabled:
            self.prompt_limit = scheduler_config.max_model_len
        else:
            self.prompt_limit = min(scheduler_config.max_model_len,
                                    scheduler_config.max_num_batched_tokens)

    # -- one step ----------------------------------------------------------------------
    def schedule(self) -> SchedulerOutputs:
        if self.scheduler_config.chunked_prefill_enabled:
            outputs = self._schedule_chunked_prefill()
        else:
            outputs = self._schedule_default()
        # vLLM's schedule() then builds each scheduled group's metadata for the workers and
        # asserts, for a group it sends as a prompt, that the group has one sequence.
        for scheduled in outputs.scheduled_seq_groups[:outputs.num_prefill_groups]:
            seq_group = scheduled.seq_group
            if seq_group.is_prefill() and seq_group.num_seqs() != 1:
                raise RecomputeAssertionError(self._prompt_with_finished_seqs(seq_group))
        return outputs

    @staticmethod
    def _prompt_with_finished_seqs(seq_group: SequenceGroup) -> str:
        seqs = seq_group.get_seqs()
        done = sum(1 for s in seqs if s.is_finished())
        return (f"AssertionError in Scheduler.schedule (vLLM v0.5.5): assert len(seqs) == 1 "
                f"(\"Prefill has only 1 sequence.\"): {seq_group.request_id!r} is sent as a "
                f"prompt to recompute its first sequence (seq {seqs[0].seq_id}), but "
                f"get_seqs() also returns {done} finished "
                f"{'sample' if done == 1 else 'samples'}")

    def _new_budget(self) -> SchedulingBudget:
        return SchedulingBudget(token_budget=self.scheduler_config.max_num_batched_tokens,
                                max_num_seqs=self.scheduler_config.max_num_seqs)

    def _schedule_default(self) -> SchedulerOutputs:
        budget = self._new_budget()
        # Seats of running groups first, so prefills cannot exceed max_num_seqs.
        for seq_group in self.running:
            budget.add_num_seqs(seq_group.request_id, seq_group.get_max_num_running_seqs())

        prefills = _PrefillOutputs()
        running_scheduled = _RunningOutputs()
        swapped_in = _SwappedInOutputs()
        remaining_waiting = self.waiting
        remaining_running = self.running
        remaining_swapped = self.swapped

        # While anything is swapped out, no new request is admitted (paper, section 4.5).
        if not self.swapped:
            remaining_waiting, prefills = self._schedule_prefills(self.waiting, budget, False)

        # A step that admitted prompts runs no decodes.
        if not prefills.seq_groups:
            remaining_running, running_scheduled = self._schedule_running(
                self.running, budget, False)
            # A preemption means there is no room: do not bring anyone back this step.
            if not running_scheduled.preempted and not running_scheduled.swapped_out:
                remaining_swapped, swapped_in = self._schedule_swapped(
                    self.swapped, budget, False)

        return self._update_queues(remaining_waiting, remaining_running, remaining_swapped,
                                   prefills, running_scheduled, swapped_in, budget)

    def _schedule_chunked_prefill(self) -> SchedulerOutputs:
        """Running first (decodes and unfinished prompt chunks), then swapped (if nothing
        was preempted), then new prompts, all under one token budget."""
        budget = self._new_budget()
        remaining_running, running_scheduled = self._schedule_running(
            self.running, budget, True)
        remaining_swapped, swapped_in = self.swapped, _SwappedInOutputs()
        if not running_scheduled.preempted and not running_scheduled.swapped_out:
            # vLLM passes no enable_chunking here (so False): a swapped group that is
            # partly prefilled comes back only if all of its remainder fits.
            remaining_swapped, swapped_in = self._schedule_swapped(self.swapped, budget,
                                                                   False)
        remaining_waiting, prefills = self._schedule_prefills(self.waiting, budget, True)

        return self._update_queues(remaining_waiting, remaining_running, remaining_swapped,
                                   prefills, running_scheduled, swapped_in, budget)

    def _update_queues(self, remaining_waiting: deque, remaining_running: deque,
                       remaining_swapped: deque, prefills: _PrefillOutputs,
                       running_scheduled: _RunningOutputs, swapped_in: _SwappedInOutputs,
                       budget: SchedulingBudget) -> SchedulerOutputs:
        """The end of both policies, as in vLLM: the new queues, then SchedulerOutputs.
        `running` keeps its survivors in order, then this step's newcomers. (Without
        chunked prefill no running or swapped-in group is ever mid-prompt, so the prefill
        lists of those two are empty and one assembly serves both policies.)"""
        self.waiting = remaining_waiting
        # Victims were popped newest first; extendleft reverses them, so the front
        # of `waiting` gets them back in their running order, ahead of new requests.
        self.waiting.extendleft(running_scheduled.preempted)
        self.running = remaining_running
        self.running.extend(s.seq_group for s in prefills.seq_groups)
        self.running.extend(s.seq_group for s in running_scheduled.decode_seq_groups)
        self.running.extend(s.seq_group for s in running_scheduled.prefill_seq_groups)
        self.running.extend(s.seq_group for s in swapped_in.decode_seq_groups)
        self.running.extend(s.seq_group for s in swapped_in.prefill_seq_groups)
        self.swapped = remaining_swapped
        self.swapped.extend(running_scheduled.swapped_out)
        # Prefills (new, then running chunks, then swapped-in chunks) before decodes.
        prefill_groups = (prefills.seq_groups + running_scheduled.prefill_seq_groups
                          + swapped_in.prefill_seq_groups)
        return SchedulerOutputs(
            scheduled_seq_groups=(prefill_groups + running_scheduled.decode_seq_groups
                                  + swapped_in.decode_seq_groups),
            num_prefill_groups=len(prefill_groups),
            num_batched_tokens=budget.num_batched_tokens,
            blocks_to_swap_in=swapped_in.blocks_to_swap_in,
            blocks_to_swap_out=running_scheduled.blocks_to_swap_out,
            blocks_to_copy=running_scheduled.blocks_to_copy + swapped_in.blocks_to_copy,
            ignored_seq_groups=prefills.ignored_seq_groups + swapped_in.infeasible_seq_groups,
            preempted=len(running_scheduled.preempted) + len(running_scheduled.swapped_out))

    def _get_num_new_tokens(self, seqs: list, enable_chunking: bool,
                            budget: SchedulingBudget) -> int:
        """Tokens to process for these sequences (one group's, in one status)."""
        if len(seqs) == 1:
            num_new_tokens = seqs[0].get_num_new_tokens()
        else:
            num_new_tokens = sum(seq.get_num_new_tokens() for seq in seqs)
        # Only a single-sequence prompt is cut to the budget (a beam group never is).
        if enable_chunking and len(seqs) == 1:
            num_new_tokens = min(num_new_tokens, budget.remaining_token_budget())
        return num_new_tokens

    def _schedule_running(self, running_queue: deque, budget: SchedulingBudget,
                          enable_chunking: bool) -> tuple[deque, _RunningOutputs]:
        out = _RunningOutputs()
        running_queue = deque(running_queue)
        can_append_slots = self.block_manager.can_append_slots
        append_slots = self.block_manager.append_slots
        while running_queue:
            seq_group = running_queue[0]
            seqs = seq_group.get_seqs(status=_RUNNING)
            num_running_tokens = self._get_num_new_tokens(seqs, enable_chunking, budget)
            if num_running_tokens == 0:
                break
            running_queue.popleft()
            while not can_append_slots(seq_group):
                budget.subtract_num_batched_tokens(seq_group.request_id, num_running_tokens)
                budget.subtract_num_seqs(seq_group.request_id,
                                         seq_group.get_max_num_running_seqs())
                if running_queue:
                    # The lowest-priority group: the most recently added, at the tail.
                    victim = running_queue.pop()
                    self._preempt(victim, out, needed_by=seq_group.request_id)
                else:
                    # Nobody else to take room from: preempt this group itself.
                    self._preempt(seq_group, out, needed_by=seq_group.request_id)
                    break
            else:
                for seq in seqs:     # _append_slots, inlined: this runs for every sequence
                    cows = append_slots(seq)
                    if cows:
                        out.blocks_to_copy.extend(cows)
                scheduled = ScheduledSequenceGroup(seq_group, num_running_tokens, seqs)
                # vLLM asks seq_group.is_prefill(), which reads the group's first sequence,
                # finished or not; it differs from the running sequence's stage only for a
                # group that came back from recompute after its first sample had finished
                # (its recompute runs as a decode, see LLMEngine.step).
                if seqs[0].stage is _PREFILL and seq_group.is_prefill():
                    out.prefill_seq_groups.append(scheduled)
                else:
                    scheduled.token_chunk_size = 1
                    out.decode_seq_groups.append(scheduled)
                budget.add_num_batched_tokens(seq_group.request_id, num_running_tokens)
                if enable_chunking:
                    budget.add_num_seqs(seq_group.request_id,
                                        seq_group.get_max_num_running_seqs())
        return running_queue, out

    def _schedule_swapped(self, swapped_queue: deque, budget: SchedulingBudget,
                          enable_chunking: bool) -> tuple[deque, _SwappedInOutputs]:
        out = _SwappedInOutputs()
        swapped_queue = deque(swapped_queue)
        while swapped_queue:
            seq_group = swapped_queue[0]
            alloc_status = self.block_manager.can_swap_in(seq_group)
            if alloc_status is AllocStatus.LATER:
                break
            if alloc_status is AllocStatus.NEVER:
                # More blocks than the whole GPU has: it can never come back.
                for seq in seq_group.get_seqs():
                    seq.status = SequenceStatus.FINISHED_IGNORED
                self.free_seq_group(seq_group)
                out.infeasible_seq_groups.append(seq_group)
                swapped_queue.popleft()
                continue
            num_new_seqs = seq_group.get_max_num_running_seqs()
            num_new_tokens = self._get_num_new_tokens(
                seq_group.get_seqs(status=SequenceStatus.SWAPPED), enable_chunking, budget)
            if num_new_tokens == 0 or not budget.can_schedule(
                    num_new_tokens=num_new_tokens, num_new_seqs=num_new_seqs):
                break
            swapped_queue.popleft()
            self._swap_in(seq_group, out.blocks_to_swap_in)
            self._append_slots(seq_group.get_seqs(status=SequenceStatus.RUNNING),
                               out.blocks_to_copy)
            if seq_group.is_prefill():
                out.prefill_seq_groups.append(ScheduledSequenceGroup(seq_group, num_new_tokens))
            else:
                out.decode_seq_groups.append(ScheduledSequenceGroup(seq_group, 1))
            budget.add_num_batched_tokens(seq_group.request_id, num_new_tokens)
            budget.add_num_seqs(seq_group.request_id, num_new_seqs)
        return swapped_queue, out

    def _schedule_prefills(self, waiting_queue: deque, budget: SchedulingBudget,
                           enable_chunking: bool) -> tuple[deque, _PrefillOutputs]:
        out = _PrefillOutputs()
        waiting_queue = deque(waiting_queue)
        while waiting_queue:
            seq_group = waiting_queue[0]
            waiting_seqs = seq_group.get_seqs(status=SequenceStatus.WAITING)
            assert len(waiting_seqs) == 1, "a waiting group has exactly one prompt sequence"
            num_new_tokens = self._get_num_new_tokens(waiting_seqs, enable_chunking, budget)
            if num_new_tokens > self.prompt_limit:
                self._ignore(seq_group, waiting_seqs, num_new_tokens, "prompt_limit", out)
                waiting_queue.popleft()
                continue
            can_allocate = self.block_manager.can_allocate(seq_group)
            if can_allocate is AllocStatus.LATER:
                break
            if can_allocate is AllocStatus.NEVER:
                self._ignore(seq_group, waiting_seqs, num_new_tokens, "never_fits", out)
                waiting_queue.popleft()
                continue
            num_new_seqs = seq_group.get_max_num_running_seqs()
            if num_new_tokens == 0 or not budget.can_schedule(
                    num_new_tokens=num_new_tokens, num_new_seqs=num_new_seqs):
                break
            waiting_queue.popleft()
            recompute = waiting_seqs[0].get_output_len() > 0
            self.block_manager.allocate(seq_group)
            for seq in waiting_seqs:
                seq.status = SequenceStatus.RUNNING
            self._emit(Admitted(seq_group.request_id, num_new_tokens, recompute))
            out.seq_groups.append(ScheduledSequenceGroup(seq_group, num_new_tokens))
            budget.add_num_batched_tokens(seq_group.request_id, num_new_tokens)
            budget.add_num_seqs(seq_group.request_id, num_new_seqs)
        return waiting_queue, out

    def _ignore(self, seq_group, waiting_seqs, num_tokens, reason, out) -> None:
        for seq in waiting_seqs:
            seq.status = SequenceStatus.FINISHED_IGNORED
        out.ignored_seq_groups.append(seq_group)
        self._emit(PromptIgnored(seq_group.request_id, num_tokens, reason))

    # -- memory actions ----------------------------------------------------------------
    def _append_slots(self, running_seqs: list, blocks_to_copy: list) -> None:
        append_slots = self.block_manager.append_slots
        for seq in running_seqs:
            cows = append_slots(seq)
            if cows:
                blocks_to_copy.extend(cows)

    def _preempt(self, seq_group: SequenceGroup, out: _RunningOutputs, needed_by: str) -> None:
        self.total_preempted += 1
        mode = self.scheduler_config.preemption_mode
        if mode is None:
            # Recompute is cheaper, but only a single sequence can be recomputed as a
            # prompt: parallel-sampling and beam groups are swapped.
            preemption_mode = (PreemptionMode.RECOMPUTE
                               if seq_group.get_max_num_running_seqs() == 1
                               else PreemptionMode.SWAP)
        else:
            preemption_mode = PreemptionMode(mode)
        self._emit(Preempted(seq_group.request_id, preemption_mode.value, needed_by,
                             needed_by == seq_group.request_id))
        if preemption_mode is PreemptionMode.RECOMPUTE:
            self._preempt_by_recompute(seq_group)
            out.preempted.append(seq_group)
        else:
            self._swap_out(seq_group, out.blocks_to_swap_out)
            out.swapped_out.append(seq_group)

    def _preempt_by_recompute(self, seq_group: SequenceGroup) -> None:
        seqs = seq_group.get_seqs(status=SequenceStatus.RUNNING)
        if len(seqs) != 1:
            # vLLM v0.5.5 asserts this; say why instead of failing an assert.
            raise RecomputeAssertionError(
                f"AssertionError: assert len(seqs) == 1 in Scheduler._preempt_by_recompute "
                f"(vLLM v0.5.5): cannot preempt {seq_group.request_id!r} by recompute, it has "
                f"{len(seqs)} running sequences and vLLM v0.5.5 recomputes only "
                "single-sequence groups (use preemption_mode='swap' or leave it unset)")
        # One running sequence passes, even when the group's other samples have finished
        # (get_max_num_running_seqs() is then 1, so the default mode picks RECOMPUTE too).
        # What vLLM does when such a group comes back depends on the group: it stops at the
        # assert in schedule() (its first sequence is the one that waited), runs the
        # recompute as a decode and leaks its blocks (a forked sample waited: allocate,
        # LLMEngine.step), or ignores it (it no longer fits: _schedule_prefills).
        for seq in seqs:
            seq.status = SequenceStatus.WAITING
            self.free_seq(seq)
            seq.reset_state_for_recompute()

    def _swap_in(self, seq_group: SequenceGroup, blocks_to_swap_in: list) -> None:
        mapping = self.block_manager.swap_in(seq_group)
        blocks_to_swap_in.extend(mapping)
        for seq in seq_group.get_seqs(status=SequenceStatus.SWAPPED):
            seq.status = SequenceStatus.RUNNING
        self._emit(SwappedIn(seq_group.request_id, tuple(mapping)))

    def _swap_out(self, seq_group: SequenceGroup, blocks_to_swap_out: list) -> None:
        if not self.block_manager.can_swap_out(seq_group):
            raise SwapSpaceError(
                "Aborted due to the lack of CPU swap space. Please increase the swap space "
                f"to avoid this error. ({seq_group.request_id!r} needs "
                f"{self.block_manager.num_blocks_to_move(seq_group)} CPU blocks, "
                f"{self.block_manager.get_num_free_cpu_blocks()} are free.)")
        mapping = self.block_manager.swap_out(seq_group)
        blocks_to_swap_out.extend(mapping)
        for seq in seq_group.get_seqs(status=SequenceStatus.RUNNING):
            seq.status = SequenceStatus.SWAPPED
        self._emit(SwappedOut(seq_group.request_id, tuple(mapping)))
