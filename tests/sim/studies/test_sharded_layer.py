"""sim/studies/sharded_layer.py: an engine run driving a layer sharded over tp ranks."""
import numpy as np
import pytest

from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.core.sequence import SamplingParams
from sim.perf.tensor_parallel import partition_heads
from sim.studies.sharded_layer import run_sharded_layer

# The tensor-parallelism page's toy: an 8-head layer, two requests, 8 blocks of 4.
TOY = dict(requests=(("A", 6), ("B", 3)), num_heads=8, head_size=2, hidden_size=4,
           intermediate_size=8, block_size=4, num_gpu_blocks=8)
ALL_SPLITS = [(tp, kv) for tp in (1, 2, 4, 8) for kv in (1, 2, 4, 8)]


def run(tp=2, kv=2, max_tokens=4, seed=0):
    return run_sharded_layer(tp_size=tp, num_kv_heads=kv, max_tokens=max_tokens, seed=seed,
                             **TOY)


def test_block_tables_are_the_engines_own():
    """The tables rank 0 broadcast are what the engine's BlockSpaceManager holds."""
    steps = run(max_tokens=5).steps
    engine = LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=8, num_cpu_blocks=0,
                                   watermark=0.0), SchedulerConfig(), seed=0)
    for rid, prompt in TOY["requests"]:
        engine.add_request(rid, prompt, SamplingParams(max_tokens=5))
    for st in steps:
        engine.step()
        assert st.free_after == engine.block_manager.get_num_free_gpu_blocks()
        for group in engine.requests.values():
            seq = group.get_seqs()[0]
            if seq.seq_id in engine.block_manager.block_tables:
                assert tuple(engine.block_manager.get_block_table(seq)) == \
                    st.broadcast[group.request_id]
    assert not engine.has_unfinished_requests()


def test_default_run_prefills_both_then_decodes():
    steps = run().steps
    assert [st.prefill for st in steps] == [True, False, False, False]
    first = steps[0]
    assert [(a.request_id, a.num_tokens) for a in first.admitted] == [("A", 6), ("B", 3)]
    assert [(a.request_id, a.logical, a.physical) for a in first.allocated] == \
        [("A", 0, 7), ("A", 1, 6), ("B", 0, 5)]
    assert first.slots_before == {} and len(first.slots) == 9
    # One result per request: the newest token of each.
    assert [(r.request_id, r.position) for r in first.results] == [("A", 5), ("B", 2)]
    assert steps[-1].finished == ("A", "B") and steps[-1].free_after == 8


@pytest.mark.parametrize("tp,kv", ALL_SPLITS)
def test_every_rank_writes_the_same_block_and_slot_and_sharded_equals_unsharded(tp, kv):
    result = run(tp=tp, kv=kv, max_tokens=3)
    for st in result.steps:
        for r in st.results:
            table = st.broadcast[r.request_id]
            slot = (table[r.position // 4], r.position % 4)
            trace = r.sharded
            assert {a.kv_slot for a in trace.attention} == {slot}
            assert len(trace.attention) == tp
            # The all-reduces are the sums of the partials.
            np.testing.assert_allclose(trace.attn_all_reduce,
                                       np.sum([a.partial for a in trace.attention], axis=0))
            np.testing.assert_allclose(trace.mlp_all_reduce,
                                       np.sum([m.partial for m in trace.mlp], axis=0))
            np.testing.assert_allclose(trace.output, r.unsharded.output, rtol=1e-12,
                                       atol=1e-12)
    # Each rank's cache holds its own KV heads' slice of the one-GPU cache, block for block.
    single = result.unsharded.workers[0]
    for worker, part in zip(result.sharded.workers, partition_heads(8, kv, tp)):
        for b in range(8):
            for local, head in enumerate(part.kv_heads):
                np.testing.assert_allclose(worker.key_cache[b][local],
                                           single.key_cache[b][head], atol=1e-12)
                np.testing.assert_allclose(worker.value_cache[b][local],
                                           single.value_cache[b][head], atol=1e-12)
