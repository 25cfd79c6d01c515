"""Scheduling questions for either engine's trace: who is preempted (and how), who is
admitted from the waiting queue (or why nobody is).

Each applies the scheduler's rule to the state `step` shows, as vLLM's schedule() walks it
(v0.5.5: `vllm/core/scheduler.py`, V1: `vllm/v1/core/sched/scheduler.py`): the running
requests in order, each asking the block manager for its next token's room, then the
waiting queue in order, stopping at the first request that does not fit. The settings that
the snapshot does not hold (budgets, the preemption mode) come from the page's `limits`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pages.framework.question import Question, ask
from pages.questions import code
from pages.questions.kv import plan_appends
from pages.questions.state import (
    engine,
    in_flight,
    is_v1,
    last_in_flight,
    name,
    request,
    table,
    to_compute,
)
from pages.views.prefix_view import cached_hashes
from pages.views.text import join, plural
from sim.core.config import SchedulerConfig as V055Config
from sim.events import PromptIgnored, SwappedIn
from sim.v1.config import SchedulerConfig as V1Config


@dataclass(frozen=True)
class Limits:
    """A scheduler's settings that a snapshot does not hold (engine defaults if unset)."""
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    max_model_len: int = 2048
    preemption_mode: str | None = None      # v0.5.5: None, "swap" or "recompute"
    threshold: int = 0                      # V1: long_prefill_token_threshold
    chunked: bool | None = None             # None: the engine's default

    def budget(self, v1: bool) -> int:
        if self.max_num_batched_tokens is not None:
            return self.max_num_batched_tokens
        return (V1Config(max_model_len=self.max_model_len).max_num_batched_tokens if v1 else
                V055Config(max_model_len=self.max_model_len).max_num_batched_tokens)

    def seats(self, v1: bool) -> int:
        if self.max_num_seqs is not None:
            return self.max_num_seqs
        return V1Config().max_num_seqs if v1 else V055Config().max_num_seqs

    def chunking(self, v1: bool) -> bool:
        return self.chunked if self.chunked is not None else v1


DEFAULT = Limits()


def _limits(ctx, limits: Callable[[dict], Limits] | None) -> Limits:
    return limits(ctx.values) if limits is not None else DEFAULT


def _seats_of(r: dict) -> int:
    """get_max_num_running_seqs: what a group is charged against max_num_seqs."""
    if r["use_beam_search"] or r["best_of"] > len(r["seqs"]):
        return r["best_of"]
    return sum(1 for s in r["seqs"] if not s["status"].startswith("finished"))


def _running_seqs(r: dict) -> int:
    return sum(1 for s in r["seqs"] if s["status"] == "running")


# -- the running pass: who gets room, who is preempted --------------------------------------

@dataclass(frozen=True)
class RunningPass:
    victim: str | None          # the first preempted request
    needer: str | None          # who needed the room
    free_at: int                # free blocks when the needer asked
    asked: int                  # blocks (v0.5.5: sequences) the needer asked for
    free_after: int             # free blocks after the pass (no preemption)
    budget_after: int           # V1: token budget left for the waiting queue
    tight: bool                 # some request asked for as many blocks as were free or more
    scheduled: tuple = ()       # (request id, tokens, prefill chunk?) before any preemption


def running_pass(snap: dict, lim: Limits) -> RunningPass:
    v1 = is_v1(snap)
    free = snap["gpu"]["num_free"]
    queue = list(snap["queues"]["running"])
    bs = snap["block_size"]
    budget = lim.budget(v1)
    tight = False
    scheduled = []
    while queue and (budget > 0 or not v1):
        rid = queue.pop(0)
        r = request(snap, rid)
        if v1:
            s = r["seqs"][0]
            if last_in_flight(r, s):
                continue     # async: its token in flight is its last; not scheduled again
            num_new = to_compute(r, s)
            if 0 < lim.threshold < num_new:
                num_new = lim.threshold
            num_new = min(num_new, budget, lim.max_model_len - s["num_computed_tokens"] - 1)
            if num_new <= 0:
                continue
            need_tokens = min(s["num_computed_tokens"] + num_new, lim.max_model_len)
            asked = max(-(-need_tokens // bs) - len(table(s)), 0)
            budget -= num_new
            # Prompt (or recomputed) tokens, the last prompt token included.
            chunk = (s["num_computed_tokens"] < s["len"] + in_flight(r) - 1
                     or s["num_computed_tokens"] < s["prompt_len"])
        else:
            asked = _running_seqs(r)      # can_append_slots: one free block per sequence
            num_new, chunk = 1, False
        tight = tight or asked >= free > 0 or (asked > 0 and free == 0)
        if asked > free:
            victim = queue.pop() if queue else rid
            return RunningPass(victim, rid, free, asked, free, budget, True, tuple(scheduled))
        scheduled.append((rid, num_new, chunk))
        if v1:
            free -= asked
        else:
            free -= sum(1 for action, _ in plan_appends(snap, r).values()
                        if action in ("new", "cow"))
    return RunningPass(None, None, free, 0, free, budget, tight, tuple(scheduled))


def _mode(snap: dict, victim: str, lim: Limits) -> str:
    if is_v1(snap):
        return "recompute"
    if lim.preemption_mode in ("swap", "recompute"):
        return lim.preemption_mode
    return "recompute" if _seats_of(request(snap, victim)) == 1 else "swap"


def preempt(limits: Callable[[dict], Limits] | None = None):
    """Who does the next step preempt first, and how? Asked when the rule preempts, and in
    the tight steps where it does not (so "nobody" is an answer a reader must earn)."""

    def generate(step, nxt, ctx) -> Question | None:
        if step is None or step.step is None or nxt.step is None or nxt.error:
            return None
        snap = step.snapshot
        v1 = is_v1(snap)
        lim = _limits(ctx, limits)
        running = snap["queues"]["running"]
        if len(running) < 2 and not v1:
            return None
        if not v1 and (snap["queues"]["waiting"] or _arrivals(step, nxt)):
            w = waiting_pass(step, nxt, lim)
            if w is None or w.admitted:
                return None      # a prefill-only step: nothing is decoded, nobody preempted
        if v1 and lim.chunking(v1) is False:
            return None
        p = running_pass(snap, lim)
        if p.victim is None and not p.tight:
            return None
        correct = (p.victim, _mode(snap, p.victim, lim)) if p.victim else ("nobody",)
        tail, head = running[-1], running[0]
        other = "swap" if (p.victim and correct[1] == "recompute") or not p.victim and \
            _mode(snap, tail, lim) == "recompute" else "recompute"
        candidates = [(tail, _mode(snap, tail, lim)), (tail, other), ("nobody",),
                      (head, _mode(snap, head, lim))]
        if p.needer:
            candidates.append((p.needer, _mode(snap, p.needer, lim)))
        free = snap["gpu"]["num_free"]
        prompt = (f"In {name(nxt, ctx)}, {join(running)} {'is' if len(running) == 1 else 'are'} "
                  f"running and {plural(free, 'GPU block')} {'is' if free == 1 else 'are'} "
                  "free. Is anyone preempted, and how?")
        return ask("preempt", prompt, correct, candidates, _victim_words,
                   _preempt_explanation(snap, p, correct, lim),
                   code.V1_PREEMPT if v1 else code.SCHEDULE_RUNNING,
                   {"engine": engine(snap)}, order="mixed")

    return generate


def _victim_words(value: tuple) -> str:
    if value == ("nobody",):
        return "Nobody: every running request gets its room"
    rid, mode = value
    return (f"{rid}, swapped out to CPU memory" if mode == "swap" else
            f"{rid}, freed and recomputed later")


def _preempt_explanation(snap: dict, p: RunningPass, correct: tuple, lim: Limits) -> str:
    v1 = is_v1(snap)
    order = ", ".join(snap["queues"]["running"])
    if v1:
        rule = (f"V1 schedules the running requests in order ({order}); allocate_slots must "
                "find free blocks for each one's new tokens, or the scheduler pops the last "
                "of running and preempts it, by recompute (V1 never swaps)")
    else:
        rule = (f"v0.5.5 decodes the running requests in order ({order}); before each, "
                "can_append_slots wants one free block per running sequence, whether or not "
                "the token needs a new block; if there is none, the tail of running is "
                "preempted")
    if correct == ("nobody",):
        return rule + ". Each request finds its room, so nobody is preempted this step."
    victim, mode = correct
    asked = (f"{plural(p.asked, 'new block')}" if v1 else plural(p.asked, "free block"))
    who = (f"{p.needer} needs {asked} and {p.free_at} {'is' if p.free_at == 1 else 'are'} "
           "free")
    if victim == p.needer:
        whom = f", and nobody is behind it in running, so {victim} preempts itself."
    else:
        whom = f", so the scheduler preempts the tail of running, {victim}."
    if v1:
        how = (f" {victim}'s blocks are freed, its computed tokens forgotten, and it waits at "
               "the front of waiting to be recomputed.")
    elif lim.preemption_mode == mode:
        how = (f" The page sets preemption_mode to {mode}, so {victim} is "
               + ("swapped out to the CPU." if mode == "swap" else "recomputed later."))
    elif mode == "swap":
        how = (f" {victim} has several sequences, which cannot be recomputed as one prompt, "
               "so it is swapped out to the CPU.")
    else:
        how = (f" {victim} is a single sequence and no preemption mode is set, so it is "
               "recomputed: its blocks are freed and it waits at the front of waiting.")
    return f"{rule}. {who[0].upper()}{who[1:]}{whom}{how}"


# -- the waiting pass: who is admitted -------------------------------------------------------

def _arrivals(step, nxt) -> list[str]:
    snap = step.snapshot
    by_id = {r["request_id"]: r for r in snap["requests"]}
    return [rid for rid in snap["queues"]["pending"]
            if by_id[rid]["arrival_step"] <= nxt.step]


@dataclass(frozen=True)
class WaitingPass:
    admitted: tuple[str, ...]
    lines: tuple[str, ...]        # the scheduler's reasoning, request by request
    stop: str | None              # why the first request left waiting stays
    tokens: tuple = ()            # tokens each admitted request computes, in order
    hits: tuple = ()              # V1: prompt tokens each one found in the prefix cache
    # V1 with a CPU tier: (request, tokens found on the GPU, tokens loaded from the CPU tier)
    # for each request that got blocks and now waits for its load (WAITING_FOR_REMOTE_KVS).
    loads: tuple = ()


class FreeQueue:
    """V1's free queue as a step works through it: new blocks are popped from the head (a
    popped block that holds a cached hash loses it: evicted), a prefix hit's free blocks
    are taken out where they are (touch)."""

    def __init__(self, snap: dict) -> None:
        self.order = list(snap["gpu"]["free_order"])
        self.blocks = snap["gpu"]["blocks"]
        self.cached = cached_hashes(snap)

    def __len__(self) -> int:
        return len(self.order)

    def pop(self, n: int) -> None:
        for b in self.order[:n]:
            h = self.blocks[b]["hash"]
            if h is not None and self.cached.get(h) == b:
                del self.cached[h]
        del self.order[:n]

    def touch(self, hits) -> int:
        """Take the free ones among the hit blocks out of the queue; how many were free."""
        free = [b for b in hits if b in self.order]
        self.order = [b for b in self.order if b not in free]
        return len(free)


def waiting_pass(step, nxt, lim: Limits) -> WaitingPass | None:
    """The requests the next step admits, by the rule; None for a case not modelled
    (a prompt ignored, chunked prefill in v0.5.5)."""
    snap = step.snapshot
    v1 = is_v1(snap)
    if not v1 and lim.chunking(False):
        return None
    bs = snap["block_size"]
    lines: list[str] = []
    admitted: list[str] = []
    tokens: list[int] = []
    found: list[int] = []

    loads: list[tuple[str, int, int]] = []
    # With a connector, the blocks the prefills still under way need (an async load's
    # allocation must leave them free: the scheduler's reserved_blocks).
    reserved = 0

    def stop(why: str) -> WaitingPass:
        return WaitingPass(tuple(admitted), tuple(lines), why, tuple(tokens), tuple(found),
                           tuple(loads))

    if not v1 and snap["queues"]["swapped"]:
        swapped = snap["queues"]["swapped"]
        return stop(f"nothing is admitted while {join(swapped)} "
                    f"{'is' if len(swapped) == 1 else 'are'} swapped out")
    tier = snap.get("cpu_tier") if v1 else None
    if v1 and not connector_modelled(snap):
        return None
    if v1:
        p = running_pass(snap, lim)
        if p.victim is not None:
            return stop("V1 admits nobody in a step that preempted")
        queue = FreeQueue(snap)
        queue.pop(snap["gpu"]["num_free"] - p.free_after)   # the running requests' blocks
        budget = p.budget_after
        running = len(snap["queues"]["running"])
    else:
        free = snap["gpu"]["num_free"]
        budget = lim.budget(False)
        seats = sum(_seats_of(request(snap, rid)) for rid in snap["queues"]["running"])
    wm = snap["watermark_blocks"]
    total = snap["gpu"]["num_blocks"]
    for rid in list(snap["queues"]["waiting"]) + _arrivals(step, nxt):
        r = request(snap, rid)
        s = r["seqs"][0]
        n = s["len"]
        if v1:
            free = len(queue)
        are = "is" if free == 1 else "are"
        if v1:
            if running >= lim.seats(True):
                return stop(f"max_num_seqs ({lim.seats(True)}) requests are running")
            if budget <= 0:
                return stop("the token budget is spent")
            hits = (_lookup(r, queue.cached, bs) if s["num_computed_tokens"] == 0
                    and "block_hashes" in r else [])
            evictable = sum(1 for b in hits if b in queue.order)
            ext = cpu_hits(r, tier, len(hits) * bs) if tier is not None else 0
            if ext is None:
                return None      # the connector defers its answer: not modelled here
            if ext:
                # The offloading connector loads the rest asynchronously: blocks now, no
                # tokens of the budget, and the request waits (WAITING_FOR_REMOTE_KVS).
                watermark = wm if running else 0
                full = max(-(-n // bs) - len(hits), 0) + evictable
                if full + watermark > free:
                    spare = f" + {watermark} spare" if watermark else ""
                    return stop(f"{rid} needs {full}{spare} blocks for its {n} tokens and "
                                f"{free} {are} free")
                need = -(-(len(hits) * bs + ext) // bs) - len(hits) + evictable
                if need + watermark > free - reserved:
                    return stop(f"{rid} needs {plural(need, 'block')} for the tokens it would "
                                f"load, and of the {free} free, {reserved} are kept for the "
                                "prefills already under way")
                reserved += -(-n // bs) - -(-(len(hits) * bs + ext) // bs)
                lines.append(f"{rid}: {ext} of its tokens are in the CPU tier: it gets "
                             f"blocks and waits for the load")
                queue.touch(hits)
                queue.pop(-(-(len(hits) * bs + ext) // bs) - len(hits))
                loads.append((rid, len(hits) * bs, ext))
                continue
            num_new = n - len(hits) * bs
            if 0 < lim.threshold < num_new:
                num_new = lim.threshold
            if not lim.chunking(True) and num_new > budget:
                return stop(f"{rid}'s {n} tokens exceed the {budget} left in the budget")
            num_new = min(num_new, budget)
            watermark = wm if running else 0
            full = max(-(-n // bs) - len(hits), 0) + evictable
            if full + watermark > free:
                spare = f" + {watermark} spare" if watermark else ""
                return stop(f"{rid} needs {full}{spare} blocks for its {n} tokens and "
                            f"{free} {are} free")
            new = max(-(-(len(hits) * bs + num_new) // bs) - len(hits), 0)
            hit_words = f" ({len(hits) * bs} of them hit the prefix cache)" if hits else ""
            lines.append(f"{rid}: {n} tokens{hit_words}, {plural(full, 'block')} needed, "
                         f"{free} free: admitted with {num_new} tokens")
            queue.touch(hits)
            queue.pop(new)
            if tier is not None:
                reserved += max(-(-n // bs) - -(-(len(hits) * bs + num_new) // bs), 0)
            budget -= num_new
            running += 1
            admitted.append(rid)
            tokens.append(num_new)
            found.append(len(hits) * bs)
            # Its full blocks are cached as they are allocated: a later prompt in this
            # step can hit them (held, so never in the free queue).
            for h in r.get("block_hashes", ())[:(len(hits) * bs + num_new) // bs]:
                queue.cached.setdefault(h, -1)
            continue
        if n > min(lim.max_model_len, lim.budget(False)):
            return None      # ignored (PromptIgnored): not modelled here
        required = -(-n // bs)
        if total - required < wm:
            return None      # can_allocate NEVER: ignored
        if free - required < wm:
            spare = f" and {wm} left free (the watermark)" if wm else ""
            return stop(f"can_allocate({rid}) needs {plural(required, 'block')} for its "
                        f"{n} tokens{spare}; {free} {are} free")
        new_seqs = _seats_of(r)
        if budget < n:
            return stop(f"{rid}'s {n} tokens do not fit the {budget} left in the budget")
        if seats + new_seqs > lim.seats(False):
            return stop(f"max_num_seqs ({lim.seats(False)}) sequences would be exceeded")
        lines.append(f"{rid}: {n} tokens in {plural(required, 'block')}, {free} free")
        free -= required
        budget -= n
        seats += new_seqs
        admitted.append(rid)
        tokens.append(n)
    return WaitingPass(tuple(admitted), tuple(lines), None, tuple(tokens), tuple(found),
                       tuple(loads))


def connector_modelled(snap: dict) -> bool:
    """Whether the rules here cover a V1 step with a KV connector: none, or the CPU tier
    (offloading connector, block_size_factor 1) with no transfer in flight, nobody waiting
    for remote KVs and nobody still prefilling (whose remaining blocks an async load would
    leave free). P/D's remote prefills are not modelled here."""
    q = snap["queues"]
    if q.get("skipped_waiting"):
        return False
    if any(r.get("kv_transfer_params") for r in snap["requests"]):
        return False
    tier = snap.get("cpu_tier")
    if tier is None:
        return True
    if tier["jobs"] or tier["block_size_factor"] != 1:
        return False
    by_id = {r["request_id"]: r for r in snap["requests"]}
    bs = snap["block_size"]
    for rid in q["running"]:
        s = by_id[rid]["seqs"][0]
        if s["num_computed_tokens"] + 1 < s["len"] and -(-s["len"] // bs) > len(s["block_table"]):
            return False     # still prefilling, with blocks to come: a reservation
    return True


def cpu_hits(r: dict, tier: dict, local: int) -> int | None:
    """Tokens the offloading connector loads for waiting request `r` after `local` tokens hit
    on the GPU (vLLM: OffloadingConnectorScheduler.get_num_new_matched_tokens): its block
    hashes from the first block after the GPU hit while the CPU tier holds them, all whole
    blocks of its tokens, nothing if less than a block; None where it would defer (a
    block still being stored)."""
    obs = tier["offloaded_block_size"]
    keys = r.get("block_hashes") or []
    n = r["seqs"][0]["len"]
    most = min(n, len(keys) * obs)
    if most - local < obs:
        return 0
    state = {b["hash"]: b["state"] for b in tier["blocks"] if b["hash"] is not None}
    found = 0
    for key in keys[local // obs:min(-(-most // obs), len(keys))]:
        if key not in state:
            break
        if state[key] != "ready":
            return None
        found += 1
    if not found:
        return 0
    hit = min(most, obs * (local // obs + found)) - local
    return hit if hit >= obs else 0


def _lookup(r: dict, cached: dict, bs: int) -> list:
    """The blocks a prefix-cache lookup finds for waiting request `r` (None for a block
    cached earlier in the same step): its hashes from the first while cached, at most
    (tokens - 1) // block_size of them."""
    cap = (r["seqs"][0]["len"] - 1) // bs
    out = []
    for h in r["block_hashes"][:cap]:
        if h not in cached:
            break
        out.append(cached[h])
    return out


def admit(limits: Callable[[dict], Limits] | None = None):
    """Which waiting requests does the next step admit (FCFS, stopping at the first that
    does not fit), or why none? Not asked when the picture already says the head waits."""

    def generate(step, nxt, ctx) -> Question | None:
        if step is None or nxt.step is None or nxt.error:
            return None
        if nxt.of_type(PromptIgnored, SwappedIn):
            return None
        snap = step.snapshot
        v1 = is_v1(snap)
        arrivals = _arrivals(step, nxt)
        waiting = list(snap["queues"]["waiting"])
        queue = waiting + arrivals
        if not queue:
            return None
        head = snap["heads"]["waiting"]
        if not arrivals and head is not None and head["can_allocate"] != "ok":
            return None      # the picture says the head waits
        w = waiting_pass(step, nxt, _limits(ctx, limits))
        if w is None:
            return None
        correct = w.admitted
        candidates = [tuple(queue), tuple(queue[:1]), (), tuple(queue[:2]), tuple(queue[1:2])]
        news = (f"{join(arrivals)} {'arrives' if len(arrivals) == 1 else 'arrive'}; "
                if arrivals else "")
        free = snap["gpu"]["num_free"]
        prompt = (f"In {name(nxt, ctx)}, {news}the waiting queue holds {join(queue)}, and "
                  f"{plural(free, 'GPU block')} {'is' if free == 1 else 'are'} free. Which "
                  "waiting requests are admitted?")
        if v1:
            rule = ("V1 first gives the running requests their tokens and blocks, then takes "
                    "waiting requests in order while the budget and the blocks last "
                    "(allocate_slots must fit the whole sequence), stopping at the first "
                    "that does not fit")
        else:
            rule = ("v0.5.5 admits waiting prompts in order (FCFS) while can_allocate finds "
                    "their blocks (keeping the watermark free) and the budget holds their "
                    "tokens, and stops at the first that does not fit: no skipping ahead")
        detail = "; ".join(w.lines)
        stop = f"; then {w.stop}" if w.stop and correct else (f": {w.stop}" if w.stop else "")
        explanation = f"{rule}. " + (detail[0].upper() + detail[1:] if detail else "") + stop
        explanation = explanation.rstrip() + "."
        if not detail and w.stop:
            explanation = f"{rule}. Nobody is admitted: {w.stop}."
        return ask("admit", prompt, correct, candidates, _admitted_words, explanation,
                   code.V1_SCHEDULE if v1 else code.SCHEDULE_PREFILLS,
                   {"engine": engine(snap)}, order="mixed")

    return generate


def _admitted_words(value: tuple) -> str:
    return "Nobody" if not value else join(list(value))


# -- the step's plan: prompts, decodes, and each request's share of the budget ------------------

def plan(step, nxt, lim: Limits) -> dict[str, tuple[int, bool]] | None:
    """{request id: (tokens, prefill?)} the next step schedules, by the rule, or None where
    a preemption (another question) or an unmodelled case decides it."""
    snap = step.snapshot
    v1 = is_v1(snap)
    w = waiting_pass(step, nxt, lim)
    if w is None:
        return None
    out: dict[str, tuple[int, bool]] = {}
    if not v1 and w.admitted:
        return {rid: (n, True) for rid, n in zip(w.admitted, w.tokens)}
    p = running_pass(snap, lim)
    if p.victim is not None:
        return None
    for rid, n, chunk in p.scheduled:
        out[rid] = (n, chunk)
    if v1:
        for rid, n in zip(w.admitted, w.tokens):
            out[rid] = (n, True)
    return out


def _plan_words(value: tuple) -> str:
    prompts, decodes = value
    if prompts and decodes:
        return f"{join(list(prompts))}: prompt tokens; {join(list(decodes))}: one token each"
    if prompts:
        return f"Only prompt tokens, for {join(list(prompts))}; nobody decodes"
    if decodes:
        return f"Only decodes ({join(list(decodes))}); no prompt runs"
    return "Nothing"


def step_plan(limits: Callable[[dict], Limits] | None = None):
    """With requests running and others waiting: does the next step run prompts, decodes,
    or both? (v0.5.5: a step that admits prompts runs no decodes; V1: one budget for both.)"""

    def generate(step, nxt, ctx) -> Question | None:
        if step is None or nxt.step is None or nxt.error or nxt.of_type(PromptIgnored):
            return None
        snap = step.snapshot
        v1 = is_v1(snap)
        lim = _limits(ctx, limits)
        running = list(snap["queues"]["running"])
        queue = list(snap["queues"]["waiting"]) + _arrivals(step, nxt)
        if not running or not queue:
            return None
        planned = plan(step, nxt, lim)
        if planned is None:
            return None
        prompts = tuple(sorted(r for r, (_, pre) in planned.items() if pre))
        decodes = tuple(sorted(r for r, (_, pre) in planned.items() if not pre))
        correct = (prompts, decodes)
        waiting = tuple(sorted(queue))
        candidates = [(prompts or waiting[:1], tuple(sorted(running))),
                      ((), tuple(sorted(running))), (prompts or waiting, ()),
                      (waiting, tuple(sorted(running)))]
        free = snap["gpu"]["num_free"]
        prompt = (f"In {name(nxt, ctx)}, {join(running)} {'is' if len(running) == 1 else 'are'} "
                  f"running, {join(queue)} {'waits' if len(queue) == 1 else 'wait'} with a "
                  f"prompt, and {plural(free, 'GPU block')} {'is' if free == 1 else 'are'} "
                  f"free. What does {engine(snap)} compute in this step?")
        if v1:
            rule = ("V1 fills one token budget per step: the running requests first (a "
                    "decode is one token, an unfinished prompt its next chunk), then waiting "
                    "prompts in order while the budget and the blocks last")
        else:
            rule = ("v0.5.5 tries the waiting prompts first (_schedule_prefills); if it admits "
                    "any, the step is prefill-only and the running requests skip their decode "
                    "(_schedule_default runs _schedule_running only when no prompt was "
                    "admitted)")
        w = waiting_pass(step, nxt, lim)
        if prompts and not decodes and not v1:
            why = f": {join(list(prompts))} {'is' if len(prompts) == 1 else 'are'} admitted, " \
                  f"so {join(running)} wait{'s' if len(running) == 1 else ''} a step."
        elif not prompts:
            why = (f": nobody is admitted ({w.stop}), so the running requests decode."
                   if w and w.stop else ": nobody is admitted, so the running requests decode.")
        else:
            why = (f": {join(list(decodes))} decode, and {join(list(prompts))} "
                   f"{'computes' if len(prompts) == 1 else 'compute'} prompt tokens in the "
                   "same step." + (f" Then {w.stop}." if w and w.stop else ""))
        return ask("step-plan", prompt, correct, candidates, _plan_words, rule + why,
                   code.V1_SCHEDULE if v1 else code.SCHEDULE_PREFILLS,
                   {"engine": engine(snap)}, order="mixed")

    return generate


def budget_share(limits: Callable[[dict], Limits] | None = None):
    """V1: how many of the step's budget tokens does a request with prompt tokens left get?
    (Decodes are served first; a prompt takes what is left, cut to the threshold.)"""

    def generate(step, nxt, ctx) -> Question | None:
        if step is None or nxt.step is None or nxt.error or not is_v1(step.snapshot):
            return None
        snap = step.snapshot
        lim = _limits(ctx, limits)
        planned = plan(step, nxt, lim)
        if not planned:
            return None
        prefills = [rid for rid, (_, pre) in planned.items() if pre]
        if not prefills:
            return None
        rid = prefills[-1]
        tokens = planned[rid][0]
        r = request(snap, rid)
        s = r["seqs"][0]
        left = to_compute(r, s)
        if rid not in snap["queues"]["running"]:
            w = waiting_pass(step, nxt, lim)
            left -= dict(zip(w.admitted, w.hits)).get(rid, 0)
        budget = lim.budget(True)
        decodes = [x for x, (_, pre) in planned.items() if not pre]
        before = [x for x in prefills if x != rid]
        used = sum(planned[x][0] for x in decodes + before)
        candidates = [left, budget, budget - len(decodes), budget - used + 1,
                      lim.threshold or None, tokens - 1 if tokens > 1 else None]
        candidates = [c for c in candidates if c is not None and 0 < c <= max(left, budget)]
        others = []
        if decodes:
            others.append(f"{join(decodes)} {'decodes' if len(decodes) == 1 else 'decode'}")
        if before:
            others.append(f"{join(before)} {'takes' if len(before) == 1 else 'take'} prompt "
                          "tokens first")
        prompt = (f"In {name(nxt, ctx)}, V1's budget is {budget} tokens"
                  + (f" ({'; '.join(others)})" if others else "")
                  + f", and {rid} has {plural(left, 'prompt token')} to compute. How many "
                  f"does {rid} get in this step?")
        parts = [f"V1 spends the budget in order: {plural(used, 'token')} go to the requests "
                 f"before {rid}, leaving {budget - used}"]
        if 0 < lim.threshold < left:
            parts.append(f"a prompt chunk is cut to long_prefill_token_threshold "
                         f"({lim.threshold})")
        cut = f", {lim.threshold}" if 0 < lim.threshold < left else ""
        parts.append(f"{rid} gets min({left}{cut}, {budget - used}) = {tokens}"
                     + ("; the rest of its prompt waits for the next step (chunked prefill)"
                        if tokens < left else ""))
        return ask("budget-share", prompt, tokens, candidates, lambda n: plural(n, "token"),
                   "; ".join(parts) + ".", code.V1_SCHEDULE, {"request_id": rid})

    return generate
