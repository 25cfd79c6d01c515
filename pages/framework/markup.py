"""The HTML a widget or chart marker becomes on a built page.

The player (docs/js/player.js) finds everything by these class names and data attributes,
so this file and the player are the two halves of one contract. The first frame's SVG is
inlined, so the first picture needs no request and no Python.

Layout, top to bottom: title and status; the toolbar (Back, Step, Play, scrubber, counter),
so the buttons sit right under the title and never move when the narration changes length;
the picture; the narration (at most a few sentences) with the step's full event list one
click away; the settings form; the tools (link, download, embed, cite).
"""

from __future__ import annotations

from pages.framework.widget import Param, Widget
from pages.views.svg import esc

SPEEDS = (("0.5", "0.5×"), ("1", "1×"), ("2", "2×"), ("4", "4×"))


def widget_html(widget: Widget, module: str, frames: list[dict], frames_url: str) -> str:
    wid = esc(widget.id)
    first = frames[0]
    single = " vsb-single" if len(frames) == 1 else ""
    fields = "".join(_field(widget, p) for p in widget.params)
    summary = f'<p class="vsb-summary">{esc(widget.summary)}</p>' if widget.summary else ""
    speeds = "".join(
        f'<option value="{v}"{" selected" if v == "1" else ""}>{label}</option>'
        for v, label in SPEEDS
    )
    counter = counter_text(first, 0, len(frames))
    # One line per element keeps Python-Markdown from treating any of it as Markdown.
    return "".join([
        f'<div class="vsb-widget{single}" id="{wid}" data-widget="{wid}"'
        f' data-module="{esc(module)}"',
        f' data-frames="{esc(frames_url)}" data-count="{len(frames)}" tabindex="0" role="group"',
        f' aria-label="{esc(widget.title)} (left and right arrows step, space plays)">',
        '<div class="vsb-head">',
        f'<span class="vsb-title">{esc(widget.title)}</span>',
        '<span class="vsb-status" role="status">The default steps work now.</span>',
        '</div>',
        summary,
        f'<div class="vsb-controls" role="toolbar" aria-label="{esc(widget.title)}: steps">',
        '<button type="button" data-act="back" title="Previous step (left arrow)" disabled>'
        '◀ Back</button>',
        '<button type="button" data-act="step" title="Next step (right arrow)">Step ▶</button>',
        '<button type="button" data-act="play" title="Play or pause (space)" aria-pressed="false">'
        '▶ Play</button>',
        f'<input type="range" class="vsb-scrub" min="0" max="{len(frames) - 1}" value="0"'
        f' aria-label="Step" aria-valuetext="{esc(counter)}">',
        f'<output class="vsb-counter">{esc(counter)}</output>',
        f'<label class="vsb-speed">Speed <select data-act="speed">{speeds}</select></label>',
        '<button type="button" data-act="reset" title="Back to the first step" disabled>'
        'Reset</button>',
        '<button type="button" data-act="predict" aria-pressed="false" title="Predict mode: '
        'answer a question about each step before you see it">Predict</button>',
        '</div>',
        '<p class="vsb-notice" role="alert" hidden></p>',
        '<div class="vsb-stage">',
        f'<div class="vsb-picture">{first["svg"]}</div>',
        '<div class="vsb-words">',
        _predict(widget),
        f'<p class="vsb-narration" aria-live="polite">{esc(first["narration"])}</p>',
        _details(first.get("details") or []),
        '</div>',
        '</div>',
        f'<form class="vsb-form" novalidate aria-label="{esc(widget.title)} settings">',
        f'<div class="vsb-fields">{fields}</div>',
        '<p class="vsb-error vsb-form-error" data-for="" role="alert"></p>',
        '<button type="submit" class="vsb-run">Run with these settings</button>',
        '</form>',
        '<div class="vsb-tools">',
        '<a class="vsb-permalink" href="#">Link to this step</a>',
        '<button type="button" data-act="download">Download frame (SVG)</button>',
        '<button type="button" data-act="embed">Copy embed code</button>',
        '<input class="vsb-embed-code" readonly hidden aria-label="Embed code">',
        '</div>',
        '</div>',
    ])


def counter_text(frame: dict, index: int, count: int) -> str:
    """What the counter says: the frame's own name for its step when it has one (the name
    the picture and the narration use, e.g. "iteration 7"), and where it is in the trace.
    The player writes the same text (docs/js/player.js: counterText)."""
    label = frame.get("label")
    position = f"{index + 1} / {count}"
    return f"{label} · {position}" if label else position


def _predict(widget: Widget) -> str:
    """Predict mode's panel (docs/js/predict.js fills it): the question, its options as
    buttons, the verdict and explanation (a live region), the score and its clear button."""
    wid = esc(widget.id)
    return "".join([
        f'<section class="vsb-predict" aria-label="{esc(widget.title)}: predict the next step"'
        ' hidden>',
        f'<p class="vsb-predict-prompt" id="{wid}--question"></p>',
        f'<div class="vsb-predict-options" role="group" aria-labelledby="{wid}--question"></div>',
        '<div class="vsb-predict-result" role="status" aria-live="polite"></div>',
        '<p class="vsb-predict-score"><span class="vsb-predict-score-text"></span> ',
        '<button type="button" data-act="predict-skip" hidden>Show the step without '
        'answering</button> ',
        '<button type="button" data-act="predict-clear" hidden>Clear my answers</button></p>',
        '</section>',
    ])


def _details(items: list[str]) -> str:
    """The step's full account, one click away (hidden when there is nothing more)."""
    rows = "".join(f"<li>{esc(item)}</li>" for item in items)
    hidden = "" if items else " hidden"
    return (f'<details class="vsb-details"{hidden}><summary>Everything that happened in this '
            f'step</summary><ul>{rows}</ul></details>')


def chart_html(chart_id: str, title: str, svg: str, caption: str) -> str:
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return (f'<figure class="vsb-chart" id="{esc(chart_id)}" aria-label="{esc(title)}">'
            f'<div class="vsb-picture">{svg}</div>{cap}</figure>')


def _field(widget: Widget, p: Param) -> str:
    fid = f"{widget.id}--{p.name}"
    name = esc(p.name)
    raw = esc(p.to_raw(p.default))
    help_id = f"{fid}--help"
    error_id = f"{fid}--error"
    # The player adds the error's id to aria-describedby (and sets aria-invalid) while the
    # field shows an error.
    common = (f'id="{esc(fid)}" name="{name}" aria-describedby="{esc(help_id)}"'
              f' data-error-id="{esc(error_id)}"')
    if p.kind == "choice":
        options = "".join(
            f'<option value="{esc(v)}"{" selected" if v == p.default else ""}>{esc(label)}</option>'
            for v, label in p.choices
        )
        control = f"<select {common}>{options}</select>"
    elif p.kind == "bool":
        checked = " checked" if p.default else ""
        control = f'<input type="checkbox" {common} value="true"{checked}>'
    else:
        # type="text" (not "number") so the reader's exact text reaches Python's checks.
        mode = {"int": ' inputmode="numeric"', "float": ' inputmode="decimal"'}.get(p.kind, "")
        control = (f'<input type="text" {common} value="{raw}"{mode}'
                   ' autocomplete="off" spellcheck="false">')
    help_text = esc(p.help or p.allowed())
    return (f'<div class="vsb-field vsb-{p.kind}" data-field="{name}">'
            f'<label for="{esc(fid)}">{esc(p.label)}</label>{control}'
            f'<small class="vsb-help" id="{esc(help_id)}">{help_text}</small>'
            f'<span class="vsb-error" id="{esc(error_id)}" data-for="{name}" role="alert">'
            '</span></div>')


def telling_frame(frames: list[dict]) -> int:
    """The frame a still picture of a trace shows: the one with the most things drawn in it
    (keyed elements, pages/framework/keys.py), the first of them on a tie; the busiest step
    shows the most of what the widget is about."""
    from pages.framework.keys import elements

    counts = [len(elements(f["svg"])) for f in frames]
    return counts.index(max(counts))


def showcase_html(widget: Widget, frames: list[dict], frames_url: str, page_url: str,
                  page_title: str, script_url: str) -> str:
    """The home page's live picture: a widget's default trace playing by itself (its frames
    pre-rendered at build time, so no Python), docs/js/showcase.js. Without script, or with
    reduced motion, it is the telling frame, still, with a Play button; the picture links to
    the widget's page."""
    still = telling_frame(frames)
    frame = frames[still]
    counter = counter_text(frame, still, len(frames))
    return "".join([
        f'<figure class="vsb-showcase" data-frames="{esc(frames_url)}" data-still="{still}"'
        f' aria-label="{esc(widget.title)}: a preview that plays by itself">',
        '<div class="vsb-stage">',
        # The link's name is the picture's own (its role="img" label), so it says what the
        # picture shows; the caption's link says where it goes.
        f'<a class="vsb-picture" href="{esc(page_url)}">{frame["svg"]}</a>',
        '</div>',
        '<figcaption>',
        f'<p class="vsb-showcase-title"><strong>{esc(widget.title)}</strong></p>',
        f'<p>{esc(widget.summary)}</p>' if widget.summary else "",
        '<p class="vsb-showcase-controls">',
        '<button type="button" class="vsb-showcase-play" aria-pressed="false"'
        ' title="Play or pause the preview">▶ Play</button> ',
        f'<output class="vsb-counter">{esc(counter)}</output></p>',
        f'<p><a href="{esc(page_url)}">Step through it on the {esc(page_title)} page</a>, '
        'change its settings, or link to one step.</p>',
        '</figcaption>',
        '</figure>',
        f'<script type="module" async src="{esc(script_url)}"></script>',
    ])
