"""The stand-in model's additions for V1 (sim/stand_in_model.py): sample_token,
shared_prefix_token_ids, draft_token_ids. The v0.5.5 methods are untouched."""
from sim.stand_in_model import FIRST_REGULAR_TOKEN, StandInModel


def test_sample_token_is_a_pure_function_of_seed_seq_and_position():
    m = StandInModel(seed=1)
    assert m.sample_token(3, 10, 2) == m.sample_token(3, 10, 2)
    assert m.sample_token(3, 10, 2) == StandInModel(seed=1).sample_token(3, 10, 2)
    tokens = {m.sample_token(s, p, 0)[0] for s in range(4) for p in range(50)}
    assert len(tokens) > 150 and min(tokens) >= FIRST_REGULAR_TOKEN
    assert StandInModel(seed=2).sample_token(3, 10, 2) != m.sample_token(3, 10, 2)
    token, logprob = m.sample_token(3, 10, 2)
    assert -4.0 < logprob <= 0.0


def test_sample_token_emits_eos_at_output_len_and_by_eos_prob():
    m = StandInModel(seed=1)
    assert m.sample_token(3, 10, 2, output_len=3)[0] == m.eos_token_id
    assert m.sample_token(3, 10, 1, output_len=3)[0] != m.eos_token_id
    always = StandInModel(seed=1, eos_prob=1.0)
    assert always.sample_token(3, 10, 0)[0] == always.eos_token_id


def test_shared_prefix_is_shared_and_unlike_prompts():
    m = StandInModel(seed=1)
    assert m.shared_prefix_token_ids(6) == m.shared_prefix_token_ids(8)[:6]
    assert m.shared_prefix_token_ids(6) != m.prompt_token_ids(0, 6)
    assert m.shared_prefix_token_ids(6, 1) != m.shared_prefix_token_ids(6)


def test_drafts_match_the_model_at_the_acceptance_rate():
    m = StandInModel(seed=1)
    right = [m.sample_token(7, 20 + i, 5 + i)[0] for i in range(4)]
    assert m.draft_token_ids(7, 20, 5, 4, 1.0) == right
    wrong = m.draft_token_ids(7, 20, 5, 4, 0.0)
    assert all(w != r and w >= FIRST_REGULAR_TOKEN for w, r in zip(wrong, right))
    hits = sum(d == m.sample_token(s, p, 0)[0]
               for s in range(20) for p in range(50)
               for d in m.draft_token_ids(s, p, 0, 1, 0.6))
    assert 450 < hits < 750
    eos = m.draft_token_ids(7, 20, 0, 2, 0.0, output_len=1)
    assert eos[0] != m.eos_token_id
