"""Screenshots of the built site in headless Chromium: light and dark, desktop and phone.

    .venv/bin/python bench/screenshots.py [PATH ...] [--out bench/out/shots] [--full]

PATHs are site paths such as "" (home), "about/", "paged-attention/"; default: every page
of the test build (real pages plus the test-only demo page). Widget pages are shot once
Python is ready. Writes <out>/<page>-<light|dark>-<desktop|phone>.png; open them with an
image viewer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "browser"))

import testsite  # noqa: E402

SIZES = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
SCHEMES = ("light", "dark")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="*")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "shots")
    parser.add_argument("--full", action="store_true", help="whole page, not just the first screen")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    site = testsite.build_test_site(ROOT / "bench" / "out")
    paths = args.paths or testsite.page_paths(site)
    base, server = testsite.serve(site)
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = testsite.launch(p)
        for scheme in SCHEMES:
            for size, viewport in SIZES.items():
                # mkdocs-material follows prefers-color-scheme until the reader toggles.
                context = browser.new_context(viewport=viewport, color_scheme=scheme,
                                              device_scale_factor=1, is_mobile=size == "phone")
                for path in paths:
                    page = context.new_page()
                    page.goto(base + path)
                    wids = page.eval_on_selector_all(".vsb-widget", "els => els.map(e => e.id)")
                    for wid in wids:
                        page.wait_for_selector(
                            f'#{wid}[data-python="ready"], #{wid}[data-python="failed"]',
                            timeout=testsite.PYTHON_TIMEOUT_MS)
                    name = (path.strip("/").replace("/", "_") or "home")
                    target = args.out / f"{name}-{scheme}-{size}.png"
                    page.screenshot(path=str(target), full_page=args.full)
                    print(target)
                    page.close()
                context.close()
        browser.close()
    server.shutdown()


if __name__ == "__main__":
    main()
