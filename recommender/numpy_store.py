"""The memory-mapped numpy index served as a :class:`~bookrec.recommender.VectorStore`.

Search returns the exact top k by cosine. Without a scan copy it is one BLAS pass over the
float32 matrix per query (``M @ q``), or one pass per block of rows for a batch (``Q @ M.T``),
then a row mask for the filters and a top-k selection that never sorts the whole matrix. An
index with a compact scan copy (int8 by default from 100,000 books; see
:mod:`bookrec.recommender.index.scan`) is searched in two stages: the copy is scanned for a few
times ``k`` candidates, which are rescored exactly from the float32 matrix. Filters are
evaluated on the catalog's metadata columns.

Updates of single books write a complete new generation of the index (atomic, as a build does)
when the index lives on disk, under the directory's lock, on top of the newest generation, so
that processes sharing the directory never lose each other's updates. The books upserted or
deleted that way are kept in the generation's ``live.json`` until the next build from a catalog
file, which makes the index match that file again. :meth:`NumpyStore.refresh` follows a
directory that another process updated.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bookrec.client import ModelIdentity, PromptFormats, normalize

from .book import Book
from .catalog import Catalog
from .catalog_files import book_from_record
from .coalesce import Coalescer, Query
from .errors import CatalogError, CorruptIndexError, UnknownBookError
from .filters import FilterColumns, Filters
from .index import VectorIndex
from .index.files import build_lock
from .index.manifest import MANIFEST_NAME
from .index.scan import ScanCopy, two_stage_batch, two_stage_search
from .ranking import search, search_batch
from .store import Hits, checked_upsert

__all__ = ["NumpyStore"]

#: The file of a generation that holds the books updated one by one since the last build.
LIVE_FILE = "live.json"
#: Seconds an update waits for another process's update of the same directory.
LOCK_WAIT = 30.0


@dataclass(frozen=True, slots=True)
class _Live:
    """Books upserted one by one (their records) and ids deleted one by one since the build."""

    books: Mapping[str, Book] = field(default_factory=dict)
    deleted: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, Any]:
        return {
            "books": [b.to_dict() for b in self.books.values()],
            "deleted": sorted(self.deleted),
        }

    def put(self, books: Iterable[Book]) -> _Live:
        out = dict(self.books)
        out.update((b.id, b) for b in books)
        return _Live(out, self.deleted - out.keys())

    def drop(self, ids: Iterable[str]) -> _Live:
        gone = frozenset(ids)
        return _Live({i: b for i, b in self.books.items() if i not in gone}, self.deleted | gone)


def _read_live(index: VectorIndex) -> _Live:
    if index.path is None or index.manifest is None:
        return _Live()
    path = index.path / index.manifest.generation / LIVE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return _Live()
    except (OSError, ValueError) as exc:
        raise CorruptIndexError(f"{path} cannot be read: {exc}") from exc
    try:
        books = [book_from_record(r, str(path), n) for n, r in enumerate(data["books"], 1)]
        deleted = frozenset(str(i) for i in data["deleted"])
    except (KeyError, TypeError, CatalogError) as exc:
        raise CorruptIndexError(f"{path} is not a valid list of live updates: {exc}") from exc
    return _Live({b.id: b for b in books}, deleted)


def _stamp(path: Path | None) -> tuple[int, int, int] | None:
    """What changes when a new generation is published (the manifest is replaced)."""
    if path is None:
        return None
    try:
        st = (path / MANIFEST_NAME).stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass(frozen=True, slots=True)
class _State:
    """One generation of the index with the metadata of its books (never modified)."""

    index: VectorIndex
    books: Mapping[str, Book]
    columns: FilterColumns
    live: _Live
    stamp: tuple[int, int, int] | None


class NumpyStore:
    """A :class:`VectorIndex` searched with the metadata of ``catalog``.

    Rows whose id is not in the catalog are never returned. Threads may share a store: each
    call reads one generation, and :meth:`snapshot` pins one for a series of calls.
    ``coalesce_window`` (seconds; off by default) lets single-query searches that arrive while
    others are under way wait that long to be answered together in one pass over the matrix
    (:class:`~bookrec.recommender.coalesce.Coalescer`): more throughput for a server whose
    threads search at once, scores equal to a lone search's up to float rounding. Searches
    that scan an int8 copy are not coalesced: one SIMD scan per query reads less.
    ``exact=True`` ignores the index's scan copy: every search scans the float32 matrix.
    """

    def __init__(
        self,
        index: VectorIndex,
        catalog: Catalog,
        *,
        coalesce_window: float | None = None,
        exact: bool = False,
    ) -> None:
        self._base = catalog
        self._exact = exact
        self._revision = 0
        self._state = self._make_state(index, _read_live(index))
        self._coalescer = (
            Coalescer(_batch_search, window=coalesce_window)
            if coalesce_window is not None
            else None
        )

    def _make_state(self, index: VectorIndex, live: _Live) -> _State:
        books = {b.id: b for b in self._base if b.id not in live.deleted}
        books.update(live.books)
        columns = FilterColumns([books.get(i) for i in index.ids])
        return _State(index, books, columns, live, _stamp(index.path))

    def _set(self, state: _State) -> None:
        self._state = state
        self._revision += 1

    @property
    def index(self) -> VectorIndex:
        return self._state.index

    @property
    def identity(self) -> ModelIdentity:
        return self._state.index.identity

    @property
    def prompt_formats(self) -> PromptFormats | None:
        manifest = self._state.index.manifest
        return manifest.prompt_formats if manifest is not None else None

    @property
    def ids(self) -> Sequence[str]:
        return self._state.index.ids

    @property
    def revision(self) -> int:
        """Changes whenever the store moves to another generation (or updates in memory)."""
        return self._revision

    def __len__(self) -> int:
        return len(self._state.index)

    def __contains__(self, book_id: object) -> bool:
        return book_id in self._state.index

    def __repr__(self) -> str:
        return f"NumpyStore({self._state.index!r})"

    def catalog(self) -> Catalog:
        """The catalog the store was opened with, with the books updated one by one since."""
        state = self._state
        live = state.live
        books = [live.books.get(b.id, b) for b in self._base if b.id not in live.deleted]
        books.extend(b for i, b in live.books.items() if i not in self._base)
        return Catalog(books, source=self._base.source)

    def snapshot(self) -> NumpyStore:
        """A store fixed at the current generation: it never refreshes, updates stay apart."""
        pinned = NumpyStore.__new__(NumpyStore)
        pinned._base, pinned._revision, pinned._state = self._base, self._revision, self._state
        pinned._coalescer, pinned._exact = self._coalescer, self._exact
        return pinned

    def refresh(self) -> bool:
        """Move to the newest generation if another process published one; ``True`` if so."""
        state = self._state
        path = state.index.path
        if path is None or _stamp(path) == state.stamp:
            return False
        index = VectorIndex.open(path)
        manifest, old = index.manifest, state.index.manifest
        if manifest is not None and old is not None and manifest.generation == old.generation:
            self._state = _State(state.index, state.books, state.columns, state.live, _stamp(path))
            return False
        self._set(self._make_state(index, _read_live(index)))
        return True

    def vectors(self, ids: Sequence[str]) -> NDArray[np.float32]:
        index = self._state.index
        rows = np.fromiter((index.row(i) for i in ids), dtype=np.intp, count=len(ids))
        return np.asarray(index.vectors[rows], dtype=np.float32)

    def search(
        self,
        queries: NDArray[np.float32],
        k: int,
        *,
        filters: Filters | None = None,
        exclude: Collection[str] = (),
    ) -> list[Hits]:
        state = self._state
        index = state.index
        matrix = index.vectors
        allowed = state.columns.mask(filters)
        drop = [row for i in exclude if (row := index.get_row(i)) is not None]
        ids = index.ids
        scan = None if self._exact else index.scan
        # Sharing a pass pays when each query would read float32 rows through BLAS; an int8
        # scan copy is read faster by each query on its own (SIMD) than widened for BLAS.
        shared = scan is None or scan.spec.dtype == "float32"
        if queries.shape[0] == 1 and self._coalescer is not None and k > 0 and shared:
            query = Query(
                np.asarray(queries[0], dtype=np.float32),
                k,
                drop,
                group=(id(state), filters),
                context=(matrix, scan, allowed),
            )
            rows, scores = self._coalescer.search(query)
            return [Hits(tuple(ids[r] for r in rows.tolist()), scores)]
        if queries.shape[0] == 1:
            if scan is not None and not _small_subset(allowed):
                rows, scores = two_stage_search(
                    matrix, scan, queries[0], k, allowed=allowed, exclude=drop
                )
            else:
                rows, scores = search(matrix, queries[0], k, allowed=allowed, exclude=drop)
            return [Hits(tuple(ids[r] for r in rows.tolist()), scores)]
        batch_rows, batch_scores = _batch_search(
            (matrix, scan, allowed), queries, k, [drop] * queries.shape[0]
        )
        out = []
        for rows, scores in zip(batch_rows, batch_scores, strict=True):
            keep = rows >= 0
            out.append(Hits(tuple(ids[r] for r in rows[keep].tolist()), scores[keep]))
        return out

    def upsert(
        self, books: Sequence[Book], vectors: NDArray[np.floating], hashes: Sequence[str]
    ) -> None:
        vecs = checked_upsert(books, vectors, hashes, self._state.index.dimensions)

        def change(index: VectorIndex, live: _Live) -> tuple[_Change | None, _Live]:
            new = {b.id for b in books}
            keep = [r for r, i in enumerate(index.ids) if i not in new]
            return _rows(
                index,
                keep,
                [b.id for b in books],
                vecs,
                list(hashes),
            ), live.put(books)

        self._update(change)

    def delete(self, ids: Sequence[str]) -> None:
        gone = set(ids)

        def change(index: VectorIndex, live: _Live) -> tuple[_Change | None, _Live]:
            keep = [r for r, i in enumerate(index.ids) if i not in gone]
            known = {i for i in gone if i in self._base or i in index or i in live.books}
            if len(keep) == len(index):
                return None, live.drop(known)
            if not keep:
                raise UnknownBookError(sorted(gone), "a store cannot delete its last book")
            empty = np.empty((0, index.dimensions), dtype=np.float32)
            return _rows(index, keep, [], empty, []), live.drop(known)

        self._update(change)

    def _update(self, change: Any) -> None:
        """Apply ``change(index, live)`` to the newest generation and publish the result."""
        state = self._state
        path = state.index.path
        if path is None:
            rows, live = change(state.index, state.live)
            if rows is not None or live != state.live:
                index = rows.in_memory() if rows is not None else state.index
                self._set(self._make_state(index, live))
            return
        with build_lock(path, wait=LOCK_WAIT):
            latest = VectorIndex.open(path)
            old_live = _read_live(latest)
            rows, live = change(latest, old_live)
            if rows is None and live == old_live:
                if latest.manifest != state.index.manifest:
                    self._set(self._make_state(latest, live))
                return
            manifest = latest.manifest
            dtype = manifest.dtype if manifest is not None else None
            index = rows.index if rows is not None else latest
            saved = index.publish_locked(
                path,
                dtype=dtype,
                extra={LIVE_FILE: live.to_json()},
                reuse=rows.reuse() if rows is not None else None,
            )
        self._set(self._make_state(saved, live))


@dataclass(frozen=True, slots=True)
class _Change:
    """An index made of rows kept from ``old`` (``source[i]`` is the old row of row ``i``, or
    ``-1`` for a new vector)."""

    old: VectorIndex
    index: VectorIndex
    source: NDArray[np.intp]

    def reuse(self) -> tuple[ScanCopy, NDArray[np.intp]] | None:
        return (self.old.scan, self.source) if self.old.scan is not None else None

    def in_memory(self) -> VectorIndex:
        """The index with its scan copy, for an index that lives in memory only."""
        copy = self.old.scan
        if copy is None:
            return self.index
        scan = ScanCopy.encode(copy.spec, self.index.vectors, reuse=(copy, self.source))
        scan.oversample, scan.recall = copy.oversample, copy.recall
        index = self.index
        return VectorIndex(
            index.ids,
            index.vectors,
            index.identity,
            hashes=index.hashes,
            manifest=index.manifest,
            scan=scan,
        )


def _batch_search(
    context: tuple[Any, ScanCopy | None, NDArray[np.bool_] | None],
    queries: NDArray[np.float32],
    k: int,
    exclude: list[Sequence[int]],
) -> tuple[NDArray[np.intp], NDArray[np.float32]]:
    matrix, scan, allowed = context
    if scan is not None and not _small_subset(allowed):
        return two_stage_batch(matrix, scan, queries, k, allowed=allowed, exclude=exclude)
    return search_batch(matrix, queries, k, allowed=allowed, exclude=exclude)


def _small_subset(allowed: NDArray[np.bool_] | None) -> bool:
    """Whether a filter keeps so few rows that scanning them exactly is cheaper."""
    return allowed is not None and int(np.count_nonzero(allowed)) <= allowed.shape[0] // 8


def _hash(index: VectorIndex, row: int) -> str:
    hashes = index.hashes
    return hashes[row] if hashes is not None else ""


def _rows(
    old: VectorIndex,
    keep: list[int],
    new_ids: list[str],
    new_vectors: NDArray[np.float32],
    new_hashes: list[str],
) -> _Change:
    """Rows ``keep`` of ``old`` followed by new books."""
    ids = [old.ids[r] for r in keep] + new_ids
    vectors = np.concatenate([np.asarray(old.vectors[keep], dtype=np.float32), new_vectors])
    hashes = [_hash(old, r) for r in keep] + new_hashes
    source = np.concatenate(
        [np.asarray(keep, dtype=np.intp), np.full(len(new_ids), -1, dtype=np.intp)]
    )
    # The manifest carries the prompt formats into the new generation, so that the next
    # incremental build still reuses these vectors.
    index = VectorIndex(ids, normalize(vectors), old.identity, hashes=hashes, manifest=old.manifest)
    return _Change(old, index, source)
