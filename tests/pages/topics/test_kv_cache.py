"""pages/topics/kv_cache.py: the growth widget, the cost calculator and the KV-vs-length chart."""
import re
import xml.etree.ElementTree as ET

import pytest

from pages.framework.widget import respond, run, to_json, validate
from pages.topics import kv_cache as page
from sim.perf.hardware import GiB, get_gpu, memory_profile
from sim.perf.models import get_model, kv_bytes_per_token
from sim.studies.kv_growth import generate

GROWTH, COST = page.GROWTH, page.COST


def cost(**raw):
    values, errors = validate(COST, {k: str(v) for k, v in raw.items()})
    assert not errors, errors
    return run(COST, values)[0], page.cost_numbers(values)


def texts(svg_text: str) -> str:
    """The picture's visible text, joined, wrapped lines undone (entities decoded by the
    XML parser)."""
    root = ET.fromstring(svg_text)
    joined = " ".join("".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text"))
    return re.sub(r"\s+", " ", joined)


def titles(svg_text: str) -> list[str]:
    root = ET.fromstring(svg_text)
    return [t.text for t in root.iter("{http://www.w3.org/2000/svg}title")]


# ------------------------------------------------------------------- the calculator

def test_opt_13b_costs_800_kib_per_token_with_the_formula_substituted():
    frame, n = cost()
    assert n["per_token"] == 819_200 == kv_bytes_per_token(get_model("opt-13b"), "fp16")
    shown = texts(frame["svg"])
    assert "= 2 × 40 × 40 × 128 × 2" in shown
    assert "= 819,200 B = 800 KiB" in shown
    assert "No GQA" in shown
    assert "800 KiB per token" in frame["narration"]


def test_12_gib_gives_the_papers_15_7k_slots_and_says_what_it_assumed():
    frame, n = cost()
    assert n["paper_slots"] == 15_728 == 12 * GiB // 819_200
    shown = texts(frame["svg"])
    assert "12 GiB / 800 KiB = 15,728 slots (15.7K)" in shown
    assert "assumed fp16 and 12 GB left for KV beside 26 GB of weights" in shown
    assert "binary" in shown
    # Only on OPT-13B.
    assert "Table 1" not in texts(cost(model="llama-2-7b")[0]["svg"])


def test_blocks_and_slots_come_from_vllms_formula():
    frame, n = cost(utilization=0.8, seq_len=1000, batch=3)
    p = memory_profile(get_model("opt-13b"), get_gpu("a100-40gb"), 16, "fp16", 0.8)
    assert n["profile"] == p
    shown = texts(frame["svg"])
    assert f"= {p.num_gpu_blocks:,} blocks of 16 tokens" in shown
    assert f"= {p.num_token_slots:,} token slots" in shown
    assert n["blocks_per_seq"] == 63 and n["seqs_fit"] == p.num_gpu_blocks // 63
    assert "The batch of 3 takes 189 blocks: it fits" in shown
    assert f"{p.num_gpu_blocks:,} blocks" in frame["narration"]
    assert len(re.split(r"(?<=[.!?])\s+(?=[A-Z])", frame["narration"])) <= 3
    assert f"= {p.num_gpu_blocks:,} blocks of 16 tokens" in " ".join(frame["details"])
    for t in ET.fromstring(frame["svg"]).iter("{http://www.w3.org/2000/svg}text"):
        assert float(t.get("font-size")) >= 11 * page.COST_WIDTH / 330


def test_per_sequence_and_per_batch_bytes():
    frame, n = cost(seq_len=2048, batch=8)
    assert n["per_seq"] == 2048 * 819_200 and n["per_batch"] == 8 * n["per_seq"]
    shown = texts(frame["svg"])
    assert "2,048 tokens × 800 KiB = 1.56 GiB" in shown and "batch of 8: 12.5 GiB" in shown
    assert "it does not fit" in shown


def test_gqa_is_explained_for_llama_2_70b():
    frame, n = cost(model="llama-2-70b", tp=8, gpu="a100-80gb")
    assert n["kv_heads"] == 1 and n["per_token"] == 40 * 1024
    shown = texts(frame["svg"])
    assert "GQA: 64 query heads share 8 KV heads (8 per group)" in shown
    assert "8× more" in shown
    assert "× 1 KV head (8 / 8 GPUs)" in shown
    assert "one GPU's share" in shown


def test_fp8_cache_halves_the_bytes():
    _, n16 = cost()
    _, n8 = cost(kv_dtype="fp8")
    assert n8["per_token"] * 2 == n16["per_token"]
    assert n8["profile"].num_gpu_blocks > 1.9 * n16["profile"].num_gpu_blocks


def test_vllms_start_up_error_is_shown_when_nothing_fits():
    frame, n = cost(model="opt-175b")
    assert n["profile"].num_gpu_blocks == 0
    assert "No available memory for the cache blocks" in texts(frame["svg"])
    assert "would not start" in frame["narration"]


def test_cost_validation_messages():
    _, errors = validate(COST, {"seq_len": "5000"})
    assert errors == {"seq_len": "sequence length: at most 2,048, OPT-13B's max_model_len"}
    _, errors = validate(COST, {"utilization": "1.5", "batch": "0", "model": "gpt-5"})
    assert errors["utilization"] == "gpu_memory_utilization: a number from 0.5 to 1"
    assert errors["batch"] == "batch: a whole number from 1 to 1024"
    assert errors["model"].startswith("model: one of OPT-13B, ")
    assert validate(COST, {"model": "mistral-7b", "seq_len": "32768"})[1] == {}


def test_every_preset_builds_on_every_gpu():
    for model in ("opt-13b", "opt-66b", "opt-175b", "llama-2-7b", "llama-2-13b",
                  "llama-2-70b", "llama-3-8b", "llama-3-70b", "mistral-7b"):
        for gpu in ("a100-40gb", "h200", "l4"):
            for tp in ("1", "8"):
                answer = respond(COST, {"model": model, "gpu": gpu, "tp": tp, "seq_len": "100"})
                assert "frames" in answer, answer
                ET.fromstring(answer["frames"][0]["svg"])


# -------------------------------------------------------------------- the growth widget

def test_growth_has_one_frame_per_step_plus_the_empty_cache():
    frames = run(GROWTH, GROWTH.defaults())
    v = GROWTH.defaults()
    assert len(frames) == v["new_tokens"] + 1 <= 20
    assert "The KV cache is empty." in frames[0]["details"]
    assert frames[0]["narration"].startswith("Start: a 4-token prompt arrives")
    assert "The model is tiny: 2 layers, 4 query heads sharing 2 KV heads" \
        in frames[0]["narration"]
    assert frames[1]["narration"].startswith("Prefill: the 4 prompt tokens")
    assert frames[2]["narration"].startswith("Decode step 1: token 4")
    # One name for each step: the counter's, the picture's heading and the narration's.
    labels = [f["label"] for f in frames]
    assert labels[:3] == ["start", "prefill", "decode step 1"]
    assert labels[-1] == f"decode step {v['new_tokens'] - 1}"
    for f in frames:
        heading = ET.fromstring(f["svg"]).find("{http://www.w3.org/2000/svg}text").text
        assert heading == f["label"]
        assert f["narration"].lower().startswith(f["label"])
        assert len(re.split(r"(?<=[.!?])\s+(?=[A-Z])", f["narration"])) <= 3


def test_growth_text_reads_on_a_phone_and_every_mark_has_a_legend():
    small = 11 * page.GROWTH_WIDTH / 330
    for v in (GROWTH.defaults(), dict(GROWTH.defaults(), prompt_len=12, new_tokens=16,
                                      layers=4, kv_heads=4)):
        for f in run(GROWTH, v):
            root = ET.fromstring(f["svg"])
            assert root.get("viewBox").startswith(f"0 0 {page.GROWTH_WIDTH} ")
            sizes = [float(t.get("font-size")) for t in root.iter("{http://www.w3.org/2000/svg}text")]
            assert min(sizes) >= small
            shown = texts(f["svg"])
            for word in ("K (key)", "V (value)", "written this step", "token cached",
                         "sampled, no K and V yet", "not fed yet", "with the KV cache",
                         "recomputing the prefix"):
                assert word in shown
    for t in ET.fromstring(page.render_kv_vs_length()).iter("{http://www.w3.org/2000/svg}text"):
        assert float(t.get("font-size")) >= 11 * page.WIDTH / 330


def test_growth_trace_is_the_empty_cache_then_the_generation():
    v = GROWTH.defaults()
    trace = page.growth_scenario(v)
    assert trace[0] is None
    assert trace[1:] == generate(page.growth_model(v), v["prompt_len"], v["new_tokens"],
                                 v["dtype"])
    ctx = page.growth_context(v, trace)
    assert ctx.positions == 16 and ctx.ymax == trace[-1].recompute.flops_attention
    # Every frame has the same height: the token row and the cache rows do not grow.
    heights = {page.growth_view(s, ctx).height for s in trace}
    assert len(heights) == 1


def test_cost_is_a_one_step_trace():
    v = COST.defaults()
    assert page.cost_scenario(v) == [page.cost_numbers(v)]


def test_growth_narration_comes_from_the_steps_numbers():
    v = GROWTH.defaults()
    steps = generate(page.growth_model(v), v["prompt_len"], v["new_tokens"], v["dtype"])
    frames = run(GROWTH, v)
    for s, f in zip(steps, frames[1:]):
        text, details = f["narration"], " ".join(f["details"])
        assert f"{s.bytes_appended:,} bytes" in text
        assert f"{s.bytes_appended:,} bytes in fp16" in details
        assert f"Sampled: token {s.sampled_position}" in details
        assert f"{s.with_cache.flops_attention:,} attention FLOPs" in details
        assert f"{s.recompute.flops_attention:,} attention FLOPs" in details
        if s.phase == "prefill":
            assert f"samples token {s.sampled_position}" in text
        else:
            assert f"token {s.first_pos}, sampled in the step before" in text
            assert f"{s.pairs_with_cache} pairs per head and layer" in text
            assert f"{s.pairs_recompute} pairs" in text
            assert f"rerun all {s.cached_after} tokens" in text


def test_growth_picture_draws_each_layer_and_kv_head_and_the_chart_grows():
    v = dict(GROWTH.defaults(), layers=3, kv_heads=2, prompt_len=3, new_tokens=4)
    frames = run(GROWTH, v)
    for i, f in enumerate(frames):
        tips = titles(f["svg"])
        rows = [t for t in tips if re.match(r"layer \d, KV head \d, [KV]:", t)]
        assert len(rows) == 3 * 2 * 2
        cached = 0 if i == 0 else 3 + (i - 1)
        assert all((f"tokens 0-{cached - 1} cached" in t) if cached else t.endswith("empty")
                   for t in rows)
        # One chart point per series per step so far.
        assert sum(t.startswith(("prefill:", "decode step")) for t in tips) == 2 * i
    assert "just sampled" in " ".join(titles(frames[2]["svg"]))


def test_gqa_narration():
    one = run(GROWTH, dict(GROWTH.defaults(), group=1))[0]["narration"]
    four = run(GROWTH, dict(GROWTH.defaults(), group=4))[0]["narration"]
    assert "2 heads, each with its own K and V" in one
    assert "8 query heads sharing 2 KV heads" in four
    details = run(GROWTH, dict(GROWTH.defaults(), group=4))[0]["details"]
    assert "8 query heads share 2 KV heads (4 per KV head: grouped-query attention)" \
        in " ".join(details)


def test_growth_validation_messages():
    _, errors = validate(GROWTH, {"layers": "9", "head_size": "<b>", "dtype": "int4"})
    assert errors == {"layers": "layers: a whole number from 1 to 4",
                      "head_size": "head size: a whole number from 1 to 256",
                      "dtype": "dtype: one of fp16 (2 bytes), fp32 (4 bytes), fp8 (1 byte)"}


def test_largest_growth_trace_stays_small():
    v = dict(prompt_len=12, new_tokens=16, layers=4, kv_heads=4, group=4, head_size=256,
             dtype="fp32")
    text = to_json(run(GROWTH, v))
    assert len(text) < 2_500_000
    for f in run(GROWTH, v):
        ET.fromstring(f["svg"])


def test_frames_are_deterministic():
    for w in (GROWTH, COST):
        assert to_json(run(w, w.defaults())) == to_json(run(w, w.defaults()))


# ---------------------------------------------------------------------------- the chart

def test_kv_vs_length_chart():
    out = page.render_kv_vs_length()
    ET.fromstring(out)
    shown = texts(out)
    for name in ("OPT-175B (4.5 MiB/token)", "OPT-13B (800 KiB/token)",
                 "Llama-2-70B (320 KiB/token)", "Llama-3-8B (128 KiB/token)"):
        assert name in shown
    assert "12 GiB = 15,728 OPT-13B tokens" in shown
    tips = titles(out)
    assert "OPT-13B, 2,048 tokens: 1.56 GiB" in tips
    # Each line stops at the model's max_model_len.
    assert not any(t.startswith("OPT-13B, 4,096") for t in tips)
    assert "Llama-3-8B, 8,192 tokens: 1 GiB" in tips


@pytest.mark.parametrize("n, text", [(819_200, "800 KiB"), (13_107_200, "12.5 MiB"),
                                     (512, "512 B"), (12 * GiB, "12 GiB")])
def test_fmt_bytes(n, text):
    assert page.fmt_bytes(n) == text


# ------------------------------------------------- the calculator on today's models (V1)

def test_gpt_oss_120b_on_an_h200_shows_v1s_hybrid_numbers():
    """sim/perf/kv_capacity.py's numbers, drawn: 36 KiB per token in each layer type,
    1,857,181 tokens of 131,072-token requests with the hybrid manager, 987,648 without
    (tests/sim/perf/test_kv_capacity.py derives both by hand)."""
    frame, n = cost(model="gpt-oss-120b", gpu="h200", dtype="bf16", utilization=0.92,
                    seq_len=131072)
    shown = texts(frame["svg"])
    assert n["engine"] == "v1"
    assert "full attention: 2 × 18 layers × 8 KV heads × 64 × 2 B = 36 KiB" in shown
    assert "sliding window (128 tokens)" in shown and "only for the last 128 tokens" in shown
    assert "GPU KV cache size: 1,857,181 tokens" in shown
    assert "987,648 tokens" in shown
    assert "2 KV cache groups of 18 layers (1 full attention, 1 sliding window)" in shown
    assert "1,857,181 tokens" in frame["narration"] and "987,648" in frame["narration"]
    assert any("--disable-hybrid-kv-cache-manager" in d for d in frame["details"])


def test_gemma_3_and_deepseek_v3_and_a_refusal():
    frame, n = cost(model="gemma-3-27b", gpu="h200", dtype="bf16", utilization=0.92,
                    seq_len=131072)
    shown = texts(frame["svg"])
    assert "GPU KV cache size: 714,777 tokens" in shown and "164,000 tokens" in shown
    assert "7 KV cache groups of 10 layers (1 full attention, 6 sliding window)" in shown
    frame, n = cost(model="deepseek-v3", gpu="h200", tp=8, dtype="bf16", utilization=0.92,
                    seq_len=131072)
    shown = texts(frame["svg"])
    assert "MLA latent: 61 layers × (512 + 64) × 2 B = 68.62 KiB" in shown
    assert "GPU KV cache size: 771,648 tokens" in shown
    assert "Every layer as full attention" not in shown       # one type: nothing to compare
    frame, n = cost(model="llama-3.1-70b", gpu="h200", dtype="bf16")
    assert "vLLM refuses to start" in texts(frame["svg"])
    assert "would not start" in frame["narration"]


def test_every_recent_preset_builds_on_h100_h200_b200():
    for model in ("gpt-oss-20b", "gpt-oss-120b", "gemma-3-27b", "llama-3.1-8b", "llama-3.1-70b",
                  "qwen3-32b", "qwen3-30b-a3b", "deepseek-v3"):
        for gpu in ("h100-80gb", "h200", "b200"):
            for tp, kv in (("1", "auto"), ("8", "fp8")):
                answer = respond(COST, {"model": model, "gpu": gpu, "tp": tp, "kv_dtype": kv,
                                        "seq_len": "4096"})
                assert "frames" in answer, answer
                root = ET.fromstring(answer["frames"][0]["svg"])
                keys = [e.get("data-k") for e in root.iter() if e.get("data-k")]
                assert len(keys) == len(set(keys))
