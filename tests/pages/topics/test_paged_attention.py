import re

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


def test_default_trace_tells_the_story():
    frames = run(W, W.defaults())
    assert len(frames) == 8                    # before + 7 iterations: under twenty
    text = [f["narration"] for f in frames]
    assert "first block handed out is block 11" in text[0]
    assert "A prefills (7 tokens -> blocks 11 and 10)" in text[1]
    # A new block exactly when the last one is full (iteration 2, not 1).
    assert "starts logical block" not in text[2]
    assert "A's last block was full, so its new token starts logical block 2" in text[3]
    # A finished request frees its blocks, a later one reuses them out of order.
    assert "C reuses blocks 8 and 10, freed earlier by A" in text[5]


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
                for i, (dev, num, filled) in enumerate(s["block_table"]):
                    assert (f"logical block {i} -&gt; GPU physical block {num}, "
                            f"{filled} of 4 slots filled") in frame["svg"]
        free = snap["gpu"]["num_free"]
        assert f"{12 - free} used, {free} free" in frame["svg"]


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
