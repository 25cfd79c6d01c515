"""Small text helpers shared by the views: numbers as a picture prints them, plurals,
ranges, line wrapping. Deterministic, so CPython and Pyodide write the same bytes."""
from __future__ import annotations


def f2(x: float) -> str:
    """A float with two decimals, never "-0.00" (the picture's numbers are rounded)."""
    text = f"{x:.2f}"
    return "0.00" if text == "-0.00" else text


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def span(items) -> str:
    """First-last of a run of positions: "3-7", "3", or "none"."""
    items = list(items)
    if not items:
        return "none"
    if len(items) == 1:
        return str(items[0])
    return f"{items[0]}-{items[-1]}"


def wrap(text: str, width: int) -> list[str]:
    """Greedy word wrap to lines of at most `width` characters (SVG text does not wrap)."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + ([line] if line else [])
