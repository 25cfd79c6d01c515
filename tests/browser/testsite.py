"""Build, serve and open the test site: the real docs plus one test-only page.

The test site is the real site with the demo page (vsb_demo_topic's widgets) added to the
nav, built with the real mkdocs.yml through INHERIT. Used by the browser tests (conftest.py),
bench/page_load.py and bench/screenshots.py.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DEMO_MODULE = "vsb_demo_topic"
DEMO_PAGE = """---
title: Demo widgets (test only)
description: A page that exists only in the test build.
---

# Demo widgets

[[widget: demo-fill]]

Text between two widgets.

[[widget: demo-sum]]

[[chart: demo-chart]]
"""
PYTHON_TIMEOUT_MS = 60_000  # Python starts in 3-6 s here; generous for a loaded CI machine
CHROMIUM = os.environ.get("VSB_CHROMIUM", "/usr/bin/chromium")
# Debian's chromium under Playwright: headless, and nothing that phones home.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def build_test_site(work: Path, *, demo: bool = True) -> Path:
    """Build into work/site and return it. `demo=False` builds the real site only."""
    work = Path(work).resolve()
    docs = work / "docs"
    if docs.exists():
        shutil.rmtree(docs)
    shutil.copytree(ROOT / "docs", docs)
    nav = real_nav()
    if demo:
        (docs / "vsb-demo.md").write_text(DEMO_PAGE, encoding="utf-8")
        nav.insert(1, {"Demo widgets (test only)": "vsb-demo.md"})
    config = {
        "INHERIT": str(ROOT / "mkdocs.yml"),
        "docs_dir": str(docs),
        "site_dir": str(work / "site"),
        "hooks": [str(ROOT / "pages" / "framework" / "hook.py")],
        "theme": {"custom_dir": str(ROOT / "overrides")},
        "watch": [],
        "nav": nav,
        "extra": {"topic_modules": [DEMO_MODULE] if demo else []},
    }
    import json  # YAML is a superset of JSON: no YAML writer needed

    cfg = work / "mkdocs.yml"
    cfg.write_text(json.dumps(config, indent=1), encoding="utf-8")
    pythonpath = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=pythonpath, NO_MKDOCS_2_WARNING="1")
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(cfg)],
                   cwd=ROOT, env=env, check=True)
    return work / "site"


def real_nav() -> list:
    """The nav of mkdocs.yml, read without a YAML library's custom tags getting in the way."""
    from mkdocs.config import load_config

    return list(load_config(str(ROOT / "mkdocs.yml")).nav or [])


def page_paths(site: Path) -> list[str]:
    """Every built page as a URL path ('' for the home page), the 404 page left out."""
    out = []
    for html in sorted(site.rglob("index.html")):
        rel = html.parent.relative_to(site).as_posix()
        if rel.startswith("_runtime") or rel.startswith("assets"):
            continue
        out.append("" if rel == "." else rel + "/")
    return out


def widget_pages(site: Path) -> dict[str, str]:
    """widget id -> the URL path of the first page that shows it."""
    found: dict[str, str] = {}
    for path in page_paths(site):
        text = (site / path / "index.html").read_text(encoding="utf-8")
        for wid in re.findall(r'class="vsb-widget[^"]*" id="([^"]+)"', text):
            found.setdefault(wid, path)
    return found


def all_widgets():
    """Every registered widget (the real topic modules and the demo), by id -> Entry."""
    from pages.framework import registry

    widgets, _ = registry.collect([DEMO_MODULE])
    return widgets


def all_page_paths():
    """The URL path of every Markdown page, known before the site is built."""
    docs = ROOT / "docs"
    paths = []
    for md in sorted(docs.rglob("*.md")):
        rel = md.relative_to(docs).with_suffix("").as_posix()
        if rel == "index":
            paths.append("")
        else:
            paths.append((rel[: -len("/index")] if rel.endswith("/index") else rel) + "/")
    return paths + ["vsb-demo/"]


def first_widgets() -> list[str]:
    """The first widget of each page, read from the Markdown before the site is built."""
    marker = re.compile(r"^\[\[widget:\s*([A-Za-z0-9_-]+)\s*\]\]\s*$", re.M)
    texts = [md.read_text(encoding="utf-8") for md in sorted((ROOT / "docs").rglob("*.md"))]
    found = [marker.search(t) for t in [*texts, DEMO_PAGE]]
    return sorted({m.group(1) for m in found if m})


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output readable
        pass


class _CorsHandler(_QuietHandler):
    """Lets pages of any origin fetch from it, as GitHub Pages does."""

    def end_headers(self):
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()


def serve(site: Path, *, cors: bool = False) -> tuple[str, http.server.ThreadingHTTPServer]:
    """Serve `site` on 127.0.0.1 on a free port; returns (base URL, server). `cors`: allow
    pages of other origins to fetch from it (Access-Control-Allow-Origin: *)."""
    handler = functools.partial(_CorsHandler if cors else _QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/", server


def serve_html(html: str) -> tuple[str, http.server.ThreadingHTTPServer]:
    """Serve one page, whatever the path, on another port of 127.0.0.1: another origin than
    the site's (a course page that embeds a widget, an author's page). Returns (URL, server)."""
    body = html.encode()

    class Page(_QuietHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/", server


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)


# Helpers for tests and scripts that drive a widget page.

def wait_stepping(page, wid):
    page.wait_for_selector(f'#{wid}[data-stepping="ready"]')


def wait_python(page, wid):
    page.wait_for_selector(f'#{wid}[data-python="ready"]', timeout=PYTHON_TIMEOUT_MS)


def state(page, wid) -> dict:
    """What the reader sees: step, picture, narration, counter, notice."""
    return page.evaluate(
        """(wid) => {
            const root = document.getElementById(wid);
            const notice = root.querySelector('.vsb-notice');
            return {
                step: Number(root.dataset.step),
                svg: root.querySelector('.vsb-picture').innerHTML,
                narration: root.querySelector('.vsb-narration').textContent,
                counter: root.querySelector('.vsb-counter').textContent,
                count: root.vsbPlayer.frames.length,
                notice: notice.hidden ? '' : notice.textContent,
                frames: JSON.stringify(root.vsbPlayer.frames),
                values: root.vsbPlayer.formValues(),
            };
        }""",
        wid,
    )


def variant_raw(widget) -> dict[str, str]:
    """Valid settings that differ from the defaults and change the trace, found by nudging
    one field at a time, so tests need nothing written per widget."""
    from pages.framework.widget import run, to_json, validate

    base = widget.default_raw()
    default_json = to_json(run(widget, widget.defaults()))
    for p in widget.params:
        for candidate in _nudges(p):
            raw = dict(base, **{p.name: candidate})
            values, errors = validate(widget, raw)
            if not errors and to_json(run(widget, values)) != default_json:
                return raw
    raise AssertionError(
        f"widget {widget.id}: no one-field change of the defaults changes its trace")


def _nudges(p) -> list[str]:
    if p.kind == "int":
        return [str(p.default + 1), str(p.default - 1)]
    if p.kind == "float":
        return [repr(p.default + 0.5), repr(p.default - 0.5)]
    if p.kind == "choice":
        return [v for v, _ in p.choices if v != p.default]
    if p.kind == "bool":
        return ["false" if p.default else "true"]
    return []


def invalid_field(widget) -> tuple[str, str, str] | None:
    """(field name, bad text, Python's message) for the first field that rejects text."""
    from pages.framework.widget import validate

    for p in widget.params:
        if p.kind in ("int", "float", "text"):
            _, errors = validate(widget, {p.name: "not-a-value!"})
            if p.name in errors:
                return p.name, "not-a-value!", errors[p.name]
    return None
