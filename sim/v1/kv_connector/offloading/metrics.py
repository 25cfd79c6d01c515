"""The offloading connector's statistics (vLLM v0.25.1
`vllm/distributed/kv_transfer/kv_connector/v1/offloading/metrics.py`:
`OffloadingConnectorStats`): counters (summed), gauges (the latest value) and histograms
(every observation), by flat metric name. `reduce()` gives one number per metric (a
histogram's `_count` and `_sum`). Label values and the Prometheus side are left out."""
from __future__ import annotations

from dataclasses import dataclass, field


class _TransferMetricName:
    LOAD_BYTES = "vllm:kv_offload_load_bytes"
    LOAD_TIME = "vllm:kv_offload_load_time"
    LOAD_SIZE = "vllm:kv_offload_load_size"
    STORE_BYTES = "vllm:kv_offload_store_bytes"
    STORE_TIME = "vllm:kv_offload_store_time"
    STORE_SIZE = "vllm:kv_offload_store_size"


COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"


@dataclass
class OffloadingConnectorStats:
    types: dict[str, str] = field(default_factory=dict)
    values: dict[str, object] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not self.values

    def increase_counter(self, name: str, value: int | float) -> None:
        self.types.setdefault(name, COUNTER)
        self.values[name] = self.values.get(name, 0) + value

    def set_gauge(self, name: str, value: int | float) -> None:
        self.types.setdefault(name, GAUGE)
        self.values[name] = value

    def observe_histogram(self, name: str, value: int | float) -> None:
        self.types.setdefault(name, HISTOGRAM)
        self.values.setdefault(name, []).append(value)

    def aggregate(self, other: OffloadingConnectorStats) -> OffloadingConnectorStats:
        for name, value in other.values.items():
            kind = other.types[name]
            if kind == COUNTER:
                self.increase_counter(name, value)
            elif kind == GAUGE:
                self.set_gauge(name, value)
            else:
                for v in value:
                    self.observe_histogram(name, v)
        return self

    def reduce(self) -> dict[str, int | float]:
        out: dict[str, int | float] = {}
        for name, value in self.values.items():
            if self.types[name] == HISTOGRAM:
                out[f"{name}_count"] = len(value)
                out[f"{name}_sum"] = sum(value)
            else:
                out[name] = value
        return out
