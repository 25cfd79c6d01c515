"""Hybrid models in V1 (vLLM v0.25.1's hybrid KV cache manager): which blocks a
sliding-window group hands back to the pool as a request grows.

A sliding-window layer's next token attends to the last `window` tokens only. When a step
starts with `num_computed_tokens` computed, the first `num_computed_tokens - window + 1` are
out of reach (SlidingWindowManager.get_num_skipped_tokens), so every block of a
sliding-window group wholly before them goes back to the pool and the null block takes its
place (remove_skipped_blocks, called by allocate_slots before it allocates). Full-attention
groups keep every block.
"""
from __future__ import annotations

from pages.framework.question import Question, ask
from pages.questions import code
from pages.questions.state import blocks_words, name, request
from pages.views.text import plural

SKIP = code.at("vllm/v1/core/single_type_kv_cache_manager.py",
               "SlidingWindowManager.get_num_skipped_tokens and "
               "SingleTypeKVCacheManager.remove_skipped_blocks", code.V1)


def _leaving(snap: dict, r: dict, computed: int, groups: list) -> list[int]:
    """The blocks of `r`'s sliding-window tables wholly before the window of a step that
    starts with `computed` tokens computed (null blocks left out)."""
    bs = snap["block_size"]
    null = snap.get("null_block", 0)
    out = []
    for g, table in zip(groups, r.get("group_block_tables") or []):
        if g["kind"] != "sliding_window":
            continue
        skipped = max(0, computed - g["window"] + 1) // bs
        out += [n for _, n, _ in table[:skipped] if n != null]
    return out


def skipped(step, nxt, ctx) -> Question | None:
    """Which blocks do the sliding-window groups give back in the next step?"""
    if step is None or step.step is None or nxt.step is None or nxt.error:
        return None
    snap = step.snapshot
    groups = snap.get("kv_cache_groups") or []
    kinds = {g["kind"] for g in groups}
    if "sliding_window" not in kinds or not kinds <= {"sliding_window", "full_attention"}:
        return None
    ran = {s.request_id for s in nxt.scheduled}
    for rid in snap["queues"]["running"]:
        if rid not in ran:
            continue
        r = request(snap, rid)
        s = r["seqs"][0]
        computed = s["num_computed_tokens"]
        correct = tuple(sorted(_leaving(snap, r, computed, groups)))
        new = next(x.num_tokens for x in nxt.scheduled if x.request_id == rid)
        window = groups_window(groups)
        bs = snap["block_size"]
        first = max(0, computed - window + 1)
        # The misreadings: the window counted from the end of this step's tokens; full
        # attention dropping its old blocks too; one block more.
        late = tuple(sorted(_leaving(snap, r, computed + new, groups)))
        full = tuple(sorted(set(correct) | {
            n for g, t in zip(groups, r["group_block_tables"])
            if g["kind"] == "full_attention" for _, n, _ in t[:first // bs]}))
        more = tuple(sorted(_leaving(snap, r, computed + bs, groups)))
        candidates = [late, (), full, more]
        prompt = (f"In {name(nxt, ctx)}, {rid} starts with {plural(computed, 'token')} "
                  f"computed and computes {new} more. Which blocks do the sliding-window "
                  f"groups (window {window}) give back to the pool?")
        explanation = (f"The next token of a sliding-window layer reads only the last {window} "
                       f"tokens. With {computed} computed when the step starts, the first "
                       f"{first} (num_computed_tokens - sliding_window + 1) are out of its "
                       f"reach, so each sliding-window group's blocks wholly before token "
                       f"{first} (the first {first // bs} blocks of {bs}) hold nothing it will "
                       "read: allocate_slots first returns them to the pool, the null block "
                       "in their place"
                       + (f": {blocks_words(correct)}." if correct else
                          ", and there is none yet beyond those already returned.")
                       + " Full attention keeps every block.")
        return ask("window-skip", prompt, correct, candidates, _words, explanation, SKIP,
                   {"request_id": rid}, order="mixed")
    return None


def groups_window(groups: list) -> int:
    return min(g["window"] for g in groups if g["kind"] == "sliding_window")


def _words(blocks: tuple) -> str:
    return "None" if not blocks else blocks_words(blocks)
