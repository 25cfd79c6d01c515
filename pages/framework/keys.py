"""Animation keys in a frame's SVG: what the player's transitions match frames by.

Everything drawn that has an identity carries `data-k` on its outermost element (a block, a
request's chip, a table entry, a token cell, a bar): the player (docs/js/transitions.js)
moves, resizes and cross-fades the element with the same key from one frame to the next,
fades out keys that left and grows in keys that arrived. An arriving element may name, in
`data-from`, keys of the frame before it grows out of (a table entry from the free queue's
chip, or else from its block in the pool): the first of them present there wins.

The rules a frame keeps (tests/pages/framework/test_keys.py holds every widget to them, on
every frame of its default trace and of every permalink the pages link to):

- a key is unique within its frame;
- whatever has a hover text (a <title>: a thing the reader can ask about, so a thing with an
  identity) is keyed, itself or through a keyed ancestor;
- a widget's `keys` (key kinds, the part before the first ':') appear in its traces.

Conventions (notes/site.md, "Keys"): `blk:gpu:7`, `blk:cpu:3` (a physical block);
`ent:<seq id>:<logical>` (a block-table entry); `row:A` (a request's row), `seq:3` (a
sequence's row); `chip:A` (a request's queue chip); `tok:<seq id>:<position>` (a token
cell); a label drawn beside its mark rather than inside it takes the mark's key plus `/t`.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable

_SVG = "{http://www.w3.org/2000/svg}"
_KEY_ATTRS = re.compile(r' data-(?:k|from)="[^"]*"')


def strip(svg_text: str) -> str:
    """The SVG without its keys: what a frame was before keys were added (a refactor that
    only adds keys leaves this unchanged; tools/dump_frames.py --strip-keys compares it)."""
    return _KEY_ATTRS.sub("", svg_text)


def kind(key: str) -> str:
    """A key's kind: "blk" for "blk:gpu:7"."""
    return key.split(":", 1)[0]


def _tag(el: ET.Element) -> str:
    return el.tag.removeprefix(_SVG)


def elements(svg_text: str) -> list[tuple[str, str]]:
    """(key, tag) of every keyed element, in document order."""
    root = ET.fromstring(svg_text)
    return [(el.get("data-k"), _tag(el)) for el in root.iter() if el.get("data-k") is not None]


def problems(svg_text: str) -> list[str]:
    """What breaks the per-frame rules: duplicate keys, empty keys, hover texts on
    elements without a key (on themselves or an ancestor)."""
    root = ET.fromstring(svg_text)
    out: list[str] = []
    seen: set[str] = set()

    def walk(el: ET.Element, keyed: bool) -> None:
        key = el.get("data-k")
        if key is not None:
            if not key.strip():
                out.append(f"an empty data-k on a <{_tag(el)}>")
            elif key in seen:
                out.append(f"duplicate key {key!r}")
            seen.add(key)
        here = keyed or key is not None
        for child in el:
            if _tag(child) == "title" and el is not root and not here:
                out.append(f"<{_tag(el)}> with hover text {child.text!r} has no key")
            walk(child, here)

    walk(root, False)
    return out


def trace_problems(svgs: Iterable[str], promised: Iterable[str] = ()) -> list[str]:
    """The rules over a whole trace: every frame's, and each promised key kind present in
    some frame. (A key may change its element: a point drawn as a square while it is a
    prefill and a circle after; the player cross-fades it.)"""
    out: list[str] = []
    kinds: set[str] = set()
    for i, text in enumerate(svgs):
        out += [f"frame {i + 1}: {p}" for p in problems(text)]
        kinds.update(kind(key) for key, _ in elements(text))
    out += [f"no {k!r} key in any frame" for k in promised if k not in kinds]
    return out
