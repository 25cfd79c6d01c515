"""KVCacheBlock, the free queue and block hashing (sim/v1/kv_cache_utils.py), each against
an example worked out from vLLM v0.25.1's `vllm/v1/core/kv_cache_utils.py`."""
import hashlib
import pickle

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sim.core.sequence import SamplingParams
from sim.v1 import kv_cache_utils as ku
from sim.v1.kv_cache_utils import (
    FreeKVCacheBlockQueue,
    KVCacheBlock,
    get_block_hash,
    get_group_id,
    get_request_block_hasher,
    hash_block_tokens,
    hash_prefix,
    init_none_hash,
    make_block_hash_with_group_id,
    sha256,
)
from sim.v1.request import Request


def ids(blocks):
    return [b.block_id for b in blocks]


def queue(n):
    blocks = [KVCacheBlock(i) for i in range(n)]
    return blocks, FreeKVCacheBlockQueue(blocks)


# -- KVCacheBlock ----------------------------------------------------------------------------
def test_block_starts_free_of_references_and_hash():
    b = KVCacheBlock(3)
    assert (b.block_id, b.ref_cnt, b.block_hash, b.is_null) == (3, 0, None, False)


def test_block_hash_is_set_once_and_reset_on_eviction():
    b = KVCacheBlock(1)
    b.set_block_hash(b"h" * 36, 8)
    assert b.block_hash == b"h" * 36 and b.block_hash_num_tokens == 8
    with pytest.raises(AssertionError):
        b.set_block_hash(b"x" * 36, 8)
    b.reset_hash()
    assert b.block_hash is None and b.block_hash_num_tokens == 0
    b.set_block_hash(b"y" * 36, 4)
    assert b.block_hash == b"y" * 36


# -- FreeKVCacheBlockQueue ------------------------------------------------------------------
def test_queue_starts_in_block_id_order_head_first():
    blocks, q = queue(5)
    assert q.num_free_blocks == 5
    assert ids(q.get_all_free_blocks()) == [0, 1, 2, 3, 4]
    assert q.fake_free_list_head.block_id == -1 == q.fake_free_list_tail.block_id


def test_popleft_takes_the_head():
    blocks, q = queue(4)
    assert q.popleft().block_id == 0
    assert ids(q.popleft_n(2)) == [1, 2]
    assert ids(q.get_all_free_blocks()) == [3] and q.num_free_blocks == 1
    assert blocks[1].prev_free_block is None and blocks[1].next_free_block is None


def test_popleft_of_an_empty_queue_raises():
    _, q = queue(1)
    q.popleft()
    with pytest.raises(ValueError, match="No free blocks"):
        q.popleft()
    assert q.popleft_n(0) == []


def test_remove_unlinks_from_the_middle():
    blocks, q = queue(5)
    q.remove(blocks[2])
    assert ids(q.get_all_free_blocks()) == [0, 1, 3, 4] and q.num_free_blocks == 4
    with pytest.raises(RuntimeError):
        q.remove(blocks[2])   # not in the queue any more


def test_append_goes_to_the_tail_and_prepend_to_the_head_in_list_order():
    blocks, q = queue(6)
    taken = q.popleft_n(4)                  # 0 1 2 3; queue [4, 5]
    q.append(taken[0])                      # [4, 5, 0]
    q.append_n([taken[2], taken[1]])        # [4, 5, 0, 2, 1]
    q.prepend_n([taken[3]])                 # [3, 4, 5, 0, 2, 1]
    assert ids(q.get_all_free_blocks()) == [3, 4, 5, 0, 2, 1]
    assert q.num_free_blocks == 6
    q.popleft_n(6)
    q.prepend_n([blocks[5], blocks[4]])     # into an empty queue
    q.append_n([])
    q.prepend_n([])
    assert ids(q.get_all_free_blocks()) == [5, 4] and q.num_free_blocks == 2


def test_empty_queue_links_head_to_tail():
    q = FreeKVCacheBlockQueue([])
    assert q.num_free_blocks == 0 and q.get_all_free_blocks() == []
    b = KVCacheBlock(7)
    q.append(b)
    assert ids(q.get_all_free_blocks()) == [7]


class FreeQueueMachine(RuleBasedStateMachine):
    """The linked list against a Python list, over random pops, removes, appends and
    prepends."""

    def __init__(self):
        super().__init__()
        self.blocks = [KVCacheBlock(i) for i in range(12)]
        self.q = FreeKVCacheBlockQueue(self.blocks)
        self.model = list(range(12))
        self.out: list[int] = []

    @precondition(lambda self: self.model)
    @rule(n=st.integers(1, 4))
    def pop(self, n):
        n = min(n, len(self.model))
        got = ids(self.q.popleft_n(n)) if n > 1 else [self.q.popleft().block_id]
        assert got == self.model[:n]
        self.model = self.model[n:]
        self.out += got

    @precondition(lambda self: self.model)
    @rule(i=st.integers(0, 100))
    def remove(self, i):
        bid = self.model[i % len(self.model)]
        self.q.remove(self.blocks[bid])
        self.model.remove(bid)
        self.out.append(bid)

    @precondition(lambda self: self.out)
    @rule(k=st.integers(1, 3), front=st.booleans())
    def give_back(self, k, front):
        back = self.out[-k:]
        self.out = self.out[:-k]
        if front:
            self.q.prepend_n([self.blocks[b] for b in back])
            self.model = back + self.model
        else:
            self.q.append_n([self.blocks[b] for b in back])
            self.model = self.model + back

    @invariant()
    def agrees(self):
        assert ids(self.q.get_all_free_blocks()) == self.model
        assert self.q.num_free_blocks == len(self.model)


TestFreeQueueMachine = FreeQueueMachine.TestCase
TestFreeQueueMachine.settings = settings(max_examples=60, stateful_step_count=40,
                                         deadline=None)


# -- hashing ---------------------------------------------------------------------------------
def test_none_hash_is_sha256_of_the_pickled_seed_as_with_pythonhashseed():
    # vLLM: NONE_HASH = hash_fn(os.getenv("PYTHONHASHSEED")) when the variable is set.
    expected = hashlib.sha256(pickle.dumps("0", protocol=5)).digest()
    assert sha256("0") == expected == ku.NONE_HASH
    assert init_none_hash(sha256, "0") == expected
    # A fixed value: CPython and Pyodide must agree on it (pickle protocol 5 bytes).
    assert pickle.dumps("0", protocol=5).hex() == "80059505000000000000008c0130942e"
    assert hash_prefix(expected) == expected[:4].hex()


def test_pickle_of_the_hashed_tuple_is_the_pure_python_pickle():
    # The C pickler (CPython, Pyodide) and the pure-Python one emit the same bytes for the
    # tuples hashed here: bytes, a tuple of ints (small and large), None or a salt.
    for obj in [(b"\x01" * 32, (1, 2, 300, 70000, 2 ** 40), None),
                (b"\x02" * 32, tuple(range(16)), ("salt",))]:
        assert pickle.dumps(obj, protocol=5) == pickle._dumps(obj, protocol=5)


def test_block_hash_chains_parent_tokens_and_extra_keys():
    h0 = hash_block_tokens(sha256, None, [1, 2, 3, 4])
    assert h0 == hashlib.sha256(pickle.dumps((ku.NONE_HASH, (1, 2, 3, 4), None),
                                             protocol=5)).digest()
    h1 = hash_block_tokens(sha256, h0, (5, 6, 7, 8))
    assert h1 == sha256((h0, (5, 6, 7, 8), None))
    # Same tokens under another parent, or with a salt: another hash.
    assert hash_block_tokens(sha256, None, [5, 6, 7, 8]) != h1
    assert hash_block_tokens(sha256, None, [1, 2, 3, 4], ("s",)) != h0
    # An engine's own seed.
    other = sha256("1")
    assert hash_block_tokens(sha256, None, [1, 2, 3, 4], none_hash=other) != h0


def test_group_id_is_appended_big_endian():
    key = make_block_hash_with_group_id(b"\xab" * 32, 1)
    assert key == b"\xab" * 32 + b"\x00\x00\x00\x01"
    assert get_block_hash(key) == b"\xab" * 32 and get_group_id(key) == 1


def make_request(tokens, block_size=4, salt=None, max_tokens=8):
    return Request("r", tokens, SamplingParams(max_tokens=max_tokens), eos_token_id=2,
                   cache_salt=salt, block_hasher=get_request_block_hasher(block_size, sha256),
                   block_size=block_size)


def test_request_hashes_only_full_blocks_and_grows_with_outputs():
    req = make_request(list(range(10, 20)))          # 10 tokens, blocks of 4: 2 full
    h0 = hash_block_tokens(sha256, None, [10, 11, 12, 13])
    h1 = hash_block_tokens(sha256, h0, [14, 15, 16, 17])
    assert req.block_hashes == [h0, h1]
    req.append_output_token_ids(20)
    assert len(req.block_hashes) == 2                # 11 tokens
    req.append_output_token_ids([21, 22])           # 13 tokens: block 2 = 18 19 20 21
    assert req.block_hashes[2] == hash_block_tokens(sha256, h1, [18, 19, 20, 21])
    assert len(req.block_hashes) == 3


def test_cache_salt_changes_only_the_first_block_key():
    plain = make_request(list(range(8)))
    salted = make_request(list(range(8)), salt="tenant-a")
    assert plain.block_hashes[0] != salted.block_hashes[0]
    assert salted.block_hashes[0] == hash_block_tokens(sha256, None, range(4), ("tenant-a",))
    # The second block's own extra keys are None; it differs only through its parent.
    assert salted.block_hashes[1] == hash_block_tokens(sha256, salted.block_hashes[0],
                                                       range(4, 8), None)


def test_hash_prefix():
    assert hash_prefix(None) is None
    assert hash_prefix(bytes.fromhex("0123456789")) == "01234567"
    assert hash_prefix(bytes.fromhex("0123456789"), 5) == "01234"


# -- KV cache groups: vLLM's tests/v1/core/test_kv_cache_utils.py grouping tests -------------
# Skipped: test_get_kv_cache_configs_multiple_workers / _pp_sharding and
# test_project_kv_cache_groups_to_worker (one worker here), test_estimate_max_model_len and
# the auto-fit tests (max_model_len is given), test_generate_uniform_type_kv_cache_specs
# and the UniformTypeKVCacheSpecs cases (not modelled), the MLA/DeepSeek V4 and prompt-embeds
# tests (not modelled).

from sim.v1.kv_cache_interface import (  # noqa: E402
    ChunkedLocalAttentionSpec,
    FullAttentionSpec,
    KVCacheConfig,
    KVCacheGroupSpec,
    KVCacheTensor,
    SlidingWindowSpec,
)


def new_kv_cache_spec(block_size=16, num_kv_heads=2, head_size=64, dtype="float32",
                      page_size_padded=None, sliding_window=None, attention_chunk_size=None,
                      indexes_kv_by_block_stride=False):
    return FullAttentionSpec(block_size=block_size, num_kv_heads=num_kv_heads,
                             head_size=head_size, dtype=dtype,
                             page_size_padded=page_size_padded, sliding_window=sliding_window,
                             attention_chunk_size=attention_chunk_size,
                             indexes_kv_by_block_stride=indexes_kv_by_block_stride)


def new_sliding_window_spec(block_size=16, num_kv_heads=2, head_size=64, dtype="float32",
                            page_size_padded=None, sliding_window=1,
                            indexes_kv_by_block_stride=False):
    return SlidingWindowSpec(block_size=block_size, num_kv_heads=num_kv_heads,
                             head_size=head_size, dtype=dtype,
                             page_size_padded=page_size_padded, sliding_window=sliding_window,
                             indexes_kv_by_block_stride=indexes_kv_by_block_stride)


def new_chunked_local_attention_spec(block_size=16, num_kv_heads=2, head_size=64,
                                     dtype="float32", page_size_padded=None,
                                     attention_chunk_size=4):
    return ChunkedLocalAttentionSpec(block_size=block_size, num_kv_heads=num_kv_heads,
                                     head_size=head_size, dtype=dtype,
                                     page_size_padded=page_size_padded,
                                     attention_chunk_size=attention_chunk_size)


def test_is_kv_cache_spec_uniform():
    uniform = ku.is_kv_cache_spec_uniform
    assert uniform({"layer_1": new_kv_cache_spec(num_kv_heads=32),
                    "layer_2": new_kv_cache_spec(num_kv_heads=32)})
    assert uniform({"layer_1": new_kv_cache_spec(num_kv_heads=32),
                    "layer_2": new_kv_cache_spec(num_kv_heads=32, sliding_window=1)})
    assert not uniform({"layer_1": new_kv_cache_spec(num_kv_heads=32),
                        "layer_2": new_sliding_window_spec(num_kv_heads=32, sliding_window=1)})
    assert uniform({"layer_1": new_sliding_window_spec(num_kv_heads=32, sliding_window=1),
                    "layer_2": new_sliding_window_spec(num_kv_heads=32, sliding_window=1)})
    assert not uniform({"layer_1": new_sliding_window_spec(num_kv_heads=32, sliding_window=1),
                        "layer_2": new_sliding_window_spec(num_kv_heads=32, sliding_window=2)})


def test_get_max_concurrency_for_kv_cache_config():
    """Qwen1.5-7B's shape (32 layers, 32 KV heads of 128, fp16), max_model_len 16384,
    max_num_batched_tokens 1024."""
    max_model_len, batched = 16384, 1024
    full = FullAttentionSpec(block_size=16, num_kv_heads=32, head_size=128, dtype="float16")
    sliding = SlidingWindowSpec(block_size=16, num_kv_heads=32, head_size=128,
                                dtype="float16", sliding_window=1024)
    layers = [f"layer_{i}" for i in range(32)]
    config_full = KVCacheConfig(num_blocks=int(1024 * 1.5), kv_cache_tensors=[],
                                kv_cache_groups=[KVCacheGroupSpec(layers, full)])
    assert ku.get_max_concurrency_for_kv_cache_config(config_full, max_model_len,
                                                      batched) == 1.5
    config_sliding = KVCacheConfig(num_blocks=129 * 3, kv_cache_tensors=[],
                                   kv_cache_groups=[KVCacheGroupSpec(layers, sliding)])
    assert ku.get_max_concurrency_for_kv_cache_config(config_sliding, max_model_len,
                                                      batched) == 3
    config_hybrid = KVCacheConfig(num_blocks=(1024 + 129) * 3, kv_cache_tensors=[],
                                  kv_cache_groups=[
                                      KVCacheGroupSpec(layers, full),
                                      KVCacheGroupSpec([f"layer_{i}" for i in range(32, 64)],
                                                       sliding)])
    assert ku.get_max_concurrency_for_kv_cache_config(config_hybrid, max_model_len,
                                                      batched) == 3
    num_tokens, max_concurrency = ku.get_kv_cache_capacity(config_hybrid, max_model_len,
                                                           batched)
    assert num_tokens == 3 * max_model_len
    assert max_concurrency == 3


def test_get_kv_cache_config_one_worker():
    mem_per_block_per_layer = 16 * 2 * 64 * 4 * 2

    def config(specs, memory, **kw):
        return ku.get_kv_cache_config(specs, memory, max_model_len=16, **kw)

    # All layers full attention -> one group.
    specs_full = {"layer_1": new_kv_cache_spec(), "layer_2": new_kv_cache_spec()}
    assert config(specs_full, mem_per_block_per_layer * 2 * 32) == KVCacheConfig(
        num_blocks=32,
        kv_cache_tensors=[KVCacheTensor(size=mem_per_block_per_layer * 32, shared_by=["layer_1"]),
                          KVCacheTensor(size=mem_per_block_per_layer * 32, shared_by=["layer_2"])],
        kv_cache_groups=[KVCacheGroupSpec(["layer_1", "layer_2"], new_kv_cache_spec())])

    # All layers sliding window -> one group.
    specs_sliding = {"layer_1": new_sliding_window_spec(), "layer_2": new_sliding_window_spec()}
    assert config(specs_sliding, mem_per_block_per_layer * 2 * 32) == KVCacheConfig(
        num_blocks=32,
        kv_cache_tensors=[KVCacheTensor(size=mem_per_block_per_layer * 32, shared_by=["layer_1"]),
                          KVCacheTensor(size=mem_per_block_per_layer * 32, shared_by=["layer_2"])],
        kv_cache_groups=[KVCacheGroupSpec(["layer_1", "layer_2"], new_sliding_window_spec())])

    # Full + sliding with disable_hybrid_kv_cache_manager: one full group, window recorded.
    specs_hybrid = {"layer_1": new_kv_cache_spec(), "layer_2": new_sliding_window_spec()}
    assert config(specs_hybrid, mem_per_block_per_layer * 2 * 32,
                  disable_hybrid_kv_cache_manager=True) == KVCacheConfig(
        num_blocks=32,
        kv_cache_tensors=[KVCacheTensor(size=mem_per_block_per_layer * 32, shared_by=["layer_1"]),
                          KVCacheTensor(size=mem_per_block_per_layer * 32, shared_by=["layer_2"])],
        kv_cache_groups=[KVCacheGroupSpec(["layer_1", "layer_2"],
                                          new_kv_cache_spec(sliding_window=1))])

    # Full + sliding with the hybrid manager: two groups of one layer, one shared buffer.
    specs_hybrid = {"layer_1": new_kv_cache_spec(), "layer_2": new_sliding_window_spec()}
    assert config(specs_hybrid, mem_per_block_per_layer * 2 * 32) == KVCacheConfig(
        num_blocks=64,
        kv_cache_tensors=[KVCacheTensor(size=mem_per_block_per_layer * 64,
                                        shared_by=["layer_1", "layer_2"])],
        kv_cache_groups=[KVCacheGroupSpec(["layer_1"], new_kv_cache_spec()),
                         KVCacheGroupSpec(["layer_2"], new_sliding_window_spec())])

    # 2 full + 4 sliding, 2 layers per group.
    specs_hybrid = {"layer_1": new_kv_cache_spec(), "layer_2": new_kv_cache_spec(),
                    "layer_3": new_sliding_window_spec(), "layer_4": new_sliding_window_spec(),
                    "layer_5": new_sliding_window_spec(), "layer_6": new_sliding_window_spec()}
    assert config(specs_hybrid, mem_per_block_per_layer * 2 * 32) == KVCacheConfig(
        num_blocks=32,
        kv_cache_tensors=[
            KVCacheTensor(size=mem_per_block_per_layer * 32,
                          shared_by=["layer_1", "layer_3", "layer_4"]),
            KVCacheTensor(size=mem_per_block_per_layer * 32,
                          shared_by=["layer_2", "layer_5", "layer_6"])],
        kv_cache_groups=[KVCacheGroupSpec(["layer_1", "layer_2"], new_kv_cache_spec()),
                         KVCacheGroupSpec(["layer_3", "layer_5"], new_sliding_window_spec()),
                         KVCacheGroupSpec(["layer_4", "layer_6"], new_sliding_window_spec())])

    # 3 full + 7 sliding, padded to 3 full + 9 sliding.
    specs_hybrid = {f"layer_{i}": new_kv_cache_spec() for i in (1, 2, 3)}
    specs_hybrid.update({f"layer_{i}": new_sliding_window_spec() for i in range(4, 11)})
    assert config(specs_hybrid, mem_per_block_per_layer * 3 * 32) == KVCacheConfig(
        num_blocks=32,
        kv_cache_tensors=[
            KVCacheTensor(size=mem_per_block_per_layer * 32,
                          shared_by=["layer_1", "layer_4", "layer_5", "layer_6"]),
            KVCacheTensor(size=mem_per_block_per_layer * 32,
                          shared_by=["layer_2", "layer_7", "layer_8", "layer_9"]),
            KVCacheTensor(size=mem_per_block_per_layer * 32, shared_by=["layer_3", "layer_10"])],
        kv_cache_groups=[
            KVCacheGroupSpec(["layer_1", "layer_2", "layer_3"], new_kv_cache_spec()),
            KVCacheGroupSpec(["layer_4", "layer_7", "layer_10"], new_sliding_window_spec()),
            KVCacheGroupSpec(["layer_5", "layer_8"], new_sliding_window_spec()),
            KVCacheGroupSpec(["layer_6", "layer_9"], new_sliding_window_spec())])

    # 6 full + 5 sliding, padded to 6 + 6 (gpt-oss with an EAGLE layer).
    specs_hybrid = {f"layer_{i}": new_kv_cache_spec() for i in range(1, 7)}
    specs_hybrid.update({f"layer_{i}": new_sliding_window_spec() for i in range(7, 12)})
    assert config(specs_hybrid, mem_per_block_per_layer * 6 * 32) == KVCacheConfig(
        num_blocks=32,
        kv_cache_tensors=[KVCacheTensor(size=mem_per_block_per_layer * 32,
                                        shared_by=[f"layer_{i}", f"layer_{i + 6}"])
                          for i in range(1, 6)]
        + [KVCacheTensor(size=mem_per_block_per_layer * 32, shared_by=["layer_6"])],
        kv_cache_groups=[
            KVCacheGroupSpec([f"layer_{i}" for i in range(1, 7)], new_kv_cache_spec()),
            KVCacheGroupSpec([f"layer_{i}" for i in range(7, 12)], new_sliding_window_spec())])

    # Different hidden sizes and types: the smaller page gets a larger block size.
    specs_hybrid = {"layer_1": new_kv_cache_spec(head_size=64),
                    "layer_2": new_sliding_window_spec(head_size=32)}
    assert config(specs_hybrid, mem_per_block_per_layer * 32) == KVCacheConfig(
        num_blocks=32,
        kv_cache_tensors=[KVCacheTensor(size=mem_per_block_per_layer * 32,
                                        shared_by=["layer_1", "layer_2"])],
        kv_cache_groups=[
            KVCacheGroupSpec(["layer_1"], new_kv_cache_spec(head_size=64)),
            KVCacheGroupSpec(["layer_2"], new_sliding_window_spec(head_size=32, block_size=32))])

    # Sizes no block size can align, but the backends read padded pages: padding.
    swa_spec = new_sliding_window_spec(head_size=96, indexes_kv_by_block_stride=True)
    specs_hybrid = {"layer_1": new_kv_cache_spec(head_size=64, indexes_kv_by_block_stride=True),
                    "layer_2": swa_spec}
    padded_page_size = swa_spec.page_size_bytes
    assert config(specs_hybrid, mem_per_block_per_layer * 2 * 32) == KVCacheConfig(
        num_blocks=42,
        kv_cache_tensors=[KVCacheTensor(size=padded_page_size * 42,
                                        shared_by=["layer_1", "layer_2"])],
        kv_cache_groups=[
            KVCacheGroupSpec(["layer_1"], new_kv_cache_spec(
                head_size=64, page_size_padded=padded_page_size,
                indexes_kv_by_block_stride=True)),
            KVCacheGroupSpec(["layer_2"], new_sliding_window_spec(
                head_size=96, indexes_kv_by_block_stride=True))])

    # num_gpu_blocks_override.
    assert config(specs_full, mem_per_block_per_layer * 2 * 32,
                  num_gpu_blocks_override=16) == KVCacheConfig(
        num_blocks=16,
        kv_cache_tensors=[KVCacheTensor(size=mem_per_block_per_layer * 16, shared_by=["layer_1"]),
                          KVCacheTensor(size=mem_per_block_per_layer * 16, shared_by=["layer_2"])],
        kv_cache_groups=[KVCacheGroupSpec(["layer_1", "layer_2"], new_kv_cache_spec())])


def test_get_kv_cache_configs_attention_free():
    assert ku.get_kv_cache_config({}, 0, max_model_len=16) == KVCacheConfig(
        num_blocks=1, kv_cache_tensors=[], kv_cache_groups=[])


def test_get_kv_cache_config_refuses_when_one_request_does_not_fit():
    """vLLM's check_enough_kv_cache_memory: one max_model_len request must fit."""
    specs = {"layer_1": new_kv_cache_spec()}
    with pytest.raises(ValueError, match="max seq len"):
        ku.get_kv_cache_config(specs, 16 * 2 * 64 * 4 * 2 * 3, max_model_len=64)
    with pytest.raises(ValueError, match="No available memory"):
        ku.get_kv_cache_config(specs, 0, max_model_len=64)


def test_unify_kv_cache_page_size_uses_padding_for_non_divisible_sizes():
    target_spec = new_kv_cache_spec(block_size=16, num_kv_heads=1, head_size=192,
                                    dtype="bfloat16", indexes_kv_by_block_stride=True)
    draft_spec = new_sliding_window_spec(block_size=16, num_kv_heads=1, head_size=128,
                                         dtype="bfloat16", sliding_window=1024,
                                         indexes_kv_by_block_stride=True)
    unified = ku.unify_kv_cache_spec_page_size({"target_attn": target_spec,
                                                "draft_attn": draft_spec})
    assert unified["target_attn"] == target_spec
    draft = unified["draft_attn"]
    assert draft.block_size == draft_spec.block_size
    assert draft.real_page_size_bytes == draft_spec.real_page_size_bytes
    assert draft.page_size_padded == target_spec.page_size_bytes
    assert draft.page_size_bytes == target_spec.page_size_bytes


def test_unify_kv_cache_page_size_padding_requires_backend_support():
    target_spec = new_kv_cache_spec(block_size=16, num_kv_heads=1, head_size=192,
                                    dtype="bfloat16", indexes_kv_by_block_stride=True)
    draft_spec = new_sliding_window_spec(block_size=16, num_kv_heads=1, head_size=128,
                                         dtype="bfloat16", sliding_window=1024,
                                         indexes_kv_by_block_stride=False)
    with pytest.raises(NotImplementedError):
        ku.unify_kv_cache_spec_page_size({"target_attn": target_spec,
                                          "draft_attn": draft_spec})


def test_unify_hybrid_kv_cache_specs():
    # 1. Full attention and a sliding window.
    specs = {"layer_1": new_kv_cache_spec(),
             "layer_2": new_sliding_window_spec(page_size_padded=32 * 1024, sliding_window=1024)}
    ku.unify_hybrid_kv_cache_specs(specs)
    assert specs["layer_1"] == new_kv_cache_spec()
    assert specs["layer_2"] == new_kv_cache_spec(page_size_padded=32 * 1024,
                                                 sliding_window=1024)
    # 2. Full attention and chunked local attention.
    specs = {"layer_1": new_kv_cache_spec(),
             "layer_2": new_chunked_local_attention_spec(page_size_padded=32 * 1024,
                                                         attention_chunk_size=512)}
    ku.unify_hybrid_kv_cache_specs(specs)
    assert specs["layer_1"] == new_kv_cache_spec()
    assert specs["layer_2"] == new_kv_cache_spec(page_size_padded=32 * 1024,
                                                 attention_chunk_size=512)
    # 3. All three: every layer becomes full attention (one type, different paddings).
    specs = {"layer_1": new_kv_cache_spec(),
             "layer_2": new_sliding_window_spec(page_size_padded=32 * 1024, sliding_window=1024),
             "layer_3": new_chunked_local_attention_spec(page_size_padded=32 * 1024,
                                                         attention_chunk_size=512)}
    ku.unify_hybrid_kv_cache_specs(specs)
    assert specs["layer_1"] == new_kv_cache_spec()
    assert specs["layer_2"] == new_kv_cache_spec(page_size_padded=32 * 1024,
                                                 sliding_window=1024)
    assert specs["layer_3"] == new_kv_cache_spec(page_size_padded=32 * 1024,
                                                 attention_chunk_size=512)
    # 4. No full attention: nothing to convert to -> ValueError.
    specs = {"layer_1": new_sliding_window_spec(sliding_window=1024),
             "layer_2": new_chunked_local_attention_spec(attention_chunk_size=512)}
    with pytest.raises(ValueError):
        ku.unify_hybrid_kv_cache_specs(specs)


def test_design_doc_case_1_toy_model():
    """1 full + 3 sliding-window layers, same kv hidden size: groups of one layer each;
    the page holds block_size tokens of one layer (page_size = kv_hidden_size x
    block_size)."""
    specs = {f"l{i}": (new_kv_cache_spec() if i == 0 else new_sliding_window_spec())
             for i in range(4)}
    groups = ku.get_kv_cache_groups(dict(specs))
    assert [g.layer_names for g in groups] == [["l0"], ["l1"], ["l2"], ["l3"]]
    kv_hidden_size = 2 * 2 * 64 * 4        # K and V x 2 heads x 64 x fp32
    assert ku.get_uniform_page_size(g.kv_cache_spec for g in groups) == kv_hidden_size * 16


def test_design_doc_case_2_regular_pattern():
    """20 sliding + 10 full: 3 groups of 10 layers, page = 10 x kv_hidden_size x
    block_size per block id (10 buffers)."""
    specs = {f"full.{i}": new_kv_cache_spec() for i in range(10)}
    specs.update({f"sw.{i}": new_sliding_window_spec() for i in range(20)})
    config = ku.get_kv_cache_config(specs, 10 * 16 * 2 * 2 * 64 * 4 * 100, max_model_len=16)
    assert [len(g.layer_names) for g in config.kv_cache_groups] == [10, 10, 10]
    # vLLM interleaves (layers[i::num_groups]): sw.0, sw.2, ... and sw.1, sw.3, ...
    assert config.kv_cache_groups[1].layer_names[:2] == ["sw.0", "sw.2"]
    assert config.kv_cache_groups[2].layer_names[:2] == ["sw.1", "sw.3"]
    assert len(config.kv_cache_tensors) == 10
    assert config.kv_cache_tensors[0].shared_by == ["full.0", "sw.0", "sw.1"]
    assert config.num_blocks == 100


def test_design_doc_case_3_gemma3_27b_grouping():
    """Gemma-3-27B: 52 sliding + 10 full; group size min(52, 10) = 10: one full group and
    cdiv(52, 10) = 6 sliding groups of 9, 9, 9, 9, 8 and 8 layers (the doc lists groups of
    10 with the last padded; the code deals the 52 layers round-robin). Each block id
    still names 10 pages, so 8 of 60 sliding pages per block id are padding."""
    layer_types = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
                   for i in range(62)]
    specs = ku.attention_layer_specs(layer_types, 16, sliding_window=1024)
    groups = ku.get_kv_cache_groups(specs)
    kinds = [type(g.kv_cache_spec).__name__ for g in groups]
    assert kinds == ["SlidingWindowSpec"] * 6 + ["FullAttentionSpec"]
    assert [len(g.layer_names) for g in groups] == [9, 9, 9, 9, 8, 8, 10]


def test_attention_layer_specs_and_make_kv_cache_config():
    specs = ku.attention_layer_specs(["sliding_attention", "full_attention"] * 2, 4,
                                     sliding_window=8)
    config = ku.make_kv_cache_config(20, specs)
    assert config.num_blocks == 20
    assert [type(g.kv_cache_spec).__name__ for g in config.kv_cache_groups] == [
        "SlidingWindowSpec", "FullAttentionSpec"]
    with pytest.raises(ValueError, match="sliding window"):
        ku.attention_layer_specs(["sliding_attention"], 4)
    with pytest.raises(ValueError, match="layer type"):
        ku.attention_layer_specs(["mamba"], 4)
    full_only = ku.make_kv_cache_config(20, specs, disable_hybrid_kv_cache_manager=True)
    assert len(full_only.kv_cache_groups) == 1
    assert full_only.kv_cache_groups[0].kv_cache_spec.sliding_window == 8


def test_one_type_of_different_sizes_is_refused_clearly():
    """vLLM groups these as UniformTypeKVCacheSpecs (per-layer page sizes); not modelled."""
    specs = {"layer_1": new_kv_cache_spec(head_size=128), "layer_2": new_kv_cache_spec()}
    with pytest.raises(NotImplementedError, match="UniformTypeKVCacheSpecs"):
        ku.get_kv_cache_groups(specs)
