"""The hybrid-models widget's scenario: one engine run of vLLM V1 (sim/v1) on a hybrid
model, the design doc's case 2 by default (docs/design/hybrid_kv_cache_manager.md: 10 full
attention layers and 20 sliding-window layers of window 32, block size 16, a 112-token
request).

Request A arrives first and is computed in chunks of `budget` tokens, then decodes; request
B, whose prompt starts with A's first `shared` tokens, arrives at step `b_step`. The pool is
small on purpose (18 blocks by default), so that A's blocks that left the window are reused
by A itself and their cached hashes evicted: B still hits, because a sliding window needs
only its last blocks. The layer pattern repeats "1 full, then `ratio` sliding" ten times,
so there are 1 + `ratio` KV cache groups of 10 layers each. The engine runs the synchronous
loop (async_scheduling=False), the loop of the doc's example and of vLLM's tests; with the
default async loop each step is scheduled before the previous one's output is processed,
which shifts when blocks are cached but not what a window returns.
"""
from __future__ import annotations

from dataclasses import dataclass

from pages.framework.widget import Context, Param
from pages.views.text import plural
from sim.core.sequence import SamplingParams
from sim.trace import Trace, record
from sim.v1.config import CacheConfig, SchedulerConfig
from sim.v1.engine import LLMEngine
from sim.v1.kv_cache_utils import attention_layer_specs, make_kv_cache_config
from sim.v1.snapshot import group_summary

A_OUTPUT, B_OUTPUT = 4, 2          # tokens A and B generate
REPEATS = 10                      # the pattern's repetitions: 10 layers per group
MAX_TABLE = 12                    # blocks a table may have (the picture's width)
MAX_STEPS = 60
MAX_MODEL_LEN = 1024

PARAMS = (
    Param("block_size", "block size", "int", 16, min=1, max=32,
          help="Tokens per KV block, the same in every group (1 to 32; vLLM's default 16)."),
    Param("sliding_window", "sliding window", "int", 32, min=1, max=512,
          help="Tokens a sliding-window layer attends to (1 to 512; gpt-oss 128, "
               "Gemma 3 1,024)."),
    Param("ratio", "sliding layers per full layer", "int", 2, min=1, max=4,
          help="1 is gpt-oss (alternating), 2 the design doc's example, 5 would be Gemma 3 "
               "(1 to 4 here)."),
    Param("hybrid", "hybrid KV cache manager", "bool", True,
          help="Off is --disable-hybrid-kv-cache-manager: every layer in one group, as if "
               "full attention."),
    Param("prompt", "A's prompt tokens", "int", 112, min=1, max=380,
          help="Tokens in request A's prompt (A then generates 4)."),
    Param("shared", "tokens B shares with A", "int", 96, min=0, max=380,
          help="B's prompt starts with A's first tokens; the rest of its prompt is its own."),
    Param("b_step", "B arrives at step", "int", 11, min=1, max=40,
          help="The step at which B reaches the scheduler (1 to 40)."),
    Param("budget", "tokens per step", "int", 16, min=4, max=512,
          help="max_num_batched_tokens (4 to 512): A's prompt is computed in chunks of it."),
    Param("num_gpu_blocks", "GPU blocks (num_gpu_blocks)", "int", 18, min=2, max=64,
          help="The pool every group draws from, the null block #0 included (2 to 64)."),
)


def layer_types(v: dict) -> list[str]:
    return (["full_attention"] + ["sliding_attention"] * v["ratio"]) * REPEATS


def check(v: dict) -> dict[str, str]:
    bs = v["block_size"]
    errors = {}
    longest = MAX_TABLE * bs - A_OUTPUT
    if v["prompt"] > longest:
        errors["prompt"] = (f"A's prompt tokens: at most {longest} at block size {bs} "
                            f"(tables of {MAX_TABLE} blocks fit the picture)")
    if v["shared"] > v["prompt"]:
        errors["shared"] = f"tokens B shares with A: at most A's {v['prompt']} prompt tokens"
    if errors:
        return errors
    # The most blocks a request holds at once (each sliding group at its cap: the window
    # plus one chunk plus one block): a pool smaller than that would block FCFS for good.
    engine = engine_for(v)
    kv = engine.kv_cache_manager
    usable = v["num_gpu_blocks"] - 1
    for rid, out in (("A", A_OUTPUT), ("B", B_OUTPUT)):
        n = v["prompt"] + out
        need = kv.coordinator.get_num_blocks_to_allocate(
            rid, n, kv.empty_kv_cache_blocks.blocks, 0, 0, n, apply_admission_cap=True)
        if need > usable:
            errors["num_gpu_blocks"] = (
                f"GPU blocks: {rid} holds up to {need} blocks at once in its "
                f"{plural(kv.num_kv_cache_groups, 'group')}; give at least {need + 1} "
                "(block 0 is the null block)")
            break
    return errors


def engine_for(v: dict) -> LLMEngine:
    bs, blocks = v["block_size"], v["num_gpu_blocks"]
    specs = attention_layer_specs(layer_types(v), bs, sliding_window=v["sliding_window"])
    config = make_kv_cache_config(blocks, specs,
                                  disable_hybrid_kv_cache_manager=not v["hybrid"])
    engine = LLMEngine(CacheConfig(block_size=bs, num_gpu_blocks=blocks),
                       # The doc's steps: the synchronous loop (vLLM's default async loop
                       # schedules each step before the previous output is processed).
                       SchedulerConfig(max_num_batched_tokens=v["budget"], max_num_seqs=4,
                                       max_model_len=MAX_MODEL_LEN, async_scheduling=False),
                       kv_cache_config=config)
    a = engine.add_request("A", v["prompt"], SamplingParams(max_tokens=A_OUTPUT,
                                                            ignore_eos=True))
    own = [900 + i for i in range(v["prompt"] - v["shared"])]
    engine.add_request("B", list(a.prompt_token_ids[:v["shared"]]) + own,
                       SamplingParams(max_tokens=B_OUTPUT, ignore_eos=True),
                       arrival_step=v["b_step"] - 1)
    return engine


def scenario(v: dict) -> Trace:
    engine = engine_for(v)
    groups = [group_summary(i, g) for i, g in
              enumerate(engine.kv_cache_manager.kv_cache_config.kv_cache_groups)]
    return record(engine, max_steps=MAX_STEPS, meta={"groups": groups})


@dataclass(frozen=True)
class HybridContext(Context):
    groups: tuple = ()        # per group: its summary (kind, window, layer names)
    colors: dict | None = None  # request id -> palette colour


def context(v: dict, trace: Trace) -> HybridContext:
    groups, sliding = [], 0
    for group in trace.meta["groups"]:
        if group["kind"] != "full_attention":
            sliding += 1
        groups.append({**group, "index": sliding, "num_layers": len(group["layer_names"])})
    return HybridContext(v, trace, tuple(groups), {"A": "seq-0", "B": "seq-1"})


def group_name(group: dict, short: bool = False) -> str:
    """"full attention" / "sliding window 1"; short: "full" / "sw 1"."""
    if group["kind"] == "full_attention":
        return "full" if short else "full attention"
    return f"sw {group['index']}" if short else f"sliding window {group['index']}"


def label(step, ctx=None) -> str:
    return "start" if step.step is None else f"step {step.step + 1}"
