"""Beam search from Python: the paper's Fig. 9 (k = 4), with the tree property checked."""
from sim.events import BeamSearchStep, BlockFreed
from sim.studies.scenarios import get_scenario

engine = get_scenario("fig9").build_engine()     # k = 4, a 6-token prompt, blocks of 4
bm = engine.block_manager
while engine.has_unfinished_requests():
    out = engine.step()
    tables = {sid: [b.block_number for b in t] for sid, t in bm.block_tables.items()}
    # A block's reference count equals the number of live beams whose table reaches it.
    beams_below: dict[int, int] = {}
    for table in tables.values():
        for block in table:
            beams_below[block] = beams_below.get(block, 0) + 1
    assert all(bm.gpu_allocator.blocks[b].ref_count == n for b, n in beams_below.items())
    kept = [c.seq_id for e in out.events if isinstance(e, BeamSearchStep)
            for c in e.candidates if c.outcome != "pruned"]
    freed = [e.physical for e in out.events if isinstance(e, BlockFreed)]
    print(f"step {out.step}: kept {kept}, freed {freed}, shared "
          f"{ {b: n for b, n in sorted(beams_below.items()) if n > 1} }")
# step 0: kept [1, 2, 3, 4], freed [], shared {30: 4, 31: 4}
# step 1: kept [8, 9, 1, 11], freed [30, 28], shared {29: 3, 31: 4}
# step 2: kept [12, 13, 14, 15], freed [28], shared {30: 2, 31: 4}
# step 3: kept [18, 17, 16, 19], freed [], shared {30: 2, 31: 4}
# step 4: kept [20, 21, 22, 18], freed [27, 24, 28], shared {25: 3, 29: 3, 31: 4}
# step 5: kept [25, 26, 27, 18], freed [30, 26], shared {25: 2, 29: 4, 31: 4}
# step 6: kept [29, 32, 30, 27], freed [28], shared {24: 2, 29: 4, 31: 4}
# step 7: kept [33, 34, 36, 35], freed [30, 25, 28, 24, 23, 31, 29, 26, 27], shared {}
