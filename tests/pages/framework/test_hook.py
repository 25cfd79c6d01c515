"""pages/framework/hook.py: markers become widgets, frames land next to the page, the runtime
ships."""

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("mkdocs", reason="pip install -e '.[site]'")

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "browser"))

import testsite  # noqa: E402
import vsb_demo_topic  # noqa: E402

from pages.framework import hook  # noqa: E402
from pages.framework.widget import run, to_json  # noqa: E402


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return testsite.build_test_site(tmp_path_factory.mktemp("hook"))


def demo(wid):
    return next(w for w in vsb_demo_topic.WIDGETS if w.id == wid)


def test_default_frames_are_written_next_to_the_page(site):
    for wid in ("demo-fill", "demo-sum"):
        written = (site / "vsb-demo" / f"{wid}.frames.json").read_text(encoding="utf-8")
        assert written == to_json(run(demo(wid), demo(wid).defaults()))


def test_marker_becomes_widget_with_first_frame_inline(site):
    html = (site / "vsb-demo" / "index.html").read_text(encoding="utf-8")
    first = run(demo("demo-fill"), demo("demo-fill").defaults())[0]
    assert 'id="demo-fill" data-widget="demo-fill" data-module="vsb_demo_topic"' in html
    assert f'<div class="vsb-picture">{first["svg"]}</div>' in html
    assert 'data-frames="demo-fill.frames.json"' in html
    assert 'class="vsb-widget vsb-single" id="demo-sum"' in html  # one frame: no stepping controls
    assert 'id="demo-fill--boxes" name="boxes"' in html
    assert '<figure class="vsb-chart" id="demo-chart"' in html
    assert "[[" not in html


def test_python_and_player_load_only_on_widget_pages(site):
    widget_page = (site / "vsb-demo" / "index.html").read_text(encoding="utf-8")
    about = (site / "about" / "index.html").read_text(encoding="utf-8")
    for text in ("data-runtime=", "js/player.js", "_runtime/worker.js?v="):
        assert text in widget_page and text not in about


def test_runtime_python_and_snapshot_are_in_the_site(site):
    runtime = site / "_runtime"
    for name in hook.PYODIDE_FILES:
        assert (runtime / "pyodide" / name).stat().st_size > 0
    assert (runtime / "worker.js").read_text() == (
        ROOT / "pages" / "framework" / "worker.js").read_text()
    names = zipfile.ZipFile(runtime / "app.zip").namelist()
    assert {"pages/framework/widget.py", "pages/framework/worker.py",
            "sim/__init__.py", "vsb_demo_topic.py"} <= set(names)
    assert "pages/framework/hook.py" not in names
    assert all(n.endswith(".py") for n in names)
    # The build's byte-compiled standard-library subset and the booted interpreter's snapshot.
    assert (runtime / "python.zip").stat().st_size > 0
    assert (runtime / "snapshot.bin.gz").stat().st_size > 0


def test_app_zip_is_reproducible():
    assert hook.app_zip([]) == hook.app_zip([])
    names = zipfile.ZipFile(io.BytesIO(hook.app_zip(["vsb_demo_topic"]))).namelist()
    assert names == sorted(names) and "vsb_demo_topic.py" in names


def test_home_cards_list_nav_pages_but_home_and_about(site):
    html = (site / "index.html").read_text(encoding="utf-8")
    assert '<a href="vsb-demo/">Demo widgets (test only)</a>' in html
    assert "A page that exists only in the test build." in html
    assert 'href="about/">About' not in html.split("vsb-cards")[1].split("</div>")[0]


def page(title, src, meta):
    return SimpleNamespace(title=title, meta=meta, file=SimpleNamespace(
        src_uri=src, url_relative_to=lambda other, s=src: s.replace(".md", "/")))


def test_topic_cards_escape_titles_and_require_a_description():
    home = page("Home", "index.md", {})
    nav = SimpleNamespace(pages=[home, page("<A&B>", "a.md", {"description": "x < y"}),
                                 page("About", "about.md", {"card": False})])
    cards = hook.topic_cards(home, nav)
    assert "&lt;A&amp;B&gt;" in cards and "x &lt; y" in cards and "About" not in cards
    nav.pages.append(page("C", "c.md", {}))
    with pytest.raises(Exception, match="description"):
        hook.topic_cards(home, nav)
    assert "being written" in hook.topic_cards(home, SimpleNamespace(pages=[home]))


def build_with_page(tmp_path, text):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text(text)
    cfg = tmp_path / "mkdocs.yml"
    cfg.write_text(json.dumps({
        "INHERIT": str(ROOT / "mkdocs.yml"), "docs_dir": str(docs),
        "site_dir": str(tmp_path / "site"),
        "hooks": [str(ROOT / "pages" / "framework" / "hook.py")],
        "theme": {"custom_dir": str(ROOT / "overrides")},
        "watch": [], "nav": [{"Home": "index.md"}], "extra": {"topic_modules": ["vsb_demo_topic"]},
    }))
    env = {"PYTHONPATH": str(ROOT / "tests" / "browser"), "PATH": "/usr/bin:/bin",
           "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(cfg)],
        cwd=ROOT, env=env, capture_output=True, text=True)


def test_unknown_widget_fails_the_build(tmp_path):
    result = build_with_page(tmp_path, "# x\n\n[[widget: no-such-widget]]\n")
    assert result.returncode != 0
    assert "no widget 'no-such-widget'" in result.stderr


def test_marker_inside_a_paragraph_fails_the_build(tmp_path):
    result = build_with_page(tmp_path, "# x\n\nSee [[widget: demo-sum]] here.\n")
    assert result.returncode != 0
    assert "must stand alone" in result.stderr
