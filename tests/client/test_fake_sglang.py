"""The fake server itself behaves like SGLang where bookrec depends on it (DESIGN facts)."""

from __future__ import annotations

import base64
import concurrent.futures
import time
from collections.abc import Callable

import httpx
import numpy as np
import pytest

from bookrec.client import SGLANG_INPUT_ERRORS, SGLANG_REQUEST_ERRORS
from bookrec.client._sglang import is_request_level
from bookrec.client.testing import FakeSGLang, fake_token_count, fake_vector


def post(server: FakeSGLang, body: object, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{server.base_url}/embeddings", json=body, **kwargs)  # type: ignore[arg-type]


def test_vectors_are_deterministic_unit_float32() -> None:
    a, b = fake_vector("Dune", 32), fake_vector("Dune", 32)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-6
    assert not np.allclose(a, fake_vector("Dune ", 32))


def test_response_shape_and_model_path(fake_server: FakeSGLang) -> None:
    body = post(fake_server, {"input": ["a", "b"], "model": "served-name"}).json()
    assert body["model"] == "Qwen/Qwen3-Embedding-0.6B"  # the path, not the requested name
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert "id" not in body and "created" not in body
    assert body["usage"]["prompt_tokens"] == fake_token_count("a") + fake_token_count("b")
    np.testing.assert_allclose(body["data"][1]["embedding"], fake_vector("b", 64), atol=1e-7)


def test_base64_is_little_endian_float32(fake_server: FakeSGLang) -> None:
    body = post(fake_server, {"input": "a", "encoding_format": "base64"}).json()
    vec = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_array_equal(vec, fake_vector("a", 64))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": ["ok", " "]}, "Input at index 1 cannot be empty or whitespace only"),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "a", "dimensions": 32}, "does not support matryoshka"),
        ({"input": "a", "model": "qwen3:0.6b"}, "LoRA adapter '0.6b'"),
        ({"input": "x" * 200}, "exceeds the maximum allowed length"),
    ],
)
def test_flat_400_errors(body: dict[str, object], message: str) -> None:
    with FakeSGLang(max_input_tokens=20) as server:
        response = post(server, body)
    assert response.status_code == 400
    error = response.json()
    assert error["object"] == "error"
    assert error["code"] == 400
    assert error["type"] == "BadRequestError"
    assert message in error["message"]


def test_json_content_type_is_required(fake_server: FakeSGLang) -> None:
    response = httpx.post(
        f"{fake_server.base_url}/embeddings",
        content=b'{"input": "a"}',
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 400


def test_unauthorized_body() -> None:
    with FakeSGLang(api_key="k") as server:
        response = post(server, {"input": "a"})
        assert (response.status_code, response.json()) == (401, {"error": "Unauthorized"})
        ok = post(server, {"input": "a"}, headers={"Authorization": "Bearer k"})
        assert ok.status_code == 200


@pytest.mark.parametrize("route", ["/server_info", "/get_server_info"])
def test_server_info_for_the_gateway(route: str) -> None:
    """smg polls these on its workers: the server's arguments and version, never the key."""
    with FakeSGLang(api_key="secret-key", served_model_name="bookrec-embed") as server:
        assert httpx.get(server.root_url + route).status_code == 401
        info = httpx.get(server.root_url + route, headers={"Authorization": "Bearer secret-key"})
        assert info.status_code == 200
        body = info.json()
        assert body["served_model_name"] == "bookrec-embed" and body["is_embedding"] is True
        assert body["port"] == int(server.root_url.rsplit(":", 1)[1])
        assert body["version"] and "secret-key" not in info.text
    with FakeSGLang(reranker=True) as reranker:
        assert httpx.get(reranker.root_url + route).json()["is_embedding"] is False


def test_matryoshka_truncates_and_renormalises() -> None:
    with FakeSGLang(dim=64, matryoshka=[32, 64]) as server:
        body = post(server, {"input": "a", "dimensions": 32}).json()
        refused = post(server, {"input": "a", "dimensions": 48})
        too_wide = post(server, {"input": "a", "dimensions": 128})
    vec = np.array(body["data"][0]["embedding"])
    expected = fake_vector("a", 64)[:32]
    np.testing.assert_allclose(vec, expected / np.linalg.norm(expected), atol=1e-6)
    assert refused.status_code == 400
    assert "greater than max embedding dimension: 64" in too_wide.json()["message"]


def test_fault_knobs_apply_in_order(fake_server: FakeSGLang) -> None:
    fake_server.fail_next(429, retry_after=3)
    fake_server.wrong_count_next()
    first = post(fake_server, {"input": ["a", "b"]})
    second = post(fake_server, {"input": ["a", "b"]})
    third = post(fake_server, {"input": ["a", "b"]})
    assert (first.status_code, first.headers["retry-after"]) == (429, "3")
    assert len(second.json()["data"]) == 1
    assert len(third.json()["data"]) == 2
    assert fake_server.embedding_request_count == 3


def test_nan_is_null_in_float_json(fake_server: FakeSGLang) -> None:
    fake_server.nan_next()
    body = post(fake_server, {"input": ["a"]}).json()
    assert body["data"][0]["embedding"][0] is None


def test_legacy_servers_ignore_encoding_format() -> None:
    with FakeSGLang(legacy=True) as server:
        body = post(server, {"input": "a", "encoding_format": "base64"}).json()
        assert isinstance(body["data"][0]["embedding"], list)
        assert httpx.get(f"{server.root_url}/ready").status_code == 404


def test_stop_refuses_and_start_serves_again(fake_server: FakeSGLang) -> None:
    url = fake_server.base_url
    fake_server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{url}/embeddings", json={"input": "a"})
    fake_server.start()
    assert fake_server.base_url == url
    assert post(fake_server, {"input": "a"}).status_code == 200


def test_model_info_and_models(fake_server: FakeSGLang) -> None:
    info = httpx.get(f"{fake_server.root_url}/model_info").json()
    assert info["is_generation"] is False
    assert info["embedding"]["supports_dimensions"] is False
    models = httpx.get(f"{fake_server.base_url}/models").json()
    assert models["data"][0]["id"] == "Qwen/Qwen3-Embedding-0.6B"


def test_factory_fixture_starts_servers_with_options(
    fake_server_factory: Callable[..., FakeSGLang],
) -> None:
    server = fake_server_factory(dim=8, matryoshka=True)
    body = post(server, {"input": "a", "dimensions": 4}).json()
    assert len(body["data"][0]["embedding"]) == 4


_JSON = {"Content-Type": "application/json"}
# Each request the fake refuses, with the server it needs and the SGLang message it answers
# with (by its key in ``SGLANG_REQUEST_ERRORS`` or ``SGLANG_INPUT_ERRORS``).
_REFUSED: list[tuple[str, dict[str, object], dict[str, object]]] = [
    ("media_type", {}, {"content": b'{"input": "a"}', "headers": {"Content-Type": "text/plain"}}),
    ("invalid_json", {}, {"content": b'{"input": ', "headers": _JSON}),
    ("lora_disabled", {}, {"json": {"input": "a", "model": "qwen3:0.6b"}}),
    ("encoding_format", {}, {"json": {"input": "a", "encoding_format": "int8"}}),
    ("no_matryoshka", {}, {"json": {"input": "a", "dimensions": 32}}),
    ("matryoshka_widths", {"matryoshka": [32, 64]}, {"json": {"input": "a", "dimensions": 48}}),
    ("dimensions_not_positive", {"matryoshka": True}, {"json": {"input": "a", "dimensions": 0}}),
    ("dimensions_too_large", {"matryoshka": True}, {"json": {"input": "a", "dimensions": 128}}),
    ("empty_input", {}, {"json": {"input": ["ok", " "]}}),
    ("input_too_long", {"max_input_tokens": 20}, {"json": {"input": "x" * 200}}),
    ("not_embedding_model", {"reranker": True}, {"json": {"input": "a"}}),
]  # fmt: skip


def test_every_request_level_message_the_fake_sends_is_covered() -> None:
    produced = {key for key, _, _ in _REFUSED}
    # A fake reranker refuses embeddings; the CPU server's tests cover the rest of SGLang's.
    assert set(SGLANG_REQUEST_ERRORS) - produced == set()
    assert set(SGLANG_INPUT_ERRORS) - produced == {"longer_than_context"}


@pytest.mark.parametrize(("key", "server_options", "request_options"), _REFUSED)
def test_the_client_reads_each_fake_message_as_sglang_means_it(
    key: str, server_options: dict[str, object], request_options: dict[str, object]
) -> None:
    with FakeSGLang(dim=64, **server_options) as server:  # type: ignore[arg-type]
        response = httpx.post(f"{server.base_url}/embeddings", **request_options)  # type: ignore[arg-type]
    assert response.status_code == 400
    message = response.json()["message"]
    assert is_request_level(message) is (key in SGLANG_REQUEST_ERRORS), message


@pytest.mark.parametrize(
    ("template", "request_level"),
    [(t, True) for t in SGLANG_REQUEST_ERRORS.values()]
    + [(t, False) for t in SGLANG_INPUT_ERRORS.values()],
)
def test_each_sglang_template_is_classified(template: str, request_level: bool) -> None:
    assert is_request_level(template) is request_level


@pytest.mark.parametrize("serial", [False, True])
def test_serial_pays_the_request_costs_one_at_a_time(serial: bool) -> None:
    """Four concurrent requests of 0.2 s: about 0.2 s in all, or at least 0.8 s when serial."""
    with FakeSGLang(dim=8, per_request_delay=0.2, serial=serial) as server:

        def one(i: int) -> int:
            body = {"model": "m", "input": [f"text {i}"]}
            return httpx.post(f"{server.base_url}/embeddings", json=body, timeout=10).status_code

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            assert list(pool.map(one, range(4))) == [200] * 4
        elapsed = time.monotonic() - started
    assert elapsed >= 0.8 if serial else elapsed < 0.7
