"""sim/studies/paper_table_1.py: the PagedAttention paper's Table 1 recomputed."""
from sim.perf.hardware import GiB
from sim.studies.paper_table_1 import table_1_rows


def test_table_1_slots_from_the_papers_kv_space():
    rows = {r.model: r for r in table_1_rows()}
    assert rows["OPT-13B"].slots == 15_728 == 12 * GiB // 819_200
    assert rows["OPT-66B"].slots == 9_557
    assert rows["OPT-175B"].slots == 60_074
    assert rows["OPT-66B"].per_gpu == 589_824 == rows["OPT-175B"].per_gpu
    assert [r.tp for r in rows.values()] == [1, 4, 8]
