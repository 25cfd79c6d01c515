"""Time to first token and time between tokens: colocated V1 against P/D disaggregation.

Three ways to serve the same requests with the same model on H200s, every engine step
priced with the roofline cost model (sim/studies/latency.py):

- colocated, 1 GPU: one V1 engine (chunked prefill, one token budget): long prompts are cut
  into chunks that share steps with the running decodes, so those decodes wait for every
  chunk;
- colocated, 2 GPUs: two such engines, requests sent to them in turn (round robin), the same
  number of GPUs as P/D;
- disaggregated, 1 prefill + 1 decode GPU (sim/studies/disaggregated.py): the decode GPU
  runs only decodes (and the one recomputed prompt token per request), at the price of the
  KV transfer over the link and of two pools sized apart.

Per request: time to first token (TTFT, from arrival to the first output token: for P/D,
the prefill, the transfer and the decode side's first step) and the mean and the longest
gap between its output tokens (TBT). Every engine runs V1's synchronous loop (the P/D driver
prices both halves of a step on its clock; async scheduling's overlap of CPU and GPU is left
out of all three, as is the CPU's time).

`LONG_PROMPTS_SHORT_ANSWERS` is the workload of the page: documents of 3,000 to 7,000 tokens
summarised in 80 to 200 tokens, arriving every `gap_s` seconds. The lengths are our choice
(retrieval-augmented prompts and summaries are of that shape), not drawn from a dataset.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sim.perf.cost import Roofline
from sim.perf.models import ModelConfig
from sim.studies.disaggregated import DisaggregatedServing, PDRequest, PDSetup
from sim.studies.latency import RequestLatency, Setup, TimedRequest, run_timed

# (prompt, output) pairs; request i arrives at i * gap_s.
LONG_PROMPTS_SHORT_ANSWERS = (
    (6200, 120), (3400, 90), (5100, 160), (7000, 100), (4200, 200), (3000, 80),
    (6600, 140), (3800, 110), (5600, 90), (4600, 180), (3200, 120), (6000, 150),
)

# vLLM v0.25.1's token budget for a server on a GPU with at least 70 GiB (VLLM-V1.md,
# section 8: EngineArgs.get_batch_defaults), and a pool no request here comes near.
SERVER_BUDGET = 8192
BLOCK_SIZE = 16
NUM_BLOCKS = 40_000
MAX_MODEL_LEN = 8192
CONFIGS = ("colocated-1", "colocated-2", "disaggregated")


def workload(gap_s: float = 0.25, pairs: Sequence[tuple[int, int]] = LONG_PROMPTS_SHORT_ANSWERS
             ) -> list[TimedRequest]:
    if not gap_s >= 0:
        raise ValueError("gap_s must not be negative")
    return [TimedRequest(chr(ord("A") + i) if i < 26 else f"R{i}", p, o, round(i * gap_s, 9))
            for i, (p, o) in enumerate(pairs)]


@dataclass(frozen=True, slots=True)
class Comparison:
    """Each configuration's latencies, in the workload's order."""
    requests: tuple[TimedRequest, ...]
    runs: dict[str, tuple[RequestLatency, ...]]
    link: str
    budget: int
    # P/D: each request's KV transfer (seconds), and the wait from its arrival to the end
    # of its prefill.
    transfer_s: tuple[float, ...] = ()
    prefill_done_s: tuple[float, ...] = ()

    def stat(self, config: str, metric: str) -> list[float]:
        """Per request, in seconds: "ttft", "mean_tbt" or "max_tbt"."""
        out = []
        for lat in self.runs[config]:
            if metric == "ttft":
                out.append(lat.ttft_s)
            elif metric == "mean_tbt":
                out.append(lat.mean_tbt_s or 0.0)
            elif metric == "max_tbt":
                out.append(lat.max_tbt_s or 0.0)
            else:
                raise ValueError(f"unknown metric {metric!r}")
        return out


def colocated(requests: Sequence[TimedRequest], replicas: int, model: ModelConfig,
              roofline: Roofline, budget: int = SERVER_BUDGET, dtype: str = "bf16"
              ) -> tuple[RequestLatency, ...]:
    """`replicas` independent V1 engines, request i on engine i % replicas."""
    # The synchronous loop, as the P/D run's engines (sim/studies/disaggregated.py): the
    # comparison is of where prompts and decodes run, not of the engine loop.
    setup = Setup(block_size=BLOCK_SIZE, num_usable_blocks=NUM_BLOCKS,
                  max_num_batched_tokens=budget, max_model_len=MAX_MODEL_LEN,
                  async_scheduling=False)
    by_id = {}
    for k in range(replicas):
        mine = list(requests[k::replicas])
        if mine:
            run = run_timed("v1", mine, setup, model, roofline, dtype)
            by_id.update(run.by_id())
    return tuple(by_id[r.request_id] for r in requests)


def disaggregated(requests: Sequence[TimedRequest], model: ModelConfig, roofline: Roofline,
                  link: str = "ib-ndr", budget: int = SERVER_BUDGET, dtype: str = "bf16"
                  ) -> tuple[RequestLatency, ...]:
    return tuple(rec.latency() for rec in disaggregated_records(requests, model, roofline,
                                                                 link, budget, dtype))


def disaggregated_records(requests: Sequence[TimedRequest], model: ModelConfig,
                          roofline: Roofline, link: str = "ib-ndr",
                          budget: int = SERVER_BUDGET, dtype: str = "bf16") -> list:
    """The P/D run's RequestRecords (sim.studies.disaggregated), in the workload's order."""
    setup = PDSetup(block_size=BLOCK_SIZE, prefill_blocks=NUM_BLOCKS, decode_blocks=NUM_BLOCKS,
                    max_num_batched_tokens=budget, max_model_len=MAX_MODEL_LEN, link=link)
    run = DisaggregatedServing([PDRequest(r.request_id, r.prompt_len, r.output_len,
                                          r.arrival_s) for r in requests],
                               setup, model, roofline, dtype, record=False)
    trace = run.run()
    if trace.stopped is not None:
        raise RuntimeError(f"the P/D run stopped: {trace.stopped}")
    records = trace.meta["records"]
    return [records[r.request_id] for r in requests]


def compare(requests: Sequence[TimedRequest], model: ModelConfig, roofline: Roofline,
            link: str = "ib-ndr", budget: int = SERVER_BUDGET, dtype: str = "bf16"
            ) -> Comparison:
    requests = tuple(requests)
    records = disaggregated_records(requests, model, roofline, link, budget, dtype)
    return Comparison(requests, {
        "colocated-1": colocated(requests, 1, model, roofline, budget, dtype),
        "colocated-2": colocated(requests, 2, model, roofline, budget, dtype),
        "disaggregated": tuple(rec.latency() for rec in records),
    }, link, budget,
        tuple(rec.transfer_end_s - rec.transfer_start_s for rec in records),
        tuple(rec.prefill_done_s - rec.arrival_s for rec in records))
