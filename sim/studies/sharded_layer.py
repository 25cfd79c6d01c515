"""One layer sharded over tp GPUs, driven by a real engine run (vLLM v0.5.5: Megatron-style
layers, the driver worker on rank 0; VLLM.md section 6).

An `LLMEngine` serves a few small requests. Its events say what the single scheduler and
`BlockSpaceManager` on rank 0 did each step (`BlockAllocated`, `Admitted`, `KVWritten`,
`BlockFreed`); the block tables are rebuilt from those events, broadcast, and fed to a
`sim.perf.tensor_parallel.TensorParallelGroup` of tp ranks, which writes each rank's own KV
heads into the same block numbers and computes the layer with its two all-reduces. A second
group with tp = 1 runs the same tokens, so every step can check the sharded result against
the unsharded one.

`run_sharded_layer` returns one `ShardedStep` per engine step: plain records of what rank 0
decided and broadcast, which slots every rank wrote, and the layer's results for the newest
token of each request.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.core.sequence import SamplingParams
from sim.events import (
    Admitted,
    BlockAllocated,
    BlockFreed,
    CopyOnWrite,
    KVWritten,
    RequestFinished,
    SeqFreed,
)
from sim.perf.tensor_parallel import SeqLayerTrace, TensorParallelGroup, random_layer_weights


@dataclass(frozen=True, slots=True)
class Admission:
    request_id: str
    num_tokens: int              # prompt tokens prefilled


@dataclass(frozen=True, slots=True)
class Allocation:
    """A physical block rank 0's block manager gave a request's logical block."""
    request_id: str
    logical: int
    physical: int


@dataclass(frozen=True, slots=True)
class KVWrite:
    """A token whose K and V every rank wrote: the same block and slot on each."""
    request_id: str
    position: int
    block: int
    slot: int


@dataclass(frozen=True, slots=True)
class LayerResult:
    """The newest token of one request through the layer, sharded and on one GPU."""
    request_id: str
    position: int
    sharded: SeqLayerTrace
    unsharded: SeqLayerTrace


@dataclass(frozen=True, slots=True)
class ShardedStep:
    """One engine step as the sharded layer sees it. Slot maps are (block, slot) ->
    (request, position): the tokens every rank holds, the same on all of them."""
    step: int
    prefill: bool
    admitted: tuple[Admission, ...]
    allocated: tuple[Allocation, ...]
    broadcast: dict[str, tuple[int, ...]]     # request -> block table rank 0 sent
    written: tuple[KVWrite, ...]
    slots_before: dict[tuple[int, int], tuple[str, int]]
    slots: dict[tuple[int, int], tuple[str, int]]
    freed: tuple[int, ...]                    # physical blocks rank 0 freed
    finished: tuple[str, ...]
    results: tuple[LayerResult, ...]          # in model (batch) order
    free_after: int                           # rank 0's free GPU blocks after the step


@dataclass(frozen=True)
class ShardedRun:
    steps: tuple[ShardedStep, ...]
    sharded: TensorParallelGroup              # the workers' caches as the run left them
    unsharded: TensorParallelGroup


def embed(seed: int, token_id: int, hidden_size: int) -> list[float]:
    """The layer's input for a token: a fixed random vector per token id (the layer has no
    embedding table; hidden states stand in for token ids)."""
    rng = random.Random(seed * 1_000_003 + token_id)
    return [round(rng.uniform(-1.0, 1.0), 2) for _ in range(hidden_size)]


def run_sharded_layer(*, tp_size: int, num_kv_heads: int, max_tokens: int, seed: int,
                      requests: Sequence[tuple[str, int]], num_heads: int, head_size: int,
                      hidden_size: int, intermediate_size: int, block_size: int,
                      num_gpu_blocks: int) -> ShardedRun:
    """Serve `requests` ((request id, prompt length) pairs, each generating `max_tokens`)
    and run every step's tokens through one seeded layer on `tp_size` ranks and on one."""
    engine = LLMEngine(CacheConfig(block_size=block_size, num_gpu_blocks=num_gpu_blocks,
                                   num_cpu_blocks=0, watermark=0.0),
                       SchedulerConfig(), seed=seed)
    for rid, prompt in requests:
        engine.add_request(rid, prompt, SamplingParams(max_tokens=max_tokens))
    seq_request = {}
    for group in engine.requests.values():
        for seq in group.get_seqs():
            seq_request[seq.seq_id] = group.request_id
    weights = random_layer_weights(random.Random(seed), hidden_size=hidden_size,
                                   num_heads=num_heads, num_kv_heads=num_kv_heads,
                                   head_size=head_size, intermediate_size=intermediate_size)
    sharded = TensorParallelGroup(weights, tp_size, num_gpu_blocks, block_size)
    single = TensorParallelGroup(weights, 1, num_gpu_blocks, block_size)

    tables: dict[int, list[int]] = {}       # rank 0's block tables, rebuilt from events
    slots: dict[tuple[int, int], tuple[str, int]] = {}
    steps = []
    while engine.has_unfinished_requests():
        out = engine.step()
        allocated, admitted, freed, finished = [], [], [], []
        rows = []                            # (seq_id, position, table) in model order
        broadcast: dict[int, tuple[int, ...]] = {}
        for event in out.events:
            if isinstance(event, BlockAllocated):
                for sid in event.seq_ids:
                    table = tables.setdefault(sid, [])
                    assert len(table) == event.logical
                    table.append(event.physical)
                allocated.append(Allocation(seq_request[event.seq_ids[0]], event.logical,
                                            event.physical))
            elif isinstance(event, CopyOnWrite):     # no forks here; kept exact anyway
                tables[event.seq_id][event.logical] = event.dst
            elif isinstance(event, Admitted):
                admitted.append(Admission(event.request_id, event.num_tokens))
            elif isinstance(event, KVWritten):
                table = tuple(tables[event.seq_id])
                broadcast[event.seq_id] = table
                for pos in range(event.first_pos, event.first_pos + event.num_tokens):
                    rows.append((event.seq_id, pos, table))
            elif isinstance(event, BlockFreed):
                freed.append(event.physical)
            elif isinstance(event, SeqFreed):
                tables.pop(event.seq_id, None)
            elif isinstance(event, RequestFinished):
                finished.append(event.request_id)
        seqs = {seq.seq_id: seq for g in engine.requests.values() for seq in g.get_seqs()}
        ids = [sid for sid, _, _ in rows]
        positions = [pos for _, pos, _ in rows]
        hidden = [embed(seed, seqs[sid].get_token_ids()[pos], hidden_size)
                  for sid, pos, _ in rows]
        block_tables = [list(t) for _, _, t in rows]
        trace = sharded.execute_model(ids, positions, hidden, block_tables)
        reference = single.execute_model(ids, positions, hidden, block_tables)
        before = dict(slots)
        written = []
        for sid, pos, table in rows:
            block, slot = table[pos // block_size], pos % block_size
            slots[(block, slot)] = (seq_request[sid], pos)
            written.append(KVWrite(seq_request[sid], pos, block, slot))
        # The newest token of each sequence: a prefill computes the whole prompt, but the
        # token that goes on to be sampled is the last one.
        last_row = {}
        for i, sid in enumerate(ids):
            last_row[sid] = i
        steps.append(ShardedStep(
            step=out.step,
            prefill=bool(admitted),
            admitted=tuple(admitted),
            allocated=tuple(allocated),
            broadcast={seq_request[sid]: t for sid, t in broadcast.items()},
            written=tuple(written),
            slots_before=before,
            slots=dict(slots),
            freed=tuple(freed),
            finished=tuple(finished),
            results=tuple(LayerResult(seq_request[ids[i]], positions[i], trace.seqs[i],
                                      reference.seqs[i]) for i in sorted(last_row.values())),
            free_after=engine.block_manager.get_num_free_gpu_blocks(),
        ))
    return ShardedRun(tuple(steps), sharded, single)
