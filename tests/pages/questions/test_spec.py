"""pages/questions/spec.py: a step with drafts gains accepted + 1 tokens and writes the
rejected drafts' slots again."""
from asked_questions import one


def test_no_draft_accepted_still_gains_one_token():
    q = one("spec-decode", index=2, kind="spec-accept")
    assert q.correct == 1 and 0 in q.values


def test_rejected_drafts_slots_are_written_again():
    q = one("spec-decode", index=2, kind="spec-rollback")
    assert q.correct == (7, 9) and q.options[q.answer] == "slots 7-9"


def test_every_draft_accepted_rolls_nothing_back():
    q = one("spec-decode", index=4, kind="spec-rollback")
    assert q.correct == "none"
