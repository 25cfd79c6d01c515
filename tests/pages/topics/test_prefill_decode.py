"""The prefill vs decode page: its widget (pages/topics/prefill_decode.py), its build-time charts of
the H200 measurements, and the numbers its text quotes (docs/prefill-decode.md)."""

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from pages.framework.widget import run, to_json, validate
from pages.topics import prefill_decode as pd
from sim.perf.cost import (
    compare_with_measurements,
    decode_compute_bound_batch,
    decode_cost,
    decode_intensity_limit,
    predict,
    prefill_cost,
)
from sim.perf.models import get_model

ROOT = Path(__file__).resolve().parents[3]
DATA = json.loads((ROOT / "data" / "h200-prefill-decode.json").read_text())
DOC = (ROOT / "docs" / "prefill-decode.md").read_text()
WIDGET = pd.WIDGETS[0]
SVG_NS = "{http://www.w3.org/2000/svg}"


def values(**changes):
    return dict(WIDGET.defaults(), **changes)


def frames(**changes):
    v, errors = validate(WIDGET, {k: str(x) for k, x in values(**changes).items()})
    assert not errors, errors
    return run(WIDGET, v)


def parse(svg_text: str) -> ET.Element:
    return ET.fromstring(svg_text)


# ------------------------------------------------------------ the measured data

def test_widget_ceilings_are_the_files_literally():
    # The worker gets no data/ files, so the widget carries the two measured ceilings as
    # literals: they must be the file's numbers exactly.
    assert pd.H200_MEASURED_PEAK_FLOPS == DATA["matmul_peak_flops"]
    assert pd.H200_MEASURED_BANDWIDTH == DATA["copy_bandwidth_bytes_per_s"]
    roof = pd.roofline_for("h200-measured")
    assert roof.peak_flops == DATA["matmul_peak_flops"]
    assert roof.memory_bandwidth == DATA["copy_bandwidth_bytes_per_s"]


def test_widget_never_reads_the_json(monkeypatch):
    def no_files():
        raise AssertionError("the widget must not read data/ (the browser has none)")

    monkeypatch.setattr(pd, "_load", no_files)
    monkeypatch.setattr(Path, "read_text", lambda *a, **k: no_files())
    assert len(run(WIDGET, WIDGET.defaults())) == 7
    assert not pd.check(values(model="opt-13b", gpu="a100-40gb", long_prompt=2000))


def test_measured_rows_cover_the_file_with_the_right_bound_and_decodes_within_2x():
    rows = pd.measured_rows(DATA)
    assert len(rows) == len(DATA["rows"]) == 24
    assert all(r.predicted.bound == r.measured_bound for r in rows)
    assert all(r.ratio < 2 for r in rows if r.phase == "decode")
    # Prefills first, each phase ordered by size.
    phases = [r.phase for r in rows]
    assert phases == sorted(phases, key=lambda p: p != "prefill")
    prefill = [r.ctx for r in rows if r.phase == "prefill"]
    assert prefill == sorted(prefill)


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_tables_show_every_row_with_its_ratio_and_bound(phase):
    text = pd.measured_table_svg(phase, DATA)
    root = parse(text)
    rows = [r for r in compare_with_measurements(DATA) if r.phase == phase]
    groups = root.findall(f"{SVG_NS}g")
    assert len(groups) == len(rows)
    shown = [[t.text for t in g.findall(f"{SVG_NS}text")] for g in groups]
    for r in rows:
        cells = [f"{r.measured_s * 1e3:.2f}", f"{r.predicted.predicted_s * 1e3:.2f}",
                 f"{r.ratio:.2f}x", r.predicted.bound]
        assert any(row[-4:] == cells for row in shown), (r, shown)
    for g in groups:
        assert g.find(f"{SVG_NS}title") is not None
    assert f"on {len(rows)} of {len(rows)} rows" in text
    assert "times in ms" in text


def test_roofline_chart_has_one_point_per_measured_row():
    root = parse(pd.measured_roofline_svg(DATA))
    tips = [el.find(f"{SVG_NS}title").text for el in root.iter()
            if el.tag in (f"{SVG_NS}circle", f"{SVG_NS}rect")
            and el.find(f"{SVG_NS}title") is not None]
    measured = [t for t in tips if "measured" in t and "achieved" in t]
    assert len(measured) == 24


def test_charts_are_registered_and_render():
    ids = {c.id for c in pd.CHARTS}
    assert ids == {"h200-roofline", "h200-prefill-table", "h200-decode-table"}
    for c in pd.CHARTS:
        parse(c.render())
        assert f"[[chart: {c.id}]]" in DOC


# ------------------------------------------------------------ the widget's trace

def sentences(text: str) -> list[str]:
    return re.split(r"(?<=[.!?])\s+(?=[A-Z])", text.strip())


def test_default_tour_teaches_one_thing_per_step():
    steps = pd.steps(WIDGET.defaults())
    assert [t.kind for t in steps] == ["prefill", "first", "batch", "batch", "batch",
                                       "crossover", "long"]
    assert [t.batch for t in steps] == [1, 1, 16, 64, 256, 1205, 435]
    assert [t.time.bound for t in steps] == ["compute"] + ["memory"] * 4 + ["compute",
                                                                           "memory"]
    assert [t.context for t in steps[1:]] == [512] * 5 + [2048]
    model, roof = get_model("llama-3-8b"), pd.roofline_for("h200-measured")
    assert steps[0].time == predict(prefill_cost(model, 512, "bf16"), roof)
    assert steps[3].time == predict(decode_cost(model, [512] * 64, "bf16"), roof)
    # No two steps are the same step: each one changes the batch or the context.
    assert len({(t.kind, t.batch, t.context) for t in steps}) == len(steps)
    # The crossover is the first compute-bound batch; the long step is as big as fits.
    assert decode_compute_bound_batch(model, roof, 512) == 1205
    assert predict(decode_cost(model, [512] * 1204, "bf16"), roof).bound == "memory"
    assert steps[-1].batch == steps[-1].fit == pd.kv_fit(WIDGET.defaults(), 2048)[0]


def test_each_frame_names_draws_and_narrates_its_own_step():
    v = WIDGET.defaults()
    steps = pd.steps(v)
    for frame, t in zip(run(WIDGET, v), steps):
        name = pd.label(t)
        assert frame["label"] == name
        text = frame["narration"]
        assert text.startswith(name[0].upper() + name[1:] + ":")
        assert len(sentences(text)) <= 3, text
        assert pd.ms_text(t.time.predicted_s) in text
        assert pd.intensity_text(t.cost.arithmetic_intensity) in text
        details = " ".join(frame["details"])
        assert f"{t.time.bound}-bound" in details
        assert pd.flop_text(t.cost.flops) in details and pd.byte_text(t.cost.bytes) in details
        root = parse(frame["svg"])
        assert root.get("viewBox").startswith(f"0 0 {pd.WIDTH} ")
        texts = [el.text for el in root.iter(f"{SVG_NS}text")]
        assert texts[0] == name                       # the picture's heading
        assert f"{pd.intensity_text(t.cost.arithmetic_intensity)} FLOP/B" in " ".join(texts)
        assert pd.ms_text(t.time.predicted_s) in texts
        # Every point drawn on the chart carries a hover title naming its step.
        points = [el for el in root.iter() if el.tag == f"{SVG_NS}circle"
                  or (el.tag == f"{SVG_NS}rect" and "FLOP/B" in (_title(el) or ""))]
        titles = [_title(p) for p in points if _title(p)]
        assert any(t.startswith(name + ":") for t in titles)
        # A legend names every mark.
        for word in ("prefill", "decode", "this step", "roofline", "ridge point"):
            assert word in texts


def test_text_reads_on_a_phone():
    # 11 px at the 330 px a phone gives the picture: 13.5 units in a 400-unit view.
    for v in (WIDGET.defaults(), values(model="opt-13b", gpu="a100-40gb", long_prompt=2000)):
        for frame in run(WIDGET, v):
            for el in parse(frame["svg"]).iter(f"{SVG_NS}text"):
                assert float(el.get("font-size")) >= pd.SMALL >= 11 * 400 / 330, el.text
    for c in pd.CHARTS:
        for el in parse(c.render()).iter(f"{SVG_NS}text"):
            assert float(el.get("font-size")) >= pd.SMALL, (c.id, el.text)


def _title(el):
    t = el.find(f"{SVG_NS}title")
    return t.text if t is not None else None


def test_the_bound_label_sits_on_the_longer_term():
    for v in (values(), values(prompt_len=128)):
        for frame, t in zip(run(WIDGET, v), pd.steps(v)):
            texts = [el.text for el in parse(frame["svg"]).iter(f"{SVG_NS}text")]
            assert texts.count("bound") == 1
            row = max(k for k in range(texts.index("bound")) if texts[k] in ("compute", "memory"))
            longer = "compute" if t.time.compute_s >= t.time.memory_s else "memory"
            assert texts[row] == longer == t.time.bound
            assert texts[row + 1] == pd.ms_text(max(t.time.compute_s, t.time.memory_s))


def test_batching_moves_decode_toward_the_ridge():
    steps = pd.steps(values())
    xs = [t.cost.arithmetic_intensity for t in steps[1:-1]]
    assert xs == sorted(xs) and xs[-2] < steps[0].time.roofline.ridge_point <= xs[-1]
    # Short contexts cross within max_num_seqs, as the H200 measured (batch 512, ctx 128).
    short = pd.steps(values(prompt_len=128))
    assert short[-2].kind == "crossover" and short[-2].batch == 244 <= pd.MAX_NUM_SEQS


def test_long_contexts_cap_decode_intensity_below_the_ridge():
    long_ = pd.steps(values())[-1]
    limit = decode_intensity_limit(long_.cost)
    assert long_.cost.arithmetic_intensity < limit < long_.time.roofline.ridge_point
    assert long_.crossover is None
    # The limit is what a huge batch tends to.
    huge = decode_cost(get_model("llama-3-8b"), [2048] * 100_000, "bf16")
    assert huge.arithmetic_intensity == pytest.approx(limit, rel=1e-3)
    assert "below the ridge" in run(WIDGET, values())[-1]["narration"]


def test_when_memory_caps_the_batch_the_tour_says_so():
    steps = pd.steps(values(model="opt-13b", gpu="a100-40gb", long_prompt=2000))
    assert [t.batch for t in steps] == [1, 1, 16, 28, 7]
    assert steps[3].kind == "never" and steps[3].batch == steps[3].fit
    words = run(WIDGET, values(model="opt-13b", gpu="a100-40gb", long_prompt=2000))
    assert "the most that fit in the KV cache" in words[3]["narration"]
    assert "only 7 such sequences fit" in words[4]["narration"]


def test_frames_are_deterministic_and_json_ready():
    a = to_json(run(WIDGET, WIDGET.defaults()))
    b = to_json(run(WIDGET, WIDGET.defaults()))
    assert a == b
    assert json.loads(a)[0]["svg"].startswith("<svg")


def test_extreme_settings_still_build():
    for raw in ({"prompt_len": 1, "long_prompt": 8191}, {"prompt_len": 8000, "long_prompt": 8191},
                {"gpu": "l4", "prompt_len": 16}):
        v = values(**raw)
        assert not pd.check(v), raw
        out = run(WIDGET, v)
        assert 3 <= len(out) <= 8


# ------------------------------------------------------------ validation

def test_field_messages_name_the_field_and_the_range():
    _, errors = validate(WIDGET, {"long_prompt": "1"})
    assert errors == {"long_prompt": "longer prompt: a whole number from 2 to 16384"}
    _, errors = validate(WIDGET, {"prompt_len": "lots"})
    assert errors == {"prompt_len": "prompt length: a whole number from 1 to 8192"}
    _, errors = validate(WIDGET, {"gpu": "<script>"})
    assert errors["gpu"].startswith("GPU: one of H200, ceilings measured here")
    _, errors = validate(WIDGET, {"prompt_len": "2048"})
    assert errors == {"long_prompt": "longer prompt: more than the prompt length "
                                     "(2,048 tokens)"}


def test_prompts_must_fit_the_models_context_window():
    _, errors = validate(WIDGET, {"model": "llama-2-7b", "long_prompt": "4096"})
    assert errors == {"long_prompt": "longer prompt: Llama-2-7B's max_model_len is 4,096; "
                                     "with the token the step adds, the prompt can have at "
                                     "most 4,095"}
    _, errors = validate(WIDGET, {"model": "llama-2-7b", "long_prompt": "4095"})
    assert not errors


def test_weights_must_fit_the_gpu():
    _, errors = validate(WIDGET, {"model": "llama-2-13b", "gpu": "l4"})
    assert set(errors) == {"gpu"}
    assert errors["gpu"].startswith("GPU: Llama-2-13B's weights (24.2 GiB) leave no room")


def test_one_long_sequence_must_fit_the_kv_cache():
    raw = {"model": "opt-13b", "gpu": "a100-40gb", "prompt_len": "16", "long_prompt": "2047"}
    assert not validate(WIDGET, raw)[1]
    # OPT-13B on an A100 40GB holds 929 blocks: 14,864 tokens. A sequence fits; check the
    # message with a GPU that holds less than one.
    _, errors = validate(WIDGET, {"model": "mistral-7b", "gpu": "l4", "long_prompt": "8191"})
    fits, per_seq, blocks = pd.kv_fit(values(model="mistral-7b", gpu="l4"), 8191)
    if fits:
        assert not errors
    else:
        assert errors == {"long_prompt": f"longer prompt: one sequence of 8,192 tokens needs "
                                         f"{per_seq:,} KV blocks of 16; Mistral-7B on the "
                                         f"L4 has {blocks:,}"}


def test_no_reader_text_reaches_the_picture():
    # Every field is a number or a choice, so validation stops any markup before build.
    _, errors = validate(WIDGET, {"model": '"><b>x</b>'})
    assert "model" in errors
    for p in WIDGET.params:
        assert p.kind in ("int", "choice")


# ------------------------------------------------------------ the page's text

def test_try_this_and_notice_permalinks_are_valid_settings():
    links = re.findall(r"\]\(#(prefill-decode\.[^)]*)\)", DOC)
    assert len(links) >= 8
    n_frames = len(run(WIDGET, WIDGET.defaults()))
    for link in links:
        raw = {k.split(".", 1)[1]: v for k, v in parse_qsl(link, keep_blank_values=True)}
        step = raw.pop("step", None)
        vals, errors = validate(WIDGET, raw)
        assert not errors, (link, errors)
        if step is not None:
            assert 1 <= int(step) <= len(run(WIDGET, vals)) and int(step) <= n_frames


def test_numbers_the_text_quotes():
    d = pd.steps(WIDGET.defaults())
    prefill, decode = d[0].time, d[1].time
    # "Step 2 ... takes 40% of the prefill's time"
    assert round(decode.predicted_s / prefill.predicted_s * 100) == 40
    assert prefill.cost.num_query_tokens == 512
    # "Step 3: 3.92 ms instead of 3.68 ms for 16 times the tokens"
    assert (pd.ms_text(d[2].time.predicted_s), pd.ms_text(decode.predicted_s)) == \
        ("3.92 ms", "3.68 ms")
    # "Step 5: batch 256 ... the KV cache now half of the bytes"
    assert d[4].batch == 256 and 45 < pd.kv_share(d[4]) < 55
    # "Step 6: batch 1,205 ... about 51,000 tokens per second"
    assert d[5].batch == 1205 and 50_000 < pd.tokens_per_s(d[5]) < 52_000
    # "Step 7: only 435 fit, KV reads are 89% of the bytes"
    assert d[6].batch == 435 and round(pd.kv_share(d[6])) == 89
    # "limit 227 ... with 2,048-token contexts it is 60"
    assert round(decode_intensity_limit(d[1].cost)) == 227
    assert round(decode_intensity_limit(d[6].cost)) == 60
    # "Past a couple of hundred tokens the prefill is compute-bound"; 16 tokens: memory.
    bounds = {n: pd.steps(values(prompt_len=n))[0].time.bound for n in (16, 128, 256, 512)}
    assert bounds == {16: "memory", 128: "memory", 256: "compute", 512: "compute"}
    # Llama-3-8B, 2,048-token contexts: no batch reaches the ridge; Llama-2-7B (no GQA) has
    # a KV cache 4x larger per token and a limit more than 4x lower.
    l3 = decode_intensity_limit(decode_cost(get_model("llama-3-8b"), [2048], "bf16"))
    l2 = decode_intensity_limit(decode_cost(get_model("llama-2-7b"), [2048], "bf16"))
    assert l3 < decode.roofline.ridge_point and l3 / l2 > 4
    # Try this: 128-token prompts cross at 244; Llama-2-7B never crosses and holds 437;
    # OPT-13B on an A100 40GB holds 28; an L4's ridge is twice the H200's, 64 fit.
    assert pd.steps(values(prompt_len=128))[-2].batch == 244
    l2_steps = pd.steps(values(model="llama-2-7b"))
    assert l2_steps[-2].kind == "never" and l2_steps[-2].batch == 437
    assert pd.steps(values(model="opt-13b", gpu="a100-40gb", long_prompt=2000))[-2].batch == 28
    l4 = pd.steps(values(gpu="l4"))
    assert l4[-2].batch == 64
    assert 2 < l4[0].time.roofline.ridge_point / decode.roofline.ridge_point < 2.2
    # The measured gap: short prefills about 3-4x; long prefills at about two thirds of the
    # roof; memory-bound decodes at 55-80% of the bandwidth; every decode within 2x.
    rows = compare_with_measurements(DATA)
    short = [r.ratio for r in rows if r.phase == "prefill" and r.tokens <= 128]
    assert 2.8 < min(short) and max(short) < 4
    long_ = [1 / r.ratio for r in rows if r.phase == "prefill" and r.tokens >= 1024]
    assert all(0.6 < x < 0.7 for x in long_)
    mem = [1 / r.ratio for r in rows if r.phase == "decode" and r.predicted.bound == "memory"]
    assert 0.55 <= min(mem) and max(mem) <= 0.82


def test_page_names_version_and_has_its_sections():
    assert "v0.5.5" in DOC
    for heading in ("## What to notice", "## In vLLM's code", "## Try this", "## From Python",
                    '!!! note "Where this picture simplifies"',
                    '!!! info "V1 does it differently"'):
        assert heading in DOC
    assert '--8<-- "examples/prefill_decode.py"' in DOC
    assert "[[widget: prefill-decode]]" in DOC
    assert re.search(r"^description: .+", DOC, re.M)
