"""The CPU server as a reranker (``--reranker``): a tiny random ``Qwen3ForCausalLM`` built by the
test, served by ``python -m bookrec.cpu_server`` as a real process, called over real HTTP and
through bookrec's own client; scores checked against a direct transformers computation."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bookrec.client import (
    SGLANG_REQUEST_ERRORS,
    SGLANG_RERANK_ERRORS,
    AsyncEmbeddingClient,
    ClientConfig,
    EmbeddingClient,
    EmbeddingRejected,
    Endpoint,
    RerankResult,
    RetryPolicy,
)
from bookrec.client.testing import QWEN3_RERANK_DEFAULT_INSTRUCTION, FakeSGLang
from tests.serving.conftest import (
    API_KEY,
    CPU_SERVER_MODULE,
    RERANK_DEFAULT_INSTRUCTION,
    RERANK_HEAD,
    RERANK_TAIL,
    RerankReference,
    RunningServer,
    clean_env,
    free_port,
    serving,
    wait_until,
)

CONTEXT = 256  # the prompt's fixed head and tail take about 60 tokens of the tiny tokenizer
QUERY = "a quiet detective story"
DOCUMENTS = [
    "A quiet detective story set in Kyoto, told by a retired bookseller.",
    "Poems about rivers, mountains and the long road home.",
    "一本关于江南园林与文人生活的散文集",
    "What happened aboard the generation ship?",
    "The history of the printing press and how cheap books changed Europe.",
]
INSTRUCTION = "Given a reader's request, judge whether this book matches it"
FLAT_ERROR_KEYS = {"object", "message", "type", "param", "code"}
TOLERANCE = 1e-5


@dataclass
class RerankServer:
    process: subprocess.Popen[bytes]
    port: int
    model_path: str
    stderr: Path

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEY}"}

    def rerank(self, body: Any, *, key: str | None = API_KEY) -> httpx.Response:
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        return httpx.post(f"{self.base_url}/rerank", json=body, headers=headers, timeout=60)

    def ranked(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        response = self.rerank(body)
        assert response.status_code == 200, response.text
        results = response.json()
        assert isinstance(results, list)
        return results

    def batching(self) -> dict[str, Any]:
        info = httpx.get(f"{self.root_url}/model_info", headers=self.headers(), timeout=10)
        info.raise_for_status()
        return dict(info.json()["batching"])


def start(model: Path, stderr: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        CPU_SERVER_MODULE,
        "--model",
        str(model),
        "--reranker",
        "--port",
        str(port),
        "--context-length",
        str(CONTEXT),
        "--threads",
        "1",
        *extra,
    ]
    with stderr.open("wb") as err:
        process = subprocess.Popen(
            argv, env=clean_env(BOOKREC_API_KEY=API_KEY), stdout=subprocess.DEVNULL, stderr=err
        )
    return process, port


@pytest.fixture(scope="module")
def reranker(
    tiny_reranker: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RerankServer]:
    """``python -m bookrec.cpu_server --reranker`` on the tiny reranker, with the key set."""
    stderr = tmp_path_factory.mktemp("cpu-reranker-logs") / "stderr.txt"
    process, port = start(tiny_reranker, stderr, "--batch-wait-ms", "30")
    server = RerankServer(process, port, str(tiny_reranker), stderr)
    with serving(process, stderr, "the CPU reranker"):
        yield server


def by_index(results: list[dict[str, Any]]) -> dict[int, float]:
    return {item["index"]: item["score"] for item in results}


def assert_scores(got: dict[int, float], expected: list[float]) -> None:
    assert sorted(got) == list(range(len(expected)))
    for index, score in got.items():
        assert abs(score - expected[index]) <= TOLERANCE, (index, score, expected[index])


# --------------------------------------------------------------------------- the format


def test_the_prompt_is_the_model_cards() -> None:
    """The server's prompt pieces are the model card's (written out again in conftest)."""
    from bookrec.cpu_server.reranker import (
        DEFAULT_INSTRUCTION,
        PROMPT_HEAD,
        PROMPT_TAIL,
        rerank_prompt,
    )

    assert PROMPT_HEAD == RERANK_HEAD
    assert PROMPT_TAIL == RERANK_TAIL
    assert DEFAULT_INSTRUCTION == RERANK_DEFAULT_INSTRUCTION == QWEN3_RERANK_DEFAULT_INSTRUCTION
    assert rerank_prompt("Task", "Q?", "Doc") == (
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the "
        'Query and the Instruct provided. Note that the answer can only be "yes" or "no".'
        "<|im_end|>\n<|im_start|>user\n<Instruct>: Task\n<Query>: Q?\n<Document>: Doc"
        "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    # SGLang 0.5.23 recognises a Qwen3 reranker chat template by this sentence.
    assert 'answer can only be "yes" or "no"' in PROMPT_HEAD.lower()


# --------------------------------------------------------------------------- scores


@pytest.mark.parametrize("instruction", [INSTRUCTION, None, ""])
def test_scores_equal_a_direct_transformers_computation(
    reranker: RerankServer, rerank_reference: RerankReference, instruction: str | None
) -> None:
    """P("yes") over yes/no at the last position, within 1e-5; no instruct (or an empty one,
    as SGLang renders it) means the model card's default instruction."""
    body: dict[str, Any] = {"query": QUERY, "documents": DOCUMENTS}
    if instruction is not None:
        body["instruct"] = instruction
    expected = rerank_reference.scores(QUERY, DOCUMENTS, instruction or None)
    results = reranker.ranked(body)
    assert_scores(by_index(results), expected)
    # Random weights, yet the documents are told apart: the test would see a mix-up.
    assert max(expected) - min(expected) > 0.01


def test_results_are_sorted_best_first_with_documents_and_meta_info(
    reranker: RerankServer, rerank_reference: RerankReference
) -> None:
    results = reranker.ranked({"query": QUERY, "documents": DOCUMENTS, "instruct": INSTRUCTION})
    scores = [item["score"] for item in results]
    assert scores == sorted(scores, reverse=True)
    assert sorted(item["index"] for item in results) == list(range(len(DOCUMENTS)))
    assert all(0.0 <= score <= 1.0 for score in scores)
    for item in results:
        assert list(item) == ["score", "document", "index", "meta_info"]
        assert item["document"] == DOCUMENTS[item["index"]]  # return_documents defaults on
        meta = item["meta_info"]
        assert meta["id"].startswith("rerank-")
        ids = rerank_reference.prompt_ids(QUERY, DOCUMENTS[item["index"]], INSTRUCTION)
        assert meta["prompt_tokens"] == len(ids)
        assert meta["e2e_latency"] >= 0
    assert len({item["meta_info"]["id"] for item in results}) == len(results)


def test_the_shapes_match_the_fake_sglang_reranker(reranker: RerankServer) -> None:
    """Same keys, order and types as bookrec's fake of SGLang 0.5.23 (the client's contract)."""
    body = {"query": QUERY, "documents": DOCUMENTS[:3], "top_n": 2, "return_documents": False}
    with FakeSGLang(reranker=True, api_key=API_KEY) as fake:
        expected = httpx.post(f"{fake.base_url}/rerank", json=body, headers=reranker.headers())
    got = reranker.rerank(body)
    assert got.status_code == expected.status_code == 200
    assert [list(item) for item in got.json()] == [list(item) for item in expected.json()]
    for mine, theirs in zip(got.json(), expected.json(), strict=True):
        assert set(mine["meta_info"]) == set(theirs["meta_info"])
        assert {k: type(v) for k, v in mine.items()} == {k: type(v) for k, v in theirs.items()}


def test_ties_keep_the_earlier_document(reranker: RerankServer) -> None:
    results = reranker.ranked({"query": QUERY, "documents": ["Same book.", "Same book."]})
    assert [item["index"] for item in results] == [0, 1]
    assert results[0]["score"] == results[1]["score"]


@pytest.mark.parametrize("top_n", [1, 2, 5, 50])
def test_top_n_keeps_the_best(
    reranker: RerankServer, rerank_reference: RerankReference, top_n: int
) -> None:
    expected = rerank_reference.scores(QUERY, DOCUMENTS)
    best = sorted(range(len(DOCUMENTS)), key=lambda i: -expected[i])[:top_n]
    results = reranker.ranked({"query": QUERY, "documents": DOCUMENTS, "top_n": top_n})
    assert len(results) == min(top_n, len(DOCUMENTS))
    assert [item["index"] for item in results] == best
    for item in results:
        assert abs(item["score"] - expected[item["index"]]) <= TOLERANCE


def test_return_documents_false_leaves_the_documents_out(reranker: RerankServer) -> None:
    results = reranker.ranked(
        {"query": QUERY, "documents": DOCUMENTS, "return_documents": False, "top_n": 3}
    )
    assert len(results) == 3
    assert all("document" not in item for item in results)
    assert all(list(item) == ["score", "index", "meta_info"] for item in results)


def test_one_request_is_one_batch_on_the_worker(reranker: RerankServer) -> None:
    before = reranker.batching()
    reranker.ranked({"query": QUERY, "documents": DOCUMENTS})
    after = reranker.batching()
    assert after["requests"] - before["requests"] == 1
    assert after["texts"] - before["texts"] == len(DOCUMENTS)
    assert after["forward_passes"] - before["forward_passes"] == 1
    assert after["max_texts_per_forward"] >= len(DOCUMENTS)


def test_concurrent_requests_share_forward_passes(
    reranker: RerankServer, rerank_reference: RerankReference
) -> None:
    n = 6
    before = reranker.batching()
    barrier = threading.Barrier(n)
    results: dict[int, list[dict[str, Any]]] = {}

    def call(i: int) -> None:
        barrier.wait()
        results[i] = reranker.ranked({"query": QUERY, "documents": [DOCUMENTS[i % 5]]})

    threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    after = reranker.batching()
    assert after["requests"] - before["requests"] == n
    assert after["batches"] - before["batches"] < n
    expected = rerank_reference.scores(QUERY, DOCUMENTS)
    for i in range(n):
        (item,) = results[i]
        assert abs(item["score"] - expected[i % 5]) <= TOLERANCE


# --------------------------------------------------------------------------- errors


def flat_error(response: httpx.Response, status: int = 400) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == FLAT_ERROR_KEYS
    assert body["object"] == "error" and body["code"] == status and body["param"] is None
    assert body["type"] == "BadRequestError"
    return str(body["message"])


RERANK_ERROR_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("empty query", {"query": "", "documents": ["a"]}, SGLANG_RERANK_ERRORS["empty_query"]),
    ("blank query", {"query": " \n", "documents": ["a"]}, SGLANG_RERANK_ERRORS["blank_query"]),
    ("no documents", {"query": "q", "documents": []}, SGLANG_RERANK_ERRORS["no_documents"]),
    (
        "empty document",
        {"query": "q", "documents": ["a", ""]},
        SGLANG_RERANK_ERRORS["empty_document"],
    ),
    (
        "blank document",
        {"query": "q", "documents": ["a", "  \t"]},
        SGLANG_RERANK_ERRORS["blank_document"],
    ),
    ("top_n 0", {"query": "q", "documents": ["a"], "top_n": 0}, SGLANG_RERANK_ERRORS["top_n"]),
    ("top_n -1", {"query": "q", "documents": ["a"], "top_n": -1}, SGLANG_RERANK_ERRORS["top_n"]),
    (
        "no query",
        {"documents": ["a"]},
        "query must be a string and documents a list of strings",
    ),
    (
        "documents a string",
        {"query": "q", "documents": "a"},
        "query must be a string and documents a list of strings",
    ),
    (
        "instruct not a string",
        {"query": "q", "documents": ["a"], "instruct": 3},
        "instruct must be a string",
    ),
]


@pytest.mark.parametrize(
    ("case", "body", "message"), RERANK_ERROR_CASES, ids=[c[0] for c in RERANK_ERROR_CASES]
)
def test_invalid_requests_get_sglangs_400s_as_the_fake_does(
    reranker: RerankServer, case: str, body: dict[str, Any], message: str
) -> None:
    with FakeSGLang(reranker=True, api_key=API_KEY) as fake:
        expected = httpx.post(f"{fake.base_url}/rerank", json=body, headers=reranker.headers())
    got = reranker.rerank(body)
    assert flat_error(got) == message, case
    assert got.json() == expected.json(), case


def test_the_key_is_enforced(reranker: RerankServer) -> None:
    body = {"query": "q", "documents": ["a"]}
    for key in (None, "wrong"):
        response = reranker.rerank(body, key=key)
        assert response.status_code == 401
        assert response.json() == {"error": "Unauthorized"}
    assert reranker.rerank(body).status_code == 200


def test_embeddings_answer_sglangs_400_for_a_reranker(reranker: RerankServer) -> None:
    """As SGLang launched without --is-embedding does (and the fake in reranker mode)."""
    got = httpx.post(
        f"{reranker.base_url}/embeddings", json={"input": "hello"}, headers=reranker.headers()
    )
    assert flat_error(got) == SGLANG_REQUEST_ERRORS["not_embedding_model"]
    with FakeSGLang(reranker=True, api_key=API_KEY) as fake:
        expected = httpx.post(
            f"{fake.base_url}/embeddings", json={"input": "hello"}, headers=reranker.headers()
        )
    assert got.json() == expected.json()


def test_an_embedding_server_refuses_to_rerank(cpu_server: RunningServer) -> None:
    response = httpx.post(
        f"{cpu_server.base_url}/rerank",
        json={"query": "q", "documents": ["a"]},
        headers=cpu_server.headers(),
    )
    assert "not a rerank model" in flat_error(response)
    assert "--reranker" in response.json()["message"]


def test_a_document_too_long_for_the_context_is_refused(reranker: RerankServer) -> None:
    """One document too long fails its request (SGLang does not truncate either)."""
    response = reranker.rerank({"query": QUERY, "documents": ["fine", "word " * 300]})
    assert "longer than the model's context length" in flat_error(response)


def test_a_huge_document_costs_no_more_than_the_context(reranker: RerankServer) -> None:
    """A 4 MB document is cut at the character cap before tokenizing, then refused."""
    started = time.monotonic()
    response = reranker.rerank({"query": QUERY, "documents": ["fine", "x" * 4_000_000]})
    elapsed = time.monotonic() - started
    message = flat_error(response)
    assert "longer than the" in message
    assert elapsed < 5.0, elapsed
    info = httpx.get(f"{reranker.root_url}/model_info", headers=reranker.headers()).json()
    assert info["max_input_characters"] < 8 * CONTEXT


def test_a_cut_document_whose_head_fits_is_refused_not_truncated(
    reranker: RerankServer, rerank_reference: RerankReference
) -> None:
    info = httpx.get(f"{reranker.root_url}/model_info", headers=reranker.headers()).json()
    cap = info["max_input_characters"]  # of the user text: instruction, query, document
    document = " Document" * 180  # one token each in the tiny tokenizer
    assert len(document) > cap
    head = rerank_reference.prompt_ids("q", document[:cap], "judge")  # longer than the cut
    assert len(head) < CONTEXT - 6  # what was cut would fit: still refused, never scored cut
    body = {"query": "q", "documents": ["fine", document], "instruct": "judge"}
    message = flat_error(reranker.rerank(body))
    assert f"Document at index 1 is longer than the server's cap of {cap} characters" in message
    fits = {"query": "q", "documents": [" Document" * 100], "instruct": "judge"}
    assert reranker.rerank(fits).status_code == 200


def test_the_query_repeated_per_document_is_bounded(tiny_reranker: Path, tmp_path: Path) -> None:
    """Each document repeats the query: a request may tokenize no more characters in all
    than --max-body-bytes, however few bytes it sends."""
    process, port = start(tiny_reranker, tmp_path / "stderr.txt", "--max-body-bytes", "20000")
    try:
        wait_until(
            lambda: (
                process.poll() is not None or "ready: " in (tmp_path / "stderr.txt").read_text()
            ),
            timeout=90,
            what="the small reranker",
        )
        url = f"http://127.0.0.1:{port}/v1/rerank"
        headers = {"Authorization": f"Bearer {API_KEY}"}
        query = "q" * 1000  # 1 kB, yet repeated 40 times
        body = {"query": query, "documents": ["d"] * 40}
        response = httpx.post(url, json=body, headers=headers, timeout=30)
        message = flat_error(response)
        assert "more than the server's cap of 20000 characters per request" in message
        small = {"query": "short", "documents": ["d"] * 40}
        assert httpx.post(url, json=small, headers=headers, timeout=30).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=40) == 0


# --------------------------------------------------------------------------- routes


@pytest.mark.parametrize("route", ["/server_info", "/get_server_info"])
def test_server_info_says_it_is_no_embedding_server(reranker: RerankServer, route: str) -> None:
    info = httpx.get(reranker.root_url + route, headers=reranker.headers())
    assert info.status_code == 200
    assert info.json()["is_embedding"] is False
    assert API_KEY not in info.text


def test_model_info_describes_the_reranker(
    reranker: RerankServer, rerank_reference: RerankReference
) -> None:
    info = httpx.get(f"{reranker.root_url}/model_info", headers=reranker.headers()).json()
    assert info["is_generation"] is True
    assert info["architectures"] == ["Qwen3ForCausalLM"]
    assert "embedding" not in info
    tokenizer = rerank_reference.tokenizer
    assert info["rerank"]["yes_token_id"] == tokenizer.convert_tokens_to_ids("yes")
    assert info["rerank"]["no_token_id"] == tokenizer.convert_tokens_to_ids("no")
    assert info["context_length"] == CONTEXT


def test_health_and_readiness(reranker: RerankServer) -> None:
    for route in ("/ready", "/health", "/health_generate", "/ping"):
        assert httpx.get(reranker.root_url + route, timeout=30).status_code == 200, route


def test_help_documents_the_flag() -> None:
    result = subprocess.run(
        [sys.executable, "-m", CPU_SERVER_MODULE, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=clean_env(),
    )
    assert "--reranker" in result.stdout
    assert "/v1/rerank" in result.stdout and "Qwen3-Reranker" in result.stdout


def test_a_tokenizer_without_yes_and_no_is_refused_at_start_up(
    tiny_model: Path, tmp_path: Path
) -> None:
    """The embedding test model's tokenizer has no "yes" token: the server says so and exits."""
    stderr = tmp_path / "stderr.txt"
    process, _port = start(tiny_model, stderr)
    try:
        code = process.wait(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
    text = stderr.read_text()
    assert code == 1, text
    assert "the tokenizer has no 'yes' token" in text


# --------------------------------------------------------------------------- bookrec's client


def client_config(server: RerankServer, **changes: Any) -> ClientConfig:
    base = ClientConfig(
        endpoints=(Endpoint(server.base_url, api_key=API_KEY),),
        rerank_endpoints=(Endpoint(server.base_url, api_key=API_KEY),),
        retry=RetryPolicy(max_attempts=1),
    )
    return base.with_options(**changes)


def expected_ranking(
    reference: RerankReference, documents: list[str], instruction: str
) -> list[RerankResult]:
    scores = reference.scores(QUERY, documents, instruction)
    order = sorted(range(len(documents)), key=lambda i: (-scores[i], i))
    return [RerankResult(i, scores[i]) for i in order]


def assert_ranking(got: list[RerankResult], expected: list[RerankResult]) -> None:
    assert [r.index for r in got] == [r.index for r in expected]
    for mine, theirs in zip(got, expected, strict=True):
        assert abs(mine.score - theirs.score) <= TOLERANCE


def test_the_client_reranks_against_the_cpu_server(
    reranker: RerankServer, rerank_reference: RerankReference
) -> None:
    config = client_config(reranker)
    with EmbeddingClient(config) as client:
        got = client.rerank(QUERY, DOCUMENTS)
        best = client.rerank(QUERY, DOCUMENTS, instruction=INSTRUCTION, top_n=2)
    assert_ranking(got, expected_ranking(rerank_reference, DOCUMENTS, config.rerank_instruction))
    assert_ranking(best, expected_ranking(rerank_reference, DOCUMENTS, INSTRUCTION)[:2])


def test_the_client_merges_batches_from_the_cpu_server(
    reranker: RerankServer, rerank_reference: RerankReference
) -> None:
    """Five documents in batches of two: three requests, one ranking, cut to top_n."""
    config = client_config(reranker, rerank_batch_size=2)
    before = reranker.batching()
    with EmbeddingClient(config) as client:
        got = client.rerank(QUERY, DOCUMENTS, instruction=INSTRUCTION, top_n=4)
    assert reranker.batching()["requests"] - before["requests"] == 3
    assert_ranking(got, expected_ranking(rerank_reference, DOCUMENTS, INSTRUCTION)[:4])


def test_the_async_client_reranks_against_the_cpu_server(
    reranker: RerankServer, rerank_reference: RerankReference
) -> None:
    async def run() -> list[RerankResult]:
        async with AsyncEmbeddingClient(client_config(reranker, rerank_batch_size=3)) as client:
            return await client.rerank(QUERY, DOCUMENTS, instruction=INSTRUCTION)

    got = asyncio.run(run())
    assert_ranking(got, expected_ranking(rerank_reference, DOCUMENTS, INSTRUCTION))


def test_the_client_sees_the_servers_key(reranker: RerankServer) -> None:
    wrong = client_config(reranker, rerank_endpoints=(Endpoint(reranker.base_url, api_key="nope"),))
    with EmbeddingClient(wrong) as client, pytest.raises(EmbeddingRejected) as rejected:
        client.rerank(QUERY, DOCUMENTS)
    assert rejected.value.status_code == 401
