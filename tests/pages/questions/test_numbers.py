"""The cost and kernel pages' questions (pages/questions/memory.py, kernel.py, parallel.py,
roofline.py, allocation.py, batching.py): numbers a rule gives, against the misreadings."""
from asked_questions import one
from question_truth import TRUTH

from pages.framework import widget
from pages.topics.kv_cache.cost import COST, cost_numbers


def test_kv_bytes_count_kv_heads_not_query_heads():
    q = one("kv-growth", index=1, kind="kv-bytes")
    assert q.correct == 1024 and 2048 in q.values          # 2048: the 4 query heads


def test_the_calculator_is_asked_before_its_only_frame():
    q = one("kv-cost", index=0, kind="kv-fit")
    assert q.correct == 7 and 8 in q.values                 # 8: the batch asked for


def test_the_softmax_max_leaves_the_padded_slots_out():
    q = one("paged-attention-kernel", index=5, kind="kernel-max")
    assert q.correct == 0.87 and 38.29 in q.values


def test_a_block_of_values_adds_to_the_output():
    q = one("paged-attention-kernel", index=7, kind="kernel-partial")
    assert q.correct == (-0.08, 0.08, -0.17, 0.06)


def test_the_all_reduce_sums_the_partials():
    q = one("tensor-parallelism", index=2, kind="tp-partial")
    assert q.correct == (0.11, 0.02, -0.08, -0.03)
    assert "not an average" in q.explanation


def test_a_decode_batch_is_memory_bound_and_barely_slower():
    q = one("prefill-decode", index=2, kind="roofline")
    assert q.correct == (3.92, "memory") and (58.84, "memory") in q.values


def test_vllm_reserves_the_prompt_s_blocks_and_orca_a_buddy_chunk():
    assert one("fragmentation", index=1, kind="frag-reserve").correct == 8
    orca = one("fragmentation", index=4, kind="frag-reserve")
    assert "Orca (Max)" in orca.prompt and orca.correct == 32


def test_static_batching_lets_nobody_in_while_vllm_refills_at_once():
    q = one("continuous-batching", index=3, kind="batch-join")
    assert q.correct == ((), ("D", "E"))


def test_a_hybrid_model_is_sized_by_v1_s_pages():
    raw = {"model": "gemma-3-27b", "gpu": "h200", "dtype": "bf16", "seq_len": "8192"}
    q = one("kv-cost", raw, index=0, kind="kv-fit")
    assert q.correct == 17 and 19 in q.values             # 19: every layer full attention
    assert "an 8,192-token request" in q.explanation
    values, _ = widget.validate(COST, raw)
    assert TRUTH["kv-fit"](q, None, cost_numbers(values)) == q.correct
