"""pages/questions/window.py and the hybrid model's block questions: a sliding-window group
gives back the blocks wholly before the next token's window; V1's free queue through a
step that freed blocks first."""
from asked_questions import one


def test_blocks_before_the_window_go_back_to_the_pool():
    # 48 tokens computed, window 32: tokens 0-16 are out of reach, so block 0 of each
    # sliding-window group (2 and 3) goes back; the window counted from the end of the
    # step's tokens would send back two blocks per group.
    q = one("hybrid-models", index=4, kind="window-skip")
    assert q.correct == (2, 3) and (2, 3, 5, 6) in q.values and (1, 2, 3) in q.values
    assert "num_computed_tokens - sliding_window + 1" in q.explanation


def test_a_freed_hashed_block_goes_to_the_tail_and_the_head_is_evicted_first():
    q = one("hybrid-models", index=6, kind="evict-next")
    assert q.correct == 2 and 16 in q.values        # 16: the head, without a hash


def test_a_hybrid_model_s_new_block_names_its_group():
    q = one("hybrid-models", index=4, kind="next-block")
    assert "in sliding window 2" in q.prompt and q.about["group"] == 2 and q.correct == 12
