"""Reuse: what an instructor needs to cite a page, embed a widget or link to a preset.

The build hook calls these for every topic page: a "Cite / reuse" block (BibTeX for the page,
the licence, where the source is, how to report a correction), an oEmbed document per widget
(type "rich", the iframe that embeds it), and the instructors' table of every widget. The
licences: code Apache-2.0 (LICENSE), text, pictures and exported frames CC BY 4.0.

URLs: oEmbed consumers and citations need absolute addresses, which a static site only knows
when it is told where it is served: `site_url` in mkdocs.yml, or the SITE_URL environment
variable at build time. Without it the documents carry site-relative paths and the page's
own script completes the citation's address from the browser's location.
"""
from __future__ import annotations

import json
import re

from pages.framework.widget import Widget
from pages.views.svg import esc

SITE_NAME = "vLLM, step by step"
LICENCE = "CC BY 4.0"
LICENCE_URL = "https://creativecommons.org/licenses/by/4.0/"
CODE_LICENCE = "Apache-2.0"
YEAR = 2026
EMBED_WIDTH = 720


def absolute(site_url: str | None, path: str) -> str:
    """`path` (site-relative, no leading slash) on the site, absolute when the site's
    address is known, else rooted at "/"."""
    base = (site_url or "/").rstrip("/") + "/"
    return base + path.lstrip("/")


def bibtex_key(page_url: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "", page_url.strip("/").split("/")[-1].lower()) or "home"
    return f"vllmstepbystep{YEAR}{slug}"


def bibtex(title: str, url: str, key: str) -> str:
    """A @misc entry for one page (the form Distill and most explainer sites use)."""
    def field(v: str) -> str:
        return v.replace("{", "").replace("}", "")
    return (f"@misc{{{key},\n"
            f"  title        = {{{field(title)}}},\n"
            f"  author       = {{{{The {SITE_NAME} contributors}}}},\n"
            f"  howpublished = {{{field(SITE_NAME)}}},\n"
            f"  year         = {{{YEAR}}},\n"
            f"  url          = {{{url}}},\n"
            f"  note         = {{Text and figures {LICENCE}; code {CODE_LICENCE}}}\n"
            f"}}")


def cite_block(title: str, page_path: str, site_url: str | None, repo_url: str | None,
               corrections_url: str | None) -> str:
    """The HTML of a page's "Cite / reuse" block."""
    url = absolute(site_url, page_path)
    key = bibtex_key(page_path)
    source = (f'<a href="{esc(repo_url)}">the project\'s repository</a>' if repo_url else
              "the site's own files: the simulation is the wheel under <code>_runtime/</code> "
              "(pure Python, the same code that draws every picture)")
    corrections = (f'<a href="{esc(corrections_url)}">report a correction</a>'
                   if corrections_url else
                   "report a correction to the site's maintainers")
    return "".join([
        '<section class="vsb-cite" aria-labelledby="cite-reuse">',
        '<h2 id="cite-reuse">Cite / reuse</h2>',
        f"<p>Text, pictures and exported frames: <a href=\"{LICENCE_URL}\" rel=\"license\">"
        f"{LICENCE}</a> (credit “{esc(SITE_NAME)}” and the page's address); code: "
        f"{CODE_LICENCE}. Every widget's <em>Download frame</em> carries this attribution, and "
        "<em>Copy embed code</em> gives an iframe for course pages (see "
        "<a href=\"../instructors/\">for instructors</a>).</p>",
        f"<p>Source: {source}. Found something wrong? Each claim names the vLLM file it comes "
        f"from; {corrections} with the page's address and the step (<em>Link to this "
        "step</em>).</p>",
        # Without a site URL the page's script (overrides/main.html) completes the address.
        f'<pre class="vsb-bibtex" data-key="{esc(key)}"{"" if site_url else " data-root-relative"}>'
        f"<code>{esc(bibtex(title, url, key))}"
        "</code></pre>",
        "</section>",
    ])


def oembed(widget: Widget, page_title: str, page_path: str, site_url: str | None,
           height: int) -> dict:
    """An oEmbed 1.0 "rich" response for one widget (https://oembed.com, section 2.3.4)."""
    src = absolute(site_url, page_path) + f"?embed={widget.id}"
    script = absolute(site_url, "js/embed.js")
    html = (f'<iframe src="{esc(src)}" title="{esc(widget.title)}" width="100%" '
            f'height="{height}" style="border:0;width:100%" loading="lazy" data-vsb-embed '
            'allow="clipboard-write" '
            'sandbox="allow-scripts allow-same-origin allow-forms allow-popups allow-downloads">'
            f'</iframe><script src="{esc(script)}" async></script>')
    return {
        "version": "1.0",
        "type": "rich",
        "title": f"{widget.title} ({page_title})",
        "provider_name": SITE_NAME,
        "provider_url": absolute(site_url, ""),
        "author_name": f"The {SITE_NAME} contributors",
        "html": html,
        "width": EMBED_WIDTH,
        "height": height,
        "license": LICENCE,
        "license_url": LICENCE_URL,
    }


def oembed_json(doc: dict) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=1, sort_keys=True) + "\n"


def embed_height(frames: list[dict]) -> int:
    """A fallback iframe height for hosts without embed.js: the tallest frame's picture at
    the embed's width, plus the toolbar, the narration and the source line."""
    tallest = 0.0
    for frame in frames:
        m = re.search(r'viewBox="0 0 ([0-9.]+) ([0-9.]+)"', frame["svg"])
        if m:
            w, h = float(m[1]), float(m[2])
            tallest = max(tallest, h * min(480.0, EMBED_WIDTH - 40) / w)
    return int(tallest + 320)
