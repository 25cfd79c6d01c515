"""The preemption widget's picture: queues, block tables, the GPU pool, the CPU swap space
with swap arrows (v0.5.5) or V1's CPU tier with copy arrows, the legend, the checks and
notes.
"""
from __future__ import annotations

from pages.topics.preemption.checks import (
    short_victim_notes,
    short_waiting_notes,
    status_line,
    stop,
)
from pages.topics.preemption.scenario import (
    MAX_STEPS,
    PreemptionContext,
    X,
    cut_off,
    label,
    title_case,
)
from pages.views import arrows, cpu_tier, kv_view, recompute_leak, svg
from pages.views.text import plural
from sim.events import (
    SwappedOut,
)
from sim.trace import Step


def view(step: Step, ctx: PreemptionContext) -> svg.Figure:
    snap = step.snapshot
    if step.error:
        heading, explain, victim = stop(step)
        return draw(snap, [victim] if victim else [], heading, [], "The state before this "
                    "iteration:", ctx, error=" ".join(explain) + " vLLM's message: "
                    + step.error)
    if cut_off(step, ctx.trace):
        return draw(snap, [], f"Cut off: stopped after {MAX_STEPS} iterations", [],
                    status_line(step), ctx)
    if step.step is None:
        return draw(snap, [], "Start (before the first iteration)", [], status_line(step),
                    ctx)
    notes = ([(n, "highlight") for n in short_victim_notes(step)]
             + [(n, "fg") for n in short_waiting_notes(step)])
    return draw(snap, step.events, f"{title_case(label(step, ctx))} ({step.kind})", notes,
                status_line(step), ctx)




def draw(snap: dict, events, heading: str, notes: list[tuple[str, str]], status: str,
         ctx: PreemptionContext, error: str | None = None) -> svg.Figure:
    """Queues, block tables, the GPU pool, the CPU pool with swap arrows, the legend, the
    check line, the notes and (when vLLM stops) its message, top to bottom."""
    v1 = kv_view.is_v1(snap)
    h = kv_view.highlights(events)
    parts = kv_view.heading(X, heading, "V1" if v1 else "v0.5.5")
    if kv_view.text_width(heading, kv_view.HEADING) > kv_view.WIDTH - 2 * X - 50:
        parts.pop()   # a long heading (vLLM stops) takes the whole line
    elements, y = kv_view.queues_and_tables(X, 28, snap, h)
    parts += elements
    gpu = snap["gpu"]
    used = gpu["num_blocks"] - gpu["num_free"] - (1 if v1 else 0)
    leaked = [] if v1 else recompute_leak.leaked_blocks(snap)
    title = (f"GPU blocks: {used} used" + (f" ({len(leaked)} leaked)" if leaked else "")
             + f", {gpu['num_free']} free, watermark {snap['watermark_blocks']}")
    gpu_y = y
    elements, dy = kv_view.pool(X, y, snap, "gpu", h, title=title)
    parts += elements
    y += dy + 8
    cpu = snap["cpu"]
    cpu_y = y
    moved = arrows.swaps(events)
    if cpu["num_blocks"]:
        title = (f"CPU swap space: {cpu['num_blocks'] - cpu['num_free']} used, "
                 f"{cpu['num_free']} free")
        elements, dy = kv_view.pool(X, y, snap, "cpu", h, title=title)
        parts += elements
        y += dy
        if moved:
            words = " and ".join(dict.fromkeys(
                "blocks_to_swap_out" if isinstance(e, SwappedOut) else "blocks_to_swap_in"
                for e in moved))
            elements, dy = kv_view.lines(X, y, f"Arrows: {words}", fill="highlight")
            parts += elements
            y += dy
        y += 2
    elif "cpu_tier" in snap:
        elements, dy = cpu_tier.tier_blocks(X, y, snap, events)
        parts += elements
        y += dy
        parts += cpu_tier.copy_arrows(X, gpu_y, cpu_y, snap, events, ctx.jobs)
        elements, dy = kv_view.lines(X, y, recompute_line(snap, ctx))
        parts += elements
        y += dy + 2
    else:
        words = ("CPU swap space: none, V1 only recomputes" if v1 else
                 "CPU swap space: 0 blocks")
        elements, dy = kv_view.lines(X, y, words)
        parts += elements
        y += dy + 2
    parts += arrows.swap_arrows(X, gpu_y, cpu_y, snap, events)
    elements, dy = kv_view.legend(X, y, ctx.legend, later=ctx.later)
    parts += elements
    y += dy + 2
    elements, dy = kv_view.lines(X, y, status,
                                 fill="muted" if status.startswith("check_engine: ok")
                                 else "highlight")
    parts += elements
    y += dy
    for note, color in notes:
        elements, dy = kv_view.lines(X, y, note, fill=color)
        parts += elements
        y += dy + 2
    if error:
        elements, dy = kv_view.lines(X + 8, y + 6, error, fill="fg",
                                     right=kv_view.WIDTH - X - 8)
        box_h = dy + 10
        parts.append(svg.rect(X, y + 2, kv_view.WIDTH - 2 * X, box_h, fill="panel",
                              stroke="highlight", stroke_width=2, tip="vLLM stops here",
                              data_k="stop"))
        parts += elements
        y += box_h + 6
    return svg.Figure(kv_view.WIDTH, y + 4, parts,
                      "Queues, block tables, GPU and CPU block pools")


def recompute_line(snap: dict, ctx: PreemptionContext) -> str:
    """How many tokens preempted requests computed again, with the tier and without."""
    index = next((i for i, s in enumerate(ctx.trace) if s.snapshot is snap),
                 len(ctx.trace) - 1)
    done = ctx.recomputed[min(index, len(ctx.recomputed) - 1)] if ctx.recomputed else 0
    return (f"Computed again after preemption: {plural(done, 'token')} so far; without the "
            f"CPU tier, {ctx.recomputed_without} in all")
