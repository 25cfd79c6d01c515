"""Dump every widget's frames and every chart's SVG to a folder, so a refactor can prove that
the pictures and words did not change (or list exactly which did).

    .venv/bin/python tools/dump_frames.py /tmp/before          # on the old commit
    .venv/bin/python tools/dump_frames.py /tmp/after           # on the new one
    .venv/bin/python tools/dump_frames.py --diff /tmp/before /tmp/after

What is dumped: for every registered widget, its default scenario's frames, and the frames
of every distinct set of settings that a page links to (the "What to notice" and "Try this"
permalinks in docs/*.md); for every chart, its SVG. One JSON file per trace, written with the
same serialisation as the build (pages' `to_json`), one frame per line so `diff` shows which
frame moved. `--diff` prints, per file, the frames that differ and a short excerpt;
`--diff --strip-keys` compares the pictures without their animation keys (data-k, data-from:
pages/framework/keys.py), which proves that a change only added keys.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LINK = re.compile(r"\]\(#([a-z0-9-]+\.[^)\s]*)\)")


def _framework():
    """(registry, widget) modules, wherever the framework lives in this checkout."""
    try:
        from pages.framework import registry, widget
    except ImportError:  # before the framework had its own package
        from pages.framework import registry, widget
    return registry, widget


def linked_settings() -> dict[str, list[dict[str, str]]]:
    """widget id -> the distinct settings (without step) that pages link to."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for anchor in LINK.findall(page.read_text(encoding="utf-8")):
            fields: dict[str, dict[str, str]] = {}
            for key, value in urllib.parse.parse_qsl(anchor, keep_blank_values=True):
                wid, _, name = key.partition(".")
                if name not in ("step", "predict"):
                    fields.setdefault(wid, {})[name] = value
            for wid, raw in fields.items():
                key = json.dumps(raw, sort_keys=True)
                out.setdefault(wid, {})[key] = raw
    return {wid: list(v.values()) for wid, v in out.items()}


def dump(folder: Path) -> int:
    registry, widget_mod = _framework()
    widgets, charts = registry.collect()
    folder.mkdir(parents=True, exist_ok=True)
    links = linked_settings()
    count = 0
    for wid, entry in sorted(widgets.items()):
        item = entry.item
        traces = [("default", item.defaults())]
        for raw in links.get(wid, []):
            values, errors = widget_mod.validate(item, raw)
            if errors:
                print(f"{wid}: linked settings {raw} do not validate: {errors}",
                      file=sys.stderr)
                continue
            tag = hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:10]
            traces.append((f"link-{tag}", values))
        for name, values in traces:
            frames = widget_mod.run(item, values)
            lines = [widget_mod.to_json(f) for f in frames]
            (folder / f"{wid}.{name}.jsonl").write_text("\n".join(lines) + "\n",
                                                        encoding="utf-8")
            count += 1
    for cid, entry in sorted(charts.items()):
        (folder / f"chart.{cid}.svg").write_text(entry.item.render() + "\n", encoding="utf-8")
        count += 1
    return count


def _unkeyed(name: str, lines: list[str]) -> list[str]:
    """The lines of a dumped file with the keys taken out of every picture."""
    from pages.framework import keys
    if name.endswith(".svg"):
        return [keys.strip(line) for line in lines]
    _, widget_mod = _framework()
    out = []
    for line in lines:
        frame = json.loads(line)
        frame["svg"] = keys.strip(frame["svg"])
        out.append(widget_mod.to_json(frame))
    return out


def diff(before: Path, after: Path, strip_keys: bool = False) -> int:
    names = sorted({p.name for p in before.iterdir()} | {p.name for p in after.iterdir()})
    changed = 0
    for name in names:
        a, b = before / name, after / name
        if not a.exists() or not b.exists():
            print(f"{name}: only in {'after' if not a.exists() else 'before'}")
            changed += 1
            continue
        la = a.read_text(encoding="utf-8").splitlines()
        lb = b.read_text(encoding="utf-8").splitlines()
        if strip_keys:
            la, lb = _unkeyed(name, la), _unkeyed(name, lb)
        if la == lb:
            continue
        changed += 1
        frames = [i for i in range(max(len(la), len(lb)))
                  if i >= len(la) or i >= len(lb) or la[i] != lb[i]]
        print(f"{name}: {len(la)} -> {len(lb)} frames; differ at "
              + ", ".join(str(i + 1) for i in frames[:20]) + (" ..." if len(frames) > 20 else ""))
        i = frames[0]
        if i < len(la) and i < len(lb):
            x, y = la[i], lb[i]
            k = next((j for j in range(min(len(x), len(y))) if x[j] != y[j]), min(len(x), len(y)))
            print(f"   before: ...{x[max(0, k - 80):k + 120]}")
            print(f"   after:  ...{y[max(0, k - 80):k + 120]}")
    print(f"{changed} of {len(names)} files differ")
    return 1 if changed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, nargs="+")
    p.add_argument("--diff", action="store_true", help="compare two dumps")
    p.add_argument("--strip-keys", action="store_true",
                   help="with --diff: compare the pictures without their animation keys")
    args = p.parse_args(argv)
    if args.diff:
        if len(args.folder) != 2:
            p.error("--diff takes two folders")
        return diff(*args.folder, strip_keys=args.strip_keys)
    n = dump(args.folder[0])
    print(f"{n} traces and charts written to {args.folder[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
