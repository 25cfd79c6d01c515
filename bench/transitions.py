"""Transition benchmark: how smoothly each widget's steps animate (a benchmark, not a test).

    .venv/bin/python bench/transitions.py [WIDGET ...] [--steps 6] [--site DIR]
                                          [--record WIDGET:STEP ...] [--out bench/out]

For every widget with more than one frame (or those named), on its page in headless Chromium
at a desktop viewport (1280 x 900), it presses Step on the first `steps` steps of the default
trace (docs/js/transitions.js through the player), once with the CPU at full speed and once
slowed 4x (CDP Emulation.setCPUThrottlingRate), and prints per widget:

- fps: display frames per second while the motion runs (requestAnimationFrame callbacks over
  the transition's length; the median over the steps, and the worst step);
- setup: the press itself, the synchronous task that measures the old picture, puts the new
  frame in, measures it and starts the animations (the longest over the steps); beside it,
  jump: the same step without motion (the frame put in and laid out, as the slider does),
  measured just before, so the cost of the motion itself is setup - jump;
- frame: the longest gap between two display frames during a motion (a task, style, layout
  and paint together: what the reader sees as a hitch);
- long: tasks of 50 ms or more reported by the browser (Long Tasks API) during the motions.

Goals (issue 21): at least 55 fps and no task over 50 ms, unthrottled.

`--record WIDGET:STEP` (STEP 1-based, the step the press goes to) takes 10 screenshots
spread over that one transition (the motion held at each instant) and a contact sheet of
them, into OUT/transitions/, to look at the motion frame by frame.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "browser"))
sys.path.insert(0, str(ROOT))

import testsite  # noqa: E402

# Press Step at `step` and watch the motion: display frames, long tasks, the press's own
# time. The player is jumped (no motion) to `step` first.
MEASURE = """async ([wid, step]) => {
  const root = document.getElementById(wid);
  const player = root.vsbPlayer;
  player.pause();
  const settle = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  player.go(step);
  await settle();
  const j0 = performance.now();
  player.go(step + 1);
  root.querySelector(".vsb-picture svg").getBoundingClientRect();
  const jump = performance.now() - j0;
  player.go(step);
  await settle();
  const long = [];
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) long.push(e.duration);
  });
  observer.observe({ type: "longtask" });
  const stamps = [];
  let watching = true;
  const tick = (t) => { stamps.push(t); if (watching) requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  await new Promise((r) => requestAnimationFrame(r));
  const t0 = performance.now();
  root.querySelector('[data-act="step"]').click();
  const setup = performance.now() - t0;
  const motion = player.motion;
  const total = motion ? motion.total : 0;
  if (motion) await motion.finished;
  const t1 = performance.now();
  watching = false;
  await new Promise((r) => requestAnimationFrame(r));
  observer.disconnect();
  const during = stamps.filter((t) => t >= t0 && t <= t1 + 1);
  let gap = 0;
  for (let i = 1; i < during.length; i++) gap = Math.max(gap, during[i] - during[i - 1]);
  const span = during.length > 1 ? during[during.length - 1] - during[0] : 0;
  return { setup, jump, total, frames: during.length, span, gap,
           fps: span > 0 ? (during.length - 1) * 1000 / span : null,
           long: long.length ? Math.max(...long) : 0, longCount: long.length };
}"""

# The steps a press can go to: every step with motion of the first `count`.
SEEK = """([wid, fraction]) => {
  const motion = document.getElementById(wid).vsbPlayer.motion;
  if (motion) motion.seek(motion.total * fraction);
}"""


def measure(page, wid: str, steps: int) -> list[dict]:
    count = page.evaluate("wid => document.getElementById(wid).vsbPlayer.frames.length", wid)
    out = []
    for step in range(min(steps, count - 1)):
        r = page.evaluate(MEASURE, [wid, step])
        if r["total"]:
            out.append(r)
    return out


def summary(rows: list[dict]) -> dict:
    fps = [r["fps"] for r in rows if r["fps"]]
    return {
        "fps": statistics.median(fps) if fps else None,
        "fps_min": min(fps) if fps else None,
        "setup": max((r["setup"] for r in rows), default=0.0),
        "jump": max((r["jump"] for r in rows), default=0.0),
        "frame": max((r["gap"] for r in rows), default=0.0),
        "long": max((r["long"] for r in rows), default=0.0),
        "long_count": sum(r["longCount"] for r in rows),
        "steps": len(rows),
    }


def record(page, wid: str, step: int, out: Path, shots: int = 10) -> Path:
    """Screenshots of one transition (to 1-based `step`), and a contact sheet of them."""
    folder = out / "transitions"
    folder.mkdir(parents=True, exist_ok=True)
    page.evaluate("([wid, s]) => { const p = document.getElementById(wid).vsbPlayer; "
                  "p.pause(); p.go(s); }", [wid, step - 2])
    page.wait_for_timeout(100)
    page.click(f'#{wid} [data-act="step"]')
    stage = page.locator(f"#{wid} .vsb-stage")
    box = stage.bounding_box()
    images = []
    for k in range(shots):
        page.evaluate(SEEK, [wid, k / (shots - 1)])
        png = stage.screenshot(animations="allow")
        (folder / f"{wid}-step{step}-{k}.png").write_bytes(png)
        images.append(base64.b64encode(png).decode())
    page.evaluate("wid => document.getElementById(wid).vsbPlayer.motion?.finish()", wid)
    cells = "".join(
        f"<figure style='margin:2px'><img style='width:{box['width'] * 0.5:.0f}px' "
        f"src='data:image/png;base64,{img}'><figcaption>{k * 100 // (shots - 1)}%"
        "</figcaption></figure>" for k, img in enumerate(images))
    sheet = page.context.new_page()
    sheet.set_viewport_size({"width": int(5 * (box["width"] * 0.5 + 8)), "height": 300})
    sheet.set_content("<body style='margin:0;display:grid;grid-template-columns:repeat(5,auto);"
                      f"justify-content:start;font:12px sans-serif'>{cells}</body>")
    sheet.wait_for_timeout(200)
    path = folder / f"{wid}-step{step}-sheet.png"
    sheet.screenshot(path=str(path), full_page=True)
    sheet.close()
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("widgets", nargs="*", help="widget ids (default: every stepping widget)")
    p.add_argument("--steps", type=int, default=6, help="transitions measured per widget")
    p.add_argument("--site", type=Path, help="a built test site (default: build one)")
    p.add_argument("--record", nargs="*", default=[], metavar="WIDGET:STEP")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = p.parse_args(argv)

    from playwright.sync_api import sync_playwright

    work = None
    site = args.site
    if site is None:
        work = tempfile.TemporaryDirectory(prefix="vsb-transitions-")
        site = testsite.build_test_site(Path(work.name), demo=False)
    pages = testsite.widget_pages(site)
    widgets = args.widgets or sorted(pages)
    url, server = testsite.serve(site)
    results: dict[str, dict[str, dict]] = {}
    with sync_playwright() as pw:
        browser = testsite.launch(pw)
        for rate in (1, 4):
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            for wid in widgets:
                page = context.new_page()
                page.route("**/_runtime/**", lambda route: route.abort())  # no Python needed
                cdp = context.new_cdp_session(page)
                cdp.send("Emulation.setCPUThrottlingRate", {"rate": rate})
                page.goto(url + pages[wid])
                testsite.wait_stepping(page, wid)
                page.locator(f"#{wid}").scroll_into_view_if_needed()
                rows = measure(page, wid, args.steps)
                if rows:
                    results.setdefault(wid, {})[f"{rate}x"] = summary(rows)
                page.close()
            context.close()
        if args.record:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            for spec in args.record:
                wid, _, step = spec.partition(":")
                page = context.new_page()
                page.route("**/_runtime/**", lambda route: route.abort())
                page.goto(url + pages[wid])
                testsite.wait_stepping(page, wid)
                print("recorded", record(page, wid, int(step or 2), args.out))
                page.close()
            context.close()
        browser.close()
    server.shutdown()

    def cell(s: dict | None) -> str:
        if not s:
            return "| - | - | - | - | - "
        fps = f"{s['fps']:.0f} ({s['fps_min']:.0f})" if s["fps"] else "-"
        long = f"{s['long']:.0f} ({s['long_count']})" if s["long_count"] else "none"
        return f"| {fps} | {s['setup']:.0f} / {s['jump']:.0f} | {s['frame']:.0f} | {long} "

    print("| widget | fps median (worst) | setup / jump ms | longest frame ms | long tasks ms (n) "
          "| 4x: fps | setup / jump | frame | long |")
    print("|---|---|---|---|---|---|---|---|---|")
    ok = True
    for wid, by_rate in sorted(results.items()):
        one = by_rate.get("1x")
        print(f"| {wid} {cell(one)}{cell(by_rate.get('4x'))}|")
        if one and (one["fps_min"] is None or one["fps_min"] < 55 or one["long"] > 50
                    or one["setup"] > 50):
            ok = False
    print("goals (unthrottled): >= 55 fps, no task over 50 ms:", "met" if ok else "NOT met")
    if work is not None:
        work.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
