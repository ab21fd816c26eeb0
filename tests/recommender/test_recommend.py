"""Recommendations on hand-made vectors: exact orders, reasons, filters, editions, caps, MMR,
both strategies, hybrid scores and the degraded (TF-IDF) path."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from bookrec.client import ModelIdentity
from bookrec.recommender import (
    Book,
    Catalog,
    EmptyProfileError,
    HybridScoring,
    IndexMismatchError,
    Recommender,
    UnknownBookError,
    VectorIndex,
    VectorStore,
)
from bookrec.recommender.fusion import Fusion
from tests.recommender.conftest import FakeEmbedder, MakeStore

DENSE = Fusion(mode="dense")

IDENTITY = ModelIdentity("fake/embedder", 3)
BOOKS = [
    Book("a1", "Alpha", ("X",), "A voyage among the stars.", ("space",), "en", 2000, 4.0, 10),
    Book("a2", "Alpha (Anniversary Edition)", ("X",), "The same voyage.", ("space",), "en", 2020),
    Book("b", "Beta", ("Y",), "Robots on a moon base.", ("space", "robots"), "en", 1990, 3.0),
    Book(
        "c", "Gamma", ("X",), "A quiet village story.", ("village",), "en", 1970, 4.5, series="Saga"
    ),
    Book("d", "Delta", ("Z",), "一个关于龙的故事。", ("奇幻",), "zh", 2010, 4.8, 1000),
    Book("e", "Epsilon", ("Z",), "Dragons and moons.", ("fantasy",), "en", 2015, 2.0),
    Book(
        "f", "Zeta", ("W",), "Dragons of the northern sea.", ("fantasy",), "en", 1960, series="Saga"
    ),
    Book("g", "Eta", ("W",), "Cookbook of the south.", ("food",), None, None),
]
VECTORS = {
    "a1": [1, 0, 0],
    "a2": [0.99, 0.1, 0],
    "b": [0.9, 0.3, 0],
    "c": [0.8, 0, 0.6],
    "d": [0, 1, 0],
    "e": [0.6, 0.8, 0],
    "f": [0, 0, 1],
    "g": [-1, 0, 0],
}
QUERIES = {"village life": [0.0, 0.0, 1.0], "alpha-like": [1.0, 0.0, 0.0]}


def ids(results: list) -> list[str]:  # type: ignore[type-arg]
    return [r.book.id for r in results]


@pytest.fixture
def catalog() -> Catalog:
    return Catalog(BOOKS)


@pytest.fixture
def index(catalog: Catalog, make_store: MakeStore) -> VectorStore:
    """The vectors in each store implementation (the scenarios below run against every one)."""
    return make_store(catalog, list(VECTORS), np.array(list(VECTORS.values())), IDENTITY)


@pytest.fixture
def queries() -> FakeEmbedder:
    return FakeEmbedder(3, vectors=QUERIES)


@pytest.fixture
def rec(catalog: Catalog, index: VectorStore, queries: FakeEmbedder) -> Recommender:
    # Dense ranking alone: these tests check cosines of hand-made vectors (test_fusion.py
    # checks the hybrid ranking).
    return Recommender(
        catalog, index, queries, instruction="Find books for this reader", fusion=DENSE
    )


def test_similar_excludes_itself_and_other_editions(
    rec: Recommender, queries: FakeEmbedder
) -> None:
    results = rec.similar("a1", k=10)
    assert ids(results) == ["b", "c", "e", "d", "f", "g"]
    assert [round(r.score, 3) for r in results[:3]] == [0.949, 0.8, 0.6]
    assert all(r.reason == "similar to Alpha" and not r.degraded for r in results)
    assert ids(rec.similar("a2", k=2)) == ["b", "c"]
    assert queries.calls == []  # stored vectors only


def test_filters(rec: Recommender) -> None:
    assert ids(rec.similar("a1", languages="zh")) == ["d"]
    assert ids(rec.similar("a1", languages=["EN"], k=3)) == ["b", "c", "e"]
    assert ids(rec.similar("a1", tags=["Fantasy", "robots"])) == ["b", "e", "f"]
    assert ids(rec.similar("a1", authors="z")) == ["e", "d"]
    assert ids(rec.similar("a1", year_min=1965, year_max=2010)) == ["b", "c", "d"]
    assert ids(rec.similar("a1", min_rating=3.5)) == ["c", "d"]
    with pytest.raises(ValueError, match="year_min"):
        rec.similar("a1", year_min=2000, year_max=1990)
    with pytest.raises(TypeError, match="unknown filter"):
        rec.similar("a1", colour="red")  # type: ignore[call-arg]


def test_caps_per_author_and_series(rec: Recommender) -> None:
    assert ids(rec.similar("a1", max_per_author=1)) == ["b", "c", "e", "f"]
    assert ids(rec.similar("a1", max_per_series=1)) == ["b", "c", "e", "d", "g"]
    with pytest.raises(ValueError, match="max_per_author"):
        rec.similar("a1", max_per_author=0)


def test_diversity_prefers_different_books(rec: Recommender) -> None:
    assert ids(rec.similar("a1", k=2)) == ["b", "c"]
    assert ids(rec.similar("a1", k=2, diversity=0.7)) == ["b", "f"]


def test_average_profile_disliked_pushes_away(rec: Recommender) -> None:
    results = rec.recommend(liked=["a1"], k=3)
    assert ids(results) == ["b", "c", "e"]
    assert results[0].reason == "because you liked Alpha"
    # Disliking Delta moves Gamma (orthogonal to Delta) above Beta (which leans towards it).
    assert ids(rec.recommend(liked=["a1"], disliked=["d"], k=3)) == ["c", "b", "e"]


def test_average_with_history_names_the_strongest_signal(rec: Recommender) -> None:
    results = rec.recommend(liked=["a1"], history=["d"], k=4, strategy="average")
    assert ids(results) == ["b", "e", "c", "f"]
    assert results[1].reason == "because you liked Alpha"  # 1.0 * 0.6 > 0.6 * 0.8
    assert [round(r.score, 3) for r in results[:2]] == [0.976, 0.926]


def test_best_strategy_ranks_by_the_closest_positive_and_names_it(rec: Recommender) -> None:
    results = rec.recommend(liked=["a1"], history=["d"], k=4, strategy="best")
    assert ids(results) == ["b", "c", "e", "f"]
    assert [r.reason for r in results[:3]] == [
        "because you liked Alpha",
        "because you liked Alpha",
        "because you read Delta",
    ]
    assert [round(r.score, 3) for r in results[:3]] == [0.949, 0.8, 0.8]


def test_exclude_read(rec: Recommender) -> None:
    assert ids(rec.recommend(history=["a1"], k=2, exclude_read=False)) == ["a1", "b"]
    assert "a2" not in ids(rec.recommend(history=["a1"], k=8, exclude_read=False))
    assert ids(rec.recommend(history=["a1"], k=2)) == ["b", "c"]


def test_preferences_are_embedded_as_queries_with_the_instruction(
    rec: Recommender, queries: FakeEmbedder
) -> None:
    results = rec.recommend(preferences=["village life"], liked=["b"], k=2, strategy="best")
    assert queries.calls == [("queries", ["village life"], "Find books for this reader")]
    assert ids(results) == ["f", "a2"]  # the edition closer to Beta stands for Alpha
    assert results[0].reason == "matches 'village life'"
    assert results[1].reason == "because you liked Beta"
    search = rec.search("village life", k=2)
    assert ids(search) == ["f", "c"]
    assert search[0].reason == "matches 'village life'" and not search[0].degraded


def test_profile_errors(rec: Recommender) -> None:
    with pytest.raises(EmptyProfileError):
        rec.recommend(disliked=["a1"])
    with pytest.raises(EmptyProfileError):
        rec.recommend(preferences=["   "])
    with pytest.raises(UnknownBookError, match="'nope'"):
        rec.recommend(liked=["a1", "nope"])
    with pytest.raises(UnknownBookError):
        rec.similar("nope")
    with pytest.raises(ValueError, match="strategy"):
        rec.recommend(liked=["a1"], strategy="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must be"):
        rec.similar("a1", k=0)
    with pytest.raises(TypeError, match="list"):
        rec.recommend(liked="a1")


def test_books_without_vectors(catalog: Catalog, queries: FakeEmbedder) -> None:
    partial = VectorIndex.from_vectors(["a1", "b", "zzz"], np.eye(3), IDENTITY)
    rec = Recommender(catalog, partial, queries)
    assert ids(rec.similar("a1")) == ["b"]  # "zzz" is not in the catalog: never returned
    with pytest.raises(UnknownBookError, match="not in the index"):
        rec.similar("c")


def test_hybrid_score_is_off_by_default_and_documented(
    catalog: Catalog, index: VectorStore
) -> None:
    plain = Recommender(catalog, index, fusion=DENSE)
    assert ids(plain.similar("a1", k=3)) == ["b", "c", "e"]
    boosted = Recommender(catalog, index, hybrid=HybridScoring(rating_weight=0.5), fusion=DENSE)
    results = boosted.similar("a1", k=3)
    # Gamma (4.5 stars) overtakes Beta (3.0): 0.8 + 0.5 * 0.8 > 0.949 + 0.5 * 0.2, and Delta
    # (4.8 stars, the most popular) overtakes Epsilon (2.0 stars): 0 + 0.46 + 0.05 > 0.6 - 0.1.
    assert ids(results) == ["c", "b", "d"]
    assert results[0].score == pytest.approx(0.8 + 0.5 * (4.5 - 2.5) / 2.5, abs=1e-6)
    assert results[2].score == pytest.approx(0.5 * (4.8 - 2.5) / 2.5 + 0.05, abs=1e-6)


def test_mismatched_embedder(catalog: Catalog, index: VectorStore) -> None:
    other = FakeEmbedder(3, model="other/model")
    other.embed_queries(["warm up"])  # identity now known
    with pytest.raises(IndexMismatchError):
        Recommender(catalog, index, other)
    late = FakeEmbedder(3, model="other/model")
    rec = Recommender(catalog, index, late)  # identity unknown until the first call
    with pytest.raises(IndexMismatchError):
        rec.search("anything")
    wide = FakeEmbedder(4, model="fake/embedder")
    with pytest.raises(IndexMismatchError):
        Recommender(catalog, index, wide).search("anything")


def test_degraded_path_when_every_endpoint_is_down(
    catalog: Catalog, index: VectorStore, caplog: pytest.LogCaptureFixture
) -> None:
    down = FakeEmbedder(3, fail_after=0)
    rec = Recommender(catalog, index, down, fusion=DENSE)
    with caplog.at_level(logging.WARNING, logger="bookrec.recommender.recommend"):
        results = rec.search("dragons of the sea", k=2)
    assert ids(results) == ["f", "e"]
    assert all(r.degraded for r in results) and results[0].reason == "matches 'dragons of the sea'"
    assert "unavailable" in caplog.text and "degraded" in caplog.text
    chinese = rec.search("龙的故事", k=1)
    assert ids(chinese) == ["d"] and chinese[0].degraded
    mixed = rec.recommend(liked=["c"], preferences=["dragons"], k=3)
    assert all(r.degraded for r in mixed) and "f" in ids(mixed)
    # Stored vectors need no service: not degraded.
    assert not any(r.degraded for r in rec.similar("a1"))
    history_only = rec.recommend(history=["a1"], k=2)
    assert ids(history_only) == ["b", "c"] and not any(r.degraded for r in history_only)
    assert down.calls == []


def test_to_dict(rec: Recommender) -> None:
    first = rec.similar("a1", k=1)[0].to_dict()
    assert first == {
        "id": "b",
        "title": "Beta",
        "authors": ["Y"],
        "summary": "Robots on a moon base.",
        "year": 1990,
        "language": "en",
        "tags": ["space", "robots"],
        "series": None,
        "rating": 3.0,
        "score": pytest.approx(0.948683, abs=1e-6),
        "reason": "similar to Alpha",
        "degraded": False,
        "reranked": False,
    }
