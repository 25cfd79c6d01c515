"""The real site builds with `mkdocs build --strict`, asks no other host for anything, and
every "From Python" example it includes runs."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs", reason="pip install -e '.[site]'")
    out = tmp_path_factory.mktemp("realsite") / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)],
                   cwd=ROOT, env=env, check=True)
    return out


def html_pages(site):
    return sorted(site.rglob("*.html"))


def test_real_site_has_no_test_widgets(site):
    for page in html_pages(site):
        text = page.read_text(encoding="utf-8")
        assert "demo-fill" not in text and "vsb-demo" not in text, page


def test_no_page_or_stylesheet_loads_anything_from_another_host(site):
    loads = re.compile(r'<(?:script|img|iframe|source|link)\b[^>]*\b(?:src|href)="(https?:)?//',
                       re.I)
    for page in html_pages(site):
        text = page.read_text(encoding="utf-8")
        # <link rel="canonical"> and friends are not requests; stylesheets and scripts are.
        for tag in re.findall(r"<(?:script|img|iframe|source|link)\b[^>]*>", text, re.I):
            not_a_load = re.search(r'rel="(canonical|alternate|prev|next|icon)"', tag)
            if not_a_load and "stylesheet" not in tag:
                continue
            assert not loads.search(tag), (page, tag)
    for css in site.rglob("*.css"):
        for url in re.findall(r"url\(\s*['\"]?([^)'\"]+)", css.read_text(encoding="utf-8")):
            assert not re.match(r"(https?:)?//", url), (css, url)


def test_home_page_has_one_card_per_topic_page(site):
    from mkdocs.config import load_config

    config = load_config(str(ROOT / "mkdocs.yml"))
    nav_files = [v for item in config.nav for v in item.values()] if config.nav else []
    topics = []
    for rel in nav_files:
        text = (ROOT / "docs" / rel).read_text(encoding="utf-8")
        if rel != "index.md" and not re.search(r"^card:\s*false\s*$", text, re.M):
            topics.append(rel)
    home = (site / "index.html").read_text(encoding="utf-8")
    cards = re.findall(r"<li><p><strong><a href=", home)
    assert len(cards) == len(topics)
    if not topics:
        assert "vsb-no-topics" in home


def test_about_page_names_the_vllm_version(site):
    about = (site / "about" / "index.html").read_text(encoding="utf-8")
    assert "v0.5.5" in about and "Using <code>sim</code> from Python" in about


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(example):
    # As a reader runs it from a checkout: the project on the path, nothing else.
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, str(example)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr


def widget_ids(text: str) -> list[str]:
    return re.findall(r'class="vsb-widget[^"]*" id="([^"]+)"', text)


def test_every_widget_has_a_valid_oembed_document_linked_from_its_page(site):
    """oEmbed 1.0 (https://oembed.com, 2.3.4): type rich needs version, type, html, width and
    height; title, provider_name and the licence are there too. Discovery: a
    <link rel="alternate" type="application/json+oembed"> in the page's <head>."""
    seen = 0
    for page in html_pages(site):
        text = page.read_text(encoding="utf-8")
        head = text.split("</head>", 1)[0]
        links = re.findall(r'<link rel="alternate" type="application/json\+oembed" '
                           r'href="([^"]+)" title="([^"]+)">', head)
        assert [h for h, _ in links] == [f"{w}.oembed.json" for w in widget_ids(text)], page
        for href, _ in links:
            doc = json.loads((page.parent / href).read_text(encoding="utf-8"))
            assert doc["version"] == "1.0" and doc["type"] == "rich"
            assert doc["html"].startswith("<iframe ") and "?embed=" in doc["html"]
            assert isinstance(doc["width"], int) and isinstance(doc["height"], int)
            assert doc["width"] > 0 and doc["height"] > 300
            assert doc["title"] and doc["provider_name"] == "vLLM, step by step"
            assert doc["license"] == "CC BY 4.0"
            seen += 1
    assert seen >= 14


def test_every_topic_page_ends_with_cite_and_reuse(site):
    for page in html_pages(site):
        text = page.read_text(encoding="utf-8")
        if not widget_ids(text):
            continue
        block = text[text.index('<section class="vsb-cite"'):]
        assert "@misc{vllmstepbystep" in block and "CC BY 4.0" in block, page
        assert "report a correction" in block and "Apache-2.0" in block


def test_the_instructors_page_lists_every_widget_with_goal_presets_and_embed_code(site):
    from pages.framework import registry

    widgets, _ = registry.collect()
    text = (site / "instructors" / "index.html").read_text(encoding="utf-8")
    for wid, entry in widgets.items():
        row = text[text.index(f'<tr class="vsb-instructor" id="instructors-{wid}">'):]
        row = row[:row.index("</tr>")]
        assert entry.item.goal and entry.item.goal.replace("'", "&#39;") in row
        assert "&lt;iframe src=" in row and f"?embed={wid}" in row
    assert text.count('href="../paged-attention/#paged-attention.') >= 3   # presets
    # A preset is named by the words of the page's own link to it.
    assert '">Watermark 0</a></li>' in text


def test_the_footer_states_the_licences_and_the_wheel_is_served(site):
    from pages.framework import wheel

    home = (site / "index.html").read_text(encoding="utf-8")
    assert 'rel="license">CC BY 4.0</a>' in home and "Apache-2.0" in home
    assert (site / "_runtime" / wheel.filename()).stat().st_size > 10_000
