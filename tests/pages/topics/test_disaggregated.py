"""The "Disaggregated prefill and decode" page (pages/topics/disaggregated/): the step
widget's default run and its words, the checks of bad input, the animation keys, the
latency widget's numbers, and the H200 ceilings against the data file."""
import json
import re
from pathlib import Path

import pytest

from pages.framework import widget as W
from pages.topics import disaggregated
from pages.topics.disaggregated import latency, scenario
from pages.views import kv_view

STEP, LAT = disaggregated.WIDGETS
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def frames():
    return W.run(STEP, STEP.defaults())


def keys(svg_text: str) -> list[str]:
    return re.findall(r'data-k="([^"]+)"', svg_text)


def test_default_run_tells_the_lifecycle(frames):
    assert len(frames) == 16
    n = [f["narration"] for f in frames]
    assert n[0].startswith("Start: A (96 prompt tokens, 4 outputs) at 0 ms")
    assert "NIXL keeps its 6 blocks (delay_free_blocks)" in n[2]
    assert "WAITING_FOR_REMOTE_KVS" in n[3] and "6 blocks are allocated (not cached)" in n[3]
    assert "the decode GPU has 5 of A's 6 blocks" in n[4]
    assert frames[6]["label"] == "prefill, 14.7 ms"
    assert "finished_sending frees its blocks here" in n[6]
    assert "95 prompt tokens computed: its last prompt token is recomputed" in n[7]
    assert n[-1].startswith("Decode GPU, 29.7-33.4 ms: B and C finish")
    assert all(f["details"] for f in frames)


def test_every_drawn_thing_has_a_stable_unique_key(frames):
    for f in frames:
        ks = keys(f["svg"])
        assert len(ks) == len(set(ks)), [k for k in ks if ks.count(k) > 1]
    # Every usable block of both GPUs in every frame, under the same key.
    for f in frames:
        ks = set(keys(f["svg"]))
        assert {f"blk:prefill:{n}" for n in range(1, 25)} <= ks
        assert {f"blk:decode:{n}" for n in range(1, 25)} <= ks
    assert "chip:prefill:A" in keys(frames[1]["svg"])
    assert "xfer:A" in keys(frames[4]["svg"])


def test_text_reads_on_a_phone(frames):
    sizes = {float(s) for f in frames for s in re.findall(r'font-size="([0-9.]+)"', f["svg"])}
    assert min(sizes) >= kv_view.FONT
    width = {re.search(r'viewBox="0 0 ([0-9.]+) ', f["svg"])[1] for f in frames}
    assert width == {"400"}


def test_blocks_are_drawn_held_landing_and_filled(frames):
    svg2 = frames[2]["svg"]        # A held on the prefill side: dashed outlines
    assert 'stroke-dasharray="3 2"' in svg2
    assert "kept for the decode GPU&#39;s read" in svg2
    svg4 = frames[4]["svg"]        # A's blocks landing on the decode side
    assert "KV of 16 of 16 tokens there" in svg4 and "KV of 0 of 16 tokens there" in svg4
    assert "5 of 6 landed; ends at 11.4 ms" in svg4


@pytest.mark.parametrize("raw,field,words", [
    ({"requests": "96/4, 5000/1"}, "requests", "a prompt of 1 to 400 tokens"),
    ({"requests": "96/4 160/3"}, "requests", "should look like 96/4 or 160/3@1"),
    ({"requests": "96/40"}, "requests", "1 to 12 output tokens"),
    ({"requests": "400/12", "decode_blocks": "20", "prefill_blocks": "36"}, "requests",
     "needs 26 blocks for its 411 tokens on the decode GPU, which has 20: it would wait "
     "forever"),
    ({"requests": "400/1"}, "requests", "needs 25 blocks for its 400 tokens on the prefill "
                                        "GPU, which has 24"),
    ({"abort": "F@3"}, "abort", "there is no request F"),
    ({"abort": "soon"}, "abort", "e.g. B@12"),
    ({"fail": "E"}, "fail", "there is no request E"),
    ({"link": "pigeon"}, "link", "link: one of NVLink"),
    ({"budget": "8"}, "budget", "token budget: a whole number from 16 to 512"),
])
def test_bad_input_names_the_field(raw, field, words):
    values, errors = W.validate(STEP, raw)
    assert field in errors and words in errors[field], errors
    assert "<" not in errors[field]


def test_markup_in_input_is_refused_not_drawn():
    values, errors = W.validate(STEP, {"requests": "<script>1/1</script>"})
    assert "requests" in errors


def test_abort_and_failed_read_runs():
    v, errors = W.validate(STEP, {"abort": "A@9"})
    assert not errors
    n = [f["narration"] for f in W.run(STEP, v)]
    assert "aborted on the decode GPU (its blocks stay until its read lands)" in n[4]
    v, _ = W.validate(STEP, {"fail": "A"})
    frames = W.run(STEP, v)
    assert "ends with an error; the prefill GPU is never told" in frames[5]["narration"]
    assert frames[-1]["label"] == "prefill, 30007.3 ms"    # the 30 s lease
    v, _ = W.validate(STEP, {"fail": "A", "policy": "recompute"})
    assert "It prefills A's tokens 0-63 itself." in W.run(STEP, v)[7]["narration"]


def test_h200_ceilings_equal_the_data_file():
    data = json.loads((ROOT / "data" / "h200-prefill-decode.json").read_text())
    assert scenario.H200_MEASURED_PEAK_FLOPS == data["matmul_peak_flops"]
    assert scenario.H200_MEASURED_BANDWIDTH == data["copy_bandwidth_bytes_per_s"]


def test_latency_widget_default_numbers():
    (frame,) = W.run(LAT, LAT.defaults())
    n = frame["narration"]
    assert "the longest gap between two tokens is 4.2 ms, against 131.8 ms" in n
    assert "19.6 ms later on average (116.1 against 96.4 ms)" in n
    ks = keys(frame["svg"])
    assert len(ks) == len(set(ks))
    assert "dot:ttft:disaggregated:A" in ks and "row:max_tbt:L" in ks


def test_latency_widget_says_when_the_prefill_gpu_is_the_bottleneck():
    v, errors = W.validate(LAT, {"gap": "50"})
    assert not errors
    (frame,) = W.run(LAT, v)
    assert "the one prefill GPU finishes a prompt" in frame["narration"]
    _, errors = W.validate(LAT, {"gap": "5"})
    assert errors["gap"] == "time between arrivals (ms): a whole number from 20 to 2000"


def test_latency_numbers_helper():
    result = latency.scenario(LAT.defaults())[0]
    nums = latency.numbers(result.comparison)
    assert nums["disaggregated"]["max_tbt"] < 5 < nums["colocated-2"]["max_tbt"]
