"""Reranking through ``/v1/rerank``: order, ``top_n``, batching, validation, retries, fallback.

Every test taking ``make_client`` runs against both clients, over real HTTP to a fake SGLang
reranker (``FakeSGLang(reranker=True)``), whose scores are :func:`fake_rerank_score`.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import httpx
import pytest

from bookrec.client import (
    DEFAULT_RERANK_INSTRUCTION,
    SGLANG_RERANK_ERRORS,
    ClientConfig,
    EmbeddingClient,
    EmbeddingError,
    EmbeddingRejected,
    EmbeddingResponseError,
    EmbeddingUnavailable,
    Endpoint,
    InvalidInputError,
    Reranker,
    RerankResult,
    RetryPolicy,
)
from bookrec.client._rerank import parse_rerank_response
from bookrec.client.testing import (
    QWEN3_RERANK_DEFAULT_INSTRUCTION,
    FakeSGLang,
    fake_rerank_score,
)
from tests.client.conftest import FakeClock, MakeClient, config_for

QUERY = "cosy mystery in Kyoto"
DOCS = [
    "A space opera across three galaxies",
    "A cosy mystery: a cat detective in Kyoto",
    "Kyoto in the rain",
    "Poems about the sea",
    "A mystery in a Kyoto tea house, cosy and slow",
]


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def reranker() -> Iterator[FakeSGLang]:
    with FakeSGLang(reranker=True) as server:
        yield server


def rerank_config(*rerankers: FakeSGLang | str, **changes: object) -> ClientConfig:
    """A config whose embedding endpoint is never contacted, with the given rerankers."""
    urls = [r if isinstance(r, str) else r.base_url for r in rerankers]
    changes.setdefault("rerank_endpoints", tuple(Endpoint(u) for u in urls))
    return config_for("http://127.0.0.1:9/v1", **changes)


def expected(query: str, docs: list[str], instruction: str | None = None) -> list[RerankResult]:
    task = DEFAULT_RERANK_INSTRUCTION if instruction is None else instruction
    scored = [RerankResult(i, fake_rerank_score(query, d, task)) for i, d in enumerate(docs)]
    return sorted(scored, key=lambda r: (-r.score, r.index))


# -- results --------------------------------------------------------------------------------
def test_results_are_the_servers_scores_best_first(
    reranker: FakeSGLang, make_client: MakeClient
) -> None:
    client = make_client(rerank_config(reranker))

    results = client.rerank(QUERY, DOCS)

    assert results == expected(QUERY, DOCS)
    assert results[0].index in (1, 4)  # the documents sharing the query's words lead
    (body,) = reranker.rerank_requests
    assert body == {
        "query": QUERY,
        "documents": DOCS,
        "instruct": DEFAULT_RERANK_INSTRUCTION,
        "return_documents": False,
    }


def test_the_instruction_replaces_the_default(
    reranker: FakeSGLang, make_client: MakeClient
) -> None:
    client = make_client(rerank_config(reranker, rerank_instruction="Judge books for a child"))
    assert client.rerank(QUERY, DOCS) == expected(QUERY, DOCS, "Judge books for a child")
    assert client.rerank(QUERY, DOCS, "Judge poems") == expected(QUERY, DOCS, "Judge poems")
    assert [b["instruct"] for b in reranker.rerank_requests] == [
        "Judge books for a child",
        "Judge poems",
    ]


def test_top_n_keeps_the_best(reranker: FakeSGLang, make_client: MakeClient) -> None:
    client = make_client(rerank_config(reranker))

    assert client.rerank(QUERY, DOCS, top_n=2) == expected(QUERY, DOCS)[:2]
    assert client.rerank(QUERY, DOCS, top_n=50) == expected(QUERY, DOCS)
    assert [b.get("top_n") for b in reranker.rerank_requests] == [2, None]


def test_many_documents_go_in_batches_merged_and_sorted(
    reranker: FakeSGLang, make_client: MakeClient
) -> None:
    docs = [f"book {i} about {'kyoto' if i % 7 == 0 else 'paris'} mysteries" for i in range(70)]
    client = make_client(rerank_config(reranker, rerank_batch_size=16, max_concurrency=3))

    results = client.rerank("kyoto mysteries", docs)

    assert results == expected("kyoto mysteries", docs)
    sizes = sorted(len(b["documents"]) for b in reranker.rerank_requests)
    assert sizes == [6, 16, 16, 16, 16]
    assert sorted(r.index for r in results) == list(range(70))
    assert reranker.peak_in_flight <= 3


def test_top_n_across_batches_is_the_calls_best(
    reranker: FakeSGLang, make_client: MakeClient
) -> None:
    docs = [f"novel {i} set in {'kyoto' if i % 5 == 0 else 'oslo'}" for i in range(40)]
    client = make_client(rerank_config(reranker, rerank_batch_size=8))

    results = client.rerank("kyoto", docs, top_n=5)

    assert results == expected("kyoto", docs)[:5]
    assert all(b["top_n"] == 5 for b in reranker.rerank_requests)


def test_no_documents_need_no_request(reranker: FakeSGLang, make_client: MakeClient) -> None:
    client = make_client(rerank_config(reranker))
    assert client.rerank(QUERY, []) == []
    assert reranker.rerank_request_count == 0


def test_the_client_is_a_reranker() -> None:
    with EmbeddingClient(rerank_config("http://127.0.0.1:9/v1")) as client:
        assert isinstance(client, Reranker)


# -- validation -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "arm",
    [
        pytest.param(lambda s: s.wrong_count_next(), id="missing-index"),
        pytest.param(lambda s: s.bad_index_next(), id="duplicate-index"),
        pytest.param(lambda s: s.out_of_range_next(), id="score-out-of-range"),
        pytest.param(lambda s: s.nan_next(), id="nan-score"),
        pytest.param(lambda s: s.malformed_next(), id="malformed-json"),
    ],
)
def test_a_bad_answer_is_a_response_error(
    reranker: FakeSGLang, make_client: MakeClient, arm: object
) -> None:
    client = make_client(rerank_config(reranker))
    arm(reranker)  # type: ignore[operator]

    with pytest.raises(EmbeddingResponseError):
        client.rerank(QUERY, DOCS)
    assert reranker.rerank_request_count == 1  # a bad answer is not retried


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'[{"index": 0, "score": NaN}]', "not in [0, 1]"),
        (b'[{"index": 0, "score": Infinity}]', "not in [0, 1]"),
        (b'[{"index": 0, "score": -0.1}]', "not in [0, 1]"),
        (b'[{"index": 0, "score": "0.5"}]', "not a number"),
        (b'[{"index": 0, "score": true}]', "not a number"),
        (b'[{"index": 1, "score": 0.5}]', "not one of 0..0"),
        (b'[{"index": 0.0, "score": 0.5}]', "not one of"),
        (b'{"index": 0, "score": 0.5}', "not a list"),
        (b"[]", "expected 1 scores, got 0"),
        (b"[1]", "not an object"),
    ],
)
def test_parse_checks_every_result(body: bytes, message: str) -> None:
    with pytest.raises(EmbeddingResponseError, match=re.escape(message)):
        parse_rerank_response(body, [7], 1, "http://r/v1")


def test_parse_maps_indices_back_into_the_call() -> None:
    body = b'[{"index": 1, "score": 0.9, "meta_info": {}}, {"index": 0, "score": 0.1}]'
    results = parse_rerank_response(body, [10, 20], 2, "http://r/v1")
    assert results == [RerankResult(20, 0.9), RerankResult(10, 0.1)]


@pytest.mark.parametrize(
    ("query", "documents", "top_n"),
    [
        ("  ", ["a"], None),
        ("q", ["a", " "], None),
        ("q", ["a", 3], None),
        ("q", "a single string", None),
        ("q", ["a"], 0),
        ("q", ["a"], True),
    ],
)
def test_bad_input_is_refused_before_any_request(
    reranker: FakeSGLang, make_client: MakeClient, query: str, documents: object, top_n: object
) -> None:
    client = make_client(rerank_config(reranker))
    with pytest.raises(InvalidInputError):
        client.rerank(query, documents, top_n=top_n)
    assert reranker.rerank_request_count == 0


# -- retries, fallback, breaker ---------------------------------------------------------------
@pytest.mark.parametrize("status", [429, 503])
def test_retryable_statuses_are_retried_with_backoff(
    reranker: FakeSGLang, make_client: MakeClient, clock: FakeClock, status: int
) -> None:
    client = make_client(rerank_config(reranker))
    reranker.fail_next(status, times=2)

    assert client.rerank(QUERY, DOCS) == expected(QUERY, DOCS)
    assert reranker.rerank_request_count == 3
    assert clock.sleeps == [0.5, 1.0]


def test_dropped_connections_are_retried(reranker: FakeSGLang, make_client: MakeClient) -> None:
    client = make_client(rerank_config(reranker))
    reranker.drop_next()
    assert client.rerank(QUERY, DOCS) == expected(QUERY, DOCS)
    assert reranker.rerank_request_count == 2


def test_a_rejection_is_not_retried(reranker: FakeSGLang, make_client: MakeClient) -> None:
    client = make_client(rerank_config(reranker))
    reranker.fail_next(400, message="Documents cannot be empty")
    with pytest.raises(EmbeddingRejected, match="Documents cannot be empty") as info:
        client.rerank(QUERY, DOCS)
    assert info.value.status_code == 400
    assert reranker.rerank_request_count == 1


def test_an_embedding_server_is_no_reranker(
    fake_server: FakeSGLang, make_client: MakeClient
) -> None:
    client = make_client(rerank_config(fake_server))
    with pytest.raises(EmbeddingRejected, match="not a rerank model"):
        client.rerank(QUERY, DOCS)


def test_a_fallback_reranker_takes_over(reranker: FakeSGLang, make_client: MakeClient) -> None:
    client = make_client(rerank_config(dead_url(), reranker, retry=RetryPolicy(max_attempts=2)))
    assert client.rerank(QUERY, DOCS) == expected(QUERY, DOCS)
    assert reranker.rerank_request_count == 1


def test_every_reranker_down_is_unavailable(make_client: MakeClient) -> None:
    client = make_client(rerank_config(dead_url(), dead_url(), retry=RetryPolicy(max_attempts=2)))
    with pytest.raises(EmbeddingUnavailable, match="no rerank endpoint could answer"):
        client.rerank(QUERY, DOCS)


def test_the_rerank_breaker_is_its_own(
    reranker: FakeSGLang, fake_server: FakeSGLang, make_client: MakeClient, clock: FakeClock
) -> None:
    policy = RetryPolicy(max_attempts=1, breaker_threshold=1, breaker_cooldown=30)
    client = make_client(
        config_for(fake_server, rerank_endpoints=(Endpoint(reranker.base_url),), retry=policy)
    )
    reranker.fail_next(503)
    with pytest.raises(EmbeddingUnavailable):
        client.rerank(QUERY, DOCS)
    with pytest.raises(EmbeddingUnavailable, match=r"every rerank endpoint .* cooling down"):
        client.rerank(QUERY, DOCS)
    assert reranker.rerank_request_count == 1
    assert client.embed_documents(["still embeds"]).shape == (1, 64)  # its breaker is closed

    clock.advance(31)
    assert client.rerank(QUERY, DOCS) == expected(QUERY, DOCS)  # the half-open probe
    assert reranker.rerank_request_count == 2


def test_every_error_is_an_embedding_error(reranker: FakeSGLang, make_client: MakeClient) -> None:
    client = make_client(rerank_config(reranker, retry=RetryPolicy(max_attempts=1)))
    for arm in (lambda: reranker.fail_next(503), lambda: reranker.fail_next(404)):
        arm()
        with pytest.raises(EmbeddingError):
            client.rerank(QUERY, DOCS)


# -- configuration --------------------------------------------------------------------------
def test_rerank_settings_come_from_the_environment() -> None:
    config = ClientConfig.from_env(
        environ={
            "BOOKREC_API_KEY": "k1",
            "BOOKREC_RERANK_BASE_URL": "http://r1:30001, http://r2:30001/v1",
            "BOOKREC_RERANK_INSTRUCTION": "Judge books",
            "BOOKREC_RERANK_BATCH_SIZE": "8",
        }
    )
    assert [e.base_url for e in config.rerank_endpoints] == [
        "http://r1:30001/v1",
        "http://r2:30001/v1",
    ]
    assert [e.api_key for e in config.rerank_endpoints] == ["k1", "k1"]  # the key by default
    assert (config.rerank_instruction, config.rerank_batch_size) == ("Judge books", 8)
    own = ClientConfig.from_env(environ={"BOOKREC_API_KEY": "k1", "BOOKREC_RERANK_API_KEY": "k2"})
    assert own.rerank_endpoints[0].api_key == "k2"
    assert ClientConfig().rerank_endpoints[0].base_url == "http://127.0.0.1:30001/v1"


@pytest.mark.parametrize(
    "changes",
    [{"rerank_endpoints": ()}, {"rerank_batch_size": 0}, {"rerank_instruction": " "}],
)
def test_bad_rerank_settings_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ClientConfig(**changes)  # type: ignore[arg-type]


def test_the_rerank_key_goes_out_as_a_bearer_token(make_client: MakeClient) -> None:
    with FakeSGLang(reranker=True, api_key="s3cret") as server:
        client = make_client(
            config_for(
                "http://127.0.0.1:9/v1", rerank_endpoints=(Endpoint(server.base_url, "s3cret"),)
            )
        )
        assert len(client.rerank(QUERY, DOCS)) == len(DOCS)
        (entry,) = [e for e in server.log if e.path == "/v1/rerank"]
        assert entry.headers["authorization"] == "Bearer s3cret"


# -- the fake itself --------------------------------------------------------------------------
def test_the_fake_answers_as_sglang_does(reranker: FakeSGLang) -> None:
    response = httpx.post(
        f"{reranker.base_url}/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 3}
    )
    assert response.status_code == 200
    body = response.json()
    assert isinstance(body, list) and len(body) == 3
    scores = [item["score"] for item in body]
    assert scores == sorted(scores, reverse=True)
    for item in body:
        assert set(item) == {"score", "document", "index", "meta_info"}
        assert item["document"] == DOCS[item["index"]]
        # No instruct: Qwen3-Reranker's own default instruction.
        assert item["score"] == fake_rerank_score(
            QUERY, DOCS[item["index"]], QWEN3_RERANK_DEFAULT_INSTRUCTION
        )
        assert 0.0 <= item["score"] <= 1.0
    quiet = httpx.post(
        f"{reranker.base_url}/rerank",
        json={"query": QUERY, "documents": DOCS, "return_documents": False},
    ).json()
    assert all("document" not in item for item in quiet)


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({"query": "", "documents": ["a"]}, "empty_query"),
        ({"query": " ", "documents": ["a"]}, "blank_query"),
        ({"query": "q", "documents": []}, "no_documents"),
        ({"query": "q", "documents": ["a", ""]}, "empty_document"),
        ({"query": "q", "documents": ["a", "  "]}, "blank_document"),
        ({"query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
    ],
)
def test_the_fake_refuses_as_sglang_does(
    reranker: FakeSGLang, body: dict[str, object], key: str
) -> None:
    response = httpx.post(f"{reranker.base_url}/rerank", json=body)
    assert response.status_code == 400
    assert response.json()["message"] == SGLANG_RERANK_ERRORS[key]


def test_fake_scores_are_deterministic_and_follow_the_words() -> None:
    a = fake_rerank_score("kyoto mystery", "a mystery in kyoto", "task")
    assert a == fake_rerank_score("kyoto mystery", "a mystery in kyoto", "task")
    assert a != fake_rerank_score("kyoto mystery", "a mystery in kyoto", "another task")
    assert a > fake_rerank_score("kyoto mystery", "poems of the sea", "task")
    assert 0.0 <= fake_rerank_score("", "x") <= 1.0
