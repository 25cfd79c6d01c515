"""The PagedAttention kernel's progress, record by record: what one head has computed after
each step of `paged_attention_v1_trace` / `paged_attention_v2_trace` (sim.perf.attention).

A record says what one step did (the scores of a block, a softmax, a block's values added,
a partition's result, the reduce); a `KernelStep` adds what the head holds after it (every
score so far, the weights, which blocks' values are in the output, the partitions done), so
a picture of any step needs nothing but that step. The walk starts with a "before" step
(nothing computed) and ends with the `AttentionOutput` of every head, beside plain
softmax attention over the same keys and values gathered into one contiguous array.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sim.perf.attention import (
    BlockScores,
    PagedAttentionInputs,
    PartitionResult,
    PartitionsMerged,
    Softmax,
    ValueAccumulated,
    contiguous_attention,
    gather_kv,
    paged_attention_v1_trace,
    paged_attention_v2_trace,
)


@dataclass(frozen=True)
class HeadProgress:
    """What one head has computed so far (positions are the sequence's)."""
    scores: dict[int, float] = field(default_factory=dict)        # position -> q.k x scale
    masked: frozenset[int] = frozenset()                          # positions past the end
    weights: dict[int, float] = field(default_factory=dict)       # position -> softmax weight
    accumulated: frozenset[int] = frozenset()                     # logical blocks in the output
    partitions: dict[int, PartitionResult] = field(default_factory=dict)   # v2, in order
    output: tuple[float, ...] | None = None                       # the running output


@dataclass(frozen=True)
class KernelStep:
    """One step of the walk: "before", or the kind of the record it shows."""
    kind: str
    record: object | None = None
    head: HeadProgress | None = None          # for the record's head; None before and at the end


@dataclass(frozen=True)
class KernelWalk:
    """The steps of one decode query's attention, with the inputs they were computed from
    and the contiguous reference (`[num_heads][head_size]`)."""
    inputs: PagedAttentionInputs
    partition_size: int | None                # None: v1
    steps: tuple[KernelStep, ...]
    reference: list[list[float]]

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self):
        return iter(self.steps)

    def __getitem__(self, i):
        return self.steps[i]


def walk(records) -> list[KernelStep]:
    """A `KernelStep` per record, after a "before" step. A head's progress starts empty when
    the records move on to the next head (each head is its own thread block)."""
    steps = [KernelStep("before")]
    progress = HeadProgress()
    current_head = None
    for rec in records:
        if rec.kind == "attention_output":
            steps.append(KernelStep(rec.kind, rec))
            continue
        if rec.head != current_head:
            current_head = rec.head
            progress = HeadProgress()
        progress = advance(progress, rec)
        steps.append(KernelStep(rec.kind, rec, progress))
    return steps


def advance(p: HeadProgress, rec) -> HeadProgress:
    """The head's progress after one record (a new HeadProgress; `p` is left as it was)."""
    if isinstance(rec, BlockScores):
        scores, masked = dict(p.scores), set(p.masked)
        for pos, score in zip(rec.positions, rec.scores):
            if score is None:
                masked.add(pos)
            else:
                scores[pos] = score
        return HeadProgress(scores, frozenset(masked), p.weights, p.accumulated,
                            p.partitions, p.output)
    if isinstance(rec, Softmax):
        weights = dict(p.weights)
        weights.update(zip(rec.positions, rec.weights))
        return HeadProgress(p.scores, p.masked, weights, p.accumulated, p.partitions,
                            p.output)
    if isinstance(rec, ValueAccumulated):
        return HeadProgress(p.scores, p.masked, p.weights,
                            p.accumulated | {rec.logical_block}, p.partitions, rec.output)
    if isinstance(rec, PartitionResult):
        return HeadProgress(p.scores, p.masked, p.weights, p.accumulated,
                            {**p.partitions, rec.partition: rec}, p.output)
    if isinstance(rec, PartitionsMerged):
        return HeadProgress(p.scores, p.masked, p.weights, p.accumulated, p.partitions,
                            rec.output)
    raise ValueError(f"not a per-head record of the kernel: {rec!r}")


def walk_kernel(inputs: PagedAttentionInputs, *, partition_size: int | None = None,
                head: int | None = None) -> KernelWalk:
    """Run paged attention v1 (`partition_size` None) or v2 on `inputs` and walk its
    records. With `head`, only that head's records are kept (every head runs the same walk
    in its own thread block); the last step still holds every head's output."""
    if partition_size is None:
        records = paged_attention_v1_trace(**inputs.args())
    else:
        records = paged_attention_v2_trace(**inputs.args(), partition_size=partition_size)
    if head is not None:
        records = [r for r in records if r.kind == "attention_output" or r.head == head]
    keys, values = gather_kv(inputs.key_cache, inputs.value_cache, inputs.block_table,
                             inputs.seq_len, inputs.block_size)
    return KernelWalk(inputs, partition_size, tuple(walk(records)),
                      contiguous_attention(inputs.query, keys, values, inputs.scale))
