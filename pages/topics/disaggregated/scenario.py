"""The step-by-step widget's settings and its run: a few requests through a prefill GPU and
a decode GPU (sim.studies.disaggregated), Llama-3-8B in bf16 on H200s, blocks of 16 tokens.

Requests are written as on the other pages, "prompt/output", with "@ms" for an arrival in
milliseconds (not a step: the two engines step on their own clocks); `abort` names a
request and when its client gives up ("B@12"); `fail` a request whose KV read fails.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from pages.framework.widget import Context, Param
from sim.perf.cost import Roofline
from sim.perf.links import LINKS
from sim.perf.models import get_model
from sim.studies.disaggregated import DisaggregatedServing, PDRequest, PDSetup
from sim.trace import Trace

NAMES = "ABCDE"
MAX_REQUESTS = len(NAMES)
MAX_PROMPT = 400
MAX_OUTPUT = 12
MAX_ARRIVAL_MS = 200
BLOCK_SIZE = 16
MODEL_ID = "llama-3-8b"
DTYPE = "bf16"
MAX_ROWS = 80
# The ceilings measured on the H200 in data/h200-prefill-decode.json (`matmul_peak_flops`,
# `copy_bandwidth_bytes_per_s`), as on the prefill vs decode page; literals because the
# browser's worker gets only .py files (tests/pages/topics check they equal the file).
H200_MEASURED_PEAK_FLOPS = 785832482732577.4
H200_MEASURED_BANDWIDTH = 4099502913721.2954
LINK_CHOICES = tuple((k, LINKS[k].name) for k in LINKS)
POLICIES = (("fail", "fail (v0.25.1's default)"), ("recompute", "recompute"))

_ITEM = re.compile(r"^([0-9]{1,4})\s*/\s*([0-9]{1,4})(?:\s*@\s*([0-9]{1,4}))?$")
_ABORT = re.compile(r"^([A-Za-z])\s*@\s*([0-9]{1,4})$")


def h200() -> Roofline:
    return Roofline(H200_MEASURED_PEAK_FLOPS, H200_MEASURED_BANDWIDTH, "H200 (measured)")


@dataclass(frozen=True)
class Req:
    name: str
    prompt: int
    output: int
    arrival_ms: int


def parse_requests(text: str) -> tuple[Req, ...]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not 1 <= len(items) <= MAX_REQUESTS:
        raise ValueError(f"1 to {MAX_REQUESTS} requests, written prompt/output[@ms] and "
                         "separated by commas, e.g. 96/4, 160/3@1")
    out = []
    for i, item in enumerate(items):
        m = _ITEM.match(item)
        if not m:
            raise ValueError(f"request {i + 1} should look like 96/4 or 160/3@1 (prompt tokens "
                             "/ output tokens @ arrival in ms)")
        prompt, output, arrival = int(m[1]), int(m[2]), int(m[3] or 0)
        if not 1 <= prompt <= MAX_PROMPT:
            raise ValueError(f"request {i + 1}: a prompt of 1 to {MAX_PROMPT} tokens")
        if not 1 <= output <= MAX_OUTPUT:
            raise ValueError(f"request {i + 1}: 1 to {MAX_OUTPUT} output tokens")
        if arrival > MAX_ARRIVAL_MS:
            raise ValueError(f"request {i + 1}: an arrival of at most {MAX_ARRIVAL_MS} ms")
        out.append(Req(NAMES[i], prompt, output, arrival))
    return tuple(out)


def format_requests(reqs: tuple[Req, ...]) -> str:
    return ", ".join(f"{r.prompt}/{r.output}" + (f"@{r.arrival_ms}" if r.arrival_ms else "")
                     for r in reqs)


def parse_abort(text: str) -> tuple[str, int] | None:
    if text.strip() in ("", "none"):
        return None
    m = _ABORT.match(text.strip())
    if not m:
        raise ValueError("a request and the time its client gives up, e.g. B@12 (ms), or "
                         "none")
    if int(m[2]) > 1000:
        raise ValueError("abort at most 1000 ms after the start")
    return m[1].upper(), int(m[2])


def format_abort(value: tuple[str, int] | None) -> str:
    return "none" if value is None else f"{value[0]}@{value[1]}"


PARAMS = (
    Param("requests", "requests", "text", parse_requests("96/4, 160/3@1, 64/2@9"),
          parse=parse_requests, format=format_requests,
          help="Up to 5 requests A-E as prompt/output@ms: prompt tokens (1 to 400), output "
               "tokens (1 to 12), arrival in milliseconds (0 to 200).",
          extremes=(("the longest request", "400/12"), ("the shortest", "1/1"),
                    ("the most requests", "1/1, 1/1, 1/1, 1/1, 1/1"),
                    ("the latest arrival", "1/1@200"))),
    Param("link", "link", "choice", "ethernet-25g", choices=LINK_CHOICES,
          help="What carries the KV from the prefill GPU to the decode GPU (one direction's "
               "line rate): a slow link shows the blocks landing over several steps."),
    Param("budget", "token budget", "int", 64, min=16, max=512,
          help="max_num_batched_tokens of each GPU (16 to 512): a prompt longer than this is "
               "prefilled in chunks."),
    Param("prefill_blocks", "prefill GPU blocks", "int", 24, min=4, max=36,
          help="Usable KV blocks of 16 tokens on the prefill GPU (4 to 36)."),
    Param("decode_blocks", "decode GPU blocks", "int", 24, min=4, max=36,
          help="Usable KV blocks of 16 tokens on the decode GPU (4 to 36)."),
    Param("abort", "abort", "text", None, parse=parse_abort, format=format_abort,
          help="A request whose client gives up, and when: e.g. A@9 (ms, 0 to 1000); none "
               "for no abort.",
          extremes=(("the first moment", "A@0"), ("the last", "A@1000"))),
    Param("fail", "failed read", "choice", "none",
          choices=(("none", "none"),) + tuple((n, n) for n in NAMES),
          help="A request whose KV read fails on the decode GPU (every block it reads is "
               "reported invalid)."),
    Param("policy", "kv_load_failure_policy", "choice", "fail", choices=POLICIES,
          help="What the decode GPU does with a failed read: fail the request (vLLM "
               "v0.25.1's default) or recompute the prompt itself."),
)


def check(v: dict) -> dict[str, str]:
    reqs = v["requests"]
    names = {r.name for r in reqs}
    errors = {}
    # The prefill GPU computes the prompt; the decode GPU holds the prompt and every output
    # token but the last (whose KV is never computed). A request bigger than a pool would
    # wait at the head of its queue forever (vLLM checks at start-up that one fits).
    for side, blocks in (("prefill", v["prefill_blocks"]), ("decode", v["decode_blocks"])):
        for r in reqs:
            tokens = r.prompt if side == "prefill" else r.prompt + r.output - 1
            need = -(-tokens // BLOCK_SIZE)
            if need > blocks:
                errors["requests"] = (
                    f"requests: {r.name} needs {need} blocks for its {tokens} tokens on the "
                    f"{side} GPU, which has {blocks}: it would wait forever (raise the "
                    f"{side} GPU's blocks or shorten it)")
                return errors
    if v["abort"] is not None and v["abort"][0] not in names:
        errors["abort"] = (f"abort: there is no request {v['abort'][0]} (the requests are "
                           f"{', '.join(sorted(names))})")
    if v["fail"] != "none" and v["fail"] not in names:
        errors["fail"] = (f"failed read: there is no request {v['fail']} (the requests are "
                          f"{', '.join(sorted(names))})")
    return errors


def pd_requests(v: dict) -> list[PDRequest]:
    abort = v["abort"]
    return [PDRequest(r.name, r.prompt, r.output, r.arrival_ms / 1000,
                      abort_s=(abort[1] / 1000 if abort and abort[0] == r.name else None),
                      fail_transfer=v["fail"] == r.name)
            for r in v["requests"]]


def setup(v: dict) -> PDSetup:
    return PDSetup(block_size=BLOCK_SIZE, prefill_blocks=v["prefill_blocks"],
                   decode_blocks=v["decode_blocks"], max_num_batched_tokens=v["budget"],
                   max_num_seqs=16, max_model_len=1024, link=v["link"],
                   kv_load_failure_policy=v["policy"])


def scenario(v: dict) -> Trace:
    serving = DisaggregatedServing(pd_requests(v), setup(v), get_model(MODEL_ID), h200(),
                                   DTYPE)
    return serving.run(max_rows=MAX_ROWS)


@dataclass(frozen=True)
class PDContext(Context):
    colors: dict = field(default_factory=dict)      # request id -> palette name
    block_bytes: int = 0


def context(v: dict, trace: Trace) -> PDContext:
    from pages.views import svg
    from sim.perf.models import cache_block_size
    colors = {r.name: svg.seq(i) for i, r in enumerate(v["requests"])}
    return PDContext(v, trace, colors, cache_block_size(get_model(MODEL_ID), BLOCK_SIZE, DTYPE))
