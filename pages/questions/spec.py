"""Speculative decoding in V1 (vLLM v0.25.1): how many tokens a step with drafts gains, and
which draft slots are rolled back.

A request with K drafts schedules its newest token and the K drafts in one forward pass:
their keys and values are written at K + 1 slots. Rejection sampling keeps the drafts up to
the first the model disagrees with, plus the model's own token there (or after the last
draft), so a step gains accepted + 1 tokens; update_from_output rolls num_computed_tokens
back by the rejected drafts, whose slots the next step writes again. Which drafts the model
accepts is the model's doing, so the questions say it; the rest is the rule.
"""
from __future__ import annotations

from pages.framework.question import Question, ask
from pages.questions import code
from pages.questions.state import name, seqs
from pages.views.text import plural
from sim.events import KVWritten, TokenSampled


def _drafted(step, nxt):
    """(request id, seq_id, drafts, kept, first slot, end slot) for each request that ran
    with drafts in `nxt` and did not finish there (a finishing one keeps only what it
    needs)."""
    spec = getattr(nxt.outputs, "scheduled_spec_decode_tokens", None) or {}
    owner = {sid: r["request_id"] for sid, (r, _) in seqs(nxt.snapshot).items()}
    out = []
    for e in nxt.of_type(KVWritten):
        rid = owner.get(e.seq_id)
        drafts = len(spec.get(rid, ()))
        if not drafts or rid in nxt.finished:
            continue
        kept = sum(1 for t in nxt.of_type(TokenSampled) if t.seq_id == e.seq_id)
        if e.num_tokens != drafts + 1:
            continue
        out.append((rid, e.seq_id, drafts, kept, e.first_pos, e.first_pos + e.num_tokens))
    return out


def _slots(a: int, b: int) -> str:
    return f"slot {a}" if a == b else f"slots {a}-{b}"


def accepted(step, nxt, ctx) -> Question | None:
    """The model agrees with the first k drafts: how many tokens does the request gain?"""
    if step is None or nxt.step is None:
        return None
    found = _drafted(step, nxt)
    if not found:
        return None
    rid, _, drafts, kept, w0, w1 = found[0]
    k = kept - 1
    agree = ("agrees with all of them" if k == drafts else
             "disagrees with the first draft" if k == 0 else
             f"agrees with the first {plural(k, 'draft')} and disagrees with draft {k + 1}")
    prompt = (f"In {name(nxt, ctx)}, {rid} runs its newest token and {plural(drafts, 'draft')} "
              f"in one forward pass (slots {w0}-{w1 - 1}); the model {agree}. How many "
              f"tokens does {rid} gain?")
    candidates = [k, drafts + 1, 1, drafts, k + 2]
    explanation = ("Rejection sampling keeps the drafts up to the first one the model "
                   "disagrees with, and adds the model's own token at that position (or after "
                   f"the last draft when all are accepted): {k} accepted + 1 = {kept}. Even a "
                   "step whose drafts all fail gains one token, as a step without drafts would.")
    return ask("spec-accept", prompt, kept, candidates, lambda n: plural(n, "token"),
               explanation, code.REJECTION, {"request_id": rid})


def rollback(step, nxt, ctx) -> Question | None:
    """Which of this step's slots does the next step write again?"""
    if step is None or nxt.step is None:
        return None
    found = _drafted(step, nxt)
    if not found:
        return None
    rid, _, drafts, kept, w0, w1 = found[0]
    k = kept - 1
    again = (w0 + 1 + k, w1 - 1) if k < drafts else None
    candidates = [(w0 + 1, w1 - 1), (w0 + 2 + k, w1 - 1) if w0 + 2 + k <= w1 - 1 else None,
                  None if again is None else "none", (w1 - 1, w1 - 1), (w0 + k, w1 - 1)]
    if again is None:
        candidates = [(w0 + 1, w1 - 1), (w1 - 1, w1 - 1), (w0 + drafts, w1 - 1)]
    correct = again if again is not None else "none"
    prompt = (f"In {name(nxt, ctx)}, {rid} writes the keys and values of its newest token and "
              f"{plural(drafts, 'draft')} at slots {w0}-{w1 - 1}, and the model accepts "
              f"{k if k else 'none'} of the drafts. Which slots does the next step write "
              "again?")

    def text(v) -> str:
        return "None: every slot keeps its KV" if v == "none" else _slots(*v)

    kept_words = ("No draft is accepted" if k == 0 else
                  f"The {plural(k, 'accepted draft')} keep their KV")
    if again:
        rest = (f"; update_from_output rolls num_computed_tokens back by the "
                f"{plural(drafts - k, 'rejected draft')}, so {_slots(*again)} hold KV of "
                "tokens that were not kept and are written again next step, starting with the "
                f"model's own token at slot {again[0]}.")
    else:
        rest = ("; nothing is rolled back: every draft was accepted, and the model's bonus "
                "token is written next step, after them.")
    explanation = (f"Slot {w0} holds the newest token and {_slots(w0 + 1, w1 - 1)} the drafts. "
                   + kept_words + rest)
    return ask("spec-rollback", prompt, correct, candidates, text, explanation,
               code.V1_ROLLBACK, {"request_id": rid}, order="mixed")
