"""How much KV memory sharing saves: parallel sampling and beam search (the paper's Fig. 15).

The PagedAttention paper (section 6.3) computes "the amount of memory saving ... by the
number of blocks we saved by sharing divided by the number of total blocks without sharing".
Here, at one moment:

- blocks **with** sharing: the distinct GPU physical blocks in use (reference count > 0);
- blocks **without** sharing: what the same live sequences would hold as independent
  copies, one physical block per block-table entry (the sum of the tables' lengths, which
  equals the sum of the reference counts);
- saving = (without - with) / without.

Fig. 15's caption says "average amount of memory saving", so `measure` averages over time:
the blocks saved summed over every engine step, divided by the blocks without sharing
summed over the same steps (block-steps). A step that holds more memory weighs more, as
it should for a question about memory; a plain mean of per-step ratios would give the
nearly empty last steps of a run the weight of full ones. The saving at peak (peak blocks
with sharing against peak blocks without, the question "how much smaller may the pool be")
is reported beside it.

The workload follows vLLM's `benchmarks/benchmark_throughput.py`: every sample or beam of a
request generates exactly the request's output length (`ignore_eos=True`,
`max_tokens=output_len`). Every request arrives at step 0 and the GPU pool is made large
enough that nothing is ever preempted, so the number measures sharing alone (a swapped-out
group would take a second effect into the average). With no preemption the arrival pattern
hardly matters: each request contributes the same block-steps whenever it runs, apart from
the prefill-only steps in which running requests wait.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.core.sequence import SamplingParams
from sim.studies.workload import RequestSpec, make_workload

MODES = ("parallel", "beam")

# The paper's Fig. 15 (OPT-13B, Alpaca trace), as fractions.
PAPER_FIG15 = {
    "parallel": {2: 0.0609, 4: 0.0853, 6: 0.0979},
    "beam": {2: 0.3756, 4: 0.5313, 6: 0.5516},
}

# The reproduction's settings. Beam search costs the simulation about k times more per
# request than one sequence, so it runs on the first BEAM_REQUESTS of the same workload
# (make_workload draws requests in order: the first 60 of 200 are the 60 of a 60-request
# workload with the same seed).
FIG15_BLOCK_SIZE = 16
FIG15_SEED = 0
FIG15_REQUESTS = {"parallel": 200, "beam": 60}
FIG15_WIDTHS = (2, 4, 6)


class BlockUsage(NamedTuple):
    """GPU blocks held at one moment, with sharing and as independent copies."""
    used: int          # distinct physical blocks (with sharing)
    unshared: int      # block-table entries (each sequence's own copy of every block)

    @property
    def saved(self) -> int:
        return self.unshared - self.used

    @property
    def saving(self) -> float:
        return saving(self.saved, self.unshared)


def saving(saved: float, unshared: float) -> float:
    """The paper's ratio: blocks saved by sharing / blocks without sharing (0 when empty)."""
    if unshared < 0 or saved < 0 or saved > unshared:
        raise ValueError(f"need 0 <= saved <= unshared, got saved={saved}, unshared={unshared}")
    return saved / unshared if unshared else 0.0


def usage(block_manager) -> BlockUsage:
    """Block usage of a live `BlockSpaceManager` (GPU only)."""
    unshared = 0
    for table in block_manager.block_tables.values():
        unshared += len(table)
    alloc = block_manager.gpu_allocator
    return BlockUsage(alloc.num_blocks - alloc.get_num_free_blocks(), unshared)


def usage_from_snapshot(snap: dict) -> BlockUsage:
    """The same count from an `engine.snapshot()` (what the pages draw from)."""
    unshared = sum(1 for r in snap["requests"] for s in r["seqs"]
                   for dev, _, _ in s["block_table"] if dev == "gpu")
    gpu = snap["gpu"]
    return BlockUsage(gpu["num_blocks"] - gpu["num_free"], unshared)


@dataclass(frozen=True, slots=True)
class SharingResult:
    mode: str                  # "parallel" or "beam"
    width: int                 # n (parallel sampling) or k (beam width)
    num_requests: int
    steps: int
    block_steps_used: int      # sum over steps of blocks used with sharing
    block_steps_unshared: int  # ... and without sharing
    peak_used: int
    peak_unshared: int

    @property
    def time_averaged(self) -> float:
        return saving(self.block_steps_unshared - self.block_steps_used,
                      self.block_steps_unshared)

    @property
    def at_peak(self) -> float:
        return saving(self.peak_unshared - self.peak_used, self.peak_unshared)


def sampling_params(mode: str, width: int, output_len: int) -> SamplingParams:
    """What vLLM's throughput benchmark asks: n samples, or beam width k, each exactly
    `output_len` tokens long."""
    if mode == "parallel":
        return SamplingParams(n=width, max_tokens=output_len, ignore_eos=True)
    if mode == "beam":
        return SamplingParams(n=1, best_of=width, use_beam_search=True, max_tokens=output_len,
                              ignore_eos=True)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def copy_blocks(prompt_len: int, output_len: int, block_size: int) -> int:
    """Blocks one sequence holds at most as an independent copy, plus the spare block
    `can_append_slots` wants per running sequence."""
    return -(-(prompt_len + output_len) // block_size) + 1


def sharing_engine(mode: str, width: int, requests: list[RequestSpec], block_size: int,
                   seed: int = 0, record_events: bool = True) -> LLMEngine:
    """An engine with room for every sequence of every request as an independent copy:
    nothing is ever preempted, so what it shows is sharing alone."""
    if width < 1 or (mode == "beam" and width < 2):
        raise ValueError(f"width must be at least {2 if mode == 'beam' else 1}, got {width}")
    num_gpu_blocks = max(1, width * sum(copy_blocks(r.prompt_len, r.output_len, block_size)
                                        for r in requests))
    engine = LLMEngine(CacheConfig(block_size=block_size, num_gpu_blocks=num_gpu_blocks,
                                   num_cpu_blocks=0, watermark=0.0),
                       SchedulerConfig(), seed=seed, record_events=record_events)
    for r in requests:
        engine.add_request(r.request_id, r.prompt_len,
                           sampling_params(mode, width, r.output_len),
                           arrival_step=r.arrival_step)
    return engine


def saving_so_far(trace) -> list[float | None]:
    """Per step of a recorded trace (`sim.trace.record` of a `sharing_engine`): the
    time-averaged saving over the engine steps up to and including that one, summed as
    `measure` sums a whole run; None before the first step and while no block is held yet.
    What the pages show beside each step's saving, so a reader sees the average build up."""
    out: list[float | None] = []
    used_sum = unshared_sum = 0
    for step in trace:
        if step.step is not None:
            u = usage_from_snapshot(step.snapshot)
            used_sum += u.used
            unshared_sum += u.unshared
        out.append(saving(unshared_sum - used_sum, unshared_sum) if unshared_sum else None)
    return out


def measure(mode: str, width: int, requests: list[RequestSpec],
            block_size: int = FIG15_BLOCK_SIZE, seed: int = 0) -> SharingResult:
    """Serve `requests` with n = width samples each (or beam width k = width) and count
    blocks with and without sharing after every engine step."""
    engine = sharing_engine(mode, width, requests, block_size, seed, record_events=False)
    bm = engine.block_manager
    used_sum = unshared_sum = peak_used = peak_unshared = steps = 0
    while engine.has_unfinished_requests():
        out = engine.step()
        if out.scheduler_outputs.preempted:
            raise RuntimeError("a request was preempted; the pool is too small to measure "
                               "sharing alone")
        u = usage(bm)
        used_sum += u.used
        unshared_sum += u.unshared
        peak_used = max(peak_used, u.used)
        peak_unshared = max(peak_unshared, u.unshared)
        steps += 1
    return SharingResult(mode, width, len(requests), steps, used_sum, unshared_sum,
                         peak_used, peak_unshared)


def alpaca_requests(num_requests: int, seed: int = FIG15_SEED) -> list[RequestSpec]:
    """The Alpaca-like workload of sim.workload (log-normal lengths, means 19.31 in and
    58.45 out), every request at step 0."""
    return make_workload("alpaca", num_requests, seed=seed)


def reproduce_fig15(modes: tuple[str, ...] = MODES, widths: tuple[int, ...] = FIG15_WIDTHS,
                    num_requests: dict[str, int] | None = None, seed: int = FIG15_SEED,
                    block_size: int = FIG15_BLOCK_SIZE) -> dict[str, dict[int, SharingResult]]:
    """{mode: {width: SharingResult}} for parallel sampling and/or beam search."""
    counts = dict(FIG15_REQUESTS, **(num_requests or {}))
    out: dict[str, dict[int, SharingResult]] = {}
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        requests = alpaca_requests(counts[mode], seed)
        out[mode] = {w: measure(mode, w, requests, block_size, seed) for w in widths}
    return out
