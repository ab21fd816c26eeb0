"""Keyword (TF-IDF) similarity over book texts: the lexical half of hybrid ranking.

:class:`KeywordIndex` scores every book against a text, or against books of the catalog (their
own keyword vectors), for the fusion with dense cosines (:mod:`.fusion`) and as the fallback
when free text cannot be embedded (degraded results). Its terms are words (English stop words
dropped) and, for Chinese, Japanese and Korean, which have no spaces between words, single
characters and character bigrams.

:class:`LexicalEmbedder` runs the whole pipeline without an embedding service ("lexical mode"),
on character n-grams (``analyzer="char_wb"``, 1 to 3 characters) reduced by truncated SVD;
:class:`LexicalScorer` is the plain TF-IDF cosine over those n-grams.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
import unicodedata
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bookrec.client import InvalidInputError, ModelIdentity, ProgressCallback, normalize

from .catalog import Catalog
from .text import book_text

if TYPE_CHECKING:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

__all__ = [
    "LEXICAL_MODEL_PREFIX",
    "KeywordIndex",
    "LexicalEmbedder",
    "LexicalScorer",
    "cached_keyword_index",
    "keywords",
]

logger = logging.getLogger(__name__)

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


# Runs of CJK ideographs, kana or Hangul; and runs of other letters and digits.
_CJK_RUN = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TERMS = re.compile(f"[{_CJK_RUN}]+|[^\\W_{_CJK_RUN}]+")
# English function words: they say nothing about a book (idf would weigh them down anyway,
# but they would crowd out real terms in a query built from books).
_STOP_WORDS = frozenset(
    """a about after again against all also an and any are as at be because been before being
    between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself
    just me more most my myself no nor not now of off on once only or other our ours ourselves
    out over own same she should so some such than that the their theirs them themselves then
    there these they this those through to too under until up very was we were what when where
    which while who whom why will with would you your yours yourself yourselves""".split()  # noqa: SIM905
)
# Longer "words" (hashes, URLs run together) are no keywords; the cap bounds the term table.
_MAX_TERM = 32
#: Terms kept from a query built out of books (the strongest by weight): a "more like this"
#: query of a long summary would otherwise touch the postings of every common word.
QUERY_TERMS = 96


def keywords(text: str) -> list[str]:
    """The terms of ``text`` that :class:`KeywordIndex` counts.

    Case- and width-folded (NFKC); words of 2 to 32 characters that are not English stop
    words; in CJK runs every character and every pair of adjacent characters.
    """
    stop = _STOP_WORDS
    out: list[str] = []
    for match in _TERMS.finditer(unicodedata.normalize("NFKC", text).casefold()):
        run = match.group()
        if "\u3040" <= run[0] <= "\ud7af" or "\uf900" <= run[0] <= "\ufaff":
            out.extend(run)
            out.extend(run[i : i + 2] for i in range(len(run) - 1))
        elif 1 < len(run) <= _MAX_TERM and run not in stop:
            out.append(run)
    return out


class KeywordIndex:
    """TF-IDF (sublinear term frequency, smoothed idf, unit rows) over a fixed list of texts.

    Row ``i`` is the keyword vector of ``texts[i]``; empty texts (rows without a book) score 0.
    :meth:`text_scores` ranks every row against a text, :meth:`row_scores` against the sum of
    some rows' own vectors ("more like this", a reader's books). :meth:`save` writes it as plain
    ``.npy`` arrays that :meth:`load` maps back without reading them (no pickle).
    """

    def __init__(
        self,
        matrix: Any,
        postings: Any,
        terms: NDArray[np.bytes_],
        idf: NDArray[np.float32],
    ) -> None:
        self._matrix = matrix  # CSR, rows x terms
        self._postings = postings  # CSR, terms x rows (the transpose)
        self._terms = terms  # sorted UTF-8 terms, one per column
        self._idf = idf
        self.size = int(matrix.shape[0])

    @classmethod
    def fit(cls, texts: Sequence[str]) -> KeywordIndex:
        """The index of ``texts`` (its vocabulary is theirs)."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectorizer = TfidfVectorizer(analyzer=keywords, sublinear_tf=True, dtype=np.float32)
        # A text of no terms at all still gets its row (all zeros), so rows line up.
        try:
            matrix = vectorizer.fit_transform([t or " " for t in texts]).tocsr()
        except ValueError:  # no text has a single term
            from scipy.sparse import csr_matrix

            matrix = csr_matrix((len(texts), 0), dtype=np.float32)
            return cls(matrix, matrix.T.tocsr(), np.empty(0, "S1"), np.empty(0, np.float32))
        names = vectorizer.get_feature_names_out()  # sorted, as the columns are
        terms = np.array([t.encode() for t in names], dtype=np.bytes_)
        idf = np.asarray(vectorizer.idf_, dtype=np.float32)
        return cls(matrix, matrix.T.tocsr(), terms, idf)

    # -- files ---------------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Write the index into ``directory`` (created; files replaced)."""
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {
            "terms": self._terms,
            "idf": self._idf,
            "data": self._matrix.data,
            "indices": self._matrix.indices,
            "indptr": self._matrix.indptr,
            "postings-data": self._postings.data,
            "postings-indices": self._postings.indices,
            "postings-indptr": self._postings.indptr,
        }
        for name, array in arrays.items():
            np.save(directory / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        (directory / "shape.json").write_text(
            json.dumps(list(self._matrix.shape)) + "\n", encoding="utf-8"
        )

    @classmethod
    def load(cls, directory: Path) -> KeywordIndex:
        """Map an index written by :meth:`save` (``OSError`` or ``ValueError`` when it is
        missing or damaged)."""
        from scipy.sparse import csr_matrix

        def array(name: str) -> Any:
            return np.load(directory / f"{name}.npy", mmap_mode="r", allow_pickle=False)

        rows, columns = json.loads((directory / "shape.json").read_text(encoding="utf-8"))
        terms, idf = array("terms"), array("idf")
        if terms.shape != (columns,) or idf.shape != (columns,):
            raise ValueError(f"{directory}: terms and idf do not match the shape")
        matrix = csr_matrix(
            (array("data"), array("indices"), array("indptr")), shape=(rows, columns)
        )
        postings = csr_matrix(
            (array("postings-data"), array("postings-indices"), array("postings-indptr")),
            shape=(columns, rows),
        )
        return cls(matrix, postings, terms, idf)

    # -- scores --------------------------------------------------------------------------------

    def text_scores(self, text: str) -> NDArray[np.float32]:
        """Cosine of ``text``'s keyword vector to every row, shape (n,)."""
        return self._dense_scores(self._text_vector(text))

    def row_scores(
        self, rows: Sequence[int], weights: Sequence[float] | None = None
    ) -> NDArray[np.float32]:
        """Cosine of every row to the (weighted) sum of the vectors of ``rows``, keeping the
        :data:`QUERY_TERMS` strongest terms of that sum."""
        weights = [1.0] * len(rows) if weights is None else weights
        return self.query_scores(rows, weights, (), 0.0)

    def query_scores(
        self,
        rows: Sequence[int],
        row_weights: Sequence[float],
        texts: Sequence[str],
        text_weight: float,
    ) -> NDArray[np.float32]:
        """Cosine of every row to the weighted sum of the vectors of ``rows`` and of ``texts``
        (each text weighing ``text_weight``), keeping its :data:`QUERY_TERMS` strongest terms."""
        query = np.zeros(self._terms.shape[0], dtype=np.float32)
        if len(rows):
            weights = np.asarray(row_weights, dtype=np.float32)
            query += np.asarray(self._matrix[list(rows)].T @ weights, dtype=np.float32).ravel()
        for text in texts:
            query += np.float32(text_weight) * self._text_vector(text)
        return self._dense_scores(_strongest(query))

    def _text_vector(self, text: str) -> NDArray[np.float32]:
        """The unit keyword vector of ``text`` (as the rows were weighted), over the index's
        terms; terms the index does not have are left out."""
        vector = np.zeros(self._terms.shape[0], dtype=np.float32)
        counts = Counter(keywords(text))
        if not counts or not vector.shape[0]:
            return vector
        wanted = np.array([t.encode() for t in counts], dtype=np.bytes_)
        at = np.searchsorted(self._terms, wanted)
        found = (at < self._terms.shape[0]) & (
            self._terms[np.minimum(at, self._terms.shape[0] - 1)] == wanted
        )
        tf = np.array(list(counts.values()), dtype=np.float32)[found]
        columns = at[found]
        vector[columns] = (1.0 + np.log(tf)) * self._idf[columns]
        norm = float(np.linalg.norm(vector))
        return vector / np.float32(norm) if norm else vector

    def _dense_scores(self, query: NDArray[np.float32]) -> NDArray[np.float32]:
        norm = float(np.linalg.norm(query))
        if norm == 0.0:
            return np.zeros(self.size, dtype=np.float32)
        terms = np.flatnonzero(query)
        # Sum the postings of the query's terms only: cost is their length, not the matrix's.
        postings = self._postings[terms]
        scores = postings.T @ (query[terms] / np.float32(norm))
        return np.asarray(scores, dtype=np.float32).reshape(-1)


#: Version of :func:`keywords` and of the weighting; part of each keyword index's fingerprint.
KEYWORDS_VERSION = "1"
# Keyword indexes kept in an index directory (the newest): one per recent set of book texts.
_KEEP = 2


def cached_keyword_index(texts: Sequence[str], directory: Path | None) -> KeywordIndex:
    """The keyword index of ``texts``: mapped from ``directory`` when it holds one for exactly
    these texts (their fingerprint names it), else fitted and written there for next time
    (an unwritable directory only costs the next process the same fit)."""
    if directory is None:
        return KeywordIndex.fit(texts)
    digest = hashlib.blake2b(KEYWORDS_VERSION.encode(), digest_size=16)
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\x1e")
    path = directory / digest.hexdigest()
    try:
        loaded = KeywordIndex.load(path)
        if loaded.size == len(texts):
            return loaded
    except (OSError, ValueError):
        pass
    index = KeywordIndex.fit(texts)
    shutil.rmtree(path, ignore_errors=True)  # a damaged copy, if any
    tmp = directory / f".tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        index.save(tmp)
        tmp.replace(path)
        _prune(directory)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        logger.info("keyword index not saved in %s: %s", directory, exc)
    return index


def _prune(directory: Path) -> None:
    """Remove all but the newest :data:`_KEEP` keyword indexes (and dead temporary ones)."""
    entries = sorted(
        (p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime_ns,
        reverse=True,
    )
    for old in entries[_KEEP:]:
        shutil.rmtree(old, ignore_errors=True)
    cutoff = time.time() - 3600
    for tmp in directory.glob(".tmp-*"):
        with contextlib.suppress(OSError):
            if tmp.stat().st_mtime < cutoff:  # left by a process that died while writing
                shutil.rmtree(tmp, ignore_errors=True)


def _strongest(query: NDArray[np.float32]) -> NDArray[np.float32]:
    """``query`` with all but its :data:`QUERY_TERMS` largest weights set to 0."""
    nonzero = np.flatnonzero(query > 0)
    if nonzero.shape[0] > QUERY_TERMS:
        weakest = nonzero[np.argsort(query[nonzero])[: nonzero.shape[0] - QUERY_TERMS]]
        query[weakest] = 0.0
    return query


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
