"""The CPU server for real: a tiny Qwen3 built by the test, served through
`launch_server.sh --cpu`, called with plain HTTP and with the openai SDK."""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from bookrec.client import DEFAULT_INSTRUCTION
from bookrec.client.testing import FakeSGLang
from tests.serving.conftest import (
    API_KEY,
    CONTEXT_LENGTH,
    EOT,
    Reference,
    RunningServer,
    clean_env,
    free_port,
    run_launch,
)

TEXTS = [
    "A quiet detective story set in Kyoto.",
    f"Instruct: {DEFAULT_INSTRUCTION}\nQuery:a sweeping space opera about generation ships",
    "一本关于江南园林的散文集",
    "Poems",
]
FLAT_ERROR_KEYS = {"object", "message", "type", "param", "code"}


def floats(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    body = response.json()
    assert [item["index"] for item in body["data"]] == list(range(len(body["data"])))
    rows = []
    for item in body["data"]:
        emb = item["embedding"]
        if isinstance(emb, str):
            rows.append(np.frombuffer(base64.b64decode(emb), dtype="<f4"))
        else:
            rows.append(np.asarray(emb, dtype=np.float32))
    return np.stack(rows)


@pytest.fixture(scope="module")
def sdk(cpu_server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=cpu_server.base_url, api_key=API_KEY, max_retries=0, timeout=30)


# --------------------------------------------------------------------------- vectors


def test_launcher_printed_the_base_url_and_a_curl_example(cpu_server: RunningServer) -> None:
    stdout = cpu_server.stdout.read_text()
    assert f"Embedding service ready: {cpu_server.base_url}" in stdout
    assert f"curl -s {cpu_server.base_url}/embeddings" in stdout
    assert API_KEY not in stdout + cpu_server.stderr.read_text()


def test_float_vectors_equal_a_direct_transformers_computation(
    cpu_server: RunningServer, reference: Reference
) -> None:
    response = cpu_server.post({"input": TEXTS, "model": "anything"})
    got = floats(response)
    np.testing.assert_allclose(got, reference.embed(TEXTS), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    body = response.json()
    assert body["model"] == cpu_server.model_path
    assert body["object"] == "list"
    assert {item["object"] for item in body["data"]} == {"embedding"}
    tokens = sum(len(reference.token_ids(text)) for text in TEXTS)
    assert body["usage"] == {
        "prompt_tokens": tokens,
        "total_tokens": tokens,
        "completion_tokens": 0,
        "prompt_tokens_details": None,
        "reasoning_tokens": 0,
    }


def test_single_string_input(cpu_server: RunningServer, reference: Reference) -> None:
    got = floats(cpu_server.post({"input": TEXTS[2]}))
    np.testing.assert_allclose(got, reference.embed([TEXTS[2]]), atol=1e-5)


def test_base64_is_little_endian_float32_of_the_same_vectors(
    cpu_server: RunningServer, reference: Reference
) -> None:
    response = cpu_server.post({"input": TEXTS, "encoding_format": "base64"})
    assert all(isinstance(item["embedding"], str) for item in response.json()["data"])
    np.testing.assert_allclose(floats(response), reference.embed(TEXTS), atol=1e-5)


def test_dimensions_truncate_then_renormalise(
    cpu_server: RunningServer, reference: Reference
) -> None:
    got = floats(cpu_server.post({"input": TEXTS, "dimensions": 32}))
    assert got.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(got, reference.embed(TEXTS, dimensions=32), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_end_of_text_comes_from_the_tokenizer_once(
    cpu_server: RunningServer, reference: Reference
) -> None:
    response = httpx.post(
        f"{cpu_server.root_url}/v1/tokenize",
        json={"prompt": "Poems"},
        headers=cpu_server.headers(),
        timeout=10,
    )
    tokens = response.json()["tokens"]
    eot_id = reference.tokenizer.convert_tokens_to_ids(EOT)
    assert tokens[-1] == eot_id
    assert tokens.count(eot_id) == 1
    assert response.json()["max_model_len"] == CONTEXT_LENGTH
    info = httpx.get(f"{cpu_server.root_url}/model_info", headers=cpu_server.headers()).json()
    assert info["tokenizer_appends_end_of_text"] is True
    assert info["end_of_text_token_id"] == eot_id


def test_token_id_input_is_embedded_as_given(
    cpu_server: RunningServer, reference: Reference
) -> None:
    ids = [reference.token_ids(text) for text in TEXTS[:2]]
    got = floats(cpu_server.post({"input": ids}))
    np.testing.assert_allclose(got, reference.embed(TEXTS[:2]), atol=1e-5)


def test_openai_sdk_default_base64_and_float(
    sdk: openai.OpenAI, cpu_server: RunningServer, reference: Reference
) -> None:
    expected = reference.embed(TEXTS)
    default = sdk.embeddings.create(input=TEXTS, model="Qwen/Qwen3-Embedding-0.6B")
    as_float = sdk.embeddings.create(input=TEXTS, model="x", encoding_format="float")
    for result in (default, as_float):
        assert result.model == cpu_server.model_path
        got = np.array([item.embedding for item in result.data], dtype=np.float32)
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_openai_sdk_dimensions(sdk: openai.OpenAI, reference: Reference) -> None:
    result = sdk.embeddings.create(input=TEXTS[:2], model="x", dimensions=48)
    got = np.array([item.embedding for item in result.data], dtype=np.float32)
    np.testing.assert_allclose(got, reference.embed(TEXTS[:2], dimensions=48), atol=1e-5)


def test_openai_sdk_errors(sdk: openai.OpenAI, cpu_server: RunningServer) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.embeddings.create(input=["fine", "  "], model="x")
    assert bad.value.status_code == 400
    assert "Input at index 1 cannot be empty or whitespace only" in str(bad.value)
    no_key = openai.OpenAI(base_url=cpu_server.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        no_key.embeddings.create(input=["fine"], model="x")


def test_models_lists_the_served_model(cpu_server: RunningServer, sdk: openai.OpenAI) -> None:
    (model,) = sdk.models.list().data
    assert model.id == cpu_server.model_path
    raw = httpx.get(f"{cpu_server.base_url}/models", headers=cpu_server.headers()).json()
    assert raw["data"][0]["root"] == cpu_server.model_path
    assert raw["data"][0]["max_model_len"] == CONTEXT_LENGTH


@pytest.mark.parametrize("route", ["/server_info", "/get_server_info"])
def test_server_info_for_the_gateway(cpu_server: RunningServer, route: str) -> None:
    """smg polls these on its workers: server arguments and version, never the key."""
    assert httpx.get(cpu_server.root_url + route).status_code == 401
    info = httpx.get(cpu_server.root_url + route, headers=cpu_server.headers())
    assert info.status_code == 200
    body = info.json()
    assert body["model_path"] == cpu_server.model_path and body["is_embedding"] is True
    assert body["context_length"] == CONTEXT_LENGTH and body["version"]
    assert API_KEY not in info.text


# --------------------------------------------------------------------------- batching


def test_concurrent_requests_share_forward_passes(
    cpu_server: RunningServer, reference: Reference
) -> None:
    before = cpu_server.batching()
    n = 8
    barrier = threading.Barrier(n)
    results: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        barrier.wait()
        results[i] = floats(cpu_server.post({"input": [TEXTS[i % len(TEXTS)]]}))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    after = cpu_server.batching()
    assert after["requests"] - before["requests"] == n
    # Eight requests arrived together; far fewer batches (and forward passes) served them.
    assert after["batches"] - before["batches"] < n
    assert after["forward_passes"] - before["forward_passes"] < n
    assert after["max_requests_per_batch"] >= 2
    for i in range(n):
        text = TEXTS[i % len(TEXTS)]
        np.testing.assert_allclose(results[i], reference.embed([text]), atol=1e-5)


# --------------------------------------------------------------------------- errors


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = dict(response.json())
    if status != 401:
        assert set(body) == FLAT_ERROR_KEYS
        assert body["object"] == "error"
        assert body["code"] == status
        assert body["param"] is None
    return body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": ["ok", ""]}, "Input at index 1 cannot be empty or whitespace only"),
        ({"input": ["ok", " \n\t"]}, "Input at index 1 cannot be empty or whitespace only"),
        ({"input": []}, "Input cannot be empty"),
        ({"input": ""}, "Input cannot be empty"),
        ({"input": "   "}, "Input cannot be empty or whitespace only"),
        ({"input": ["ok", 3]}, "All items in input list must be strings"),
        ({"input": [[1, 2], []]}, "Input at index 1 cannot be empty"),
        ({"input": [1, -2]}, "Token ID at index 1 must be non-negative"),
        ({}, "input"),
        ({"input": "ok", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "ok", "dimensions": 0}, "Requested dimensions must be greater than 0"),
        ({"input": "ok", "dimensions": 16}, "at least 32"),
        (
            {"input": "ok", "dimensions": 65},
            "Provided dimensions are greater than max embedding dimension: 64",
        ),
        ({"input": "ok", "model": "qwen3:lora"}, "LoRA adapter 'lora' was requested"),
        ({"input": ["ok", "word " * 200]}, "longer than the model's context length"),
    ],
)
def test_invalid_requests_get_sglang_flat_400s(
    cpu_server: RunningServer, body: dict[str, Any], message: str
) -> None:
    error = error_of(cpu_server.post(body), 400)
    assert error["type"] == "BadRequestError"
    assert message in error["message"]


def test_length_limit_is_sglangs(cpu_server: RunningServer, reference: Reference) -> None:
    """Inputs of up to context length - 7 tokens (end-of-text included) are served."""

    def text_of(tokens: int) -> str:
        return next("x" * n for n in range(1, 600) if len(reference.token_ids("x" * n)) == tokens)

    limit = CONTEXT_LENGTH - 7
    fits = text_of(limit)
    np.testing.assert_allclose(
        floats(cpu_server.post({"input": [fits]})), reference.embed([fits]), atol=1e-5
    )
    error = error_of(cpu_server.post({"input": ["ok", text_of(limit + 1)]}), 400)
    assert error["message"].startswith(
        f"Input length ({limit + 1} tokens) exceeds the maximum allowed length ({limit + 1} tokens)"
    )


def test_non_json_content_type_is_refused(cpu_server: RunningServer) -> None:
    response = httpx.post(
        f"{cpu_server.base_url}/embeddings",
        content=b'{"input": "ok"}',
        headers={**cpu_server.headers(), "Content-Type": "text/plain"},
    )
    assert "application/json" in error_of(response, 400)["message"]
    broken = httpx.post(
        f"{cpu_server.base_url}/embeddings",
        content=b'{"input": ',
        headers={**cpu_server.headers(), "Content-Type": "application/json"},
    )
    error_of(broken, 400)


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_the_key_is_enforced(cpu_server: RunningServer, key: str | None) -> None:
    assert cpu_server.post({"input": "ok"}, key=key).json() == {"error": "Unauthorized"}
    assert cpu_server.post({"input": "ok"}, key=key).status_code == 401
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    for path in ("/v1/models", "/model_info"):
        response = httpx.get(cpu_server.root_url + path, headers=headers)
        assert response.status_code == 401
        assert response.json() == {"error": "Unauthorized"}


def test_health_endpoints_need_no_key(cpu_server: RunningServer) -> None:
    for path in ("/ready", "/health", "/health_generate"):
        assert httpx.get(cpu_server.root_url + path, timeout=30).status_code == 200


def test_unknown_route_is_a_404(cpu_server: RunningServer) -> None:
    response = httpx.get(f"{cpu_server.root_url}/nope", headers=cpu_server.headers())
    assert response.status_code == 404


ERROR_CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("empty item", {"input": ["ok", ""]}, API_KEY),
    ("whitespace item", {"input": ["ok", "   "]}, API_KEY),
    ("empty list", {"input": []}, API_KEY),
    ("bad encoding", {"input": "ok", "encoding_format": "int8"}, API_KEY),
    ("dimensions 0", {"input": "ok", "dimensions": 0}, API_KEY),
    ("dimensions too large", {"input": "ok", "dimensions": 65}, API_KEY),
    ("lora", {"input": "ok", "model": "qwen3:lora"}, API_KEY),
    ("missing key", {"input": "ok"}, None),
    ("wrong key", {"input": "ok"}, "nope"),
]


@pytest.mark.parametrize(("case", "body", "key"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_errors_match_the_fake_sglang_server(
    cpu_server: RunningServer, case: str, body: dict[str, Any], key: str | None
) -> None:
    """The fake SGLang server (tests/fake_sglang.py) and the CPU server answer alike."""
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    with FakeSGLang(
        model_path=cpu_server.model_path, dim=64, api_key=API_KEY, matryoshka=True
    ) as fake:
        expected = httpx.post(f"{fake.base_url}/embeddings", json=body, headers=headers)
    got = httpx.post(f"{cpu_server.base_url}/embeddings", json=body, headers=headers)
    assert got.status_code == expected.status_code, case
    assert set(got.json()) == set(expected.json()), case
    if expected.status_code == 401:
        assert got.json() == expected.json()
    else:
        assert got.json()["type"] == expected.json()["type"]
        assert got.json()["message"] == expected.json()["message"]


# --------------------------------------------------------------------------- start-up


def test_missing_model_offline_exits_with_a_clear_message() -> None:
    result = run_launch(
        "--cpu",
        "--model",
        "bookrec-tests/no-such-model",
        "--port",
        str(free_port()),
        env=clean_env(HF_HUB_OFFLINE="1"),
        timeout=120,
    )
    assert result.returncode == 1
    assert "cannot load model 'bookrec-tests/no-such-model'" in result.stderr
    assert "HF_HUB_OFFLINE" in result.stderr
    assert "--model /path/to/a/local/copy" in result.stderr
    assert "exited with status 1 before it was ready" in result.stderr


def test_missing_local_directory_is_named() -> None:
    result = run_launch(
        "--cpu", "--model", "/nonexistent/qwen3-embedding", "--port", str(free_port()), timeout=120
    )
    assert result.returncode == 1
    assert "model directory /nonexistent/qwen3-embedding does not exist" in result.stderr


def test_keep_alive_responses_are_not_delayed(cpu_server: RunningServer) -> None:
    """Nagle's algorithm plus delayed ACKs would hold every response ~40 ms on a kept-alive
    connection (headers and body are two writes)."""
    timings = []
    with httpx.Client(headers=cpu_server.headers(), timeout=10) as client:
        for _ in range(11):
            start = time.perf_counter()
            assert client.get(f"{cpu_server.base_url}/models").status_code == 200
            timings.append(time.perf_counter() - start)
    assert sorted(timings)[5] < 0.03, timings
