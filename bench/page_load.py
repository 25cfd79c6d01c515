"""Page-load benchmark: headless Chromium against the built site (a benchmark, not a test).

    .venv/bin/python bench/page_load.py [PATH ...] [--runs 5] [--out bench/out]

PATHs are widget pages such as "paged-attention/" (default: every page with a widget).

For every page with a widget (the test build: real pages plus the test-only demo page), and
for the references built in the same run, it loads the page `runs` times cold (a fresh
browser context: empty HTTP cache) and `runs` times warm (one context per page, after one
load to fill the cache), round-robin over all pages, and prints medians of:

- picture: first contentful paint (the first picture is inline, so this is when it shows)
- stepping: when the player has the default frames and Step works
- python: when the worker has started Python (restored from the build's snapshot, unless the
  row says "fresh": ?vsb-boot=fresh, from python.zip)
- step: showing the next frame, its style and layout included (median of 10 steps); paint
  follows at the next display frame
- rebuild: a form submission through the worker, answer to frame shown (median of 3)
- KB: bytes the server sent for the load, Python start-up included (a warm load: the
  browser's caches and the worker's Cache Storage filled by an earlier load)

References, built in the same run from the same frames:
- "static page": the widget page itself (same theme, same text, same first SVG) with the
  widget runtime taken out: no player, no Python, and a few lines of JS that fetch and step
  the same frames. This isolates what the widget machinery costs.
- "static bare HTML": a bare HTML page with the same SVG and the same few lines of JS (no
  theme at all), to show what the theme itself costs.
- "bare pyodide": a page that only boots the vendored Pyodide in a worker, as the site did
  before issue 16 (full python_stdlib.zip, the lock file fetched), from a copy of the npm
  package in _bench/pyodide/ so that nothing the site changes touches it.

And three measurements of their own (issue 16), medians of `runs`:
- visit: a cold first page, then the nav's link to a second widget page (Material's instant
  navigation): from the click until the second page's widget has Python ready, and until
  it steps;
- preset: a page opened at a "Try this" link of its own (settings the build rendered):
  from navigation start until the widget shows that link's frames, cold;
  and the same link clicked on the open page: from the click until it is shown.

Goals (issue 3 and 16), printed under the table with the ratios: picture and stepping within
1.5x of the static page; python cold at most 0.5x the bare Pyodide boot; the second page
of a visit Python-ready within 300 ms; a warm load under 500 KB; a preset shown within
1.5x the static page's stepping time; step under 16 ms.
"""

from __future__ import annotations

import argparse
import functools
import html
import http.server
import json
import re
import shutil
import statistics
import sys
import threading
import time
import urllib.parse
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

BARE_PAGE = """\
<!doctype html><html lang="en"><head><meta charset="utf-8"><title>bare pyodide</title></head>
<body><p>Booting Pyodide in a worker.</p>
<script type="module">
const src = `import {{ loadPyodide }} from "${{new URL("pyodide/pyodide.mjs", location.href)}}";
const py = await loadPyodide();
py.runPython("1 + 1");
postMessage("ready");`;
const worker = new Worker(URL.createObjectURL(new Blob([src], {{ type: "text/javascript" }})), \
{{ type: "module" }});
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
    # Today's boot, kept as it was: the npm package's files, untouched by the site's build.
    (ref / "pyodide").mkdir(exist_ok=True)
    for name in ("pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip",
                 "pyodide-lock.json"):
        shutil.copyfile(ROOT / "node_modules" / "pyodide" / name, ref / "pyodide" / name)
    # The themed page without its widget runtime, next to it so relative URLs still work.
    page = (site / widget_path / "index.html").read_text(encoding="utf-8")
    page = re.sub(r"<script>\s*performance\.mark\(\"vsb:boot\"\).*?</script>", "", page,
                  flags=re.S)
    page = re.sub(r'<script type="module" async src="[^"]*player\.js"[^>]*></script>', "", page)
    page = re.sub(r'<link rel="preload"[^>]*frames\.json"[^>]*>', "", page)
    start = page.index('<div class="vsb-widget')
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
  const out = { picture: fcp, stepping: mark(`vsb:stepping:${wid}`),
                python: mark("vsb:python-ready"), preset: mark(`vsb:preset:${wid}`),
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
    if wait.startswith("vsb:preset:"):
        # Step times are taken once Python is up on every row, so that a preset's steps do
        # not share the two cores with Pyodide's boot, which the other rows have finished.
        page.wait_for_function("performance.getEntriesByName('vsb:python-ready').length > 0",
                               timeout=testsite.PYTHON_TIMEOUT_MS)
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


VISIT = """async ([path, wid]) => {
  performance.clearMarks(`vsb:python-ready:${wid}`);
  performance.clearMarks(`vsb:stepping:${wid}`);
  window.__vsbClick = performance.now();
  document.querySelector(`nav.md-nav--primary a[href$='${path}']`).click();
}"""

SINCE_CLICK = """(names) => names.map((n) => {
  const m = performance.getEntriesByName(n)[0];
  return m ? m.startTime - window.__vsbClick : null;
})"""


def visit_once(browser, base: str, first: tuple[str, str], second: tuple[str, str]) -> dict:
    """A cold first page; then the nav's link to the second (instant navigation)."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(base + first[0])
    page.wait_for_function("performance.getEntriesByName('vsb:python-ready').length > 0",
                           timeout=testsite.PYTHON_TIMEOUT_MS)
    page.evaluate(VISIT, [second[0], second[1]])
    ready = f"vsb:python-ready:{second[1]}"
    page.wait_for_function(f"performance.getEntriesByName('{ready}').length > 0",
                           timeout=testsite.PYTHON_TIMEOUT_MS)
    python, stepping = page.evaluate(SINCE_CLICK, [f"vsb:python-ready:{second[1]}",
                                                   f"vsb:stepping:{second[1]}"])
    same = page.evaluate("performance.getEntriesByName('vsb:python-start').length") == 1
    context.close()
    return {"python": python, "stepping": stepping, "one_worker": same}


def preset_click_once(browser, url: str, wid: str, hash_: str) -> float:
    """The page open with its defaults; the preset's link followed on it (click to shown)."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector(f'#{wid}[data-stepping="ready"]')
    page.evaluate("""(h) => {
      window.__vsbClick = performance.now();
      const a = [...document.querySelectorAll('article a[href*="#"]')].find(
        (e) => !e.closest('.vsb-widget') && e.href.endsWith(h));
      if (a) a.click(); else location.hash = h;
    }""", hash_)
    page.wait_for_function(f"performance.getEntriesByName('vsb:preset:{wid}').length > 0")
    (shown,) = page.evaluate(SINCE_CLICK, [f"vsb:preset:{wid}"])
    context.close()
    return shown


def first_preset(site: Path, by_page: dict[str, str]) -> tuple[str, str, str] | None:
    """(page, widget, hash) of a "Try this" link the build rendered, preferring the pages
    timed; None when no page has one."""
    found = []
    for path in testsite.page_paths(site):
        text = (site / path / "index.html").read_text(encoding="utf-8")
        for wid, raw in re.findall(r'id="([^"]+)" data-widget="[^"]+" data-module="[^"]+" '
                                   r'data-frames="[^"]+" data-presets="([^"]*)"', text):
            presets = json.loads(html.unescape(raw))
            fields = presets[0]["fields"]
            hash_ = "#" + urllib.parse.urlencode({f"{wid}.{k}": v for k, v in fields.items()},
                                                 quote_via=urllib.parse.quote)
            found.append((path not in by_page, path, wid, hash_))
    return min(found)[1:] if found else None


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
    targets = [(f"{path} ({wid})", base + path, wid, "vsb:python-ready")
               for path, wid in sorted(by_page.items())]
    targets.append((f"static page ({first_path})", base + first_path + "static-ref.html", "static",
                    "vsb:stepping:static"))
    targets.append((f"static bare HTML ({first_wid})", base + "_bench/static.html", "static",
                    "vsb:stepping:static"))
    targets.append(("bare pyodide reference", base + "_bench/bare.html", "", "vsb:python-ready"))
    fresh_label = f"{first_path} ({first_wid}), fresh"
    targets.append((fresh_label, base + first_path + "?vsb-boot=fresh", first_wid,
                    "vsb:python-ready"))
    preset = first_preset(site, by_page)
    if preset:
        preset_label = f"preset {preset[0]}{preset[2]}"
        targets.append((preset_label, base + preset[0] + preset[2], preset[1],
                        f"vsb:preset:{preset[1]}"))
    widget_paths = sorted(set(pages.values()))
    visit = (first_path, first_wid), next(
        (p, w) for w, p in sorted(pages.items()) if p != first_path and p == min(
            q for q in widget_paths if q != first_path))

    rows = []
    with sync_playwright() as p:
        browser = testsite.launch(p)
        print(f"measuring {len(targets)} pages, {args.runs} rounds ...", file=sys.stderr)
        results = measure_all(browser, targets, args.runs)
        for label, *_ in targets:
            for mode in ("cold", "warm"):
                rows.append((label, mode, results[label][mode]))
        print("measuring the two-page visit and the preset click ...", file=sys.stderr)
        visits = [visit_once(browser, base, *visit) for _ in range(args.runs)]
        clicks = ([preset_click_once(browser, base + preset[0], preset[1], preset[2])
                   for _ in range(args.runs)] if preset else [])
        browser.close()
    server.shutdown()

    print(f"\nmedians of {args.runs} loads, ms (KB: bytes sent by the server)\n")
    head = ("page", "load", "picture", "stepping", "python", "preset", "step", "rebuild", "KB")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for label, mode, r in rows:
        cells = [label, mode, fmt(r["picture"]), fmt(r["stepping"]), fmt(r["python"]),
                 fmt(r["preset"]), fmt(r["step"], 1), fmt(r["rebuild"], 1), fmt(r["KB"])]
        print("| " + " | ".join(cells) + " |")
    visit_python = statistics.median(v["python"] for v in visits)
    visit_stepping = statistics.median(v["stepping"] for v in visits)
    print(f"\nvisit {visit[0][0]} -> {visit[1][0]} (instant navigation), from the click, "
          f"median of {len(visits)}: python ready {visit_python:.0f} ms, stepping "
          f"{visit_stepping:.0f} ms; one worker for the visit: "
          f"{all(v['one_worker'] for v in visits)}")
    if clicks:
        print(f"preset link clicked on {preset[0]} ({preset[2]}), click to shown, median of "
              f"{len(clicks)}: {statistics.median(clicks):.0f} ms")

    ref = {mode: r for label, mode, r in rows if label.startswith("static page")}
    bare = {mode: r for label, mode, r in rows if label.startswith("bare pyodide")}
    print("\nratios (goals: picture and stepping <= 1.5x the static page; python cold <= 0.5x "
          "bare Pyodide; step < 16 ms; a warm load < 500 KB; preset <= 1.5x the static page's "
          "stepping; second page of a visit <= 300 ms)\n")
    for label, mode, r in rows:
        if label.startswith(("static", "bare")):
            continue

        def ratio(key, base, of=None, r=r, mode=mode):
            value, ref_value = r[of or key], base[mode][key]
            return "-" if value is None or not ref_value else f"{value / ref_value:.2f}x"
        line = (f"- {label} {mode}: picture {ratio('picture', ref)}, stepping "
                f"{ratio('stepping', ref)}, python {ratio('python', bare)}, step "
                f"{fmt(r['step'], 1)} ms, {fmt(r['KB'])} KB")
        if r["preset"] is not None:
            line += f", preset {ratio('stepping', ref, 'preset')} of the static page's stepping"
        print(line)
    warm = [r["KB"] for label, mode, r in rows if mode == "warm"
            and not label.startswith(("static", "bare"))]
    cold_python = [r["python"] / bare["cold"]["python"] for label, mode, r in rows
                   if mode == "cold" and r["python"] and label.endswith(")")
                   and not label.startswith(("static", "bare", "preset"))]
    steps = [r["step"] for label, mode, r in rows if r["step"] is not None
             and not label.startswith(("static", "bare"))]
    print("\ngoals")
    print(f"- python cold / bare Pyodide cold: worst {max(cold_python):.2f}x (goal <= 0.5x)")
    print(f"- second page of a visit: {visit_python:.0f} ms to Python ready (goal <= 300 ms)")
    print(f"- warm load: worst {max(warm):.0f} KB (goal < 500 KB)")
    if preset:
        preset_cold = results[preset_label]["cold"]["preset"] / ref["cold"]["stepping"]
        print(f"- preset opened cold / static page stepping cold: {preset_cold:.2f}x "
              "(goal <= 1.5x)")
    print(f"- step: worst median {max(steps):.1f} ms (goal < 16 ms)")
    print("\nsimulation in CPython, default scenario (ms, median of 5)\n")
    for wid, ms in simulation_times(5):
        print(f"- {wid}: {ms:.2f}")


if __name__ == "__main__":
    main()
