"""Event records: every state change a reader should see.

Views draw from these and narration is written from them, so the picture and the text
cannot disagree. They are additions to vLLM (which logs nothing of the sort); the field
names use vLLM's vocabulary. Records are NamedTuples: immutable, cheap to create on the
per-token path, and JSON-ready through `event_to_dict`.
"""
from __future__ import annotations

from typing import NamedTuple


class RequestArrived(NamedTuple):
    request_id: str
    prompt_len: int


class PromptIgnored(NamedTuple):
    request_id: str
    num_tokens: int
    reason: str          # "prompt_limit" (longer than the prompt limit) or "never_fits"


class Admitted(NamedTuple):
    """A waiting group was scheduled for its (possibly recomputing) prefill."""
    request_id: str
    num_tokens: int
    recompute: bool      # True when it is a recompute-preempted group coming back


class BlockAllocated(NamedTuple):
    """A physical block entered one or more block tables at `logical`."""
    seq_ids: tuple[int, ...]
    logical: int
    physical: int
    device: str
    ref_count: int


class CopyOnWrite(NamedTuple):
    """`seq_id` had to write into a shared partial block: it got `dst`, a copy of `src`."""
    seq_id: int
    logical: int
    src: int
    dst: int


class BlockFreed(NamedTuple):
    """A block's reference count reached zero: it is back on its device's free list."""
    device: str
    physical: int


class Forked(NamedTuple):
    parent_seq_id: int
    child_seq_id: int
    shared_blocks: tuple[int, ...]


class SeqFreed(NamedTuple):
    """A sequence's block table was dropped (its blocks released)."""
    seq_id: int


class Preempted(NamedTuple):
    request_id: str
    mode: str              # "recompute" or "swap"
    needed_by: str         # the running group that could not append a slot
    victim_is_self: bool   # no other group was left, so it preempted itself


class SwappedOut(NamedTuple):
    request_id: str
    mapping: tuple[tuple[int, int], ...]   # (gpu_block, cpu_block)


class SwappedIn(NamedTuple):
    request_id: str
    mapping: tuple[tuple[int, int], ...]   # (cpu_block, gpu_block)


class KVWritten(NamedTuple):
    """The model step wrote the KV of positions [first_pos, first_pos + num_tokens)."""
    seq_id: int
    first_pos: int
    num_tokens: int


class TokenSampled(NamedTuple):
    seq_id: int
    position: int
    token_id: int
    logprob: float


class BeamCandidate(NamedTuple):
    parent_seq_id: int
    token_id: int
    cumulative_logprob: float
    outcome: str           # "kept", "finished", or "pruned"
    seq_id: int | None     # the sequence that carries it on (None when pruned)


class BeamSearchStep(NamedTuple):
    request_id: str
    candidates: tuple[BeamCandidate, ...]


class SequenceFinished(NamedTuple):
    request_id: str
    seq_id: int
    status: str


class BlocksLeaked(NamedTuple):
    """vLLM v0.5.5's `BlockSpaceManagerV1.allocate` set the reference count of a re-admitted
    group's prompt blocks to `seq_group.num_seqs()`, which counts the group's finished
    sequences too: `refs` references per block that no block table holds and nothing will
    ever release, so `blocks` (GPU) are never freed. Only a recompute-preempted sampling
    group whose other samples had finished gets here (a bug of vLLM, kept as it is)."""
    request_id: str
    blocks: tuple[int, ...]
    refs: int


class PrefillRunAsDecode(NamedTuple):
    """vLLM v0.5.5 ran `seq_id`'s recompute as a decode: `SequenceGroup.is_prefill()` reads
    the group's first sequence, `first_seq_id`, which had finished, so the model computed
    the KV of the last token only (position `position`) and sampled one token, without a
    fork; the KV of positions 0 to position - 1 was never recomputed (its slots hold what
    the blocks held before)."""
    request_id: str
    seq_id: int
    first_seq_id: int
    position: int


class RequestFinished(NamedTuple):
    request_id: str
    status: str


class Aborted(NamedTuple):
    request_id: str
    queue: str             # "pending", "waiting", "running" or "swapped"


Event = (RequestArrived | PromptIgnored | Admitted | BlockAllocated | CopyOnWrite | BlockFreed
         | Forked | SeqFreed | Preempted | SwappedOut | SwappedIn | KVWritten | TokenSampled
         | BeamSearchStep | SequenceFinished | BlocksLeaked | PrefillRunAsDecode
         | RequestFinished | Aborted)


# fast_event(cls, values) is cls(*values) without NamedTuple's Python-level __new__: the
# same object at a third of the cost, for the events made once per token (KVWritten,
# TokenSampled). It is tuple.__new__ itself, so the call stays in C.
fast_event = tuple.__new__


def event_to_dict(event: tuple) -> dict:
    d = {"type": type(event).__name__}
    for name, value in zip(event._fields, event):
        if isinstance(value, tuple):
            value = [v._asdict() if hasattr(v, "_asdict") else
                     (list(v) if isinstance(v, tuple) else v) for v in value]
        d[name] = value
    return d


# -- V1 (vLLM v0.25.1, sim/v1) ------------------------------------------------------------
# V1 also records RequestArrived, Admitted, BlockAllocated, BlockFreed, Preempted (mode
# "recompute"), KVWritten, TokenSampled, RequestFinished and Aborted above.

class PrefixCacheHit(NamedTuple):
    """V1: a waiting request was admitted with a prefix-cache hit: the KV of its first
    `num_tokens` tokens is read from `blocks` (touched, not recomputed)."""
    request_id: str
    blocks: tuple[int, ...]
    num_tokens: int


class BlockTouched(NamedTuple):
    """V1: a prefix-cache hit took a reference on a cached block (taking it out of the free
    queue when its count was 0)."""
    physical: int
    ref_count: int


class BlockEvicted(NamedTuple):
    """V1: a free block that still held a cached hash was popped for reuse: its hash left
    the prefix cache (`block_hash`: a short hex prefix)."""
    physical: int
    block_hash: str


class BlockCached(NamedTuple):
    """V1: a full block got its hash (short hex prefix) and entered the prefix cache; it is
    block `logical` of `request_id`'s block table."""
    physical: int
    block_hash: str
    request_id: str
    logical: int


class ChunkScheduled(NamedTuple):
    """V1: a request computes prompt (or recomputed) tokens this step: `num_tokens` of them,
    after the `num_computed_before` it had (prefix-cache hits included)."""
    request_id: str
    num_tokens: int
    num_computed_before: int


class BlockSkipped(NamedTuple):
    """V1, a sliding-window (or chunked local attention) KV cache group: block `logical` of
    `request_id`'s table in group `kv_cache_group_id` lies wholly before the attention
    window of the next token. It goes back to the pool (a BlockFreed follows when no other
    table holds it) and the null block takes its place in the table."""
    request_id: str
    kv_cache_group_id: int
    logical: int
    physical: int


class GroupBlockAllocated(NamedTuple):
    """V1 with several KV cache groups (a hybrid model): `physical` became block
    `logical` of `request_id`'s table in group `kv_cache_group_id`. (One group: the
    engine records BlockAllocated instead.)"""
    request_id: str
    kv_cache_group_id: int
    logical: int
    physical: int


class TokenDiscarded(NamedTuple):
    """V1's async loop: a token sampled by a step that was in flight when its request
    stopped (EOS, a stop token) or was aborted, or was preempted by reset_prefix_cache, is
    thrown away when that step's output is processed. `reason`: the request's status label
    ("finished_stopped", "finished_aborted", ...) or "reset_prefix_cache"."""
    request_id: str
    seq_id: int
    position: int
    token_id: int
    reason: str


Event = (Event | PrefixCacheHit | BlockTouched | BlockEvicted | BlockCached
         | ChunkScheduled | BlockSkipped | GroupBlockAllocated | TokenDiscarded)


# -- V1's KV connector (sim/v1/kv_connector/, P/D disaggregation) ---------------------------

class WaitingForRemoteKVs(NamedTuple):
    """V1 with a KV connector: a waiting request got blocks for `num_external_tokens`
    tokens that the connector loads asynchronously (after `num_local_tokens` hit in the
    local prefix cache); it waits in WAITING_FOR_REMOTE_KVS, its blocks held, not cached."""
    request_id: str
    num_local_tokens: int
    num_external_tokens: int
    blocks: tuple[int, ...]


class RemoteKVsReady(NamedTuple):
    """V1: a request's asynchronous load finished; it leaves WAITING_FOR_REMOTE_KVS with
    `num_computed_tokens` computed (its last prompt token recomputed when all arrived;
    fewer after a load failure) and can be scheduled."""
    request_id: str
    num_computed_tokens: int
    failed: bool


class KVLoadFailed(NamedTuple):
    """V1: blocks a request loaded from outside were reported invalid; its computed count
    falls back to the block before the first invalid one (`policy` "recompute"), or the
    request fails (`policy` "fail")."""
    request_id: str
    invalid_blocks: tuple[int, ...]
    num_computed_tokens: int
    policy: str


class BlocksHeld(NamedTuple):
    """V1: a request finished but its connector keeps its blocks (they are being sent):
    they are freed when the worker reports the request in `finished_sending`."""
    request_id: str
    blocks: tuple[int, ...]


class KVTransferFinished(NamedTuple):
    """V1: the worker side reported a request done `direction` ("sending": its held blocks
    are freed now; "recving": it can be scheduled next step)."""
    request_id: str
    direction: str


Event = (Event | WaitingForRemoteKVs | RemoteKVsReady | KVLoadFailed | BlocksHeld
         | KVTransferFinished)


# -- V1's offloading connector (CPU tier, sim/v1/kv_connector/offloading_connector.py) --------

class OffloadStoreJob(NamedTuple):
    """V1 with CPU offloading: a store job, built after the step was scheduled: the GPU
    blocks `gpu_blocks` of `request_id` (full once this step's forward pass is done) are
    to be copied into CPU blocks `cpu_blocks`; the worker starts it at the next step.
    `evicted`: hashes (short hex prefixes) of CPU blocks evicted to make room."""
    request_id: str
    job_id: int
    gpu_blocks: tuple[int, ...]
    cpu_blocks: tuple[int, ...]
    evicted: tuple[str, ...]


class OffloadStoreSkipped(NamedTuple):
    """V1 with CPU offloading: the CPU tier could not take `num_blocks` new blocks of
    `request_id` (every CPU block is being stored or loaded): they are not offloaded."""
    request_id: str
    num_blocks: int


class OffloadLoadJob(NamedTuple):
    """V1 with CPU offloading: `request_id` missed the GPU prefix cache beyond
    `num_local_tokens` but `num_tokens` more are in the CPU tier: CPU blocks `cpu_blocks`
    are loaded into its GPU blocks `gpu_blocks` (it waits in WAITING_FOR_REMOTE_KVS)."""
    request_id: str
    job_id: int
    cpu_blocks: tuple[int, ...]
    gpu_blocks: tuple[int, ...]
    num_local_tokens: int
    num_tokens: int


class OffloadJobDone(NamedTuple):
    """V1 with CPU offloading: the worker reported a transfer job complete (`kind` "store":
    its CPU blocks can now be loaded; "load": its GPU blocks hold the KV)."""
    request_id: str
    job_id: int
    kind: str


class OffloadJobsFlushed(NamedTuple):
    """V1 with CPU offloading: the worker must finish store jobs before the forward pass,
    because their GPU blocks are about to change hands (`reason`: "preempted", "reused")."""
    job_ids: tuple[int, ...]
    reason: str


class OffloadLookupDeferred(NamedTuple):
    """V1 with CPU offloading: the connector cannot answer for `request_id` yet (`reason`:
    "transfer in flight", its own store or load is not done; "being loaded", another
    request is loading the same blocks); the scheduler asks again next step."""
    request_id: str
    reason: str


Event = (Event | OffloadStoreJob | OffloadStoreSkipped | OffloadLoadJob | OffloadJobDone
         | OffloadJobsFlushed | OffloadLookupDeferred)
