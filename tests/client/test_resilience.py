"""Retries, Retry-After, timeouts, deadline, splitting, fallback and the circuit breaker.

Every test runs against both clients. Waits go through the fake clock, so nothing sleeps for
real except the few tests about read timeouts (a fraction of a second each).
"""

from __future__ import annotations

import socket

import numpy as np
import openai
import pytest
import tenacity

from bookrec.client import (
    EmbeddingError,
    EmbeddingRejected,
    EmbeddingTimeout,
    EmbeddingUnavailable,
    IncompatibleModelError,
    RetryPolicy,
)
from bookrec.client.testing import FakeSGLang, fake_vector
from tests.client.conftest import FakeClock, MakeClient, config_for


def dead_url() -> str:
    """A URL on which connections are refused: a port found free, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503])
def test_retryable_statuses_are_retried_with_backoff(
    fake_server: FakeSGLang, make_client: MakeClient, clock: FakeClock, status: int
) -> None:
    client = make_client(config_for(fake_server))
    fake_server.fail_next(status, times=2)

    vectors = client.embed_documents(["Dune"])

    assert fake_server.embedding_request_count == 3
    assert clock.sleeps == [0.5, 1.0]  # exponential: initial_wait * 2**n
    np.testing.assert_allclose(vectors[0], fake_vector("Dune", 64), atol=1e-6)


def test_jitter_adds_at_most_initial_wait(
    fake_server: FakeSGLang, make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(config_for(fake_server, retry=RetryPolicy(jitter=True)))
    fake_server.fail_next(503, times=3)
    client.embed_documents(["Dune"])
    for base, slept in zip([0.5, 1.0, 2.0], clock.sleeps, strict=True):
        assert base <= slept <= base + 0.5


def test_attempts_are_capped_and_the_error_is_ours(
    fake_server: FakeSGLang, make_client: MakeClient
) -> None:
    client = make_client(config_for(fake_server, retry=RetryPolicy(max_attempts=3, jitter=False)))
    fake_server.fail_next(503, times=5)

    with pytest.raises(EmbeddingUnavailable) as info:
        client.embed_documents(["Dune"])

    assert fake_server.embedding_request_count == 3
    assert info.value.status_code == 503
    assert not isinstance(info.value, tenacity.RetryError)
    chain = []  # the SDK's exception is kept as a cause, down the chain
    error: BaseException | None = info.value
    while error is not None:
        chain.append(error)
        error = error.__cause__
    assert any(isinstance(e, openai.APIStatusError) for e in chain)


def test_the_sdk_does_not_retry_on_its_own(
    fake_server: FakeSGLang, make_client: MakeClient
) -> None:
    client = make_client(config_for(fake_server, retry=RetryPolicy(max_attempts=1)))
    fake_server.fail_next(503, times=3)
    with pytest.raises(EmbeddingUnavailable):
        client.embed_documents(["Dune"])
    assert fake_server.embedding_request_count == 1


def test_retry_after_is_honoured(
    fake_server: FakeSGLang, make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(config_for(fake_server))
    fake_server.fail_next(429, times=1, retry_after=7)
    client.embed_documents(["Dune"])
    assert clock.sleeps == [7.0]


def test_retry_after_is_capped(
    fake_server: FakeSGLang, make_client: MakeClient, clock: FakeClock
) -> None:
    policy = RetryPolicy(jitter=False, max_retry_after=12.0)
    client = make_client(config_for(fake_server, retry=policy))
    fake_server.fail_next(503, times=1, retry_after=3600)
    client.embed_documents(["Dune"])
    assert clock.sleeps == [12.0]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried(
    fake_server: FakeSGLang, make_client: MakeClient, clock: FakeClock, status: int
) -> None:
    client = make_client(config_for(fake_server))
    fake_server.fail_next(status, times=3, message="Unsupported encoding_format: 'int8'")

    with pytest.raises(EmbeddingRejected) as info:
        client.embed_documents(["Dune", "Emma"])

    assert info.value.status_code == status
    assert info.value.index is None
    assert fake_server.embedding_request_count == 1  # neither retried nor split
    assert clock.sleeps == []


def test_a_rejected_batch_is_split_to_name_the_bad_input(make_client: MakeClient) -> None:
    # The server refuses inputs over 50 tokens; the client lets them through (its limit is high).
    with FakeSGLang(dim=16, max_input_tokens=50) as server:
        client = make_client(config_for(server, max_input_tokens=10_000))
        texts = [f"fine text {i}" for i in range(8)]
        texts[5] = "far too long " * 40

        with pytest.raises(EmbeddingRejected) as info:
            client.embed_documents(texts)

        requests = server.embedding_request_count
    assert info.value.index == 5
    assert info.value.status_code == 400
    assert "input 5" in str(info.value)
    assert "exceeds the maximum allowed length" in str(info.value)
    assert requests <= 1 + 2 * 3  # bisection: at most two requests per level


def test_split_names_the_index_in_the_callers_list_despite_duplicates(
    make_client: MakeClient,
) -> None:
    with FakeSGLang(dim=16, max_input_tokens=50) as server:
        client = make_client(config_for(server, max_input_tokens=10_000))
        texts = ["a", "a", "b", "long " * 60, "b"]
        with pytest.raises(EmbeddingRejected) as info:
            client.embed_documents(texts)
    assert info.value.index == 3


def test_dropped_connections_are_retried(fake_server: FakeSGLang, make_client: MakeClient) -> None:
    client = make_client(config_for(fake_server))
    fake_server.drop_next(times=2)
    vectors = client.embed_documents(["Dune"])
    assert fake_server.embedding_request_count == 3
    np.testing.assert_allclose(vectors[0], fake_vector("Dune", 64), atol=1e-6)


def test_read_timeouts_are_retried(fake_server: FakeSGLang, make_client: MakeClient) -> None:
    client = make_client(config_for(fake_server, timeout=0.1))
    fake_server.delay_next(0.4)
    vectors = client.embed_documents(["Dune"])
    assert fake_server.embedding_request_count == 2
    assert vectors.shape == (1, 64)


def test_timeouts_end_in_embedding_timeout(
    fake_server: FakeSGLang, make_client: MakeClient
) -> None:
    policy = RetryPolicy(max_attempts=2, initial_wait=0, max_wait=0)
    client = make_client(config_for(fake_server, timeout=0.1, retry=policy))
    fake_server.delay_next(0.3, times=2)
    with pytest.raises(EmbeddingTimeout):
        client.embed_documents(["Dune"])


def test_the_deadline_bounds_the_whole_call(
    fake_server: FakeSGLang, make_client: MakeClient, clock: FakeClock
) -> None:
    # Retry-After 20 s twice would need 40 s; the deadline is 30 s on the fake clock.
    client = make_client(config_for(fake_server, deadline=30.0))
    fake_server.fail_next(503, times=5, retry_after=20)

    with pytest.raises(EmbeddingUnavailable):
        client.embed_documents(["Dune"])

    assert sum(clock.sleeps) <= 30.0
    assert fake_server.embedding_request_count == 2


def test_the_deadline_also_bounds_a_slow_request(make_client: MakeClient) -> None:
    with FakeSGLang(dim=16) as server:
        client = make_client(config_for(server, deadline=0.2, timeout=5.0))
        server.delay_next(0.6)
        with pytest.raises(EmbeddingTimeout):
            client.embed_documents(["Dune"])


# -- fallback -----------------------------------------------------------------------------
def test_fallback_endpoint_takes_over_when_the_first_is_down(make_client: MakeClient) -> None:
    with FakeSGLang(dim=64) as backup:
        client = make_client(config_for(dead_url(), backup, retry=RetryPolicy(max_attempts=2)))
        vectors = client.embed_documents(["Dune"])
        assert backup.embedding_request_count == 1
    np.testing.assert_allclose(vectors[0], fake_vector("Dune", 64), atol=1e-6)


def test_endpoints_are_tried_in_order(make_client: MakeClient, clock: FakeClock) -> None:
    with FakeSGLang(dim=16) as first, FakeSGLang(dim=16) as second:
        client = make_client(config_for(first, second, retry=RetryPolicy(max_attempts=2)))
        client.embed_documents(["a"])
        assert (first.embedding_request_count, second.embedding_request_count) == (1, 0)

        first.fail_next(503, times=2)
        client.embed_documents(["b"])
        assert (first.embedding_request_count, second.embedding_request_count) == (3, 1)


def test_every_endpoint_down_is_unavailable(make_client: MakeClient) -> None:
    client = make_client(config_for(dead_url(), dead_url(), retry=RetryPolicy(max_attempts=2)))
    with pytest.raises(EmbeddingUnavailable, match="no embedding endpoint could answer"):
        client.embed_documents(["Dune"])


def test_breaker_opens_then_probes_half_open(make_client: MakeClient, clock: FakeClock) -> None:
    policy = RetryPolicy(max_attempts=2, jitter=False, breaker_threshold=2, breaker_cooldown=60)
    with FakeSGLang(dim=16) as primary, FakeSGLang(dim=16) as backup:
        client = make_client(config_for(primary, backup, retry=policy))

        primary.fail_next(503, times=2)
        client.embed_documents(["a"])  # two failures on primary: its breaker opens
        assert (primary.embedding_request_count, backup.embedding_request_count) == (2, 1)

        client.embed_documents(["b"])  # open: primary skipped without a request
        assert (primary.embedding_request_count, backup.embedding_request_count) == (2, 2)

        clock.advance(61)
        primary.fail_next(503, times=1)
        client.embed_documents(["c"])  # half-open: one probe fails, open again at once
        assert (primary.embedding_request_count, backup.embedding_request_count) == (3, 3)

        client.embed_documents(["d"])  # still open
        assert primary.embedding_request_count == 3

        clock.advance(61)
        client.embed_documents(["e"])  # the probe succeeds: closed again
        client.embed_documents(["f"])
        assert (primary.embedding_request_count, backup.embedding_request_count) == (5, 4)


def test_all_breakers_open_fails_fast(make_client: MakeClient, clock: FakeClock) -> None:
    policy = RetryPolicy(max_attempts=1, breaker_threshold=1, breaker_cooldown=30)
    with FakeSGLang(dim=16) as server:
        client = make_client(config_for(server, retry=policy))
        server.fail_next(503)
        with pytest.raises(EmbeddingUnavailable):
            client.embed_documents(["a"])
        with pytest.raises(EmbeddingUnavailable, match="cooling down"):
            client.embed_documents(["a"])
        assert server.embedding_request_count == 1


@pytest.mark.parametrize("backup_options", [{"model_path": "BAAI/bge-m3", "dim": 64}, {"dim": 32}])
def test_a_fallback_serving_another_model_or_width_is_refused(
    make_client: MakeClient, backup_options: dict[str, object]
) -> None:
    with FakeSGLang(dim=64) as primary, FakeSGLang(**backup_options) as backup:  # type: ignore[arg-type]
        client = make_client(config_for(primary, backup, retry=RetryPolicy(max_attempts=1)))
        client.embed_documents(["a"])
        primary.stop()

        with pytest.raises(IncompatibleModelError, match="not comparable"):
            client.embed_documents(["b"])


def test_a_server_that_changes_model_is_refused(
    fake_server: FakeSGLang, make_client: MakeClient
) -> None:
    client = make_client(config_for(fake_server))
    client.embed_documents(["a"])
    fake_server.set_model("Qwen/Qwen3-Embedding-8B")
    with pytest.raises(IncompatibleModelError, match="Qwen3-Embedding-8B"):
        client.embed_documents(["b"])


def test_every_error_is_an_embedding_error(
    fake_server: FakeSGLang, make_client: MakeClient
) -> None:
    client = make_client(config_for(fake_server, retry=RetryPolicy(max_attempts=1)))
    for arm in (
        lambda: fake_server.fail_next(503),
        lambda: fake_server.fail_next(400),
        fake_server.malformed_next,
    ):
        arm()
        with pytest.raises(EmbeddingError) as info:
            client.embed_documents(["x"])
        assert not isinstance(info.value, openai.OpenAIError | tenacity.RetryError)
