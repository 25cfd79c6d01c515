"""Static (request-level) batching: the baseline that continuous batching beats.

A batch of up to `max_num_seqs` requests is formed from the front of `waiting`, prefilled
together, then decoded together until *every* request in it has finished. Nobody joins a
running batch: a request that finishes early leaves its slot idle (padding) until the
longest one is done. This is how FasterTransformer-style servers ran before Orca's
iteration-level scheduling.

Like those systems it reserves memory for each request's whole output at admission
(prompt + max_tokens, for every sequence it may fork), so it never needs to preempt.
It drives the same block manager as vLLM's scheduler, so the blocks it actually fills are
the same paged blocks; only the admission rule and the batch boundary differ.
"""
from __future__ import annotations

from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.scheduler import ScheduledSequenceGroup, SchedulerBase, SchedulerOutputs
from sim.core.sequence import SequenceGroup, SequenceStatus
from sim.events import Admitted, PromptIgnored


class StaticBatchScheduler(SchedulerBase):
    def __init__(self, scheduler_config: SchedulerConfig, cache_config: CacheConfig,
                 events: list | None = None) -> None:
        super().__init__(scheduler_config, cache_config, events)
        self.prompt_limit = min(scheduler_config.max_model_len,
                                scheduler_config.max_num_batched_tokens)
        # `swapped` stays empty: memory is reserved at admission, nothing is preempted.
        # Every member of the current batch, finished ones included: their slots stay
        # occupied (idle) until the whole batch is done.
        self.batch: list[SequenceGroup] = []

    def _reservation(self, group: SequenceGroup) -> int:
        """Blocks a request may ever need: its longest possible sequence, per sequence."""
        seq = group.get_seqs()[0]
        total = seq.get_prompt_len() + group.sampling_params.max_tokens
        blocks = -(-total // self.cache_config.block_size)
        return blocks * group.get_max_num_running_seqs()

    def schedule(self) -> SchedulerOutputs:
        if self.running:
            return self._decode_batch()
        return self._form_batch()

    def _form_batch(self) -> SchedulerOutputs:
        bm = self.block_manager
        budget_tokens = self.scheduler_config.max_num_batched_tokens
        seats = self.scheduler_config.max_num_seqs
        available = bm.get_num_free_gpu_blocks() - bm.watermark_blocks
        capacity = bm.num_total_gpu_blocks - bm.watermark_blocks
        scheduled, ignored = [], []
        num_tokens = num_seqs = reserved = 0
        while self.waiting:
            group = self.waiting[0]
            seq = group.get_seqs(status=SequenceStatus.WAITING)[0]
            prompt_len = seq.get_len()
            need = self._reservation(group)
            reason = ("prompt_limit" if prompt_len > self.prompt_limit
                      else "never_fits" if need > capacity else None)
            if reason:
                seq.status = SequenceStatus.FINISHED_IGNORED
                ignored.append(group)
                self.waiting.popleft()
                if self.events is not None:
                    self.events.append(PromptIgnored(group.request_id, prompt_len, reason))
                continue
            n = group.get_max_num_running_seqs()
            if (reserved + need > available or num_tokens + prompt_len > budget_tokens
                    or num_seqs + n > seats):
                break
            self.waiting.popleft()
            bm.allocate(group)
            seq.status = SequenceStatus.RUNNING
            if self.events is not None:
                self.events.append(Admitted(group.request_id, prompt_len, False))
            scheduled.append(ScheduledSequenceGroup(group, prompt_len))
            reserved += need
            num_tokens += prompt_len
            num_seqs += n
        self.batch = [s.seq_group for s in scheduled]
        self.running.extend(self.batch)
        return SchedulerOutputs(scheduled, len(scheduled), num_tokens, [], [], [], ignored, 0)

    def _decode_batch(self) -> SchedulerOutputs:
        scheduled, blocks_to_copy = [], []
        num_tokens = 0
        for group in self.running:
            # Memory was reserved at admission, so appending cannot run out of blocks.
            for seq in group.get_seqs(status=SequenceStatus.RUNNING):
                blocks_to_copy.extend(self.block_manager.append_slots(seq))
                num_tokens += 1
            scheduled.append(ScheduledSequenceGroup(group, 1))
        return SchedulerOutputs(scheduled, 0, num_tokens, [], [], blocks_to_copy, [], 0)

    def free_finished_seq_groups(self) -> None:
        super().free_finished_seq_groups()
        if not self.running:
            self.batch = []
