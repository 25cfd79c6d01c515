"""The prefix caching widget's questions about the next step (predict mode, issue 25):
where freed blocks go in the free queue, and, on the phases that are engine steps, how many
prompt tokens hit, which cached block is evicted next, who is admitted and which block an
allocation gets."""
from __future__ import annotations

from pages.questions import Asker, kv, prefix, scheduling

QUESTIONS = Asker(("free-queue", prefix.free_queue),
                  *prefix.phases(("prefix-hit", prefix.prefix_hit),
                                 ("evict-next", prefix.evict_next),
                                 ("admit", scheduling.admit()),
                                 ("next-block", kv.next_block),
                                 step_name=lambda step: f"step {step.step + 1}"))
