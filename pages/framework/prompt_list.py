"""Prompts that share prefixes, as a reader writes them: "x:10+y:2+3/3, x+4/1@3, x+y+17/2@4".

One request per comma-separated item, `prompt/output[@step]` as in the site's request lists
(pages/framework/request_list.py), except that the prompt is built from parts joined by "+":

    name:N   a run of N tokens called `name`; every prompt that names it has the SAME N
             tokens there (a system prompt, a shared document). Give N the first time.
    name     the run `name` again (defined earlier in the list, with its N).
    N        N tokens of this request's own, unlike any other prompt's.

`output` is how many tokens the request generates (`max_tokens`); `@step` is the engine step
it arrives in, counted from 1 (default 1). So "x:10+y:2+3/3, x+4/1@3, x+y+17/2@4" is vLLM's
design-doc example: R0 is 15 tokens (x, y and 3 of its own), R1 shares R0's first 10 tokens
and adds 4, R2 shares the first 12 and adds 17.

`token_ids` turns a parsed list into token ids: each run gets fresh ids the first time it is
defined, each own part fresh ids, in order of appearance, from 100 up (so the example's R0
is 100..114, the token lists of sim/v1's tests). Names are letters and digits starting with
a letter, case-sensitive; every message names the request and part it is about.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from pages.framework.request_list import split_items
from pages.framework.widget import Param

FIRST_TOKEN_ID = 100
_NAME = r"[A-Za-z][A-Za-z0-9]{0,7}"
_PART = re.compile(rf"^(?:({_NAME})(?:\s*:\s*([0-9]{{1,4}}))?|([0-9]{{1,4}}))$")
_REQUEST = re.compile(r"^([^/@]*?)\s*/\s*([0-9]{1,4})(?:\s*@\s*([0-9]{1,4}))?$")


class Part(NamedTuple):
    name: str | None       # None: the request's own tokens
    length: int


class Prompt(NamedTuple):
    parts: tuple[Part, ...]
    output: int            # tokens to generate (max_tokens)
    arrival: int = 1       # the engine step it arrives in, from 1

    @property
    def length(self) -> int:
        return sum(p.length for p in self.parts)


@dataclass(frozen=True)
class PromptList:
    max_requests: int = 5
    max_prompt: int = 48
    max_output: int = 8
    max_arrival: int = 12
    example: str = "sys:8+4/2, sys+6/2@2"

    SHAPE = "prompt/output@step, the prompt made of parts joined by +"

    def parse(self, text: str) -> tuple[Prompt, ...]:
        items = split_items(text, f"{self.SHAPE}, e.g. {self.example}")
        if not 1 <= len(items) <= self.max_requests:
            raise ValueError(f"1 to {self.max_requests} requests separated by commas, each "
                             f"{self.SHAPE}, e.g. {self.example}")
        lengths: dict[str, int] = {}
        out = []
        for i, item in enumerate(items):
            who = f"request {i + 1}"
            m = _REQUEST.match(item)
            if not m:
                raise ValueError(f"{who} should look like x:8+4/2 or x+6/2@3 (parts joined "
                                 f"by +, then /output tokens, optionally @arrival step)")
            prompt_text, output, arrival = m[1], int(m[2]), int(m[3] or 1)
            parts = []
            for j, raw in enumerate(p.strip() for p in prompt_text.split("+")):
                where = f"{who}, part {j + 1}"
                pm = _PART.match(raw)
                if not raw or not pm:
                    raise ValueError(f"{where}: {raw or 'nothing'!r} is not name:N, a name "
                                     f"defined before, or a number of own tokens")
                if pm[3] is not None:
                    n = int(pm[3])
                    if n < 1:
                        raise ValueError(f"{where}: at least 1 token")
                    parts.append(Part(None, n))
                    continue
                name = pm[1]
                if pm[2] is not None:
                    n = int(pm[2])
                    if n < 1:
                        raise ValueError(f"{where}: {name} needs at least 1 token")
                    if name in lengths and lengths[name] != n:
                        raise ValueError(f"{where}: {name} is {lengths[name]} tokens "
                                         f"already; write {name} alone to reuse it")
                    lengths[name] = n
                elif name not in lengths:
                    raise ValueError(f"{where}: {name} is not defined yet; give its length "
                                     f"the first time, as {name}:8")
                parts.append(Part(name, lengths[name]))
            prompt = Prompt(tuple(parts), output, arrival)
            if prompt.length > self.max_prompt:
                raise ValueError(f"{who}: the prompt is {prompt.length} tokens; at most "
                                 f"{self.max_prompt}")
            if not 1 <= output <= self.max_output:
                raise ValueError(f"{who}: from 1 to {self.max_output} output tokens")
            if not 1 <= arrival <= self.max_arrival:
                raise ValueError(f"{who}: the arrival step must be from 1 to "
                                 f"{self.max_arrival} (steps count from 1)")
            out.append(prompt)
        return tuple(out)

    @staticmethod
    def format(prompts) -> str:
        """The canonical text: a run's length at its first use only, @1 left out."""
        seen: set[str] = set()
        items = []
        for p in prompts:
            parts = []
            for part in p.parts:
                if part.name is None:
                    parts.append(str(part.length))
                elif part.name in seen:
                    parts.append(part.name)
                else:
                    seen.add(part.name)
                    parts.append(f"{part.name}:{part.length}")
            items.append("+".join(parts) + f"/{p.output}"
                         + (f"@{p.arrival}" if p.arrival != 1 else ""))
        return ", ".join(items)

    def help(self) -> str:
        return (f"Up to {self.max_requests} requests, prompt/output@step. A prompt joins parts "
                "with +: name:N is N tokens shared by every prompt that names it (write the "
                "name alone to reuse it), a bare N is the request's own tokens. @step: the "
                f"step it arrives in (from 1). E.g. {self.example}")

    def extremes(self) -> tuple[tuple[str, str], ...]:
        """The edges of what the list allows, as a reader would write them."""
        return (("the longest prompt", f"{self.max_prompt}/1"),
                ("the longest output", f"1/{self.max_output}"),
                ("the longest request", f"{self.max_prompt}/{self.max_output}"),
                ("the most requests", ", ".join(["1/1"] * self.max_requests)),
                ("the latest arrival", f"1/1@{self.max_arrival}"))

    def param(self, name: str, default: str, label: str = "prompts") -> Param:
        return Param(name, label, "text", self.parse(default), parse=self.parse,
                     format=self.format, help=self.help(), extremes=self.extremes())


def token_ids(prompts) -> list[list[int]]:
    """Each prompt's token ids: a named run is the same ids wherever it appears, own parts
    are fresh; ids are handed out in order of first appearance from FIRST_TOKEN_ID."""
    runs: dict[str, list[int]] = {}
    next_id = FIRST_TOKEN_ID
    out = []
    for p in prompts:
        ids: list[int] = []
        for part in p.parts:
            if part.name is not None and part.name in runs:
                ids += runs[part.name]
                continue
            fresh = list(range(next_id, next_id + part.length))
            next_id += part.length
            if part.name is not None:
                runs[part.name] = fresh
            ids += fresh
        out.append(ids)
    return out


def shared_with_earlier(prompts) -> list[int]:
    """For each prompt, the longest token prefix it shares with any earlier prompt in the
    list (what a cache could at best hold for it, before block rounding)."""
    ids = token_ids(prompts)
    out = []
    for i, mine in enumerate(ids):
        best = 0
        for other in ids[:i]:
            n = 0
            while n < min(len(mine), len(other)) and mine[n] == other[n]:
                n += 1
            best = max(best, n)
        out.append(best)
    return out
