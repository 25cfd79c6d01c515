"""The PagedAttention paper's Table 1 (Kwon et al., SOSP 2023) recomputed: for each setup,
the KV bytes per token on each GPU by vLLM's formula, the token slots the paper's KV space
holds by that formula, and what vLLM v0.5.5's own start-up sizing gives on those GPUs."""
from __future__ import annotations

from dataclasses import dataclass

from sim.perf.hardware import GiB, get_gpu, memory_profile
from sim.perf.models import get_model, kv_bytes_per_token

# The paper's rows, quoted as printed ("GB" as the paper writes it):
# (model id, gpu id, tp, KV cache space in GB, token slots in thousands).
PAPER_TABLE_1 = (
    ("opt-13b", "a100-40gb", 1, 12, 15.7),
    ("opt-66b", "a100-40gb", 4, 21, 9.7),
    ("opt-175b", "a100-80gb", 8, 264, 60.1),
)


@dataclass(frozen=True, slots=True)
class Table1Row:
    model: str                   # display names
    gpu: str
    tp: int
    per_gpu: int                 # KV bytes per token on each GPU
    paper_gb: int
    paper_k: float
    slots: int                   # the paper's KV space / bytes per token (GB read as GiB)
    v055_kv: int                 # vLLM v0.5.5's KV cache bytes over all GPUs
    v055_slots: int              # and its token slots


def table_1_rows() -> list[Table1Row]:
    """One row per setup, sized at 0.9 utilisation with sim.perf.hardware's activation
    estimate, fp16, blocks of 16."""
    rows = []
    for model_id, gpu_id, tp, paper_gb, paper_k in PAPER_TABLE_1:
        model, gpu = get_model(model_id), get_gpu(gpu_id)
        per_gpu = kv_bytes_per_token(model, "fp16", tp)
        per_token = per_gpu * tp              # no replication: OPT has as many KV heads
        slots = int(paper_gb * GiB // per_token)
        prof = memory_profile(model, gpu, block_size=16, dtype="fp16", tp_size=tp)
        rows.append(Table1Row(model.name, gpu.name, tp, per_gpu, paper_gb, paper_k, slots,
                              prof.kv_cache_bytes * tp, prof.num_token_slots))
    return rows
