"""pages/questions/scheduling.py: who is preempted and how, who is admitted, what a step
runs, and a request's share of V1's budget."""
from asked_questions import asked, one

from pages.framework import registry
from pages.questions.scheduling import Limits, waiting_pass


def test_v055_preempts_the_tail_when_no_block_is_free_for_a_sequence():
    # preemption, iteration 7: B needs a free block per sequence and none is free, although
    # its token fits its last block (can_append_slots' heuristic); C, the tail, is swapped.
    q = one("preemption", index=8, kind="preempt")
    assert q.correct == ("C", "swap")
    assert ("C", "recompute") in q.values and ("nobody",) in q.values
    assert "can_append_slots" in q.explanation


def test_nobody_is_preempted_in_a_tight_step_that_fits():
    q = one("preemption", index=7, kind="preempt")
    assert q.correct == ("nobody",)


def test_v1_preempts_by_recompute_only():
    found = [q for i in range(1, 17)
             for q in asked("preemption", {"engine": "v1"}, i, "preempt")]
    assert any(q.correct == ("C", "recompute") for q in found)
    assert all(q.correct[-1] in ("recompute", "nobody") for q in found)


def test_v055_admits_nobody_while_a_request_is_swapped_out():
    w = registry.collect()[0]["preemption"].item
    trace = w.scenario(w.defaults())
    p = waiting_pass(trace[9], trace[10], Limits())
    assert p.admitted == () and "swapped out" in p.stop


def test_a_v055_step_that_admits_a_prompt_runs_no_decodes():
    qs = asked("v1-scheduler", index=3, kind="step-plan")
    v0 = next(q for q in qs if "v0.5.5" in q.prompt)
    v1 = next(q for q in qs if "V1" in q.prompt)
    assert v0.correct == (("C",), ())
    assert v1.correct == (("C", "D"), ("A", "B"))


def test_v1_gives_a_prompt_what_the_decodes_leave_of_the_budget():
    q = one("v1-scheduler", index=3, kind="budget-share")
    assert q.about["request_id"] == "D" and q.correct == 10
    assert 20 in q.values                         # its whole prompt: no chunking


def test_a_hit_lost_to_an_eviction_earlier_in_the_step_is_not_counted():
    # B was preempted and comes back: C's decode takes a block from the head of the free
    # queue first, evicting one of B's cached blocks, so B recomputes 3 tokens, not 2.
    raw = {"requests": "1/7@2, 14/1@5, 18/2@4", "budget": "27", "threshold": "4",
           "num_blocks": "37", "block_size": "1"}
    q = one("v1-scheduler", raw, index=10, kind="budget-share")
    assert q.about["request_id"] == "B" and q.correct == 3
