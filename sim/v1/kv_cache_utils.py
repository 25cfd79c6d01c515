"""Block metadata, the free queue and block hashing (vLLM v0.25.1
`vllm/v1/core/kv_cache_utils.py`, with `sha256` of `vllm/utils/hashing.py`).

- `KVCacheBlock`: one physical block's metadata (`block_id`, `ref_cnt`, `block_hash`).
- `FreeKVCacheBlockQueue`: a doubly linked list threaded through the blocks themselves,
  with fake head and tail sentinels; the head is allocated (and so evicted) first;
  `remove` unlinks a block from the middle in O(1) (a prefix-cache hit on a free block).
- Hashing: a full block's hash is `sha256(pickle.dumps((parent_hash, token_ids,
  extra_keys), protocol=5))`, the parent of the first block being `NONE_HASH`. This is
  vLLM's default `sha256` byte for byte. `pickle.dumps` of a tuple of bytes, ints, strs,
  tuples and None is deterministic (CPython's C pickler, which Pyodide also runs, emits the
  same bytes as the pure-Python `pickle._dumps`; memo opcodes only depend on repeated
  *objects*, and no object appears twice in the tuples hashed here), so hashes agree
  between CPython and Pyodide.
- `NONE_HASH`: vLLM draws 32 random bytes at startup unless `PYTHONHASHSEED` is set, and
  then uses `sha256(<the PYTHONHASHSEED string>)`. The simulation always fixes the seed
  (`CacheConfig.hash_seed`, "0" by default: vLLM run with `PYTHONHASHSEED=0`), so runs are
  reproducible and its hash values equal vLLM's for the same tokens and seed.
- Extra keys: only the cache salt (first block only), as `generate_block_hash_extra_keys`
  builds them for a request without LoRA, multimodal inputs or prompt embeddings.
"""
from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Sequence

BlockHash = bytes                # 32 bytes of SHA-256
BlockHashWithGroupId = bytes     # BlockHash + the KV cache group id as 4 big-endian bytes

_PICKLE_PROTOCOL = 5             # pickle.HIGHEST_PROTOCOL in CPython 3.8+ and Pyodide


def sha256(obj) -> bytes:
    """vLLM's default prefix-caching hash: SHA-256 of the object's pickle (protocol 5)."""
    return hashlib.sha256(pickle.dumps(obj, protocol=_PICKLE_PROTOCOL)).digest()


def init_none_hash(hash_fn: Callable = sha256, hash_seed: str = "0") -> BlockHash:
    """The seed of every hash chain: `hash_fn(PYTHONHASHSEED)` (vLLM uses os.urandom(32)
    when PYTHONHASHSEED is unset; the simulation never does). Sets the module's NONE_HASH,
    as vLLM does, and returns it."""
    global NONE_HASH
    NONE_HASH = hash_fn(hash_seed)
    return NONE_HASH


NONE_HASH: BlockHash = sha256("0")


def hash_prefix(block_hash: bytes | None, n: int = 8) -> str | None:
    """A short hex prefix of a hash, for pictures and text (`n` hex digits)."""
    if block_hash is None:
        return None
    return block_hash[:(n + 1) // 2].hex()[:n]


def hash_block_tokens(hash_function: Callable, parent_block_hash: BlockHash | None,
                      curr_block_token_ids: Sequence[int], extra_keys: tuple | None = None,
                      none_hash: BlockHash | None = None) -> BlockHash:
    """The hash of one full block, chained to its parent's (NONE_HASH for the first).
    `none_hash` (an addition) lets an engine use its own seed instead of the module's."""
    if not parent_block_hash:
        parent_block_hash = none_hash if none_hash is not None else NONE_HASH
    return hash_function((parent_block_hash, tuple(curr_block_token_ids), extra_keys))


def generate_block_hash_extra_keys(request, start_token_idx: int, end_token_idx: int,
                                   start_mm_idx: int = 0) -> tuple[tuple | None, int]:
    """The extra keys of the block [start_token_idx, end_token_idx): here only the cache
    salt, on the first block (LoRA names, multimodal items and prompt embeddings are not
    simulated). Returns (extra_keys or None, next multimodal index) as vLLM does."""
    salt = request.cache_salt
    if start_token_idx == 0 and salt:
        return (salt,), start_mm_idx
    return None, start_mm_idx


def make_block_hash_with_group_id(block_hash: BlockHash, group_id: int) -> BlockHashWithGroupId:
    """The key of the prefix-cache map: the hash with the KV cache group id appended."""
    return block_hash + group_id.to_bytes(4, "big", signed=False)


def get_block_hash(key: BlockHashWithGroupId) -> BlockHash:
    return key[:-4]


def get_group_id(key: BlockHashWithGroupId) -> int:
    return int.from_bytes(key[-4:], "big", signed=False)


def get_request_block_hasher(block_size: int, caching_hash_fn: Callable = sha256,
                             none_hash: BlockHash | None = None):
    """A function that returns the hashes of a request's newly completed full blocks:
    from `len(request.block_hashes)` on, over prompt and output tokens alike."""

    def request_block_hasher(request) -> list[BlockHash]:
        start_token_idx = len(request.block_hashes) * block_size
        num_tokens = request.num_tokens
        if start_token_idx + block_size > num_tokens:
            return []   # no new full block
        prev_block_hash_value = request.block_hashes[-1] if request.block_hashes else None
        tokens = request.all_token_ids
        new_block_hashes: list[BlockHash] = []
        curr_mm_idx = 0
        while True:
            end_token_idx = start_token_idx + block_size
            if end_token_idx > num_tokens:
                break
            extra_keys, curr_mm_idx = generate_block_hash_extra_keys(
                request, start_token_idx, end_token_idx, curr_mm_idx)
            block_hash = hash_block_tokens(caching_hash_fn, prev_block_hash_value,
                                           tokens[start_token_idx:end_token_idx],
                                           extra_keys, none_hash)
            new_block_hashes.append(block_hash)
            start_token_idx += block_size
            prev_block_hash_value = block_hash
        return new_block_hashes

    return request_block_hasher


class KVCacheBlock:
    """One KV cache block's metadata. `ref_cnt`: how many requests' block tables hold it.
    `block_hash`: the prefix-cache key (hash + group id) while the block is cached."""

    __slots__ = ("block_id", "ref_cnt", "block_hash", "block_hash_num_tokens",
                 "prev_free_block", "next_free_block", "is_null")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_cnt = 0
        # vLLM keeps `_block_hash` behind a `block_hash` property; a plain attribute here
        # (the pool reads it for every block it hands out or frees). Set it only through
        # set_block_hash, which checks the block has none yet.
        self.block_hash: BlockHashWithGroupId | None = None
        # The prefix length (tokens) the hash covers: (logical index + 1) * block_size.
        self.block_hash_num_tokens = 0
        self.prev_free_block: KVCacheBlock | None = None
        self.next_free_block: KVCacheBlock | None = None
        self.is_null = False

    def set_block_hash(self, block_hash: BlockHashWithGroupId, num_tokens: int = 0) -> None:
        assert self.block_hash is None, "The block already has a hash. This should not happen."
        self.block_hash = block_hash
        self.block_hash_num_tokens = num_tokens

    def reset_hash(self) -> None:
        """Forget the hash when the block is evicted."""
        self.block_hash = None
        self.block_hash_num_tokens = 0

    def __repr__(self) -> str:
        prev_id = self.prev_free_block.block_id if self.prev_free_block else None
        next_id = self.next_free_block.block_id if self.next_free_block else None
        return (f"KVCacheBlock(block_id={self.block_id}, ref_cnt={self.ref_cnt}, "
                f"block_hash={hash_prefix(self.block_hash)}, prev_free_block={prev_id}, "
                f"next_free_block={next_id})")


class FreeKVCacheBlockQueue:
    """The free blocks as a doubly linked list through the blocks' own prev/next fields.

    Order: head = the next block handed out (and, when it still holds a cached hash, the
    next one evicted); tail = the last. Built in block-id order; `BlockPool` then pops block
    0 (the null block). `remove` takes a block out of the middle in O(1).
    """

    def __init__(self, blocks: list[KVCacheBlock]) -> None:
        self.num_free_blocks = len(blocks)
        for i in range(self.num_free_blocks):
            if i > 0:
                blocks[i].prev_free_block = blocks[i - 1]
            if i < self.num_free_blocks - 1:
                blocks[i].next_free_block = blocks[i + 1]
        # Fake head and tail (id -1) so that no operation needs a special case.
        self.fake_free_list_head = KVCacheBlock(block_id=-1)
        self.fake_free_list_tail = KVCacheBlock(block_id=-1)
        if self.num_free_blocks > 0:
            self.fake_free_list_head.next_free_block = blocks[0]
            blocks[0].prev_free_block = self.fake_free_list_head
            self.fake_free_list_tail.prev_free_block = blocks[-1]
            blocks[-1].next_free_block = self.fake_free_list_tail
        else:
            self.fake_free_list_head.next_free_block = self.fake_free_list_tail
            self.fake_free_list_tail.prev_free_block = self.fake_free_list_head

    def popleft(self) -> KVCacheBlock:
        """Take the head block."""
        head = self.fake_free_list_head
        first_block = head.next_free_block
        if first_block is self.fake_free_list_tail or first_block is None:
            assert self.num_free_blocks == 0, (
                f"num_free_blocks ({self.num_free_blocks}) is out of sync with the free list.")
            raise ValueError("No free blocks available")
        if first_block.next_free_block is None:
            raise RuntimeError("Invalid block found in popleft() which doesn't have a "
                               "valid next_free_block")
        head.next_free_block = first_block.next_free_block
        first_block.next_free_block.prev_free_block = head
        first_block.prev_free_block = first_block.next_free_block = None
        self.num_free_blocks -= 1
        return first_block

    def popleft_n(self, n: int) -> list[KVCacheBlock]:
        """Take the first n blocks, in queue order."""
        if n == 0:
            return []
        assert self.num_free_blocks >= n
        self.num_free_blocks -= n
        curr_block = self.fake_free_list_head.next_free_block
        ret = []
        for _ in range(n):
            assert curr_block is not None
            ret.append(curr_block)
            last_block = curr_block
            curr_block = curr_block.next_free_block
            last_block.prev_free_block = None
            last_block.next_free_block = None
        if curr_block is not None:
            self.fake_free_list_head.next_free_block = curr_block
            curr_block.prev_free_block = self.fake_free_list_head
        return ret

    def remove(self, block: KVCacheBlock) -> None:
        """Unlink a block from anywhere in the queue."""
        if block.prev_free_block is None or block.next_free_block is None:
            raise RuntimeError(f"remove() called on an invalid block: {block}")
        block.prev_free_block.next_free_block = block.next_free_block
        block.next_free_block.prev_free_block = block.prev_free_block
        block.prev_free_block = block.next_free_block = None
        self.num_free_blocks -= 1

    def append(self, block: KVCacheBlock) -> None:
        """Put a block at the tail."""
        tail = self.fake_free_list_tail
        last_block = tail.prev_free_block
        if last_block is None:
            raise RuntimeError("prev_free_block of fake_free_list_tail should always exist")
        last_block.next_free_block = block
        block.prev_free_block = last_block
        block.next_free_block = tail
        tail.prev_free_block = block
        self.num_free_blocks += 1

    def append_n(self, blocks: list[KVCacheBlock]) -> None:
        """Put blocks at the tail, in list order."""
        if not blocks:
            return
        tail = self.fake_free_list_tail
        last_block = tail.prev_free_block
        assert last_block is not None
        for block in blocks:
            block.prev_free_block = last_block
            last_block.next_free_block = block
            last_block = block
        last_block.next_free_block = tail
        tail.prev_free_block = last_block
        self.num_free_blocks += len(blocks)

    def prepend_n(self, blocks: list[KVCacheBlock]) -> None:
        """Put blocks at the head, keeping list order (blocks[0] becomes the new head)."""
        if not blocks:
            return
        head = self.fake_free_list_head
        first_block = head.next_free_block
        assert first_block is not None
        prev = head
        for block in blocks:
            block.prev_free_block = prev
            prev.next_free_block = block
            prev = block
        prev.next_free_block = first_block
        first_block.prev_free_block = prev
        self.num_free_blocks += len(blocks)

    def get_all_free_blocks(self) -> list[KVCacheBlock]:
        """Every free block, head to tail (tests and pictures)."""
        ret = []
        curr_block = self.fake_free_list_head.next_free_block
        tail = self.fake_free_list_tail
        while curr_block is not None and curr_block is not tail:
            ret.append(curr_block)
            curr_block = curr_block.next_free_block
        return ret
