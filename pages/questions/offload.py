"""V1's CPU tier (the offloading connector, issue 23): a preempted request comes back. Is its
KV loaded from the CPU tier, or computed again, and how many tokens?

The scheduler first looks the request's blocks up in the GPU prefix cache
(get_computed_blocks), then asks the connector for the tokens after that hit
(get_num_new_matched_tokens): the CPU tier's blocks from there on, consecutive, whole blocks
of its tokens, nothing if less than a block. Tokens it can load are loaded asynchronously:
the request gets its blocks now, takes none of the budget, and waits in
WAITING_FOR_REMOTE_KVS until the load lands; with nothing to load it is computed again from
its GPU hit. The rule is applied in pages/questions/scheduling.waiting_pass (with the
blocks and the reservation the loads take); the check reads OffloadLoadJob and Admitted.
"""
from __future__ import annotations

from pages.framework.question import Question, ask
from pages.questions import code
from pages.questions.scheduling import Limits, waiting_pass
from pages.questions.state import is_v1, name, request
from pages.views.text import plural


def _words(value: tuple) -> str:
    how, n = value
    if how == "load-run":
        return (f"It loads {plural(n, 'token')} from the CPU tier and computes the rest in "
                "this step")
    if how == "load":
        return (f"It loads {plural(n, 'token')} from the CPU tier and waits for them "
                "(WAITING_FOR_REMOTE_KVS)")
    return f"It computes {plural(n, 'token')} again: nothing is loaded"


def resume(limits):
    """A preempted request comes back: load from the CPU tier, or recompute?"""

    def generate(step, nxt, ctx) -> Question | None:
        if step is None or nxt.step is None or nxt.error or not is_v1(step.snapshot):
            return None
        snap = step.snapshot
        tier = snap.get("cpu_tier")
        if tier is None:
            return None
        lim: Limits = limits(ctx.values)
        w = waiting_pass(step, nxt, lim)
        if w is None:
            return None
        bs = snap["block_size"]
        obs = tier["offloaded_block_size"]
        loads = {rid: (local, ext) for rid, local, ext in w.loads}
        admitted = {rid: (hit, n) for rid, hit, n in zip(w.admitted, w.hits, w.tokens)}
        for rid in snap["queues"]["waiting"]:
            r = request(snap, rid)
            if r["num_preemptions"] == 0 or (rid not in loads and rid not in admitted):
                continue
            s = r["seqs"][0]
            n = s["len"]
            held = [h for h in r["block_hashes"]
                    if any(b["hash"] == h and b["state"] == "ready" for b in tier["blocks"])]
            if rid in loads:
                local, ext = loads[rid]
                correct = ("load", ext)
                if local + ext == n:
                    later = "its last token is computed once they land (for its logits)"
                else:
                    later = (f"the other {plural(n - local - ext, 'token')} are computed once "
                             "they land")
                why = (f"the CPU tier holds the next {plural(ext // obs, 'block')} in a row "
                       f"(a load starts right after the GPU hit), so the connector "
                       f"answers {plural(ext, 'token')} (whole blocks of {obs}); the request "
                       "gets its blocks now, takes none of the token budget and waits in "
                       f"WAITING_FOR_REMOTE_KVS; {later}")
            else:
                local, computed = admitted[rid]
                correct = ("recompute", computed)
                first = local // obs
                if first < len(r["block_hashes"]) and r["block_hashes"][first] in held:
                    why = "what the CPU tier holds after that is less than a block"
                else:
                    why = (f"the CPU tier does not hold its block {first + 1} (its blocks are "
                           "only copied there when full, only the prompt's unless generated "
                           "blocks are offloaded too, and the tier evicts the least recently "
                           "used), and a load must start right after the GPU hit")
                why += f", so nothing is loaded and {plural(computed, 'token')} are computed"
            whole = n // bs * bs
            candidates = [("load-run", correct[1]) if correct[0] == "load" else None,
                          ("recompute", n - local), ("load", len(held) * obs),
                          ("load", whole - local), ("recompute", n), ("load", n - local)]
            candidates = [c for c in candidates if c is not None and c[1] > 0 and c != correct]
            gpu = (f"the GPU prefix cache finds {plural(local, 'token')} of it"
                   if local else "the GPU prefix cache finds none of it")
            prompt = (f"In {name(nxt, ctx)}, {rid} comes back after its preemption: "
                      f"{plural(n, 'token')}, and the CPU tier holds "
                      f"{plural(len(held), 'block')} of them. What does the scheduler do "
                      f"with {rid}?")
            explanation = (f"With the offloading connector the scheduler looks the request up "
                           f"in the GPU prefix cache first ({gpu}), then asks the connector "
                           f"for the tokens after that hit; {why}.")
            return ask("cpu-load", prompt, correct, candidates, _words, explanation,
                       code.OFFLOAD_LOOKUP, {"request_id": rid}, order="mixed")
        return None

    return generate
