"""The questions a widget asks before frame `index` of a trace with given settings."""
from __future__ import annotations

from pages.framework import registry, widget


def asked(wid: str, raw: dict | None = None, index: int = 1, kind: str | None = None):
    w = {k: e.item for k, e in registry.collect()[0].items()}[wid]
    values, errors = widget.validate(w, raw or {})
    assert not errors, errors
    trace = w.scenario(values)
    if index >= len(trace):
        return []
    ctx = w.context(values, trace) if w.context else widget.Context(values, trace)
    before = trace[index - 1] if index else None
    qs = w.questions(before, trace[index], ctx)
    return [q for q in qs if kind is None or q.kind == kind]


def one(wid, raw=None, index=1, kind=None):
    found = asked(wid, raw, index, kind)
    assert len(found) == 1, found
    return found[0]
