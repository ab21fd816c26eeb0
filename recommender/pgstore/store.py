"""A :class:`~bookrec.recommender.VectorStore` kept in PostgreSQL with pgvector.

The catalog lives in ``books``, each index's vectors in a table of their own (see
:mod:`.schema`). A search is one SQL query per query vector, ordered by cosine distance
(``<=>``) then by the row position assigned on insert, so ties break as in the numpy store.
Filters run in SQL on the normalised names stored next to each book, with bound parameters
only. Search is exact (a sequential scan) until :meth:`PostgresStore.create_hnsw` builds an HNSW
index; HNSW queries use pgvector's iterative scans so that a selective filter still returns
``k`` rows. Every write is one transaction.

Reads may go to a streaming replica (``replicas=`` of :meth:`PostgresStore.open`, chosen by
:class:`.replicas.ReadRouting`), writes always go to the primary. After its own write the store
reads from the primary until the replica has replayed that write, and a replica that fails is
dropped for the primary, so a store never reads older data than it wrote.

Searches from many threads (the HTTP service's) run in parallel on a pool of connections to
the server reads go to (``pool_size=`` of :meth:`PostgresStore.open`, psycopg's own pool);
everything else takes turns on the store's connection.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
import psycopg
from numpy.typing import NDArray
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from bookrec.client import ModelIdentity, PromptFormats, normalize

from ..book import Book, normalize_name
from ..catalog import Catalog
from ..errors import IndexNotFoundError, RecommenderError, UnknownBookError
from ..filters import Filters
from ..store import Hits, checked_upsert
from ..text import BOOK_TEXT_VERSION
from .dsn import mask_dsn
from .replicas import DEFAULT_MAX_LAG_BYTES, ReadRouting
from .schema import check_schema, create_vector_table, migrate, vector_table_name

__all__ = ["PostgresStore"]

logger = logging.getLogger(__name__)

#: How often a store reading from replicas checks again which replica to use.
REROUTE_SECONDS = 30.0
#: Seconds a search waits for a connection of the reader pool (or for the pool to open).
POOL_TIMEOUT = 30.0

_T = TypeVar("_T")

_BOOK_COLUMNS = (
    "id, title, authors, summary, tags, language, year, rating, popularity, series, extra, "
    "norm_authors, norm_tags, work_key"
)
_UPSERT_BOOK = sql.SQL(
    f"INSERT INTO books ({_BOOK_COLUMNS}) VALUES "
    "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, authors = EXCLUDED.authors, "
    "summary = EXCLUDED.summary, tags = EXCLUDED.tags, language = EXCLUDED.language, "
    "year = EXCLUDED.year, rating = EXCLUDED.rating, popularity = EXCLUDED.popularity, "
    "series = EXCLUDED.series, extra = EXCLUDED.extra, norm_authors = EXCLUDED.norm_authors, "
    "norm_tags = EXCLUDED.norm_tags, work_key = EXCLUDED.work_key"
)


def _book_row(book: Book) -> tuple[Any, ...]:
    return (
        book.id,
        book.title,
        list(book.authors),
        book.summary,
        list(book.tags),
        book.language,
        book.year,
        book.rating,
        book.popularity,
        book.series,
        Jsonb(dict(book.extra)),
        sorted({normalize_name(a) for a in book.authors}),
        sorted({normalize_name(t) for t in book.tags}),
        book.work_key,
    )


def _vector_text(vector: NDArray[np.float32]) -> str:
    # float32 -> Python float is exact, and repr() round-trips, so the server parses the same
    # float32 values back.
    return "[" + ",".join(repr(float(x)) for x in vector.tolist()) + "]"


def _where(
    filters: Filters | None, exclude: Collection[str]
) -> tuple[sql.Composed, dict[str, Any]]:
    """The WHERE clause of a search: fixed SQL fragments, every value a named bound parameter."""
    clauses: list[sql.Composable] = []
    params: dict[str, Any] = {}

    def test(fragment: str, name: str, value: Any) -> None:
        clauses.append(sql.SQL(fragment).format(sql.Placeholder(name)))
        params[name] = value

    if filters is not None:
        # The same tests as FilterColumns: the language as stored, names normalised.
        if filters.languages:
            test("b.language = ANY({})", "languages", sorted(filters.languages))
        if filters.tags:
            test("b.norm_tags && {}::text[]", "tags", sorted(filters.tags))
        if filters.authors:
            test("b.norm_authors && {}::text[]", "authors", sorted(filters.authors))
        if filters.year_min is not None:
            test("b.year >= {}", "year_min", filters.year_min)
        if filters.year_max is not None:
            test("b.year <= {}", "year_max", filters.year_max)
        if filters.min_rating is not None:
            test("b.rating >= {}", "min_rating", float(filters.min_rating))
    if exclude:
        test("NOT (v.book_id = ANY({}::text[]))", "exclude", sorted(set(exclude)))
    if not clauses:
        return sql.Composed([]), params
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses), params


class PostgresStore:
    """The vectors of one index in a PostgreSQL database, with the catalog in ``books``.

    Open an existing index with :meth:`open`, make one with :meth:`create`. The store holds a
    connection to the primary, and one to a replica when it reads from one (``close()`` it, or
    use ``with``); threads may share it, their calls take turns, except searches when the store
    has a pool of reader connections (``pool_size`` > 1). Searches, ``len()``, ``in``
    and ``vectors()`` read the database each time, so they see other connections' commits at
    once; ``ids`` is a snapshot taken at open and after this store's own writes, and
    :meth:`refresh` takes a new one when any process changed the store. Deleting a book
    removes its catalog row, hence its vectors in every index.
    """

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        dsn: str,
        index: str,
        *,
        exact: bool | None = None,
        ef_search: int = 100,
        max_scan_tuples: int = 20_000,
        routing: ReadRouting | None = None,
        pool_size: int = 1,
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self._conn = conn
        self._pool_size = pool_size
        self._pool: ConnectionPool[Any] | None = None
        self._dsn = dsn
        self._name = index
        self._lock = threading.RLock()
        self._routing = routing
        self._read_conn = conn
        self._read_dsn = dsn
        self._routed_at = 0.0
        self._written_lsn: str | None = None
        self._revision: int | None = None
        if routing is not None and routing.replicas:
            self._route()
        if pool_size > 1 and self._pool is None:
            self._pool = self._make_pool(self._read_dsn)
        self.ef_search = ef_search
        self.max_scan_tuples = max_scan_tuples
        #: pgvector's iterative index scan: "strict_order" (default), "relaxed_order" or "off"
        #: (then a selective filter can return fewer than k rows).
        self.iterative_scan = "strict_order"
        row = conn.execute(
            "SELECT model, dimensions, storage, vector_table, text_version, document_format, "
            "query_format, instruction FROM vector_indexes WHERE name = %s",
            (index,),
        ).fetchone()
        if row is None:
            raise IndexNotFoundError(f"no index {index!r} in the database at {mask_dsn(dsn)}")
        model, dims, storage, table, text_version, doc, query, instruction = row
        self._identity = ModelIdentity(str(model), int(dims))
        self.storage: str = storage
        self.text_version: str = text_version
        #: The document format, query format and instruction the vectors were made with.
        self.formats: tuple[str | None, str | None, str | None] = (doc, query, instruction)
        self._table_name: str = table
        self._table = sql.Identifier(table)
        self._cast = sql.SQL(storage)
        # Query vectors go to the server in pgvector's binary format (no text to format and
        # parse: about a third of an HNSW query's time at 1024 dimensions).
        register_vector(conn)
        self._exact = (not self.has_hnsw()) if exact is None else exact
        self._ids: tuple[str, ...] = ()
        self.refresh()

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def _connect(cls, dsn: str) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(dsn, autocommit=True)
        except psycopg.Error as err:
            # psycopg's message may quote the connection string; never show its password.
            raise RecommenderError(
                f"cannot connect to PostgreSQL at {mask_dsn(dsn)}: {mask_dsn(str(err).strip())}"
            ) from None

    @classmethod
    def open(
        cls,
        dsn: str,
        index: str = "default",
        *,
        exact: bool | None = None,
        ef_search: int = 100,
        replicas: Sequence[str] = (),
        max_lag_bytes: int = DEFAULT_MAX_LAG_BYTES,
        pool_size: int = 1,
    ) -> PostgresStore:
        """Open the index ``index`` of the database at ``dsn`` (``IndexNotFoundError``).

        ``exact``: search by a sequential scan (``None``: exact unless an HNSW index exists).
        ``replicas``: DSNs of streaming standbys of ``dsn`` to read from, in order of
        preference; one that is down or lags by more than ``max_lag_bytes`` of write-ahead log
        is skipped (checked at open, then every 30 s and whenever a read on it fails).
        ``pool_size`` > 1: searches run on a pool of up to that many connections to the server
        reads go to, so that threads search in parallel (one connection is opened at once,
        the others when concurrent searches need them).
        """
        conn = cls._connect(dsn)
        try:
            check_schema(conn)
            routing = ReadRouting(dsn, tuple(replicas), max_lag_bytes) if replicas else None
            return cls(
                conn,
                dsn,
                index,
                exact=exact,
                ef_search=ef_search,
                routing=routing,
                pool_size=pool_size,
            )
        except BaseException:
            conn.close()
            raise

    @classmethod
    def create(
        cls,
        dsn: str,
        identity: ModelIdentity,
        index: str = "default",
        *,
        halfvec: bool = False,
        text_version: str = BOOK_TEXT_VERSION,
        prompt_formats: tuple[str | None, str | None, str | None] = (None, None, None),
    ) -> PostgresStore:
        """Migrate the database, then add an empty index for ``identity`` (``ValueError`` if the
        name is taken). ``halfvec`` stores half-precision vectors (half the size)."""
        table = vector_table_name(index)
        storage = "halfvec" if halfvec else "vector"
        conn = cls._connect(dsn)
        try:
            migrate(conn)
            with conn.transaction():
                taken = conn.execute(
                    "SELECT 1 FROM vector_indexes WHERE name = %s", (index,)
                ).fetchone()
                if taken:
                    raise ValueError(f"the database already has an index named {index!r}")
                conn.execute(
                    "INSERT INTO vector_indexes (name, model, dimensions, text_version, "
                    "document_format, query_format, instruction, storage, vector_table) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (index, identity.model, identity.dimensions, text_version,
                     *prompt_formats, storage, table),
                )  # fmt: skip
                create_vector_table(conn, table, identity.dimensions, storage)
            return cls(conn, dsn, index)
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._read_conn is not self._conn:
            self._read_conn.close()
        self._conn.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "exact" if self._exact else "hnsw"
        return f"PostgresStore({mask_dsn(self._dsn)!r}, index={self._name!r}, {mode})"

    # -- the protocol ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def dsn(self) -> str:
        """The connection string with its password masked."""
        return mask_dsn(self._dsn)

    @property
    def read_dsn(self) -> str:
        """Where reads go now (the primary or a replica), with the password masked."""
        return mask_dsn(self._read_dsn)

    @property
    def identity(self) -> ModelIdentity:
        return self._identity

    @property
    def prompt_formats(self) -> PromptFormats | None:
        doc, query, instruction = self.formats
        if doc is None or query is None or instruction is None:
            return None
        return PromptFormats(doc, query, instruction)

    def snapshot(self) -> PostgresStore:
        """The store itself: its reads are live (a recommender skips books it does not know
        yet, and follows the store with :meth:`refresh`)."""
        return self

    @property
    def ids(self) -> Sequence[str]:
        return self._ids

    @property
    def revision(self) -> int | None:
        """The database's write counter when ``ids`` was last read."""
        return self._revision

    def refresh(self) -> bool:
        """Read ``ids`` again if any process changed the store since they were read (one
        short query when nothing changed); ``True`` when they were read again."""
        with self._lock:
            if self._routing is not None and time.monotonic() - self._routed_at > REROUTE_SECONDS:
                self._route()
            # The revision is read before the ids: a write committed in between shows up as a
            # changed revision at the next refresh, never as a missed one.
            revision = int(self._read("SELECT value FROM bookrec_revision")[0][0])
            if revision == self._revision:
                return False
            query = sql.SQL("SELECT book_id FROM {} ORDER BY position").format(self._table)
            self._ids = tuple(r[0] for r in self._read(query))
            self._revision = revision
            return True

    def __len__(self) -> int:
        rows = self._read(sql.SQL("SELECT count(*) FROM {}").format(self._table))
        return int(rows[0][0])

    def __contains__(self, book_id: object) -> bool:
        if not isinstance(book_id, str):
            return False
        query = sql.SQL("SELECT 1 FROM {} WHERE book_id = %s").format(self._table)
        return bool(self._read(query, (book_id,)))

    def vectors(self, ids: Sequence[str]) -> NDArray[np.float32]:
        dims = self._identity.dimensions
        if not ids:
            return np.zeros((0, dims), dtype=np.float32)
        query = sql.SQL(
            "SELECT book_id, embedding::vector::real[] FROM {} WHERE book_id = ANY(%s::text[])"
        ).format(self._table)
        found = {r[0]: r[1] for r in self._read(query, (list(set(ids)),))}
        missing = [i for i in ids if i not in found]
        if missing:
            raise UnknownBookError(missing)
        return np.array([found[i] for i in ids], dtype=np.float32).reshape(len(ids), dims)

    def search(
        self,
        queries: NDArray[np.float32],
        k: int,
        *,
        filters: Filters | None = None,
        exclude: Collection[str] = (),
    ) -> list[Hits]:
        matrix = np.asarray(queries, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != self._identity.dimensions:
            raise ValueError(
                f"queries must be an (m, {self._identity.dimensions}) matrix, got {matrix.shape}"
            )
        return self._search(matrix, k, filters, exclude)

    def _search(
        self,
        matrix: NDArray[np.float32],
        k: int,
        filters: Filters | None,
        exclude: Collection[str],
    ) -> list[Hits]:
        if k <= 0:
            return [Hits((), np.zeros(0, dtype=np.float32)) for _ in range(matrix.shape[0])]
        where, params = _where(filters, exclude)
        # Named parameters: the query vector is bound once even where it appears twice.
        distance = sql.SQL("v.embedding <=> %(query)s::{}").format(self._cast)
        scan = sql.SQL(
            "SELECT v.book_id, {distance} AS distance, v.position "
            "FROM {table} v JOIN books b ON b.id = v.book_id{where}"
        ).format(distance=distance, table=self._table, where=where)
        if self._exact:
            query = scan + sql.SQL(" ORDER BY distance, v.position LIMIT %(k)s")
        else:
            # The HNSW index orders by distance alone; ties are ordered by position after.
            query = sql.SQL(
                "SELECT book_id, distance FROM ({scan} ORDER BY {distance} LIMIT %(k)s) AS top "
                "ORDER BY distance, position"
            ).format(scan=scan, distance=distance)

        def run(conn: psycopg.Connection[Any]) -> list[list[Any]]:
            # One query per query vector, sent together in pipeline mode: one round trip.
            with conn.transaction(), conn.pipeline():
                self._settings(conn)
                cursors = []
                for row in matrix:
                    args = {**params, "query": np.ascontiguousarray(row), "k": int(k)}
                    cursors.append(conn.execute(query, args))
                return [cursor.fetchall() for cursor in cursors]

        results = self._on_reader(run, pooled=True)
        out = []
        for records in results:
            ids = tuple(r[0] for r in records)
            scores = np.array([1.0 - r[1] for r in records], dtype=np.float32)
            out.append(Hits(ids, scores))
        return out

    def upsert(
        self, books: Sequence[Book], vectors: NDArray[np.floating], hashes: Sequence[str]
    ) -> None:
        vecs = checked_upsert(books, vectors, hashes, self._identity.dimensions)
        if not books:
            return
        vecs = normalize(vecs)
        # A replaced book takes a new position, as the numpy store appends it anew.
        put_vector = sql.SQL(
            "INSERT INTO {table} (book_id, content_hash, embedding) VALUES (%s, %s, %s::{cast}) "
            "ON CONFLICT (book_id) DO UPDATE SET content_hash = EXCLUDED.content_hash, "
            "embedding = EXCLUDED.embedding, position = DEFAULT"
        ).format(table=self._table, cast=self._cast)
        with self._lock:
            with self._conn.transaction(), self._conn.cursor() as cur:
                cur.executemany(_UPSERT_BOOK, [_book_row(b) for b in books])
                cur.executemany(
                    put_vector,
                    [
                        (b.id, h, _vector_text(v))
                        for b, h, v in zip(books, hashes, vecs, strict=True)
                    ],
                )
            self._wrote()
            self.refresh()

    def delete(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        with self._lock:
            with self._conn.transaction():
                self._conn.execute(
                    "DELETE FROM books WHERE id = ANY(%s::text[])", (list(set(ids)),)
                )
            self._wrote()
            self.refresh()

    # -- beyond the protocol -----------------------------------------------------------------

    def catalog(self) -> Catalog:
        """The books of the database's ``books`` table, in id order (the stored catalog)."""
        rows = self._read(
            "SELECT id, title, authors, summary, tags, language, year, rating, popularity, "
            "series, extra FROM books ORDER BY id"
        )
        return Catalog(
            Book(
                id=r[0],
                title=r[1],
                authors=tuple(r[2]),
                summary=r[3],
                tags=tuple(r[4]),
                language=r[5],
                year=r[6],
                rating=r[7],
                popularity=r[8],
                series=r[9],
                extra=dict(r[10] or {}),
            )
            for r in rows
        )

    def content_hashes(self) -> dict[str, str]:
        """Each book's content hash, as stored with its vector."""
        query = sql.SQL("SELECT book_id, content_hash FROM {}").format(self._table)
        return {r[0]: r[1] for r in self._read(query)}

    @property
    def exact(self) -> bool:
        return self._exact

    @exact.setter
    def exact(self, value: bool) -> None:
        self._exact = bool(value)

    def has_hnsw(self) -> bool:
        rows = self._read(
            "SELECT 1 FROM pg_indexes WHERE tablename = %s AND indexdef ILIKE '%%USING hnsw%%'",
            (self._table_name,),
        )
        return bool(rows)

    def create_hnsw(
        self, m: int = 16, ef_construction: int = 64, *, maintenance_work_mem: str = "512MB"
    ) -> None:
        """Build the HNSW index on the vectors (after bulk loading), then search through it."""
        ops = sql.SQL("halfvec_cosine_ops" if self.storage == "halfvec" else "vector_cosine_ops")
        with self._conn.transaction():
            self._conn.execute(
                "SELECT set_config('maintenance_work_mem', %s, true)", (maintenance_work_mem,)
            )
            self._conn.execute(
                sql.SQL(
                    "CREATE INDEX IF NOT EXISTS {name} ON {table} USING hnsw (embedding {ops}) "
                    "WITH (m = {m}, ef_construction = {ef})"
                ).format(
                    name=sql.Identifier(f"{self._table_name}_hnsw"),
                    table=self._table,
                    ops=ops,
                    m=sql.Literal(int(m)),
                    ef=sql.Literal(int(ef_construction)),
                )
            )
        # Fresh statistics let the planner choose between the index and a filtered scan.
        self._conn.execute(sql.SQL("ANALYZE books, {}").format(self._table))
        self._exact = False

    # -- helpers -----------------------------------------------------------------------------

    def _settings(self, conn: psycopg.Connection[Any]) -> None:
        """Per-transaction search settings (``set_config`` takes bound values)."""
        if self._exact:
            conn.execute("SELECT set_config('enable_indexscan', 'off', true)")
            return
        for name, value in (
            ("hnsw.ef_search", str(int(self.ef_search))),
            ("hnsw.iterative_scan", self.iterative_scan),
            ("hnsw.max_scan_tuples", str(int(self.max_scan_tuples))),
        ):
            conn.execute("SELECT set_config(%s, %s, true)", (name, value))

    def _read(self, query: sql.Composable | str, params: Sequence[Any] = ()) -> list[Any]:
        # The connection is in autocommit mode: one statement, one round trip.
        with self._lock:
            return self._on_reader(
                lambda conn: conn.execute(query, params).fetchall()  # type: ignore[arg-type]
            )

    # -- replicas ----------------------------------------------------------------------------

    def _on_reader(
        self, read: Callable[[psycopg.Connection[Any]], _T], *, pooled: bool = False
    ) -> _T:
        """``read(conn)`` on the connection reads use now; a replica that fails is dropped
        and the read is made again on the primary. ``pooled``: on a connection of the reader
        pool when there is one, without taking turns with the store's other calls."""
        with self._lock:
            behind = self._behind()
            pool, dsn = self._pool, self._read_dsn
            if not pooled or pool is None or behind:
                return self._read_locked(read, behind)
        try:
            with pool.connection(timeout=POOL_TIMEOUT) as conn:
                return read(conn)
        except (psycopg.OperationalError, PoolTimeout) as err:
            if dsn == self._dsn:
                raise
            with self._lock:
                logger.warning(
                    "replica %s failed (%s); reading from the primary",
                    mask_dsn(dsn),
                    mask_dsn(str(err).strip()),
                )
                if self._read_dsn == dsn:
                    self._use(self._conn, self._dsn)
                return read(self._conn)

    def _read_locked(self, read: Callable[[psycopg.Connection[Any]], _T], behind: bool) -> _T:
        conn = self._conn if behind else self._read_conn
        if conn is self._conn:
            return read(conn)
        try:
            return read(conn)
        except psycopg.OperationalError as err:
            logger.warning(
                "replica %s failed (%s); reading from the primary",
                mask_dsn(self._read_dsn),
                mask_dsn(str(err).strip()),
            )
            self._use(self._conn, self._dsn)
        return read(self._conn)

    def _make_pool(self, dsn: str) -> ConnectionPool[Any] | None:
        """A pool of reader connections to ``dsn`` (``None`` when ``pool_size`` is 1)."""
        if self._pool_size <= 1:
            return None
        pool: ConnectionPool[Any] = ConnectionPool(
            dsn,
            min_size=1,
            max_size=self._pool_size,
            kwargs={"autocommit": True},
            configure=register_vector,
            name="bookrec-readers",
            open=False,
        )
        try:
            pool.open(wait=True, timeout=POOL_TIMEOUT)
        except PoolTimeout:
            pool.close()
            raise RecommenderError(
                f"cannot connect to PostgreSQL at {mask_dsn(dsn)} for the reader pool"
            ) from None
        return pool

    def _behind(self) -> bool:
        """Whether the replica has yet to replay this store's last write."""
        if self._written_lsn is None or self._read_conn is self._conn:
            return False
        try:
            row = self._read_conn.execute(
                "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (self._written_lsn,)
            ).fetchone()
        except psycopg.OperationalError:
            return True
        if row and row[0]:
            self._written_lsn = None
            return False
        return True

    def _wrote(self) -> None:
        if self._read_conn is not self._conn:
            row = self._conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            self._written_lsn = str(row[0]) if row else None

    def _route(self) -> None:
        """Read from the replica that ``ReadRouting`` picks now (or from the primary)."""
        assert self._routing is not None
        self._routed_at = time.monotonic()
        dsn = self._routing.read_dsn()
        if dsn == self._read_dsn:
            return
        if dsn == self._dsn:
            self._use(self._conn, dsn)
            return
        try:
            conn = self._connect(dsn)
        except RecommenderError as err:
            logger.warning("%s; reading from the primary", err)
            self._use(self._conn, self._dsn)
            return
        register_vector(conn)
        self._use(conn, dsn)
        logger.info("reading from replica %s", mask_dsn(dsn))

    def _use(self, conn: psycopg.Connection[Any], dsn: str) -> None:
        old = self._read_conn
        changed = dsn != self._read_dsn or self._pool is None
        self._read_conn, self._read_dsn = conn, dsn
        if old is not self._conn and old is not conn:
            old.close()
        if changed and self._pool_size > 1:
            old_pool, self._pool = self._pool, None
            if old_pool is not None:
                old_pool.close(timeout=1.0)
            try:
                self._pool = self._make_pool(dsn)
            except RecommenderError as err:
                logger.warning("%s; searches take turns on one connection", err)
