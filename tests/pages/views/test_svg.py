"""pages.svg: escaping, deterministic numbers, palette colours, accessible names."""

import re
from pathlib import Path
from xml.etree import ElementTree

from hypothesis import given
from hypothesis import strategies as st

from pages.views import svg

NS = "{http://www.w3.org/2000/svg}"


@given(st.text())
def test_escaped_text_parses_back_to_itself(s):
    # Characters XML can hold; XML itself turns \r into \n, and tabs and newlines in an
    # attribute into spaces, so those are compared as XML reads them.
    s = "".join(c for c in s
                if c in "\t\n" or (" " <= c <= "\ud7ff") or ("\ue000" <= c <= "\ufffd"))
    doc = svg.document(10, 10, [svg.text(0, 0, s)], label=s)
    root = ElementTree.fromstring(doc)
    assert (root.find(f"{NS}text").text or "") == s
    assert root.get("aria-label") == s.replace("\t", " ").replace("\n", " ")


def test_markup_never_becomes_elements():
    payload = '<script>alert(1)</script>"><b onload="x">'
    doc = svg.document(10, 10,
                       [svg.rect(0, 0, 1, 1, fill="free", tip=payload), svg.text(0, 0, payload)],
                       label=payload)
    root = ElementTree.fromstring(doc)
    tags = {el.tag.removeprefix(NS) for el in root.iter()}
    assert tags == {"svg", "title", "rect", "text"}


def test_document_has_viewbox_and_title():
    doc = svg.document(120.5, 40, [], label="A picture")
    root = ElementTree.fromstring(doc)
    assert root.get("viewBox") == "0 0 120.5 40"
    assert root.get("role") == "img"
    assert root.find(f"{NS}title").text == "A picture"
    assert root.get("width") is None  # scales with its container


def test_numbers_are_short_and_deterministic():
    assert ([svg.num(x) for x in (3, 3.0, 2.5, 1 / 3, -0.0001, 10.999)]
            == ["3", "3", "2.5", "0.33", "-0", "11"])


def test_colours_are_css_variables_from_the_palette():
    assert svg.color("free") == "var(--vsb-free)"
    assert svg.seq(9) == "seq-1"
    rect = svg.rect(0, 0, 1, 1, fill=svg.seq(0), stroke="line")
    assert 'style="fill:var(--vsb-seq-0);stroke:var(--vsb-line)"' in rect
    try:
        svg.color("red")
    except ValueError:
        pass
    else:
        raise AssertionError("an unknown colour must fail")


def test_every_palette_colour_is_defined_for_light_and_dark():
    css = (Path(__file__).resolve().parents[3] / "docs" / "css" / "widgets.css").read_text()
    light = css.split("[data-md-color-scheme=\"slate\"]")[0]
    dark = css.split("[data-md-color-scheme=\"slate\"]")[1].split("}")[0]
    for name in svg.COLORS:
        assert re.search(rf"--vsb-{name}:", light), name
        assert re.search(rf"--vsb-{name}:", dark), name


def test_blocks_carry_a_title():
    g = svg.group([svg.rect(0, 0, 1, 1, fill="used")], tip="block 3 of seq 1")
    root = ElementTree.fromstring(svg.document(1, 1, [g], label="x"))
    assert root.find(f"{NS}g/{NS}title").text == "block 3 of seq 1"
