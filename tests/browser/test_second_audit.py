"""The second audit's findings (issue 26: a Run that stays busy, links that lose their step,
a dead embed script, hand-typed links, unreachable bounds, messages on the wrong field,
PyScript for authors), each written from its reproduction: these failed before the fixes."""

import ast
import asyncio
import html as html_lib
import json
import re
import shutil
import sys
import types
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest

pytest.importorskip("playwright.sync_api", reason="pip install -e '.[site]'")

import testsite  # noqa: E402
from testsite import state, wait_stepping  # noqa: E402

from pages.framework import wheel  # noqa: E402
from pages.framework.widget import respond, run, to_json, validate  # noqa: E402

WIDGETS = testsite.all_widgets()
IDS = sorted(WIDGETS)
RUN = "#{} .vsb-run"

# The worker's next answer to one widget waits for window.__release(); later calls go
# through at once, so a link followed meanwhile gets its own answer.
HOLD = """wid => {
    const p = document.getElementById(wid).vsbPlayer;
    const real = p.py.build;
    let first = true;
    window.__held = null;
    window.__release = null;
    p.py = { ...p.py, build: (...args) => {
        if (!first) return real(...args);
        first = false;
        window.__held = new Promise((r) => { window.__release = () => r(real(...args)); });
        return window.__held;
    } };
    window.__unhold = () => { p.py = { ...p.py, build: real }; };
}"""


@contextmanager
def held_answer(page, wid):
    """Hold the widget's next answer; `release()` lets it arrive and waits until the player
    has had it."""
    page.evaluate(HOLD, wid)

    def release():
        page.evaluate("""async () => {
            window.__release();
            await window.__held;
            await new Promise((r) => setTimeout(r, 100));
        }""")

    try:
        yield release
    finally:
        page.evaluate("() => { if (window.__release) window.__release(); window.__unhold(); }")


def forget_answer(page, wid):
    page.evaluate("wid => { document.getElementById(wid).vsbPlayer.lastAnswer = null; }", wid)


def answered(page, wid):
    page.wait_for_function("wid => document.getElementById(wid).vsbPlayer.lastAnswer !== null",
                           arg=wid)
    return page.evaluate("wid => document.getElementById(wid).vsbPlayer.lastAnswer", wid)


def fill(page, wid, raw):
    page.evaluate("([wid, raw]) => document.getElementById(wid).vsbPlayer.fillForm(raw)",
                  [wid, raw])


def follow(page, href):
    page.evaluate("h => { location.hash = h; }", href)


def hash_for(wid, raw, step=None):
    from pages.framework.link_hash import format_hash

    pairs = [(f"{wid}.{k}", v) for k, v in raw.items()]
    if step is not None:
        pairs.insert(0, (f"{wid}.step", str(step)))
    return "#" + format_hash(pairs)


def busy(page, wid) -> dict:
    return page.evaluate("""wid => {
        const root = document.getElementById(wid);
        return { runOff: root.querySelector('.vsb-run').disabled,
                 aria: root.getAttribute('aria-busy'), flag: root.dataset.busy || null,
                 status: root.querySelector('.vsb-status').textContent };
    }""", wid)


def assert_idle(page, wid):
    """Run is on, nothing says busy, and the status line says Python is ready."""
    now = busy(page, wid)
    assert not now["runOff"] and now["aria"] == "false" and now["flag"] is None, now
    assert now["status"].startswith("Python is ready"), now["status"]


def assert_busy(page, wid):
    now = busy(page, wid)
    assert now["runOff"] and now["aria"] == "true" and "Running" in now["status"], now


def frames_for(wid, raw):
    return json.loads(to_json(respond(WIDGETS[wid].item, raw)))["frames"]


def another_variant(item, not_like: dict) -> dict:
    """Valid settings whose trace differs from the defaults' and from `not_like`'s: the engine
    switch when the widget has one, else one field nudged (testsite's nudges)."""
    base = item.default_raw()
    seen = {to_json(run(item, item.defaults())),
            to_json(respond(item, not_like).get("frames"))}
    params = sorted(item.params, key=lambda p: p.name != "engine")
    for p in params:
        for candidate in testsite._nudges(p):
            raw = dict(base, **{p.name: candidate})
            if raw == not_like:
                continue
            _, errors = validate(item, raw)
            if not errors and to_json(respond(item, raw)["frames"]) not in seen:
                return raw
    raise AssertionError(f"{item.id}: no second variant")


# 1. Run stays disabled for good, and 2. a step-only link is overridden: the issue's own
# reproductions on the KV cache page.
def test_a_link_followed_while_run_works_leaves_the_widget_idle(live, widget_page):
    wid = "kv-growth"
    page = live(widget_page(wid)).page
    page.fill(f"#{wid} [name='prompt_len']", "12")
    with held_answer(page, wid) as release:
        page.click(RUN.format(wid))
        assert_busy(page, wid)
        follow(page, f"#{wid}.step=2&{wid}.layers=3")
        answered(page, wid)                       # the link's answer: not held
        assert_idle(page, wid)
        link = dict(WIDGETS[wid].item.default_raw(), layers="3")
        shown = state(page, wid)
        assert shown["step"] == 1 and shown["values"] == link
        assert json.loads(shown["frames"]) == frames_for(wid, link)
        release()                                 # the superseded run's answer comes late
        assert state(page, wid) == shown
        assert_idle(page, wid)
    written = page.evaluate("location.hash")
    assert f"{wid}.layers=3" in written and f"{wid}.prompt_len=12" not in written


def test_a_step_link_followed_while_run_works_shows_that_step(live, widget_page):
    wid = "kv-growth"
    page = live(widget_page(wid)).page
    page.fill(f"#{wid} [name='prompt_len']", "12")
    with held_answer(page, wid) as release:
        page.click(RUN.format(wid))
        assert_busy(page, wid)
        # The page's own link (instant navigation makes its href absolute).
        page.locator(f'a[href$="#{wid}.step=2"]').first.click()
        page.wait_for_function("wid => document.getElementById(wid).dataset.step === '1'",
                               arg=wid)
        assert_idle(page, wid)
        shown = state(page, wid)
        # The link's step of the trace the link describes: the default scenario, whose
        # settings the form shows.
        assert shown["values"] == WIDGETS[wid].item.default_raw()
        assert json.loads(shown["frames"]) == frames_for(wid, {})
        release()
        assert state(page, wid) == shown
        assert_idle(page, wid)
    assert page.evaluate("location.hash") == f"#{wid}.step=2"


@pytest.mark.parametrize("wid", IDS)
def test_whatever_supersedes_a_run_leaves_the_widget_idle(live, widget_page, wid):
    """Every widget: a Run whose answer is held, superseded by a step link, a link with
    settings (the engine switch where there is one), a link the page has (a preset),
    another Run and the defaults; each leaves the widget idle showing what the last action
    asked for, and the late answer is dropped. Reset (a step of the trace shown) does not
    cancel the Run: its answer is shown at step 1, and the widget is idle."""
    item = WIDGETS[wid].item
    page = live(widget_page(wid)).page
    ran = testsite.variant_raw(item)
    linked = another_variant(item, ran)
    defaults = frames_for(wid, {})
    presets = page.evaluate("wid => document.getElementById(wid).vsbPlayer.presets", wid)

    def superseded(action, expect_raw, expect_frames, expect_step, wait):
        fill(page, wid, ran)
        forget_answer(page, wid)
        with held_answer(page, wid) as release:
            page.click(RUN.format(wid))
            assert_busy(page, wid)
            action()
            wait()
            assert_idle(page, wid)
            shown = state(page, wid)
            assert shown["values"] == expect_raw, action.__doc__
            assert json.loads(shown["frames"]) == expect_frames, action.__doc__
            assert shown["step"] == expect_step, action.__doc__
            release()
            assert state(page, wid) == shown, action.__doc__
            assert_idle(page, wid)

    def run_on():
        page.wait_for_function("s => !document.querySelector(s).disabled", arg=RUN.format(wid))

    def step_link():
        """a link to a step"""
        follow(page, f"#{wid}.step={min(2, len(defaults))}")

    superseded(step_link, item.default_raw(), defaults, min(2, len(defaults)) - 1, run_on)

    linked_frames = frames_for(wid, linked)
    step = min(2, len(linked_frames))

    def settings_link():
        """a link with settings"""
        follow(page, hash_for(wid, {k: v for k, v in linked.items()
                                    if v != item.default_raw()[k]}, step))

    superseded(settings_link, linked, linked_frames, step - 1, lambda: answered(page, wid))

    if presets:
        preset = presets[0]
        preset_frames = frames_for(wid, preset["fields"])

        def preset_link():
            """a link the page has"""
            follow(page, hash_for(wid, preset["fields"]))

        superseded(preset_link, preset["values"], preset_frames, 0, lambda: answered(page, wid))

    def run_again():
        """another Run"""
        fill(page, wid, item.default_raw())
        page.evaluate("wid => { document.getElementById(wid).vsbPlayer.submit(); }", wid)

    superseded(run_again, item.default_raw(), defaults, 0, lambda: answered(page, wid))

    def use_defaults():
        """the defaults again"""
        page.evaluate("wid => document.getElementById(wid).vsbPlayer.useDefaults()", wid)

    superseded(use_defaults, item.default_raw(), defaults, 0, run_on)

    # Reset while the Run works: the stepping stays on the trace shown; the answer wins.
    fill(page, wid, ran)
    forget_answer(page, wid)
    with held_answer(page, wid) as release:
        page.click(RUN.format(wid))
        if len(defaults) > 1:
            page.click(f'#{wid} [data-act="step"]')
            page.click(f'#{wid} [data-act="reset"]')
            assert state(page, wid)["step"] == 0
        assert_busy(page, wid)
        release()
    answered(page, wid)
    assert_idle(page, wid)
    shown = state(page, wid)
    assert shown["values"] == ran and shown["step"] == 0
    assert json.loads(shown["frames"]) == frames_for(wid, ran)


# 3. The copied embed code loads a script that is not there.
def embedded_heights(host):
    inner = host.frame_locator("iframe[data-vsb-embed]").locator(".vsb-embed-root")
    outer = host.evaluate("document.querySelector('iframe[data-vsb-embed]')"
                          ".getBoundingClientRect().height")
    return outer, inner.bounding_box()["height"]


def wait_fitted(host, timeout_ms=30_000):
    waited = 0
    while True:
        outer, inner = embedded_heights(host)
        if abs(outer - inner) <= 4:
            return inner
        assert waited < timeout_ms, (outer, inner)
        host.wait_for_timeout(200)
        waited += 200


def test_the_copied_embed_code_works_on_another_site(context, open_page, widget_page,
                                                      base_url):
    wid = "paged-attention"
    page = open_page(widget_page(wid), block_python=True).page
    wait_stepping(page, wid)
    page.click(f'#{wid} [data-act="embed"]')
    code = page.input_value(f"#{wid} .vsb-embed-code")
    assert re.search(r'<script src="([^"]+)"', code)[1] == base_url + "js/embed.js"
    url, server = testsite.serve_html(
        '<!doctype html><meta charset="utf-8"><title>A course page</title>'
        f'<body style="max-width:760px"><h1>Week 3</h1>{code}</body>')
    host = context.new_page()
    try:
        host.route("**/_runtime/**", lambda route: route.abort())   # stepping needs no Python
        statuses = {}
        host.on("response", lambda r: statuses.setdefault(r.url, r.status))
        host.goto(url)
        host.wait_for_function("window.vsbEmbedHost === true")      # embed.js ran
        assert statuses[base_url + "js/embed.js"] == 200
        inside = host.frame_locator("iframe[data-vsb-embed]")
        inside.locator(f'#{wid}[data-stepping="ready"]').wait_for()
        first = wait_fitted(host)
        # Step until the widget's height changes (a longer narration); the iframe follows.
        count = len(frames_for(wid, {}))
        for _ in range(count - 1):
            inside.locator(f'#{wid} [data-act="step"]').click()
            if abs(embedded_heights(host)[1] - first) > 8:
                break
        else:
            pytest.fail("no step of the default scenario changes the widget's height")
        assert abs(wait_fitted(host) - first) > 8
    finally:
        host.close()
        server.shutdown()


# 6. Hand-typed links.
def test_a_plus_typed_into_a_link_is_a_plus(live, widget_page):
    wid = "prefix-caching"
    page = live(widget_page(wid)).page
    follow(page, f"#{wid}.prompts=x:4+2/2")
    answered(page, wid)
    shown = state(page, wid)
    assert shown["notice"] == "" and shown["values"]["prompts"] == "x:4+2/2"
    # The player writes it back unambiguously (%2B for a plus, %20 for a space), and reads
    # what it wrote.
    written = page.evaluate("location.hash")
    assert "%2B" in written and "+" not in written
    follow(page, f"#{wid}.step=1")
    forget_answer(page, wid)
    follow(page, written)
    answered(page, wid)
    assert state(page, wid)["values"]["prompts"] == "x:4+2/2"
    # The site's own links write %2B and keep working.
    forget_answer(page, wid)
    page.locator(f'a[href*="{wid}.prompts=sys%3A16%2B4"]').first.click()
    answered(page, wid)
    again = state(page, wid)
    assert again["notice"] == "" and again["values"]["prompts"].startswith("sys:16+4/2, sys+6/2")


@pytest.mark.parametrize("wid, field, text, message", [
    ("paged-attention", "requests", "6/8,,5/8", "requests: request 2 is empty"),
    ("preemption", "requests", ", 6/8, 5/8", "requests: request 1 is empty"),
    ("prefix-caching", "prompts", "x:4+2/2,,x+1/1", "prompts: request 2 is empty"),
], ids=["paged-attention", "preemption", "prefix-caching"])
def test_an_empty_request_in_a_list_is_refused_by_position(live, widget_page, wid, field, text,
                                                           message):
    page = live(widget_page(wid)).page
    label = next(p.label for p in WIDGETS[wid].item.params if p.name == field)
    message = message.replace(f"{field}:", f"{label}:", 1)
    page.fill(f"#{wid} [name='{field}']", text)
    page.click(RUN.format(wid))
    answered(page, wid)
    assert page.text_content(f"#{wid} .vsb-error[data-for='{field}']").startswith(message)
    # The same list in a link: refused with the same words, the defaults shown.
    forget_answer(page, wid)
    follow(page, hash_for(wid, {field: text}))
    answered(page, wid)
    shown = state(page, wid)
    assert message in shown["notice"] and shown["values"] == WIDGETS[wid].item.default_raw()


def test_a_lone_surrogate_in_a_field_breaks_nothing(live, widget_page):
    # The hash is written with encodeURIComponent now, which throws on a lone surrogate (text
    # pasted from a broken source); URLSearchParams wrote U+FFFD. The demo's label is drawn.
    watched = live(widget_page("demo-fill"))
    page = watched.page
    errors = len(watched.errors)
    page.evaluate("() => { document.querySelector(\"#demo-fill [name='label']\").value = "
                  "'A\\ud800B'; }")
    page.click(RUN.format("demo-fill"))
    answered(page, "demo-fill")
    assert_idle(page, "demo-fill")
    assert watched.errors[errors:] == []
    assert "%EF%BF%BD" in page.evaluate("location.hash") or state(page, "demo-fill")["notice"]


def test_a_setting_with_no_name_is_called_that(live, widget_page):
    wid = "paged-attention"
    page = live(widget_page(wid)).page
    follow(page, f"#{wid}.=5")
    page.wait_for_selector(f"#{wid} .vsb-notice:not([hidden])")
    notice = state(page, wid)["notice"]
    assert "a setting with no name" in notice and "unknown setting" not in notice


# 4. Bounds that can never be reached (tests/pages/framework/test_bounds.py holds every
# documented bound of every widget; here the two, through the page).
@pytest.mark.parametrize("wid, raw", [
    ("v1-scheduler", {"requests": "40/24", "budget": "64"}),
    ("prefill-decode", {"model": "mistral-7b", "prompt_len": "8192", "long_prompt": "16384"}),
], ids=["v1-scheduler", "prefill-decode"])
def test_a_documented_maximum_runs(live, widget_page, wid, raw):
    page = live(widget_page(wid)).page
    fill(page, wid, raw)
    page.click(RUN.format(wid))
    answered(page, wid)
    full = dict(WIDGETS[wid].item.default_raw(), **raw)
    shown = state(page, wid)
    assert shown["values"] == full and shown["notice"] == ""
    assert json.loads(shown["frames"]) == frames_for(wid, full)
    assert page.evaluate("wid => [...document.querySelectorAll(`#${wid} .vsb-error`)]"
                         ".map(e => e.textContent).join('')", wid) == ""


def test_a_request_past_the_budgets_maximum_is_refused_where_it_is_typed(live, widget_page):
    wid = "v1-scheduler"
    page = live(widget_page(wid)).page
    fill(page, wid, {"requests": "40/40", "budget": "64"})
    page.click(RUN.format(wid))
    answered(page, wid)
    assert page.text_content(f"#{wid} .vsb-error[data-for='requests']") == (
        "requests: request 1: prompt + output must be at most 64 tokens")


# 5. Messages on the wrong field.
def cross_field_refusal(item):
    """(field, raw, errors): the first one-field change of the defaults, to one of the field's
    bounds or choices, that a check refuses under another field's name; None if none is."""
    for p in item.params:
        if p.kind in ("choice", "bool"):
            options = [v for v, _ in p.choices] if p.kind == "choice" else ["true", "false"]
        else:
            options = [raw for _, raw in p.bounds()]
        for alt in options:
            raw = dict(item.default_raw(), **{p.name: alt})
            _, errors = validate(item, raw)
            if errors and p.name not in errors and any(errors):
                return p.name, alt, errors
    return None


@pytest.mark.parametrize("wid", IDS)
def test_a_refusal_shows_beside_the_field_the_reader_changed(live, widget_page, wid):
    found = cross_field_refusal(WIDGETS[wid].item)
    if found is None:
        pytest.skip("no one-field change is refused under another field's name")
    name, alt, errors = found
    page = live(widget_page(wid)).page
    fill(page, wid, {name: alt})
    page.click(RUN.format(wid))
    answered(page, wid)
    beside = lambda field: page.text_content(f"#{wid} .vsb-error[data-for='{field}']")  # noqa: E731
    for field, message in errors.items():
        if field:
            assert beside(field) == message               # where the check puts it
    assert beside(name) == " ".join(m for f, m in errors.items() if f)   # and where typed
    assert page.get_attribute(f"#{wid} [name='{name}']", "aria-invalid") == "true"


# 7. PyScript for authors: examples/pyscript/index.html, on an author's host (another
# origin), with PyScript from the npm package and the Pyodide and wheel the site serves.
EXAMPLE = testsite.ROOT / "examples" / "pyscript" / "index.html"
PYSCRIPT = testsite.ROOT / "node_modules" / "@pyscript" / "core" / "dist"
PLACEHOLDER = "https://vllm-step-by-step.example/"


def example_python() -> str:
    return re.search(r'<script type="py"[^>]*>(.*?)</script>', EXAMPLE.read_text(), re.S)[1]


def run_example_in_cpython(monkeypatch) -> dict:
    """The page's own Python, run here with pyscript and pyodide_js stood in: what it
    displays, by target."""
    shown: dict = {}

    class Element:
        textContent = ""

    status = Element()
    pyscript = types.ModuleType("pyscript")
    pyscript.config = {"interpreter": PLACEHOLDER + "_runtime/pyodide/pyodide.mjs"}
    pyscript.HTML = lambda html: ("html", html)
    pyscript.display = lambda value, target, append: shown.__setitem__(target, value)
    pyscript.document = types.SimpleNamespace(getElementById=lambda _: status)
    pyodide_js = types.ModuleType("pyodide_js")

    async def load_package(url):
        shown["wheel"] = url

    pyodide_js.loadPackage = load_package
    monkeypatch.setitem(sys.modules, "pyscript", pyscript)
    monkeypatch.setitem(sys.modules, "pyodide_js", pyodide_js)
    code = compile(example_python(), str(EXAMPLE), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    # Top-level await, as PyScript runs it; in a thread of its own, as Playwright's loop runs
    # in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(eval(code, {}))).result()
    shown["status"] = status.textContent
    return shown


def watch(page) -> dict:
    """Requests to other hosts and script errors, as tests/browser/conftest.py's Watched."""
    watched: dict = {"foreign": [], "errors": []}
    page.on("request", lambda r: r.url.startswith(("http://127.0.0.1:", "data:", "blob:"))
            or watched["foreign"].append(r.url))
    page.on("console", lambda m: m.type == "error" and watched["errors"].append(m.text))
    page.on("pageerror", lambda e: watched["errors"].append(str(e)))
    return watched


def test_the_pyscript_example_runs_offline_against_the_built_site(context, site, monkeypatch,
                                                                   tmp_path):
    if not PYSCRIPT.is_dir():
        pytest.fail("no node_modules/@pyscript/core: run ./dev setup (npm ci)")
    expected = run_example_in_cpython(monkeypatch)
    assert expected["wheel"] == PLACEHOLDER + "_runtime/" + wheel.filename()
    assert (site / "_runtime" / wheel.filename()).exists()
    site_url, site_server = testsite.serve(site, cors=True)
    author = tmp_path / "author"
    shutil.copytree(PYSCRIPT, author / "pyscript", ignore=shutil.ignore_patterns("*.map"))
    (author / "index.html").write_text(EXAMPLE.read_text().replace(PLACEHOLDER, site_url))
    author_url, author_server = testsite.serve(author)
    page = context.new_page()
    watched = watch(page)
    try:
        page.goto(author_url)
        page.wait_for_function("document.getElementById('status').textContent"
                               ".startsWith('Python is ready')",
                               timeout=testsite.PYTHON_TIMEOUT_MS)
        assert page.text_content("#status") == expected["status"]
        assert page.text_content("#table") == expected["table"]
        assert "B.1" in expected["table"] and "B.2" in expected["table"]
        _, svg = expected["frame"]
        drawn = page.evaluate("""() => {
            const svg = document.querySelector('#frame svg');
            return { label: svg.getAttribute('aria-label'), text: svg.textContent };
        }""")
        root = ET.fromstring(svg)
        assert drawn == {"label": root.get("aria-label"), "text": "".join(root.itertext())}
        # The pictures take the site's palette from its stylesheet.
        fill = page.evaluate("getComputedStyle(document.documentElement)"
                             ".getPropertyValue('--vsb-seq-0').trim()")
        assert fill.startswith("#")
    finally:
        page.close()
        site_server.shutdown()
        author_server.shutdown()
    assert not watched["foreign"], watched["foreign"]
    assert not watched["errors"], watched["errors"]


def test_the_sites_own_pages_never_load_pyscript(site):
    assert not (site / "_runtime" / "pyscript").exists()
    for html in site.rglob("*.html"):
        text = html.read_text(encoding="utf-8")
        assert not re.search(r"<script[^>]*pyscript|type=\"py\"", text), html


def test_the_instructors_page_shows_the_tested_example(site):
    text = (site / "instructors" / "index.html").read_text(encoding="utf-8")
    section = text[text.index('id="the-simulation-in-your-own-pyscript-page"'):]
    code = re.search(r"<pre>.*?<code>(.*?)</code>", section, re.S)[1]
    plain = re.sub(r"<[^>]+>", "", code)
    assert html_lib.unescape(plain).strip() == EXAMPLE.read_text().strip()
