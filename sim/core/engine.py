"""The engine loop (vLLM v0.5.5 `LLMEngine.step`): schedule, move blocks, run the model,
process the samples.

    engine = LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=8), SchedulerConfig())
    engine.add_request("A", prompt=7, sampling_params=SamplingParams(max_tokens=3))
    while engine.has_unfinished_requests():
        out = engine.step()        # StepOutput: scheduler outputs, events, tokens made

One call of `step()` is one iteration of vLLM's engine: the scheduler picks the batch and
returns swap and copy lists; the cache engine carries them out (swap in, swap out, copy,
as vLLM's worker does before the forward pass); the stand-in model writes the KV of every
scheduled token into the slots the block tables point at and samples the next tokens; the
output processor forks, stops and frees sequences.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sim.core.cache_engine import CacheEngine
from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.output_processor import OutputProcessor
from sim.core.scheduler import Scheduler, SchedulerBase, SchedulerOutputs
from sim.core.sequence import SamplingParams, Sequence, SequenceGroup, SequenceStage, SequenceStatus
from sim.core.snapshot import engine_snapshot
from sim.events import (
    Aborted,
    KVWritten,
    PrefillRunAsDecode,
    RequestArrived,
    RequestFinished,
    fast_event,
)
from sim.stand_in_model import StandInModel
from sim.trace import Scheduled

# Enum members as module constants: on CPython 3.11 `SequenceStatus.RUNNING` is a
# descriptor lookup (~0.1 us), and these are read for every sequence on every step.
_RUNNING, _SWAPPED = SequenceStatus.RUNNING, SequenceStatus.SWAPPED
_PREFILL = SequenceStage.PREFILL


@dataclass(slots=True)
class StepOutput:
    step: int                              # the index of this step, from 0
    scheduler_outputs: SchedulerOutputs
    events: list = field(default_factory=list)
    # (request_id, seq_id, position, token_id) of every token sampled this step
    tokens: list = field(default_factory=list)
    finished: list = field(default_factory=list)   # request ids that finished this step

    def scheduled(self) -> tuple[Scheduled, ...]:
        """The scheduled groups in the engine-neutral form a trace keeps (prefills first)."""
        so = self.scheduler_outputs
        return tuple(Scheduled(s.seq_group.request_id, s.token_chunk_size,
                               i < so.num_prefill_groups, s.seq_group.num_seqs())
                     for i, s in enumerate(so.scheduled_seq_groups))


class LLMEngine:
    def __init__(self, cache_config: CacheConfig | None = None,
                 scheduler_config: SchedulerConfig | None = None, *, seed: int = 0,
                 scheduler: Callable[..., SchedulerBase] = Scheduler,
                 model: StandInModel | None = None, record_events: bool = True) -> None:
        """`scheduler`: a SchedulerBase class, built with (scheduler_config, cache_config,
        events): vLLM's `Scheduler`, or `sim.studies.static_batching.StaticBatchScheduler`."""
        self.cache_config = cache_config or CacheConfig()
        self.scheduler_config = scheduler_config or SchedulerConfig()
        if not (isinstance(scheduler, type) and issubclass(scheduler, SchedulerBase)):
            raise ValueError(f"scheduler must be a SchedulerBase class, got {scheduler!r}")
        self.model = model or StandInModel(seed=seed)
        self._events: list | None = [] if record_events else None
        self.scheduler = scheduler(self.scheduler_config, self.cache_config, self._events)
        self.block_manager = self.scheduler.block_manager
        cc = self.cache_config
        self.cache_engine = CacheEngine(cc.block_size, cc.num_gpu_blocks, cc.num_cpu_blocks)
        self.step_index = 0
        # An addition for checks and pictures: seq_id -> n, the KV of positions 0 to n - 1
        # was never recomputed (vLLM ran the sequence's recompute as a decode, see step()).
        self.kv_not_recomputed: dict[int, int] = {}
        self.requests: dict[str, SequenceGroup] = {}   # every request ever added, in order
        # Added, not arrived yet (an addition: vLLM's requests arrive when they are added).
        self.pending: list[SequenceGroup] = []
        self._seq_counter = 0
        self.output_processor = OutputProcessor(
            self.model, self.scheduler_config.max_model_len, self.scheduler.fork_seq,
            self.scheduler.free_seq, self._next_seq_id, self._events)

    def _next_seq_id(self) -> int:
        seq_id = self._seq_counter
        self._seq_counter += 1
        return seq_id

    # -- requests ----------------------------------------------------------------------
    def add_request(self, request_id: str, prompt: int | list[int],
                    sampling_params: SamplingParams | None = None, arrival_step: int = 0,
                    output_len: int | None = None) -> SequenceGroup:
        """`prompt` is a list of token ids or a prompt length (ids made up by the model).
        `output_len` scripts the stand-in model to emit EOS as that output token: the
        request's natural length, as a real model would decide it."""
        if request_id in self.requests:
            raise ValueError(f"request_id {request_id!r} was already added")
        if isinstance(prompt, int):
            if prompt < 1:
                raise ValueError(f"prompt length must be at least 1, got {prompt}")
            prompt = self.model.prompt_token_ids(len(self.requests), prompt)
        elif not prompt:
            raise ValueError("prompt must hold at least one token")
        if arrival_step < 0:
            raise ValueError(f"arrival_step must not be negative, got {arrival_step}")
        if output_len is not None and output_len < 1:
            raise ValueError(f"output_len must be at least 1, got {output_len}")
        sp = sampling_params or SamplingParams()
        seq = Sequence(self._next_seq_id(), prompt, self.cache_config.block_size,
                       self.model.eos_token_id)
        group = SequenceGroup(request_id, [seq], sp, arrival_step, output_len)
        self.requests[request_id] = group
        self.pending.append(group)
        # Stable: equal arrival steps keep the order of add_request.
        self.pending.sort(key=lambda g: g.arrival_step)
        return group

    def abort_request(self, request_id: str) -> bool:
        for group in self.pending:
            if group.request_id == request_id:
                self.pending.remove(group)
                for seq in group.get_seqs():
                    seq.status = SequenceStatus.FINISHED_ABORTED
                self._emit_abort_pending(request_id)
                return True
        return self.scheduler.abort_seq_group(request_id)

    def _emit_abort_pending(self, request_id: str) -> None:
        if self._events is not None:
            self._events.append(Aborted(request_id, "pending"))

    def has_unfinished_requests(self) -> bool:
        return bool(self.pending) or self.scheduler.has_unfinished_seqs()

    def get_num_unfinished_requests(self) -> int:
        return len(self.pending) + self.scheduler.get_num_unfinished_seq_groups()

    # -- one iteration -----------------------------------------------------------------
    def step(self) -> StepOutput:
        step = self.step_index
        events = self._events
        while self.pending and self.pending[0].arrival_step <= step:
            group = self.pending.pop(0)
            self.scheduler.add_seq_group(group)
            if events is not None:
                events.append(RequestArrived(group.request_id,
                                             group.get_seqs()[0].get_prompt_len()))

        outputs = self.scheduler.schedule()

        # The worker moves blocks before the forward pass, in vLLM's order.
        cache = self.cache_engine
        cache.swap_in(outputs.blocks_to_swap_in)
        cache.swap_out(outputs.blocks_to_swap_out)
        cache.copy(outputs.blocks_to_copy)

        tokens: list = []
        finished: list = []
        write_slot = cache.write_slot
        bs = self.cache_config.block_size
        block_tables = self.block_manager.block_tables
        process = self.output_processor.process
        for scheduled in outputs.scheduled_seq_groups:
            group = scheduled.seq_group
            if group.first_scheduled_step is None:
                group.first_scheduled_step = step
            running = scheduled.seqs or group.get_seqs(status=_RUNNING)
            was_prompt = running[0].stage is _PREFILL
            if was_prompt and not group.is_prefill():
                # vLLM sends a group as a prompt when SequenceGroup.is_prefill() says so,
                # and that reads the group's first sequence. A sampling group recomputed
                # after that sequence finished is sent as a decode instead.
                self._run_as_decode(group, running, scheduled.token_chunk_size)
                was_prompt = False
            # The forward pass writes the KV of every token it processes into the slot
            # its block table points at.
            elif was_prompt:
                for seq in running:
                    first = seq.num_computed_tokens
                    num = scheduled.token_chunk_size
                    table = [b.block_number for b in block_tables[seq.seq_id]]
                    cache.write_tokens(table, first, seq.get_token_ids()[first:first + num])
                    if events is not None:
                        events.append(KVWritten(seq.seq_id, first, num))
                    seq.update_num_computed_tokens(num)
            else:
                # Decode: one token per sequence, the newest one (this is the hot path).
                for seq in running:
                    pos = seq.num_computed_tokens
                    write_slot(block_tables[seq.seq_id][pos // bs].block_number, pos,
                               seq.output_token_ids[-1])
                    seq.num_computed_tokens = pos + 1
                    if events is not None:
                        events.append(fast_event(KVWritten, (seq.seq_id, pos, 1)))
            # A prompt chunk that leaves part of the prompt uncomputed samples nothing.
            if was_prompt and running[0].stage is _PREFILL:
                continue
            rid = group.request_id
            kept = process(group, was_prompt, running)
            # A group can only have finished if one of its sequences just did, or if
            # beam search dropped every running beam (nothing kept).
            maybe_done = not kept
            for s in kept:
                tokens.append((rid, s.seq_id, s.num_tokens - 1, s.output_token_ids[-1]))
                if s.status > _SWAPPED:
                    maybe_done = True
            if maybe_done and group.is_finished():
                self._finish(group, step, finished)

        for group in outputs.ignored_seq_groups:
            self._finish(group, step, finished)
        if finished:
            # Only a step in which something finished can change `running`.
            self.scheduler.free_finished_seq_groups()

        if events is not None:
            step_events = list(events)
            events.clear()
        else:
            step_events = []
        self.step_index += 1
        return StepOutput(step, outputs, step_events, tokens, finished)

    def _run_as_decode(self, group: SequenceGroup, running: list[Sequence],
                       token_chunk_size: int) -> None:
        """vLLM v0.5.5's model runner on a group it was told is decoding, whose running
        sequence still waits for its recompute: a decode computes one token per sequence,
        the last one, at position len - 1 (`_compute_lens`: context_len = seq_len - 1), so
        only that slot is written; the engine then counts `token_chunk_size` tokens as
        computed (`SequenceGroup.update_num_computed_tokens`), and the KV of the earlier
        positions is whatever the freshly allocated blocks held. The sampler draws one
        token per sequence (not best_of), so nothing is forked."""
        block_tables = self.block_manager.block_tables
        bs = self.cache_config.block_size
        first = group.get_seqs()[0]
        for seq in running:
            pos = seq.num_tokens - 1
            self.cache_engine.write_slot(block_tables[seq.seq_id][pos // bs].block_number,
                                         pos, seq.get_last_token_id())
            self.kv_not_recomputed[seq.seq_id] = pos
            if self._events is not None:
                self._events.append(PrefillRunAsDecode(group.request_id, seq.seq_id,
                                                       first.seq_id, pos))
                self._events.append(KVWritten(seq.seq_id, pos, 1))
            seq.update_num_computed_tokens(token_chunk_size)

    def _finish(self, group: SequenceGroup, step: int, finished: list) -> None:
        group.finished_step = step
        finished.append(group.request_id)
        if self._events is not None:
            statuses = sorted({s.status.label for s in group.get_seqs()})
            self._events.append(RequestFinished(group.request_id, ",".join(statuses)))

    def take_events(self) -> list:
        """The events recorded since the last step returned, and forget them (what a step
        that raised had done before vLLM would stop)."""
        if self._events is None:
            return []
        taken = list(self._events)
        self._events.clear()
        return taken

    def snapshot(self, with_slots: bool = True) -> dict:
        """A JSON-ready copy of the state (see sim/core/snapshot.py)."""
        return engine_snapshot(self, with_slots)

    def run(self, max_steps: int = 100_000) -> list[StepOutput]:
        """Step until every request has finished (or max_steps)."""
        outputs = []
        while self.has_unfinished_requests() and len(outputs) < max_steps:
            outputs.append(self.step())
        return outputs
