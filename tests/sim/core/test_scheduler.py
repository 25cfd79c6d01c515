"""The behaviours of VLLM.md section 4, each on its own."""
import pytest
from helpers import engine, events_of, run_checked

from sim.core.config import SchedulerConfig
from sim.core.scheduler import SchedulingBudget
from sim.core.sequence import SamplingParams, SequenceStatus
from sim.errors import SwapSpaceError
from sim.events import Admitted, Preempted, PromptIgnored, SwappedIn, SwappedOut
from sim.studies.scenarios import get_scenario


def swap_engine(**cache):
    """The "swap" scenario: A (6 tokens, 16 out), B (3, 6), C (5, 10, n=2) on 10 GPU blocks."""
    return get_scenario("swap").build_engine()


def scheduled_ids(out):
    return [s.seq_group.request_id for s in out.scheduler_outputs.scheduled_seq_groups]


def queues(eng):
    s = eng.scheduler
    return ([g.request_id for g in s.waiting], [g.request_id for g in s.running],
            [g.request_id for g in s.swapped])


def test_budget_is_request_id_aware():
    b = SchedulingBudget(token_budget=10, max_num_seqs=2)
    b.add_num_seqs("A", 1)
    b.add_num_seqs("A", 1)
    assert b.num_curr_seqs == 1
    assert b.can_schedule(num_new_tokens=10, num_new_seqs=1)
    assert not b.can_schedule(num_new_tokens=11, num_new_seqs=1)
    assert not b.can_schedule(num_new_tokens=1, num_new_seqs=2)
    b.subtract_num_seqs("A", 1)
    assert b.num_curr_seqs == 0


def test_a_step_that_admits_prompts_runs_no_decodes():
    eng = engine()
    eng.add_request("A", 5, SamplingParams(max_tokens=6))
    eng.add_request("B", 3, SamplingParams(max_tokens=2), arrival_step=2)
    outs = [eng.step() for _ in range(4)]
    assert [scheduled_ids(o) for o in outs] == [["A"], ["A"], ["B"], ["A", "B"]]
    assert [o.scheduler_outputs.num_prefill_groups for o in outs] == [1, 0, 1, 0]
    assert outs[2].scheduler_outputs.num_batched_tokens == 3


def test_prefills_are_admitted_in_fcfs_order_until_budget_stops():
    eng = engine(max_num_batched_tokens=10, max_model_len=10, max_num_seqs=8)
    for rid, n in [("A", 4), ("B", 4), ("C", 4), ("D", 1)]:
        eng.add_request(rid, n, SamplingParams(max_tokens=1))
    out = eng.step()
    # C does not fit the 10-token budget; admission stops there (D is not admitted
    # past C even though it would fit).
    assert scheduled_ids(out) == ["A", "B"]
    assert queues(eng)[0] == ["C", "D"]


def test_best_of_takes_its_seats_from_the_start():
    eng = engine(max_num_seqs=4)
    eng.add_request("A", 3, SamplingParams(n=3, max_tokens=2))
    eng.add_request("B", 3, SamplingParams(n=2, max_tokens=2))
    out = eng.step()
    assert scheduled_ids(out) == ["A"]          # A takes 3 of 4 seats; B needs 2


def _pressure(**kw):
    """A (6 tokens), B (5), C (4) on 10 blocks of 4: all fit, then run out while decoding."""
    eng = engine(gpu=10, **kw)
    for rid, n in [("A", 6), ("B", 5), ("C", 4)]:
        eng.add_request(rid, n, SamplingParams(max_tokens=12))
    return eng


def test_victim_is_the_tail_of_running_and_goes_to_the_front_of_waiting():
    eng = _pressure()
    eng.add_request("D", 3, SamplingParams(max_tokens=2), arrival_step=1)
    outs = []
    while not any(isinstance(e, Preempted) for o in outs for e in o.events):
        outs.append(eng.step())
    out = outs[-1]
    pre = [e for e in out.events if isinstance(e, Preempted)]
    # A took the last block for its next token; B cannot append: C (the tail) goes.
    assert [(p.request_id, p.mode, p.needed_by) for p in pre] == [("C", "recompute", "B")]
    assert scheduled_ids(out) == ["A", "B"]
    waiting, running, swapped = queues(eng)
    assert waiting[0] == "C" and running == ["A", "B"] and swapped == []
    c = eng.requests["C"].get_seqs()[0]
    assert c.status is SequenceStatus.WAITING and c.num_computed_tokens == 0
    assert c.seq_id not in eng.block_manager.block_tables
    # Next step C is recomputed: prompt + generated tokens in one prefill.
    nxt = eng.step()
    adm = [e for e in nxt.events if isinstance(e, Admitted)]
    assert adm and adm[0].request_id == "C" and adm[0].recompute
    # Recompute covers the prompt and every generated token, then samples one more.
    assert adm[0].num_tokens == c.get_len() - 1 > c.get_prompt_len()
    assert c.num_computed_tokens == adm[0].num_tokens


def test_several_recompute_victims_keep_their_running_order():
    # Four 4-token prompts fill 4 of 5 blocks; at the first decode every sequence needs a
    # new block. A takes the last one; B preempts D (the tail); C finds no block and
    # nobody behind it, so it preempts itself.
    eng = engine(gpu=5)
    for rid in "ABCD":
        eng.add_request(rid, 4, SamplingParams(max_tokens=30))
    eng.step()
    out = eng.step()
    pre = [e for e in out.events if isinstance(e, Preempted)]
    assert [(p.request_id, p.needed_by, p.victim_is_self) for p in pre] == [
        ("D", "B", False), ("C", "C", True)]
    assert scheduled_ids(out) == ["A", "B"]
    # Back in waiting in their running order.
    assert queues(eng) == (["C", "D"], ["A", "B"], [])
    run_checked(eng)


def test_a_group_preempts_itself_when_nobody_else_is_left():
    eng = engine(gpu=3)
    eng.add_request("A", 4, SamplingParams(max_tokens=20))
    outs = []
    for _ in range(12):
        outs.append(eng.step())
    pre = events_of(outs, Preempted)
    assert pre and pre[0][1].request_id == "A" and pre[0][1].victim_is_self


def test_multi_sequence_groups_are_swapped_single_ones_recomputed():
    eng = swap_engine()
    outs = run_checked(eng)
    pre = events_of(outs, Preempted)
    assert pre[0] == (5, Preempted("C", "swap", "A", False))
    assert all(e.mode == "swap" for _, e in pre if e.request_id == "C")
    (step_out, out_ev) = events_of(outs, SwappedOut)[0]
    (step_in, in_ev) = events_of(outs, SwappedIn)[0]
    assert (step_out, step_in) == (5, 6)
    # Two sequences share the prompt blocks: each distinct block moves once.
    c_seqs = eng.requests["C"].get_seqs()
    assert len(c_seqs) == 2
    assert len({g for g, _ in out_ev.mapping}) == len(out_ev.mapping)
    assert {c for _, c in out_ev.mapping} == {c for c, _ in in_ev.mapping}
    so = outs[step_out].scheduler_outputs
    assert so.blocks_to_swap_out == list(out_ev.mapping) and so.preempted == 1
    assert outs[step_in].scheduler_outputs.blocks_to_swap_in == list(in_ev.mapping)


def test_single_sequence_groups_are_recomputed_by_default():
    eng = _pressure()
    outs = run_checked(eng)
    assert {e.mode for _, e in events_of(outs, Preempted)} == {"recompute"}


def test_swap_in_uses_new_gpu_numbers():
    eng = swap_engine()
    for _ in range(5):
        eng.step()
    before = {s.seq_id: [b.block_number for b in eng.block_manager.block_tables[s.seq_id]]
              for s in eng.requests["C"].get_seqs()}
    out = eng.step()      # step 5: C is swapped out
    assert all(b.device.value == "cpu" for s in eng.requests["C"].get_seqs()
               for b in eng.block_manager.block_tables[s.seq_id])
    out = eng.step()      # step 6: B finished last step, C comes back
    after = {s.seq_id: [b.block_number for b in eng.block_manager.block_tables[s.seq_id]]
             for s in eng.requests["C"].get_seqs()}
    assert out.scheduler_outputs.blocks_to_swap_in
    assert after != before
    assert sorted(after) == sorted(before)


def test_no_admission_while_anything_is_swapped():
    eng = swap_engine()
    eng.add_request("D", 1, SamplingParams(max_tokens=1), arrival_step=5)
    outs = []
    while eng.has_unfinished_requests():
        swapped_before = bool(eng.scheduler.swapped)
        outs.append(eng.step())
        if swapped_before:
            assert not [e for e in outs[-1].events if isinstance(e, Admitted)]
    assert eng.requests["D"].first_scheduled_step > 5


def test_swap_in_only_in_a_step_without_preemption():
    eng = swap_engine()
    outs = run_checked(eng)
    assert any(o.scheduler_outputs.blocks_to_swap_in for o in outs)
    for o in outs:
        if o.scheduler_outputs.blocks_to_swap_in:
            assert o.scheduler_outputs.preempted == 0
            assert not o.scheduler_outputs.blocks_to_swap_out


def test_swapped_in_group_rejoins_at_the_back_of_running():
    eng = swap_engine()
    for _ in range(7):
        eng.step()
    assert queues(eng)[1] == ["A", "C"]


def test_prompt_longer_than_the_prompt_limit_is_ignored():
    eng = engine(gpu=64, max_model_len=16, max_num_batched_tokens=16, max_num_seqs=8)
    eng.add_request("A", 17, SamplingParams(max_tokens=2))
    eng.add_request("B", 3, SamplingParams(max_tokens=1))
    out = eng.step()
    ign = [e for e in out.events if isinstance(e, PromptIgnored)]
    assert [(e.request_id, e.reason) for e in ign] == [("A", "prompt_limit")]
    assert eng.requests["A"].get_seqs()[0].status is SequenceStatus.FINISHED_IGNORED
    assert "A" in out.finished and scheduled_ids(out) == ["B"]
    assert out.scheduler_outputs.ignored_seq_groups[0].request_id == "A"


def test_prompt_that_can_never_fit_is_ignored_not_waited_for():
    eng = engine(gpu=4, max_model_len=64, max_num_batched_tokens=64, max_num_seqs=8)
    eng.add_request("A", 17, SamplingParams(max_tokens=2))   # 5 blocks > 4
    eng.add_request("B", 3, SamplingParams(max_tokens=1))
    out = eng.step()
    assert [(e.request_id, e.reason) for e in out.events
            if isinstance(e, PromptIgnored)] == [("A", "never_fits")]
    assert scheduled_ids(out) == ["B"]


def test_later_stops_admission():
    eng = engine(gpu=4)
    eng.add_request("A", 12, SamplingParams(max_tokens=8))   # 3 of 4 blocks
    eng.add_request("B", 8, SamplingParams(max_tokens=1))    # needs 2: LATER
    eng.add_request("C", 1, SamplingParams(max_tokens=1))    # would fit, but FCFS
    out = eng.step()
    assert scheduled_ids(out) == ["A"] and queues(eng)[0] == ["B", "C"]


@pytest.mark.parametrize("queue", ["pending", "waiting", "running", "swapped"])
def test_abort_from_every_queue_frees_everything(queue):
    from sim.events import Aborted
    eng = swap_engine()
    eng.add_request("D", 30, SamplingParams(max_tokens=4), arrival_step=1)  # waits
    eng.add_request("E", 3, SamplingParams(max_tokens=4), arrival_step=100)
    target = {"pending": "E", "waiting": "D", "running": "A", "swapped": "C"}[queue]
    for _ in range(200):
        w, r, s = queues(eng)
        where = {"pending": [g.request_id for g in eng.pending], "waiting": w,
                 "running": r, "swapped": s}
        if target in where[queue]:
            break
        eng.step()
    else:
        pytest.fail(f"{target} never reached {queue}")
    eng.abort_request(target)
    out = eng.step()
    assert Aborted(target, queue) in out.events
    group = eng.requests[target]
    assert all(s.status is SequenceStatus.FINISHED_ABORTED for s in group.get_seqs())
    assert not any(s.seq_id in eng.block_manager.block_tables for s in group.get_seqs())
    assert target not in sum(queues(eng), [])
    assert not eng.abort_request(target)
    run_checked(eng)
    assert eng.block_manager.get_num_free_gpu_blocks() == 10
    assert eng.block_manager.get_num_free_cpu_blocks() == 12


def test_swap_without_cpu_space_is_vllms_error():
    eng = engine(gpu=10, cpu=1)
    for rid, n, m, k in [("A", 6, 16, 1), ("B", 3, 6, 1), ("C", 5, 10, 2)]:
        eng.add_request(rid, n, SamplingParams(n=k, max_tokens=m))
    with pytest.raises(SwapSpaceError, match="lack of CPU swap space"):
        run_checked(eng)


def test_forced_recompute_of_a_multi_sequence_group_explains_vllms_limit():
    eng = engine(gpu=10, cpu=12, preemption_mode="recompute")
    for rid, n, m, k in [("A", 6, 16, 1), ("B", 3, 6, 1), ("C", 5, 10, 2)]:
        eng.add_request(rid, n, SamplingParams(n=k, max_tokens=m))
    with pytest.raises(RuntimeError, match="recomputes only single-sequence groups"):
        run_checked(eng)


def test_forced_swap_of_single_sequence_groups():
    eng = _pressure(cpu=16, preemption_mode="swap")
    outs = run_checked(eng)
    modes = {e.mode for _, e in events_of(outs, Preempted)}
    assert modes == {"swap"}


def test_chunked_prefill_cuts_a_prompt_to_the_remaining_budget():
    eng = engine(gpu=64, enable_chunked_prefill=True, max_num_batched_tokens=8,
                 max_num_seqs=4, max_model_len=64)
    eng.add_request("A", 3, SamplingParams(max_tokens=6))
    eng.add_request("B", 20, SamplingParams(max_tokens=2), arrival_step=1)
    o0, o1, o2, o3 = (eng.step() for _ in range(4))
    # Step 1: A decodes (1 token) and B's first chunk takes the remaining 7.
    chunks = {s.seq_group.request_id: s.token_chunk_size
              for s in o1.scheduler_outputs.scheduled_seq_groups}
    assert chunks == {"A": 1, "B": 7} and o1.scheduler_outputs.num_batched_tokens == 8
    b = eng.requests["B"].get_seqs()[0]
    # No token is sampled for B until its last chunk.
    assert [t for t in o1.tokens + o2.tokens if t[0] == "B"] == []
    assert [t for t in o3.tokens if t[0] == "B"]
    assert b.num_computed_tokens == 20


def test_chunked_prefill_default_budget_is_512():
    assert SchedulerConfig(enable_chunked_prefill=True).max_num_batched_tokens == 512
    assert SchedulerConfig().max_num_batched_tokens == 2048
    assert SchedulerConfig(max_model_len=4096).max_num_batched_tokens == 4096


def test_scheduler_config_rejects_what_vllm_rejects():
    with pytest.raises(ValueError, match="smaller than max_model_len"):
        SchedulerConfig(max_num_batched_tokens=100, max_model_len=200)
    with pytest.raises(ValueError, match="max_num_seqs"):
        SchedulerConfig(max_num_batched_tokens=100, max_model_len=100, max_num_seqs=101)
    with pytest.raises(ValueError, match="preemption_mode"):
        SchedulerConfig(preemption_mode="evict")


def test_chunked_prefill_brings_a_swapped_prompt_back_only_whole():
    """_schedule_chunked_prefill calls _schedule_swapped without enable_chunking (so False):
    a swapped group that is partly prefilled comes back only if all of its remainder fits
    the budget. Found by running random workloads against both rules: here, at step 8, C
    (n=2, preempted mid-prompt and swapped out) would come back with a 7-token chunk if
    swapped groups were chunked; vLLM keeps it swapped while A takes 9 tokens."""
    from sim.core.sequence import SamplingParams as SP
    eng = engine(gpu=9, cpu=32, max_num_batched_tokens=16, max_num_seqs=16, max_model_len=64,
                 enable_chunked_prefill=True)
    for rid, prompt, out, n, arrival in (("A", 10, 6, 2, 4), ("B", 12, 4, 1, 0),
                                         ("C", 19, 5, 2, 0), ("D", 18, 8, 2, 2)):
        eng.add_request(rid, prompt, SP(n=n, max_tokens=out, ignore_eos=True),
                        arrival_step=arrival)
    outs = [eng.step() for _ in range(9)]
    assert [(s.seq_group.request_id, s.token_chunk_size)
            for s in outs[8].scheduler_outputs.scheduled_seq_groups] == [("A", 9)]
    assert [g.request_id for g in eng.scheduler.swapped][0] == "C"
    c = eng.requests["C"].get_seqs()[0]
    assert 0 < c.num_computed_tokens < c.get_len()          # C is partly prefilled
    assert c.get_num_uncomputed_tokens() > 16 - 9            # its remainder does not fit
    run_checked(eng)


def _one_sampling_request(seed: int, block_size: int, gpu: int):
    """Issue 27's workload: one request, a 2-token prompt, n=2, max_tokens=30, and a stand-in
    model that ends a sample with probability 0.3 at every token; vLLM's defaults otherwise
    (preemption mode unset, watermark 0.01)."""
    from sim.core.config import CacheConfig
    from sim.core.engine import LLMEngine
    from sim.stand_in_model import StandInModel
    eng = LLMEngine(CacheConfig(block_size=block_size, num_gpu_blocks=gpu, num_cpu_blocks=gpu),
                    SchedulerConfig(), seed=seed, model=StandInModel(seed=seed, eos_prob=0.3))
    eng.add_request("A", 2, SamplingParams(n=2, max_tokens=30))
    return eng


def _step_checked(eng, steps: int) -> list:
    from sim.core.invariants import check_engine
    outs = []
    for _ in range(steps):
        outs.append(eng.step())
        assert not check_engine(eng), check_engine(eng)
    return outs


def test_recompute_of_group_whose_first_seq_survived_asserts_in_schedule():
    """Sample A.1 (forked) ends at iteration 1; A.0, the group's first sequence, runs on
    alone until it fills the 3 blocks and preempts itself at iteration 8. One running
    sequence passes _preempt_by_recompute's assert, and with one unfinished sample
    get_max_num_running_seqs() is 1, so the mode is RECOMPUTE. At iteration 9 it is
    re-admitted; SequenceGroup.is_prefill() reads A.0, which waits for its recompute, so
    Scheduler.schedule sends the group as a prompt and asserts len(get_seqs()) == 1: two."""
    from sim.errors import RecomputeAssertionError
    from sim.events import SequenceFinished
    eng = _one_sampling_request(seed=5, block_size=4, gpu=3)
    outs = _step_checked(eng, 9)
    assert [(o.step, e.seq_id) for o in outs for e in o.events
            if isinstance(e, SequenceFinished)] == [(1, 1)]
    assert [(o.step, e.mode) for o in outs for e in o.events
            if isinstance(e, Preempted)] == [(8, "recompute")]
    a0, a1 = eng.requests["A"].get_seqs()
    assert a0.status is SequenceStatus.WAITING and a1.is_finished()
    with pytest.raises(RecomputeAssertionError,
                       match=r"AssertionError in Scheduler.schedule \(vLLM v0.5.5\): "
                             r"assert len\(seqs\) == 1 .* 'A' is sent as a prompt to "
                             r"recompute its first sequence \(seq 0\), but get_seqs\(\) "
                             r"also returns 1 finished sample"):
        eng.step()
    assert eng.step_index == 9        # the step that re-admitted A never finished


def test_recompute_of_group_that_no_longer_fits_is_ignored():
    """Block size 1 and 6 blocks: A.1 ends at iteration 1, A.0 (the first sequence, as in
    the test above) holds all 6 blocks at iteration 5 and needs a 7th: it preempts itself by
    recompute. Re-admitted with 7 tokens it would need 7 blocks, more than the GPU has, so
    can_allocate says NEVER and _schedule_prefills ignores it before anything is allocated
    or asserted: the request ends, nothing leaks."""
    eng = _one_sampling_request(seed=5, block_size=1, gpu=6)
    outs = _step_checked(eng, 7)
    assert [(o.step, e.mode) for o in outs for e in o.events
            if isinstance(e, Preempted)] == [(5, "recompute")]
    assert [(o.step, e.request_id, e.num_tokens, e.reason) for o in outs for e in o.events
            if isinstance(e, PromptIgnored)] == [(6, "A", 7, "never_fits")]
    assert outs[6].finished == ["A"] and not eng.has_unfinished_requests()
    assert [s.status for s in eng.requests["A"].get_seqs()] == [
        SequenceStatus.FINISHED_IGNORED, SequenceStatus.FINISHED_STOPPED]
    bm = eng.block_manager
    assert bm.get_num_free_gpu_blocks() == 6 and not bm.leaked_refs and not bm.block_tables
