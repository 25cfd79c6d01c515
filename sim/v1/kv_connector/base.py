"""The KV connector interface (vLLM v0.25.1
`vllm/distributed/kv_transfer/kv_connector/v1/base.py`: `KVConnectorBase_V1`,
`KVConnectorRole`, `KVConnectorMetadata`, `SupportsHMA`).

A connector moves KV cache between this engine and something outside it: another engine
(P/D disaggregation, `nixl.py`), CPU memory, a store. It has two halves, one per role:

- the SCHEDULER side decides. `get_num_new_matched_tokens` says how many tokens beyond the
  local prefix-cache hit it can load, and whether asynchronously (the request then waits in
  `WAITING_FOR_REMOTE_KVS`, its blocks allocated, until the load finishes);
  `update_state_after_alloc` learns which blocks were allocated for them;
  `build_connector_meta` hands the step's work to the worker side as metadata;
  `request_finished` says whether the blocks of a finished request must be kept (it is still
  sending them) and what `kv_transfer_params` go back to the client;
  `update_connector_output` reads the worker side's report.
- the WORKER side carries out the metadata next to the model (`start_load_kv`,
  `wait_for_save`) and reports, after each forward pass, which asynchronous sends and
  receives finished (`get_finished`) and which loaded blocks failed
  (`get_block_ids_with_load_errors`): the scheduler gets them as a `KVConnectorOutput`
  (sim/v1/scheduler.py).

The simulation keeps vLLM's method names and call order. Its worker side moves no tensors:
it copies the payloads of the simulated cache (sim/v1/engine.py) through a transport the
caller provides. Left out: layer-by-layer loading and saving (`wait_for_layer_load`,
`save_kv_layer`: there are no layers), handshakes, KV events, stats and Prometheus
metrics, cross-layer blocks, host buffers.

Construction differs from vLLM's (which takes a `VllmConfig` and a `KVCacheConfig`): a
connector gets the `KVTransferConfig`, its role and the `CacheConfig`, and an optional
`clock` (a function returning seconds) where vLLM reads `time.perf_counter()`; the
simulation has no wall clock, so without one the time is always 0.
"""
from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any


class KVConnectorRole(enum.Enum):
    SCHEDULER = 0        # the connector in the scheduler process
    WORKER = 1           # the connector beside each model runner


class KVConnectorMetadata(ABC):  # noqa: B024 (vLLM's is abstract and empty too)
    """What the scheduler side hands the worker side for one step."""


class SupportsHMA(ABC):
    """A connector that takes the block ids of every KV cache group at once (the hybrid
    memory allocator): the scheduler then calls `request_finished_all_groups`."""

    @abstractmethod
    def request_finished_all_groups(self, request, block_ids: tuple[list[int], ...]
                                    ) -> tuple[bool, dict[str, Any] | None]:
        raise NotImplementedError


def supports_hma(connector: Any) -> bool:
    if isinstance(connector, type):
        return issubclass(connector, SupportsHMA)
    return isinstance(connector, SupportsHMA)


def _no_clock() -> float:
    return 0.0


class KVConnectorBase_V1(ABC):  # noqa: N801 (vLLM's name)
    def __init__(self, kv_transfer_config, role: KVConnectorRole, cache_config=None,
                 clock: Callable[[], float] | None = None) -> None:
        if kv_transfer_config is None:
            raise ValueError("kv_transfer_config must be set for KVConnectorBase_V1")
        self._kv_transfer_config = kv_transfer_config
        self._cache_config = cache_config
        self._role = role
        self._connector_metadata: KVConnectorMetadata | None = None
        # vLLM reads time.perf_counter(); the simulation's caller supplies its clock.
        self.clock = clock or _no_clock

    @property
    def role(self) -> KVConnectorRole:
        return self._role

    # -- worker side ----------------------------------------------------------------------
    def bind_connector_metadata(self, connector_metadata: KVConnectorMetadata) -> None:
        """Called by the model runner before every forward pass."""
        self._connector_metadata = connector_metadata

    def clear_connector_metadata(self) -> None:
        """Called by the model runner after every forward pass."""
        self._connector_metadata = None

    def _get_connector_metadata(self) -> KVConnectorMetadata:
        assert self._connector_metadata is not None
        return self._connector_metadata

    def has_connector_metadata(self) -> bool:
        return self._connector_metadata is not None

    def handle_preemptions(self, kv_connector_metadata: KVConnectorMetadata) -> None:
        """Preempted requests' blocks are about to be reused (async savers act here)."""
        return

    def start_load_kv(self, **kwargs: Any) -> None:
        """Start loading what the bound metadata asks for (may be asynchronous)."""
        return

    def wait_for_save(self) -> None:
        """Block until this step's saves are done (before the blocks can be overwritten)."""
        return

    def get_finished(self, finished_req_ids: set[str]
                     ) -> tuple[set[str] | None, set[str] | None]:
        """(requests done sending, requests done receiving) since the last call; the
        finished sends must be requests the scheduler let keep their blocks."""
        return None, None

    def get_block_ids_with_load_errors(self) -> set[int]:
        """Blocks whose load failed. For an asynchronous load they are reported no later
        than the step whose `get_finished` returns the request."""
        return set()

    def build_connector_worker_meta(self):
        return None

    def shutdown(self) -> None:
        return None

    # -- scheduler side ---------------------------------------------------------------------
    def bind_gpu_block_pool(self, gpu_block_pool) -> None:
        return

    @abstractmethod
    def get_num_new_matched_tokens(self, request, num_computed_tokens: int
                                   ) -> tuple[int | None, bool]:
        """(tokens loadable beyond the `num_computed_tokens` hit locally, or None when the
        connector needs more time to tell; whether they load asynchronously, between
        steps: must be False when the count is 0). Called every time the request is
        considered, so it must not change state."""

    @abstractmethod
    def update_state_after_alloc(self, request, blocks, num_external_tokens: int) -> None:
        """The blocks the request holds after allocation (`KVCacheBlocks`). Called again,
        with no external tokens, when a request that loaded asynchronously is scheduled."""

    @abstractmethod
    def build_connector_meta(self, scheduler_output) -> KVConnectorMetadata:
        """This step's work for the worker side; resets the connector's per-step state.
        Must not modify the scheduler output."""

    def on_new_request(self, request) -> None:
        return

    def update_connector_output(self, connector_output) -> None:
        return

    def request_finished(self, request, block_ids: list[int]
                         ) -> tuple[bool, dict[str, Any] | None]:
        """Called once when a request finishes, before its blocks are freed: (keep the
        blocks until the request is reported in `finished_sending`, the
        `kv_transfer_params` for the client)."""
        return False, None

    def take_events(self) -> Iterable:
        return ()

    def has_pending_push_work(self) -> bool:
        return False

    def get_kv_connector_stats(self):
        return None

    def reset_cache(self) -> bool | None:
        return None
