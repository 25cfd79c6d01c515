"""pages/questions/pd.py: the disaggregated page's questions, each pinned on the default
trace of its widget."""
from asked_questions import asked, one


def test_a_prompt_finished_on_the_prefill_gpu_keeps_its_blocks():
    q = one("pd-step", index=2, kind="pd-hold")
    assert q.correct == "held" and "freed" in q.values
    assert "delay_free_blocks" in q.explanation


def test_the_decode_gpu_allocates_the_prompt_s_blocks_and_waits():
    # A's 96-token prompt in blocks of 16: 6 blocks, no token scheduled.
    q = one("pd-step", index=3, kind="pd-remote")
    assert q.correct == ("wait", 6) and ("decode", 6) in q.values
    assert "WAITING_FOR_REMOTE_KVS" in q.explanation


def test_a_landed_request_computes_its_last_prompt_token_again():
    q = one("pd-step", index=14, kind="pd-landed")
    assert q.correct == 1 and 0 in q.values and 64 in q.values


def test_disaggregation_has_the_shortest_longest_gap():
    q = one("pd-latency", index=0, kind="pd-gap")
    assert q.correct == "disaggregated" and len(q.values) == 3


def test_the_first_token_question_is_not_asked_when_two_configurations_tie():
    # Defaults: one and two colocated GPUs give the first token within 1% of each other.
    assert asked("pd-latency", index=0, kind="pd-ttft") == []
    # A budget of 2048: two colocated GPUs first; P/D pays the transfer and a step more.
    q = one("pd-latency", {"budget": "2048"}, index=0, kind="pd-ttft")
    assert q.correct == "colocated-2" and "a transfer and a step more" in q.explanation
