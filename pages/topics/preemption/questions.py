"""The preemption widget's questions about the next step (predict mode, issue 25): which
request is preempted (and swapped or recomputed), how much of a resumed prompt hits V1's
prefix cache, which cached block is evicted next, who is admitted, which block an
allocation gets, which blocks a finished request frees, whether a token needs a block."""
from __future__ import annotations

from pages.questions import Asker, kv, offload, prefix, scheduling


def limits(v: dict) -> scheduling.Limits:
    """The scheduler settings build_engine uses, for the questions."""
    mode = None if v["engine"] == "v1" or v["preemption_mode"] == "auto" \
        else v["preemption_mode"]
    return scheduling.Limits(preemption_mode=mode)


QUESTIONS = Asker(("preempt", scheduling.preempt(limits)), ("cpu-load", offload.resume(limits)),
                  ("prefix-hit", prefix.prefix_hit),
                  ("evict-next", prefix.evict_next), ("admit", scheduling.admit(limits)),
                  ("next-block", kv.next_block), ("blocks-freed", kv.finished_frees),
                  ("new-block", kv.new_block))
