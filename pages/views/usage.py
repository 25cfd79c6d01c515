"""Blocks in use with sharing against the same sequences as independent copies (the paper's
measure of what sharing saves, sim/studies/sharing.py): the two bars and the sentence the
parallel sampling and beam search pages show after every step.

`u` is a `sim.studies.sharing.BlockUsage`: `used` (distinct physical blocks), `unshared`
(one block per block-table entry), `saved`, `saving`. Text is kv_view.FONT, so a phone draws
it at 11 px or more.
"""
from __future__ import annotations

from pages.views import kv_view, svg
from pages.views.text import plural

COPIES = ("independent copy", "independent copies")
BEAMS = ("independent beam", "independent beams")
BAR_H = 14


def copies_words(copies: int, what: tuple[str, str] = COPIES) -> str:
    """"3 independent copies", "1 independent copy"."""
    return plural(copies, *what)


def bars(x: float, y: float, u, copies: int, scale_max: int, averaged: float | None,
         what: tuple[str, str] = COPIES) -> tuple[list[str], float]:
    """Two bars on one scale: blocks in use with sharing, and what `copies` independent
    copies (or beams: `what`) would hold; under them the saving now and, when known, the
    time-averaged saving so far (`averaged`), on two lines. `scale_max` is the longest bar
    of the whole trace, so bars of different steps compare. Always the same height."""
    font = kv_view.FONT
    lead = round(font * 1.35, 2)
    labels = ("with sharing", copies_words(copies, what))
    label_w = max(kv_view.text_width(t) for t in labels) + 8
    number_w = kv_view.text_width(str(max(scale_max, 1))) + 6
    right = kv_view.WIDTH - kv_view.MARGIN - number_w
    unit = (right - (x + label_w)) / max(1, scale_max)
    out = [svg.text(x, y + font, "Blocks in use", size=font, fill="muted")]
    yy = y + lead + 2
    for label, value, color, k in ((labels[0], u.used, "accent", "bar:shared"),
                                   (labels[1], u.unshared, "used", "bar:copies")):
        out.append(svg.text(x, yy + font - 1, label, size=font))
        out.append(svg.rect(x + label_w, yy + 1, max(0.0, value * unit), BAR_H, fill=color,
                            tip=f"{label}: {plural(value, 'block')}", data_k=k))
        out.append(svg.text(x + label_w + value * unit + 4, yy + font - 1, str(value),
                            size=font, data_k=f"{k}/t"))
        yy += lead + 2
    now = (f"saved now: {u.saved} of {u.unshared} ({100 * u.saving:.0f}%)" if u.unshared
           else "no blocks in use")
    out.append(svg.text(x, yy + font - 1, now, size=font, fill="muted"))
    yy += lead
    if averaged is not None:
        out.append(svg.text(x, yy + font - 1, f"time-averaged so far: {100 * averaged:.0f}%",
                            size=font, fill="muted"))
    yy += lead
    return out, yy - y


def sentence(u, copies: int, what: tuple[str, str] = COPIES) -> str:
    """The bars in words; empty while no block is in use."""
    if not u.unshared:
        return ""
    return (f"Blocks in use: {u.used}; {copies_words(copies, what)} would hold "
            f"{u.unshared}, so sharing saves {u.saved} ({100 * u.saving:.0f}%).")


def saving_words(u) -> str:
    """"saves 2 of 6 blocks (33%)": the clause the short narration ends with."""
    return f"saves {u.saved} of {plural(u.unshared, 'block')} ({100 * u.saving:.0f}%)"


def request_heading(x: float, title: str, width_words: str, v: dict) -> tuple[list[str], float]:
    """The sharing pages' first lines: the step's title (v0.5.5), then "Request A: n = 3,
    7-token prompt, max_tokens 6" wrapped; returns (elements, the y to draw on from)."""
    parts = kv_view.heading(x, title, "v0.5.5")
    elements, dy = kv_view.lines(x, 24, f"Request A: {width_words}, {v['prompt_len']}-token "
                                        f"prompt, max_tokens {v['output_len']}")
    return parts + elements, 24 + dy + 4


def averaged_sentence(avg: float | None) -> list[str]:
    """The paper's time-averaged saving so far, as a sentence (none before the first
    iteration)."""
    if avg is None:
        return []
    return [f"Time-averaged saving so far (the paper's measure, summed over the "
            f"iterations): {100 * avg:.0f}%."]
