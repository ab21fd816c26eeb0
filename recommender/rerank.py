"""The optional second stage of a ranking: the best candidates rescored by a reranker.

The first stage (cosine over the store, filters, editions, caps) picks ``candidates`` books; a
cross-encoder such as Qwen3-Reranker then reads the query next to each book's text
(:func:`book_text`) and scores how well they match, which orders them more precisely than the
vectors can. The query is the search text, or for a reader :func:`reader_query` (their wishes
with the titles and summaries of the books they liked). When no reranker answers, the first
stage's order stands and the results say they were not reranked.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from bookrec.client import DEFAULT_RERANK_INSTRUCTION, EmbeddingUnavailable, Reranker

from .book import Book
from .text import book_text

__all__ = [
    "DEFAULT_RERANK_CANDIDATES",
    "READER_RERANK_INSTRUCTION",
    "SEARCH_RERANK_INSTRUCTION",
    "RerankSettings",
    "reader_query",
    "rerank_scores",
]

logger = logging.getLogger(__name__)

#: How many first-stage candidates the reranker rescores (the Qwen3 model card reranks 100).
DEFAULT_RERANK_CANDIDATES = 100
#: The task for a search: the reader's words against each book.
SEARCH_RERANK_INSTRUCTION = DEFAULT_RERANK_INSTRUCTION
#: The task for a reader: their wishes and liked books against each book.
READER_RERANK_INSTRUCTION = (
    "Given what a reader wants and the books they liked, judge whether they would enjoy this book"
)

_LIKED_IN_QUERY = 5
_SUMMARY_CHARS = 300
_QUERY_CHARS = 2000


@dataclass(frozen=True, slots=True)
class RerankSettings:
    """How the second stage runs: how many candidates, which instruction for which query."""

    candidates: int = DEFAULT_RERANK_CANDIDATES
    search_instruction: str = SEARCH_RERANK_INSTRUCTION
    reader_instruction: str = READER_RERANK_INSTRUCTION

    def __post_init__(self) -> None:
        if isinstance(self.candidates, bool) or self.candidates < 1:
            raise ValueError(f"rerank candidates must be >= 1, got {self.candidates!r}")
        for name in ("search_instruction", "reader_instruction"):
            if not getattr(self, name).strip():
                raise ValueError(f"the {name.replace('_', ' ')} is empty")


def reader_query(
    preferences: Sequence[str], liked: Sequence[Book], history: Sequence[Book] = ()
) -> str:
    """The text that stands for a reader before the reranker: their wishes in their words,
    then the titles and (shortened) summaries of up to five liked books, or of books they read
    when they liked none."""
    lines: list[str] = []
    wishes = [" ".join(p.split()) for p in preferences if p.strip()]
    if wishes:
        lines.append("Looking for: " + "; ".join(wishes))
    shown, verb = (liked, "Liked") if liked else (history, "Read")
    for book in shown[:_LIKED_IN_QUERY]:
        summary = " ".join(book.summary.split())
        if len(summary) > _SUMMARY_CHARS:
            summary = summary[: _SUMMARY_CHARS - 1].rstrip() + "…"
        lines.append(f"{verb}: {book.title}" + (f" ({summary})" if summary else ""))
    return "\n".join(lines)[:_QUERY_CHARS]


def rerank_scores(
    reranker: Reranker | None, query: str, books: Sequence[Book], instruction: str
) -> list[float] | None:
    """The reranker's score of each book for ``query``, in the order of ``books``; ``None``
    (logged) when there is no reranker or none answers."""
    if reranker is None:
        logger.warning("reranking asked for, but no reranker is configured: first-stage order")
        return None
    if not books:
        return []
    try:
        results = reranker.rerank(query, [book_text(b) for b in books], instruction)
    except EmbeddingUnavailable as exc:
        logger.warning("reranker unavailable (%s): results keep the first-stage order", exc)
        return None
    scores = [0.0] * len(books)
    for result in results:
        scores[result.index] = result.score
    return scores
