import pytest
from helpers import make_group

from sim.core.block import Device
from sim.core.block_manager import AllocStatus, BlockSpaceManager
from sim.core.sequence import SequenceStatus


def admit(bm, group):
    """What the scheduler does for a prompt: allocate, then mark running."""
    bm.allocate(group)
    for s in group.get_seqs():
        s.status = SequenceStatus.RUNNING
    return group


def grow(seq, n=1):
    """The sequence sampled n more tokens (computed up to the newest one)."""
    for _ in range(n):
        seq.num_computed_tokens = seq.get_len()
        seq.append_token_id(99)


class TestWatermarkAndCanAllocate:
    # 100 blocks, watermark 0.01 -> 1 block kept free.
    def test_watermark_blocks(self):
        assert BlockSpaceManager(4, 100, 0).watermark_blocks == 1
        assert BlockSpaceManager(4, 99, 0).watermark_blocks == 0
        assert BlockSpaceManager(4, 100, 0, watermark=0.05).watermark_blocks == 5

    def test_ok_exactly_at_the_watermark(self):
        bm = BlockSpaceManager(4, 100, 0)
        assert bm.can_allocate(make_group("A", 99 * 4)) is AllocStatus.OK   # 100-99 >= 1

    def test_never_when_even_an_empty_cache_would_break_the_watermark(self):
        bm = BlockSpaceManager(4, 100, 0)
        assert bm.can_allocate(make_group("A", 100 * 4)) is AllocStatus.NEVER   # 100-100 < 1
        assert bm.can_allocate(make_group("A", 99 * 4 + 1)) is AllocStatus.NEVER

    def test_later_when_free_blocks_minus_required_falls_below_the_watermark(self):
        bm = BlockSpaceManager(4, 100, 0)
        bm.allocate(make_group("A", 50 * 4))
        assert bm.can_allocate(make_group("B", 49 * 4, first_seq_id=1)) is AllocStatus.OK
        assert bm.can_allocate(make_group("B", 50 * 4, first_seq_id=1)) is AllocStatus.LATER

    def test_without_watermark_a_full_fit_is_ok(self):
        bm = BlockSpaceManager(4, 10, 0, watermark=0.0)
        assert bm.can_allocate(make_group("A", 40)) is AllocStatus.OK
        assert bm.can_allocate(make_group("A", 41)) is AllocStatus.NEVER


def test_allocate_shares_one_table_with_ref_count_of_the_group():
    bm = BlockSpaceManager(4, 8, 0, watermark=0.0)
    group = make_group("A", 7)
    bm.allocate(group)
    seq = group.get_seqs()[0]
    assert bm.get_block_table(seq) == [7, 6]
    assert [b.ref_count for b in bm.block_tables[seq.seq_id]] == [1, 1]
    assert bm.get_num_free_gpu_blocks() == 6


def test_can_append_slots_wants_one_free_block_per_running_sequence():
    bm = BlockSpaceManager(4, 3, 0, watermark=0.0)
    group = admit(bm, make_group("A", 5))     # 2 blocks, 1 free
    assert bm.can_append_slots(group)       # the last block has room, but it checks blocks
    child = group.get_seqs()[0].fork(1)
    group.add(child)
    bm.fork(group.get_seqs()[0], child)
    assert not bm.can_append_slots(group)   # 2 running sequences, 1 free block


def test_append_slots_new_block_only_when_the_last_is_full():
    bm = BlockSpaceManager(4, 8, 0, watermark=0.0)
    group = admit(bm, make_group("A", 7))
    seq = group.get_seqs()[0]
    grow(seq)                               # 8 tokens: fits in 2 blocks
    assert bm.append_slots(seq) == [] and bm.get_block_table(seq) == [7, 6]
    grow(seq)                               # 9 tokens: needs a third block
    assert bm.append_slots(seq) == [] and bm.get_block_table(seq) == [7, 6, 5]


def test_copy_on_write_only_when_last_block_shared_and_partly_filled():
    bm = BlockSpaceManager(4, 8, 0, watermark=0.0)
    group = admit(bm, make_group("A", 7))
    parent = group.get_seqs()[0]
    grow(parent)
    child = parent.fork(1)
    group.add(child)
    bm.fork(parent, child)
    assert [b.ref_count for b in bm.block_tables[0]] == [2, 2]
    # First writer into the shared partial block copies it ...
    assert bm.append_slots(parent) == [(6, 5)]
    assert bm.get_block_table(parent) == [7, 5]
    # ... and the second finds ref count 1 and writes in place.
    assert bm.append_slots(child) == []
    assert bm.get_block_table(child) == [7, 6]
    assert [b.ref_count for b in bm.block_tables[1]] == [2, 1]


def test_no_copy_when_the_shared_prompt_ends_on_a_block_boundary():
    bm = BlockSpaceManager(4, 8, 0, watermark=0.0)
    group = admit(bm, make_group("A", 8))
    parent = group.get_seqs()[0]
    grow(parent)                            # token 9 starts logical block 2
    child = parent.fork(1)
    group.add(child)
    bm.fork(parent, child)
    assert bm.append_slots(parent) == [] and bm.append_slots(child) == []
    assert bm.get_block_table(parent)[:2] == bm.get_block_table(child)[:2]
    assert bm.get_block_table(parent)[2] != bm.get_block_table(child)[2]


def test_free_releases_and_unknown_sequence_is_a_noop():
    bm = BlockSpaceManager(4, 8, 0, watermark=0.0)
    group = admit(bm, make_group("A", 7))
    seq = group.get_seqs()[0]
    child = seq.fork(1)
    bm.fork(seq, child)
    bm.free(seq)
    assert bm.get_num_free_gpu_blocks() == 6      # still held by the child
    bm.free(child)
    assert bm.get_num_free_gpu_blocks() == 8
    bm.free(child)                                # no-op
    assert bm.get_num_free_gpu_blocks() == 8


def _shared_group(bm):
    group = admit(bm, make_group("A", 7))
    parent = group.get_seqs()[0]
    grow(parent)
    child = parent.fork(1)
    group.add(child)
    bm.fork(parent, child)
    bm.append_slots(parent)     # parent: [7, 5], child: [7, 6]
    bm.append_slots(child)
    return group, parent, child


def test_swap_out_moves_a_shared_block_once_with_matching_ref_count():
    bm = BlockSpaceManager(4, 8, 8, watermark=0.0)
    group, parent, child = _shared_group(bm)
    assert bm.can_swap_out(group)
    mapping = bm.swap_out(group)
    assert mapping == [(7, 7), (5, 6), (6, 5)]     # block 7 (shared) appears once
    assert bm.get_block_table(parent) == [7, 6] and bm.get_block_table(child) == [7, 5]
    cpu_tables = bm.block_tables
    assert all(b.device is Device.CPU for t in cpu_tables.values() for b in t)
    assert cpu_tables[0][0] is cpu_tables[1][0] and cpu_tables[0][0].ref_count == 2
    assert bm.get_num_free_gpu_blocks() == 8 and bm.get_num_free_cpu_blocks() == 5


def test_can_swap_out_counts_distinct_blocks():
    bm = BlockSpaceManager(4, 8, 2, watermark=0.0)
    group, _, _ = _shared_group(bm)                # 3 distinct blocks, 4 table entries
    assert not bm.can_swap_out(group)
    bm2 = BlockSpaceManager(4, 8, 3, watermark=0.0)
    group2, _, _ = _shared_group(bm2)
    assert bm2.can_swap_out(group2)


def test_swap_in_gives_new_gpu_numbers():
    bm = BlockSpaceManager(4, 8, 8, watermark=0.0)
    group, parent, child = _shared_group(bm)
    before = (bm.get_block_table(parent), bm.get_block_table(child))
    bm.swap_out(group)
    for s in group.get_seqs():
        s.status = SequenceStatus.SWAPPED
    # Someone else takes GPU blocks meanwhile.
    admit(bm, make_group("B", 8, first_seq_id=9))
    assert bm.can_swap_in(group) is AllocStatus.OK
    mapping = bm.swap_in(group)
    assert len(mapping) == 3
    after = (bm.get_block_table(parent), bm.get_block_table(child))
    assert after != before
    assert after[0][0] == after[1][0]              # still shared, once
    assert bm.block_tables[0][0].ref_count == 2
    assert bm.get_num_free_cpu_blocks() == 8


def test_can_swap_in_never_later_ok():
    bm = BlockSpaceManager(4, 4, 8, watermark=0.0)
    group, _, _ = _shared_group(bm)                # 3 blocks + 2 seqs = 5 > 4 total
    bm.swap_out(group)
    for s in group.get_seqs():
        s.status = SequenceStatus.SWAPPED
    assert bm.can_swap_in(group) is AllocStatus.NEVER
    bm2 = BlockSpaceManager(4, 6, 8, watermark=0.0)
    group2, _, _ = _shared_group(bm2)
    bm2.swap_out(group2)
    for s in group2.get_seqs():
        s.status = SequenceStatus.SWAPPED
    assert bm2.can_swap_in(group2) is AllocStatus.OK        # 6 free >= 5
    admit(bm2, make_group("B", 8, first_seq_id=9))
    assert bm2.can_swap_in(group2) is AllocStatus.LATER     # 4 free < 5 required


def test_reset_frees_everything():
    bm = BlockSpaceManager(4, 8, 8, watermark=0.0)
    _shared_group(bm)
    bm.reset()
    assert bm.get_num_free_gpu_blocks() == 8 and not bm.block_tables


def test_watermark_must_be_a_fraction():
    with pytest.raises(ValueError, match="watermark"):
        BlockSpaceManager(4, 8, 8, watermark=1.5)
