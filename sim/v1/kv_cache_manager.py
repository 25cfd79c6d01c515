"""The scheduler's interface to the KV cache (vLLM v0.25.1
`vllm/v1/core/kv_cache_manager.py`: `KVCacheManager`, `KVCacheBlocks`), with the logic of
`vllm/v1/core/single_type_kv_cache_manager.py`'s `FullAttentionManager` folded in
(`req_to_blocks`, `num_cached_block`, `find_longest_cache_hit`, `get_num_blocks_to_allocate`,
`allocate_new_blocks`, `cache_blocks`, `free`): one KV cache group of full attention, so the
coordinator (`kv_cache_coordinator.py`) that fans calls out to one manager per group is
left out, and so are sliding window, Mamba, encoder-decoder cross attention and
decode-context parallelism. A KV connector's tokens (`num_external_computed_tokens`) get
blocks after the local hit's (in one pop with the new tokens' blocks: the same blocks in the
same order as vLLM's two), and `delay_cache_blocks` leaves them uncached until they arrive.

- `get_computed_blocks(request)`: the longest run of leading full blocks whose hashes are
  in the prefix cache, capped at `(num_tokens - 1) // block_size` blocks (the last token is
  always computed, for its logits). It touches nothing; it records the lookup in the
  prefix-cache statistics every time it is called.
- `allocate_slots(...)`: returns the newly allocated blocks (`KVCacheBlocks`, empty when
  none were needed), or None when they do not fit (nothing changed then). Free hit blocks
  (`ref_cnt == 0`) count against the free capacity because touching them takes them out of
  the free queue. Full blocks are hashed and cached here, at scheduling time.
- `free(request)`: its block table is released reversed (last block first).

Additions: `events` receives PrefixCacheHit and BlockAllocated records (the block pool adds
its own); the statistics are cumulative (vLLM's `make_prefix_cache_stats` hands out and
resets an interval's counts for the logger).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice

from sim.events import BlockAllocated, PrefixCacheHit, fast_event
from sim.v1.block_pool import BlockPool
from sim.v1.kv_cache_utils import BlockHash, KVCacheBlock
from sim.v1.request import RequestStatus

_WAITING, _PREEMPTED = RequestStatus.WAITING, RequestStatus.PREEMPTED


class KVCacheBlocks:
    """The blocks of one allocation, one sequence per KV cache group (one group here)."""

    __slots__ = ("blocks",)

    def __init__(self, blocks: tuple[Sequence[KVCacheBlock], ...]) -> None:
        self.blocks = blocks

    def __add__(self, other: KVCacheBlocks) -> KVCacheBlocks:
        return KVCacheBlocks(tuple(list(a) + list(b) for a, b in zip(self.blocks, other.blocks)))

    def get_block_ids(self, allow_none: bool = False) -> tuple[list[int], ...] | None:
        """Block ids per group; None (with allow_none) when there are no blocks at all."""
        if allow_none and all(len(group) == 0 for group in self.blocks):
            return None
        return tuple([blk.block_id for blk in group] for group in self.blocks)

    def get_unhashed_block_ids(self) -> list[int]:
        assert len(self.blocks) == 1, "Only one group is supported"
        return [block.block_id for block in self.blocks[0] if block.block_hash is None]

    def new_empty(self) -> KVCacheBlocks:
        return KVCacheBlocks(tuple(() for _ in range(len(self.blocks))))

    def __len__(self) -> int:
        return len(self.blocks[0])

    def __repr__(self) -> str:
        return f"KVCacheBlocks({self.get_block_ids()})"


@dataclass(slots=True)
class PrefixCacheStats:
    """vLLM's `PrefixCacheStats` (`vllm/v1/metrics/stats.py`): lookups of requests that
    were preempted before are counted apart (the logged hit rate ignores them)."""
    requests: int = 0
    queries: int = 0
    hits: int = 0
    preempted_requests: int = 0
    preempted_queries: int = 0
    preempted_hits: int = 0

    def record(self, num_tokens: int, num_hits: int, preempted: bool) -> None:
        if preempted:
            self.preempted_requests += 1
            self.preempted_queries += num_tokens
            self.preempted_hits += num_hits
        else:
            self.requests += 1
            self.queries += num_tokens
            self.hits += num_hits

    @property
    def hit_rate(self) -> float:
        """Hits over queried tokens, as logged (first-time lookups only)."""
        return self.hits / self.queries if self.queries else 0.0


class KVCacheManager:
    def __init__(self, block_size: int, num_gpu_blocks: int, max_model_len: int,
                 enable_caching: bool = True, use_eagle: bool = False,
                 watermark: float = 0.0, log_stats: bool = True,
                 events: list | None = None) -> None:
        self.block_size = block_size
        self.max_model_len = max_model_len
        self.enable_caching = enable_caching
        # EAGLE drafters need the last hit block's hidden states: the hit drops it.
        self.use_eagle = use_eagle
        self.log_stats = log_stats
        self.events = events
        self.block_pool = BlockPool(num_gpu_blocks, enable_caching, block_size, events)
        # The full count, null block included (vLLM: int(watermark * num_blocks)).
        self.watermark_blocks = int(watermark * num_gpu_blocks)
        self.kv_cache_group_id = 0
        # FullAttentionManager's state: request id -> block table, and how many of its
        # leading blocks are in the prefix cache (present once the request was allocated).
        self.req_to_blocks: dict[str, list[KVCacheBlock]] = {}
        self.num_cached_block: dict[str, int] = {}
        self.prefix_cache_stats = PrefixCacheStats()
        self.empty_kv_cache_blocks = KVCacheBlocks(((),))

    @property
    def usage(self) -> float:
        return self.block_pool.get_usage()

    def create_kv_cache_blocks(self, blocks: Sequence[KVCacheBlock]) -> KVCacheBlocks:
        # Only one empty instance, to avoid creating one per request per step.
        return KVCacheBlocks((blocks,)) if blocks else self.empty_kv_cache_blocks

    # -- prefix-cache lookup ---------------------------------------------------------------
    def find_longest_cache_hit(self, block_hashes: Sequence[BlockHash],
                               max_length: int) -> list[KVCacheBlock]:
        """FullAttentionManager.find_longest_cache_hit: leading blocks whose hashes are
        cached, at most max_length // block_size of them (a chain: the first miss ends it)."""
        computed_blocks: list[KVCacheBlock] = []
        max_num_blocks = max_length // self.block_size
        # BlockPool.get_cached_block for the one group, written out: the hash with the
        # group id appended is the map's key.
        get_one_block = self.block_pool.cached_block_hash_to_block.get_one_block
        group_id = self.kv_cache_group_id.to_bytes(4, "big")
        for block_hash in islice(block_hashes, max_num_blocks):
            cached_block = get_one_block(block_hash + group_id)
            if cached_block:
                computed_blocks.append(cached_block)
            else:
                break
        if self.use_eagle and computed_blocks:
            computed_blocks.pop()
        return computed_blocks

    def get_computed_blocks(self, request) -> tuple[KVCacheBlocks, int]:
        """The cached prefix of a waiting request: (hit blocks, hit tokens). Touches
        nothing; records the lookup in the statistics."""
        if not self.enable_caching or request.skip_reading_prefix_cache:
            return self.empty_kv_cache_blocks, 0
        # All tokens hit: the last one must still be computed to get its logits.
        max_cache_hit_length = request.num_tokens - 1
        computed_blocks = self.find_longest_cache_hit(request.block_hashes,
                                                      max_cache_hit_length)
        num_new_computed_tokens = len(computed_blocks) * self.block_size
        if self.log_stats:
            self.prefix_cache_stats.record(num_tokens=request.num_tokens,
                                           num_hits=num_new_computed_tokens,
                                           preempted=request.num_preemptions > 0)
        return self.create_kv_cache_blocks(computed_blocks), num_new_computed_tokens

    # -- allocation ------------------------------------------------------------------------
    def get_num_blocks_to_allocate(self, request_id: str, num_tokens: int,
                                   new_computed_blocks: Sequence[KVCacheBlock]) -> int:
        """New blocks needed for num_tokens slots, plus the free hit blocks that touching
        will take out of the free queue."""
        num_required_blocks = -(-num_tokens // self.block_size)
        req_blocks = self.req_to_blocks.get(request_id)
        num_req_blocks = len(req_blocks) if req_blocks is not None else 0
        if request_id in self.num_cached_block:
            # A running request has no new prefix-cache hits.
            assert len(new_computed_blocks) == 0
            return max(num_required_blocks - num_req_blocks, 0)
        num_new_blocks = max(num_required_blocks - len(new_computed_blocks) - num_req_blocks, 0)
        num_evictable_blocks = sum(1 for blk in new_computed_blocks
                                   if blk.ref_cnt == 0 and not blk.is_null)
        return num_new_blocks + num_evictable_blocks

    def allocate_slots(self, request, num_new_tokens: int, num_new_computed_tokens: int = 0,
                       new_computed_blocks: KVCacheBlocks | None = None,
                       num_lookahead_tokens: int = 0, num_external_computed_tokens: int = 0,
                       delay_cache_blocks: bool = False, num_encoder_tokens: int = 0,
                       full_sequence_must_fit: bool = False, reserved_blocks: int = 0,
                       has_scheduled_reqs: bool = True) -> KVCacheBlocks | None:
        """Blocks for `num_new_tokens` more tokens (+ lookahead slots), after the request's
        computed tokens and its new prefix hit. None when they do not fit."""
        if num_new_tokens == 0 and num_external_computed_tokens == 0:
            raise ValueError("num_new_tokens must be greater than 0 when there are no "
                             "external computed tokens")
        request_id = request.request_id
        block_size = self.block_size
        max_model_len = self.max_model_len
        new_computed_block_list = (new_computed_blocks.blocks[0]
                                   if new_computed_blocks is not None else ())
        num_local_computed_tokens = request.num_computed_tokens + num_new_computed_tokens
        total_computed_tokens = min(num_local_computed_tokens + num_external_computed_tokens,
                                    max_model_len)
        num_free = self.block_pool.free_block_queue.num_free_blocks
        status = request.status
        watermark = (self.watermark_blocks
                     if has_scheduled_reqs and (status is _WAITING or status is _PREEMPTED)
                     else 0)

        if full_sequence_must_fit:
            # Admission gate: blocks for the whole current sequence must fit now.
            num_blocks_full = self.get_num_blocks_to_allocate(
                request_id, min(request.num_tokens, max_model_len), new_computed_block_list)
            if num_blocks_full + watermark > num_free:
                return None

        num_tokens_need_slot = min(total_computed_tokens + num_new_tokens
                                   + num_lookahead_tokens, max_model_len)
        # (remove_skipped_blocks: nothing to drop for full attention.)
        num_blocks_to_allocate = self.get_num_blocks_to_allocate(
            request_id, num_tokens_need_slot, new_computed_block_list)
        if num_blocks_to_allocate + watermark > num_free - reserved_blocks:
            return None   # nothing has changed: the hits are not touched

        if (new_computed_block_list or num_external_computed_tokens > 0) \
                and request_id not in self.num_cached_block:
            # (A running request has no new hits: vLLM's coordinator returns early.)
            self.add_local_computed_blocks(request, new_computed_block_list,
                                           num_new_computed_tokens)

        new_blocks = self.allocate_new_blocks(request, num_tokens_need_slot)

        if self.enable_caching and not delay_cache_blocks:
            # Drafts and lookahead slots are not cached: at most num_tokens.
            num_tokens_to_cache = min(total_computed_tokens + num_new_tokens, request.num_tokens)
            if num_tokens_to_cache // block_size > self.num_cached_block.get(request_id, 0):
                self._cache_full_blocks(request, num_tokens_to_cache)
        return KVCacheBlocks((new_blocks,)) if new_blocks else self.empty_kv_cache_blocks

    def add_local_computed_blocks(self, request, new_computed_blocks: Sequence[KVCacheBlock],
                                  num_new_computed_tokens: int) -> None:
        """Attach a new (or resumed) request's hit blocks: touch them and start its table."""
        request_id = request.request_id
        assert request_id not in self.num_cached_block
        req_blocks = self.req_to_blocks.setdefault(request_id, [])
        assert len(req_blocks) == 0
        self.block_pool.touch(new_computed_blocks)
        req_blocks.extend(new_computed_blocks)
        self.num_cached_block[request_id] = len(new_computed_blocks)
        if self.events is not None and new_computed_blocks:
            self.events.append(PrefixCacheHit(request_id,
                                              tuple(b.block_id for b in new_computed_blocks),
                                              num_new_computed_tokens))

    def allocate_new_blocks(self, request, num_tokens: int) -> list[KVCacheBlock]:
        """Grow the block table to cover num_tokens slots."""
        request_id = request.request_id
        req_blocks = self.req_to_blocks.get(request_id)
        if req_blocks is None:
            req_blocks = self.req_to_blocks[request_id] = []
        num_new_blocks = -(-num_tokens // self.block_size) - len(req_blocks)
        if num_new_blocks <= 0:
            return []
        new_blocks = self.block_pool.get_new_blocks(num_new_blocks)
        first = len(req_blocks)
        req_blocks.extend(new_blocks)
        if self.events is not None:
            seq_ids = (request.seq_id,)
            self.events.extend([fast_event(BlockAllocated, (seq_ids, first + i, b.block_id,
                                                            "gpu", b.ref_cnt))
                                for i, b in enumerate(new_blocks)])
        return new_blocks

    def cache_blocks(self, request, num_tokens: int) -> None:
        """Hash and cache the request's full blocks among its first num_tokens tokens
        (nothing when prefix caching is off). allocate_slots caches through
        `_cache_full_blocks` directly, as vLLM's calls its coordinator; the async scheduler
        calls this for every output, so the common case returns without another call."""
        if not self.enable_caching:
            return
        if num_tokens // self.block_size <= self.num_cached_block.get(request.request_id, 0):
            return
        self._cache_full_blocks(request, num_tokens)

    def _cache_full_blocks(self, request, num_tokens: int) -> None:
        """FullAttentionManager.cache_blocks."""
        request_id = request.request_id
        num_cached_blocks = self.num_cached_block.get(request_id, 0)
        num_full_blocks = num_tokens // self.block_size
        if num_cached_blocks >= num_full_blocks:
            return
        self.block_pool.cache_full_blocks(request, self.req_to_blocks[request_id],
                                          num_cached_blocks, num_full_blocks,
                                          self.block_size, self.kv_cache_group_id)
        self.num_cached_block[request_id] = num_full_blocks

    def pop_blocks_for_free(self, request) -> list[KVCacheBlock]:
        """Forget the request's table and return its blocks, not freed yet: the caller
        frees them later, in reverse order (a scheduler deferring frees)."""
        self.num_cached_block.pop(request.request_id, None)
        return self.req_to_blocks.pop(request.request_id, [])

    def free(self, request) -> None:
        """Release the request's blocks, last block first."""
        request_id = request.request_id
        req_blocks = self.req_to_blocks.pop(request_id, [])
        self.block_pool.free_blocks(reversed(req_blocks))
        self.num_cached_block.pop(request_id, None)

    # -- queries -----------------------------------------------------------------------
    def get_blocks(self, request_id: str) -> KVCacheBlocks:
        return KVCacheBlocks((self.req_to_blocks.get(request_id, []),))

    def get_block_ids(self, request_id: str) -> tuple[list[int], ...]:
        return self.get_blocks(request_id).get_block_ids()

    def get_block_ids_for_computed_tokens(self, request_id: str, num_computed_tokens: int
                                          ) -> tuple[list[int], ...]:
        """The leading block ids that cover `num_computed_tokens` tokens (what a KV
        connector is told a finished request holds)."""
        num_valid_blocks = -(-num_computed_tokens // self.block_size)
        return ([b.block_id for b in self.req_to_blocks.get(request_id, ())[:num_valid_blocks]],)

    def evict_blocks(self, block_ids: set[int]) -> None:
        """Drop blocks from the prefix cache by id (a KV connector's invalid blocks)."""
        self.block_pool.evict_blocks(block_ids)

    def get_num_common_prefix_blocks(self, running_request_id: str) -> list[int]:
        """Leading blocks of that request held by every request that holds blocks
        (cascade attention)."""
        num_common_blocks = 0
        num_requests = len(self.req_to_blocks)
        for block in self.req_to_blocks.get(running_request_id, ()):
            if block.ref_cnt == num_requests:
                num_common_blocks += 1
            else:
                break
        return [num_common_blocks]

    def reset_prefix_cache(self) -> bool:
        return self.block_pool.reset_prefix_cache()
