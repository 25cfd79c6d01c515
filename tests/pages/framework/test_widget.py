"""pages.widget: the parameter contract, validation messages, and the worker's answer."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pages.framework import worker
from pages.framework.widget import Param, Widget, respond, run, to_json, validate


def parse_pairs(text):
    try:
        pairs = tuple(tuple(int(x) for x in part.split(":")) for part in text.split(","))
    except ValueError:
        raise ValueError("pairs like 16:8, 40:4") from None
    if any(len(p) != 2 for p in pairs):
        raise ValueError("pairs like 16:8, 40:4")
    return pairs


def format_pairs(pairs):
    return ", ".join(f"{a}:{b}" for a, b in pairs)


def make(check=None, scenario=None, narrate=None):
    return Widget(
        id="t",
        title="T",
        params=(
            Param("block_size", "block size", "int", 16, min=1, max=64),
            Param("ratio", "ratio", "float", 0.5, min=0.0, max=1.0),
            Param("order", "free order", "choice", "vllm",
                  choices=(("vllm", "vLLM's"), ("scattered", "scattered"))),
            Param("swap", "swap", "bool", False),
            Param("requests", "requests", "text", ((16, 8),),
                  parse=parse_pairs, format=format_pairs),
        ),
        scenario=scenario or (lambda v: [v]),
        view=lambda step, ctx: "<svg/>",
        narrate=narrate or (lambda step, ctx: repr(sorted(step.items()))),
        check=check,
    )


def test_defaults_validate_to_themselves():
    w = make()
    values, errors = validate(w, w.default_raw())
    assert errors == {} and values == w.defaults()


def test_missing_fields_take_defaults():
    values, errors = validate(make(), {"block_size": "8"})
    assert errors == {}
    assert values["block_size"] == 8 and values["order"] == "vllm"


@pytest.mark.parametrize("name,raw,message", [
    ("block_size", "0", "block size: a whole number from 1 to 64"),
    ("block_size", "65", "block size: a whole number from 1 to 64"),
    ("block_size", "1.5", "block size: a whole number from 1 to 64"),
    ("block_size", "<b>", "block size: a whole number from 1 to 64"),
    ("ratio", "nan", "ratio: a number from 0 to 1"),
    ("ratio", "2", "ratio: a number from 0 to 1"),
    ("order", "random", "free order: one of vLLM's, scattered"),
    ("swap", "maybe", "swap: yes or no"),
    ("requests", "16:8:1", "requests: pairs like 16:8, 40:4"),
])
def test_bad_values_get_a_message_naming_what_is_allowed(name, raw, message):
    values, errors = validate(make(), {name: raw})
    assert errors == {name: message}


def test_good_values_are_parsed():
    values, errors = validate(make(), {"block_size": " 32 ", "ratio": "0.25", "order": "scattered",
                                       "swap": "yes", "requests": "1:2, 3:4"})
    assert errors == {}
    assert values == {"block_size": 32, "ratio": 0.25, "order": "scattered", "swap": True,
                      "requests": ((1, 2), (3, 4))}


def test_unknown_fields_are_reported():
    _, errors = validate(make(), {"blocksize": "8"})
    assert errors == {"": "unknown setting: blocksize"}


def test_bounds_are_min_and_max_or_a_text_fields_extremes():
    w = make()
    assert w.params[0].bounds() == [("min 1", "1"), ("max 64", "64")]
    assert w.params[1].bounds() == [("min 0", "0.0"), ("max 1", "1.0")]
    assert w.params[2].bounds() == []
    text = Param("requests", "requests", "text", ((16, 8),), parse=parse_pairs,
                 format=format_pairs, extremes=(("the most pairs", "1:1, 2:2"),))
    assert text.bounds() == [("the most pairs", "1:1, 2:2")]
    with pytest.raises(ValueError, match="the most pairs .* does not validate"):
        Param("requests", "requests", "text", ((16, 8),), parse=parse_pairs,
              format=format_pairs, extremes=(("the most pairs", "1:1:1"),))


def test_a_setting_with_no_name_is_called_that():
    # "#t.=5" in a link: nothing between the widget's id and "=".
    assert validate(make(), {"": "5"})[1] == {
        "": "a setting with no name (write t.<setting>=<value>)"}
    assert validate(make(), {" ": "5", "colour": "red"})[1] == {
        "": "a setting with no name (write t.<setting>=<value>); unknown setting: colour"}


def test_cross_field_check_runs_only_when_fields_are_valid():
    calls = []

    def check(v):
        calls.append(v)
        if v["swap"] and v["ratio"] >= 0.5:
            return {"ratio": "ratio: must be below 0.5 with swap"}
        return {}

    w = make(check=check)
    assert validate(w, {"swap": "true"})[1] == {"ratio": "ratio: must be below 0.5 with swap"}
    assert validate(w, {"swap": "true", "block_size": "x"})[1].keys() == {"block_size"}
    assert len(calls) == 1


def test_raw_round_trips_for_every_kind():
    w = make()
    for p in w.params:
        value, error = p.read(p.to_raw(p.default))
        assert error is None and value == p.default


def test_bad_declarations_fail_at_import():
    with pytest.raises(ValueError):
        Param("x", "x", "int", 0, min=1, max=3)  # default outside its own range
    with pytest.raises(ValueError):
        Param("x", "x", "text", "a")  # text without parse/format
    with pytest.raises(ValueError):
        Param("x", "x", "colour", 1)
    with pytest.raises(ValueError):
        Widget(id="Bad Id", title="", params=(), **PARTS)
    with pytest.raises(ValueError):
        Widget(id="w", title="", params=(Param("step", "s", "int", 1),), **PARTS)
    with pytest.raises(ValueError, match="needs scenario, view and narrate"):
        Widget(id="w", title="", params=(), scenario=lambda v: [1])


PARTS = dict(scenario=lambda v: [1], view=lambda s, c: "<svg/>", narrate=lambda s, c: "")


def test_run_holds_frames_to_the_contract():
    with pytest.raises(ValueError, match="no steps"):
        run(make(scenario=lambda v: []), {})
    with pytest.raises(ValueError):
        run(make(narrate=lambda step, ctx: None), {})


def test_figures_of_one_trace_share_the_tallest_height():
    from pages.framework.widget import Context
    from pages.views import svg

    seen = []

    def view(step, ctx):
        seen.append(ctx)
        return svg.Figure(100, 10 * step, [svg.text(0, 10, str(step))], f"step {step}")

    w = Widget(id="h", title="H", params=(), scenario=lambda v: [1, 3, 2], view=view,
               narrate=lambda step, ctx: f"step {step}")
    frames = run(w, {})
    assert all('viewBox="0 0 100 30"' in f["svg"] for f in frames)
    assert [f["narration"] for f in frames] == ["step 1", "step 3", "step 2"]
    assert all(isinstance(c, Context) and list(c.trace) == [1, 3, 2] for c in seen)


def test_respond_answers_errors_or_values_and_frames():
    w = make()
    assert respond(w, {"block_size": "0"}) == {
        "errors": {"block_size": "block size: a whole number from 1 to 64"}}
    answer = respond(w, {"block_size": "8", "requests": "1:2"})
    assert answer["values"]["block_size"] == "8" and answer["values"]["requests"] == "1:2"
    assert len(answer["frames"]) == 1


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text()
                    | st.floats(allow_nan=False),
                    lambda kids: st.lists(kids) | st.dictionaries(st.text(), kids), max_leaves=20))
def test_to_json_is_canonical(data):
    text = to_json(data)
    assert to_json(json.loads(text)) == text


def test_worker_build_returns_the_same_json_as_respond(monkeypatch):
    import sys
    import types

    module = types.ModuleType("vsb_test_topic")
    module.WIDGETS = (make(),)
    monkeypatch.setitem(sys.modules, "vsb_test_topic", module)
    raw = {"block_size": "4", "swap": "true"}
    assert worker.build("vsb_test_topic", "t", json.dumps(raw)) == to_json(respond(make(), raw))
    unknown = json.loads(worker.build("vsb_test_topic", "nope", "{}"))
    assert unknown["errors"][""].startswith("KeyError")
    assert "errors" in json.loads(worker.build("vsb_test_topic", "t", "[1]"))


@pytest.mark.parametrize("raw", ["1_0", "\u0663", "\uff14", "1e3", "0x10", "--1", "1.", " ",
                                 "9" * 13, "9" * 5000])
def test_whole_numbers_are_ascii_digits_with_an_optional_sign_only(raw):
    """The audit's lenient cases (Python's int() takes '1_0', Arabic-Indic and full-width
    digits) and the 4,301-digit case (Python's own 'Exceeds the limit' message) get the
    field's message instead."""
    _, errors = validate(make(), {"block_size": raw})
    assert errors == {"block_size": "block size: a whole number from 1 to 64"}


@pytest.mark.parametrize("raw", ["1_0", "\u0663", "inf", "nan", "1e999", "0.5" + "0" * 30])
def test_numbers_are_ascii_decimals_only(raw):
    _, errors = validate(make(), {"ratio": raw})
    assert errors == {"ratio": "ratio: a number from 0 to 1"}


@pytest.mark.parametrize("raw, value", [("+8", 8), ("08", 8), (" 12 ", 12)])
def test_plain_whole_numbers_still_read(raw, value):
    values, errors = validate(make(), {"block_size": raw})
    assert not errors and values["block_size"] == value


def test_very_long_text_is_refused_before_it_is_parsed():
    calls = []

    def parse(text):
        calls.append(text)
        return text

    w = Widget(id="long", title="T", params=(
        Param("label", "label", "text", "x", parse=parse, format=str),),
        **PARTS)
    calls.clear()
    _, errors = validate(w, {"label": "9" * 100_000})
    assert errors["label"].startswith("label: at most 2000 characters") and not calls
