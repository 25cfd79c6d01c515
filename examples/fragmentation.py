"""The fragmentation page from Python: one stream, four policies, and the Fig. 2 reproduction."""
from sim.studies.fragmentation import PAPER_TOKEN_STATE_SHARE, reproduce_fig2, simulate_policies
from sim.studies.workload import RequestSpec

# The widget's default stream: prompt + output tokens, arriving at a step.
requests = [RequestSpec(rid, p, o, a) for rid, (p, o, a) in
            zip("ABCDEF", [(5, 11, 0), (6, 4, 0), (8, 8, 0), (5, 5, 1), (10, 12, 5), (3, 5, 6)])]
# Orca (Max), (Pow2), (Oracle) on a buddy allocator, then vLLM's paged blocks of 4.
for run in simulate_policies(requests, 64, max_model_len=32, block_size=4):
    refused = [(r.step, r.refusal.request_id) for r in run.steps if r.refused_although_free]
    print(f"{run.label:14} {len(run.steps):2} steps; refused although free: {refused}")

# Fig. 2: the share of the pool that holds token states, averaged over the steps in which a
# request waits for memory (the paper's measurement; docs/fragmentation.md says why).
shares = reproduce_fig2(num_requests=200, seed=0, arrival_rate=0.2)
for label, paper in PAPER_TOKEN_STATE_SHARE.items():
    print(f"{label:14} ours {shares[label]['token_states']:6.1%}   paper {paper:6.1%}")
