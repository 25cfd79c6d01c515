"""Named scenarios: the paper's worked examples and a few behaviours worth watching.

A scenario is plain data (configs plus a list of requests), so the command line, the
tests and the pages all replay exactly the same thing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.core.scheduler import Scheduler
from sim.core.sequence import SamplingParams
from sim.studies.static_batching import StaticBatchScheduler

# The schedulers a scenario (and the command line) may name.
SCHEDULERS = {"vllm": Scheduler, "static": StaticBatchScheduler}


@dataclass(frozen=True, slots=True)
class ScenarioRequest:
    request_id: str
    prompt_len: int
    max_tokens: int
    arrival_step: int = 0
    n: int = 1
    best_of: int | None = None
    use_beam_search: bool = False
    output_len: int | None = None   # the stand-in model stops here with EOS

    def sampling_params(self) -> SamplingParams:
        return SamplingParams(n=self.n, best_of=self.best_of,
                              use_beam_search=self.use_beam_search, max_tokens=self.max_tokens)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    cache_config: CacheConfig
    scheduler_config: SchedulerConfig = field(default_factory=SchedulerConfig)
    requests: tuple[ScenarioRequest, ...] = ()
    seed: int = 0
    scheduler: str = "vllm"          # a key of SCHEDULERS

    def build_engine(self, record_events: bool = True) -> LLMEngine:
        engine = LLMEngine(self.cache_config, self.scheduler_config, seed=self.seed,
                           scheduler=SCHEDULERS[self.scheduler], record_events=record_events)
        for r in self.requests:
            engine.add_request(r.request_id, r.prompt_len, r.sampling_params(),
                               arrival_step=r.arrival_step, output_len=r.output_len)
        return engine


def _small(num_gpu_blocks: int, num_cpu_blocks: int = 0, **kw) -> CacheConfig:
    return CacheConfig(block_size=kw.pop("block_size", 4), num_gpu_blocks=num_gpu_blocks,
                       num_cpu_blocks=num_cpu_blocks, watermark=kw.pop("watermark", 0.0), **kw)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario(
        "fig6",
        "Paper Fig. 6: a 7-token prompt fills logical blocks 0 and 1 (physical 7 and 1); "
        "the first decode fills the last slot, the second needs a new block (physical 3).",
        _small(8, free_order=(7, 1, 3)),
        requests=(ScenarioRequest("A", 7, 4),)),
    Scenario(
        "fig7",
        "Paper Fig. 7: two requests at once; their logical blocks map to scattered "
        "physical blocks and both grow one token per step.",
        _small(8, free_order=(7, 1, 3, 5, 2, 4)),
        requests=(ScenarioRequest("A", 7, 4), ScenarioRequest("B", 5, 4))),
    Scenario(
        "fig8",
        "Paper Fig. 8: parallel sampling (n=2) shares the prompt blocks (ref count 2); "
        "the first writer into the shared partial block copies it, the second writes in "
        "place.",
        _small(8, free_order=(7, 1, 3, 2)),
        requests=(ScenarioRequest("A", 7, 3, n=2),)),
    Scenario(
        "fig9",
        "Paper Fig. 9: beam search (k=4) shares blocks as a tree; blocks whose count drops "
        "to 0 are freed in the same step.",
        _small(32),
        requests=(ScenarioRequest("A", 6, 8, best_of=4, use_beam_search=True),)),
    Scenario(
        "recompute",
        "Memory pressure with single-sequence requests: the tail of `running` is "
        "preempted by recompute and goes back to the front of `waiting`.",
        _small(10),
        requests=(ScenarioRequest("A", 6, 12), ScenarioRequest("B", 5, 12),
                  ScenarioRequest("C", 4, 12))),
    Scenario(
        "swap",
        "Memory pressure with a parallel-sampling request: C (n=2) is the tail of "
        "`running`, so when A needs a block C's blocks are swapped out to the CPU; when B "
        "finishes, C is swapped back in under new GPU block numbers.",
        _small(10, 12),
        requests=(ScenarioRequest("A", 6, 16), ScenarioRequest("B", 3, 6),
                  ScenarioRequest("C", 5, 10, n=2))),
    Scenario(
        "continuous",
        "Continuous batching: requests of different lengths arrive over time; a finished "
        "request's seat is refilled at the next step.",
        _small(64),
        SchedulerConfig(max_num_seqs=3),
        requests=(ScenarioRequest("A", 5, 3), ScenarioRequest("B", 3, 9),
                  ScenarioRequest("C", 6, 4), ScenarioRequest("D", 4, 5, arrival_step=2),
                  ScenarioRequest("E", 3, 3, arrival_step=3))),
    Scenario(
        "static",
        "The same workload under static batching: the batch runs until its longest request "
        "is done before anyone else is admitted.",
        _small(64),
        SchedulerConfig(max_num_seqs=3),
        requests=(ScenarioRequest("A", 5, 3), ScenarioRequest("B", 3, 9),
                  ScenarioRequest("C", 6, 4), ScenarioRequest("D", 4, 5, arrival_step=2),
                  ScenarioRequest("E", 3, 3, arrival_step=3)),
        scheduler="static"),
]}


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; choose one of: "
                         + ", ".join(SCENARIOS)) from None
