"""vLLM v0.25.1 `vllm/v1/kv_offload/factory.py`: `OffloadingSpecFactory` builds the spec
named by `kv_connector_extra_config["spec_name"]` (default "CPUOffloadingSpec"). vLLM also
imports a spec from `spec_module_path`; here a spec class is registered instead (tests
register theirs)."""
from __future__ import annotations

from collections.abc import Callable

from sim.v1.kv_offload.base import OffloadingSpec


def _cpu_spec() -> type[OffloadingSpec]:
    from sim.v1.kv_offload.cpu.spec import CPUOffloadingSpec
    return CPUOffloadingSpec


class OffloadingSpecFactory:
    _registry: dict[str, Callable[[], type[OffloadingSpec]]] = {
        "CPUOffloadingSpec": _cpu_spec}

    @classmethod
    def register_spec(cls, name: str, loader: Callable[[], type[OffloadingSpec]]) -> None:
        if name in cls._registry:
            raise ValueError(f"Connector '{name}' is already registered.")
        cls._registry[name] = loader

    @classmethod
    def get_spec_cls(cls, kv_transfer_config) -> type[OffloadingSpec]:
        spec_name = kv_transfer_config.kv_connector_extra_config.get(
            "spec_name", "CPUOffloadingSpec")
        if spec_name not in cls._registry:
            raise ValueError(f"Unsupported spec type: {spec_name}")
        return cls._registry[spec_name]()

    @classmethod
    def create_spec(cls, kv_transfer_config, cache_config, **kwargs) -> OffloadingSpec:
        return cls.get_spec_cls(kv_transfer_config)(kv_transfer_config, cache_config, **kwargs)
