"""The KV connector path under AsyncScheduler (vLLM's default engine loop): a prefill and a
decode engine with NIXL's connector, each running `step_with_batch_queue`, called in
turn on a clock that advances 1 ms per call (the P/D driver's timing, sim/studies/
disaggregated.py, uses the synchronous loop; here only the order of events matters).
Hypothesis drives workloads with aborts and failed reads; both engines' invariants hold
after every call, deferred frees included, and nothing is held at the end."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.core.sequence import SamplingParams
from sim.perf.links import Link
from sim.stand_in_model import StandInModel
from sim.studies.kv_transport import KVTransport
from sim.v1.config import CacheConfig, KVTransferConfig, SchedulerConfig
from sim.v1.engine import LLMEngine
from sim.v1.invariants import check_engine
from sim.v1.kv_connector import KVConnectorRole
from sim.v1.kv_connector.nixl import NixlConnector

BS = 4


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def make_pair(p_blocks, d_blocks, policy, fail, budget=16):
    clock = Clock()
    # 32 KiB blocks over 32 MB/s: a block lands in about 1 ms, a call's time.
    transport = KVTransport(Link("test", 32e6), 32 * 1024, BS, clock, fail=fail.__contains__)
    engines = {}
    for name, role, blocks in (("prefill", "kv_producer", p_blocks),
                               ("decode", "kv_consumer", d_blocks)):
        config = KVTransferConfig(kv_connector="NixlConnector", engine_id=name, kv_role=role,
                                  kv_connector_extra_config={"kv_lease_duration": 2},
                                  kv_load_failure_policy=policy)
        cache = CacheConfig(block_size=BS, num_gpu_blocks=blocks + 1)
        engine = LLMEngine(
            cache, SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=4,
                                   max_model_len=BS * min(p_blocks, d_blocks),
                                   async_scheduling=True),
            model=StandInModel(seed=0), kv_transfer_config=config,
            kv_connector=NixlConnector(config, KVConnectorRole.SCHEDULER, cache, clock=clock),
            kv_connector_worker=NixlConnector(config, KVConnectorRole.WORKER, cache,
                                              clock=clock, transport=transport))
        transport.register(name, engine)
        engines[name] = engine
    return clock, transport, engines["prefill"], engines["decode"]


def run_pd(requests, p_blocks, d_blocks, policy, fail, max_calls=4000, seen=None):
    clock, transport, p, d = make_pair(p_blocks, d_blocks, policy, fail)
    model = StandInModel(seed=0)
    prompts = {rid: model.prompt_token_ids(i, n) for i, (rid, n, _, _) in enumerate(requests)}
    outputs = {rid: o for rid, _, o, _ in requests}
    aborts = {rid: a for rid, _, _, a in requests if a is not None}
    for rid, _, _, _ in requests:
        p.add_request(rid, prompts[rid], SamplingParams(max_tokens=1, ignore_eos=True),
                      kv_transfer_params={"do_remote_decode": True})
    problems, calls, done = [], 0, {}
    while p.has_requests() or d.has_requests():
        assert calls < max_calls, "did not finish"
        for engine, name in ((p, "prefill"), (d, "decode")):
            for rid, at in list(aborts.items()):
                if calls >= at and engine.abort_request(rid):
                    del aborts[rid]
                    if seen is not None:
                        seen.append((name, calls, len(engine.scheduler.deferred_frees),
                                     "abort"))
            out = engine.step()
            transport.land(clock.t)
            for rid, params in out.kv_transfer_params.items():
                if name == "prefill" and rid not in done:
                    d.add_request(rid, prompts[rid],
                                  SamplingParams(max_tokens=outputs[rid], ignore_eos=True),
                                  arrival_step=d.step_index, kv_transfer_params=params)
            for rid in out.finished:
                if name == "decode":
                    done[rid] = engine.requests[rid].status
            problems += [f"{name} call {calls}: {x}" for x in check_engine(engine)]
            if seen is not None:
                seen.append((name, calls, len(engine.scheduler.deferred_frees),
                             [r.request_id for r in engine.scheduler.running]))
            problems += transport.problems
        calls += 1
        clock.t += 0.001
        if calls % 50 == 0 and not (p.scheduler.running or d.scheduler.running):
            clock.t += 1.0   # nothing runs: let leases run out
    return p, d, problems, done


def assert_empty(engine):
    sched = engine.scheduler
    assert not sched.requests and not sched.running and not sched.waiting
    assert not sched.skipped_waiting and not sched.deferred_frees
    pool = engine.block_pool
    assert pool.get_num_free_blocks() == pool.num_gpu_blocks - 1


def test_one_request_through_both_async_engines():
    p, d, problems, done = run_pd([("A", 10, 3, None)], 12, 12, "fail", set())
    assert problems == []
    assert done == {"A": d.requests["A"].status} and d.requests["A"].num_output_tokens == 3
    assert d.scheduler.defer_block_free and not p.scheduler.defer_block_free
    assert_empty(p)
    assert_empty(d)


def test_an_abort_while_decoding_defers_the_free_on_the_decode_engine():
    seen = []
    for at in range(4, 14):
        seen.clear()
        p, d, problems, _ = run_pd([("A", 10, 8, at)], 12, 12, "fail", set(), seen=seen)
        assert problems == []
        assert_empty(d)
        if any(name == "decode" and n and what == "abort" for name, _, n, what in seen):
            # Held back at the abort (a batch was in flight), freed once it was processed.
            break
    else:
        raise AssertionError("no abort landed while A decoded with a batch in flight")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(1, 20), st.integers(1, 6),
                          st.sampled_from([None, None, 0, 2, 5, 9])), min_size=1, max_size=5),
       st.integers(6, 16), st.integers(6, 16), st.sampled_from(["fail", "recompute"]),
       st.sets(st.sampled_from(["R0", "R1", "R2"]), max_size=2))
def test_async_pd_invariants(reqs, p_blocks, d_blocks, policy, fail):
    limit = BS * min(p_blocks, d_blocks)
    requests = [(f"R{i}", min(n, limit - 1), max(1, min(o, limit - n)), a)
                for i, (n, o, a) in enumerate(reqs)]
    p, d, problems, _ = run_pd(requests, p_blocks, d_blocks, policy, fail)
    assert problems == []
    assert_empty(p)
    assert_empty(d)
