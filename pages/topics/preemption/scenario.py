"""The preemption widget's scenario: its settings and limits, the engine (vLLM v0.5.5's or
V1's, with or without V1's CPU tier), the trace, the context computed once over it, the step
names.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pages.framework.request_list import RequestList
from pages.framework.widget import Context
from pages.topics.preemption.checks import cache_checks
from pages.views import cpu_tier, kv_view
from pages.views.narrate import reuse_by_step
from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.core.invariants import check_engine
from sim.core.sequence import SamplingParams
from sim.events import (
    Admitted,
)
from sim.stand_in_model import StandInModel
from sim.trace import Step, Trace, record
from sim.v1 import config as v1_config
from sim.v1.config import KVTransferConfig
from sim.v1.engine import LLMEngine as V1Engine
from sim.v1.invariants import check_engine as v1_check_engine

MAX_REQUESTS = 5
MAX_LEN = 20
MAX_ARRIVAL = 30
MAX_STEPS = 40
MAX_SLOTS = 96     # token slots per pool: every slot stays legible and a trace stays small
DATA_FILE = "data/h200-swap-vs-recompute.json"
X = kv_view.MARGIN

MODES = (("swap", "swap (PreemptionMode.SWAP)"),
         ("recompute", "recompute (PreemptionMode.RECOMPUTE)"),
         ("auto", "vLLM's default: recompute one sequence, swap several"))
ENGINES = (("v0.5.5", "vLLM v0.5.5"), ("v1", "vLLM V1 (v0.25.1)"))
OFFLOAD = (("off", "none: V1 recomputes"),
           ("prompt", "CPU tier, prompt blocks (vLLM's default)"),
           ("all", "CPU tier, prompt and generated blocks"))

REQUESTS = RequestList(max_requests=MAX_REQUESTS, max_len=MAX_LEN, max_arrival=MAX_ARRIVAL,
                       max_n=2)


def build_engine(v: dict):
    """The page's engine with its requests added, before the first step: vLLM v0.5.5's, or
    V1's with the same usable GPU blocks (plus its null block) and watermark, V1's defaults
    for the rest (prefix caching on; no swap space, no preemption mode)."""
    model = StandInModel(seed=v["seed"], eos_prob=v["eos_prob"])
    if v["engine"] == "v1":
        offload = None
        if offloading(v):
            # What --kv-offloading-size sets up, with the page's CPU blocks as the tier.
            offload = KVTransferConfig(
                kv_connector="OffloadingConnector", kv_role="kv_both",
                kv_connector_extra_config={"num_cpu_blocks": v["num_cpu_blocks"],
                                           "offload_prompt_only": v["cpu_offload"] == "prompt"})
        engine = V1Engine(v1_config.CacheConfig(block_size=v["block_size"],
                                                num_gpu_blocks=v["num_gpu_blocks"] + 1),
                          v1_config.SchedulerConfig(watermark=v["watermark"]), seed=v["seed"],
                          model=model, kv_transfer_config=offload)
    else:
        mode = None if v["preemption_mode"] == "auto" else v["preemption_mode"]
        engine = LLMEngine(
            CacheConfig(block_size=v["block_size"], num_gpu_blocks=v["num_gpu_blocks"],
                        num_cpu_blocks=v["num_cpu_blocks"], watermark=v["watermark"]),
            SchedulerConfig(preemption_mode=mode), seed=v["seed"], model=model)
    for r in REQUESTS.named(v["requests"]):
        # Without an EOS probability, ignore_eos: each sequence generates exactly `output`
        # tokens, as in benchmarks. With one, samples of a request end at different steps.
        engine.add_request(r.name, r.prompt,
                           SamplingParams(n=r.n, max_tokens=r.output,
                                          ignore_eos=not v["eos_prob"]),
                           arrival_step=r.arrival)
    return engine


def scenario(v: dict) -> Trace:
    check = v1_check_engine if v["engine"] == "v1" else check_engine
    trace = record(build_engine(v), max_steps=MAX_STEPS, check=check)
    if trace.stopped != "max_steps":
        return trace
    # One more frame says that the picture stops here: the last state again, nothing new.
    last = trace.last
    cut = Step(len(trace), last.step, last.snapshot, problems=last.problems)
    return Trace(trace.steps + (cut,), trace.stopped, trace.meta)


def cut_off(step: Step, trace: Trace) -> bool:
    """Whether `step` is the frame that says the trace was cut short (see scenario)."""
    return trace.stopped == "max_steps" and step.index == len(trace) - 1


@dataclass(frozen=True)
class PreemptionContext(Context):
    labels: dict = field(default_factory=dict)       # seq_id -> "A", "B.1", ...
    request_of: dict = field(default_factory=dict)   # seq_id -> request id
    reuse: list = field(default_factory=list)        # per step: [(request, before, blocks)]
    checks: list = field(default_factory=list)       # per step: cache checks, as sentences
    legend: tuple = ()                               # the legend's keys, the same every step
    later: str | None = None                         # a "D@8" chip for the legend
    # V1 with a CPU tier: the tier's copy jobs over the trace, the tokens recomputed by
    # each step (cumulative) and in all without the tier (the same settings, none).
    jobs: dict = field(default_factory=dict)
    recomputed: list = field(default_factory=list)
    recomputed_without: int | None = None


def context(v: dict, trace: Trace) -> PreemptionContext:
    labels, request_of = kv_view.names(trace)
    jobs, recomputed, without = {}, [], None
    if offloading(v):
        jobs = cpu_tier.jobs_by_id(trace)
        recomputed = recomputed_by_step(trace)
        without = recomputed_by_step(scenario(dict(v, cpu_offload="off")))[-1]
    return PreemptionContext(v, trace, labels, request_of, reuse_by_step(trace, request_of),
                             cache_checks(trace, labels),
                             tuple(kv_view.legend_keys(trace, device="all")),
                             kv_view.first_later(trace), jobs, recomputed, without)


def is_v1(v: dict) -> bool:
    return v["engine"] == "v1"


def offloading(v: dict) -> bool:
    """V1 with the offloading connector's CPU tier."""
    return is_v1(v) and v["cpu_offload"] != "off"


def recomputed_by_step(trace: Trace) -> list[int]:
    """Per step, the tokens computed again so far by requests coming back from preemption
    (everything they had computed before, less what a cache gave back)."""
    out, total = [], 0
    for step in trace:
        total += sum(e.num_tokens - 1 for e in step.of_type(Admitted) if e.recompute)
        out.append(total)
    return out




def label(step: Step, ctx: PreemptionContext | None = None) -> str:
    """The step's name in the counter, the heading and the narration."""
    if step.step is None:
        return "start"
    if ctx is not None and cut_off(step, ctx.trace):
        return "cut off"
    return f"iteration {step.step}"


def title_case(name: str) -> str:
    """The name with a capital first letter (a heading, the narration's first word)."""
    return name[0].upper() + name[1:]




def check(v: dict) -> dict[str, str]:
    for name, label_ in (("num_gpu_blocks", "GPU blocks"), ("num_cpu_blocks", "CPU blocks")):
        if v[name] * v["block_size"] > MAX_SLOTS:
            return {name: f"{label_}: at most {MAX_SLOTS // v['block_size']} with block size "
                          f"{v['block_size']} ({MAX_SLOTS} token slots per pool, so that every "
                          "slot fits in the picture)"}
    for i, r in enumerate(REQUESTS.named(v["requests"])):
        if r.arrival + r.output > 32:
            return {"requests": f"requests: request {i + 1} ends too late; keep arrival step "
                                "+ output tokens within 32"}
    if offloading(v) and not v["num_cpu_blocks"]:
        return {"num_cpu_blocks": "CPU blocks: V1's CPU tier needs at least 1 block (or set "
                                  "the CPU tier to none)"}
    if v["engine"] == "v1":
        for r in REQUESTS.named(v["requests"]):
            need = -(-(r.prompt + r.output - 1) // v["block_size"])
            if need > v["num_gpu_blocks"]:
                return {"requests": f"requests: in V1, {r.name} ({r.prompt} + {r.output} "
                                    f"tokens) needs {need} blocks and only "
                                    f"{v['num_gpu_blocks']} are usable: it would wait forever "
                                    "(raise GPU blocks or the block size)"}
    return {}
