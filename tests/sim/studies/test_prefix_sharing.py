"""sim/studies/prefix_sharing.py: the chat workload with a shared system prompt, run on V1's
engine with prefix caching on and off; the numbers docs/prefix-caching.md quotes."""
import dataclasses

import pytest

from sim.studies.prefix_sharing import CHAT, POOL_SIZES, ChatWorkload, run_chat, sweep

SMALL = dataclasses.replace(CHAT, conversations=4, turns=2)


def test_the_workload_is_what_the_page_says():
    assert (CHAT.conversations, CHAT.turns, CHAT.num_requests) == (16, 3, 48)
    assert (CHAT.system_prompt, CHAT.block_size) == (256, 16)
    lengths = CHAT.turn_lengths()
    users = [u for conv in lengths for u, _ in conv]
    answers = [a for conv in lengths for _, a in conv]
    assert max(users) <= 64 and max(answers) <= 96
    assert round(sum(users) / len(users)) == 18 and round(sum(answers) / len(answers)) == 48
    assert CHAT.largest_request_blocks() <= min(POOL_SIZES)
    assert CHAT.first_arrivals() == sorted(CHAT.first_arrivals())


def test_follow_ups_send_the_whole_conversation_and_hit_it():
    r = run_chat(256, True, SMALL)
    # Nothing is evicted in a big pool: every follow-up hits its system prompt and history
    # up to the last full block, and every lookup admits (the two rates agree).
    assert r.evictions == 0 and r.preemptions == 0
    assert r.hit_rate_logged == pytest.approx(r.hit_rate_admitted)
    assert r.cached_prompt_tokens > SMALL.conversations * SMALL.turns * SMALL.system_prompt * 0.9
    off = run_chat(256, False, SMALL)
    assert off.lookup_queries == off.cached_prompt_tokens == 0
    assert off.tokens_served == r.tokens_served and off.prompt_tokens == r.prompt_tokens
    assert r.tokens_computed + r.cached_prompt_tokens == off.tokens_computed


def test_deterministic_and_refuses_a_pool_too_small():
    assert run_chat(64, True, SMALL) == run_chat(64, True, SMALL)
    with pytest.raises(ValueError, match="cannot hold the longest request"):
        run_chat(SMALL.largest_request_blocks() - 1, True, SMALL)


def test_the_numbers_the_page_quotes():
    """With vLLM's default engine loop (async scheduling)."""
    results = sweep()
    on = {r.pool_blocks: r for r in results[True]}
    off = {r.pool_blocks: r for r in results[False]}
    # 192 blocks and more: nothing useful evicted, 91% of prompt tokens from the cache, 15
    # tokens computed per step to serve 76.
    for n in (192, 256, 384):
        assert round(100 * on[n].hit_rate_admitted) == 91
        assert round(on[n].computed_per_step) == 15 and round(on[n].served_per_step) == 76
    assert on[256].evictions == 0
    assert (on[128].evictions, on[48].evictions) == (175, 350)
    assert round(100 * on[48].hit_rate_admitted) == 74
    # Throughput: 96 blocks with caching serve 63 tokens per step; without, 256 blocks
    # serve 65.5, 192 only 50.5.
    assert f"{on[96].served_per_step:.0f}" == "63"
    assert (f"{off[256].served_per_step:.1f}", f"{off[192].served_per_step:.1f}") == (
        "65.5", "50.5")
    # Caching never serves fewer tokens per step, and the logged rate (every lookup,
    # retries included) is never above the rate at admission.
    for n in POOL_SIZES:
        assert on[n].served_per_step >= off[n].served_per_step
        assert on[n].hit_rate_logged <= on[n].hit_rate_admitted + 1e-9
        assert on[n].tokens_served == off[n].tokens_served


def test_the_synchronous_loop_serves_about_the_same():
    """The loop barely matters here: the synchronous loop takes 240 steps where the async
    one takes 243 (an answer's end is seen one engine call later, and its follow-up arrives
    a call later), with the same hit rate."""
    sync = {r.pool_blocks: r for r in sweep((192,), async_scheduling=False)[True]}
    default = {r.pool_blocks: r for r in sweep((192,))[True]}
    assert (sync[192].steps, default[192].steps) == (240, 243)
    assert round(100 * sync[192].hit_rate_admitted) == round(
        100 * default[192].hit_rate_admitted) == 91


def test_a_workload_is_a_value():
    assert isinstance(CHAT, ChatWorkload) and hash(CHAT) == hash(dataclasses.replace(CHAT))
