"""What happens after the model samples: parallel sampling and beam search
(vLLM v0.5.5 `vllm/engine/output_processor/single_step.py` and `stop_checker.py`).

The key order, from vLLM: new child sequences are forked from their parents *before*
anything is freed, so a block still used by a surviving sequence never drops to a
reference count of zero and is never handed to someone else in between.
"""
from __future__ import annotations

from collections.abc import Callable

from sim.core.sequence import SamplingParams, Sequence, SequenceGroup, SequenceStatus
from sim.events import BeamCandidate, BeamSearchStep, SequenceFinished, TokenSampled, fast_event
from sim.stand_in_model import StandInModel

_SWAPPED = SequenceStatus.SWAPPED   # a module constant: read once per generated token


def check_stop(seq: Sequence, sp: SamplingParams, max_model_len: int) -> None:
    """vLLM's StopChecker, in its order: EOS, stop tokens, model length, max_tokens."""
    last = seq.output_token_ids[-1]
    if not sp.ignore_eos and last == seq.eos_token_id:
        seq.status = SequenceStatus.FINISHED_STOPPED
    elif last in sp.stop_token_ids:
        seq.status = SequenceStatus.FINISHED_STOPPED
    elif seq.num_tokens > max_model_len:
        seq.status = SequenceStatus.FINISHED_LENGTH_CAPPED
    elif seq.get_output_len() == sp.max_tokens:
        seq.status = SequenceStatus.FINISHED_LENGTH_CAPPED


class OutputProcessor:
    """Appends sampled tokens, forks and frees sequences, checks stopping."""

    def __init__(self, model: StandInModel, max_model_len: int,
                 fork_seq: Callable[[Sequence, Sequence], None],
                 free_seq: Callable[[Sequence], None],
                 next_seq_id: Callable[[], int], events: list | None) -> None:
        self.model = model
        self.max_model_len = max_model_len
        self.fork_seq = fork_seq
        self.free_seq = free_seq
        self.next_seq_id = next_seq_id
        self.events = events

    def process(self, seq_group: SequenceGroup, was_prompt: bool,
                running: list[Sequence] | None = None) -> list[Sequence]:
        """Returns the sequences that gained a token this step and were kept.
        `running`: the group's running sequences, when the caller has them at hand."""
        if running is None:
            running = seq_group.get_seqs(status=SequenceStatus.RUNNING)
        sp = seq_group.sampling_params
        if sp.use_beam_search:
            return self._process_beam_search(seq_group, running)
        # vLLM v0.5.5's fast path: with n == 1 (and no beam search) only the first sample
        # is kept and nothing is forked, even when best_of > 1 (the group is still charged
        # best_of seats, get_max_num_running_seqs). One running sequence in a decode step
        # is the same single-sample case of the general path below.
        if sp.n == 1 or (len(running) == 1 and not was_prompt):
            return self._sample_one(seq_group, running)
        return self._process_sampling(seq_group, was_prompt, running)

    def _sample_one(self, seq_group: SequenceGroup, running: list[Sequence]) -> list[Sequence]:
        """One sample for one sequence (most decode steps): nothing to fork. This is
        `_process_sampling` with one parent and one sample, written out because it runs
        once per generated token."""
        seq = running[0]
        token_id, logprob = self.model.sample(seq, seq_group.output_len)
        events = self.events
        if events is not None:
            events.append(fast_event(TokenSampled, (seq.seq_id, seq.num_tokens, token_id, logprob)))
        seq.output_token_ids.append(token_id)
        seq.output_logprobs.append(logprob)
        seq.cumulative_logprob += logprob
        seq.num_tokens += 1
        check_stop(seq, seq_group.sampling_params, self.max_model_len)
        if seq.status > _SWAPPED:
            if events is not None:
                events.append(SequenceFinished(seq_group.request_id, seq.seq_id,
                                               seq.status.label))
            self.free_seq(seq)
        return running

    def _append(self, seq: Sequence, token_id: int, logprob: float, request_id: str,
                emit: bool = True) -> None:
        events = self.events if emit else None
        if events is not None:
            events.append(fast_event(TokenSampled, (seq.seq_id, seq.num_tokens, token_id, logprob)))
        seq.append_token_id(token_id, logprob)
        check_stop(seq, self._sp, self.max_model_len)
        if events is not None and seq.status > _SWAPPED:
            events.append(SequenceFinished(request_id, seq.seq_id, seq.status.label))

    # -- parallel sampling (and n = 1) ---------------------------------------------------
    def _process_sampling(self, seq_group: SequenceGroup, was_prompt: bool,
                          parents: list[Sequence]) -> list[Sequence]:
        sp = self._sp = seq_group.sampling_params
        rid = seq_group.request_id
        child_seqs: list[tuple[Sequence, Sequence]] = []
        for parent in parents:
            # The prompt step draws best_of samples from the one prompt sequence; later
            # steps draw one per sequence.
            num_samples = sp.best_of if was_prompt else 1
            samples = [self.model.sample(parent, seq_group.output_len, i)
                       for i in range(num_samples)]
            for token_id, logprob in samples[:-1]:
                child = parent.fork(self.next_seq_id())
                self._append(child, token_id, logprob, rid)
                child_seqs.append((child, parent))
            token_id, logprob = samples[-1]
            self._append(parent, token_id, logprob, rid)
            child_seqs.append((parent, parent))
        self._fork_then_free(seq_group, child_seqs)
        return [seq for seq, _ in child_seqs]

    def _fork_then_free(self, seq_group: SequenceGroup,
                        pairs: list[tuple[Sequence, Sequence]]) -> None:
        """vLLM's order for the (sequence, parent) pairs a step keeps: every new child is
        added and forked first, and only then are finished parents freed, so a block a
        surviving sequence still needs never drops to a reference count of zero."""
        for seq, parent in pairs:
            if seq is not parent:
                seq_group.add(seq)
                if not seq.is_finished():
                    self.fork_seq(parent, seq)
        for seq, parent in pairs:
            if seq is parent and seq.is_finished():
                self.free_seq(seq)

    # -- beam search ---------------------------------------------------------------------
    def _process_beam_search(self, seq_group: SequenceGroup,
                             parents: list[Sequence]) -> list[Sequence]:
        sp = self._sp = seq_group.sampling_params
        rid = seq_group.request_id
        beam_width = sp.best_of
        # Beams finished in earlier steps (taken before this step's tokens finish more).
        existing_finished = [(s, None, False) for s in seq_group.get_finished_seqs()]
        # 2k candidates over all (parent, token) pairs by cumulative logprob, as vLLM's
        # sampler does with topk over the flattened (parents x vocab) scores.
        proposals = []
        for order, parent in enumerate(parents):
            for token_id, logprob in self.model.beam_candidates(
                    parent, 2 * beam_width, seq_group.output_len):
                proposals.append((parent.cumulative_logprob + logprob, -order, token_id,
                                  logprob, parent))
        proposals.sort(key=lambda p: (p[0], p[1]), reverse=True)
        proposals = proposals[:2 * beam_width]

        # Each parent continues with its last proposal, children take the others.
        by_parent: dict[int, list] = {p.seq_id: [] for p in parents}
        for prop in proposals:
            by_parent[prop[4].seq_id].append(prop)
        child_seqs: list[tuple[Sequence, Sequence]] = []
        origin: dict[int, tuple] = {}
        for parent in parents:
            props = by_parent[parent.seq_id]
            if not props:
                # No candidate continues this beam: vLLM drops it right here, before any
                # fork (its blocks shared with other beams keep their other references).
                parent.status = SequenceStatus.FINISHED_ABORTED
                seq_group.remove(parent.seq_id)
                self.free_seq(parent)
                continue
            # Candidates are plain copies until selected; only the selected ones are
            # forked in the block manager below. Their events are emitted then, too.
            for prop in props[:-1]:
                child = parent.fork(self.next_seq_id())
                self._append(child, prop[2], prop[3], rid, emit=False)
                child_seqs.append((child, parent))
                origin[child.seq_id] = prop
            self._append(parent, props[-1][2], props[-1][3], rid, emit=False)
            child_seqs.append((parent, parent))
            origin[parent.seq_id] = props[-1]

        score = lambda s: s.get_beam_search_score(sp.length_penalty)  # noqa: E731
        selected: list[tuple[Sequence, Sequence]] = []
        unselected: list[tuple[Sequence, Sequence]] = []

        new_finished = [(s, p, True) for s, p in child_seqs if s.is_finished()]
        all_finished = existing_finished + new_finished
        all_finished.sort(key=lambda x: score(x[0]), reverse=True)
        for seq, parent, is_new in all_finished[:beam_width]:
            if is_new:
                selected.append((seq, parent))
        for seq, parent, is_new in all_finished[beam_width:]:
            if is_new:
                unselected.append((seq, parent))
            else:
                seq_group.remove(seq.seq_id)

        running_child_seqs = [(s, p) for s, p in child_seqs if not s.is_finished()]
        running_child_seqs.sort(key=lambda x: score(x[0]), reverse=True)
        if not running_child_seqs:
            stop_beam_search = True
        elif len(all_finished) < beam_width:
            stop_beam_search = False
        elif sp.early_stopping:
            stop_beam_search = True
        else:
            # Stop when no running beam can beat the worst finished one.
            best_running = running_child_seqs[0][0]
            worst_finished = all_finished[beam_width - 1][0]
            stop_beam_search = score(worst_finished) >= score(best_running)
        if stop_beam_search:
            unselected.extend(running_child_seqs)
        else:
            selected.extend(running_child_seqs[:beam_width])
            unselected.extend(running_child_seqs[beam_width:])

        if self.events is not None:
            self._emit_beam_step(rid, proposals, selected, origin)
            for seq, _ in selected:
                self.events.append(TokenSampled(seq.seq_id, seq.get_len() - 1,
                                                seq.get_last_token_id(),
                                                seq.output_logprobs[-1]))
                if seq.is_finished():
                    self.events.append(SequenceFinished(rid, seq.seq_id, seq.status.label))

        # Fork the selected children, free finished parents kept as outputs ...
        self._fork_then_free(seq_group, selected)
        # ... then drop the parents that were not selected (pruned beams).
        for seq, parent in unselected:
            if seq is parent:
                if not seq.is_finished():
                    seq.status = SequenceStatus.FINISHED_ABORTED
                seq_group.remove(seq.seq_id)
                self.free_seq(seq)
        return [seq for seq, _ in selected]

    def _emit_beam_step(self, rid, proposals, selected, origin) -> None:
        kept = {id(origin[s.seq_id]): s for s, _ in selected}
        records = []
        for prop in proposals:
            seq = kept.get(id(prop))
            if seq is None:
                outcome, seq_id = "pruned", None
            else:
                outcome = "finished" if seq.is_finished() else "kept"
                seq_id = seq.seq_id
            records.append(BeamCandidate(prop[4].seq_id, prop[2], prop[0], outcome, seq_id))
        self.events.append(BeamSearchStep(rid, tuple(records)))
