from helpers import run_checked

from sim.core.sequence import SamplingParams
from sim.events import Admitted, PromptIgnored
from sim.studies.scenarios import get_scenario
from sim.studies.static_batching import StaticBatchScheduler


def test_static_batch_never_admits_into_a_running_batch():
    eng = get_scenario("static").build_engine()
    outs = []
    while eng.has_unfinished_requests():
        batch_before = {g.request_id for g in eng.scheduler.running}
        outs.append(eng.step())
        admitted = [e.request_id for e in outs[-1].events if isinstance(e, Admitted)]
        if batch_before:
            assert admitted == []
    # The first batch is A, B, C; D and E only start after the longest (B, 9 tokens) ends.
    first = {r: eng.requests[r].first_scheduled_step for r in "ABCDE"}
    assert first["A"] == first["B"] == first["C"] == 0
    assert first["D"] == first["E"] == eng.requests["B"].finished_step + 1


def test_static_batch_keeps_finished_members_until_the_batch_ends():
    eng = get_scenario("static").build_engine()
    eng.step()
    assert [g.request_id for g in eng.scheduler.batch] == ["A", "B", "C"]
    while eng.requests["A"].finished_step is None:
        eng.step()
    assert [g.request_id for g in eng.scheduler.batch] == ["A", "B", "C"]
    assert [g.request_id for g in eng.scheduler.running] == ["B", "C"]


def test_continuous_batching_refills_the_slot_at_once():
    eng = get_scenario("continuous").build_engine()
    run_checked(eng)
    a_done = eng.requests["A"].finished_step
    # D arrived at step 2 and takes A's seat right after A finishes.
    assert eng.requests["D"].first_scheduled_step == a_done + 1


def test_static_reserves_the_whole_output_so_it_never_preempts():
    from sim.core.config import CacheConfig, SchedulerConfig
    from sim.core.engine import LLMEngine
    eng = LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=8, num_cpu_blocks=0,
                                watermark=0.0), SchedulerConfig(max_num_seqs=4),
                    scheduler=StaticBatchScheduler)
    eng.add_request("A", 4, SamplingParams(max_tokens=12))   # reserves 4 blocks
    eng.add_request("B", 4, SamplingParams(max_tokens=12))   # reserves 4 blocks
    eng.add_request("C", 4, SamplingParams(max_tokens=4))    # would not fit: next batch
    out = eng.step()
    assert [s.seq_group.request_id for s in out.scheduler_outputs.scheduled_seq_groups] \
        == ["A", "B"]
    outs = run_checked(eng)
    assert sum(o.scheduler_outputs.preempted for o in outs) == 0
    assert eng.requests["C"].first_scheduled_step > eng.requests["A"].finished_step


def test_static_ignores_what_can_never_fit():
    from sim.core.config import CacheConfig, SchedulerConfig
    from sim.core.engine import LLMEngine
    eng = LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=4, num_cpu_blocks=0,
                                watermark=0.0), SchedulerConfig(max_num_seqs=4),
                    scheduler=StaticBatchScheduler)
    eng.add_request("A", 4, SamplingParams(max_tokens=40))
    eng.add_request("B", 3, SamplingParams(max_tokens=2))
    out = eng.step()
    assert [(e.request_id, e.reason) for e in out.events if isinstance(e, PromptIgnored)] \
        == [("A", "never_fits")]
    run_checked(eng)
