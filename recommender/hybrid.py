"""A prior that lifts well-rated, popular books in every ranking (off by default)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .book import Book

__all__ = ["HybridScoring"]


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

    def bonus(self, books: Sequence[Book | None]) -> NDArray[np.float32]:
        """The boost of each book (0 for ``None``), row-aligned with ``books``."""
        pops = [b.popularity for b in books if b is not None and b.popularity]
        top = math.log1p(max(pops)) if pops else 1.0
        bonus = np.zeros(len(books), dtype=np.float32)
        for row, book in enumerate(books):
            if book is None:
                continue
            value = 0.0
            if book.rating is not None:
                value += self.rating_weight * (book.rating - 2.5) / 2.5
            if book.popularity:
                value += self.popularity_weight * math.log1p(book.popularity) / top
            bonus[row] = value
        return bonus
