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
from dataclasses import replace

from sim.v1.kv_cache_interface import (
    AttentionSpec,
    ChunkedLocalAttentionSpec,
    FullAttentionSpec,
    KVCacheConfig,
    KVCacheGroupSpec,
    KVCacheSpec,
    KVCacheTensor,
    SlidingWindowSpec,
    cdiv,
)

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


# -- KV cache groups (vllm/v1/core/kv_cache_utils.py: get_kv_cache_groups and helpers) ------
#
# Layers are grouped so that every layer of a group needs the same blocks for every request
# (same attention type and window), and every group has the same page size: one pool of
# equal pages serves them all (docs/design/hybrid_kv_cache_manager.md, "Allocation"). A
# group stands for `group_size` layers; buffer i is shared by layer i of every group, so
# one block id names one page in each of `group_size` buffers.

def create_kv_cache_group_specs(kv_cache_spec: dict[str, KVCacheSpec],
                                grouped_layer_names: list[list[str]]) -> list[KVCacheGroupSpec]:
    """One KVCacheGroupSpec per list of layer names, with the layers' specs merged."""
    groups = []
    for layer_names in grouped_layer_names:
        layer_specs = [kv_cache_spec[name] for name in layer_names]
        groups.append(KVCacheGroupSpec(layer_names, layer_specs[0].merge(layer_specs)))
    return groups


def is_kv_cache_spec_uniform(kv_cache_spec: dict[str, KVCacheSpec]) -> bool:
    """Whether all layers can share one group (full attention with and without a recorded
    window count as one type)."""
    if not kv_cache_spec:
        return True
    specs = list(kv_cache_spec.values())
    try:
        specs[0].merge(specs)
    except AssertionError:
        return False
    return True


def is_uniform_type(kv_cache_spec: dict[str, KVCacheSpec]) -> bool:
    """vLLM's `UniformTypeKVCacheSpecs.is_uniform_type`: one block size and one attention
    type (the same window), whatever the layers' sizes. Such a model gets one group with
    per-layer page sizes in vLLM; the simulation does not model that group."""
    specs = list(kv_cache_spec.values())
    if len({s.block_size for s in specs}) > 1:
        return False
    first = specs[0]
    if isinstance(first, SlidingWindowSpec):
        return all(isinstance(s, SlidingWindowSpec)
                   and s.sliding_window == first.sliding_window for s in specs)
    if isinstance(first, ChunkedLocalAttentionSpec):
        return all(isinstance(s, ChunkedLocalAttentionSpec)
                   and s.attention_chunk_size == first.attention_chunk_size for s in specs)
    return all(type(s) is type(first) for s in specs)


def get_uniform_page_size(kv_cache_specs) -> int:
    page_sizes = {spec.page_size_bytes for spec in kv_cache_specs}
    assert len(page_sizes) == 1, f"page sizes differ: {sorted(page_sizes)}"
    return page_sizes.pop()


def is_kv_cache_page_size_uniform(kv_cache_spec: dict[str, KVCacheSpec]) -> bool:
    return len({spec.page_size_bytes for spec in kv_cache_spec.values()}) == 1


def unify_kv_cache_spec_page_size(
        kv_cache_spec: dict[str, KVCacheSpec]) -> dict[str, KVCacheSpec]:
    """Give every layer the largest page size: a smaller page that divides it gets a
    proportionally larger block size (more tokens per page); one that does not is padded,
    if its backend reads pages by a block stride; otherwise NotImplementedError."""
    page_sizes = {spec.page_size_bytes for spec in kv_cache_spec.values()}
    if len(page_sizes) <= 1:
        return kv_cache_spec
    max_page_size = max(page_sizes)
    new_kv_cache_spec = {}
    for layer_name, layer_spec in kv_cache_spec.items():
        layer_page_size = layer_spec.page_size_bytes
        if layer_page_size == max_page_size:
            new_kv_cache_spec[layer_name] = layer_spec
            continue
        if max_page_size % layer_page_size == 0:
            ratio = max_page_size // layer_page_size
            new_spec = replace(layer_spec, block_size=layer_spec.block_size * ratio)
        elif isinstance(layer_spec, AttentionSpec) and layer_spec.indexes_kv_by_block_stride:
            new_spec = replace(layer_spec, page_size_padded=max_page_size)
        else:
            raise NotImplementedError(
                f"Layer {layer_name}: page size is not divisible by the maximum page size "
                "and cannot be padded. Padding is only supported for attention layers whose "
                "backend indexes KV pages by the block stride (indexes_kv_by_block_stride "
                "is True).")
        assert new_spec.page_size_bytes == max_page_size
        new_kv_cache_spec[layer_name] = new_spec
    return new_kv_cache_spec


def _get_kv_cache_groups_uniform_spec(
        kv_cache_spec: dict[str, KVCacheSpec]) -> list[KVCacheGroupSpec]:
    """Every layer has the same spec: one group of all layers."""
    return create_kv_cache_group_specs(kv_cache_spec, [list(kv_cache_spec)])


def _get_kv_cache_groups_uniform_page_size(
        kv_cache_spec: dict[str, KVCacheSpec]) -> list[KVCacheGroupSpec]:
    """Hybrid models: layers of one spec are split into groups of `group_size` layers
    (the smallest layer count of any type, or the largest when the counts are within
    1.5x of each other), the last group of a type padded. A type with n layers gets
    cdiv(n, group_size) groups, group i taking layers[i::num_groups] (so that pipeline
    stages split evenly). E.g. 10 full + 20 sliding: (full x 10), (sw.0, sw.2, ...),
    (sw.1, sw.3, ...)."""
    same_type_layers: dict[KVCacheSpec, list[str]] = {}
    for layer_name, layer_spec in kv_cache_spec.items():
        same_type_layers.setdefault(layer_spec, []).append(layer_name)
    counts = [len(layers) for layers in same_type_layers.values()]
    min_num_layers, max_num_layers = min(counts), max(counts)
    group_size = min_num_layers
    if max_num_layers < min_num_layers * 1.5:
        # E.g. gpt-oss-20b + an EAGLE layer: 12 sw + 13 full -> (13 sw, 13 full), not
        # (12 sw, 24 full).
        group_size = max_num_layers
    grouped_layers = []
    for layers in same_type_layers.values():
        num_groups = cdiv(len(layers), group_size)
        for i in range(num_groups):
            grouped_layers.append(layers[i::num_groups])
    return create_kv_cache_group_specs(kv_cache_spec, grouped_layers)


def unify_hybrid_kv_cache_specs(kv_cache_spec: dict[str, KVCacheSpec]) -> None:
    """`--disable-hybrid-kv-cache-manager`: turn sliding-window and chunked-local layers
    into full attention (in place) when the model also has full attention layers, so one
    group holds every layer. The compute stays windowed; the memory is not saved."""
    if is_kv_cache_spec_uniform(kv_cache_spec) or is_uniform_type(kv_cache_spec):
        return
    specs = kv_cache_spec.values()
    has_full = any(isinstance(s, FullAttentionSpec) for s in specs)
    has_windowed = any(isinstance(s, (SlidingWindowSpec, ChunkedLocalAttentionSpec))
                       for s in specs)
    if has_full and has_windowed:
        for name, spec in kv_cache_spec.items():
            if isinstance(spec, SlidingWindowSpec):
                kv_cache_spec[name] = FullAttentionSpec(
                    block_size=spec.block_size, num_kv_heads=spec.num_kv_heads,
                    head_size=spec.head_size, head_size_v=spec.head_size_v,
                    dtype=spec.dtype, sliding_window=spec.sliding_window,
                    page_size_padded=spec.page_size_padded)
            elif isinstance(spec, ChunkedLocalAttentionSpec):
                kv_cache_spec[name] = FullAttentionSpec(
                    block_size=spec.block_size, num_kv_heads=spec.num_kv_heads,
                    head_size=spec.head_size, dtype=spec.dtype,
                    attention_chunk_size=spec.attention_chunk_size,
                    page_size_padded=spec.page_size_padded)
    if not (is_kv_cache_spec_uniform(kv_cache_spec) or is_uniform_type(kv_cache_spec)):
        raise ValueError("Hybrid KV cache manager is disabled but failed to convert the KV "
                         "cache specs to one unified type.")


def get_kv_cache_groups(kv_cache_spec: dict[str, KVCacheSpec],
                        disable_hybrid_kv_cache_manager: bool = False
                        ) -> list[KVCacheGroupSpec]:
    """Split the model's layers into KV cache groups (`kv_cache_spec`: layer name -> its
    spec, in layer order; modified in place when the hybrid manager is disabled)."""
    if disable_hybrid_kv_cache_manager:
        unify_hybrid_kv_cache_specs(kv_cache_spec)
    if not kv_cache_spec:
        return []   # attention-free models
    if is_kv_cache_spec_uniform(kv_cache_spec):
        return _get_kv_cache_groups_uniform_spec(kv_cache_spec)
    if is_uniform_type(kv_cache_spec):
        raise NotImplementedError("layers of one attention type with different sizes "
                                  "(vLLM's UniformTypeKVCacheSpecs) are not modelled")
    kv_cache_spec = unify_kv_cache_spec_page_size(kv_cache_spec)
    return _get_kv_cache_groups_uniform_page_size(kv_cache_spec)


def get_num_blocks(num_layers: int, available_memory: int, page_size: int,
                   num_gpu_blocks_override: int | None = None) -> int:
    num_blocks = max(int(available_memory // page_size // num_layers), 0)
    return num_gpu_blocks_override if num_gpu_blocks_override is not None else num_blocks


def get_kv_cache_config_from_groups(kv_cache_groups: list[KVCacheGroupSpec],
                                    available_memory: int,
                                    num_gpu_blocks_override: int | None = None
                                    ) -> KVCacheConfig:
    """Blocks that fit in `available_memory` bytes: `group_size` buffers (the most layers
    of any group), buffer i shared by layer i of every group, each cut into pages of the
    common page size."""
    if not kv_cache_groups:
        return KVCacheConfig(num_blocks=1, kv_cache_tensors=[], kv_cache_groups=[])
    group_size = max(len(group.layer_names) for group in kv_cache_groups)
    page_size = get_uniform_page_size([group.kv_cache_spec for group in kv_cache_groups])
    num_blocks = get_num_blocks(group_size, available_memory, page_size,
                                num_gpu_blocks_override)
    kv_cache_tensors = []
    for i in range(group_size):
        shared_by = [group.layer_names[i] for group in kv_cache_groups
                     if i < len(group.layer_names)]
        kv_cache_tensors.append(KVCacheTensor(size=page_size * num_blocks,
                                              shared_by=shared_by))
    return KVCacheConfig(num_blocks=num_blocks, kv_cache_tensors=kv_cache_tensors,
                         kv_cache_groups=kv_cache_groups)


def max_memory_usage_bytes(kv_cache_specs, max_model_len: int,
                           max_num_batched_tokens: int | None = None) -> int:
    """What one request of max_model_len tokens may hold, summed over the given specs."""
    return sum(spec.max_memory_usage_bytes(max_model_len, max_num_batched_tokens)
               for spec in kv_cache_specs)


def _max_memory_usage_bytes_from_groups(kv_cache_groups: list[KVCacheGroupSpec],
                                        max_model_len: int,
                                        max_num_batched_tokens: int | None = None) -> int:
    """One max_model_len request over every group, padding layers included."""
    if not kv_cache_groups:
        return 0
    group_size = max(len(group.layer_names) for group in kv_cache_groups)
    page_size = get_uniform_page_size([group.kv_cache_spec for group in kv_cache_groups])
    blocks_needed = sum(
        cdiv(group.kv_cache_spec.max_memory_usage_bytes(max_model_len, max_num_batched_tokens),
             page_size) for group in kv_cache_groups)
    return group_size * page_size * blocks_needed


def get_max_concurrency_for_kv_cache_config(kv_cache_config: KVCacheConfig,
                                            max_model_len: int,
                                            max_num_batched_tokens: int | None = None
                                            ) -> float:
    """How many max_model_len requests the pool holds at once: num_blocks over the blocks
    one such request needs in all groups (its windowed groups capped)."""
    groups = kv_cache_config.kv_cache_groups
    num_layer_per_group = max(len(group.layer_names) for group in groups)
    max_memory_usage_per_request = num_layer_per_group * max_memory_usage_bytes(
        (group.kv_cache_spec for group in groups), max_model_len, max_num_batched_tokens)
    memory_per_block = groups[0].kv_cache_spec.page_size_bytes * num_layer_per_group
    num_block_per_request = cdiv(max_memory_usage_per_request, memory_per_block)
    return kv_cache_config.num_blocks / num_block_per_request


def get_kv_cache_capacity(kv_cache_config: KVCacheConfig, max_model_len: int,
                          max_num_batched_tokens: int | None = None) -> tuple[int, float]:
    """vLLM's start-up log: "GPU KV cache size: N tokens" with N = max concurrency x
    max_model_len, and "Maximum concurrency for max_model_len tokens per request: Cx"."""
    max_concurrency = get_max_concurrency_for_kv_cache_config(
        kv_cache_config, max_model_len, max_num_batched_tokens)
    return int(max_concurrency * max_model_len), max_concurrency


def check_enough_kv_cache_memory(kv_cache_groups: list[KVCacheGroupSpec],
                                 available_memory: int, max_model_len: int,
                                 max_num_batched_tokens: int | None = None) -> None:
    """vLLM refuses to start unless one max_model_len request fits."""
    if available_memory <= 0:
        raise ValueError("No available memory for the cache blocks. Try increasing "
                         "`gpu_memory_utilization` when initializing the engine.")
    needed = _max_memory_usage_bytes_from_groups(kv_cache_groups, max_model_len,
                                                 max_num_batched_tokens)
    if needed > available_memory:
        raise ValueError(
            f"To serve at least one request with the model's max seq len ({max_model_len}), "
            f"({needed / 2**30:.2f} GiB KV cache is needed, which is larger than the "
            f"available KV cache memory ({available_memory / 2**30:.2f} GiB).")


def get_kv_cache_config(kv_cache_spec: dict[str, KVCacheSpec], available_memory: int,
                        max_model_len: int, max_num_batched_tokens: int | None = None, *,
                        disable_hybrid_kv_cache_manager: bool = False,
                        num_gpu_blocks_override: int | None = None) -> KVCacheConfig:
    """`get_kv_cache_configs` for one worker: the groups, the memory check, the blocks."""
    groups = get_kv_cache_groups(dict(kv_cache_spec), disable_hybrid_kv_cache_manager)
    if num_gpu_blocks_override is not None and groups:
        group_size = max(len(g.layer_names) for g in groups)
        page_size = get_uniform_page_size([g.kv_cache_spec for g in groups])
        available_memory = num_gpu_blocks_override * page_size * group_size
    if groups:
        check_enough_kv_cache_memory(groups, available_memory, max_model_len,
                                     max_num_batched_tokens)
    return get_kv_cache_config_from_groups(groups, available_memory, num_gpu_blocks_override)


# -- The simulation's layouts (an addition) ---------------------------------------------------

LAYER_TYPES = ("full_attention", "sliding_attention", "chunked_attention")


def attention_layer_specs(layer_types, block_size: int, sliding_window: int | None = None,
                          attention_chunk_size: int | None = None, num_kv_heads: int = 1,
                          head_size: int = 1, dtype: str = "float32"
                          ) -> dict[str, KVCacheSpec]:
    """Layer name -> spec for a model described as Hugging Face configs do (`layer_types`:
    "full_attention", "sliding_attention", "chunked_attention"). The default sizes are
    vLLM's tests' (one head of one number): the engine only needs the grouping."""
    specs: dict[str, KVCacheSpec] = {}
    for i, kind in enumerate(layer_types):
        common = dict(block_size=block_size, num_kv_heads=num_kv_heads,
                      head_size=head_size, dtype=dtype)
        if kind == "full_attention":
            spec: KVCacheSpec = FullAttentionSpec(**common)
        elif kind == "sliding_attention":
            if not sliding_window or sliding_window < 1:
                raise ValueError("sliding window: a whole number of tokens from 1 up")
            spec = SlidingWindowSpec(sliding_window=sliding_window, **common)
        elif kind == "chunked_attention":
            if not attention_chunk_size or attention_chunk_size < 1:
                raise ValueError("attention chunk size: a whole number of tokens from 1 up")
            spec = ChunkedLocalAttentionSpec(attention_chunk_size=attention_chunk_size,
                                             **common)
        else:
            raise ValueError(f"layer type {kind!r}: one of {', '.join(LAYER_TYPES)}")
        specs[f"model.layers.{i}.self_attn"] = spec
    return specs


def make_kv_cache_config(num_blocks: int, kv_cache_spec: dict[str, KVCacheSpec],
                         disable_hybrid_kv_cache_manager: bool = False) -> KVCacheConfig:
    """A KVCacheConfig with exactly `num_blocks` blocks (vLLM's num_gpu_blocks_override)
    for these layers: what the engine needs to run a hybrid model."""
    groups = get_kv_cache_groups(dict(kv_cache_spec), disable_hybrid_kv_cache_manager)
    page_size = get_uniform_page_size([g.kv_cache_spec for g in groups])
    group_size = max(len(g.layer_names) for g in groups)
    return get_kv_cache_config_from_groups(groups, num_blocks * page_size * group_size,
                                           num_gpu_blocks_override=num_blocks)
