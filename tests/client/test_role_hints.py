"""Role hints: extra request fields (and a model name) per role, as data; validated, sent by
both clients, part of cache keys and of the recorded formats, configurable from the env."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bookrec.client import (
    DEFAULT_INSTRUCTION,
    PROMPT_PRESETS,
    ClientConfig,
    ConfigurationError,
    EmbeddingCache,
    EmbeddingRejected,
    ModelIdentity,
    PromptTemplate,
)
from bookrec.client._cache import cache_key
from bookrec.client.testing import FakeSGLang, fake_vector
from tests.client.conftest import MakeClient, config_for

HINTED = PromptTemplate(
    query="{text}",
    document="{text}",
    query_fields={"input_type": "query"},
    document_fields={"input_type": "passage"},
)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"query_fields": {"input": "x"}}, "may not set 'input'"),
        ({"document_fields": {"model": "m"}}, "query_model / document_model"),
        ({"query_fields": {"encoding_format": "float"}}, "encoding_format"),
        ({"document_fields": {"dimensions": 64}}, "dimensions"),
        ({"query_fields": {"input_type": ["query"]}}, "JSON scalar"),
        ({"query_fields": {"options": {"a": 1}}}, "JSON scalar"),
        ({"query_fields": {"weight": float("nan")}}, "finite"),
        ({"query_fields": {"": "x"}}, "names must be strings"),
        ({"query_fields": {1: "x"}}, "names must be strings"),
        ({"query_fields": [("input_type", "query")]}, "mapping"),
        ({"query_model": " "}, "non-empty"),
        ({"document_model": 3}, "non-empty"),
    ],
)
def test_role_hints_are_validated(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        PromptTemplate(**changes)


def test_scalars_of_every_json_kind_are_accepted() -> None:
    fields = {"input_type": "query", "truncate": True, "priority": 2, "temperature": 0.5, "x": None}
    template = PromptTemplate(query_fields=fields)
    assert dict(template.query_fields) == fields
    fields["input_type"] = "changed"  # the template holds its own copy
    assert template.query_fields["input_type"] == "query"
    assert hash(template) == hash(PromptTemplate(query_fields=dict(template.query_fields)))


def test_each_role_sends_its_fields_and_model(
    fake_server: FakeSGLang, make_client: MakeClient
) -> None:
    prompts = PromptTemplate(
        query="{text}",
        document="{text}",
        query_fields={"input_type": "search_query", "truncate": True},
        document_fields={"input_type": "search_document"},
        document_model="embed-documents",
    )
    client = make_client(config_for(fake_server, prompts=prompts))
    client.embed_documents(["Dune", "Emma"])
    client.embed_queries(["desert planets"])
    docs, query = fake_server.requests
    assert docs == {
        "input": ["Dune", "Emma"],
        "model": "embed-documents",
        "encoding_format": "base64",
        "input_type": "search_document",
    }
    assert query == {
        "input": ["desert planets"],
        "model": "Qwen/Qwen3-Embedding-0.6B",
        "encoding_format": "base64",
        "input_type": "search_query",
        "truncate": True,
    }


def test_symmetric_documents_take_the_query_role(
    fake_server: FakeSGLang, make_client: MakeClient
) -> None:
    prompts = PromptTemplate(
        query="query: {text}",
        document="passage: {text}",
        symmetric=True,
        query_fields={"input_type": "query"},
        document_fields={"input_type": "passage"},
        query_model="e5-query",
    )
    client = make_client(config_for(fake_server, prompts=prompts))
    client.embed_documents(["Dune"])
    (body,) = fake_server.requests
    assert (body["input"], body["input_type"], body["model"]) == (
        ["query: Dune"],
        "query",
        "e5-query",
    )


def test_a_server_honouring_the_fields_makes_role_vectors(make_client: MakeClient) -> None:
    with FakeSGLang(model_path="multilingual-e5-small-q4", role_prefixes=True) as server:
        client = make_client(config_for(server, prompts=HINTED))
        doc = client.embed_documents(["Dune"])
        query = client.embed_queries(["Dune"])
        assert server.embedded_texts == ["Dune", "Dune"]  # the server adds the prefixes
    np.testing.assert_allclose(doc[0], fake_vector("passage: Dune", 64), atol=1e-6)
    np.testing.assert_allclose(query[0], fake_vector("query: Dune", 64), atol=1e-6)


def test_a_per_role_model_name_selects_the_role_too(make_client: MakeClient) -> None:
    prompts = PromptTemplate(
        query="{text}", document="{text}", query_model="e5-query", document_model="e5-passage"
    )
    with FakeSGLang(model_path="multilingual-e5-small-q4", role_prefixes=True) as server:
        client = make_client(config_for(server, prompts=prompts))
        doc = client.embed_documents(["Dune"])
        query = client.embed_queries(["Dune"])
        assert [b["model"] for b in server.requests] == ["e5-passage", "e5-query"]
    np.testing.assert_allclose(doc[0], fake_vector("passage: Dune", 64), atol=1e-6)
    np.testing.assert_allclose(query[0], fake_vector("query: Dune", 64), atol=1e-6)


def test_a_server_refusing_configured_fields_is_a_clear_error(make_client: MakeClient) -> None:
    with FakeSGLang(strict_fields=True) as server:
        client = make_client(config_for(server, prompts=HINTED))
        with pytest.raises(EmbeddingRejected, match="Extra inputs are not permitted: input_type"):
            client.embed_documents(["Dune"])


def test_cache_keys_differ_by_role_fields(
    fake_server: FakeSGLang, make_client: MakeClient, tmp_path: Path
) -> None:
    other = PromptTemplate(
        query="{text}",
        document="{text}",
        query_fields={"input_type": "query"},
        document_fields={"input_type": "document"},
    )
    with EmbeddingCache(tmp_path / "cache.sqlite") as cache:
        make_client(config_for(fake_server, prompts=HINTED), cache=cache).embed_documents(["Dune"])
        make_client(config_for(fake_server, prompts=HINTED), cache=cache).embed_documents(["Dune"])
        assert fake_server.embedding_request_count == 1  # same fields: from the cache
        make_client(config_for(fake_server, prompts=other), cache=cache).embed_documents(["Dune"])
        assert fake_server.embedding_request_count == 2  # other fields: another vector
        plain = PROMPT_PRESETS["plain"]
        make_client(config_for(fake_server, prompts=plain), cache=cache).embed_documents(["Dune"])
        assert fake_server.embedding_request_count == 3  # no fields at all: another again
        assert len(cache) == 3


def test_a_key_without_fields_is_the_key_bookrec_always_computed() -> None:
    identity = ModelIdentity("Qwen/Qwen3-Embedding-0.6B", 1024)
    old = cache_key(identity, "document", "", "Dune")
    assert cache_key(identity, "document", "", "Dune", "") == old
    assert cache_key(identity, "document", "", "Dune", '{"input_type":"passage"}') != old
    assert cache_key(identity, "document", "", "Dune", '{"model":"m"}') != cache_key(
        identity, "document", "", "Dune", '{"input_type":"passage"}'
    )


def test_the_recorded_formats_show_the_fields() -> None:
    formats = PromptTemplate(
        query="{text}",
        document="{text}",
        query_fields={"input_type": "query"},
        document_fields={"z": 1, "input_type": "passage"},
        document_model="docs",
    ).formats()
    assert formats.document == '{text} | request {"input_type":"passage","model":"docs","z":1}'
    assert formats.query == '{text} | request {"input_type":"query"}'
    qwen3 = PromptTemplate().formats()  # unchanged: indexes built before role hints still match
    assert qwen3.document == "{text}"
    assert qwen3.query == f"Instruct: {DEFAULT_INSTRUCTION}\nQuery:{{text}}"


def test_role_hints_from_the_environment() -> None:
    config = ClientConfig.from_env(
        environ={
            "BOOKREC_PROMPT_PRESET": "plain",
            "BOOKREC_QUERY_FIELDS": '{"input_type": "query"}',
            "BOOKREC_DOCUMENT_FIELDS": '{"input_type": "passage", "truncate": true}',
            "BOOKREC_QUERY_MODEL": "e5-query",
            "BOOKREC_DOCUMENT_MODEL": "e5-passage",
        }
    )
    assert config.prompts == PromptTemplate(
        query="{text}",
        document="{text}",
        query_fields={"input_type": "query"},
        document_fields={"input_type": "passage", "truncate": True},
        query_model="e5-query",
        document_model="e5-passage",
    )
    preset = ClientConfig.from_env(environ={"BOOKREC_PROMPT_PRESET": "e5-input-type"})
    assert preset.prompts == HINTED


def test_templates_from_the_environment() -> None:
    config = ClientConfig.from_env(
        environ={
            "BOOKREC_QUERY_PROMPT": "Represent this query: {text}",
            "BOOKREC_DOCUMENT_PROMPT": "Title and text:\\n{text}",
        }
    )
    assert config.prompts is not None
    assert config.prompts.format_query("tea") == "Represent this query: tea"
    assert config.prompts.format_document("Dune") == "Title and text:\nDune"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BOOKREC_QUERY_FIELDS": "{input_type: query}"}, "BOOKREC_QUERY_FIELDS has an invalid"),
        ({"BOOKREC_DOCUMENT_FIELDS": '["passage"]'}, "BOOKREC_DOCUMENT_FIELDS has an invalid"),
        ({"BOOKREC_QUERY_FIELDS": '{"model": "m"}'}, "may not set 'model'.*prompt variables"),
        ({"BOOKREC_QUERY_FIELDS": '{"a": [1]}'}, "JSON scalar"),
        ({"BOOKREC_PROMPT_PRESET": "bert"}, "auto or one of qwen3, e5, e5-input-type"),
        (
            {"BOOKREC_PROMPT_PRESET": "auto", "BOOKREC_INSTRUCTION": "x"},
            "BOOKREC_PROMPT_PRESET=auto .* BOOKREC_INSTRUCTION",
        ),
        ({"BOOKREC_QUERY_PROMPT": "no placeholder"}, "must contain"),
    ],
)
def test_bad_prompt_variables_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ClientConfig.from_env(environ=env)
