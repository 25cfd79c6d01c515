"""Tensor parallelism, Megatron-LM style (vLLM v0.5.5: `QKVParallelLinear`,
`MergedColumnParallelLinear` and `RowParallelLinear` in
`vllm/model_executor/layers/linear.py`; `CacheEngine.get_cache_block_size`; the driver
worker of `vllm/executor/`).

A layer is split over `tp_size` GPUs ("ranks") so that each keeps a slice of every weight
and of the KV cache:

- QKV projection, column-parallel by head: rank r computes query heads
  [r*H/tp, (r+1)*H/tp) and the KV heads those heads read. KV heads are split as
  `max(1, kv/tp)` per rank; with fewer KV heads than ranks each KV head is replicated on
  `tp/kv` consecutive ranks (rank r holds KV head `r // (tp/kv)`).
- Attention runs on each rank over its own heads only: no communication.
- Output projection, row-parallel: rank r multiplies its heads' slice of the attention
  output by its rows of W_o, giving a partial hidden vector; an all-reduce (sum) gives
  every rank the full result.
- MLP: gate and up projections column-parallel, down projection row-parallel, a second
  all-reduce. Two all-reduces per layer.
- One scheduler and one block manager live on the driver (rank 0). Each step it broadcasts
  the input and the block tables; every rank writes its own heads' K/V into the SAME
  block numbers of its own cache. The block manager never learns there are several GPUs.

The numeric part is pure Python on tiny tensors, so a page can show every number. It
runs one layer; weights use the `y = x @ W` convention (W is `[in][out]`).
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from sim.perf.attention import new_kv_cache, paged_attention_v1, write_kv
from sim.perf.models import check_tensor_parallel, dtype_bytes

Vector = list[float]
Matrix = list[list[float]]

# ------------------------------------------------------------------- head partitioning

def get_num_kv_heads(num_kv_heads: int, tp_size: int) -> int:
    """KV heads per rank (vLLM `ModelConfig.get_num_kv_heads`)."""
    return max(1, num_kv_heads // tp_size)


def num_kv_head_replicas(num_kv_heads: int, tp_size: int) -> int:
    """How many ranks hold each KV head (vLLM `QKVParallelLinear.num_kv_head_replicas`)."""
    return tp_size // num_kv_heads if tp_size >= num_kv_heads else 1


@dataclass(frozen=True, slots=True)
class RankHeads:
    """The heads one rank owns, as global indices."""
    rank: int
    heads: tuple[int, ...]        # query heads
    kv_heads: tuple[int, ...]     # KV heads (a replicated head appears on several ranks)


def partition_heads(num_heads: int, num_kv_heads: int, tp_size: int) -> list[RankHeads]:
    check_tensor_parallel(num_heads, num_kv_heads, tp_size)
    per_rank = num_heads // tp_size
    kv_per_rank = get_num_kv_heads(num_kv_heads, tp_size)
    replicas = num_kv_head_replicas(num_kv_heads, tp_size)
    ranks = []
    for r in range(tp_size):
        # vLLM's weight loader takes KV shard `tp_rank // num_kv_head_replicas`.
        first_kv = (r // replicas) * kv_per_rank
        ranks.append(RankHeads(r, tuple(range(r * per_rank, (r + 1) * per_rank)),
                               tuple(range(first_kv, first_kv + kv_per_rank))))
    return ranks


def kv_head_ranks(num_heads: int, num_kv_heads: int, tp_size: int) -> dict[int, list[int]]:
    """Which ranks hold each KV head: one rank each, or `tp/kv` when replicated."""
    holders: dict[int, list[int]] = {h: [] for h in range(num_kv_heads)}
    for part in partition_heads(num_heads, num_kv_heads, tp_size):
        for h in part.kv_heads:
            holders[h].append(part.rank)
    return holders


# ---------------------------------------------------------------------- per-rank memory
# Counted from the KV heads each rank actually holds after the split above, not from
# vLLM's formula `max(1, kv // tp)` that `sim.models` uses: the two derivations agree
# (tests/test_models.py checks it), which is the point of the picture.

@dataclass(frozen=True, slots=True)
class RankCache:
    rank: int
    heads: tuple[int, ...]
    kv_heads: tuple[int, ...]
    bytes_per_token: int          # K and V, every layer, this rank's KV heads
    bytes_per_block: int          # vLLM's cache block size on this rank


def per_rank_cache(model, block_size: int = 16, dtype: str = "fp16",
                   tp_size: int = 1) -> list[RankCache]:
    """Per GPU: its heads and its KV bytes per token and per block. `model` is anything
    with num_layers, num_attention_heads, num_kv_heads and head_size (a
    `sim.models.ModelConfig`). Every rank gets the same size, so the same block numbers
    fit on all; with replication the sum over ranks exceeds the unsharded size."""
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    element = dtype_bytes(dtype)
    ranks = []
    for p in partition_heads(model.num_attention_heads, model.num_kv_heads, tp_size):
        per_token = 2 * model.num_layers * len(p.kv_heads) * model.head_size * element
        ranks.append(RankCache(p.rank, p.heads, p.kv_heads, per_token,
                               per_token * block_size))
    return ranks


def cache_block_size(model, block_size: int = 16, dtype: str = "fp16",
                     tp_size: int = 1) -> int:
    """Bytes of one KV block on one rank (they are all the same size)."""
    return per_rank_cache(model, block_size, dtype, tp_size)[0].bytes_per_block


# ------------------------------------------------------------------ weights and shards

@dataclass(slots=True)
class LayerWeights:
    """One decoder layer, unsharded (no norms, no biases, no rotary embedding)."""
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_size: int
    intermediate_size: int
    w_q: Matrix        # [hidden][num_heads * head_size]
    w_k: Matrix        # [hidden][num_kv_heads * head_size]
    w_v: Matrix        # [hidden][num_kv_heads * head_size]
    w_o: Matrix        # [num_heads * head_size][hidden]
    w_gate: Matrix     # [hidden][intermediate]
    w_up: Matrix       # [hidden][intermediate]
    w_down: Matrix     # [intermediate][hidden]


def random_layer_weights(rng: random.Random, *, hidden_size: int, num_heads: int,
                         num_kv_heads: int, head_size: int,
                         intermediate_size: int) -> LayerWeights:
    """Uniform weights scaled by 1/sqrt(fan_in), so activations stay near 1."""
    def mat(rows: int, cols: int) -> Matrix:
        bound = 1.0 / math.sqrt(rows)
        return [[rng.uniform(-bound, bound) for _ in range(cols)] for _ in range(rows)]
    q, kv = num_heads * head_size, num_kv_heads * head_size
    return LayerWeights(hidden_size, num_heads, num_kv_heads, head_size, intermediate_size,
                        mat(hidden_size, q), mat(hidden_size, kv), mat(hidden_size, kv),
                        mat(q, hidden_size), mat(hidden_size, intermediate_size),
                        mat(hidden_size, intermediate_size),
                        mat(intermediate_size, hidden_size))


def _columns(w: Matrix, start: int, stop: int) -> Matrix:
    return [row[start:stop] for row in w]


@dataclass(slots=True)
class RankWeights:
    """What one rank's weight loader keeps."""
    heads: RankHeads
    head_size: int
    w_q: Matrix        # columns of this rank's query heads
    w_k: Matrix        # columns of this rank's KV heads
    w_v: Matrix
    w_o: Matrix        # rows of this rank's query heads
    w_gate: Matrix     # columns [r*I/tp, (r+1)*I/tp)
    w_up: Matrix
    w_down: Matrix     # the matching rows


def shard_layer_weights(weights: LayerWeights, tp_size: int) -> list[RankWeights]:
    if weights.intermediate_size % tp_size:
        raise ValueError(f"intermediate size ({weights.intermediate_size}) must be "
                         f"divisible by tensor parallel size ({tp_size})")
    hs, inter = weights.head_size, weights.intermediate_size // tp_size
    shards = []
    for part in partition_heads(weights.num_heads, weights.num_kv_heads, tp_size):
        q0, q1 = part.heads[0] * hs, (part.heads[-1] + 1) * hs
        k0, k1 = part.kv_heads[0] * hs, (part.kv_heads[-1] + 1) * hs
        m0, m1 = part.rank * inter, (part.rank + 1) * inter
        shards.append(RankWeights(
            part, hs,
            _columns(weights.w_q, q0, q1), _columns(weights.w_k, k0, k1),
            _columns(weights.w_v, k0, k1), [list(r) for r in weights.w_o[q0:q1]],
            _columns(weights.w_gate, m0, m1), _columns(weights.w_up, m0, m1),
            [list(r) for r in weights.w_down[m0:m1]]))
    return shards


# --------------------------------------------------------------------------- the ranks

def _matvec(x: Sequence[float], w: Matrix) -> Vector:
    out = [0.0] * len(w[0])
    for xi, row in zip(x, w):
        for j, wij in enumerate(row):
            out[j] += xi * wij
    return out


def _split_heads(x: Vector, head_size: int) -> list[Vector]:
    return [x[i:i + head_size] for i in range(0, len(x), head_size)]


def _silu(x: float) -> float:
    return x / (1.0 + math.exp(-x))


def all_reduce(partials: Sequence[Sequence[float]]) -> Vector:
    """Sum over ranks, every rank receiving the result (NCCL all-reduce). Summed in
    rank order so the result is deterministic."""
    out = [0.0] * len(partials[0])
    for p in partials:
        for j, x in enumerate(p):
            out[j] += x
    return out


@dataclass(frozen=True, slots=True)
class BroadcastInput:
    """What the driver sends every rank each step (vLLM broadcasts the
    `ExecuteModelRequest`'s tensors with `broadcast_tensor_dict`). Hidden states stand in
    for token ids, since this layer has no embedding table."""
    step: int
    seq_ids: tuple[int, ...]
    positions: tuple[int, ...]                    # each sequence's new token
    hidden_states: tuple[tuple[float, ...], ...]
    block_tables: tuple[tuple[int, ...], ...]


@dataclass(frozen=True, slots=True)
class RankAttention:
    """One rank's attention half-layer for one sequence."""
    rank: int
    heads: tuple[int, ...]
    kv_heads: tuple[int, ...]
    q: tuple[tuple[float, ...], ...]          # per local query head
    k: tuple[tuple[float, ...], ...]          # per local KV head, the new token's
    v: tuple[tuple[float, ...], ...]
    kv_slot: tuple[int, int]                  # (block, slot) written: same on every rank
    attn_output: tuple[tuple[float, ...], ...]  # per local query head
    partial: tuple[float, ...]                # row-parallel o_proj, before all-reduce


@dataclass(frozen=True, slots=True)
class RankMLP:
    rank: int
    gate: tuple[float, ...]                   # this rank's columns
    up: tuple[float, ...]
    act: tuple[float, ...]                    # silu(gate) * up
    partial: tuple[float, ...]                # row-parallel down_proj, before all-reduce


@dataclass(frozen=True, slots=True)
class SeqLayerTrace:
    """One sequence through the layer: per-rank partials and the two all-reduces."""
    seq_id: int
    position: int
    block_table: tuple[int, ...]
    attention: tuple[RankAttention, ...]
    attn_all_reduce: tuple[float, ...]        # sum of the o_proj partials
    residual: tuple[float, ...]               # hidden + attention output
    mlp: tuple[RankMLP, ...]
    mlp_all_reduce: tuple[float, ...]
    output: tuple[float, ...]                 # residual + MLP output


@dataclass(frozen=True, slots=True)
class StepTrace:
    broadcast: BroadcastInput
    seqs: tuple[SeqLayerTrace, ...]


class Worker:
    """One GPU: its weight shard and its own KV cache, indexed by the block numbers the
    driver broadcasts. `key_cache[block][local_kv_head][slot][d]`."""

    def __init__(self, shard: RankWeights, num_gpu_blocks: int, block_size: int) -> None:
        self.shard = shard
        self.rank = shard.heads.rank
        self.block_size = block_size
        self.key_cache, self.value_cache = new_kv_cache(
            num_gpu_blocks, len(shard.heads.kv_heads), block_size, shard.head_size)

    def attention(self, hidden: Sequence[float], position: int,
                  block_table: Sequence[int]) -> RankAttention:
        s, hs = self.shard, self.shard.head_size
        q = _split_heads(_matvec(hidden, s.w_q), hs)
        k = _split_heads(_matvec(hidden, s.w_k), hs)
        v = _split_heads(_matvec(hidden, s.w_v), hs)
        kv_slot = write_kv(self.key_cache, self.value_cache, block_table, self.block_size,
                           position, k, v)
        # Local head i reads local KV head i // (local heads per local KV head): the
        # same grouping as the unsharded model, because heads and KV heads are split
        # in the same order.
        out = paged_attention_v1(q, self.key_cache, self.value_cache, block_table,
                                 position + 1, self.block_size, 1.0 / math.sqrt(hs),
                                 len(s.heads.kv_heads))
        partial = _matvec([x for head in out for x in head], s.w_o)
        return RankAttention(self.rank, s.heads.heads, s.heads.kv_heads,
                             _tuples(q), _tuples(k), _tuples(v), kv_slot, _tuples(out),
                             tuple(partial))

    def mlp(self, hidden: Sequence[float]) -> RankMLP:
        gate = _matvec(hidden, self.shard.w_gate)
        up = _matvec(hidden, self.shard.w_up)
        act = [_silu(g) * u for g, u in zip(gate, up)]
        return RankMLP(self.rank, tuple(gate), tuple(up), tuple(act),
                       tuple(_matvec(act, self.shard.w_down)))


def _tuples(rows: Sequence[Sequence[float]]) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(r) for r in rows)


class TensorParallelGroup:
    """The driver (rank 0) and its workers. Block tables come from the driver's single
    block manager (`BlockSpaceManager.get_block_table`, or any list of block numbers);
    the workers only ever see them in the broadcast."""

    def __init__(self, weights: LayerWeights, tp_size: int, num_gpu_blocks: int,
                 block_size: int) -> None:
        self.tp_size = tp_size
        self.block_size = block_size
        self.workers = [Worker(shard, num_gpu_blocks, block_size)
                        for shard in shard_layer_weights(weights, tp_size)]
        self.num_steps = 0

    def execute_model(self, seq_ids: Sequence[int], positions: Sequence[int],
                      hidden_states: Sequence[Sequence[float]],
                      block_tables: Sequence[Sequence[int]]) -> StepTrace:
        """One decode step of the layer for a batch (one new token per sequence)."""
        broadcast = BroadcastInput(self.num_steps, tuple(seq_ids), tuple(positions),
                                   _tuples(hidden_states),
                                   tuple(tuple(t) for t in block_tables))
        self.num_steps += 1
        seqs = []
        for i, seq_id in enumerate(broadcast.seq_ids):
            hidden = broadcast.hidden_states[i]
            pos, table = broadcast.positions[i], broadcast.block_tables[i]
            attn = tuple(w.attention(hidden, pos, table) for w in self.workers)
            attn_sum = all_reduce([a.partial for a in attn])
            residual = [h + a for h, a in zip(hidden, attn_sum)]
            mlp = tuple(w.mlp(residual) for w in self.workers)
            mlp_sum = all_reduce([m.partial for m in mlp])
            output = [h + m for h, m in zip(residual, mlp_sum)]
            seqs.append(SeqLayerTrace(seq_id, pos, table, attn, tuple(attn_sum),
                                      tuple(residual), mlp, tuple(mlp_sum), tuple(output)))
        return StepTrace(broadcast, tuple(seqs))


# ------------------------------------------------------------------------------- demo

@dataclass(frozen=True, slots=True)
class TensorParallelDemo:
    tp_size: int
    ranks: tuple[RankHeads, ...]
    block_size: int
    block_table: tuple[int, ...]
    hidden_states: tuple[tuple[float, ...], ...]   # one per position
    steps: tuple[StepTrace, ...]                    # one per position
    unsharded_output: tuple[float, ...]             # the same layer with tp = 1


def tensor_parallel_demo(seed: int = 0, *, tp_size: int = 2, num_heads: int = 4,
                         num_kv_heads: int = 2, head_size: int = 2, hidden_size: int = 8,
                         intermediate_size: int = 8, seq_len: int = 6,
                         block_size: int = 4, num_gpu_blocks: int = 6) -> TensorParallelDemo:
    """One sequence of `seq_len` random hidden states through one layer, token by token,
    on `tp_size` ranks; plus the last token's output computed with tp = 1. The block
    table is a seeded pick of free blocks, the same on every rank."""
    rng = random.Random(seed)
    weights = random_layer_weights(rng, hidden_size=hidden_size, num_heads=num_heads,
                                   num_kv_heads=num_kv_heads, head_size=head_size,
                                   intermediate_size=intermediate_size)
    hidden = [[rng.uniform(-1.0, 1.0) for _ in range(hidden_size)] for _ in range(seq_len)]
    needed = -(-seq_len // block_size)
    if needed > num_gpu_blocks:
        raise ValueError(f"{seq_len} tokens need {needed} blocks of {block_size}; only "
                         f"{num_gpu_blocks} GPU blocks")
    table = rng.sample(range(num_gpu_blocks), needed)

    def run(tp: int) -> list[StepTrace]:
        group = TensorParallelGroup(weights, tp, num_gpu_blocks, block_size)
        return [group.execute_model([0], [pos], [hidden[pos]],
                                    [table[:pos // block_size + 1]])
                for pos in range(seq_len)]

    steps = run(tp_size)
    unsharded = run(1)[-1].seqs[0].output
    return TensorParallelDemo(tp_size, tuple(partition_heads(num_heads, num_kv_heads,
                                                             tp_size)),
                              block_size, tuple(table), _tuples(hidden), tuple(steps),
                              unsharded)
