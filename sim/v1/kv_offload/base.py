"""The abstractions of KV offloading (vLLM v0.25.1 `vllm/v1/kv_offload/base.py`).

An offloaded block is named by an `OffloadKey`: the block hash of the GPU block that ends
it (an offloaded block may span several GPU blocks, `block_size_factor`), with its KV cache
group index appended as 4 big-endian bytes. The scheduler side asks an
`OffloadingManager` (which blocks are offloaded, where, which to evict); the worker side
moves the bytes (`OffloadingWorker`, `submit_store` / `submit_load`, reported done by
`get_finished`). A `LoadStoreSpec` says where blocks are on one medium: GPU block ids
(`GPULoadStoreSpec`) or the medium's own (`CPULoadStoreSpec`, cpu/common.py).

The manager's primitives, in vLLM's words:
- `lookup(key)`: HIT (offloaded and ready), HIT_PENDING (its store is still in flight),
  MISS, or RETRY (ask again later; only asynchronous tiers answer it);
- `prepare_load(keys)`: the blocks are pinned (not evictable) until `complete_load`;
- `touch(keys)`: mark recently used (also for blocks the GPU prefix cache already holds);
- `prepare_store(keys)`: which of them need storing, where, and which blocks were evicted
  to make room (None: they cannot be stored); they become loadable at `complete_store`.

Left out: the tensor layout classes (`CanonicalKVCaches` and friends: the simulation's
cache holds payloads, not tensors) and the Prometheus metric metadata.
"""
from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

OffloadKey = bytes


def make_offload_key(block_hash: bytes, group_idx: int) -> OffloadKey:
    """A block hash and its KV cache group index, packed into one key."""
    return block_hash + group_idx.to_bytes(4, "big", signed=False)


def get_offload_block_hash(key: OffloadKey) -> bytes:
    return key[:-4]


def get_offload_group_idx(key: OffloadKey) -> int:
    return int.from_bytes(key[-4:], "big", signed=False)


@dataclass
class ReqContext:
    req_id: str
    kv_transfer_params: dict[str, Any] | None = None


class LookupResult(enum.Enum):
    MISS = enum.auto()
    HIT = enum.auto()
    HIT_PENDING = enum.auto()
    RETRY = enum.auto()


class OffloadPolicy(enum.Enum):
    # Offload only newly computed blocks; prefix-hit blocks (offloaded by an earlier
    # request) are skipped.
    BLOCK_LEVEL = "block_level"
    # Offload all of the request's blocks, prefix hits included.
    REQUEST_LEVEL = "request_level"


@dataclass
class RequestOffloadingContext:
    policy: OffloadPolicy = OffloadPolicy.BLOCK_LEVEL


class ScheduleEndContext(NamedTuple):
    """What on_schedule_end() is told about the step just scheduled."""
    new_req_ids: Collection[str]
    preempted_req_ids: Collection[str]


class LoadStoreSpec(ABC):
    """Where blocks are on one medium: enough for a worker to load or store them."""

    @staticmethod
    @abstractmethod
    def medium() -> str:
        """The medium's name ("GPU", "CPU")."""


class BlockIDsLoadStoreSpec(LoadStoreSpec, ABC):
    """Blocks named by their block numbers on the medium (vLLM keeps a numpy int64 array;
    a list here)."""

    def __init__(self, block_ids: Iterable[int]) -> None:
        self.block_ids: list[int] = [int(b) for b in block_ids]

    def __repr__(self) -> str:
        return repr(self.block_ids)


class GPULoadStoreSpec(BlockIDsLoadStoreSpec):
    """GPU blocks, ordered by KV cache group: `group_sizes[i]` of them belong to group i,
    and `block_indices[i]` is the position in the request's block table of group i's first
    one (so a transfer of offloaded blocks larger than GPU blocks can skip the part of its
    first offloaded block that is not transferred)."""

    def __init__(self, block_ids: Iterable[int], group_sizes: Sequence[int],
                 block_indices: Sequence[int]) -> None:
        super().__init__(block_ids)
        assert sum(group_sizes) == len(self.block_ids)
        assert len(block_indices) == len(group_sizes)
        self.group_sizes: Sequence[int] = tuple(group_sizes)
        self.block_indices: Sequence[int] = tuple(block_indices)

    @staticmethod
    def medium() -> str:
        return "GPU"


@dataclass
class PrepareStoreOutput:
    keys_to_store: list[OffloadKey]
    store_spec: LoadStoreSpec
    evicted_keys: list[OffloadKey]


@dataclass
class OffloadingEvent:
    keys: list[OffloadKey]
    medium: str
    removed: bool        # True: the blocks were removed; False: stored


class OffloadingManager(ABC):
    """Runs in the scheduler: tracks which blocks are offloaded, where, and evicts."""

    @abstractmethod
    def lookup(self, key: OffloadKey, req_context: ReqContext) -> LookupResult:
        """Whether one block is offloaded and ready to read."""

    @abstractmethod
    def prepare_load(self, keys: Collection[OffloadKey],
                     req_context: ReqContext) -> LoadStoreSpec:
        """Pin the blocks (all offloaded) until complete_load; where they are."""

    def touch(self, keys: Collection[OffloadKey], req_context: ReqContext) -> None:
        """Mark the blocks recently used."""
        return

    def complete_load(self, keys: Collection[OffloadKey], req_context: ReqContext) -> None:
        """A load of the blocks finished: they may be evicted again."""
        return

    @abstractmethod
    def prepare_store(self, keys: Collection[OffloadKey],
                      req_context: ReqContext) -> PrepareStoreOutput | None:
        """Which of the blocks to store, where, and what was evicted for them; None when
        they cannot be stored. The blocks to store are protected until complete_store."""

    def complete_store(self, keys: Collection[OffloadKey], req_context: ReqContext,
                       success: bool = True) -> None:
        """A store finished: the blocks become loadable (or, failed, are dropped)."""
        return

    @abstractmethod
    def on_new_request(self, req_context: ReqContext) -> RequestOffloadingContext:
        """A request was added: how its blocks are offloaded."""

    def on_request_finished(self, req_context: ReqContext) -> None:
        """The scheduler will submit nothing more for this request (transfers already
        submitted may still complete afterwards)."""
        return

    def take_events(self) -> Iterable[OffloadingEvent]:
        return ()

    def on_schedule_end(self, context: ScheduleEndContext) -> None:
        return

    def has_pending_work(self) -> bool:
        return False

    def reset_cache(self) -> None:
        return

    def get_stats(self):
        return None

    def shutdown(self) -> None:
        return


@dataclass
class TransferResult:
    job_id: int
    success: bool
    transfer_size: int | None = None      # bytes
    transfer_time: float | None = None    # seconds


class OffloadingWorker(ABC):
    """Runs beside the model: asynchronous transfers between the GPU and ONE medium."""

    @abstractmethod
    def submit_store(self, job_id: int, src_spec: GPULoadStoreSpec,
                     dst_spec: LoadStoreSpec) -> bool:
        """GPU -> medium, asynchronous."""

    @abstractmethod
    def submit_load(self, job_id: int, src_spec: LoadStoreSpec,
                    dst_spec: GPULoadStoreSpec) -> bool:
        """Medium -> GPU, asynchronous."""

    @abstractmethod
    def get_finished(self) -> list[TransferResult]:
        """The jobs finished since the last call."""

    @abstractmethod
    def wait(self, job_ids: set[int]) -> None:
        """Block until the jobs are done (a flush)."""

    def shutdown(self) -> None:
        return


class OffloadingSpec(ABC):
    """What an offloading connector is built from: its manager (scheduler side) and its
    worker (worker side), and the geometry both share.

    vLLM builds it from the `VllmConfig` and `KVCacheConfig`; here from the
    `KVTransferConfig` (its `kv_connector_extra_config`) and the `CacheConfig`, one KV cache
    group of full attention. Extra config read here: `offload_prompt_only` (default True:
    only prompt blocks are offloaded) and `block_size` (the offloaded block size, a multiple
    of the GPU block size; default the GPU block size)."""

    def __init__(self, kv_transfer_config, cache_config) -> None:
        self.kv_transfer_config = kv_transfer_config
        self.cache_config = cache_config
        self.extra_config: dict = kv_transfer_config.kv_connector_extra_config
        self.offload_prompt_only: bool = bool(
            self.extra_config.get("offload_prompt_only", True))
        # One group; no context parallelism.
        self.gpu_block_size: tuple[int, ...] = (cache_config.block_size,)
        self.hash_block_size: int = cache_config.block_size
        self.enable_prefix_caching: bool = cache_config.enable_prefix_caching
        self.block_size_factor: int = 1
        offloaded_block_size = self.extra_config.get("block_size")
        if offloaded_block_size is not None:
            offloaded_block_size = int(offloaded_block_size)
            gpu_block_size = self.gpu_block_size[0]
            if offloaded_block_size < gpu_block_size \
                    or offloaded_block_size % gpu_block_size:
                raise ValueError(
                    f"offloaded block_size ({offloaded_block_size}) must be a multiple of "
                    f"the GPU block size ({gpu_block_size})")
            self.block_size_factor = offloaded_block_size // gpu_block_size

    @abstractmethod
    def get_manager(self) -> OffloadingManager:
        """The scheduler side's manager (one per spec)."""

    @abstractmethod
    def get_worker(self, kv_caches) -> OffloadingWorker:
        """The worker side's transfers, over the GPU cache `kv_caches`."""
