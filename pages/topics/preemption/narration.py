"""The preemption widget's words: the narration (cause, effect, consequence, with the CPU
tier's part when V1 has one) and the full account behind `details`.
"""
from __future__ import annotations

from pages.topics.preemption.checks import status_line, stop, victim_notes, waiting_notes
from pages.topics.preemption.scenario import (
    MAX_STEPS,
    MODES,
    REQUESTS,
    PreemptionContext,
    cut_off,
    is_v1,
    label,
    offloading,
    title_case,
)
from pages.topics.preemption.view import recompute_line
from pages.views import cpu_tier, kv_view, recompute_leak
from pages.views.narrate import blocks_list, step_sentences, story, story_kind
from pages.views.text import a, join, plural, verb
from sim.events import (
    OffloadLoadJob,
    RemoteKVsReady,
    RequestArrived,
)
from sim.trace import Step


def _start_words(v: dict, snap: dict) -> str:
    reqs = REQUESTS.named(v["requests"])
    by_step: dict[int, list[str]] = {}
    for r in reqs:
        by_step.setdefault(r.arrival, []).append(r.name)
    when = join([f"{join(names)} at iteration {n}" for n, names in sorted(by_step.items())])
    wm = snap["watermark_blocks"]
    if is_v1(v):
        return (f"Start: {plural(len(reqs), 'request')} will arrive, {when}. V1's pool has "
                f"{v['num_gpu_blocks'] + 1} blocks of {v['block_size']} slots (block 0 is its "
                f"null block, so {v['num_gpu_blocks']} are usable), and its watermark, "
                f"int({v['watermark']:g} x {v['num_gpu_blocks'] + 1}) = "
                f"{plural(wm, 'block')}, holds back admissions only while others run. V1 "
                "always preempts by recompute: it has no CPU swap space and no preemption "
                "mode, so those two settings do nothing here.")
    mode = dict(MODES)[v["preemption_mode"]]
    return (f"Start: {plural(len(reqs), 'request')} will arrive, {when}. The GPU has "
            f"{v['num_gpu_blocks']} blocks of {v['block_size']} slots and the CPU swap space "
            f"{v['num_cpu_blocks']}; admission keeps a watermark of int({v['watermark']:g} x "
            f"{v['num_gpu_blocks']}) = {plural(wm, 'block')} free. Preemption mode: {mode}.")


def _wait_sentence(step: Step) -> str:
    """The one reason a queue head stays where it is, short, for the narration."""
    snap, ev = step.snapshot, step.events
    queues, heads = snap["queues"], snap["heads"]
    free = snap["gpu"]["num_free"]
    wm = snap["watermark_blocks"]
    arrived = [e.request_id for e in ev if isinstance(e, RequestArrived)
               and e.request_id in queues["waiting"]]
    if arrived and queues["swapped"]:
        return (f"{join(arrived)} {verb(arrived, 'arrives', 'arrive')} but "
                f"{verb(arrived, 'waits', 'wait')}: v0.5.5 admits nobody while a request is "
                "swapped out.")
    if queues["swapped"] and heads["swapped"] and heads["swapped"]["can_swap_in"] == "later":
        head = heads["swapped"]
        return (f"{head['request_id']} stays swapped out: can_swap_in wants "
                f"{head['num_blocks']} + {head['num_seqs']} blocks and {wm} spare, and "
                f"{_free(free)}.")
    head = heads["waiting"]
    if head is not None and head["can_allocate"] in ("later", "never"):
        ask = "allocate_slots" if kv_view.is_v1(snap) else "can_allocate"
        spare = f" and {wm} spare" if wm and (queues["running"] or
                                              not kv_view.is_v1(snap)) else ""
        return (f"{head['request_id']} waits: {ask} wants "
                f"{plural(head['num_required_blocks'], 'block')}{spare}, and "
                f"{_free(free)}.")
    if arrived:
        return (f"{join(arrived)} {verb(arrived, 'arrives', 'arrive')} and "
                f"{verb(arrived, 'waits', 'wait')}.")
    return ""


def _free(n: int) -> str:
    return f"{plural(n, 'block')} {verb(n, 'is', 'are')} free" if n else "none is free"


def _check_sentence(checks: list[str]) -> str:
    """The restore checks in one short sentence (the details keep the full ones)."""
    for c in checks:
        if c.startswith("Check FAILED"):
            return c
    restored = []
    for c in checks:
        if ", swapped in," in c or ", recomputed," in c:
            who, rest = c[len("Check: "):].split("'s ", 1)
            restored.append((who, rest.split(" ", 1)[0]))
    if not restored:
        return ""
    if len(restored) == 1:
        who, n = restored[0]
        return (f"Check: {who}'s {n} cached tokens read back through its new block table "
                "exactly as before.")
    return (f"Check: the cached tokens of {join([w for w, _ in restored])} read back through "
            "their new block tables exactly as before.")


def narrate(step: Step, ctx: PreemptionContext) -> str:
    v = ctx.values
    if step.error:
        return f"{title_case(label(step, ctx))}: " + " ".join(stop(step)[1])
    if cut_off(step, ctx.trace):
        return (f"Cut off: the picture stops after {MAX_STEPS} iterations; requests are "
                "still running. Use fewer or shorter requests.")
    if step.step is None:
        return _start_words(v, step.snapshot)
    prev = ctx.trace.previous(step)
    sentences = story(step, ctx.labels, ctx.request_of, prev, ctx.reuse[step.index])
    kind = story_kind(step, ctx.request_of)
    check = _check_sentence(ctx.checks[step.index])
    wait = _wait_sentence(step)
    # vLLM v0.5.5's recompute of a sampling group whose other samples finished (issue 27).
    leak = recompute_leak.leak_story(step, ctx.labels)
    one_left = recompute_leak.one_left_sentence(step, ctx.labels)
    orphaned = recompute_leak.orphaned_sentence(step, prev)
    if leak:
        sentences = leak
    elif one_left and kind == "preemption":
        sentences = sentences[:2] + [one_left]
    elif check and kind in ("admission", "swap_in"):
        sentences = sentences[:2] + [check]
    elif orphaned:
        sentences = sentences[:2] + [orphaned]
    elif wait and kind in ("new_blocks", "decode", "idle", "finish"):
        sentences = sentences[:2] + [wait]
    if offloading(v):
        sentences = _with_tier(step, ctx, sentences)
    return f"{title_case(label(step, ctx))}: " + " ".join(sentences[:3])


def _with_tier(step: Step, ctx: PreemptionContext, sentences: list[str]) -> list[str]:
    """The CPU tier's part of a step, in the narration: a load (or its landing) first,
    a flush after the cause."""
    tier = cpu_tier.sentences(step.events, ctx.jobs, short=True)
    if not tier:
        return sentences
    if any(isinstance(e, RemoteKVsReady) for e in step.events):
        return tier[:1] + sentences[:2]
    if any(isinstance(e, OffloadLoadJob) for e in step.events):
        return sentences[:1] + tier[:1] + sentences[1:2]
    return sentences[:2] + tier[:1]      # a flush: after the preemption that caused it


def details(step: Step, ctx: PreemptionContext) -> list[str]:
    v = ctx.values
    if step.error:
        heading, explain, _ = stop(step)
        return explain + [f"vLLM's message: {step.error}"]
    if cut_off(step, ctx.trace):
        return [f"The trace is cut after {MAX_STEPS} iterations; this frame repeats the last "
                "state.", status_line(step)]
    if step.step is None:
        out = [f"{r.name}: {a(f'{r.prompt}-token prompt')}, {plural(r.output, 'output token')}"
               + (f" for each of {r.n} samples" if r.n > 1 else "")
               + f", arrives at iteration {r.arrival}." for r in REQUESTS.named(v["requests"])]
        if is_v1(v):
            out.append("V1 runs with its defaults otherwise: prefix caching on, chunked "
                       "prefill on, a budget of 2048 tokens per step; a request with two "
                       "samples becomes two requests, 0_X and 1_X, that share the prompt "
                       "through the prefix cache.")
        out.append(status_line(step))
        return out
    out = step_sentences(step, ctx.labels, ctx.request_of)
    out += [f"{rid} now uses {blocks_list(nums)}, which {before} held before."
            for rid, before, nums in ctx.reuse[step.index]]
    prev = ctx.trace.previous(step)
    prev_running = prev.snapshot["queues"]["running"]
    out += victim_notes(prev_running, step.events, is_v1(v))
    one_left = recompute_leak.one_left_sentence(step, ctx.labels)
    out += recompute_leak.samples_finished(step, ctx.labels)
    out += ([one_left] if one_left else []) + recompute_leak.leak_details(step, ctx.labels)
    orphaned = recompute_leak.orphaned_sentence(step, prev)
    out += [orphaned] if orphaned else []
    out += ctx.checks[step.index] + waiting_notes(step.snapshot, step.events)
    if offloading(v):
        out += cpu_tier.sentences(step.events, ctx.jobs)
        out.append(recompute_line(step.snapshot, ctx) + ".")
    out.append(status_line(step))
    return out
