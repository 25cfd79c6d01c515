"""The audit's findings (exports, error texts, step notices, busy state, focus, screen
readers), each written from its reproduction: these failed on the player before the fixes."""

import re
import xml.etree.ElementTree as ET
from urllib.parse import urlencode

import pytest

pytest.importorskip("playwright.sync_api", reason="pip install -e '.[site]'")

import testsite  # noqa: E402
from testsite import state, wait_stepping  # noqa: E402

from pages.framework.widget import run  # noqa: E402

WIDGETS = testsite.all_widgets()
SVG = "{http://www.w3.org/2000/svg}"


def answered(page, wid):
    page.wait_for_function("wid => document.getElementById(wid).vsbPlayer.lastAnswer !== null",
                           arg=wid)
    return page.evaluate("wid => document.getElementById(wid).vsbPlayer.lastAnswer", wid)


def luminance(colour: str) -> float:
    m = re.fullmatch(r"#([0-9a-f]{6})", colour.strip().lower())
    if m:
        rgb = [int(m[1][i:i + 2], 16) for i in (0, 2, 4)]
    else:
        rgb = [int(float(v)) for v in re.findall(r"[\d.]+", colour)[:3]]

    def channel(c):
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def fill_of(element) -> str:
    style = element.get("style", "")
    m = re.search(r"fill:([^;]+)", style)
    return (m[1] if m else element.get("fill", "")).strip()


# 1. Dark-mode SVG export is unreadable elsewhere.
def test_a_dark_mode_export_reads_on_a_white_page(browser, base_url, widget_page, tmp_path):
    ctx = browser.new_context(color_scheme="dark", accept_downloads=True)
    page = ctx.new_page()
    page.goto(base_url + widget_page("paged-attention"))
    wait_stepping(page, "paged-attention")
    page.click('#paged-attention [data-act="step"]')
    with page.expect_download() as info:
        page.click('#paged-attention [data-act="download"]')
    text = open(info.value.path(), encoding="utf-8").read()
    ctx.close()
    root = ET.fromstring(text)
    assert "font-family" in root.get("style", "")
    background = next(e for e in root if e.tag == SVG + "rect")
    bg = fill_of(background)
    assert background.get("width") == root.get("viewBox").split()[2]
    assert luminance(bg) < 0.1                      # the dark palette's own background
    # Text in the background colour sits on a coloured chip or block; the rest sits on the
    # background itself and must stand out from it.
    texts = [c for c in (fill_of(t) for t in root.iter(SVG + "text")) if c != bg]
    assert texts and min(contrast(c, bg) for c in texts) >= 4.5
    # Opened on a white page (a slide, a document), the picture brings its background.
    white = browser.new_page()
    white.set_content(f'<body style="background:#fff;margin:0">{text}</body>')
    painted = white.evaluate("""() => getComputedStyle(document.querySelector('svg rect'))
                                .fill""")
    white.close()
    assert contrast(painted, "#ffffff") > 3
    # The attribution travels with the file.
    desc = root.find(SVG + "desc").text
    assert "CC BY 4.0" in desc and "paged-attention" in desc


# 2. Python's internal error text reaches the reader.
@pytest.mark.parametrize("wid, field, text", [
    ("continuous-batching", "prompt_lens", "1-" + "9" * 5000),
    ("paged-attention", "requests", "9" * 5000 + "/3"),
    ("preemption", "requests", "9" * 5000 + "/3"),
], ids=["continuous-batching", "paged-attention", "preemption"])
def test_huge_numbers_get_the_fields_message(live, widget_page, wid, field, text):
    page = live(widget_page(wid)).page
    page.fill(f"#{wid} [name='{field}']", text)
    page.click(f"#{wid} .vsb-run")
    answered(page, wid)
    message = page.text_content(f"#{wid} .vsb-error[data-for='{field}']")
    assert message and "Exceeds the limit" not in message and "int_max_str_digits" not in message
    label = next(p.label for p in WIDGETS[wid].item.params if p.name == field)
    assert message.startswith(f"{label}: ")


def test_a_huge_number_in_a_link_gets_a_notice_not_pythons_text(live, widget_page):
    page = live(widget_page("continuous-batching")).page
    page.evaluate("h => { location.hash = h; }",
                  "#continuous-batching.prompt_lens=" + "9" * 100_000)
    page.wait_for_selector("#continuous-batching .vsb-notice:not([hidden])")
    notice = state(page, "continuous-batching")["notice"]
    assert "not valid" in notice and "Exceeds the limit" not in notice


# 3. Lenient whole numbers.
@pytest.mark.parametrize("text", ["1_0", "\u0663", "\uff14"],
                         ids=["underscore", "arabic-indic", "fullwidth"])
def test_whole_numbers_are_ascii_digits_only(live, widget_page, text):
    page = live(widget_page("paged-attention")).page
    page.fill("#paged-attention [name='block_size']", text)
    page.click("#paged-attention .vsb-run")
    answered(page, "paged-attention")
    assert (page.text_content("#paged-attention .vsb-error[data-for='block_size']")
            == "block size: a whole number from 1 to 16")


# 4. Step notices.
def test_step_zero_says_steps_start_at_one(open_page, widget_page):
    page = open_page(widget_page("paged-attention") + "#paged-attention.step=0",
                     block_python=True).page
    wait_stepping(page, "paged-attention")
    notice = state(page, "paged-attention")["notice"]
    assert "step 0" in notice and "numbered from 1" in notice and "past the end" not in notice


def test_a_one_frame_widget_says_one_step(open_page, widget_page):
    one = next(w for w in sorted(WIDGETS)
               if len(run(WIDGETS[w].item, WIDGETS[w].item.defaults())) == 1
               and not w.startswith("demo"))
    page = open_page(widget_page(one) + f"#{one}.step=3", block_python=True).page
    wait_stepping(page, one)
    notice = state(page, one)["notice"]
    assert "1 step;" in notice and "1 steps" not in notice


def test_a_bad_step_notice_stays_when_python_answers(live, widget_page):
    page = live(widget_page("paged-attention")).page
    page.evaluate("h => { location.hash = h; }",
                  "#paged-attention.block_size=8&paged-attention.step=abc")
    answered(page, "paged-attention")
    shown = state(page, "paged-attention")
    assert shown["values"]["block_size"] == "8"
    assert "not a step number" in shown["notice"]


def test_proto_in_a_link_is_an_unknown_setting(live, widget_page):
    page = live(widget_page("paged-attention")).page
    page.evaluate("h => { location.hash = h; }", "#paged-attention.__proto__=1")
    page.wait_for_selector("#paged-attention .vsb-notice:not([hidden])")
    assert "unknown setting: __proto__" in state(page, "paged-attention")["notice"]


# 5. No sign that Python is working.
def test_run_is_off_and_the_status_says_so_until_the_answer(live, widget_page):
    wid = "paged-attention"
    page = live(widget_page(wid)).page
    before = state(page, wid)
    page.fill(f"#{wid} [name='block_size']", "8")
    # Hold the worker's answer so the busy state can be seen.
    page.evaluate("""wid => {
        const p = document.getElementById(wid).vsbPlayer;
        const real = p.py.build;
        window.__release = null;
        p.py = { build: (...a) => new Promise(r => { window.__release = () => r(real(...a)); }) };
        p.__real = real;
    }""", wid)
    page.click(f"#{wid} .vsb-run")
    assert page.is_disabled(f"#{wid} .vsb-run")
    assert "Running" in page.text_content(f"#{wid} .vsb-status")
    assert state(page, wid)["frames"] == before["frames"]          # the last trace stays
    page.evaluate("() => window.__release()")
    answered(page, wid)
    page.wait_for_function("wid => !document.querySelector(`#${wid} .vsb-run`).disabled", arg=wid)
    assert state(page, wid)["values"]["block_size"] == "8"
    page.evaluate("wid => { const p = document.getElementById(wid).vsbPlayer; "
                  "p.py = { build: p.__real, ping: () => 'pong' }; }", wid)


# 6. Focus is lost when the focused control becomes disabled.
def test_focus_stays_on_a_control_at_the_ends(open_page, widget_page):
    wid = "paged-attention"
    page = open_page(widget_page(wid), block_python=True).page
    wait_stepping(page, wid)
    count = state(page, wid)["count"]
    page.focus(f'#{wid} [data-act="step"]')
    for _ in range(count - 1):
        page.keyboard.press("Enter")
    assert state(page, wid)["step"] == count - 1
    focused = page.evaluate("document.activeElement.dataset.act || document.activeElement.tagName")
    assert focused == "back"
    page.focus(f'#{wid} [data-act="reset"]')
    page.keyboard.press("Enter")
    assert state(page, wid)["step"] == 0
    assert page.evaluate("document.activeElement.dataset.act") == "step"


# 7. No visible focus indicator on the slider and text inputs.
@pytest.mark.parametrize("selector", [".vsb-scrub", "[name='block_size']"])
def test_focus_is_visible_on_the_slider_and_text_fields(open_page, widget_page, selector):
    wid = "paged-attention"
    page = open_page(widget_page(wid), block_python=True).page
    wait_stepping(page, wid)
    box = page.locator(f"#{wid} {selector}")
    box.scroll_into_view_if_needed()
    page.evaluate("document.activeElement && document.activeElement.blur()")
    shape = box.bounding_box()
    clip = {"x": shape["x"] - 6, "y": shape["y"] - 6, "width": shape["width"] + 12,
            "height": shape["height"] + 12}
    unfocused = page.screenshot(clip=clip)
    page.focus(f"#{wid} {selector}")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")
    focused = page.screenshot(clip=clip)
    assert unfocused != focused


# 8. The slider announces a 0-based value.
def test_the_slider_says_what_the_counter_says(open_page, widget_page):
    wid = "paged-attention"
    page = open_page(widget_page(wid), block_python=True).page
    wait_stepping(page, wid)
    page.click(f'#{wid} [data-act="step"]')
    page.click(f'#{wid} [data-act="step"]')
    counter = page.text_content(f"#{wid} .vsb-counter")
    assert counter.endswith(f"3 / {state(page, wid)['count']}")
    assert page.get_attribute(f"#{wid} .vsb-scrub", "aria-valuetext") == counter


# 9. Errors are not tied to their inputs.
def test_an_error_is_tied_to_its_field_while_shown(live, widget_page):
    wid = "paged-attention"
    page = live(widget_page(wid)).page
    field = f"#{wid} [name='block_size']"
    page.fill(field, "0")
    page.click(f"#{wid} .vsb-run")
    answered(page, wid)
    error_id = page.get_attribute(f"#{wid} .vsb-error[data-for='block_size']", "id")
    assert page.get_attribute(field, "aria-invalid") == "true"
    assert error_id in page.get_attribute(field, "aria-describedby").split()
    page.evaluate("wid => { document.getElementById(wid).vsbPlayer.lastAnswer = null; }", wid)
    page.fill(field, "4")
    page.click(f"#{wid} .vsb-run")
    answered(page, wid)
    assert page.get_attribute(field, "aria-invalid") is None
    assert error_id not in page.get_attribute(field, "aria-describedby").split()


def test_embed_options_theme_and_minimal_controls(open_page, widget_page):
    wid = "paged-attention"
    page = open_page(widget_page(wid) + "?" + urlencode(
        {"embed": wid, "theme": "dark", "controls": "minimal"}), block_python=True).page
    wait_stepping(page, wid)
    assert page.get_attribute("body", "data-md-color-scheme") == "slate"
    assert page.is_visible(f'#{wid} [data-act="step"]') and page.is_visible(f"#{wid} .vsb-counter")
    assert not page.is_visible(f"#{wid} .vsb-form") and not page.is_visible(f"#{wid} .vsb-tools")
    assert page.is_visible(".vsb-source a[href*='paged-attention']")
    assert "CC BY 4.0" in page.text_content(".vsb-source")
