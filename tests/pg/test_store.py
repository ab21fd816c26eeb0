"""The PostgreSQL store against a real server: the store contract, the same rankings as the
numpy store, HNSW with selective filters, migrations, bound parameters, masked passwords."""

from __future__ import annotations

import time

import numpy as np
import psycopg
import pytest

from bookrec.client import ModelIdentity
from bookrec.recommender import (
    Book,
    Catalog,
    Filters,
    IndexMismatchError,
    IndexNotFoundError,
    NumpyStore,
    Recommender,
    RecommenderError,
    UnknownBookError,
    VectorIndex,
)
from bookrec.recommender.pgstore import (
    SCHEMA_VERSION,
    PostgresStore,
    SchemaVersionError,
    mask_dsn,
    migrate,
)
from tests.recommender.conftest import FakeEmbedder, make_books

IDENTITY = ModelIdentity("fake/embedder", 8)
SECRET = "s3cr3t-pw"


def unit_rows(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    matrix = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def filled(dsn: str, books: list[Book], vectors: np.ndarray, **kwargs: object) -> PostgresStore:
    identity = ModelIdentity(IDENTITY.model, vectors.shape[1])
    store = PostgresStore.create(dsn, identity, **kwargs)  # type: ignore[arg-type]
    store.upsert(books, vectors, [f"h-{b.id}" for b in books])
    return store


@pytest.fixture
def books() -> list[Book]:
    return make_books(60)


@pytest.fixture
def vectors() -> np.ndarray:
    return unit_rows(60)


@pytest.fixture
def store(pg_dsn: str, books: list[Book], vectors: np.ndarray) -> PostgresStore:
    with filled(pg_dsn, books, vectors) as store:
        yield store  # type: ignore[misc]


FILTERS = [
    None,
    Filters.parse(languages="en"),
    Filters.parse(tags=["TOPIC 1", "topic-3"]),
    Filters.parse(authors="author 2"),
    Filters.parse(year_min=1910, year_max=1940),
    Filters.parse(min_rating=3.0),
    Filters.parse(languages=["zh"], tags="topic-2", min_rating=1.5),
    Filters.parse(tags="no such tag"),
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: repr(f)[:60])
def test_exact_search_ranks_as_the_numpy_store(
    store: PostgresStore, books: list[Book], vectors: np.ndarray, filters: Filters | None
) -> None:
    numpy_store = NumpyStore(
        VectorIndex.from_vectors([b.id for b in books], vectors, IDENTITY), Catalog(books)
    )
    queries = unit_rows(5, seed=7)
    exclude = {"b004", "b011", "unknown"}
    got = store.search(queries, 12, filters=filters, exclude=exclude)
    want = numpy_store.search(queries, 12, filters=filters, exclude=exclude)
    for g, w in zip(got, want, strict=True):
        assert g.ids == w.ids
        assert g.scores.dtype == np.float32
        np.testing.assert_allclose(g.scores, w.scores, atol=1e-5)
        assert not exclude & set(g.ids)


def test_ties_break_by_insertion_order(pg_dsn: str) -> None:
    books = make_books(4)
    same = np.tile(unit_rows(1), (4, 1))
    with filled(pg_dsn, books[::-1], same) as store:
        (hits,) = store.search(same[:1], 4)
        assert hits.ids == ("b003", "b002", "b001", "b000") == tuple(store.ids)
        store.upsert([books[2]], same[:1], ["again"])  # a replaced book moves to the end
        assert tuple(store.ids)[-1] == "b002" == store.search(same[:1], 4)[0].ids[-1]


def test_contract_basics(store: PostgresStore, vectors: np.ndarray) -> None:
    assert store.identity == IDENTITY
    assert len(store) == 60 and list(store.ids) == [f"b{i:03d}" for i in range(60)]
    assert "b007" in store and "nope" not in store and 7 not in store
    got = store.vectors(["b007", "b001", "b007"])
    assert got.dtype == np.float32 and got.shape == (3, 8)
    np.testing.assert_allclose(got, vectors[[7, 1, 7]], atol=1e-6)
    with pytest.raises(UnknownBookError):
        store.vectors(["b001", "nope"])
    assert store.vectors([]).shape == (0, 8)
    assert [len(h) for h in store.search(vectors[:2], 0)] == [0, 0]
    assert len(store.search(vectors[:1], 500)[0]) == 60
    assert store.content_hashes()["b003"] == "h-b003"


def test_upsert_and_delete_are_seen_by_another_connection_at_once(
    store: PostgresStore, pg_dsn: str, vectors: np.ndarray
) -> None:
    with PostgresStore.open(pg_dsn) as other:
        new = make_books(1, prefix="new")[0]
        target = -vectors[3]
        store.upsert([new], target[None, :], ["hash-new"])
        assert "new000" in other and len(other) == 61
        assert other.search(target[None, :], 1)[0].ids == ("new000",)
        store.delete(["new000", "b003", "not-there"])
        assert "new000" not in other and "b003" not in other and len(other) == 59
        assert not {"new000", "b003"} & set(other.search(target[None, :], 100)[0].ids)
        other.refresh()
        assert len(other.ids) == 59


def test_upsert_is_all_or_nothing(store: PostgresStore, vectors: np.ndarray) -> None:
    good = make_books(1, prefix="ok")[0]
    bad = np.array([vectors[0], np.full(8, np.nan, dtype=np.float32)])  # pgvector refuses NaN
    with pytest.raises(psycopg.Error):
        store.upsert([good, make_books(2, prefix="ok")[1]], bad, ["a", "b"])
    assert "ok000" not in store and len(store) == 60
    with pytest.raises(ValueError, match="one 8-d vector"):
        store.upsert([good], vectors[:2], ["a"])


def test_catalog_fields_are_stored_with_normalised_names(pg_dsn: str) -> None:
    book = Book(
        "x1", "Title", ("Ursula K. Le Guin",), "s", ("Sci-Fi",), "en", 1969, 4.5, 7, "Hainish",
        extra={"isbn": "978-0"},
    )  # fmt: skip
    with filled(pg_dsn, [book], unit_rows(1)), psycopg.connect(pg_dsn) as conn:
        row = conn.execute(
            "SELECT authors, tags, series, extra, norm_authors, norm_tags, work_key FROM books"
        ).fetchone()
    assert row == (
        ["Ursula K. Le Guin"], ["Sci-Fi"], "Hainish", {"isbn": "978-0"},
        ["ursula k le guin"], ["sci fi"], book.work_key,
    )  # fmt: skip


def test_hnsw_with_a_selective_filter_still_returns_k(pg_dsn: str) -> None:
    n, dim = 3000, 16
    books = [
        Book(f"h{i:05d}", f"T{i}", (f"A{i % 50}",), tags=(f"t{i % 10}", f"r{i % 100}"))
        for i in range(n)
    ]
    vectors = unit_rows(n, dim, seed=5)
    with filled(pg_dsn, books, vectors) as store:
        queries = unit_rows(4, dim, seed=9)
        # 10 % of the books (the planner scans the HNSW index), then 1 % (it may filter first).
        selective = [Filters.parse(tags="t7"), Filters.parse(tags="r7")]
        exact = [store.search(queries, 10, filters=f) for f in selective]
        store.create_hnsw(m=8, ef_construction=32)
        assert store.has_hnsw() and not store.exact
        store.ef_search = 10
        for filters, want in zip(selective, exact, strict=True):
            got = store.search(queries, 10, filters=filters)
            for a, e in zip(got, want, strict=True):
                assert len(a) == 10
                assert all(int(i[1:]) % 10 == 7 for i in a.ids)
                assert len(set(a.ids) & set(e.ids)) >= 8
                assert np.all(np.diff(a.scores) <= 1e-6)
        store.iterative_scan = "off"  # the index scan filters after the fact: too few rows
        assert all(len(h) < 10 for h in store.search(queries, 10, filters=selective[0]))
        with PostgresStore.open(pg_dsn) as reopened:
            assert not reopened.exact  # an HNSW index exists: searched through it
        with PostgresStore.open(pg_dsn, exact=True) as forced:
            assert [h.ids for h in forced.search(queries, 10, filters=selective[0])] == [
                e.ids for e in exact[0]
            ]


def test_hnsw_plan_uses_the_index(pg_dsn: str) -> None:
    books = make_books(200)
    with filled(pg_dsn, books, unit_rows(200)) as store, psycopg.connect(pg_dsn) as conn:
        store.create_hnsw()
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT book_id FROM vectors_default "
                "ORDER BY embedding <=> %s::vector LIMIT 5",
                ("[" + ",".join(["0.5"] * 8) + "]",),
            )
        )
        assert "vectors_default_hnsw" in plan


def test_halfvec_storage(pg_dsn: str, books: list[Book], vectors: np.ndarray) -> None:
    with filled(pg_dsn, books, vectors, halfvec=True) as store:
        assert store.storage == "halfvec"
        np.testing.assert_allclose(store.vectors(["b005"])[0], vectors[5], atol=2e-3)
        (hits,) = store.search(vectors[5:6], 3)
        assert hits.ids[0] == "b005" and abs(hits.scores[0] - 1) < 1e-2
        store.create_hnsw()
        assert store.search(vectors[5:6], 3, filters=Filters.parse(languages="en"))[0].ids[0] == (
            "b005"
        )


def test_migrations_are_recorded_once(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert migrate(conn) == SCHEMA_VERSION
        assert migrate(conn) == SCHEMA_VERSION
        versions = [r[0] for r in conn.execute("SELECT version FROM bookrec_schema_version")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))


def test_a_schema_newer_than_the_code_is_refused(store: PostgresStore, pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO bookrec_schema_version (version) VALUES (%s)", (99,))
    with pytest.raises(SchemaVersionError, match="upgrade bookrec") as err:
        PostgresStore.open(pg_dsn)
    assert isinstance(err.value, RecommenderError) and "99" in str(err.value)
    with pytest.raises(SchemaVersionError, match="upgrade bookrec"):
        PostgresStore.create(pg_dsn, IDENTITY, index="other")


def test_an_unmigrated_database_is_not_opened(pg_dsn: str) -> None:
    with pytest.raises(SchemaVersionError, match="migrate"):
        PostgresStore.open(pg_dsn)


def test_index_names_and_missing_indexes(store: PostgresStore, pg_dsn: str) -> None:
    with pytest.raises(IndexNotFoundError, match="'nope'"):
        PostgresStore.open(pg_dsn, index="nope")
    with pytest.raises(ValueError, match="already has an index"):
        PostgresStore.create(pg_dsn, IDENTITY)
    with pytest.raises(ValueError, match="lowercase"):
        PostgresStore.create(pg_dsn, IDENTITY, index='x"; DROP TABLE books; --')
    with PostgresStore.create(pg_dsn, ModelIdentity("other/model", 4), index="small") as small:
        assert small.identity == ModelIdentity("other/model", 4) and len(small) == 0
        assert small.search(unit_rows(1, 4), 5)[0].ids == ()
    assert len(store) == 60  # one index does not see another's vectors


def test_another_model_is_an_index_mismatch(store: PostgresStore, books: list[Book]) -> None:
    with pytest.raises(IndexMismatchError):
        Recommender(Catalog(books), store, FakeEmbedder(16, configured_dimensions=16))
    embedder = FakeEmbedder(8, model="another/model")
    embedder.embed_queries(["warm up"])  # its identity is known after the first call
    with pytest.raises(IndexMismatchError):
        Recommender(Catalog(books), store, embedder)


def test_values_are_bound_never_formatted(pg_dsn: str) -> None:
    evil = "x'; DROP TABLE books; --"
    book = Book(evil, 'Quote\'s "title"', (evil,), tags=(evil, "a'b"), language="en")
    other = Book("plain", "Plain")
    vectors = unit_rows(2)
    with filled(pg_dsn, [book, other], vectors) as store:
        assert evil in store and store.ids[0] == evil
        np.testing.assert_allclose(store.vectors([evil])[0], vectors[0], atol=1e-6)
        hits = store.search(vectors[:1], 5, filters=Filters.parse(tags=[evil], languages="en"))
        assert hits[0].ids == (evil,)
        assert store.search(vectors[:1], 5, exclude={evil})[0].ids == ("plain",)
        assert store.search(vectors[:1], 5, filters=Filters.parse(authors="'; --"))[0].ids == ()
        store.delete([evil])
        assert evil not in store and len(store) == 1


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://user:secret@host/db", "postgresql://user:***@host/db"),
        ("postgres://u:p%40ss@h:5432/db?sslmode=require", "postgres://u:***@h:5432/db?sslmode=require"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("postgresql://host/db?user=u&password=secret&x=1", "postgresql://host/db?user=u&password=***&x=1"),
        ("host=h user=u password=secret dbname=d", "host=h user=u password=*** dbname=d"),
        ("host=h password = 'se cret' dbname=d", "host=h password = *** dbname=d"),
        ("failed for postgresql://a:b@c/d: timeout", "failed for postgresql://a:***@c/d: timeout"),
    ],
)  # fmt: skip
def test_mask_dsn(dsn: str, shown: str) -> None:
    assert mask_dsn(dsn) == shown


def test_the_password_never_shows(
    pg_server: object, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The test server trusts every local connection, so any password is accepted.
    with_password = pg_dsn.replace("postgres@", f"postgres:{SECRET}@")
    with filled(with_password, make_books(2), unit_rows(2)) as store:
        assert SECRET not in repr(store) and SECRET not in store.dsn
        assert "***" in repr(store)
    messages = []
    for attempt in (
        lambda: PostgresStore.open(with_password, index="absent"),
        lambda: PostgresStore.open(f"postgresql://u:{SECRET}@127.0.0.1:1/db"),
        lambda: PostgresStore.open(f"host=127.0.0.1 port=1 user=u password={SECRET} dbname=db"),
    ):
        with pytest.raises(RecommenderError) as err:
            attempt()
        messages.append(str(err.value))
        assert err.value.__cause__ is None or SECRET not in str(err.value.__cause__)
    assert all(SECRET not in m for m in messages)
    assert SECRET not in caplog.text


def test_a_reader_pool_searches_from_many_threads_at_once(
    store: PostgresStore, pg_dsn: str, books: list[Book], vectors: np.ndarray
) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    expected = [store.search(vectors[i : i + 1], 5)[0].ids for i in range(16)]
    with PostgresStore.open(pg_dsn, pool_size=4) as pooled:
        # Each search holds its connection for 0.3 s (pg_sleep in the same transaction), so
        # that concurrent searches need connections of their own.
        pids: set[int] = set()
        lock = threading.Lock()
        real = pooled._settings

        def slow_settings(conn: psycopg.Connection) -> None:  # type: ignore[type-arg]
            real(conn)
            row = conn.execute("SELECT pg_backend_pid(), pg_sleep(0.3)").fetchone()
            with lock:
                pids.add(int(row[0]))

        pooled._settings = slow_settings  # type: ignore[method-assign]
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda i: pooled.search(vectors[i : i + 1], 5)[0].ids, range(16)))
        elapsed = time.monotonic() - started
        assert got == expected
        assert 2 <= len(pids) <= 4  # searches ran on several connections, at most the pool's
        assert elapsed < 16 * 0.3 * 0.6  # in parallel: well under the 4.8 s of one at a time
        # Writes still go through the store's own connection, and the next search sees them.
        pooled.upsert([books[0]], -vectors[1:2], ["h-changed"])
        (hits,) = pooled.search(-vectors[1:2], 1)
        assert hits.ids == (books[0].id,)
    with pytest.raises(ValueError, match="pool_size"):
        PostgresStore.open(pg_dsn, pool_size=0)
