"""bookrec's own client against the CPU server: the whole path a user takes without a GPU."""

from __future__ import annotations

import numpy as np
import pytest

from bookrec.client import (
    ClientConfig,
    EmbeddingClient,
    EmbeddingRejected,
    Endpoint,
    InvalidInputError,
    ModelIdentity,
    PromptTemplate,
    RetryPolicy,
    check_ready,
    list_models,
)
from tests.serving.conftest import API_KEY, Reference, RunningServer

BOOKS = [
    "A quiet detective story set in Kyoto, told by a retired bookseller.",
    "一本关于江南园林与文人生活的散文集",
    "The history of the printing press and how cheap books changed Europe.",
]


def config(server: RunningServer, **changes: object) -> ClientConfig:
    base = ClientConfig(
        endpoints=(Endpoint(server.base_url, api_key=API_KEY),),
        model="Qwen/Qwen3-Embedding-0.6B",
        max_input_tokens=100,
        retry=RetryPolicy(max_attempts=1),
    )
    return base.with_options(**changes)


@pytest.mark.parametrize("encoding_format", ["base64", "float"])
def test_documents_and_queries_match_transformers(
    cpu_server: RunningServer, reference: Reference, encoding_format: str
) -> None:
    prompts = PromptTemplate()
    with EmbeddingClient(config(cpu_server, encoding_format=encoding_format)) as client:
        documents = client.embed_documents(BOOKS)
        queries = client.embed_queries(["cosy mysteries in Japan"])
        identity = client.identity
    assert documents.dtype == np.float32
    np.testing.assert_allclose(documents, reference.embed(BOOKS), atol=1e-5)
    expected_query = reference.embed([prompts.format_query("cosy mysteries in Japan")])
    np.testing.assert_allclose(queries, expected_query, atol=1e-5)
    assert identity == ModelIdentity(model=cpu_server.model_path, dimensions=64)


def test_matryoshka_width_through_the_client(
    cpu_server: RunningServer, reference: Reference
) -> None:
    with EmbeddingClient(config(cpu_server, dimensions=32)) as client:
        documents = client.embed_documents(BOOKS)
        assert client.probe() == ModelIdentity(model=cpu_server.model_path, dimensions=32)
    np.testing.assert_allclose(documents, reference.embed(BOOKS, dimensions=32), atol=1e-5)


def test_client_errors_against_the_cpu_server(cpu_server: RunningServer) -> None:
    with EmbeddingClient(config(cpu_server)) as client, pytest.raises(InvalidInputError):
        client.embed_documents(["fine", "   "])
    wrong_key = config(cpu_server, endpoints=(Endpoint(cpu_server.base_url, api_key="nope"),))
    with EmbeddingClient(wrong_key) as client, pytest.raises(EmbeddingRejected) as rejected:
        client.embed_documents(["fine"])
    assert rejected.value.status_code == 401


def test_readiness_and_model_listing_helpers(cpu_server: RunningServer) -> None:
    assert check_ready(cpu_server.root_url)
    (model,) = list_models(cpu_server.base_url, api_key=API_KEY)
    assert model["id"] == cpu_server.model_path
