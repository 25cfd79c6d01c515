"""Runs inside Pyodide under Node at site-build time (pages/framework/runtime_build.mjs drives
it; pages/framework/runtime.py drives that). The site never ships this file.

- `compile_zip(src, dst)`: a zip of Python sources, byte-compiled by this interpreter, so the
  magic number and the bytecode are Pyodide's own (the build machine's CPython is another
  version). The pycs are unchecked hash-based (PEP 552): valid without their sources.
- `exercise(jobs)`: call the worker as the page does (every widget's defaults, the pages'
  permalinks, a bad value in every field, the error paths), so that every module the
  browser will need is imported; answers the worker's answers.
- `stdlib_used(zip)`: which entries of the standard library zip that imported.
- `subset_zip(...)`: those entries plus the project's compiled Python: the browser's
  `python.zip`.
- `imported(paths)`, `import_all(names)`: the modules those calls imported, and importing
  them again in the interpreter whose memory becomes the snapshot (without running the
  calls, which would leave their garbage in it);
- `forget_zips()`: drop zipimport's cached tables of contents before a memory snapshot, so
  the restored interpreter reads whatever zip the browser gives it afresh.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import marshal
import sys
import zipfile

ZIP_DATE = (2024, 1, 1, 0, 0, 0)


def _pyc(source: bytes, name: str) -> bytes:
    """PEP 552's layout: magic, flags (1: hash-based, not checked), source hash, code."""
    code = compile(source, name, "exec", dont_inherit=True)
    return (importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little")
            + importlib.util.source_hash(source) + marshal.dumps(code))


def _write(entries: dict[str, bytes], dst: str) -> int:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as out:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            out.writestr(info, entries[name])
    data = buf.getvalue()
    with open(dst, "wb") as f:
        f.write(data)
    return len(data)


def _compiled(src: str) -> dict[str, bytes]:
    """Every entry of the zip at `src`, with each `x.py` replaced by `x.pyc`."""
    out = {}
    with zipfile.ZipFile(src) as zf:
        for name in zf.namelist():
            if name.endswith("/"):
                continue
            data = zf.read(name)
            if name.endswith(".py"):
                try:
                    out[name + "c"] = _pyc(data, name)
                    continue
                except SyntaxError:  # test data and templates that are not Python 3.14
                    pass
            out[name] = data
    return out


def compile_zip(src: str, dst: str) -> str:
    entries = _compiled(src)
    return json.dumps({"entries": len(entries), "bytes": _write(entries, dst)})


def exercise(jobs_json: str) -> str:
    """`[[module, widget_id, raw_json], ...]` through the worker: JSON list of its answers."""
    from pages.framework import worker

    jobs = json.loads(jobs_json)
    return json.dumps([worker.build(module, wid, raw) for module, wid, raw in jobs])


def imported(prefixes_json: str) -> str:
    """JSON list of the names of the imported modules whose file lies under one of the
    given paths (the zips), sorted: what a snapshot must import."""
    prefixes = tuple(json.loads(prefixes_json))
    return json.dumps(sorted(name for name, module in list(sys.modules.items())
                             if (getattr(module, "__file__", None) or "").startswith(prefixes)))


def import_all(names_json: str) -> None:
    for name in json.loads(names_json):
        importlib.import_module(name)


def stdlib_used(stdlib_zip: str) -> str:
    """JSON list of the zip entries of every module imported from `stdlib_zip`, with the
    `__init__` of each package on the way."""
    prefix = stdlib_zip + "/"
    names = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None) or ""
        if not path.startswith(prefix):
            continue
        name = path[len(prefix):]
        names.add(name)
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            names.add("/".join(parts[:i]) + "/__init__.pyc")
    with zipfile.ZipFile(stdlib_zip) as zf:
        present = set(zf.namelist())
    return json.dumps(sorted(n for n in names if n in present))


def subset_zip(stdlib_zip: str, names_json: str, app_zip: str, dst: str) -> str:
    entries = {}
    with zipfile.ZipFile(stdlib_zip) as zf:
        for name in json.loads(names_json):
            entries[name] = zf.read(name)
    app = _compiled(app_zip)
    entries.update(app)
    size = _write(entries, dst)
    return json.dumps({"entries": len(entries), "app_entries": len(app), "bytes": size})


def forget_zips() -> None:
    importlib.invalidate_caches()      # each zipimporter drops its zip's table of contents
    sys.path_importer_cache.clear()
