"""Filters on book metadata, evaluated as boolean masks over a list of books.

:class:`Filters` is the one spelling of a filter: its field names are the keyword arguments
of :meth:`Recommender.similar`, ``recommend`` and ``search`` (and the ``dest`` of the CLI's
options), and a store receives the parsed object.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .book import Book, normalize_name

__all__ = ["FilterColumns", "Filters"]


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
    Build one with :meth:`parse`, which accepts a string or any iterable for the name sets.
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
    def parse(cls, **options: Any) -> Filters:
        """Validate keyword filters (the field names; ``TypeError`` for any other name)."""
        unknown = set(options) - {f.name for f in dataclasses.fields(cls)}
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
        """Whether some books fail these filters (caps only shape the selection)."""
        return bool(
            self.languages
            or self.tags
            or self.authors
            or self.year_min is not None
            or self.year_max is not None
            or self.min_rating is not None
        )

    @property
    def caps(self) -> dict[str, int]:
        """The most results allowed per key of each kind; one per work, always."""
        caps = {"work": 1}
        if self.max_per_author is not None:
            caps["author"] = self.max_per_author
        if self.max_per_series is not None:
            caps["series"] = self.max_per_series
        return caps


class FilterColumns:
    """The metadata of a row-aligned list of books, as columns that filters test at once.

    ``books[i]`` is the book of row ``i``; ``None`` marks a row without a catalog book, which
    no mask allows. Columns are built on first use.
    """

    def __init__(self, books: Sequence[Book | None]) -> None:
        self._books = books
        self.valid = np.fromiter((b is not None for b in books), dtype=bool, count=len(books))
        self.all_valid = bool(self.valid.all())

    def mask(self, filters: Filters | None) -> NDArray[np.bool_] | None:
        """The rows ``filters`` allow, or ``None`` when every row is allowed."""
        if filters is None or not filters.restricts_rows:
            return None if self.all_valid else self.valid
        mask = self.valid.copy()
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

    def _any_of(self, table: Mapping[str, list[int]], keys: frozenset[str]) -> NDArray[np.bool_]:
        mask = np.zeros(len(self._books), dtype=bool)
        for key in keys:
            rows = table.get(key)
            if rows:
                mask[rows] = True
        return mask

    def _number(self, name: str) -> NDArray[np.float64]:
        values = (getattr(b, name) if b is not None else None for b in self._books)
        return np.fromiter(
            (math.nan if v is None else v for v in values), dtype=np.float64, count=len(self._books)
        )

    @cached_property
    def _languages(self) -> NDArray[np.str_]:
        return np.array([(b.language or "") if b else "" for b in self._books], dtype=str)

    @cached_property
    def _years(self) -> NDArray[np.float64]:
        return self._number("year")

    @cached_property
    def _ratings(self) -> NDArray[np.float64]:
        return self._number("rating")

    @cached_property
    def _tag_rows(self) -> dict[str, list[int]]:
        return self._rows_by_name(lambda book: book.tags)

    @cached_property
    def _author_rows(self) -> dict[str, list[int]]:
        return self._rows_by_name(lambda book: book.authors)

    def _rows_by_name(self, names: Any) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for row, book in enumerate(self._books):
            if book is not None:
                for name in {normalize_name(n) for n in names(book)}:
                    out.setdefault(name, []).append(row)
        return out
