"""KV connectors (vLLM v0.25.1 `vllm/distributed/kv_transfer/kv_connector/`): the interface
(`base.py`), NIXL's pull-mode connector for P/D disaggregation (`nixl.py`) and the
offloading connector, a CPU tier for the KV cache (`offloading_connector.py`).

`KVConnectorFactory.create_connector` builds one by its `KVTransferConfig.kv_connector`
name, as vLLM's factory does; `register_connector` adds another (a test's, or an offloading
connector's)."""
from __future__ import annotations

from collections.abc import Callable

from sim.v1.kv_connector.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
    SupportsHMA,
    supports_hma,
)

__all__ = ["KVConnectorBase_V1", "KVConnectorFactory", "KVConnectorMetadata",
           "KVConnectorRole", "SupportsHMA", "supports_hma"]


def _nixl():
    from sim.v1.kv_connector.nixl import NixlConnector
    return NixlConnector


def _offloading():
    from sim.v1.kv_connector.offloading_connector import OffloadingConnector
    return OffloadingConnector


class KVConnectorFactory:
    _registry: dict[str, Callable[[], type]] = {"NixlConnector": _nixl,
                                                "OffloadingConnector": _offloading}

    @classmethod
    def register_connector(cls, name: str, loader: Callable[[], type]) -> None:
        if name in cls._registry:
            raise ValueError(f"Connector '{name}' is already registered.")
        cls._registry[name] = loader

    @classmethod
    def get_connector_class(cls, name: str) -> type:
        if name not in cls._registry:
            raise ValueError(f"Unsupported connector type: {name} (known: "
                             f"{', '.join(sorted(cls._registry))})")
        return cls._registry[name]()

    @classmethod
    def create_connector(cls, kv_transfer_config, role: KVConnectorRole, cache_config=None,
                         **kwargs) -> KVConnectorBase_V1:
        name = kv_transfer_config.kv_connector
        if name not in cls._registry:
            raise ValueError(f"Unsupported connector type: {name} (known: "
                             f"{', '.join(sorted(cls._registry))})")
        return cls._registry[name]()(kv_transfer_config, role, cache_config, **kwargs)
