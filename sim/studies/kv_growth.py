"""One sequence generating, step by step: what its KV cache stores, and what the cache saves.

A decoder layer turns every token into a query, a key and a value per head. A new token's
query must be compared with the keys of every token before it, and the result is a
weighted sum of their values. Those keys and values never change once computed (a token
only attends to earlier tokens), so vLLM computes each token's K and V once, writes them
into the KV cache, and reads them back on every later step.

A generation, as vLLM v0.5.5 runs it for one request:

- the prefill step feeds the whole prompt: every layer writes the K and V of every prompt
  position for each of its KV heads, and the model samples the first new token;
- each decode step feeds the token sampled in the step before: every layer writes that one
  position's K and V, its query attends to all cached keys (itself included), and the model
  samples the next token. The last sampled token's K and V are never computed.

Without a cache, the model would have to recompute the whole prefix on every step: each
layer's keys depend on the layer below's output for every earlier token, so the whole
sequence runs through the whole model again. ``GrowthStep`` gives both costs from
`sim.cost.step_cost`: the step with the cache is ``(cached_before, new)`` (context already
cached, tokens computed now) and the same step without it is ``(0, cached_after)``.

Sizes: one token appends ``2 x num_layers x num_kv_heads x head_size`` numbers (K and V,
each layer, each KV head), ``kv_bytes_per_token`` bytes (`sim.models`). Query heads beyond
the KV heads (grouped-query attention) add queries and compute, not cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from sim.events import KVWritten
from sim.perf.cost import StepCost, step_cost
from sim.perf.models import ModelConfig, dtype_bytes, kv_bytes_per_token

SEQ_ID = 0


class CacheAppended(NamedTuple):
    """One layer wrote K and V for positions [first_pos, first_pos + num_tokens) for each of
    its KV heads (vLLM: the attention layer's `reshape_and_cache` at the step's
    `slot_mapping`)."""
    layer: int
    first_pos: int
    num_tokens: int
    num_kv_heads: int
    head_size: int


class TokenSampled(NamedTuple):
    """The step's output: a new token at `position`, whose K and V are not cached yet.
    (sim.events.TokenSampled carries a token id and log-probability; this widget has no
    vocabulary, only positions.)"""
    seq_id: int
    position: int


def tiny_model(num_layers: int = 2, num_kv_heads: int = 2, queries_per_kv_head: int = 2,
               head_size: int = 16, max_model_len: int = 64) -> ModelConfig:
    """A model small enough to draw every cached vector: the hidden size is the query heads
    times the head size, the MLP 4x as wide (OPT's shape, no gate), a 1,000-word vocabulary."""
    heads = num_kv_heads * queries_per_kv_head
    hidden = heads * head_size
    return ModelConfig(f"tiny ({num_layers} layers, {heads} query heads, {num_kv_heads} KV "
                       f"heads of {head_size})", num_layers, hidden, heads, num_kv_heads,
                       head_size, 4 * hidden, 1000, max_model_len,
                       tie_word_embeddings=True, gated_mlp=False)


@dataclass(frozen=True, slots=True)
class GrowthStep:
    step: int
    phase: str                       # "prefill" or "decode"
    first_pos: int                   # first position fed this step
    num_new: int                     # positions whose K and V are written this step
    events: tuple
    bytes_appended: int              # KV bytes written this step (all layers and heads)
    cache_bytes: int                 # KV bytes cached after the step
    with_cache: StepCost             # this step as vLLM runs it
    recompute: StepCost              # the same step with no cache: the whole prefix again

    @property
    def cached_before(self) -> int:
        return self.first_pos

    @property
    def cached_after(self) -> int:
        return self.first_pos + self.num_new

    @property
    def sampled_position(self) -> int:
        return self.cached_after

    @property
    def pairs_with_cache(self) -> int:
        """Query-key dot products per query head per layer: each new query sees the cached
        keys and the new ones up to itself (causal)."""
        c, q = self.cached_before, self.num_new
        return q * c + q * (q + 1) // 2

    @property
    def pairs_recompute(self) -> int:
        n = self.cached_after
        return n * (n + 1) // 2


def generate(model: ModelConfig, prompt_len: int, new_tokens: int,
             dtype: str = "fp16") -> list[GrowthStep]:
    """The steps of one request that generates ``new_tokens`` tokens after a prompt of
    ``prompt_len``: one prefill, then ``new_tokens - 1`` decodes."""
    for name, value in (("prompt_len", prompt_len), ("new_tokens", new_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if prompt_len + new_tokens > model.max_model_len:
        raise ValueError(f"prompt_len + new_tokens = {prompt_len + new_tokens} exceeds "
                         f"max_model_len {model.max_model_len}")
    dtype_bytes(dtype)                         # validates
    per_token = kv_bytes_per_token(model, dtype)
    steps = []
    first, num = 0, prompt_len
    for step in range(new_tokens):
        events: list = [KVWritten(SEQ_ID, first, num)]
        events += [CacheAppended(layer, first, num, model.num_kv_heads, model.head_size)
                   for layer in range(model.num_layers)]
        events.append(TokenSampled(SEQ_ID, first + num))
        steps.append(GrowthStep(
            step, "prefill" if step == 0 else "decode", first, num, tuple(events),
            num * per_token, (first + num) * per_token,
            step_cost(model, [(first, num)], dtype, phase="prefill" if step == 0 else "decode"),
            step_cost(model, [(0, first + num)], dtype, phase="prefill")))
        first, num = first + num, 1
    return steps


def totals(steps: list[GrowthStep]) -> dict[str, int]:
    """FLOPs summed over the generation, with and without the cache."""
    return {"attention_with_cache": sum(s.with_cache.flops_attention for s in steps),
            "attention_recompute": sum(s.recompute.flops_attention for s in steps),
            "flops_with_cache": sum(s.with_cache.flops for s in steps),
            "flops_recompute": sum(s.recompute.flops for s in steps)}
