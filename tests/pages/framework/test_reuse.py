"""The cite block, BibTeX, oEmbed documents and embed heights (pages/framework/reuse.py)."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest

from pages.framework import reuse
from pages.framework.widget import Widget
from pages.views import svg


def make_widget(title: str = "Blocks <step> by step") -> Widget:
    return Widget(id="demo-w", title=title, scenario=lambda v: [0],
                  view=lambda s, c: svg.Figure(400, 100, [], "x"), narrate=lambda s, c: "",
                  params=())


@pytest.mark.parametrize("site_url,path,expected", [
    (None, "preemption/", "/preemption/"),
    ("https://example.org/vsb", "preemption/", "https://example.org/vsb/preemption/"),
    ("https://example.org/vsb/", "/js/embed.js", "https://example.org/vsb/js/embed.js"),
    (None, "", "/"),
])
def test_absolute(site_url, path, expected):
    assert reuse.absolute(site_url, path) == expected


def test_bibtex_is_one_balanced_misc_entry_with_the_page_url():
    text = reuse.bibtex("Beam {search}", "https://example.org/beam-search/",
                        reuse.bibtex_key("beam-search/"))
    assert text.startswith("@misc{vllmstepbystep2026beamsearch,\n")
    assert text.count("{") == text.count("}")
    # Braces in a title would unbalance the entry: they are dropped.
    assert "title        = {Beam search}," in text
    assert "url          = {https://example.org/beam-search/}," in text
    assert reuse.bibtex_key("") == "vllmstepbystep2026home"


def _tags(html: str) -> list[tuple[str, dict]]:
    found = []

    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, dict(attrs)))
    P().feed(html)
    return found


def test_cite_block_states_licences_source_and_corrections():
    html = reuse.cite_block("Preemption", "preemption/", None, None, None)
    assert 'rel="license">CC BY 4.0</a>' in html and "Apache-2.0" in html
    assert "report a correction" in html and "_runtime/" in html
    # No site URL: the BibTeX holds a root path and is marked for the page's script.
    pre = [a for t, a in _tags(html) if t == "pre"][0]
    assert "data-root-relative" in pre
    assert "url          = {/preemption/}" in html


def test_cite_block_with_addresses_links_them_and_needs_no_script():
    html = reuse.cite_block("Preemption", "preemption/", "https://example.org/",
                            "https://git.example.org/vsb", "https://git.example.org/vsb/issues")
    assert 'href="https://git.example.org/vsb"' in html
    assert 'href="https://git.example.org/vsb/issues">report a correction</a>' in html
    assert "data-root-relative" not in html
    assert "url          = {https://example.org/preemption/}" in html


def test_oembed_has_the_specs_required_fields_and_escapes_the_title():
    doc = reuse.oembed(make_widget(), "Preemption", "preemption/", "https://example.org/", 700)
    # oEmbed 1.0, section 2.3.4: type "rich" requires html, width and height.
    assert doc["version"] == "1.0" and doc["type"] == "rich"
    assert isinstance(doc["width"], int) and isinstance(doc["height"], int)
    assert doc["height"] == 700 and doc["license"] == "CC BY 4.0"
    tags = _tags(doc["html"])
    iframe = dict(tags[0][1])
    assert tags[0][0] == "iframe" and tags[1][0] == "script"
    assert iframe["src"] == "https://example.org/preemption/?embed=demo-w"
    assert iframe["title"] == "Blocks <step> by step"            # escaped, parsed back
    assert "<step>" not in doc["html"]
    assert set(iframe["sandbox"].split()) >= {"allow-scripts", "allow-same-origin",
                                              "allow-forms"}
    assert json.loads(reuse.oembed_json(doc)) == doc


def test_embed_height_follows_the_tallest_picture():
    def frame(w, h):
        return {"svg": f'<svg viewBox="0 0 {w} {h}"></svg>'}
    short, tall = reuse.embed_height([frame(400, 200)]), reuse.embed_height(
        [frame(400, 200), frame(400, 600)])
    # A 400-wide picture is drawn 480 px wide: 600 units are 720 px, plus the chrome.
    assert tall == 720 + 320 and short == 240 + 320
    assert reuse.embed_height([{"svg": "<p>no picture</p>"}]) == 320


def test_no_string_in_the_documents_is_left_unescaped():
    evil = make_widget('"><script>alert(1)</script>')
    doc = reuse.oembed(evil, "<b>", "x/", None, 100)
    assert not re.search(r"<script>alert", doc["html"])
    html = reuse.cite_block("<img src=x onerror=alert(1)>", "x/", None, None, None)
    assert "<img" not in html
