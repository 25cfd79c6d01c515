"""Small text helpers shared by the views: numbers as a picture prints them, plurals and verb
agreement, "a"/"an", lists, ranges, line wrapping. Deterministic, so CPython and Pyodide
write the same bytes. Every page writes its counts through these (no hand-made plurals)."""
from __future__ import annotations

from collections.abc import Sized


def f2(x: float) -> str:
    """A float with two decimals, never "-0.00" (the picture's numbers are rounded)."""
    text = f"{x:.2f}"
    return "0.00" if text == "-0.00" else text


def commas(n: int) -> str:
    """1234567 -> "1,234,567"."""
    return f"{n:,}"


def _count(n: int | Sized) -> int:
    return n if isinstance(n, int) else len(n)


def plural(n: int, word: str, many: str | None = None) -> str:
    """"1 block", "2 blocks"; `many` for irregular plurals ("copy", "copies")."""
    return f"{n} {word}" if n == 1 else f"{n} {many or word + 's'}"


def noun(n: int | Sized, word: str, many: str | None = None) -> str:
    """The word alone, agreeing with a count or a collection: noun(3, "block") -> "blocks"."""
    return word if _count(n) == 1 else (many or word + "s")


def verb(n: int | Sized, one: str, many: str) -> str:
    """The verb form agreeing with a count or a collection: verb(names, "is", "are")."""
    return one if _count(n) == 1 else many


def a(word: str) -> str:
    """The word with "a" or "an" before it, by how it is spoken: "an 8-token prompt",
    "a 7-token prompt", "an 11-block table", "an empty pool"."""
    digits = ""
    for ch in word:
        if not ch.isascii() or not ch.isdigit():
            break
        digits += ch
    if digits:
        # Spoken with a vowel first: eight..., eighty..., eleven..., eighteen... (and the
        # thousands and millions of those: 11,000 is "eleven thousand").
        vowel = digits[0] == "8" or (len(digits) % 3 == 2 and digits[:2] in ("11", "18"))
    else:
        low = word.lower()
        # "u" sounds like "you" in uniform, user, usual, utility: those take "a".
        vowel = low[:1] in ("a", "e", "i", "o") or (
            low[:1] == "u" and not low.startswith(("uni", "use", "usu", "uti")))
    return f"{'an' if vowel else 'a'} {word}"


def join(items: list[str]) -> str:
    """"A", "A and B", "A, B and C"."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


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
    return wrap_items(text.split(), width)


def wrap_items(items, width: int, sep: str = " ") -> list[str]:
    """Items joined with `sep`, broken between items into lines of at most `width`
    characters where they fit."""
    lines, line = [], ""
    for item in items:
        if line and len(line) + len(sep) + len(item) > width:
            lines.append(line)
            line = item
        else:
            line = f"{line}{sep}{item}" if line else item
    return lines + ([line] if line else [])
