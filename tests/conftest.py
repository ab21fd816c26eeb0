"""Shared fixtures: a fake SGLang server on 127.0.0.1 for every suite."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from bookrec.client.testing import FakeSGLang


@pytest.fixture
def fake_server() -> Iterator[FakeSGLang]:
    """A fresh fake SGLang server (64-d vectors, model path Qwen/Qwen3-Embedding-0.6B)."""
    with FakeSGLang(dim=64) as server:
        yield server


@pytest.fixture
def fake_server_factory() -> Iterator[Callable[..., FakeSGLang]]:
    """Start extra servers with any options; all are stopped at the end of the test.

    Usage: ``server = fake_server_factory(dim=32, matryoshka=True)`` returns a started server.
    """
    started: list[FakeSGLang] = []

    def factory(**kwargs: object) -> FakeSGLang:
        server = FakeSGLang(**kwargs)  # type: ignore[arg-type]  # options pass through
        server.start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
