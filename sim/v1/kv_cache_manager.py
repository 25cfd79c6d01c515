"""The scheduler's interface to the KV cache (vLLM v0.25.1
`vllm/v1/core/kv_cache_manager.py`: `KVCacheManager`, `KVCacheBlocks`). It owns a
coordinator (`kv_cache_coordinator.py`) with one manager per KV cache group
(`single_type_kv_cache_manager.py`), all drawing from one `BlockPool`.

Built the old way, `KVCacheManager(block_size, num_gpu_blocks, max_model_len, ...)`, it
has one group of full attention (OPT, Llama, Qwen3, ...). Given a `kv_cache_config` (see
`kv_cache_utils.make_kv_cache_config`), it has that config's groups: a hybrid model's
full-attention and sliding-window (or chunked local attention) groups.

One full-attention group takes a fast path, as vLLM's `UnitaryKVCacheCoordinator` keeps
the simple case simple: `allocate_slots`, `get_computed_blocks` and `free` work on that
group's `req_to_blocks` / `num_cached_block` directly, with the same decisions as the
general path (nothing leaves a window in full attention). `req_to_blocks` and
`num_cached_block` are group 0's (the scheduler and the engine read them); every group's
tables are `coordinator.get_blocks(request_id)`.

A KV connector's tokens (`num_external_computed_tokens`) get blocks after the local hit's
(`allocate_new_computed_blocks`), and `delay_cache_blocks` leaves them uncached until they
arrive; `get_block_ids_for_computed_tokens` and `evict_blocks` serve the connector. The
connector path is built for one full-attention group (the disaggregation page's model).

- `get_computed_blocks(request)`: the longest run of leading full blocks whose hashes are
  in the prefix cache, capped at `(num_tokens - 1) // block_size` blocks (the last token is
  always computed, for its logits). It touches nothing; it records the lookup in the
  prefix-cache statistics every time it is called.
- `allocate_slots(...)`: returns the newly allocated blocks (`KVCacheBlocks`, empty when
  none were needed), or None when they do not fit (nothing changed then). Free hit blocks
  (`ref_cnt == 0`) count against the free capacity because touching them takes them out of
  the free queue. Full blocks are hashed and cached here, at scheduling time.
- `free(request)`: its block table is released reversed (last block first).

Order inside `allocate_slots` (the general path): the full-sequence gate (windowed
groups capped at what vLLM's start-up sizing assumed), `remove_skipped_blocks` (blocks
that left a window go back to the pool even if the allocation then fails), the count, the
hits touched in every group, new blocks group by group, then caching.

Additions: `events` receives PrefixCacheHit and BlockAllocated records (GroupBlockAllocated
with several groups; the managers add BlockSkipped, the pool its own); the statistics are
cumulative (vLLM's `make_prefix_cache_stats` hands out and resets an interval's counts for
the logger). Left out: KV connectors' events, encoder-decoder cross attention and
decode-context parallelism; Mamba is not modelled (kv_cache_interface.py).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice

from sim.events import BlockAllocated, GroupBlockAllocated, PrefixCacheHit, fast_event
from sim.v1.kv_cache_coordinator import get_kv_cache_coordinator
from sim.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
from sim.v1.kv_cache_utils import BlockHash, KVCacheBlock
from sim.v1.request import RequestStatus
from sim.v1.single_type_kv_cache_manager import FullAttentionManager

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

    def get_unhashed_block_ids_all_groups(self) -> list[list[int]]:
        """Per group, the blocks without a hash (null blocks left out)."""
        return [[b.block_id for b in group if b.block_hash is None and not b.is_null]
                for group in self.blocks]

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
                 events: list | None = None, *, kv_cache_config: KVCacheConfig | None = None,
                 max_num_batched_tokens: int | None = None) -> None:
        """`kv_cache_config` (optional) gives the KV cache groups; its `num_blocks` must
        equal `num_gpu_blocks` and every group's block size `block_size`. Without it, one
        group of full attention. `max_num_batched_tokens` sizes windowed groups' admission
        cap (default: max_model_len, which makes the cap no tighter than the need)."""
        self.block_size = block_size
        self.max_model_len = max_model_len
        self.enable_caching = enable_caching
        # EAGLE drafters need the last hit block's hidden states: the hit drops it.
        self.use_eagle = use_eagle
        self.log_stats = log_stats
        self.events = events
        if kv_cache_config is None:
            kv_cache_config = KVCacheConfig(num_blocks=num_gpu_blocks, kv_cache_groups=[
                KVCacheGroupSpec(["layer"], FullAttentionSpec(
                    block_size=block_size, num_kv_heads=1, head_size=1, dtype="float32"))])
        elif kv_cache_config.num_blocks != num_gpu_blocks:
            raise ValueError(f"kv_cache_config has {kv_cache_config.num_blocks} blocks but "
                             f"num_gpu_blocks is {num_gpu_blocks}")
        if not kv_cache_config.kv_cache_groups:
            raise ValueError("kv_cache_config: at least one KV cache group")
        self.kv_cache_config = kv_cache_config
        if max_num_batched_tokens is None:
            max_num_batched_tokens = max_model_len
        self.coordinator = get_kv_cache_coordinator(
            kv_cache_config, max_model_len, max_num_batched_tokens, use_eagle,
            enable_caching, scheduler_block_size=block_size, hash_block_size=block_size,
            events=events)
        self.num_kv_cache_groups = len(kv_cache_config.kv_cache_groups)
        self.block_pool = self.coordinator.block_pool
        # The full count, null block included (vLLM: int(watermark * num_blocks)).
        self.watermark_blocks = int(watermark * num_gpu_blocks)
        self.kv_cache_group_id = 0
        managers = self.coordinator.single_type_managers
        # One full-attention group: the fast path, and nothing ever leaves a window, so an
        # allocation that needs no block and fills no block changes nothing (the
        # scheduler skips the call then).
        self.full_attention_only = (self.num_kv_cache_groups == 1
                                    and type(managers[0]) is FullAttentionManager)
        # Group 0's tables (every group's: coordinator.get_blocks).
        self.req_to_blocks: dict[str, list[KVCacheBlock]] = managers[0].req_to_blocks
        self.num_cached_block: dict[str, int] = managers[0].num_cached_block
        self.prefix_cache_stats = PrefixCacheStats()
        self.empty_kv_cache_blocks = KVCacheBlocks(
            tuple(() for _ in range(self.num_kv_cache_groups)))

    @property
    def usage(self) -> float:
        return self.block_pool.get_usage()

    def create_kv_cache_blocks(self, blocks) -> KVCacheBlocks:
        """`blocks`: one list per group (vLLM), or, with one group, that group's list.
        Only one empty instance, to avoid creating one per request per step."""
        if blocks and isinstance(blocks[0], KVCacheBlock):
            blocks = (blocks,)
        return KVCacheBlocks(tuple(blocks)) if any(blocks) else self.empty_kv_cache_blocks

    # -- prefix-cache lookup ---------------------------------------------------------------
    def find_longest_cache_hit(self, block_hashes: Sequence[BlockHash],
                               max_length: int) -> list[KVCacheBlock]:
        """Group 0's blocks of the longest hit of at most max_length tokens that every
        group agrees on. One full-attention group (FullAttentionManager, written out):
        leading blocks whose hashes are cached, at most max_length // block_size of them
        (a chain: the first miss ends it)."""
        if not self.full_attention_only:
            return self.coordinator.find_longest_cache_hit(block_hashes, max_length)[0][0]
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
        """The cached prefix of a waiting request: (hit blocks per group, hit tokens).
        Touches nothing; records the lookup in the statistics."""
        if not self.enable_caching or request.skip_reading_prefix_cache:
            return self.empty_kv_cache_blocks, 0
        # All tokens hit: the last one must still be computed to get its logits.
        max_cache_hit_length = request.num_tokens - 1
        if self.full_attention_only:
            blocks = self.find_longest_cache_hit(request.block_hashes, max_cache_hit_length)
            computed_blocks = self.create_kv_cache_blocks(blocks)
            num_new_computed_tokens = len(blocks) * self.block_size
        else:
            hit_blocks, num_new_computed_tokens = self.coordinator.find_longest_cache_hit(
                request.block_hashes, max_cache_hit_length)
            computed_blocks = self.create_kv_cache_blocks(hit_blocks)
        if self.log_stats:
            self.prefix_cache_stats.record(num_tokens=request.num_tokens,
                                           num_hits=num_new_computed_tokens,
                                           preempted=request.num_preemptions > 0)
        return computed_blocks, num_new_computed_tokens

    # -- allocation ------------------------------------------------------------------------
    def get_num_blocks_to_allocate(self, request_id: str, num_tokens: int,
                                   new_computed_blocks: Sequence[KVCacheBlock]) -> int:
        """Group 0 (FullAttentionManager): new blocks needed for num_tokens slots, plus
        the free hit blocks that touching will take out of the free queue. (Every group:
        `coordinator.get_num_blocks_to_allocate`.)"""
        num_required_blocks = -(-num_tokens // self.block_size)
        req_blocks = self.req_to_blocks.get(request_id)
        num_req_blocks = len(req_blocks) if req_blocks is not None else 0
        if request_id in self.num_cached_block:
            # A running request has no new prefix-cache hits.
            assert len(new_computed_blocks) == 0
            return max(num_required_blocks - num_req_blocks, 0)
        if not self.full_attention_only:
            return self.coordinator.single_type_managers[0].get_num_blocks_to_allocate(
                request_id, num_tokens, new_computed_blocks,
                len(new_computed_blocks) * self.block_size, num_tokens)
        # FullAttentionManager, written out (nothing is ever skipped).
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
        if not self.full_attention_only:
            return self._allocate_slots_groups(
                request, num_new_tokens, num_new_computed_tokens, new_computed_blocks,
                num_lookahead_tokens, num_external_computed_tokens, delay_cache_blocks,
                num_encoder_tokens, full_sequence_must_fit, reserved_blocks,
                has_scheduled_reqs)
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
                                           num_new_computed_tokens,
                                           num_external_computed_tokens)

        new_blocks = self.allocate_new_blocks(request, num_tokens_need_slot)

        if self.enable_caching and not delay_cache_blocks:
            # Drafts and lookahead slots are not cached: at most num_tokens.
            num_tokens_to_cache = min(total_computed_tokens + num_new_tokens, request.num_tokens)
            num_cached_blocks = self.num_cached_block.get(request_id, 0)
            num_full_blocks = num_tokens_to_cache // block_size
            if num_full_blocks > num_cached_blocks:
                # FullAttentionManager.cache_blocks, written out (every block is cached).
                self.block_pool.cache_full_blocks(request, self.req_to_blocks[request_id],
                                                  num_cached_blocks, num_full_blocks,
                                                  block_size, self.kv_cache_group_id)
                self.num_cached_block[request_id] = num_full_blocks
        return KVCacheBlocks((new_blocks,)) if new_blocks else self.empty_kv_cache_blocks

    def _allocate_slots_groups(self, request, num_new_tokens: int,
                               num_new_computed_tokens: int,
                               new_computed_blocks: KVCacheBlocks | None,
                               num_lookahead_tokens: int, num_external_computed_tokens: int,
                               delay_cache_blocks: bool, num_encoder_tokens: int,
                               full_sequence_must_fit: bool, reserved_blocks: int,
                               has_scheduled_reqs: bool) -> KVCacheBlocks | None:
        """allocate_slots over every KV cache group (vLLM's code path)."""
        coordinator = self.coordinator
        request_id = request.request_id
        new_computed_block_list = (new_computed_blocks.blocks if new_computed_blocks is not None
                                   else self.empty_kv_cache_blocks.blocks)
        num_local_computed_tokens = request.num_computed_tokens + num_new_computed_tokens
        total_computed_tokens = min(num_local_computed_tokens + num_external_computed_tokens,
                                    self.max_model_len)
        watermark = 0
        if has_scheduled_reqs and request.status in (_WAITING, _PREEMPTED):
            watermark = self.watermark_blocks
        if full_sequence_must_fit:
            # Admission gate over the whole current sequence; windowed groups count at most
            # what they will ever hold at once.
            full_num_tokens = min(request.num_tokens, self.max_model_len)
            num_blocks = coordinator.get_num_blocks_to_allocate(
                request_id, full_num_tokens, new_computed_block_list, num_encoder_tokens,
                total_computed_tokens, full_num_tokens, apply_admission_cap=True)
            if num_blocks + watermark > self.block_pool.get_num_free_blocks():
                return None
        num_tokens_main_model = total_computed_tokens + num_new_tokens
        num_tokens_need_slot = min(num_tokens_main_model + num_lookahead_tokens,
                                   self.max_model_len)
        # Blocks outside a window go back first (even if the allocation then fails), so
        # that fewer cached blocks are evicted.
        coordinator.remove_skipped_blocks(request_id, total_computed_tokens,
                                          request.num_prompt_tokens)
        num_blocks_to_allocate = coordinator.get_num_blocks_to_allocate(
            request_id, num_tokens_need_slot, new_computed_block_list, num_encoder_tokens,
            num_local_computed_tokens + num_external_computed_tokens, num_tokens_main_model)
        if (num_blocks_to_allocate + watermark
                > self.block_pool.get_num_free_blocks() - reserved_blocks):
            return None
        if (new_computed_block_list is not self.empty_kv_cache_blocks.blocks
                or num_external_computed_tokens > 0):
            coordinator.allocate_new_computed_blocks(request_id, new_computed_block_list,
                                                     num_local_computed_tokens,
                                                     num_external_computed_tokens)
            if self.events is not None:
                tables = coordinator.get_blocks(request_id)
                num_hit_blocks = num_new_computed_tokens // self.block_size
                if num_new_computed_tokens > 0:
                    touched = tuple(b.block_id for table in tables
                                    for b in table[:num_hit_blocks] if not b.is_null)
                    self.events.append(PrefixCacheHit(request_id, touched,
                                                      num_new_computed_tokens))
                # Blocks for a KV connector's tokens, after the hits.
                self._record_new_blocks(request, tuple(
                    [b for b in table[num_hit_blocks:] if not b.is_null] for table in tables))
        new_blocks = coordinator.allocate_new_blocks(request_id, num_tokens_need_slot,
                                                     num_tokens_main_model, num_encoder_tokens)
        if self.events is not None:
            self._record_new_blocks(request, new_blocks)
        if self.enable_caching and not delay_cache_blocks:
            # Drafts and lookahead slots are not cached: at most num_tokens.
            coordinator.cache_blocks(request, min(total_computed_tokens + num_new_tokens,
                                                  request.num_tokens))
        return self.create_kv_cache_blocks(new_blocks)

    def _record_new_blocks(self, request, new_blocks: tuple[list[KVCacheBlock], ...]) -> None:
        request_id = request.request_id
        for group_id, (blocks, table) in enumerate(
                zip(new_blocks, self.coordinator.get_blocks(request_id))):
            first = len(table) - len(blocks)
            for i, b in enumerate(blocks):
                if self.num_kv_cache_groups == 1:
                    self.events.append(BlockAllocated((request.seq_id,), first + i,
                                                      b.block_id, "gpu", b.ref_cnt))
                else:
                    self.events.append(GroupBlockAllocated(request_id, group_id, first + i,
                                                           b.block_id))

    def add_local_computed_blocks(self, request, new_computed_blocks: Sequence[KVCacheBlock],
                                  num_new_computed_tokens: int,
                                  num_external_computed_tokens: int = 0) -> None:
        """One group: attach a new (or resumed) request's hit blocks: touch them and start
        its table."""
        request_id = request.request_id
        if num_external_computed_tokens or not self.full_attention_only:
            self.coordinator.allocate_new_computed_blocks(
                request_id, (new_computed_blocks,),
                request.num_computed_tokens + num_new_computed_tokens,
                num_external_computed_tokens)
            if self.events is not None:
                # Blocks for a KV connector's tokens, after the hits.
                table = self.req_to_blocks.get(request_id, [])
                self._record_new_blocks(request, (table[len(new_computed_blocks):],))
        else:
            # SingleTypeKVCacheManager.add_local_computed_blocks for full attention (nothing
            # skipped), written out: touch the hits and start the table with them.
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
        """One group: grow the block table to cover num_tokens slots."""
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
        """Hash and cache the request's full blocks among its first num_tokens tokens,
        in every group (when prefix caching is on). The async loop calls it for every
        request every step: one full-attention group takes the written-out path."""
        if not self.enable_caching:
            return
        if not self.full_attention_only:
            self.coordinator.cache_blocks(request, num_tokens)
            return
        request_id = request.request_id
        num_cached_blocks = self.num_cached_block.get(request_id, 0)
        num_full_blocks = num_tokens // self.block_size
        if num_cached_blocks >= num_full_blocks:
            return
        self.block_pool.cache_full_blocks(request, self.req_to_blocks[request_id],
                                          num_cached_blocks, num_full_blocks, self.block_size,
                                          self.kv_cache_group_id)
        self.num_cached_block[request_id] = num_full_blocks

    def remove_skipped_blocks(self, request_id: str, total_computed_tokens: int,
                              num_prompt_tokens: int | None = None) -> None:
        """Return the blocks that left a window to the pool (null blocks in their place)."""
        self.coordinator.remove_skipped_blocks(request_id, total_computed_tokens,
                                               num_prompt_tokens)

    def free(self, request) -> None:
        """Release the request's blocks: group by group, each table last block first."""
        if self.full_attention_only:
            request_id = request.request_id
            req_blocks = self.req_to_blocks.pop(request_id, [])
            self.block_pool.free_blocks(reversed(req_blocks))
            self.num_cached_block.pop(request_id, None)
        else:
            self.coordinator.free(request.request_id)

    def pop_blocks_for_free(self, request) -> list[KVCacheBlock]:
        """Forget the request's tables without freeing (the caller frees them later,
        reversed)."""
        return self.coordinator.pop_blocks_for_free(request.request_id)

    def new_step_starts(self) -> None:
        self.coordinator.new_step_starts()

    # -- queries -----------------------------------------------------------------------
    def get_blocks(self, request_id: str) -> KVCacheBlocks:
        """The request's block table in every group."""
        return KVCacheBlocks(self.coordinator.get_blocks(request_id))

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
        """Per group: leading blocks of that request held by every request that holds
        blocks (cascade attention); 0 for windowed groups."""
        if not self.full_attention_only:
            return self.coordinator.get_num_common_prefix_blocks(running_request_id)
        num_common_blocks = 0
        num_requests = len(self.req_to_blocks)
        for block in self.req_to_blocks.get(running_request_id, ()):
            if block.ref_cnt != num_requests:
                break
            num_common_blocks += 1
        return [num_common_blocks]

    def reset_prefix_cache(self) -> bool:
        return self.block_pool.reset_prefix_cache()
