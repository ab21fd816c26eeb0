"""How a reader's signals score books: the two profile strategies, with the reason for each result.

A reader is a list of :class:`Signal` (liked and read books, preference texts; each a vector,
or a text matched by keywords when it could not be embedded) and the disliked books' vectors.
:func:`profile_scorer` turns them into a :class:`Scorer`; :func:`strongest_signals` names, for
each result, the signal that supports it most.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from .errors import EmptyProfileError
from .ranking import best_match_scores

__all__ = [
    "BLEND_AVERAGE_SHARE",
    "DEFAULT_STRATEGY",
    "ProfileWeights",
    "Scorer",
    "Signal",
    "Strategy",
    "profile_scorer",
    "strongest_signals",
]

Strategy = Literal["blend", "average", "best"]
#: The history strategy used when none is given.
DEFAULT_STRATEGY: Strategy = "blend"
#: The share of the averaged profile in ``"blend"`` (the rest is the best single match).
BLEND_AVERAGE_SHARE = 0.5
#: Keyword scores of a text against every book (row-aligned with the store).
LexicalScores = Callable[[str], NDArray[np.float32]]


@dataclass(frozen=True, slots=True)
class ProfileWeights:
    """How much each signal counts in a reader's profile (``disliked`` pushes away)."""

    liked: float = 1.0
    history: float = 0.6
    preference: float = 1.0
    disliked: float = 0.5


@dataclass(frozen=True, slots=True)
class Signal:
    """One thing the reader told us: a reason, its weight, and a vector or a text."""

    reason: str
    weight: float
    vector: NDArray[np.float32] | None = None  # None: matched lexically (degraded)
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Scorer:
    """The score of a book: ``max(dense, alt) + add - penalty``.

    ``dense`` is ``weight`` times the best cosine between the book and any row of ``queries``
    (absent without queries), or with ``groups`` (``(count, weight)`` per run of consecutive
    queries) the weighted sum of each group's best cosine; ``alt`` and ``add`` are per-book
    arrays known in memory (keyword scores, the hybrid prior), row-aligned with the store;
    ``penalty`` is ``beta`` times the book's best positive cosine to any row of ``negatives``.
    """

    queries: NDArray[np.float32] | None = None
    weight: float = 1.0
    alt: NDArray[np.float32] | None = None
    add: NDArray[np.float32] | None = None
    negatives: NDArray[np.float32] | None = None
    beta: float = 0.0
    groups: tuple[tuple[int, float], ...] | None = None

    @property
    def dense_only(self) -> bool:
        """Whether the score is the cosine alone, so a store's top-k is already exact."""
        return (
            self.queries is not None
            and self.weight == 1.0
            and self.groups is None
            and self.alt is None
            and self.add is None
            and self.negatives is None
        )

    def query_groups(self) -> tuple[tuple[int, float], ...]:
        """``(count, weight)`` of each run of queries whose best cosine counts once."""
        if self.groups is not None:
            return self.groups
        count = 0 if self.queries is None else int(self.queries.shape[0])
        return ((count, self.weight),)

    def combine(self, per_query: NDArray[np.float32]) -> NDArray[np.float32]:
        """The dense part from per-query values (cosines, shape (n, queries), or bounds,
        shape (queries,)): each group's maximum times its weight, summed."""
        values = per_query if per_query.ndim == 2 else per_query[None, :]
        out = np.zeros(values.shape[0], dtype=np.float32)
        start = 0
        for count, weight in self.query_groups():
            best = values[:, start : start + count].max(axis=1)
            out += np.float32(weight) * best
            start += count
        return out if per_query.ndim == 2 else out[:1]

    def with_bonus(self, bonus: NDArray[np.float32] | None) -> Scorer:
        if bonus is None:
            return self
        add = bonus if self.add is None else self.add + bonus
        return dataclasses.replace(self, add=add)

    def score(
        self, vectors: NDArray[np.float32], rows: NDArray[np.intp], dense: NDArray[np.float32]
    ) -> NDArray[np.float32]:
        """Scores of the books at ``rows`` (their ``vectors``; ``dense``: their dense part,
        :meth:`combine` of their cosines)."""
        if self.queries is not None:
            out = dense.copy()
            if self.alt is not None:
                np.maximum(out, self.alt[rows], out=out)
        elif self.alt is not None:
            out = self.alt[rows].astype(np.float32)
        else:
            out = np.zeros(rows.shape[0], dtype=np.float32)
        if self.add is not None:
            out += self.add[rows]
        if self.negatives is not None and rows.shape[0]:
            out -= np.float32(self.beta) * np.maximum(best_match_scores(vectors, self.negatives), 0)
        return out


def profile_scorer(
    signals: Sequence[Signal],
    negatives: NDArray[np.float32] | None,
    strategy: Strategy,
    beta: float,
    lexical: LexicalScores,
) -> Scorer:
    """The scorer of a reader.

    ``"average"`` ranks by cosine to one profile vector: the weighted mean of the positives
    minus ``beta`` times the mean of the disliked books (keyword-matched texts add their
    weighted keyword scores). ``"best"`` ranks by the best match to any single positive,
    minus ``beta`` times the closest disliked book. ``"blend"`` (the default) adds the two:
    :data:`BLEND_AVERAGE_SHARE` of the averaged profile's cosine and the rest of the best
    match's, so books close to what the reader's books share rank first without losing those
    close to one interest only (one averaged vector blurs a reader of several genres; the best
    single match ignores agreement between books).
    """
    if strategy == "average":
        return _average(signals, negatives, beta, lexical)
    if strategy == "best":
        return _best(signals, negatives, beta, lexical)
    dense = [s for s in signals if s.vector is not None]
    average = _average(signals, negatives, beta, lexical)
    if len(dense) < 2 or average.queries is None:
        return average  # one positive: both halves rank alike
    share = BLEND_AVERAGE_SHARE
    positives = np.stack([s.vector for s in dense if s.vector is not None])
    queries = np.concatenate([average.queries, positives])
    groups = ((1, share * average.weight), (len(dense), (1.0 - share) * average.weight))
    return Scorer(
        queries.astype(np.float32, copy=False),
        add=average.add,
        negatives=negatives,
        beta=(1.0 - share) * beta,
        groups=groups,
    )


def _average(
    signals: Sequence[Signal],
    negatives: NDArray[np.float32] | None,
    beta: float,
    lexical: LexicalScores,
) -> Scorer:
    dense = [s for s in signals if s.vector is not None]
    texts = [s for s in signals if s.vector is None]
    total = sum(s.weight for s in dense)
    weight_sum = total + sum(s.weight for s in texts)
    add = None
    for s in texts:
        part = np.float32(s.weight / weight_sum) * lexical(s.text or "")
        add = part if add is None else add + part
    if not dense:
        return Scorer(add=add, negatives=negatives, beta=beta)
    profile = sum(s.weight * s.vector for s in dense if s.vector is not None)
    profile = np.asarray(profile, dtype=np.float32) / np.float32(total)
    if negatives is not None:
        profile = profile - np.float32(beta) * negatives.mean(axis=0)
    norm = float(np.linalg.norm(profile))
    if norm < 1e-6:
        raise EmptyProfileError("the liked and disliked books cancel each other out")
    query = (profile / np.float32(norm))[None, :].astype(np.float32)
    return Scorer(query, total / weight_sum, add=add)


def _best(
    signals: Sequence[Signal],
    negatives: NDArray[np.float32] | None,
    beta: float,
    lexical: LexicalScores,
) -> Scorer:
    dense = [s for s in signals if s.vector is not None]
    alt = None
    for s in signals:
        if s.vector is None:
            scores = lexical(s.text or "")
            alt = scores if alt is None else np.maximum(alt, scores)
    queries = np.stack([s.vector for s in dense if s.vector is not None]) if dense else None
    return Scorer(queries, alt=alt, negatives=negatives, beta=beta)


def strongest_signals(
    signals: Sequence[Signal],
    vectors: NDArray[np.float32],
    rows: NDArray[np.intp],
    strategy: Strategy,
    lexical: LexicalScores,
) -> list[str]:
    """For each book at ``rows`` (with its ``vectors``), the reason of the signal that
    contributes most to its score."""
    support = np.zeros((rows.shape[0], len(signals)), dtype=np.float32)
    if rows.shape[0] == 0:
        return []
    keyword_scores: dict[str, NDArray[np.float32]] = {}
    for j, s in enumerate(signals):
        if s.vector is not None:
            sims = vectors @ s.vector
        else:
            text = s.text or ""
            if text not in keyword_scores:
                keyword_scores[text] = lexical(text)
            sims = keyword_scores[text][rows]
        support[:, j] = s.weight * sims if strategy == "average" else sims
    return [signals[int(j)].reason for j in np.argmax(support, axis=1)]
