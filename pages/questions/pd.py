"""Disaggregated prefill and decode (issue 22): what the next step of the prefill GPU or the
decode GPU does with a request's KV (pd-step), and which configuration gives the first token
soonest or the steadiest tokens (pd-latency, asked before its one frame is shown).

vLLM V1 with NIXL's connector: the prefill instance computes the prompt and holds its blocks
(request_finished says delay_free_blocks); the decode instance's scheduler asks the
connector for the prompt's tokens (get_num_new_matched_tokens: all but the last), allocates
blocks for them and waits in WAITING_FOR_REMOTE_KVS while the worker reads them over the
link; once they land the request is scheduled with the last prompt token to compute.
"""
from __future__ import annotations

from pages.framework.question import Question, ask
from pages.questions import code

CONFIGS = (("colocated-1", "One colocated GPU"), ("colocated-2", "Two colocated GPUs"),
           ("disaggregated", "One prefill GPU + one decode GPU"))
_WORDS = dict(CONFIGS)


def _config(value: str) -> str:
    return _WORDS[value]


def _ranked(result, metric: str) -> list[tuple[float, str]] | None:
    c = result.comparison
    out = []
    for cfg, _ in CONFIGS:
        xs = c.stat(cfg, "ttft" if metric == "ttft" else "max_tbt")
        out.append(((sum(xs) / len(xs)) if metric == "ttft" else max(xs), cfg))
    out.sort()
    # Too close to call at the chart's precision: nothing to predict.
    if out[1][0] - out[0][0] < max(0.01 * out[0][0], 0.0005):
        return None
    return out


def soonest_first_token(step, nxt, ctx) -> Question | None:
    """Which configuration gives the first token soonest, on average over the requests?"""
    if step is not None or nxt is None or not hasattr(nxt, "comparison"):
        return None
    ranked = _ranked(nxt, "ttft")
    if ranked is None:
        return None
    ms = {cfg: t * 1e3 for t, cfg in ranked}
    best = ranked[0][1]
    listed = ", ".join(f"{_WORDS[c][0].lower() + _WORDS[c][1:]} {ms[c]:.1f} ms" for _, c in ranked)
    why = [f"On average: {listed}"]
    if best != "disaggregated":
        why.append("disaggregated, every prompt waits for the one prefill GPU and then for "
                   "its KV to cross the link, and the decode GPU's first step computes the "
                   "last prompt token: a first token costs a transfer and a step more")
    else:
        why.append("the colocated GPUs' prompts queue behind each other's chunks, and the "
                   "transfer costs less than that wait")
    prompt = (f"Twelve long prompts with short answers arrive {ctx.values['gap']} ms apart, "
              "on H200s. Which configuration gives the first token soonest, on average?")
    return ask("pd-ttft", prompt, best, [c for c, _ in CONFIGS], _config,
               "; ".join(why) + ".", code.NIXL_SCHEDULE, {"metric": "ttft"},
               order=tuple(c for c, _ in CONFIGS))


def steadiest_tokens(step, nxt, ctx) -> Question | None:
    """Which configuration has the shortest longest gap between two tokens?"""
    if step is not None or nxt is None or not hasattr(nxt, "comparison"):
        return None
    ranked = _ranked(nxt, "max_tbt")
    if ranked is None:
        return None
    ms = {cfg: t * 1e3 for t, cfg in ranked}
    best = ranked[0][1]
    listed = ", ".join(f"{_WORDS[c][0].lower() + _WORDS[c][1:]} {ms[c]:.1f} ms" for _, c in ranked)
    why = [f"The longest gap: {listed}"]
    if best == "disaggregated":
        why.append("on the decode GPU no prompt shares a step with the decodes, while a "
                   "colocated GPU runs a prompt's chunk in the same step as its decodes "
                   "(one token budget), so every running request waits for the chunk")
    prompt = (f"Twelve long prompts with short answers arrive {ctx.values['gap']} ms apart, "
              "on H200s. Which configuration has the shortest longest gap between two tokens "
              "of a request?")
    return ask("pd-gap", prompt, best, [c for c, _ in CONFIGS], _config,
               "; ".join(why) + ".", code.V1_SCHEDULE, {"metric": "max_tbt"},
               order=tuple(c for c, _ in CONFIGS))


# -- pd-step: a request's KV between the two instances ------------------------------------------

_HOLD = {"held": "They stay allocated, unchanged, until the decode GPU has read them",
         "freed": "They are freed at once, back to the free queue",
         "push": "They are copied to the decode GPU in this step, then freed",
         "evicted": "They are freed and their hashes dropped from the prefix cache"}


def _side(step):
    snap = getattr(step, "snapshot", None)
    return snap.get("engine") if isinstance(snap, dict) else None


def held(step, nxt, ctx) -> Question | None:
    """The prefill GPU finishes a prompt (max_tokens 1, a remote decode): are its blocks
    freed? (NIXL's request_finished keeps them: delay_free_blocks.)"""
    if step is None or nxt.step is None or nxt.error or _side(nxt) != "prefill":
        return None
    for e in nxt.events:
        if type(e).__name__ == "RequestFinished" and e.status == "finished_length_capped":
            rid = e.request_id
            prompt = (f"In the prefill GPU's step {nxt.step}, {rid}'s last prompt chunk is "
                      f"computed and its one token sampled: {rid} is finished there. What "
                      "happens to its blocks on the prefill GPU?")
            explanation = ("The prefill instance runs the request with max_tokens 1 and "
                           "do_remote_decode: when it finishes, the connector's "
                           "request_finished answers delay_free_blocks, so the scheduler "
                           "keeps its blocks (and their KV) until the decode instance's "
                           "worker has read them over the link (NIXL pulls: the decode side "
                           "reads, the prefill side sends nothing); they are freed when the "
                           "worker reports the request in finished_sending.")
            return ask("pd-hold", prompt, "held", list(_HOLD), _HOLD.__getitem__, explanation,
                       code.NIXL_FINISHED, {"request_id": rid},
                       order=("freed", "held", "push", "evicted"))
    return None


def _wait_words(value) -> str:
    how, n = value
    if how == "wait":
        return (f"It gets {n} blocks and waits for its KV over the link "
                "(WAITING_FOR_REMOTE_KVS)")
    if how == "decode":
        return f"It gets {n} blocks and samples its first token in this step"
    return f"It gets {n} blocks and computes its prompt again"


def remote_wait(step, nxt, ctx) -> Question | None:
    """A request whose prompt was computed on the prefill GPU reaches the decode GPU's
    scheduler: what does it do with it, and how many blocks does it take?"""
    if step is None or nxt.step is None or nxt.error or _side(nxt) != "decode":
        return None
    before = step.snapshot.get("decode") if isinstance(step.snapshot, dict) else None
    if before is None:
        return None
    bs = before["block_size"]
    cached = {b["hash"] for b in before["gpu"]["blocks"] if b.get("cached") and b["hash"]}
    for e in nxt.events:
        if type(e).__name__ not in ("WaitingForRemoteKVs", "Admitted"):
            continue
        rid = e.request_id
        if rid in before["queues"].get("skipped_waiting", ()) or rid in before["queues"]["running"]:
            continue
        r = next((x for x in nxt.snapshot["decode"]["requests"] if x["request_id"] == rid), None)
        if r is None or not r.get("kv_transfer_params") or r["num_preemptions"]:
            continue
        if any(h in cached for h in r.get("block_hashes", ())):
            return None      # a local prefix hit: not modelled here
        prompt_len = r["seqs"][0]["prompt_len"]
        blocks = -(-prompt_len // bs)
        correct = ("wait", blocks)
        candidates = [("decode", blocks), ("compute", blocks), ("wait", blocks + 1),
                      ("wait", max(blocks - 1, 1))]
        prompt = (f"In the decode GPU's step {nxt.step}, its scheduler takes {rid}, whose "
                  f"{prompt_len}-token prompt the prefill GPU has computed (blocks of {bs}). "
                  f"What does it do with {rid}?")
        explanation = (f"The decode instance's connector answers that all {prompt_len} prompt "
                       "tokens can be loaded (get_num_new_matched_tokens, asynchronously), so "
                       f"the scheduler allocates blocks for them, {prompt_len} / {bs} rounded "
                       f"up = {blocks}, schedules no token of {rid} and moves it to "
                       "WAITING_FOR_REMOTE_KVS while the worker reads the blocks over the "
                       "link; once they land, it recomputes the last prompt token to sample "
                       "the first output.")
        return ask("pd-remote", prompt, correct, candidates, _wait_words, explanation,
                   code.NIXL_SCHEDULE, {"request_id": rid}, order="mixed")
    return None


def _landed(ctx, upto: int) -> set[str]:
    """Requests the decode GPU's last step before frame `upto` reported received
    (KVTransferFinished "recving"): the scheduler promotes them at its next step."""
    for frame in reversed(list(ctx.trace)[:upto + 1]):
        if _side(frame) == "decode":
            return {e.request_id for e in frame.events
                    if type(e).__name__ == "KVTransferFinished" and e.direction == "recving"}
    return set()


def _tokens(n: int) -> str:
    return f"{n} token" + ("" if n == 1 else "s")


def landed(step, nxt, ctx) -> Question | None:
    """The decode GPU's worker reported a request's KV received: how many tokens does the
    decode GPU compute for it in its next step? (All its prompt tokens arrived, so the last
    one is computed again: a step needs a token to compute to sample the next.)"""
    if step is None or nxt.step is None or nxt.error or _side(nxt) != "decode":
        return None
    before = step.snapshot.get("decode") if isinstance(step.snapshot, dict) else None
    if before is None:
        return None
    v = ctx.values
    budget = v["budget"] - len(before["queues"]["running"])
    if budget < 1 or len(before["queues"]["running"]) >= 16:
        return None
    landed_ids = _landed(ctx, step.index)
    for rid in before["queues"].get("skipped_waiting", ()):
        if rid not in landed_ids or v.get("fail") == rid or (v.get("abort") or ("",))[0] == rid:
            continue
        r = next(x for x in before["requests"] if x["request_id"] == rid)
        prompt_len = r["seqs"][0]["prompt_len"]
        candidates = [0, prompt_len, prompt_len + 1, 2]
        prompt = (f"In the decode GPU's step {nxt.step}, the worker has reported {rid}'s KV "
                  f"received: all {prompt_len} prompt tokens. How many tokens does the decode "
                  f"GPU compute for {rid} in this step?")
        explanation = (f"The scheduler promotes {rid} from WAITING_FOR_REMOTE_KVS "
                       "(_update_waiting_for_remote_kv caches its blocks and sets its computed "
                       "tokens from what landed); with every prompt token there, it takes one "
                       f"back ({prompt_len - 1} computed), because a step must compute a token "
                       "to sample the next: the last prompt token is computed again and the "
                       "first output token sampled from it.")
        return ask("pd-landed", prompt, 1, candidates, _tokens, explanation,
                   code.REMOTE_KV_READY, {"request_id": rid})
    return None
