"""A roofline cost model of one engine step: why prefill is compute-bound and decode is
memory-bound.

A GPU has two ceilings: how fast it multiplies (peak FLOP/s) and how fast it moves bytes
from its memory (bandwidth). A step that does F FLOPs and moves B bytes takes at least

    time = max(F / peak_flops, B / bandwidth)

Which term wins depends on the arithmetic intensity F / B (FLOPs per byte) against the
GPU's ridge point peak_flops / bandwidth. Every step reads all the weights once, whatever
the batch. A prefill pushes hundreds of tokens through them, so it does hundreds of FLOPs
per weight byte: compute-bound. A decode step pushes one token per sequence through them:
about one FLOP per byte at batch 1, memory-bound until the batch nears the ridge point.

What we count (one GPU, no tensor parallelism here; see `sim.tensor_parallel`):
  FLOPs  - projections (QKV, O, MLP, gate included): 2 per weight per token;
         - attention: QK^T and PV, 2 x head_size FLOPs each per (query head, query, key),
           and a query attends to every key at or before its position (causal): a prompt
           of T tokens has T(T+1)/2 query-key pairs, a decode query ctx + 1;
         - LM head: 2 x vocab x hidden per row of logits, and vLLM computes logits only
           for the tokens it samples: one row per sequence (the last prompt token in a
           prefill; `LogitsProcessor` with `selected_token_indices`).
  bytes  - the weights once per step (all but the embedding tables, which are gathered a
           row per token; a tied table is read in full as the LM head);
         - the KV cache: the context already cached is read, each new token's K and V written.
Left out: the FLOPs of norms, biases, softmax and the MLP's activation function (under 1%
at these sizes); the bytes of activations passed between kernels and of the embedding
gather; all-reduces; launch and scheduling overhead. Overhead can be added as a separate,
reported term (`predict(..., overhead_s=...)`); it is never folded into the roofline.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sim.perf.hardware import GPU
from sim.perf.models import ModelConfig, dtype_bytes, kv_bytes_per_token


@dataclass(frozen=True, slots=True)
class Roofline:
    """The two ceilings: from a datasheet (`from_gpu`) or measured (e.g. the H200 data)."""
    peak_flops: float                 # FLOP/s
    memory_bandwidth: float           # bytes/s
    name: str = ""

    def __post_init__(self) -> None:
        if self.peak_flops <= 0 or self.memory_bandwidth <= 0:
            raise ValueError("peak_flops and memory_bandwidth must be positive")

    @classmethod
    def from_gpu(cls, gpu: GPU) -> Roofline:
        return cls(gpu.peak_flops, gpu.memory_bandwidth, gpu.name)

    @property
    def ridge_point(self) -> float:
        """Intensity (FLOP/byte) where the bound changes from memory to compute."""
        return self.peak_flops / self.memory_bandwidth

    def attainable_flops(self, intensity: float) -> float:
        """The roofline itself: min(peak, intensity x bandwidth), for a chart."""
        return min(self.peak_flops, intensity * self.memory_bandwidth)


@dataclass(frozen=True, slots=True)
class StepCost:
    phase: str                        # "prefill", "decode" or "mixed"
    num_seqs: int
    num_query_tokens: int             # tokens computed this step
    num_context_tokens: int           # tokens already in the KV cache, read this step
    flops_projections: int
    flops_attention: int
    flops_lm_head: int
    bytes_weights: int
    bytes_kv_read: int
    bytes_kv_written: int

    @property
    def flops(self) -> int:
        return self.flops_projections + self.flops_attention + self.flops_lm_head

    @property
    def bytes(self) -> int:
        return self.bytes_weights + self.bytes_kv_read + self.bytes_kv_written

    @property
    def arithmetic_intensity(self) -> float:
        return self.flops / self.bytes


def step_cost(model: ModelConfig, seqs: Sequence[tuple[int, int]], dtype: str = "bf16",
              kv_cache_dtype: str = "auto", phase: str = "mixed") -> StepCost:
    """FLOPs and bytes of one step over `seqs`, each (context_len, query_len): tokens
    already cached, and tokens computed now. A prefill is (0, T); a decode (ctx, 1); a
    later chunk of a chunked prefill (done, chunk)."""
    if not seqs:
        raise ValueError("a step needs at least one sequence")
    for context_len, query_len in seqs:
        if context_len < 0 or query_len < 1:
            raise ValueError(f"each sequence needs context_len >= 0 and query_len >= 1, "
                             f"got ({context_len}, {query_len})")
    params = model.param_count()
    kv_dtype = dtype if kv_cache_dtype == "auto" else kv_cache_dtype
    kv_token = kv_bytes_per_token(model, kv_dtype)

    queries = sum(q for _, q in seqs)
    context = sum(c for c, _ in seqs)
    # Query j (0-based) of a sequence sees the c cached keys and j + 1 new ones.
    pairs = sum(q * c + q * (q + 1) // 2 for c, q in seqs)
    per_pair = 2 * 2 * model.num_attention_heads * model.head_size   # QK^T and PV
    return StepCost(
        phase=phase,
        num_seqs=len(seqs),
        num_query_tokens=queries,
        num_context_tokens=context,
        flops_projections=2 * params.matmul_per_token * queries,
        flops_attention=model.num_layers * per_pair * pairs,
        flops_lm_head=2 * params.lm_head_matrix * len(seqs),
        bytes_weights=params.streamed * dtype_bytes(dtype),
        bytes_kv_read=context * kv_token,
        bytes_kv_written=queries * kv_token,
    )


def prefill_cost(model: ModelConfig, prompt_lens: Sequence[int] | int, dtype: str = "bf16",
                 kv_cache_dtype: str = "auto") -> StepCost:
    """One prefill step over a batch of prompts (an int is a batch of one)."""
    lens = [prompt_lens] if isinstance(prompt_lens, int) else list(prompt_lens)
    return step_cost(model, [(0, n) for n in lens], dtype, kv_cache_dtype, phase="prefill")


def decode_cost(model: ModelConfig, context_lens: Sequence[int], dtype: str = "bf16",
                kv_cache_dtype: str = "auto") -> StepCost:
    """One decode step: one new token for each sequence, given its cached context length."""
    return step_cost(model, [(c, 1) for c in context_lens], dtype, kv_cache_dtype,
                     phase="decode")


@dataclass(frozen=True, slots=True)
class StepTime:
    cost: StepCost
    roofline: Roofline
    compute_s: float                  # flops / peak
    memory_s: float                   # bytes / bandwidth
    overhead_s: float                 # a fixed term the caller chose; 0 unless given

    @property
    def bound(self) -> str:
        return "compute" if self.compute_s >= self.memory_s else "memory"

    @property
    def roofline_s(self) -> float:
        return max(self.compute_s, self.memory_s)

    @property
    def predicted_s(self) -> float:
        return self.roofline_s + self.overhead_s

    @property
    def attainable_flops(self) -> float:
        return self.roofline.attainable_flops(self.cost.arithmetic_intensity)


def predict(cost: StepCost, roofline: Roofline, overhead_s: float = 0.0) -> StepTime:
    if overhead_s < 0:
        raise ValueError(f"overhead_s must not be negative, got {overhead_s}")
    return StepTime(cost, roofline, cost.flops / roofline.peak_flops,
                    cost.bytes / roofline.memory_bandwidth, overhead_s)


def request_steps(model: ModelConfig, roofline: Roofline, prompt_len: int,
                  decode_steps: int, batch_size: int = 1, dtype: str = "bf16") -> list[StepTime]:
    """One request's steps, predicted: a prefill of `prompt_len` tokens (which samples the
    first output token), then `decode_steps` decode steps, each one token for each of
    `batch_size` sequences, all at this request's context."""
    out = [predict(prefill_cost(model, prompt_len, dtype), roofline)]
    for k in range(1, decode_steps + 1):
        # Decode step k reads the prompt and the k - 1 tokens generated before it, and
        # writes the K and V of the token it feeds in (the one sampled in the step before).
        out.append(predict(decode_cost(model, [prompt_len + k - 1] * batch_size, dtype),
                           roofline))
    return out


def decode_intensity_limit(cost: StepCost) -> float:
    """The intensity a decode step tends to as its batch grows: the weights are read once
    per step, but every FLOP and every KV byte comes with a sequence, so the limit is one
    sequence's FLOPs over its own KV bytes (for sequences that share one context length)."""
    return cost.flops / (cost.bytes_kv_read + cost.bytes_kv_written)


def decode_compute_bound_batch(model: ModelConfig, roofline: Roofline, context_len: int,
                               dtype: str = "bf16") -> int | None:
    """The smallest batch of decode sequences, each with `context_len` tokens cached, whose
    step is compute-bound on `roofline` (FLOPs / peak >= bytes / bandwidth); None when no
    batch is (`decode_intensity_limit` at or below the ridge point).

    A decode step's FLOPs grow with the batch B as B x f (f: one sequence's FLOPs), its
    bytes as W + B x k (W: the weights, read once; k: one sequence's KV read and write), so
    the step is compute-bound from B = peak x W / (f x bandwidth - peak x k) on."""
    one = decode_cost(model, [context_len], dtype)
    f, k, w = one.flops, one.bytes_kv_read + one.bytes_kv_written, one.bytes_weights
    room = f * roofline.memory_bandwidth - roofline.peak_flops * k
    if room <= 0:
        return None
    batch = max(1, math.ceil(roofline.peak_flops * w / room))

    def compute_bound(b: int) -> bool:
        return predict(decode_cost(model, [context_len] * b, dtype), roofline).bound == "compute"

    # The closed form, checked against predict() itself (floats round at the boundary).
    while not compute_bound(batch):
        batch += 1
    while batch > 1 and compute_bound(batch - 1):
        batch -= 1
    return batch


@dataclass(frozen=True, slots=True)
class MeasuredRow:
    """One row of a measurement file beside this model's prediction for it."""
    phase: str
    batch: int
    tokens: int
    ctx: int
    measured_s: float
    measured_bound: str
    predicted: StepTime

    @property
    def ratio(self) -> float:
        """measured / predicted: how far the real step is above the roofline."""
        return self.measured_s / self.predicted.predicted_s


def model_from_measurements(data: dict) -> ModelConfig:
    """The decoder shape a measurement file (e.g. data/h200-prefill-decode.json) used."""
    c = data["config"]
    return ModelConfig(data.get("model", "measured"), c["layers"], c["hidden"], c["heads"],
                       c["kv_heads"], c["head_dim"], c["inter"], c["vocab"],
                       max_model_len=8192, tie_word_embeddings=False, gated_mlp=True)


def compare_with_measurements(data: dict, model: ModelConfig | None = None,
                              dtype: str = "bf16") -> list[MeasuredRow]:
    """Predict every row of a prefill/decode measurement file with the ceilings measured
    in the same run. `data` is the parsed JSON (sim reads no files: Pyodide ships none)."""
    model = model or model_from_measurements(data)
    roofline = Roofline(data["matmul_peak_flops"], data["copy_bandwidth_bytes_per_s"],
                        data.get("device", ""))
    rows = []
    for r in data["rows"]:
        if r["phase"] == "prefill":
            # The file's prefill rows are one prompt of `tokens` (= ctx) tokens.
            cost = prefill_cost(model, [r["tokens"] // r["batch"]] * r["batch"], dtype)
        else:
            cost = decode_cost(model, [r["ctx"]] * r["batch"], dtype)
        rows.append(MeasuredRow(r["phase"], r["batch"], r["tokens"], r["ctx"],
                                r["measured_s"], r["bound"], predict(cost, roofline)))
    return rows
