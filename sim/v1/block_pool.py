"""The pool of KV cache blocks (vLLM v0.25.1 `vllm/v1/core/block_pool.py`): allocate, touch,
free, cache, evict.

- Block 0 is the null block: popped from the free queue at construction and never handed
  out, so a pool of `num_gpu_blocks` has `num_gpu_blocks - 1` usable blocks.
- `get_new_blocks(n)` pops n blocks from the head of the free queue; a popped block that
  still carries a hash is evicted from the prefix cache right then (eviction is lazy: a
  freed block keeps its hash and can be revived by a hit until it is reused).
- `touch(blocks)`: a prefix-cache hit takes a reference; a block with `ref_cnt == 0` is
  first unlinked from the free queue.
- `free_blocks(ordered)`: the caller passes a block table reversed; blocks that reach
  `ref_cnt == 0` without a hash go to the HEAD of the free queue (reused first), hashed ones
  to the TAIL in the given order (so a request's last full block is evicted first).
- `cache_full_blocks`: at scheduling time, each newly full block gets its request's hash
  for that position and enters the hash map. The map is not de-duplicated: two blocks with
  one hash are both kept (`BlockHashToBlockMap`), the earliest inserted one is returned.

Additions: `events` (a list, or None) receives BlockEvicted, BlockCached, BlockTouched and
BlockFreed records (sim/events.py). Left out: KV cache events for connectors, the metrics
collector, partial-block caching. Hybrid models: every KV cache group draws from this one
pool; a block's hash key carries its group id, so groups are cached and evicted apart.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from sim.events import BlockCached, BlockEvicted, BlockFreed, BlockTouched, fast_event
from sim.v1.kv_cache_utils import (
    BlockHash,
    BlockHashWithGroupId,
    FreeKVCacheBlockQueue,
    KVCacheBlock,
    make_block_hash_with_group_id,
)


class BlockHashToBlockMap:
    """Prefix cache: hash key -> a block, or {block_id: block} when several blocks carry
    the same hash (identical blocks filled by different requests)."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[BlockHashWithGroupId, KVCacheBlock | dict[int, KVCacheBlock]] = {}

    def get_one_block(self, key: BlockHashWithGroupId) -> KVCacheBlock | None:
        """Any block with this key: the earliest inserted one still present."""
        blocks = self._cache.get(key)
        if blocks is not None:
            if isinstance(blocks, KVCacheBlock):
                return blocks
            return next(iter(blocks.values()))
        return None

    def insert(self, key: BlockHashWithGroupId, block: KVCacheBlock) -> None:
        blocks = self._cache.get(key)
        if blocks is None:
            self._cache[key] = block
        elif isinstance(blocks, KVCacheBlock):
            self._cache[key] = {blocks.block_id: blocks, block.block_id: block}
        else:
            blocks[block.block_id] = block

    def pop(self, key: BlockHashWithGroupId, block_id: int) -> KVCacheBlock | None:
        """Remove this block from under the key; None if it was not there."""
        blocks = self._cache.pop(key, None)
        if blocks is None:
            return None
        if isinstance(blocks, KVCacheBlock):
            if blocks.block_id == block_id:
                return blocks
            self._cache[key] = blocks   # another block under the key: put it back
            return None
        block = blocks.pop(block_id, None)
        if len(blocks) > 0:
            self._cache[key] = blocks
        return block

    def items(self):
        """(key, block) for every cached block (an addition, for checks and snapshots)."""
        for key, blocks in self._cache.items():
            if isinstance(blocks, KVCacheBlock):
                yield key, blocks
            else:
                for block in blocks.values():
                    yield key, block

    def __contains__(self, key: BlockHashWithGroupId) -> bool:
        return key in self._cache

    def __len__(self) -> int:
        return len(self._cache)


class BlockPool:
    """All KV cache blocks of the GPU, the free queue and the prefix-cache map."""

    def __init__(self, num_gpu_blocks: int, enable_caching: bool, hash_block_size: int,
                 events: list | None = None) -> None:
        assert isinstance(num_gpu_blocks, int) and num_gpu_blocks > 0
        self.num_gpu_blocks = num_gpu_blocks
        self.enable_caching = enable_caching
        self.hash_block_size = hash_block_size
        self.blocks: list[KVCacheBlock] = [KVCacheBlock(idx) for idx in range(num_gpu_blocks)]
        # Free blocks, eviction candidates (freed blocks that keep a hash) included.
        self.free_block_queue = FreeKVCacheBlockQueue(self.blocks)
        self.cached_block_hash_to_block = BlockHashToBlockMap()
        # Block 0 stands for "no block" in block tables (sliding window, Mamba); its
        # ref_cnt is not maintained and it never returns to the free queue.
        self.null_block = self.free_block_queue.popleft()
        self.null_block.is_null = True
        self.events = events
        self.num_evicted_blocks = 0   # an addition: cumulative evictions

    def get_cached_block(self, block_hash: BlockHash,
                         kv_cache_group_ids: Sequence[int] = (0,)) -> list[KVCacheBlock] | None:
        """The cached block for this hash in each group, or None on a miss in any group."""
        cached_blocks = []
        for group_id in kv_cache_group_ids:
            block = self.cached_block_hash_to_block.get_one_block(
                make_block_hash_with_group_id(block_hash, group_id))
            if not block:
                return None
            cached_blocks.append(block)
        return cached_blocks

    def cache_full_blocks(self, request, blocks: list[KVCacheBlock], num_cached_blocks: int,
                          num_full_blocks: int, block_size: int,
                          kv_cache_group_id: int = 0,
                          block_mask: list[bool] | None = None) -> None:
        """Give blocks[num_cached_blocks:num_full_blocks] the request's hashes for those
        positions and put them in the prefix cache. Null blocks, and blocks whose
        `block_mask` entry is False (no hit could use them), are skipped."""
        if num_cached_blocks >= num_full_blocks:
            return
        new_full_blocks = blocks[num_cached_blocks:num_full_blocks]
        block_hashes = request.block_hashes
        assert len(block_hashes) >= num_full_blocks
        events = self.events
        insert = self.cached_block_hash_to_block.insert
        group_id = kv_cache_group_id.to_bytes(4, "big")   # make_block_hash_with_group_id
        logical = num_cached_blocks
        for i, blk in enumerate(new_full_blocks):
            if blk.is_null or (block_mask is not None and not block_mask[i]):
                logical += 1
                continue
            key = block_hashes[logical] + group_id
            if blk.block_hash is not None:
                # Already cached (a prefix-cache hit): it must carry this position's hash.
                assert blk.block_hash == key, (
                    "Cached block has wrong hash. This indicates the wrong block was "
                    "assigned from prefix cache.")
                logical += 1
                continue
            blk.set_block_hash(key, (logical + 1) * block_size)
            insert(key, blk)
            if events is not None:
                events.append(fast_event(BlockCached, (blk.block_id, key[:4].hex(),
                                                       request.request_id, logical)))
            logical += 1

    def get_new_blocks(self, num_blocks: int) -> list[KVCacheBlock]:
        """Pop `num_blocks` from the head of the free queue (evicting any cached hash)."""
        if num_blocks > self.get_num_free_blocks():
            raise ValueError(f"Cannot get {num_blocks} free blocks from the pool")
        ret = self.free_block_queue.popleft_n(num_blocks)
        if self.enable_caching:
            for block in ret:
                if block.block_hash is not None:   # else nothing to evict
                    self._maybe_evict_cached_block(block)
                assert block.ref_cnt == 0
                block.ref_cnt = 1
        else:
            for block in ret:
                assert block.ref_cnt == 0
                block.ref_cnt += 1
        return ret

    def _maybe_evict_cached_block(self, block: KVCacheBlock) -> bool:
        """Drop the block's entry from the prefix cache and reset its hash."""
        block_hash = block.block_hash
        if block_hash is None:
            return False
        if self.cached_block_hash_to_block.pop(block_hash, block.block_id) is None:
            return False
        block.reset_hash()
        self.num_evicted_blocks += 1
        if self.events is not None:
            self.events.append(fast_event(BlockEvicted, (block.block_id,
                                                         block_hash[:4].hex())))
        return True

    def touch(self, blocks: Sequence[KVCacheBlock]) -> None:
        """A prefix-cache hit: +1 reference each; free ones leave the free queue."""
        events = self.events
        for block in blocks:
            if block.ref_cnt == 0 and not block.is_null:
                self.free_block_queue.remove(block)
            block.ref_cnt += 1
            if events is not None:
                events.append(BlockTouched(block.block_id, block.ref_cnt))

    def free_blocks(self, ordered_blocks: Iterable[KVCacheBlock]) -> None:
        """Drop one reference from each block, in eviction-priority order (the first is
        evicted first). Blocks that reach 0: unhashed ones to the head of the free queue,
        hashed ones to the tail."""
        blocks_list = list(ordered_blocks)
        for block in blocks_list:
            block.ref_cnt -= 1
        freeable = [b for b in blocks_list if b.ref_cnt == 0 and not b.is_null]
        if not freeable:
            return
        fresh_blocks = [b for b in freeable if b.block_hash is None]
        cached_blocks = [b for b in freeable if b.block_hash is not None]
        if fresh_blocks:
            self.free_block_queue.prepend_n(fresh_blocks)
        if cached_blocks:
            self.free_block_queue.append_n(cached_blocks)
        if self.events is not None:
            self.events.extend([fast_event(BlockFreed, ("gpu", b.block_id)) for b in freeable])

    def evict_blocks(self, block_ids: set[int]) -> None:
        """Drop blocks from the prefix cache by id (KV connectors use it; not the engine)."""
        for block_id in block_ids:
            assert block_id < len(self.blocks)
            self._maybe_evict_cached_block(self.blocks[block_id])

    def reset_prefix_cache(self) -> bool:
        """Forget every hash; only possible when no block is in use (else False)."""
        num_used_blocks = self.num_gpu_blocks - self.get_num_free_blocks()
        if num_used_blocks != 1:   # the null block is always counted as used
            return False
        self.cached_block_hash_to_block = BlockHashToBlockMap()
        for block in self.blocks:
            block.reset_hash()
        return True

    def get_num_free_blocks(self) -> int:
        return self.free_block_queue.num_free_blocks

    def get_usage(self) -> float:
        """Fraction of the usable blocks (null block excluded) in use; cached-but-free
        blocks count as free."""
        total_gpu_blocks = self.num_gpu_blocks - 1
        if not total_gpu_blocks:
            return 0
        return 1.0 - (self.get_num_free_blocks() / total_gpu_blocks)
