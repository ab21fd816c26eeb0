"""Configuration, ``from_env``, and keeping the API key out of reprs, errors and logs."""

from __future__ import annotations

import logging

import openai
import pytest

from bookrec.client import (
    AsyncEmbeddingClient,
    ClientConfig,
    ConfigurationError,
    EmbeddingClient,
    EmbeddingRejected,
    Endpoint,
    PromptTemplate,
    RetryPolicy,
)
from bookrec.client.testing import FakeSGLang
from tests.client.conftest import MakeClient, config_for

SECRET = "sk-very-secret-key-1234"


def test_defaults() -> None:
    config = ClientConfig()
    assert config.endpoints == (Endpoint("http://127.0.0.1:30000/v1"),)
    assert config.model == "Qwen/Qwen3-Embedding-0.6B"
    assert config.encoding_format == "base64"
    assert config.dimensions is None
    assert (config.timeout, config.connect_timeout) == (30.0, 2.0)
    assert config.retry == RetryPolicy()


def test_endpoint_urls_are_normalised() -> None:
    assert Endpoint("http://h:1").base_url == "http://h:1/v1"
    assert Endpoint("http://h:1/v1/").base_url == "http://h:1/v1"
    assert Endpoint("https://gw.example/embed/v1").base_url == "https://gw.example/embed/v1"
    with pytest.raises(ConfigurationError):
        Endpoint("127.0.0.1:30000")


def test_endpoints_accept_strings() -> None:
    config = ClientConfig(endpoints=("http://a:1/v1", Endpoint("http://b:2/v1")))  # type: ignore[arg-type]
    assert [e.base_url for e in config.endpoints] == ["http://a:1/v1", "http://b:2/v1"]


@pytest.mark.parametrize(
    "changes",
    [
        {"batch_size": 0},
        {"max_concurrency": 0},
        {"timeout": 0},
        {"timeout": float("nan")},
        {"deadline": -1},
        {"encoding_format": "int8"},
        {"endpoints": ()},
        {"model": " "},
        {"retry": None},
        {"prompts": "Instruct: {text}"},
        {"dimensions": 8},
    ],
)
def test_invalid_configs_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        ClientConfig().with_options(**changes)


def test_prompt_templates_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="text"):
        PromptTemplate(document="no placeholder")
    with pytest.raises(ConfigurationError, match="only use"):
        PromptTemplate(query="{text} {language}")
    with pytest.raises(ConfigurationError):
        PromptTemplate(query="{text")


def test_with_options_copies_and_validates() -> None:
    config = ClientConfig()
    changed = config.with_options(batch_size=8)
    assert (config.batch_size, changed.batch_size) == (64, 8)
    with pytest.raises(ConfigurationError):
        config.with_options(no_such_field=1)


def test_from_env_reads_one_prefix() -> None:
    env = {
        "BOOKREC_BASE_URL": "http://gpu1:30000/v1, http://gpu2:30000",
        "BOOKREC_API_KEY": SECRET,
        "BOOKREC_MODEL": "Qwen/Qwen3-Embedding-4B",
        "BOOKREC_DIMENSIONS": "256",
        "BOOKREC_TIMEOUT": "12.5",
        "BOOKREC_CONNECT_TIMEOUT": "1",
        "BOOKREC_DEADLINE": "none",
        "BOOKREC_BATCH_SIZE": "32",
        "BOOKREC_MAX_BATCH_TOKENS": "8000",
        "BOOKREC_MAX_INPUT_TOKENS": "4096",
        "BOOKREC_MAX_CONCURRENCY": "8",
        "BOOKREC_CACHE_PATH": "/tmp/cache.sqlite",
        "BOOKREC_ENCODING_FORMAT": "float",
        "BOOKREC_MAX_ATTEMPTS": "2",
        "BOOKREC_INSTRUCTION": "Find books",
        "BOOKREC_SYMMETRIC": "yes",
        "OTHER_MODEL": "ignored",
    }
    config = ClientConfig.from_env(environ=env)
    assert [e.base_url for e in config.endpoints] == [
        "http://gpu1:30000/v1",
        "http://gpu2:30000/v1",
    ]
    assert all(e.api_key == SECRET for e in config.endpoints)
    assert config.model == "Qwen/Qwen3-Embedding-4B"
    assert config.dimensions == 256
    assert (config.timeout, config.connect_timeout, config.deadline) == (12.5, 1.0, None)
    assert (config.batch_size, config.max_batch_tokens, config.max_input_tokens) == (32, 8000, 4096)
    assert config.max_concurrency == 8
    assert config.cache_path == "/tmp/cache.sqlite"
    assert config.encoding_format == "float"
    assert config.retry.max_attempts == 2
    assert config.prompts.instruction == "Find books"
    assert config.prompts.symmetric is True


def test_from_env_uses_defaults_and_other_prefixes() -> None:
    assert ClientConfig.from_env(environ={}) == ClientConfig()
    config = ClientConfig.from_env("EMB_", environ={"EMB_MODEL": "m", "BOOKREC_MODEL": "x"})
    assert config.model == "m"


def test_from_env_names_the_bad_variable_but_not_the_key() -> None:
    with pytest.raises(ConfigurationError, match="BOOKREC_BATCH_SIZE") as info:
        ClientConfig.from_env(environ={"BOOKREC_BATCH_SIZE": "many", "BOOKREC_API_KEY": SECRET})
    assert SECRET not in str(info.value)


def test_the_key_is_in_no_repr() -> None:
    config = ClientConfig(endpoints=(Endpoint("http://h:1/v1", SECRET),))
    assert SECRET not in repr(config.endpoints[0])
    assert "***" in repr(config.endpoints[0])
    assert SECRET not in repr(config)
    assert SECRET not in str(config)
    with EmbeddingClient(config) as client:
        assert SECRET not in repr(client)


async def test_the_key_is_not_in_the_async_repr() -> None:
    async with AsyncEmbeddingClient(
        ClientConfig(endpoints=(Endpoint("http://h:1/v1", SECRET),))
    ) as client:
        assert SECRET not in repr(client)


def test_the_sdk_is_built_once_per_endpoint_without_its_own_retries() -> None:
    config = ClientConfig(
        endpoints=(Endpoint("http://a:1/v1"), Endpoint("http://b:2/v1")),
        timeout=7.0,
        connect_timeout=1.5,
    )
    with EmbeddingClient(config) as client:
        sdks = client._sdks
        assert len(sdks) == 3  # the two embedding endpoints, then the default reranker's
        assert all(isinstance(s, openai.OpenAI) for s in sdks)
        assert [s.max_retries for s in sdks] == [0, 0, 0]
        assert str(sdks[2].base_url).rstrip("/") == "http://127.0.0.1:30001/v1"
        timeout = sdks[0].timeout
        assert isinstance(timeout, openai.Timeout)
        assert (timeout.read, timeout.connect) == (7.0, 1.5)


def test_the_key_goes_out_as_a_bearer_token_and_nowhere_else(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeSGLang(dim=16, api_key=SECRET) as server, caplog.at_level(logging.DEBUG):
        client = make_client(config_for(server, api_key=SECRET))
        client.embed_documents(["Dune"])
        server.fail_next(503, message=f"overloaded (echoing {SECRET})")
        client.embed_documents(["Emma"])
        server.fail_next(400, message=f"bad request from {SECRET}")
        with pytest.raises(EmbeddingRejected) as info:
            client.embed_documents(["Ulysses"])
        log = server.log
    assert {entry.headers.get("authorization") for entry in log} == {f"Bearer {SECRET}"}
    assert SECRET not in str(info.value)
    assert "***" in str(info.value)
    assert caplog.records  # the SDK and the client did log at DEBUG
    assert all(SECRET not in record.getMessage() for record in caplog.records)
    assert SECRET not in caplog.text


def test_a_wrong_key_is_rejected_not_retried(make_client: MakeClient) -> None:
    with FakeSGLang(dim=16, api_key=SECRET) as server:
        client = make_client(config_for(server, api_key="wrong-key"))
        with pytest.raises(EmbeddingRejected, match="401") as info:
            client.embed_documents(["Dune", "Emma"])
        assert server.embedding_request_count == 0  # refused before the handler records it
        assert len([e for e in server.log if e.method == "POST"]) == 1
    assert info.value.status_code == 401
    assert info.value.index is None
    assert "wrong-key" not in str(info.value)
