"""Prefill vs decode on the roofline with sim, then sim.cost beside the H200
measurements. Run from a checkout: python examples/prefill_decode.py"""
import json
from pathlib import Path

from sim.perf.cost import (
    Roofline,
    compare_with_measurements,
    decode_compute_bound_batch,
    decode_cost,
    decode_intensity_limit,
    predict,
    request_steps,
)
from sim.perf.models import get_model

model = get_model("llama-3-8b")
root = Path(__file__).resolve().parent.parent
data = json.loads((root / "data" / "h200-prefill-decode.json").read_text())
h200 = Roofline(data["matmul_peak_flops"], data["copy_bandwidth_bytes_per_s"])
print(f"ridge point: {h200.ridge_point:.0f} FLOPs per byte")

# The widget's first two steps: a 512-token prefill, then its first decode at batch 1.
for t in request_steps(model, h200, prompt_len=512, decode_steps=1):
    print(f"{t.cost.phase:8} {t.cost.arithmetic_intensity:6.1f} FLOP/B "
          f"{t.bound:8} {t.predicted_s * 1e3:6.2f} ms")

# Batching decodes moves them toward the ridge point.
for batch in (1, 16, 64, 256):
    t = predict(decode_cost(model, [512] * batch, "bf16"), h200)
    print(f"decode batch {batch:3}: {t.cost.arithmetic_intensity:6.1f} FLOP/B, "
          f"{batch / t.predicted_s:6.0f} tokens/s")
# ...but no batch takes a decode past one sequence's FLOPs per KV byte: at 512 tokens of
# context that limit is above the ridge, at 2,048 below it.
for ctx in (512, 2048):
    print(f"context {ctx}: limit "
          f"{decode_intensity_limit(decode_cost(model, [ctx], 'bf16')):.1f} FLOP/B, "
          f"first compute-bound batch: {decode_compute_bound_batch(model, h200, ctx) or 'none'}")

# The measured steps beside the model's predictions.
for r in compare_with_measurements(data):
    print(f"{r.phase:8} batch {r.batch:4} ctx {r.ctx:5}: "
          f"{r.measured_s * 1e3:6.2f} ms measured, "
          f"{r.predicted.predicted_s * 1e3:6.2f} predicted "
          f"({r.predicted.bound}), ratio {r.ratio:.2f}")
