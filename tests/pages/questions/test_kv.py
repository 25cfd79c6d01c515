"""pages/questions/kv.py: the free list's order, append_slots' three answers, copy-on-write's
last writer, and what a finishing request frees."""
from asked_questions import asked, one

from pages.questions.kv import plan_appends


def test_next_block_asks_about_an_allocation_after_another_one_in_the_same_step():
    # paged-attention, iteration 2: A's logical block 2 takes 8 off the stack, then B's 7.
    q = one("paged-attention", index=3, kind="next-block")
    assert q.about["seq_id"] == 1 and q.correct == 7
    assert 0 in q.values                      # the bottom of the stack: the FIFO misreading
    assert "UncachedBlockAllocator.allocate" in q.code


def test_v1_next_block_is_the_head_of_the_free_queue():
    q = one("paged-attention", {"engine": "v1"}, index=3, kind="next-block")
    assert q.correct == 5 and "popleft_n" in q.explanation and "v0.25.1" in q.code


def test_new_block_needs_one_when_the_newest_token_starts_a_logical_block():
    q = one("paged-attention", index=3, kind="new-block")   # B's 5th token: position 4
    assert q.about["seq_id"] == 1 and q.correct == "new"
    assert q.options == ("No: it writes into its last block, 9", "Yes: it needs a new block",
                         "Yes: it first gets a copy of block 9 (copy-on-write)")


def test_the_last_writer_of_a_shared_block_writes_in_place():
    # parallel sampling, iteration 1: A.0 and A.1 copy block 13, A.2 finds ref count 1.
    q = one("parallel-sampling", index=2, kind="cow")
    assert q.correct == 2 and set(q.values) == {0, 1, 2, "none"}
    assert "2 copies, not 3" in q.explanation


def test_plan_appends_drops_the_shared_count_with_each_copy():
    from pages.framework import registry

    w = registry.collect()[0]["parallel-sampling"].item
    trace = w.scenario(w.defaults())
    snap = trace[1].snapshot
    plan = plan_appends(snap, snap["requests"][0])
    assert [plan[s][0] for s in (0, 1, 2)] == ["cow", "cow", "none"]


def test_a_finished_request_frees_shared_blocks_once_the_last_table_lets_go():
    q = one("parallel-sampling", index=6, kind="blocks-freed")
    assert q.correct == (8, 9, 10, 11, 12, 13, 14)
    assert (8, 9, 10, 11, 12, 13) in q.values     # the misreading: shared block 14 stays


def test_nothing_is_asked_before_the_first_engine_step():
    assert asked("paged-attention", index=0) == []
