"""The ``Book`` record, with the normalised keys that group a work's editions."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ISBN_FIELDS", "KNOWN_FIELDS", "Book", "normalize_isbn", "normalize_name", "work_key"]

#: The catalog fields a :class:`Book` has attributes for; any other field goes to ``extra``.
KNOWN_FIELDS = (
    "id",
    "title",
    "authors",
    "summary",
    "tags",
    "language",
    "year",
    "rating",
    "popularity",
    "series",
)

#: The catalog fields (kept in ``Book.extra``) read as ISBNs: a string or a list of strings each.
ISBN_FIELDS = ("isbn", "isbn13", "isbn10")


@dataclass(frozen=True, slots=True)
class Book:
    """One catalog record. ``extra`` keeps the fields this library does not know about."""

    id: str
    title: str
    authors: tuple[str, ...] = ()
    summary: str = ""
    tags: tuple[str, ...] = ()
    language: str | None = None
    year: int | None = None
    rating: float | None = None
    popularity: int | None = None
    series: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def work_key(self) -> str:
        """Key shared by the editions of one work: normalised title and authors."""
        return work_key(self.title, self.authors)

    @property
    def isbns(self) -> tuple[str, ...]:
        """The book's valid ISBNs from the ``isbn``, ``isbn13`` and ``isbn10`` fields, as
        ISBN-13 digits (ISBN-10s converted), first seen first, without repeats; invalid ones are
        left out."""
        found: dict[str, None] = {}
        for name in ISBN_FIELDS:
            for text in _isbn_texts(self.extra.get(name)):
                isbn = normalize_isbn(text)
                if isbn is not None:
                    found.setdefault(isbn)
        return tuple(found)

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict, unknown fields included (as loaded)."""
        out: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "authors": list(self.authors),
            "summary": self.summary,
            "tags": list(self.tags),
        }
        for name in ("language", "year", "rating", "popularity", "series"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out


def normalize_name(text: str) -> str:
    """Case-, width- and punctuation-insensitive form of a title, author, tag or series."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(
        " " if unicodedata.category(ch)[0] in "PSZC" else ch for ch in text
    )  # punctuation, symbols, separators and controls become spaces
    return " ".join(text.split())


_TRAILING_BRACKETS = re.compile(r"\s*[(\[（【][^()\[\]（）【】]*[)\]）】]\s*$")


def work_key(title: str, authors: Iterable[str]) -> str:
    """Normalised title (without trailing bracketed edition notes) plus sorted authors."""
    bare = unicodedata.normalize("NFKC", title).strip()
    while True:
        stripped = _TRAILING_BRACKETS.sub("", bare)
        if stripped == bare or not stripped:
            break
        bare = stripped
    names = sorted({normalize_name(a) for a in authors if a.strip()})
    return normalize_name(bare) + "\x1f" + "\x1e".join(names)


_ISBN_PREFIX = re.compile(r"^ISBN(?:-?1[03])?:?", re.IGNORECASE)
_ISBN_NOISE = re.compile(r"[\s\-\u2010-\u2015=\"']")
_ISBN_SEPARATORS = re.compile(r"[,;|]")


def normalize_isbn(text: str) -> str | None:
    """The ISBN-13 digits of ``text`` (an ISBN-10 or ISBN-13, with or without hyphens, spaces,
    an ``ISBN`` prefix or Goodreads' ``="..."`` quoting), or None when it is not a valid ISBN
    (wrong length, not digits, or a wrong check digit).

    >>> normalize_isbn("0-306-40615-2")
    '9780306406157'
    """
    if not isinstance(text, str):
        return None
    bare = _ISBN_NOISE.sub("", unicodedata.normalize("NFKC", text))
    bare = _ISBN_NOISE.sub("", _ISBN_PREFIX.sub("", bare)).upper()
    if not bare.isascii():
        return None
    if len(bare) == 10 and bare[:9].isdigit() and (bare[9].isdigit() or bare[9] == "X"):
        total = sum((10 - i) * int(ch) for i, ch in enumerate(bare[:9]))
        total += 10 if bare[9] == "X" else int(bare[9])
        if total % 11:
            return None
        body = "978" + bare[:9]
        return body + _isbn13_check(body)
    if len(bare) == 13 and bare.isdigit() and bare[:3] in ("978", "979"):
        return bare if _isbn13_check(bare[:12]) == bare[12] else None
    return None


def _isbn13_check(body: str) -> str:
    total = sum(int(ch) * (3 if i % 2 else 1) for i, ch in enumerate(body))
    return str(-total % 10)


def _isbn_texts(value: object) -> list[str]:
    """The ISBN strings of one catalog field: a string (several may be separated by , ; or |),
    a number, or a list of those."""
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [str(value)]
    if isinstance(value, str):
        return [part for part in _ISBN_SEPARATORS.split(value) if part.strip()]
    if isinstance(value, list | tuple):
        return [
            text
            for item in value
            if not isinstance(item, list | tuple)
            for text in _isbn_texts(item)
        ]
    return []
