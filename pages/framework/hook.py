"""The MkDocs build hook (mkdocs.yml: `hooks: [pages/framework/hook.py]`).

On every build (`mkdocs build` and each `mkdocs serve` rebuild) it:

- finds the markers `[[widget: <id>]]`, `[[chart: <id>]]` and `[[topic-cards]]`, each alone
  on its own line in a page's Markdown;
- runs each widget's default scenario in CPython, writes the frames as `<id>.frames.json`
  next to the page, and puts the widget's HTML (form, first picture inline, player
  controls) where the marker was;
- marks pages with widgets (`page.meta["vsb_widgets"]`) so overrides/main.html loads the
  player and starts Python only there;
- adds the vendored runtime (Pyodide and PyScript from node_modules) and a zip of the
  project's Python as generated files, so `serve` and `build` both serve them;
- fills the home page's `[[topic-cards]]` with one card per page in the nav.

`extra.topic_modules` in mkdocs.yml names extra topic modules (tests use it for a widget
that must never appear on the real site).
"""

from __future__ import annotations

import io
import posixpath
import re
import sys
import urllib.parse
import zipfile
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = "_runtime"
# What PyScript needs from the npm packages. Source maps stay behind: only devtools ask.
PYODIDE_FILES = ("pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip",
                 "pyodide-lock.json")
# A Python file the zip leaves out: the hook imports mkdocs, which the browser lacks.
NOT_SHIPPED = {"pages/framework/hook.py"}
# Fixed zip timestamps: the same sources give the same bytes on every build.
ZIP_DATE = (2024, 1, 1, 0, 0, 0)

MARKER = re.compile(r"<p>\[\[(widget|chart):\s*([A-Za-z0-9_-]+)\s*\]\]</p>")
MARKER_SOURCE = re.compile(r"^\[\[(widget|chart):\s*([A-Za-z0-9_-]+)\s*\]\]\s*$", re.M)
LEFTOVER = re.compile(r"\[\[(widget|chart|topic-cards)")
CARDS = "<p>[[topic-cards]]</p>"

_state: dict = {}


def on_startup(command: str, dirty: bool) -> None:
    _state["command"] = command


def on_config(config):
    if _state.get("command") == "serve":
        # `mkdocs serve` rebuilds in one process: forget the project's modules so an edit
        # to sim/ or pages/ shows on the next rebuild.
        for name in list(sys.modules):
            if name.split(".")[0] in {"sim", "pages"}:
                del sys.modules[name]
    from pages.framework import registry

    extra = list(config.extra.get("topic_modules", []) or [])
    widgets, charts = registry.collect(extra)
    _state.update(widgets=widgets, charts=charts, extra=extra, frames={}, uses={})
    return config


def on_files(files: Files, config) -> Files:
    from pages.framework import widget as widget_mod

    widgets, charts = _state["widgets"], _state["charts"]
    uses: dict[str, list[tuple[str, str]]] = {}
    for file in files.documentation_pages():
        found = []
        for kind, item_id in MARKER_SOURCE.findall(file.content_string):
            table = widgets if kind == "widget" else charts
            if item_id not in table:
                known = ", ".join(sorted(table)) or "none"
                raise PluginError(f"{file.src_uri}: no {kind} {item_id!r} (known: {known})")
            found.append((kind, item_id))
        if found:
            uses[file.src_uri] = found
    for src_uri, found in uses.items():
        page_dir = posixpath.dirname(files.get_file_from_path(src_uri).dest_uri)
        for kind, item_id in found:
            if kind != "widget":
                continue
            if item_id not in _state["frames"]:
                w = widgets[item_id].item
                _state["frames"][item_id] = widget_mod.run(w, w.defaults())
            uri = posixpath.join(page_dir, f"{item_id}.frames.json")
            if files.get_file_from_path(uri) is None:
                files.append(File.generated(config, uri, content=widget_mod.to_json(_state["frames"][item_id])))
    _state["uses"] = uses
    if any(kind == "widget" for found in uses.values() for kind, _ in found):
        for f in runtime_files(config):
            files.append(f)
    return files


def on_page_content(html: str, page, config, files):
    def replace(match: re.Match) -> str:
        from pages.framework import markup

        kind, item_id = match.groups()
        if kind == "chart":
            chart = _state["charts"][item_id].item
            return markup.chart_html(chart.id, chart.title, chart.render(), chart.caption)
        entry = _state["widgets"][item_id]
        page.meta["vsb_widgets"] = True
        # overrides/main.html preloads these, so stepping does not wait for the player.
        page.meta.setdefault("vsb_frames", []).append(f"{item_id}.frames.json")
        return markup.widget_html(entry.item, entry.module, _state["frames"][item_id],
                                  f"{item_id}.frames.json")

    html = MARKER.sub(replace, html)
    if LEFTOVER.search(html.replace(CARDS, "")):
        raise PluginError(f"{page.file.src_uri}: a [[widget: ...]] or [[chart: ...]] marker "
                          "must stand alone on its own line")
    _check_permalinks(page)
    if page.meta.get("vsb_widgets"):
        # The player loads as an async module right after the last widget: it starts as
        # soon as it arrives, with every widget above it already parsed, instead of
        # waiting behind the theme's scripts for the whole document (a deferred module).
        from mkdocs.utils import get_relative_url

        src = get_relative_url("js/player.js", page.url)
        last = html.rindex('<div class="vsb-widget')
        end = _widget_end(html, last)
        html = (html[:end] + f'<script type="module" async src="{src}"></script>'
                + html[end:])
    return html


def _widget_end(html: str, start: int) -> int:
    """The index just past the </div> that closes the widget div opened at `start`."""
    depth = 0
    for m in re.finditer(r"<div\b|</div>", html[start:]):
        depth += 1 if m.group(0) != "</div>" else -1
        if depth == 0:
            return start + m.end()
    raise PluginError("a widget's HTML is not closed")


def _check_permalinks(page) -> None:
    """Links such as `#paged-attention.step=3&paged-attention.block_size=8` are widget
    permalinks, not heading anchors: check them here (the widget is on the target page, the
    settings are its parameters and their values validate) and take them out of MkDocs' own
    anchor check, which would call every one of them missing."""
    from pages.framework import widget as widget_mod

    links = getattr(page, "links_to_anchors", None) or {}
    for target, anchors in links.items():
        on_target = {item_id for kind, item_id in _state["uses"].get(target.src_uri, ())
                     if kind == "widget"}
        for anchor in list(anchors):
            head = anchor.split("=", 1)[0].split(".", 1)[0]
            if "." not in anchor.split("=", 1)[0] or head not in _state["widgets"]:
                continue
            if head not in on_target:
                raise PluginError(f"{page.file.src_uri}: permalink #{anchor} points at widget "
                                  f"{head!r}, which is not on {target.src_uri}")
            raw: dict[str, dict[str, str]] = {}
            # Decoded as the player's URLSearchParams decodes it ("+" is a space).
            for key, value in urllib.parse.parse_qsl(anchor, keep_blank_values=True):
                wid, _, name = key.partition(".")
                raw.setdefault(wid, {})[name] = value
            for wid, fields in raw.items():
                step = fields.pop("step", None)
                item = _state["widgets"][wid].item
                values, errors = widget_mod.validate(item, fields)
                if errors:
                    raise PluginError(f"{page.file.src_uri}: permalink #{anchor}: "
                                      + "; ".join(errors.values()))
                if step is None:
                    continue
                # Count the frames of the scenario the link sets up (the defaults' are known).
                count = (len(_state["frames"][wid]) if not fields
                         else len(widget_mod.run(item, values)))
                if not (step.isdigit() and 1 <= int(step) <= count):
                    raise PluginError(f"{page.file.src_uri}: permalink #{anchor}: that "
                                      f"scenario of {wid} has {count} steps, not {step}")
            del anchors[anchor]


def on_page_context(context, page, config, nav):
    if CARDS in (page.content or ""):
        page.content = page.content.replace(CARDS, topic_cards(page, nav))
    return context


def topic_cards(home, nav) -> str:
    """One card per page in the nav, apart from the home page and pages whose front matter
    says `card: false`. Each card shows the page's `description` front matter."""
    from pages.views.svg import esc

    items = []
    for page in nav.pages:
        if page is home or page.meta.get("card") is False:
            continue
        description = page.meta.get("description")
        if not description:
            raise PluginError(f"{page.file.src_uri}: needs a 'description' in its front matter "
                              "for its card on the home page (or 'card: false')")
        href = esc(page.file.url_relative_to(home.file))
        items.append(f'<li><p><strong><a href="{href}">{esc(page.title)}</a></strong></p>'
                     f"<hr><p>{esc(description)}</p></li>")
    if not items:
        return '<p class="vsb-no-topics">The first topic pages are being written.</p>'
    return '<div class="grid cards vsb-cards"><ul>' + "".join(items) + "</ul></div>"


def runtime_files(config) -> list[File]:
    """The vendored Pyodide and PyScript, the worker's entry file, and the app zip."""
    modules = ROOT / "node_modules"
    pyodide, pyscript = modules / "pyodide", modules / "@pyscript" / "core" / "dist"
    if not (pyodide / "pyodide.mjs").exists() or not (pyscript / "core.js").exists():
        raise PluginError("the vendored runtime is missing: run `npm ci` (./dev does it)")
    out = [File.generated(config, f"{RUNTIME}/pyodide/{name}", abs_src_path=str(pyodide / name))
           for name in PYODIDE_FILES]
    for path in sorted(pyscript.iterdir()):
        if path.is_file() and not path.name.endswith(".map"):
            out.append(File.generated(config, f"{RUNTIME}/pyscript/{path.name}", abs_src_path=str(path)))
    out.append(File.generated(config, f"{RUNTIME}/worker.py",
                              content=(ROOT / "pages" / "framework" / "worker.py").read_text(encoding="utf-8")))
    out.append(File.generated(config, f"{RUNTIME}/app.zip", content=app_zip(_state.get("extra", []))))
    return out


def app_zip(extra_modules: list[str]) -> bytes:
    """sim/ and pages/ (.py files only) plus any extra topic modules, at their import paths."""
    import importlib.util

    entries: dict[str, Path] = {}
    for package in ("sim", "pages"):
        for path in sorted((ROOT / package).rglob("*.py")):
            arcname = path.relative_to(ROOT).as_posix()
            if arcname not in NOT_SHIPPED and "__pycache__" not in arcname:
                entries[arcname] = path
    for name in extra_modules:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin:
            raise PluginError(f"extra topic module {name!r} cannot be imported")
        entries[name.replace(".", "/") + ".py"] = Path(spec.origin)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for arcname in sorted(entries):
            info = zipfile.ZipInfo(arcname, ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, entries[arcname].read_bytes())
    return buf.getvalue()
