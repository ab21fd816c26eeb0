"""A persistent embedding cache in one SQLite file, shareable by several processes."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._exceptions import CacheError
from ._types import ModelIdentity
from ._urls import strip_userinfo

__all__ = ["EmbeddingCache", "cache_key"]

logger = logging.getLogger(__name__)

_APPLICATION_ID = 0x626B7263  # "bkrc"
_SCHEMA_VERSION = 1
_CHUNK = 500  # keys per SELECT (SQLite's default variable limit is far above this)
_NORM_TOLERANCE = 1e-3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS identities (
    alias TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    dimensions INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS vectors (
    key BLOB PRIMARY KEY,
    dimensions INTEGER NOT NULL,
    vector BLOB NOT NULL
) WITHOUT ROWID;
"""


def cache_key(
    identity: ModelIdentity, role: str, instruction: str, model_input: str, request: str = ""
) -> bytes:
    """The cache key of one vector (length-prefixed fields, so no two tuples collide).

    ``request`` is the canonical text of the request's extra fields (role hints such as
    ``input_type``, a per-role ``model``); without any (``""``) the key is the one bookrec
    always computed, so existing caches stay valid.
    """
    digest = hashlib.sha256()
    parts = [identity.model, str(identity.dimensions), role, instruction, model_input]
    if request:
        parts.append(request)
    for part in parts:
        data = part.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.digest()


class EmbeddingCache:
    """Persistent vectors in SQLite (WAL mode); safe across threads and processes.

    Rows are float32 bytes keyed by a SHA-256 of everything that changes a vector
    (:func:`cache_key`): the model identity (model and dimensions), the role and instruction,
    the exact model input and the request's extra fields (role hints). The file is marked
    with an SQLite ``application_id``; anything else (another application's database, a
    non-database, a damaged file, a row of the wrong size or with non-finite values) raises
    :class:`CacheError` instead of answering with a wrong vector.

    ``EmbeddingCache(path)`` creates the file if it is missing or empty. Use it as a context
    manager or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                self._path, timeout=timeout, check_same_thread=False, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise CacheError(f"cannot open the embedding cache {self._path}: {exc}") from exc
        try:
            self._initialise()
        except BaseException:
            self._conn.close()
            raise

    @property
    def path(self) -> Path:
        return self._path

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self._path)!r})"

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- schema -------------------------------------------------------------------------------
    def _initialise(self) -> None:
        conn = self._conn
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if app_id == 0:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    # Re-read under the write lock: another process may have just created it.
                    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
                    if app_id == 0:
                        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                        if tables:
                            raise CacheError(
                                f"{self._path} is an SQLite database of another application, "
                                "not a bookrec embedding cache; choose another cache path"
                            )
                        for statement in _SCHEMA.split(";"):
                            if statement.strip():
                                conn.execute(statement)
                        conn.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
                        conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
                        app_id, version = _APPLICATION_ID, _SCHEMA_VERSION
                    else:
                        version = conn.execute("PRAGMA user_version").fetchone()[0]
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            if app_id != _APPLICATION_ID:
                raise CacheError(
                    f"{self._path} is not a bookrec embedding cache "
                    f"(application id {app_id:#x}); choose another cache path"
                )
            if version != _SCHEMA_VERSION:
                raise CacheError(
                    f"{self._path} has cache schema version {version}; this bookrec reads "
                    f"version {_SCHEMA_VERSION}; delete the file or choose another cache path"
                )
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning("embedding cache %s: WAL mode unavailable (%s)", self._path, mode)
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            raise CacheError(
                f"{self._path} is not a usable bookrec embedding cache ({exc}); "
                "delete it or choose another cache path"
            ) from exc

    # -- access ---------------------------------------------------------------------------
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise CacheError(f"embedding cache {self._path}: {exc}") from exc

    def get_identity(self, alias: str) -> ModelIdentity | None:
        """The identity last seen for ``alias`` (an endpoint + requested model and width).

        The credentials of a URL in ``alias`` (``http://user:password@host``) are dropped
        before it is looked up or stored: the file never holds them.
        """
        alias = strip_userinfo(alias)
        rows = self._execute("SELECT model, dimensions FROM identities WHERE alias = ?", (alias,))
        if not rows:
            return None
        model, dimensions = rows[0]
        if not isinstance(model, str) or not isinstance(dimensions, int) or dimensions < 1:
            raise CacheError(f"embedding cache {self._path}: corrupt identity row for {alias!r}")
        return ModelIdentity(model, dimensions)

    def put_identity(self, alias: str, identity: ModelIdentity) -> None:
        self._execute(
            "INSERT OR REPLACE INTO identities (alias, model, dimensions) VALUES (?, ?, ?)",
            (strip_userinfo(alias), identity.model, identity.dimensions),
        )

    def get_many(self, keys: Sequence[bytes], dimensions: int) -> dict[bytes, NDArray[np.float32]]:
        """The cached vectors among ``keys``; every row is checked before it is returned."""
        found: dict[bytes, NDArray[np.float32]] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._execute(
                f"SELECT key, dimensions, vector FROM vectors WHERE key IN ({marks})", chunk
            )
            for key, dims, blob in rows:
                found[bytes(key)] = self._decode(dims, blob, dimensions)
        return found

    def put_many(self, items: Iterable[tuple[bytes, NDArray[np.float32]]]) -> None:
        """Store vectors (float32 bytes) in one transaction."""
        rows = [
            (key, int(vec.shape[0]), np.ascontiguousarray(vec, dtype="<f4").tobytes())
            for key, vec in items
        ]
        if not rows:
            return
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")  # all rows or none
                try:
                    conn.executemany(
                        "INSERT OR REPLACE INTO vectors (key, dimensions, vector) VALUES (?, ?, ?)",
                        rows,
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise CacheError(f"embedding cache {self._path}: {exc}") from exc

    def __len__(self) -> int:
        return int(self._execute("SELECT count(*) FROM vectors")[0][0])

    def _decode(self, dims: object, blob: object, expected: int) -> NDArray[np.float32]:
        if dims != expected or not isinstance(blob, bytes) or len(blob) != 4 * expected:
            raise CacheError(
                f"embedding cache {self._path} holds a corrupt row (expected {expected} "
                "float32 values); delete the file to rebuild it"
            )
        vec = np.frombuffer(blob, dtype="<f4").astype(np.float32)
        norm = float(np.linalg.norm(vec)) if np.isfinite(vec).all() else float("nan")
        if not abs(norm - 1.0) <= _NORM_TOLERANCE:
            raise CacheError(
                f"embedding cache {self._path} holds a corrupt vector (norm {norm}); "
                "delete the file to rebuild it"
            )
        return vec
