"""The recommender: more like this, for a reader, from free text, each result with a reason.

Scores are cosines between unit vectors (stored book vectors; reader preferences and search
text embedded as queries with the instruction), ranked through a :class:`VectorStore`. The top
of the ranking goes through a selection step that removes other editions of the same work,
applies the per-author and per-series caps and, when asked, trades relevance for diversity
(MMR over a candidate pool).

When free text cannot be embedded because every endpoint is down
(:class:`bookrec.client.EmbeddingUnavailable`), the text is matched with TF-IDF over the same
book texts instead, a warning is logged and the results are marked ``degraded``. "More like
this" and recommendations from reading history use stored vectors only and are never degraded.

``search`` and ``recommend`` take ``rerank=True`` for a second stage (:mod:`.rerank`): the
first stage's best candidates are rescored by a reranker and the results marked ``reranked``;
when the reranker is down they keep the first stage's order, ``reranked`` false, and a warning
is logged.

The recommender follows its store: each query first asks the store whether any process changed
it (one stat of a file, or one short SQL query) and, if so, rebuilds its view of the books.
:meth:`Recommender.put_books` and :meth:`Recommender.delete_books` change the store, so the
next query anywhere sees the change.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bookrec.client import Embedder, EmbeddingUnavailable, Reranker, normalize

from .book import Book, group_editions, normalize_name
from .candidates import Candidates, RowSpace, top_candidates
from .catalog import Catalog
from .diversity import select_diverse
from .errors import (
    ContradictoryProfileError,
    EmptyProfileError,
    IndexMismatchError,
    UnknownBookError,
)
from .filters import Filters
from .fusion import Fusion, fuse
from .hybrid import HybridScoring
from .index import VectorIndex, check_compatible, check_prompts
from .lexical import KeywordIndex, cached_keyword_index
from .live import embed_books
from .numpy_store import NumpyStore
from .profile import (
    DEFAULT_STRATEGY,
    ProfileWeights,
    Scorer,
    Signal,
    Strategy,
    profile_scorer,
    strongest_signals,
)
from .ranking import NEG_INF, top_k
from .rerank import RerankSettings, reader_query, rerank_scores
from .store import VectorStore, store_location
from .text import keyword_texts, keywords_dir

__all__ = ["Recommendation", "Recommender"]

logger = logging.getLogger(__name__)

_REASON_TEXT_CHARS = 60
#: ``reasons(ids, vectors)``: one reason per chosen book.
Reasons = Callable[[list[str], NDArray[np.float32]], list[str]]
#: The keyword score of every row for one ranking, computed only when the fusion needs it.
KeywordQuery = Callable[[], NDArray[np.float32]]


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One result: the book, its score, a reason a person can read, whether the score came
    from the keyword fallback instead of embeddings, and whether a reranker gave the score."""

    book: Book
    score: float
    reason: str
    degraded: bool = False
    reranked: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of a result (the CLI's ``--json`` and the HTTP service use it)."""
        book = self.book
        return {
            "id": book.id,
            "title": book.title,
            "authors": list(book.authors),
            "summary": book.summary,
            "year": book.year,
            "language": book.language,
            "tags": list(book.tags),
            "series": book.series,
            "rating": book.rating,
            "score": round(self.score, 6),
            "reason": self.reason,
            "degraded": self.degraded,
            "reranked": self.reranked,
        }


@dataclass(frozen=True, slots=True)
class _SecondStage:
    """What the reranker reads for one ranking: the query and the instruction."""

    query: str
    instruction: str


def _quote(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > _REASON_TEXT_CHARS:
        text = text[: _REASON_TEXT_CHARS - 1].rstrip() + "…"
    return f"'{text}'"


class Recommender:
    """Recommendations over a catalog and a store of its book vectors.

    ``store`` is any :class:`VectorStore`; a :class:`VectorIndex` is served by a
    :class:`NumpyStore` over ``catalog``. ``embedder`` is needed only for free text
    (``search`` and ``preferences``); without one, or when it is unavailable, free text is
    matched with TF-IDF and results are degraded. ``instruction`` overrides the embedder's
    default query instruction. ``fusion`` says how the dense and the keyword rankings combine
    (:class:`~recommender.fusion.Fusion`: both by reciprocal rank unless told otherwise).
    ``hybrid`` turns on the rating/popularity boost (:class:`HybridScoring`). ``reranker``
    (e.g. the embedding client, whose ``rerank`` calls its own servers) serves
    ``rerank=True``, as ``rerank_settings`` say. Filters are keyword arguments named as the
    fields of :class:`Filters`.
    """

    def __init__(
        self,
        catalog: Catalog,
        store: VectorStore | VectorIndex,
        embedder: Embedder | None = None,
        *,
        instruction: str | None = None,
        hybrid: HybridScoring | None = None,
        weights: ProfileWeights | None = None,
        follow: bool = True,
        reranker: Reranker | None = None,
        rerank_settings: RerankSettings | None = None,
        fusion: Fusion | None = None,
    ) -> None:
        if isinstance(store, VectorIndex):
            store = NumpyStore(store, catalog)
            catalog = store.catalog()  # with the books updated one by one since the build
        self.store: VectorStore = store
        self.embedder = embedder
        self.instruction = instruction
        self.hybrid = hybrid
        self.weights = weights or ProfileWeights()
        self.follow = follow
        self.reranker = reranker
        self.rerank_settings = rerank_settings or RerankSettings()
        self.fusion = fusion or Fusion()
        if embedder is not None:
            check_compatible(self.store.identity, embedder, where=self._where)
        self._lock = threading.Lock()
        self._view = _View(catalog, self.store.snapshot(), self.store.revision)
        missing = sum(1 for b in catalog if b.id not in self._view.row_of)
        if missing:
            logger.warning(
                "%d of %d catalog books have no vector yet and cannot be recommended; "
                "update the index",
                missing,
                len(catalog),
            )

    @property
    def catalog(self) -> Catalog:
        """The books as of the last query (the store's catalog once it changed)."""
        return self._view.catalog

    def refresh(self) -> bool:
        """Follow the store (see the module docstring); ``True`` when the view was rebuilt.
        Queries call it first unless ``follow=False``."""
        self.store.refresh()
        return self._sync()

    def warm(self) -> None:
        """Build now what the first ranking would otherwise build: the keyword index of the
        books (about 12 s per 100,000 books on one core) when the fusion uses it."""
        if self.fusion.uses_lexical:
            _ = self._current().keywords

    def _sync(self) -> bool:
        if self.store.revision == self._view.revision:
            return False
        with self._lock:
            revision = self.store.revision
            if revision == self._view.revision:
                return False
            pinned = self.store.snapshot()
            self._view = _View(pinned.catalog(), pinned, revision)
        return True

    def _current(self) -> _View:
        if self.follow:
            self.refresh()
        return self._view

    # -- live updates ---------------------------------------------------------------------------

    def put_books(self, books: Sequence[Book]) -> None:
        """Embed ``books`` and add them to the store, replacing books with the same ids, in one
        write; the next query (in any process following the store) sees them."""
        if not books:
            return
        if self.embedder is None:
            raise ValueError("adding books needs an embedder")
        vectors, hashes = embed_books(self.store, books, self.embedder)
        self.store.upsert(books, vectors, hashes)
        self._sync()

    def delete_books(self, ids: Sequence[str]) -> None:
        """Remove books from the store (unknown ids are ignored)."""
        self.store.delete(ids)
        self._sync()

    # -- public API ---------------------------------------------------------------------------

    def similar(
        self, book_id: str, k: int = 10, *, diversity: float = 0.0, **filters: Any
    ) -> list[Recommendation]:
        """Books most like ``book_id`` (its stored vector; no embedding call), excluding the
        book itself and other editions of the same work."""
        _check_k(k)
        view = self._current()
        (book,) = view.books_of([book_id])
        scorer = Scorer(view.store.vectors([book_id]))
        reason = f"similar to {book.title}"
        row = view.row_of[book_id]
        return self._select(
            view,
            scorer,
            k,
            Filters.parse(**filters),
            view.editions_of([book]),
            diversity,
            lambda ids, _vectors: [reason] * len(ids),
            degraded=False,
            keywords=lambda: view.keywords.row_scores([row]),
        )

    def search(
        self,
        text: str,
        k: int = 10,
        *,
        diversity: float = 0.0,
        rerank: bool = False,
        **filters: Any,
    ) -> list[Recommendation]:
        """Books matching a free-text description (embedded as a query with the instruction);
        ``rerank``: the best candidates rescored by the reranker against ``text``."""
        _check_k(k)
        if not text.strip():
            raise ValueError("the search text is empty")
        parsed = Filters.parse(**filters)
        view = self._current()
        vectors = self._embed_queries([text]) if self.fusion.uses_dense else None
        if vectors is None:  # keywords alone: their scores are both the ranking and the fusion's
            matched = view.keyword_scores(text)
            scorer, keywords = Scorer(add=matched), lambda: matched
        else:
            scorer, keywords = Scorer(vectors), lambda: view.keyword_scores(text)
        reason = f"matches {_quote(text)}"
        stage = _SecondStage(text, self.rerank_settings.search_instruction) if rerank else None
        return self._select(
            view,
            scorer,
            k,
            parsed,
            frozenset(),
            diversity,
            lambda ids, _vectors: [reason] * len(ids),
            degraded=vectors is None and self.fusion.uses_dense,
            rerank=stage,
            keywords=keywords,
        )

    def recommend(
        self,
        *,
        history: Sequence[str] = (),
        liked: Sequence[str] = (),
        disliked: Sequence[str] = (),
        preferences: Sequence[str] = (),
        k: int = 10,
        strategy: Strategy = DEFAULT_STRATEGY,
        diversity: float = 0.0,
        exclude_read: bool = True,
        rerank: bool = False,
        **filters: Any,
    ) -> list[Recommendation]:
        """Books for a reader.

        ``history`` and ``liked`` books pull, ``disliked`` books push away, ``preferences`` are
        free-text wishes embedded as queries. ``strategy="average"`` ranks by cosine to one
        profile vector (the weighted mean of the positives minus the disliked);
        ``strategy="best"`` ranks by the best match to any single positive;
        ``strategy="blend"`` (the default) adds half of each (:func:`profile_scorer`). The
        keyword ranking fused with it (:attr:`fusion`) is that of the weighted sum of the
        positives' keyword vectors and the wishes' texts. Each result names the positive that
        contributes most to it. Read and liked books (and their other
        editions) are left out unless ``exclude_read=False``; disliked ones always are.
        ``rerank``: the best candidates rescored by the reranker against the reader's wishes and
        liked books (:func:`reader_query`).
        """
        _check_k(k)
        if strategy not in ("blend", "average", "best"):
            raise ValueError(f"strategy must be 'blend', 'average' or 'best', not {strategy!r}")
        parsed = Filters.parse(**filters)
        for name, value in (
            ("history", history),
            ("liked", liked),
            ("disliked", disliked),
            ("preferences", preferences),
        ):
            if isinstance(value, str):
                raise TypeError(f"{name} must be a list, not a string")
        disliked_ids = set(disliked)
        both = [i for i in dict.fromkeys(liked) if i in disliked_ids]
        if both:
            raise ContradictoryProfileError(both)
        view = self._current()
        store = view.store
        prefs = [p for p in preferences if p.strip()]
        liked_books = view.books_of(liked)
        liked_ids = {b.id for b in liked_books}
        history_books = [b for b in view.books_of(history) if b.id not in liked_ids]
        disliked_books = view.books_of(disliked)
        if not (liked_books or history_books or prefs):
            raise EmptyProfileError(
                "nothing to recommend from: give reading history, liked books or preferences"
            )
        w = self.weights
        positives = liked_books + history_books
        vectors = store.vectors([b.id for b in positives]) if positives else None
        signals = [
            Signal(
                f"because you liked {b.title}"
                if b.id in liked_ids
                else f"because you read {b.title}",
                w.liked if b.id in liked_ids else w.history,
                vectors[i] if vectors is not None else None,
            )
            for i, b in enumerate(positives)
        ]
        degraded = False
        if prefs:
            pref_vectors = self._embed_queries(prefs) if self.fusion.uses_dense else None
            degraded = pref_vectors is None and self.fusion.uses_dense
            for i, text in enumerate(prefs):
                vec = None if pref_vectors is None else pref_vectors[i]
                signals.append(Signal(f"matches {_quote(text)}", w.preference, vec, text))
        negatives = store.vectors([b.id for b in disliked_books]) if disliked_books else None
        rows = [view.row_of[b.id] for b in positives]
        row_weights = [w.liked if b.id in liked_ids else w.history for b in positives]

        def keywords() -> NDArray[np.float32]:
            return view.keywords.query_scores(rows, row_weights, prefs, w.preference)

        scorer = profile_scorer(signals, negatives, strategy, w.disliked, view.keyword_scores)
        excluded = list(disliked_books)
        if exclude_read:
            excluded += positives

        def reasons(ids: list[str], chosen: NDArray[np.float32]) -> list[str]:
            rows = view.space.rows(ids)
            return strongest_signals(signals, chosen, rows, strategy, view.keyword_scores)

        stage = None
        if rerank:
            query = reader_query(prefs, liked_books, history_books)
            stage = _SecondStage(query, self.rerank_settings.reader_instruction)
        return self._select(
            view,
            scorer,
            k,
            parsed,
            view.editions_of(excluded),
            diversity,
            reasons,
            degraded=degraded,
            rerank=stage,
            keywords=keywords,
        )

    # -- selection ----------------------------------------------------------------------------

    def _select(
        self,
        view: _View,
        scorer: Scorer,
        k: int,
        filters: Filters,
        exclude: frozenset[str],
        diversity: float,
        reasons: Reasons,
        *,
        degraded: bool,
        rerank: _SecondStage | None = None,
        keywords: KeywordQuery | None = None,
    ) -> list[Recommendation]:
        """The ``k`` results: the best candidates, one per work, within the caps (MMR when
        ``diversity`` > 0); the pool of candidates grows until enough survive. Candidates are
        ranked by ``scorer`` fused with the ``keywords`` ranking as :attr:`fusion` says. With
        ``rerank`` the first stage picks ``rerank_settings.candidates`` books that way, without
        MMR, and the reranker's scores order them (MMR then runs over those scores)."""
        if not 0.0 <= diversity <= 1.0:
            raise ValueError(f"diversity must be between 0 and 1, got {diversity}")
        if self.hybrid is not None:
            scorer = scorer.with_bonus(view.bonus(self.hybrid))
        if rerank is not None:
            n = max(self.rerank_settings.candidates, k)
            ranked = _Ranking(view, scorer, keywords, self.fusion, filters, exclude)
            found_ids, books, vectors = self._first_stage(view, ranked, n, filters)
            scores = rerank_scores(self.reranker, rerank.query, books, rerank.instruction)
            if scores is not None:
                rel = np.asarray(scores, dtype=np.float64)
                if diversity > 0 and vectors is None:
                    vectors = view.store.vectors(found_ids)
                picked = select_diverse(
                    rel,
                    k,
                    vectors=vectors,
                    diversity=diversity,
                    groups=[view.groups(b) for b in books],
                    caps=filters.caps,
                )
                chosen = [found_ids[i] for i in picked]
                chosen_vectors = (
                    vectors[picked] if vectors is not None else view.store.vectors(chosen)
                )
                texts = reasons(chosen, chosen_vectors)
                return [
                    Recommendation(books[i], float(rel[i]), f"{why} (reranked)", degraded, True)
                    for i, why in zip(picked, texts, strict=True)
                ]
            # No reranker answered: the first stage's best k, as without rerank (logged).
        store = view.store
        ranking = _Ranking(view, scorer, keywords, self.fusion, filters, exclude)
        pool = 3 * k + 10 if diversity == 0.0 else max(5 * k, 50)
        while True:
            found = ranking.top(pool)
            books = [view.catalog.book(i) for i in found.ids]
            vectors = found.vectors
            if diversity > 0 and vectors is None:
                vectors = store.vectors(found.ids)
            picked = select_diverse(
                found.scores,
                k,
                vectors=vectors,
                diversity=diversity,
                groups=[view.groups(b) for b in books],
                caps=filters.caps,
            )
            if len(picked) >= k or len(found.ids) < pool:
                break
            pool *= 4
        chosen = [found.ids[i] for i in picked]
        chosen_vectors = vectors[picked] if vectors is not None else store.vectors(chosen)
        texts = reasons(chosen, chosen_vectors)
        return [
            Recommendation(books[i], float(found.scores[i]), reason, degraded)
            for i, reason in zip(picked, texts, strict=True)
        ]

    def _first_stage(
        self, view: _View, ranking: _Ranking, n: int, filters: Filters
    ) -> tuple[list[str], list[Book], NDArray[np.float32] | None]:
        """The best ``n`` candidates for the reranker, one per work, within the caps: their
        ids, books and vectors (when the store returned them)."""
        pool = 3 * n + 10
        while True:
            found = ranking.top(pool)
            books = [view.catalog.book(i) for i in found.ids]
            picked = select_diverse(
                found.scores, n, groups=[view.groups(b) for b in books], caps=filters.caps
            )
            if len(picked) >= n or len(found.ids) < pool:
                break
            pool *= 4
        vectors = found.vectors[picked] if found.vectors is not None else None
        return [found.ids[i] for i in picked], [books[i] for i in picked], vectors

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
        identity = self.store.identity
        check_compatible(identity, self.embedder, where=self._where)
        check_prompts(self.store.prompt_formats, self.embedder, where=self._where)
        vecs = np.asarray(raw, dtype=np.float32)
        if vecs.shape != (len(texts), identity.dimensions):
            raise IndexMismatchError(
                f"the embedder returned query vectors of shape {vecs.shape}; the index has "
                f"{identity.dimensions}-d vectors ({identity})"
            )
        return normalize(vecs)

    @property
    def _where(self) -> str:
        return store_location(self.store)


class _Ranking:
    """One ranking's candidates: the scorer's (through the store), fused with the keyword
    ranking when the fusion and the query have one (:mod:`.fusion`)."""

    def __init__(
        self,
        view: _View,
        scorer: Scorer,
        keywords: KeywordQuery | None,
        fusion: Fusion,
        filters: Filters,
        exclude: frozenset[str],
    ) -> None:
        self.view = view
        self.scorer = scorer
        self.fusion = fusion
        self.filters = filters
        self.exclude = exclude
        self._keywords = keywords if fusion.uses_lexical else None
        self._masked: NDArray[np.float32] | None = None

    def top(self, pool: int) -> Candidates:
        """The best ``pool`` candidates (fewer when there are no more)."""
        if self._keywords is None:
            return self._dense(pool)
        view = self.view
        depth = max(pool, self.fusion.depth)
        lex_rows, lex_scores = top_k(self._keyword_scores(), depth)
        if self.fusion.uses_dense:
            dense = self._dense(depth)
            dense_rows, dense_scores = view.space.rows(dense.ids), dense.scores
        else:
            dense_rows = np.empty(0, dtype=np.intp)
            dense_scores = np.empty(0, dtype=np.float32)
        fusion = dataclasses.replace(self.fusion, depth=depth)
        rows, scores = fuse(fusion, dense_rows, dense_scores, lex_rows, lex_scores)
        rows, scores = rows[:pool], scores[:pool]
        ids = tuple(view.ids[r] for r in rows.tolist())
        return Candidates(ids, scores.astype(np.float32), view.store.vectors(ids))

    def _dense(self, pool: int) -> Candidates:
        return top_candidates(
            self.view.space, self.scorer, pool, filters=self.filters, exclude=self.exclude
        )

    def _keyword_scores(self) -> NDArray[np.float32]:
        """The keyword scores of the rows this ranking may return (others, and rows sharing no
        term with the query, score -inf), computed once."""
        if self._masked is None:
            assert self._keywords is not None
            scores = self._keywords()
            allowed = self.view.space.allowed(self.filters, self.exclude) & (scores > 0)
            self._masked = np.where(allowed, scores, NEG_INF).astype(np.float32, copy=False)
        return self._masked


class _View:
    """The recommender's picture of its store at one revision: the catalog, the store pinned
    there, each row's book, the editions of each work and the keyword index (built when first
    needed). Never modified once queries use it, so threads share it."""

    def __init__(self, catalog: Catalog, store: VectorStore, revision: Hashable) -> None:
        self.catalog = catalog
        self.store = store
        self.revision = revision
        self.ids: tuple[str, ...] = tuple(store.ids)
        self.row_of = {book_id: row for row, book_id in enumerate(self.ids)}
        self.books: list[Book | None] = [catalog.get(i) for i in self.ids]
        self.space = RowSpace(store, self.books, self.ids, self.row_of)
        self._group_cache: dict[str, list[tuple[str, Hashable]]] = {}
        self._bonus: dict[HybridScoring, NDArray[np.float32]] = {}

    @cached_property
    def keywords(self) -> KeywordIndex:
        """The keyword index of the rows' book texts, built on first use."""
        return cached_keyword_index(keyword_texts(self.books), keywords_dir(self.store))

    def keyword_scores(self, text: str) -> NDArray[np.float32]:
        """TF-IDF scores of every row for ``text``."""
        return self.keywords.text_scores(text)

    def bonus(self, hybrid: HybridScoring) -> NDArray[np.float32]:
        found = self._bonus.get(hybrid)
        if found is None:
            found = self._bonus[hybrid] = hybrid.bonus(self.books)
        return found

    def books_of(self, ids: Iterable[str]) -> list[Book]:
        seen: dict[str, None] = dict.fromkeys(ids)
        unknown = [i for i in seen if i not in self.catalog]
        if unknown:
            raise UnknownBookError(unknown)
        no_vector = [i for i in seen if i not in self.row_of]
        if no_vector:
            raise UnknownBookError(
                no_vector,
                f"not in the index yet (update it with bookrec index): {', '.join(no_vector)}",
            )
        return [self.catalog.book(i) for i in seen]

    def editions_of(self, books: Iterable[Book]) -> frozenset[str]:
        """The ids of ``books`` and of every other edition of the same works."""
        out: set[str] = set()
        for book in books:
            out.add(book.id)
            out.update(self.work_ids.get(self.work_of(book), ()))
        return frozenset(out)

    def groups(self, book: Book) -> list[tuple[str, Hashable]]:
        """The work, authors and series a book counts against in the caps (kept per book:
        normalising names costs more than the rest of a query's selection)."""
        groups = self._group_cache.get(book.id)
        if groups is None:
            groups = [("work", self.work_of(book))]
            groups.extend(("author", normalize_name(a)) for a in book.authors)
            if book.series:
                groups.append(("series", normalize_name(book.series)))
            self._group_cache[book.id] = groups
        return groups

    @cached_property
    def edition_keys(self) -> dict[str, str]:
        """The work of each book: editions grouped by work id, ISBN, title and author
        (:func:`group_editions`)."""
        return group_editions(b for b in self.books if b is not None)

    def work_of(self, book: Book) -> str:
        return self.edition_keys.get(book.id) or book.work_key

    @cached_property
    def work_ids(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for book_id, key in self.edition_keys.items():
            out.setdefault(key, []).append(book_id)
        return out


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
