"""Prefix caching on a chat workload: the hit rate and the tokens per step that V1's engine
(sim/v1, vLLM v0.25.1) reaches at several KV pool sizes, with prefix caching on and off.

The workload (`CHAT`), seeded and fixed:

- 16 conversations of 3 turns each: 48 requests. Every conversation starts with the same
  256-token system prompt (16 blocks of 16 tokens).
- Turn k's prompt is the whole conversation so far (system prompt, the earlier user messages
  and answers, token for token) plus a new user message. So a follow-up can hit the cache
  far beyond the system prompt, if its conversation's blocks are still there.
- User message and answer lengths are the Alpaca stand-in's (sim/studies/workload.py: means
  19.31 and 58.45 tokens), clipped to 64 and 96 tokens, so every request fits the smallest
  pool.
- The 16 first turns arrive as a Poisson stream, 0.5 per step; each follow-up arrives 10
  steps after the previous answer finished (the user reads and types).
- Engine: block size 16, V1's defaults otherwise (2048 tokens and 128 requests per step,
  FCFS, the async engine loop: a step is one engine call); the pool is given in usable
  blocks (num_gpu_blocks - 1, the null block left out).

What is measured (`Result`), per pool size and caching setting:

- `hit_rate_logged`: vLLM's logged "prefix cache hit rate", hits / queried tokens over every
  lookup `get_computed_blocks` made (VLLM-V1.md 4.1: a waiting request that could not be
  admitted is looked up again, and counted again, in every step; lookups of preempted
  requests are kept apart and left out).
- `hit_rate_admitted`: prompt tokens read from the cache when each request was first
  admitted (`Request.num_cached_tokens`) / prompt tokens: the share of prefill work saved.
- `computed_per_step`: tokens the model computed (prompts, recomputes after preemption,
  decodes) per engine step.
- `served_per_step`: the workload's prompt and output tokens / the engine steps it took to
  finish: throughput in tokens per step (a step is the time unit; real steps differ in
  length, see sim/perf for their cost).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from sim.core.sequence import SamplingParams
from sim.studies.workload import make_workload, poisson_arrival_steps
from sim.v1.config import CacheConfig, SchedulerConfig
from sim.v1.engine import LLMEngine


@dataclass(frozen=True)
class ChatWorkload:
    conversations: int = 16
    turns: int = 3
    system_prompt: int = 256
    max_user: int = 64
    max_answer: int = 96
    arrival_rate: float = 0.5        # first turns per step (Poisson)
    think_steps: int = 10            # from an answer's last token to the next turn's arrival
    block_size: int = 16
    seed: int = 0
    dataset: str = "alpaca"          # the message and answer lengths' stand-in

    @property
    def num_requests(self) -> int:
        return self.conversations * self.turns

    def turn_lengths(self) -> list[list[tuple[int, int]]]:
        """(user message, answer) lengths per conversation and turn."""
        specs = make_workload(self.dataset, self.num_requests, seed=self.seed)
        return [[(min(s.prompt_len, self.max_user), min(s.output_len, self.max_answer))
                 for s in specs[c * self.turns:(c + 1) * self.turns]]
                for c in range(self.conversations)]

    def first_arrivals(self) -> list[int]:
        return poisson_arrival_steps(self.conversations, self.arrival_rate,
                                     random.Random(self.seed + 1))

    def largest_request_blocks(self) -> int:
        """Blocks of the longest request (a conversation's last turn, answered)."""
        most = max(self.system_prompt + sum(u + a for u, a in turns)
                   for turns in self.turn_lengths())
        return -(-most // self.block_size)


CHAT = ChatWorkload()
POOL_SIZES = (48, 64, 96, 128, 192, 256, 384)     # usable blocks of 16 tokens


@dataclass(frozen=True)
class Result:
    pool_blocks: int                 # usable blocks (num_gpu_blocks - 1)
    caching: bool
    steps: int
    tokens_computed: int
    tokens_served: int               # prompt + output tokens of every request
    prompt_tokens: int
    cached_prompt_tokens: int        # read from the cache at first admission
    lookup_queries: int              # vLLM's PrefixCacheStats (not preempted)
    lookup_hits: int
    preemptions: int
    evictions: int

    @property
    def hit_rate_logged(self) -> float:
        return self.lookup_hits / self.lookup_queries if self.lookup_queries else 0.0

    @property
    def hit_rate_admitted(self) -> float:
        return self.cached_prompt_tokens / self.prompt_tokens

    @property
    def computed_per_step(self) -> float:
        return self.tokens_computed / self.steps

    @property
    def served_per_step(self) -> float:
        return self.tokens_served / self.steps


def run_chat(pool_blocks: int, caching: bool, workload: ChatWorkload = CHAT,
             max_steps: int = 20_000, async_scheduling: bool | None = None) -> Result:
    """Run the workload on a pool of `pool_blocks` usable blocks; follow-ups are added as
    their conversations' answers finish (when the engine has processed the last output).
    `async_scheduling`: the engine loop (None: vLLM's default, async)."""
    if pool_blocks < workload.largest_request_blocks():
        raise ValueError(f"{pool_blocks} blocks cannot hold the longest request "
                         f"({workload.largest_request_blocks()} blocks)")
    engine = LLMEngine(CacheConfig(block_size=workload.block_size,
                                   num_gpu_blocks=pool_blocks + 1,
                                   enable_prefix_caching=caching),
                       SchedulerConfig(async_scheduling=async_scheduling),
                       record_events=False)
    system = engine.model.shared_prefix_token_ids(workload.system_prompt)
    lengths = workload.turn_lengths()
    # The users' own words: fresh ids no prompt shares, from one seeded stream.
    words = random.Random(workload.seed + 2)
    conversation_of: dict[str, tuple[int, int]] = {}

    def add(conv: int, turn: int, history: list[int], step: int) -> None:
        user, answer = lengths[conv][turn]
        message = [4 + words.randrange(30_000) for _ in range(user)]
        rid = f"c{conv}t{turn}"
        engine.add_request(rid, history + message,
                           SamplingParams(max_tokens=answer, ignore_eos=True),
                           arrival_step=step)
        conversation_of[rid] = (conv, turn)

    for conv, step in enumerate(workload.first_arrivals()):
        add(conv, 0, list(system), step)
    steps = computed = 0
    while engine.has_unfinished_requests():
        if steps >= max_steps:
            raise RuntimeError(f"the chat workload did not finish in {max_steps} steps")
        out = engine.step()
        steps += 1
        computed += sum(out.scheduler_outputs.num_scheduled_tokens.values())
        for rid in out.finished:
            conv, turn = conversation_of[rid]
            if turn + 1 < workload.turns:
                add(conv, turn + 1, list(engine.requests[rid].all_token_ids),
                    engine.step_index + workload.think_steps)
    requests = engine.requests.values()
    stats = engine.kv_cache_manager.prefix_cache_stats
    return Result(
        pool_blocks=pool_blocks, caching=caching, steps=steps, tokens_computed=computed,
        tokens_served=sum(r.num_tokens for r in requests),
        prompt_tokens=sum(r.num_prompt_tokens for r in requests),
        cached_prompt_tokens=sum(max(r.num_cached_tokens, 0) for r in requests),
        lookup_queries=stats.queries, lookup_hits=stats.hits,
        preemptions=sum(r.num_preemptions for r in requests),
        evictions=engine.block_pool.num_evicted_blocks)


def sweep(pool_sizes=POOL_SIZES, workload: ChatWorkload = CHAT,
          async_scheduling: bool | None = None) -> dict[bool, list[Result]]:
    """{caching on/off: [Result per pool size]}."""
    return {caching: [run_chat(n, caching, workload, async_scheduling=async_scheduling)
                      for n in pool_sizes]
            for caching in (True, False)}
