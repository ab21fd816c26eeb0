"""The SQL of an indexing run, each statement on the caller's connection inside its transaction.

Every function takes the open connection of :func:`~.indexing.build_pg_index`, so that a chunk's
book rows, its vectors and the deletion of its work row commit together or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import psycopg
from numpy.typing import NDArray
from psycopg import sql

from ..book import Book
from .schema import migrate
from .store import _book_row, _vector_text

__all__ = [
    "add_chunks",
    "claim_chunk",
    "connect",
    "delete_books",
    "drop_other_builds",
    "ensure_work_table",
    "finish_chunk",
    "lock_planning",
    "pending_hashes",
    "stored_hashes",
    "stored_rows",
    "stored_vectors",
    "update_metadata",
    "write_books",
]

Conn = psycopg.Connection[Any]

_BOOK_COLUMNS = (
    "id", "title", "authors", "summary", "tags", "language", "year", "rating", "popularity",
    "series", "extra", "norm_authors", "norm_tags", "work_key",
)  # fmt: skip


def connect(dsn: str) -> Conn:
    """An autocommit connection (each ``conn.transaction()`` is one transaction), migrated."""
    conn = psycopg.connect(dsn, autocommit=True)
    try:
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def lock_planning(conn: Conn) -> None:
    """Hold, until the transaction ends, the lock under which builds are planned.

    One lock for every index: planning is short, and it also guards creating the work table.
    """
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('bookrec:build', 0))")


def ensure_work_table(conn: Conn, table: str) -> None:
    conn.execute(
        sql.SQL(
            """
            CREATE TABLE IF NOT EXISTS {} (
                index_name text NOT NULL,
                build_key text NOT NULL,
                chunk_no integer NOT NULL,
                hashes text[] NOT NULL,
                PRIMARY KEY (index_name, build_key, chunk_no)
            )
            """
        ).format(sql.Identifier(table))
    )


def pending_hashes(conn: Conn, table: str, index: str, key: str) -> list[str]:
    """The content hashes of every chunk of the build still in the work table."""
    rows = conn.execute(
        sql.SQL("SELECT unnest(hashes) FROM {} WHERE index_name = %s AND build_key = %s").format(
            sql.Identifier(table)
        ),
        (index, key),
    ).fetchall()
    return [r[0] for r in rows]


def drop_other_builds(conn: Conn, table: str, index: str, key: str) -> None:
    """Forget the chunks of earlier builds of ``index`` (made from another catalog)."""
    conn.execute(
        sql.SQL("DELETE FROM {} WHERE index_name = %s AND build_key <> %s").format(
            sql.Identifier(table)
        ),
        (index, key),
    )


def add_chunks(
    conn: Conn, table: str, index: str, key: str, chunks: Sequence[Sequence[str]]
) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                "INSERT INTO {} (index_name, build_key, chunk_no, hashes) VALUES (%s, %s, %s, %s)"
            ).format(sql.Identifier(table)),
            [(index, key, n, list(chunk)) for n, chunk in enumerate(chunks)],
        )


def claim_chunk(
    conn: Conn, table: str, index: str, key: str, *, skip_locked: bool
) -> tuple[int, list[str]] | None:
    """Lock one pending chunk of the build until the transaction ends (``None``: none free).

    ``skip_locked=False`` waits for a chunk another transaction holds.
    """
    query = sql.SQL(
        "SELECT chunk_no, hashes FROM {} WHERE index_name = %s AND build_key = %s "
        "ORDER BY chunk_no LIMIT 1 FOR UPDATE{}"
    ).format(sql.Identifier(table), sql.SQL(" SKIP LOCKED" if skip_locked else ""))
    row = conn.execute(query, (index, key)).fetchone()
    return None if row is None else (int(row[0]), list(row[1]))


def finish_chunk(conn: Conn, table: str, index: str, key: str, chunk_no: int) -> None:
    conn.execute(
        sql.SQL("DELETE FROM {} WHERE index_name = %s AND build_key = %s AND chunk_no = %s").format(
            sql.Identifier(table)
        ),
        (index, key, chunk_no),
    )


def stored_rows(conn: Conn, table: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The ids and content hashes of the index's books, in the store's order."""
    rows = conn.execute(
        sql.SQL("SELECT book_id, content_hash FROM {} ORDER BY position").format(
            sql.Identifier(table)
        )
    ).fetchall()
    return tuple(r[0] for r in rows), tuple(r[1] for r in rows)


def stored_hashes(conn: Conn, table: str, ids: Sequence[str]) -> dict[str, str]:
    rows = conn.execute(
        sql.SQL("SELECT book_id, content_hash FROM {} WHERE book_id = ANY(%s::text[])").format(
            sql.Identifier(table)
        ),
        (list(ids),),
    ).fetchall()
    return {r[0]: r[1] for r in rows}


def stored_vectors(conn: Conn, table: str, ids: Sequence[str]) -> NDArray[np.float32]:
    """The stored vectors of ``ids`` (all present), one row each, in the order given."""
    rows = conn.execute(
        sql.SQL("SELECT book_id, embedding::text FROM {} WHERE book_id = ANY(%s::text[])").format(
            sql.Identifier(table)
        ),
        (list(set(ids)),),
    ).fetchall()
    by_id = {r[0]: json.loads(r[1]) for r in rows}
    return np.asarray([by_id[i] for i in ids], dtype=np.float32)


def _upsert_books(conn: Conn, books: Sequence[Book], *, only_changed: bool) -> int:
    """Insert or update book rows through a COPY; returns how many rows were written."""
    if not books:
        return 0
    columns = sql.SQL(", ").join(map(sql.Identifier, _BOOK_COLUMNS))
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS incoming_books (LIKE books) ON COMMIT DELETE ROWS"
    )
    with conn.cursor() as cur:
        with cur.copy(sql.SQL("COPY incoming_books ({}) FROM STDIN").format(columns)) as copy:
            for book in books:
                copy.write_row(_book_row(book))
        updates = sql.SQL(", ").join(
            sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in _BOOK_COLUMNS[1:]
        )
        where: sql.Composable = sql.SQL("")
        if only_changed:
            old = sql.SQL(", ").join(
                sql.SQL("books.{}").format(sql.Identifier(c)) for c in _BOOK_COLUMNS[1:]
            )
            new = sql.SQL(", ").join(
                sql.SQL("excluded.{}").format(sql.Identifier(c)) for c in _BOOK_COLUMNS[1:]
            )
            where = sql.SQL(" WHERE ({}) IS DISTINCT FROM ({})").format(old, new)
        cur.execute(
            sql.SQL(
                "INSERT INTO books ({cols}) SELECT {cols} FROM incoming_books "
                "ON CONFLICT (id) DO UPDATE SET {updates}{where}"
            ).format(cols=columns, updates=updates, where=where)
        )
        written = cur.rowcount
        cur.execute("DELETE FROM incoming_books")
    return max(written, 0)


def update_metadata(conn: Conn, books: Sequence[Book]) -> int:
    """Rewrite the rows of ``books`` whose stored metadata differs; returns how many did."""
    return _upsert_books(conn, books, only_changed=True)


def write_books(
    conn: Conn,
    table: str,
    storage: str,
    books: Sequence[Book],
    vectors: NDArray[np.float32],
    hashes: Sequence[str],
) -> None:
    """Insert or replace ``books`` with their unit vectors and content hashes."""
    if not books:
        return
    _upsert_books(conn, books, only_changed=False)
    # A replaced book takes a new position, as PostgresStore.upsert gives it.
    query = sql.SQL(
        "INSERT INTO {table} (book_id, content_hash, embedding) VALUES (%s, %s, %s::{cast}) "
        "ON CONFLICT (book_id) DO UPDATE SET content_hash = excluded.content_hash, "
        "embedding = excluded.embedding, position = DEFAULT"
    ).format(table=sql.Identifier(table), cast=sql.SQL(storage))
    rows = [
        (book.id, h, _vector_text(vec)) for book, h, vec in zip(books, hashes, vectors, strict=True)
    ]
    with conn.cursor() as cur:
        cur.executemany(query, rows)


def delete_books(conn: Conn, ids: Sequence[str]) -> None:
    """Delete books (their vectors in every index go with them)."""
    conn.execute("DELETE FROM books WHERE id = ANY(%s::text[])", (list(set(ids)),))
