"""Embedding books one by one for a store, in the form its stored vectors were made in."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from bookrec.client import Embedder, normalize

from .book import Book
from .errors import IndexMismatchError, RecommenderError
from .index.compat import check_compatible
from .store import VectorStore, store_location
from .text import book_text, content_hash

__all__ = ["embed_books"]


def embed_books(
    store: VectorStore, books: Sequence[Book], embedder: Embedder
) -> tuple[NDArray[np.float32], list[str]]:
    """Unit vectors and content hashes of ``books``, comparable with the store's vectors.

    The embedder must serve the store's model and dimensions and format documents as the
    store's vectors were formatted (:class:`IndexMismatchError` otherwise), so that a book
    added alone ranks exactly as if a build had embedded it.
    """
    ids = [b.id for b in books]
    if len(set(ids)) != len(ids):
        raise ValueError("the same book id is given twice")
    identity = store.identity
    check_compatible(identity, embedder, where=store_location(store))
    stored, current = store.prompt_formats, embedder.prompt_formats
    if stored is not None and (current is None or current.document != stored.document):
        raise IndexMismatchError(
            f"the store at {store_location(store)} was built with the document prompt "
            f"{stored.document!r}, but the embedder formats documents as "
            f"{current.document if current else None!r}; use the embedding settings the store "
            "was built with"
        )
    raw = embedder.embed_documents([book_text(b) for b in books])
    check_compatible(identity, embedder, where=store_location(store))
    vectors = np.asarray(raw, dtype=np.float32)
    if vectors.shape != (len(books), identity.dimensions):
        raise IndexMismatchError(
            f"the embedder returned vectors of shape {vectors.shape}, expected "
            f"({len(books)}, {identity.dimensions})"
        )
    if not np.isfinite(vectors).all() or not (np.linalg.norm(vectors, axis=1) > 0).all():
        raise RecommenderError("the embedder returned NaN, infinite or zero vectors")
    return normalize(vectors), [content_hash(b) for b in books]
