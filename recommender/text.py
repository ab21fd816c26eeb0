"""The text that represents a book to the embedding model, with its content hash.

:func:`book_text` is the single place that decides what text is embedded for a book; its
:data:`BOOK_TEXT_VERSION` is written into every index manifest, and :func:`content_hash` (a
hash of that text) decides what an incremental index build re-embeds.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

from bookrec.client import is_cjk

from .book import Book
from .store import store_directory

__all__ = [
    "BOOK_TEXT_VERSION",
    "MAX_BOOK_TEXT_CHARS",
    "book_text",
    "content_hash",
    "keyword_text",
    "keyword_texts",
    "keywords_dir",
]

#: The folder of an index directory that holds its keyword indexes.
KEYWORDS_DIR = "keywords"

#: Version of :func:`book_text`. Change it whenever the text template changes; it is stored in
#: the index manifest and mixed into :func:`content_hash`, so every book is re-embedded.
BOOK_TEXT_VERSION = "2"
#: Upper bound on the length of :func:`book_text` in characters. Chinese text is about one
#: token per character, so this stays far below the model's context length.
MAX_BOOK_TEXT_CHARS = 2000

#: Field labels by language: (title, authors, tags, summary) and the separator after a label.
_LABELS = {
    "en": (("Title", "Authors", "Tags", "Summary"), ": "),
    "zh": (("书名", "作者", "标签", "简介"), "："),
    "ja": (("書名", "著者", "タグ", "あらすじ"), "："),
}
_KANA = re.compile(r"[\u3040-\u30ff]")


def _labels(book: Book) -> tuple[tuple[str, str, str, str], str]:
    """The labels in the book's language: its ``language`` field, else its script (Chinese
    for ideographs, Japanese when there is kana), else English."""
    language = (book.language or "").casefold().split("-")[0].split("_")[0]
    if language not in _LABELS:
        sample = book.title + book.summary[:200]
        if _KANA.search(sample):
            language = "ja"
        elif is_cjk(sample):
            language = "zh"
        else:
            language = "en"
    return _LABELS[language]


def book_text(book: Book) -> str:
    """The text embedded for a book: title, authors, tags and summary, labelled in the book's
    language, at most :data:`MAX_BOOK_TEXT_CHARS` characters (the summary is shortened first)."""
    (title, authors, tags, summary_label), sep = _labels(book)
    list_sep = "、" if sep == "：" else ", "
    head = [f"{title}{sep}{book.title}"]
    if book.authors:
        head.append(f"{authors}{sep}" + list_sep.join(book.authors))
    if book.tags:
        head.append(f"{tags}{sep}" + list_sep.join(book.tags))
    text = "\n".join(head)
    if len(text) > MAX_BOOK_TEXT_CHARS:
        return text[:MAX_BOOK_TEXT_CHARS].rstrip()
    summary = " ".join(book.summary.split())
    if summary:
        prefix = f"\n{summary_label}{sep}"
        room = MAX_BOOK_TEXT_CHARS - len(text) - len(prefix)
        if room > 0:
            if len(summary) > room:
                summary = summary[: max(room - 1, 0)].rstrip() + "…"
            text += prefix + summary
    return text


def content_hash(book: Book) -> str:
    """Hex digest of :func:`book_text` (and its version): equal hashes mean equal vectors."""
    payload = f"{BOOK_TEXT_VERSION}\x00{book_text(book)}".encode()
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


def keyword_text(book: Book) -> str:
    """The text a book's keywords come from: title, authors, tags and summary, unlabelled
    (a label shared by every book would be a term of every book)."""
    parts = [book.title, " ".join(book.authors), " ".join(book.tags), book.summary]
    return "\n".join(p for p in parts if p)


def keyword_texts(books: Sequence[Book | None]) -> list[str]:
    """:func:`keyword_text` of each book, ``""`` for a row without one (row-aligned)."""
    return [keyword_text(b) if b is not None else "" for b in books]


def keywords_dir(store: object) -> Path | None:
    """Where a store keeps its keyword indexes: the ``keywords`` folder of its index
    directory, or ``None`` for stores without one (in memory, PostgreSQL)."""
    path = store_directory(store)
    return path / KEYWORDS_DIR if path is not None else None
