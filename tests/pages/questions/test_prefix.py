"""pages/questions/prefix.py: prefix-cache hits (whole blocks, never the last token), the free
queue's head and tail, and the block evicted first."""
from asked_questions import asked, one


def test_a_hit_counts_whole_cached_blocks_from_the_first():
    q = one("prefix-caching", index=3, kind="prefix-hit")       # R1: x's 2 blocks
    assert q.correct == 8 and "get_computed_blocks" in q.code


def test_a_fully_cached_prompt_still_computes_its_last_token():
    raw = {"prompts": "x:8/1, x/1@3"}
    found = [q for i in range(1, 8) for q in asked("prefix-caching", raw, i, "prefix-hit")]
    q = next(q for q in found if q.about["request_id"] == "R1")
    assert q.correct == 4 and 8 in q.values       # 8: the whole prompt, the misreading
    assert "num_tokens - 1" in q.explanation


def test_unhashed_blocks_go_to_the_head_of_the_free_queue():
    q = one("prefix-caching", index=4, kind="free-queue")       # R0 freed: #5, #4, #3
    assert q.correct == (5,) and () in q.values and "free_blocks" in q.code


def test_evict_next_skips_unhashed_and_touched_blocks():
    found = [q for i in range(1, 17) for q in asked("preemption", {"engine": "v1"}, i,
                                                    "evict-next")]
    assert found and all(q.correct != q.values[0] or len(q.values) > 1 for q in found)
