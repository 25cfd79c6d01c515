"""A pure-Python simulation of vLLM's scheduling and KV-cache management, with two engines
held to vLLM's behaviour step for step, under vLLM's names:

    core/        vLLM v0.5.5's engine (vllm/core, vllm/engine): block manager, scheduler with
                 swapping and recompute, parallel sampling and beam search
    v1/          vLLM's V1 engine at v0.25.1 (vllm/v1): block pool, prefix cache, KV cache
                 manager, the one-token-budget scheduler, the KV connector (NIXL's, for
                 disaggregated prefill and decode); see sim/v1/__init__.py
    trace.py     `record(engine)`: either engine's run as a Trace of Steps (snapshot, events,
                 scheduled, outputs), the one shape every picture is drawn from
    events.py    the records of every state change; errors.py, where vLLM itself would stop
    perf/        models, GPUs, the roofline cost model, attention kernels, tensor parallelism
    studies/     what the pages measure: fragmentation, sharing, batching, latency, named
                 scenarios (`studies.scenarios.get_scenario("fig8")`), a prefill and a
                 decode engine with the KV that travels between them (disaggregated.py)
    cli.py       `python -m sim`: a named or custom scenario, step by step, as text
    cli_pd.py    `python -m sim --engine v1 --disaggregated`: both instances, row by row

Standard library only, with no wall clock and no global random state, so the same scenario
gives the same steps in CPython and in Pyodide (the site's pictures run it in the browser).
`examples/sim_quickstart.py` drives an engine from Python.
"""
