"""Helpers for the KV connector tests, re-expressing vLLM v0.25.1's
`tests/v1/kv_connector/unit/utils.py` on the simulation: a scheduler with NIXL's connector
(a consumer by default), requests with P/D `kv_transfer_params`, a fake model runner
output carrying a `KVConnectorOutput`, and the no-leak check."""
from __future__ import annotations

from dataclasses import dataclass
from itertools import count
from typing import Any

from sim.v1.config import CacheConfig, KVTransferConfig, SchedulerConfig
from sim.v1.kv_cache_utils import get_request_block_hasher, sha256
from sim.v1.kv_connector import KVConnectorBase_V1, KVConnectorMetadata, KVConnectorRole
from sim.v1.request import Request
from sim.v1.scheduler import KVConnectorOutput, ModelRunnerOutput, Scheduler

EOS_TOKEN_ID = 50256
EMPTY_MODEL_RUNNER_OUTPUT = ModelRunnerOutput([], {}, [])


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 16
    n: int = 1
    min_tokens: int = 0
    ignore_eos: bool = False
    stop_token_ids: tuple = ()
    extra_args: dict | None = None


def empty_model_runner_output(**kv) -> ModelRunnerOutput:
    """EMPTY_MODEL_RUNNER_OUTPUT, with a KVConnectorOutput when given its fields."""
    return ModelRunnerOutput([], {}, [], KVConnectorOutput(**kv) if kv else None)


def assert_scheduler_empty(scheduler: Scheduler) -> None:
    """No leaks: no request, queue, block table or held block left."""
    assert len(scheduler.requests) == 0
    assert len(scheduler.waiting) == 0
    assert len(scheduler.skipped_waiting) == 0
    assert len(scheduler.running) == 0
    assert len(scheduler.finished_req_ids) == 0
    assert len(scheduler.finished_recving_kv_req_ids) == 0
    assert len(scheduler._inflight_prefills) == 0
    kv = scheduler.kv_cache_manager
    assert len(kv.req_to_blocks) == 0
    assert len(kv.num_cached_block) == 0
    pool = kv.block_pool
    assert pool.free_block_queue.num_free_blocks == pool.num_gpu_blocks - 1
    # Only the ref counts are 0: hashes stay (eviction is lazy).
    for block in pool.blocks:
        assert block.ref_cnt == 0


def create_scheduler(num_blocks: int = 10000, block_size: int = 16,
                     max_num_batched_tokens: int = 64, max_num_seqs: int = 16,
                     max_model_len: int = 10000, enable_chunked_prefill: bool = True,
                     kv_load_failure_policy: str = "fail", kv_role: str = "kv_consumer",
                     kv_connector: str | None = "NixlConnector",
                     connector: KVConnectorBase_V1 | None = None,
                     kv_connector_extra_config: dict | None = None,
                     events: list | None = None) -> Scheduler:
    """vLLM's create_vllm_config + create_scheduler: prefix caching on, NIXL connector."""
    kv_transfer_config = KVTransferConfig(
        kv_connector=kv_connector, engine_id="my-engine-id", kv_role=kv_role,
        kv_connector_extra_config=kv_connector_extra_config or {},
        kv_load_failure_policy=kv_load_failure_policy)
    return Scheduler(
        SchedulerConfig(max_num_batched_tokens=max_num_batched_tokens,
                        max_num_seqs=max_num_seqs, max_model_len=max_model_len,
                        enable_chunked_prefill=enable_chunked_prefill),
        CacheConfig(block_size=block_size, num_gpu_blocks=num_blocks,
                    enable_prefix_caching=True),
        events=events, kv_transfer_config=kv_transfer_config, connector=connector)


_request_count = count(1)


def create_request(request_id: int | None = None, num_tokens: int = 10,
                   common_prefix_len: int = 0, max_tokens: int = 16,
                   do_remote_decode: bool = False, do_remote_prefill: bool = False,
                   num_remote_blocks: int = 3, block_size: int = 16) -> Request:
    """A request "id-<n>" of `num_tokens` prompt tokens: `common_prefix_len` ones, then
    i * n; with P/D params as the proxy would send them."""
    assert num_tokens >= common_prefix_len >= 0
    if request_id is None:
        request_id = next(_request_count)
    kv_transfer_params: dict[str, Any] | None = None
    if do_remote_decode:
        assert not do_remote_prefill
        kv_transfer_params = dict(do_remote_prefill=False, do_remote_decode=True)
    elif do_remote_prefill:
        kv_transfer_params = dict(
            do_remote_prefill=True, do_remote_decode=False,
            remote_engine_id="my-engine-id", remote_request_id=f"prefill-{request_id}",
            remote_block_ids=list(range(num_remote_blocks)), remote_host="my-host",
            remote_port=1234, tp_size=1)
    max_tokens = 1 if do_remote_decode else max_tokens
    prompt = [1] * common_prefix_len + [i * request_id
                                        for i in range(num_tokens - common_prefix_len)]
    req = Request(f"id-{request_id}", prompt, SamplingParams(max_tokens=max_tokens),
                  EOS_TOKEN_ID, block_hasher=get_request_block_hasher(block_size, sha256),
                  block_size=block_size)
    req.kv_transfer_params = kv_transfer_params
    return req


def create_model_runner_output(reqs: list[Request], finished_sending: set[str] | None = None,
                               finished_recving: set[str] | None = None,
                               invalid_block_ids: set[int] | None = None,
                               use_eos: bool = False, token_id: int = 0) -> ModelRunnerOutput:
    """One sampled token (EOS with use_eos) for each of `reqs`, and the connector's
    report when any of its fields is given."""
    req_ids = [req.request_id for req in reqs]
    sampled = EOS_TOKEN_ID if use_eos else token_id
    kv_connector_output = (
        None if finished_sending is None and finished_recving is None
        and invalid_block_ids is None
        else KVConnectorOutput(finished_sending=finished_sending,
                               finished_recving=finished_recving,
                               invalid_block_ids=invalid_block_ids or set()))
    return ModelRunnerOutput(req_ids, {rid: i for i, rid in enumerate(req_ids)},
                             [[sampled] for _ in req_ids], kv_connector_output)


class ScriptedMetadata(KVConnectorMetadata):
    def __init__(self) -> None:
        self.requests: list = []


class ScriptedConnector(KVConnectorBase_V1):
    """vLLM's tests replace the connector with a Mock whose get_num_new_matched_tokens
    returns a chosen (count, async) per request; this is that, with a record of calls."""

    def __init__(self, matched: dict[str, int] | None = None, load_async: bool = False,
                 side_effect: list | None = None,
                 request_finished_value: tuple = (False, None)) -> None:
        super().__init__(KVTransferConfig(kv_connector="Scripted", kv_role="kv_both"),
                         KVConnectorRole.SCHEDULER)
        self.matched = matched or {}
        self.load_async = load_async
        self.side_effect = list(side_effect) if side_effect is not None else None
        self.request_finished_value = request_finished_value
        self.calls: dict[str, int] = {}

    def _called(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def get_num_new_matched_tokens(self, request, num_computed_tokens):
        self._called("get_num_new_matched_tokens")
        if self.side_effect is not None:
            return self.side_effect.pop(0)
        return self.matched.get(request.request_id, 0), self.load_async

    def update_state_after_alloc(self, request, blocks, num_external_tokens):
        self._called("update_state_after_alloc")

    def build_connector_meta(self, scheduler_output):
        self._called("build_connector_meta")
        meta = ScriptedMetadata()
        cached = scheduler_output.scheduled_cached_reqs
        for rid in [r.req_id for r in scheduler_output.scheduled_new_reqs] + [
                rid for rid in cached.req_ids if rid in cached.resumed_req_ids]:
            meta.requests.append({"req_id": rid})
        return meta

    def request_finished(self, request, block_ids):
        self._called("request_finished")
        return self.request_finished_value


def create_async_scheduler(num_blocks: int = 10000, block_size: int = 16,
                           max_num_batched_tokens: int = 8192, max_num_seqs: int = 16,
                           long_prefill_token_threshold: int = 0,
                           async_scheduling: bool = True,
                           connector: KVConnectorBase_V1 | None = None,
                           kv_role: str = "kv_consumer") -> Scheduler:
    """vLLM's tests/v1/core/utils.py create_scheduler(async_scheduling=...): the
    AsyncScheduler (or the synchronous one), with a consumer connector that loads nothing
    (vLLM's tests force `defer_block_free` on without one; here the gate is what turns it
    on, and the connector is needed for it)."""
    from sim.v1.async_scheduler import AsyncScheduler
    cls = AsyncScheduler if async_scheduling else Scheduler
    return cls(
        SchedulerConfig(max_num_batched_tokens=max_num_batched_tokens,
                        max_num_seqs=max_num_seqs, max_model_len=10000,
                        long_prefill_token_threshold=long_prefill_token_threshold,
                        async_scheduling=async_scheduling),
        CacheConfig(block_size=block_size, num_gpu_blocks=num_blocks,
                    enable_prefix_caching=True),
        kv_transfer_config=KVTransferConfig(kv_connector="Scripted", engine_id="e",
                                            kv_role=kv_role),
        connector=connector if connector is not None else ScriptedConnector())


def create_requests(num_requests: int, num_tokens: int = 10, max_tokens: int = 16,
                    stop_token_ids: tuple = (), req_ids: list[str] | None = None,
                    block_size: int = 16) -> list[Request]:
    """vLLM's tests/v1/core/utils.py create_requests: distinct prompts."""
    out = []
    for i in range(num_requests):
        rid = req_ids[i] if req_ids else str(i)
        n = next(_request_count)
        out.append(Request(rid, [n * 1000 + t for t in range(num_tokens)],
                           SamplingParams(max_tokens=max_tokens,
                                          stop_token_ids=tuple(stop_token_ids)),
                           EOS_TOKEN_ID,
                           block_hasher=get_request_block_hasher(block_size, sha256),
                           block_size=block_size))
    return out


def output_for(scheduler_output, token_id: int = 0) -> ModelRunnerOutput:
    """vLLM's _make_model_runner_output: one token for every scheduled request."""
    req_ids = list(scheduler_output.num_scheduled_tokens)
    return ModelRunnerOutput(req_ids, {rid: i for i, rid in enumerate(req_ids)},
                             [[token_id] for _ in req_ids])
