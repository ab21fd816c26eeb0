"""The exact top of a ranking, gathered from a vector store plus the score terms kept in memory.

A store answers "the ``c`` books closest to these query vectors"; a :class:`Scorer` may add
terms the store does not know (keyword scores, the hybrid prior, a penalty for disliked books).
:func:`top_candidates` asks the store for ``c`` hits per query and takes the ``c`` best books of
each in-memory term, scores that union exactly, and proves it complete: no book outside it can
score above the bound ``max(dense_c + add_c, alt_c)`` built from the ``c``-th values (``dense_c``:
the scorer's dense part of each query's ``c``-th cosine).
Until the ``pool``-th score beats that bound (or every source is exhausted) ``c`` grows fourfold.
A score that is the store's cosine alone needs no proof: the store's top-k is the answer (for
several queries, the union of their top-k).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .book import Book
from .filters import FilterColumns, Filters
from .profile import Scorer
from .ranking import NEG_INF, top_k
from .store import VectorStore

__all__ = ["Candidates", "RowSpace", "top_candidates"]


@dataclass(frozen=True, slots=True)
class Candidates:
    """The best books by score, best first (ties: the store's order); fewer than asked means
    there are no more. ``vectors`` are theirs (float32 rows) when they were fetched."""

    ids: tuple[str, ...]
    scores: NDArray[np.float32]
    vectors: NDArray[np.float32] | None


class RowSpace:
    """Row numbers for a store's books (their position in ``ids``, the store's ids when the
    space was made) and their metadata. A book the store returns that is not among ``ids``
    (added since, by another process), or whose metadata is unknown, is left out of rankings
    until the space is made again."""

    def __init__(
        self,
        store: VectorStore,
        books: Sequence[Book | None],
        ids: Sequence[str] | None = None,
        row_of: dict[str, int] | None = None,
    ) -> None:
        self.store = store
        self.books = books
        self.ids: Sequence[str] = tuple(store.ids) if ids is None else ids
        self.row_of = row_of or {book_id: row for row, book_id in enumerate(self.ids)}
        self._columns: FilterColumns | None = None
        self._described = np.fromiter((b is not None for b in books), dtype=bool, count=len(books))

    def ranks(self, book_id: str) -> bool:
        """Whether ``book_id`` may appear in a ranking (a row with metadata)."""
        row = self.row_of.get(book_id)
        return row is not None and self.books[row] is not None

    def rows(self, ids: Sequence[str]) -> NDArray[np.intp]:
        row_of = self.row_of
        return np.fromiter((row_of[i] for i in ids), dtype=np.intp, count=len(ids))

    def allowed(self, filters: Filters | None, exclude: Collection[str]) -> NDArray[np.bool_]:
        """The rows a ranking may return, as a mask (for terms scored in memory)."""
        if self._columns is None:
            self._columns = FilterColumns(self.books)
        mask = self._columns.mask(filters)
        allowed = self._described.copy() if mask is None else mask & self._described
        dropped = [i for i in exclude if i in self.row_of]
        if dropped:
            allowed[self.rows(dropped)] = False
        return allowed


def top_candidates(
    space: RowSpace,
    scorer: Scorer,
    pool: int,
    *,
    filters: Filters | None,
    exclude: Collection[str],
) -> Candidates:
    """The ``pool`` best books by ``scorer``'s score (see the module docstring)."""
    store = space.store
    queries = scorer.queries
    if scorer.dense_only and queries is not None and queries.shape[0] == 1:
        (hits,) = store.search(queries, pool, filters=filters, exclude=exclude)
        known = [n for n, i in enumerate(hits.ids) if space.ranks(i)]
        if len(known) < len(hits.ids):
            return Candidates(tuple(hits.ids[n] for n in known), hits.scores[known], None)
        return Candidates(hits.ids, hits.scores, None)
    n = len(space.ids)
    # The in-memory terms, masked once: rows a ranking may not return score -inf.
    terms: list[tuple[NDArray[np.float32], bool]] = []
    if scorer.alt is not None or scorer.add is not None:
        allowed = space.allowed(filters, exclude)
        for term, is_alt in ((_alt_term(scorer), True), (scorer.add, False)):
            if term is not None:
                masked = np.where(allowed, term, NEG_INF).astype(np.float32, copy=False)
                terms.append((masked, is_alt))
    c = pool
    while True:
        ids: dict[str, None] = {}
        dense_bound = NEG_INF
        store_exhausted = False
        if queries is not None:
            kth = np.full(queries.shape[0], NEG_INF, dtype=np.float32)
            for q, hits in enumerate(store.search(queries, c, filters=filters, exclude=exclude)):
                ids.update(dict.fromkeys(i for i in hits.ids if space.ranks(i)))
                if len(hits) < c:
                    store_exhausted = True  # every allowed book is among these hits
                else:
                    kth[q] = hits.scores[-1]
            if not store_exhausted:
                dense_bound = scorer.combine(kth)[0]
        add_bound = alt_bound = NEG_INF
        memory_exhausted = False
        for masked, is_alt in terms:
            rows, values = top_k(masked, c)
            ids.update(dict.fromkeys(space.ids[r] for r in rows.tolist()))
            if rows.shape[0] < c:
                memory_exhausted = True  # every allowed book is among these
            elif is_alt:
                alt_bound = values[-1]
            else:
                add_bound = values[-1]
        order_ids = list(ids)
        rows = space.rows(order_ids)
        vectors = store.vectors(order_ids)
        dense = _dense(vectors, queries, scorer)
        scores = scorer.score(vectors, rows, dense)
        keep = scores > NEG_INF
        order = np.lexsort((rows, -scores))
        order = order[keep[order]][:pool]
        # With the cosine alone, the union of each query's top ``c`` holds the top ``c`` of
        # their maximum: a book outside it is beaten, in some query's order, by ``c`` books
        # that each score at least as high in the maximum.
        complete = (
            scorer.dense_only or (queries is not None and store_exhausted) or memory_exhausted
        )
        if not complete and order.shape[0] == pool:
            bound = _bound(scorer, dense_bound, add_bound, alt_bound)
            complete = bool(scores[order[-1]] > bound)
        if complete or c >= n:
            return Candidates(
                tuple(order_ids[i] for i in order.tolist()), scores[order], vectors[order]
            )
        c *= 4


def _alt_term(scorer: Scorer) -> NDArray[np.float32] | None:
    if scorer.alt is None:
        return None
    return scorer.alt if scorer.add is None else scorer.alt + scorer.add


def _dense(
    vectors: NDArray[np.float32], queries: NDArray[np.float32] | None, scorer: Scorer
) -> NDArray[np.float32]:
    if queries is None or vectors.shape[0] == 0:
        return np.full(vectors.shape[0], NEG_INF, dtype=np.float32)
    return scorer.combine(np.asarray(vectors @ queries.T, dtype=np.float32))


def _bound(scorer: Scorer, dense: np.float32, add: np.float32, alt: np.float32) -> float:
    """The highest score a book outside the candidates could have."""
    add_part = float(add) if scorer.add is not None else 0.0
    bound = float(alt) if scorer.alt is not None else float("-inf")
    if scorer.queries is not None:
        bound = max(bound, float(dense) + add_part)
    elif scorer.alt is None:
        bound = max(bound, add_part)
    return bound
