"""Micro-batching of query embeddings, against a real fake SGLang server: concurrent callers
share requests, each gets its own vectors, errors reach every caller of a batch."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from bookrec.client import (
    AsyncEmbeddingClient,
    ClientConfig,
    EmbeddingClient,
    EmbeddingUnavailable,
    Endpoint,
    RetryPolicy,
)
from bookrec.client.testing import FakeSGLang
from bookrec.recommender.service.batching import BatchingEmbedder, QueryBatcher
from tests.service.conftest import DIM, Service

N = 32


@pytest.fixture
def fake() -> Iterator[FakeSGLang]:
    with FakeSGLang(dim=DIM) as server:
        yield server


def _config(fake: FakeSGLang) -> ClientConfig:
    return ClientConfig(endpoints=(Endpoint(fake.base_url),), retry=RetryPolicy(max_attempts=1))


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread, as the server's is."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


MakeEmbedder = Callable[..., BatchingEmbedder]


@pytest.fixture
def make_embedder(fake: FakeSGLang, loop: asyncio.AbstractEventLoop) -> Iterator[MakeEmbedder]:
    clients: list[AsyncEmbeddingClient] = []

    def make(**options: float) -> BatchingEmbedder:
        async def build() -> QueryBatcher:
            client = AsyncEmbeddingClient(_config(fake))
            clients.append(client)
            return QueryBatcher(client, **options)  # type: ignore[arg-type]

        batcher = asyncio.run_coroutine_threadsafe(build(), loop).result(5)
        return BatchingEmbedder(batcher, loop, timeout=10)

    yield make
    for client in clients:
        asyncio.run_coroutine_threadsafe(client.close(), loop).result(5)


def _concurrently(fn: Callable[[int], object], n: int = N) -> list[object]:
    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(fn, i) for i in range(n)]
        return [f.exception() or f.result() for f in futures]


def test_concurrent_queries_share_requests_each_gets_its_own_vector(
    fake: FakeSGLang, make_embedder: MakeEmbedder
) -> None:
    embedder = make_embedder(max_texts=64, max_wait=0.3)
    texts = [f"query number {i}" for i in range(N)]
    results = _concurrently(lambda i: embedder.embed_queries([texts[i]]))
    batched_requests = fake.embedding_request_count
    assert batched_requests <= 3  # 32 callers within the wait: one request (or a few)
    with EmbeddingClient(_config(fake)) as direct:
        expected = direct.embed_queries(texts)
    for i, vectors in enumerate(results):
        assert isinstance(vectors, np.ndarray) and vectors.shape == (1, DIM)
        np.testing.assert_allclose(vectors[0], expected[i], rtol=1e-6, atol=1e-6)
    assert sorted(fake.embedded_texts[:N]) == sorted(
        fake.embedded_texts[N : 2 * N]
    )  # the batched inputs are exactly the direct ones


def test_a_caller_with_several_texts_gets_its_rows_in_order(
    fake: FakeSGLang, make_embedder: MakeEmbedder
) -> None:
    embedder = make_embedder(max_wait=0.2)
    groups = [[f"g{i} a", f"g{i} b", f"g{i} c"] for i in range(6)]
    results = _concurrently(lambda i: embedder.embed_queries(groups[i]), n=6)
    with EmbeddingClient(_config(fake)) as direct:
        for group, vectors in zip(groups, results, strict=True):
            np.testing.assert_allclose(vectors, direct.embed_queries(group), atol=1e-6)


def test_instructions_are_never_mixed(fake: FakeSGLang, make_embedder: MakeEmbedder) -> None:
    embedder = make_embedder(max_wait=0.3)
    instructions = ["Find books like this", "Find poems like this"]
    results = _concurrently(
        lambda i: embedder.embed_queries([f"text {i}"], instructions[i % 2]), n=16
    )
    assert 2 <= fake.embedding_request_count <= 4
    for body in fake.requests:
        kinds = {instruction for instruction in instructions for text in body["input"]
                 if text.startswith(f"Instruct: {instruction}")}  # fmt: skip
        assert len(kinds) == 1, body["input"]
    with EmbeddingClient(_config(fake)) as direct:
        for i, vectors in enumerate(results):
            want = direct.embed_queries([f"text {i}"], instructions[i % 2])
            np.testing.assert_allclose(vectors, want, atol=1e-6)


def test_a_full_batch_goes_without_waiting(fake: FakeSGLang, make_embedder: MakeEmbedder) -> None:
    embedder = make_embedder(max_texts=4, max_wait=30.0)
    began = time.monotonic()
    results = _concurrently(lambda i: embedder.embed_queries([f"full {i}"]), n=8)
    assert time.monotonic() - began < 10
    assert all(isinstance(r, np.ndarray) for r in results)
    assert fake.embedding_request_count == 2


def test_an_error_reaches_every_caller_of_the_batch(
    fake: FakeSGLang, make_embedder: MakeEmbedder
) -> None:
    embedder = make_embedder(max_wait=0.3)
    fake.fail_next(503, times=20)
    results = _concurrently(lambda i: embedder.embed_queries([f"doomed {i}"]), n=8)
    assert all(isinstance(r, EmbeddingUnavailable) for r in results), results
    assert fake.embedding_request_count <= 2
    fake.reset()
    assert embedder.embed_queries(["recovered"]).shape == (1, DIM)


def test_the_facade_is_an_embedder(fake: FakeSGLang, make_embedder: MakeEmbedder) -> None:
    from bookrec.client import Embedder

    embedder = make_embedder()
    assert isinstance(embedder, Embedder)
    assert embedder.dimensions is None and embedder.prompt_formats is not None
    docs = embedder.embed_documents(["a document", "another"])
    assert docs.shape == (2, DIM) and embedder.identity is not None
    assert embedder.identity.dimensions == DIM


def test_the_service_batches_concurrent_searches(
    start_service: Callable[..., Service], tmp_path: Path
) -> None:
    with FakeSGLang(dim=DIM) as fake:
        cache = str(tmp_path / "cache.sqlite")
        service = start_service("--batch-wait-ms", "300", "--cache", cache, embedding=fake)
        service.http.get("/v1/search", params={"q": "warm up"})
        before = fake.embedding_request_count

        def search(i: int) -> object:
            with service.client() as http:
                return http.get("/v1/search", params={"q": f"concurrent {i}", "k": 2})

        responses = _concurrently(search)
        assert all(r.status_code == 200 for r in responses)  # type: ignore[attr-defined]
        assert not any(r.json()["degraded"] for r in responses)  # type: ignore[attr-defined]
        assert fake.embedding_request_count - before <= 4
        metrics = service.http.get("/metrics").text
        sent = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("bookrec_embedding_texts_total")
        )
        assert sent >= N + 1
        service.http.get("/v1/search", params={"q": "concurrent 3", "k": 2})
        hits = next(
            float(line.split()[-1])
            for line in service.http.get("/metrics").text.splitlines()
            if line.startswith("bookrec_embedding_cache_hits_total")
        )
        assert hits >= 1
