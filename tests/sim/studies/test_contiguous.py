import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from sim.studies.contiguous import (
    BuddyAllocator,
    ChunkAllocated,
    ChunkFreed,
    ContiguousMemory,
    OrcaPolicy,
    next_power_of_two,
)
from sim.studies.workload import RequestSpec


def test_next_power_of_two():
    assert [next_power_of_two(n) for n in (1, 2, 3, 4, 5, 25, 1024, 1025)] == \
        [1, 2, 4, 4, 8, 32, 1024, 2048]
    with pytest.raises(ValueError):
        next_power_of_two(0)


# -- the buddy allocator by hand --------------------------------------------------------------

def test_split_takes_the_lower_half_and_frees_the_upper_halves():
    buddy = BuddyAllocator(16)
    assert buddy.allocate(3) == 0                 # 3 slots -> a chunk of 4
    assert buddy.allocated_chunks() == [(0, 4)]
    assert buddy.free_chunks() == [(4, 4), (8, 8)]
    assert buddy.num_free_slots() == 12


def test_smallest_fitting_chunk_is_used_before_splitting_a_bigger_one():
    buddy = BuddyAllocator(16)
    buddy.allocate(4)                             # 0; leaves (4, 4) and (8, 8)
    assert buddy.allocate(2) == 4                 # splits (4, 4), not (8, 8)
    assert buddy.free_chunks() == [(6, 2), (8, 8)]


def test_free_merges_buddies_up_to_the_whole_pool():
    buddy = BuddyAllocator(16)
    a, b, c = buddy.allocate(4), buddy.allocate(4), buddy.allocate(8)
    assert (a, b, c) == (0, 4, 8)
    assert buddy.allocate(1) is None              # full
    buddy.free(b)
    assert buddy.free_chunks() == [(4, 4)]        # its buddy (0) is still allocated
    buddy.free(a)
    assert buddy.free_chunks() == [(0, 8)]        # merged; (8, 8) still allocated
    buddy.free(c)
    assert buddy.free_chunks() == [(0, 16)]


def test_refusal_although_enough_slots_are_free():
    buddy = BuddyAllocator(16)
    starts = [buddy.allocate(4) for _ in range(4)]
    assert starts == [0, 4, 8, 12]
    buddy.free(0)
    buddy.free(8)                                 # two holes of 4, not buddies
    assert buddy.num_free_slots() == 8
    assert buddy.largest_free_chunk() == 4
    assert not buddy.can_allocate(8)
    assert buddy.allocate(8) is None              # external fragmentation
    assert buddy.allocate(5) is None              # 5 rounds up to 8 as well
    assert buddy.allocate(4) == 0


def test_a_pool_that_is_not_a_power_of_two_is_its_binary_decomposition():
    buddy = BuddyAllocator(15728)
    assert buddy.free_chunks() == [(0, 8192), (8192, 4096), (12288, 2048), (14336, 1024),
                                   (15360, 256), (15616, 64), (15680, 32), (15712, 16)]
    assert buddy.max_chunk == 8192


def test_pieces_of_a_decomposed_pool_never_merge():
    buddy = BuddyAllocator(12)                    # 8 + 4
    assert buddy.allocate(4) == 8                 # the 4-piece fits exactly
    assert buddy.allocate(8) == 0
    buddy.free(8)
    buddy.free(0)
    assert buddy.free_chunks() == [(0, 8), (8, 4)]
    assert buddy.allocate(9) is None              # 16 never exists


def test_bad_arguments():
    with pytest.raises(ValueError, match="total_slots"):
        BuddyAllocator(0)
    with pytest.raises(ValueError, match="no chunk is allocated at slot 3"):
        BuddyAllocator(8).free(3)
    with pytest.raises(ValueError):
        BuddyAllocator(8).allocate(0)


# -- the buddy allocator under random operations -----------------------------------------------

class BuddyMachine(RuleBasedStateMachine):
    @initialize(total=st.integers(1, 300))
    def start(self, total):
        self.total = total
        self.buddy = BuddyAllocator(total)
        self.initial = self.buddy.free_chunks()
        self.held: list[int] = []

    @rule(n=st.integers(1, 320))
    def allocate(self, n):
        size = next_power_of_two(n)
        start = self.buddy.allocate(n)
        if start is None:
            # Refused only when no free chunk is big enough.
            assert all(s < size for _, s in self.buddy.free_chunks())
        else:
            assert (start, size) in self.buddy.allocated_chunks()
            self.held.append(start)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def free(self, data):
        start = data.draw(st.sampled_from(self.held))
        self.held.remove(start)
        self.buddy.free(start)

    @precondition(lambda self: self.held)
    @rule()
    def free_everything(self):
        for start in self.held:
            self.buddy.free(start)
        self.held = []
        assert self.buddy.free_chunks() == self.initial       # full coalescing

    @invariant()
    def chunks_tile_the_pool(self):
        chunks = sorted(self.buddy.allocated_chunks() + self.buddy.free_chunks())
        position = 0
        for start, size in chunks:                # no overlap, no gap
            assert start == position
            assert size & (size - 1) == 0 and start % size == 0   # aligned powers of two
            position += size
        assert position == self.total
        allocated = sum(size for _, size in self.buddy.allocated_chunks())
        assert allocated + self.buddy.num_free_slots() == self.total

    @invariant()
    def no_two_free_buddies(self):
        free = set(self.buddy.free_chunks())
        for start, size in free:
            assert (start ^ size, size) not in free   # they would have been merged


TestBuddyMachine = BuddyMachine.TestCase
TestBuddyMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


# -- Orca policies -------------------------------------------------------------------------

def test_orca_reservations():
    req = RequestSpec("r", prompt_len=100, output_len=25)
    assert OrcaPolicy.MAX.reservation(req, 2048) == 2048
    assert OrcaPolicy.POW2.reservation(req, 2048) == 100 + 32   # the paper's example
    assert OrcaPolicy.ORACLE.reservation(req, 2048) == 125
    long = RequestSpec("l", prompt_len=1000, output_len=1025)
    assert OrcaPolicy.POW2.reservation(long, 2048) == 2048      # capped at the model length
    assert [p.label for p in OrcaPolicy] == ["Orca (Max)", "Orca (Pow2)", "Orca (Oracle)"]


def test_contiguous_memory_admits_releases_and_explains_refusals():
    mem = ContiguousMemory(OrcaPolicy.ORACLE, 16, max_model_len=16)
    events: list = []
    for i in range(4):
        assert mem.try_admit(RequestSpec(str(i), 2, 2), 2, events) is None
    assert events == [ChunkAllocated(str(i), 4 * i, 4, 4) for i in range(4)]
    big = RequestSpec("big", 4, 3)                # asks 7, needs a chunk of 8
    refused = mem.try_admit(big, 4, events)
    assert (refused.reason, refused.asked_slots, refused.chunk_slots, refused.free_slots) == \
        ("full", 7, 8, 0)
    mem.release("0", events)
    mem.release("2", events)
    assert events[-2:] == [ChunkFreed("0", 0, 4), ChunkFreed("2", 8, 4)]
    refused = mem.try_admit(big, 4, events)
    assert (refused.reason, refused.free_slots, refused.largest_free_chunk) == \
        ("fragmented", 8, 4)
    # Seen from the big request, both holes are external fragmentation.
    assert mem.free_slots((big, 4)) == (0, 8)
    assert mem.free_slots((RequestSpec("small", 1, 1), 1)) == (8, 0)
    assert mem.free_slots(None) == (8, 0)
    assert mem.free_regions((big, 4)) == [(0, 4, False), (8, 4, False)]
    assert mem.allocated_slots("1") == 4 and mem.regions("3") == [(12, 4)]


def test_check_fits():
    mem = ContiguousMemory(OrcaPolicy.MAX, 1024, max_model_len=2048)
    with pytest.raises(ValueError, match="largest a pool of 1024 slots has is 1024"):
        mem.check_fits(RequestSpec("a", 1, 1))
    with pytest.raises(ValueError, match="exceeds max_model_len"):
        ContiguousMemory(OrcaPolicy.ORACLE, 4096, 2048).check_fits(RequestSpec("b", 2000, 49))
