import pytest

from sim.core.sequence import SamplingParams, Sequence, SequenceGroup, SequenceStage, SequenceStatus


def test_finished_statuses_are_those_after_swapped():
    finished = {s for s in SequenceStatus if SequenceStatus.is_finished(s)}
    assert finished == {SequenceStatus.FINISHED_STOPPED, SequenceStatus.FINISHED_LENGTH_CAPPED,
                        SequenceStatus.FINISHED_ABORTED, SequenceStatus.FINISHED_IGNORED}
    assert SequenceStatus.FINISHED_IGNORED.label == "finished_ignored"


def test_lengths_blocks_and_progress():
    seq = Sequence(0, [5, 6, 7, 8, 9], block_size=4)
    assert (seq.get_len(), seq.get_prompt_len(), seq.n_blocks) == (5, 5, 2)
    assert seq.get_num_new_tokens() == 5 and seq.is_prefill()
    seq.update_num_computed_tokens(3)
    assert seq.is_prefill() and seq.get_num_new_tokens() == 2
    seq.update_num_computed_tokens(2)
    assert seq.stage is SequenceStage.DECODE
    seq.append_token_id(42, -0.5)
    assert seq.get_num_new_tokens() == 1 and seq.get_last_token_id() == 42
    assert seq.get_token_ids() == [5, 6, 7, 8, 9, 42]


def test_recompute_resets_progress_but_keeps_tokens():
    seq = Sequence(0, [1, 2, 3], 4)
    seq.update_num_computed_tokens(3)
    seq.append_token_id(7)
    seq.reset_state_for_recompute()
    assert seq.num_computed_tokens == 0 and seq.is_prefill()
    assert seq.get_num_new_tokens() == 4


def test_fork_copies_tokens_and_progress():
    seq = Sequence(0, [1, 2, 3], 4)
    seq.update_num_computed_tokens(3)
    seq.append_token_id(9, -1.0)
    child = seq.fork(5)
    assert child.seq_id == 5 and child.parent_seq_id == 0
    assert child.get_token_ids() == seq.get_token_ids()
    assert child.cumulative_logprob == -1.0 and child.num_computed_tokens == 3
    child.append_token_id(4)
    assert seq.get_len() == 4   # independent lists


def test_best_of_seats_are_charged_before_the_fork():
    group = SequenceGroup("A", [Sequence(0, [1, 2], 4)], SamplingParams(n=2, best_of=3))
    assert group.get_max_num_running_seqs() == 3
    beam = SequenceGroup("B", [Sequence(1, [1, 2], 4)],
                         SamplingParams(best_of=4, use_beam_search=True))
    assert beam.get_max_num_running_seqs() == 4


def test_group_queries():
    a, b = Sequence(0, [1], 4), Sequence(1, [1], 4)
    group = SequenceGroup("A", [a], SamplingParams())
    group.add(b)
    a.status = SequenceStatus.RUNNING
    b.status = SequenceStatus.FINISHED_STOPPED
    assert group.get_seqs(SequenceStatus.RUNNING) == [a]
    assert group.num_seqs() == 2 and group.num_unfinished_seqs() == 1
    assert group.get_finished_seqs() == [b] and not group.is_finished()
    with pytest.raises(ValueError):
        group.add(b)
    group.remove(0)
    assert group.is_finished()
    with pytest.raises(ValueError):
        group.remove(0)


def test_beam_score_excludes_a_final_eos():
    seq = Sequence(0, [5, 6, 7], 4, eos_token_id=2)
    seq.append_token_id(2, -3.0)
    assert seq.get_beam_search_score(1.0) == -1.0       # -3 / 3, EOS not counted
    seq2 = Sequence(1, [5, 6, 7], 4, eos_token_id=2)
    seq2.append_token_id(8, -3.0)
    assert seq2.get_beam_search_score(1.0) == -0.75


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=0), "n must be"), (dict(n=3, best_of=2), "best_of must be at least n"),
    (dict(max_tokens=0), "max_tokens"), (dict(use_beam_search=True), "beam width")])
def test_sampling_params_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)
