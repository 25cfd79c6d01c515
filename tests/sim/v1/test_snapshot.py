"""The V1 snapshot (sim/v1/snapshot.py): the v0.5.5 snapshot's keys, V1's own, slot
payloads, and the KV view drawing it unchanged."""
import json

from sim.core.config import CacheConfig as V0CacheConfig
from sim.core.config import SchedulerConfig as V0SchedulerConfig
from sim.core.engine import LLMEngine as V0Engine
from sim.core.sequence import SamplingParams
from sim.v1.config import CacheConfig, SchedulerConfig
from sim.v1.engine import LLMEngine


def v1_engine():
    e = LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=12),
                  SchedulerConfig(max_num_batched_tokens=64, max_num_seqs=8,
                                  async_scheduling=False))
    e.add_request("A", 6, SamplingParams(max_tokens=3, ignore_eos=True), shared_prefix=4)
    e.add_request("B", 3, SamplingParams(max_tokens=4, ignore_eos=True), arrival_step=1,
                  shared_prefix=4)
    e.add_request("C", 3, SamplingParams(n=2, max_tokens=2, ignore_eos=True), arrival_step=9)
    return e


def v0_snapshot():
    e = V0Engine(V0CacheConfig(block_size=4, num_gpu_blocks=8, num_cpu_blocks=2),
                 V0SchedulerConfig())
    e.add_request("A", 6, SamplingParams(max_tokens=3))
    e.step()
    return e.snapshot()


def keys_of(snap):
    r = snap["requests"][0]
    return {
        "top": set(snap), "queues": set(snap["queues"]), "request": set(r),
        "seq": set(r["seqs"][0]), "gpu": set(snap["gpu"]), "cpu": set(snap["cpu"]),
        "block": set(snap["gpu"]["blocks"][1]),
    }


def test_v1_snapshot_has_every_v0_5_5_key():
    e = v1_engine()
    e.step()
    old, new = keys_of(v0_snapshot()), keys_of(e.snapshot())
    for part in old:
        assert old[part] <= new[part], (part, old[part] - new[part])


def test_v1_keys_and_values():
    e = v1_engine()
    e.step()
    e.step()
    snap = e.snapshot()
    json.dumps(snap)
    assert snap["engine"] == "v1" and snap["null_block"] == 0 and snap["step"] == 2
    assert snap["queues"] == {"pending": ["0_C", "1_C"], "waiting": [], "running": ["A", "B"],
                              "swapped": []}
    assert snap["cpu"] == {"num_blocks": 0, "num_free": 0, "free_order": [], "blocks": []}
    assert snap["gpu"]["num_blocks"] == 12
    assert set(snap["prefix_cache"]) == {"queries", "hits", "preempted_queries",
                                         "preempted_hits"}
    assert snap["prefix_cache"]["hits"] == 4                     # B hit A's first block
    a, b = snap["requests"][0], snap["requests"][1]
    assert (a["n"], a["best_of"], a["use_beam_search"], a["max_tokens"]) == (1, 1, False, 3)
    assert a["block_hashes"][0] == b["block_hashes"][0] and len(a["block_hashes"][0]) == 8
    assert a["num_cached_block"] == 2 and a["num_preemptions"] == 0
    seq = a["seqs"][0]
    assert seq["status"] == "running" and seq["parent_seq_id"] is None
    assert (seq["prompt_len"], seq["len"], seq["num_computed_tokens"]) == (10, 12, 11)
    assert seq["block_table"] == [["gpu", 1, 4], ["gpu", 2, 4], ["gpu", 3, 3]]
    assert b["seqs"][0]["block_table"][0] == ["gpu", 1, 4]
    blocks = snap["gpu"]["blocks"]
    assert blocks[1]["ref_count"] == 2 and blocks[1]["hash"] == a["block_hashes"][0]
    assert blocks[1]["cached"] and not blocks[3]["cached"] and blocks[3]["hash"] is None
    # Slots: positions and token ids of the tokens the holders computed.
    assert blocks[1]["slots"] == [[t, p] for p, t in enumerate(seq["token_ids"][:4])]
    assert len(blocks[3]["slots"]) == 3
    assert blocks[0] == {"ref_count": 0, "hash": None, "cached": False, "slots": []}
    assert snap["requests"][2]["parent_request_id"] == "C"


def test_heads_say_why_the_head_of_waiting_waits():
    e = LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=6),
                  SchedulerConfig(max_num_batched_tokens=64, max_num_seqs=8,
                                  async_scheduling=False))
    e.add_request("A", 8, SamplingParams(max_tokens=2, ignore_eos=True))
    e.add_request("B", 13, SamplingParams(max_tokens=2, ignore_eos=True))
    e.add_request("huge", 30, SamplingParams(max_tokens=2, ignore_eos=True), arrival_step=5)
    assert e.snapshot()["heads"] == {"swapped": None, "waiting": None}
    e.step()                                     # A admitted; B needs 4 > 3 free
    head = e.snapshot()["heads"]["waiting"]
    assert head == {"request_id": "B", "can_allocate": "later", "num_required_blocks": 4,
                    "num_hit_blocks": 0, "num_free_blocks": 3, "len": 13, "output_len": 0}
    queries = e.kv_cache_manager.prefix_cache_stats.queries
    e.snapshot()
    assert e.kv_cache_manager.prefix_cache_stats.queries == queries   # no lookup counted
    while e.step_index < 6:
        e.step()
    assert e.snapshot()["heads"]["waiting"]["can_allocate"] == "never"


def test_cached_free_blocks_keep_showing_their_kv():
    e = v1_engine()
    while e.has_unfinished_requests():
        e.step()
    snap = e.snapshot()
    blocks = snap["gpu"]["blocks"]
    for n in snap["gpu"]["free_order"]:
        b = blocks[n]
        assert b["ref_count"] == 0
        assert len(b["slots"]) == (4 if b["hash"] else 0)
    assert snap["gpu"]["num_free"] == 11
    assert e.snapshot(with_slots=False)["gpu"]["blocks"][1].keys() == {"ref_count", "hash",
                                                                        "cached"}


def test_the_kv_view_draws_a_v1_snapshot_unchanged():
    from pages.views import kv_view
    e = v1_engine()
    out = e.step()
    out = e.step()
    snap = e.snapshot()
    h = kv_view.highlights(out.events)
    parts, _ = kv_view.block_tables(0, 0, snap, h)
    assert parts
    parts, _ = kv_view.pool(0, 0, snap, "gpu", h)
    assert parts
    parts, _ = kv_view.queues(0, 0, snap, h)
    assert parts
    assert kv_view.waste_stats(snap)["used_blocks"] if "used_blocks" in kv_view.waste_stats(snap) \
        else kv_view.waste_stats(snap)


def hybrid_engine():
    from sim.v1.kv_cache_utils import attention_layer_specs, make_kv_cache_config
    specs = attention_layer_specs(["full_attention", "sliding_attention"], 4, sliding_window=4)
    e = LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=20),
                  SchedulerConfig(max_num_batched_tokens=4, max_num_seqs=4,
                                  async_scheduling=False),
                  kv_cache_config=make_kv_cache_config(20, specs))
    e.add_request("A", 12, SamplingParams(max_tokens=2, ignore_eos=True))
    return e


def test_one_group_snapshots_have_no_group_keys():
    e = v1_engine()
    e.step()
    snap = e.snapshot()
    assert "kv_cache_groups" not in snap
    assert "group_block_tables" not in snap["requests"][0]
    assert "group" not in snap["gpu"]["blocks"][1]


def test_hybrid_snapshot_lists_every_group_and_keeps_group_0_keys():
    e = hybrid_engine()
    for _ in range(3):
        e.step()
    snap = e.snapshot()
    json.dumps(snap)
    assert snap["kv_cache_groups"] == [
        {"kv_cache_group_id": 0, "kind": "full_attention", "window": None,
         "layer_names": ["model.layers.0.self_attn"]},
        {"kv_cache_group_id": 1, "kind": "sliding_window", "window": 4,
         "layer_names": ["model.layers.1.self_attn"]}]
    a = snap["requests"][0]
    # Group 0's table is the request's "block_table", as for one group.
    assert a["seqs"][0]["block_table"] == [["gpu", 1, 4], ["gpu", 3, 4], ["gpu", 5, 4]]
    assert a["group_block_tables"][0] == a["seqs"][0]["block_table"]
    # Computed 12 at the last allocation's 8: tokens 0..4 left the window -> null block.
    assert a["group_block_tables"][1] == [["gpu", 0, 0], ["gpu", 4, 4], ["gpu", 6, 4]]
    assert a["group_num_cached_block"] == [3, 3]
    blocks = snap["gpu"]["blocks"]
    assert [blocks[i]["group"] for i in (1, 3, 5)] == [0, 0, 0]
    assert [blocks[i]["group"] for i in (4, 6)] == [1, 1]
    # Block 2 left the window: free, and it keeps its hash (group 1's).
    assert blocks[2]["group"] == 1 and blocks[2]["ref_count"] == 0 and blocks[2]["cached"]
    assert 2 in snap["gpu"]["free_order"]
