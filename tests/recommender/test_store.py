"""The store contract, for every store implementation: search with filters and exclusions,
vectors by id, upsert and delete, and the exact two-stage top of a ranking over a store."""

from __future__ import annotations

import numpy as np
import pytest

from bookrec.client import ModelIdentity, normalize
from bookrec.recommender import (
    Catalog,
    Filters,
    HybridScoring,
    Recommender,
    UnknownBookError,
    VectorIndex,
    VectorStore,
)
from bookrec.recommender.candidates import RowSpace, top_candidates
from bookrec.recommender.fusion import Fusion
from bookrec.recommender.profile import Scorer
from tests.recommender.conftest import MakeStore, make_books

IDENTITY = ModelIdentity("fake/embedder", 8)


@pytest.fixture
def catalog() -> Catalog:
    return Catalog(make_books(40))


@pytest.fixture
def vectors() -> np.ndarray:
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(40, 8)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


@pytest.fixture
def store(catalog: Catalog, vectors: np.ndarray, make_store: MakeStore) -> VectorStore:
    return make_store(catalog, [b.id for b in catalog], vectors, IDENTITY)


def _exact(vectors: np.ndarray, query: np.ndarray, allowed: np.ndarray, k: int) -> list[int]:
    scores = np.where(allowed, vectors @ query, -np.inf)
    order = np.lexsort((np.arange(len(scores)), -scores))
    return [int(r) for r in order[:k] if np.isfinite(scores[r])]


def test_identity_ids_and_vectors(
    store: VectorStore, catalog: Catalog, vectors: np.ndarray
) -> None:
    assert isinstance(store, VectorStore)
    assert store.identity == IDENTITY
    assert list(store.ids) == [b.id for b in catalog] and len(store) == 40
    assert "b007" in store and "nope" not in store
    np.testing.assert_allclose(store.vectors(["b007", "b001"]), vectors[[7, 1]], atol=1e-6)
    with pytest.raises(UnknownBookError):
        store.vectors(["nope"])


def test_search_is_exact_with_filters_and_exclusions(
    store: VectorStore, catalog: Catalog, vectors: np.ndarray
) -> None:
    queries = vectors[[0, 5, 9]]
    filters = Filters.parse(languages="en", year_min=1905)
    allowed = np.array([b.language == "en" and b.year >= 1905 for b in catalog])
    allowed[[7, 9]] = False
    hits = store.search(queries, 6, filters=filters, exclude={"b007", "b009"})
    assert len(hits) == 3
    for query, found in zip(queries, hits, strict=True):
        expected = _exact(vectors, query, allowed, 6)
        assert list(found.ids) == [f"b{r:03d}" for r in expected]
        np.testing.assert_allclose(found.scores, vectors[expected] @ query, atol=1e-6)
    (single,) = store.search(queries[:1], 50)
    assert len(single) == 40  # fewer than k: there are no more


def test_upsert_and_delete(store: VectorStore, catalog: Catalog, vectors: np.ndarray) -> None:
    new = make_books(1, prefix="new")[0]
    target = -vectors[3]
    store.upsert([new], target[None, :], ["hash-new"])
    (hits,) = store.search(target[None, :], 1)
    assert hits.ids == ("new000",)
    store.upsert([catalog["b003"]], target[None, :], ["hash-3"])  # replace in place
    np.testing.assert_allclose(store.vectors(["b003"])[0], target, atol=1e-6)
    store.delete(["new000", "b003", "not-there"])
    assert "new000" not in store and "b003" not in store and len(store) == 39
    (hits,) = store.search(target[None, :], 39)
    assert not {"new000", "b003"} & set(hits.ids)


def test_updates_of_a_store_on_disk_survive_reopening(
    catalog: Catalog, vectors: np.ndarray, tmp_path: pytest.TempPathFactory
) -> None:
    from bookrec.recommender import NumpyStore

    path = tmp_path / "index"  # type: ignore[operator]
    index = VectorIndex.from_vectors([b.id for b in catalog], vectors, IDENTITY).save(path)
    store = NumpyStore(index, catalog)
    store.delete(["b000"])
    store.upsert([make_books(1, prefix="x")[0]], vectors[:1], ["h"])
    reopened = VectorIndex.open(path)
    assert "b000" not in reopened and "x000" in reopened and len(reopened) == 40


@pytest.mark.parametrize("strategy", ["sum", "max", "max-dense"])
def test_two_stage_top_equals_a_full_scan(
    store: VectorStore, catalog: Catalog, vectors: np.ndarray, strategy: str
) -> None:
    """Keyword terms, a prior and a penalty on top of the store's cosines: the candidates
    gathered from the store and from memory are the exact top of a full scan."""
    rng = np.random.default_rng(11)
    books = [catalog.get(i) for i in store.ids]
    space = RowSpace(store, books)
    lexical = rng.random(40).astype(np.float32)
    prior = HybridScoring(0.3, 0.2).bonus(books)
    # Queries that are not rows of the store: a row's cosine to itself ties near 1.0, and the
    # two computations may round such ties apart.
    queries = normalize(rng.normal(size=(1 if strategy == "sum" else 3, 8)))
    negatives = vectors[[17]]
    if strategy == "sum":
        scorer = Scorer(queries, 0.6, add=np.float32(0.4) * lexical + prior)
    elif strategy == "max-dense":  # several queries, the cosine alone: one round of search
        scorer = Scorer(queries)
    else:
        scorer = Scorer(queries, alt=lexical, add=prior, negatives=negatives, beta=0.5)
    found = top_candidates(space, scorer, 5, filters=None, exclude={"b002"})
    full = scorer.score(vectors, np.arange(40), scorer.combine(vectors @ queries.T))
    full[2] = -np.inf
    order = np.lexsort((np.arange(40), -full))[:5]
    assert list(found.ids) == [f"b{r:03d}" for r in order]
    np.testing.assert_allclose(found.scores, full[order], atol=1e-6)


def test_recommender_accepts_any_store(
    store: VectorStore, catalog: Catalog, vectors: np.ndarray
) -> None:
    rec = Recommender(catalog, store, fusion=Fusion(mode="dense"))  # the store's ranking
    assert rec.store is store
    results = rec.similar("b004", k=3)
    assert [r.book.id for r in results] == [
        f"b{r:03d}" for r in _exact(vectors, vectors[4], np.arange(40) != 4, 3)
    ]
