"""For teachers: widgets embedded on another site with embed.js size themselves and take the
embed options; the simulation's wheel installs in the vendored Pyodide, from the built site,
and gives CPython's block tables."""

import http.server
import json
import threading

import pytest

pytest.importorskip("playwright.sync_api", reason="pip install -e '.[site]'")


from pages.framework import wheel  # noqa: E402

EMBEDDED = [("paged-attention/", "paged-attention", ""),
            ("preemption/", "preemption", "&theme=dark"),
            ("kv-cache/", "kv-cost", "&controls=minimal")]


class _Host(http.server.BaseHTTPRequestHandler):
    """Another origin: a course page that embeds three widgets with the site's embed.js."""
    page = b""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def host(base_url):
    frames = "".join(
        f'<h2>{wid}</h2><iframe id="f-{wid}" src="{base_url}{path}?embed={wid}{opts}" '
        f'data-vsb-embed width="100%" height="300" style="border:0;width:100%" '
        'sandbox="allow-scripts allow-same-origin allow-forms allow-popups allow-downloads">'
        '</iframe>'
        for path, wid, opts in EMBEDDED)
    page = (f'<!doctype html><meta charset="utf-8"><title>A course page</title>'
            f'<body style="max-width:760px">{frames}'
            f'<script src="{base_url}js/embed.js" async></script></body>').encode()
    handler = type("Host", (_Host,), {"page": page})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def content_height(page, wid):
    frame = page.frame_locator(f"#f-{wid}")
    box = frame.locator(".vsb-embed-root").bounding_box()
    return box["height"]


def frame_height(page, wid):
    return page.evaluate("id => document.getElementById(id).getBoundingClientRect().height",
                         f"f-{wid}")


def wait_fitted(page, wid, timeout_s=30.0):
    """Until the iframe's height is its content's (the frame is another origin: measured
    from each side)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        inner = content_height(page, wid)
        if abs(frame_height(page, wid) - inner) <= 4:
            return
        assert time.monotonic() < deadline, (wid, frame_height(page, wid), inner)
        page.wait_for_timeout(200)


def test_embedded_widgets_fit_their_content_and_take_the_options(context, base_url, host):
    page = context.new_page()
    foreign = []
    page.on("request", lambda r: None if r.url.startswith("http://127.0.0.1:")
            or r.url.startswith(("data:", "blob:")) else foreign.append(r.url))
    page.goto(host)
    for _, wid, _ in EMBEDDED:
        page.frame_locator(f"#f-{wid}").locator(f'#{wid}[data-stepping="ready"]').wait_for()
        wait_fitted(page, wid)
        assert abs(frame_height(page, wid) - content_height(page, wid)) <= 4
    # theme=dark and controls=minimal took effect.
    dark = page.frame_locator("#f-preemption").locator("body")
    assert dark.get_attribute("data-md-color-scheme") == "slate"
    minimal = page.frame_locator("#f-kv-cost")
    assert not minimal.locator("#kv-cost .vsb-form").is_visible()
    full = page.frame_locator("#f-paged-attention")
    assert full.locator("#paged-attention .vsb-form").is_visible()
    # A setting that makes the picture taller: the iframe follows.
    frame = page.frame_locator("#f-paged-attention")
    before = frame_height(page, "paged-attention")
    frame.locator('[name="num_gpu_blocks"]').fill("32")
    frame.locator(".vsb-run").click()
    frame.locator('#paged-attention[data-python="ready"]').wait_for(timeout=60_000)
    page.wait_for_function(
        """h => document.getElementById('f-paged-attention').getBoundingClientRect().height
                 > h + 20""", arg=before, timeout=60_000)
    wait_fitted(page, "paged-attention")
    assert abs(frame_height(page, "paged-attention") - content_height(page, "paged-attention")) <= 4
    # The attribution and the way back to the site travel with the widget.
    source = frame.locator(".vsb-source")
    assert "CC BY 4.0" in source.text_content()
    assert "paged-attention" in source.locator("a").first.get_attribute("href")
    page.close()
    assert not foreign, foreign


def test_the_wheel_installs_in_the_vendored_pyodide(context, base_url, site):
    """The wheel served from the site, installed into the site's own Pyodide (no network but
    the local server), runs a scenario whose block tables equal CPython's."""
    name = wheel.filename()
    assert (site / "_runtime" / name).exists()
    from sim.studies.scenarios import get_scenario
    engine = get_scenario("fig8").build_engine()
    engine.run()
    expected = engine.snapshot(with_slots=False)["requests"]
    page = context.new_page()
    page.goto(base_url + "about/")
    got = page.evaluate("""async ([base, name]) => {
        const { loadPyodide } = await import(base + "_runtime/pyodide/pyodide.mjs");
        const pyodide = await loadPyodide({ indexURL: base + "_runtime/pyodide/" });
        await pyodide.loadPackage(base + "_runtime/" + name);
        return pyodide.runPython(`
import json
from sim.studies.scenarios import get_scenario
engine = get_scenario("fig8").build_engine()
engine.run()
json.dumps(engine.snapshot(with_slots=False)["requests"])
`);
    }""", [base_url, name])
    page.close()
    assert json.loads(got) == json.loads(json.dumps(expected))


def test_citations_and_embed_codes_carry_the_sites_address(open_page, base_url):
    """Built without a site URL, the BibTeX and the instructors' embed codes are completed
    with the address the reader sees, so what they copy works elsewhere."""
    page = open_page("preemption/").page
    bibtex = page.locator("pre.vsb-bibtex code").inner_text()
    assert f"url          = {{{base_url}preemption/}}," in bibtex
    page = open_page("instructors/").page
    code = page.locator("#instructors-preemption textarea").input_value()
    assert f'src="{base_url}preemption/?embed=preemption"' in code
    assert f'<script src="{base_url}js/embed.js"' in code
