"""Every documented bound is reachable: for every field of every registered widget, each of
its documented edges (`Param.bounds()`: an int or float field's min and max, a text field's
`extremes`, such as a request list's longest prompt, longest request, most requests, latest
arrival) validates and runs with some allowed setting of the other fields (issue 26:
v1-scheduler's 40/40 request needed a budget of 80 that the budget's own maximum refused;
prefill-decode's 8,192-token prompt needed a longer prompt past that field's maximum).

The other fields' setting is searched deterministically, nearest the defaults first: the
defaults, then one other field changed (to each of its own bounds, another choice, the other
yes/no), then two, then three. Generic over the registry, so a new widget is covered
without a line written for it.
"""

from __future__ import annotations

import itertools

import pytest

from pages.framework import registry
from pages.framework.widget import Param, Widget, run, validate

WIDGETS = {wid: entry.item for wid, entry in registry.collect()[0].items()}
MOST_CHANGED = 3


def alternatives(p: Param) -> list[str]:
    """Other values of a field to try while another field sits at one of its bounds."""
    default = p.to_raw(p.default)
    if p.kind == "choice":
        out = [v for v, _ in p.choices]
    elif p.kind == "bool":
        out = ["false" if p.default else "true"]
    else:
        out = [raw for _, raw in p.bounds()]
    return [raw for raw in dict.fromkeys(out) if raw != default]


def settings(widget: Widget, name: str, raw: str):
    """Settings with `name` at `raw`, the fewest other fields changed first."""
    base = dict(widget.default_raw(), **{name: raw})
    options = [[(q.name, alt) for alt in alternatives(q)] for q in widget.params
               if q.name != name]
    yield base
    for k in range(1, MOST_CHANGED + 1):
        for fields in itertools.combinations(options, k):
            for changes in itertools.product(*fields):
                yield dict(base, **dict(changes))


CASES = [(wid, p.name, what, raw) for wid, widget in sorted(WIDGETS.items())
         for p in widget.params for what, raw in p.bounds()]


def test_the_bounds_cover_every_numeric_field_and_the_request_lists():
    for widget in WIDGETS.values():
        for p in widget.params:
            if p.kind in ("int", "float"):
                assert p.min is not None and p.max is not None, (widget.id, p.name)
                assert len(p.bounds()) == 2
    lists = [p for w in WIDGETS.values() for p in w.params if p.kind == "text"]
    assert lists and all(p.extremes for p in lists)


@pytest.mark.parametrize("wid, name, what, raw", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_every_documented_bound_runs_with_some_allowed_setting(wid, name, what, raw):
    widget = WIDGETS[wid]
    first_refusal = None
    for raw_values in settings(widget, name, raw):
        values, errors = validate(widget, raw_values)
        if errors:
            first_refusal = first_refusal or "; ".join(errors.values())
            continue
        assert run(widget, values)          # an allowed setting runs (no exception)
        return
    pytest.fail(f"{wid}: {name} at {what} ({raw!r}) is refused whatever the other fields "
                f"are (up to {MOST_CHANGED} changed), e.g. {first_refusal!r}")
