"""pages/questions/offload.py and the CPU tier in waiting_pass: a preempted request that
comes back loads what the CPU tier holds after its GPU hit, waits for it, and its load's
reservation keeps the next request out."""
from asked_questions import one

from pages.questions.scheduling import cpu_hits

CPU_TIER = {"engine": "v1", "cpu_offload": "prompt", "requests": "8/12, 6/12, 8/12, 4/4@8"}
GPU_HIT = {"engine": "v1", "cpu_offload": "prompt", "num_gpu_blocks": "12", "block_size": "2",
           "requests": "8/12, 6/12, 8/12, 4/4@3, 5/5@4"}


def test_a_preempted_request_loads_its_prompt_blocks_and_waits():
    # C (8 prompt + 5 generated tokens) was preempted; only its prompt's two blocks were
    # offloaded, so 8 tokens load and C waits in WAITING_FOR_REMOTE_KVS.
    q = one("preemption", CPU_TIER, index=14, kind="cpu-load")
    assert q.correct == ("load", 8)
    assert ("recompute", 13) in q.values and ("load-run", 8) in q.values
    assert "WAITING_FOR_REMOTE_KVS" in q.explanation and "other 5 tokens" in q.explanation


def test_the_load_starts_after_the_gpu_prefix_hit():
    # A's first 6 tokens are still cached on the GPU: the connector is asked for the rest,
    # and the CPU tier holds one block of 2 after them.
    q = one("preemption", GPU_HIT, index=26, kind="cpu-load")
    assert q.correct == ("load", 2) and ("recompute", 13) in q.values
    assert "finds 6 tokens" in q.explanation


def test_an_async_load_reserves_the_blocks_its_request_still_needs():
    # A loads and reserves the blocks for the rest of its 19 tokens (reserved_blocks), so C,
    # which also has blocks in the CPU tier, does not fit: nobody is admitted.
    q = one("preemption", GPU_HIT, index=26, kind="admit")
    assert q.correct == ()
    assert "kept for the prefills already under way" in q.explanation


def test_cpu_hits_stops_at_a_block_being_stored_or_missing():
    r = {"seqs": [{"len": 13}], "block_hashes": ["a", "b", "c"]}
    tier = {"offloaded_block_size": 4,
            "blocks": [{"hash": "a", "state": "ready"}, {"hash": "b", "state": "ready"}]}
    assert cpu_hits(r, tier, 0) == 8
    assert cpu_hits(r, tier, 4) == 4           # after a one-block GPU hit
    assert cpu_hits(r, tier, 8) == 0           # the next block is not in the tier
    tier["blocks"][1]["state"] = "storing"
    assert cpu_hits(r, tier, 0) is None        # the connector defers its answer


def test_a_resumed_request_that_computes_only_its_last_token_is_checked_by_its_kv_write():
    # Found by hypothesis: 0_A comes back with 4 of its 5 tokens still cached on the GPU and
    # nothing in the CPU tier, so it computes 1 token. That token is not a prefill chunk (no
    # ChunkScheduled event); the check counts the step's KV writes for it instead.
    from question_truth import cpu_load
    raw = {"engine": "v1", "num_gpu_blocks": "3", "num_cpu_blocks": "1", "cpu_offload": "prompt",
           "block_size": "2", "watermark": "0.0", "requests": "4/2x2"}
    q = one("preemption", raw, index=3, kind="cpu-load")
    assert q.correct == ("recompute", 1)
    assert cpu_load(q, q.about["before"], q.about["step"]) == ("recompute", 1)
