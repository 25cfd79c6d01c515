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
