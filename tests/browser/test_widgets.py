"""Every registered widget, in Chromium, through the player and the Python worker.

Parametrised over the registry: a new topic module's widgets get these tests for free.
Tests that need Python share one live page per site path (`live`); the others load the
page with the runtime blocked, which also proves the default frames need no Python.
"""

import json
from urllib.parse import quote, urlencode

import pytest

pytest.importorskip("playwright.sync_api", reason="pip install -e '.[site]'")

import testsite  # noqa: E402
from testsite import state, wait_python, wait_stepping  # noqa: E402

from pages.framework.widget import respond, run, to_json, validate  # noqa: E402

WIDGETS = testsite.all_widgets()
IDS = sorted(WIDGETS)
STEPPING = sorted(w for w in IDS if len(run(WIDGETS[w].item, WIDGETS[w].item.defaults())) > 1)
PAYLOAD = '<b class="vsb-injected">x</b><img src="x" onerror="window.__pwned=1">'


def widget(wid):
    return WIDGETS[wid].item


def default_frames(wid):
    return json.loads(to_json(run(widget(wid), widget(wid).defaults())))


def hash_for(wid, raw, step=None):
    pairs = [(f"{wid}.{k}", v) for k, v in raw.items()]
    if step is not None:
        pairs.insert(0, (f"{wid}.step", str(step)))
    return "#" + urlencode(pairs, quote_via=quote)  # spaces %20: the player reads "+" as a plus


def injected(page) -> bool:
    return page.evaluate("Boolean(document.querySelector('.vsb-injected') || window.__pwned)")


def answered(page, wid):
    """Wait for the worker's next answer; the player has drawn it by the time this returns
    (it does so in the same microtask chain, before the next animation frame)."""
    page.wait_for_function(
        "wid => document.getElementById(wid).vsbPlayer.lastAnswer !== null", arg=wid)
    return page.evaluate("wid => document.getElementById(wid).vsbPlayer.lastAnswer", wid)


@pytest.mark.parametrize("wid", STEPPING)
def test_stepping_forward_and_back_changes_picture_and_narration(open_page, widget_page, wid):
    page = open_page(widget_page(wid), block_python=True).page
    wait_stepping(page, wid)
    first = state(page, wid)
    page.click(f'#{wid} [data-act="step"]')
    second = state(page, wid)
    assert second["step"] == 1
    assert second["svg"] != first["svg"] and second["narration"] != first["narration"]
    page.click(f'#{wid} [data-act="back"]')
    assert state(page, wid)["svg"] == first["svg"]
    page.fill(f"#{wid} .vsb-scrub", str(first["count"] - 1))
    last = state(page, wid)
    assert last["step"] == first["count"] - 1
    # "9 / 9", after the step's own name when the frame has one ("iteration 7 · 9 / 9").
    assert last["counter"].endswith(f"{first['count']} / {first['count']}")
    page.click(f'#{wid} [data-act="reset"]')
    assert state(page, wid)["step"] == 0


@pytest.mark.parametrize("wid", sorted(set(IDS) - set(STEPPING)))
def test_one_frame_widget_hides_stepping_controls(open_page, widget_page, wid):
    page = open_page(widget_page(wid), block_python=True).page
    wait_stepping(page, wid)
    assert not page.is_visible(f"#{wid} .vsb-controls")
    assert page.is_visible(f"#{wid} .vsb-picture svg")


@pytest.mark.parametrize("wid", STEPPING)
def test_keyboard_steps_and_plays(open_page, widget_page, wid):
    page = open_page(widget_page(wid), block_python=True).page
    wait_stepping(page, wid)
    page.focus(f"#{wid}")
    page.keyboard.press("ArrowRight")
    assert state(page, wid)["step"] == 1
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowLeft")
    assert state(page, wid)["step"] == 1
    page.keyboard.press(" ")
    assert page.get_attribute(f'#{wid} [data-act="play"]', "aria-pressed") == "true"
    page.keyboard.press(" ")
    assert page.get_attribute(f'#{wid} [data-act="play"]', "aria-pressed") == "false"


@pytest.mark.parametrize("wid", STEPPING)
def test_default_frames_step_before_python(open_page, widget_page, wid):
    # With the runtime blocked Python never starts: the build-time frames must still step.
    page = open_page(widget_page(wid), block_python=True).page
    wait_stepping(page, wid)
    assert page.get_attribute(f"#{wid}", "data-python") != "ready"
    page.click(f'#{wid} [data-act="step"]')
    assert state(page, wid)["step"] == 1
    assert state(page, wid)["narration"] == default_frames(wid)[1]["narration"]


@pytest.mark.parametrize("wid", STEPPING)
def test_permalink_with_default_settings_steps_without_python(open_page, widget_page, wid):
    page = open_page(widget_page(wid) + f"#{wid}.step=2", block_python=True).page
    wait_stepping(page, wid)
    assert state(page, wid)["step"] == 1


def variant_link(wid):
    raw = testsite.variant_raw(widget(wid))
    values, errors = validate(widget(wid), raw)
    assert not errors
    frames = run(widget(wid), values)
    step = min(3, len(frames))  # 1-based in the URL
    return raw, frames, step


def assert_restored(page, wid, raw, frames, step) -> None:
    """The widget shows the permalink's step and settings, with the frames CPython makes."""
    shown = state(page, wid)
    assert shown["step"] == step - 1
    assert shown["values"] == raw
    assert json.loads(shown["frames"]) == json.loads(to_json(frames))
    assert shown["notice"] == ""


# Opening a link waits for Python on a fresh page, which costs seconds: once per page (the
# code path is the player's, not the widget's); every widget gets the same link below.
@pytest.mark.parametrize("wid", testsite.first_widgets())
def test_opening_a_permalink_restores_step_and_settings(open_page, widget_page, wid):
    raw, frames, step = variant_link(wid)
    page = open_page(widget_page(wid) + hash_for(wid, raw, step)).page
    wait_python(page, wid)
    answered(page, wid)
    assert_restored(page, wid, raw, frames, step)


@pytest.mark.parametrize("wid", IDS)
def test_a_permalink_followed_on_the_page_restores_step_and_settings(live, widget_page, wid):
    raw, frames, step = variant_link(wid)
    page = live(widget_page(wid)).page
    page.evaluate("h => { location.hash = h; }", hash_for(wid, raw, step))
    answered(page, wid)
    assert_restored(page, wid, raw, frames, step)


@pytest.mark.parametrize("wid", STEPPING)
def test_a_step_link_on_the_page_shows_that_step(live, widget_page, wid):
    page = live(widget_page(wid)).page
    page.evaluate("h => { location.hash = h; }", f"{wid}.step=2")
    page.wait_for_function("wid => document.getElementById(wid).dataset.step === '1'", arg=wid)
    assert state(page, wid)["narration"] == default_frames(wid)[1]["narration"]


@pytest.mark.parametrize("wid", IDS)
def test_browser_frames_are_byte_identical_to_cpython(live, widget_page, wid):
    page = live(widget_page(wid)).page
    raw = testsite.variant_raw(widget(wid))
    page.evaluate("([wid, raw]) => document.getElementById(wid).vsbPlayer.fillForm(raw)",
                  [wid, raw])
    page.click(f"#{wid} .vsb-run")
    answer = answered(page, wid)
    assert answer == to_json(respond(widget(wid), raw))
    shown = state(page, wid)
    assert json.loads(shown["frames"]) == json.loads(answer)["frames"]
    assert shown["values"] == raw


@pytest.mark.parametrize("wid", IDS)
def test_bad_permalink_falls_back_to_defaults_with_notice(live, widget_page, wid):
    bad = testsite.invalid_field(widget(wid))
    if bad is None:
        pytest.skip("no field of this widget rejects text")
    name, text, _ = bad
    page = live(widget_page(wid)).page
    page.evaluate("h => { location.hash = h; }", hash_for(wid, {name: text}, 1))
    page.wait_for_selector(f"#{wid} .vsb-notice:not([hidden])")
    shown = state(page, wid)
    assert "not valid" in shown["notice"]
    assert shown["values"] == widget(wid).default_raw()
    assert json.loads(shown["frames"]) == default_frames(wid)


@pytest.mark.parametrize("wid", IDS)
def test_invalid_value_shows_message_beside_field_and_keeps_trace(live, widget_page, wid):
    bad = testsite.invalid_field(widget(wid))
    if bad is None:
        pytest.skip("no field of this widget rejects text")
    name, text, message = bad
    page = live(widget_page(wid)).page
    before = state(page, wid)
    page.fill(f"#{wid} [name='{name}']", text)
    page.click(f"#{wid} .vsb-run")
    answered(page, wid)
    slot = f"#{wid} .vsb-field[data-field='{name}'] .vsb-error"
    assert page.text_content(slot) == message
    assert page.is_visible(slot)
    assert state(page, wid)["frames"] == before["frames"]
    if before["count"] > 1:
        page.click(f'#{wid} [data-act="step"]')
        assert state(page, wid)["step"] == 1


@pytest.mark.parametrize("wid", IDS)
def test_markup_typed_into_fields_stays_text(live, widget_page, wid):
    page = live(widget_page(wid)).page
    for name in [p.name for p in widget(wid).params if p.kind in ("int", "float", "text")]:
        page.evaluate("wid => { document.getElementById(wid).vsbPlayer.lastAnswer = null; }", wid)
        page.fill(f"#{wid} [name='{name}']", PAYLOAD)
        page.click(f"#{wid} .vsb-run")
        answer = json.loads(answered(page, wid))
        if "errors" in answer:  # the message is shown as text beside the field
            shown = page.text_content(f"#{wid} .vsb-error[data-for='{name}']")
            assert shown == answer["errors"][name]
        else:  # accepted: whatever the picture draws of it, it draws as text
            assert state(page, wid)["values"][name] == PAYLOAD
        assert not injected(page)
        page.fill(f"#{wid} [name='{name}']", widget(wid).default_raw()[name])


def test_markup_in_a_drawn_label_is_drawn_as_text(live, widget_page):
    # The demo widget draws its `label` field in the picture and the narration.
    page = live(widget_page("demo-fill")).page
    page.fill("#demo-fill [name='label']", PAYLOAD)
    page.click("#demo-fill .vsb-run")
    answered(page, "demo-fill")
    assert page.text_content("#demo-fill svg text").startswith(PAYLOAD)
    assert PAYLOAD in page.text_content("#demo-fill .vsb-narration")
    assert not injected(page)


@pytest.mark.parametrize("wid", IDS)
def test_markup_in_url_hash_stays_text(live, widget_page, wid):
    page = live(widget_page(wid)).page
    raw = {p.name: PAYLOAD for p in widget(wid).params if p.kind != "bool"}
    page.evaluate("h => { location.hash = h; }",
                  hash_for(wid, raw) + "&" + urlencode({f"{wid}.step": PAYLOAD}, quote_via=quote))
    page.wait_for_selector(f"#{wid} .vsb-notice:not([hidden])")
    if raw:
        answered(page, wid)
        assert state(page, wid)["values"] == widget(wid).default_raw()
    assert not injected(page)
    if wid in STEPPING:
        page.click(f'#{wid} [data-act="step"]')
        assert state(page, wid)["step"] == 1


@pytest.mark.parametrize("wid", IDS)
def test_embed_mode_shows_the_widget_alone(open_page, widget_page, wid):
    page = open_page(widget_page(wid) + f"?embed={wid}", block_python=True).page
    wait_stepping(page, wid)
    assert page.is_visible(f"#{wid}")
    assert not page.is_visible(".md-header")
    assert not page.is_visible("h1")
    visible = page.evaluate("[...document.querySelectorAll('.vsb-widget')]"
                            ".filter(e => e.offsetParent).map(e => e.id)")
    assert visible == [wid]
    page.click(f'#{wid} [data-act="embed"]')
    code = page.input_value(f"#{wid} .vsb-embed-code")
    assert code.startswith("<iframe ") and f"?embed={wid}" in code


@pytest.mark.parametrize("wid", IDS)
def test_download_frame_saves_the_current_svg(open_page, widget_page, wid):
    page = open_page(widget_page(wid), block_python=True).page
    wait_stepping(page, wid)
    with page.expect_download() as info:
        page.click(f'#{wid} [data-act="download"]')
    download = info.value
    assert download.suggested_filename == f"{wid}-step-1.svg"
    text = open(download.path(), encoding="utf-8").read()
    assert text.startswith("<svg") and "var(--" not in text
