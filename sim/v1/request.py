"""Per-request state (vLLM v0.25.1 `vllm/v1/request.py`: `Request`, `RequestStatus`).

There is no prefill or decode phase: each step the scheduler gives a request tokens so that
`num_computed_tokens` catches up with `num_tokens_with_spec`. `num_computed_tokens`
counts tokens whose KV is computed *or scheduled to be* (it advances when `schedule()`
returns); rejected draft tokens roll it back; preemption resets it to 0 and keeps every
token. `block_hashes` covers every full block of prompt + output tokens and grows as output
tokens arrive.

Additions for the simulation (not in vLLM's Request, which keeps them in the frontend):
`seq_id` (a stable int), `arrival_step`, `first_scheduled_step`, `finished_step`,
`output_len` (the stand-in model's scripted EOS), `cumulative_logprob`,
`parent_request_id` (n > 1 fan-out). Left out: LoRA, multimodal features, structured
output, prompt embeddings, pooling, events/stats timestamps (`arrival_time` is the arrival
step).

Async scheduling (`sim/v1/async_scheduler.py`): `num_output_placeholders` counts the output
tokens already being sampled by a step in flight (scheduled, output not yet processed), and
`async_tokens_to_discard` the stale ones of a request that `reset_prefix_cache` preempted
while its step was in flight. Both stay 0 with the synchronous `Scheduler`.
"""
from __future__ import annotations

import enum
import sys
from collections.abc import Callable

from sim.v1.kv_cache_utils import BlockHash


class RequestStatus(enum.IntEnum):
    """As in vLLM: everything after PREEMPTED is finished."""
    WAITING = enum.auto()
    WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR = enum.auto()
    WAITING_FOR_REMOTE_KVS = enum.auto()
    WAITING_FOR_STREAMING_REQ = enum.auto()
    RUNNING = enum.auto()
    PREEMPTED = enum.auto()
    # Note: anything after PREEMPTED is considered a finished status.
    FINISHED_STOPPED = enum.auto()
    FINISHED_LENGTH_CAPPED = enum.auto()
    FINISHED_ABORTED = enum.auto()
    FINISHED_IGNORED = enum.auto()
    FINISHED_ERROR = enum.auto()
    FINISHED_REPETITION = enum.auto()

    def __str__(self) -> str:
        return self.name

    @staticmethod
    def is_finished(status: RequestStatus) -> bool:
        return status > RequestStatus.PREEMPTED

    @staticmethod
    def get_finished_reason(status: RequestStatus) -> str | None:
        return _FINISHED_REASONS.get(status)

    @property
    def label(self) -> str:
        return self.name.lower()


# vLLM's FinishReason names (`vllm/v1/engine/__init__.py`).
_FINISHED_REASONS = {
    RequestStatus.FINISHED_STOPPED: "stop",
    RequestStatus.FINISHED_LENGTH_CAPPED: "length",
    RequestStatus.FINISHED_ABORTED: "abort",
    RequestStatus.FINISHED_IGNORED: "length",
    RequestStatus.FINISHED_ERROR: "error",
    RequestStatus.FINISHED_REPETITION: "repetition",
}

_PREEMPTED = RequestStatus.PREEMPTED
_NEVER = sys.maxsize     # next_block_hash_at without a block hasher


class Request:
    __slots__ = (
        "request_id", "client_index", "priority", "sampling_params", "eos_token_id",
        "arrival_time", "status", "stop_reason", "max_tokens", "min_tokens", "ignore_eos",
        "stop_token_ids", "cache_salt", "prompt_token_ids", "num_prompt_tokens",
        "output_token_ids", "all_token_ids", "num_tokens", "num_output_placeholders",
        "async_tokens_to_discard", "spec_token_ids", "num_computed_tokens",
        "num_cached_tokens", "num_preemptions", "is_prefill_chunk",
        "skip_reading_prefix_cache", "block_hashes", "_block_hasher", "_num_hashed_tokens",
        "_block_size", "next_block_hash_at", "kv_transfer_params", "last_sched_seq",
        # simulation additions
        "seq_id", "arrival_step", "first_scheduled_step", "finished_step", "output_len",
        "cumulative_logprob", "parent_request_id",
    )

    def __init__(self, request_id: str, prompt_token_ids: list[int], sampling_params,
                 eos_token_id: int | None, arrival_time: float = 0.0, priority: int = 0,
                 cache_salt: str | None = None,
                 block_hasher: Callable[[Request], list[BlockHash]] | None = None,
                 block_size: int = 0, seq_id: int = 0, output_len: int | None = None,
                 parent_request_id: str | None = None) -> None:
        self.request_id = request_id
        self.client_index = 0
        self.priority = priority
        self.sampling_params = sampling_params
        self.eos_token_id = eos_token_id
        self.arrival_time = arrival_time
        self.status = RequestStatus.WAITING
        self.stop_reason: int | str | None = None
        self.max_tokens = sampling_params.max_tokens
        # Read once here (check_stop runs for every token).
        self.min_tokens = getattr(sampling_params, "min_tokens", 0)
        self.ignore_eos = getattr(sampling_params, "ignore_eos", False)
        self.stop_token_ids = tuple(getattr(sampling_params, "stop_token_ids", ()) or ())
        self.cache_salt = cache_salt
        # P/D: the connector's parameters (vLLM reads them from sampling_params.extra_args).
        extra_args = getattr(sampling_params, "extra_args", None)
        self.kv_transfer_params: dict | None = (
            extra_args.get("kv_transfer_params") if extra_args is not None else None)
        # The scheduler's count of non-empty steps when it last scheduled this request
        # (kept only when it defers block frees: a KV consumer with batches in flight).
        self.last_sched_seq = 0
        self.prompt_token_ids = list(prompt_token_ids)
        self.num_prompt_tokens = len(self.prompt_token_ids)
        # vLLM exposes these through read-only views (ConstantList properties); plain lists
        # here, read for every token: only append_output_token_ids changes them.
        self.output_token_ids: list[int] = []
        self.all_token_ids: list[int] = list(self.prompt_token_ids)
        # vLLM: a property, len(all_token_ids); an attribute here (read for every token).
        self.num_tokens = self.num_prompt_tokens
        self.num_output_placeholders = 0   # async scheduling only
        self.async_tokens_to_discard = 0   # async scheduling only (reset_prefix_cache)
        self.spec_token_ids: list[int] = []
        self.num_computed_tokens = 0
        self.num_cached_tokens = -1        # the prefix hit at first admission
        self.num_preemptions = 0
        self.is_prefill_chunk = False
        # vLLM: sampling_params.skip_reading_prefix_cache when set (it is set for prompt
        # logprobs, which are not simulated), else False.
        self.skip_reading_prefix_cache = bool(
            getattr(sampling_params, "skip_reading_prefix_cache", None) or False)
        self.block_hashes: list[BlockHash] = []
        self._block_hasher = block_hasher
        # How many tokens the hashes cover (len(block_hashes) * block_size): lets
        # append_output_token_ids skip the hasher until another block is full.
        self._block_size = block_size
        self._num_hashed_tokens = 0
        # The token count at which another block is full and must be hashed (never without
        # a hasher): one comparison per appended token (update_from_output writes the
        # append out).
        self.next_block_hash_at = 0 if block_hasher is not None else _NEVER
        self.seq_id = seq_id
        self.arrival_step = int(arrival_time)
        self.first_scheduled_step: int | None = None
        self.finished_step: int | None = None
        self.output_len = output_len
        self.cumulative_logprob = 0.0
        self.parent_request_id = parent_request_id
        self.update_block_hashes()

    # -- token lists ---------------------------------------------------------------------
    @property
    def num_tokens_with_spec(self) -> int:
        return self.num_tokens + len(self.spec_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    def get_output_len(self) -> int:
        return len(self.output_token_ids)

    def append_output_token_ids(self, token_ids: int | list[int]) -> None:
        # Scheduler.update_from_output writes out the one-token case (once per generated
        # token): keep the two in step.
        if isinstance(token_ids, int):
            self.output_token_ids.append(token_ids)
            self.all_token_ids.append(token_ids)
            self.num_tokens += 1
        else:
            self.output_token_ids.extend(token_ids)
            self.all_token_ids.extend(token_ids)
            self.num_tokens += len(token_ids)
        if self.num_tokens >= self.next_block_hash_at:
            self.update_block_hashes()

    def truncate_last_prompt_token(self) -> None:
        """Drop the last prompt token (NIXL's prefill side does it for Mamba models, in
        place on the request's lists; the block hashes are left as they were, as there)."""
        self.prompt_token_ids.pop()
        self.all_token_ids.pop()
        self.num_prompt_tokens -= 1
        self.num_tokens -= 1

    def update_block_hashes(self) -> None:
        """Hash every block that became full (prompt and output tokens alike)."""
        if self._block_hasher is not None:
            self.block_hashes.extend(self._block_hasher(self))
            self._num_hashed_tokens = len(self.block_hashes) * self._block_size
            self.next_block_hash_at = self._num_hashed_tokens + self._block_size

    # -- status ----------------------------------------------------------------------------
    def is_finished(self) -> bool:
        return self.status > _PREEMPTED

    def get_finished_reason(self) -> str | None:
        return RequestStatus.get_finished_reason(self.status)

    def __lt__(self, other: Request) -> bool:
        """The priority queue's order: smaller priority, then earlier arrival, then id."""
        if self.priority != other.priority:
            return self.priority < other.priority
        if self.arrival_time != other.arrival_time:
            return self.arrival_time < other.arrival_time
        if self.request_id != other.request_id:
            return self.request_id < other.request_id
        return id(self) < id(other)

    def __repr__(self) -> str:
        return (f"Request({self.request_id!r}, status={self.status.label}, "
                f"num_tokens={self.num_tokens}, computed={self.num_computed_tokens})")
