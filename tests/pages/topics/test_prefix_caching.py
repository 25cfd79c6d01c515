"""The prefix caching widget (pages/topics/prefix_caching.py, pages/views/prefix_view.py):
its default frames replay VLLM-V1.md section 6, its phases are the engine's own states at
every free, its words follow the rules the page teaches, and its pictures read on a phone."""
import random
import re

import pytest

from pages.framework.prompt_list import Part, Prompt
from pages.framework.widget import run, validate
from pages.topics.prefix_caching import CHARTS, WIDGETS, engine_for, sharing_svg
from pages.views import fit
from pages.views import prefix_view as pv
from sim.trace import record
from sim.v1.invariants import check_engine

W = WIDGETS[0]

# VLLM-V1.md section 6: block tables (block, ref_cnt) and the free queue, head first, after
# each of the docs' times (doc id + 1 = the id here).
SECTION_6 = {
    "step 1": ({"R0": [(1, 1), (2, 1), (3, 1), (4, 1)]}, [5, 6, 7, 8, 9, 10]),
    "step 2": ({"R0": [(1, 1), (2, 1), (3, 1), (4, 1)]}, [5, 6, 7, 8, 9, 10]),
    "step 3": ({"R0": [(1, 2), (2, 2), (3, 1), (4, 1), (5, 1)],
                "R1": [(1, 2), (2, 2), (6, 1), (7, 1)]}, [8, 9, 10]),
    "step 3, R0 freed": ({"R1": [(1, 1), (2, 1), (6, 1), (7, 1)]}, [5, 8, 9, 10, 4, 3]),
    "step 3, R1 freed": ({}, [7, 5, 8, 9, 10, 4, 3, 6, 2, 1]),
    "step 4": ({"R2": [(b, 1) for b in (1, 2, 3, 7, 5, 8, 9, 10)]}, [4, 6]),
}


@pytest.fixture(scope="module")
def frames():
    return run(W, W.defaults())


def by_label(frames):
    return {f["label"]: f for f in frames}


def test_default_frames_state_section_6(frames):
    labels = [f["label"] for f in frames]
    assert labels == ["start", "step 1", "step 2", "step 3", "step 3, R0 freed",
                      "step 3, R1 freed", "step 4", "step 5", "step 5, R2 freed"]
    got = by_label(frames)
    for name, (tables, free) in SECTION_6.items():
        state = got[name]["state"]
        assert {k: [tuple(e) for e in v] for k, v in state["tables"].items()} == tables, name
        assert state["free"] == free, name
        # The picture says the same: the chips after the null block, head first, and every
        # table entry with its ref_cnt.
        svg = got[name]["svg"]
        chips = re.findall(r"<title>block (\d+), free \(", svg)
        assert [int(c) for c in chips] == free, name
        for rid, entries in tables.items():
            for i, (b, ref) in enumerate(entries):
                assert f"{rid}&#39;s block {i} -&gt; #{b}, ref_cnt {ref}:" in svg, (name, rid, b)
        assert "Free queue, head -&gt; tail: " not in svg
        assert any(d.startswith("Free queue, head -> tail: " + " ".join(f"#{b}" for b in free))
                   for d in got[name]["details"])


def test_the_hashes_and_hits_of_the_docs_example(frames):
    got = by_label(frames)
    start = got["start"]
    # R1's first two hashes are R0's, R2's first three; R1's third differs (I J S T).
    text = " ".join(start["details"])
    r0 = re.findall(r"block \d: (\w{4}) = hash of", text)
    assert len(r0) == 3 + 3 + 7
    assert r0[:2] == r0[3:5] and r0[:3] == r0[6:9] and r0[2] != r0[5]
    assert "I J S T" in text and "I J K L" in text
    assert "R0 (15 tokens, step 1), R1 (14 tokens, step 3) and R2 (29 tokens, step 4)" in \
        start["narration"]
    step3 = got["step 3"]["narration"]
    assert "#1 and #2, which R0 still uses, so each gains a reference" in step3
    assert "computes only 6 of its 14 tokens" in step3
    assert "block 2 (I J S T) hashes to" in " ".join(got["step 3"]["details"])
    step4 = got["step 4"]["narration"]
    assert "#1, #2 and #3, free but still hashed, so touch takes them out of the free queue" \
        in step4
    assert "#7, #5, #8, #9 and #10" in step4


def test_the_narration_says_where_the_docs_pictures_differ(frames):
    got = by_label(frames)
    assert "null block" in got["start"]["narration"]
    assert "num_gpu_blocks is 11" in got["start"]["narration"]
    assert "docs' time 2 also hands R0 its next block" in got["step 2"]["narration"]
    assert "(8 9 10 5 4 3)" in got["step 3, R0 freed"]["narration"]
    assert "8 9 10 5 4 3 7 6 2 1" in got["step 3, R1 freed"]["narration"]
    assert "nothing is evicted" in got["step 4"]["narration"]
    assert "docs&#39; time 6" in got["step 4"]["svg"]
    # The comparison is only for the docs' own scenario.
    other = run(W, {**W.defaults(), "num_gpu_blocks": 10})
    assert not any("docs" in f["narration"] for f in other)


def test_nine_usable_blocks_evict_a_p_and_say_why():
    frames = by_label(run(W, {**W.defaults(), "num_gpu_blocks": 10}))
    step4 = frames["step 4"]
    assert "#7, #5, #8, #9 and #4" in step4["narration"]
    assert ("#4, 5th from the head, still held R0's A-P (66a3), so that entry is evicted: "
            "only 4 unhashed blocks stood before it.") in step4["narration"]
    assert "evicted: #4 (66a3)" in step4["svg"]
    assert step4["state"]["free"] == [6]


def test_the_last_prompt_token_is_always_computed():
    values = {**W.defaults(), "prompts": W.params[2].parse("x:8/2, x/2@3")}
    frames = by_label(run(W, values))
    step3 = frames["step 3"]
    assert "its first block is already in the prefix cache as #1" in step3["narration"]
    assert "computes only 4 of its 8 tokens" in step3["narration"]
    assert "the last prompt token must be computed" in step3["narration"]
    assert "at most (8 - 1) // 4 = 1 block can hit" in " ".join(step3["details"])


def test_freed_blocks_go_back_last_first_unhashed_to_the_head(frames):
    got = by_label(frames)
    r0 = got["step 3, R0 freed"]
    assert ("#5 (no hash) to the head of the free queue and #4 and #3 (still hashed) to the "
            "tail") in r0["narration"]
    assert "#2 and #1 stay in use: R1 still holds them" in r0["narration"]
    assert "#2: ref_cnt 2 -> 1; still in use." in r0["details"]
    assert "to the head: #5" in r0["svg"] and "to the tail: #4 #3" in r0["svg"]


def test_caching_off_hashes_nothing_and_frees_like_a_stack():
    frames = by_label(run(W, {**W.defaults(), "enable_prefix_caching": False}))
    assert "Prefix caching is off" in frames["start"]["narration"]
    assert frames["step 3, R0 freed"]["state"]["free"] == [5, 4, 3, 2, 1, 10]
    assert "like a stack" in frames["step 3, R0 freed"]["narration"]
    assert frames["step 4"]["state"]["tables"]["R2"][0] == [9, 1]
    assert not any("hit" in f["narration"] for f in frames.values())


def sentences(text):
    body = text.split(": ", 1)[1]
    return [s for s in re.split(r"(?<=[.!?])\s+", body) if s]


SCENARIOS = [
    {},
    {"num_gpu_blocks": 10},
    {"enable_prefix_caching": False},
    {"block_size": 2, "num_gpu_blocks": 32},
    {"block_size": 16, "num_gpu_blocks": 5},
    {"prompts": "x:8/2, x/2@3"},
    {"prompts": "s:20+8/8, s+8/8, s+8/8@2, 4/8@3"},
    {"prompts": "a:12+3/4, 5/4, a+9/4@2, a+2/4@3, 2+a/4@5", "num_gpu_blocks": 12},
]


@pytest.mark.parametrize("raw", SCENARIOS)
def test_every_frame_reads_on_a_phone_and_says_at_most_three_sentences(raw):
    values, errors = validate(W, {k: str(v).lower() if isinstance(v, bool) else str(v)
                                  for k, v in raw.items()})
    assert not errors
    frames = run(W, values)
    assert len(frames) <= 40
    for f in frames:
        assert f["narration"].lower().startswith(f["label"].lower()), f["narration"]
        assert len(sentences(f["narration"])) <= 3, f["narration"]
        assert "  " not in f["narration"] and " 1 blocks" not in f["narration"]
        assert not re.search(r"\b(a) [aeio8]", f["narration"]), f["narration"]
        width = float(re.search(r'viewBox="0 0 ([\d.]+) ', f["svg"])[1])
        height = float(re.search(r'viewBox="0 0 [\d.]+ ([\d.]+)"', f["svg"])[1])
        for m in re.finditer(r'<text x="([\d.-]+)" y="([\d.-]+)" font-size="([\d.]+)" '
                             r'text-anchor="(\w+)"[^>]*>([^<]*)</text>', f["svg"]):
            x, y, size, anchor = float(m[1]), float(m[2]), float(m[3]), m[4]
            text = re.sub(r"&[#\w]+;", "_", m[5])
            assert size >= fit.min_size(width), (f["label"], text, size)
            w = fit.text_width(text, size)
            left = x - {"start": 0, "middle": w / 2, "end": w}[anchor]
            assert left >= 0 and left + w <= width + 0.5, (f["label"], text)
            assert size * 0.8 <= y <= height, (f["label"], text)


def test_a_pool_too_small_for_a_request_is_refused_with_a_reason():
    _, errors = validate(W, {"block_size": "1"})
    assert errors == {"num_gpu_blocks": "GPU blocks: R0 needs 17 blocks (15 + 3 tokens in "
                                        "blocks of 1); give at least 18 (block #0 is the null "
                                        "block)"}
    _, errors = validate(W, {"prompts": "x:4/1, y/1"})
    assert "y is not defined yet" in errors["prompts"]


def random_prompts(rng):
    names = []
    out = []
    for _ in range(rng.randint(1, 5)):
        parts = []
        for _ in range(rng.randint(1, 3)):
            if names and rng.random() < 0.5:
                name, n = rng.choice(names)
                parts.append(Part(name, n))
            elif rng.random() < 0.5:
                name = f"p{len(names)}"
                n = rng.randint(1, 12)
                names.append((name, n))
                parts.append(Part(name, n))
            else:
                parts.append(Part(None, rng.randint(1, 9)))
        prompt = Prompt(tuple(parts), rng.randint(1, 8), rng.randint(1, 6))
        if prompt.length <= 48:
            out.append(prompt)
    return tuple(out) or (Prompt((Part(None, 5),), 2, 1),)


@pytest.mark.parametrize("seed", range(12))
def test_phases_are_the_engines_own_states_at_every_free(seed):
    """Each phase rebuilt from the trace equals the engine's state at that moment: before the
    first free of a step, and after each finished request's free."""
    rng = random.Random(seed)
    values = {"block_size": rng.choice([1, 2, 3, 4, 8]), "num_gpu_blocks": 0,
              "prompts": random_prompts(rng), "enable_prefix_caching": rng.random() < 0.8}
    need = max(-(-(p.length + p.output - 1) // values["block_size"]) for p in values["prompts"])
    values["num_gpu_blocks"] = need + 1 + rng.randint(0, 6)
    engine = engine_for(values)
    seen = {}
    kv = engine.kv_cache_manager
    free = kv.free

    def state():
        snap = engine.snapshot(with_slots=False)
        return (pv.request_tables(snap), tuple(b["ref_count"] for b in snap["gpu"]["blocks"]),
                tuple(snap["gpu"]["free_order"]))

    def watched(request):
        finishing = request.is_finished()
        step = engine.step_index
        if finishing and step not in seen:
            seen[step] = [state()]
        free(request)
        if finishing:
            seen[step].append(state())

    kv.free = watched
    trace = record(engine, max_steps=80, check=check_engine)
    assert not any(s.problems for s in trace) and trace.stopped is None
    phases = pv.phases(trace)
    for phase in phases[1:]:
        step = phase.step.step
        k = 0 if phase.kind == "run" else [p for p in phases if p.step is phase.step].index(phase)
        expected = seen[step][k] if step in seen else (
            pv.request_tables(phase.snapshot),
            tuple(b["ref_count"] for b in phase.snapshot["gpu"]["blocks"]),
            tuple(phase.snapshot["gpu"]["free_order"]))
        tables, refs, free_order = expected
        assert phase.tables == tables, (seed, phase.index)
        assert phase.refs[1:] == refs[1:], (seed, phase.index)    # block 0: the null block
        assert phase.free_order == free_order, (seed, phase.index)
    # And every such scenario draws and narrates.
    assert len(run(W, values)) == len(phases)


def test_the_chart_reads_on_a_phone():
    assert [c.id for c in CHARTS][0] == "prefix-sharing"
    svg = sharing_svg()
    width = float(re.search(r'viewBox="0 0 ([\d.]+) ', svg)[1])
    sizes = [float(s) for s in re.findall(r'font-size="([\d.]+)"', svg)]
    assert sizes and min(sizes) >= fit.min_size(width)
    assert "vLLM&#39;s logged rate" in svg and "caching off" in svg


# -- the CPU tier chart ------------------------------------------------------------------------

def test_cpu_offloading_chart_and_the_page_numbers():
    from pathlib import Path

    from pages.topics.prefix_caching.offloading import (
        cost_line,
        follow_up_ttft_s,
        offloading_svg,
        runs,
        summary_rows,
    )
    assert [c.id for c in CHARTS] == ["prefix-sharing", "cpu-offloading"]
    rs = runs()
    assert [r.cpu_blocks for r in rs] == [0, 384, 1536, 6144]
    # A bigger tier finds more and computes less; the time to first token follows.
    assert rs[0].cpu_hit_tokens == 0
    assert [r.computed_prompt_tokens for r in rs] == sorted(
        (r.computed_prompt_tokens for r in rs), reverse=True)
    assert follow_up_ttft_s(rs[-1]) < follow_up_ttft_s(rs[0])
    svg_text = offloading_svg()
    for row in summary_rows():
        for cell in row:
            assert cell in svg_text
    assert f"{rs[-1].cpu_hit_tokens:,} tokens" in cost_line(rs[-1])
    assert f"{rs[-1].cpu_hit_tokens:,} tokens" in svg_text
    # The page says the chart's numbers.
    doc = (Path(__file__).resolve().parents[3] / "docs" / "prefix-caching.md").read_text()
    tier16 = rs[-1]
    for number in (f"{rs[0].computed_prompt_tokens:,} computed",
                   f"({rs[1].computed_prompt_tokens:,} computed)",
                   f"{tier16.computed_prompt_tokens:,} computed",
                   f"{100 * rs[0].hit_rate:.0f}% of prompt tokens",
                   f"{100 * tier16.hit_rate:.0f}% of prompt tokens are found",
                   f"{1e3 * follow_up_ttft_s(rs[0]):.2f} ms with the GPU alone",
                   f"{1e3 * follow_up_ttft_s(tier16):.2f} ms with 16x",
                   f"{tier16.loads} loads move {tier16.cpu_hit_tokens:,} tokens",
                   f"({tier16.load_bytes / 2**30:.1f} GiB) in {1e3 * tier16.load_s:.0f} ms",
                   f"{tier16.store_bytes / 2**30:.1f} GiB of stores"):
        assert number in doc, number
