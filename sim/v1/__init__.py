"""vLLM's V1 engine (v0.25.1) as a second engine beside sim/core (v0.5.5): the same
decisions as vLLM's code, step for step, with vLLM's names.

    kv_cache_utils.py    vllm/v1/core/kv_cache_utils.py      blocks, free queue, hashing
    block_pool.py        vllm/v1/core/block_pool.py          allocate, touch, free, cache, evict
    kv_cache_manager.py  vllm/v1/core/kv_cache_manager.py    + single_type_kv_cache_manager.py
    request.py           vllm/v1/request.py                  Request, RequestStatus
    scheduler.py         vllm/v1/core/sched/scheduler.py     + sched/output.py, request_queue.py
    async_scheduler.py   vllm/v1/core/sched/async_scheduler.py  output placeholders
    scheduler_kv.py      vllm/v1/core/sched/scheduler.py     the scheduler's KV connector path
    kv_connector/        vllm/distributed/kv_transfer/kv_connector/v1/  base.py, nixl.py
    engine.py            vllm/v1/engine/core.py              the engine loops (async by default:
                                                             step_with_batch_queue), the
                                                             stand-in model
    config.py            vllm/config/cache.py, scheduler.py  the fields that matter, defaults
                         + kv_transfer.py (KVTransferConfig)
    snapshot.py, invariants.py                               pictures and checks (additions)

The reference is VLLM-V1.md (shared/): rules, orders, worked examples and pitfalls, checked
against the real v0.25.1 code.
"""
