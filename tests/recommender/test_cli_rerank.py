"""``bookrec search`` and ``bookrec recommend`` with ``--rerank``, against fake SGLang servers.

One fake serves embeddings, another is the reranker (its own port, as SGLang runs it).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bookrec.client.testing import FakeSGLang, fake_rerank_score
from bookrec.recommender import (
    READER_RERANK_INSTRUCTION,
    SEARCH_RERANK_INSTRUCTION,
    book_text,
    load_catalog,
)
from bookrec.recommender.cli import main
from tests.recommender.test_cli import BOOKS, _closed_port, _write_catalog


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FakeSGLang, FakeSGLang]]:
    with FakeSGLang(dim=64) as embeddings, FakeSGLang(reranker=True) as reranker:
        yield embeddings, reranker


@pytest.fixture(scope="module")
def workdir(
    tmp_path_factory: pytest.TempPathFactory, servers: tuple[FakeSGLang, FakeSGLang]
) -> Path:
    cwd = tmp_path_factory.mktemp("rerank-cli")
    _write_catalog(cwd / "books.jsonl", BOOKS)
    code = main(
        ["index", "-c", str(cwd / "books.jsonl"), "-i", str(cwd / "idx"), "--no-progress",
         "--base-url", servers[0].base_url],
        out=io.StringIO(),
    )  # fmt: skip
    assert code == 0
    return cwd


Run = Any


@pytest.fixture
def run(
    workdir: Path,
    servers: tuple[FakeSGLang, FakeSGLang],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Run:
    embeddings, reranker = servers
    reranker.reset()
    for key in list(os.environ):
        if key.startswith("BOOKREC_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("BOOKREC_BASE_URL", embeddings.base_url)
    monkeypatch.setenv("BOOKREC_MAX_ATTEMPTS", "1")
    monkeypatch.chdir(workdir)

    def call(*args: str) -> tuple[int, Any, str]:
        capsys.readouterr()
        out = io.StringIO()
        code = main([*args, "-c", "books.jsonl", "-i", "idx", "--json"], out=out)
        err = capsys.readouterr().err
        return code, json.loads(out.getvalue()) if code == 0 else None, err

    return call


def ordered(query: str, ids: list[str], instruction: str) -> list[str]:
    catalog = load_catalog(Path("books.jsonl"))
    scores = {i: fake_rerank_score(query, book_text(catalog.book(i)), instruction) for i in ids}
    return sorted(ids, key=lambda i: -scores[i])


def test_search_rerank(run: Run, servers: tuple[FakeSGLang, FakeSGLang]) -> None:
    _, reranker = servers
    code, first, err = run("search", "desert planet", "-k", "7")
    assert code == 0, err
    assert first["reranked"] is False and "rerank" not in first["query"]

    code, data, err = run(
        "search", "desert planet", "-k", "3", "--rerank", "--rerank-candidates", "5",
        "--rerank-url", reranker.base_url,
    )  # fmt: skip

    assert code == 0, err
    assert data["query"]["rerank"] is True and data["reranked"] is True
    (body,) = reranker.rerank_requests
    assert body["instruct"] == SEARCH_RERANK_INSTRUCTION
    assert len(body["documents"]) == 5
    candidates = [r["id"] for r in first["results"]][:5]
    got = [r["id"] for r in data["results"]]
    assert got == ordered("desert planet", candidates, SEARCH_RERANK_INSTRUCTION)[:3]
    assert all(r["reranked"] and r["reason"].endswith("(reranked)") for r in data["results"])


def test_recommend_rerank_from_the_environment(
    run: Run, servers: tuple[FakeSGLang, FakeSGLang], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, reranker = servers
    monkeypatch.setenv("BOOKREC_RERANK_BASE_URL", reranker.base_url)

    code, data, err = run("recommend", "--liked", "b3", "-k", "3", "--rerank")

    assert code == 0, err
    assert data["reranked"] is True
    (body,) = reranker.rerank_requests
    assert body["instruct"] == READER_RERANK_INSTRUCTION
    assert body["query"].startswith("Liked: Foundation (Psychohistory")
    assert "b3" not in [r["id"] for r in data["results"]]


def test_the_instruction_option(run: Run, servers: tuple[FakeSGLang, FakeSGLang]) -> None:
    _, reranker = servers
    code, _data, err = run(
        "search", "village", "--rerank", "--rerank-url", reranker.base_url,
        "--rerank-instruction", "Judge classics",
    )  # fmt: skip
    assert code == 0, err
    assert reranker.rerank_requests[0]["instruct"] == "Judge classics"


def test_reranker_down_keeps_the_first_stage(run: Run) -> None:
    code, first, _ = run("search", "desert planet", "-k", "3")
    dead = f"http://127.0.0.1:{_closed_port()}/v1"

    code, data, err = run("search", "desert planet", "-k", "3", "--rerank", "--rerank-url", dead)

    assert code == 0, err
    assert data["reranked"] is False and data["degraded"] is False
    assert [r["id"] for r in data["results"]] == [r["id"] for r in first["results"]]
    assert "reranker was unavailable" in err
    assert not any(r["reranked"] for r in data["results"])


def test_bad_candidates_are_a_usage_error(run: Run) -> None:
    code, _data, err = run("search", "x", "--rerank", "--rerank-candidates", "0")
    assert code == 2 and "positive integer" in err
