"""The one syntax readers use to write a list of requests: "7/3, 3/6, 5/3@4" or, where a page
allows parallel samples, "6/12, 5/10x2, 3/3@8" (prompt tokens / output tokens, x samples,
@ arrival step). Pages share it so a reader who learned it on one page can use it on every
page, and every page answers a bad list with the same words.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from pages.framework.widget import Param

NAMES = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# ASCII digits only (a reader's "٣" is not a 3), at most 4 of them before the range check.
_ITEM = re.compile(r"^([0-9]{1,4})\s*/\s*([0-9]{1,4})(?:\s*x\s*([0-9]{1,4}))?"
                   r"(?:\s*@\s*([0-9]{1,4}))?$")


def split_items(text: str, shape: str) -> list[str]:
    """The comma-separated items of a list, stripped. An empty item ("6/8,,5/8", a comma at
    the start) is refused by its position rather than dropped: a request may be missing there,
    so the list runs as written or not at all. A comma at the end is harmless and allowed; an
    empty text is left to the caller's count check."""
    items = [t.strip() for t in text.split(",")]
    if len(items) > 1 and not items[-1]:
        items.pop()
    if items == [""]:
        return []
    for i, item in enumerate(items):
        if not item:
            raise ValueError(f"request {i + 1} is empty (an extra comma?); write each "
                             f"request as {shape}")
    return items


class Request(NamedTuple):
    prompt: int
    output: int
    arrival: int = 0
    n: int = 1


class Named(NamedTuple):
    name: str
    prompt: int
    output: int
    arrival: int
    n: int


@dataclass(frozen=True)
class RequestList:
    max_requests: int
    max_len: int
    max_arrival: int
    max_n: int = 1          # above 1, "xN" asks for N parallel samples
    example: str = ""       # the example every message shows
    max_total: int = 0      # above 0, prompt + output is at most this (max_model_len)

    @property
    def syntax(self) -> str:
        return "prompt/output[xN][@step]" if self.max_n > 1 else "prompt/output[@step]"

    def _example(self) -> str:
        if self.example:
            return self.example
        return "6/12, 5/12x2, 3/3@8" if self.max_n > 1 else "7/3, 3/6, 5/3@4"

    def parse(self, text: str) -> tuple[Request, ...]:
        items = split_items(text, f"{self.syntax}, e.g. {self._example()}")
        if not 1 <= len(items) <= self.max_requests:
            raise ValueError(f"1 to {self.max_requests} requests, written {self.syntax} and "
                             f"separated by commas, e.g. {self._example()}")
        out = []
        for i, item in enumerate(items):
            m = _ITEM.match(item)
            if not m or (m[3] is not None and self.max_n == 1):
                shape = ("6/12, 5/10x2 or 3/3@8 (prompt tokens / output tokens, x samples, "
                         "@ arrival step)" if self.max_n > 1 else
                         "7/3 or 5/3@4 (prompt tokens / output tokens @ arrival step)")
                raise ValueError(f"request {i + 1} should look like {shape}")
            prompt, output = int(m[1]), int(m[2])
            n, arrival = int(m[3] or 1), int(m[4] or 0)
            if not (1 <= prompt <= self.max_len and 1 <= output <= self.max_len):
                raise ValueError(f"request {i + 1}: prompt and output lengths must be from 1 "
                                 f"to {self.max_len}")
            if self.max_total and prompt + output > self.max_total:
                raise ValueError(f"request {i + 1}: prompt + output must be at most "
                                 f"{self.max_total} tokens")
            if not 1 <= n <= self.max_n:
                raise ValueError(f"request {i + 1}: from 1 to {self.max_n} parallel samples "
                                 f"(x1 to x{self.max_n})")
            if arrival > self.max_arrival:
                raise ValueError(f"request {i + 1}: the arrival step must be at most "
                                 f"{self.max_arrival}")
            out.append(Request(prompt, output, arrival, n))
        return tuple(out)

    @staticmethod
    def format(requests) -> str:
        return ", ".join(f"{r.prompt}/{r.output}" + (f"x{r.n}" if r.n > 1 else "")
                         + (f"@{r.arrival}" if r.arrival else "") for r in requests)

    def extremes(self) -> tuple[tuple[str, str], ...]:
        """The edges of what the list allows, as a reader would write them."""
        longest = self.max_len if not self.max_total else min(self.max_len,
                                                              self.max_total - self.max_len)
        out = [("the longest prompt", f"{self.max_len}/1"),
               ("the longest output", f"1/{self.max_len}"),
               ("the longest request", f"{self.max_len}/{longest}"),
               ("the most requests", ", ".join(["1/1"] * self.max_requests)),
               ("the latest arrival", f"1/1@{self.max_arrival}")]
        if self.max_n > 1:
            out.append(("the most samples", f"1/1x{self.max_n}"))
        return tuple(out)

    def param(self, name: str, default: str, label: str = "requests") -> Param:
        """The form field, its default written in the syntax itself."""
        samples = ", xN parallel samples," if self.max_n > 1 else ","
        return Param(name, label, "text", self.parse(default), parse=self.parse,
                     format=self.format, extremes=self.extremes(),
                     help=f"prompt/output tokens{samples} optionally @arrival step; e.g. "
                          f"{self._example()}")

    @staticmethod
    def named(requests) -> list[Named]:
        """The requests with their names (A, B, C, ... in order)."""
        return [Named(NAMES[i], *r) for i, r in enumerate(requests)]
