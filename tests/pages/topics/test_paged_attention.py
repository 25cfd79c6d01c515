import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from pages.framework.widget import run, validate
from pages.topics.paged_attention import REQUESTS, WIDGETS, scenario

W = WIDGETS[0]


def test_requests_round_trip():
    reqs = REQUESTS.parse(" 7/3, 3/6 ,5/3@4")
    assert reqs == ((7, 3, 0, 1), (3, 6, 0, 1), (5, 3, 4, 1))
    assert REQUESTS.parse(REQUESTS.format(reqs)) == reqs


@pytest.mark.parametrize("text, message", [
    ("", "1 to 6 requests"), ("7/3,7/3,7/3,7/3,7/3,7/3,7/3", "1 to 6 requests"),
    ("7-3", "should look like 7/3"), ("<b>7</b>/3", "should look like 7/3"),
    ("7/3x2", "should look like 7/3"), ("\u0663/3", "should look like 7/3"),
    ("0/3", "from 1 to 40"), ("7/41", "from 1 to 40"), ("7/3@41", "at most 40")])
def test_bad_requests_name_the_field_and_what_is_allowed(text, message):
    _, errors = validate(W, {"requests": text})
    assert message in errors["requests"] and errors["requests"].startswith("requests: ")


def test_range_errors():
    _, errors = validate(W, {"block_size": "0", "num_gpu_blocks": "x"})
    assert errors["block_size"] == "block size: a whole number from 1 to 16"
    assert errors["num_gpu_blocks"] == "GPU blocks: a whole number from 2 to 32"


SENTENCE_END = re.compile(r"[.!?](?:\s|$)")


def sentences(text: str) -> int:
    return len(SENTENCE_END.findall(text))


def test_default_trace_tells_the_story():
    frames = run(W, W.defaults())
    assert len(frames) == 8                    # before + 7 iterations: under twenty
    text = [f["narration"] for f in frames]
    assert [f["label"] for f in frames] == ["start"] + [f"iteration {i}" for i in range(7)]
    assert "first block handed out is block 11" in text[0]
    assert text[1].startswith("Iteration 0: A and B arrive")
    assert "A's 7 tokens fill blocks 11 and 10; B's 3 tokens fill block 9" in text[1]
    # A new block exactly when the last one is full (iteration 2, not 1).
    assert "no block is taken" in text[2]
    assert "they took new ones (A block 8 and B block 7)" in text[3]
    # A finished request frees its blocks, a later one reuses them out of order.
    assert "so blocks 11, 10 and 8 return to the free list" in text[3]
    assert "C's 5 tokens fill blocks 8 and 10 (freed by A)" in text[5]
    assert "B waits: in v0.5.5 a step that admits prompts runs no decodes" in text[5]
    # The full account, one click away.
    details = frames[1]["details"]
    assert "Prefill step: A prefills (7 tokens -> blocks 11 and 10) and B prefills (3 tokens "\
           "-> block 9). No decodes run in a step that admits prompts." in details
    assert any("C reuses blocks 8 and 10, freed earlier by A" in d for d in frames[5]["details"])


def test_narration_is_short_and_the_label_names_the_step():
    for v in (W.defaults(), dict(W.defaults(), engine="v1"),
              dict(W.defaults(), num_gpu_blocks=4), dict(W.defaults(), engine="v1",
                                                          num_gpu_blocks=4)):
        for f in run(W, v):
            assert sentences(f["narration"]) <= 3, f["narration"]
            name = f["label"]
            heading = re.search(r'<text[^>]*font-size="15"[^>]*>([^<]+)<', f["svg"]).group(1)
            assert heading.lower().startswith(name), (heading, name)
            if name != "start":
                assert f["narration"].startswith(name[0].upper() + name[1:] + ":")
            assert "a 8" not in f["narration"] and " 1 slots" not in f["svg"]


def test_every_frame_matches_the_engine_state():
    values = W.defaults()
    frames = run(W, values)
    trace = scenario(values)
    assert len(frames) == len(trace)
    for frame, step in zip(frames, trace):
        snap = step.snapshot
        # Every block table entry is drawn with its physical number and filled count.
        for r in snap["requests"]:
            for s in r["seqs"]:
                for i, (_, num, filled) in enumerate(s["block_table"]):
                    assert (f"logical block {i} -&gt; GPU physical block {num}, "
                            f"{filled} of 4 slots filled") in frame["svg"]
        free = snap["gpu"]["num_free"]
        assert f"{12 - free} used, {free} free" in frame["svg"]


def test_v1_frames_draw_the_v1_engines_snapshots():
    """The switch: the same settings drive V1; every frame's block tables and pool come
    from the V1 engine's own snapshots, step by step."""
    from sim.core.sequence import SamplingParams
    from sim.v1.config import CacheConfig as V1Cache
    from sim.v1.config import SchedulerConfig as V1Sched
    from sim.v1.engine import LLMEngine as V1Engine

    v = dict(W.defaults(), engine="v1")
    frames = run(W, v)
    engine = V1Engine(V1Cache(block_size=4, num_gpu_blocks=13), V1Sched())
    for name, prompt, output, arrival in (("A", 7, 3, 0), ("B", 3, 6, 0), ("C", 5, 3, 4)):
        engine.add_request(name, prompt, SamplingParams(max_tokens=output, ignore_eos=True),
                           arrival_step=arrival)
    snaps = [engine.snapshot()]
    while engine.has_unfinished_requests():
        engine.step()
        snaps.append(engine.snapshot())
    assert len(frames) == len(snaps) == 9     # async: C's last output is processed a call later
    for frame, snap in zip(frames, snaps):
        assert snap["engine"] == "v1" and snap["null_block"] == 0
        drawn = re.findall(r"<title>(\w): logical block (\d+) -&gt; GPU physical block "
                           r"(\d+), (\d+) of 4 slots filled</title>", frame["svg"])
        tables = [(r["request_id"], i, num, filled) for r in snap["requests"]
                  for i, (_, num, filled) in enumerate(r["seqs"][0]["block_table"])]
        assert [(a, int(b), int(c), int(d)) for a, b, c, d in drawn] == tables
        for n, block in enumerate(snap["gpu"]["blocks"]):
            if n == 0:
                assert "GPU block 0: the null block" in frame["svg"]
            elif block["ref_count"] == 0 and block["hash"]:
                assert f"GPU block {n}: free but still in the prefix cache (hash " \
                       f"{block['hash']}" in frame["svg"]
    text = [f["narration"] for f in frames]
    assert "block 0 is its null block, so 12 are usable" in text[0]
    assert "A's 7 tokens fill blocks 1 and 2" in text[1]
    # V1's default (async) loop: A's last output is processed in iteration 3.
    assert "Blocks 2 and 1 stay in the prefix cache while free" in text[4]
    assert "C's 5 tokens fill blocks 4 and 6 (block 4 freed by A)" in text[5]
    assert "B decodes in the same step: V1 has no prefill-only steps" in text[5]
    assert "prompts and decodes" in frames[5]["svg"]


def test_v1_settings_that_mean_nothing_are_explained():
    text = run(W, dict(W.defaults(), engine="v1", free_order="shuffled"))[0]["narration"]
    assert "the free-list setting is v0.5.5's and does not apply" in text
    help_text = {p.name: p.help for p in W.params}
    assert "v0.5.5 only" in help_text["free_order"]
    assert "V1 adds block 0" in help_text["num_gpu_blocks"]


def test_every_mark_has_a_legend():
    frames = run(W, dict(W.defaults(), engine="v1"))
    for f in frames:
        for words in ("new this step", "freed this step", "free, still cached",
                      "in the prefix cache", "null block (V1)", "token position",
                      "C@4: arrives in iteration 4"):
            assert words in f["svg"], words


def test_frames_are_deterministic_and_svg_has_titles():
    a = run(W, W.defaults())
    b = run(W, W.defaults())
    assert a == b
    svg = a[2]["svg"]
    assert svg.startswith("<svg") and "viewBox" in svg
    assert len(re.findall("<title>", svg)) > 12     # every block has a hover text


def test_shuffled_free_order_changes_placement_not_shape():
    stack = run(W, W.defaults())
    shuffled = run(W, dict(W.defaults(), free_order="shuffled", seed=3))
    assert stack[1]["svg"] != shuffled[1]["svg"]
    assert len(stack) == len(shuffled)


def test_too_long_scenarios_are_refused():
    _, errors = validate(W, {"requests": "3/40@30"})
    assert "within 60 steps" in errors["requests"]


DOC = (Path(__file__).resolve().parents[3] / "docs" / "paged-attention.md").read_text(
    encoding="utf-8")


@pytest.mark.parametrize("link", re.findall(r"\(#paged-attention\.([^)]*)\)", DOC))
def test_doc_permalinks_validate_and_restore_the_switch(link):
    raw = dict(kv.split("=", 1) for kv in unquote(link).split("&paged-attention."))
    step = raw.pop("step", None)
    v, errors = validate(W, raw)
    assert not errors, (link, errors)
    assert v["engine"] == raw.get("engine", "v0.5.5")
    if step is not None:
        assert 1 <= int(step) <= len(run(W, v))
