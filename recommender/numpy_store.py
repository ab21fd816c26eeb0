"""The memory-mapped numpy index served as a :class:`~bookrec.recommender.VectorStore`.

Search is exact: one BLAS pass over the float32 matrix per query (``M @ q``), or one pass per
block of rows for a batch (``Q @ M.T``), then a row mask for the filters and a top-k selection
that never sorts the whole matrix. Filters are evaluated on the catalog's metadata columns.
Updates write a complete new generation of the index (atomic, as a build does) when the index
lives on disk.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
from numpy.typing import NDArray

from bookrec.client import ModelIdentity, normalize

from .book import Book
from .catalog import Catalog
from .errors import UnknownBookError
from .filters import FilterColumns, Filters
from .index import VectorIndex
from .ranking import search, search_batch
from .store import Hits, checked_upsert

__all__ = ["NumpyStore"]


class NumpyStore:
    """A :class:`VectorIndex` searched with the metadata of ``catalog``.

    Rows whose id is not in the catalog are never returned.
    """

    def __init__(self, index: VectorIndex, catalog: Catalog) -> None:
        self._index = index
        self._books: dict[str, Book] = {b.id: b for b in catalog}
        self._columns = FilterColumns([self._books.get(i) for i in index.ids])

    @property
    def index(self) -> VectorIndex:
        return self._index

    @property
    def identity(self) -> ModelIdentity:
        return self._index.identity

    @property
    def ids(self) -> Sequence[str]:
        return self._index.ids

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, book_id: object) -> bool:
        return book_id in self._index

    def __repr__(self) -> str:
        return f"NumpyStore({self._index!r})"

    def vectors(self, ids: Sequence[str]) -> NDArray[np.float32]:
        rows = np.fromiter((self._index.row(i) for i in ids), dtype=np.intp, count=len(ids))
        return np.asarray(self._index.vectors[rows], dtype=np.float32)

    def search(
        self,
        queries: NDArray[np.float32],
        k: int,
        *,
        filters: Filters | None = None,
        exclude: Collection[str] = (),
    ) -> list[Hits]:
        matrix = self._index.vectors
        allowed = self._columns.mask(filters)
        drop = [row for i in exclude if (row := self._index.get_row(i)) is not None]
        ids = self._index.ids
        if queries.shape[0] == 1:
            rows, scores = search(matrix, queries[0], k, allowed=allowed, exclude=drop)
            return [Hits(tuple(ids[r] for r in rows.tolist()), scores)]
        batch_rows, batch_scores = search_batch(
            matrix, queries, k, allowed=allowed, exclude=[drop] * queries.shape[0]
        )
        out = []
        for rows, scores in zip(batch_rows, batch_scores, strict=True):
            keep = rows >= 0
            out.append(Hits(tuple(ids[r] for r in rows[keep].tolist()), scores[keep]))
        return out

    def upsert(
        self, books: Sequence[Book], vectors: NDArray[np.floating], hashes: Sequence[str]
    ) -> None:
        vecs = checked_upsert(books, vectors, hashes, self._index.dimensions)
        new = {b.id: n for n, b in enumerate(books)}
        keep = [r for r, i in enumerate(self._index.ids) if i not in new]
        self._books.update((b.id, b) for b in books)
        self._replace(
            [self._index.ids[r] for r in keep] + [b.id for b in books],
            np.concatenate([np.asarray(self._index.vectors[keep], dtype=np.float32), vecs]),
            [self._hash(r) for r in keep] + list(hashes),
        )

    def delete(self, ids: Sequence[str]) -> None:
        gone = set(ids)
        keep = [r for r, i in enumerate(self._index.ids) if i not in gone]
        if len(keep) == len(self._index):
            return
        if not keep:
            raise UnknownBookError(sorted(gone), "a store cannot delete its last book")
        self._replace(
            [self._index.ids[r] for r in keep],
            np.asarray(self._index.vectors[keep], dtype=np.float32),
            [self._hash(r) for r in keep],
        )

    def _hash(self, row: int) -> str:
        hashes = self._index.hashes
        return hashes[row] if hashes is not None else ""

    def _replace(self, ids: list[str], vectors: NDArray[np.float32], hashes: list[str]) -> None:
        old = self._index
        # The manifest carries the prompt formats into the new generation, so that the next
        # incremental build still reuses these vectors.
        index = VectorIndex(
            ids, normalize(vectors), old.identity, hashes=hashes, manifest=old.manifest
        )
        if old.path is not None:
            dtype = old.manifest.dtype if old.manifest is not None else None
            index = index.save(old.path, dtype=dtype)
        self._index = index
        self._columns = FilterColumns([self._books.get(i) for i in index.ids])
