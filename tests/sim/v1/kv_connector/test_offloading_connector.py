"""The offloading connector in the engine (sim/v1/kv_connector/offloading_connector.py)
with a hybrid model: the engine hands it the KV cache groups, every group's blocks are
stored, a request that misses the GPU prefix cache loads a full-attention prefix and the
sliding-window group's last window, and the offloading invariants hold after every step.
A group type the connector does not take is refused with a message."""
import pytest

from sim.core.sequence import SamplingParams
from sim.events import OffloadLoadJob, OffloadStoreJob
from sim.v1.config import CacheConfig, KVTransferConfig, SchedulerConfig
from sim.v1.engine import LLMEngine
from sim.v1.invariants import check_engine
from sim.v1.kv_cache_utils import attention_layer_specs, make_kv_cache_config
from sim.v1.kv_offload.invariants import offloading_parts


def hybrid_offloading_engine(layer_types=("full_attention", "sliding_attention"),
                             num_gpu_blocks=40, async_scheduling=True, **window):
    window = window or {"sliding_window": 8}
    config = make_kv_cache_config(num_gpu_blocks,
                                  attention_layer_specs(list(layer_types), 4, **window))
    return LLMEngine(
        CacheConfig(block_size=4, num_gpu_blocks=num_gpu_blocks),
        SchedulerConfig(max_num_batched_tokens=64, max_num_seqs=4, max_model_len=128,
                        async_scheduling=async_scheduling),
        kv_cache_config=config,
        kv_transfer_config=KVTransferConfig(
            kv_connector="OffloadingConnector", kv_role="kv_both",
            kv_connector_extra_config={"num_cpu_blocks": 64}))


@pytest.mark.parametrize("async_scheduling", [True, False])
def test_a_hybrid_model_stores_every_group_and_loads_the_window(async_scheduling):
    engine = hybrid_offloading_engine(async_scheduling=async_scheduling)
    sched, manager, _, _ = offloading_parts(engine)
    configs = sched.config.kv_group_configs
    assert [c.sliding_window_size_in_blocks for c in configs] == [None, 2]
    events = []

    def run():
        while engine.has_unfinished_requests():
            events.extend(engine.step().events)
            assert check_engine(engine) == []

    engine.add_request("A", list(range(100, 121)), SamplingParams(max_tokens=2))
    run()
    # A's 5 full prompt blocks, in both groups (the window's blocks were all in the
    # window when they were stored)
    stores = [e for e in events if isinstance(e, OffloadStoreJob)]
    assert sum(len(e.cpu_blocks) for e in stores) == 10
    assert len(manager.blocks()) == 10

    engine.reset_prefix_cache()
    events.clear()
    engine.add_request("B", list(range(100, 121)) + [7], SamplingParams(max_tokens=2))
    run()
    (load,) = [e for e in events if isinstance(e, OffloadLoadJob)]
    # 5 blocks (20 tokens; 21 is the most a hit may be, one short of the prompt) of full
    # attention, and the last 2 of the sliding window
    assert load.num_local_tokens == 0 and load.num_tokens == 20
    assert len(load.cpu_blocks) == 5 + 2
    assert engine.requests["B"].num_cached_tokens == 20

    # A prompt of exactly 5 blocks: with a sliding window the hit ends one token short of
    # the prompt (the last token is recomputed, and the window must still hold after
    # that): 19 tokens, in 5 blocks of full attention and the window's last 2.
    engine.reset_prefix_cache()
    events.clear()
    engine.add_request("C", list(range(100, 120)), SamplingParams(max_tokens=2))
    run()
    (load,) = [e for e in events if isinstance(e, OffloadLoadJob)]
    assert load.num_tokens == 19 and len(load.cpu_blocks) == 5 + 2


def test_a_chunked_local_attention_group_is_refused():
    with pytest.raises(ValueError, match="full attention and sliding window KV cache "
                                         "groups, not ChunkedLocalAttentionSpec"):
        hybrid_offloading_engine(("full_attention", "chunked_attention"),
                                 attention_chunk_size=8)
