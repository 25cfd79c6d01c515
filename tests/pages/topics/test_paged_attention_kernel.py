"""pages/topics/paged_attention_kernel.py: the block-by-block attention widget and its chart.
The walk itself (sim/perf/kernel_walk.py) is tested in tests/sim/perf/test_kernel_walk.py."""
import random
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from pages.framework.widget import respond, run, to_json, validate
from pages.topics import paged_attention_kernel as page
from pages.views.text import f2
from pages.views.vectors import short, vec
from sim.perf.attention import (
    gather_kv,
    paged_attention_v1_trace,
    random_paged_attention_inputs,
    use_v1,
)

W = page.WIDGETS[0]
SVG = "{http://www.w3.org/2000/svg}"


def frames(**raw):
    values, errors = validate(W, {k: str(v) for k, v in raw.items()})
    assert not errors, errors
    return run(W, values)


def values(**raw):
    v, errors = validate(W, {k: str(x) for k, x in raw.items()})
    assert not errors, errors
    return v


def texts(svg_text: str) -> str:
    root = ET.fromstring(svg_text)
    return re.sub(r"\s+", " ", " ".join("".join(t.itertext()) for t in root.iter(f"{SVG}text")))


def titles(svg_text: str) -> list[str]:
    return [t.text for t in ET.fromstring(svg_text).iter(f"{SVG}title")]


def numpy_attention(inp):
    keys, vals = gather_kv(inp.key_cache, inp.value_cache, inp.block_table, inp.seq_len,
                           inp.block_size)
    k, v, q = np.array(keys), np.array(vals), np.array(inp.query)
    group = len(inp.query) // inp.num_kv_heads
    out = []
    for h in range(len(inp.query)):
        s = k[:, h // group, :] @ q[h] * inp.scale
        w = np.exp(s - s.max())
        out.append((w / w.sum()) @ v[:, h // group, :])
    return np.array(out)


# ------------------------------------------------------------------ the default story

def test_default_scenario_makes_its_point_in_under_twenty_steps():
    fr = frames()
    assert len(fr) == 11 < 20
    kinds = [f["kind"] for f in fr]
    assert kinds == (["intro"] + ["block_scores"] * 4 + ["softmax"]
                     + ["value_accumulated"] * 4 + ["final"])


def test_the_docs_step_links_land_where_the_text_says():
    fr = frames()
    # "logical block 0 lives in physical block 5 (step 2)", "logical block 3 in
    # physical block 0 (step 5)", masking at step 5, softmax at 6, values from 7, end 11.
    assert "maps logical block 0 to physical block 5" in fr[1]["narration"]
    assert "maps logical block 3 to physical block 0" in fr[4]["narration"]
    # The kernel scores the padded slots too, then masks them (issue 12, item 7).
    assert ("Positions 13-15 are past the length 13, but the whole block is loaded, so their "
            "stale keys are scored too") in fr[4]["narration"]
    assert "then stored as 0 and left out of the max and the softmax" in fr[4]["narration"]
    assert fr[5]["kind"] == "softmax" and fr[6]["kind"] == "value_accumulated"
    assert "the same numbers" in fr[10]["narration"]
    v2 = frames(kernel="v2")
    assert v2[13]["kind"] == "partitions_merged"      # "switch to v2, step to 14"


def records(walk) -> list:
    return [step.record for step in walk.steps[1:]]


def test_narration_is_written_from_the_trace_records():
    v = values()
    walk = page.scenario(v)
    fr = run(W, v)
    per_head = [r for r in records(walk) if r.kind != "attention_output"]
    assert len(fr) == len(walk) == len(records(walk)) + 1      # plus the intro frame
    for frame, rec in zip(fr[1:], per_head):
        assert frame["narration"].lower().startswith(frame["label"] + ":")
        assert len(re.split(r"(?<=[.!?])\s+(?=[A-Z])", frame["narration"])) <= 3
        heading = ET.fromstring(frame["svg"]).find(f"{SVG}text").text
        assert heading == frame["label"]
        if rec.kind == "block_scores":
            assert f"physical block {rec.physical_block}" in frame["narration"]
            assert f"Logical block {rec.logical_block} -> block table -> physical block " \
                   f"{rec.physical_block}" in " ".join(frame["details"])
            for s in rec.scores:
                if s is not None:
                    assert f2(s) in frame["narration"]
        if rec.kind == "softmax":
            assert f"m = {f2(rec.max_logit)}" in frame["narration"]
            assert f"l = sum of exp(score - m) = {f2(rec.exp_sum)}" in frame["narration"]
        if rec.kind == "value_accumulated":
            assert vec(rec.output) in frame["narration"]


def test_trace_follows_the_watched_head_only_and_uses_simulations_records():
    v = values(num_heads=4, num_kv_heads=2, head=3)
    walk = page.scenario(v)
    recs = records(walk)
    assert {r.head for r in recs if r.kind != "attention_output"} == {3}
    full = paged_attention_v1_trace(**walk.inputs.args())
    assert [r for r in full if r.kind == "attention_output" or r.head == 3] == recs
    assert all(r.kv_head == 1 for r in recs if r.kind == "block_scores")
    assert "query head 3 of 4 reads KV head 1" in texts(run(W, v)[1]["svg"])


def test_picture_shows_the_block_table_scores_and_masked_slots():
    fr = frames()
    inp = page.scenario(values()).inputs
    shown = texts(fr[4]["svg"])
    assert "KV cache: physical blocks" in shown
    for logical, physical in enumerate(inp.block_table[:4]):
        assert f"block table[{logical}] = physical block {physical}" in titles(fr[4]["svg"])
    assert shown.count("mask") >= 3                      # slots 13, 14, 15
    assert ("slot 1: past the length 13: loaded and scored with the block, then masked "
            "(logit 0, left out of the max and the softmax; its value is zeroed)"
            in titles(fr[4]["svg"]))
    # The current physical block is highlighted with the page's palette, and a legend
    # says what each mark means.
    assert "stroke:var(--vsb-highlight)" in fr[4]["svg"]
    for words in ("read this step", "mask: past the length", "this sequence", "padding",
                  "other sequences"):
        assert words in shown
    assert "weight (darker: larger)" in texts(fr[5]["svg"])
    assert "values added" in texts(fr[7]["svg"])
    assert "partition boundary" in texts(frames(kernel="v2")[3]["svg"])
    # Keys shown in the panel are the cache's own numbers (one decimal).
    key = inp.key_cache[0][0][0]
    assert short(key, 1) in shown


def test_last_frame_puts_paged_output_next_to_contiguous_and_numpy_agrees():
    v = values()
    walk = page.scenario(v)
    out = walk.steps[-1].record.output
    np.testing.assert_allclose(np.array(out), numpy_attention(walk.inputs), rtol=1e-12,
                               atol=1e-14)
    np.testing.assert_allclose(np.array(walk.reference), numpy_attention(walk.inputs),
                               rtol=1e-12, atol=1e-14)
    last = run(W, v)[-1]
    shown = texts(last["svg"])
    for h, row in enumerate(out):
        assert f"head {h} paged {short(row)}" in shown
    assert "equal (to within 1e-9, float64)" in shown
    assert ("vLLM would launch v1: use_v1(13 tokens, 1 sequence, 2 heads) is True"
            in last["narration"])
    assert [f["label"] for f in run(W, v)] == (
        ["start"] + [f"head 0, block {b} scores" for b in range(4)] + ["head 0 softmax"]
        + [f"head 0, block {b} values" for b in range(4)] + ["result"])
    assert use_v1(13, 1, 2)


# ------------------------------------------------------------------------------ v2

def test_v2_shows_partition_maxima_sums_and_the_merge():
    v = values(kernel="v2", partition_size=8)
    walk = page.scenario(v)
    recs = records(walk)
    fr = run(W, v)
    results = [r for r in recs if r.kind == "partition_result"]
    merged = next(r for r in recs if r.kind == "partitions_merged")
    assert [r.start for r in results] == [0, 8]
    merge_frame = next(f for f in fr if f["kind"] == "partitions_merged")
    shown = texts(merge_frame["svg"])
    for r in results:
        assert f2(r.max_logit) in shown and f2(r.exp_sum) in shown
    for f in merged.rescale_factors:
        assert f2(f) in merge_frame["narration"]
    assert f"M = {f2(merged.global_max)}" in merge_frame["narration"]
    # exp(m_i - M) is 1 for the partition holding the max and below 1 for the other.
    assert max(merged.rescale_factors) == 1.0 and min(merged.rescale_factors) < 1.0
    np.testing.assert_allclose(np.array(recs[-1].output), numpy_attention(walk.inputs),
                               rtol=1e-12, atol=1e-14)
    assert "partition 1" in fr[7]["narration"]


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("block_size,seq_len,partition", [(2, 9, 4), (4, 13, 8), (8, 40, 16)])
def test_v1_and_v2_last_frames_agree_and_match_numpy(seed, block_size, seq_len, partition):
    common = dict(seed=seed, block_size=block_size, seq_len=seq_len, num_heads=4,
                  num_kv_heads=2, head=1)
    v1 = page.scenario(values(**common))
    v2 = page.scenario(values(kernel="v2", partition_size=partition, **common))
    ref = numpy_attention(v1.inputs)
    for walk in (v1, v2):
        np.testing.assert_allclose(np.array(walk.steps[-1].record.output), ref, rtol=1e-12,
                                   atol=1e-14)


def test_single_partition_reduce_copies_its_output():
    fr = frames(kernel="v2", seq_len=8, block_size=4, partition_size=8)
    merge = next(f for f in fr if f["kind"] == "partitions_merged")
    assert "only one partition" in merge["narration"]


def test_one_token_sequence():
    fr = frames(seq_len=1, block_size=2)
    assert "Position 0 scores q.k x" in fr[1]["narration"]
    assert "Position 1 is past the length 1, but the whole block is loaded, so its stale key " \
           "is scored too" in fr[1]["narration"]


# ----------------------------------------------------------------- the inputs

def test_inputs_come_from_the_simulation_with_readable_decimals():
    v = values(seed=5)
    inp = page.scenario(v).inputs
    ref = random_paged_attention_inputs(random.Random(5), num_heads=2, num_kv_heads=1,
                                        head_size=4, block_size=4, seq_len=13,
                                        spare_blocks=page.SPARE_BLOCKS, decimals=1)
    assert inp.block_table == ref.block_table and inp.query == ref.query
    assert all(round(x, 1) == x for q in inp.query for x in q)


def test_f2_never_prints_negative_zero():
    assert f2(-0.001) == "0.00" and f2(-0.005) in ("0.00", "-0.01")
    assert short([-0.04], 1) == "[0.0]"


# ------------------------------------------------------------------------ checks

@pytest.mark.parametrize("raw,field,words", [
    ({"num_heads": "3", "num_kv_heads": "2"}, "num_kv_heads",
     "must divide the number of query heads (3)"),
    ({"seq_len": "40", "block_size": "2"}, "seq_len", "at most 12 blocks"),
    ({"kernel": "v2", "partition_size": "6", "block_size": "4"}, "partition_size",
     "must be a multiple of the block size (4)"),
    ({"head": "2", "num_heads": "2"}, "head", "a query head from 0 to 1"),
])
def test_cross_field_rules_name_the_field(raw, field, words):
    _, errors = validate(W, raw)
    assert field in errors and words in errors[field]


def test_v1_ignores_the_partition_size_rule():
    _, errors = validate(W, {"kernel": "v1", "partition_size": "6", "block_size": "4"})
    assert not errors


@pytest.mark.parametrize("raw,field", [
    ({"block_size": "1"}, "block_size"), ({"seq_len": "41"}, "seq_len"),
    ({"head_size": "9"}, "head_size"), ({"kernel": "v3"}, "kernel"),
    ({"num_heads": "x"}, "num_heads"),
])
def test_ranges_are_checked_with_the_label(raw, field):
    _, errors = validate(W, raw)
    param = next(p for p in W.params if p.name == field)
    assert errors[field].startswith(param.label + ":")


# ------------------------------------------------------------------ contract, size

def test_frames_are_deterministic_json_and_every_block_has_a_title():
    a, b = to_json(frames(kernel="v2")), to_json(frames(kernel="v2"))
    assert a == b
    for f in frames() + frames(kernel="v2", block_size=8, seq_len=40, partition_size=16,
                                head_size=8):
        root = ET.fromstring(f["svg"])
        assert root.get("viewBox").startswith("0 0 400 ")
        # 11 px on a phone, where the picture is about 330 px wide.
        assert min(float(t.get("font-size")) for t in root.iter(f"{SVG}text")) >= 11 * 400 / 330
        for rect in root.iter(f"{SVG}rect"):
            style = rect.get("style")
            assert "var(--vsb-" in style


def test_largest_allowed_trace_stays_small():
    fr = frames(kernel="v2", seq_len=24, block_size=2, partition_size=2, num_heads=4,
                num_kv_heads=2, head_size=8, head=3)
    assert len(fr) <= 60
    assert len(to_json(fr)) < 2_500_000


def test_respond_returns_errors_not_markup():
    answer = respond(W, {"seq_len": "<b>1</b>"})
    assert "errors" in answer and "<b>" not in answer["errors"]["seq_len"]


# ------------------------------------------------------------------------- chart

def test_kernel_choice_chart_is_drawn_from_use_v1():
    chart = page.CHARTS[0]
    text = chart.render()
    root = ET.fromstring(text)
    tips = [t for t in titles(text) if t and t.startswith(("v1:", "v2:"))]
    assert len(tips) == 9 * 10
    for tip in tips:
        n = int(re.search(r"longest sequence ([\d,]+)", tip).group(1).replace(",", ""))
        b = int(re.search(r"tokens, (\d+) sequences", tip).group(1))
        assert tip.startswith("v1:") == use_v1(n, b, page.CHART_HEADS)
    assert root.get("role") == "img"
