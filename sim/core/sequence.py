"""Sequences and sequence groups (vLLM v0.5.5 `vllm/sequence.py`).

A request is a `SequenceGroup`. It starts with one `Sequence` (the prompt); parallel
sampling and beam search fork more sequences from it after the prompt step, and they share
KV blocks through the block manager.
"""
from __future__ import annotations

import enum
from dataclasses import InitVar, dataclass, field


class SequenceStatus(enum.IntEnum):
    """As in vLLM v0.5.5: an IntEnum where everything after SWAPPED is finished, so the
    hot-path check is one integer comparison."""
    WAITING = 0
    RUNNING = 1
    SWAPPED = 2
    FINISHED_STOPPED = 3         # sampled a stop / EOS token
    FINISHED_LENGTH_CAPPED = 4   # reached max_tokens or max_model_len
    FINISHED_ABORTED = 5         # aborted, or a pruned beam
    FINISHED_IGNORED = 6         # prompt can never be scheduled

    @staticmethod
    def is_finished(status: SequenceStatus) -> bool:
        return status > 2

    @property
    def label(self) -> str:
        return self.name.lower()


class SequenceStage(enum.Enum):
    PREFILL = "prefill"
    DECODE = "decode"


# Enum members as module constants: on CPython 3.11 `SequenceStage.DECODE` is a descriptor
# lookup (~0.1 us), and these are read for every sequence on every step.
_PREFILL, _DECODE = SequenceStage.PREFILL, SequenceStage.DECODE


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """The subset of vLLM's SamplingParams that changes what the engine does with memory."""

    n: int = 1
    best_of: int | None = None
    use_beam_search: bool = False
    max_tokens: int = 16
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    length_penalty: float = 1.0
    early_stopping: bool = False

    def __post_init__(self) -> None:
        if self.best_of is None:
            object.__setattr__(self, "best_of", self.n)
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        if self.best_of < self.n:
            raise ValueError(f"best_of must be at least n, got best_of={self.best_of} "
                             f"and n={self.n}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.use_beam_search and self.best_of < 2:
            # vLLM: "best_of must be greater than 1 when using beam search."
            raise ValueError("beam search needs a beam width (best_of) of at least 2")


class Sequence:
    """One sequence of tokens and its progress (vLLM merges Sequence and SequenceData;
    the fields keep vLLM's names)."""

    __slots__ = ("seq_id", "block_size", "prompt_token_ids", "output_token_ids",
                 "output_logprobs", "cumulative_logprob", "num_computed_tokens", "stage",
                 "status", "parent_seq_id", "eos_token_id", "num_tokens")

    def __init__(self, seq_id: int, prompt_token_ids: list[int], block_size: int,
                 eos_token_id: int | None = None) -> None:
        self.seq_id = seq_id
        self.block_size = block_size
        self.prompt_token_ids = list(prompt_token_ids)
        self.output_token_ids: list[int] = []
        # Prompt + output tokens: get_len(), as an attribute because the engine, the
        # output processor and the stand-in model read it for every token.
        self.num_tokens = len(self.prompt_token_ids)
        self.output_logprobs: list[float] = []
        self.cumulative_logprob = 0.0
        # Tokens whose KV is in the cache; the rest must be computed (prefill or decode).
        self.num_computed_tokens = 0
        self.stage = SequenceStage.PREFILL
        self.status = SequenceStatus.WAITING
        self.parent_seq_id: int | None = None
        self.eos_token_id = eos_token_id

    # -- lengths ---------------------------------------------------------------------
    def get_len(self) -> int:
        return self.num_tokens

    def get_prompt_len(self) -> int:
        return len(self.prompt_token_ids)

    def get_output_len(self) -> int:
        return len(self.output_token_ids)

    def get_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    def get_last_token_id(self) -> int:
        return self.output_token_ids[-1] if self.output_token_ids else self.prompt_token_ids[-1]

    @property
    def n_blocks(self) -> int:
        """Logical blocks needed to hold every token of the sequence."""
        return (self.num_tokens + self.block_size - 1) // self.block_size

    # -- progress --------------------------------------------------------------------
    def get_num_uncomputed_tokens(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    def get_num_new_tokens(self) -> int:
        if self.stage is _DECODE:
            return 1
        return self.get_num_uncomputed_tokens()

    def update_num_computed_tokens(self, num_new_computed_tokens: int) -> None:
        self.num_computed_tokens += num_new_computed_tokens
        if self.get_num_uncomputed_tokens() == 0:
            self.stage = _DECODE

    def reset_state_for_recompute(self) -> None:
        """Preempted by recompute: the KV is dropped; the next prefill recomputes the
        prompt *and* the tokens generated so far."""
        self.num_computed_tokens = 0
        self.stage = SequenceStage.PREFILL

    def is_prefill(self) -> bool:
        return self.stage is _PREFILL

    def append_token_id(self, token_id: int, logprob: float = 0.0) -> None:
        self.output_token_ids.append(token_id)
        self.num_tokens += 1
        self.output_logprobs.append(logprob)
        self.cumulative_logprob += logprob

    def is_finished(self) -> bool:
        return self.status > 2    # past SWAPPED

    def fork(self, new_seq_id: int) -> Sequence:
        child = Sequence(new_seq_id, self.prompt_token_ids, self.block_size, self.eos_token_id)
        child.output_token_ids = list(self.output_token_ids)
        child.num_tokens = self.num_tokens
        child.output_logprobs = list(self.output_logprobs)
        child.cumulative_logprob = self.cumulative_logprob
        child.num_computed_tokens = self.num_computed_tokens
        child.stage = self.stage
        child.status = self.status
        child.parent_seq_id = self.seq_id
        return child

    def get_beam_search_score(self, length_penalty: float = 1.0) -> float:
        """vLLM's score: cumulative logprob / length ** length_penalty, where a final
        EOS token is not counted in the length."""
        seq_len = self.get_len()
        if self.eos_token_id is not None and self.get_last_token_id() == self.eos_token_id:
            seq_len -= 1
        return self.cumulative_logprob / (seq_len ** length_penalty)

    def __repr__(self) -> str:
        return (f"Sequence(seq_id={self.seq_id}, status={self.status.label}, "
                f"len={self.get_len()}, computed={self.num_computed_tokens})")


@dataclass(slots=True, eq=False)
class SequenceGroup:
    """A request: its sequences, sampling parameters and arrival step."""

    request_id: str
    seqs: InitVar[list[Sequence]]
    sampling_params: SamplingParams
    arrival_step: int = 0
    # For the stand-in model only: the output length at which it emits EOS (the request's
    # "true" length, known to an oracle). None means it never does.
    output_len: int | None = None
    seqs_dict: dict[int, Sequence] = field(init=False)
    first_scheduled_step: int | None = None
    finished_step: int | None = None

    def __post_init__(self, seqs: list[Sequence]) -> None:
        self.seqs_dict = {s.seq_id: s for s in seqs}

    def get_seqs(self, status: SequenceStatus | None = None) -> list[Sequence]:
        if status is None:
            return list(self.seqs_dict.values())
        return [s for s in self.seqs_dict.values() if s.status is status]

    def num_seqs(self, status: SequenceStatus | None = None) -> int:
        if status is None:
            return len(self.seqs_dict)
        if len(self.seqs_dict) == 1:   # most groups, on every step
            for s in self.seqs_dict.values():
                return 1 if s.status is status else 0
        return len([s for s in self.seqs_dict.values() if s.status is status])

    def get_unfinished_seqs(self) -> list[Sequence]:
        return [s for s in self.seqs_dict.values() if s.status <= 2]

    def get_finished_seqs(self) -> list[Sequence]:
        return [s for s in self.seqs_dict.values() if s.status > 2]

    def num_unfinished_seqs(self) -> int:
        return len([s for s in self.seqs_dict.values() if s.status <= 2])

    def get_max_num_running_seqs(self) -> int:
        """The seats this group may take in a batch. Before its prompt step a
        `best_of = 4` request has one sequence but will run four: it is charged four."""
        sp = self.sampling_params
        if sp.best_of == 1 and len(self.seqs_dict) == 1:
            for s in self.seqs_dict.values():
                return 0 if s.status > 2 else 1
        if sp.use_beam_search:
            return sp.best_of
        if sp.best_of > len(self.seqs_dict):
            return sp.best_of
        return self.num_unfinished_seqs()

    def find(self, seq_id: int) -> Sequence:
        return self.seqs_dict[seq_id]

    def add(self, seq: Sequence) -> None:
        if seq.seq_id in self.seqs_dict:
            raise ValueError(f"Sequence {seq.seq_id} already exists in {self.request_id}")
        self.seqs_dict[seq.seq_id] = seq

    def remove(self, seq_id: int) -> None:
        if seq_id not in self.seqs_dict:
            raise ValueError(f"Sequence {seq_id} not found in {self.request_id}")
        del self.seqs_dict[seq_id]

    def is_finished(self) -> bool:
        for s in self.seqs_dict.values():
            if s.status <= 2:
                return False
        return True

    def is_prefill(self) -> bool:
        # vLLM reads the first sequence only ("Every sequence should be in the same stage").
        # They do share it, forks happen after the prompt step, except in a sampling group
        # recomputed after its first sample finished: that one stays in the decode stage
        # while the last running sample waits for its recompute (LLMEngine._run_as_decode).
        for s in self.seqs_dict.values():
            return s.stage is _PREFILL
        return False

    def __repr__(self) -> str:
        return f"SequenceGroup({self.request_id!r}, seqs={len(self.seqs_dict)})"
