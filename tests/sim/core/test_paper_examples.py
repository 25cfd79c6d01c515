"""The PagedAttention paper's worked examples (section 4), block numbers included."""
from helpers import run_checked, tables

from sim.events import BlockAllocated, BlockFreed, CopyOnWrite, Forked
from sim.studies.scenarios import get_scenario


def test_fig6_one_request_block_table():
    eng = get_scenario("fig6").build_engine()
    out = eng.step()
    # Prompt "Four score and seven years ago our": 7 tokens, 4 + 3 slots.
    assert tables(eng) == {0: [7, 1]}
    assert [(e.logical, e.physical) for e in out.events if isinstance(e, BlockAllocated)] \
        == [(0, 7), (1, 1)]
    snap = eng.snapshot()
    assert snap["requests"][0]["seqs"][0]["block_table"] == [["gpu", 7, 4], ["gpu", 1, 3]]
    # First decode: the new token's KV fills the last slot of block 1, no new block.
    out = eng.step()
    assert tables(eng) == {0: [7, 1]}
    assert not [e for e in out.events if isinstance(e, BlockAllocated)]
    # Second decode: block 1 is full, so physical block 3 is allocated.
    out = eng.step()
    assert [(e.logical, e.physical) for e in out.events if isinstance(e, BlockAllocated)] \
        == [(2, 3)]


def test_fig7_two_requests_interleave_in_physical_memory():
    eng = get_scenario("fig7").build_engine()
    eng.step()
    assert tables(eng) == {0: [7, 1], 1: [3, 5]}
    eng.step()
    eng.step()
    assert tables(eng) == {0: [7, 1, 2], 1: [3, 5]}
    run_checked(eng)


def test_fig8_parallel_sampling_copy_on_write():
    eng = get_scenario("fig8").build_engine()
    out = eng.step()
    # Two samples share the prompt blocks with ref count 2.
    assert tables(eng) == {0: [7, 1], 1: [7, 1]}
    assert [b.ref_count for b in eng.block_manager.block_tables[0]] == [2, 2]
    assert [e for e in out.events if isinstance(e, Forked)] == [Forked(0, 1, (7, 1))]
    out = eng.step()
    # Sample A1 writes first into the shared block 1: it is copied to block 3.
    # A2 then finds ref count 1 and writes in place.
    assert [e for e in out.events if isinstance(e, CopyOnWrite)] == [CopyOnWrite(0, 1, 1, 3)]
    assert out.scheduler_outputs.blocks_to_copy == [(1, 3)]
    assert tables(eng) == {0: [7, 3], 1: [7, 1]}
    assert [b.ref_count for b in eng.block_manager.block_tables[1]] == [2, 1]
    # Copy-on-write copied the payload: both read back their own tokens.
    run_checked(eng)


def live_beams(eng):
    return [s for s in eng.requests["A"].get_seqs() if not s.is_finished()]


def test_fig9_beam_search_tree_with_exact_blocks():
    eng = get_scenario("fig9").build_engine()
    outs = []
    while eng.has_unfinished_requests():
        outs.append(eng.step())
        beams = live_beams(eng)
        # The tree property: an ancestor block's ref count equals the live beams below it.
        below: dict[int, int] = {}
        for s in beams:
            for b in eng.block_manager.block_tables[s.seq_id]:
                below[b.block_number] = below.get(b.block_number, 0) + 1
        for s in beams:
            for b in eng.block_manager.block_tables[s.seq_id]:
                assert b.ref_count == below[b.block_number]
        if eng.has_unfinished_requests():
            assert len(beams) == 4
    # Blocks whose count drops to zero are freed in the same step as the pruning.
    freed_steps = {o.step for o in outs for e in o.events if isinstance(e, BlockFreed)}
    assert 1 in freed_steps


def test_fig9_exact_blocks_for_the_seeded_scenario():
    eng = get_scenario("fig9").build_engine()
    expected = [
        # After the prompt: 4 beams share the prompt's two blocks (ref count 4 each).
        {1: [31, 30], 2: [31, 30], 3: [31, 30], 4: [31, 30]},
        # Beams 1, 2, 3 copied the shared partial block 30 (to 29, 28, 27), beam 4 wrote
        # in place; then beam 4 had no candidate left (block 30 freed) and beam 2 was
        # pruned (block 28 freed). Beam 3 was pruned too, but its child 11 lives on and
        # keeps block 27 (forks happen before frees).
        {1: [31, 29], 8: [31, 29], 9: [31, 29], 11: [31, 27]},
        {12: [31, 30], 13: [31, 30], 14: [31, 29], 15: [31, 27]},
        {18: [31, 29, 25], 17: [31, 30, 26], 16: [31, 30, 28], 19: [31, 27, 24]},
    ]
    for step, want in enumerate(expected):
        eng.step()
        assert tables(eng) == want, step
    assert eng.block_manager.gpu_allocator.blocks[31].ref_count == 4
    run_checked(eng)
    assert eng.block_manager.get_num_free_gpu_blocks() == 32
