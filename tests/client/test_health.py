"""Readiness and discovery helpers over httpx."""

from __future__ import annotations

import socket

import pytest

from bookrec.client import (
    EmbeddingRejected,
    EmbeddingUnavailable,
    check_ready,
    list_models,
    wait_until_ready,
)
from bookrec.client.testing import FakeSGLang


def _paths(server: FakeSGLang) -> list[str]:
    return [entry.path for entry in server.log]


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_ready_accepts_urls_with_or_without_v1(fake_server: FakeSGLang, suffix: str) -> None:
    assert check_ready(fake_server.root_url + suffix)
    assert _paths(fake_server)[-1] == "/ready"


def test_ready_falls_back_to_health_generate_on_older_servers() -> None:
    with FakeSGLang(legacy=True) as server:
        assert check_ready(server.base_url)
        assert _paths(server) == ["/ready", "/health_generate"]


def test_not_ready_while_starting(fake_server: FakeSGLang) -> None:
    fake_server.set_ready(False)
    assert not check_ready(fake_server.base_url)


def test_not_ready_when_nothing_listens() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert not check_ready(f"http://127.0.0.1:{port}", timeout=0.5)


def test_health_needs_no_key() -> None:
    with FakeSGLang(api_key="k") as server:
        assert check_ready(server.base_url)


def test_wait_until_ready_returns_once_ready(fake_server: FakeSGLang) -> None:
    wait_until_ready(fake_server.base_url, timeout=2.0, interval=0.01)


def test_wait_until_ready_gives_up(fake_server: FakeSGLang) -> None:
    fake_server.set_ready(False)
    with pytest.raises(EmbeddingUnavailable, match="not ready after"):
        wait_until_ready(fake_server.base_url, timeout=1.0, interval=0.02)
    assert len(fake_server.log) >= 2


def test_list_models_sends_the_key() -> None:
    with FakeSGLang(api_key="k", served_model_name="qwen3-embedding") as server:
        models = list_models(server.root_url, api_key="k")
        assert server.log[-1].headers["authorization"] == "Bearer k"
        with pytest.raises(EmbeddingRejected, match="401"):
            list_models(server.base_url)
    assert [m["id"] for m in models] == ["qwen3-embedding"]
    assert models[0]["root"] == "Qwen/Qwen3-Embedding-0.6B"


def test_list_models_on_a_dead_server_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(EmbeddingUnavailable):
        list_models(f"http://127.0.0.1:{port}/v1", timeout=0.5)
