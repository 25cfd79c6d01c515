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

from dataclasses import dataclass, field

from sim.core.cache_engine import CacheEngine
from sim.core.config import CacheConfig, SchedulerConfig
from sim.events import Aborted, KVWritten, RequestArrived, RequestFinished, fast_event
from sim.core.output_processor import OutputProcessor
from sim.core.scheduler import Scheduler, SchedulerOutputs
from sim.core.sequence import SamplingParams, Sequence, SequenceGroup, SequenceStage, SequenceStatus
from sim.stand_in_model import StandInModel
from sim.studies.static_batching import StaticBatchScheduler

SCHEDULERS = ("vllm", "static")

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


class LLMEngine:
    def __init__(self, cache_config: CacheConfig | None = None,
                 scheduler_config: SchedulerConfig | None = None, *, seed: int = 0,
                 scheduler: str = "vllm", model: StandInModel | None = None,
                 record_events: bool = True) -> None:
        self.cache_config = cache_config or CacheConfig()
        self.scheduler_config = scheduler_config or SchedulerConfig()
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
        self.model = model or StandInModel(seed=seed)
        self._events: list | None = [] if record_events else None
        scheduler_cls = Scheduler if scheduler == "vllm" else StaticBatchScheduler
        self.scheduler = scheduler_cls(self.scheduler_config, self.cache_config, self._events)
        self.block_manager = self.scheduler.block_manager
        cc = self.cache_config
        self.cache_engine = CacheEngine(cc.block_size, cc.num_gpu_blocks, cc.num_cpu_blocks)
        self.step_index = 0
        self.requests: dict[str, SequenceGroup] = {}   # every request ever added, in order
        self._pending: list[SequenceGroup] = []        # added, not yet arrived
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
        self._pending.append(group)
        # Stable: equal arrival steps keep the order of add_request.
        self._pending.sort(key=lambda g: g.arrival_step)
        return group

    def abort_request(self, request_id: str) -> bool:
        for group in self._pending:
            if group.request_id == request_id:
                self._pending.remove(group)
                for seq in group.get_seqs():
                    seq.status = SequenceStatus.FINISHED_ABORTED
                self._emit_abort_pending(request_id)
                return True
        return self.scheduler.abort_seq_group(request_id)

    def _emit_abort_pending(self, request_id: str) -> None:
        if self._events is not None:
            self._events.append(Aborted(request_id, "pending"))

    def has_unfinished_requests(self) -> bool:
        return bool(self._pending) or self.scheduler.has_unfinished_seqs()

    def get_num_unfinished_requests(self) -> int:
        return len(self._pending) + self.scheduler.get_num_unfinished_seq_groups()

    # -- one iteration -----------------------------------------------------------------
    def step(self) -> StepOutput:
        step = self.step_index
        events = self._events
        while self._pending and self._pending[0].arrival_step <= step:
            group = self._pending.pop(0)
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
        gpu_cache = cache.gpu_cache
        bs = self.cache_config.block_size
        block_tables = self.block_manager.block_tables
        process = self.output_processor.process
        for scheduled in outputs.scheduled_seq_groups:
            group = scheduled.seq_group
            if group.first_scheduled_step is None:
                group.first_scheduled_step = step
            running = scheduled.seqs or group.get_seqs(status=_RUNNING)
            was_prompt = running[0].stage is _PREFILL
            # The forward pass writes the KV of every token it processes into the slot
            # its block table points at.
            if was_prompt:
                for seq in running:
                    first = seq.num_computed_tokens
                    num = scheduled.token_chunk_size
                    table = block_tables[seq.seq_id]
                    ids = seq.get_token_ids()
                    for pos in range(first, first + num):
                        gpu_cache[table[pos // bs].block_number][pos % bs] = (ids[pos], pos)
                    if events is not None:
                        events.append(KVWritten(seq.seq_id, first, num))
                    seq.update_num_computed_tokens(num)
            else:
                # Decode: one token per sequence, the newest one (this is the hot path).
                for seq in running:
                    pos = seq.num_computed_tokens
                    block = block_tables[seq.seq_id][pos // bs]
                    gpu_cache[block.block_number][pos % bs] = (seq.output_token_ids[-1], pos)
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
                tokens.append((rid, s.seq_id, s._len - 1, s.output_token_ids[-1]))
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

    def _finish(self, group: SequenceGroup, step: int, finished: list) -> None:
        group.finished_step = step
        finished.append(group.request_id)
        if self._events is not None:
            statuses = sorted({s.status.label for s in group.get_seqs()})
            self._events.append(RequestFinished(group.request_id, ",".join(statuses)))

    def snapshot(self, with_slots: bool = True) -> dict:
        """A JSON-ready copy of the state (see sim/core/snapshot.py)."""
        from sim.core.snapshot import engine_snapshot
        return engine_snapshot(self, with_slots)

    def run(self, max_steps: int = 100_000) -> list[StepOutput]:
        """Step until every request has finished (or max_steps)."""
        outputs = []
        while self.has_unfinished_requests() and len(outputs) < max_steps:
            outputs.append(self.step())
        return outputs
