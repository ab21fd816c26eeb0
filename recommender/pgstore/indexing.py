"""Incremental indexing into PostgreSQL, its chunks shared by several processes through row locks.

:func:`build_pg_index` plans a build once per catalog, under an advisory lock: books that left
the catalog are deleted, books whose content hash is already stored are kept (their metadata
updated when it changed), the distinct content hashes to embed go into a work table, one row
per chunk. Every process running the same build then loops: claim one chunk with ``SELECT ...
FOR UPDATE SKIP LOCKED``, embed it, write its books with their vectors in the claim's
transaction, delete the chunk row, commit. A process killed mid-chunk aborts that transaction,
which releases the claim, so another process (or the next run) embeds the chunk; a chunk is
never half written. Each process returns once the whole build is done.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from psycopg import sql

from bookrec.client import Embedder, EmbeddingError, ModelIdentity, ProgressCallback, normalize

from ..book import Book
from ..catalog import Catalog
from ..errors import IndexBuildError, IndexMismatchError, IndexNotFoundError, RecommenderError
from ..index.build import DEFAULT_CHUNK_SIZE, IndexReport
from ..index.compat import check_compatible
from ..index.plan import Rows, plan_build
from ..text import BOOK_TEXT_VERSION, book_text, content_hash
from . import _writes as db
from .dsn import mask_dsn
from .schema import vector_table_name
from .store import PostgresStore

logger = logging.getLogger(__name__)

__all__ = ["WORK_TABLE", "build_pg_index", "drop_pg_index"]

#: The table of pending chunks, shared by every index of the database.
WORK_TABLE = "bookrec_build_chunks"


def build_pg_index(
    dsn: str,
    catalog: Catalog,
    embedder: Embedder,
    *,
    index: str = "default",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: ProgressCallback | None = None,
    halfvec: bool = False,
) -> IndexReport:
    """Bring the PostgreSQL index ``index`` of ``dsn`` up to date with ``catalog``.

    Only books whose content hash is not stored yet are embedded (an unchanged catalog makes
    no request); books no longer in the catalog are deleted. Several processes may run the
    same build at once: they share its chunks, every text is embedded once. The report counts
    this process's work: ``embedded`` by it, ``reused`` already stored when it started,
    ``resumed`` embedded by other processes (or an earlier, interrupted run). ``halfvec``
    stores half-precision vectors when the build creates the index. If embedding fails:
    :class:`IndexBuildError` (committed chunks are kept; run again to finish).
    """
    if len(catalog) == 0:
        raise RecommenderError("the catalog is empty: nothing to index")
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    started = time.monotonic()
    build = _Build(dsn, catalog, embedder, index, chunk_size, progress, halfvec)
    with db.connect(dsn) as conn:
        build.plan(conn)
        build.work(conn)
    return build.report(time.monotonic() - started)


def drop_pg_index(dsn: str, index: str = "default") -> bool:
    """Remove the index ``index`` (its vectors and pending build chunks; the books stay), so that
    the next build embeds every book again, e.g. with another model. ``False`` if it did not
    exist. Run it once, before the indexers of the new build start."""
    table = vector_table_name(index)
    with db.connect(dsn) as conn, conn.transaction():
        db.lock_planning(conn)
        found = conn.execute("SELECT 1 FROM vector_indexes WHERE name = %s", (index,)).fetchone()
        if found is None:
            return False
        db.ensure_work_table(conn, WORK_TABLE)
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE index_name = %s").format(sql.Identifier(WORK_TABLE)),
            (index,),
        )
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        conn.execute("DELETE FROM vector_indexes WHERE name = %s", (index,))
    logger.info("dropped index %r of %s", index, mask_dsn(dsn))
    return True


@dataclass
class _Counts:
    embedded: int = 0
    reused: int = 0
    removed: int = 0
    unchanged: bool = False
    todo: int = 0
    done: int = 0
    pending_books: int = 0


@dataclass
class _Build:
    """One process's part of a build: the catalog by content hash, what it did so far."""

    dsn: str
    catalog: Catalog
    embedder: Embedder
    index: str
    chunk_size: int
    progress: ProgressCallback | None
    halfvec: bool = False
    counts: _Counts = field(default_factory=_Counts)
    identity: ModelIdentity | None = None

    def __post_init__(self) -> None:
        self.rows = Rows(self.catalog.ids, tuple(content_hash(b) for b in self.catalog.books))
        self.books_of: dict[str, list[Book]] = {}
        for book, h in zip(self.catalog.books, self.rows.hashes, strict=True):
            self.books_of.setdefault(h, []).append(book)
        self.key = _build_key(self.index, self.rows, self.embedder)
        self.where = f"{mask_dsn(self.dsn)} (index {self.index!r})"
        self.table = vector_table_name(self.index)
        self.storage = "vector"

    # -- planning ------------------------------------------------------------------------

    def plan(self, conn: Any) -> None:
        """Fill the work table for this build unless another process already did."""
        with conn.transaction():
            db.lock_planning(conn)
            db.ensure_work_table(conn, WORK_TABLE)
            pending = db.pending_hashes(conn, WORK_TABLE, self.index, self.key)
            if pending:
                self.join(conn, pending)
                return
            db.drop_other_builds(conn, WORK_TABLE, self.index, self.key)
            exists = self.open_store()
            old = Rows(*db.stored_rows(conn, self.table)) if exists else None
            plan = plan_build(self.rows, old, (), old_reusable=True)
            self.counts.reused = plan.reused
            self.counts.removed = plan.removed
            if old is not None:
                current = set(self.rows.ids)
                gone = [book_id for book_id in old.ids if book_id not in current]
                changed = self.write_reused(conn, old, plan.reuse)
                if gone:
                    db.delete_books(conn, gone)
                if plan.unchanged and not changed:
                    self.counts.unchanged = True
            todo = list(plan.to_embed)
            self.counts.todo = len(todo)
            self.counts.pending_books = plan.embedded
            self.report_progress()
            if not exists:
                if not todo:  # pragma: no cover - a non-empty catalog has something to embed
                    return
                # The vectors table needs the model's width: the first chunk, embedded under
                # the lock, creates the index (the other processes wait for it).
                first, todo = todo[: self.chunk_size], todo[self.chunk_size :]
                vectors = self.embed(first)
                self.create_store()
                self.write(conn, first, vectors)
            chunks = [todo[a : a + self.chunk_size] for a in range(0, len(todo), self.chunk_size)]
            db.add_chunks(conn, WORK_TABLE, self.index, self.key, chunks)

    def join(self, conn: Any, pending: Sequence[str]) -> None:
        """Join a build another process planned: count what is left for the report."""
        self.open_store()
        waiting = set(pending)
        self.counts.pending_books = sum(len(self.books_of.get(h, ())) for h in waiting)
        self.counts.reused = len(self.rows.ids) - self.counts.pending_books
        self.counts.todo = len(waiting)

    def open_store(self) -> bool:
        """Learn the stored index's model and storage; ``False`` if there is no such index."""
        try:
            store = PostgresStore.open(self.dsn, self.index)
        except IndexNotFoundError:
            return False
        with store:
            self.identity, self.storage = store.identity, store.storage
            check_compatible(store.identity, self.embedder, where=self.where)
            formats = self.embedder.prompt_formats
            document = formats.document if formats is not None else None
            if store.text_version != BOOK_TEXT_VERSION or store.formats[0] != document:
                raise IndexMismatchError(
                    f"the index at {self.where} was built from another book text version or "
                    "document prompt; its vectors cannot be reused. Embed every book again "
                    "with bookrec index --rebuild"
                )
        return True

    def create_store(self) -> None:
        """Create the index for the model that answered the first request."""
        assert self.identity is not None
        formats = self.embedder.prompt_formats
        prompts = (
            (formats.document, formats.query, formats.instruction)
            if formats is not None
            else (None, None, None)
        )
        with PostgresStore.create(
            self.dsn, self.identity, self.index, halfvec=self.halfvec, prompt_formats=prompts
        ) as store:
            self.storage = store.storage

    def write_reused(self, conn: Any, old: Rows, reuse: Mapping[str, int]) -> bool:
        """Store catalog books whose vector is already stored; return whether any was written.

        A book stored under its own id keeps its vector (its metadata row is updated if it
        changed); a new id whose text is stored under another id gets a copy of that vector.
        """
        stored = dict(zip(old.ids, old.hashes, strict=True))
        books = {b.id: b for b in self.catalog.books}
        copies: list[tuple[Book, str, str]] = []
        same: list[Book] = []
        for book_id, row in reuse.items():
            h = old.hashes[row]
            if stored.get(book_id) == h:
                same.append(books[book_id])
            else:
                copies.append((books[book_id], old.ids[row], h))
        changed = db.update_metadata(conn, same)
        if copies:
            vectors = db.stored_vectors(conn, self.table, [src for _, src, _ in copies])
            db.write_books(
                conn,
                self.table,
                self.storage,
                [b for b, _, _ in copies],
                vectors,
                [h for _, _, h in copies],
            )
        return changed > 0 or bool(copies)

    # -- the shared work -----------------------------------------------------------------

    def work(self, conn: Any) -> None:
        """Claim, embed, write chunks until none is left, waiting for those others hold."""
        while True:
            with conn.transaction():
                claimed = db.claim_chunk(conn, WORK_TABLE, self.index, self.key, skip_locked=True)
                if claimed is None:
                    if not db.pending_hashes(conn, WORK_TABLE, self.index, self.key):
                        return
                    # Every pending chunk is held: wait for a holder to finish (its chunk is
                    # then gone) or to die (its chunk is then ours).
                    claimed = db.claim_chunk(
                        conn, WORK_TABLE, self.index, self.key, skip_locked=False
                    )
                    if claimed is None:
                        continue
                chunk_no, hashes = claimed
                if self.identity is None and not self.open_store():  # pragma: no cover
                    raise RecommenderError(f"the index {self.index!r} vanished during the build")
                wanted = self.missing(conn, hashes)
                if wanted:
                    self.write(conn, wanted, self.embed(wanted))
                db.finish_chunk(conn, WORK_TABLE, self.index, self.key, chunk_no)

    def missing(self, conn: Any, hashes: Sequence[str]) -> list[str]:
        """The hashes of a chunk some of whose catalog books are not stored with that hash."""
        ids = [b.id for h in hashes for b in self.books_of.get(h, ())]
        stored = db.stored_hashes(conn, self.table, ids)
        return [h for h in hashes if any(stored.get(b.id) != h for b in self.books_of.get(h, ()))]

    def write(self, conn: Any, hashes: Sequence[str], vectors: NDArray[np.float32]) -> None:
        """Write every catalog book of ``hashes`` with its vector, in the open transaction."""
        books: list[Book] = []
        rows: list[int] = []
        book_hashes: list[str] = []
        for i, h in enumerate(hashes):
            for book in self.books_of.get(h, ()):
                books.append(book)
                rows.append(i)
                book_hashes.append(h)
        db.write_books(conn, self.table, self.storage, books, vectors[rows], book_hashes)
        self.counts.embedded += len(books)
        self.counts.done += len(hashes)
        self.report_progress()

    def embed(self, hashes: Sequence[str]) -> NDArray[np.float32]:
        """Unit vectors for the texts of ``hashes``, checked against the index's model."""
        texts = [book_text(self.books_of[h][0]) for h in hashes]
        try:
            raw = self.embedder.embed_documents(texts)
        except EmbeddingError as exc:
            left = self.counts.todo - self.counts.done
            raise IndexBuildError(
                f"embedding stopped after {self.counts.done} of {self.counts.todo} texts "
                f"({type(exc).__name__}: {exc}); the chunks written so far are committed, run "
                f"the build again to embed only the remaining {left}",
                embedded=self.counts.done,
                remaining=left,
            ) from exc
        if self.identity is not None:
            # The answer names the model: another model is a mismatch, not a bad response.
            check_compatible(self.identity, self.embedder, where=self.where)
        arr = np.asarray(raw, dtype=np.float32)
        dims = self.identity.dimensions if self.identity is not None else None
        if (
            arr.ndim != 2
            or arr.shape[0] != len(hashes)
            or (dims is not None and arr.shape[1] != dims)
        ):
            raise IndexMismatchError(
                f"the embedder returned vectors of shape {arr.shape}, expected "
                f"({len(hashes)}, {dims if dims is not None else 'd'}) for {self.where}"
            )
        if not np.isfinite(arr).all():
            raise RecommenderError("the embedder returned NaN or infinite values")
        seen = self.embedder.identity or ModelIdentity(
            self.identity.model if self.identity is not None else "unknown", int(arr.shape[1])
        )
        if self.identity is None:
            self.identity = seen
        return normalize(arr)

    def report_progress(self) -> None:
        if self.progress is not None:
            self.progress(self.counts.done, self.counts.todo)

    def report(self, seconds: float) -> IndexReport:
        c = self.counts
        total = len(self.rows.ids)
        return IndexReport(
            self.where,
            total,
            c.embedded,
            c.reused,
            c.removed,
            resumed=total - c.embedded - c.reused,
            unchanged=c.unchanged,
            identity=self.identity,
            seconds=seconds,
        )


def _build_key(index: str, rows: Rows, embedder: Embedder) -> str:
    """A digest naming one build: the index, the catalog's ids with their hashes, the prompt."""
    formats = embedder.prompt_formats
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{index}\x00{BOOK_TEXT_VERSION}\x00{formats!r}\x00".encode())
    for book_id, h in zip(rows.ids, rows.hashes, strict=True):
        digest.update(f"{book_id}\x01{h}\x02".encode())
    return digest.hexdigest()
