"""pages/views/recompute_leak.py: the words for vLLM v0.5.5's recompute of a sampling group
whose other samples finished (issue 27), from traces of issue 27's workload: one request,
a 2-token prompt, n=2, max_tokens=30, samples that end on EOS with probability 0.3."""
from pages.views import recompute_leak as rl
from pages.views.kv_view import seq_labels
from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.core.sequence import SamplingParams
from sim.stand_in_model import StandInModel
from sim.trace import record


def trace_of(seed: int, gpu: int, steps: int = 30):
    engine = LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=gpu, num_cpu_blocks=gpu),
                       SchedulerConfig(), seed=seed,
                       model=StandInModel(seed=seed, eos_prob=0.3))
    engine.add_request("A", 2, SamplingParams(n=2, max_tokens=30))
    return record(engine, max_steps=steps)


def labels_of(trace):
    out = {}
    for step in trace:
        out.update(seq_labels(step.snapshot))
    return out


def test_a_leaking_recompute_is_told_from_its_events():
    trace = trace_of(130, 4, 16)         # A.0 ends at once; A.1 leaks at iteration 13
    labels = labels_of(trace)
    assert rl.samples_finished(trace[1], labels) == [
        "A.0 stopped on its end-of-sequence token; the other samples of A run on."]
    assert rl.one_left_sentence(trace[13], labels) == (
        "A.0 had finished, so A has one running sequence and the default recomputes it "
        "(get_max_num_running_seqs() is 1).")
    step = trace[14]
    assert rl.leak_story(step, labels) == [
        "A comes back to recompute its 14 tokens into blocks 0, 1, 2 and 3, but vLLM v0.5.5 "
        "runs it as a decode: SequenceGroup.is_prefill() reads A.0, A's first sequence, "
        "which finished.",
        "Only position 13's KV is computed; the 13 slots before it are never recomputed (?).",
        "And allocate counted A.0 in the ref count (num_seqs() = 2): when A.1 lets go of "
        "them, they stay allocated, leaked."]
    assert rl.leak_story(trace[13], labels) is None
    assert any("counting 1 finished sample of A that holds no block table. Nothing releases "
               "that reference: the blocks are never freed." in d
               for d in rl.leak_details(step, labels))
    assert rl.leaked_blocks(step.snapshot) == [0, 1, 2, 3]
    assert rl.status_words(step.snapshot) == (
        "check_engine: ok but for vLLM's bug: blocks 0, 1, 2 and 3 leaked; A.1's KV below "
        "position 13 not recomputed")
    assert rl.status_words(trace[13].snapshot) is None
    # Iteration 14: A.1 preempts itself again; no table holds the four blocks any more.
    assert rl.orphaned_sentence(trace[15], step) == (
        "Blocks 0, 1, 2 and 3 stay allocated with nobody's tokens: vLLM leaked them, and "
        "they are never freed.")
    assert rl.orphaned_sentence(step, trace[13]) is None


def test_the_assert_in_schedule_is_explained():
    trace = trace_of(5, 3)               # A.1 ends at iteration 1; A.0 waits to recompute
    assert trace.stopped == "error"
    heading, sentences = rl.schedule_assert_words(trace.last)
    assert heading == "Iteration 9: vLLM asserts in schedule()"
    assert sentences[0] == "A comes back to recompute A.0, its first sequence; A.1 had finished."
    assert "get_seqs() returns 2, A.1 too." in sentences[1]
    assert rl.schedule_assert_words(trace[5]) is None
