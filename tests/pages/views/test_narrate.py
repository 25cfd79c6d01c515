"""Narration from events: the full account (describe_step, step_sentences) unchanged for
v0.5.5's callers and V1-aware, and the short story in at most three sentences, cause first."""
import re

import pytest

from pages.views import kv_view
from pages.views.narrate import describe_step, step_sentences, story, story_kind
from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.core.sequence import SamplingParams
from sim.trace import record
from sim.v1 import config as v1_config
from sim.v1.engine import LLMEngine as V1Engine

SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
PAGED = ((7, 3, 0), (3, 6, 0), (5, 3, 4))
PRESSURE = ((6, 12, 0), (5, 12, 0), (4, 12, 0), (3, 3, 8))


def trace_of(engine_name: str, requests, blocks: int = 12, cpu: int = 0, mode=None,
             watermark: float = 0.01):
    if engine_name == "v1":
        engine = V1Engine(v1_config.CacheConfig(block_size=4, num_gpu_blocks=blocks + 1),
                          v1_config.SchedulerConfig(watermark=watermark,
                                                    async_scheduling=False))
    else:
        engine = LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=blocks, num_cpu_blocks=cpu,
                                       watermark=watermark),
                           SchedulerConfig(preemption_mode=mode))
    for name, (prompt, output, arrival) in zip("ABCDE", requests):
        engine.add_request(name, prompt, SamplingParams(max_tokens=output, ignore_eos=True),
                           arrival_step=arrival)
    return record(engine)


def told(trace):
    labels, request_of = kv_view.names(trace)
    return [story(step, labels, request_of, trace.previous(step)) for step in trace.steps[1:]]


def test_describe_step_is_unchanged_for_v0_5_5():
    trace = trace_of("v0.5.5", PAGED)
    labels, request_of = kv_view.names(trace)
    assert describe_step(trace[3], labels, request_of) == (
        "Iteration 2. Decode step: A and B each add one token. A's last block was full, so "
        "its new token starts logical block 2 in physical block 8. B's last block was full, "
        "so its new token starts logical block 1 in physical block 7. A reached max_tokens. "
        "GPU blocks 11, 10 and 8 return to the free list.")
    assert describe_step(trace[1], labels, request_of) == (
        "Iteration 0. A and B arrive and join the back of the waiting queue. Prefill step: A "
        "prefills (7 tokens -> blocks 11 and 10) and B prefills (3 tokens -> block 9). No "
        "decodes run in a step that admits prompts.")
    assert describe_step(trace[1], labels, request_of) == \
        "Iteration 0. " + " ".join(step_sentences(trace[1], labels, request_of))


def test_v1_full_account_names_the_budget_the_cache_and_the_free_queue():
    trace = trace_of("v1", PAGED)
    labels, request_of = kv_view.names(trace)
    four = " ".join(step_sentences(trace[5], labels, request_of))
    assert "B decodes one token." in four
    assert "C is admitted and computes 5 tokens; new blocks 4 and 6." in four
    assert "One step, one token budget: V1 runs decodes and prompts together." in four
    assert "No decodes run" not in four
    two = " ".join(step_sentences(trace[3], labels, request_of))
    assert ("GPU blocks 4, 2 and 1 go back to the free queue: block 4 (no hash) to the head, "
            "handed out first and blocks 2 and 1 to the tail, still in the prefix cache.") in two
    pressure = trace_of("v1", PRESSURE, blocks=10, watermark=0.1)
    labels, request_of = kv_view.names(pressure)
    text = " ".join(step_sentences(pressure[13], labels, request_of))
    assert ("C is resumed and recomputes 8 tokens after a prefix-cache hit: its first 4 tokens "
            "are read from block 5, not computed") in text
    assert "left the prefix cache" in text or "leave the prefix cache" in text


@pytest.mark.parametrize("engine_name, requests, blocks, cpu, mode", [
    ("v0.5.5", PAGED, 12, 0, None), ("v1", PAGED, 12, 0, None),
    ("v0.5.5", PAGED, 4, 0, None), ("v1", PAGED, 4, 0, None),
    ("v0.5.5", PRESSURE, 10, 8, "swap"), ("v0.5.5", PRESSURE, 10, 0, "recompute"),
    ("v1", PRESSURE, 10, 0, None)])
def test_story_is_three_short_sentences_at_most(engine_name, requests, blocks, cpu, mode):
    for sentences in told(trace_of(engine_name, requests, blocks, cpu, mode, 0.1)):
        assert 1 <= len(sentences) <= 3
        text = " ".join(sentences)
        assert len(SENTENCE_END.findall(text)) <= 3, text
        assert all(len(s.split()) <= 45 for s in sentences), sentences
        assert " 0 blocks" not in text and "a 8" not in text


def test_preemption_is_told_cause_first():
    trace = trace_of("v0.5.5", PRESSURE, 10, 8, "swap", 0.1)
    cause, effect, consequence = told(trace)[7]          # iteration 7
    assert story_kind(trace[8]) == "preemption"
    assert cause == "A's last block was full, so it took block 0, the last free one."
    assert effect.startswith("B comes next: can_append_slots wants one free block per "
                             "running sequence, even though B's last block still has a free "
                             "slot, and none is left, so C, the tail of running, is "
                             "preempted by swap.")
    assert consequence == ("C's 3 blocks are copied to the CPU (5->C7, 4->C6, 1->C5) and "
                           "freed on the GPU; C waits in swapped.")
    v1 = trace_of("v1", PRESSURE, 10, 0, None, 0.1)
    cause, effect, consequence = told(v1)[8]             # iteration 8: V1 preempts later
    assert not any(story_kind(s) == "preemption" for s in v1.steps[:9])
    assert "allocate_slots finds no free block" in effect
    assert consequence.startswith("V1 never swaps: C's blocks go back to the free queue, "
                                  "blocks 6 and 5 still cached")


def test_story_kinds_and_the_v1_differences():
    trace = trace_of("v0.5.5", PAGED)
    labels, request_of = kv_view.names(trace)
    assert [story_kind(s, request_of) for s in trace.steps[1:]] == [
        "admission", "decode", "finish", "decode", "admission", "decode", "finish"]
    v1 = told(trace_of("v1", PAGED))
    assert v1[4][2] == ("B decodes in the same step: V1 has no prefill-only steps, one token "
                        "budget serves both.")
    assert "stay in the prefix cache while free" in v1[2][2]
    v0 = told(trace)
    assert v0[4][2] == "B waits: in v0.5.5 a step that admits prompts runs no decodes."
    assert v0[2][2].startswith("The free list is a stack")
