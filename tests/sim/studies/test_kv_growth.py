"""sim/studies/kv_growth.py: one sequence's KV cache growing, with and without the cache."""
import pytest

from sim.events import KVWritten
from sim.perf.cost import step_cost
from sim.perf.models import kv_bytes_per_token
from sim.studies.kv_growth import CacheAppended, TokenSampled, generate, tiny_model, totals


def test_tiny_model_shape_and_gqa():
    m = tiny_model(num_layers=3, num_kv_heads=2, queries_per_kv_head=4, head_size=8)
    assert (m.num_layers, m.num_attention_heads, m.num_kv_heads, m.head_size) == (3, 8, 2, 8)
    assert m.hidden_size == 64
    # Only KV heads are cached: 2 x 3 layers x 2 KV heads x 8 numbers x 2 bytes.
    assert kv_bytes_per_token(m, "fp16") == 2 * 3 * 2 * 8 * 2


def test_one_prefill_then_one_decode_per_new_token():
    m = tiny_model()
    steps = generate(m, prompt_len=4, new_tokens=5)
    assert [s.phase for s in steps] == ["prefill"] + ["decode"] * 4
    assert [(s.first_pos, s.num_new) for s in steps] == [(0, 4), (4, 1), (5, 1), (6, 1), (7, 1)]
    # The last sampled token (position 8) is never written: vLLM computes a token's KV
    # in the step that feeds it.
    assert steps[-1].cached_after == 8 and steps[-1].sampled_position == 8


def test_bytes_appended_per_layer_and_kv_head():
    m = tiny_model(num_layers=2, num_kv_heads=2, head_size=16)
    per_token = 2 * 2 * 2 * 16 * 2
    steps = generate(m, 3, 4, "fp16")
    assert steps[0].bytes_appended == 3 * per_token
    assert all(s.bytes_appended == per_token for s in steps[1:])
    assert [s.cache_bytes for s in steps] == [n * per_token for n in (3, 4, 5, 6)]
    assert generate(m, 3, 1, "fp32")[0].bytes_appended == 2 * 3 * per_token


def test_events_write_every_layer_then_sample():
    m = tiny_model(num_layers=3)
    s = generate(m, 2, 3)[1]
    kinds = [type(e) for e in s.events]
    assert kinds == [KVWritten, CacheAppended, CacheAppended, CacheAppended, TokenSampled]
    assert s.events[0] == KVWritten(0, 2, 1)
    assert [e.layer for e in s.events[1:4]] == [0, 1, 2]
    assert all((e.first_pos, e.num_tokens, e.num_kv_heads) == (2, 1, 2) for e in s.events[1:4])
    assert s.events[-1] == TokenSampled(0, 3)


def test_attention_work_with_the_cache_and_recomputing():
    m = tiny_model()
    steps = generate(m, 4, 6)
    per_pair = m.num_layers * 4 * m.num_attention_heads * m.head_size
    # Prefill: nothing was cached, so both are the same causal 4 x 5 / 2 pairs.
    assert steps[0].pairs_with_cache == steps[0].pairs_recompute == 10
    assert steps[0].with_cache == steps[0].recompute
    for s in steps[1:]:
        n = s.cached_after
        assert s.pairs_with_cache == n                       # one query against n keys
        assert s.pairs_recompute == n * (n + 1) // 2        # the whole prefix again
        assert s.with_cache.flops_attention == per_pair * n
        assert s.recompute.flops_attention == per_pair * n * (n + 1) // 2
        assert s.with_cache == step_cost(m, [(n - 1, 1)], "fp16", phase="decode")
        assert s.recompute.flops > s.with_cache.flops
    ratios = [s.recompute.flops / s.with_cache.flops for s in steps[1:]]
    assert ratios == sorted(ratios)                         # the gap widens every step
    t = totals(steps)
    assert t["attention_with_cache"] == sum(s.with_cache.flops_attention for s in steps)
    assert t["flops_recompute"] > 2 * t["flops_with_cache"]


@pytest.mark.parametrize("kwargs, message", [
    ({"prompt_len": 0, "new_tokens": 3}, "prompt_len must be a positive integer"),
    ({"prompt_len": 2, "new_tokens": True}, "new_tokens must be a positive integer"),
    ({"prompt_len": 60, "new_tokens": 5}, "exceeds max_model_len 64"),
])
def test_bad_lengths(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(tiny_model(), **kwargs)


def test_unknown_dtype():
    with pytest.raises(ValueError, match="unknown dtype"):
        generate(tiny_model(), 2, 2, "int3")
