"""Page-load benchmark: headless Chromium against the built site (a benchmark, not a test).

    .venv/bin/python bench/page_load.py [PATH ...] [--runs 5] [--out bench/out]

PATHs are widget pages such as "paged-attention/" (default: every page with a widget).

For every page with a widget (the test build: real pages plus the test-only demo page), and
for the references built in the same run, it loads the page `runs` times cold (a fresh
browser context: empty HTTP cache) and `runs` times warm (one context per page, after one
load to fill the cache), round-robin over all pages, and prints medians of:

- picture: first contentful paint (the first picture is inline, so this is when it shows)
- stepping: when the player has the default frames and Step works
- python: when the PyScript worker has started Python and answered a ping
- step: showing the next frame, its style and layout included (median of 10 steps); paint
  follows at the next display frame
- rebuild: a form submission through the worker, answer to frame shown (median of 3)
- KB: bytes the server sent for the load, Python start-up included

References, built in the same run from the same frames:
- "static page": the widget page itself (same theme, same text, same first SVG) with the
  widget runtime taken out: no player, no Python, and a few lines of JS that fetch and step
  the same frames. This isolates what the widget machinery costs.
- "static bare HTML": a bare HTML page with the same SVG and the same few lines of JS (no
  theme at all), to show what the theme itself costs.
- "bare pyodide": a page that only boots the vendored Pyodide in a worker.
Goals (issue 3): picture and stepping within 1.5x of the static page, python within 1.2x of
bare Pyodide, step under 16 ms. The ratios are printed under the table.
"""

from __future__ import annotations

import argparse
import functools
import html
import http.server
import json
import re
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "browser"))

import testsite  # noqa: E402

STATIC_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="../css/widgets.css"><title>static reference</title></head>
<body><div class="vsb-picture">{svg}</div><p id="n">{narration}</p>
<button id="step">Step</button>
<script type="module">
const frames = await (await fetch("{frames}")).json();
let i = 0;
document.getElementById("step").onclick = () => {{
  i = Math.min(i + 1, frames.length - 1);
  document.querySelector(".vsb-picture").innerHTML = frames[i].svg;
  document.getElementById("n").textContent = frames[i].narration;
}};
performance.mark("vsb:stepping:static");
</script></body></html>
"""

BARE_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>bare pyodide</title></head>
<body><p>Booting Pyodide in a worker.</p>
<script type="module">
const src = `import {{ loadPyodide }} from "${{new URL("../_runtime/pyodide/pyodide.mjs", location.href)}}";
const py = await loadPyodide();
py.runPython("1 + 1");
postMessage("ready");`;
const worker = new Worker(URL.createObjectURL(new Blob([src], {{ type: "text/javascript" }})), {{ type: "module" }});
worker.onmessage = () => performance.mark("vsb:python-ready");
</script></body></html>
"""


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    sent = [0]

    def log_message(self, *args):
        pass

    def copyfile(self, source, outputfile):
        data = source.read()
        CountingHandler.sent[0] += len(data)
        outputfile.write(data)


def serve(site: Path):
    handler = functools.partial(CountingHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/", server


STEP_SCRIPT = """<script type="module">
const frames = await (await fetch("{frames}")).json();
let i = 0;
document.getElementById("vsb-ref-step").onclick = () => {{
  i = Math.min(i + 1, frames.length - 1);
  document.querySelector(".vsb-picture").innerHTML = frames[i].svg;
  document.getElementById("vsb-ref-n").textContent = frames[i].narration;
}};
performance.mark("vsb:stepping:static");
</script>"""


def add_references(site: Path, widget_path: str, widget_id: str) -> None:
    frames_file = f"{widget_id}.frames.json"
    frames = json.loads((site / widget_path / frames_file).read_text(encoding="utf-8"))
    ref = site / "_bench"
    ref.mkdir(exist_ok=True)
    (ref / "static.html").write_text(STATIC_PAGE.format(
        svg=frames[0]["svg"], narration=frames[0]["narration"],
        frames=f"../{widget_path}{frames_file}"), encoding="utf-8")
    (ref / "bare.html").write_text(BARE_PAGE.format(), encoding="utf-8")
    # The themed page without its widget runtime, next to it so relative URLs still work.
    page = (site / widget_path / "index.html").read_text(encoding="utf-8")
    page = re.sub(r"<script>\s*performance\.mark\(\"vsb:boot\"\).*?</script>", "", page,
                  flags=re.S)
    page = re.sub(r'<script type="module" async src="[^"]*player\.js"></script>', "", page)
    page = re.sub(r'<link rel="preload"[^>]*frames\.json"[^>]*>', "", page)
    start = page.index(f'<div class="vsb-widget')
    depth, end = 0, None
    for m in re.finditer(r"<div\b|</div>", page[start:]):
        depth += 1 if m.group(0) != "</div>" else -1
        if depth == 0:
            end = start + m.end()
            break
    static = (f'<div class="vsb-picture">{frames[0]["svg"]}</div>'
              f'<p id="vsb-ref-n">{html.escape(frames[0]["narration"])}</p>'
              f'<button id="vsb-ref-step">Step</button>'
              + STEP_SCRIPT.format(frames=frames_file))
    (site / widget_path / "static-ref.html").write_text(page[:start] + static + page[end:],
                                                         encoding="utf-8")


MEASURE = """async ([wid, steps]) => {
  const mark = (name) => performance.getEntriesByName(name)[0]?.startTime ?? null;
  const fcp = performance.getEntriesByName("first-contentful-paint")[0]?.startTime ?? null;
  const out = { picture: fcp, stepping: mark(`vsb:stepping:${wid}`), python: mark("vsb:python-ready"),
                step: null, rebuild: null };
  const player = window.vsbPlayers?.[wid];
  if (player && player.frames.length > 1) {
    const times = [];
    for (let i = 0; i < steps; i++) {
      const t = performance.now();
      player.show((player.step + 1) % player.frames.length);
      player.picture.getBoundingClientRect(); // style and layout of the new frame
      times.push(performance.now() - t);
      await new Promise(requestAnimationFrame); // let it paint before the next step
    }
    times.sort((a, b) => a - b);
    out.step = times[Math.floor(times.length / 2)];
  }
  if (player && player.py) {
    const times = [];
    for (let i = 0; i < 3; i++) {
      const t = performance.now();
      await player.submit();
      await new Promise(requestAnimationFrame);
      times.push(performance.now() - t);
    }
    times.sort((a, b) => a - b);
    out.rebuild = times[1];
  }
  return out;
}"""


def load_once(context, url: str, wid: str, wait: str) -> dict:
    CountingHandler.sent[0] = 0
    page = context.new_page()
    page.goto(url)
    page.wait_for_function(f"performance.getEntriesByName({wait!r}).length > 0",
                           timeout=testsite.PYTHON_TIMEOUT_MS)
    page.wait_for_function("performance.getEntriesByName('first-contentful-paint').length > 0")
    result = page.evaluate(MEASURE, [wid, 10])
    page.wait_for_load_state("networkidle")
    result["KB"] = CountingHandler.sent[0] / 1024
    page.close()
    return result


def measure_all(browser, targets, runs: int) -> dict[str, dict[str, dict]]:
    """Cold and warm medians per target. The loads go round-robin over the targets, so a
    machine that speeds up or slows down during the run affects every page and every
    reference alike (the references are what the ratios divide by)."""
    cold: dict[str, list] = {label: [] for label, *_ in targets}
    for _ in range(runs):
        for label, url, wid, wait in targets:
            context = browser.new_context()
            cold[label].append(load_once(context, url, wid, wait))
            context.close()
    contexts = {}
    for label, url, wid, wait in targets:
        contexts[label] = browser.new_context()
        load_once(contexts[label], url, wid, wait)  # fill the cache
    warm: dict[str, list] = {label: [] for label, *_ in targets}
    for _ in range(runs):
        for label, url, wid, wait in targets:
            warm[label].append(load_once(contexts[label], url, wid, wait))
    for context in contexts.values():
        context.close()
    return {label: {"cold": medians(cold[label]), "warm": medians(warm[label])}
            for label, *_ in targets}


def medians(results: list[dict]) -> dict:
    out = {}
    for key in results[0]:
        values = [r[key] for r in results if r[key] is not None]
        out[key] = statistics.median(values) if values else None
    return out


def simulation_times(runs: int) -> list[tuple[str, float]]:
    """Each widget's default scenario, built in CPython (ms, median)."""
    from pages.framework.widget import run

    rows = []
    for wid, entry in sorted(testsite.all_widgets().items()):
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            run(entry.item, entry.item.defaults())
            times.append((time.perf_counter() - start) * 1000)
        rows.append((wid, statistics.median(times)))
    return rows


def fmt(x, digits=0) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="*")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    site = testsite.build_test_site(args.out)
    pages = testsite.widget_pages(site)  # widget id -> page
    by_page: dict[str, str] = {}
    for wid, path in sorted(pages.items()):
        if not args.paths or path in args.paths:
            by_page.setdefault(path, wid)  # time each page once, through its first widget
    first_path, first_wid = next(iter(sorted(by_page.items())))
    add_references(site, first_path, first_wid)
    base, server = serve(site)
    targets = [(f"{path} ({wid})", base + path, wid, "vsb:python-ready") for path, wid in sorted(by_page.items())]
    targets.append((f"static page ({first_path})", base + first_path + "static-ref.html", "static",
                    "vsb:stepping:static"))
    targets.append((f"static bare HTML ({first_wid})", base + "_bench/static.html", "static",
                    "vsb:stepping:static"))
    targets.append(("bare pyodide reference", base + "_bench/bare.html", "", "vsb:python-ready"))

    rows = []
    with sync_playwright() as p:
        browser = testsite.launch(p)
        print(f"measuring {len(targets)} pages, {args.runs} rounds ...", file=sys.stderr)
        results = measure_all(browser, targets, args.runs)
        for label, *_ in targets:
            for mode in ("cold", "warm"):
                rows.append((label, mode, results[label][mode]))
        browser.close()
    server.shutdown()

    print(f"\nmedians of {args.runs} loads, ms (KB: bytes sent by the server)\n")
    head = ("page", "load", "picture", "stepping", "python", "step", "rebuild", "KB")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for label, mode, r in rows:
        cells = [label, mode, fmt(r["picture"]), fmt(r["stepping"]), fmt(r["python"]),
                 fmt(r["step"], 1), fmt(r["rebuild"], 1), fmt(r["KB"])]
        print("| " + " | ".join(cells) + " |")
    ref = {mode: r for label, mode, r in rows if label.startswith("static page")}
    bare = {mode: r for label, mode, r in rows if label.startswith("bare pyodide")}
    print("\nratios (goal: picture and stepping <= 1.5x the static page, python <= 1.2x bare "
          "Pyodide, step < 16 ms)\n")
    for label, mode, r in rows:
        if label.startswith(("static", "bare")):
            continue
        def ratio(key, base):
            return ("-" if r[key] is None or not base[mode][key] else
                    f"{r[key] / base[mode][key]:.2f}x")
        print(f"- {label} {mode}: picture {ratio('picture', ref)}, stepping "
              f"{ratio('stepping', ref)}, python {ratio('python', bare)}, step "
              f"{fmt(r['step'], 1)} ms")
    print("\nsimulation in CPython, default scenario (ms, median of 5)\n")
    for wid, ms in simulation_times(5):
        print(f"- {wid}: {ms:.2f}")


if __name__ == "__main__":
    main()
