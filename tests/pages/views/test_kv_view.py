"""The shared KV views at a readable size, for both engines: every text at FONT or more and
inside the 400-unit picture (by the monospace estimate the layout itself uses), a legend for
every mark, the null block and cached free blocks of V1, block size 1 without clipped labels."""
import html
import re

import pytest

from pages.views import kv_view
from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.core.sequence import SamplingParams
from sim.events import BlockEvicted, BlockTouched
from sim.trace import record
from sim.v1 import config as v1_config
from sim.v1.engine import LLMEngine as V1Engine

TEXT = re.compile(r'<text x="([-0-9.]+)" y="[-0-9.]+" font-size="([0-9.]+)" '
                  r'text-anchor="(\w+)"[^>]*>([^<]*)</text>')


def trace_of(engine_name: str, block_size: int, blocks: int, cpu: int = 0,
             requests=((7, 3, 0), (3, 6, 0), (5, 3, 4))):
    if engine_name == "v1":
        engine = V1Engine(v1_config.CacheConfig(block_size=block_size,
                                                num_gpu_blocks=blocks + 1),
                          v1_config.SchedulerConfig(async_scheduling=False))
    else:
        engine = LLMEngine(CacheConfig(block_size=block_size, num_gpu_blocks=blocks,
                                       num_cpu_blocks=cpu), SchedulerConfig(
            preemption_mode="swap" if cpu else None))
    for name, (prompt, output, arrival) in zip("ABCDE", requests):
        engine.add_request(name, prompt, SamplingParams(max_tokens=output, ignore_eos=True),
                           arrival_step=arrival)
    return record(engine)


def texts(parts: list[str]):
    for x, size, anchor, content in TEXT.findall("".join(parts)):
        content = html.unescape(content)
        width = kv_view.text_width(content, float(size))
        left = float(x) - {"start": 0, "middle": width / 2, "end": width}[anchor]
        yield content, float(size), left, left + width


def panels(step):
    snap = step.snapshot
    h = kv_view.highlights(step.events)
    x = kv_view.MARGIN
    out = []
    for parts, _ in (kv_view.queues(x, 0, snap, h),
                     kv_view.block_tables(x, 0, snap, h, others=True),
                     kv_view.pool(x, 0, snap, "gpu", h),
                     kv_view.free_list(x, 0, snap),
                     kv_view.legend(x, 0, list(kv_view.LEGEND), later="D@8")):
        out += parts
    if snap["cpu"]["num_blocks"]:
        out += kv_view.pool(x, 0, snap, "cpu", h)[0]
    return out


CASES = [("v0.5.5", 4, 12, 0), ("v1", 4, 12, 0), ("v0.5.5", 1, 32, 0), ("v1", 1, 32, 0),
         ("v0.5.5", 2, 16, 0), ("v0.5.5", 8, 8, 0), ("v1", 16, 4, 0), ("v0.5.5", 4, 5, 8)]


@pytest.mark.parametrize("engine_name, bs, blocks, cpu", CASES)
def test_every_text_is_readable_and_inside_the_picture(engine_name, bs, blocks, cpu):
    for step in trace_of(engine_name, bs, blocks, cpu):
        for content, size, left, right in texts(panels(step)):
            assert size >= kv_view.FONT, (content, size)
            assert left >= -0.5 and right <= kv_view.WIDTH + 0.5, (content, left, right)


@pytest.mark.parametrize("engine_name", ["v0.5.5", "v1"])
def test_block_size_one_never_clips_a_label(engine_name):
    """Labels drawn inside a pool block fit in it ("free" is left out of narrow blocks)."""
    trace = trace_of(engine_name, 1, 32)
    _, block_w, _ = kv_view._geometry_of(trace[0].snapshot, "gpu")
    for step in trace:
        parts, _ = kv_view.pool(8, 0, step.snapshot, "gpu", kv_view.highlights(step.events))
        for content, _, left, right in texts(parts):
            if content in ("free", "freed", "null"):
                assert right - left <= block_w - 4
        for content, _, left, right in texts(parts):
            if content.startswith("#"):
                assert right - left <= block_w


def test_pool_block_box_points_at_the_drawn_blocks_for_both_engines():
    for engine_name in ("v0.5.5", "v1"):
        snap = trace_of(engine_name, 4, 12)[3].snapshot
        parts, _ = kv_view.pool(8, 100, snap, "gpu", kv_view.highlights([]))
        drawn = "".join(parts)
        for n in range(snap["gpu"]["num_blocks"]):
            x, y, w, h = kv_view.pool_block_box(8, 100, snap, n)
            assert f'x="{x:g}" y="{y:g}" width="{w:g}" height="{h:g}"' in drawn


def test_v1_marks_null_block_cached_free_blocks_and_hashes():
    trace = trace_of("v1", 4, 12)
    step = trace[3]                       # A finished: its full blocks 1 and 2 stay cached
    snap = step.snapshot
    assert snap["gpu"]["blocks"][1]["hash"] and not snap["gpu"]["blocks"][1]["ref_count"]
    drawn = "".join(kv_view.pool(8, 0, snap, "gpu", kv_view.highlights(step.events))[0])
    assert "GPU block 0: the null block" in drawn
    assert "GPU block 1: free but still in the prefix cache" in drawn
    assert "A&#39;s tokens" in drawn
    assert 'opacity="0.4"' in drawn       # the cached tokens, pale
    assert "<circle" in drawn             # the prefix-cache dot
    assert kv_view._pool_heading(snap, "gpu") == "GPU blocks: 2 used, 10 free (2 still cached)"
    # The null block is neither used nor free.
    stats = kv_view.waste_stats(snap)
    assert stats["used_blocks"] + stats["free_blocks"] == 12
    # V1 has no swapped queue.
    assert "swapped:" not in "".join(kv_view.queues(8, 0, snap, kv_view.highlights([]))[0])
    keys = kv_view.legend_keys(trace)
    assert {"null", "cached", "hashed", "new", "freed", "free", "slot"} <= set(keys)
    assert "null" not in kv_view.legend_keys(trace_of("v0.5.5", 4, 12))


def test_highlights_read_v1_events():
    trace = trace_of("v1", 4, 10, requests=((6, 12, 0), (5, 12, 0), (4, 12, 0), (3, 3, 8)))
    hits = [s for s in trace if s.of_type(BlockTouched)]
    assert hits
    h = kv_view.highlights(hits[0].events)
    assert h.touched and all(h.changed(k) for k in h.touched)
    evicting = [s for s in trace if s.of_type(BlockEvicted)]
    assert evicting and kv_view.highlights(evicting[0].events).evicted


def test_every_mark_has_a_legend_entry_and_later_chips_are_explained():
    parts, height = kv_view.legend(8, 0, list(kv_view.LEGEND), later="C@4")
    words = " ".join(html.unescape(c) for _, _, _, c in TEXT.findall("".join(parts)))
    for label in kv_view.LEGEND.values():
        assert label in words
    assert "C@4: arrives in iteration 4" in words
    assert kv_view.first_later(trace_of("v0.5.5", 4, 12)) == "C@4"


def test_waiting_rows_say_why_a_request_holds_no_blocks():
    trace = trace_of("v0.5.5", 4, 12)
    start = "".join(kv_view.block_tables(8, 0, trace[0].snapshot, kv_view.highlights([]),
                                         others=True)[0])
    assert "arrives at iteration 4 (5-token prompt)" in start
    later = "".join(kv_view.block_tables(8, 0, trace[2].snapshot, kv_view.highlights([]),
                                         others=True)[0])
    assert "arrives at iteration" not in later     # the queue chip says it once tables exist
    title = kv_view.table_title({"block_size": 1})
    assert "1 slot filled" in title and "1 slots" not in title


def test_heading_puts_the_engine_on_the_right():
    title, engine = kv_view.heading(8, "Iteration 3 (decode)", "V1")
    assert "Iteration 3 (decode)" in title and 'text-anchor="end"' not in title
    assert ">V1<" in engine and 'text-anchor="end"' in engine


def leak_trace():
    """vLLM v0.5.5's leak (issue 27): A.0 ends in the prompt step, A.1 is recomputed at
    iteration 12 and comes back at 13 as a decode into blocks 0-3, counted twice."""
    from sim.stand_in_model import StandInModel
    engine = LLMEngine(CacheConfig(block_size=4, num_gpu_blocks=4, num_cpu_blocks=4),
                       SchedulerConfig(), seed=130, model=StandInModel(seed=130, eos_prob=0.3))
    engine.add_request("A", 2, SamplingParams(n=2, max_tokens=30))
    return record(engine, max_steps=16)


def test_pool_marks_leaked_blocks_and_slots_never_recomputed():
    trace = leak_trace()
    step = trace[14]                       # iteration 13: A.1 runs in its leaked blocks
    snap = step.snapshot
    assert [b.get("leaked_refs") for b in snap["gpu"]["blocks"]] == [1, 1, 1, 1]
    stale = kv_view.not_recomputed(snap)
    # The recompute ran as a decode of position 13: positions 0-12 were never recomputed.
    assert sorted((n, sorted(s)) for (_, n), s in stale.items()) == [
        (0, [0, 1, 2, 3]), (1, [0, 1, 2, 3]), (2, [0, 1, 2, 3]), (3, [0])]
    parts, _ = kv_view.pool(8, 0, snap, "gpu", kv_view.highlights(step.events))
    drawn = "".join(parts)
    assert drawn.count(">leaked</text>") == 4            # the badge, still in A.1's table
    assert drawn.count(">?</text>") == 13
    assert "ref count 2 (A.1), 1 of it leaked" in drawn
    assert "slot 0: KV never recomputed" in drawn
    # Preempted again at iteration 14: no table holds them, the body says so.
    snap = trace[15].snapshot
    parts, _ = kv_view.pool(8, 0, snap, "gpu", kv_view.highlights(trace[15].events))
    drawn = "".join(parts)
    assert drawn.count(">leaked</text>") == 4 and ">?</text>" not in drawn
    assert "GPU block 2: leaked. Its ref count is 1 and no block table holds it" in drawn
    assert "leaked" in kv_view.legend_keys(trace) and "stale" in kv_view.legend_keys(trace)
    assert "leaked" not in kv_view.legend_keys(trace_of("v0.5.5", 4, 12))
