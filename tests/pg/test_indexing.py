"""Incremental, transactional indexing into PostgreSQL, shared by several indexer processes."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bookrec.client import ClientConfig, EmbeddingClient, Endpoint, RetryPolicy
from bookrec.client.testing import FakeSGLang, fake_vector
from bookrec.recommender import Catalog, IndexBuildError, book_text
from bookrec.recommender.pgstore import PostgresStore
from bookrec.recommender.pgstore.indexing import WORK_TABLE, build_pg_index
from tests.pg.conftest import EmbeddedServer, fresh_dsn, psycopg
from tests.recommender.conftest import make_books

REPO = Path(__file__).resolve().parents[2]
DIM = 32


def _client(server: FakeSGLang, batch_size: int = 5) -> EmbeddingClient:
    config = ClientConfig(
        endpoints=(Endpoint(server.base_url),),
        batch_size=batch_size,
        max_concurrency=1,
        retry=RetryPolicy(max_attempts=1, initial_wait=0.0, max_wait=0.0),
        timeout=10.0,
    )
    return EmbeddingClient(config)


@pytest.fixture
def server() -> Iterator[FakeSGLang]:
    with FakeSGLang(dim=DIM) as srv:
        yield srv


def _count(dsn: str, query: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def test_unchanged_catalog_makes_no_request(pg_dsn: str, server: FakeSGLang) -> None:
    books = make_books(20)
    with _client(server) as client:
        report = build_pg_index(pg_dsn, Catalog(books), client, chunk_size=5)
        assert (report.total, report.embedded, report.reused, report.resumed) == (20, 20, 0, 0)
        assert sorted(server.embedded_texts) == sorted(book_text(b) for b in books)
        server.reset()
        again = build_pg_index(pg_dsn, Catalog(books), client, chunk_size=5)
    assert server.embedding_request_count == 0
    assert again.unchanged and (again.embedded, again.reused, again.removed) == (0, 20, 0)
    with PostgresStore.open(pg_dsn) as store:
        assert sorted(store.ids) == sorted(b.id for b in books)
        assert store.identity.dimensions == DIM
        np.testing.assert_allclose(
            store.vectors(["b007"])[0], fake_vector(book_text(books[7]), DIM), atol=1e-6
        )
    assert _count(pg_dsn, f"SELECT count(*) FROM {WORK_TABLE}") == 0


def test_changed_books_are_embedded_again_removed_ones_deleted(
    pg_dsn: str, server: FakeSGLang
) -> None:
    books = make_books(20)
    with _client(server) as client:
        build_pg_index(pg_dsn, Catalog(books), client, chunk_size=5)
        changed = [dataclasses.replace(books[i], summary=f"rewritten {i}") for i in (3, 4)]
        rated = dataclasses.replace(books[5], rating=0.5)  # metadata only: no new vector
        new = [dataclasses.replace(books[0], id="n000", title="A new book")]
        catalog = [*books[:3], *changed, rated, *books[6:17], *new]  # b017..b019 left
        server.reset()
        report = build_pg_index(pg_dsn, Catalog(catalog), client, chunk_size=5)
    assert sorted(server.embedded_texts) == sorted(book_text(b) for b in [*changed, *new])
    assert (report.embedded, report.removed, report.reused, report.unchanged) == (3, 3, 15, False)
    with PostgresStore.open(pg_dsn) as store:
        assert sorted(store.ids) == sorted(b.id for b in catalog)
        np.testing.assert_allclose(
            store.vectors(["b003"])[0], fake_vector(book_text(changed[0]), DIM), atol=1e-6
        )
        assert store.content_hashes()["b003"] != store.content_hashes()["b002"]
    assert _count(pg_dsn, "SELECT count(*) FROM books WHERE id IN ('b017', 'b018', 'b019')") == 0
    assert _count(pg_dsn, "SELECT count(*) FROM books WHERE id = 'b005' AND rating = 0.5") == 1


def test_halfvec_index_is_incremental_too(pg_dsn: str, server: FakeSGLang) -> None:
    books = make_books(8)
    with _client(server) as client:
        build_pg_index(pg_dsn, Catalog(books), client, chunk_size=3, halfvec=True)
        changed = dataclasses.replace(books[2], summary="rewritten")
        twin = dataclasses.replace(books[0], id="twin")
        server.reset()
        report = build_pg_index(pg_dsn, Catalog([*books[:2], changed, *books[3:], twin]), client)
    assert server.embedded_texts == [book_text(changed)]
    assert (report.embedded, report.reused) == (1, 8)
    with PostgresStore.open(pg_dsn) as store:
        assert store.storage == "halfvec"
        np.testing.assert_allclose(
            store.vectors(["b002"])[0], fake_vector(book_text(changed), DIM), atol=2e-3
        )
        np.testing.assert_array_equal(store.vectors(["twin"]), store.vectors(["b000"]))


def test_same_text_under_a_new_id_copies_the_vector(pg_dsn: str, server: FakeSGLang) -> None:
    books = make_books(6)
    with _client(server) as client:
        build_pg_index(pg_dsn, Catalog(books), client, chunk_size=5)
        twin = dataclasses.replace(books[0], id="twin")
        server.reset()
        report = build_pg_index(pg_dsn, Catalog([*books, twin]), client, chunk_size=5)
    assert server.embedding_request_count == 0
    assert (report.embedded, report.reused) == (0, 7)
    with PostgresStore.open(pg_dsn) as store:
        np.testing.assert_array_equal(store.vectors(["twin"]), store.vectors(["b000"]))


def test_embedding_failure_keeps_the_committed_chunks(pg_dsn: str, server: FakeSGLang) -> None:
    books = make_books(20)

    def progress(done: int, total: int) -> None:
        if done == 10:  # two chunks written: the request of the third one fails
            server.fail_next(503)

    with _client(server) as client:
        with pytest.raises(IndexBuildError, match="remaining 10"):
            build_pg_index(pg_dsn, Catalog(books), client, chunk_size=5, progress=progress)
        assert _vectors(pg_dsn) == 10
        server.reset()
        report = build_pg_index(pg_dsn, Catalog(books), client, chunk_size=5)
    assert len(server.embedded_texts) == 10
    assert (report.embedded, report.reused, report.resumed) == (10, 10, 0)
    assert _vectors(pg_dsn) == 20


def _indexer(dsn: str, server: FakeSGLang, n: int, chunk: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [dsn, server.base_url, str(n), str(chunk)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.pg.indexer_process", *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    return proc


def _go(procs: list[subprocess.Popen[str]]) -> tuple[float, list[dict[str, Any]]]:
    """Start the prepared indexers at once; the seconds until every one reported its build done.

    The processes' exits (interpreter teardown) are not part of the build, so they are not timed.
    """
    started = time.monotonic()
    for proc in procs:
        _go_nowait(proc)
    reports: list[dict[str, Any]] = []
    for proc in procs:
        assert proc.stdout is not None
        reports.append(json.loads(proc.stdout.readline()))
    seconds = time.monotonic() - started
    for proc in procs:
        assert proc.wait(timeout=60) == 0
        _close(proc)
    return seconds, reports


def _close(proc: subprocess.Popen[str]) -> None:
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()


def test_kill_9_mid_build_loses_nothing_committed(pg_dsn: str) -> None:
    n, chunk = 40, 4
    books = make_books(n)
    with FakeSGLang(dim=DIM, per_request_delay=0.15) as server:
        proc = _indexer(pg_dsn, server, n, chunk)
        _go_nowait(proc)
        deadline = time.monotonic() + 30
        while _vectors(pg_dsn) < 3 * chunk:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        _close(proc)
        stored = _vectors(pg_dsn)
        assert chunk <= stored < n
        # Every committed book has its row and its vector; nothing else was left behind.
        assert stored % chunk == 0
        assert _count(pg_dsn, "SELECT count(*) FROM books") == stored
        with PostgresStore.open(pg_dsn) as store:
            done = set(store.ids)
        server.reset()
        with _client(server, batch_size=chunk) as client:
            report = build_pg_index(pg_dsn, Catalog(books), client, chunk_size=chunk)
        rest = [book_text(b) for b in books if b.id not in done]
        assert sorted(server.embedded_texts) == sorted(rest)
        assert (report.embedded, report.reused + report.resumed) == (n - stored, stored)
    assert _vectors(pg_dsn) == n
    assert _count(pg_dsn, f"SELECT count(*) FROM {WORK_TABLE}") == 0


def _go_nowait(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


def _vectors(dsn: str) -> int:
    """Books with a vector in the default index (0 before the index exists)."""
    if not _count(dsn, "SELECT count(*) FROM pg_tables WHERE tablename = 'vectors_default'"):
        return 0
    return _count(dsn, "SELECT count(*) FROM vectors_default")


def test_a_worker_killed_mid_chunk_leaves_it_to_another(pg_dsn: str) -> None:
    n, chunk = 24, 4
    texts = sorted(book_text(b) for b in make_books(n))
    with FakeSGLang(dim=DIM, per_request_delay=0.4) as server:
        doomed, other = _indexer(pg_dsn, server, n, chunk), _indexer(pg_dsn, server, n, chunk)
        _go_nowait(doomed)
        deadline = time.monotonic() + 30
        # Its first chunk is committed and the request of its second one has arrived: it holds
        # the claim of that chunk, waiting for the answer.
        while _vectors(pg_dsn) < chunk or server.embedding_request_count < 2:
            assert time.monotonic() < deadline and doomed.poll() is None
            time.sleep(0.01)
        assert _count(pg_dsn, f"SELECT count(*) FROM {WORK_TABLE}") == n // chunk - 1
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
        _close(doomed)
        _, [report] = _go([other])
        seen = Counter(server.embedded_texts)
    assert sorted(seen) == texts
    # Only the chunk the killed worker held was sent twice; the other worker wrote it.
    assert sum(seen.values()) - n == chunk
    assert report["embedded"] == n - chunk
    assert _vectors(pg_dsn) == n
    assert _count(pg_dsn, f"SELECT count(*) FROM {WORK_TABLE}") == 0


@pytest.mark.timeout(180)
def test_four_indexers_share_one_build(pg_server: EmbeddedServer) -> None:
    n, chunk, delay = 64, 4, 0.25  # 16 requests of 0.25 s each for one worker
    texts = sorted(book_text(b) for b in make_books(n))
    with FakeSGLang(dim=DIM, per_request_delay=delay) as server:
        with fresh_dsn(pg_server.dsn) as dsn:
            one, _ = _go([_indexer(dsn, server, n, chunk)])
            assert sorted(server.embedded_texts) == texts
        server.reset()
        with fresh_dsn(pg_server.dsn) as dsn:
            four, reports = _go([_indexer(dsn, server, n, chunk) for _ in range(4)])
            seen = Counter(server.embedded_texts)
            assert sorted(seen) == texts and set(seen.values()) == {1}
            assert _vectors(dsn) == n
            assert _count(dsn, f"SELECT count(*) FROM {WORK_TABLE}") == 0
            assert server.peak_in_flight > 1
            assert sum(r["embedded"] for r in reports) == n
            assert all(r["embedded"] > 0 for r in reports)  # each worker took a share
    assert four < 0.6 * one, f"one indexer {one:.2f} s, four {four:.2f} s ({four / one:.2f}x)"
