"""sim/perf/kernel_walk.py: the paged attention kernel's progress, record by record."""
import random

import pytest

from sim.perf.attention import (
    contiguous_attention,
    gather_kv,
    paged_attention_v1,
    paged_attention_v1_trace,
    paged_attention_v2_trace,
    random_paged_attention_inputs,
)
from sim.perf.kernel_walk import HeadProgress, advance, walk, walk_kernel


def inputs(seed=0, num_heads=2, num_kv_heads=1, seq_len=13, block_size=4):
    return random_paged_attention_inputs(random.Random(seed), num_heads=num_heads,
                                         num_kv_heads=num_kv_heads, head_size=4,
                                         block_size=block_size, seq_len=seq_len, decimals=1)


def test_v1_walk_of_one_head_block_by_block():
    w = walk_kernel(inputs(), head=0)
    kinds = [s.kind for s in w]
    assert kinds == (["before"] + ["block_scores"] * 4 + ["softmax"]
                     + ["value_accumulated"] * 4 + ["attention_output"])
    assert w[0].record is None and w[0].head is None
    assert w.partition_size is None and len(w) == 11
    # Scores pile up block by block; the last block's slots past the length are masked.
    assert [len(s.head.scores) for s in w.steps[1:5]] == [4, 8, 12, 13]
    assert w[4].head.masked == {13, 14, 15}
    # The softmax gives every scored position a weight; the second walk adds blocks.
    assert set(w[5].head.weights) == set(range(13))
    assert sum(w[5].head.weights.values()) == pytest.approx(1.0)
    assert [sorted(s.head.accumulated) for s in w.steps[6:10]] == \
        [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3]]
    # The running output after the last block is the head's output.
    assert w[9].head.output == w[10].record.output[0]


def test_each_step_keeps_its_own_progress():
    w = walk_kernel(inputs(), head=1)
    assert len(w[1].head.scores) == 4 and len(w[2].head.scores) == 8
    assert not w[4].head.weights and w[5].head.weights


def test_the_output_equals_contiguous_attention_and_the_kernel():
    inp = inputs(seed=3, num_heads=4, num_kv_heads=2)
    for size in (None, 4, 8):
        w = walk_kernel(inp, partition_size=size)
        keys, values = gather_kv(inp.key_cache, inp.value_cache, inp.block_table,
                                 inp.seq_len, inp.block_size)
        assert w.reference == contiguous_attention(inp.query, keys, values, inp.scale)
        got = w.steps[-1].record.output
        for a, b in zip(got, w.reference):
            assert a == pytest.approx(b, abs=1e-12)
    assert [list(o) for o in walk_kernel(inp).steps[-1].record.output] == \
        paged_attention_v1(**inp.args())


def test_v2_partitions_arrive_in_order_and_the_reduce_sets_the_output():
    w = walk_kernel(inputs(), partition_size=8, head=0)
    merged = next(s for s in w if s.kind == "partitions_merged")
    assert list(merged.head.partitions) == [0, 1]
    assert merged.head.output == merged.record.output


def test_progress_starts_again_for_each_head():
    inp = inputs(num_heads=2, num_kv_heads=2)
    steps = walk(paged_attention_v2_trace(**inp.args(), partition_size=8))
    first_of_head_1 = next(s for s in steps if s.record is not None
                           and getattr(s.record, "head", None) == 1)
    assert len(first_of_head_1.head.scores) == 4 and not first_of_head_1.head.partitions
    assert sum(s.kind == "before" for s in steps) == 1


def test_only_the_watched_heads_records_are_kept():
    inp = inputs(num_heads=4, num_kv_heads=2)
    w = walk_kernel(inp, head=3)
    full = paged_attention_v1_trace(**inp.args())
    assert [s.record for s in w.steps[1:]] == \
        [r for r in full if r.kind == "attention_output" or r.head == 3]


def test_advance_rejects_a_record_that_is_not_per_head():
    out = paged_attention_v1_trace(**inputs().args())[-1]
    with pytest.raises(ValueError):
        advance(HeadProgress(), out)


def test_inputs_name_the_kv_head_each_query_head_reads():
    inp = inputs(num_heads=4, num_kv_heads=2)
    assert [inp.kv_head(h) for h in range(4)] == [0, 0, 1, 1]
