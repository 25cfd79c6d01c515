"""Prefill vs decode on the roofline, with sim: the widget's default steps, then sim.cost
beside the H200 measurements (run from a checkout: python examples/prefill_decode.py)."""
import json
from pathlib import Path

from sim.cost import Roofline, compare_with_measurements, decode_cost, predict, prefill_cost
from sim.models import get_model

model = get_model("llama-3-8b")
data = json.loads((Path(__file__).resolve().parent.parent
                   / "data" / "h200-prefill-decode.json").read_text())
h200 = Roofline(data["matmul_peak_flops"], data["copy_bandwidth_bytes_per_s"], "H200")
print(f"ridge point: {h200.ridge_point:.0f} FLOPs per byte")

prompt, batch = 512, 1
steps = [prefill_cost(model, prompt, "bf16")]
steps += [decode_cost(model, [prompt + k] * batch, "bf16") for k in range(3)]
for cost in steps:
    t = predict(cost, h200)
    print(f"{cost.phase:8} {cost.num_query_tokens:5} tokens "
          f"{cost.arithmetic_intensity:7.1f} FLOP/B  {t.bound:7}  {t.predicted_s * 1e3:6.2f} ms")

# Batching decodes moves them toward the ridge point.
for batch in (1, 16, 64, 256):
    t = predict(decode_cost(model, [512] * batch, "bf16"), h200)
    print(f"decode batch {batch:3}: {t.cost.arithmetic_intensity:6.1f} FLOP/B, "
          f"{t.predicted_s * 1e3:5.2f} ms, {batch / t.predicted_s:8.0f} tokens/s")

# The measured steps beside the model's predictions.
for r in compare_with_measurements(data):
    print(f"{r.phase:8} batch {r.batch:4} ctx {r.ctx:5}: measured {r.measured_s * 1e3:7.2f} ms, "
          f"predicted {r.predicted.predicted_s * 1e3:7.2f} ms ({r.predicted.bound}), "
          f"ratio {r.ratio:.2f}")
