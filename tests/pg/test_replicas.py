"""Reads from a streaming standby: a primary and a standby made with ``pg_basebackup -R``, two
real servers on 127.0.0.1. A book indexed on the primary is recommended from the standby; a
standby that is down or lagging is skipped for the primary."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from bookrec.client import ModelIdentity, normalize
from bookrec.recommender import Catalog, Recommender
from bookrec.recommender.fusion import Fusion
from bookrec.recommender.pgstore.replicas import ReadRouting
from bookrec.recommender.pgstore.store import PostgresStore
from tests.pg.conftest import EmbeddedServer
from tests.recommender.conftest import make_books

IDENTITY = ModelIdentity("fake/embedder", 8)
# Dense ranking alone: these tests follow vectors between servers.
DENSE = Fusion(mode="dense")


class Standby(EmbeddedServer):
    """A hot standby of ``primary``, streaming its write-ahead log."""

    def __init__(self, root: Path, primary: EmbeddedServer) -> None:
        super().__init__(root)
        self.primary = primary

    def start(self) -> Standby:
        self._prepare_root()
        # -R writes standby.signal and primary_conninfo: the copy starts as a streaming standby.
        self._run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres",
            "-D", str(self.data), "-R", "-X", "stream", "--no-sync",
        )  # fmt: skip
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-o", options,
            "-l", str(self.root / "server.log"), "start",
        )  # fmt: skip
        return self


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedServer, Standby]]:
    primary = EmbeddedServer(tmp_path_factory.mktemp("primary")).start()
    standby = Standby(tmp_path_factory.mktemp("standby"), primary)
    try:
        standby.start()
        yield primary, standby
    finally:
        standby.stop()
        primary.stop()


def _caught_up(routing: ReadRouting, replica: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while routing.read_dsn() != replica or routing._lag(replica, _primary_lsn(routing)) != 0:
        assert time.monotonic() < deadline, "the standby did not catch up"
        time.sleep(0.1)


def _primary_lsn(routing: ReadRouting) -> str:
    with psycopg.connect(routing.primary, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def test_the_standby_is_read_only_and_in_recovery(pair: tuple[EmbeddedServer, Standby]) -> None:
    _, standby = pair
    with psycopg.connect(standby.dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        assert row == (True,)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE nope (x int)")


def test_a_book_indexed_on_the_primary_is_recommended_from_the_standby(
    pair: tuple[EmbeddedServer, Standby],
) -> None:
    primary, standby = pair
    books = make_books(20)
    rng = np.random.default_rng(5)
    vectors = normalize(rng.normal(size=(20, 8)))
    with PostgresStore.create(primary.dsn, IDENTITY, index="replicated") as store:
        store.upsert(books[:19], vectors[:19], [f"h{i}" for i in range(19)])
    routing = ReadRouting(primary.dsn, [standby.dsn])
    _caught_up(routing, standby.dsn)
    # The new book arrives on the primary; the standby replays it, and answers with it.
    with PostgresStore.open(primary.dsn, index="replicated") as writer:
        writer.upsert(books[19:], normalize(vectors[3] + 0.01)[None, :], ["h19"])
    _caught_up(routing, standby.dsn)
    with PostgresStore.open(routing.read_dsn(), index="replicated") as reader:
        assert "b019" in reader
        rec = Recommender(Catalog(books), reader, fusion=DENSE)
        assert rec.similar("b003", k=1)[0].book.id == "b019"
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            reader.delete(["b000"])  # writes belong to the primary


def test_a_lagging_or_dead_replica_is_skipped(
    pair: tuple[EmbeddedServer, Standby], caplog: pytest.LogCaptureFixture
) -> None:
    primary, standby = pair
    routing = ReadRouting(primary.dsn, [standby.dsn], max_lag_bytes=0)
    _caught_up(routing, standby.dsn)
    with psycopg.connect(standby.dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
    try:
        with psycopg.connect(primary.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS churn (x int)")
            conn.execute("INSERT INTO churn SELECT generate_series(1, 1000)")
        with caplog.at_level(logging.WARNING, logger="bookrec.recommender.pgstore.replicas"):
            assert routing.read_dsn() == primary.dsn
        assert "lags the primary by" in caplog.text
    finally:
        with psycopg.connect(standby.dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")
    down = ReadRouting(primary.dsn, ["postgresql://postgres:secret@127.0.0.1:9/postgres"])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bookrec.recommender.pgstore.replicas"):
        assert down.read_dsn() == primary.dsn
    assert "is unavailable" in caplog.text and "secret" not in caplog.text


@pytest.mark.parametrize("pool_size", [1, 3])
def test_a_store_opened_with_replicas_reads_there_and_writes_to_the_primary(
    pair: tuple[EmbeddedServer, Standby], pool_size: int
) -> None:
    primary, standby = pair
    books = make_books(12)
    vectors = normalize(np.random.default_rng(9).normal(size=(12, 8)))
    name = f"routed{pool_size}"
    with PostgresStore.create(primary.dsn, IDENTITY, index=name) as store:
        store.upsert(books[:11], vectors[:11], [f"h{i}" for i in range(11)])
    routing = ReadRouting(primary.dsn, [standby.dsn])
    _caught_up(routing, standby.dsn)
    opened = {"index": name, "replicas": [standby.dsn], "pool_size": pool_size}
    with (
        PostgresStore.open(primary.dsn, **opened) as store,  # type: ignore[arg-type]
        PostgresStore.open(primary.dsn, **opened) as other,  # type: ignore[arg-type]
    ):
        assert store.read_dsn == standby.dsn
        writer = Recommender(Catalog(books[:11]), store, follow=True, fusion=DENSE)
        reader = Recommender(Catalog(books[:11]), other, fusion=DENSE)
        # The write goes to the primary (the standby refuses writes); the writer reads its own
        # write at once, from the primary until the standby has replayed it.
        store.upsert(books[11:], normalize(vectors[2] + 0.01)[None, :], ["h11"])
        assert writer.similar("b002", k=1)[0].book.id == "b011"
        # Another process reading from the standby sees the book once it is replayed.
        _caught_up(routing, standby.dsn)
        assert reader.similar("b002", k=1)[0].book.id == "b011"
        assert other.read_dsn == standby.dsn


@pytest.mark.parametrize("pool_size", [1, 3])
def test_a_store_falls_back_to_the_primary_when_its_replica_dies(
    tmp_path: Path,
    pair: tuple[EmbeddedServer, Standby],
    caplog: pytest.LogCaptureFixture,
    pool_size: int,
) -> None:
    primary, _ = pair
    books = make_books(6)
    vectors = normalize(np.random.default_rng(3).normal(size=(6, 8)))
    name = f"fallback{pool_size}"
    with PostgresStore.create(primary.dsn, IDENTITY, index=name) as store:
        store.upsert(books, vectors, [f"h{i}" for i in range(6)])
    second = Standby(tmp_path / "second", primary).start()
    try:
        _caught_up(ReadRouting(primary.dsn, [second.dsn]), second.dsn)
        store = PostgresStore.open(
            primary.dsn, index=name, replicas=[second.dsn], pool_size=pool_size
        )
    finally:
        second.stop()
    with store, caplog.at_level(logging.WARNING, logger="bookrec.recommender.pgstore.store"):
        assert store.read_dsn == second.dsn
        rec = Recommender(Catalog(books), store)
        assert rec.similar("b001", k=5)  # the dead replica is dropped, the primary answers
        assert store.read_dsn == primary.dsn
    assert "failed" in caplog.text
