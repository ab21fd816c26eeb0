"""Ad hoc ranking of plain lists of texts, without a catalog or an index.

These are the original quick-start functions on top of the embedding client::

    find_similar_items("a cosy mystery", ["Gone Girl", "The Thursday Murder Club", ...])
    # [("The Thursday Murder Club", 0.61), ...]

``client`` is any :class:`client.Embedder`; by default an ``EmbeddingClient`` configured from
the environment (``BOOKREC_BASE_URL`` and friends) is created for the call and closed after it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
from numpy.typing import NDArray

from bookrec.client import ClientConfig, Embedder, EmbeddingClient, normalize

from .ranking import top_k

__all__ = ["encode_texts", "find_similar_items", "recommend_items"]

_QUERY_PROMPTS = ("query",)
_DOCUMENT_PROMPTS = (None, "document", "documents", "passage")


@contextlib.contextmanager
def _embedder(client: Embedder | None) -> Iterator[Embedder]:
    if client is not None:
        yield client
        return
    with EmbeddingClient(ClientConfig.from_env()) as default:
        yield default


def encode_texts(
    texts: Sequence[str], prompt_name: str | None = None, *, client: Embedder | None = None
) -> NDArray[np.float32]:
    """Unit float32 vectors, shape (len(texts), d): documents by default, queries (with the
    instruction) when ``prompt_name="query"``."""
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not a string")
    if prompt_name not in _QUERY_PROMPTS + _DOCUMENT_PROMPTS:
        raise ValueError(f"prompt_name must be 'query', 'document' or None, not {prompt_name!r}")
    with _embedder(client) as embedder:
        if prompt_name in _QUERY_PROMPTS:
            return embedder.embed_queries(list(texts))
        return embedder.embed_documents(list(texts))


def _rank(
    query: NDArray[np.float32], items: Sequence[str], vectors: NDArray[np.float32], top: int
) -> list[tuple[str, float]]:
    scores = np.asarray(vectors @ query, dtype=np.float32)
    rows, vals = top_k(scores, top)
    return [(items[int(r)], float(v)) for r, v in zip(rows, vals, strict=True)]


def find_similar_items(
    query: str, documents: Sequence[str], top_k: int = 5, *, client: Embedder | None = None
) -> list[tuple[str, float]]:
    """The ``top_k`` documents most similar to ``query``, as (document, cosine) pairs."""
    if top_k < 1:
        raise ValueError("top_k must be at least 1")
    if not documents:
        return []
    with _embedder(client) as embedder:
        q = embedder.embed_queries([query])
        docs = embedder.embed_documents(list(documents))
    return _rank(normalize(q[0]), documents, normalize(docs), top_k)


def recommend_items(
    user_preferences: str | Sequence[str],
    candidate_items: Sequence[str],
    top_k: int = 5,
    *,
    client: Embedder | None = None,
) -> list[tuple[str, float]]:
    """The ``top_k`` candidates closest to the mean of the preference vectors, with cosines."""
    if top_k < 1:
        raise ValueError("top_k must be at least 1")
    prefs = [user_preferences] if isinstance(user_preferences, str) else list(user_preferences)
    if not prefs:
        raise ValueError("user_preferences is empty")
    if not candidate_items:
        return []
    with _embedder(client) as embedder:
        p = embedder.embed_queries(prefs)
        items = embedder.embed_documents(list(candidate_items))
    profile = normalize(normalize(p).mean(axis=0))
    return _rank(profile, candidate_items, normalize(items), top_k)
