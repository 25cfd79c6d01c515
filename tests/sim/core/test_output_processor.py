"""Parallel sampling and beam search (VLLM.md section 5)."""
import pytest
from helpers import engine, run_checked

from sim.core.invariants import check_engine
from sim.core.output_processor import check_stop
from sim.core.sequence import SamplingParams, Sequence, SequenceStatus
from sim.events import BeamSearchStep, CopyOnWrite, Forked, SeqFreed


@pytest.mark.parametrize("best_of", [2, 3, 4, 6])
def test_best_of_minus_one_copies_when_the_prompt_ends_mid_block(best_of):
    eng = engine(gpu=64)
    eng.add_request("A", 7, SamplingParams(n=best_of, max_tokens=4))
    eng.step()
    last = eng.block_manager.block_tables[0][-1]
    assert last.ref_count == best_of
    out = eng.step()
    cows = [e for e in out.events if isinstance(e, CopyOnWrite)]
    assert len(cows) == best_of - 1
    # Parent first, then each child in turn; the last finds ref count 1.
    seq_ids = [s.seq_id for s in eng.requests["A"].get_seqs()]
    assert [c.seq_id for c in cows] == seq_ids[:best_of - 1]
    assert all(c.src == last.block_number for c in cows)
    run_checked(eng)


@pytest.mark.parametrize("prompt_len", [4, 8, 12])
def test_no_copies_when_the_prompt_ends_on_a_block_boundary(prompt_len):
    eng = engine(gpu=64)
    eng.add_request("A", prompt_len, SamplingParams(n=3, max_tokens=4))
    outs = run_checked(eng)
    assert not [e for o in outs for e in o.events if isinstance(e, CopyOnWrite)]
    # Each sample took its own new block at the first decode.
    first_decode = outs[1]
    assert len(first_decode.scheduler_outputs.blocks_to_copy) == 0


def test_forks_happen_before_frees():
    # Samples finishing at different lengths: the parent finishes at the prompt step
    # (max_tokens=1) while children are forked from it in the same step.
    eng = engine(gpu=64)
    eng.add_request("A", 7, SamplingParams(n=3, max_tokens=1))
    out = eng.step()
    kinds = [type(e).__name__ for e in out.events if isinstance(e, (Forked, SeqFreed))]
    assert "Forked" not in kinds   # finished children are never forked
    eng2 = engine(gpu=64)
    eng2.add_request("A", 7, SamplingParams(n=2, max_tokens=3), output_len=None)
    out = run_checked(eng2)
    for o in out:
        names = [type(e).__name__ for e in o.events]
        if "Forked" in names and "SeqFreed" in names:
            assert names.index("Forked") < names.index("SeqFreed")


def test_beam_search_frees_pruned_blocks_in_the_same_step():
    eng = engine(gpu=64)
    eng.add_request("A", 6, SamplingParams(best_of=3, use_beam_search=True, max_tokens=10))
    outs = run_checked(eng)
    for o in outs:
        steps = [e for e in o.events if isinstance(e, BeamSearchStep)]
        if not steps:
            continue
        (bs,) = steps
        assert len(bs.candidates) == 6                       # 2k candidates
        kept = [c for c in bs.candidates if c.outcome != "pruned"]
        assert len(kept) <= 3
        scores = [c.cumulative_logprob for c in bs.candidates]
        assert scores == sorted(scores, reverse=True)


def test_beam_ref_counts_equal_live_beams_below_every_block():
    for seed in range(6):
        eng = engine(gpu=96, seed=seed)
        eng.add_request("A", 5, SamplingParams(best_of=4, use_beam_search=True,
                                               max_tokens=12))
        while eng.has_unfinished_requests():
            eng.step()
            live = [s for s in eng.requests["A"].get_seqs() if not s.is_finished()]
            counts = {}
            for s in live:
                for b in eng.block_manager.block_tables[s.seq_id]:
                    counts[id(b)] = counts.get(id(b), 0) + 1
            for s in live:
                for b in eng.block_manager.block_tables[s.seq_id]:
                    assert b.ref_count == counts[id(b)]
        assert eng.block_manager.get_num_free_gpu_blocks() == 96


def test_beam_search_with_eos_keeps_finished_beams():
    from sim.core.config import CacheConfig
    from sim.core.engine import LLMEngine
    from sim.stand_in_model import StandInModel
    eng = LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=96, num_cpu_blocks=0,
                                watermark=0.0),
                    model=StandInModel(seed=1, eos_prob=0.3))
    eng.add_request("A", 5, SamplingParams(n=2, best_of=3, use_beam_search=True,
                                           max_tokens=20))
    run_checked(eng)
    group = eng.requests["A"]
    statuses = {s.status for s in group.get_seqs()}
    assert SequenceStatus.FINISHED_STOPPED in statuses
    assert group.is_finished() and len(group.get_seqs()) <= 3


def test_stop_checker_order():
    sp = SamplingParams(max_tokens=2, stop_token_ids=(7,))
    seq = Sequence(0, [5, 5, 5], 4, eos_token_id=2)
    seq.append_token_id(2)
    check_stop(seq, sp, 100)
    assert seq.status is SequenceStatus.FINISHED_STOPPED
    seq = Sequence(0, [5, 5, 5], 4, eos_token_id=2)
    seq.append_token_id(2)
    check_stop(seq, SamplingParams(max_tokens=2, ignore_eos=True), 100)
    assert seq.status is SequenceStatus.WAITING
    seq.append_token_id(7)
    check_stop(seq, sp, 100)
    assert seq.status is SequenceStatus.FINISHED_STOPPED      # stop token beats max_tokens
    seq = Sequence(0, [5, 5, 5], 4, eos_token_id=2)
    seq.append_token_id(9)
    check_stop(seq, sp, 3)
    assert seq.status is SequenceStatus.FINISHED_LENGTH_CAPPED   # longer than the model
    seq = Sequence(0, [5, 5, 5], 4, eos_token_id=2)
    seq.append_token_id(9)
    seq.append_token_id(9)
    check_stop(seq, sp, 100)
    assert seq.status is SequenceStatus.FINISHED_LENGTH_CAPPED   # max_tokens


def test_scripted_output_len_stops_with_eos():
    eng = engine(gpu=64)
    eng.add_request("A", 5, SamplingParams(max_tokens=50), output_len=7)
    run_checked(eng)
    seq = eng.requests["A"].get_seqs()[0]
    assert seq.get_output_len() == 7 and seq.get_last_token_id() == 2
    assert seq.status is SequenceStatus.FINISHED_STOPPED


def test_parallel_samples_diverge():
    eng = engine(gpu=64)
    eng.add_request("A", 5, SamplingParams(n=3, max_tokens=6))
    run_checked(eng)
    outs = {tuple(s.output_token_ids) for s in eng.requests["A"].get_seqs()}
    assert len(outs) == 3


def test_the_single_sample_fast_path_equals_the_general_path(monkeypatch):
    """`_sample_one` is `_process_sampling` written out for one sequence and one sample;
    the two must give the same tokens, events and blocks."""
    from sim.core.output_processor import OutputProcessor
    from sim.studies.scenarios import get_scenario

    def trace():
        eng = get_scenario("recompute").build_engine()
        return [(o.tokens, o.events) for o in eng.run()], check_engine(eng)

    fast = trace()
    monkeypatch.setattr(OutputProcessor, "_sample_one",
                        lambda self, group, running: self._process_sampling(group, False,
                                                                            running))
    slow = trace()
    assert fast == slow and fast[0]


def test_n_1_with_best_of_keeps_one_sample_and_never_forks():
    """vLLM v0.5.5's fast path (single_step.py, _process_sequence_group_outputs): with n = 1
    and no beam search only the first sample is kept, nothing is forked or copied, yet the
    group is charged best_of seats all its life. Prompt 7, block size 4, best_of 2, 16 GPU
    blocks: one sequence, no copy, 14 blocks free after the first decode."""
    eng = engine(gpu=16)
    group = eng.add_request("A", 7, SamplingParams(n=1, best_of=2, max_tokens=4,
                                                   ignore_eos=True))
    outs = [eng.step(), eng.step()]
    assert len(group.get_seqs()) == 1
    assert not [e for o in outs for e in o.events if isinstance(e, (CopyOnWrite, Forked))]
    assert eng.block_manager.get_num_free_gpu_blocks() == 14
    assert group.get_max_num_running_seqs() == 2
    run_checked(eng)
    # best_of > num_seqs(): still charged best_of seats after it finished, as in vLLM.
    assert group.get_max_num_running_seqs() == 2 and len(group.get_seqs()) == 1
