"""Paged attention for one query per sequence (vLLM v0.5.5 `csrc/attention/`,
`PagedAttention.forward_decode` in `vllm/attention/ops/paged_attn.py`).

During decoding each sequence contributes one new query token. Its keys and values
(one per earlier position) are not contiguous in memory: they sit in fixed-size physical
blocks found through the sequence's block table. Position `j` lives in physical block
`block_table[j // block_size]` at slot `j % block_size`.

Two kernels compute the same result:

- v1 walks the logical blocks and scores every slot of each block it visits, the last
  block's padding included: the kernel loads whole blocks, computes `q.k` for the padded
  slots too, then stores 0 for their logits and leaves them out of the max (and the softmax
  runs only over the positions below the length). It takes one softmax, then walks the
  blocks again to accumulate the weighted sum of V; the last block's padded values are
  loaded as well and zeroed (stale slots may hold NaNs), so they add nothing
  (`csrc/attention/attention_kernels.cu`, `paged_attention_kernel`: `mask ? 0.f : qk`,
  `qk_max = mask ? qk_max : fmaxf(qk_max, qk)`, and the zeroed `v_vec` of the last block).
- v2 cuts the sequence into partitions of `partition_size` tokens. Each partition keeps
  its own max logit `m_i`, exponential sum `l_i` and partial output; a reduce step
  rescales partition i by `exp(m_i - M)` against the global max `M` and merges them
  (the flash-decoding / online-softmax merge). It exists so that long sequences spread
  over more thread blocks on the GPU; the math is the same.

Here the "GPU memory" is nested lists of floats, small enough to trace step by step.

KV cache layout used here, per layer: `key_cache[block][kv_head][slot][d]` and the same
for `value_cache`. vLLM's PagedAttention backend stores the same numbers as
key `[num_blocks, num_kv_heads, head_size/x, block_size, x]` (x = 16 bytes / element
size) and value `[num_blocks, num_kv_heads, head_size, block_size]`, i.e.
`key_cache[b][h][s][d] == vllm_key[b][h][d // x][s][d % x]` and
`value_cache[b][h][s][d] == vllm_value[b][h][d][s]`. Those interleavings only make the
CUDA threads' loads coalesce; the block and head dimensions come first in both, which is
what makes a block table work. (The FlashAttention backend uses
`[2, num_blocks, block_size, num_kv_heads, head_size]`: slot before head.)

Where this differs from the CUDA kernels: float64 instead of fp16/bf16 with float32
accumulation, and no `+ 1e-6` in the softmax denominators (the kernels add it to guard
float32 division; with it the result would not equal plain softmax attention exactly).
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

# vLLM's `_PARTITION_SIZE` for paged attention v2.
PARTITION_SIZE = 512
# Above this sequence length vLLM always uses v2 (see `use_v1`).
V1_MAX_SEQ_LEN = 8192

Vector = list[float]


# --------------------------------------------------------------------------- the store

def new_kv_cache(num_blocks: int, num_kv_heads: int, block_size: int, head_size: int,
                 fill: float = 0.0) -> tuple[list, list]:
    """An empty (key_cache, value_cache) pair, `[block][kv_head][slot][head_size]`."""
    def one() -> list:
        return [[[[fill] * head_size for _ in range(block_size)]
                 for _ in range(num_kv_heads)] for _ in range(num_blocks)]
    return one(), one()


def slot_for(block_table: Sequence[int], block_size: int, position: int) -> tuple[int, int]:
    """(physical block, slot) of a logical position. vLLM's slot mapping is the flat
    `block * block_size + slot` of the same pair."""
    logical = position // block_size
    if logical >= len(block_table):
        raise ValueError(f"position {position} needs logical block {logical}, but the "
                         f"block table has only {len(block_table)} entries")
    return block_table[logical], position % block_size


def write_kv(key_cache: list, value_cache: list, block_table: Sequence[int],
             block_size: int, position: int, key: Sequence[Sequence[float]],
             value: Sequence[Sequence[float]]) -> tuple[int, int]:
    """Store one token's K and V (`[num_kv_heads][head_size]` each) at its slot, as
    vLLM's `reshape_and_cache` does before attention runs. Returns (block, slot)."""
    block, slot = slot_for(block_table, block_size, position)
    for h, (k, v) in enumerate(zip(key, value)):
        key_cache[block][h][slot] = list(k)
        value_cache[block][h][slot] = list(v)
    return block, slot


def gather_kv(key_cache: list, value_cache: list, block_table: Sequence[int],
              seq_len: int, block_size: int) -> tuple[list, list]:
    """Contiguous keys and values `[seq_len][num_kv_heads][head_size]`, gathered the way
    vLLM's kernel test builds its reference (`ref_single_query_cached_kv_attention`)."""
    keys, values = [], []
    for j in range(seq_len):
        block, slot = slot_for(block_table, block_size, j)
        keys.append([list(head[slot]) for head in key_cache[block]])
        values.append([list(head[slot]) for head in value_cache[block]])
    return keys, values


# ------------------------------------------------------------------------ trace records
# Plain data for the widget: `dataclasses.asdict(record)` is JSON-ready (tuples become
# lists). Every record names the query head it belongs to; `partition` is None in v1.

@dataclass(frozen=True, slots=True)
class BlockScores:
    """One logical block visited: its physical block, the positions of its slots and
    `q.k * scale` for each. Slots at or past the partition's end are masked: their score is
    None (the kernel stores 0 for that logit and leaves it out of the max and the softmax),
    and `padded_qk` keeps the `q.k * scale` the kernel computed on their stale keys anyway."""
    head: int
    kv_head: int
    partition: int | None
    logical_block: int
    physical_block: int
    positions: tuple[int, ...]
    scores: tuple[float | None, ...]
    masked: tuple[bool, ...]
    padded_qk: tuple[float | None, ...] = ()
    kind: str = field(default="block_scores", init=False)


@dataclass(frozen=True, slots=True)
class Softmax:
    """One softmax over the unmasked scores: max logit, sum of exp(score - max), and the
    weights for `positions` (in order)."""
    head: int
    partition: int | None
    max_logit: float
    exp_sum: float
    positions: tuple[int, ...]
    weights: tuple[float, ...]
    kind: str = field(default="softmax", init=False)


@dataclass(frozen=True, slots=True)
class ValueAccumulated:
    """Second walk: one block's values added to the output with their weights. The kernel
    loads the whole block; `zeroed` are the padded positions whose values it loaded and set
    to zero (their logits are 0 too), so they add nothing."""
    head: int
    partition: int | None
    logical_block: int
    physical_block: int
    positions: tuple[int, ...]
    weights: tuple[float, ...]
    output: tuple[float, ...]          # the running output after this block
    zeroed: tuple[int, ...] = ()
    kind: str = field(default="value_accumulated", init=False)


@dataclass(frozen=True, slots=True)
class PartitionResult:
    """v2: what one partition hands to the reduce step (vLLM's `max_logits`,
    `exp_sums` and `tmp_out`, the partial output already divided by `exp_sum`)."""
    head: int
    partition: int
    start: int                         # first position of the partition
    end: int                           # one past its last position below seq_len
    max_logit: float
    exp_sum: float
    partial_output: tuple[float, ...]
    kind: str = field(default="partition_result", init=False)


@dataclass(frozen=True, slots=True)
class PartitionsMerged:
    """v2 reduce for one head: rescale each partition by exp(m_i - M) and merge.
    With a single partition vLLM copies the partial output as it is."""
    head: int
    max_logits: tuple[float, ...]
    exp_sums: tuple[float, ...]
    global_max: float
    rescale_factors: tuple[float, ...]       # exp(m_i - M)
    rescaled_exp_sums: tuple[float, ...]     # l_i * exp(m_i - M)
    global_exp_sum: float
    output: tuple[float, ...]
    kind: str = field(default="partitions_merged", init=False)


@dataclass(frozen=True, slots=True)
class AttentionOutput:
    """The last record: the output of every head, `[num_heads][head_size]`."""
    output: tuple[tuple[float, ...], ...]
    kind: str = field(default="attention_output", init=False)


def records_as_dicts(records: Sequence) -> list[dict]:
    """The records as dicts of plain lists and numbers (a frame's JSON form)."""
    def plain(x):
        if isinstance(x, (list, tuple)):
            return [plain(y) for y in x]
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        return x
    return [plain(asdict(r)) for r in records]


# --------------------------------------------------------------------------- validation

def _check_inputs(query, key_cache, value_cache, block_table, seq_len, block_size,
                  num_kv_heads) -> None:
    num_heads = len(query)
    if num_heads == 0 or num_kv_heads <= 0:
        raise ValueError("need at least one query head and one KV head")
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads "
                         f"({num_kv_heads})")
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    if seq_len < 1:
        raise ValueError(f"seq_len must be at least 1, got {seq_len}")
    needed = -(-seq_len // block_size)
    if len(block_table) < needed:
        raise ValueError(f"seq_len {seq_len} with block_size {block_size} needs "
                         f"{needed} blocks, the block table has {len(block_table)}")
    head_size = len(query[0])
    if any(len(q) != head_size for q in query):
        raise ValueError("every query head must have the same head_size")
    for physical in block_table[:needed]:
        if not 0 <= physical < len(key_cache) or physical >= len(value_cache):
            raise ValueError(f"block table entry {physical} is not a block of the cache "
                             f"({len(key_cache)} blocks)")
        for cache, name in ((key_cache, "key_cache"), (value_cache, "value_cache")):
            heads = cache[physical]
            if len(heads) != num_kv_heads:
                raise ValueError(f"{name}[{physical}] has {len(heads)} KV heads, "
                                 f"expected {num_kv_heads}")
            if any(len(slots) != block_size for slots in heads):
                raise ValueError(f"{name}[{physical}] does not have {block_size} slots "
                                 f"per head")


def _check_partition_size(partition_size: int, block_size: int) -> None:
    # vLLM: `assert _PARTITION_SIZE % block_size == 0`; each thread block of the v2
    # kernel owns whole KV blocks, so a partition cannot end inside a block.
    if partition_size <= 0 or partition_size % block_size:
        raise ValueError(f"partition_size ({partition_size}) must be a positive multiple "
                         f"of block_size ({block_size})")


# ------------------------------------------------------------------------------ kernels

def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def _attend_range(q: Sequence[float], key_cache: list, value_cache: list,
                  block_table: Sequence[int], kv_head: int, start: int, end: int,
                  block_size: int, scale: float, trace: list | None, head: int,
                  partition: int | None) -> tuple[float, float, Vector]:
    """One (head, partition) thread block: positions [start, end), start a multiple of
    block_size. Returns (max logit, exp sum, output normalised by that exp sum).
    v1 is this with one partition covering the whole sequence."""
    first_block, last_block = start // block_size, -(-end // block_size)

    # Walk 1: scores, block by block.
    positions: list[int] = []
    logits: list[float] = []
    for logical in range(first_block, last_block):
        physical = block_table[logical]
        keys = key_cache[physical][kv_head]
        block_positions = [logical * block_size + s for s in range(block_size)]
        scores: list[float | None] = []
        padded: list[float | None] = []
        for slot, pos in enumerate(block_positions):
            # The kernel loads the whole block and scores every slot, the padding too ...
            score = scale * _dot(q, keys[slot])
            if pos >= end:              # ... then masks: logit 0, not in the max or softmax
                scores.append(None)
                padded.append(score)
                continue
            scores.append(score)
            padded.append(None)
            positions.append(pos)
            logits.append(score)
        if trace is not None:
            trace.append(BlockScores(head, kv_head, partition, logical, physical,
                                     tuple(block_positions), tuple(scores),
                                     tuple(s is None for s in scores), tuple(padded)))

    # One softmax over everything this thread block scored.
    max_logit = max(logits)
    exps = [math.exp(x - max_logit) for x in logits]
    exp_sum = sum(exps)
    weights = [e / exp_sum for e in exps]
    if trace is not None:
        trace.append(Softmax(head, partition, max_logit, exp_sum, tuple(positions),
                             tuple(weights)))

    # Walk 2: the weighted sum of V, block by block.
    out = [0.0] * len(q)
    i = 0
    for logical in range(first_block, last_block):
        physical = block_table[logical]
        values = value_cache[physical][kv_head]
        n = min(block_size, end - logical * block_size)
        block_weights = weights[i:i + n]
        for slot, w in enumerate(block_weights):
            v = values[slot]
            for d in range(len(out)):
                out[d] += w * v[d]
        # The padded slots' values are loaded too and zeroed (weight 0 x value 0): nothing.
        zeroed = tuple(logical * block_size + s for s in range(n, block_size))
        if trace is not None:
            trace.append(ValueAccumulated(head, partition, logical, physical,
                                          tuple(positions[i:i + n]), tuple(block_weights),
                                          tuple(out), zeroed))
        i += n
    return max_logit, exp_sum, out


def _merge_partitions(results: list[tuple[float, float, Vector]], trace: list | None,
                      head: int) -> Vector:
    """v2's reduce kernel for one head."""
    max_logits = [m for m, _, _ in results]
    exp_sums = [l for _, l, _ in results]
    global_max = max(max_logits)
    factors = [math.exp(m - global_max) for m in max_logits]
    rescaled = [l * f for l, f in zip(exp_sums, factors)]
    global_exp_sum = sum(rescaled)
    if len(results) == 1:
        out = list(results[0][2])          # vLLM copies tmp_out: nothing to merge
    else:
        head_size = len(results[0][2])
        out = [sum(partial[d] * r for (_, _, partial), r in zip(results, rescaled))
               / global_exp_sum for d in range(head_size)]
    if trace is not None:
        trace.append(PartitionsMerged(head, tuple(max_logits), tuple(exp_sums), global_max,
                                      tuple(factors), tuple(rescaled), global_exp_sum,
                                      tuple(out)))
    return out


def _run(query, key_cache, value_cache, block_table, seq_len, block_size, scale,
         num_kv_heads, partition_size: int | None, trace: list | None) -> list[Vector]:
    _check_inputs(query, key_cache, value_cache, block_table, seq_len, block_size,
                  num_kv_heads)
    if partition_size is not None:
        _check_partition_size(partition_size, block_size)
    queries_per_kv = len(query) // num_kv_heads
    output = []
    for head, q in enumerate(query):
        kv_head = head // queries_per_kv     # grouped-query attention (MQA: always 0)
        if partition_size is None:           # v1
            output.append(_attend_range(q, key_cache, value_cache, block_table, kv_head,
                                        0, seq_len, block_size, scale, trace, head,
                                        None)[2])
            continue
        results = []
        for p, start in enumerate(range(0, seq_len, partition_size)):
            end = min(start + partition_size, seq_len)
            m, l, partial = _attend_range(q, key_cache, value_cache, block_table, kv_head,
                                          start, end, block_size, scale, trace, head, p)
            if trace is not None:
                trace.append(PartitionResult(head, p, start, end, m, l, tuple(partial)))
            results.append((m, l, partial))
        output.append(_merge_partitions(results, trace, head))
    if trace is not None:
        trace.append(AttentionOutput(tuple(tuple(o) for o in output)))
    return output


def paged_attention_v1(query: Sequence[Sequence[float]], key_cache: list,
                       value_cache: list, block_table: Sequence[int], seq_len: int,
                       block_size: int, scale: float, num_kv_heads: int) -> list[Vector]:
    """Attention of one query `[num_heads][head_size]` over the first `seq_len`
    positions stored through `block_table`. Returns `[num_heads][head_size]`.
    Query head h reads KV head `h // (num_heads // num_kv_heads)`."""
    return _run(query, key_cache, value_cache, block_table, seq_len, block_size, scale,
                num_kv_heads, None, None)


def paged_attention_v2(query: Sequence[Sequence[float]], key_cache: list,
                       value_cache: list, block_table: Sequence[int], seq_len: int,
                       block_size: int, scale: float, num_kv_heads: int,
                       partition_size: int = PARTITION_SIZE) -> list[Vector]:
    """As `paged_attention_v1`, computed in partitions of `partition_size` tokens
    (a positive multiple of `block_size`, as vLLM asserts) and merged."""
    return _run(query, key_cache, value_cache, block_table, seq_len, block_size, scale,
                num_kv_heads, partition_size, None)


def paged_attention_v1_trace(query, key_cache, value_cache, block_table, seq_len,
                             block_size, scale, num_kv_heads) -> list:
    """`paged_attention_v1` step by step: per head, a `BlockScores` per logical block,
    one `Softmax`, a `ValueAccumulated` per block; last an `AttentionOutput` equal to
    `paged_attention_v1`'s result (the same code computes both)."""
    trace: list = []
    _run(query, key_cache, value_cache, block_table, seq_len, block_size, scale,
         num_kv_heads, None, trace)
    return trace


def paged_attention_v2_trace(query, key_cache, value_cache, block_table, seq_len,
                             block_size, scale, num_kv_heads,
                             partition_size: int = PARTITION_SIZE) -> list:
    """`paged_attention_v2` step by step: per head and partition the v1 records (with
    `partition` set) and a `PartitionResult`; per head a `PartitionsMerged`; last an
    `AttentionOutput` equal to `paged_attention_v2`'s result."""
    trace: list = []
    _run(query, key_cache, value_cache, block_table, seq_len, block_size, scale,
         num_kv_heads, partition_size, trace)
    return trace


def contiguous_attention(query: Sequence[Sequence[float]], keys: Sequence, values: Sequence,
                         scale: float) -> list[Vector]:
    """Plain softmax attention, for comparison: query `[num_heads][head_size]`, keys
    and values `[seq_len][num_kv_heads][head_size]` in position order."""
    num_heads, num_kv_heads = len(query), len(keys[0])
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads "
                         f"({num_kv_heads})")
    queries_per_kv = num_heads // num_kv_heads
    output = []
    for head, q in enumerate(query):
        kv = head // queries_per_kv
        logits = [scale * _dot(q, k[kv]) for k in keys]
        top = max(logits)
        exps = [math.exp(x - top) for x in logits]
        total = sum(exps)
        output.append([sum(e * v[kv][d] for e, v in zip(exps, values)) / total
                       for d in range(len(q))])
    return output


def use_v1(max_seq_len: int, num_seqs: int, num_heads: int,
           partition_size: int = PARTITION_SIZE) -> bool:
    """vLLM's choice in `PagedAttention.forward_decode`: v1 when the longest sequence is
    at most 8192 and either it fits one partition (no reduce needed) or there are
    already more than 512 (sequence, head) thread blocks to keep the GPU busy."""
    max_num_partitions = -(-max_seq_len // partition_size)
    return max_seq_len <= V1_MAX_SEQ_LEN and (max_num_partitions == 1
                                              or num_seqs * num_heads > 512)


# ------------------------------------------------------------------- seeded test data

@dataclass(slots=True)
class PagedAttentionInputs:
    """The arguments of `paged_attention_v1` (see `args()`), plus what made them."""
    query: list
    key_cache: list
    value_cache: list
    block_table: list[int]
    seq_len: int
    block_size: int
    scale: float
    num_kv_heads: int

    def args(self) -> dict:
        return {"query": self.query, "key_cache": self.key_cache,
                "value_cache": self.value_cache, "block_table": self.block_table,
                "seq_len": self.seq_len, "block_size": self.block_size,
                "scale": self.scale, "num_kv_heads": self.num_kv_heads}

    def kv_head(self, head: int) -> int:
        """The KV head that query head `head` reads (grouped-query attention)."""
        return head // (len(self.query) // self.num_kv_heads)


def random_paged_attention_inputs(rng: random.Random, *, num_heads: int,
                                  num_kv_heads: int, head_size: int, block_size: int,
                                  seq_len: int, spare_blocks: int = 2,
                                  garbage: float | None = 100.0,
                                  decimals: int | None = None) -> PagedAttentionInputs:
    """Random query and cache, with the sequence's blocks scattered over a cache of
    `needed + spare_blocks` blocks in a shuffled order.

    Slots the sequence does not own (past seq_len in its last block, and the spare
    blocks) hold values of magnitude `garbage`, so a kernel that forgets the mask gets
    a visibly wrong answer; `garbage=None` leaves them 0. `decimals` rounds the real
    data (easier to read in a widget). The scale is 1/sqrt(head_size)."""
    def draw() -> float:
        x = rng.uniform(-1.0, 1.0)
        return round(x, decimals) if decimals is not None else x

    needed = -(-seq_len // block_size)
    num_blocks = needed + spare_blocks
    key_cache, value_cache = new_kv_cache(num_blocks, num_kv_heads, block_size, head_size)
    if garbage is not None:
        for cache in (key_cache, value_cache):
            for block in cache:
                for slots in block:
                    for slot in slots:
                        for d in range(head_size):
                            slot[d] = rng.uniform(-garbage, garbage)
    block_table = rng.sample(range(num_blocks), needed)
    for pos in range(seq_len):
        key = [[draw() for _ in range(head_size)] for _ in range(num_kv_heads)]
        value = [[draw() for _ in range(head_size)] for _ in range(num_kv_heads)]
        write_kv(key_cache, value_cache, block_table, block_size, pos, key, value)
    query = [[draw() for _ in range(head_size)] for _ in range(num_heads)]
    return PagedAttentionInputs(query, key_cache, value_cache, block_table, seq_len,
                                block_size, 1.0 / math.sqrt(head_size), num_kv_heads)
