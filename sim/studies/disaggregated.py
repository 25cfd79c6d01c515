"""Disaggregated prefill and decode: a proxy, a prefill engine and a decode engine (both
vLLM V1 at v0.25.1, sim/v1, with NIXL's connector, sim/v1/kv_connector/nixl.py), the KV
that travels between them over a link (sim/studies/kv_transport.py), on one clock.

The proxy does what vLLM's toy proxy does (`tests/v1/kv_connector/nixl_integration/
toy_proxy_server.py`): a request goes first to the prefill instance with
`kv_transfer_params={"do_remote_decode": True}` and `max_tokens=1`; the
`kv_transfer_params` of its answer (where its blocks are) go with the original request to
the decode instance, which reads the blocks, recomputes the last prompt token and generates
every output token (the prefill's one token is dropped). A client that gives up
(`abort_s`) is aborted wherever its request is; between the prefill's answer and the
decode's request (`proxy_delay_s`) the proxy simply drops it, and the prefill side keeps the
blocks until their lease runs out.

Time. Each engine step is priced with the roofline cost model (`sim.perf.cost`, as in
sim/studies/latency.py): a step over requests that each compute `query` new tokens after
`context` computed ones takes max(FLOPs / peak, bytes / bandwidth); an empty step takes no
time. The two engines run side by side: a step begins (schedule, the connector's loads
posted, the forward pass) and ends (the connector's report, update_from_output) at times
of its own, and the two halves of both engines' steps are carried out in time order, so a
notification or a request that reaches an engine during its step is seen at the step's end
or at the next step. An engine with nothing to do waits (vLLM's EngineCore spins empty
steps; here it steps again when something reaches it: a request, the end of a read, a
notification, a lease running out, a heartbeat due). Each step that does something is one
row of the joint trace: a `sim.trace.Trace` whose step snapshots hold both engines, the
link and the clock.

Ties: at one instant, step ends come before step beginnings, and the prefill engine before
the decode engine; the proxy's messages come first.
"""
from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

from sim.core.sequence import SamplingParams
from sim.perf.cost import Roofline
from sim.perf.links import get_link
from sim.perf.models import ModelConfig, cache_block_size
from sim.stand_in_model import StandInModel
from sim.studies.kv_transport import KVTransport
from sim.studies.latency import RequestLatency, price_step
from sim.trace import Step, Trace
from sim.v1.config import CacheConfig, KVTransferConfig, SchedulerConfig
from sim.v1.engine import LLMEngine
from sim.v1.kv_connector import KVConnectorRole
from sim.v1.kv_connector.nixl import NixlConnector

PREFILL, DECODE = "prefill", "decode"
KV_LOAD_FAILURE_POLICIES = ("fail", "recompute")


@dataclass(frozen=True, slots=True)
class PDRequest:
    """One client request: prompt and output lengths, arrival in seconds; optionally the
    time its client gives up, and whether its KV read fails."""
    request_id: str
    prompt_len: int
    output_len: int
    arrival_s: float = 0.0
    abort_s: float | None = None
    fail_transfer: bool = False
    shared_prefix: int = 0       # leading prompt tokens every request asking shares

    def __post_init__(self) -> None:
        if self.prompt_len < 1 or self.output_len < 1:
            raise ValueError(f"{self.request_id}: prompt and output need at least 1 token")
        if not 0 <= self.shared_prefix <= self.prompt_len:
            raise ValueError(f"{self.request_id}: shared_prefix must be 0 to prompt_len")
        if not self.arrival_s >= 0.0:
            raise ValueError(f"{self.request_id}: arrival_s must not be negative")
        if self.abort_s is not None and not self.abort_s >= self.arrival_s:
            raise ValueError(f"{self.request_id}: abort_s must not be before arrival_s")


@dataclass(frozen=True, slots=True)
class PDSetup:
    """The two instances (the same model on one GPU each) and the link between them."""
    block_size: int = 16
    prefill_blocks: int = 4096          # usable blocks on the prefill GPU
    decode_blocks: int = 4096           # usable blocks on the decode GPU
    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 256
    max_model_len: int = 8192
    link: str = "ib-ndr"
    kv_load_failure_policy: str = "fail"   # vLLM v0.25.1's default
    kv_lease_duration: int = 30            # seconds, NIXL's default
    proxy_delay_s: float = 0.0
    enable_prefix_caching: bool = True

    def __post_init__(self) -> None:
        get_link(self.link)
        if self.kv_load_failure_policy not in KV_LOAD_FAILURE_POLICIES:
            raise ValueError("kv_load_failure_policy must be 'fail' or 'recompute'")
        if self.prefill_blocks < 1 or self.decode_blocks < 1:
            raise ValueError("each instance needs at least one usable block")
        if not self.proxy_delay_s >= 0:
            raise ValueError("proxy_delay_s must not be negative")


@dataclass(slots=True)
class RequestRecord:
    """What happened to one request, with times in seconds."""
    request_id: str
    arrival_s: float
    prefill_done_s: float | None = None       # the prefill instance answered
    decode_sent_s: float | None = None        # the proxy sent it to the decode instance
    transfer_start_s: float | None = None
    transfer_end_s: float | None = None
    token_times_s: list[float] = field(default_factory=list)
    outcome: str = "pending"                  # "done", "aborted", "error", "dropped"

    def latency(self) -> RequestLatency:
        return RequestLatency(self.request_id, self.arrival_s, tuple(self.token_times_s))


class _Side:
    """One instance: its engine and where it stands in time."""

    def __init__(self, name: str, engine: LLMEngine) -> None:
        self.name = name
        self.engine = engine
        self.free_s = 0.0          # when its next step may begin
        self.last_end_s = -1.0     # when its last step ended
        self.idle = False          # its last step did nothing: wait for something to reach it
        self.inflight = None       # a begun step
        self.inflight_start_s = 0.0
        self.end_s = 0.0
        self.changed = False       # something reached it since its last step
        self.aborts: list[str] = []
        self.signature: tuple = ()


def _signature(engine: LLMEngine) -> tuple:
    """What an empty step could change: who is in which queue (and in which status), and
    the free blocks."""
    sched = engine.scheduler
    return (tuple(r.request_id for r in sched.running),
            tuple(r.request_id for r in sched.waiting),
            tuple((r.request_id, r.status) for r in sched.skipped_waiting),
            len(sched.requests), engine.block_pool.get_num_free_blocks())


def _step_seqs(scheduler_output) -> list[tuple[int, int]]:
    """(context, query) of every scheduled request: its computed tokens before the step,
    and the tokens it computes now."""
    context = {nr.req_id: nr.num_computed_tokens for nr in scheduler_output.scheduled_new_reqs}
    cached = scheduler_output.scheduled_cached_reqs
    context.update(zip(cached.req_ids, cached.num_computed_tokens))
    return [(context[rid], n) for rid, n in scheduler_output.num_scheduled_tokens.items()]


class DisaggregatedServing:
    """Run `requests` through a proxy, a prefill and a decode instance (see the module
    docstring). `record` keeps a snapshot of both engines per row (for pictures; off for
    long timed runs)."""

    def __init__(self, requests: Iterable[PDRequest], setup: PDSetup, model: ModelConfig,
                 roofline: Roofline, dtype: str = "bf16", seed: int = 0, record: bool = True,
                 with_slots: bool = True) -> None:
        self.requests = list(requests)
        ids = [r.request_id for r in self.requests]
        if len(set(ids)) != len(ids):
            raise ValueError("request ids must be distinct")
        for r in self.requests:
            if r.prompt_len + r.output_len > setup.max_model_len:
                raise ValueError(f"{r.request_id}: {r.prompt_len + r.output_len} tokens is "
                                 f"longer than max_model_len ({setup.max_model_len})")
        self.setup = setup
        self.model = model
        self.roofline = roofline
        self.dtype = dtype
        self.record = record
        self.with_slots = with_slots
        self.now_s = 0.0
        self.link = get_link(setup.link)
        self.block_bytes = cache_block_size(model, setup.block_size, dtype)
        failing = {r.request_id for r in self.requests if r.fail_transfer}
        self.transport = KVTransport(self.link, self.block_bytes, setup.block_size,
                                     self.clock, fail=failing.__contains__)
        self.sides = {PREFILL: _Side(PREFILL, self._engine(PREFILL, "kv_producer", seed)),
                      DECODE: _Side(DECODE, self._engine(DECODE, "kv_consumer", seed))}
        stand_in = StandInModel(seed=seed)
        self.prompts = {r.request_id: (stand_in.shared_prefix_token_ids(r.shared_prefix)
                                       + stand_in.prompt_token_ids(
                                           i, r.prompt_len - r.shared_prefix))
                        for i, r in enumerate(self.requests)}
        self.by_id = {r.request_id: r for r in self.requests}
        self.records = {r.request_id: RequestRecord(r.request_id, r.arrival_s)
                        for r in self.requests}
        # The proxy's messages: (time, order, kind, request id, payload).
        self._queue: list[tuple[float, int, str, str, object]] = []
        self._order = 0
        for r in self.requests:
            self._post(r.arrival_s, "arrive", r.request_id)
            if r.abort_s is not None:
                self._post(r.abort_s, "abort", r.request_id)
        self._where: dict[str, str] = {}        # request id -> PREFILL / "proxy" / DECODE
        self._transfers_seen = 0

    def clock(self) -> float:
        return self.now_s

    def _engine(self, name: str, role: str, seed: int) -> LLMEngine:
        s = self.setup
        kv_config = KVTransferConfig(
            kv_connector="NixlConnector", engine_id=name, kv_role=role,
            kv_connector_extra_config={"kv_lease_duration": s.kv_lease_duration},
            kv_load_failure_policy=s.kv_load_failure_policy)
        blocks = s.prefill_blocks if name == PREFILL else s.decode_blocks
        cache_config = CacheConfig(block_size=s.block_size, num_gpu_blocks=blocks + 1,
                                   enable_prefix_caching=s.enable_prefix_caching)
        # The synchronous loop: a step's two halves are priced on the clock (the async
        # loop's overlap of scheduling and the GPU is not modelled here).
        scheduler_config = SchedulerConfig(max_num_batched_tokens=s.max_num_batched_tokens,
                                           max_num_seqs=s.max_num_seqs,
                                           max_model_len=s.max_model_len,
                                           async_scheduling=False)
        engine = LLMEngine(
            cache_config, scheduler_config, seed=seed, model=StandInModel(seed=seed),
            record_events=self.record, kv_transfer_config=kv_config,
            kv_connector=NixlConnector(kv_config, KVConnectorRole.SCHEDULER, cache_config,
                                       clock=self.clock),
            kv_connector_worker=NixlConnector(kv_config, KVConnectorRole.WORKER,
                                              cache_config, clock=self.clock,
                                              transport=self.transport))
        self.transport.register(name, engine)
        return engine

    @property
    def prefill(self) -> LLMEngine:
        return self.sides[PREFILL].engine

    @property
    def decode(self) -> LLMEngine:
        return self.sides[DECODE].engine

    # -- the proxy --------------------------------------------------------------------------
    def _post(self, time_s: float, kind: str, request_id: str, payload=None) -> None:
        heapq.heappush(self._queue, (time_s, self._order, kind, request_id, payload))
        self._order += 1

    def _deliver(self, kind: str, request_id: str, payload) -> None:
        r = self.by_id[request_id]
        record = self.records[request_id]
        if kind == "arrive":
            side = self.sides[PREFILL]
            side.engine.add_request(
                request_id, self.prompts[request_id],
                SamplingParams(max_tokens=1, ignore_eos=True),
                arrival_step=side.engine.step_index,
                kv_transfer_params={"do_remote_decode": True, "do_remote_prefill": False,
                                    "remote_engine_id": None, "remote_block_ids": None,
                                    "remote_host": None, "remote_port": None})
            side.changed = True
            self._where[request_id] = PREFILL
        elif kind == "to_decode":
            if self._where.get(request_id) != "proxy":
                return   # the client gave up in between: dropped
            side = self.sides[DECODE]
            side.engine.add_request(
                request_id, self.prompts[request_id],
                SamplingParams(max_tokens=r.output_len, ignore_eos=True),
                arrival_step=side.engine.step_index, kv_transfer_params=payload)
            side.changed = True
            self._where[request_id] = DECODE
            record.decode_sent_s = self.now_s
        elif kind == "abort":
            where = self._where.get(request_id)
            if record.outcome != "pending":
                return   # it ended already: nothing to abort
            if where in (PREFILL, DECODE):
                side = self.sides[where]
                side.aborts.append(request_id)
                side.changed = True
            elif where == "proxy":
                self._where[request_id] = "dropped"
                record.outcome = "dropped"

    # -- the loop ---------------------------------------------------------------------------
    def _begin_time(self, side: _Side) -> float | None:
        """When this side's next step begins, or None if it waits for nothing."""
        engine = side.engine
        # Never before now: what reached a waiting side reached it now.
        ready_s = max(side.free_s, self.now_s)
        if side.changed or (not side.idle and engine.has_requests()):
            return ready_s
        if not engine.has_requests():
            return None
        # (Strictly after its last step: what was due by then was handled in it.)
        wake = [t for t in (
            self.transport.next_event_s(side.name, side.free_s),
            engine.kv_connector_worker.connector_worker.next_expiry(),
            engine.scheduler.connector.connector_scheduler.next_heartbeat_s())
            if t is not None and t > side.free_s]
        return max(ready_s, min(wake)) if wake else None

    def run(self, max_rows: int = 100_000, check=None) -> Trace:
        """Run to the end. `check(serving)` (e.g. `check_pd`) runs after every step of
        either engine; what it finds is kept in the rows' `problems` and in
        `self.problems`."""
        self.problems: list[str] = []
        self._check = check
        rows = [self._row(None, None, None)] if self.record else []
        stopped = None
        num_rows = 0
        quiet_steps = 0   # steps in a row that changed nothing (a guard against spinning)
        while True:
            candidates = []
            if self._queue:
                candidates.append((self._queue[0][0], 0, 0, "proxy"))
            for k, name in enumerate((PREFILL, DECODE)):
                side = self.sides[name]
                if side.inflight is not None:
                    candidates.append((side.end_s, 1, k, name))
                else:
                    t = self._begin_time(side)
                    if t is not None:
                        candidates.append((t, 2, k, name))
            if not candidates:
                if self.prefill.has_requests() or self.decode.has_requests():
                    stopped = "stuck"   # nothing will ever reach the waiting requests
                break
            if num_rows >= max_rows:
                stopped = "max_rows"
                break
            if quiet_steps > 1000:
                stopped = "spinning"
                break
            t, what, _, name = min(candidates)
            self.now_s = t
            if name == "proxy":
                _, _, kind, request_id, payload = heapq.heappop(self._queue)
                self._deliver(kind, request_id, payload)
                continue
            side = self.sides[name]
            if what == 2:
                self._begin(side)
                continue
            out = self._end(side)
            problems = ()
            if check is not None:
                problems = tuple(check(self))
                self.problems.extend(f"{self.now_s:.6f} s, {name}: {p}" for p in problems)
            quiet_steps = 0 if out is not None else quiet_steps + 1
            if out is not None:
                num_rows += 1
                if self.record:
                    rows.append(self._row(side, out, len(rows), problems))
        return Trace(tuple(rows), stopped, self._meta())

    def _begin(self, side: _Side) -> None:
        engine = side.engine
        aborted = False
        for request_id in side.aborts:
            if engine.abort_request(request_id):
                self.records[request_id].outcome = "aborted"
                self._where[request_id] = "aborted"
                aborted = True
        side.changed = aborted
        side.aborts = []
        num_pending = len(engine.pending)
        side.signature = _signature(engine)
        side.inflight = engine.begin_step()
        side.changed = side.changed or len(engine.pending) != num_pending
        side.inflight_start_s = self.now_s
        seqs = _step_seqs(side.inflight.scheduler_output)
        time_s = (price_step(self.model, self.roofline, seqs, self.dtype).predicted_s
                  if seqs else 0.0)
        side.end_s = self.now_s + time_s
        if side.name == DECODE:
            meta = side.inflight.scheduler_output.kv_connector_metadata
            for request_id in getattr(meta, "reqs_to_recv", {}):
                record = self.records.get(request_id)
                transfers = [x for x in self.transport.transfers
                             if x.request_id == request_id]
                if record is not None and transfers:
                    record.transfer_start_s = transfers[-1].start_s
                    record.transfer_end_s = transfers[-1].end_s

    def _end(self, side: _Side):
        """Finish the side's step; the StepOutput if it did something, else None."""
        engine = side.engine
        self.transport.land(self.now_s)
        so = side.inflight.scheduler_output
        out = engine.finish_step(side.inflight)
        side.inflight = None
        side.free_s = side.last_end_s = self.now_s
        kv_output = out.kv_connector_output
        # A step that ran nothing, heard nothing and started no read changed nothing a
        # picture shows (it may have passed finished ids or leases to the workers): no
        # row, and the side waits for something to reach it.
        did_something = (side.changed or so.total_num_scheduled_tokens > 0
                         or not (kv_output is None or kv_output.is_empty())
                         or out.finished
                         or getattr(so.kv_connector_metadata, "reqs_to_recv", None)
                         or _signature(engine) != side.signature)
        side.idle = not did_something
        side.changed = False
        for request_id in out.finished:
            record = self.records[request_id]
            req = engine.requests[request_id]
            if side.name == PREFILL:
                record.prefill_done_s = self.now_s
                params = out.kv_transfer_params.get(request_id)
                if params is not None and self._where.get(request_id) == PREFILL:
                    self._where[request_id] = "proxy"
                    self._post(self.now_s + self.setup.proxy_delay_s, "to_decode",
                               request_id, params)
                elif req.status.name != "FINISHED_ABORTED":
                    record.outcome = "error"
            else:
                if req.status.name == "FINISHED_ERROR":
                    record.outcome = "error"
                elif req.status.name != "FINISHED_ABORTED":
                    record.outcome = "done"
        if side.name == DECODE:
            # A request's landed count matters while its blocks wait for the load.
            for request_id in [rid for rid in engine.kv_landed
                               if rid not in engine.scheduler.requests
                               or engine.requests[rid].status.name == "RUNNING"]:
                del engine.kv_landed[request_id]
            for request_id, _, _, _ in out.tokens:
                self.records[request_id].token_times_s.append(self.now_s)
        return out if did_something else None

    # -- records ----------------------------------------------------------------------------
    def _row(self, side: _Side | None, out, index: int | None, problems=()) -> Step:
        snapshot = {
            "time_s": self.now_s,
            "start_s": side.inflight_start_s if side is not None else 0.0,
            "engine": side.name if side is not None else None,
            PREFILL: self.prefill.snapshot(self.with_slots),
            DECODE: self.decode.snapshot(self.with_slots),
            "link": self.transport.snapshot(self.now_s),
            "proxy": dict(self._where),
        }
        if side is None:
            return Step(0, None, snapshot)
        return Step(index, out.step, snapshot, tuple(out.events), out.scheduler_outputs,
                    out.scheduled(), tuple(out.finished), tuple(problems))

    def _meta(self) -> dict:
        return {"records": dict(self.records),
                "transport_problems": list(self.transport.problems),
                "setup": self.setup}


def run_disaggregated(requests: Iterable[PDRequest], setup: PDSetup, model: ModelConfig,
                      roofline: Roofline, dtype: str = "bf16", seed: int = 0,
                      record: bool = True, max_rows: int = 100_000) -> Trace:
    """The joint trace of a P/D run (see DisaggregatedServing)."""
    return DisaggregatedServing(requests, setup, model, roofline, dtype, seed,
                                record).run(max_rows)


def check_pd(serving: DisaggregatedServing) -> list[str]:
    """Invariants of a P/D run, after any step of either engine: each engine's own
    (sim/v1/invariants.py), no read of a block the prefill side no longer held, and no
    block held once a request and its transfer are done: a finished prefill request keeps
    its blocks only until its prefill engine's first step after the decode side's read
    completed (or after its lease ran out), a finished decode request only until its read
    ends."""
    from sim.v1.invariants import check_engine
    problems = [f"prefill: {p}" for p in check_engine(serving.prefill)]
    problems += [f"decode: {p}" for p in check_engine(serving.decode)]
    problems += serving.transport.problems
    p_side, d_side = serving.sides[PREFILL], serving.sides[DECODE]
    reads = {}
    for t in serving.transport.transfers:
        reads.setdefault(t.request_id, t)
    notified = {}
    for t in serving.transport.transfers:
        if not t.failed:
            notified[t.request_id] = t.end_s
    for t_s, dst, msg in serving.transport.notifs:
        if dst == PREFILL and not msg.startswith("HB:"):
            notified.setdefault(msg.rsplit(":", 1)[0], t_s)
    worker = serving.prefill.kv_connector_worker.connector_worker
    for rid, req in serving.prefill.scheduler.requests.items():
        if not req.is_finished():
            continue
        t_n = notified.get(rid)
        if t_n is not None and t_n <= p_side.last_end_s:
            problems.append(f"prefill: {rid} still holds blocks after its read completed")
        expiry = worker.lease_expiry(rid)
        if expiry is not None and expiry <= p_side.last_end_s:
            problems.append(f"prefill: {rid} still holds blocks after its lease ran out")
    for rid, req in serving.decode.scheduler.requests.items():
        if req.is_finished():
            t = reads.get(rid)
            if t is None or t.end_s <= d_side.last_end_s:
                problems.append(f"decode: finished {rid} still holds blocks though its "
                                "read is done")
    return problems
