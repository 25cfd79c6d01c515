"""Cache policies of the CPU tier (vLLM v0.25.1 `vllm/v1/kv_offload/cpu/policies/`): LRU.
vLLM's ARC policy (`arc.py`, `eviction_policy: "arc"`) is not simulated."""
