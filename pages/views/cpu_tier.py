"""V1's CPU tier (the offloading connector, sim/v1/kv_connector/offloading_connector.py), drawn
under the GPU pool with kv_view's geometry, and the copies between them as arrows; the
sentences that say what the tier did in a step.

Reads a frame's "cpu_tier" (sim/v1/kv_offload/snapshot.py): each CPU block's state
("storing": its copy is in flight, not readable yet; "ready"; "loading": pinned while it is
copied into GPU blocks; "free"), the hash it holds (matched with the requests' block hashes
for its colour) and its place in the eviction order. Every block carries `data-k`
`blk:cpu:<n>`; an arrow `copy:<job>:<gpu block>`.
"""
from __future__ import annotations

from pages.views import arrows, kv_view, svg
from pages.views.text import join, noun, plural
from sim.events import (
    OffloadJobDone,
    OffloadJobsFlushed,
    OffloadLoadJob,
    OffloadStoreJob,
    OffloadStoreSkipped,
    RemoteKVsReady,
)

FONT = kv_view.FONT


def hash_owner(snap: dict) -> dict[str, str]:
    """Block hash prefix -> the first request whose blocks have it."""
    out: dict[str, str] = {}
    for r in snap["requests"]:
        for h in r.get("block_hashes", ()):
            if h is not None:
                out.setdefault(h, r["request_id"])
    return out


def jobs_by_id(trace) -> dict[int, tuple[str, str, tuple, tuple]]:
    """job id -> (kind, request id, GPU blocks, CPU blocks), over a whole trace (a job is
    created in one step and done in a later one)."""
    out = {}
    for step in trace:
        for e in step.events:
            if isinstance(e, OffloadStoreJob):
                out[e.job_id] = ("store", e.request_id, e.gpu_blocks, e.cpu_blocks)
            elif isinstance(e, OffloadLoadJob):
                out[e.job_id] = ("load", e.request_id, e.gpu_blocks, e.cpu_blocks)
    return out


def heading(tier: dict) -> str:
    used = tier["num_blocks"] - tier["num_free"]
    return f"CPU tier (offloading): {used} used, {tier['num_free']} free"


def tier_blocks(x: float, y: float, snap: dict, events) -> tuple[list[str], float]:
    """The CPU tier's blocks, laid out like kv_view.pool's (pool_block_box), numbered C#n."""
    tier = snap["cpu_tier"]
    out, head_h = kv_view.lines(x, y, heading(tier))
    colors = kv_view.request_colors(snap)
    owner = hash_owner(snap)
    bs = snap["block_size"]
    stored_now = {c for e in events if isinstance(e, OffloadStoreJob) for c in e.cpu_blocks}
    loaded_now = {c for e in events if isinstance(e, OffloadLoadJob) for c in e.cpu_blocks}
    bottom = y + head_h
    for n, block in enumerate(tier["blocks"]):
        bx, body_y, w, h = kv_view.pool_block_box(x, y, snap, n)
        bottom = max(bottom, body_y + h)
        state = block["state"]
        parts = [svg.text(bx, body_y - kv_view.HEAD + FONT, f"C#{n}", fill="muted", size=FONT)]
        rid = owner.get(block["hash"]) if block["hash"] else None
        color = colors.get(rid, "used")
        if block["lru"] == 0 and kv_view.fits("next out", w - kv_view.text_width(f"C#{n}") - 6):
            parts.append(svg.text(bx + w, body_y - kv_view.HEAD + FONT, "next out",
                                  fill="muted", size=FONT, anchor="end"))
        width = 3 if (n in stored_now or n in loaded_now or state == "loading") else 1
        stroke = "highlight" if width == 3 else "line"
        if state == "free":
            parts.append(svg.rect(bx, body_y, w, h, fill="free", stroke=stroke,
                                  stroke_dasharray="4 3"))
            if kv_view.fits("free", w - 4):
                parts.append(svg.text(bx + w / 2, body_y + 16.5, "free", fill="muted",
                                      size=FONT, anchor="middle"))
            tip = f"CPU block {n}: free"
        elif state == "storing":
            parts.append(svg.rect(bx, body_y, w, h, fill="panel", stroke=stroke,
                                  stroke_width=width, stroke_dasharray="4 3"))
            if kv_view.fits("storing", w - 4):
                parts.append(svg.text(bx + w / 2, body_y + 16.5, "storing", fill="muted",
                                      size=FONT, anchor="middle"))
            tip = (f"CPU block {n}: being stored ({rid or 'a request'}'s block, hash "
                   f"{block['hash']}); it can be loaded once the copy is done")
        else:
            parts.append(svg.rect(bx, body_y, w, h, fill="panel", stroke=stroke,
                                  stroke_width=width))
            parts += _slots(bx, body_y, block["slots"], bs, w, color)
            what = ("being loaded into the GPU (pinned)" if state == "loading"
                    else "stored, idle" + (": the next to be evicted" if block["lru"] == 0
                                            else ""))
            tip = (f"CPU block {n}: {rid or 'an earlier request'}'s block (hash "
                   f"{block['hash']}), {what}")
        out.append(svg.group(parts, tip=tip, data_k=f"blk:cpu:{n}"))
    return out, bottom - y + 4


def _slots(bx: float, body_y: float, slots: list, bs: int, w: float, color: str) -> list[str]:
    slot_w = (w - 4) / bs
    parts = []
    for i in range(bs):
        sx = bx + 2 + i * slot_w
        if i < len(slots):
            token_id, pos = slots[i]
            parts.append(svg.rect(sx, body_y + 2, slot_w - 1, kv_view.BODY - 4, fill=color,
                                  rx=1, tip=f"slot {i}: token {token_id} at position {pos}"))
            if slot_w >= kv_view.SLOT:
                parts.append(svg.text(sx + slot_w / 2 - 0.5, body_y + 16.5, str(pos),
                                      fill="bg", size=FONT, anchor="middle"))
        else:
            parts.append(svg.rect(sx, body_y + 2, slot_w - 1, kv_view.BODY - 4, fill="free",
                                  rx=1))
    return parts


def copy_arrows(x: float, gpu_y: float, cpu_y: float, snap: dict, events,
                jobs: dict) -> list[str]:
    """An arrow per block copied: GPU -> CPU for the stores reported done in this step,
    CPU -> GPU for the loads started in it (the worker copies a load in the step that
    starts it; the scheduler may hear of it a step later, in the async loop). Each arrow
    goes from one block's edge to the other's."""
    out = []
    for e in events:
        if isinstance(e, OffloadLoadJob):
            job_id = e.job_id
        elif isinstance(e, OffloadJobDone) and e.kind == "store":
            job_id = e.job_id
        else:
            continue
        if job_id not in jobs:
            continue
        kind, rid, gpu_blocks, cpu_blocks = jobs[job_id]
        for g, c in zip(gpu_blocks, cpu_blocks):
            gx, gy, gw, gh = kv_view.pool_block_box(x, gpu_y, snap, g)
            cx, cy, cw, _ = kv_view.pool_block_box(x, cpu_y, snap, c)
            start, end = (gx + gw / 2, gy + gh), (cx + cw / 2, cy)
            if kind == "load":
                start, end = end, start
                tip = f"{rid}: CPU block {c} loaded into GPU block {g}"
            else:
                tip = f"{rid}: GPU block {g} stored to CPU block {c}"
            out.append(svg.group([arrows.arrow(*start, *end, tip=tip)],
                                 data_k=f"copy:{job_id}:{g}"))
    return out


# -- words ----------------------------------------------------------------------------------

def _cpu(blocks) -> str:
    return f"CPU {noun(len(blocks), 'block')} " + join([f"C#{b}" for b in blocks])


def _gpu(blocks) -> str:
    return f"GPU {noun(len(blocks), 'block')} " + join([str(b) for b in blocks])


def sentences(events, jobs: dict, short: bool = False) -> list[str]:
    """What the CPU tier did in a step, in the engine's order (short: the ones a reader
    needs; else every one)."""
    out = []
    done = {e.job_id: e for e in events if isinstance(e, OffloadJobDone)}
    for e in events:
        if isinstance(e, OffloadLoadJob):
            where = (f"{e.request_id}'s first {e.num_local_tokens} tokens are still in the "
                     f"GPU prefix cache and its next {e.num_tokens} in the CPU tier"
                     if e.num_local_tokens else
                     f"{e.request_id}'s first {e.num_tokens} tokens are in the CPU tier")
            out.append(f"{where}: it waits in WAITING_FOR_REMOTE_KVS while "
                       f"{_cpu(e.cpu_blocks)} {'is' if len(e.cpu_blocks) == 1 else 'are'} "
                       f"copied into {_gpu(e.gpu_blocks)}"
                       + (" (done by the end of the step)." if e.job_id in done else "."))
        elif isinstance(e, RemoteKVsReady):
            out.append(f"{e.request_id}'s load has landed: {e.num_computed_tokens} of its "
                       "tokens count as computed and it is scheduled for the rest.")
        elif isinstance(e, OffloadJobsFlushed):
            owners = list(dict.fromkeys(jobs[j][1] for j in e.job_ids if j in jobs))
            gpu = [g for j in e.job_ids if j in jobs for g in jobs[j][2]]
            why = (f"{join(owners)} {'was' if len(owners) == 1 else 'were'} preempted and "
                   "its blocks are free now" if e.reason == "preempted"
                   else "those blocks were just handed out again")
            out.append(f"The copy of {_gpu(gpu)} to the CPU must finish before the forward "
                       f"pass: {why} (a flush of store job"
                       f"{'s' if len(e.job_ids) > 1 else ''} "
                       f"{join([str(j) for j in e.job_ids])}).")
        elif isinstance(e, OffloadStoreJob) and not short:
            evicted = (f"; {plural(len(e.evicted), 'CPU block')} evicted for room"
                       if e.evicted else "")
            out.append(f"{e.request_id}'s full {_gpu(e.gpu_blocks)} will be copied to "
                       f"{_cpu(e.cpu_blocks)} (store job {e.job_id}, started next step)"
                       f"{evicted}.")
        elif isinstance(e, OffloadJobDone) and not short and e.kind == "store":
            kind, rid, gpu_blocks, cpu_blocks = jobs.get(e.job_id, ("store", e.request_id,
                                                                     (), ()))
            out.append(f"Store job {e.job_id} is done: {_cpu(cpu_blocks)} now "
                       f"hold{'s' if len(cpu_blocks) == 1 else ''} {rid}'s blocks and can "
                       "be loaded.")
        elif isinstance(e, OffloadStoreSkipped):
            out.append(f"The CPU tier cannot take {e.request_id}'s "
                       f"{plural(e.num_blocks, 'block')}: every CPU block is being stored or "
                       "loaded; they are not offloaded.")
    return out
