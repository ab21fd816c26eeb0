"""The client's public API: one sorted, complete ``__all__``, presented as ``client.X``."""

from __future__ import annotations

import inspect

from bookrec import client

DOCUMENTED = {
    "ClientConfig", "RetryPolicy", "Endpoint", "PromptTemplate", "ModelIdentity",
    "EmbeddingClient", "AsyncEmbeddingClient", "Embedder", "AsyncEmbedder",
    "EmbeddingCache",
    "EmbeddingError", "ConfigurationError", "InvalidInputError", "EmbeddingUnavailable",
    "EmbeddingTimeout", "EmbeddingRejected", "EmbeddingResponseError", "IncompatibleModelError",
    "CacheError",
    "MIN_DIMENSIONS", "check_ready", "wait_until_ready", "list_models", "estimate_tokens",
    "DEFAULT_INSTRUCTION", "QWEN3_EMBEDDING_MODELS", "EmbeddingModelSpec", "known_model_width",
    "normalize", "is_cjk", "SGLANG_REQUEST_ERRORS", "SGLANG_INPUT_ERRORS",
}  # fmt: skip


def test_all_is_sorted_and_unique() -> None:
    assert list(client.__all__) == sorted(set(client.__all__))


def test_all_names_exist_and_cover_the_documented_api() -> None:
    for name in client.__all__:
        assert hasattr(client, name), name
    assert set(client.__all__) >= DOCUMENTED


def test_public_members_are_presented_from_the_package() -> None:
    for name in client.__all__:
        member = getattr(client, name)
        if inspect.isclass(member) or inspect.isfunction(member):
            assert member.__module__ == "bookrec.client", name


def test_no_other_public_names() -> None:
    public = {
        name
        for name, value in vars(client).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(client.__all__)


def test_error_hierarchy() -> None:
    assert issubclass(client.ConfigurationError, client.EmbeddingError)
    assert issubclass(client.ConfigurationError, ValueError)
    assert issubclass(client.InvalidInputError, ValueError)
    assert issubclass(client.EmbeddingTimeout, client.EmbeddingUnavailable)
    for name in (
        "EmbeddingUnavailable",
        "EmbeddingRejected",
        "EmbeddingResponseError",
        "IncompatibleModelError",
        "CacheError",
        "InvalidInputError",
    ):
        assert issubclass(getattr(client, name), client.EmbeddingError), name


def test_clients_satisfy_the_protocols() -> None:
    sync = client.EmbeddingClient(client.ClientConfig())
    try:
        assert isinstance(sync, client.Embedder)
    finally:
        sync.close()
    assert isinstance(client.AsyncEmbeddingClient(client.ClientConfig()), client.AsyncEmbedder)
