"""pages/topics/hybrid_models/: the hybrid-models widget (the design doc's example run by
sim/v1) and the tokens-that-fit chart."""
import re
import xml.etree.ElementTree as ET

from pages.framework.widget import respond, run, validate
from pages.topics import hybrid_models as page
from pages.topics.hybrid_models.scenario import engine_for
from pages.topics.hybrid_models.state import tables
from sim.v1.invariants import check_engine

WIDGET = page.WIDGETS[0]
SVG = "{http://www.w3.org/2000/svg}"


def frames(**raw):
    values, errors = validate(WIDGET, {k: str(v) for k, v in raw.items()})
    assert not errors, errors
    return run(WIDGET, values)


def texts(svg_text: str) -> str:
    root = ET.fromstring(svg_text)
    return re.sub(r"\s+", " ", " ".join("".join(t.itertext()) for t in root.iter(f"{SVG}text")))


def keys(svg_text: str) -> list[str]:
    return [e.get("data-k") for e in ET.fromstring(svg_text).iter() if e.get("data-k")]


def test_the_default_run_is_the_design_docs_example():
    """What the page's "What to notice" says, step by step."""
    f = frames()
    assert len(f) == 13                       # start + 12 engine steps
    assert "one new block in each group (1, 2 and 3)" in f[1]["narration"]
    assert "Blocks 2 and 3 now hold only tokens before the 32-token window" in f[4]["narration"]
    assert "Reusing block 2 evicts its cached hash" in f[6]["narration"]
    assert "Reusing blocks 3, 5 and 6 evicts" in f[7]["narration"]
    assert "A finishes" in f[10]["narration"]
    assert f[11]["narration"].startswith("B reuses 96 cached tokens: full attention: 6 blocks; "
                                         "sliding window 1: 2 blocks (the first 4 outside its "
                                         "window: null)")
    trace = page.scenario(WIDGET.defaults())
    assert tables(trace[8].snapshot, "A") == [[1, 4, 7, 10, 13, 16, 3, 8],
                                              [0, 0, 0, 0, 0, 17, 5, 9],
                                              [0, 0, 0, 0, 0, 2, 6, 11]]
    assert tables(trace[11].snapshot, "B") == [[1, 4, 7, 10, 13, 16, 11],
                                               [0, 0, 0, 0, 14, 17, 9],
                                               [0, 0, 0, 0, 15, 2, 8]]


def test_every_step_keeps_the_engine_invariants():
    engine = engine_for(WIDGET.defaults())
    while engine.has_unfinished_requests():
        engine.step()
        assert check_engine(engine) == []


def test_the_picture_marks_what_changed_and_keys_are_unique_and_stable():
    f = frames()
    step4 = f[4]["svg"]
    shown = texts(step4)
    assert "A: 64 of 112 tokens computed" in shown
    assert "free queue, head first: 13 14 15 16 17 2 3" in shown
    all_keys = [keys(frame["svg"]) for frame in f]
    for ks in all_keys:
        assert len(ks) == len(set(ks))
    assert "cell:A:g1:0" in all_keys[4] and "win:A:g1" in all_keys[4]
    assert all(f"blk:gpu:{b}" in all_keys[0] for b in range(18))
    # The cell that left the window carries the "left the window" outline and tip.
    root = ET.fromstring(step4)
    cell = next(e for e in root.iter() if e.get("data-k") == "cell:A:g1:0")
    assert "the null block" in cell.find(f"{SVG}title").text
    assert any("--vsb-waste" in r.get("style") for r in cell.iter(f"{SVG}rect"))
    # A's full-attention block 0 did not leave: no such outline there.
    full = next(e for e in root.iter() if e.get("data-k") == "cell:A:g0:0")
    assert not any("--vsb-waste" in r.get("style") for r in full.iter(f"{SVG}rect"))


def test_the_hybrid_manager_off_keeps_every_block():
    f = frames(hybrid="false")
    trace = page.scenario({**WIDGET.defaults(), "hybrid": False})
    assert tables(trace[8].snapshot, "A") == [[1, 2, 3, 4, 5, 6, 7, 8]]
    assert "hybrid manager is off" in f[0]["narration"]
    assert "window" not in f[4]["narration"]


def test_validation_messages():
    _, errors = validate(WIDGET, {"prompt": "400"})
    assert errors == {"prompt": "A's prompt tokens: a whole number from 1 to 380"}
    _, errors = validate(WIDGET, {"prompt": "200"})
    assert errors == {"prompt": "A's prompt tokens: at most 188 at block size 16 (tables of "
                                "12 blocks fit the picture)"}
    _, errors = validate(WIDGET, {"shared": "120"})
    assert errors == {"shared": "tokens B shares with A: at most A's 112 prompt tokens"}
    _, errors = validate(WIDGET, {"sliding_window": "64"})
    assert errors == {"num_gpu_blocks": "GPU blocks: A holds up to 20 blocks at once in its 3 "
                                        "groups; give at least 21 (block 0 is the null block)"}
    answer = respond(WIDGET, {"ratio": "9"})
    assert "errors" in answer and "ratio" in answer["errors"]


def test_linked_settings_run():
    for raw in ({"hybrid": "false"}, {"sliding_window": "64", "num_gpu_blocks": "24"},
                {"ratio": "1", "sliding_window": "128"}, {"num_gpu_blocks": "17"},
                {"num_gpu_blocks": "40"}, {"block_size": "4", "prompt": "40", "shared": "32",
                                           "sliding_window": "8", "num_gpu_blocks": "40"}):
        f = frames(**raw)
        assert 10 <= len(f) < 61, raw
        assert "B reuses" in " ".join(frame["narration"] for frame in f), raw


def test_tokens_chart():
    svg_text = page.CHARTS[0].render()
    root = ET.fromstring(svg_text)
    tips = [t.text for t in root.iter(f"{SVG}title")]
    assert any("gpt-oss-120b, hybrid manager, max_model_len 131,072: 1,857,181 tokens" in t
               for t in tips)
    assert any("Gemma-3-27B, all full attention, max_model_len 131,072: 164,000 tokens" in t
               for t in tips)
