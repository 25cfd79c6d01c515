import pytest

from sim.core.block import BlockAllocator, Device, DoubleFreeError, OutOfBlocksError


def test_stack_order_hands_out_the_last_block_first():
    a = BlockAllocator(Device.GPU, 4, 5)
    assert [a.allocate().block_number for _ in range(3)] == [4, 3, 2]


def test_most_recently_freed_block_is_reused_first():
    a = BlockAllocator(Device.GPU, 4, 5)
    b4, b3, _ = a.allocate(), a.allocate(), a.allocate()
    a.free(b3)
    a.free(b4)
    assert a.allocate().block_number == 4
    assert a.allocate().block_number == 3
    assert a.allocate().block_number == 1


def test_allocate_sets_ref_count_and_free_counts_down():
    a = BlockAllocator(Device.CPU, 2, 2)
    b = a.allocate()
    assert b.ref_count == 1 and b.device is Device.CPU
    b.ref_count = 2
    assert a.free(b) is False and a.get_num_free_blocks() == 1
    assert a.free(b) is True and a.get_num_free_blocks() == 2


def test_out_of_memory_is_a_clear_error():
    a = BlockAllocator(Device.GPU, 4, 1)
    a.allocate()
    with pytest.raises(OutOfBlocksError, match="No free GPU blocks"):
        a.allocate()


def test_double_free_is_an_error():
    a = BlockAllocator(Device.GPU, 4, 2)
    b = a.allocate()
    a.free(b)
    with pytest.raises(DoubleFreeError, match="GPU block 1 is already free"):
        a.free(b)


def test_shuffled_order_is_seeded_and_a_permutation():
    a = BlockAllocator(Device.GPU, 4, 16, "shuffled", seed=3)
    b = BlockAllocator(Device.GPU, 4, 16, "shuffled", seed=3)
    c = BlockAllocator(Device.GPU, 4, 16, "shuffled", seed=4)
    order_a = a.next_free_block_numbers()
    assert order_a == b.next_free_block_numbers()
    assert order_a != c.next_free_block_numbers()
    assert sorted(order_a) == list(range(16))
    assert order_a != list(range(15, -1, -1))


def test_explicit_order_comes_first_then_vllm_order():
    a = BlockAllocator(Device.GPU, 4, 8, [7, 1, 3])
    assert a.next_free_block_numbers() == [7, 1, 3, 6, 5, 4, 2, 0]
    assert [a.allocate().block_number for _ in range(4)] == [7, 1, 3, 6]


@pytest.mark.parametrize("order, message", [([9], "not a block number"),
                                            ([1, 1], "listed twice"),
                                            ("random", "free_order must be one of")])
def test_bad_free_order_is_rejected(order, message):
    with pytest.raises(ValueError, match=message):
        BlockAllocator(Device.GPU, 4, 8, order)


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="block_size"):
        BlockAllocator(Device.GPU, 0, 8)
    with pytest.raises(ValueError, match="num_blocks"):
        BlockAllocator(Device.GPU, 4, -1)
