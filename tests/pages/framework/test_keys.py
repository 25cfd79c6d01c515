"""Animation keys (pages/framework/keys.py): every frame of every widget's default trace and
of every permalink the pages link to keeps the rules the player's transitions rely on
(unique keys, everything with a hover text keyed, the key kinds a widget promises), and keys
name the same thing in every frame."""
import importlib.util
import re
from functools import cache
from pathlib import Path

import pytest

from pages.framework import keys, registry, widget

ROOT = Path(__file__).resolve().parents[3]


def _dump_frames():
    spec = importlib.util.spec_from_file_location("dump_frames", ROOT / "tools" / "dump_frames.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WIDGETS, _ = registry.collect()
LINKS = _dump_frames().linked_settings()


def traces():
    """(widget id, which, values) for every default trace and every linked setting."""
    out = []
    for wid, entry in sorted(WIDGETS.items()):
        out.append((wid, "default", entry.item.defaults()))
        for i, raw in enumerate(LINKS.get(wid, [])):
            values, errors = widget.validate(entry.item, raw)
            assert not errors, (wid, raw, errors)
            out.append((wid, f"link {i + 1}", values))
    return out


@cache
def frames(wid, which):
    values = dict(next(v for w, n, v in traces() if (w, n) == (wid, which)))
    return widget.run(WIDGETS[wid].item, values)


@pytest.mark.parametrize("wid, which", [(w, n) for w, n, _ in traces()])
def test_every_frame_keeps_the_key_rules(wid, which):
    promised = WIDGETS[wid].item.keys
    problems = keys.trace_problems([f["svg"] for f in frames(wid, which)], promised)
    assert not problems, f"{wid} ({which}): " + "; ".join(problems[:10])


@pytest.mark.parametrize("wid", sorted(WIDGETS))
def test_every_widget_promises_its_key_kinds(wid):
    # A widget says which kinds of things it keys, so a view that stops keying them fails.
    assert WIDGETS[wid].item.keys, f"{wid}: declare Widget(keys=...)"


def test_a_duplicate_key_is_found():
    doc = ('<svg xmlns="http://www.w3.org/2000/svg"><rect data-k="blk:gpu:1"/>'
           '<g data-k="blk:gpu:1"><rect/></g></svg>')
    assert keys.problems(doc) == ["duplicate key 'blk:gpu:1'"]


def test_a_hover_text_without_a_key_is_found_and_a_keyed_ancestor_is_enough():
    doc = ('<svg xmlns="http://www.w3.org/2000/svg"><title>the picture</title>'
           '<rect><title>block 3</title></rect>'
           '<g data-k="blk:gpu:4"><rect><title>slot 0</title></rect></g></svg>')
    assert keys.problems(doc) == ["<rect> with hover text 'block 3' has no key"]


def test_a_promised_kind_that_never_appears_is_found():
    doc = '<svg xmlns="http://www.w3.org/2000/svg"><rect data-k="chip:A"/></svg>'
    assert keys.trace_problems([doc], ("chip", "blk")) == ["no 'blk' key in any frame"]


def test_strip_takes_out_only_the_keys():
    doc = '<g data-k="ent:1:0" data-from="plan:0 blk:gpu:3" class="x"><rect x="1"/></g>'
    assert keys.strip(doc) == '<g class="x"><rect x="1"/></g>'


# -- keys name the same thing in every frame ---------------------------------------------------

TITLED = re.compile(r'<(\w+)[^>]* data-k="([^"]+)"[^>]*><title>([^<]*)</title>')
# key pattern -> what the element's hover text must say, from the key's own parts
NAMES = [
    (re.compile(r"blk:(gpu|cpu):(\d+)$"), lambda m: rf"^{m[1].upper()} block {m[2]}\b"),
    (re.compile(r"chip:(\w+)$"), lambda m: rf"^{m[1]}: "),
    (re.compile(r"ent:(\d+):(\d+)$"), lambda m: rf"logical block {m[2]} "),
    (re.compile(r"tok:(\d+):(\d+)$"), lambda m: rf"at position {m[2]}$"),
]


@pytest.mark.parametrize("wid", ["paged-attention", "preemption", "parallel-sampling",
                                 "beam-search"])
def test_kv_keys_name_their_block_chip_entry_and_token(wid):
    seen = 0
    for which in [n for w, n, _ in traces() if w == wid]:
        for i, frame in enumerate(frames(wid, which)):
            for _tag, key, tip in TITLED.findall(frame["svg"]):
                for pattern, expect in NAMES:
                    m = pattern.match(key)
                    if m:
                        seen += 1
                        assert re.search(expect(m), tip), (wid, which, i, key, tip)
    assert seen > 100


def test_a_sequence_keeps_its_entry_keys_in_order_across_the_trace():
    # ent:<seq>:<i> is logical block i of that sequence in every frame: its hover text names
    # the same sequence every time.
    owner = {}
    for frame in frames("preemption", "default"):
        for _tag, key, tip in TITLED.findall(frame["svg"]):
            if key.startswith("ent:"):
                name = tip.split(":", 1)[0]
                assert owner.setdefault(key.rsplit(":", 1)[0], name) == name, (key, tip)
    assert len(owner) >= 3
