"""pages/questions/beams.py: the selection keeps the best candidates, not the best beams; a
dropped beam's fresh copy is freed with it."""
from asked_questions import one


def test_survivors_are_the_parents_of_the_best_candidates():
    q = one("beam-search", index=2, kind="beam-survivors")
    assert q.correct == (1, 3) and (1, 2, 3, 4) in q.values


def test_the_copy_made_this_step_is_freed_with_the_dropped_beam():
    q = one("beam-search", index=2, kind="blocks-freed")
    assert q.correct == (16, 18)        # 18: held by A.4 alone; 16: A.2's copy of it
    assert () in q.values
