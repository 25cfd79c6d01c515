"""Animated steps (docs/js/transitions.js through the player, and the home page's preview):
keyed elements travel between their boxes, the picture at rest is the frame, reduced motion
steps without motion, fast presses never queue, the home page's picture plays and stops.

Parametrised over every stepping widget, like test_widgets.py."""

import pytest

pytest.importorskip("playwright.sync_api", reason="pip install -e '.[site]'")

import testsite  # noqa: E402
from testsite import state, wait_stepping  # noqa: E402

from pages.framework.widget import run  # noqa: E402

WIDGETS = testsite.all_widgets()
STEPPING = sorted(w for w in WIDGETS
                  if len(run(WIDGETS[w].item, WIDGETS[w].item.defaults())) > 1)

# The step, and the keyed element, with the longest move between two frames of the default
# trace: every frame shown by a jump, every keyed box measured (skipping shapes traced by
# their points and empty text, which do not travel). A move is of an edge: a bar that grows
# moves its right edge. Where nothing keyed moves, an element that arrives out of another
# (data-from) travels from that one's box to its own, in the stage of entries.
FIND_MOVE = """(wid) => {
  const root = document.getElementById(wid);
  const player = root.vsbPlayer;
  const boxes = () => {
    const svg = root.querySelector('.vsb-picture svg');
    const f = svg.getBoundingClientRect();
    const out = {};
    for (const el of svg.querySelectorAll('[data-k]')) {
      if (['path', 'line', 'polyline'].includes(el.localName)) continue;
      const r = el.getBoundingClientRect();
      if (!r.width && !r.height) continue;
      out[el.dataset.k] = { x: r.left - f.left, y: r.top - f.top, w: r.width, h: r.height,
                            nested: Boolean(el.parentElement.closest('[data-k]')),
                            shape: ['rect', 'circle', 'ellipse', 'polygon'].includes(el.localName)
                              && !el.querySelector('[data-k]') };
    }
    return out;
  };
  const origins = () => {
    const out = {};
    for (const el of root.querySelectorAll('.vsb-picture svg [data-from]')) {
      out[el.dataset.k] = el.dataset.from.split(" ");
    }
    return out;
  };
  const far = (p, q) => Math.max(Math.abs(p.x - q.x), Math.abs(p.y - q.y),
                                 Math.abs(p.x + p.w - q.x - q.w), Math.abs(p.y + p.h - q.y - q.h));
  let best = null;
  let grown = null;
  for (let s = 0; s + 1 < player.frames.length; s++) {
    player.go(s);
    const a = boxes();
    const all = {};
    for (const el of root.querySelectorAll('.vsb-picture svg [data-k]')) all[el.dataset.k] = true;
    player.go(s + 1);
    const b = boxes();
    for (const k of Object.keys(a)) {
      if (!b[k] || a[k].nested || b[k].nested) continue;
      // A shape stretches (any edge may move); text and groups travel at their size.
      if (a[k].shape ? Math.min(a[k].w, a[k].h, b[k].w, b[k].h) < 1
          : Math.abs(a[k].w - b[k].w) > 1 || Math.abs(a[k].h - b[k].h) > 1) continue;
      const d = far(a[k], b[k]);
      if (d > 4 && (!best || d > best.d)) {
        best = { step: s, key: k, d, from: a[k], to: b[k], stage: 'move' };
      }
    }
    if (best || grown) continue;
    for (const [k, from] of Object.entries(origins())) {
      if (all[k] || !b[k]) continue;
      const source = from.find((f) => all[f]);
      if (!source || !a[source]) continue;
      const d = far(a[source], b[k]);
      if (d > 4) grown = { step: s, key: k, d, from: a[source], to: b[k], stage: 'enter' };
    }
  }
  player.go(0);
  return best || grown;
}"""

BOX = """([wid, key]) => {
  const svg = document.querySelector(`#${wid} .vsb-picture svg`);
  const f = svg.getBoundingClientRect();
  const el = svg.querySelector(`[data-k="${CSS.escape(key)}"]`);
  const r = el.getBoundingClientRect();
  return { x: r.left - f.left, y: r.top - f.top, w: r.width, h: r.height };
}"""

# The markup a jump to the player's current frame gives (the frame's SVG, parsed as the
# picture parses it), next to the picture's own.
AT_REST = """(wid) => {
  const root = document.getElementById(wid);
  const player = root.vsbPlayer;
  const probe = document.createElement('div');
  probe.innerHTML = player.frames[player.step].svg;
  return { picture: root.querySelector('.vsb-picture').innerHTML, frame: probe.innerHTML,
           ghosts: root.querySelectorAll('.vsb-ghosts').length,
           animations: document.getAnimations().filter((a) =>
             a.effect?.target?.closest?.('.vsb-stage')).length };
}"""


def midpoint(page, wid, stage="move"):
    """Hold the current motion in the middle of one of its stages."""
    page.evaluate("""([wid, stage]) => {
        const m = document.getElementById(wid).vsbPlayer.motion;
        const [start, length] = m.plan[stage];
        m.seek(start + length / 2);
    }""", [wid, stage])


def between(a, b, x):
    lo, hi = min(a, b), max(a, b)
    return lo - 0.5 <= x <= hi + 0.5


def strictly_between(a, b, x):
    return min(a, b) + 0.5 < x < max(a, b) - 0.5


def edges(box):
    return {"left": box["x"], "top": box["y"], "right": box["x"] + box["w"],
            "bottom": box["y"] + box["h"]}


def assert_mid_move(sample, move):
    """Every edge that moves is strictly between where it starts and ends; the others stay
    within their two places."""
    start, end, now = edges(move["from"]), edges(move["to"]), edges(sample)
    for c in start:
        if abs(start[c] - end[c]) > 4:
            assert strictly_between(start[c], end[c], now[c]), (c, move, sample)
        else:
            assert between(start[c], end[c], now[c]), (c, move, sample)


# Animations of the widgets' pictures and the home page's (not the theme's own transitions).
ANIMATIONS = """() => document.getAnimations().filter((a) =>
    a.effect?.target?.closest?.('.vsb-stage, .vsb-showcase')).length"""


@pytest.fixture
def stepping_page(open_page, widget_page):
    def _open(wid, **kw):
        watched = open_page(widget_page(wid), block_python=True, **kw)
        wait_stepping(watched.page, wid)
        watched.page.locator(f"#{wid}").scroll_into_view_if_needed()
        return watched
    return _open


@pytest.mark.parametrize("wid", STEPPING)
def test_a_keyed_element_travels_between_its_boxes_and_the_picture_at_rest_is_the_frame(
        stepping_page, wid):
    watched = stepping_page(wid)
    page = watched.page
    move = page.evaluate(FIND_MOVE, wid)
    assert move, f"{wid}: no keyed element moves between two frames of its default trace"
    page.evaluate("([wid, s]) => document.getElementById(wid).vsbPlayer.go(s)",
                  [wid, move["step"]])
    page.click(f'#{wid} [data-act="step"]')
    assert page.evaluate("wid => Boolean(document.getElementById(wid).vsbPlayer.motion)", wid)
    # The narration is the new frame's from the start of the motion.
    assert state(page, wid)["narration"] == page.evaluate(
        "wid => { const p = document.getElementById(wid).vsbPlayer; "
        "return p.frames[p.step].narration; }", wid)
    midpoint(page, wid, move["stage"])
    assert_mid_move(page.evaluate(BOX, [wid, move["key"]]), move)
    page.evaluate("wid => document.getElementById(wid).vsbPlayer.motion.finish()", wid)
    rest = page.evaluate(AT_REST, wid)
    assert rest["picture"] == rest["frame"]
    assert rest["ghosts"] == 0 and rest["animations"] == 0
    # Back plays the same motion in reverse: the element travels back.
    page.click(f'#{wid} [data-act="back"]')
    # Going back, what arrived out of something goes back into it, in the stage of exits
    # (its copy is drawn under the picture; the picture's own element is the one travelling
    # when it moved).
    if move["stage"] == "move":
        midpoint(page, wid)
        assert_mid_move(page.evaluate(BOX, [wid, move["key"]]),
                        {"from": move["to"], "to": move["from"]})
    page.evaluate("wid => document.getElementById(wid).vsbPlayer.motion.finish()", wid)
    page.wait_for_function("wid => !document.getElementById(wid).vsbPlayer.motion", arg=wid)
    rest = page.evaluate(AT_REST, wid)
    assert rest["picture"] == rest["frame"] and rest["ghosts"] == 0
    assert watched.errors == []


@pytest.mark.parametrize("wid", ["paged-attention", "preemption", "prefix-caching"])
def test_a_transition_left_to_run_ends_on_the_frame(stepping_page, wid):
    watched = stepping_page(wid)
    page = watched.page
    for _ in range(3):
        page.click(f'#{wid} [data-act="step"]')
        page.wait_for_function("wid => !document.getElementById(wid).vsbPlayer.motion", arg=wid)
        rest = page.evaluate(AT_REST, wid)
        assert rest["picture"] == rest["frame"]
        assert rest["ghosts"] == 0 and rest["animations"] == 0
    assert watched.errors == []


@pytest.mark.parametrize("wid", STEPPING)
def test_twenty_fast_presses_end_on_the_right_frame(stepping_page, wid):
    watched = stepping_page(wid)
    page = watched.page
    count = state(page, wid)["count"]
    page.focus(f"#{wid}")
    for _ in range(20):
        page.keyboard.press("ArrowRight")
    assert state(page, wid)["step"] == min(20, count - 1)
    page.wait_for_function("wid => !document.getElementById(wid).vsbPlayer.motion", arg=wid)
    rest = page.evaluate(AT_REST, wid)
    assert rest["picture"] == rest["frame"] and rest["ghosts"] == 0
    assert rest["animations"] == 0
    assert watched.errors == []


def test_the_slider_reset_and_a_step_link_jump_without_motion(stepping_page):
    wid = "paged-attention"
    page = stepping_page(wid).page
    page.fill(f"#{wid} .vsb-scrub", "4")
    assert page.evaluate("wid => document.getElementById(wid).vsbPlayer.motion", wid) is None
    assert page.evaluate(ANIMATIONS) == 0
    page.click(f'#{wid} [data-act="reset"]')
    assert page.evaluate("wid => document.getElementById(wid).vsbPlayer.motion", wid) is None
    page.evaluate("h => { location.hash = h; }", f"{wid}.step=3")
    page.wait_for_function("wid => document.getElementById(wid).dataset.step === '2'", arg=wid)
    assert page.evaluate(ANIMATIONS) == 0


def test_speed_scales_the_motion(stepping_page):
    wid = "paged-attention"
    page = stepping_page(wid).page
    totals = {}
    for speed in ("1", "4"):
        page.select_option(f'#{wid} [data-act="speed"]', speed)
        page.evaluate("wid => document.getElementById(wid).vsbPlayer.go(1)", wid)
        page.click(f'#{wid} [data-act="step"]')
        totals[speed] = page.evaluate(
            "wid => document.getElementById(wid).vsbPlayer.motion.total", wid)
        page.evaluate("wid => document.getElementById(wid).vsbPlayer.motion.finish()", wid)
    assert 0 < totals["1"] <= 700 and totals["4"] == pytest.approx(totals["1"] / 4)


@pytest.fixture
def reduced(browser, base_url, widget_page):
    context = browser.new_context(viewport={"width": 1280, "height": 900},
                                  reduced_motion="reduce")
    yield context
    context.close()


@pytest.mark.parametrize("wid", ["paged-attention", "v1-scheduler"])
def test_reduced_motion_steps_without_animating(reduced, base_url, widget_page, wid):
    page = reduced.new_page()
    page.route("**/_runtime/**", lambda route: route.abort())
    page.goto(base_url + widget_page(wid))
    wait_stepping(page, wid)
    page.click(f'#{wid} [data-act="step"]')
    assert page.evaluate(ANIMATIONS) == 0
    assert page.evaluate("wid => document.getElementById(wid).vsbPlayer.motion", wid) is None
    rest = page.evaluate(AT_REST, wid)
    assert state(page, wid)["step"] == 1 and rest["picture"] == rest["frame"]


def test_an_embedded_widget_animates_too(stepping_page, open_page, widget_page):
    wid = "paged-attention"
    page = open_page(widget_page(wid) + f"?embed={wid}", block_python=True).page
    wait_stepping(page, wid)
    page.click(f'#{wid} [data-act="step"]')
    assert page.evaluate("wid => Boolean(document.getElementById(wid).vsbPlayer.motion)", wid)
    assert page.evaluate(ANIMATIONS) > 0


# -- the home page -------------------------------------------------------------------------

def test_the_home_page_picture_plays_by_itself_and_stops_on_interaction(open_page):
    watched = open_page("")
    page = watched.page
    page.wait_for_selector(".vsb-showcase[data-ready]")
    still = page.get_attribute(".vsb-showcase", "data-still")
    assert page.get_attribute(".vsb-showcase", "data-playing") == "true"
    page.wait_for_function(
        "s => document.querySelector('.vsb-showcase').dataset.step !== undefined "
        "&& document.querySelector('.vsb-showcase').dataset.step !== s", arg=still,
        timeout=10_000)
    # No Python on the home page: the frames are the build's.
    assert page.evaluate("typeof window.vsbPlayers") == "undefined"
    page.click(".vsb-showcase-play")
    assert page.get_attribute(".vsb-showcase", "data-playing") == "false"
    shown = page.get_attribute(".vsb-showcase", "data-step")
    page.wait_for_timeout(2500)
    assert page.get_attribute(".vsb-showcase", "data-step") == shown
    rest = page.evaluate("""() => {
        const s = document.querySelector('.vsb-showcase');
        const probe = document.createElement('div');
        probe.innerHTML = s.vsbShowcase.frames[s.vsbShowcase.step].svg;
        return [s.querySelector('.vsb-picture').innerHTML === probe.innerHTML,
                document.getAnimations().filter((a) =>
                  a.effect?.target?.closest?.('.vsb-showcase')).length];
    }""")
    assert rest == [True, 0]
    assert page.get_attribute(".vsb-showcase a.vsb-picture", "href").endswith("paged-attention/")
    assert watched.errors == []


def test_the_home_page_picture_stands_still_with_reduced_motion(reduced, base_url):
    page = reduced.new_page()
    page.goto(base_url)
    page.wait_for_selector(".vsb-showcase[data-ready]")
    assert page.get_attribute(".vsb-showcase", "data-playing") == "false"
    assert page.text_content(".vsb-showcase-play").strip() == "▶ Play"
    page.wait_for_timeout(2000)
    assert page.get_attribute(".vsb-showcase", "data-step") is None  # still the still frame
    page.click(".vsb-showcase-play")
    page.wait_for_function("document.querySelector('.vsb-showcase').dataset.step", timeout=5000)
    assert page.evaluate(ANIMATIONS) == 0
