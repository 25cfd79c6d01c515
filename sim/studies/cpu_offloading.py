"""A CPU tier under a chat workload that outgrows the GPU's KV cache: V1's engine (sim/v1,
vLLM v0.25.1) with GPU prefix caching alone, and with the offloading connector's CPU tier
(sim/v1/kv_connector/offloading_connector.py) of 1x, 4x and 16x the GPU pool, on one clock.

The workload (`OFFLOAD_CHAT`) is built like the prefix caching page's chat
(`sim.studies.prefix_sharing.ChatWorkload`: a system prompt shared by all, each follow-up
sending the whole conversation again), larger: 48 conversations of 4 turns, a 1,024-token
system prompt, ShareGPT-like user messages up to 512 tokens, answers up to 64. Arrivals are
in seconds, not steps, so that every configuration sees the same requests at the same
times: first turns a Poisson stream (`rate_per_s`, 2 per second), each follow-up `think_s`
(15 s) after its previous answer ended. The GPU pool (`pool_blocks`: 384 usable blocks of
16 tokens, 6,144 tokens) holds the system prompt and the conversations in flight; a
conversation's own blocks are evicted while its user thinks.

Time. Each step is priced with the roofline cost model (`sim.perf.cost`, as in
sim/studies/latency.py) for Llama-3-8B in bf16 on an H200 (datasheet ceilings): a step
over requests that each compute `query` tokens after `context` cached ones takes
max(FLOPs / peak, bytes / bandwidth). The CPU tier's copies run on the H200's PCIe link
(`sim.perf.host_link.PCIE["h200"]`, 52.6 GB/s measured), 2 MiB per block
(`cache_block_size`): a load is submitted at the start of the step that admits the request
into WAITING_FOR_REMOTE_KVS and must be done by the end of a step for the request to be
scheduled in the next one; a step with nothing to compute waits for the next transfer.
Stores run in the other direction, beside the loads (PCIe is full duplex); a flush
(a preempted or reused block's store) stalls the step until the store is done. A request
arrives before the first step that starts at or after its time.

Per configuration (`OffloadRun`): per step, the prompt tokens computed (prompt chunks and
recomputation after preemption) and the prompt tokens found (GPU prefix hits and CPU
loads); per request, its time to first token (arrival to the end of the step that sampled
its first token); in all, the bytes and link seconds of loads and stores.

The engine runs the synchronous loop (`async_scheduling=False`): a step's tokens are out when
its forward pass ends. vLLM's default async loop schedules each step while the previous one
runs; with no CPU time priced it would add a step of delay to admissions, and to a load's
landing, and the offloading connector (a KV consumer) would defer frees by a step
(`defer_block_free`), in every configuration alike.

What the picture leaves out: see sim/perf/cost.py (no launch overhead, no CUDA graphs) and
sim/perf/host_link.py (no per-transfer latency); the copies of a step do not slow its
forward pass (vLLM runs them on their own CUDA streams; they share the GPU's memory
bandwidth in reality).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from sim.core.sequence import SamplingParams
from sim.events import ChunkScheduled, OffloadLoadJob, Preempted, PrefixCacheHit
from sim.perf.cost import Roofline
from sim.perf.hardware import get_gpu
from sim.perf.host_link import get_host_link
from sim.perf.models import cache_block_size, get_model
from sim.studies.latency import price_step
from sim.studies.prefix_sharing import ChatWorkload
from sim.v1.config import CacheConfig, KVTransferConfig, SchedulerConfig
from sim.v1.engine import LLMEngine
from sim.v1.kv_connector.offloading.metrics import _TransferMetricName as M
from sim.v1.kv_offload.invariants import offloading_parts

CPU_FACTORS = (0, 1, 4, 16)

# The chat: 48 conversations of 4 turns, a 1,024-token system prompt shared by all,
# ShareGPT-like user messages (up to 512 tokens) and short answers (up to 64): each
# conversation's own history outgrows what a small GPU pool keeps between its turns.
OFFLOAD_CHAT = ChatWorkload(conversations=48, turns=4, system_prompt=1024, max_user=512,
                            max_answer=64, dataset="sharegpt")


@dataclass(frozen=True)
class OffloadSetup:
    pool_blocks: int = 384           # usable GPU blocks (num_gpu_blocks - 1): 6,144 tokens
    model_id: str = "llama-3-8b"
    gpu_id: str = "h200"
    link_id: str = "h200"
    dtype: str = "bf16"
    rate_per_s: float = 2.0          # first turns per second (Poisson)
    think_s: float = 15.0            # from an answer's last token to the next turn
    offload_prompt_only: bool = True   # vLLM's default
    max_model_len: int = 8192


@dataclass(frozen=True, slots=True)
class StepRow:
    step: int
    start_s: float
    end_s: float
    computed_prompt_tokens: int      # prompt (or recomputed) tokens computed this step
    gpu_hit_tokens: int              # found in the GPU prefix cache at admission
    cpu_hit_tokens: int              # loaded from the CPU tier at admission


@dataclass(frozen=True)
class OffloadRun:
    cpu_blocks: int
    steps: tuple[StepRow, ...]
    ttft_s: dict[str, float]
    arrival_s: dict[str, float]
    preemptions: int
    load_bytes: int
    load_s: float                    # link time of all loads
    store_bytes: int
    store_s: float
    stall_s: float                   # steps waiting for flushes
    prompt_tokens: int = field(default=0)
    loads: int = 0                   # load jobs (admissions that loaded from the CPU tier)

    @property
    def computed_prompt_tokens(self) -> int:
        return sum(r.computed_prompt_tokens for r in self.steps)

    @property
    def gpu_hit_tokens(self) -> int:
        return sum(r.gpu_hit_tokens for r in self.steps)

    @property
    def cpu_hit_tokens(self) -> int:
        return sum(r.cpu_hit_tokens for r in self.steps)

    @property
    def hit_rate(self) -> float:
        """Prompt tokens found (GPU or CPU) / prompt tokens needed, every admission
        (re-admissions after preemption included)."""
        found = self.gpu_hit_tokens + self.cpu_hit_tokens
        total = found + self.computed_prompt_tokens
        return found / total if total else 0.0

    @property
    def mean_ttft_s(self) -> float:
        return sum(self.ttft_s.values()) / len(self.ttft_s)

    @property
    def makespan_s(self) -> float:
        return self.steps[-1].end_s if self.steps else 0.0


def first_turn_times(workload: ChatWorkload, rate_per_s: float) -> list[float]:
    """Poisson arrivals in seconds (exponential gaps; the formula of
    sim/studies/workload.py's, from the workload's seeded stream)."""
    rng = random.Random(workload.seed + 1)
    t, out = 0.0, []
    for _ in range(workload.conversations):
        t += -math.log(1.0 - rng.random()) / rate_per_s
        out.append(t)
    return out


def _step_seqs(scheduler_output) -> list[tuple[int, int]]:
    """(tokens already computed, tokens computed now) of every scheduled request."""
    n = scheduler_output.num_scheduled_tokens
    seqs = [(r.num_computed_tokens, n[r.req_id])
            for r in scheduler_output.scheduled_new_reqs]
    cached = scheduler_output.scheduled_cached_reqs
    seqs += [(c, n[rid]) for rid, c in zip(cached.req_ids, cached.num_computed_tokens)]
    return seqs


def run_offloading(cpu_blocks: int, setup: OffloadSetup = OffloadSetup(),
                   workload: ChatWorkload = OFFLOAD_CHAT, max_steps: int = 50_000,
                   check=None) -> OffloadRun:
    """The chat on a GPU pool of `setup.pool_blocks` blocks with a CPU tier of `cpu_blocks`
    blocks (0: GPU prefix caching alone). `check(engine)` (an invariant checker) runs after
    every step; what it finds raises."""
    model = get_model(setup.model_id)
    roofline = Roofline.from_gpu(get_gpu(setup.gpu_id))
    link = get_host_link(setup.link_id)
    holder: dict = {}

    def step_time(scheduler_output) -> float:
        engine = holder["engine"]
        parts = holder.get("parts")
        stall = 0.0
        if parts is not None:
            worker = parts[3]
            stall = worker.stall_s - holder["stall"]
            holder["stall"] = worker.stall_s
        seqs = _step_seqs(scheduler_output)
        if seqs:
            return stall + price_step(model, roofline, seqs, setup.dtype).predicted_s
        # Nothing to compute: wait for the next transfer to land (if any).
        if parts is not None:
            end = parts[3].next_end_s()
            if end is not None:
                return stall + max(0.0, end - engine.now_s)
        return stall

    kwargs = {}
    if cpu_blocks:
        kwargs = dict(
            kv_transfer_config=KVTransferConfig(
                kv_connector="OffloadingConnector", kv_role="kv_both",
                kv_connector_extra_config={"num_cpu_blocks": cpu_blocks,
                                           "offload_prompt_only": setup.offload_prompt_only}),
            kv_connector_kwargs={"link": link, "kv_bytes_per_block": cache_block_size(
                model, workload.block_size, setup.dtype)})
    engine = LLMEngine(CacheConfig(block_size=workload.block_size,
                                   num_gpu_blocks=setup.pool_blocks + 1),
                       # The synchronous loop: each step's time is its forward pass, and
                       # its tokens are out when it ends (see the module docstring).
                       SchedulerConfig(max_model_len=setup.max_model_len,
                                       async_scheduling=False),
                       step_time=step_time, **kwargs)
    holder["engine"] = engine
    if cpu_blocks:
        holder["parts"] = offloading_parts(engine)
        holder["stall"] = 0.0
    system = engine.model.shared_prefix_token_ids(workload.system_prompt)
    lengths = workload.turn_lengths()
    words = random.Random(workload.seed + 2)
    # (time, order, conversation, turn, history) of requests not added yet
    arrivals: list[tuple[float, int, int, int, list[int]]] = [
        (t, c, c, 0, list(system)) for c, t in enumerate(first_turn_times(
            workload, setup.rate_per_s))]
    order = workload.conversations
    conversation_of: dict[str, tuple[int, int]] = {}
    arrival_s: dict[str, float] = {}
    ttft_s: dict[str, float] = {}
    rows: list[StepRow] = []
    preemptions = loads = 0
    while arrivals or engine.has_requests():
        if len(rows) >= max_steps:
            raise RuntimeError(f"the chat did not finish in {max_steps} steps")
        if not engine.has_requests():
            engine.now_s = max(engine.now_s, min(a[0] for a in arrivals))
        arrivals.sort(key=lambda a: (a[0], a[1]))
        while arrivals and arrivals[0][0] <= engine.now_s:
            t, _, conv, turn, history = arrivals.pop(0)
            user, answer = lengths[conv][turn]
            message = [4 + words.randrange(30_000) for _ in range(user)]
            rid = f"c{conv}t{turn}"
            engine.add_request(rid, history + message,
                               SamplingParams(max_tokens=answer, ignore_eos=True),
                               arrival_step=engine.step_index)
            conversation_of[rid] = (conv, turn)
            arrival_s[rid] = t
        start = engine.now_s
        out = engine.step()
        computed = gpu_hits = cpu_hits = 0
        for e in out.events:
            if isinstance(e, ChunkScheduled):
                computed += e.num_tokens
            elif isinstance(e, PrefixCacheHit):
                gpu_hits += e.num_tokens
            elif isinstance(e, OffloadLoadJob):
                cpu_hits += e.num_tokens
                loads += 1
            elif isinstance(e, Preempted):
                preemptions += 1
        rows.append(StepRow(out.step, start, engine.now_s, computed, gpu_hits, cpu_hits))
        for rid, *_ in out.tokens:
            ttft_s.setdefault(rid, engine.now_s - arrival_s[rid])
        if check is not None:
            problems = check(engine)
            if problems:
                raise AssertionError(f"step {out.step}: {problems}")
        for rid in out.finished:
            conv, turn = conversation_of[rid]
            if turn + 1 < workload.turns:
                arrivals.append((engine.now_s + setup.think_s, order, conv, turn + 1,
                                 list(engine.requests[rid].all_token_ids)))
                order += 1
    values = {}
    stall = 0.0
    if cpu_blocks:
        stats = engine.scheduler.connector.get_kv_connector_stats()
        values = stats.reduce() if stats is not None else {}
        stall = holder["parts"][3].stall_s
    return OffloadRun(
        cpu_blocks=cpu_blocks, steps=tuple(rows), ttft_s=ttft_s, arrival_s=arrival_s,
        preemptions=preemptions,
        load_bytes=int(values.get(M.LOAD_BYTES, 0)), load_s=values.get(M.LOAD_TIME, 0.0),
        store_bytes=int(values.get(M.STORE_BYTES, 0)), store_s=values.get(M.STORE_TIME, 0.0),
        stall_s=stall,
        prompt_tokens=sum(r.num_prompt_tokens for r in engine.requests.values()),
        loads=loads)


def sweep(setup: OffloadSetup = OffloadSetup(), factors=CPU_FACTORS,
          workload: ChatWorkload = OFFLOAD_CHAT) -> list[OffloadRun]:
    """One run per CPU tier size, `factor` x the GPU pool (0: none)."""
    return [run_offloading(f * setup.pool_blocks, setup, workload) for f in factors]


def windowed(rows, value, window_s: float) -> list[tuple[float, float]]:
    """(window end in seconds, sum of `value(row)` over the steps that ended in the window)
    for consecutive windows of `window_s`: a per-time series that two runs with different
    step counts can share."""
    if not rows:
        return []
    out = []
    end = window_s
    total = 0.0
    for r in rows:
        while r.end_s > end:
            out.append((end, total))
            total = 0.0
            end += window_s
        total += value(r)
    out.append((end, total))
    return out
