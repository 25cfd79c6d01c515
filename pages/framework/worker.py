"""The Python side of a widget page, run by Pyodide in a worker in the reader's browser.

The worker (pages/framework/worker.js) calls `build` whenever the player (docs/js/player.js)
needs a trace that the build did not render: the reader submits the form, or opens a
permalink with settings of their own. Everything crosses the boundary as JSON text, which
keeps the answer byte-identical to what CPython writes at build time (tests compare them).
Python stays off the main thread: starting it there froze the page for seconds.
"""

from __future__ import annotations

import json

from pages.framework import registry, widget


def build(module: str, widget_id: str, raw_json: str) -> str:
    """Validate the reader's raw field values and build a trace.

    Answers {"errors": {field: message}} or {"values": {...}, "frames": [...]}; a failure
    inside the simulation comes back as an error under "" rather than as an exception,
    so the page can keep its last good trace and say what went wrong.
    """
    try:
        raw = json.loads(raw_json)
        if not isinstance(raw, dict):
            raise ValueError("settings must be an object")
        raw = {str(k): str(v) for k, v in raw.items()}
        answer = widget.respond(registry.find_widget(module, widget_id), raw)
    except Exception as err:  # noqa: BLE001 - any failure is reported, never raised into JS
        answer = {"errors": {"": f"{type(err).__name__}: {err}"}}
    return widget.to_json(answer)
