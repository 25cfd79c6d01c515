"""Reading a widget on a phone and on a desktop: every label of every frame inside the picture,
text no smaller than 11 px, the Step button in one place and on the first screen."""

import pytest

pytest.importorskip("playwright.sync_api", reason="pip install -e '.[site]'")

import testsite  # noqa: E402
from testsite import wait_stepping  # noqa: E402

from pages.framework.widget import run  # noqa: E402

WIDGETS = testsite.all_widgets()
IDS = sorted(w for w in WIDGETS if not w.startswith("demo-"))
STEPPING = [w for w in IDS if len(run(WIDGETS[w].item, WIDGETS[w].item.defaults())) > 1]
SIZES = {"phone": (390, 844), "desktop": (1280, 800)}
MIN_FONT_PX = 11

# For every frame of the default trace: the smallest rendered font (user units times the
# picture's scale) and every text whose box leaves the picture's box.
MEASURE = """(wid) => {
  const root = document.getElementById(wid);
  const player = root.vsbPlayer;
  const out = {minFont: Infinity, outside: [], frames: player.frames.length};
  for (let i = 0; i < player.frames.length; i++) {
    player.show(i);
    const svg = root.querySelector('.vsb-picture svg');
    const box = svg.getBoundingClientRect();
    const scale = svg.getScreenCTM().a;
    for (const t of svg.querySelectorAll('text')) {
      if (!t.textContent.trim()) continue;
      const size = parseFloat(t.getAttribute('font-size') || getComputedStyle(t).fontSize);
      out.minFont = Math.min(out.minFont, size * scale);
      const r = t.getBoundingClientRect();
      if (r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1 ||
          r.bottom > box.bottom + 1) {
        out.outside.push(`frame ${i + 1}: "${t.textContent.slice(0, 40)}"`);
      }
    }
  }
  player.show(0);
  return out;
}"""


@pytest.fixture(scope="module", params=sorted(SIZES))
def sized(request, browser, base_url):
    width, height = SIZES[request.param]
    ctx = browser.new_context(viewport={"width": width, "height": height},
                              is_mobile=request.param == "phone")
    yield request.param, ctx
    ctx.close()


def open_widget(ctx, base_url, widget_page, wid):
    page = ctx.new_page()
    page.route("**/_runtime/**", lambda route: route.abort())
    page.goto(base_url + widget_page(wid))
    wait_stepping(page, wid)
    return page


@pytest.mark.parametrize("wid", IDS)
def test_every_label_fits_and_reads(sized, base_url, widget_page, wid):
    size, ctx = sized
    page = open_widget(ctx, base_url, widget_page, wid)
    m = page.evaluate(MEASURE, wid)
    page.close()
    assert not m["outside"], f"{size}: text outside the picture: {m['outside'][:5]}"
    assert m["minFont"] >= MIN_FONT_PX - 0.01, f"{size}: smallest text {m['minFont']:.1f} px"


@pytest.mark.parametrize("wid", STEPPING)
def test_the_step_button_stays_put_and_is_on_the_first_screen(sized, base_url, widget_page,
                                                             wid):
    size, ctx = sized
    page = open_widget(ctx, base_url, widget_page, wid)
    # The widget's title at the top of the viewport, as after following a link to it.
    page.evaluate("wid => document.querySelector(`#${wid} .vsb-title`).scrollIntoView()", wid)
    step = page.locator(f'#{wid} [data-act="step"]')
    viewport = page.viewport_size
    first = step.bounding_box()
    if size == "desktop":
        assert 0 <= first["y"] and first["y"] + first["height"] <= viewport["height"]
    positions = set()
    for _ in range(20):
        box = step.bounding_box()
        positions.add((round(box["x"]), round(box["y"])))
        if step.is_disabled():
            break
        step.click()
    page.close()
    assert len(positions) == 1, f"{size}: the Step button moved: {sorted(positions)}"
