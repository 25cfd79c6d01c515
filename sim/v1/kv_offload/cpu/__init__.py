"""The CPU tier of KV offloading (vLLM v0.25.1 `vllm/v1/kv_offload/cpu/`)."""
