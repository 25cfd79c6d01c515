"""A widget link's hash, read and written as the player (docs/js/player.js: readHash,
formatHash) reads and writes it, so a link means the same at build time and in the browser.

`#paged-attention.step=3&paged-attention.requests=7%2F3%2C%203%2F6`: "&"-separated
`key=value` pairs, each part percent-decoded and nothing else. A "+" is a plus, as a person
typing `x:4+2/2` into a link means it (form encoding, where "+" is a space, is what
urllib.parse.parse_qsl and the browser's URLSearchParams read); spaces are written %20 and
pluses %2B, as the site's own links are.
"""
from __future__ import annotations

from urllib.parse import quote, unquote


def parse_hash(fragment: str) -> list[tuple[str, str]]:
    """The (key, value) pairs of a hash, with or without its "#"; empty parts are skipped."""
    pairs = []
    for part in fragment.removeprefix("#").split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((unquote(key), unquote(value)))
    return pairs


def format_hash(pairs) -> str:
    """The hash (without "#") for (key, value) pairs: every character but letters, digits and
    -_.~ percent-encoded, so spaces are %20 and pluses %2B."""
    return "&".join(f"{quote(str(k), safe='')}={quote(str(v), safe='')}" for k, v in pairs)
