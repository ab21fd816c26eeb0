"""The service's Prometheus metrics, summed over every worker process in multiprocess mode.

With several workers, ``bookrec serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder
before the workers start; prometheus_client then keeps each process's values in files there and
``/metrics`` (answered by any worker) reads them all. With one process the metrics live in a
registry of the app's own.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["CONTENT_TYPE_LATEST", "MULTIPROC_ENV", "Metrics"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The counters and histograms of one app (see the README for their meaning)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "bookrec_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "bookrec_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method",
            ["route", "method"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.embedding_requests = Counter(
            "bookrec_embedding_requests",
            "Calls to the embedding service (a batch of queries counts once)",
            registry=r,
        )
        self.embedding_texts = Counter(
            "bookrec_embedding_texts", "Texts sent to be embedded", registry=r
        )
        self.cache_hits = Counter(
            "bookrec_embedding_cache_hits",
            "Texts whose vector came from the embedding cache",
            registry=r,
        )
        self.degraded = Counter(
            "bookrec_degraded_responses",
            "Responses whose free text was matched by keywords, by route template",
            ["route"],
            registry=r,
        )
        self.rerank_fallbacks = Counter(
            "bookrec_rerank_fallbacks",
            "Responses that asked for reranking but kept the first-stage order (reranker "
            "unavailable), by route template",
            ["route"],
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition (every worker's values in multiprocess mode)."""
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
