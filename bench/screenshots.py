"""Screenshots of the built site in headless Chromium: light and dark, desktop and phone.

    .venv/bin/python bench/screenshots.py [PATH ...] [--out bench/out/shots] [--full] [--predict]

PATHs are site paths such as "" (home), "about/", "paged-attention/"; default: every page
of the test build (real pages plus the test-only demo page). Widget pages are shot once
Python is ready. Writes <out>/<page>-<light|dark>-<desktop|phone>.png; open them with an
image viewer. With --predict, each page's first widget is shot in predict mode instead, its
first question up (<page>-question-...png) and then answered wrong (<page>-answer-...png).
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
    parser.add_argument("--predict", action="store_true",
                        help="each page's first widget in predict mode: a question, then "
                             "its answer")
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
                    if args.predict and wids:
                        for target in predict_shots(page, wids[0], args.out, name, scheme, size):
                            print(target)
                        page.close()
                        continue
                    target = args.out / f"{name}-{scheme}-{size}.png"
                    page.screenshot(path=str(target), full_page=args.full)
                    print(target)
                    page.close()
                context.close()
        browser.close()
    server.shutdown()


def predict_shots(page, wid: str, out: Path, name: str, scheme: str, size: str) -> list[Path]:
    """Predict mode on `wid`: a shot with its first question up, one with it answered wrong
    (the verdict, the explanation and the marked options), each framed on the panel."""
    page.evaluate("localStorage.clear()")
    page.click(f'#{wid} [data-act="predict"]')
    # Step on to the first step with a question (a widget's first steps may ask nothing).
    for _ in range(12):
        if page.get_attribute(f"#{wid}", "data-question") == "asked":
            break
        page.click(f'#{wid} [data-act="step"]')
        page.wait_for_timeout(400)
    page.wait_for_selector(f'#{wid}[data-question="asked"]')
    shots = []
    for kind in ("question", "answer"):
        if kind == "answer":
            wrong = page.evaluate("""(wid) => {
                const root = document.getElementById(wid);
                const q = window.vsbPlayers[wid].predictor.pending.question;
                return (q.answer + 1) % q.options.length; }""", wid)
            page.click(f'#{wid} .vsb-predict-option >> nth={wrong}')
            page.wait_for_selector(f'#{wid}[data-question="answered"]')
        page.locator(f"#{wid} .vsb-predict").scroll_into_view_if_needed()
        page.evaluate("(wid) => document.querySelector(`#${wid} .vsb-predict`)"
                      ".scrollIntoView({block: 'center'})", wid)
        target = out / f"{name}-{kind}-{scheme}-{size}.png"
        page.screenshot(path=str(target))
        shots.append(target)
    return shots


if __name__ == "__main__":
    main()
