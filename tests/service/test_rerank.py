"""``rerank`` on ``/v1/search`` and ``/v1/recommendations``: a fake SGLang reranker on its own
port orders the first stage's candidates; when it is down the results keep that order, with
``reranked`` false and a metric counting the fallback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bookrec.client.testing import FakeSGLang, fake_rerank_score
from bookrec.recommender import (
    READER_RERANK_INSTRUCTION,
    SEARCH_RERANK_INSTRUCTION,
    book_text,
    load_catalog,
)
from tests.service.conftest import Service

StartService = Callable[..., Service]


def results(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["results"]
    return found


def by_fake_score(query: str, ids: list[str], catalog: Path, instruction: str) -> list[str]:
    books = load_catalog(catalog)
    scores = {i: fake_rerank_score(query, book_text(books.book(i)), instruction) for i in ids}
    return sorted(ids, key=lambda i: (-scores[i], ids.index(i)))


def test_search_and_recommendations_rerank(
    start_service: StartService, embedding: FakeSGLang, built: tuple[Path, Path]
) -> None:
    catalog, _ = built
    with FakeSGLang(reranker=True) as reranker:
        service = start_service("--rerank-url", reranker.base_url, embedding=embedding)
        http = service.http
        first = results(http.get("/v1/search", params={"q": "topic 3", "k": 30}))

        response = http.get("/v1/search", params={"q": "topic 3", "k": 5, "rerank": "true"})

        body = response.json()
        assert body["reranked"] is True and body["degraded"] is False
        assert body["query"]["rerank"] is True
        (sent,) = reranker.rerank_requests
        assert sent["query"] == "topic 3" and sent["instruct"] == SEARCH_RERANK_INSTRUCTION
        candidates = [r["id"] for r in first]
        assert len(sent["documents"]) == len(candidates)  # fewer books than 100 candidates
        expected = by_fake_score("topic 3", candidates, catalog, SEARCH_RERANK_INSTRUCTION)
        assert [r["id"] for r in results(response)] == expected[:5]
        assert all(r["reranked"] for r in body["results"])
        assert all(r["reason"] == "matches 'topic 3' (reranked)" for r in body["results"])

        plain = http.get("/v1/search", params={"q": "topic 3", "k": 5}).json()
        assert plain["reranked"] is False and plain["query"]["rerank"] is False
        assert reranker.rerank_request_count == 1

        reader = http.post(
            "/v1/recommendations", json={"liked": ["b001"], "k": 4, "rerank": True}
        ).json()
        assert reader["reranked"] is True and reader["query"]["rerank"] is True
        sent = reranker.rerank_requests[-1]
        assert sent["instruct"] == READER_RERANK_INSTRUCTION
        assert sent["query"].startswith("Liked: Book number 1 (A summary of book 1")
        assert "b001" not in [r["id"] for r in reader["results"]]

        reranker.stop()
        down = http.get("/v1/search", params={"q": "topic 3", "k": 5, "rerank": "true"})
        assert [r["id"] for r in results(down)] == [r["id"] for r in first[:5]]
        assert down.json()["reranked"] is False
        assert not any(r["reranked"] for r in results(down))
        metrics = http.get("/metrics").text
        assert 'bookrec_rerank_fallbacks_total{route="/v1/search"} 1.0' in metrics
        assert "reranker unavailable" in service.stderr()


def test_candidates_and_instruction_options(
    start_service: StartService, embedding: FakeSGLang
) -> None:
    with FakeSGLang(reranker=True) as reranker:
        service = start_service(
            "--rerank-url", reranker.base_url, "--rerank-candidates", "7",
            "--rerank-instruction", "Judge these books",
            embedding=embedding,
        )  # fmt: skip
        params = {"q": "topic 1", "k": 3, "rerank": "1"}
        assert len(results(service.http.get("/v1/search", params=params))) == 3
        (sent,) = reranker.rerank_requests
        assert len(sent["documents"]) == 7 and sent["instruct"] == "Judge these books"


def test_the_schema_documents_rerank(service: Service) -> None:
    schema = service.http.get("/openapi.json").json()
    search = schema["paths"]["/v1/search"]["get"]["parameters"]
    assert "rerank" in {p["name"] for p in search}
    request = schema["components"]["schemas"]["RecommendationRequest"]["properties"]
    assert request["rerank"]["default"] is False
    assert "reranked" in schema["components"]["schemas"]["Results"]["properties"]
