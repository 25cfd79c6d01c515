"""The fragmentation page: how many slots each allocation policy sets aside for a request it
admits. Orca's policies reserve a contiguous chunk from a buddy allocator, rounded up to a
power of two (sim/studies/contiguous.py); vLLM takes blocks for the prompt only, one more
block each time the last fills (BlockSpaceManagerV1.allocate, v0.5.5)."""
from __future__ import annotations

from pages.framework.question import Question, ask
from pages.questions import code
from pages.views.text import plural
from sim.studies.contiguous import BuddyAllocator, OrcaPolicy, next_power_of_two
from sim.studies.workload import RequestSpec

_POLICIES = {p.label: p for p in OrcaPolicy}


def reserve(runs_of, max_len_of, block_size_of, specs_of):
    """`runs_of(ctx)`: the policy runs (each with a `label`); `specs_of(ctx)`: the
    requests (RequestSpec)."""

    def generate(step, nxt, ctx) -> Question | None:
        if step is None:
            return None
        runs = runs_of(ctx)
        specs = {s.request_id: s for s in specs_of(ctx)}
        admitted = []
        for i, rec in enumerate(nxt.records):
            if rec is None:
                continue
            for e in rec.events:
                if type(e).__name__ == "Admitted":
                    admitted.append((i, e))
        if not admitted:
            return None
        i, event = admitted[nxt.index % len(admitted)]
        rid = event.request_id
        label = runs[i].label
        spec: RequestSpec = specs[rid]
        max_len, bs = max_len_of(ctx), block_size_of(ctx)
        # A request preempted by recompute comes back with its outputs so far.
        tokens = event.num_tokens if event.recompute else spec.prompt_len
        prompt_blocks = -(-tokens // bs) * bs
        total = spec.prompt_len + spec.output_len
        pow2 = spec.prompt_len + next_power_of_two(spec.output_len)
        if label in _POLICIES:
            asked = _POLICIES[label].reservation(spec, max_len)
            correct = BuddyAllocator.chunk_size(asked)
            rule = {"Orca (Max)": f"Orca (Max) asks for the model's maximum length, {max_len}",
                    "Orca (Pow2)": (f"Orca (Pow2) asks for the prompt plus the output rounded up "
                                    f"to a power of two: {spec.prompt_len} + "
                                    f"{next_power_of_two(spec.output_len)} = {asked}"
                                    + (f", capped at {max_len}" if asked == max_len else "")),
                    "Orca (Oracle)": (f"Orca (Oracle) asks for exactly the true length: "
                                      f"{spec.prompt_len} + {spec.output_len} = {asked}")}[label]
            explanation = (f"{rule}; the buddy allocator hands out chunks whose size is a power "
                           f"of two, so it gets {correct} slots"
                           + (f" ({correct - asked} more than it asked for)." if correct > asked
                              else "."))
            where = code.CAN_ALLOCATE
        else:
            correct = prompt_blocks
            what = (f"the {tokens} tokens it recomputes" if event.recompute else
                    f"the prompt alone ({tokens} tokens)")
            explanation = (f"vLLM allocates blocks for {what}, in blocks of {bs}: {correct} "
                           "slots, and takes one more block only when the last one fills, so "
                           "nothing is reserved for an output it may never produce.")
            where = code.CAN_ALLOCATE
        candidates = [total, BuddyAllocator.chunk_size(total), pow2, max_len, prompt_blocks,
                      spec.prompt_len]
        how = (f"re-admits {rid} after a preemption, to recompute its {tokens} tokens "
               f"({spec.prompt_len} prompt + {spec.output_len} output in all)"
               if event.recompute else
               f"admits {rid} ({spec.prompt_len} prompt + {spec.output_len} output tokens)")
        prompt = (f"At step {nxt.index}, {label} {how}. How many slots does it set aside for "
                  f"{rid}?")
        return ask("frag-reserve", prompt, correct, [c for c in candidates if c != correct],
                   lambda n: plural(n, "slot"), explanation, where,
                   {"policy": i, "request_id": rid, "block_size": bs})

    return generate
