"""Reading a step's snapshot the way the questions need it: sequences by id, block tables,
names, free lists. Snapshots are sim's public, JSON-ready state (sim/core/snapshot.py and
sim/v1/snapshot.py share their keys)."""
from __future__ import annotations

from pages.views.kv_view import seq_labels

GPU = "gpu"


def is_v1(snap: dict) -> bool:
    return snap.get("engine") == "v1"


def engine(snap: dict) -> str:
    return "V1" if is_v1(snap) else "v0.5.5"


def seqs(snap: dict) -> dict[int, tuple[dict, dict]]:
    """seq_id -> (request, sequence), in the snapshot's order."""
    return {s["seq_id"]: (r, s) for r in snap["requests"] for s in r["seqs"]}


def request(snap: dict, rid: str) -> dict | None:
    return next((r for r in snap["requests"] if r["request_id"] == rid), None)


def table(seq: dict) -> list[int]:
    """A sequence's GPU block numbers, logical order."""
    return [n for dev, n, _ in seq["block_table"] if dev == GPU]


def labels(*snaps: dict) -> dict[int, str]:
    """Every sequence's short name ("A", "A.1") over these snapshots."""
    out: dict[int, str] = {}
    for snap in snaps:
        out.update(seq_labels(snap))
    return out


def running_seqs(snap: dict) -> list[tuple[dict, dict]]:
    """(request, sequence) of every running sequence, in `running` order, each request's
    sequences in its own order (the order vLLM appends their slots)."""
    by_id = {r["request_id"]: r for r in snap["requests"]}
    return [(by_id[rid], s) for rid in snap["queues"]["running"]
            for s in by_id[rid]["seqs"] if s["status"] == "running"]


def in_flight(r: dict) -> int:
    """V1 with async scheduling: output tokens a step in flight is sampling for the request
    (its placeholders; 0 otherwise, and in v0.5.5)."""
    return r.get("num_output_placeholders", 0)


def to_compute(r: dict, s: dict) -> int:
    """Tokens the sequence has whose key and value are not computed yet, the ones in flight
    included (vLLM: num_tokens + num_output_placeholders - num_computed_tokens)."""
    return s["len"] + in_flight(r) - s["num_computed_tokens"]


def last_in_flight(r: dict, s: dict) -> bool:
    """V1, async: the token in flight is the request's last (max_tokens), so the scheduler
    leaves it out rather than waste a step (AsyncScheduler's check in schedule)."""
    p = in_flight(r)
    return bool(p) and s["num_computed_tokens"] + 2 - p >= s["prompt_len"] + r["max_tokens"]


def free(snap: dict) -> list[int]:
    """GPU free list, first out first."""
    return list(snap[GPU]["free_order"])


def ref_count(snap: dict, block: int) -> int:
    return snap[GPU]["blocks"][block]["ref_count"]


def name(step, ctx=None) -> str:
    """The step's name as the page says it: the context's `step_name(step)` when it has one
    (the prefix-caching page counts steps from 1), else "iteration N" as the engines
    number them."""
    named = getattr(ctx, "step_name", None)
    if named is not None:
        return named(step)
    return "the start" if step.step is None else f"iteration {step.step}"


def blocks_words(nums) -> str:
    nums = list(nums)
    if not nums:
        return "none"
    if len(nums) == 1:
        return f"block {nums[0]}"
    return "blocks " + ", ".join(map(str, nums[:-1])) + f" and {nums[-1]}"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class Named:
    """A widget's context with the page's own `step_name(step)` (see `name`)."""

    def __init__(self, ctx, step_name) -> None:
        self._ctx = ctx
        self.step_name = step_name

    def __getattr__(self, attr):
        return getattr(self._ctx, attr)
