"""Paged attention v1/v2 against numpy's contiguous softmax attention (float64)."""
import json
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.perf.attention import (
    PARTITION_SIZE,
    AttentionOutput,
    BlockScores,
    PartitionResult,
    PartitionsMerged,
    Softmax,
    ValueAccumulated,
    contiguous_attention,
    gather_kv,
    new_kv_cache,
    paged_attention_v1,
    paged_attention_v1_trace,
    paged_attention_v2,
    paged_attention_v2_trace,
    random_paged_attention_inputs,
    records_as_dicts,
    slot_for,
    use_v1,
    write_kv,
)

RTOL = 1e-12
ATOL = 1e-14


def numpy_reference(inp):
    """Gather K/V through the block table with numpy indexing, then plain softmax
    attention with the KV heads repeated for grouped-query attention."""
    k_cache = np.array(inp.key_cache)              # [blocks, kv_heads, slots, d]
    v_cache = np.array(inp.value_cache)
    pos = np.arange(inp.seq_len)
    blocks = np.array(inp.block_table)[pos // inp.block_size]
    slots = pos % inp.block_size
    keys = k_cache[blocks, :, slots, :]             # [seq, kv_heads, d]
    values = v_cache[blocks, :, slots, :]
    q = np.array(inp.query)                         # [heads, d]
    group = q.shape[0] // inp.num_kv_heads
    keys = np.repeat(keys, group, axis=1)           # [seq, heads, d]
    values = np.repeat(values, group, axis=1)
    logits = np.einsum("hd,shd->hs", q, keys) * inp.scale
    logits -= logits.max(axis=1, keepdims=True)
    w = np.exp(logits)
    w /= w.sum(axis=1, keepdims=True)
    return np.einsum("hs,shd->hd", w, values)


def make(seed, *, num_heads=4, num_kv_heads=2, head_size=8, block_size=16, seq_len=37,
         **kw):
    return random_paged_attention_inputs(
        random.Random(seed), num_heads=num_heads, num_kv_heads=num_kv_heads,
        head_size=head_size, block_size=block_size, seq_len=seq_len, **kw)


def assert_close(actual, expected):
    np.testing.assert_allclose(np.array(actual), expected, rtol=RTOL, atol=ATOL)


# Lengths per block size: 1, exact multiples, one past a multiple, and lengths that
# cross the default 512-token partition.
BLOCK_SIZES = [1, 2, 4, 8, 16, 32]


def lengths_for(bs):
    return sorted({1, bs, bs + 1, 3 * bs, 3 * bs - 1, 37, 130})


@pytest.mark.parametrize("block_size", BLOCK_SIZES)
def test_v1_and_v2_equal_numpy_over_block_sizes_and_lengths(block_size):
    for i, seq_len in enumerate(lengths_for(block_size)):
        inp = make(1000 * block_size + i, block_size=block_size, seq_len=seq_len,
                   head_size=4)
        ref = numpy_reference(inp)
        assert_close(paged_attention_v1(**inp.args()), ref)
        assert_close(paged_attention_v2(**inp.args(), partition_size=4 * block_size), ref)


@pytest.mark.parametrize("seq_len", [511, 512, 513, 1024, 1100])
def test_lengths_around_the_default_partition(seq_len):
    inp = make(seq_len, num_heads=2, num_kv_heads=1, head_size=4, block_size=16,
               seq_len=seq_len)
    ref = numpy_reference(inp)
    assert_close(paged_attention_v1(**inp.args()), ref)
    assert_close(paged_attention_v2(**inp.args()), ref)   # default 512


@pytest.mark.parametrize("num_heads,num_kv_heads", [
    (4, 4),    # multi-head: one KV head per query head
    (4, 2),    # 2 query heads per KV head
    (8, 2),    # 4
    (8, 1),    # 8, multi-query attention
    (6, 1),    # MQA with a non-power-of-two head count
    (16, 2),   # 8
])
def test_grouped_query_settings(num_heads, num_kv_heads):
    for block_size, seq_len in [(4, 23), (16, 64), (8, 200)]:
        inp = make(num_heads * 100 + num_kv_heads + seq_len, num_heads=num_heads,
                   num_kv_heads=num_kv_heads, head_size=4, block_size=block_size,
                   seq_len=seq_len)
        ref = numpy_reference(inp)
        assert_close(paged_attention_v1(**inp.args()), ref)
        assert_close(paged_attention_v2(**inp.args(), partition_size=2 * block_size), ref)


def test_grouped_query_heads_in_a_group_read_the_same_kv_head():
    # With identical queries, heads sharing a KV head give identical outputs and heads
    # of different groups do not: the mapping is h // (num_heads // num_kv_heads).
    inp = make(5, num_heads=8, num_kv_heads=2, seq_len=20)
    inp.query = [list(inp.query[0]) for _ in range(8)]
    out = paged_attention_v1(**inp.args())
    assert all(out[h] == out[0] for h in range(4))
    assert all(out[h] == out[4] for h in range(4, 8))
    assert out[0] != out[4]


@pytest.mark.parametrize("block_size,seq_len", [(1, 9), (4, 33), (8, 256), (16, 300)])
def test_v1_equals_v2_for_several_partition_sizes(block_size, seq_len):
    inp = make(seq_len, block_size=block_size, seq_len=seq_len, head_size=4)
    v1 = np.array(paged_attention_v1(**inp.args()))
    for partition_size in sorted({block_size, 2 * block_size, 64, 128, 512}):
        if partition_size % block_size:
            continue
        v2 = paged_attention_v2(**inp.args(), partition_size=partition_size)
        assert_close(v2, v1)


def test_contiguous_attention_equals_numpy():
    inp = make(9, num_heads=6, num_kv_heads=3, seq_len=41)
    keys, values = gather_kv(inp.key_cache, inp.value_cache, inp.block_table,
                             inp.seq_len, inp.block_size)
    assert_close(contiguous_attention(inp.query, keys, values, inp.scale),
                 numpy_reference(inp))


def test_shuffled_block_table_is_really_scattered_and_still_correct():
    inp = make(3, block_size=4, seq_len=40, spare_blocks=6)
    assert inp.block_table != sorted(inp.block_table)
    assert len(set(inp.block_table)) == len(inp.block_table)
    assert_close(paged_attention_v1(**inp.args()), numpy_reference(inp))


# ----------------------------------------------------------------------------- masking

def unused_slots(inp):
    """(block, slot) pairs the sequence does not own: past seq_len in its last block,
    and every slot of blocks outside its table."""
    owned = {slot_for(inp.block_table, inp.block_size, j) for j in range(inp.seq_len)}
    return [(b, s) for b in range(len(inp.key_cache)) for s in range(inp.block_size)
            if (b, s) not in owned]


@pytest.mark.parametrize("block_size,seq_len", [(4, 5), (8, 13), (16, 17), (16, 31)])
def test_garbage_in_unused_slots_does_not_change_the_result(block_size, seq_len):
    inp = make(seq_len, block_size=block_size, seq_len=seq_len, spare_blocks=3)
    before_v1 = paged_attention_v1(**inp.args())
    before_v2 = paged_attention_v2(**inp.args(), partition_size=block_size)
    rng = random.Random(77)
    slots = unused_slots(inp)
    last_block = inp.block_table[(seq_len - 1) // block_size]
    assert any(b == last_block for b, _ in slots), "the last block must be partial"
    for b, s in slots:
        for cache in (inp.key_cache, inp.value_cache):
            for head in cache[b]:
                head[s] = [rng.uniform(-1e6, 1e6) for _ in head[s]]
    assert paged_attention_v1(**inp.args()) == before_v1
    assert paged_attention_v2(**inp.args(), partition_size=block_size) == before_v2


def test_the_garbage_would_matter_if_it_were_read():
    # Guard for the test above: attending over the whole last block (no mask) gives a
    # different answer, so an unmasked kernel would have been caught.
    inp = make(4, block_size=8, seq_len=13)
    unmasked = paged_attention_v1(**{**inp.args(), "seq_len": 16})
    assert not np.allclose(unmasked, numpy_reference(inp))


# ---------------------------------------------------------------------------- hypothesis

@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), block_size=st.sampled_from(BLOCK_SIZES),
       seq_len=st.integers(1, 300), num_kv_heads=st.sampled_from([1, 2, 3]),
       group=st.sampled_from([1, 2, 4, 8]), partition_blocks=st.integers(1, 12))
def test_property_v1_v2_numpy_agree(seed, block_size, seq_len, num_kv_heads, group,
                                    partition_blocks):
    inp = make(seed, num_heads=num_kv_heads * group, num_kv_heads=num_kv_heads,
               head_size=3, block_size=block_size, seq_len=seq_len)
    ref = numpy_reference(inp)
    assert_close(paged_attention_v1(**inp.args()), ref)
    assert_close(paged_attention_v2(**inp.args(),
                                    partition_size=partition_blocks * block_size), ref)


# ------------------------------------------------------------------------------- traces

def test_v1_trace_records_and_final_output():
    inp = make(11, num_heads=2, num_kv_heads=1, head_size=4, block_size=4, seq_len=10)
    trace = paged_attention_v1_trace(**inp.args())
    assert isinstance(trace[-1], AttentionOutput)
    assert [list(o) for o in trace[-1].output] == paged_attention_v1(**inp.args())

    for head in range(2):
        recs = [r for r in trace if getattr(r, "head", None) == head]
        kinds = [r.kind for r in recs]
        # 3 blocks scored, one softmax, 3 blocks accumulated, in that order
        assert kinds == ["block_scores"] * 3 + ["softmax"] + ["value_accumulated"] * 3
        scores = [r for r in recs if isinstance(r, BlockScores)]
        assert [r.logical_block for r in scores] == [0, 1, 2]
        assert [r.physical_block for r in scores] == inp.block_table
        assert scores[2].positions == (8, 9, 10, 11)
        assert scores[2].masked == (False, False, True, True)
        assert scores[2].scores[2:] == (None, None)
        assert all(r.partition is None and r.kv_head == 0 for r in scores)
        # each score is q.k*scale of the key stored at that slot
        k = inp.key_cache[inp.block_table[1]][0][3]
        assert scores[1].scores[3] == pytest.approx(
            inp.scale * sum(a * b for a, b in zip(inp.query[head], k)), rel=1e-14)
        sm = next(r for r in recs if isinstance(r, Softmax))
        logits = [s for r in scores for s in r.scores if s is not None]
        assert sm.max_logit == max(logits)
        assert sm.exp_sum == pytest.approx(sum(math.exp(x - max(logits)) for x in logits))
        assert sm.positions == tuple(range(10))
        assert sum(sm.weights) == pytest.approx(1.0, rel=1e-14)
        acc = [r for r in recs if isinstance(r, ValueAccumulated)]
        assert [len(r.weights) for r in acc] == [4, 4, 2]
        assert list(acc[-1].output) == paged_attention_v1(**inp.args())[head]


def test_v2_trace_partitions_and_merge():
    inp = make(12, num_heads=2, num_kv_heads=2, head_size=4, block_size=4, seq_len=21)
    trace = paged_attention_v2_trace(**inp.args(), partition_size=8)
    assert [list(o) for o in trace[-1].output] == paged_attention_v2(
        **inp.args(), partition_size=8)
    parts = [r for r in trace if isinstance(r, PartitionResult) and r.head == 1]
    assert [(p.start, p.end) for p in parts] == [(0, 8), (8, 16), (16, 21)]
    merged = next(r for r in trace if isinstance(r, PartitionsMerged) and r.head == 1)
    assert merged.global_max == max(p.max_logit for p in parts)
    assert merged.rescale_factors == tuple(math.exp(p.max_logit - merged.global_max)
                                           for p in parts)
    assert 1.0 in merged.rescale_factors
    assert list(merged.output) == paged_attention_v2(**inp.args(), partition_size=8)[1]
    # a partition's blocks: only its own, and the partition index is set
    blocks = [r for r in trace if isinstance(r, BlockScores) and r.head == 1]
    assert [(r.partition, r.logical_block) for r in blocks] == [
        (0, 0), (0, 1), (1, 2), (1, 3), (2, 4), (2, 5)]
    # the partial output is normalised by its own exp sum (vLLM's tmp_out)
    sm = [r for r in trace if isinstance(r, Softmax) and r.head == 1]
    assert [s.exp_sum for s in sm] == [p.exp_sum for p in parts]


def test_v2_single_partition_is_copied_and_equals_v1_exactly():
    inp = make(13, seq_len=30, block_size=8)
    assert paged_attention_v2(**inp.args()) == paged_attention_v1(**inp.args())


def test_trace_is_json_ready_and_deterministic():
    a = make(21, num_heads=2, num_kv_heads=1, head_size=3, block_size=2, seq_len=5,
             decimals=2)
    b = make(21, num_heads=2, num_kv_heads=1, head_size=3, block_size=2, seq_len=5,
             decimals=2)
    assert a.args() == b.args()
    ta = records_as_dicts(paged_attention_v2_trace(**a.args(), partition_size=2))
    tb = records_as_dicts(paged_attention_v2_trace(**b.args(), partition_size=2))
    assert json.dumps(ta) == json.dumps(tb)
    assert json.loads(json.dumps(ta)) == ta
    assert all(x == round(x, 2) for row in a.query for x in row)


# ----------------------------------------------------------------------- store and misc

def test_write_and_slot_mapping_follow_the_block_table():
    # The paper's Fig. 6: block size 4, logical blocks 0 and 1 in physical 7 and 1.
    k_cache, v_cache = new_kv_cache(8, 1, 4, 2)
    table = [7, 1]
    assert slot_for(table, 4, 0) == (7, 0)
    assert slot_for(table, 4, 6) == (1, 2)
    assert write_kv(k_cache, v_cache, table, 4, 5, [[1.0, 2.0]], [[3.0, 4.0]]) == (1, 1)
    assert k_cache[1][0][1] == [1.0, 2.0] and v_cache[1][0][1] == [3.0, 4.0]
    with pytest.raises(ValueError, match="logical block 2"):
        slot_for(table, 4, 8)


@pytest.mark.parametrize("change,match", [
    ({"num_kv_heads": 3}, "multiple of num_kv_heads"),
    ({"seq_len": 0}, "at least 1"),
    ({"seq_len": 100}, "needs 7 blocks"),
    ({"block_table": [0, 99]}, "not a block of the cache"),
    ({"block_size": 32}, "slots"),
])
def test_bad_inputs_are_rejected(change, match):
    inp = make(1, num_heads=4, num_kv_heads=2, block_size=16, seq_len=20)
    with pytest.raises(ValueError, match=match):
        paged_attention_v1(**{**inp.args(), **change})


@pytest.mark.parametrize("partition_size", [0, -16, 24, 100])
def test_partition_size_must_be_a_multiple_of_block_size(partition_size):
    inp = make(1, block_size=16, seq_len=20)
    with pytest.raises(ValueError, match="multiple of block_size"):
        paged_attention_v2(**inp.args(), partition_size=partition_size)


def test_use_v1_follows_vllm_heuristic():
    assert PARTITION_SIZE == 512
    assert use_v1(512, num_seqs=1, num_heads=32)          # one partition
    assert not use_v1(513, num_seqs=1, num_heads=32)      # 2 partitions, little work
    assert use_v1(4096, num_seqs=17, num_heads=32)        # 544 > 512 thread blocks
    assert not use_v1(4096, num_seqs=16, num_heads=32)    # exactly 512: not more
    assert not use_v1(8193, num_seqs=64, num_heads=32)    # too long for v1


def test_the_kernel_scores_the_padding_then_masks_it_and_zeroes_its_values():
    """v1/v2 load whole blocks: the padded slots of the last block are scored on their stale
    keys (kept in padded_qk), their logits are 0 and out of the max and the softmax, and
    their values are loaded and zeroed, so the output equals plain attention."""
    import random

    from sim.perf.attention import BlockScores, ValueAccumulated
    inp = random_paged_attention_inputs(random.Random(0), num_heads=1, num_kv_heads=1,
                                        head_size=4, block_size=4, seq_len=13)
    trace = paged_attention_v1_trace(**inp.args())
    last = [r for r in trace if isinstance(r, BlockScores)][-1]
    assert last.masked == (False, True, True, True)
    assert last.scores[1:] == (None, None, None)
    assert last.padded_qk[0] is None and all(q is not None for q in last.padded_qk[1:])
    values = [r for r in trace if isinstance(r, ValueAccumulated)]
    assert values[-1].zeroed == (13, 14, 15) and all(not v.zeroed for v in values[:-1])
