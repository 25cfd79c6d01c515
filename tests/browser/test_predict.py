"""Predict mode (issue 25, docs/js/predict.js): the keyboard alone answers right and wrong,
the answered step is revealed with the transition, the score counts, the answers are kept
in local storage and one click clears them, a permalink with `<id>.predict=1` and an embed
with `predict=1` start in predict mode, steps without a question play as usual, and a
calculator's only frame is covered until its question is answered. Python stays off: the
questions come with the pre-rendered frames."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("playwright.sync_api", reason="pip install -e '.[site]'")

import testsite  # noqa: E402

WID = "paged-attention"


def frames(site, path: str, wid: str) -> list[dict]:
    return json.loads((site / path / f"{wid}.frames.json").read_text(encoding="utf-8"))


def state(page, wid):
    return page.evaluate("""(wid) => {
        const root = document.getElementById(wid);
        return {step: Number(root.dataset.step), predict: root.dataset.predict,
                question: root.dataset.question || null, score: root.dataset.score,
                prompt: root.querySelector('.vsb-predict-prompt').textContent,
                verdict: root.querySelector('.vsb-predict-verdict')?.textContent || null,
                focus: document.activeElement.textContent,
                focusIsOption: document.activeElement.classList.contains('vsb-predict-option'),
                covered: root.querySelector('.vsb-picture').classList.contains('vsb-covered'),
                hash: location.hash};
    }""", wid)


def open_predicting(open_page, widget_page, wid, suffix=""):
    watched = open_page(f"{widget_page(wid)}{suffix}#{wid}.predict=1", block_python=True)
    testsite.wait_stepping(watched.page, wid)
    watched.page.evaluate("localStorage.clear()")
    return watched


def press_step(page, wid):
    page.focus(f'#{wid} [data-act="step"]')
    page.keyboard.press("Enter")


def choose(page, wid, index):
    """Tab from the first option to option `index` and press Enter: the keyboard only."""
    assert state(page, wid)["focusIsOption"], "the question should take the focus"
    for _ in range(index):
        page.keyboard.press("Tab")
    page.keyboard.press("Enter")


def test_a_permalink_starts_predict_mode_and_the_keyboard_answers_right_and_wrong(
        open_page, widget_page, site):
    page = open_predicting(open_page, widget_page, WID).page
    path = widget_page(WID)
    fr = frames(site, path, WID)
    asked = [i for i, f in enumerate(fr) if "question" in f]
    assert asked and asked[0] == 1
    s = state(page, WID)
    assert s["predict"] == "on" and page.is_visible(f"#{WID} .vsb-predict")
    press_step(page, WID)
    s = state(page, WID)
    first = fr[1]["question"]
    assert s["step"] == 0 and s["question"] == "asked" and s["prompt"] == first["prompt"]
    assert s["focus"] == first["options"][0]
    # The answer reveals the step as Step does: with the keyed transition (issue 21).
    page.evaluate("""(wid) => {
        const root = document.getElementById(wid);
        window.vsbMoved = false;
        new MutationObserver(() => { if (root.dataset.moving) window.vsbMoved = true; })
            .observe(root, {attributes: true, attributeFilter: ['data-moving']});
    }""", WID)
    choose(page, WID, first["answer"])
    s = state(page, WID)
    assert s["step"] == 1 and s["question"] == "answered"
    page.wait_for_function("() => window.vsbMoved")
    assert s["verdict"].startswith("Right") and s["score"] == "1/1"
    assert first["explanation"] in page.text_content(f"#{WID} .vsb-predict-result")
    assert first["code"] in page.text_content(f"#{WID} .vsb-predict-result code")
    # On to the next question with the right arrow, answered wrong.
    nxt = asked[1]
    for _ in range(nxt - 1):
        page.keyboard.press("ArrowRight")
    second = fr[nxt]["question"]
    s = state(page, WID)
    assert s["step"] == nxt - 1 and s["prompt"] == second["prompt"]
    choose(page, WID, (second["answer"] + 1) % len(second["options"]))
    s = state(page, WID)
    assert s["step"] == nxt and s["verdict"].startswith("Not this one")
    assert s["score"] == "1/2"
    assert "1 of 2 right this visit" in page.text_content(f"#{WID} .vsb-predict-score-text")
    right = page.locator(f"#{WID} .vsb-predict-option.vsb-right")
    assert right.text_content().startswith(second["options"][second["answer"]])
    assert "(the answer)" in right.text_content()


def test_steps_without_a_question_play_as_usual_and_answers_are_not_asked_twice(
        open_page, widget_page, site):
    wid = "prefix-caching"       # its default trace has frames without a question
    page = open_predicting(open_page, widget_page, wid).page
    fr = frames(site, widget_page(wid), wid)
    quiet = next(i for i in range(1, len(fr)) if "question" not in fr[i])
    page.evaluate("([wid, i]) => window.vsbPlayers[wid].show(i)", [wid, quiet - 1])
    press_step(page, wid)
    assert state(page, wid)["step"] == quiet and state(page, wid)["question"] is None
    # Answer the first question, go back, step again: it is not asked a second time.
    first = next(i for i in range(1, len(fr)) if "question" in fr[i])
    page.evaluate("([wid, i]) => window.vsbPlayers[wid].show(i)", [wid, first - 1])
    press_step(page, wid)
    choose(page, wid, 0)
    assert state(page, wid)["step"] == first
    page.keyboard.press("ArrowLeft")
    page.focus(f'#{wid} [data-act="step"]')
    page.keyboard.press("Enter")
    assert state(page, wid)["step"] == first


def test_the_toggle_writes_the_permalink_and_one_click_clears_the_answers(
        open_page, widget_page):
    watched = open_page(widget_page(WID), block_python=True)
    page = watched.page
    testsite.wait_stepping(page, WID)
    page.evaluate("localStorage.clear()")
    page.click(f'#{WID} [data-act="predict"]')
    assert page.get_attribute(f'#{WID} [data-act="predict"]', "aria-pressed") == "true"
    assert f"{WID}.predict=1" in state(page, WID)["hash"]
    assert f"{WID}.predict=1" in page.get_attribute(f"#{WID} .vsb-permalink", "href")
    press_step(page, WID)
    choose(page, WID, 0)
    kept = page.evaluate("JSON.parse(localStorage.getItem('vsb-predict-v1'))")
    assert list(kept) == [WID] and len(kept[WID]) == 1
    page.click(f'#{WID} [data-act="predict-clear"]')
    assert page.evaluate("localStorage.getItem('vsb-predict-v1')") == "{}"
    assert "cleared" in page.text_content(f"#{WID} .vsb-predict-score-text")
    page.click(f'#{WID} [data-act="predict"]')
    assert state(page, WID)["predict"] == "off" and not page.is_visible(f"#{WID} .vsb-predict")
    assert "predict" not in state(page, WID)["hash"]
    assert not watched.errors


def test_an_embed_with_predict_starts_in_predict_mode(open_page, widget_page, site):
    watched = open_page(f"{widget_page(WID)}?embed={WID}&predict=1", block_python=True)
    page = watched.page
    testsite.wait_stepping(page, WID)
    page.evaluate("localStorage.clear()")
    assert page.evaluate("document.documentElement.classList.contains('vsb-embed')")
    assert state(page, WID)["predict"] == "on"
    press_step(page, WID)
    fr = frames(site, widget_page(WID), WID)
    assert state(page, WID)["prompt"] == fr[1]["question"]["prompt"]
    choose(page, WID, fr[1]["question"]["answer"])
    assert state(page, WID)["verdict"].startswith("Right")
    assert not watched.errors and not watched.foreign


def test_a_calculator_is_covered_until_its_question_is_answered(open_page, widget_page, site):
    wid = "kv-cost"
    page = open_predicting(open_page, widget_page, wid).page
    page.evaluate("(wid) => window.vsbPlayers[wid].predictor.adopted()", wid)
    page.wait_for_function("(wid) => document.getElementById(wid).dataset.question === 'asked'",
                           arg=wid)
    s = state(page, wid)
    q = frames(site, widget_page(wid), wid)[0]["question"]
    assert s["covered"] and s["prompt"] == q["prompt"] and s["focusIsOption"]
    choose(page, wid, q["answer"])
    s = state(page, wid)
    assert not s["covered"] and s["verdict"].startswith("Right")
