"""The interface through which the recommender reaches the book vectors, wherever they live.

The recommender ranks through :class:`VectorStore` only: top-k for one or many query vectors
with filters and exclusions, vectors by id, upsert, delete, the model identity, the catalog the
store holds, and a revision that tells when another process changed it. The
memory-mapped numpy index (:class:`~bookrec.recommender.NumpyStore`) is the embedded default;
a database store implements the same protocol, and the recommender's tests run against each.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from bookrec.client import ModelIdentity, PromptFormats

from .book import Book
from .catalog import Catalog
from .filters import Filters

__all__ = ["Hits", "VectorStore", "checked_upsert", "store_location"]


@dataclass(frozen=True, slots=True)
class Hits:
    """One query's results, best first: book ids and their cosines (float32)."""

    ids: tuple[str, ...]
    scores: NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.ids)


@runtime_checkable
class VectorStore(Protocol):
    """Unit book vectors of one model, searchable by cosine.

    ``ids`` lists every book with a vector in the store's own order, which breaks ties between
    equal scores (earlier first). A book whose metadata fails ``filters``, that is listed in
    ``exclude`` or that the store holds no metadata for is never returned, so fewer than ``k``
    hits can come back.

    Stores that several processes share follow each other: ``refresh()`` moves to what another
    process wrote (a cheap check when nothing changed), and ``revision`` changes whenever the
    store moved, by ``refresh()`` or by its own writes.
    """

    @property
    def identity(self) -> ModelIdentity: ...

    @property
    def prompt_formats(self) -> PromptFormats | None:
        """The prompt formats the vectors were made with (``None``: not recorded)."""
        ...

    @property
    def ids(self) -> Sequence[str]: ...

    @property
    def revision(self) -> Hashable: ...

    def refresh(self) -> bool:
        """Follow other processes' writes; ``True`` when the store changed."""
        ...

    def catalog(self) -> Catalog:
        """The books the store holds metadata for (the stored catalog)."""
        ...

    def snapshot(self) -> VectorStore:
        """A store whose ``ids`` and reads stay at the current revision, as far as the store
        can promise (a database store is live and returns itself)."""
        ...

    def __len__(self) -> int: ...

    def __contains__(self, book_id: object) -> bool: ...

    def vectors(self, ids: Sequence[str]) -> NDArray[np.float32]:
        """Float32 copies of the vectors of ``ids``, one row each (``UnknownBookError``)."""
        ...

    def search(
        self,
        queries: NDArray[np.float32],
        k: int,
        *,
        filters: Filters | None = None,
        exclude: Collection[str] = (),
    ) -> list[Hits]:
        """The ``k`` best books for each row of ``queries`` (an (m, d) matrix of unit rows)."""
        ...

    def upsert(
        self, books: Sequence[Book], vectors: NDArray[np.floating], hashes: Sequence[str]
    ) -> None:
        """Add or replace books with their unit vectors and content hashes, all at once."""
        ...

    def delete(self, ids: Sequence[str]) -> None:
        """Remove books (unknown ids are ignored)."""
        ...


def checked_upsert(
    books: Sequence[Book], vectors: NDArray[np.floating], hashes: Sequence[str], dimensions: int
) -> NDArray[np.float32]:
    """The vectors of an upsert as float32, once there is one vector and one hash per book."""
    vecs = np.asarray(vectors, dtype=np.float32)
    if vecs.shape != (len(books), dimensions) or len(hashes) != len(books):
        raise ValueError(
            f"upsert needs one {dimensions}-d vector and one hash per book, "
            f"got {vecs.shape} and {len(hashes)} hashes for {len(books)} books"
        )
    return vecs


def store_directory(store: object) -> Path | None:
    """The index directory of a store that lives in one (a numpy index on disk), else None."""
    path = getattr(getattr(store, "index", None), "path", None)
    return Path(path) if path is not None else None


def store_location(store: VectorStore) -> str:
    """Where a store's vectors live, for messages: an index directory, a database (its
    password masked), else "the index"."""
    path = store_directory(store)
    if path is not None:
        return str(path)
    return str(getattr(store, "dsn", None) or "the index")
