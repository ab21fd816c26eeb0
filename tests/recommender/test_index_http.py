"""Index builds through the real client against the fake SGLang server: request counts,
model mismatch, and a server that dies mid-build."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bookrec.client import ClientConfig, EmbeddingClient, Endpoint, RetryPolicy
from bookrec.client.testing import FakeSGLang, fake_vector
from bookrec.recommender import (
    Catalog,
    IndexBuildError,
    IndexMismatchError,
    Recommender,
    VectorIndex,
    book_text,
    build_index,
)
from tests.recommender.conftest import make_books

FAST_FAIL = RetryPolicy(max_attempts=1, initial_wait=0.0, max_wait=0.0)


def _client(server: FakeSGLang, **options: object) -> EmbeddingClient:
    config = ClientConfig(
        endpoints=(Endpoint(server.base_url),),
        batch_size=5,
        max_concurrency=1,
        retry=FAST_FAIL,
        timeout=5.0,
    )
    return EmbeddingClient(config.with_options(**options))


@pytest.fixture
def server() -> Iterator[FakeSGLang]:
    with FakeSGLang(dim=32) as srv:
        yield srv


def test_requests_only_for_new_and_changed_books(tmp_path: Path, server: FakeSGLang) -> None:
    books = make_books(20)
    with _client(server) as client:
        index, report = build_index(tmp_path, Catalog(books), client)
        assert report.embedded == 20
        assert sorted(server.embedded_texts) == sorted(book_text(b) for b in books)
        first = server.embedding_request_count
        assert first == 4  # batches of 5
        np.testing.assert_allclose(
            index.vector("b007"), fake_vector(book_text(books[7]), 32), atol=1e-6
        )
        assert index.identity.model == server.model_path and index.identity.dimensions == 32

        server.reset()
        _, report = build_index(tmp_path, Catalog(books), client)
        assert report.unchanged and server.embedding_request_count == 0

        renamed = dataclasses.replace(books[3], authors=("New",), tags=())
        changed = [*books[:3], renamed, *books[4:], *make_books(21)[20:]]
        _, report = build_index(tmp_path, Catalog(changed), client)
        assert sorted(server.embedded_texts) == sorted(
            [book_text(changed[3]), book_text(changed[20])]
        )
        assert server.embedding_request_count == 1
        assert (report.embedded, report.reused) == (2, 19)

        # Queries go through the same client, with the instruction, and need no rebuild.
        server.reset()
        results = Recommender(Catalog(changed), VectorIndex.open(tmp_path), client).search("x")
        assert len(results) == 10 and server.embedded_texts[0].startswith("Instruct: ")


def test_a_server_with_another_model_is_refused(tmp_path: Path, server: FakeSGLang) -> None:
    with _client(server) as client:
        build_index(tmp_path, Catalog(make_books(6)), client)
    server.set_model("Qwen/Qwen3-Embedding-4B")
    with _client(server) as client, pytest.raises(IndexMismatchError, match="Qwen3-Embedding-4B"):
        build_index(tmp_path, Catalog(make_books(8)), client)
    server.set_model("Qwen/Qwen3-Embedding-0.6B")
    narrow = _client(server, dimensions=48)  # known without a request: no call is made
    server.reset()
    with narrow, pytest.raises(IndexMismatchError, match="configured for 48 dimensions"):
        VectorIndex.open(tmp_path, embedder=narrow)
    with _client(server, dimensions=48) as again, pytest.raises(IndexMismatchError):
        build_index(tmp_path, Catalog(make_books(8)), again)
    assert server.embedding_request_count == 0
    assert len(VectorIndex.open(tmp_path)) == 6


def test_server_dies_mid_build_and_the_rerun_embeds_only_the_rest(
    tmp_path: Path, server: FakeSGLang
) -> None:
    books = make_books(40)

    def stop_halfway(done: int, total: int) -> None:
        if done == 20:
            server.stop()

    with _client(server) as client, pytest.raises(IndexBuildError) as err:
        build_index(tmp_path, Catalog(books), client, chunk_size=10, progress=stop_halfway)
    assert (err.value.embedded, err.value.remaining) == (20, 20)
    assert "run the build again" in str(err.value)
    sent_before = set(server.embedded_texts)
    assert len(sent_before) == 20

    server.start()
    server.reset()
    with _client(server) as client:
        index, report = build_index(tmp_path, Catalog(books), client, chunk_size=10)
    assert sorted(server.embedded_texts) == sorted(
        book_text(b) for b in books if book_text(b) not in sent_before
    )
    assert (report.embedded, report.resumed, report.total) == (20, 20, 40)
    for book in books:
        np.testing.assert_allclose(
            index.vector(book.id), fake_vector(book_text(book), 32), atol=1e-6
        )
