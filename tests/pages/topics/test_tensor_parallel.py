"""pages/topics/tensor_parallel.py: the tensor-parallel widget (an engine run driving a sharded
layer, sim/studies/sharded_layer.py, tested in tests/sim/studies) and the Table 1 chart."""
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pages.framework.widget import respond, run, to_json, validate
from pages.topics import tensor_parallel as page
from pages.views.vectors import short
from sim.perf.hardware import GiB, get_gpu, memory_profile
from sim.perf.models import MODELS, get_model, kv_bytes_per_token
from sim.studies.paper_table_1 import table_1_rows

W = page.WIDGETS[0]
SVG = "{http://www.w3.org/2000/svg}"
DOC = Path(__file__).resolve().parents[3] / "docs" / "tensor-parallelism.md"


def values(**raw):
    v, errors = validate(W, {k: str(x) for k, x in raw.items()})
    assert not errors, errors
    return page.normalise(v)


def frames(**raw):
    v, errors = validate(W, {k: str(x) for k, x in raw.items()})
    assert not errors, errors
    return run(W, v)


def texts(svg_text: str) -> str:
    root = ET.fromstring(svg_text)
    return re.sub(r"\s+", " ", " ".join("".join(t.itertext()) for t in root.iter(f"{SVG}text")))


def titles(svg_text: str) -> list[str]:
    return [t.text for t in ET.fromstring(svg_text).iter(f"{SVG}title")]


ALL_SPLITS = [(tp, kv) for tp in (1, 2, 4, 8) for kv in (1, 2, 4, 8)]


# ------------------------------------------------------------------- the story

def test_default_scenario_is_short_and_three_frames_per_engine_step():
    fr = frames()
    assert len(fr) == 13 < 20
    assert [f["phase"] for f in fr] == ["intro"] + ["broadcast", "attention", "mlp"] * 4


def test_the_docs_step_links_land_where_the_text_says():
    fr = frames()
    assert "allocates blocks 7 and 6 for A and block 5 for B" in fr[1]["narration"]
    assert "allocates physical block 7 for A (logical block 0), physical block 6 for A " \
           "(logical block 1), physical block 5 for B" in " ".join(fr[1]["details"])
    assert "broadcasts the block tables to both GPUs" in fr[1]["narration"]
    assert "A positions 0-5 into blocks 7, 6; B positions 0-2 into block 5" in fr[2]["narration"]
    assert "equals the one-GPU result" in fr[3]["narration"]
    assert "allocates block 4 for B" in fr[7]["narration"]
    assert "physical block 4 for B (logical block 1)" in " ".join(fr[7]["details"])
    assert "B position 4 into block 4 slot 0" in fr[8]["narration"]
    assert "rank 0 frees physical blocks 7, 6, 3, 5, 4" in fr[12]["narration"]
    # One name per step: the counter's, the picture's heading and the narration's.
    assert [f["label"] for f in fr] == ["start"] + [
        f"engine step {k}, {phase}" for k in (1, 2, 3, 4)
        for phase in ("schedule", "attention", "MLP")]
    for f in fr:
        assert ET.fromstring(f["svg"]).find(f"{SVG}text").text == f["label"]
        assert f["narration"].lower().startswith(f["label"].lower() + ":")
        assert len(re.split(r"(?<=[.!?])\s+(?=[A-Z])", f["narration"])) <= 3


def test_scenario_is_an_intro_then_three_phases_per_engine_step():
    trace = page.scenario(values(max_tokens=2))
    assert trace[0] == ("intro", None)
    phases = [phase for phase, _ in trace[1:]]
    assert phases == ["broadcast", "attention", "mlp"] * 2
    # The three phases of an engine step draw the same step record.
    assert trace[1][1] is trace[2][1] is trace[3][1]
    assert [st.step for _, st in trace[1::3]] == [0, 1]


def test_picture_shows_partials_the_all_reduce_and_the_check():
    fr = frames()
    _, st = page.scenario(values())[1]
    attention, mlp = texts(fr[2]["svg"]), texts(fr[3]["svg"])
    first = st.results[0]
    for a in first.sharded.attention:
        assert short(a.partial) in attention
    for m in first.sharded.mlp:
        assert short(m.partial) in mlp
    for r in st.results:
        assert short(r.sharded.attn_all_reduce) in attention
        assert short(r.sharded.mlp_all_reduce) in mlp
        assert short(r.sharded.output) + " = tp 1 ✓" in mlp
        assert short(r.unsharded.output) == short(r.sharded.output)
        # Every partial is in the details, one click away.
        for a in r.sharded.attention:
            assert short(a.partial) in " ".join(fr[2]["details"])
    assert "A all-reduce" in attention and "o_proj partials, A position 5" in attention
    assert "down_proj partials, A position 5" in mlp
    # A legend for every mark the frames use.
    assert "allocated this step" in texts(fr[1]["svg"])
    assert "K, V written this step" in attention and "request B" in attention


def test_broadcast_frame_shows_the_cache_before_the_writes_and_attention_after():
    fr = frames()
    broadcast, attention = fr[1]["svg"], fr[2]["svg"]
    assert not any("position" in t for t in titles(broadcast) if t and t.startswith("GPU"))
    tips = [t for t in titles(attention) if t and t.startswith("GPU 1, block 7")]
    assert tips == ["GPU 1, block 7: K and V of KV head 1 for slot 0: A position 0; slot 1: A "
                    "position 1; slot 2: A position 2; slot 3: A position 3"]


def test_replication_when_fewer_kv_heads_than_gpus():
    fr = frames(tp=4, kv_heads=2)
    assert "each KV head is replicated on 2 GPUs" in fr[0]["narration"]
    assert "each KV head is replicated on 2 GPUs" in texts(fr[0]["svg"])
    assert "a replicated KV head" in texts(fr[0]["svg"])
    assert ["GPU 0: query heads 0-1, KV head 0.", "GPU 1: query heads 2-3, KV head 0."] \
        == fr[0]["details"][1:3]
    assert "replicated" not in frames(tp=2, kv_heads=2)[0]["narration"]
    mqa = frames(tp=8, kv_heads=1)
    assert "replicated on 8 GPUs" in mqa[0]["narration"]


def test_one_gpu_has_no_broadcast_and_no_all_reduce():
    fr = frames(tp=1)
    assert "hands the block tables to its own model runner" in fr[1]["narration"]
    assert "no all-reduce is needed" in fr[2]["narration"]
    assert "A output" in texts(fr[2]["svg"])
    assert "reference" in fr[3]["narration"]
    assert "vs tp = 1" not in texts(fr[3]["svg"]) and "✓" not in texts(fr[3]["svg"])


# ------------------------------------------------------------------ memory line

@pytest.mark.parametrize("model_id", sorted(MODELS))
@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_memory_line_uses_vllms_formulas(model_id, tp):
    v = values(model=model_id, tp=tp)
    lines = " ".join(t for t, _ in page.memory_lines(v))
    model = get_model(model_id)
    per_gpu = kv_bytes_per_token(model, "fp16", tp)
    assert f"KV per token: {page.size_text(per_gpu)} per GPU" in lines
    assert f"{model.get_num_kv_heads(tp)}/{model.num_kv_heads} KV heads" in lines
    prof = memory_profile(model, get_gpu("a100-80gb"), 16, "fp16", tp_size=tp)
    if prof.num_gpu_blocks:
        assert f"{prof.num_gpu_blocks:,} blocks of 16 = {prof.num_token_slots:,} tokens" in lines
    else:
        assert "no room for a KV cache" in lines


def test_llama_2_70b_needs_more_than_one_80gb_gpu():
    assert "no room for a KV cache" in texts(frames(tp=1)[0]["svg"])
    shown = texts(frames(tp=4)[0]["svg"])
    assert "16/64 query heads, 2/8 KV heads" in shown
    assert "KV per token: 80 KiB per GPU (320 KiB for all heads)" in shown


# ----------------------------------------------------------------------- checks

@pytest.mark.parametrize("raw,field", [
    ({"tp": "3"}, "tp"), ({"kv_heads": "3"}, "kv_heads"), ({"model": "gpt-5"}, "model"),
    ({"gpu": "tpu"}, "gpu"), ({"max_tokens": "7"}, "max_tokens"), ({"seed": "-1"}, "seed"),
])
def test_fields_are_validated_with_their_label(raw, field):
    _, errors = validate(W, raw)
    label = next(p.label for p in W.params if p.name == field)
    assert errors[field].startswith(label + ":")


def test_every_split_of_the_toy_layer_is_allowed():
    for tp, kv in ALL_SPLITS:
        assert W.check(dict(W.defaults(), tp=str(tp), kv_heads=str(kv))) == {}


def test_respond_never_echoes_markup():
    answer = respond(W, {"model": "<img src=x>"})
    assert "errors" in answer and "<img" not in answer["errors"]["model"]


def test_frames_are_deterministic_and_drawn_with_the_palette():
    a, b = to_json(frames(tp=8, kv_heads=2)), to_json(frames(tp=8, kv_heads=2))
    assert a == b
    for f in frames(tp=4) + frames(tp=8, kv_heads=1):
        root = ET.fromstring(f["svg"])
        assert root.get("viewBox").startswith("0 0 400 ")
        assert all("var(--vsb-" in r.get("style") for r in root.iter(f"{SVG}rect"))
        # 11 px on a phone, where the picture is about 330 px wide.
        assert min(float(t.get("font-size")) for t in root.iter(f"{SVG}text")) >= 11 * 400 / 330


def test_largest_trace_stays_small():
    fr = frames(tp=8, max_tokens=6)
    assert len(fr) == 1 + 3 * 6
    assert len(to_json(fr)) < 1_500_000


# --------------------------------------------------------------- Table 1 chart

def test_table_1_chart_shows_the_recomputed_slots():
    shown = texts(page.CHARTS[0].render())
    assert "21 GiB / 2.25 MiB = 9,557 slots (-1.47% vs the paper)" in shown
    assert "264 GiB / 4.5 MiB = 60,074 slots (-0.04% vs the paper)" in shown


def test_numbers_in_the_docs_match_the_simulation():
    doc = DOC.read_text(encoding="utf-8")
    rows = {r.model: r for r in table_1_rows()}
    assert f"hold {rows['OPT-66B'].slots:,} tokens" in doc
    assert f"hold {rows['OPT-175B'].slots:,} tokens" in doc
    a100 = get_gpu("a100-80gb")
    model = get_model("llama-2-70b")
    assert f"about {round(model.weight_bytes('fp16') / GiB)} GiB" in doc
    for tp in (2, 4):
        kv = memory_profile(model, a100, 16, "fp16", tp_size=tp).kv_cache_bytes
        assert f"{kv / GiB:.1f} GiB" in doc
    assert memory_profile(model, a100, 16, "fp16", tp_size=1).num_gpu_blocks == 0
