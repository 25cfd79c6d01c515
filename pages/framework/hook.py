"""The MkDocs build hook (mkdocs.yml: `hooks: [pages/framework/hook.py]`).

On every build (`mkdocs build` and each `mkdocs serve` rebuild) it:

- finds the markers `[[widget: <id>]]`, `[[chart: <id>]]` and `[[topic-cards]]`, each alone
  on its own line in a page's Markdown;
- runs each widget's default scenario in CPython, writes the frames as `<id>.frames.json`
  next to the page, and puts the widget's HTML (form, first picture inline, player
  controls) where the marker was;
- renders every permalink a page links to with settings of its own (the "Try this" links)
  at build time too: `<id>.<hash>.frames.json` next to the widget's page, listed in the
  widget's `data-presets`, so following such a link needs no Python;
- puts the player's <script> after the last widget of a page, with the runtime's manifest
  (`data-runtime`: where the worker and the files it loads are, each with a content hash);
- adds the runtime as generated files, so `serve` and `build` both serve them: the vendored
  Pyodide, the worker (pages/framework/worker.js), and what pages/framework/runtime.py
  builds: a memory snapshot of Python with the project imported, and python.zip (the
  standard library the project uses and the project, byte-compiled); app.zip holds the
  sources for a start without either;
- fills the home page's `[[topic-cards]]` with one card per page in the nav (with the engine
  each page shows, from its `engine:` front matter), and its `[[showcase: <id>]]` with a
  widget's default trace playing by itself (its frames, pre-rendered; docs/js/showcase.js);
- for teachers (pages/framework/reuse.py): appends a "Cite / reuse" block to every page with
  a widget, writes an oEmbed document per widget (`<id>.oembed.json`, linked from the page's
  <head>), fills the instructors' page's `[[instructors]]` with every widget, its goal, its
  presets and its embed code, and serves the simulation's wheel from `_runtime/`.

`extra.topic_modules` in mkdocs.yml names extra topic modules (tests use it for a widget
that must never appear on the real site).
"""

from __future__ import annotations

import hashlib
import html as html_lib
import io
import json
import posixpath
import re
import sys
import zipfile
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = "_runtime"
# What the worker needs from the npm package (python_stdlib.zip only when a module is missing
# from the build's own zip or there is none; the lock file only for other tools: the worker
# passes its `info` inline). Source maps stay behind: only devtools ask.
PYODIDE_FILES = ("pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip",
                 "pyodide-lock.json")
# Python files the zip leaves out: the build's own (the hook imports mkdocs, which the
# browser lacks; the runtime builder runs Node).
NOT_SHIPPED = {"pages/framework/hook.py", "pages/framework/runtime.py",
               "pages/framework/pyodide_build.py"}
# A reader's value no field accepts: exercises every field's error path in the build's runs.
NOT_A_VALUE = "not-a-value!"
# Fixed zip timestamps: the same sources give the same bytes on every build.
ZIP_DATE = (2024, 1, 1, 0, 0, 0)

MARKER = re.compile(r"<p>\[\[(widget|chart):\s*([A-Za-z0-9_-]+)\s*\]\]</p>")
MARKER_SOURCE = re.compile(r"^\[\[(widget|chart):\s*([A-Za-z0-9_-]+)\s*\]\]\s*$", re.M)
LEFTOVER = re.compile(r"\[\[(widget|chart|topic-cards|instructors)")
CARDS = "<p>[[topic-cards]]</p>"
SHOWCASE = re.compile(r"<p>\[\[showcase:\s*([A-Za-z0-9_-]+)\s*\]\]</p>")
INSTRUCTORS = "<p>[[instructors]]</p>"

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
    _state.update(widgets=widgets, charts=charts, extra=extra, frames={}, uses={},
                  answers={}, presets={}, manifest=None, config=config)
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
                content = widget_mod.to_json(_state["frames"][item_id])
                files.append(File.generated(config, uri, content=content))
    _state["uses"] = uses
    _state["files"] = files
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
    if LEFTOVER.search(html.replace(CARDS, "").replace(INSTRUCTORS, "")):
        raise PluginError(f"{page.file.src_uri}: a [[widget: ...]] or [[chart: ...]] marker "
                          "must stand alone on its own line")
    _check_permalinks(page)
    if page.meta.get("vsb_widgets"):
        html += _reuse(page, config)
    if page.meta.get("vsb_widgets"):
        # The player loads as an async module right after the last widget: it starts as
        # soon as it arrives, with every widget above it already parsed, instead of
        # waiting behind the theme's scripts for the whole document (a deferred module).
        from mkdocs.utils import get_relative_url

        src = get_relative_url("js/player.js", page.url)
        last = html.rindex('<div class="vsb-widget')
        end = _widget_end(html, last)
        manifest = html_lib.escape(json.dumps(_state["manifest"], separators=(",", ":")))
        html = (html[:end] + f'<script type="module" async src="{src}" data-runtime="{manifest}">'
                '</script>' + html[end:])
    return html


def _site_url(config) -> str | None:
    import os

    return os.environ.get("SITE_URL") or config.get("site_url") or None


def _reuse(page, config) -> str:
    """The page's oEmbed documents (one per widget, linked from its <head> by
    overrides/main.html) and its "Cite / reuse" block."""
    from pages.framework import reuse

    site_url = _site_url(config)
    page_path = page.url or ""
    page_dir = posixpath.dirname(page.file.dest_uri)
    for kind, wid in _state["uses"].get(page.file.src_uri, ()):
        if kind != "widget":
            continue
        widget = _state["widgets"][wid].item
        doc = reuse.oembed(widget, page.title or "", page_path, site_url,
                           reuse.embed_height(_state["frames"][wid]))
        name = f"{wid}.oembed.json"
        uri = posixpath.join(page_dir, name)
        if _state["files"].get_file_from_path(uri) is None:
            _state["files"].append(File.generated(config, uri, content=reuse.oembed_json(doc)))
        page.meta.setdefault("vsb_oembed", []).append({"href": name, "title": doc["title"]})
    return reuse.cite_block(page.title or "", page_path, site_url, config.get("repo_url"),
                            config.extra.get("corrections_url"))


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
    from pages.framework import link_hash
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
            # Read as the player reads it (a "+" is a plus).
            for key, value in link_hash.parse_hash(anchor):
                wid, _, name = key.partition(".")
                raw.setdefault(wid, {})[name] = value
            for wid, fields in raw.items():
                step = fields.pop("step", None)
                predict = fields.pop("predict", None)
                if predict not in (None, "0", "1"):
                    raise PluginError(f"{page.file.src_uri}: permalink #{anchor}: predict is 1 "
                                      "(start in predict mode) or 0")
                item = _state["widgets"][wid].item
                values, errors = widget_mod.validate(item, fields)
                if errors:
                    raise PluginError(f"{page.file.src_uri}: permalink #{anchor}: "
                                      + "; ".join(errors.values()))
                count = len(_state["frames"][wid])
                defaults = {k: v for k, v in item.default_raw().items() if k in fields}
                if fields and fields != defaults:
                    count = len(_preset(target, wid, fields)["frames"])
                if step is not None and not (step.isdigit() and 1 <= int(step) <= count):
                    raise PluginError(f"{page.file.src_uri}: permalink #{anchor}: that "
                                      f"scenario of {wid} has {count} steps, not {step}")
            del anchors[anchor]


def _preset(target, wid: str, fields: dict[str, str]) -> dict:
    """The answer Python would give a link with these settings, written at build time next to
    the page that shows the widget, and listed for that widget's `data-presets`."""
    from pages.framework import widget as widget_mod

    key = (wid, json.dumps(fields, sort_keys=True))
    if key not in _state["answers"]:
        text = widget_mod.to_json(widget_mod.respond(_state["widgets"][wid].item, fields))
        _state["answers"][key] = (text, json.loads(text))
    text, answer = _state["answers"][key]
    name = f"{wid}.{hashlib.sha256(text.encode()).hexdigest()[:12]}.frames.json"
    uri = posixpath.join(posixpath.dirname(target.dest_uri), name)
    files = _state["files"]
    if files.get_file_from_path(uri) is None:
        files.append(File.generated(_state["config"], uri, content=text))
    listed = _state["presets"].setdefault(target.src_uri, {}).setdefault(wid, {})
    listed[name] = {"fields": fields, "values": answer["values"], "href": name}
    return answer


def on_page_context(context, page, config, nav):
    if CARDS in (page.content or ""):
        page.content = page.content.replace(CARDS, topic_cards(page, nav))
    if INSTRUCTORS in (page.content or ""):
        page.content = page.content.replace(INSTRUCTORS, instructors_table(page, nav, config))
    if SHOWCASE.search(page.content or ""):
        page.content = SHOWCASE.sub(lambda m: showcase(page, nav, m.group(1)), page.content)
    # Every page has been rendered by now, so every link to this page's widgets is known.
    for wid, listed in sorted(_state["presets"].get(page.file.src_uri, {}).items()):
        attr = f'data-frames="{wid}.frames.json"'
        presets = html_lib.escape(json.dumps(sorted(listed.values(), key=lambda p: p["href"]),
                                             separators=(",", ":"), sort_keys=True))
        page.content = page.content.replace(attr, f'{attr} data-presets="{presets}"', 1)
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
        engine = page.meta.get("engine")
        badge = f' <span class="vsb-engine">{esc(engine)}</span>' if engine else ""
        items.append(f'<li><p><strong><a href="{href}">{esc(page.title)}</a></strong>{badge}</p>'
                     f"<hr><p>{esc(description)}</p></li>")
    if not items:
        return '<p class="vsb-no-topics">The first topic pages are being written.</p>'
    return '<div class="grid cards vsb-cards"><ul>' + "".join(items) + "</ul></div>"


def showcase(home, nav, wid: str) -> str:
    """`[[showcase: <id>]]`: the widget's default trace, playing by itself, linking to the
    first page in the nav that shows it (whose `<id>.frames.json` it plays)."""
    from mkdocs.utils import get_relative_url

    from pages.framework import markup

    for page in nav.pages:
        if ("widget", wid) in _state["uses"].get(page.file.src_uri, ()):
            break
    else:
        raise PluginError(f"{home.file.src_uri}: [[showcase: {wid}]]: no page in the nav "
                          f"shows widget {wid!r}")
    frames_uri = posixpath.join(posixpath.dirname(page.file.dest_uri), f"{wid}.frames.json")
    return markup.showcase_html(_state["widgets"][wid].item, _state["frames"][wid],
                                get_relative_url(frames_uri, home.url),
                                page.file.url_relative_to(home.file), page.title or "",
                                get_relative_url("js/showcase.js", home.url))


def _link_texts(page, wid: str) -> dict[str, str]:
    """The words of the page's own links to settings of widget `wid` ("Watermark 0"), keyed by
    the settings they set (JSON, sorted): what a preset is called where the reader meets it."""
    from html import unescape

    from pages.framework import link_hash

    out: dict[str, str] = {}
    for m in re.finditer(r'<a href="#([^"]+)"[^>]*>(.*?)</a>', page.content or "", re.S):
        fields = {}
        for key, value in link_hash.parse_hash(unescape(m.group(1))):
            head, _, name = key.partition(".")
            if head == wid and name not in ("step", "predict"):
                fields[name] = value
        words = " ".join(unescape(re.sub(r"<[^>]+>", "", m.group(2))).split())
        if fields and words:
            out.setdefault(json.dumps(fields, sort_keys=True), words)
    return out


def _preset_words(item, fields: dict[str, str]) -> str:
    """A preset without a link of its own named by its settings' labels: "GPU blocks 4"."""
    labels = {p.name: p.label for p in item.params}
    return ", ".join(f"{labels.get(k, k)} {v}" for k, v in sorted(fields.items()))


def instructors_table(here, nav, config) -> str:
    """Every widget of every page in the nav, in reading order: its title and page, its goal,
    the presets the page links to (the "Try this" exercises, named by the page's own link
    words), and its embed code. One row per widget, two columns (the row stacks on a phone)."""
    from pages.framework import link_hash, reuse
    from pages.views.svg import esc

    site_url = _site_url(config)
    # Without SITE_URL the codes hold paths from the site's root, which the page's script
    # (overrides/main.html) completes with the address the reader sees.
    relative = "" if site_url else " data-root-relative"
    rows = []
    for page in nav.pages:
        widgets = [wid for kind, wid in _state["uses"].get(page.file.src_uri, ())
                   if kind == "widget"]
        for wid in widgets:
            widget = _state["widgets"][wid].item
            href = page.file.url_relative_to(here.file)
            words = _link_texts(page, wid)
            order = {key: i for i, key in enumerate(words)}
            # In the order the page links to them, so the list reads like the page.
            presets = sorted(_state["presets"].get(page.file.src_uri, {}).get(wid, {}).values(),
                             key=lambda p: (order.get(json.dumps(p["fields"], sort_keys=True),
                                                      len(order)), p["href"]))
            links = []
            for preset in presets:
                fields = preset["fields"]
                query = link_hash.format_hash([(f"{wid}.{k}", v)
                                               for k, v in sorted(fields.items())])
                label = (words.get(json.dumps(fields, sort_keys=True))
                         or _preset_words(widget, fields))
                links.append(f'<li><a href="{esc(href)}#{esc(query)}">{esc(label)}</a></li>')
            doc = reuse.oembed(widget, page.title or "", page.url, site_url,
                               reuse.embed_height(_state["frames"][wid]))
            preset_html = (f'<p class="vsb-instructor-label">Presets (each opens the widget '
                           f'with its settings, no waiting)</p><ul>{"".join(links)}</ul>'
                           if links else "")
            preset_html += _predict_html(widget, href)
            rows.append(
                f'<tr class="vsb-instructor" id="instructors-{esc(wid)}">'
                f'<td class="vsb-instructor-about"><p><a href="{esc(href)}#{esc(wid)}">'
                f"<strong>{esc(widget.title)}</strong></a> "
                f'<span class="vsb-instructor-page">({esc(page.title or "")})</span></p>'
                f"<p>{esc(widget.goal)}</p>{preset_html}</td>"
                f'<td class="vsb-instructor-embed"><p class="vsb-instructor-label">Embed code '
                f'(<a href="{esc(href)}{esc(wid)}.oembed.json">oEmbed</a>)</p>'
                f'<textarea class="vsb-embed-snippet" readonly rows="5"{relative} '
                f'aria-label="Embed code for {esc(widget.title)}">{esc(doc["html"])}</textarea>'
                f"</td></tr>")
    head = ("<thead><tr><th>Widget, learning goal and presets (Try this)</th>"
            "<th>Embed code</th></tr></thead>")
    return f'<table class="vsb-instructors">{head}<tbody>{"".join(rows)}</tbody></table>'


def _predict_html(widget, href: str) -> str:
    """What predict mode asks of this widget (the kinds of question its steps carry) and a
    link that opens it in predict mode."""
    from pages.questions import KINDS
    from pages.views.svg import esc

    if not widget.question_kinds:
        return ""
    kinds = "".join(f"<li>{esc(KINDS[k])}</li>" for k in widget.question_kinds)
    wid = esc(widget.id)
    return (f'<p class="vsb-instructor-label">Predict mode asks, before the steps it '
            f'concerns</p><ul>{kinds}</ul>'
            f'<p><a href="{esc(href)}#{wid}.predict=1">Open it in predict mode</a> (or add '
            f'<code>predict=1</code> to an embed\'s address)</p>')


def runtime_files(config) -> list[File]:
    """The vendored Pyodide, the worker, app.zip, and what runtime.build makes (python.zip
    and the snapshot). Sets `_state["manifest"]`: each file's URL from the site's root with
    a content hash (`?v=`), which the player hands the worker."""
    from pages.framework import runtime

    pyodide = ROOT / "node_modules" / "pyodide"
    if not (pyodide / "pyodide.mjs").exists():
        raise PluginError("the vendored runtime is missing: run `npm ci` (./dev does it)")
    out: list[File] = []
    manifest: dict = {"files": {}, "pyodide": f"{RUNTIME}/pyodide/"}

    def add(uri: str, data: bytes | None = None, path: Path | None = None) -> str:
        if data is None:
            data = path.read_bytes()
            out.append(File.generated(config, uri, abs_src_path=str(path)))
        else:
            out.append(File.generated(config, uri, content=data))
        return f"{uri}?v={hashlib.sha256(data).hexdigest()[:12]}"

    for name in PYODIDE_FILES:
        manifest["files"][name] = add(f"{RUNTIME}/pyodide/{name}", path=pyodide / name)
    here = ROOT / "pages" / "framework"
    manifest["worker"] = add(f"{RUNTIME}/worker.js", path=here / "worker.js")
    manifest["delta"] = add(f"{RUNTIME}/snapshot_delta.mjs", path=here / "snapshot_delta.mjs")
    app = app_zip(_state.get("extra", []))
    manifest["app"] = add(f"{RUNTIME}/app.zip", app)
    # The simulation as a wheel, for browser notebooks (micropip.install(<this URL>)).
    from pages.framework import wheel

    name, data = wheel.build(ROOT)
    out.append(File.generated(config, f"{RUNTIME}/{name}", content=data))
    # `mkdocs serve` does not wait for it (a rebuild without it is the fallback's speed).
    built = runtime.build(app, _state.get("extra", []), *_runtime_calls(),
                          wait=_state.get("command") != "serve")
    manifest["python"] = manifest["snapshot"] = None
    if built.ok:
        manifest["python"] = add(f"{RUNTIME}/python.zip", built.files["python.zip"])
        manifest["snapshot"] = add(f"{RUNTIME}/snapshot.bin.gz", built.files["snapshot.bin.gz"])
    else:
        # The site still works: the worker starts Python from the full standard library.
        why = built.report.get("error") or "the runtime build failed"
        manifest["why"] = why.splitlines()[0][:200]
    manifest["lock"] = runtime.lock_info()
    _state["manifest"] = manifest
    _state["runtime_report"] = built.report
    return out


def _runtime_calls() -> tuple[list, list]:
    """What the runtime build runs through Pyodide: every widget's defaults, a value no field
    accepts in each field, and the worker's error paths; with CPython's answers to compare
    for the defaults of the widgets the pages show."""
    from pages.framework import widget as widget_mod

    exercise, check = [], []
    for wid, entry in sorted(_state["widgets"].items()):
        exercise.append([entry.module, wid, "{}"])
        for p in entry.item.params:
            exercise.append([entry.module, wid, json.dumps({p.name: NOT_A_VALUE})])
        if wid in _state["frames"]:
            answer = {"values": entry.item.default_raw(), "frames": _state["frames"][wid]}
            check.append([entry.module, wid, "{}", widget_mod.to_json(answer)])
    if exercise:
        module, wid = exercise[0][:2]
        exercise += [[module, wid, "[1]"], [module, "no-such-widget", "{}"],
                     ["no_such_module", wid, "{}"]]
    return exercise, check


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
