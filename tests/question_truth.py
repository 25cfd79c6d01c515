"""What the engine did, per question kind, read from the records of the step a question is
about: its events (sim/events.py) and, where an event says where something went, the
snapshot after it. These are the check's answers (tests/pages/test_questions.py); they never
call the question generators or their rules.

`TRUTH[kind](q, before, step)` returns the correct value in the question's own terms (the
values its options claim), or raises AssertionError when the step did not do what the
question is about. `before` and `step` are what the question noted (`q.about`): engine steps
(sim.trace.Step) for the engine kinds, or the widget's own records for the others.
`NAIVE[kind]` is what a reader would answer by reading the earlier step's picture without
the rule, for kinds where the picture lists something in order: a question whose answer is
that reading is already answered by the picture.
"""
from __future__ import annotations

from sim.events import (
    Admitted,
    BeamSearchStep,
    BlockAllocated,
    BlockEvicted,
    BlockFreed,
    BlocksHeld,
    BlockSkipped,
    ChunkScheduled,
    CopyOnWrite,
    GroupBlockAllocated,
    KVWritten,
    OffloadLoadJob,
    Preempted,
    PrefixCacheHit,
    RemoteKVsReady,
    RequestArrived,
    TokenDiscarded,
    TokenSampled,
    WaitingForRemoteKVs,
)


def _request_of(*snaps) -> dict[int, str]:
    out = {}
    for snap in snaps:
        for r in snap["requests"]:
            for s in r["seqs"]:
                out[s["seq_id"]] = r["request_id"]
    return out


def next_block(q, before, step):
    if "group" in q.about:        # a hybrid model: one table per KV cache group
        for e in step.events:
            if (isinstance(e, GroupBlockAllocated) and e.request_id == q.about["request_id"]
                    and e.kv_cache_group_id == q.about["group"]
                    and e.logical == q.about["logical"]):
                return e.physical
        raise AssertionError(f"no block allocated for {q.about}")
    sid, logical = q.about["seq_id"], q.about["logical"]
    for e in step.events:
        if isinstance(e, BlockAllocated) and sid in e.seq_ids and e.logical == logical:
            assert e.device == "gpu"
            return e.physical
    raise AssertionError(f"no block allocated for seq {sid}, logical {logical}")


def new_block(q, before, step):
    sid = q.about["seq_id"]
    if any(isinstance(e, CopyOnWrite) and e.seq_id == sid for e in step.events):
        return "cow"
    if any(isinstance(e, BlockAllocated) and sid in e.seq_ids for e in step.events):
        return "new"
    assert any(isinstance(e, KVWritten) and e.seq_id == sid for e in step.events), \
        f"seq {sid} did not run"
    return "none"


def cow(q, before, step):
    block = q.about["block"]
    wrote = [sid for sid in q.about["seq_ids"]
             if any(isinstance(e, KVWritten) and e.seq_id == sid for e in step.events)]
    assert wrote == list(q.about["seq_ids"]), "not every holder wrote"
    copied = {e.seq_id for e in step.events if isinstance(e, CopyOnWrite) and e.src == block}
    in_place = [sid for sid in wrote if sid not in copied]
    assert len(in_place) <= 1
    return in_place[0] if in_place else "none"


def blocks_freed(q, before, step):
    rid = q.about["request_id"]
    mine = {n for r in before.snapshot["requests"] if r["request_id"] == rid
            for s in r["seqs"] for dev, n, _ in s["block_table"] if dev == "gpu"}
    seq_ids = {sid for sid, who in _request_of(before.snapshot, step.snapshot).items()
               if who == rid}
    for e in step.events:
        if isinstance(e, BlockAllocated) and set(e.seq_ids) & seq_ids:
            mine.add(e.physical)
        elif isinstance(e, CopyOnWrite) and e.seq_id in seq_ids:
            mine.add(e.dst)
    freed = {e.physical for e in step.events if isinstance(e, BlockFreed) and e.device == "gpu"}
    return tuple(sorted(mine & freed))


def preempt(q, before, step):
    first = next((e for e in step.events if isinstance(e, Preempted)), None)
    return ("nobody",) if first is None else (first.request_id, first.mode)


def admit(q, before, step):
    return tuple(e.request_id for e in step.events if isinstance(e, Admitted))


def cpu_load(q, before, step):
    """("load", tokens) when the scheduler put the request in WAITING_FOR_REMOTE_KVS with a
    load job from the CPU tier; ("recompute", tokens scheduled) when it was admitted."""
    rid = q.about["request_id"]
    wait = next((e for e in step.events
                 if isinstance(e, WaitingForRemoteKVs) and e.request_id == rid), None)
    if wait is not None:
        job = next(e for e in step.events if isinstance(e, OffloadLoadJob) and e.request_id == rid)
        assert job.num_tokens == wait.num_external_tokens
        return ("load", wait.num_external_tokens)
    assert any(isinstance(e, Admitted) and e.request_id == rid for e in step.events), \
        f"{rid} was neither loaded nor admitted"
    # Every token the step computes for it has its KV written (ChunkScheduled is only
    # recorded for prefill chunks, not for a resumed request's one last token).
    owner = _request_of(before.snapshot, step.snapshot)
    return ("recompute", sum(e.num_tokens for e in step.events
                             if isinstance(e, KVWritten) and owner.get(e.seq_id) == rid))


def pd_remote(q, before, step):
    """The decode instance: ("wait", blocks) when the request went to WAITING_FOR_REMOTE_KVS,
    ("compute", blocks) when it was admitted to compute its prompt."""
    rid = q.about["request_id"]
    for e in step.events:
        if isinstance(e, WaitingForRemoteKVs) and e.request_id == rid:
            return ("wait", len(e.blocks))
        if isinstance(e, Admitted) and e.request_id == rid:
            seqs = {s["seq_id"] for r in step.snapshot["decode"]["requests"]
                    if r["request_id"] == rid for s in r["seqs"]}
            return ("compute", sum(1 for x in step.events if isinstance(x, BlockAllocated)
                                   and set(x.seq_ids) & seqs))
    raise AssertionError(f"{rid} was not scheduled on the decode instance")


def pd_landed(q, before, step):
    rid = q.about["request_id"]
    assert any(isinstance(e, RemoteKVsReady) and e.request_id == rid for e in step.events), \
        f"{rid} was not promoted"
    return sum(e.num_tokens for e in step.events
               if isinstance(e, ChunkScheduled) and e.request_id == rid)


def pd_hold(q, before, step):
    rid = q.about["request_id"]
    if any(isinstance(e, BlocksHeld) and e.request_id == rid for e in step.events):
        return "held"
    assert any(isinstance(e, BlockFreed) for e in step.events), f"{rid}'s blocks stayed"
    return "freed"


def _pd_best(result, metric):
    runs = result.comparison.runs
    score = {}
    for cfg, lats in runs.items():
        if metric == "ttft":
            score[cfg] = sum(lat.ttft_s for lat in lats) / len(lats)
        else:
            score[cfg] = max(lat.max_tbt_s or 0.0 for lat in lats)
    return min(score, key=score.get)


def pd_ttft(q, before, result):
    return _pd_best(result, "ttft")


def pd_gap(q, before, result):
    return _pd_best(result, "max_tbt")


def step_plan(q, before, step):
    prefill = {e.request_id for e in step.events if isinstance(e, (Admitted, ChunkScheduled))}
    owner = _request_of(before.snapshot, step.snapshot)
    ran = {owner[e.seq_id] for e in step.events if isinstance(e, KVWritten)}
    return (tuple(sorted(prefill)), tuple(sorted(ran - prefill)))


def budget_share(q, before, step):
    rid = q.about["request_id"]
    owner = _request_of(before.snapshot, step.snapshot)
    return sum(e.num_tokens for e in step.events
               if isinstance(e, KVWritten) and owner[e.seq_id] == rid)


def prefix_hit(q, before, step):
    rid = q.about["request_id"]
    assert any(isinstance(e, Admitted) and e.request_id == rid for e in step.events)
    return next((e.num_tokens for e in step.events
                 if isinstance(e, PrefixCacheHit) and e.request_id == rid), 0)


def evict_next(q, before, step):
    return next(e.physical for e in step.events if isinstance(e, BlockEvicted))


def free_queue(q, before, phase):
    """Head or tail, from where each freed block sits in the step's final free queue
    against the blocks that were free before the step's frees and still are."""
    step = phase.step
    freed_now = {e.physical for e in step.events if isinstance(e, BlockFreed)}
    order = step.snapshot["gpu"]["free_order"]
    stay = [i for i, b in enumerate(order) if b not in freed_now]
    assert stay, "no block tells the head from the tail"
    heads = []
    for b in q.about["freed"]:
        i = order.index(b)
        assert i < stay[0] or i > stay[-1], f"block {b} is inside the old queue"
        if i < stay[0]:
            heads.append(b)
    return tuple(heads)


def beam_survivors(q, before, step):
    sel = next(e for e in step.events if isinstance(e, BeamSearchStep))
    return tuple(sorted({c.parent_seq_id for c in sel.candidates if c.outcome == "kept"}))


def _written(step, rid):
    owner = _request_of(step.snapshot)
    return next(e for e in step.events if isinstance(e, KVWritten) and owner[e.seq_id] == rid)


def spec_accept(q, before, step):
    e = _written(step, q.about["request_id"])
    return sum(1 for t in step.events if isinstance(t, TokenSampled) and t.seq_id == e.seq_id)


def spec_rollback(q, before, step):
    e = _written(step, q.about["request_id"])
    seq = next(s for r in step.snapshot["requests"] for s in r["seqs"] if s["seq_id"] == e.seq_id)
    kept, end = seq["num_computed_tokens"], e.first_pos + e.num_tokens
    assert e.first_pos < kept <= end
    return (kept, end - 1) if kept < end else "none"


def batch_join(q, before, column):
    out = []
    for key in ("static", "vllm"):
        b, s = q.about["runs"][key]
        assert s.step == column.index and b.index + 1 == s.index
        out.append(tuple(e.request_id for e in s.events if isinstance(e, Admitted)))
    return tuple(out)


class Near(tuple):
    """A vector the engine computed, equal to an option that rounds it to 2 decimals (the
    generator sums in another order, so the last digit may differ by one)."""

    def __eq__(self, other):
        return (isinstance(other, tuple) and len(other) == len(self)
                and all(abs(a - b) <= 0.0101 for a, b in zip(self, other)))

    __hash__ = tuple.__hash__


def kv_bytes(q, before, step):
    return step.bytes_appended


def kv_fit(q, before, numbers):
    return numbers["seqs_fit"]


def kernel_max(q, before, step):
    return round(step.record.max_logit, 2) + 0.0


def kernel_partial(q, before, step):
    return Near(round(x, 2) + 0.0 for x in step.record.output)


def tp_partial(q, before, item):
    phase, st = item
    res = st.results[0]
    out = res.sharded.attn_all_reduce if phase == "attention" else res.sharded.mlp_all_reduce
    return Near(round(x, 2) + 0.0 for x in out)


def roofline(q, before, tour_step):
    t = tour_step.time
    return (round(t.predicted_s * 1000, 2), t.bound)


def frag_reserve(q, before, pool_step):
    rec = pool_step.records[q.about["policy"]]
    rid = q.about["request_id"]
    blocks = 0
    for e in rec.events:
        name = type(e).__name__
        if name == "ChunkAllocated" and e.request_id == rid:
            return e.size
        if name == "BlockAllocated":
            blocks += 1
        elif name == "Admitted":
            if e.request_id == rid:
                return blocks * q.about["block_size"]
            blocks = 0
    raise AssertionError(f"{rid} was not admitted")


def in_flight(q, before, step):
    owner = _request_of(before.snapshot, step.snapshot)
    return tuple(sorted({owner[e.seq_id] for e in step.events if isinstance(e, KVWritten)}))


def discard(q, before, step):
    rid = q.about["request_id"]
    seq = _request_of(before.snapshot)
    mine = {sid for sid, who in seq.items() if who == rid}
    if any(isinstance(e, TokenDiscarded) and e.request_id == rid for e in step.events):
        return "discard"
    assert any(isinstance(e, TokenSampled) and e.seq_id in mine for e in step.events), \
        f"no output came back for {rid}"
    return "append"


def window_skip(q, before, step):
    rid = q.about["request_id"]
    return tuple(sorted(e.physical for e in step.events
                        if isinstance(e, BlockSkipped) and e.request_id == rid))


TRUTH = {
    "next-block": next_block,
    "new-block": new_block,
    "cow": cow,
    "blocks-freed": blocks_freed,
    "preempt": preempt,
    "admit": admit,
    "cpu-load": cpu_load,
    "pd-remote": pd_remote,
    "pd-landed": pd_landed,
    "pd-hold": pd_hold,
    "pd-ttft": pd_ttft,
    "pd-gap": pd_gap,
    "step-plan": step_plan,
    "budget-share": budget_share,
    "prefix-hit": prefix_hit,
    "evict-next": evict_next,
    "free-queue": free_queue,
    "beam-survivors": beam_survivors,
    "spec-accept": spec_accept,
    "spec-rollback": spec_rollback,
    "batch-join": batch_join,
    "kv-bytes": kv_bytes,
    "kv-fit": kv_fit,
    "kernel-max": kernel_max,
    "kernel-partial": kernel_partial,
    "tp-partial": tp_partial,
    "roofline": roofline,
    "frag-reserve": frag_reserve,
    "in-flight": in_flight,
    "discard": discard,
    "window-skip": window_skip,
}


def _head_of_free_list(q, before, step):
    return before.snapshot["gpu"]["free_order"][0] if before.snapshot["gpu"]["free_order"] \
        else None


def _head_waits(q, before, step):
    """The picture says the waiting head stays (can_allocate later/never) and nobody new
    arrives: 'nobody is admitted' is on the screen."""
    head = before.snapshot["heads"]["waiting"]
    arrived = any(isinstance(e, RequestArrived) for e in step.events)
    if head is not None and head["can_allocate"] != "ok" and not arrived:
        return ()
    return None


NAIVE = {
    "next-block": _head_of_free_list,
    "evict-next": _head_of_free_list,
    "admit": _head_waits,
}
