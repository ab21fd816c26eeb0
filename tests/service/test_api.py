"""The HTTP API over real HTTP: every endpoint, every error of the contract, live updates,
API keys, two workers on one index, graceful shutdown, a PostgreSQL store."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bookrec.client.testing import FakeSGLang
from tests.service.conftest import BOOKS, DIM, Service, bookrec, clean_env

PROBLEM = "application/problem+json"
TYPES = "https://bookrec.dev/problems/"

StartService = Callable[..., Service]


def problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["type"] == TYPES + slug and body["status"] == status
    assert body["title"] and isinstance(body["detail"], str)
    return body


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["id"] for r in response.json()["results"]]


def record(title: str, **extra: Any) -> dict[str, Any]:
    return {"title": title, "authors": ["New Author"], "summary": f"about {title}", **extra}


# -- reading ----------------------------------------------------------------------------------


def test_ready_line_health_and_readiness(service: Service, embedding: FakeSGLang) -> None:
    assert f"({BOOKS} books, " in service.line and embedding.base_url in service.line
    assert service.url.startswith("http://127.0.0.1:")
    assert service.http.get("/healthz").json() == {"status": "ok"}
    ready = service.http.get("/readyz").json()
    assert ready == {
        "status": "ready",
        "books": ready["books"],
        "model": embedding.model_path,
        "dimensions": DIM,
        "embedding": "ok",
    }
    assert ready["books"] >= BOOKS


def test_get_book(service: Service) -> None:
    response = service.http.get("/v1/books/b003")
    assert response.status_code == 200
    book = response.json()["book"]
    assert book["id"] == "b003" and book["title"] == "Book number 3"
    assert "series" not in book  # Book.to_dict(): absent fields stay absent
    problem(service.http.get("/v1/books/nope"), 404, "unknown-book")


def test_similar_with_filters(service: Service) -> None:
    response = service.http.get("/v1/books/b001/similar", params={"k": 4})
    body = response.json()
    assert body["degraded"] is False and body["query"]["similar_to"] == "b001"
    assert [r["rank"] for r in body["results"]] == [1, 2, 3, 4]
    assert "b001" not in ids(response)
    result = body["results"][0]
    assert set(result) == {
        "rank", "id", "title", "authors", "summary", "year", "language", "tags", "series",
        "rating", "score", "reason", "degraded", "reranked",
    }  # fmt: skip
    filtered = service.http.get(
        "/v1/books/b001/similar",
        params=[("k", "20"), ("language", "zh"), ("year_min", "1905"), ("max_per_author", "1")],
    ).json()["results"]
    assert filtered and all(r["language"] == "zh" and r["year"] >= 1905 for r in filtered)
    authors = [r["authors"][0] for r in filtered]
    assert len(authors) == len(set(authors))
    tagged = service.http.get(
        "/v1/books/b001/similar", params=[("tag", "topic-2"), ("tag", "topic-3")]
    ).json()["results"]
    assert tagged and all(set(r["tags"]) & {"topic-2", "topic-3"} for r in tagged)
    problem(service.http.get("/v1/books/nope/similar"), 404, "unknown-book")


def test_recommendations(service: Service) -> None:
    response = service.http.post(
        "/v1/recommendations",
        json={"liked": ["b001", "b002"], "history": ["b003"], "k": 5, "strategy": "best"},
    )
    found = ids(response)
    assert len(found) == 5 and not {"b001", "b002", "b003"} & set(found)
    assert response.json()["query"]["strategy"] == "best"
    with_prefs = service.http.post(
        "/v1/recommendations",
        json={"preferences": ["a book about topic 3"], "disliked": ["b004"], "k": 3},
    ).json()
    assert len(with_prefs["results"]) == 3 and with_prefs["degraded"] is False
    assert "b004" not in [r["id"] for r in with_prefs["results"]]
    included = service.http.post(
        "/v1/recommendations", json={"liked": ["b001"], "exclude_read": False, "k": BOOKS}
    )
    assert "b001" in ids(included)


def test_search(service: Service) -> None:
    response = service.http.get("/v1/search", params={"q": "topic 3", "k": 3, "diversity": 0.5})
    body = response.json()
    assert len(ids(response)) == 3 and body["degraded"] is False
    assert body["query"]["text"] == "topic 3"
    assert all("topic 3" in r["reason"] for r in body["results"])


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "field"),
    [
        ("GET", "/v1/books/b001/similar", {"params": {"k": 0}}, "query.k"),
        ("GET", "/v1/books/b001/similar", {"params": {"k": "ten"}}, "query.k"),
        ("GET", "/v1/books/b001/similar", {"params": {"k": 101}}, "query.k"),
        ("GET", "/v1/books/b001/similar", {"params": {"diversity": 2}}, "query.diversity"),
        ("GET", "/v1/books/b001/similar", {"params": {"diversity": "nan"}}, "query.diversity"),
        (
            "GET",
            "/v1/books/b001/similar",
            {"params": {"max_per_author": 0}},
            "query.max_per_author",
        ),
        ("GET", "/v1/books/b001/similar", {"params": {"min_rating": 9}}, "query.min_rating"),
        (
            "GET",
            "/v1/books/b001/similar",
            {"params": {"year_min": 2000, "year_max": 1990}},
            "query.year_min",
        ),
        ("GET", "/v1/search", {}, "query.q"),
        ("GET", "/v1/search", {"params": {"q": ""}}, "query.q"),
        ("GET", "/v1/search", {"params": {"q": "   "}}, "query.q"),
        ("GET", "/v1/search", {"params": {"q": "x" * 2001}}, "query.q"),
        ("POST", "/v1/recommendations", {"json": {"liked": ["b1"], "k": 0}}, "body.k"),
        ("POST", "/v1/recommendations", {"json": {"liked": ["b1"], "k": 500}}, "body.k"),
        ("POST", "/v1/recommendations", {"json": {"liked": "b001"}}, "body.liked"),
        (
            "POST",
            "/v1/recommendations",
            {"json": {"liked": ["b001"], "strategy": "x"}},
            "body.strategy",
        ),
        (
            "POST",
            "/v1/recommendations",
            {"json": {"liked": ["b001"], "diversity": -1}},
            "body.diversity",
        ),
        (
            "POST",
            "/v1/recommendations",
            {"json": {"liked": ["b001"], "filters": {"year_min": 2000, "year_max": 1}}},
            "body.filters.year_min",
        ),
        (
            "POST",
            "/v1/recommendations",
            {"json": {"liked": ["b001"], "filters": {"languages": ["en"]}}},
            "body.filters.languages",
        ),
        ("POST", "/v1/recommendations", {"json": {"likes": ["b001"]}}, "body.likes"),
        ("POST", "/v1/recommendations", {"json": ["b001"]}, "body"),
        (
            "POST",
            "/v1/recommendations",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            "body",
        ),
        ("PUT", "/v1/books/x1", {"json": {"summary": "no title"}}, "body.title"),
        ("PUT", "/v1/books/x1", {"json": {"title": 5}}, "body.title"),
        ("PUT", "/v1/books/x1", {"json": {"title": "t", "year": "soon"}}, "body.year"),
        ("PUT", "/v1/books/x1", {"json": {"title": "   "}}, "body.title"),
        ("PUT", "/v1/books/x1", {"json": {"title": "t", "id": "x2"}}, "body.id"),
    ],
)
def test_invalid_requests_are_422_naming_the_field(
    service: Service, method: str, path: str, kwargs: dict[str, Any], field: str
) -> None:
    body = problem(service.http.request(method, path, **kwargs), 422, "invalid-request")
    assert field in [e["field"] for e in body["errors"]], body


def test_empty_profile_unknown_ids_routes_and_methods(service: Service) -> None:
    problem(service.http.post("/v1/recommendations", json={}), 422, "empty-profile")
    empty = service.http.post("/v1/recommendations", json={"preferences": ["  "]})
    problem(empty, 422, "empty-profile")
    unknown = service.http.post("/v1/recommendations", json={"liked": ["b001", "zzz"]})
    assert "zzz" in problem(unknown, 404, "unknown-book")["detail"]
    problem(service.http.get("/v2/nothing"), 404, "not-found")
    problem(service.http.post("/v1/search"), 405, "method-not-allowed")
    problem(service.http.delete("/v1/books/never-there"), 404, "unknown-book")


def test_bodies_over_the_limit_are_413(service: Service) -> None:
    big = {"preferences": ["x" * 1000] * 1100}  # about 1.1 MB
    problem(service.http.post("/v1/recommendations", json=big), 413, "payload-too-large")

    def chunks() -> Any:  # no Content-Length: a chunked body, counted as it streams
        yield b'{"preferences": ["'
        for _ in range(1200):
            yield b"y" * 1000
        yield b'"]}'

    streamed = service.http.post(
        "/v1/recommendations", content=chunks(), headers={"content-type": "application/json"}
    )
    problem(streamed, 413, "payload-too-large")
    assert service.http.get("/healthz").status_code == 200


# -- live updates -----------------------------------------------------------------------------


def test_a_put_book_is_recommended_then_a_deleted_one_never(service: Service) -> None:
    http = service.http
    created = http.put("/v1/books/live-1", json=record("Live one", tags=["fresh"], year=2024))
    assert created.status_code == 201, created.text
    assert created.json() == {
        "book": {
            "id": "live-1",
            "title": "Live one",
            "authors": ["New Author"],
            "summary": "about Live one",
            "tags": ["fresh"],
            "year": 2024,
        },
        "created": True,
    }
    assert http.get("/v1/books/live-1").json()["book"]["title"] == "Live one"
    everything = {"k": 100}
    assert "live-1" in ids(http.get("/v1/books/b001/similar", params=everything))
    assert "live-1" in ids(http.post("/v1/recommendations", json={"liked": ["b002"], "k": 100}))
    assert ids(http.get("/v1/books/b001/similar", params={"tag": "fresh"})) == ["live-1"]
    assert len(ids(http.get("/v1/books/live-1/similar", params={"k": 3}))) == 3

    again = http.put("/v1/books/live-1", json=record("Live one, revised", id="live-1"))
    assert again.status_code == 200 and again.json()["created"] is False
    assert http.get("/v1/books/live-1").json()["book"]["title"] == "Live one, revised"

    assert http.delete("/v1/books/live-1").status_code == 204
    problem(http.get("/v1/books/live-1"), 404, "unknown-book")
    assert "live-1" not in ids(http.get("/v1/books/b001/similar", params=everything))
    assert "live-1" not in ids(http.get("/v1/search", params={"q": "Live one", "k": 100}))
    liked = http.post("/v1/recommendations", json={"liked": ["b002"], "k": 100})
    assert "live-1" not in ids(liked)
    problem(http.post("/v1/recommendations", json={"liked": ["live-1"]}), 404, "unknown-book")
    problem(http.delete("/v1/books/live-1"), 404, "unknown-book")


def test_metrics_are_labelled_by_route_template(service: Service) -> None:
    service.http.get("/v1/books/b005/similar", params={"k": 2})
    service.http.get("/v1/books/b006")
    text = service.http.get("/metrics").text
    assert (
        'bookrec_http_requests_total{method="GET",route="/v1/books/{id}/similar",status="200"}'
        in text
    )
    assert "bookrec_http_request_duration_seconds_bucket" in text
    assert "bookrec_embedding_requests_total" in text and "bookrec_embedding_texts_total" in text
    assert "bookrec_embedding_cache_hits_total" in text
    assert "b005" not in text and "b006" not in text


def test_openapi_documents_the_problems(service: Service) -> None:
    spec = service.http.get("/openapi.json").json()
    assert {
        "/v1/books/{id}", "/v1/books/{id}/similar", "/v1/recommendations", "/v1/search",
        "/healthz", "/readyz",
    } <= set(spec["paths"])  # fmt: skip
    put = spec["paths"]["/v1/books/{id}"]["put"]
    assert PROBLEM in put["responses"]["422"]["content"]
    assert "201" in put["responses"] and "Problem" in spec["components"]["schemas"]
    assert service.http.get("/docs").status_code == 200


def test_the_page_and_its_files(service: Service) -> None:
    page = service.http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and page.headers["x-content-type-options"] == "nosniff"
    for name in ("app.js", "style.css"):
        assert service.http.get(f"/static/{name}").status_code == 200
    problem(service.http.get("/static/none.js"), 404, "not-found")


def test_docs_load_swagger_ui_from_the_service(service: Service) -> None:
    """/docs links only the service's own copy of Swagger UI's files, never a CDN."""
    docs = service.http.get("/docs")
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    links = re.findall(r'(?:src|href)="([^"]*)"', docs.text)
    assert sorted(links) == [
        "/docs/assets/favicon-32x32.png",
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
    ], links
    assert "://" not in docs.text, docs.text
    # ReDoc, which would load from a CDN, is not served.
    assert service.http.get("/redoc").status_code == 404
    policy = docs.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self' 'sha256-" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert docs.headers["x-content-type-options"] == "nosniff"
    for name, kind in (
        ("swagger-ui-bundle.js", "text/javascript"),
        ("swagger-ui.css", "text/css"),
        ("favicon-32x32.png", "image/png"),
    ):
        asset = service.http.get(f"/docs/assets/{name}")
        assert asset.status_code == 200, name
        assert asset.headers["content-type"].split(";")[0] == kind, asset.headers
        assert len(asset.content) > 100 and "etag" in asset.headers
    assert b"SwaggerUIBundle" in service.http.get("/docs/assets/swagger-ui-bundle.js").content
    # Only Swagger UI's files: not the rest of the package's folder.
    for name in ("__init__.py", "none.js", "../__init__.py"):
        problem(service.http.get(f"/docs/assets/{name}"), 404, "not-found")


# -- configurations ---------------------------------------------------------------------------


def test_api_keys(start_service: StartService, embedding: FakeSGLang, tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("# staff\nfile-writer:write  # the editor\n\n", encoding="utf-8")
    service = start_service(
        "--api-keys-file", str(keys_file),
        embedding=embedding,
        env={"BOOKREC_SERVE_API_KEYS": "reader-key, writer-key:write"},
    )  # fmt: skip
    http = service.http

    def auth(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    for headers in ({}, auth("wrong"), {"Authorization": "Basic cmVhZGVyLWtleQ=="}):
        missing = http.get("/v1/books/b001", headers=headers)
        problem(missing, 401, "unauthorized")
        assert missing.headers["www-authenticate"] == "Bearer"
    assert http.get("/v1/books/b001", headers=auth("reader-key")).status_code == 200
    assert http.get("/v1/search", params={"q": "x"}, headers=auth("writer-key")).status_code == 200
    problem(http.put("/v1/books/k1", json=record("K")), 401, "unauthorized")
    problem(
        http.put("/v1/books/k1", json=record("K"), headers=auth("reader-key")), 403, "forbidden"
    )
    problem(http.delete("/v1/books/b001", headers=auth("reader-key")), 403, "forbidden")
    assert http.put("/v1/books/k1", json=record("K"), headers=auth("writer-key")).status_code == 201
    assert http.delete("/v1/books/k1", headers=auth("file-writer")).status_code == 204
    assert http.get("/healthz").status_code == 200 and http.get("/readyz").status_code == 200
    assert http.get("/metrics").status_code == 200
    for open_path in ("/docs", "/openapi.json", "/docs/assets/swagger-ui-bundle.js"):
        assert http.get(open_path).status_code == 200, open_path  # no key needed
    cmdline = Path(f"/proc/{service.proc.pid}/cmdline").read_bytes()
    for secret in ("reader-key", "writer-key", "file-writer"):
        assert secret not in service.line and secret not in service.stderr()
        assert secret.encode() not in cmdline


def test_embedding_service_down(start_service: StartService, tmp_path: Path) -> None:
    fake = FakeSGLang(dim=DIM).start()
    service = start_service(embedding=fake)
    http = service.http
    assert http.get("/v1/search", params={"q": "warm up"}).json()["degraded"] is False
    fake.stop()
    found = http.get("/v1/search", params={"q": "topic 2", "k": 3})
    assert found.status_code == 200 and found.json()["degraded"] is True
    assert all(r["degraded"] for r in found.json()["results"])
    prefs = http.post("/v1/recommendations", json={"preferences": ["topic 1"], "liked": ["b001"]})
    assert prefs.status_code == 200 and prefs.json()["degraded"] is True
    assert ids(http.get("/v1/books/b001/similar"))  # stored vectors: never degraded
    down = http.put("/v1/books/d1", json=record("Down"))
    problem(down, 503, "embedding-unavailable")
    assert int(down.headers["retry-after"]) >= 1
    ready = http.get("/readyz").json()
    assert ready["status"] == "degraded" and ready["embedding"].startswith("unavailable: ")
    metrics = http.get("/metrics").text
    assert 'bookrec_degraded_responses_total{route="/v1/search"} 1.0' in metrics


def test_no_batching_cache_and_cors(
    start_service: StartService, embedding: FakeSGLang, service: Service, tmp_path: Path
) -> None:
    cors = start_service(
        "--no-batching", "--cache", str(tmp_path / "cache.sqlite"),
        "--cors-origin", "http://page.example",
        embedding=embedding,
    )  # fmt: skip
    http = cors.http
    for _ in range(2):  # the second time from the cache
        assert http.get("/v1/search", params={"q": "cached text"}).json()["degraded"] is False
    hits = [
        x
        for x in http.get("/metrics").text.splitlines()
        if x.startswith("bookrec_embedding_cache_hits_total")
    ]
    assert hits and float(hits[0].split()[-1]) >= 1
    preflight = http.options(
        "/v1/search",
        headers={
            "Origin": "http://page.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://page.example"
    other = http.get("/healthz", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    # Without --cors-origin no CORS headers at all.
    plain = service.http.get("/healthz", headers={"Origin": "http://page.example"})
    assert "access-control-allow-origin" not in plain.headers


def test_request_timeout(start_service: StartService) -> None:
    with FakeSGLang(dim=DIM, per_request_delay=3.0) as slow:
        service = start_service("--request-timeout", "1", embedding=slow)
        response = service.http.get("/v1/search", params={"q": "slow"})
        problem(response, 503, "timeout")
        assert int(response.headers["retry-after"]) >= 1


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_two_workers_share_one_index(
    start_service: StartService, embedding: FakeSGLang, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    service = start_service(
        "--workers", "2", embedding=embedding, env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    )
    deadline = time.monotonic() + 30
    workers: list[int] = []
    while time.monotonic() < deadline:
        workers = _children(service.proc.pid)  # the workers (and multiprocessing's tracker)
        if len(workers) >= 2:
            break
        time.sleep(0.1)
    assert len(workers) >= 2

    def fresh() -> httpx.Client:  # a new connection per request spreads them over the workers
        return service.client(headers={"Connection": "close"})

    with fresh() as http:
        assert http.put("/v1/books/w1", json=record("Worker one")).status_code == 201
    for _ in range(30):
        with fresh() as http:
            assert http.get("/v1/books/w1").status_code == 200
            assert "w1" in ids(http.get("/v1/books/b001/similar", params={"k": 100}))
    with fresh() as http:
        assert http.delete("/v1/books/w1").status_code == 204
    for _ in range(30):
        with fresh() as http:
            assert http.get("/v1/books/w1").status_code == 404
            assert "w1" not in ids(http.get("/v1/books/b001/similar", params={"k": 100}))
    with fresh() as http:
        text = http.get("/metrics").text
    line = next(
        x
        for x in text.splitlines()
        if x.startswith('bookrec_http_requests_total{method="GET",route="/v1/books/{id}",')
        and 'status="200"' in x
    )
    assert float(line.rsplit(" ", 1)[1]) == 30  # summed over both workers
    # Each worker keeps its counters in a file named by its pid: both answered requests.
    answered = {p.stem.rpartition("_")[2] for p in metrics_dir.glob("counter_*.db")}
    assert len(answered) == 2 and answered <= {str(pid) for pid in _children(service.proc.pid)}
    assert service.terminate() in (0, -15)


def test_graceful_shutdown_finishes_requests_in_flight(start_service: StartService) -> None:
    with FakeSGLang(dim=DIM, per_request_delay=1.5) as slow:
        service = start_service(embedding=slow)
        outcome: dict[str, Any] = {}

        def slow_search() -> None:
            with service.client() as http:
                outcome["response"] = http.get("/v1/search", params={"q": "in flight"})

        thread = threading.Thread(target=slow_search)
        thread.start()
        deadline = time.monotonic() + 5
        while slow.embedding_request_count == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        began = time.monotonic()
        code = service.terminate()
        thread.join(10)
        assert outcome["response"].status_code == 200
        assert outcome["response"].json()["degraded"] is False
        assert time.monotonic() - began < 15 and code in (0, -15)
        assert "Traceback" not in service.stderr()


def test_cli_errors_are_one_line(tmp_path: Path, built: tuple[Path, Path]) -> None:
    catalog, index = built
    env = clean_env()
    missing = bookrec(
        "serve", "--index", str(tmp_path / "none"), "--catalog", str(catalog), env=env
    )
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert missing.stderr.startswith("bookrec: error:") and len(missing.stderr.splitlines()) == 1
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        taken = bookrec(
            "serve", "--index", str(index), "--catalog", str(catalog), "--port", port, env=env
        )
    assert taken.returncode != 0 and "Traceback" not in taken.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in taken.stderr
    no_keys = bookrec(
        "serve", "--index", str(index), "--catalog", str(catalog),
        "--api-keys-file", str(tmp_path / "nokeys"), env=env,
    )  # fmt: skip
    assert no_keys.returncode != 0 and "API keys file" in no_keys.stderr


def test_postgres_store(
    start_service: StartService, embedding: FakeSGLang, request: pytest.FixtureRequest,
    built: tuple[Path, Path],
) -> None:  # fmt: skip
    pytest.importorskip("psycopg")
    dsn: str = request.getfixturevalue("pg_dsn")
    catalog, _ = built
    env = clean_env(BOOKREC_BASE_URL=embedding.base_url)
    assert bookrec("db", "migrate", "--store", dsn, env=env).returncode == 0
    done = bookrec("index", "--catalog", str(catalog), "--store", dsn, "--no-progress", env=env)
    assert done.returncode == 0, done.stderr
    service = start_service(store=dsn, embedding=embedding)
    assert "postgresql://" in service.line
    http = service.http
    assert http.put("/v1/books/pg1", json=record("Stored in PostgreSQL")).status_code == 201
    assert "pg1" in ids(http.get("/v1/books/b001/similar", params={"k": 100}))
    assert len(ids(http.get("/v1/books/pg1/similar", params={"k": 3}))) == 3
    assert http.delete("/v1/books/pg1").status_code == 204
    assert "pg1" not in ids(http.get("/v1/books/b001/similar", params={"k": 100}))
    problem(http.get("/v1/books/pg1"), 404, "unknown-book")


def test_an_unexpected_error_is_a_500_problem_without_internals(built: tuple[Path, Path]) -> None:
    from fastapi.testclient import TestClient

    from bookrec.recommender.service.app import create_app, open_books
    from bookrec.recommender.service.settings import ServiceSettings

    catalog, index = built

    def broken(settings: ServiceSettings, embedder: Any) -> Any:
        rec, close = open_books(settings, None)

        def fail(*_args: Any, **_kwargs: Any) -> Any:
            raise RuntimeError("secret internals at /srv/app.py line 3")

        rec.similar = fail  # type: ignore[method-assign]
        return rec, close

    settings = ServiceSettings(index=str(index), catalog=str(catalog), embedding=False)
    app = create_app(settings, open_recommender=broken)
    with TestClient(app, raise_server_exceptions=False) as http:
        response = http.get("/v1/books/b001/similar")
        body = problem(response, 500, "internal")  # type: ignore[arg-type]
        assert "secret" not in response.text and "Traceback" not in response.text
        assert body["detail"] == "an internal error occurred (see the log)"
        ready = http.get("/readyz").json()
        assert ready["embedding"] == "none" and ready["status"] == "ready"
