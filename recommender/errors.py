"""Errors raised by the recommender.

::

    RecommenderError                    base class; catch this to catch everything below
    ├── CatalogError (+ValueError)      bad catalog file: the message starts with "path:line:"
    ├── UnknownBookError (+KeyError)    an id that is not in the catalog (or has no vector)
    ├── EmptyProfileError (+ValueError) nothing to recommend from (no positive signal)
    ├── ContradictoryProfileError (+ValueError) a book both liked and disliked
    ├── IndexMismatchError              index and embedder disagree on model or dimensions
    ├── IndexNotFoundError (+FileNotFoundError)
    ├── CorruptIndexError               index files are missing, truncated or inconsistent
    └── IndexBuildError                 embedding stopped mid-build; finished chunks are kept

Errors from the embedding service itself are the client's (``client.EmbeddingError``); the
index builder wraps them in :class:`IndexBuildError` so that a caller can say how far it got.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CatalogError",
    "ContradictoryProfileError",
    "CorruptIndexError",
    "EmptyProfileError",
    "IndexBuildError",
    "IndexMismatchError",
    "IndexNotFoundError",
    "RecommenderError",
    "UnknownBookError",
]


class RecommenderError(Exception):
    """Base class of every error raised by :mod:`recommender`."""


class CatalogError(RecommenderError, ValueError):
    """A catalog file cannot be read; ``str(err)`` is ``"path:line: what is wrong"``."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        where = path or "<catalog>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line
        self.reason = message


class UnknownBookError(RecommenderError, KeyError):
    """One or more book ids are not in the catalog (or not in the index)."""

    def __init__(self, book_ids: str | Sequence[str], message: str | None = None) -> None:
        ids = (book_ids,) if isinstance(book_ids, str) else tuple(book_ids)
        self.book_ids = ids
        if message is None:
            shown = ", ".join(repr(i) for i in ids[:10])
            more = f" and {len(ids) - 10} more" if len(ids) > 10 else ""
            noun = "book id" if len(ids) == 1 else "book ids"
            message = f"unknown {noun}: {shown}{more}"
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message and wrap it in quotes.
        return self.message


class EmptyProfileError(RecommenderError, ValueError):
    """A recommendation request carries no positive signal (nothing read, liked or wanted)."""


class ContradictoryProfileError(RecommenderError, ValueError):
    """A reader both likes and dislikes a book: the profile contradicts itself.

    A ``ValueError`` (and a :class:`RecommenderError`): the CLI exits with status 2, the HTTP
    service answers 422, as for any invalid request.
    """

    def __init__(self, book_ids: Sequence[str]) -> None:
        self.book_ids = tuple(book_ids)
        shown = ", ".join(repr(i) for i in self.book_ids[:10])
        more = f" and {len(self.book_ids) - 10} more" if len(self.book_ids) > 10 else ""
        noun = "a book" if len(self.book_ids) == 1 else "books"
        super().__init__(
            f"{noun} both liked and disliked: {shown}{more}; give each book in one of them only"
        )


class IndexMismatchError(RecommenderError):
    """The index was built with another model or dimension than the embedder serves."""


class IndexNotFoundError(RecommenderError, FileNotFoundError):
    """There is no index in the given directory."""


class CorruptIndexError(RecommenderError):
    """The index directory exists but its files are missing, truncated or inconsistent."""


class IndexBuildError(RecommenderError):
    """Embedding stopped before the index was complete.

    Every chunk embedded before the failure is kept in the index directory's staging area, so
    running the same build again embeds only ``remaining`` books. The original error is
    ``__cause__``.
    """

    def __init__(self, message: str, *, embedded: int, remaining: int) -> None:
        super().__init__(message)
        self.embedded = embedded
        self.remaining = remaining
