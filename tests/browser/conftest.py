"""Browser tests: the built site in headless Chromium (Debian's), through Playwright.

One site build, one local server and one browser per session. The tests are parametrised
over every page and every registered widget, so a new topic page is covered without
writing a test. Run one widget's tests with `-k <widget-id>`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

try:
    import mkdocs  # noqa: F401
    from playwright import sync_api as playwright_api
except ImportError:  # the test modules skip themselves; see their importorskip
    playwright_api = None

import testsite  # noqa: E402


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    return testsite.build_test_site(tmp_path_factory.mktemp("testsite"))


@pytest.fixture(scope="session")
def base_url(site):
    url, server = testsite.serve(site)
    yield url
    server.shutdown()


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(testsite.CHROMIUM):
        pytest.fail(f"no browser at {testsite.CHROMIUM}: "
                    "apt-get install chromium (./dev test does)")
    with playwright_api.sync_playwright() as p:
        b = testsite.launch(p)
        yield b
        b.close()


@pytest.fixture(scope="session")
def context(browser):
    # One context for the session: its HTTP cache keeps Pyodide warm between tests.
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    yield ctx
    ctx.close()


class Watched:
    """A page plus what it did: console errors, page errors, requests to other hosts."""

    def __init__(self, page, base_url):
        self.page = page
        self.errors: list[str] = []
        self.foreign: list[str] = []
        origin = base_url.rstrip("/")
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(str(e)))

        def on_request(request):
            url = request.url
            if not (url.startswith(origin + "/") or url.startswith(f"blob:{origin}/")
                    or url.startswith("data:")):
                self.foreign.append(url)

        page.on("request", on_request)


@pytest.fixture
def open_page(context, base_url, site):
    pages = []

    def _open(path: str, *, block_python: bool = False) -> Watched:
        page = context.new_page()
        watched = Watched(page, base_url)
        if block_python:
            page.route("**/_runtime/**", lambda route: route.abort())
        page.goto(base_url + path)
        pages.append(page)
        return watched

    yield _open
    for page in pages:
        page.close()


@pytest.fixture(scope="session")
def live_pages(context, base_url):
    """Pages kept open for the session with Python started, one per site path: starting
    Python costs seconds, so tests that need it share one page and reset it between them."""
    opened: dict[str, Watched] = {}
    yield opened
    for watched in opened.values():
        watched.page.close()


@pytest.fixture
def live(live_pages, context, base_url):
    def _live(path: str) -> Watched:
        if path not in live_pages:
            page = context.new_page()
            live_pages[path] = Watched(page, base_url)
            page.goto(base_url + path)
        watched = live_pages[path]
        for wid in watched.page.eval_on_selector_all(".vsb-widget", "els => els.map(e => e.id)"):
            testsite.wait_python(watched.page, wid)
        watched.page.evaluate("""() => {
            history.replaceState(null, '', location.pathname);
            for (const p of Object.values(window.vsbPlayers || {})) p.useDefaults();
        }""")
        return watched

    return _live


@pytest.fixture(scope="session")
def widget_page(site):
    found = testsite.widget_pages(site)

    def _path(widget_id: str) -> str:
        assert widget_id in found, f"widget {widget_id!r} is registered but no page shows it"
        return found[widget_id]

    return _path
