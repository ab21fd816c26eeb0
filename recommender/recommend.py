"""Recommendations with reasons: more like this, for a reader, and free-text search.

Scores are cosines between unit vectors (stored book vectors; reader preferences and search
text embedded as queries with the instruction). Filters become boolean row masks, exclusions
set rows to ``-inf``, and the top of the ranking goes through a selection step that removes
other editions of the same work, applies the per-author and per-series caps and, when asked,
trades relevance for diversity (MMR).

When free text cannot be embedded because every endpoint is down
(:class:`client.EmbeddingUnavailable`), the text is matched with TF-IDF over the same book texts
instead, a warning is logged and the results are marked ``degraded``. "More like this" and
recommendations from reading history use stored vectors only and are never degraded.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, TypedDict, Unpack

import numpy as np
from numpy.typing import NDArray

from bookrec.client import Embedder, EmbeddingUnavailable

from .catalog import Book, Catalog, book_text, normalize_name
from .errors import EmptyProfileError, IndexMismatchError, UnknownBookError
from .index import VectorIndex
from .lexical import LexicalScorer
from .ranking import (
    NEG_INF,
    best_match_scores,
    normalize,
    score_query,
    select_diverse,
    top_k,
)

__all__ = [
    "FilterOptions",
    "Filters",
    "HybridScoring",
    "ProfileWeights",
    "Recommendation",
    "Recommender",
    "Strategy",
]

logger = logging.getLogger(__name__)

Strategy = Literal["average", "best"]
_REASON_TEXT_CHARS = 60


class FilterOptions(TypedDict, total=False):
    """Keyword filters accepted by :meth:`Recommender.similar`, ``recommend`` and ``search``."""

    languages: str | Iterable[str] | None
    tags: str | Iterable[str] | None
    authors: str | Iterable[str] | None
    year_min: int | None
    year_max: int | None
    min_rating: float | None
    max_per_author: int | None
    max_per_series: int | None


def _names(value: str | Iterable[str] | None) -> frozenset[str]:
    if value is None:
        return frozenset()
    items = [value] if isinstance(value, str) else list(value)
    return frozenset(normalize_name(v) for v in items if isinstance(v, str) and v.strip())


@dataclass(frozen=True, slots=True)
class Filters:
    """Which books may be returned.

    ``languages``, ``tags`` and ``authors`` match any of the given values (case- and
    punctuation-insensitive); a book without a year or rating fails a year or rating filter.
    ``max_per_author`` / ``max_per_series`` cap how many results share an author / a series.
    """

    languages: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    authors: frozenset[str] = frozenset()
    year_min: int | None = None
    year_max: int | None = None
    min_rating: float | None = None
    max_per_author: int | None = None
    max_per_series: int | None = None

    @classmethod
    def from_options(cls, **options: Unpack[FilterOptions]) -> Filters:
        unknown = set(options) - set(FilterOptions.__annotations__)
        if unknown:
            raise TypeError(f"unknown filter(s): {', '.join(sorted(unknown))}")
        for cap in ("max_per_author", "max_per_series"):
            value = options.get(cap)
            if isinstance(value, int) and value < 1:
                raise ValueError(f"{cap} must be at least 1, got {value}")
        year_min, year_max = options.get("year_min"), options.get("year_max")
        if year_min is not None and year_max is not None and year_min > year_max:
            raise ValueError(f"year_min ({year_min}) is after year_max ({year_max})")
        return cls(
            languages=frozenset(v.lower() for v in _names(options.get("languages"))),
            tags=_names(options.get("tags")),
            authors=_names(options.get("authors")),
            year_min=year_min,
            year_max=year_max,
            min_rating=options.get("min_rating"),
            max_per_author=options.get("max_per_author"),
            max_per_series=options.get("max_per_series"),
        )

    @property
    def restricts_rows(self) -> bool:
        return bool(
            self.languages
            or self.tags
            or self.authors
            or self.year_min is not None
            or self.year_max is not None
            or self.min_rating is not None
        )


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One result: the book, its score, a reason a person can read, and whether the score came
    from the keyword fallback instead of embeddings."""

    book: Book
    score: float
    reason: str
    degraded: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.book.id,
            "title": self.book.title,
            "authors": list(self.book.authors),
            "score": round(self.score, 6),
            "reason": self.reason,
            "degraded": self.degraded,
        }


@dataclass(frozen=True, slots=True)
class HybridScoring:
    """Optional boost for well-rated and popular books (off unless passed to the recommender).

    ``score = cosine + rating_weight * (rating - 2.5) / 2.5
    + popularity_weight * log(1 + popularity) / log(1 + max popularity in the catalog)``.
    The rating term lies in [-rating_weight, +rating_weight], the popularity term in
    [0, popularity_weight]; a missing rating or popularity contributes 0.
    """

    rating_weight: float = 0.1
    popularity_weight: float = 0.05


@dataclass(frozen=True, slots=True)
class ProfileWeights:
    """How much each signal counts in a reader's profile (``disliked`` pushes away)."""

    liked: float = 1.0
    history: float = 0.6
    preference: float = 1.0
    disliked: float = 0.5


@dataclass(frozen=True, slots=True)
class _Signal:
    reason: str
    weight: float
    vector: NDArray[np.float32] | None = None  # None: matched lexically (degraded)
    text: str | None = None


def _quote(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > _REASON_TEXT_CHARS:
        text = text[: _REASON_TEXT_CHARS - 1].rstrip() + "…"
    return f"'{text}'"


class Recommender:
    """Recommendations over a catalog and its vector index.

    ``embedder`` is needed only for free text (``search`` and ``preferences``); without one,
    or when it is unavailable, free text is matched with TF-IDF and results are degraded.
    ``instruction`` overrides the embedder's default query instruction. ``hybrid`` turns on
    the rating/popularity boost (:class:`HybridScoring`).
    """

    def __init__(
        self,
        catalog: Catalog,
        index: VectorIndex,
        embedder: Embedder | None = None,
        *,
        instruction: str | None = None,
        hybrid: HybridScoring | None = None,
        weights: ProfileWeights | None = None,
    ) -> None:
        self.catalog = catalog
        self.index = index
        self.embedder = embedder
        self.instruction = instruction
        self.hybrid = hybrid
        self.weights = weights or ProfileWeights()
        if embedder is not None:
            index.check_compatible(embedder)
        self._books: list[Book | None] = [catalog.get(i) for i in index.ids]
        self._valid = np.fromiter((b is not None for b in self._books), dtype=bool)
        missing = sum(1 for b in catalog if b.id not in index)
        if missing:
            logger.warning(
                "%d of %d catalog books have no vector yet and cannot be recommended; "
                "update the index",
                missing,
                len(catalog),
            )

    # -- public API ---------------------------------------------------------------------------

    def similar(
        self, book_id: str, k: int = 10, *, diversity: float = 0.0, **filters: Unpack[FilterOptions]
    ) -> list[Recommendation]:
        """Books most like ``book_id`` (its stored vector; no embedding call), excluding the
        book itself and other editions of the same work."""
        _check_k(k)
        book = self.catalog.book(book_id)
        row = self.index.row(book_id)
        query = np.asarray(self.index.vectors[row], dtype=np.float32)
        scores = score_query(self.index.vectors, query)
        exclude = self._rows_of_works([book])
        reason = f"similar to {book.title}"
        return self._finish(
            scores,
            k,
            Filters.from_options(**filters),
            exclude,
            diversity,
            lambda rows: [reason] * len(rows),
            degraded=False,
        )

    def search(
        self, text: str, k: int = 10, *, diversity: float = 0.0, **filters: Unpack[FilterOptions]
    ) -> list[Recommendation]:
        """Books matching a free-text description (embedded as a query with the instruction)."""
        _check_k(k)
        if not text.strip():
            raise ValueError("the search text is empty")
        parsed = Filters.from_options(**filters)
        vectors = self._embed_queries([text])
        if vectors is None:
            scores = self._lexical.scores(text)
        else:
            scores = score_query(self.index.vectors, vectors[0])
        reason = f"matches {_quote(text)}"
        return self._finish(
            scores,
            k,
            parsed,
            np.empty(0, dtype=np.intp),
            diversity,
            lambda rows: [reason] * len(rows),
            degraded=vectors is None,
        )

    def recommend(
        self,
        *,
        history: Sequence[str] = (),
        liked: Sequence[str] = (),
        disliked: Sequence[str] = (),
        preferences: Sequence[str] = (),
        k: int = 10,
        strategy: Strategy = "average",
        diversity: float = 0.0,
        exclude_read: bool = True,
        **filters: Unpack[FilterOptions],
    ) -> list[Recommendation]:
        """Books for a reader.

        ``history`` and ``liked`` books pull, ``disliked`` books push away, ``preferences`` are
        free-text wishes embedded as queries. ``strategy="average"`` ranks by cosine to one
        profile vector (the weighted mean of the positives minus the disliked);
        ``strategy="best"`` ranks by the best match to any single positive. Each result names
        the positive that contributes most to it. Read and liked books (and their other
        editions) are left out unless ``exclude_read=False``; disliked ones always are.
        """
        _check_k(k)
        if strategy not in ("average", "best"):
            raise ValueError(f"strategy must be 'average' or 'best', not {strategy!r}")
        parsed = Filters.from_options(**filters)
        for name, value in (
            ("history", history),
            ("liked", liked),
            ("disliked", disliked),
            ("preferences", preferences),
        ):
            if isinstance(value, str):
                raise TypeError(f"{name} must be a list, not a string")
        prefs = [p for p in preferences if p.strip()]
        liked_books = self._books_of(liked)
        liked_ids = {b.id for b in liked_books}
        history_books = [b for b in self._books_of(history) if b.id not in liked_ids]
        disliked_books = self._books_of(disliked)
        if not (liked_books or history_books or prefs):
            raise EmptyProfileError(
                "nothing to recommend from: give reading history, liked books or preferences"
            )
        w = self.weights
        signals: list[_Signal] = []
        for book in liked_books:
            signals.append(
                _Signal(f"because you liked {book.title}", w.liked, self._vector(book.id))
            )
        for book in history_books:
            signals.append(
                _Signal(f"because you read {book.title}", w.history, self._vector(book.id))
            )
        degraded = False
        if prefs:
            pref_vectors = self._embed_queries(prefs)
            degraded = pref_vectors is None
            for i, text in enumerate(prefs):
                vec = None if pref_vectors is None else pref_vectors[i]
                signals.append(_Signal(f"matches {_quote(text)}", w.preference, vec, text))
        negatives = (
            np.stack([self._vector(b.id) for b in disliked_books]) if disliked_books else None
        )

        scores = self._profile_scores(signals, negatives, strategy)
        excluded = list(disliked_books)
        if exclude_read:
            excluded += liked_books + history_books
        exclude = self._rows_of_works(excluded)

        def reasons(rows: NDArray[np.intp]) -> list[str]:
            contrib = self._contributions(signals, rows, strategy)
            return [signals[int(j)].reason for j in np.argmax(contrib, axis=1)]

        return self._finish(scores, k, parsed, exclude, diversity, reasons, degraded=degraded)

    # -- scoring ------------------------------------------------------------------------------

    def _profile_scores(
        self, signals: list[_Signal], negatives: NDArray[np.float32] | None, strategy: Strategy
    ) -> NDArray[np.float32]:
        matrix = self.index.vectors
        dense = [s for s in signals if s.vector is not None]
        lexical = [s for s in signals if s.vector is None]
        beta = self.weights.disliked
        if strategy == "average":
            parts: list[tuple[float, NDArray[np.float32]]] = []
            if dense:
                total = sum(s.weight for s in dense)
                profile = sum(s.weight * s.vector for s in dense if s.vector is not None)
                profile = np.asarray(profile, dtype=np.float32) / np.float32(total)
                if negatives is not None:
                    profile = profile - np.float32(beta) * negatives.mean(axis=0)
                norm = float(np.linalg.norm(profile))
                if norm < 1e-6:
                    raise EmptyProfileError("the liked and disliked books cancel each other out")
                parts.append((total, score_query(matrix, profile / np.float32(norm))))
            for s in lexical:
                parts.append((s.weight, self._lexical.scores(s.text or "")))
            weight_sum = sum(wt for wt, _ in parts)
            combined = np.zeros(matrix.shape[0], dtype=np.float32)
            for wt, arr in parts:
                combined += np.float32(wt / weight_sum) * arr
            if negatives is not None and not dense:
                combined -= np.float32(beta) * np.maximum(best_match_scores(matrix, negatives), 0)
            return combined
        # "best": the best single match to any positive, minus the closest disliked book.
        scores = np.full(matrix.shape[0], NEG_INF, dtype=np.float32)
        if dense:
            stacked = np.stack([s.vector for s in dense if s.vector is not None])
            scores = best_match_scores(matrix, stacked)
        for s in lexical:
            np.maximum(scores, self._lexical.scores(s.text or ""), out=scores)
        if negatives is not None:
            scores -= np.float32(beta) * np.maximum(best_match_scores(matrix, negatives), 0)
        return scores

    def _contributions(
        self, signals: list[_Signal], rows: NDArray[np.intp], strategy: Strategy
    ) -> NDArray[np.float32]:
        """(len(rows), len(signals)) how much each signal supports each result."""
        out = np.zeros((rows.shape[0], len(signals)), dtype=np.float32)
        if rows.shape[0] == 0:
            return out
        vecs = np.asarray(self.index.vectors[rows], dtype=np.float32)
        lexical_cache: dict[str, NDArray[np.float32]] = {}
        for j, s in enumerate(signals):
            if s.vector is not None:
                sims = vecs @ s.vector
            else:
                text = s.text or ""
                if text not in lexical_cache:
                    lexical_cache[text] = self._lexical.scores(text)
                sims = lexical_cache[text][rows]
            out[:, j] = sims if strategy == "best" else s.weight * sims
        return out

    def _finish(
        self,
        scores: NDArray[np.float32],
        k: int,
        filters: Filters,
        exclude: NDArray[np.intp],
        diversity: float,
        reasons: Callable[[NDArray[np.intp]], list[str]],
        *,
        degraded: bool,
    ) -> list[Recommendation]:
        if not 0.0 <= diversity <= 1.0:
            raise ValueError(f"diversity must be between 0 and 1, got {diversity}")
        if self.hybrid is not None:
            scores += self._bonus
        np.copyto(scores, NEG_INF, where=~self._allowed(filters))
        if exclude.shape[0]:
            scores[exclude] = NEG_INF
        caps: dict[str, int] = {"work": 1}
        if filters.max_per_author is not None:
            caps["author"] = filters.max_per_author
        if filters.max_per_series is not None:
            caps["series"] = filters.max_per_series
        pool = 3 * k + 10 if diversity == 0.0 else max(5 * k, 50)
        while True:
            rows, vals = top_k(scores, pool)
            vectors = (
                np.asarray(self.index.vectors[rows], dtype=np.float32) if diversity > 0 else None
            )
            picked = select_diverse(
                vals,
                k,
                vectors=vectors,
                diversity=diversity,
                groups=[self._groups(int(r)) for r in rows],
                caps=caps,
            )
            if len(picked) >= k or rows.shape[0] < pool:
                break
            pool *= 4
        chosen = rows[picked]
        texts = reasons(chosen)
        out = []
        for r, i, reason in zip(chosen, picked, texts, strict=True):
            book = self._books[int(r)]
            assert book is not None  # rows without a book are masked out
            out.append(Recommendation(book, float(vals[i]), reason, degraded))
        return out

    # -- free text ----------------------------------------------------------------------------

    def _embed_queries(self, texts: list[str]) -> NDArray[np.float32] | None:
        """Query vectors, or ``None`` when the text must be matched lexically instead."""
        if self.embedder is None:
            logger.warning(
                "no embedding service configured: matching free text by keywords (TF-IDF); "
                "results are marked degraded"
            )
            return None
        try:
            raw = self.embedder.embed_queries(texts, self.instruction)
        except EmbeddingUnavailable as exc:
            logger.warning(
                "embedding service unavailable (%s): matching free text by keywords (TF-IDF); "
                "results are marked degraded",
                exc,
            )
            return None
        self.index.check_compatible(self.embedder)
        vecs = np.asarray(raw, dtype=np.float32)
        if vecs.shape != (len(texts), self.index.dimensions):
            raise IndexMismatchError(
                f"the embedder returned query vectors of shape {vecs.shape}; the index has "
                f"{self.index.dimensions}-d vectors ({self.index.identity})"
            )
        return np.asarray(normalize(vecs), dtype=np.float32)

    @cached_property
    def _lexical(self) -> LexicalScorer:
        return LexicalScorer([book_text(b) if b is not None else "" for b in self._books])

    # -- rows, masks and groups ---------------------------------------------------------------

    def _books_of(self, ids: Iterable[str]) -> list[Book]:
        seen: dict[str, None] = dict.fromkeys(ids)
        unknown = [i for i in seen if i not in self.catalog]
        if unknown:
            raise UnknownBookError(unknown)
        no_vector = [i for i in seen if i not in self.index]
        if no_vector:
            raise UnknownBookError(
                no_vector,
                f"not in the index yet (update it with bookrec index): {', '.join(no_vector)}",
            )
        return [self.catalog.book(i) for i in seen]

    def _vector(self, book_id: str) -> NDArray[np.float32]:
        return self.index.vector(book_id)

    def _rows_of_works(self, books: Iterable[Book]) -> NDArray[np.intp]:
        rows: list[int] = []
        for book in books:
            rows.extend(self._work_rows.get(book.work_key, ()))
            row = self.index.get_row(book.id)
            if row is not None:
                rows.append(row)
        return np.unique(np.asarray(rows, dtype=np.intp))

    @cached_property
    def _work_rows(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for row, book in enumerate(self._books):
            if book is not None:
                out.setdefault(book.work_key, []).append(row)
        return out

    def _groups(self, row: int) -> list[tuple[str, Hashable]]:
        book = self._books[row]
        if book is None:
            return []
        groups: list[tuple[str, Hashable]] = [("work", book.work_key)]
        groups.extend(("author", normalize_name(a)) for a in book.authors)
        if book.series:
            groups.append(("series", normalize_name(book.series)))
        return groups

    def _allowed(self, filters: Filters) -> NDArray[np.bool_]:
        mask = self._valid.copy()
        if not filters.restricts_rows:
            return mask
        if filters.languages:
            mask &= np.isin(self._languages, sorted(filters.languages))
        if filters.tags:
            mask &= self._any_of(self._tag_rows, filters.tags)
        if filters.authors:
            mask &= self._any_of(self._author_rows, filters.authors)
        if filters.year_min is not None:
            mask &= self._years >= filters.year_min
        if filters.year_max is not None:
            mask &= self._years <= filters.year_max
        if filters.min_rating is not None:
            mask &= self._ratings >= filters.min_rating
        return mask

    def _any_of(self, table: dict[str, list[int]], keys: frozenset[str]) -> NDArray[np.bool_]:
        mask = np.zeros(len(self._books), dtype=bool)
        for key in keys:
            rows = table.get(key)
            if rows:
                mask[rows] = True
        return mask

    @cached_property
    def _languages(self) -> NDArray[np.str_]:
        return np.array([(b.language or "") if b else "" for b in self._books], dtype=str)

    @cached_property
    def _years(self) -> NDArray[np.float64]:
        return np.array(
            [b.year if b is not None and b.year is not None else math.nan for b in self._books],
            dtype=np.float64,
        )

    @cached_property
    def _ratings(self) -> NDArray[np.float64]:
        return np.array(
            [b.rating if b is not None and b.rating is not None else math.nan for b in self._books],
            dtype=np.float64,
        )

    @cached_property
    def _tag_rows(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for row, book in enumerate(self._books):
            if book is not None:
                for tag in {normalize_name(t) for t in book.tags}:
                    out.setdefault(tag, []).append(row)
        return out

    @cached_property
    def _author_rows(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for row, book in enumerate(self._books):
            if book is not None:
                for name in {normalize_name(a) for a in book.authors}:
                    out.setdefault(name, []).append(row)
        return out

    @cached_property
    def _bonus(self) -> NDArray[np.float32]:
        hybrid = self.hybrid or HybridScoring()
        pops = [b.popularity for b in self._books if b is not None and b.popularity]
        top = math.log1p(max(pops)) if pops else 1.0
        bonus = np.zeros(len(self._books), dtype=np.float32)
        for row, book in enumerate(self._books):
            if book is None:
                continue
            value = 0.0
            if book.rating is not None:
                value += hybrid.rating_weight * (book.rating - 2.5) / 2.5
            if book.popularity:
                value += hybrid.popularity_weight * math.log1p(book.popularity) / top
            bonus[row] = value
        return bonus


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
