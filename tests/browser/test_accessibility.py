"""axe-core (vendored from npm as a dev dependency) on every page, light and dark: no violation
of impact serious or critical, the theme's own search dialog included."""

from pathlib import Path

import pytest

pytest.importorskip("playwright.sync_api", reason="pip install -e '.[site]'")

import testsite  # noqa: E402

AXE = Path(testsite.ROOT) / "node_modules" / "axe-core" / "axe.min.js"
PAGES = testsite.all_page_paths()


@pytest.fixture(scope="module", params=["light", "dark"])
def scheme(request, browser):
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: npm ci installs axe-core (./dev test does)")
    ctx = browser.new_context(color_scheme=request.param, viewport={"width": 1280, "height": 900})
    yield request.param, ctx
    ctx.close()


def serious(page) -> list[str]:
    page.add_script_tag(path=str(AXE))
    found = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ['violations']});
        return r.violations.filter(v => ['serious', 'critical'].includes(v.impact))
          .map(v => `${v.id} (${v.impact}): ${v.nodes.length} nodes, e.g. ` +
               v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(' | '));
    }""")
    return found


@pytest.mark.parametrize("path", PAGES)
def test_no_serious_accessibility_violations(scheme, base_url, site, path):
    name, ctx = scheme
    page = ctx.new_page()
    page.route("**/_runtime/**", lambda route: route.abort())
    page.goto(base_url + path)
    page.wait_for_load_state("load")
    for wid in page.eval_on_selector_all(".vsb-widget", "els => els.map(e => e.id)"):
        testsite.wait_stepping(page, wid)
    found = serious(page)
    page.close()
    assert not found, f"{name} {path or 'home'}: " + "; ".join(found)


def test_the_search_dialog_has_a_name(scheme, base_url, site):
    name, ctx = scheme
    page = ctx.new_page()
    page.route("**/_runtime/**", lambda route: route.abort())
    page.goto(base_url)
    page.keyboard.press("/")           # Material opens its search on "/"
    found = serious(page)
    page.close()
    assert not found, f"{name} search open: " + "; ".join(found)


@pytest.mark.parametrize("wid", ["paged-attention", "kv-cost"])
def test_predict_mode_has_no_serious_violations(scheme, base_url, site, wid):
    """Predict mode (issue 25) with a question up, then with its answer marked."""
    name, ctx = scheme
    path = testsite.widget_pages(site)[wid]
    page = ctx.new_page()
    page.route("**/_runtime/**", lambda route: route.abort())
    page.goto(f"{base_url}{path}#{wid}.predict=1")
    testsite.wait_stepping(page, wid)
    page.evaluate("localStorage.clear()")
    if wid != "kv-cost":         # a calculator's only frame asks at once
        page.click(f'#{wid} [data-act="step"]')
    page.wait_for_selector(f'#{wid}[data-question="asked"]')
    asked = serious(page)
    page.click(f"#{wid} .vsb-predict-option")
    page.wait_for_selector(f'#{wid}[data-question="answered"]')
    answered = serious(page)
    page.close()
    assert not asked, f"{name} {wid} question: " + "; ".join(asked)
    assert not answered, f"{name} {wid} answer: " + "; ".join(answered)
