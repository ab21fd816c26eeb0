"""The second stage: first-stage candidates rescored by a reranker over real HTTP.

The reranker is the embedding client talking to a fake SGLang reranker, whose scores are
:func:`fake_rerank_score` of the query and each book's text, so each test knows the order.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import numpy as np
import pytest

from bookrec.client import ClientConfig, EmbeddingClient, Endpoint, RetryPolicy
from bookrec.client.testing import FakeSGLang, fake_rerank_score
from bookrec.recommender import (
    READER_RERANK_INSTRUCTION,
    SEARCH_RERANK_INSTRUCTION,
    Book,
    Catalog,
    Recommender,
    RerankSettings,
    VectorStore,
    book_text,
    reader_query,
)
from tests.recommender.conftest import FakeEmbedder, MakeStore
from tests.recommender.test_recommend import BOOKS, IDENTITY, QUERIES, VECTORS, ids


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def client_for(url: str) -> EmbeddingClient:
    return EmbeddingClient(
        ClientConfig(
            endpoints=(Endpoint("http://127.0.0.1:9/v1"),),  # never called: queries are fakes
            rerank_endpoints=(Endpoint(url),),
            retry=RetryPolicy(max_attempts=1),
            timeout=5.0,
        )
    )


@pytest.fixture
def reranker() -> Iterator[FakeSGLang]:
    with FakeSGLang(reranker=True) as server:
        yield server


@pytest.fixture
def catalog() -> Catalog:
    return Catalog(BOOKS)


@pytest.fixture
def store(catalog: Catalog, make_store: MakeStore) -> VectorStore:
    return make_store(catalog, list(VECTORS), np.array(list(VECTORS.values())), IDENTITY)


@pytest.fixture
def client(reranker: FakeSGLang) -> Iterator[EmbeddingClient]:
    with client_for(reranker.base_url) as c:
        yield c


def make_rec(
    catalog: Catalog, store: VectorStore, reranker: object, **settings: object
) -> Recommender:
    return Recommender(
        catalog,
        store,
        FakeEmbedder(3, vectors=QUERIES),
        reranker=reranker,  # type: ignore[arg-type]
        rerank_settings=RerankSettings(**settings),  # type: ignore[arg-type]
    )


def by_fake_score(query: str, books: list[Book], instruction: str) -> list[str]:
    scored = [
        (-fake_rerank_score(query, book_text(b), instruction), i) for i, b in enumerate(books)
    ]
    return [books[i].id for _, i in sorted(scored)]


def test_search_is_ordered_by_the_rerankers_scores(
    catalog: Catalog, store: VectorStore, client: EmbeddingClient, reranker: FakeSGLang
) -> None:
    rec = make_rec(catalog, store, client)
    first = rec.search("village life", k=8)

    results = rec.search("village life", k=3, rerank=True)

    (body,) = reranker.rerank_requests
    assert body["query"] == "village life"
    assert body["instruct"] == SEARCH_RERANK_INSTRUCTION
    # The candidates: the first stage's books in its order (one edition of each work).
    candidates = [catalog.book(i) for i in ids(first)]
    assert body["documents"] == [book_text(b) for b in candidates]
    assert ids(results) == by_fake_score("village life", candidates, SEARCH_RERANK_INSTRUCTION)[:3]
    for r in results:
        assert r.reranked and not r.degraded
        assert r.reason == "matches 'village life' (reranked)"
        assert r.score == pytest.approx(
            fake_rerank_score("village life", book_text(r.book), SEARCH_RERANK_INSTRUCTION)
        )
        assert r.to_dict()["reranked"] is True


def test_only_the_first_stage_candidates_are_reranked(
    catalog: Catalog, store: VectorStore, client: EmbeddingClient, reranker: FakeSGLang
) -> None:
    rec = make_rec(catalog, store, client, candidates=3)
    first = ids(rec.search("alpha-like", k=3))

    results = rec.search("alpha-like", k=2, rerank=True)

    (body,) = reranker.rerank_requests
    assert body["documents"] == [book_text(catalog.book(i)) for i in first]
    candidates = [catalog.book(i) for i in first]
    assert ids(results) == by_fake_score("alpha-like", candidates, SEARCH_RERANK_INSTRUCTION)[:2]


def test_k_above_the_candidates_reranks_k_books(
    catalog: Catalog, store: VectorStore, client: EmbeddingClient, reranker: FakeSGLang
) -> None:
    rec = make_rec(catalog, store, client, candidates=2)
    results = rec.search("alpha-like", k=4, rerank=True)
    assert len(results) == 4
    assert len(reranker.rerank_requests[0]["documents"]) == 4


def test_a_reader_is_reranked_with_wishes_and_liked_books(
    catalog: Catalog, store: VectorStore, client: EmbeddingClient, reranker: FakeSGLang
) -> None:
    rec = make_rec(catalog, store, client, reader_instruction="Judge books for this reader")
    first = rec.recommend(liked=["c"], preferences=["village life"], k=8)

    results = rec.recommend(liked=["c"], preferences=["village life"], k=3, rerank=True)

    (body,) = reranker.rerank_requests
    assert body["query"] == reader_query(["village life"], [catalog.book("c")])
    assert body["query"].startswith("Looking for: village life\nLiked: Gamma (A quiet village")
    assert body["instruct"] == "Judge books for this reader"
    candidates = [catalog.book(i) for i in ids(first)]
    expected = by_fake_score(body["query"], candidates, "Judge books for this reader")
    assert ids(results) == expected[:3]
    assert "c" not in ids(results)  # the liked book stays out
    assert all(r.reranked and r.reason.endswith(" (reranked)") for r in results)
    assert {r.reason.removesuffix(" (reranked)") for r in results} <= {
        f.reason for f in rec.recommend(liked=["c"], preferences=["village life"], k=8)
    }


def test_the_default_reader_instruction(
    catalog: Catalog, store: VectorStore, client: EmbeddingClient, reranker: FakeSGLang
) -> None:
    make_rec(catalog, store, client).recommend(history=["a1"], k=2, rerank=True)
    (body,) = reranker.rerank_requests
    assert body["instruct"] == READER_RERANK_INSTRUCTION
    assert body["query"] == "Read: Alpha (A voyage among the stars.)"


def test_caps_and_diversity_hold_after_reranking(
    catalog: Catalog, store: VectorStore, client: EmbeddingClient
) -> None:
    rec = make_rec(catalog, store, client)
    results = rec.search("dragons moons", k=4, rerank=True, max_per_author=1, diversity=0.5)
    authors = [a for r in results for a in r.book.authors]
    assert len(authors) == len(set(authors))
    assert all(r.reranked for r in results)


def test_reranker_down_gives_the_first_stage_flagged(
    catalog: Catalog, store: VectorStore, caplog: pytest.LogCaptureFixture
) -> None:
    with client_for(dead_url()) as down:
        rec = make_rec(catalog, store, down)
        first = rec.search("village life", k=3)
        with caplog.at_level(logging.WARNING):
            results = rec.search("village life", k=3, rerank=True)

    assert ids(results) == ids(first)
    assert [r.score for r in results] == [r.score for r in first]
    assert not any(r.reranked for r in results)
    assert all(r.reason == "matches 'village life'" for r in results)
    assert "reranker unavailable" in caplog.text


def test_reader_with_the_reranker_down_gives_the_first_stage(
    catalog: Catalog, store: VectorStore, reranker: FakeSGLang, client: EmbeddingClient
) -> None:
    rec = make_rec(catalog, store, client)
    first = rec.recommend(liked=["a1"], k=3)
    reranker.fail_next(503)
    results = rec.recommend(liked=["a1"], k=3, rerank=True)
    assert ids(results) == ids(first)
    assert not any(r.reranked for r in results)


def test_no_reranker_configured_keeps_the_first_stage(
    catalog: Catalog, store: VectorStore, caplog: pytest.LogCaptureFixture
) -> None:
    rec = make_rec(catalog, store, None)
    with caplog.at_level(logging.WARNING):
        results = rec.search("village life", k=3, rerank=True)
    assert ids(results) == ids(rec.search("village life", k=3))
    assert not any(r.reranked for r in results)
    assert "no reranker is configured" in caplog.text


def test_reader_query_shortens_and_falls_back_to_history() -> None:
    long = Book("x", "Long", (), "word " * 200)
    query = reader_query(["  cosy   crime "], [long])
    assert query.startswith("Looking for: cosy crime\nLiked: Long (word word")
    assert query.endswith("…)")
    assert len(query) < 400
    assert reader_query([], [], [Book("y", "Read one", ())]) == "Read: Read one"
    many = [Book(str(i), f"T{i}", ()) for i in range(9)]
    assert reader_query([], many).count("Liked:") == 5


@pytest.mark.parametrize(
    "settings", [{"candidates": 0}, {"search_instruction": " "}, {"reader_instruction": ""}]
)
def test_bad_settings_are_refused(settings: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RerankSettings(**settings)  # type: ignore[arg-type]
