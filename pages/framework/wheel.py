"""A pure-Python wheel of the simulation, built at site-build time and served from the site,
so a notebook that runs Pyodide (JupyterLite, marimo in the browser) can install the same
engine offline:

    import micropip
    await micropip.install("<site>/_runtime/vllm_step_by_step-0.1.0-py3-none-any.whl")
    from sim.core.engine import LLMEngine

(or `await pyodide.loadPackage(url)` where micropip is not at hand). It holds `sim` and
`pages` (minus the MkDocs hook, which needs mkdocs), the same Python as the site's own
runtime. Standard library only, and deterministic: the same sources give the same bytes
(fixed timestamps, sorted entries), so a build changes the file only when the code changed.
A checkout installs the same packages with `pip install .` (pyproject.toml).
"""
from __future__ import annotations

import base64
import hashlib
import io
import re
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DIST = "vllm_step_by_step"
PACKAGES = ("sim", "pages")
NOT_SHIPPED = {"pages/framework/hook.py"}      # imports mkdocs
ZIP_DATE = (2024, 1, 1, 0, 0, 0)


def version(root: Path = ROOT) -> str:
    """The project's version, read from pyproject.toml (tomllib-free: one line)."""
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    m = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    if not m:
        raise ValueError("pyproject.toml has no version")
    return m[1]


def filename(root: Path = ROOT) -> str:
    return f"{DIST}-{version(root)}-py3-none-any.whl"


def sources(root: Path = ROOT) -> dict[str, bytes]:
    """The .py files the wheel carries, by their path inside it."""
    out = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            arcname = path.relative_to(root).as_posix()
            if arcname not in NOT_SHIPPED and "__pycache__" not in arcname:
                out[arcname] = path.read_bytes()
    return out


def _digest(data: bytes) -> str:
    raw = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def build(root: Path = ROOT) -> tuple[str, bytes]:
    """(file name, wheel bytes)."""
    ver = version(root)
    info = f"{DIST}-{ver}.dist-info"
    files = dict(sources(root))
    files[f"{info}/METADATA"] = (
        "Metadata-Version: 2.1\n"
        f"Name: vllm-step-by-step\nVersion: {ver}\n"
        "Summary: An interactive explainer of vLLM's machinery, driven by a pure-Python "
        "simulation\n"
        "License: Apache-2.0 (code); CC BY 4.0 (text, pictures and exported frames)\n"
        "Requires-Python: >=3.11\n").encode()
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: vllm-step-by-step (pages/framework/wheel.py)\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    files[f"{info}/top_level.txt"] = "".join(f"{p}\n" for p in PACKAGES).encode()
    licence = root / "LICENSE"
    if licence.exists():
        files[f"{info}/LICENSE"] = licence.read_bytes()
    record = "".join(f"{name},{_digest(data)},{len(data)}\n"
                     for name, data in sorted(files.items()))
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            entry = zipfile.ZipInfo(name, ZIP_DATE)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            zf.writestr(entry, files[name])
    return f"{DIST}-{ver}-py3-none-any.whl", buf.getvalue()


if __name__ == "__main__":   # python -m pages.framework.wheel [folder]: write the wheel
    import sys

    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    name, data = build()
    (out / name).write_bytes(data)
    print(out / name)
