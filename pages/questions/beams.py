"""Beam search in vLLM v0.5.5 (sim/core): which beams survive a step's selection, and which
blocks go back to the free list when the others are dropped.

A step of beam search: every running beam appends its token's slot (append_slots: a shared
partial last block is copied first), the model proposes candidates, the best `beam width`
by cumulative log-probability live on as children of their parents, and every beam without
a kept candidate is freed. The candidates' log-probabilities come from the model, so the
question states them; the rest is the rule.
"""
from __future__ import annotations

from pages.framework.question import Question, ask
from pages.questions import code
from pages.questions.kv import plan_appends
from pages.questions.state import blocks_words, free, labels, name, running_seqs, table
from pages.views.text import join
from sim.events import BeamSearchStep, Preempted


def _selection(nxt) -> BeamSearchStep | None:
    found = nxt.of_type(BeamSearchStep)
    if len(found) != 1 or nxt.of_type(Preempted):
        return None
    sel = found[0]
    if any(c.outcome == "finished" for c in sel.candidates):
        return None      # the last step: everything finishes, nothing is selected
    return sel


def _survivors(sel: BeamSearchStep, width: int) -> tuple[int, ...]:
    best = sorted(sel.candidates, key=lambda c: -c.cumulative_logprob)[:width]
    return tuple(sorted({c.parent_seq_id for c in best}))


def _group(step, rid: str):
    return next(r for r, _ in running_seqs(step.snapshot) if r["request_id"] == rid)


def survivors(step, nxt, ctx) -> Question | None:
    """Which beams have at least one of the best `width` candidates?"""
    if step is None or step.step is None or nxt.step is None:
        return None
    sel = _selection(nxt)
    if sel is None:
        return None
    r = _group(step, sel.request_id)
    width = r["best_of"]
    names = labels(step.snapshot, nxt.snapshot)
    parents = [s["seq_id"] for s in r["seqs"] if s["status"] == "running"]
    if len(parents) < 2:
        return None
    correct = _survivors(sel, width)
    by_parent: dict[int, list[float]] = {}
    for c in sel.candidates:
        by_parent.setdefault(c.parent_seq_id, []).append(c.cumulative_logprob)
    listed = "; ".join(f"{names.get(p, '?')}: "
                       + ", ".join(f"{x:.2f}" for x in sorted(v, reverse=True))
                       for p, v in by_parent.items())
    prompt = (f"In {name(nxt, ctx)}, the {len(parents)} beams propose {len(sel.candidates)} "
              f"candidates, with these cumulative log-probabilities ({listed}). Which beams "
              f"live on, with at least one of the best {width}?")
    own = {s["seq_id"]: s["cumulative_logprob"] for s in r["seqs"]}
    by_own = sorted(parents, key=lambda p: -own[p])
    candidates = [tuple(sorted(by_own[:len(correct)])), tuple(sorted(parents)),
                  tuple(sorted(by_own[:max(1, len(correct) - 1)])),
                  tuple(sorted(_survivors(sel, max(1, width // 2))))]

    def text(v: tuple) -> str:
        return join([names.get(p, "?") for p in v])

    best = sorted(sel.candidates, key=lambda c: -c.cumulative_logprob)[:width]
    cut = best[-1].cumulative_logprob
    explanation = (f"Beam search keeps the best {width} candidates of all the beams together, "
                   "by cumulative log-probability (the beam's score so far plus the new "
                   f"token's), not the best beams: the {width}th best is {cut:.2f}, so the "
                   f"kept ones come from {text(correct)}. A beam whose candidates all fall "
                   "below is dropped and freed, however good its own score was.")
    return ask("beam-survivors", prompt, correct, candidates, text, explanation,
               code.BEAM_SELECTION, {"request_id": sel.request_id}, order="mixed")


def freed_blocks(step, nxt, ctx) -> Question | None:
    """Given who survives, which blocks return to the free list? The step's copy-on-write
    copies come first, so a dropped beam's fresh copy is freed with it."""
    if step is None or step.step is None or nxt.step is None:
        return None
    sel = _selection(nxt)
    if sel is None:
        return None
    snap = step.snapshot
    r = _group(step, sel.request_id)
    width = r["best_of"]
    names = labels(snap, nxt.snapshot)
    alive = set(_survivors(sel, width))
    seqs = [s for s in r["seqs"] if s["status"] == "running"]
    dropped = [s["seq_id"] for s in seqs if s["seq_id"] not in alive]
    if not dropped:
        return None
    plan = plan_appends(snap, r)
    pool = free(snap)
    after: dict[int, list[int]] = {}
    copied = {}
    for s in seqs:
        t = table(s)
        action, last = plan[s["seq_id"]]
        if action in ("new", "cow"):
            if not pool:
                return None
            dst = pool.pop(0)
            t = t + [dst] if action == "new" else t[:-1] + [dst]
            if action == "cow":
                copied[s["seq_id"]] = dst
        after[s["seq_id"]] = t
    kept = {b for sid in alive for b in after[sid]}
    correct = tuple(sorted({b for sid in dropped for b in after[sid]} - kept))
    before_kept = {b for s in seqs if s["seq_id"] in alive for b in table(s)}
    no_cow = tuple(sorted({b for s in seqs if s["seq_id"] in dropped for b in table(s)}
                          - before_kept))
    every = tuple(sorted({b for sid in dropped for b in after[sid]}))
    candidates = [no_cow, every, (), tuple(sorted(set(correct) | set(copied.values())))]
    counts = {}
    for c in sorted(sel.candidates, key=lambda c: -c.cumulative_logprob)[:width]:
        counts[c.parent_seq_id] = counts.get(c.parent_seq_id, 0) + 1
    kept_words = join([f"{names.get(p, '?')} ({n})" for p, n in counts.items()])
    prompt = (f"In {name(nxt, ctx)}, the best {width} candidates come from {kept_words}; "
              f"{join([names.get(d, '?') for d in dropped])} "
              f"{'gets none and is' if len(dropped) == 1 else 'get none and are'} dropped. "
              "Which blocks go back to the free list?")
    parts = ["First every beam appends its token's slot: a beam whose last block is shared "
             "and not full copies it (copy-on-write), so it holds a block of its own"]
    if copied:
        parts.append("here " + join([f"{names.get(s, '?')} gets {d}"
                                     for s, d in copied.items()]))
    parts.append("then the dropped beams are freed, and a block goes back only when no kept "
                 "beam (or its children, which share its table) still holds it: "
                 + (blocks_words(correct) if correct else "none does"))
    return ask("blocks-freed", prompt, correct, candidates, _set_words,
               "; ".join(parts) + ".", code.BEAM_SELECTION + "; " + code.APPEND_SLOTS,
               {"request_id": sel.request_id})


def _set_words(blocks: tuple) -> str:
    return "None" if not blocks else blocks_words(blocks)
