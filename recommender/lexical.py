"""Keyword (TF-IDF) similarity over book texts, for when there are no embeddings.

:class:`LexicalScorer` is the fallback when free text cannot be embedded (degraded results);
:class:`LexicalEmbedder` runs the whole pipeline without an embedding service ("lexical mode").

Character n-grams (``analyzer="char_wb"``, 1 to 3 characters) need no tokenizer, so Chinese,
which has no spaces between words, works as well as English.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bookrec.client import InvalidInputError, ModelIdentity, ProgressCallback, normalize

from .catalog import Catalog
from .text import book_text

if TYPE_CHECKING:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

__all__ = ["LEXICAL_MODEL_PREFIX", "LexicalEmbedder", "LexicalScorer"]

#: ``LexicalEmbedder.identity.model`` starts with this, followed by a corpus fingerprint.
LEXICAL_MODEL_PREFIX = "bookrec-lexical-tfidf/"
_NGRAMS = (1, 3)


def _vectorizer() -> TfidfVectorizer:
    # scikit-learn is imported here, not at module level: it costs about a second, and most
    # commands (similar, recommend from history, index with a service) never need it.
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(
        analyzer="char_wb",
        ngram_range=_NGRAMS,
        lowercase=True,
        sublinear_tf=True,
        dtype=np.float32,
    )


class LexicalScorer:
    """TF-IDF cosine between a query and each of a fixed list of texts."""

    def __init__(self, texts: Sequence[str]) -> None:
        self._vectorizer = _vectorizer()
        # Empty texts (rows without a book) are kept so that row numbers line up; they score 0.
        self._matrix: Any = self._vectorizer.fit_transform([t or " " for t in texts])
        self.size = len(texts)

    def scores(self, query: str) -> NDArray[np.float32]:
        """Cosine of ``query`` to every text, shape (n,)."""
        q = self._vectorizer.transform([query])
        return np.asarray((self._matrix @ q.T).toarray(), dtype=np.float32).reshape(-1)


class LexicalEmbedder:
    """TF-IDF vectors reduced to at most ``max_dimensions`` (truncated SVD), L2-normalised.

    Implements the :class:`client.Embedder` protocol over a vocabulary fitted on ``corpus``
    (normally the :func:`~recommender.catalog.book_text` of every book). Its identity is
    ``bookrec-lexical-tfidf/<fingerprint of the corpus>``, so an index built with one corpus
    is not mistaken for one built with another. Instructions are ignored: documents and
    queries are embedded alike.
    """

    def __init__(self, corpus: Sequence[str], *, max_dimensions: int = 256) -> None:
        texts = [t for t in corpus if t.strip()]
        if not texts:
            raise ValueError("LexicalEmbedder needs at least one non-empty text")
        if max_dimensions < 1:
            raise ValueError("max_dimensions must be positive")
        self._vectorizer = _vectorizer()
        tfidf = self._vectorizer.fit_transform(texts)
        n_docs, n_features = tfidf.shape
        dims = min(max_dimensions, n_features, n_docs)
        self._svd: TruncatedSVD | None = None
        if dims < n_features:
            from sklearn.decomposition import TruncatedSVD

            self._svd = TruncatedSVD(
                n_components=dims, algorithm="randomized", n_iter=7, random_state=0
            )
            self._svd.fit(tfidf)
        else:
            dims = n_features
        digest = hashlib.blake2b(digest_size=8)
        digest.update(f"{_NGRAMS}|{max_dimensions}|".encode())
        for text in texts:
            digest.update(text.encode())
            digest.update(b"\x1e")
        self._identity = ModelIdentity(LEXICAL_MODEL_PREFIX + digest.hexdigest(), int(dims))

    @classmethod
    def from_catalog(cls, catalog: Catalog, *, max_dimensions: int = 256) -> LexicalEmbedder:
        """Fit on the texts that represent the catalog's books."""
        return cls([book_text(b) for b in catalog], max_dimensions=max_dimensions)

    @property
    def identity(self) -> ModelIdentity:
        return self._identity

    @property
    def dimensions(self) -> int:
        return self._identity.dimensions

    @property
    def prompt_formats(self) -> None:
        """No prompts: documents and queries are embedded alike."""
        return None

    def _embed(
        self, texts: Sequence[str], progress: ProgressCallback | None
    ) -> NDArray[np.float32]:
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise InvalidInputError(f"empty or whitespace-only texts at indices {empty[:20]}")
        if not texts:
            return np.empty((0, self._identity.dimensions), dtype=np.float32)
        tfidf = self._vectorizer.transform(list(texts))
        if self._svd is not None:
            dense = np.asarray(self._svd.transform(tfidf), dtype=np.float32)
        else:
            dense = np.asarray(tfidf.toarray(), dtype=np.float32)
        if progress is not None:
            progress(len(texts), len(texts))
        return normalize(dense)

    def embed_documents(
        self, texts: Sequence[str], *, progress: ProgressCallback | None = None
    ) -> NDArray[np.float32]:
        return self._embed(texts, progress)

    def embed_queries(
        self,
        texts: Sequence[str],
        instruction: str | None = None,
        *,
        progress: ProgressCallback | None = None,
    ) -> NDArray[np.float32]:
        return self._embed(texts, progress)
