"""The ``Book`` record, with the normalised keys that group a work's editions."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KNOWN_FIELDS", "Book", "normalize_name", "work_key"]

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
