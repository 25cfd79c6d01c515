"""KV offloading (vLLM v0.25.1 `vllm/v1/kv_offload/`): where the offloading connector
(sim/v1/kv_connector/offloading_connector.py) keeps blocks outside the GPU.

    base.py             vllm/v1/kv_offload/base.py         keys, specs, the abstract
                                                            OffloadingManager / Worker / Spec
    factory.py          vllm/v1/kv_offload/factory.py      OffloadingSpecFactory
    cpu/manager.py      vllm/v1/kv_offload/cpu/manager.py  CPUOffloadingManager (scheduler side)
    cpu/policies/       .../cpu/policies/                  BlockStatus, the LRU policy
    cpu/common.py       .../cpu/common.py                  CPULoadStoreSpec, metric names
    cpu/spec.py         .../cpu/spec.py                    CPUOffloadingSpec
    cpu/gpu_worker.py   .../cpu/gpu_worker.py              the transfers (simulated: payloads
                                                            copied, timed over the host link)
    metrics.py          .../offloading/metrics.py          OffloadingConnectorStats

Only the CPU tier is simulated (no tiering: no file system, object store or peer tier;
no ARC policy); see cpu/spec.py for the rest of what is left out.
"""
