"""Sync/async parity: one scenario through both clients gives the same requests and results.

(Every test taking ``make_client`` already runs against both clients; this one compares the
two runs with each other, request by request.)
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from bookrec.client import AsyncEmbeddingClient, EmbeddingClient, EmbeddingRejected, RetryPolicy
from bookrec.client.testing import FakeSGLang, fake_vector
from tests.client.conftest import FakeClock, config_for


def scenario(kind: str) -> dict[str, Any]:
    clock = FakeClock()
    with FakeSGLang(dim=32, max_input_tokens=60) as server:
        config = config_for(
            server,
            batch_size=3,
            max_concurrency=1,  # one batch at a time, so the request order is comparable
            max_input_tokens=10_000,
            retry=RetryPolicy(jitter=False),
        )
        texts = ["Dune", "Emma", "Dune", "Ulysses", "Beloved", "Emma", "Middlemarch"]
        bad = [*texts[:4], "too long " * 40, *texts[4:]]
        server.fail_next(503, retry_after=2)
        server.shuffle_next()

        def run(client: Any, wait: Any) -> dict[str, Any]:
            docs = wait(client.embed_documents(texts))
            queries = wait(client.embed_queries(["desert planets"], "Find novels"))
            with pytest.raises(EmbeddingRejected) as info:
                wait(client.embed_documents(bad))
            wait(client.close())
            return {"docs": docs, "queries": queries, "bad_index": info.value.index}

        if kind == "sync":
            client = EmbeddingClient(config, sleep=clock.sleep, clock=clock)
            result = run(client, lambda value: value)
        else:
            loop = asyncio.new_event_loop()
            try:
                client = AsyncEmbeddingClient(config, sleep=clock.async_sleep, clock=clock)
                result = run(client, loop.run_until_complete)
            finally:
                loop.close()
        result["requests"] = server.requests
    result["sleeps"] = clock.sleeps
    return result


def test_sync_and_async_behave_the_same() -> None:
    sync, async_ = scenario("sync"), scenario("async")

    assert sync["requests"] == async_["requests"]
    assert sync["sleeps"] == async_["sleeps"] == [2.0]
    assert sync["bad_index"] == async_["bad_index"] == 4
    np.testing.assert_array_equal(sync["docs"], async_["docs"])
    np.testing.assert_array_equal(sync["queries"], async_["queries"])
    np.testing.assert_allclose(sync["docs"][2], fake_vector("Dune", 32), atol=1e-6)


def test_one_sync_client_serves_several_threads(fake_server: FakeSGLang) -> None:
    results: dict[int, np.ndarray] = {}
    with EmbeddingClient(config_for(fake_server, batch_size=2, max_concurrency=3)) as client:

        def work(n: int) -> None:
            results[n] = client.embed_documents([f"thread {n} text {i}" for i in range(7)])

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert fake_server.peak_in_flight <= 3
    for n in range(4):
        expected = np.stack([fake_vector(f"thread {n} text {i}", 64) for i in range(7)])
        np.testing.assert_allclose(results[n], expected, atol=1e-6)
