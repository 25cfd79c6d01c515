"""Widget permalinks in the Markdown (`#<widget>.step=N&<widget>.<param>=v`) are checked at
build time by pages/framework/hook.py: a link to a step or a setting that does not exist fails the
build, a good one passes (MkDocs' own anchor check would call every one of them missing)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs", reason="pip install -e '.[site]'")

ROOT = Path(__file__).resolve().parents[3]


def build(tmp_path, link: str) -> subprocess.CompletedProcess:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text(
        f"# Test\n\n[[widget: paged-attention]]\n\n[a link]({link})\n", encoding="utf-8")
    cfg = tmp_path / "mkdocs.yml"
    cfg.write_text(json.dumps({
        "INHERIT": str(ROOT / "mkdocs.yml"), "docs_dir": str(docs),
        "site_dir": str(tmp_path / "site"),
        "hooks": [str(ROOT / "pages" / "framework" / "hook.py")],
        "theme": {"custom_dir": str(ROOT / "overrides")}, "watch": [],
        "nav": [{"Test": "index.md"}]}), encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f",
                           str(cfg)], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))


def test_a_good_permalink_builds(tmp_path):
    done = build(tmp_path, "#paged-attention.step=3&paged-attention.block_size=8")
    assert done.returncode == 0, done.stderr


def test_a_step_past_the_defaults_is_fine_when_the_settings_make_more_steps(tmp_path):
    done = build(tmp_path, "#paged-attention.step=20&paged-attention.requests=7/30")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("link, message", [
    ("#paged-attention.step=99", "has 8 steps, not 99"),
    ("#paged-attention.step=9&paged-attention.requests=7/1", "has 2 steps, not 9"),
    ("#paged-attention.block_size=999", "block size: a whole number from 1 to 16"),
    ("#paged-attention.colour=red", "unknown setting: colour"),
])
def test_a_bad_permalink_fails_the_build(tmp_path, link, message):
    done = build(tmp_path, link)
    assert done.returncode != 0 and message in done.stderr + done.stdout
