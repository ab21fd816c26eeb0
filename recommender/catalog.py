"""An ordered collection of books, looked up by id."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from .book import Book
from .errors import CatalogError, UnknownBookError

__all__ = ["Catalog"]


class Catalog:
    """An ordered collection of books with lookup by id.

    Iteration yields books in file order; ``catalog["id"]`` and :meth:`book` raise
    :class:`UnknownBookError` for an unknown id; :meth:`get` returns ``None`` instead.
    """

    def __init__(
        self,
        books: Iterable[Book],
        *,
        source: str | None = None,
        lines: Sequence[int] | None = None,
        warnings: Sequence[str] = (),
    ) -> None:
        """``lines[i]`` is the line of ``source`` that book ``i`` came from (for errors)."""
        self._books: tuple[Book, ...] = tuple(books)
        self._by_id: dict[str, int] = {}
        for pos, book in enumerate(self._books):
            first = self._by_id.get(book.id)
            if first is not None:
                if lines is None:
                    raise CatalogError(f"duplicate id {book.id!r}", path=source)
                raise CatalogError(
                    f"duplicate id {book.id!r} (first defined on line {lines[first]})",
                    path=source,
                    line=lines[pos],
                )
            self._by_id[book.id] = pos
        self.source = source
        self.warnings: tuple[str, ...] = tuple(warnings)

    def __len__(self) -> int:
        return len(self._books)

    def __iter__(self) -> Iterator[Book]:
        return iter(self._books)

    def __contains__(self, book_id: object) -> bool:
        return book_id in self._by_id

    def __getitem__(self, book_id: str) -> Book:
        return self.book(book_id)

    def __repr__(self) -> str:
        return f"Catalog({len(self)} books, source={self.source!r})"

    @property
    def books(self) -> tuple[Book, ...]:
        return self._books

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(b.id for b in self._books)

    def get(self, book_id: str) -> Book | None:
        pos = self._by_id.get(book_id)
        return None if pos is None else self._books[pos]

    def book(self, book_id: str) -> Book:
        pos = self._by_id.get(book_id)
        if pos is None:
            raise UnknownBookError(book_id)
        return self._books[pos]
