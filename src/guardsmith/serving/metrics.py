"""Prometheus metrics of one service (its own registry, so several services can live in one process)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


@dataclass
class ServiceMetrics:
    """Requests, request latency, scored/flagged counts (flagged rate = flagged / scored), batch
    sizes, guard latency and gateway decisions, all prefixed ``guardsmith_<service>_``."""

    service: str
    registry: Any = field(init=False)

    def __post_init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        p = f"guardsmith_{self.service}"
        self.requests = Counter(f"{p}_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram(f"{p}_request_latency_seconds", "Request latency by endpoint", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.scored = Counter(f"{p}_scored", "Items the guard scored", registry=self.registry)
        self.flagged = Counter(f"{p}_flagged", "Items flagged (score >= threshold; gateway: t >= tau)",
                               registry=self.registry)
        self.batch_size = Histogram(f"{p}_batch_size", "Items per model call", buckets=BATCH_BUCKETS,
                                    registry=self.registry)
        self.batch_latency = Histogram(f"{p}_batch_latency_seconds", "Wall time of one model call",
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        self.guard_latency = Histogram(f"{p}_guard_latency_seconds", "Guard time per gateway request",
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        self.decisions = Counter(f"{p}_decisions", "Gateway decisions (answered, refused)", ["decision"],
                                 registry=self.registry)

    def batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_latency.observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
