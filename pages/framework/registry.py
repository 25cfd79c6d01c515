"""Finds every topic module's widgets and charts.

A topic module is any module in the `pages.topics` package: it defines `WIDGETS` (a tuple of
`pages.framework.widget.Widget`) and/or `CHARTS` (a tuple of `Chart`). The build hook, the
worker and the browser tests all ask this module, so a new topic page needs no registration
anywhere else: adding the file is enough. Tests add modules of their own through `extra`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from pages.framework.widget import Widget


@dataclass(frozen=True)
class Chart:
    """A static picture drawn at build time (e.g. measured data); `render()` -> SVG text."""

    id: str
    title: str
    render: Callable[[], str]
    caption: str = ""


@dataclass(frozen=True)
class Entry:
    """Where a widget or chart was declared, so the browser's worker can import it too."""

    module: str
    item: Widget | Chart


def topic_modules() -> list[str]:
    """Dotted names of the modules in the `pages.topics` package, sorted. A topic that grew
    into a package (`pages/topics/<topic>/`) declares its widgets in its `__init__.py`."""
    from pages import topics

    return sorted(f"pages.topics.{info.name}" for info in pkgutil.iter_modules(topics.__path__)
                  if not info.name.startswith("_"))


def collect(extra: tuple[str, ...] | list[str] = ()) -> tuple[dict[str, Entry], dict[str, Entry]]:
    """(widgets by id, charts by id) from every topic module plus `extra` module names."""
    widgets: dict[str, Entry] = {}
    charts: dict[str, Entry] = {}
    for name in dict.fromkeys([*topic_modules(), *extra]):
        module = importlib.import_module(name)
        for item in getattr(module, "WIDGETS", ()):
            _add(widgets, name, item, Widget)
        for item in getattr(module, "CHARTS", ()):
            _add(charts, name, item, Chart)
    return widgets, charts


def find_widget(module: str, widget_id: str) -> Widget:
    """The widget `widget_id` declared in `module` (as named by the page's HTML)."""
    for item in getattr(importlib.import_module(module), "WIDGETS", ()):
        if item.id == widget_id:
            return item
    raise KeyError(f"no widget {widget_id!r} in {module}")


def _add(table: dict[str, Entry], module: str, item: object, kind: type) -> None:
    if not isinstance(item, kind):
        raise TypeError(f"{module}: {item!r} is not a {kind.__name__}")
    if item.id in table:
        raise ValueError(f"{kind.__name__} id {item.id!r} is declared twice "
                         f"({table[item.id].module} and {module})")
    table[item.id] = Entry(module, item)
