"""The PostgreSQL store's schema, applied as numbered migrations by :func:`migrate`.

``bookrec_schema_version`` records every migration applied. Migration 1 creates ``books`` (the
catalog fields, unknown fields as JSON, plus the normalised names that filters match),
``vector_indexes`` (one row per index: model identity, text version, prompt formats, storage
type). Each index keeps its vectors in a table of its own, made by :func:`create_vector_table`.
Migration 2 adds ``bookrec_revision``, a counter that every transaction writing books or vectors
increments once (statement triggers), so that a process sees in one cheap read whether another
one changed the store. A database whose schema is newer than this code is refused, never
downgraded.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql

from ..errors import RecommenderError

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SchemaVersionError",
    "check_schema",
    "create_vector_table",
    "migrate",
    "schema_version",
    "vector_table_name",
]


class SchemaVersionError(RecommenderError):
    """The database was migrated by a newer bookrec than this one."""


_MIGRATION_1 = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE books (
    id text PRIMARY KEY,
    title text NOT NULL,
    authors text[] NOT NULL DEFAULT '{}',
    summary text NOT NULL DEFAULT '',
    tags text[] NOT NULL DEFAULT '{}',
    language text,
    year integer,
    rating double precision,
    popularity bigint,
    series text,
    extra jsonb NOT NULL DEFAULT '{}'::jsonb,
    norm_authors text[] NOT NULL DEFAULT '{}',
    norm_tags text[] NOT NULL DEFAULT '{}',
    work_key text NOT NULL DEFAULT ''
);
CREATE INDEX books_norm_tags ON books USING gin (norm_tags);
CREATE INDEX books_norm_authors ON books USING gin (norm_authors);
CREATE INDEX books_language ON books (language);
CREATE TABLE vector_indexes (
    name text PRIMARY KEY,
    model text NOT NULL,
    dimensions integer NOT NULL CHECK (dimensions > 0),
    text_version text NOT NULL,
    document_format text,
    query_format text,
    instruction text,
    storage text NOT NULL CHECK (storage IN ('vector', 'halfvec')),
    vector_table text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
"""

# The counter is bumped once per transaction: the function marks the transaction in a
# transaction-local setting, so a chunk of a thousand rows costs one update of the counter row.
_MIGRATION_2 = """
CREATE TABLE bookrec_revision (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    value bigint NOT NULL
);
INSERT INTO bookrec_revision (value) VALUES (1);
CREATE FUNCTION bookrec_bump_revision() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('bookrec.revised', true) IS DISTINCT FROM txid_current()::text THEN
        PERFORM set_config('bookrec.revised', txid_current()::text, true);
        UPDATE bookrec_revision SET value = value + 1;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER bookrec_revision AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON books
    FOR EACH STATEMENT EXECUTE FUNCTION bookrec_bump_revision();
DO $$
DECLARE t text;
BEGIN
    FOR t IN SELECT vector_table FROM vector_indexes LOOP
        EXECUTE format(
            'CREATE TRIGGER bookrec_revision AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %I '
            'FOR EACH STATEMENT EXECUTE FUNCTION bookrec_bump_revision()', t);
    END LOOP;
END
$$;
"""

#: The migrations in order: migration ``n`` is ``MIGRATIONS[n - 1]``.
MIGRATIONS: tuple[str, ...] = (_MIGRATION_1, _MIGRATION_2)
SCHEMA_VERSION = len(MIGRATIONS)

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS bookrec_schema_version (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
#: Serialises concurrent migrations of one database (any constant key works).
_LOCK_KEY = 0x626F6F6B726563

_INDEX_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


def schema_version(conn: psycopg.Connection[Any]) -> int:
    """The highest migration applied to the database (0 for an empty one)."""
    row = conn.execute("SELECT to_regclass('bookrec_schema_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    found = conn.execute("SELECT coalesce(max(version), 0) FROM bookrec_schema_version").fetchone()
    return int(found[0]) if found else 0


def _refuse_newer(version: int) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the database schema is at version {version}, but this bookrec knows versions up "
            f"to {SCHEMA_VERSION}; upgrade bookrec to use this database"
        )


def migrate(conn: psycopg.Connection[Any]) -> int:
    """Apply the missing migrations, each in one transaction; returns the schema version.

    Raises :class:`SchemaVersionError` when the database is newer than this code.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(_VERSION_TABLE)
        version = schema_version(conn)
    _refuse_newer(version)
    while version < SCHEMA_VERSION:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            current = schema_version(conn)  # another process may have migrated meanwhile
            _refuse_newer(current)
            if current == version:
                conn.execute(MIGRATIONS[version])
                conn.execute(
                    "INSERT INTO bookrec_schema_version (version) VALUES (%s)", (version + 1,)
                )
                current = version + 1
        version = current
    return version


def check_schema(conn: psycopg.Connection[Any]) -> None:
    """Refuse a database whose schema is missing migrations or is newer than this code."""
    with conn.transaction():
        version = schema_version(conn)
    _refuse_newer(version)
    if version < SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the database schema is at version {version}, this bookrec needs {SCHEMA_VERSION}; "
            "run `bookrec db migrate` (or create the store, which migrates)"
        )


def vector_table_name(index: str) -> str:
    """The table holding the vectors of ``index`` (a lowercase name of up to 40 characters)."""
    if not _INDEX_NAME.fullmatch(index):
        raise ValueError(
            f"index name {index!r} must be a lowercase letter then up to 39 lowercase letters, "
            "digits or underscores"
        )
    return f"vectors_{index}"


def create_vector_table(
    conn: psycopg.Connection[Any], table: str, dimensions: int, storage: str
) -> None:
    """Create the vectors table of one index: book id, row position, content hash, vector."""
    if storage not in ("vector", "halfvec"):
        raise ValueError(f"storage must be 'vector' or 'halfvec', got {storage!r}")
    conn.execute(
        sql.SQL(
            """
            CREATE TABLE {table} (
                book_id text PRIMARY KEY REFERENCES books (id) ON DELETE CASCADE,
                position bigserial NOT NULL UNIQUE,
                content_hash text NOT NULL,
                embedding {kind}({dims}) NOT NULL
            )
            """
        ).format(
            table=sql.Identifier(table),
            kind=sql.SQL(storage),
            dims=sql.Literal(int(dimensions)),
        )
    )
    conn.execute(
        sql.SQL(
            "CREATE TRIGGER bookrec_revision AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {} "
            "FOR EACH STATEMENT EXECUTE FUNCTION bookrec_bump_revision()"
        ).format(sql.Identifier(table))
    )
