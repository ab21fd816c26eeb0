"""A slow server: a batch that times out is halved, the endpoint remembers the smaller size and
grows it back after successes; a single text that times out still fails, within the deadline.

The fake server pays a real per-text cost (``per_item_delay``), so these tests sleep for real:
30 ms a text against a read timeout of 0.36 s, so that 16 texts time out and 8 do not.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from bookrec.client import (
    AsyncEmbeddingClient,
    EmbeddingClient,
    EmbeddingTimeout,
    RetryPolicy,
    _flow,
)
from bookrec.client._flow import SplitSize
from bookrec.client.testing import FakeSGLang, fake_vector
from tests.client.conftest import FakeClock, MakeClient, config_for

PER_TEXT = 0.03
TIMEOUT = 0.36  # 8 texts: 0.24 s; 16 texts: 0.48 s


def books(n: int, start: int = 0) -> list[str]:
    return [f"book {i}" for i in range(start, start + n)]


def sizes(server: FakeSGLang) -> list[int]:
    """The number of texts of each embedding request, in arrival order."""
    return [len(body["input"]) for body in server.requests]


def assert_vectors(vectors: np.ndarray, texts: list[str], dim: int) -> None:
    assert vectors.shape == (len(texts), dim)
    expected = np.stack([fake_vector(text, dim) for text in texts])
    np.testing.assert_allclose(vectors, expected, atol=1e-6)  # complete and in order


def test_a_batch_that_times_out_is_halved_and_the_size_is_remembered(
    make_client: MakeClient, clock: FakeClock
) -> None:
    with FakeSGLang(dim=16, per_item_delay=PER_TEXT) as server:
        client = make_client(config_for(server, timeout=TIMEOUT, batch_size=64))
        texts = books(64)

        vectors = client.embed_documents(texts)

        assert_vectors(vectors, texts, 16)
        assert sizes(server) == [64, 32, 16] + [8] * 8  # halved before each next attempt
        assert clock.sleeps == []  # a halving is not a retry of the same request: no backoff

        server.reset()
        more = books(64, start=64)
        assert_vectors(client.embed_documents(more), more, 16)
        assert sizes(server) == [8] * 8  # the endpoint remembers: no timeout this time


def test_batches_in_parallel_are_halved_and_stay_in_order(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_flow, "SPLIT_GROW_AFTER", 1000)  # no growth here: see the next test
    with FakeSGLang(dim=16, per_item_delay=PER_TEXT) as server:
        config = config_for(server, timeout=TIMEOUT, batch_size=64, max_concurrency=3)
        client = make_client(config)
        texts = books(144)  # batches of 64, 64 and 16, sent at the same time

        assert_vectors(client.embed_documents(texts), texts, 16)
        assert sorted(sizes(server))[-2:] == [64, 64]
        assert max(sizes(server)[3:]) <= 32  # after the first timeouts, never the full size

        server.reset()
        more = books(144, start=144)
        assert_vectors(client.embed_documents(more), more, 16)
        assert sizes(server) == [8] * 18  # every batch starts at the remembered size


def test_the_split_size_grows_back_after_successes(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeSGLang(dim=16, per_item_delay=PER_TEXT) as server:
        client = make_client(config_for(server, timeout=TIMEOUT, batch_size=64))
        client.embed_documents(books(64))
        assert sizes(server)[-1] == 8  # 8 successes at 8 texts so far

        server.set_costs(per_item_delay=0.0)  # the server is fast again
        monkeypatch.setattr(_flow, "SPLIT_GROW_AFTER", 4)  # doubles on every 4th success
        calls = []
        for start in range(100, 600, 100):
            server.reset()
            texts = books(64, start=start)
            assert_vectors(client.embed_documents(texts), texts, 16)
            calls.append(sizes(server))

        assert calls == [
            [8, 8, 16, 16, 16],  # the 9th success at 8 (4 needed): 16
            [16, 16, 32],  # the 4th success at 16 (more than 8 texts): 32
            [32, 32],
            [32, 32],  # the 4th at 32: 64, the batch size, so no limit any more
            [64],
        ]


def test_a_batch_timing_out_on_every_size_fails_cleanly(
    make_client: MakeClient, clock: FakeClock
) -> None:
    policy = RetryPolicy(max_attempts=2, initial_wait=0, max_wait=0)
    with FakeSGLang(dim=16, per_request_delay=0.5) as server:  # never within the timeout
        client = make_client(config_for(server, timeout=0.1, retry=policy, batch_size=64))

        with pytest.raises(EmbeddingTimeout):
            client.embed_documents(books(4))

        # 4 and 2 texts are halved; one text is retried like any failure, then it ends
        assert sizes(server) == [4, 2, 1, 1]


def test_a_single_text_that_times_out_is_retried_then_fails(make_client: MakeClient) -> None:
    policy = RetryPolicy(max_attempts=3, initial_wait=0, max_wait=0)
    with FakeSGLang(dim=16, per_request_delay=0.5) as server:
        client = make_client(config_for(server, timeout=0.1, retry=policy))
        with pytest.raises(EmbeddingTimeout):
            client.embed_documents(["Dune"])
        assert sizes(server) == [1, 1, 1]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_halving_stays_within_the_call_deadline(kind: str) -> None:
    # Real clock: every size times out (5 s a request); halving 64 -> 32 -> 16 at 0.3 s each,
    # then the deadline (1 s) cuts the next request short and ends the call.
    with FakeSGLang(dim=16, per_request_delay=5.0) as server:
        config = config_for(server, timeout=0.3, deadline=1.0, batch_size=64)
        started = time.monotonic()
        with pytest.raises(EmbeddingTimeout):
            if kind == "sync":
                with EmbeddingClient(config) as client:
                    client.embed_documents(books(64))
            else:

                async def run() -> None:
                    async with AsyncEmbeddingClient(config) as client:
                        await client.embed_documents(books(64))

                asyncio.run(run())
        elapsed = time.monotonic() - started
        assert elapsed < 2.5
        assert sizes(server)[:3] == [64, 32, 16]
        assert len(server.requests) <= 5


def test_split_size_halves_to_one_and_grows_to_the_batch_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_flow, "SPLIT_GROW_AFTER", 2)
    split = SplitSize()
    assert split.limit is None
    assert split.shrink(64) == 32
    assert split.shrink(64) == 32  # a late timeout of a larger request: no smaller than needed
    assert [split.shrink(n) for n in (32, 16, 8, 4, 2, 1)] == [16, 8, 4, 2, 1, 1]
    assert not split.record_success(1, 64)
    assert split.record_success(1, 64) and split.limit == 2
    assert not split.record_success(1, 64)  # a size the limit of 1 allowed: no evidence
    split.record_success(2, 64)
    split.record_success(2, 64)
    assert split.limit == 4
    for _ in range(8):
        split.record_success(64, 64)
    assert split.limit is None  # 4 -> 8 -> 16 -> 32 -> 64: lifted
