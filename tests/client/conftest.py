"""Client test fixtures: a fake clock, and one harness that drives the sync or the async client.

Every test that takes ``make_client`` runs twice, once per client class (sync/async parity):
the async client is driven through a private event loop behind the same blocking methods.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from bookrec.client import (
    AsyncEmbeddingClient,
    ClientConfig,
    EmbeddingCache,
    EmbeddingClient,
    Endpoint,
    RetryPolicy,
)
from bookrec.client.testing import FakeSGLang


class FakeClock:
    """A monotonic clock that only moves when the client sleeps (or the test advances it)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)

    def advance(self, seconds: float) -> None:
        self.now += seconds


def config_for(*servers: FakeSGLang | str, **changes: Any) -> ClientConfig:
    """A config for the given servers with deterministic backoff (0.5, 1, 2, ... no jitter)."""
    api_key = changes.pop("api_key", None)
    endpoints = tuple(Endpoint(s if isinstance(s, str) else s.base_url, api_key) for s in servers)
    changes.setdefault("retry", RetryPolicy(jitter=False))
    changes.setdefault("timeout", 5.0)
    return ClientConfig(endpoints=endpoints, **changes)


class Harness:
    """The same blocking surface over either client class."""

    def __init__(self, client: EmbeddingClient | AsyncEmbeddingClient) -> None:
        self.client = client
        self._loop = asyncio.new_event_loop() if isinstance(client, AsyncEmbeddingClient) else None

    def _wait(self, value: Any) -> Any:
        if self._loop is None:
            return value
        return self._loop.run_until_complete(value)

    @property
    def is_async(self) -> bool:
        return self._loop is not None

    @property
    def identity(self) -> Any:
        return self.client.identity

    @property
    def config(self) -> ClientConfig:
        return self.client.config

    def embed_documents(self, texts: Sequence[str], **kwargs: Any) -> Any:
        return self._wait(self.client.embed_documents(texts, **kwargs))

    def embed_queries(self, texts: Sequence[str], *args: Any, **kwargs: Any) -> Any:
        return self._wait(self.client.embed_queries(texts, *args, **kwargs))

    def rerank(self, query: str, documents: Sequence[str], *args: Any, **kwargs: Any) -> Any:
        return self._wait(self.client.rerank(query, documents, *args, **kwargs))

    def probe(self) -> Any:
        return self._wait(self.client.probe())

    def close(self) -> None:
        self._wait(self.client.close())

    def dispose(self) -> None:
        self.close()
        if self._loop is not None:
            self._loop.close()


MakeClient = Callable[..., Harness]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sync", "async"])
def make_client(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[MakeClient]:
    """``make_client(config, cache=None)`` -> a started :class:`Harness`; closed at the end."""
    harnesses: list[Harness] = []

    def make(config: ClientConfig, *, cache: EmbeddingCache | None = None) -> Harness:
        client: EmbeddingClient | AsyncEmbeddingClient
        if request.param == "sync":
            client = EmbeddingClient(config, cache=cache, sleep=clock.sleep, clock=clock)
        else:
            client = AsyncEmbeddingClient(config, cache=cache, sleep=clock.async_sleep, clock=clock)
        harness = Harness(client)
        harnesses.append(harness)
        return harness

    yield make
    for harness in harnesses:
        harness.dispose()
