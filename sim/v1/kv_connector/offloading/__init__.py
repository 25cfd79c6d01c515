"""The offloading connector's halves (vLLM v0.25.1
`vllm/distributed/kv_transfer/kv_connector/v1/offloading/`): `common.py` (the metadata the
two halves exchange), `scheduler.py` (`OffloadingConnectorScheduler`), `worker.py`
(`OffloadingConnectorWorker`), `metrics.py`. The connector itself is
sim/v1/kv_connector/offloading_connector.py."""
