"""Start-up (issue 16): one Python per visit with instant navigation, the back button and
in-page links under it, presets that need no Python, the runtime kept in Cache Storage
under content-hashed URLs, the status line saying how Python started, and Python started
only when it will be needed when the reader saves data. Timings belong to
bench/page_load.py; these check behaviour."""

import html
import json
import re
from urllib.parse import quote, urlencode

import pytest

pytest.importorskip("playwright.sync_api", reason="pip install -e '.[site]'")

import testsite  # noqa: E402
from testsite import state, wait_python, wait_stepping  # noqa: E402

from pages.framework.widget import respond, to_json  # noqa: E402

WIDGETS = testsite.all_widgets()
BIG = ("pyodide.asm.wasm", "snapshot.bin.gz", "pyodide.asm.mjs")


def presets_of(site, path):
    """{widget id: [preset, ...]} as the build listed them in the page's HTML."""
    text = (site / path / "index.html").read_text(encoding="utf-8")
    out = {}
    for wid, raw in re.findall(r'id="([^"]+)" data-widget="[^"]+" data-module="[^"]+" '
                               r'data-frames="[^"]+" data-presets="([^"]*)"', text):
        out[wid] = json.loads(html.unescape(raw))
    return out


def pages_with_presets(site):
    return {path: found for path in testsite.page_paths(site) if (found := presets_of(site, path))}


def python_starts(page) -> int:
    return page.evaluate("performance.getEntriesByName('vsb:python-start').length")


def last_answer(page, wid):
    return page.evaluate("wid => document.getElementById(wid).vsbPlayer.lastAnswer", wid)


def forget_answer(page, wid):
    page.evaluate("wid => { document.getElementById(wid).vsbPlayer.lastAnswer = null; }", wid)


def answered(page, wid):
    page.wait_for_function("wid => document.getElementById(wid).vsbPlayer.lastAnswer !== null",
                           arg=wid)
    return last_answer(page, wid)


def python_workers(page) -> int:
    return len([w for w in page.workers if "/_runtime/worker.js" in w.url])


@pytest.fixture
def fresh_context(browser):
    """A context of its own: empty HTTP cache and Cache Storage."""
    contexts = []

    def _new(**kwargs):
        ctx = browser.new_context(viewport={"width": 1280, "height": 900}, **kwargs)
        contexts.append(ctx)
        return ctx

    yield _new
    for ctx in contexts:
        ctx.close()


def nav_click(page, path):
    """Follow the nav's link to `path` (Material's instant navigation takes it over)."""
    page.click(f"nav.md-nav--primary a[href$='{path}']")


def test_the_second_page_of_a_visit_uses_the_same_python(fresh_context, base_url, widget_page):
    page = fresh_context().new_page()
    first, second = widget_page("paged-attention"), widget_page("preemption")
    page.goto(base_url + first)
    wait_python(page, "paged-attention")
    page.evaluate("window.__sameRealm = true")
    nav_click(page, second)
    wait_python(page, "preemption")
    assert page.url == base_url + second
    assert page.evaluate("window.__sameRealm") is True          # no page load happened
    assert python_starts(page) == 1 and python_workers(page) == 1
    assert list(page.evaluate("Object.keys(window.vsbPlayers)")) == ["preemption"]
    assert "already running" in page.text_content("#preemption .vsb-status")
    # The new page's widget steps and runs through the same worker.
    page.click('#preemption [data-act="step"]')
    assert state(page, "preemption")["step"] == 1
    page.fill("#preemption [name='num_gpu_blocks']", "12")
    page.click("#preemption .vsb-run")
    raw = dict(WIDGETS["preemption"].item.default_raw(), num_gpu_blocks="12")
    assert answered(page, "preemption") == to_json(respond(WIDGETS["preemption"].item, raw))


def test_back_button_and_in_page_links_with_instant_navigation(fresh_context, base_url,
                                                               widget_page):
    page = fresh_context().new_page()
    first, second = widget_page("paged-attention"), widget_page("preemption")
    page.goto(base_url + first + "#paged-attention.step=3")
    wait_stepping(page, "paged-attention")
    assert state(page, "paged-attention")["step"] == 2
    nav_click(page, second)
    wait_stepping(page, "preemption")
    # An in-page step link, clicked: Material pushes the URL itself (no hashchange).
    link = page.locator("article a[href*='preemption.step=']").first
    step = int(re.search(r"preemption\.step=(\d+)", link.get_attribute("href"))[1])
    link.click()
    page.wait_for_function(f"document.getElementById('preemption').dataset.step === '{step - 1}'")
    page.go_back()                                              # to the page as it opened
    page.wait_for_function("document.getElementById('preemption').dataset.step === '0'")
    page.go_back()                                              # to the first page, its hash
    page.wait_for_selector('#paged-attention[data-stepping="ready"]')
    assert page.url == base_url + first + "#paged-attention.step=3"
    assert state(page, "paged-attention")["step"] == 2
    assert list(page.evaluate("Object.keys(window.vsbPlayers)")) == ["paged-attention"]
    page.go_forward()
    page.wait_for_selector('#preemption[data-stepping="ready"]')
    wait_python(page, "preemption")
    assert python_starts(page) == 1


def test_links_the_pages_give_show_build_time_frames_without_python(open_page, site):
    found = pages_with_presets(site)
    assert found, "no page links to a widget with settings of its own"
    for path, presets in sorted(found.items()):
        page = open_page(path, block_python=True).page
        for wid, listed in presets.items():
            wait_stepping(page, wid)
            for preset in listed:
                href = "#" + urlencode({f"{wid}.{k}": v for k, v in preset["fields"].items()},
                                       quote_via=quote)
                forget_answer(page, wid)
                page.evaluate("h => { location.hash = h; }", href)
                answer = answered(page, wid)
                expected = to_json(respond(WIDGETS[wid].item, preset["fields"]))
                assert answer == expected, f"{path} {wid} {preset['fields']}"
                shown = state(page, wid)
                assert json.loads(shown["frames"]) == json.loads(expected)["frames"]
                assert shown["values"] == preset["values"]
            assert page.get_attribute(f"#{wid}", "data-python") != "ready"


def test_a_try_this_link_clicked_shows_its_preset_without_python(open_page, site):
    path, presets = next(iter(sorted(pages_with_presets(site).items())))
    wid, listed = next(iter(presets.items()))
    page = open_page(path, block_python=True).page
    wait_stepping(page, wid)
    fields = listed[0]["fields"]
    link = page.evaluate("""([wid, fields]) => [...document.querySelectorAll('article a')]
        .filter(a => !a.closest('.vsb-widget') && a.getAttribute('href').includes('#'))
        .map(a => a.getAttribute('href')).find(h => {
            const q = new URLSearchParams(h.split('#')[1]);
            const mine = [...q.keys()].filter(k => k.startsWith(wid + '.') && k !== wid + '.step');
            return mine.length === Object.keys(fields).length
              && mine.every(k => q.get(k) === fields[k.slice(wid.length + 1)]);
        })""", [wid, fields])
    assert link, f"no link on {path} to {fields}"
    page.click(f"article a[href='{link}']")
    answered(page, wid)
    assert state(page, wid)["values"] == listed[0]["values"]
    assert page.get_attribute(f"#{wid}", "data-python") != "ready"


def test_the_runtime_is_kept_under_content_hashed_urls(fresh_context, base_url, widget_page):
    ctx = fresh_context()
    loads = []
    for _ in range(2):
        page = ctx.new_page()
        asked = []
        page.on("request", lambda r, asked=asked: asked.append(r.url))
        page.goto(base_url + widget_page("paged-attention"))
        wait_python(page, "paged-attention")
        loads.append([u for u in asked if "/_runtime/" in u])
        stored = page.evaluate(
            "async () => (await (await caches.open('vsb-runtime')).keys()).map(r => r.url)")
        page.close()
    first, second = loads
    for name in BIG:
        assert any(name in u and "?v=" in u for u in first), f"{name} not asked for: {first}"
        assert any(name in u and re.search(r"\?v=[0-9a-f]{12}$", u) for u in stored), stored
        assert not any(name in u for u in second), f"{name} asked for again: {second}"


def test_the_status_line_says_how_python_started(fresh_context, base_url, widget_page):
    page = fresh_context().new_page()
    page.goto(base_url + widget_page("paged-attention"))
    wait_python(page, "paged-attention")
    assert page.get_attribute("#paged-attention", "data-boot") == "snapshot"
    assert "restored from the build's snapshot" in page.text_content("#paged-attention .vsb-status")


def test_a_snapshot_that_fails_falls_back_to_a_fresh_start(fresh_context, base_url, widget_page):
    page = fresh_context().new_page()
    page.route("**/snapshot.bin.gz*",
               lambda route: route.fulfill(status=200, body=b"not a snapshot"))
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base_url + widget_page("paged-attention"))
    wait_python(page, "paged-attention")
    assert page.get_attribute("#paged-attention", "data-boot") == "fresh"
    status = page.text_content("#paged-attention .vsb-status")
    assert "started from scratch" in status and "snapshot did not restore" in status
    raw = dict(WIDGETS["paged-attention"].item.default_raw(), block_size="8")
    page.fill("#paged-attention [name='block_size']", "8")
    page.click("#paged-attention .vsb-run")
    expected = to_json(respond(WIDGETS["paged-attention"].item, raw))
    assert answered(page, "paged-attention") == expected
    assert errors == []


def test_saving_data_python_waits_for_a_sign_of_intent(fresh_context, base_url, widget_page):
    ctx = fresh_context()
    ctx.add_init_script("Object.defineProperty(navigator, 'connection', "
                        "{value: {saveData: true, effectiveType: '4g'}, configurable: true})")
    page = ctx.new_page()
    page.goto(base_url + widget_page("paged-attention"))
    wait_stepping(page, "paged-attention")
    page.click('#paged-attention [data-act="step"]')            # stepping never needs Python
    page.wait_for_timeout(1500)
    assert python_starts(page) == 0
    page.focus("#paged-attention [name='block_size']")          # reaching for the settings
    wait_python(page, "paged-attention")
    assert python_starts(page) == 1
