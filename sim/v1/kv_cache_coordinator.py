"""One manager per KV cache group, one pool for all (vLLM v0.25.1
`vllm/v1/core/kv_cache_coordinator.py`).

`get_kv_cache_coordinator` picks:
- `KVCacheCoordinatorNoPrefixCache` when prefix caching is off (any number of groups);
- `UnitaryKVCacheCoordinator` for one group (every layer full attention, or every layer
  the same window): its hit is its one manager's hit;
- `HybridKVCacheCoordinator` otherwise: groups with equal specs are looked up together,
  full attention first, and `find_longest_cache_hit` shrinks one candidate length until
  every spec accepts it (a fixed point; one pass when the model is full attention plus
  one other type, as gpt-oss and Gemma 3 are).

Every other call fans out to the managers in group order: remove the blocks that left a
window, count blocks to allocate, touch hits, allocate, cache, free.

Additions: `events` (passed to the pool and the managers). Kept: a KV connector's external
tokens get their blocks only after every group has touched its hits. Left out: the metrics
collector, decode/prefill context parallelism, cross-attention, Mamba and the prefix-cache
retention interval; groups must share one block size.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sim.v1.block_pool import BlockPool
from sim.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheSpec
from sim.v1.kv_cache_utils import BlockHash, KVCacheBlock
from sim.v1.single_type_kv_cache_manager import (
    SingleTypeKVCacheManager,
    get_manager_for_kv_cache_spec,
)


class KVCacheCoordinator:
    """Coordinate the KV cache of the groups of one model."""

    def __init__(self, kv_cache_config: KVCacheConfig, max_model_len: int,
                 max_num_batched_tokens: int, use_eagle: bool, enable_caching: bool,
                 scheduler_block_size: int, hash_block_size: int,
                 events: list | None = None) -> None:
        self.kv_cache_config = kv_cache_config
        self.max_model_len = max_model_len
        self.enable_caching = enable_caching
        groups = kv_cache_config.kv_cache_groups
        if any(g.kv_cache_spec.block_size != scheduler_block_size for g in groups):
            raise ValueError("KV cache groups with different block sizes are not modelled: "
                             f"every group's block size must be {scheduler_block_size}")
        self.scheduler_block_size = scheduler_block_size
        self.block_pool = BlockPool(kv_cache_config.num_blocks, enable_caching,
                                    hash_block_size, events)
        # No group is marked as EAGLE's here, so EAGLE applies to every group.
        self.eagle_group_ids: set[int] = set(range(len(groups))) if use_eagle else set()
        self.single_type_managers: tuple[SingleTypeKVCacheManager, ...] = tuple(
            get_manager_for_kv_cache_spec(
                group.kv_cache_spec, max_num_batched_tokens, max_model_len,
                block_pool=self.block_pool, enable_caching=enable_caching,
                kv_cache_group_id=i, scheduler_block_size=scheduler_block_size,
                events=events)
            for i, group in enumerate(groups))

    def get_num_blocks_to_allocate(self, request_id: str, num_tokens: int,
                                   new_computed_blocks: tuple[Sequence[KVCacheBlock], ...],
                                   num_encoder_tokens: int, total_computed_tokens: int,
                                   num_tokens_main_model: int,
                                   apply_admission_cap: bool = False) -> int:
        """Blocks the request needs over every group (its hits' free blocks included)."""
        return sum(manager.get_num_blocks_to_allocate(
            request_id, num_tokens, new_computed_blocks[i], total_computed_tokens,
            num_tokens_main_model, apply_admission_cap=apply_admission_cap)
            for i, manager in enumerate(self.single_type_managers))

    def allocate_new_computed_blocks(self, request_id: str,
                                     new_computed_blocks: tuple[Sequence[KVCacheBlock], ...],
                                     num_local_computed_tokens: int,
                                     num_external_computed_tokens: int) -> None:
        """Attach a new request's hits in every group, then (KV connector) the blocks for
        its external tokens. A running request has no new hits: nothing to do."""
        if any(request_id in manager.num_cached_block
               for manager in self.single_type_managers):
            assert all(len(blocks) == 0 for blocks in new_computed_blocks)
            return
        # Touch every group's hits first, so that one group's new blocks cannot evict
        # another group's hits (vLLM issue #33775).
        for i, manager in enumerate(self.single_type_managers):
            manager.add_local_computed_blocks(request_id, new_computed_blocks[i],
                                              num_local_computed_tokens,
                                              num_external_computed_tokens)
        if num_external_computed_tokens > 0:
            for manager in self.single_type_managers:
                manager.allocate_external_computed_blocks(request_id,
                                                          num_local_computed_tokens,
                                                          num_external_computed_tokens)

    def allocate_new_blocks(self, request_id: str, num_tokens: int,
                            num_tokens_main_model: int,
                            num_encoder_tokens: int = 0) -> tuple[list[KVCacheBlock], ...]:
        """Grow every group's table to `num_tokens` slots, group by group."""
        return tuple(manager.allocate_new_blocks(request_id, num_tokens, num_tokens_main_model)
                     for manager in self.single_type_managers)

    def cache_blocks(self, request, num_computed_tokens: int) -> None:
        for manager in self.single_type_managers:
            manager.cache_blocks(request, num_computed_tokens)

    def free(self, request_id: str) -> None:
        """Group by group, each table last block first."""
        for manager in self.single_type_managers:
            manager.free(request_id)

    def pop_blocks_for_free(self, request_id: str) -> list[KVCacheBlock]:
        blocks: list[KVCacheBlock] = []
        for manager in self.single_type_managers:
            blocks.extend(manager.pop_blocks_for_free(request_id))
        return blocks

    def get_num_common_prefix_blocks(self, running_request_id: str) -> list[int]:
        return [manager.get_num_common_prefix_blocks(running_request_id)
                for manager in self.single_type_managers]

    def remove_skipped_blocks(self, request_id: str, total_computed_tokens: int,
                              num_prompt_tokens: int | None = None) -> None:
        for manager in self.single_type_managers:
            manager.remove_skipped_blocks(request_id, total_computed_tokens,
                                          num_prompt_tokens)

    def get_blocks(self, request_id: str) -> tuple[list[KVCacheBlock], ...]:
        return tuple(manager.req_to_blocks.get(request_id) or []
                     for manager in self.single_type_managers)

    def find_longest_cache_hit(self, block_hashes: Sequence[BlockHash],
                               max_cache_hit_length: int
                               ) -> tuple[tuple[list[KVCacheBlock], ...], int]:
        raise NotImplementedError

    def new_step_starts(self) -> None:
        for manager in self.single_type_managers:
            manager.new_step_starts()


class KVCacheCoordinatorNoPrefixCache(KVCacheCoordinator):
    """Prefix caching off: no hits, no common prefix; any number of groups."""

    def __init__(self, kv_cache_config: KVCacheConfig, max_model_len: int,
                 max_num_batched_tokens: int, use_eagle: bool, scheduler_block_size: int,
                 hash_block_size: int, events: list | None = None) -> None:
        super().__init__(kv_cache_config, max_model_len, max_num_batched_tokens, use_eagle,
                         False, scheduler_block_size, hash_block_size, events)
        self.num_single_type_manager = len(self.single_type_managers)

    def get_num_common_prefix_blocks(self, running_request_id: str) -> list[int]:
        return [0] * self.num_single_type_manager

    def find_longest_cache_hit(self, block_hashes: Sequence[BlockHash],
                               max_cache_hit_length: int
                               ) -> tuple[tuple[list[KVCacheBlock], ...], int]:
        return tuple([] for _ in range(self.num_single_type_manager)), 0


class UnitaryKVCacheCoordinator(KVCacheCoordinator):
    """One KV cache group: every layer full attention, or every layer one window."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.kv_cache_spec = self.kv_cache_config.kv_cache_groups[0].kv_cache_spec
        self.block_size = self.kv_cache_spec.block_size
        assert len(self.kv_cache_config.kv_cache_groups) == 1
        self.single_type_managers[0].use_eagle = 0 in self.eagle_group_ids

    def find_longest_cache_hit(self, block_hashes: Sequence[BlockHash],
                               max_cache_hit_length: int
                               ) -> tuple[tuple[list[KVCacheBlock], ...], int]:
        hit_blocks = self.single_type_managers[0].find_longest_cache_hit(
            block_hashes, max_cache_hit_length, [0], self.block_pool, self.kv_cache_spec,
            0 in self.eagle_group_ids, self.block_size)
        return hit_blocks, len(hit_blocks[0]) * self.block_size


class SpecGroup(NamedTuple):
    """KV cache groups sharing one spec, looked up together."""
    spec: KVCacheSpec
    group_ids: list[int]
    manager_cls: type[SingleTypeKVCacheManager]
    use_eagle: bool


class HybridKVCacheCoordinator(KVCacheCoordinator):
    """Several KV cache groups of different types (hybrid models)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hash_block_size = self.block_pool.hash_block_size
        self.num_uncached_common_prefix_tokens = 0
        self.verify_and_split_kv_cache_groups()

    def verify_and_split_kv_cache_groups(self) -> None:
        """Gather the groups by spec, full attention first (its left-to-right scan gives
        the tightest first bound)."""
        self.attention_groups: list[SpecGroup] = []
        for i, group in enumerate(self.kv_cache_config.kv_cache_groups):
            manager_cls = type(self.single_type_managers[i])
            spec = group.kv_cache_spec
            use_eagle = i in self.eagle_group_ids
            for idx, existing in enumerate(self.attention_groups):
                if existing.spec == spec:
                    assert manager_cls is existing.manager_cls
                    existing.group_ids.append(i)
                    if use_eagle and not existing.use_eagle:
                        self.attention_groups[idx] = existing._replace(use_eagle=True)
                    break
            else:
                self.attention_groups.append(SpecGroup(spec, [i], manager_cls, use_eagle))
        assert len(self.attention_groups) > 1, (
            "HybridKVCacheCoordinator requires at least two attention groups.")
        self.attention_groups.sort(key=lambda g: not isinstance(g.spec, FullAttentionSpec))
        for group in self.attention_groups:
            if group.use_eagle:
                for gid in group.group_ids:
                    self.single_type_managers[gid].use_eagle = True

    def cache_blocks(self, request, num_computed_tokens: int) -> None:
        """Cache up to the last hit-aligned boundary (with one block size, every block
        boundary); an EAGLE group also caches the block after it, its lookahead."""
        aligned = (num_computed_tokens // self.scheduler_block_size
                   * self.scheduler_block_size)
        for manager in self.single_type_managers:
            num_tokens_to_cache = aligned
            if manager.use_eagle and aligned > 0:
                num_tokens_to_cache = min(num_computed_tokens, aligned + manager.block_size)
            manager.cache_blocks(request, num_tokens_to_cache)

    def find_longest_cache_hit(self, block_hashes: Sequence[BlockHash],
                               max_cache_hit_length: int
                               ) -> tuple[tuple[list[KVCacheBlock], ...], int]:
        """Each spec either accepts the candidate length or shrinks it; after a shrink every
        spec is asked again, until none shrinks it (the length only decreases, so this
        ends). Full attention is looked up once and afterwards only cut to the length."""
        num_groups = len(self.kv_cache_config.kv_cache_groups)
        hit_length = max_cache_hit_length
        longest_hit_length = 0
        hit_blocks_by_group: list[list[KVCacheBlock] | None] = [None] * num_groups
        is_simple_hybrid = (len(self.attention_groups) == 2
                            and isinstance(self.attention_groups[0].spec, FullAttentionSpec))
        # Spec groups whose EAGLE drop was applied at the current candidate length.
        eagle_verified: set[int] = set()
        while True:
            curr_hit_length = hit_length
            for idx, (spec, group_ids, manager_cls, use_eagle) in enumerate(
                    self.attention_groups):
                cached_blocks = hit_blocks_by_group[group_ids[0]]
                if isinstance(spec, FullAttentionSpec) and cached_blocks is not None:
                    # Full attention is downward-closed: trim, do not look up again.
                    curr_hit_length = curr_hit_length // spec.block_size * spec.block_size
                    continue
                drop_eagle_block = use_eagle and idx not in eagle_verified
                max_length = curr_hit_length
                if drop_eagle_block:
                    # Match one block more, then drop it.
                    max_length = min(curr_hit_length + spec.block_size, max_cache_hit_length)
                hit_blocks = manager_cls.find_longest_cache_hit(
                    block_hashes, max_length, group_ids, self.block_pool, spec,
                    drop_eagle_block, self.scheduler_block_size)
                new_hit_length = len(hit_blocks[0]) * spec.block_size
                if drop_eagle_block:
                    eagle_verified.add(idx)
                elif new_hit_length < curr_hit_length:
                    eagle_verified.clear()
                curr_hit_length = new_hit_length
                for group_id, blocks in zip(group_ids, hit_blocks):
                    hit_blocks_by_group[group_id] = blocks
                longest_hit_length = max(longest_hit_length, curr_hit_length)
            if curr_hit_length >= hit_length:
                break
            hit_length = curr_hit_length
            if is_simple_hybrid:
                break
        first_group = self.attention_groups[0]
        if isinstance(first_group.spec, FullAttentionSpec):
            num_blocks = hit_length // first_group.spec.block_size
            for group_id in first_group.group_ids:
                blocks = hit_blocks_by_group[group_id]
                if blocks is not None:
                    del blocks[num_blocks:]
        # A prefix some group caches further than the agreed hit (Mamba's scheduler uses it).
        self.num_uncached_common_prefix_tokens = longest_hit_length - hit_length
        return tuple(blocks if blocks is not None else []
                     for blocks in hit_blocks_by_group), hit_length


def get_kv_cache_coordinator(kv_cache_config: KVCacheConfig, max_model_len: int,
                             max_num_batched_tokens: int, use_eagle: bool,
                             enable_caching: bool, scheduler_block_size: int,
                             hash_block_size: int,
                             events: list | None = None) -> KVCacheCoordinator:
    if not enable_caching:
        return KVCacheCoordinatorNoPrefixCache(kv_cache_config, max_model_len,
                                               max_num_batched_tokens, use_eagle,
                                               scheduler_block_size, hash_block_size, events)
    if len(kv_cache_config.kv_cache_groups) == 1:
        return UnitaryKVCacheCoordinator(kv_cache_config, max_model_len,
                                         max_num_batched_tokens, use_eagle, enable_caching,
                                         scheduler_block_size, hash_block_size, events)
    return HybridKVCacheCoordinator(kv_cache_config, max_model_len, max_num_batched_tokens,
                                    use_eagle, enable_caching, scheduler_block_size,
                                    hash_block_size, events)
