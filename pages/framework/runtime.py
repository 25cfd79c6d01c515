"""The browser's Python, built at site-build time (the MkDocs hook calls `build`).

The page's worker (pages/framework/worker.js) starts Pyodide in one of two ways:

- from a memory snapshot (`snapshot.bin.gz`): an interpreter that has already started and
  imported the simulation, the pages and every standard-library module their calls need,
  so starting is copying memory instead of running Python's start-up and imports;
- afresh from `python.zip`, when there is no snapshot or it fails: only the standard
  library modules those calls import, and the project's Python, all byte-compiled for
  Pyodide's Python, instead of the 2.5 MB `python_stdlib.zip` of sources.

Both come from pages/framework/runtime_build.mjs, which runs the vendored Pyodide in Node
(the build machine's CPython is another version, so it cannot compile for Pyodide), and
both are checked there: they must answer alike. What it makes is cached under
node_modules/.cache/vsb-runtime, keyed by every input, so a build whose Python did not
change reuses it. `mkdocs serve` never waits for it: a rebuild whose runtime is not made
yet starts making it in the background and serves without it; the next rebuild finds it.
Without Node, or when the build fails, the site still works: the worker then starts from
the full standard library and the sources in app.zip, and the status line says why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYODIDE = ROOT / "node_modules" / "pyodide"
CACHE = ROOT / "node_modules" / ".cache" / "vsb-runtime"
BUILDER = Path(__file__).with_name("runtime_build.mjs")
DELTA = Path(__file__).with_name("snapshot_delta.mjs")
IN_PYODIDE = Path(__file__).with_name("pyodide_build.py")
KEEP = 8              # cached builds kept (the real site, the test site, recent edits)
TIMEOUT_S = 900       # a build running longer than this is given up (and a stale lock)

log = logging.getLogger("mkdocs.hooks.vsb_runtime")


@dataclass
class Built:
    """What the build made: file name -> bytes (python.zip, snapshot.bin.gz), and its
    report (steps, timings, sizes, or why there is nothing)."""

    files: dict[str, bytes] = field(default_factory=dict)
    report: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.report.get("ok"))


def lock_info() -> dict:
    """The lock file's `info` (Pyodide checks its ABI) with no packages: the worker passes
    this inline instead of fetching the 119 KB lock file, and so does the build."""
    info = json.loads((PYODIDE / "pyodide-lock.json").read_text(encoding="utf-8"))["info"]
    return {"info": info, "packages": {}}


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:20]


def build(app_zip: bytes, extra: list[str], exercise: list, check: list, *,
          wait: bool = True) -> Built:
    """The runtime for these sources and calls, from the cache or built now (`wait`) or in
    the background (not `wait`: the answer is then empty until a later call). `exercise`
    is [[module, widget id, raw JSON], ...]; `check` adds CPython's answer to each."""
    node = shutil.which("node")
    if node is None:
        return Built(report={"ok": False, "error": "node is not installed (./dev setup does it)"})
    pyodide = _digest(*((PYODIDE / n).read_bytes() for n in
                        ("package.json", "pyodide.mjs", "pyodide.asm.mjs", "python_stdlib.zip")))
    stdlib_key = pyodide + "-" + _digest(IN_PYODIDE.read_bytes())
    key = _digest(stdlib_key.encode(), BUILDER.read_bytes(), DELTA.read_bytes(), app_zip,
                  json.dumps([extra, exercise, check]).encode())
    CACHE.mkdir(parents=True, exist_ok=True)
    done, work = CACHE / key, CACHE / f"build-{key}"
    if not (done / "report.json").exists():
        if _finished(work) or _stale(work):
            shutil.rmtree(work, ignore_errors=True)  # a failed or abandoned build
        try:
            work.mkdir()
        except FileExistsError:  # being built (in the background, or by a parallel build)
            if not wait:
                return Built(report={"ok": False, "error": "the runtime is still being built"})
            _wait(work, done)
        else:
            failed = _start(node, work, done, stdlib_key, app_zip, extra, exercise, check, wait)
            if failed is not None:
                return Built(report=failed)
    if not (done / "report.json").exists():
        report = _finished(work) or {"ok": False, "error": "the runtime build did not finish"}
        return Built(report=report)
    os.utime(done)  # most recently used
    _prune()
    report = json.loads((done / "report.json").read_text(encoding="utf-8"))
    return Built({n: (done / n).read_bytes() for n in ("python.zip", "snapshot.bin.gz")}, report)


def _start(node, work, done, stdlib_key, app_zip, extra, exercise, check, wait) -> dict | None:
    """Run the builder in `work` (now, or detached); a report when it did not make one."""
    (work / "app.zip").write_bytes(app_zip)
    job = {
        "pyodide": str(PYODIDE) + "/", "build_py": str(IN_PYODIDE),
        "app_zip": str(work / "app.zip"),
        # The whole standard library compiled: made once per Pyodide version.
        "stdlib_pyc": str(CACHE / f"stdlib-{stdlib_key}.zip"),
        "extra": extra, "exercise": exercise, "check": check, "lock": lock_info(),
        "out": str(work), "done": str(done),
    }
    (work / "job.json").write_text(json.dumps(job), encoding="utf-8")
    command = [node, str(BUILDER), str(work / "job.json")]
    if not wait:
        log.info("vsb: building the browser's Python in the background; this build goes without")
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
        return {"ok": False, "error": "the runtime is still being built"}
    start = time.monotonic()
    log.info("vsb: building the browser's Python (Pyodide in Node; cached afterwards)")
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
        failure = (result.stderr or result.stdout or "the builder wrote no report")[-2000:]
    except (OSError, subprocess.TimeoutExpired) as err:
        failure = f"{type(err).__name__}: {err}"
    report_path = done / "report.json" if (done / "report.json").exists() else work / "report.json"
    report = (json.loads(report_path.read_text(encoding="utf-8")) if report_path.exists()
              else {"ok": False, "error": failure})
    log.info("vsb: browser Python built in %.1f s: %s", time.monotonic() - start,
             "ok" if report.get("ok") else report.get("error", "failed").splitlines()[0])
    if report.get("differs_from_cpython"):
        log.info("vsb: Pyodide's default frames differ from CPython's for %s",
                 ", ".join(report["differs_from_cpython"]))
    if not report.get("ok"):
        shutil.rmtree(work, ignore_errors=True)  # not cached: the next build tries again
        return report
    return None


def _wait(work: Path, done: Path) -> None:
    while work.exists() and not _finished(work) and not _stale(work):
        if (done / "report.json").exists():
            return
        time.sleep(1)


def _finished(work: Path) -> dict | None:
    """The report of a build that ended in `work` (one that worked has moved away)."""
    try:
        report = json.loads((work / "report.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return report if report.get("finished") else None


def _stale(work: Path) -> bool:
    try:
        return time.time() - work.stat().st_mtime > TIMEOUT_S
    except FileNotFoundError:
        return False


def _prune() -> None:
    builds = sorted((p for p in CACHE.iterdir() if p.is_dir() and not p.name.startswith("build-")),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in builds[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)
    stdlibs = sorted(CACHE.glob("stdlib-*.zip"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in stdlibs[2:]:
        old.unlink(missing_ok=True)
