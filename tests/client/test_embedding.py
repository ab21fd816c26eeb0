"""Embedding behaviour shared by both clients: every test runs against sync and async."""

from __future__ import annotations

import logging

import httpx
import numpy as np
import pytest

from bookrec.client import (
    DEFAULT_INSTRUCTION,
    EmbeddingResponseError,
    InvalidInputError,
    PromptTemplate,
    estimate_tokens,
)
from bookrec.client.testing import FakeSGLang, fake_vector
from tests.client.conftest import MakeClient, config_for

QWEN_QUERY = "Instruct: {instruction}\nQuery:{text}"


def expected(texts: list[str], dim: int = 64) -> np.ndarray:
    return np.stack([fake_vector(t, dim) for t in texts])


def test_documents_are_the_servers_vectors_in_input_order(
    fake_server: FakeSGLang, make_client: MakeClient
) -> None:
    texts = ["Dune", "Emma", "Ulysses", "Beloved"]
    client = make_client(config_for(fake_server))

    vectors = client.embed_documents(texts)

    assert vectors.dtype == np.float32
    assert vectors.shape == (4, 64)
    np.testing.assert_allclose(vectors, expected(texts), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert fake_server.embedded_texts == texts  # documents get no prompt
    assert client.identity is not None
    assert client.identity.model == "Qwen/Qwen3-Embedding-0.6B"
    assert client.identity.dimensions == 64


def test_queries_use_the_exact_qwen3_format(
    fake_server: FakeSGLang, make_client: MakeClient
) -> None:
    client = make_client(config_for(fake_server))
    default = DEFAULT_INSTRUCTION  # config.prompts is None: the served Qwen3 model's preset

    client.embed_queries(["space opera"])
    client.embed_queries(["space opera"], "Find books like this")

    assert fake_server.embedded_texts == [
        f"Instruct: {default}\nQuery:space opera",  # no space after "Query:"
        "Instruct: Find books like this\nQuery:space opera",
    ]
    assert "book" in default.lower()


def test_symmetric_mode_puts_the_instruction_on_documents_too(
    fake_server: FakeSGLang, make_client: MakeClient
) -> None:
    prompts = PromptTemplate(instruction="Retrieve semantically similar text", symmetric=True)
    client = make_client(config_for(fake_server, prompts=prompts))

    vectors = client.embed_documents(["Dune"])

    formatted = "Instruct: Retrieve semantically similar text\nQuery:Dune"
    assert fake_server.embedded_texts == [formatted]
    np.testing.assert_allclose(vectors[0], fake_vector(formatted, 64), atol=1e-6)


def test_other_model_families_need_only_a_template(
    fake_server: FakeSGLang, make_client: MakeClient
) -> None:
    prompts = PromptTemplate(query="query: {text}", document="passage: {text}")
    client = make_client(config_for(fake_server, prompts=prompts))

    client.embed_documents(["Dune"])
    client.embed_queries(["desert planets"])

    assert fake_server.embedded_texts == ["passage: Dune", "query: desert planets"]


def test_text_with_braces_is_not_a_template(
    fake_server: FakeSGLang, make_client: MakeClient
) -> None:
    client = make_client(config_for(fake_server))
    client.embed_queries(["{text} and {instruction} {0}"], "a {weird} instruction")
    assert fake_server.embedded_texts == [
        "Instruct: a {weird} instruction\nQuery:{text} and {instruction} {0}"
    ]


def test_vectors_are_renormalised_in_float32(make_client: MakeClient) -> None:
    texts = [f"book {i}" for i in range(20)]
    with FakeSGLang(dim=256, bf16=True) as server:
        raw = httpx.post(
            f"{server.base_url}/embeddings",
            json={"input": texts, "model": "m", "encoding_format": "float"},
        ).json()
        client = make_client(config_for(server))
        vectors = client.embed_documents(texts)
    raw_norms = np.linalg.norm([d["embedding"] for d in raw["data"]], axis=1)
    assert np.abs(raw_norms - 1.0).max() > 1e-4  # bf16 rounding: not unit on the wire
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-6)
    np.testing.assert_allclose(vectors, expected(texts, 256), atol=1e-2)


def test_batches_by_count(fake_server: FakeSGLang, make_client: MakeClient) -> None:
    client = make_client(config_for(fake_server, batch_size=2, max_concurrency=1))
    texts = [f"t{i}" for i in range(5)]

    vectors = client.embed_documents(texts)

    assert [len(r["input"]) for r in fake_server.requests] == [2, 2, 1]
    np.testing.assert_allclose(vectors, expected(texts), atol=1e-6)


def test_batches_by_token_budget_counting_cjk_as_one_token(
    fake_server: FakeSGLang, make_client: MakeClient
) -> None:
    # Each text is 20 CJK characters: about 20 tokens + end-of-text = 21; budget 50 -> 2 per batch.
    texts = [chr(0x4E00 + i) * 20 for i in range(5)]
    assert estimate_tokens(texts[0]) == 20
    client = make_client(
        config_for(fake_server, batch_size=64, max_batch_tokens=50, max_concurrency=1)
    )

    client.embed_documents(texts)

    assert [len(r["input"]) for r in fake_server.requests] == [2, 2, 1]


def test_duplicates_are_embedded_once(fake_server: FakeSGLang, make_client: MakeClient) -> None:
    client = make_client(config_for(fake_server))
    texts = ["Emma", "Dune", "Emma", "Dune", "Emma"]

    vectors = client.embed_documents(texts)

    assert fake_server.embedded_texts == ["Emma", "Dune"]
    np.testing.assert_allclose(vectors, expected(texts), atol=1e-6)


def test_order_is_kept_when_batches_finish_out_of_order(make_client: MakeClient) -> None:
    with FakeSGLang(dim=64) as server:
        client = make_client(config_for(server, batch_size=2, max_concurrency=4))
        server.delay_next(0.15)  # the first batch to arrive is the last to finish
        texts = [f"text {i}" for i in range(8)]

        vectors = client.embed_documents(texts)

    assert server.embedding_request_count == 4
    np.testing.assert_allclose(vectors, expected(texts), atol=1e-6)


def test_concurrency_is_bounded(make_client: MakeClient) -> None:
    with FakeSGLang(dim=16, per_request_delay=0.08) as server:
        client = make_client(config_for(server, batch_size=1, max_concurrency=3))
        client.embed_documents([f"t{i}" for i in range(7)])
    assert server.peak_in_flight == 3


def test_empty_texts_are_refused_before_any_request(
    fake_server: FakeSGLang, make_client: MakeClient
) -> None:
    client = make_client(config_for(fake_server))

    with pytest.raises(InvalidInputError) as info:
        client.embed_documents(["fine", "", "also fine", " \n\t"])

    assert isinstance(info.value, ValueError)
    assert info.value.indices == (1, 3)
    assert "1, 3" in str(info.value)
    assert fake_server.embedding_request_count == 0


@pytest.mark.parametrize("bad", [[1, 2, 3], ["ok", None], "a single string"])
def test_only_strings_are_accepted(
    fake_server: FakeSGLang, make_client: MakeClient, bad: object
) -> None:
    client = make_client(config_for(fake_server))
    with pytest.raises(InvalidInputError):
        client.embed_documents(bad)  # type: ignore[arg-type]
    assert fake_server.embedding_request_count == 0


def test_empty_list_makes_no_request(fake_server: FakeSGLang, make_client: MakeClient) -> None:
    client = make_client(config_for(fake_server))
    assert client.embed_documents([]).shape[0] == 0
    assert fake_server.embedding_request_count == 0


def test_long_texts_are_truncated_on_the_client_with_a_warning(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    # The server refuses inputs over 100 tokens; the client is configured with the same limit.
    with FakeSGLang(dim=16, max_input_tokens=100) as server:
        client = make_client(config_for(server, max_input_tokens=100))
        long_text = "word " * 400  # about 500 tokens
        with caplog.at_level(logging.WARNING, logger="bookrec.client"):
            vectors = client.embed_documents(["short", long_text])
    sent = server.embedded_texts
    assert sent[0] == "short"
    assert long_text.startswith(sent[1])
    assert estimate_tokens(sent[1]) + 1 <= 100
    assert len(sent[1]) > 300  # truncated, not emptied
    assert vectors.shape == (2, 16)
    assert any(
        "truncated 1 text" in r.getMessage() and "1" in r.getMessage() for r in caplog.records
    )


def test_query_truncation_keeps_the_instruction(make_client: MakeClient) -> None:
    with FakeSGLang(dim=16, max_input_tokens=60) as server:
        client = make_client(config_for(server, max_input_tokens=60))
        client.embed_queries(["x" * 1000], "Find novels")
    (sent,) = server.embedded_texts
    assert sent.startswith("Instruct: Find novels\nQuery:xxx")
    assert estimate_tokens(sent) + 1 <= 60


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_both_wire_formats_give_the_same_vectors(
    fake_server: FakeSGLang, make_client: MakeClient, encoding: str
) -> None:
    client = make_client(config_for(fake_server, encoding_format=encoding))
    vectors = client.embed_documents(["Dune", "Emma"])
    assert fake_server.requests[0]["encoding_format"] == encoding
    np.testing.assert_allclose(vectors, expected(["Dune", "Emma"]), atol=1e-6)


def test_float_lists_from_a_server_that_ignores_encoding_format(make_client: MakeClient) -> None:
    with FakeSGLang(dim=64, legacy=True) as server:
        client = make_client(config_for(server, encoding_format="base64"))
        vectors = client.embed_documents(["Dune", "Emma"])
    np.testing.assert_allclose(vectors, expected(["Dune", "Emma"]), atol=1e-6)


def test_shuffled_response_is_put_back_in_order(
    fake_server: FakeSGLang, make_client: MakeClient
) -> None:
    client = make_client(config_for(fake_server))
    fake_server.shuffle_next()
    texts = ["a1", "b2", "c3", "d4"]
    np.testing.assert_allclose(client.embed_documents(texts), expected(texts), atol=1e-6)


@pytest.mark.parametrize(
    ("knob", "message"),
    [
        ("malformed_next", "not valid JSON"),
        ("nan_next", "non-"),
        ("wrong_count_next", "sent 3 inputs but got 2"),
        ("bad_index_next", "permutation"),
    ],
)
@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_bad_responses_are_refused_never_returned(
    fake_server: FakeSGLang, make_client: MakeClient, knob: str, message: str, encoding: str
) -> None:
    client = make_client(config_for(fake_server, encoding_format=encoding))
    getattr(fake_server, knob)()

    with pytest.raises(EmbeddingResponseError, match=message):
        client.embed_documents(["a", "b", "c"])

    assert fake_server.embedding_request_count == 1


def test_progress_reports_every_batch(fake_server: FakeSGLang, make_client: MakeClient) -> None:
    client = make_client(config_for(fake_server, batch_size=3, max_concurrency=2))
    seen: list[tuple[int, int]] = []

    client.embed_documents(
        [f"t{i}" for i in range(10)] + ["t0"], progress=lambda d, t: seen.append((d, t))
    )

    assert seen[0] == (0, 11)
    assert seen[-1] == (11, 11)
    assert len(seen) == 1 + 4  # start + one per batch
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_probe_learns_the_identity_once(fake_server: FakeSGLang, make_client: MakeClient) -> None:
    client = make_client(config_for(fake_server))
    assert client.identity is None

    identity = client.probe()
    again = client.probe()

    assert identity == again
    assert str(identity) == "Qwen/Qwen3-Embedding-0.6B (64-d)"
    assert fake_server.embedding_request_count == 1


def test_closed_client_refuses_work(fake_server: FakeSGLang, make_client: MakeClient) -> None:
    client = make_client(config_for(fake_server))
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.embed_documents(["x"])
