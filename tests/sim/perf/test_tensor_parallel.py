"""Tensor parallelism: head partition, per-rank cache sizes, and sharded layer +
all-reduce equal to an unsharded numpy reference."""
import json
import math
import random
from dataclasses import asdict

import numpy as np
import pytest

from sim.perf.models import MODELS, get_model, kv_bytes_per_token
from sim.perf.tensor_parallel import (
    TensorParallelGroup,
    all_reduce,
    cache_block_size,
    check_tensor_parallel,
    get_num_kv_heads,
    kv_head_ranks,
    num_kv_head_replicas,
    partition_heads,
    per_rank_cache,
    random_layer_weights,
    shard_layer_weights,
    tensor_parallel_demo,
)

# ------------------------------------------------------------------- head partitioning

def test_heads_split_evenly_and_kv_heads_follow():
    ranks = partition_heads(num_heads=8, num_kv_heads=4, tp_size=2)
    assert [r.heads for r in ranks] == [(0, 1, 2, 3), (4, 5, 6, 7)]
    assert [r.kv_heads for r in ranks] == [(0, 1), (2, 3)]


def test_kv_heads_replicated_when_fewer_than_ranks():
    # 8 heads, 2 KV heads, tp 8: each KV head on 4 consecutive ranks.
    ranks = partition_heads(8, 2, 8)
    assert [r.heads for r in ranks] == [(i,) for i in range(8)]
    assert [r.kv_heads for r in ranks] == [(0,)] * 4 + [(1,)] * 4
    assert kv_head_ranks(8, 2, 8) == {0: [0, 1, 2, 3], 1: [4, 5, 6, 7]}
    assert num_kv_head_replicas(2, 8) == 4 and get_num_kv_heads(2, 8) == 1
    # MQA: the one KV head is on every rank
    assert kv_head_ranks(8, 1, 4) == {0: [0, 1, 2, 3]}


@pytest.mark.parametrize("num_heads,num_kv_heads", [(8, 8), (8, 4), (8, 2), (8, 1),
                                                    (16, 4), (32, 8)])
@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_every_rank_holds_the_kv_heads_its_query_heads_read(num_heads, num_kv_heads, tp):
    group = num_heads // num_kv_heads
    ranks = partition_heads(num_heads, num_kv_heads, tp)
    assert sorted(h for r in ranks for h in r.heads) == list(range(num_heads))
    for r in ranks:
        assert {h // group for h in r.heads} == set(r.kv_heads)
        assert len(r.kv_heads) == max(1, num_kv_heads // tp)
    held = kv_head_ranks(num_heads, num_kv_heads, tp)
    assert all(len(rs) == num_kv_head_replicas(num_kv_heads, tp) for rs in held.values())


@pytest.mark.parametrize("num_heads,num_kv_heads,tp,match", [
    (12, 12, 8, r"Total number of attention heads \(12\) must be divisible"),
    (8, 8, 3, r"Total number of attention heads \(8\) must be divisible"),
    (24, 6, 4, r"KV heads \(6\) is not divisible by tensor parallel size \(4\)"),
    (12, 6, 4, r"KV heads \(6\) is not divisible by tensor parallel size \(4\)"),
    (24, 3, 8, r"size \(8\) is not a multiple of the number of KV heads \(3\)"),
    (8, 3, 2, r"heads \(8\) must be a multiple of the number of KV heads \(3\)"),
    (8, 2, 0, "at least 1"),
])
def test_invalid_splits_are_rejected(num_heads, num_kv_heads, tp, match):
    with pytest.raises(ValueError, match=match):
        check_tensor_parallel(num_heads, num_kv_heads, tp)


# ---------------------------------------------------------------------- per-rank memory

def test_per_rank_cache_opt_13b_matches_the_paper():
    opt13b = get_model("opt-13b")
    ranks = {tp: per_rank_cache(opt13b, 16, "fp16", tp) for tp in (1, 2, 8)}
    # 2 x 5120 x 40 x 2 bytes = 800 KiB per token on one GPU (paper, section 3)
    assert ranks[1][0].bytes_per_token == 819_200
    assert ranks[1][0].bytes_per_block == 16 * 819_200
    assert {r.bytes_per_token for r in ranks[2]} == {409_600}
    assert {r.bytes_per_token for r in ranks[8]} == {102_400}
    assert [r.kv_heads for r in ranks[8]] == [tuple(range(5 * i, 5 * i + 5))
                                              for i in range(8)]


def test_gqa_per_rank_bytes_stop_shrinking_once_kv_heads_are_replicated():
    llama70b = get_model("llama-2-70b")          # 64 heads, 8 KV heads, 80 layers
    per_tok = {tp: per_rank_cache(llama70b, 16, "bf16", tp)[0].bytes_per_token
               for tp in (1, 2, 4, 8, 16)}
    assert per_tok[1] == 2 * 80 * 8 * 128 * 2
    assert per_tok[8] == per_tok[1] // 8 == 2 * 80 * 1 * 128 * 2
    assert per_tok[16] == per_tok[8]       # tp 16 > 8 KV heads: replicated, not split
    ranks = per_rank_cache(llama70b, 16, "bf16", 16)
    assert len(ranks) == 16 and {r.bytes_per_block for r in ranks} == {16 * per_tok[16]}
    assert sum(r.bytes_per_token for r in ranks) == 2 * per_tok[1]   # 2 copies of each
    assert ranks[3].kv_heads == (1,) and ranks[3].heads == (12, 13, 14, 15)


def test_per_rank_bytes_agree_with_vllms_formula_in_models():
    # per_rank_cache counts each rank's KV heads from the split; sim.models uses vLLM's
    # max(1, kv // tp). Every rank is the same size, so block numbers line up.
    for model in MODELS.values():
        for tp in (1, 2, 4, 8, 16):
            try:
                ranks = per_rank_cache(model, 16, "fp16", tp)
            except ValueError:
                continue
            assert {r.bytes_per_token for r in ranks} == {
                kv_bytes_per_token(model, "fp16", tp)}
            assert cache_block_size(model, 16, "fp16", tp) == ranks[0].bytes_per_block


def test_per_rank_cache_rejects_a_bad_split():
    with pytest.raises(ValueError, match="divisible by tensor parallel size"):
        per_rank_cache(get_model("llama-3-8b"), 16, "fp16", 3)


# -------------------------------------------------------- numerics against numpy (tp=1)

def numpy_layer(w, hidden_states):
    """The unsharded layer for the last token, all weights whole: attention over every
    token so far (GQA by repeating KV heads), o_proj, residual, SiLU-gated MLP,
    residual."""
    W = {k: np.array(getattr(w, k)) for k in
         ("w_q", "w_k", "w_v", "w_o", "w_gate", "w_up", "w_down")}
    X = np.array(hidden_states)
    x = X[-1]
    hs, H, KV = w.head_size, w.num_heads, w.num_kv_heads
    q = (x @ W["w_q"]).reshape(H, hs)
    K = (X @ W["w_k"]).reshape(len(X), KV, hs).repeat(H // KV, axis=1)
    V = (X @ W["w_v"]).reshape(len(X), KV, hs).repeat(H // KV, axis=1)
    logits = np.einsum("hd,shd->hs", q, K) / math.sqrt(hs)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    attn = np.einsum("hs,shd->hd", p, V).reshape(-1)
    h = x + attn @ W["w_o"]
    g, u = h @ W["w_gate"], h @ W["w_up"]
    return h, h + (g / (1 + np.exp(-g)) * u) @ W["w_down"]


SHAPES = [(8, 8), (8, 4), (8, 2), (8, 1), (16, 4)]   # (heads, kv heads): MHA .. MQA


@pytest.mark.parametrize("num_heads,num_kv_heads", SHAPES)
@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_sharded_layer_plus_all_reduce_equals_unsharded(num_heads, num_kv_heads, tp):
    rng = random.Random(num_heads * 1000 + num_kv_heads * 10 + tp)
    w = random_layer_weights(rng, hidden_size=6, num_heads=num_heads,
                             num_kv_heads=num_kv_heads, head_size=2, intermediate_size=16)
    seq_len, block_size, num_blocks = 7, 2, 6
    hidden = [[rng.uniform(-1, 1) for _ in range(6)] for _ in range(seq_len)]
    table = rng.sample(range(num_blocks), 4)
    group = TensorParallelGroup(w, tp, num_blocks, block_size)
    for pos in range(seq_len):
        step = group.execute_model([0], [pos], [hidden[pos]],
                                   [table[:pos // block_size + 1]])
        seq = step.seqs[0]
        h_ref, out_ref = numpy_layer(w, hidden[:pos + 1])
        np.testing.assert_allclose(seq.residual, h_ref, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(seq.output, out_ref, rtol=1e-12, atol=1e-13)
        assert len(seq.attention) == len(seq.mlp) == tp
        # the all-reduces are the sums of the partials
        np.testing.assert_allclose(np.sum([a.partial for a in seq.attention], axis=0),
                                   seq.attn_all_reduce, rtol=1e-15, atol=1e-15)
        np.testing.assert_allclose(np.sum([m.partial for m in seq.mlp], axis=0),
                                   seq.mlp_all_reduce, rtol=1e-15, atol=1e-15)
    if tp > 1:
        # each rank's partial alone is not the answer: the all-reduce is needed
        assert not np.allclose(seq.attention[0].partial, seq.attn_all_reduce)


def test_each_rank_computes_exactly_its_heads_of_the_unsharded_attention():
    rng = random.Random(3)
    w = random_layer_weights(rng, hidden_size=4, num_heads=8, num_kv_heads=2,
                             head_size=3, intermediate_size=8)
    hidden = [[rng.uniform(-1, 1) for _ in range(4)] for _ in range(5)]
    table = [4, 0, 2]

    def last_step(tp):
        g = TensorParallelGroup(w, tp, 5, 2)
        return [g.execute_model([0], [p], [hidden[p]], [table[:p // 2 + 1]])
                for p in range(5)][-1].seqs[0]

    whole = last_step(1).attention[0].attn_output
    for tp in (2, 4, 8):
        for rank in last_step(tp).attention:
            for local, head in enumerate(rank.heads):
                np.testing.assert_allclose(rank.attn_output[local], whole[head],
                                           rtol=1e-12, atol=1e-14)


def test_intermediate_size_must_split():
    w = random_layer_weights(random.Random(0), hidden_size=4, num_heads=4,
                             num_kv_heads=4, head_size=2, intermediate_size=6)
    with pytest.raises(ValueError, match="intermediate size"):
        shard_layer_weights(w, 4)


def test_all_reduce_sums_in_rank_order():
    assert all_reduce([[1.0, 2.0], [3.0, 4.0], [0.5, 0.5]]) == [4.5, 6.5]


# ------------------------------------------------- one block manager, same block numbers

def test_every_rank_writes_its_slice_into_the_same_block_numbers():
    rng = random.Random(11)
    H, KV, hs, tp, bs, nblocks = 8, 2, 2, 8, 4, 10
    w = random_layer_weights(rng, hidden_size=5, num_heads=H, num_kv_heads=KV,
                             head_size=hs, intermediate_size=8)
    whole = TensorParallelGroup(w, 1, nblocks, bs)
    sharded = TensorParallelGroup(w, tp, nblocks, bs)
    # Two sequences decoding together; the driver's tables interleave their blocks.
    tables = {0: [9, 3, 5], 1: [0, 7]}
    lens = {0: 11, 1: 6}
    hidden = {s: [[rng.uniform(-1, 1) for _ in range(5)] for _ in range(n)]
              for s, n in lens.items()}
    for pos in range(max(lens.values())):
        seqs = [s for s in (0, 1) if pos < lens[s]]
        args = (seqs, [pos] * len(seqs), [hidden[s][pos] for s in seqs],
                [tables[s][:pos // bs + 1] for s in seqs])
        whole.execute_model(*args)
        step = sharded.execute_model(*args)
        # the broadcast carries the driver's block tables, and every rank wrote the
        # new token to the same (block, slot)
        assert [list(t) for t in step.broadcast.block_tables] == args[3]
        for seq in step.seqs:
            assert len({a.kv_slot for a in seq.attention}) == 1

    ref_k, ref_v = whole.workers[0].key_cache, whole.workers[0].value_cache
    for worker in sharded.workers:
        kv_heads = worker.shard.heads.kv_heads
        for s, table in tables.items():
            for pos in range(lens[s]):
                b, slot = table[pos // bs], pos % bs
                for local, h in enumerate(kv_heads):
                    assert worker.key_cache[b][local][slot] == pytest.approx(
                        ref_k[b][h][slot], rel=1e-12, abs=1e-14)
                    assert worker.value_cache[b][local][slot] == pytest.approx(
                        ref_v[b][h][slot], rel=1e-12, abs=1e-14)
        # blocks no table points at were never written on any rank
        for b in {1, 2, 4, 6, 8}:
            assert all(x == 0.0 for head in worker.key_cache[b] for slot in head
                       for x in slot)
    # replicas of a KV head hold identical copies
    k0 = [w_.key_cache for w_ in sharded.workers[:4]]
    assert all(k == k0[0] for k in k0)
    assert sharded.workers[0].key_cache != sharded.workers[4].key_cache


# ------------------------------------------------------------------------------- demo

@pytest.mark.parametrize("tp,kv", [(1, 2), (2, 2), (4, 2), (4, 1)])
def test_demo_matches_unsharded_and_is_plain_data(tp, kv):
    demo = tensor_parallel_demo(5, tp_size=tp, num_heads=4, num_kv_heads=kv)
    last = demo.steps[-1].seqs[0]
    np.testing.assert_allclose(last.output, demo.unsharded_output, rtol=1e-12, atol=1e-13)
    w = random_layer_weights(random.Random(5), hidden_size=8, num_heads=4,
                             num_kv_heads=kv, head_size=2, intermediate_size=8)
    np.testing.assert_allclose(last.output, numpy_layer(w, demo.hidden_states)[1],
                               rtol=1e-12, atol=1e-13)
    assert len(demo.steps) == 6 and len(demo.ranks) == tp
    text = json.dumps(asdict(demo))
    assert json.dumps(asdict(tensor_parallel_demo(5, tp_size=tp, num_heads=4,
                                                  num_kv_heads=kv))) == text


def test_demo_rejects_too_few_blocks():
    with pytest.raises(ValueError, match="GPU blocks"):
        tensor_parallel_demo(0, seq_len=30, block_size=4, num_gpu_blocks=6)


def test_block_tables_from_the_drivers_block_manager():
    """The driver's one BlockSpaceManager (not per GPU) hands out the blocks; every
    rank follows its tables. Two requests decode together, so their blocks interleave
    in vLLM's stack order."""
    from sim.core.block_manager import BlockSpaceManager
    from sim.core.sequence import SamplingParams, Sequence, SequenceGroup, SequenceStatus

    bs, nblocks, tp = 2, 8, 4
    rng = random.Random(2)
    w = random_layer_weights(rng, hidden_size=4, num_heads=4, num_kv_heads=2,
                             head_size=2, intermediate_size=4)
    manager = BlockSpaceManager(bs, nblocks, 0, watermark=0.0)
    seqs = [Sequence(i, [7], bs) for i in range(2)]
    for i, seq in enumerate(seqs):
        manager.allocate(SequenceGroup(f"r{i}", [seq], SamplingParams()))
        seq.status = SequenceStatus.RUNNING
    group = TensorParallelGroup(w, tp, nblocks, bs)
    hidden = {s.seq_id: [] for s in seqs}
    for pos in range(5):
        if pos:
            for seq in seqs:
                seq.append_token_id(7)
                assert manager.append_slots(seq) == []
        tables = [manager.get_block_table(s) for s in seqs]
        states = [[rng.uniform(-1, 1) for _ in range(4)] for _ in seqs]
        for s, x in zip(seqs, states):
            hidden[s.seq_id].append(x)
        step = group.execute_model([s.seq_id for s in seqs], [pos, pos], states, tables)
        for s, seq_trace in zip(seqs, step.seqs):
            np.testing.assert_allclose(seq_trace.output,
                                       numpy_layer(w, hidden[s.seq_id])[1],
                                       rtol=1e-12, atol=1e-13)
    # vLLM's stack hands out 7, 6 for the prompts, then alternates between sequences
    assert [list(t) for t in step.broadcast.block_tables] == [[7, 5, 3], [6, 4, 2]]
