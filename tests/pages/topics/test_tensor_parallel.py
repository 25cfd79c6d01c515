"""pages/topics/tensor_parallel.py: the tensor-parallel widget (an engine run driving a sharded
layer) and the Table 1 chart."""
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from pages.topics import tensor_parallel as page
from pages.framework.widget import respond, run, to_json, validate
from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.perf.hardware import GiB, get_gpu, memory_profile
from sim.perf.models import MODELS, get_model, kv_bytes_per_token
from sim.core.sequence import SamplingParams
from sim.perf.tensor_parallel import partition_heads

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
    assert "allocates physical block 7 for A (logical block 0), physical block 6 for A " \
           "(logical block 1), physical block 5 for B" in fr[1]["narration"]
    assert "broadcasts the block tables to both GPUs" in fr[1]["narration"]
    assert "A positions 0-5 into blocks 7, 6; B positions 0-2 into block 5" in fr[2]["narration"]
    assert "equals the one-GPU result" in fr[3]["narration"]
    assert "physical block 4 for B (logical block 1)" in fr[7]["narration"]
    assert "B position 4 into block 4 slot 0" in fr[8]["narration"]
    assert "rank 0 frees physical blocks 7, 6, 3, 5, 4" in fr[12]["narration"]


def test_block_tables_are_the_engines_own():
    """The tables rank 0 broadcast are what the engine's BlockSpaceManager holds."""
    v = values(max_tokens=5)
    steps = page.run_scenario(v)["steps"]
    engine = LLMEngine(CacheConfig(block_size=page.BLOCK_SIZE,
                                   num_gpu_blocks=page.NUM_GPU_BLOCKS, num_cpu_blocks=0,
                                   watermark=0.0), SchedulerConfig(), seed=v["seed"])
    for rid, prompt in page.REQUESTS:
        engine.add_request(rid, prompt, SamplingParams(max_tokens=5))
    for st in steps:
        engine.step()
        assert st["free_after"] == engine.block_manager.get_num_free_gpu_blocks()
        for group in engine.requests.values():
            seq = group.get_seqs()[0]
            if seq.seq_id in engine.block_manager.block_tables:
                assert tuple(engine.block_manager.get_block_table(seq)) == \
                    st["broadcast"][group.request_id]
    assert not engine.has_unfinished_requests()


@pytest.mark.parametrize("tp,kv", ALL_SPLITS)
def test_every_rank_writes_the_same_block_and_slot_and_sharded_equals_unsharded(tp, kv):
    run_ = page.run_scenario(values(tp=tp, kv_heads=kv, max_tokens=3))
    for st in run_["steps"]:
        for rid, pos, trace, ref in st["rows"]:
            table = st["broadcast"][rid]
            slot = (table[pos // page.BLOCK_SIZE], pos % page.BLOCK_SIZE)
            assert {a.kv_slot for a in trace.attention} == {slot}
            assert len(trace.attention) == tp
            # The all-reduces are the sums of the partials.
            np.testing.assert_allclose(trace.attn_all_reduce,
                                       np.sum([a.partial for a in trace.attention], axis=0))
            np.testing.assert_allclose(trace.mlp_all_reduce,
                                       np.sum([m.partial for m in trace.mlp], axis=0))
            np.testing.assert_allclose(trace.output, ref.output, rtol=1e-12, atol=1e-12)
    # Each rank's cache holds its own KV heads' slice of the one-GPU cache, block for block.
    single = run_["single"].workers[0]
    for worker, part in zip(run_["sharded"].workers, partition_heads(8, kv, tp)):
        for b in range(page.NUM_GPU_BLOCKS):
            for local, head in enumerate(part.kv_heads):
                np.testing.assert_allclose(worker.key_cache[b][local],
                                           single.key_cache[b][head], atol=1e-12)
                np.testing.assert_allclose(worker.value_cache[b][local],
                                           single.value_cache[b][head], atol=1e-12)


def test_picture_shows_partials_the_all_reduce_and_the_check():
    fr = frames()
    st = page.run_scenario(values())["steps"][0]
    attention, mlp = texts(fr[2]["svg"]), texts(fr[3]["svg"])
    for rid, pos, trace, ref in st["rows"]:
        for a in trace.attention:
            assert page.short(a.partial) in attention
        assert page.short(trace.attn_all_reduce) in attention
        for m in trace.mlp:
            assert page.short(m.partial) in mlp
        assert page.short(trace.mlp_all_reduce) in mlp
        assert page.short(ref.output) + " ✓" in mlp
    assert "all-reduce" in attention and "o_proj partial outputs" in attention
    assert "down_proj partial outputs" in mlp


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
    assert "GPU 0: query heads 0-1, KV head 0; GPU 1: query heads 2-3, KV head 0" \
        in fr[0]["narration"]
    assert "replicated" not in frames(tp=2, kv_heads=2)[0]["narration"]
    mqa = frames(tp=8, kv_heads=1)
    assert "replicated on 8 GPUs" in mqa[0]["narration"]


def test_one_gpu_has_no_broadcast_and_no_all_reduce():
    fr = frames(tp=1)
    assert "hands the block tables to its own model runner" in fr[1]["narration"]
    assert "no all-reduce is needed" in fr[2]["narration"]
    assert "reference" in fr[3]["narration"]
    assert "tp = 1" not in texts(fr[3]["svg"])


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
    for f in frames(tp=4):
        root = ET.fromstring(f["svg"])
        assert root.get("viewBox").startswith("0 0 400 ")
        assert all("var(--vsb-" in r.get("style") for r in root.iter(f"{SVG}rect"))


def test_largest_trace_stays_small():
    fr = frames(tp=8, max_tokens=6)
    assert len(fr) == 1 + 3 * 6
    assert len(to_json(fr)) < 1_500_000


# --------------------------------------------------------------- Table 1 chart

def test_table_1_slots_from_the_papers_kv_space():
    rows = {r["model"]: r for r in page.table_1_rows()}
    assert rows["OPT-13B"]["slots"] == 15_728 == 12 * GiB // 819_200
    assert rows["OPT-66B"]["slots"] == 9_557
    assert rows["OPT-175B"]["slots"] == 60_074
    assert rows["OPT-66B"]["per_gpu"] == 589_824 == rows["OPT-175B"]["per_gpu"]
    shown = texts(page.CHARTS[0].render())
    assert "21 GiB / 2.25 MiB = 9,557 slots (-1.47% vs the paper)" in shown
    assert "264 GiB / 4.5 MiB = 60,074 slots (-0.04% vs the paper)" in shown


def test_numbers_in_the_docs_match_the_simulation():
    doc = DOC.read_text(encoding="utf-8")
    rows = {r["model"]: r for r in page.table_1_rows()}
    assert f"hold {rows['OPT-66B']['slots']:,} tokens" in doc
    assert f"hold {rows['OPT-175B']['slots']:,} tokens" in doc
    a100 = get_gpu("a100-80gb")
    model = get_model("llama-2-70b")
    assert f"about {round(model.weight_bytes('fp16') / GiB)} GiB" in doc
    for tp in (2, 4):
        kv = memory_profile(model, a100, 16, "fp16", tp_size=tp).kv_cache_bytes
        assert f"{kv / GiB:.1f} GiB" in doc
    assert memory_profile(model, a100, 16, "fp16", tp_size=1).num_gpu_blocks == 0
