"""The block tables of one KV cache group (vLLM v0.25.1
`vllm/v1/core/single_type_kv_cache_manager.py`): one manager per group, all drawing from
one `BlockPool`.

State: `req_to_blocks` (request id -> its block table in this group) and
`num_cached_block` (request id -> how many leading blocks are in the prefix cache; present
from the request's first allocation on, so "in num_cached_block" means "running").

What differs by attention type:

- `get_num_skipped_tokens(num_computed_tokens)`: tokens the next token will not attend to.
  0 for full attention; `max(0, computed - sliding_window + 1)` for a sliding window;
  `computed // chunk * chunk` for chunked local attention.
- `remove_skipped_blocks`: blocks wholly inside the skipped tokens go back to the pool,
  last one first, and the null block takes their place in the table (so positions keep
  their meaning). Called at the start of every `allocate_slots`.
- `find_longest_cache_hit` (a class method: the coordinator calls it for several groups
  of one spec at once): full attention scans left to right and stops at the first miss;
  a sliding window scans right to left and stops at the first run of
  `cdiv(sliding_window - 1, block_size)` cached blocks (the earlier blocks are outside the
  window of the first token to compute: nulls); chunked local attention needs only the
  blocks of the current chunk.

Differences from vLLM, on purpose: `req_to_blocks` is a plain dict (vLLM's defaultdict
gains an empty entry when a request is merely looked at, e.g. by `remove_skipped_blocks`
before an allocation that fails; nothing reads those entries); groups must share one block
size (so hit alignment is always one block, and `alignment_tokens` must equal it); the
prefix-cache retention interval (`VLLM_PREFIX_CACHE_RETENTION_INTERVAL`) is not modelled.
Additions: `events` receives BlockSkipped records (the pool adds BlockFreed).
Left out: Mamba, cross-attention, R-SWA and sink managers.
"""
from __future__ import annotations

from collections.abc import Sequence
from itertools import islice

from sim.events import BlockSkipped
from sim.v1.block_pool import BlockPool
from sim.v1.kv_cache_interface import (
    ChunkedLocalAttentionSpec,
    FullAttentionSpec,
    KVCacheSpec,
    SlidingWindowSpec,
    cdiv,
)
from sim.v1.kv_cache_utils import BlockHash, KVCacheBlock


class SingleTypeKVCacheManager:
    """Allocation and prefix caching for the layers of one KV cache group."""

    def __init__(self, kv_cache_spec: KVCacheSpec, block_pool: BlockPool,
                 enable_caching: bool, kv_cache_group_id: int,
                 scheduler_block_size: int | None = None,
                 max_admission_blocks_per_request: int | None = None,
                 events: list | None = None) -> None:
        self.block_size = kv_cache_spec.block_size
        self.scheduler_block_size = scheduler_block_size or self.block_size
        self.kv_cache_spec = kv_cache_spec
        self.block_pool = block_pool
        self.enable_caching = enable_caching
        self.kv_cache_group_id = kv_cache_group_id
        # Recycling-aware cap on what admission reserves (windowed groups only).
        self.max_admission_blocks_per_request = max_admission_blocks_per_request
        self.req_to_blocks: dict[str, list[KVCacheBlock]] = {}
        self.num_cached_block: dict[str, int] = {}
        self.null_block = block_pool.null_block
        # Whether this group's hits drop the last block for EAGLE (set by the coordinator).
        self.use_eagle = False
        self.events = events

    @staticmethod
    def get_num_evictable_blocks(blocks: Sequence[KVCacheBlock]) -> int:
        """Hit blocks that touching will take out of the free queue."""
        return sum(1 for blk in blocks if blk.ref_cnt == 0 and not blk.is_null)

    def get_num_blocks_to_allocate(self, request_id: str, num_tokens: int,
                                   new_computed_blocks: Sequence[KVCacheBlock],
                                   total_computed_tokens: int,
                                   num_tokens_main_model: int | None = None,
                                   apply_admission_cap: bool = False) -> int:
        """New blocks for `num_tokens` slots, plus the free hit blocks touching will take.
        A new request's skipped blocks (outside its window) need no block."""
        num_required_blocks = cdiv(num_tokens, self.block_size)
        if apply_admission_cap and self.max_admission_blocks_per_request is not None:
            num_required_blocks = min(num_required_blocks,
                                      self.max_admission_blocks_per_request)
        req_blocks = self.req_to_blocks.get(request_id)
        num_req_blocks = len(req_blocks) if req_blocks is not None else 0
        if request_id in self.num_cached_block:
            # A running request has no new prefix-cache hits. (With drafts rejected, its
            # table may already be longer than needed.)
            assert len(new_computed_blocks) == 0
            return max(num_required_blocks - num_req_blocks, 0)
        num_skipped_tokens = self.get_num_skipped_tokens(total_computed_tokens)
        num_local_computed_blocks = len(new_computed_blocks) + num_req_blocks
        num_skipped_blocks = num_skipped_tokens // self.block_size
        num_new_blocks = max(
            num_required_blocks - max(num_skipped_blocks, num_local_computed_blocks), 0)
        # The first skipped hit blocks will not be touched (nulls take their place).
        num_skipped_new_computed_blocks = max(0, num_skipped_blocks - num_req_blocks)
        num_evictable_blocks = self.get_num_evictable_blocks(
            new_computed_blocks[num_skipped_new_computed_blocks:])
        return num_new_blocks + num_evictable_blocks

    def add_local_computed_blocks(self, request_id: str,
                                  new_computed_blocks: Sequence[KVCacheBlock],
                                  num_local_computed_tokens: int,
                                  num_external_computed_tokens: int = 0) -> None:
        """Start a new request's table with its hit blocks (touched), the ones outside
        its window replaced by the null block."""
        req_blocks = self.req_to_blocks.setdefault(request_id, [])
        assert len(req_blocks) == 0
        num_skipped_tokens = self.get_num_skipped_tokens(
            num_local_computed_tokens + num_external_computed_tokens)
        num_skipped_blocks = num_skipped_tokens // self.block_size
        if num_skipped_blocks > 0:
            # All of them may be skipped (more skipped blocks than hits).
            new_computed_blocks = new_computed_blocks[num_skipped_blocks:]
        if self.enable_caching:
            self.block_pool.touch(new_computed_blocks)
        else:
            assert not any(new_computed_blocks), (
                "Computed blocks should be empty when prefix caching is disabled")
        req_blocks.extend([self.null_block] * num_skipped_blocks)
        req_blocks.extend(new_computed_blocks)
        # Every hit (skipped nulls included) is already cached.
        self.num_cached_block[request_id] = len(req_blocks)

    def allocate_external_computed_blocks(self, request_id: str,
                                          num_local_computed_tokens: int,
                                          num_external_computed_tokens: int) -> None:
        """Blocks for tokens a KV connector will load (those inside the window only).
        Runs after every group touched its hits, so it cannot evict another group's."""
        num_total_computed_tokens = num_local_computed_tokens + num_external_computed_tokens
        num_skipped_tokens = self.get_num_skipped_tokens(num_total_computed_tokens)
        if num_skipped_tokens > 0:
            num_external_computed_tokens = min(num_total_computed_tokens - num_skipped_tokens,
                                               num_external_computed_tokens)
        if num_external_computed_tokens <= 0:
            return
        req_blocks = self.req_to_blocks.setdefault(request_id, [])
        req_blocks.extend(self.block_pool.get_new_blocks(
            cdiv(num_total_computed_tokens, self.block_size) - len(req_blocks)))

    def allocate_new_blocks(self, request_id: str, num_tokens: int,
                            num_tokens_main_model: int | None = None) -> list[KVCacheBlock]:
        """Grow the table to cover `num_tokens` slots; returns the new blocks."""
        req_blocks = self.req_to_blocks.get(request_id)
        if req_blocks is None:
            req_blocks = self.req_to_blocks[request_id] = []
        num_new_blocks = cdiv(num_tokens, self.block_size) - len(req_blocks)
        if num_new_blocks <= 0:
            return []
        new_blocks = self.block_pool.get_new_blocks(num_new_blocks)
        req_blocks.extend(new_blocks)
        return new_blocks

    def cache_blocks(self, request, num_tokens: int) -> None:
        """Hash and cache the full blocks among the first `num_tokens` tokens (null
        blocks, and blocks no hit could ever use, are skipped)."""
        request_id = request.request_id
        num_cached_blocks = self.num_cached_block.get(request_id, 0)
        num_full_blocks = num_tokens // self.block_size
        if num_cached_blocks >= num_full_blocks:
            return
        block_mask = self.reachable_block_mask(num_cached_blocks, num_full_blocks,
                                               self.scheduler_block_size,
                                               self.kv_cache_spec, self.use_eagle)
        self.block_pool.cache_full_blocks(request, self.req_to_blocks[request_id],
                                          num_cached_blocks, num_full_blocks, self.block_size,
                                          self.kv_cache_group_id, block_mask)
        self.num_cached_block[request_id] = num_full_blocks

    @classmethod
    def reachable_block_mask(cls, start_block: int, end_block: int,
                             alignment_tokens: int | None, kv_cache_spec: KVCacheSpec,
                             use_eagle: bool) -> list[bool] | None:
        """Which of blocks [start, end) may ever serve a hit; None: all of them."""
        return None

    def pop_blocks_for_free(self, request_id: str) -> list[KVCacheBlock]:
        """Forget the request; its table, in allocation order (not yet freed)."""
        req_blocks = self.req_to_blocks.pop(request_id, [])
        self.num_cached_block.pop(request_id, None)
        return req_blocks

    def free(self, request_id: str) -> None:
        """Release the request's blocks, last block first (evicted first)."""
        self.block_pool.free_blocks(reversed(self.pop_blocks_for_free(request_id)))

    def get_num_common_prefix_blocks(self, running_request_id: str) -> int:
        raise NotImplementedError

    @classmethod
    def find_longest_cache_hit(cls, block_hashes: Sequence[BlockHash], max_length: int,
                               kv_cache_group_ids: list[int], block_pool: BlockPool,
                               kv_cache_spec: KVCacheSpec, drop_eagle_block: bool,
                               alignment_tokens: int) -> tuple[list[KVCacheBlock], ...]:
        """The longest hit of at most `max_length` tokens, the same for every group in
        `kv_cache_group_ids` (one list per group), skipped blocks as null blocks."""
        raise NotImplementedError

    def _remove_blocks_in_range(self, request_id: str, first_block: int,
                                last_block: int) -> None:
        """Free blocks [first, last) of the table and put the null block in their place;
        backwards, stopping at a null (the ones before were removed earlier)."""
        blocks = self.req_to_blocks.get(request_id)
        if blocks is None or first_block >= last_block:
            return
        last_block = min(last_block, len(blocks))
        null_block = self.null_block
        freed: list[KVCacheBlock] = []
        for i in range(last_block - 1, first_block - 1, -1):
            if blocks[i] is null_block:
                break
            freed.append(blocks[i])
            blocks[i] = null_block
            if self.events is not None:
                self.events.append(BlockSkipped(request_id, self.kv_cache_group_id, i,
                                                freed[-1].block_id))
        if freed:
            self.block_pool.free_blocks(freed)

    def remove_skipped_blocks(self, request_id: str, total_computed_tokens: int,
                              num_prompt_tokens: int | None = None) -> None:
        """Free the blocks the next token will not attend to (outside its window)."""
        num_skipped_tokens = self.get_num_skipped_tokens(total_computed_tokens)
        if num_skipped_tokens <= 0:
            return   # everything is inside the window (always, for full attention)
        blocks = self.req_to_blocks.get(request_id)
        if blocks is None:
            return
        # The window may start past the blocks allocated so far (external tokens).
        num_skipped_blocks = min(num_skipped_tokens // self.block_size, len(blocks))
        self._remove_blocks_in_range(request_id, 0, num_skipped_blocks)

    def get_num_skipped_tokens(self, num_computed_tokens: int) -> int:
        return 0

    def new_step_starts(self) -> None:
        return None


class FullAttentionManager(SingleTypeKVCacheManager):
    @classmethod
    def find_longest_cache_hit(cls, block_hashes: Sequence[BlockHash], max_length: int,
                               kv_cache_group_ids: list[int], block_pool: BlockPool,
                               kv_cache_spec: KVCacheSpec, drop_eagle_block: bool,
                               alignment_tokens: int) -> tuple[list[KVCacheBlock], ...]:
        assert isinstance(kv_cache_spec, (FullAttentionSpec, ChunkedLocalAttentionSpec))
        _check_alignment(kv_cache_spec, alignment_tokens)
        computed_blocks: tuple[list[KVCacheBlock], ...] = tuple(
            [] for _ in range(len(kv_cache_group_ids)))
        max_num_blocks = max_length // kv_cache_spec.block_size
        for block_hash in islice(block_hashes, max_num_blocks):
            # A chain: once one block misses, the later ones cannot be cached.
            cached_block = block_pool.get_cached_block(block_hash, kv_cache_group_ids)
            if not cached_block:
                break
            for computed, cached in zip(computed_blocks, cached_block):
                computed.append(cached)
        if drop_eagle_block and computed_blocks[0]:
            for computed in computed_blocks:
                computed.pop()
        return computed_blocks

    def get_num_common_prefix_blocks(self, running_request_id: str) -> int:
        num_common_blocks = 0
        num_requests = len(self.req_to_blocks)
        for block in self.req_to_blocks.get(running_request_id, ()):
            if block.ref_cnt != num_requests:
                break
            num_common_blocks += 1
        return num_common_blocks


class SlidingWindowManager(SingleTypeKVCacheManager):
    def __init__(self, kv_cache_spec: SlidingWindowSpec, block_pool: BlockPool,
                 **kwargs) -> None:
        super().__init__(kv_cache_spec, block_pool, **kwargs)
        self.sliding_window = kv_cache_spec.sliding_window

    @classmethod
    def contiguous_blocks_for_hit(cls, window_size: int, block_size: int,
                                  use_eagle: bool) -> int:
        """Cached blocks in a row a hit needs: the window before the first token to
        compute (one more with EAGLE, whose last hit block is dropped)."""
        return cdiv(window_size - 1, block_size) + (1 if use_eagle else 0)

    @classmethod
    def find_longest_cache_hit(cls, block_hashes: Sequence[BlockHash], max_length: int,
                               kv_cache_group_ids: list[int], block_pool: BlockPool,
                               kv_cache_spec: KVCacheSpec, drop_eagle_block: bool,
                               alignment_tokens: int) -> tuple[list[KVCacheBlock], ...]:
        assert isinstance(kv_cache_spec, SlidingWindowSpec)
        _check_alignment(kv_cache_spec, alignment_tokens)
        needed = cls.contiguous_blocks_for_hit(kv_cache_spec.sliding_window,
                                               kv_cache_spec.block_size, drop_eagle_block)
        max_num_blocks = max_length // kv_cache_spec.block_size
        null_block = block_pool.null_block
        computed_blocks = tuple([null_block] * max_num_blocks
                                for _ in range(len(kv_cache_group_ids)))
        num_contiguous_blocks = 0
        match_found = False
        # Right to left: the first long enough run of cached blocks ends the search.
        for i in range(max_num_blocks - 1, -1, -1):
            cached_block = block_pool.get_cached_block(block_hashes[i], kv_cache_group_ids)
            if not cached_block:
                num_contiguous_blocks = 0
                continue
            for computed, cached in zip(computed_blocks, cached_block):
                computed[i] = cached
            num_contiguous_blocks += 1
            if num_contiguous_blocks >= needed:
                # Trim what lies after the run, e.g. [N, N, 8, 3, N, 9] -> [N, N, 8, 3].
                for computed in computed_blocks:
                    del computed[i + num_contiguous_blocks:]
                match_found = True
                break
        if not match_found:
            # A run at the very start is a hit even when shorter (nothing before it).
            for computed in computed_blocks:
                del computed[num_contiguous_blocks:]
        if drop_eagle_block and computed_blocks[0]:
            for computed in computed_blocks:
                computed.pop()
        return computed_blocks

    @classmethod
    def reachable_block_mask(cls, start_block: int, end_block: int,
                             alignment_tokens: int | None, kv_cache_spec: KVCacheSpec,
                             use_eagle: bool) -> list[bool] | None:
        """Only the last `contiguous_blocks_for_hit` blocks before each aligned boundary
        can serve a hit; with one-block alignment that is every block, unless the window
        is one token (a hit then needs no block, and none is cached)."""
        if alignment_tokens is None:
            return None
        block_size = kv_cache_spec.block_size
        need = cls.contiguous_blocks_for_hit(kv_cache_spec.sliding_window, block_size,
                                             use_eagle)
        per_segment = alignment_tokens // block_size
        if need >= per_segment:
            return None
        shift = 1 if use_eagle else 0
        return [i >= shift and (i - shift) % per_segment >= per_segment - need
                for i in range(start_block, end_block)]

    def get_num_skipped_tokens(self, num_computed_tokens: int) -> int:
        """With window 4 and 7 tokens computed, the next token (position 7) attends to
        positions 4..7: tokens 0..3 are skipped."""
        return max(0, num_computed_tokens - self.sliding_window + 1)

    def get_num_common_prefix_blocks(self, running_request_id: str) -> int:
        # The prefix is null blocks here; cascade attention is not supported with windows.
        return 0


class ChunkedLocalAttentionManager(SingleTypeKVCacheManager):
    def __init__(self, kv_cache_spec: ChunkedLocalAttentionSpec, block_pool: BlockPool,
                 **kwargs) -> None:
        super().__init__(kv_cache_spec, block_pool, **kwargs)
        self.attention_chunk_size = kv_cache_spec.attention_chunk_size

    @classmethod
    def find_longest_cache_hit(cls, block_hashes: Sequence[BlockHash], max_length: int,
                               kv_cache_group_ids: list[int], block_pool: BlockPool,
                               kv_cache_spec: KVCacheSpec, drop_eagle_block: bool,
                               alignment_tokens: int) -> tuple[list[KVCacheBlock], ...]:
        """Blocks before the current chunk count as computed (nulls); the chunk's own
        blocks are looked up left to right."""
        assert isinstance(kv_cache_spec, ChunkedLocalAttentionSpec)
        assert drop_eagle_block is False, (
            "Hybrid KV cache is not supported for eagle + chunked local attention.")
        _check_alignment(kv_cache_spec, alignment_tokens)
        block_size = kv_cache_spec.block_size
        chunk = kv_cache_spec.attention_chunk_size
        max_num_blocks = max_length // block_size
        local_attention_start_idx = max_length // chunk * chunk if max_length > 0 else 0
        start_block = local_attention_start_idx // block_size
        computed_blocks = tuple([block_pool.null_block] * start_block
                                for _ in range(len(kv_cache_group_ids)))
        for i in range(start_block, max_num_blocks):
            cached_block = block_pool.get_cached_block(block_hashes[i], kv_cache_group_ids)
            if not cached_block:
                break
            for computed, cached in zip(computed_blocks, cached_block):
                computed.append(cached)
        return computed_blocks

    def get_num_skipped_tokens(self, num_computed_tokens: int) -> int:
        """With chunks of 8: 13 computed -> the next token's chunk starts at 8, so 8
        tokens are skipped; 8 computed -> 8; 7 computed -> 0."""
        return num_computed_tokens // self.attention_chunk_size * self.attention_chunk_size

    def get_num_common_prefix_blocks(self, running_request_id: str) -> int:
        return 0


def _check_alignment(kv_cache_spec: KVCacheSpec, alignment_tokens: int) -> None:
    if alignment_tokens != kv_cache_spec.block_size:
        raise NotImplementedError("KV cache groups with different block sizes are not "
                                  "modelled: hits are aligned to one block")


spec_manager_map: dict[type, type[SingleTypeKVCacheManager]] = {
    FullAttentionSpec: FullAttentionManager,
    SlidingWindowSpec: SlidingWindowManager,
    ChunkedLocalAttentionSpec: ChunkedLocalAttentionManager,
}


def get_manager_class(kv_cache_spec: KVCacheSpec) -> type[SingleTypeKVCacheManager]:
    for spec_type in type(kv_cache_spec).__mro__:
        if spec_type in spec_manager_map:
            return spec_manager_map[spec_type]
    raise ValueError(f"No manager for KV cache spec {type(kv_cache_spec).__name__}")


def get_manager_for_kv_cache_spec(kv_cache_spec: KVCacheSpec, max_num_batched_tokens: int,
                                  max_model_len: int, **kwargs) -> SingleTypeKVCacheManager:
    """The manager for a group's spec; windowed groups get the admission cap that vLLM's
    start-up pool sizing assumed (`max_admission_blocks_per_request`)."""
    manager_class = get_manager_class(kv_cache_spec)
    if isinstance(kv_cache_spec, (SlidingWindowSpec, ChunkedLocalAttentionSpec)):
        kwargs["max_admission_blocks_per_request"] = (
            kv_cache_spec.max_admission_blocks_per_request(max_num_batched_tokens,
                                                           max_model_len))
    return manager_class(kv_cache_spec, kwargs.pop("block_pool"), **kwargs)
