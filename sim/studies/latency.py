"""Time to first token and time between tokens, v0.5.5 against V1, on one workload.

Both engines (`sim.core.engine.LLMEngine`, vLLM v0.5.5, and `sim.v1.engine.LLMEngine`, vLLM
V1 at v0.25.1) run the same requests with the same pool of usable KV blocks, the same token
budget and the same limit on running requests. Each engine step is priced with the roofline
cost model of the prefill vs decode page (`sim.perf.cost.step_cost` and `predict`): a step
over requests that each compute `query` new tokens after `context` cached ones takes
`max(FLOPs / peak, bytes / bandwidth)`. The clock advances by that time; a request arrives at
a time in seconds (it joins before the first step that starts at or after it), and each
sampled token is emitted when the step that sampled it ends.

The engine loop. V1 runs vLLM's default, async scheduling (`Setup.async_scheduling`, None
as in vLLM; False for the synchronous loop), and `Setup.cpu_step_s` is the CPU time of one
engine call (scheduling a batch, preparing its inputs and processing an output: our stated
assumption, not a measurement; 0 by default). The synchronous loop does them one after
the other: schedule (`cpu_step_s`), then the GPU step, and the tokens are out when it ends;
a call starts when the previous one's tokens are out. The async loop (`EngineCore.
step_with_batch_queue`) launches a batch when its scheduling is done and the GPU is free;
the call then waits for the previous batch's GPU step to end, processes its output (its
tokens are out then) and starts the next call. So the CPU's time hides behind the GPU's
step, but the next batch is scheduled while the current one runs: a request that arrives
during a step joins the batch after next, and a finished request's seat and blocks are
freed one call later. v0.5.5 has only the synchronous loop.

Per request:
- time to first token (TTFT): from its arrival to the end of the step that sampled its
  first output token;
- time between tokens (TBT): the gaps between its successive output tokens (the first
  token excluded); the mean and the largest gap are kept.

What the cost model leaves out (see sim/perf/cost.py): kernel-launch and scheduling
overhead, the CPU time of the scheduler and of detokenisation, activations and the
embedding gather, attention kernels slower than the roofline for short or ragged queries,
CUDA graphs (V1 pads decode batches to captured sizes), and any CPU time but the stated
`cpu_step_s`. It prices both engines the same way, so the comparison is of their
schedules, not of their code.

Pure stdlib and deterministic (no clock, no hash()).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sim.core.config import CacheConfig as CacheConfigV0
from sim.core.config import SchedulerConfig as SchedulerConfigV0
from sim.core.engine import LLMEngine as EngineV0
from sim.core.sequence import SamplingParams
from sim.events import ChunkScheduled, Preempted
from sim.perf.cost import Roofline, predict, step_cost
from sim.perf.models import ModelConfig
from sim.v1.config import CacheConfig as CacheConfigV1
from sim.v1.config import SchedulerConfig as SchedulerConfigV1
from sim.v1.engine import LLMEngine as EngineV1

ENGINES = ("v0.5.5", "v1")


@dataclass(frozen=True, slots=True)
class TimedRequest:
    """One request of a timed workload: prompt and output lengths, arrival in seconds."""
    request_id: str
    prompt_len: int
    output_len: int
    arrival_s: float = 0.0

    def __post_init__(self) -> None:
        if self.prompt_len < 1 or self.output_len < 1:
            raise ValueError(f"{self.request_id}: prompt and output need at least 1 token")
        if not self.arrival_s >= 0.0:
            raise ValueError(f"{self.request_id}: arrival_s must not be negative")


@dataclass(frozen=True, slots=True)
class Setup:
    """What both engines share: the pool of usable KV blocks, the token budget per step
    (`max_num_batched_tokens`; v0.5.5 needs it at least `max_model_len`, since it never
    chunks a prompt), the limit on running requests, and V1's
    `long_prefill_token_threshold` (0: off, vLLM's default)."""
    block_size: int = 16
    num_usable_blocks: int = 4096
    max_num_batched_tokens: int = 2048
    max_model_len: int = 2048
    max_num_seqs: int = 256
    long_prefill_token_threshold: int = 0
    # V1's engine loop: None resolves as vLLM's does (async scheduling); False: synchronous.
    async_scheduling: bool | None = None
    # CPU seconds per engine call (schedule, prepare inputs, process an output): stated.
    cpu_step_s: float = 0.0

    def engine(self, name: str, seed: int = 0):
        """A fresh engine of either kind with this setup (V1's pool has one more block:
        block 0, the null block, is never handed out)."""
        if name == "v0.5.5":
            return EngineV0(
                CacheConfigV0(block_size=self.block_size, num_gpu_blocks=self.num_usable_blocks,
                              num_cpu_blocks=0),
                SchedulerConfigV0(max_num_batched_tokens=self.max_num_batched_tokens,
                                  max_model_len=self.max_model_len,
                                  max_num_seqs=self.max_num_seqs), seed=seed)
        if name == "v1":
            return EngineV1(
                CacheConfigV1(block_size=self.block_size,
                              num_gpu_blocks=self.num_usable_blocks + 1),
                SchedulerConfigV1(max_num_batched_tokens=self.max_num_batched_tokens,
                                  max_model_len=self.max_model_len,
                                  max_num_seqs=self.max_num_seqs,
                                  long_prefill_token_threshold=self.long_prefill_token_threshold,
                                  async_scheduling=self.async_scheduling),
                seed=seed)
        raise ValueError(f"engine must be one of {ENGINES}, got {name!r}")


@dataclass(frozen=True, slots=True)
class PricedStep:
    """One engine step: when its GPU step started, how long the roofline says it took, and
    what ran."""
    step: int
    start_s: float
    time_s: float
    bound: str                          # "compute" or "memory"
    decode_tokens: int                  # tokens of requests that only decoded
    prefill_tokens: int                 # prompt (or recomputed) tokens, chunks included
    seqs: tuple[tuple[str, int, int], ...]   # (request_id, context, query) per request

    @property
    def end_s(self) -> float:
        return self.start_s + self.time_s


@dataclass(frozen=True, slots=True)
class RequestLatency:
    request_id: str
    arrival_s: float
    token_times_s: tuple[float, ...]    # when each output token was emitted

    @property
    def ttft_s(self) -> float:
        return self.token_times_s[0] - self.arrival_s

    @property
    def gaps_s(self) -> tuple[float, ...]:
        t = self.token_times_s
        return tuple(b - a for a, b in zip(t, t[1:]))

    @property
    def mean_tbt_s(self) -> float | None:
        gaps = self.gaps_s
        return sum(gaps) / len(gaps) if gaps else None

    @property
    def max_tbt_s(self) -> float | None:
        gaps = self.gaps_s
        return max(gaps) if gaps else None

    @property
    def finish_s(self) -> float:
        return self.token_times_s[-1]


@dataclass(frozen=True, slots=True)
class TimedRun:
    engine: str
    steps: tuple[PricedStep, ...]
    requests: tuple[RequestLatency, ...]      # in the workload's order
    num_preemptions: int

    @property
    def makespan_s(self) -> float:
        return max(r.finish_s for r in self.requests)

    def by_id(self) -> dict[str, RequestLatency]:
        return {r.request_id: r for r in self.requests}


def price_step(model: ModelConfig, roofline: Roofline, seqs: Sequence[tuple[int, int]],
               dtype: str = "bf16"):
    """The roofline's StepTime for one step over (context, query) pairs."""
    return predict(step_cost(model, list(seqs), dtype), roofline)


class _Contexts:
    """Tokens each request has computed (its KV in the cache) before a step, kept from the
    engines' events: V1 names the context of every prompt chunk (ChunkScheduled, prefix-cache
    hits included); a preemption by recompute resets it to 0."""

    def __init__(self) -> None:
        self.computed: dict[str, int] = {}

    def step(self, scheduled, events) -> list[tuple[str, int, int, bool]]:
        for e in events:
            if isinstance(e, Preempted):
                self.computed[e.request_id] = 0
        chunk_at = {e.request_id: e.num_computed_before for e in events
                    if isinstance(e, ChunkScheduled)}
        out = []
        for s in scheduled:
            if s.num_seqs != 1:
                raise ValueError("the latency study prices one sequence per request")
            context = chunk_at.get(s.request_id, self.computed.get(s.request_id, 0))
            self.computed[s.request_id] = context + s.num_tokens
            out.append((s.request_id, context, s.num_tokens, s.prefill))
        return out


def run_timed(engine_name: str, requests: Iterable[TimedRequest], setup: Setup,
              model: ModelConfig, roofline: Roofline, dtype: str = "bf16",
              max_steps: int = 100_000) -> TimedRun:
    """Run one engine on `requests` with the clock of the roofline (see the module
    docstring)."""
    requests = list(requests)
    if len({r.request_id for r in requests}) != len(requests):
        raise ValueError("request ids must be distinct")
    longest = max(r.prompt_len + r.output_len for r in requests)
    if longest > setup.max_model_len:
        raise ValueError(f"a request of {longest} tokens is longer than max_model_len "
                         f"({setup.max_model_len})")
    if not setup.cpu_step_s >= 0.0:
        raise ValueError("cpu_step_s must not be negative")
    engine = setup.engine(engine_name)
    async_loop = bool(getattr(engine, "async_scheduling", False))
    cpu_s = setup.cpu_step_s
    pending = sorted(requests, key=lambda r: r.arrival_s)   # stable: equal times keep order
    contexts = _Contexts()
    token_times: dict[str, list[float]] = {r.request_id: [] for r in requests}
    steps: list[PricedStep] = []
    preemptions = 0
    clock = 0.0              # when the CPU starts the next engine call
    gpu_free = 0.0           # when the GPU has finished every batch launched
    gpu_end: dict[int, float] = {}   # engine step -> when its batch's GPU step ended
    while pending or engine.has_unfinished_requests():
        if len(steps) >= max_steps:
            raise RuntimeError(f"{engine_name}: more than {max_steps} steps")
        if not engine.has_unfinished_requests() and pending[0].arrival_s > clock:
            clock = pending[0].arrival_s          # idle until the next arrival
        while pending and pending[0].arrival_s <= clock:
            r = pending.pop(0)
            engine.add_request(r.request_id, r.prompt_len,
                               SamplingParams(max_tokens=r.output_len, ignore_eos=True),
                               arrival_step=engine.step_index)
        out = engine.step()
        preemptions += sum(isinstance(e, Preempted) for e in out.events)
        seqs = contexts.step(out.scheduled(), out.events)
        if seqs:
            t = price_step(model, roofline, [(c, q) for _, c, q, _ in seqs], dtype)
            time_s, bound = t.predicted_s, t.bound
        else:
            time_s, bound = 0.0, "idle"
        launched = clock + cpu_s            # the batch is scheduled (and its inputs ready)
        start = max(launched, gpu_free) if async_loop else launched
        if seqs:
            gpu_free = start + time_s
        gpu_end[out.step] = start + time_s
        if not async_loop:
            clock = start + time_s          # its tokens are out when its step ends
        elif out.processed_step is not None:
            # Wait for the oldest batch's step to end, then process its output.
            clock = max(launched, gpu_end.pop(out.processed_step))
        else:
            clock = launched                # the queue had room: no waiting
        steps.append(PricedStep(
            out.step, start, time_s, bound,
            sum(q for _, _, q, pre in seqs if not pre),
            sum(q for _, _, q, pre in seqs if pre),
            tuple((rid, c, q) for rid, c, q, _ in seqs)))
        for rid, _, _, _ in out.tokens:
            token_times[rid].append(clock)
    latencies = tuple(RequestLatency(r.request_id, r.arrival_s, tuple(token_times[r.request_id]))
                      for r in requests)
    for lat, r in zip(latencies, requests):
        if len(lat.token_times_s) != r.output_len:
            raise RuntimeError(f"{engine_name}: {r.request_id} produced "
                               f"{len(lat.token_times_s)} of {r.output_len} tokens")
    return TimedRun(engine_name, tuple(steps), latencies, preemptions)


def compare(requests: Iterable[TimedRequest], setup: Setup, model: ModelConfig,
            roofline: Roofline, dtype: str = "bf16") -> tuple[TimedRun, TimedRun]:
    """(v0.5.5's run, V1's run) of the same workload."""
    requests = list(requests)
    return (run_timed("v0.5.5", requests, setup, model, roofline, dtype),
            run_timed("v1", requests, setup, model, roofline, dtype))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in (0, 100]): the smallest value that at least q% of the
    values do not exceed."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


# The V1 scheduler page's workload: six chat requests decoding when three long documents
# (1,500 to 1,900 prompt tokens, a retrieval-augmented prompt, say) and a short chat arrive
# together at 0.3 s. Lengths are our choice, picked to show the effect of long prompts on
# running decodes; they are not drawn from a dataset.
CHATS_AND_DOCUMENTS = (
    TimedRequest("A", 300, 300, 0.0),
    TimedRequest("B", 150, 320, 0.0),
    TimedRequest("C", 500, 280, 0.0),
    TimedRequest("D", 200, 300, 0.02),
    TimedRequest("E", 350, 260, 0.04),
    TimedRequest("F", 250, 300, 0.06),
    TimedRequest("G", 1900, 100, 0.3),
    TimedRequest("H", 1700, 100, 0.3),
    TimedRequest("I", 1500, 100, 0.3),
    TimedRequest("J", 120, 150, 0.3),
)
