"""The prefill vs decode page: its widget (pages/topics/prefill_decode.py), its build-time charts of
the H200 measurements, and the numbers its text quotes (docs/prefill-decode.md)."""

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from pages.topics import prefill_decode as pd
from pages.framework.widget import run, to_json, validate
from sim.perf.cost import (compare_with_measurements, decode_cost, decode_intensity_limit,
                           predict, prefill_cost)
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
    assert len(run(WIDGET, WIDGET.defaults())) == 13
    assert not pd.check(values(model="opt-13b", gpu="a100-40gb"))


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
        cells = [f"{r.measured_s * 1e3:.2f} ms", f"{r.predicted.predicted_s * 1e3:.2f} ms",
                 f"{r.ratio:.2f}x", r.predicted.bound]
        assert any(row[-4:] == cells for row in shown), (r, shown)
    for g in groups:
        assert g.find(f"{SVG_NS}title") is not None
    assert f"on {len(rows)} of {len(rows)} rows" in text


def test_roofline_chart_has_one_point_per_measured_row():
    root = parse(pd.measured_roofline_svg(DATA))
    tips = [el.find(f"{SVG_NS}title").text for el in root.iter()
            if el.tag in (f"{SVG_NS}circle", f"{SVG_NS}rect") and el.find(f"{SVG_NS}title") is not None]
    measured = [t for t in tips if "measured" in t and "achieved" in t]
    assert len(measured) == 24


def test_charts_are_registered_and_render():
    ids = {c.id for c in pd.CHARTS}
    assert ids == {"h200-roofline", "h200-prefill-table", "h200-decode-table"}
    for c in pd.CHARTS:
        parse(c.render())
        assert f"[[chart: {c.id}]]" in DOC


# ------------------------------------------------------------ the widget's trace

def test_default_trace_prefill_then_decodes():
    steps = pd.steps(WIDGET.defaults())
    out = run(WIDGET, WIDGET.defaults())
    assert len(out) == len(steps) == 1 + WIDGET.defaults()["decode_steps"] <= 20
    assert steps[0].cost.phase == "prefill" and steps[0].bound == "compute"
    assert all(s.cost.phase == "decode" and s.bound == "memory" for s in steps[1:])
    # The decode of step k reads the prompt and the k - 1 tokens generated before it.
    prompt = WIDGET.defaults()["prompt_len"]
    assert [s.cost.num_context_tokens for s in steps[1:]] == list(range(prompt, prompt + 12))
    model = get_model("llama-3-8b")
    roof = pd.roofline_for("h200-measured")
    assert steps[0] == predict(prefill_cost(model, prompt, "bf16"), roof)
    assert steps[3] == predict(decode_cost(model, [prompt + 2], "bf16"), roof)


def test_each_frame_draws_and_narrates_its_own_step():
    v = values(batch_size=64)
    steps = pd.steps(v)
    for i, (frame, t) in enumerate(zip(run(WIDGET, v), steps)):
        text = frame["narration"]
        assert text.startswith(f"Step {i + 1}, {t.cost.phase}")
        assert f"{t.bound.capitalize()}-bound" in text
        assert pd.ms_text(t.predicted_s) in text
        assert pd.intensity_text(t.cost.arithmetic_intensity) in text
        root = parse(frame["svg"])
        assert root.get("viewBox") == f"0 0 {pd.WIDTH} {root.get('viewBox').split()[3]}"
        texts = [el.text for el in root.iter(f"{SVG_NS}text")]
        assert f"{pd.intensity_text(t.cost.arithmetic_intensity)} FLOP/B" in " ".join(texts)
        assert pd.ms_text(t.predicted_s) in texts
        # Every point drawn on the chart carries a hover title naming its step, and one
        # point per step so far plus the highlighted current one.
        points = [el for el in root.iter() if el.tag == f"{SVG_NS}circle"
                  or (el.tag == f"{SVG_NS}rect" and "FLOP/B" in (_title(el) or ""))]
        assert all(_title(p) and _title(p).startswith("step ") for p in points)
        titles = [_title(p) for p in points]
        assert any(t.startswith(f"step {i + 1}:") for t in titles)


def _title(el):
    t = el.find(f"{SVG_NS}title")
    return t.text if t is not None else None


def test_the_bound_label_sits_on_the_longer_term():
    for v in (values(), values(batch_size=512, prompt_len=128)):
        for frame, t in zip(run(WIDGET, v), pd.steps(v)):
            texts = [el.text for el in parse(frame["svg"]).iter(f"{SVG_NS}text")]
            assert texts.count("bound") == 1
            row = max(k for k in range(texts.index("bound")) if texts[k] in ("compute", "memory"))
            longer = "compute" if t.compute_s >= t.memory_s else "memory"
            assert texts[row] == longer == t.bound
            assert texts[row + 1] == pd.ms_text(max(t.compute_s, t.memory_s))


def test_batching_moves_decode_toward_the_ridge():
    roof = pd.roofline_for("h200-measured")
    xs = [pd.steps(values(batch_size=b, decode_steps=1))[1].cost.arithmetic_intensity
          for b in (1, 4, 16, 64, 256)]
    assert xs == sorted(xs) and xs[-1] < roof.ridge_point
    # Short contexts and a big batch cross it, as the H200 measured (batch 512, ctx 128).
    step = pd.steps(values(batch_size=512, prompt_len=128, decode_steps=1))[1]
    assert step.bound == "compute"


def test_long_contexts_cap_decode_intensity_below_the_ridge():
    v = values(batch_size=256, prompt_len=2048)
    step = pd.steps(v)[1]
    limit = decode_intensity_limit(step.cost)
    assert step.cost.arithmetic_intensity < limit < step.roofline.ridge_point
    # The limit is what a huge batch tends to.
    huge = decode_cost(get_model("llama-3-8b"), [2048] * 100_000, "bf16")
    assert huge.arithmetic_intensity == pytest.approx(limit, rel=1e-3)
    assert "below the ridge point." in run(WIDGET, v)[1]["narration"]


def test_frames_are_deterministic_and_json_ready():
    a = to_json(run(WIDGET, WIDGET.defaults()))
    b = to_json(run(WIDGET, WIDGET.defaults()))
    assert a == b
    assert json.loads(a)[0]["svg"].startswith("<svg")


def test_largest_settings_still_build():
    v = values(batch_size=2048, prompt_len=128, decode_steps=40)
    assert not pd.check(v)
    out = run(WIDGET, v)
    assert len(out) == 41


# ------------------------------------------------------------ validation

def test_field_messages_name_the_field_and_the_range():
    _, errors = validate(WIDGET, {"batch_size": "0"})
    assert errors == {"batch_size": "batch size: a whole number from 1 to 2048"}
    _, errors = validate(WIDGET, {"prompt_len": "lots"})
    assert errors == {"prompt_len": "prompt length: a whole number from 1 to 8192"}
    _, errors = validate(WIDGET, {"gpu": "<script>"})
    assert errors["gpu"].startswith("GPU: one of H200, ceilings measured here")
    _, errors = validate(WIDGET, {"decode_steps": "41"})
    assert errors == {"decode_steps": "decode steps: a whole number from 1 to 40"}


def test_prompt_must_fit_the_models_context_window():
    _, errors = validate(WIDGET, {"model": "llama-2-7b", "prompt_len": "4090"})
    assert errors == {"prompt_len": "prompt length: Llama-2-7B's max_model_len is 4,096; with "
                                    "13 output tokens the prompt can have at most 4,083"}
    _, errors = validate(WIDGET, {"model": "llama-2-7b", "prompt_len": "4083"})
    assert not errors


def test_weights_must_fit_the_gpu():
    _, errors = validate(WIDGET, {"model": "llama-2-13b", "gpu": "l4"})
    assert set(errors) == {"gpu"}
    assert errors["gpu"].startswith("GPU: Llama-2-13B's weights (24.2 GiB) leave no room")


def test_batch_must_fit_the_kv_cache():
    raw = {"model": "opt-13b", "gpu": "a100-40gb", "batch_size": "29"}
    _, errors = validate(WIDGET, raw)
    # 512 + 12 tokens = 33 blocks of 16 per sequence; vLLM's sizing gives 929 blocks.
    assert errors == {"batch_size": "batch size: 29 sequences of 524 tokens need 957 KV blocks "
                                    "of 16; OPT-13B on the A100-SXM4-40GB has 929, so at most "
                                    "28 sequences"}
    _, errors = validate(WIDGET, dict(raw, batch_size="28"))
    assert not errors


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
    prefill, decode = d[0], d[1]
    # "Step 2 ... takes well over a third of the prefill's time"
    assert 0.35 < decode.predicted_s / prefill.predicted_s < 0.5
    assert prefill.cost.num_query_tokens == 512
    # "At batch 1 the KV cache read is tens of megabytes next to 15 GB of weights" (step 13)
    last = d[12].cost
    assert 10e6 < last.bytes_kv_read < 100e6 and round(last.bytes_weights / 1e9) == 15
    # "batch 64 ... moves about 50 times further right ... less than a third longer"
    b64 = pd.steps(values(batch_size=64, decode_steps=1))[1]
    assert 45 < b64.cost.arithmetic_intensity / decode.cost.arithmetic_intensity < 55
    assert b64.predicted_s / decode.predicted_s < 4 / 3
    # "Past a couple of hundred tokens the prefill is compute-bound"; 16 tokens: memory.
    bounds = {n: pd.steps(values(prompt_len=n, decode_steps=1))[0].bound
              for n in (16, 128, 256, 512)}
    assert bounds == {16: "memory", 128: "memory", 256: "compute", 512: "compute"}
    # Llama-3-8B, 2,048-token contexts: no batch reaches the ridge; Llama-2-7B (no GQA) has
    # a KV cache 4x larger per token and a limit more than 4x lower.
    l3 = decode_intensity_limit(decode_cost(get_model("llama-3-8b"), [2048], "bf16"))
    l2 = decode_intensity_limit(decode_cost(get_model("llama-2-7b"), [2048], "bf16"))
    assert l3 < decode.roofline.ridge_point and l3 / l2 > 4
    # The measured gap: short prefills about 3-4x; long prefills at about two thirds of the
    # roof; memory-bound decodes at 55-80% of the bandwidth; every decode within 2x.
    rows = compare_with_measurements(DATA)
    short = [r.ratio for r in rows if r.phase == "prefill" and r.tokens <= 128]
    assert 2.8 < min(short) and max(short) < 4
    long_ = [1 / r.ratio for r in rows if r.phase == "prefill" and r.tokens >= 1024]
    assert all(0.6 < x < 0.7 for x in long_)
    mem = [1 / r.ratio for r in rows if r.phase == "decode" and r.predicted.bound == "memory"]
    assert 0.55 <= min(mem) and max(mem) <= 0.82
    # "OPT-13B on an A100 40GB, batch 28: the largest batch whose KV cache fits"
    assert not pd.check(values(model="opt-13b", gpu="a100-40gb", batch_size=28))
    assert pd.check(values(model="opt-13b", gpu="a100-40gb", batch_size=29))
    # "Then try a batch of 128: the form says how many sequences fit"
    assert "batch_size" in pd.check(values(model="llama-2-7b", batch_size=128, prompt_len=2048))


def test_page_names_version_and_has_its_sections():
    assert "v0.5.5" in DOC
    for heading in ("## What to notice", "## In vLLM's code", "## Try this", "## From Python",
                    '!!! note "Where this picture simplifies"', '!!! info "V1 does it differently"'):
        assert heading in DOC
    assert '--8<-- "examples/prefill_decode.py"' in DOC
    assert "[[widget: prefill-decode]]" in DOC
    assert re.search(r"^description: .+", DOC, re.M)
