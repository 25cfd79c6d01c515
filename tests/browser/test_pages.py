"""Every page of the built site, in Chromium: it loads cleanly and asks only its own host."""

import pytest

pytest.importorskip("playwright.sync_api", reason="pip install -e '.[site]'")

import testsite  # noqa: E402


@pytest.mark.parametrize("path", testsite.all_page_paths())
def test_page_loads_without_errors_or_foreign_requests(live, path):
    # `live` waits until Python has started on every widget of the page: start-up errors
    # count too (and so do errors from other tests that used this page).
    w = live(path)
    w.page.wait_for_load_state("networkidle")
    for wid in w.page.eval_on_selector_all(".vsb-widget", "els => els.map(e => e.id)"):
        assert w.page.get_attribute(f"#{wid}", "data-python") == "ready"
    assert w.errors == []
    assert w.foreign == []


@pytest.mark.parametrize("path", testsite.all_page_paths())
def test_python_loads_only_on_widget_pages(open_page, path):
    w = open_page(path, block_python=True)
    asked = []
    w.page.on("request", lambda r: asked.append(r.url))
    w.page.wait_for_load_state("load")
    has_widget = w.page.locator(".vsb-widget").count() > 0
    # The player and the runtime's manifest come with widgets; without them nothing starts.
    assert (w.page.locator("script[data-runtime]").count() > 0) == has_widget
    if not has_widget:
        w.page.wait_for_timeout(500)
        assert not [u for u in asked if "/_runtime/" in u]
        assert w.page.evaluate("performance.getEntriesByName('vsb:python-start').length") == 0


def test_theme_toggle_switches_svg_colours(open_page):
    w = open_page("vsb-demo/")
    colour = "getComputedStyle(document.querySelector('.vsb-picture svg rect')).fill"
    before = w.page.evaluate(colour)
    w.page.click("form[data-md-component=palette] label:visible")
    w.page.wait_for_function(f"{colour} !== {before!r}")
