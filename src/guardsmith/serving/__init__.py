"""Serving what was trained: the guard service and the filtered-generation gateway (docs/serving.md).

- :mod:`~guardsmith.serving.guard_service`: ``guardsmith serve guard`` (``/v1/moderations``, the
  guard as a chat model, health, readiness, Prometheus metrics, batching).
- :mod:`~guardsmith.serving.gateway`: ``guardsmith serve gateway`` (generator -> guard -> answer or
  refusal, buffered streaming, near-boundary interactions collected for the next training run).
- :mod:`~guardsmith.serving.engine` (the guard), :mod:`~guardsmith.serving.batcher`,
  :mod:`~guardsmith.serving.api` (OpenAI wire shapes), :mod:`~guardsmith.serving.http` (app
  skeleton, running a service), :mod:`~guardsmith.serving.collect`, :mod:`~guardsmith.serving.metrics`.

Layer: may import the model library and data layers; imported only by the CLI (and tests,
benchmarks). FastAPI, uvicorn, prometheus-client are the ``serve`` extra, imported inside functions.
"""
from __future__ import annotations

from guardsmith.serving.engine import GuardEngine, Item
from guardsmith.serving.gateway import GatewayConfig, gateway_app, load_gateway_config
from guardsmith.serving.guard_service import guard_app
from guardsmith.serving.http import RunningService, run_foreground

__all__ = ["GatewayConfig", "GuardEngine", "Item", "RunningService", "gateway_app", "guard_app",
           "load_gateway_config", "run_foreground"]
