"""Where each rule a question asks about lives in vLLM's code (file: function, version),
checked against the tagged sources (git show v0.5.5:<file>, v0.25.1:<file>).

These are text shown to readers: vLLM's own method names, private ones included
(`Scheduler._schedule_running`), quoted as vLLM spells them. Nothing here reads the
simulation's objects; pages still reach `sim` only through snapshots, events and traces."""
from __future__ import annotations

V055, V1 = "v0.5.5", "v0.25.1"


def at(path: str, function: str, version: str) -> str:
    return f"{path}: {function} ({version})"


# vLLM v0.5.5 (vllm/core, vllm/engine, vllm/worker, csrc)
STACK_ALLOCATE = at("vllm/core/block_manager_v1.py", "UncachedBlockAllocator.allocate", V055)
APPEND_SLOTS = at("vllm/core/block_manager_v1.py", "BlockSpaceManagerV1.append_slots", V055)
FREE_V055 = at("vllm/core/block_manager_v1.py", "BlockSpaceManagerV1.free", V055)
SCHEDULE_RUNNING = at("vllm/core/scheduler.py",
                      "Scheduler._schedule_running and Scheduler._preempt", V055)
SCHEDULE_PREFILLS = at("vllm/core/scheduler.py",
                       "Scheduler._schedule_default and Scheduler._schedule_prefills", V055)
CAN_ALLOCATE = at("vllm/core/block_manager_v1.py", "BlockSpaceManagerV1.can_allocate", V055)
BEAM_SELECTION = at("vllm/engine/output_processor/single_step.py",
                    "SingleStepOutputProcessor._process_sequence_group_outputs", V055)
CACHE_BLOCK_SIZE = at("vllm/worker/cache_engine.py", "CacheEngine.get_cache_block_size", V055)
AVAILABLE_BLOCKS = at("vllm/worker/worker.py", "Worker.determine_num_available_blocks", V055)
KERNEL = at("csrc/attention/attention_kernels.cu", "paged_attention_kernel", V055)
ROW_PARALLEL = at("vllm/model_executor/layers/linear.py", "RowParallelLinear.forward", V055)
MAX_NUM_SEQS = at("vllm/config.py", "SchedulerConfig (max_num_seqs)", V055)

# vLLM V1 at v0.25.1 (vllm/v1)
GET_NEW_BLOCKS = at("vllm/v1/core/block_pool.py", "BlockPool.get_new_blocks", V1)
FREE_BLOCKS = at("vllm/v1/core/block_pool.py", "BlockPool.free_blocks", V1)
ALLOCATE_SLOTS = at("vllm/v1/core/kv_cache_manager.py", "KVCacheManager.allocate_slots", V1)
COMPUTED_BLOCKS = at("vllm/v1/core/kv_cache_manager.py", "KVCacheManager.get_computed_blocks",
                     V1)
V1_SCHEDULE = at("vllm/v1/core/sched/scheduler.py", "Scheduler.schedule", V1)
V1_PREEMPT = at("vllm/v1/core/sched/scheduler.py",
                "Scheduler.schedule and Scheduler._preempt_request", V1)
V1_ROLLBACK = at("vllm/v1/core/sched/scheduler.py", "Scheduler.update_from_output", V1)
REJECTION = at("vllm/v1/sample/rejection_sampler.py", "rejection_sample", V1)
ASYNC_SCHEDULE = at("vllm/v1/core/sched/async_scheduler.py",
                    "AsyncScheduler._update_after_schedule and Scheduler.schedule", V1)
ASYNC_OUTPUT = at("vllm/v1/core/sched/async_scheduler.py",
                  "AsyncScheduler._update_request_with_output", V1)
OFFLOAD_LOOKUP = at("vllm/distributed/kv_transfer/kv_connector/v1/offloading/scheduler.py",
                    "OffloadingConnectorScheduler.get_num_new_matched_tokens, with "
                    "Scheduler.schedule's WAITING_FOR_REMOTE_KVS", V1)
NIXL_SCHEDULE = at("vllm/distributed/kv_transfer/kv_connector/v1/nixl/base_scheduler.py",
                   "get_num_new_matched_tokens, with Scheduler.schedule's "
                   "WAITING_FOR_REMOTE_KVS", V1)
NIXL_FINISHED = at("vllm/distributed/kv_transfer/kv_connector/v1/nixl/base_scheduler.py",
                   "request_finished (delay_free_blocks)", V1)
REMOTE_KV_READY = at("vllm/v1/core/sched/scheduler.py",
                     "Scheduler._update_waiting_for_remote_kv", V1)
