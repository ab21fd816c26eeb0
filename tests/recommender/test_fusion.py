"""Hybrid ranking: reciprocal-rank and convex fusion, the keyword index and the blended profile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bookrec.client import ModelIdentity
from bookrec.recommender import Book, Catalog, Recommender, VectorIndex, build_index
from bookrec.recommender.candidates import RowSpace, top_candidates
from bookrec.recommender.fusion import Fusion, fuse
from bookrec.recommender.lexical import QUERY_TERMS, KeywordIndex, keywords
from bookrec.recommender.numpy_store import NumpyStore
from bookrec.recommender.profile import Scorer, Signal, profile_scorer
from tests.recommender.conftest import FakeEmbedder

rows = np.array


def test_rrf_adds_weighted_reciprocal_ranks() -> None:
    fusion = Fusion(rrf_k=10, dense_weight=1.0, lexical_weight=0.5, depth=3)
    dense_rows, dense_scores = rows([7, 3, 5, 9]), np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    lex_rows, lex_scores = rows([5, 8, 7]), np.array([0.5, 0.4, 0.1], np.float32)
    fused, scores = fuse(fusion, dense_rows, dense_scores, lex_rows, lex_scores)
    expected = {
        7: 1 / 11 + 0.5 / 13,
        3: 1 / 12,
        5: 1 / 13 + 0.5 / 11,
        8: 0.5 / 12,
    }  # row 9 is below the depth of 3
    assert fused.tolist() == sorted(expected, key=lambda r: -expected[r])
    assert scores.tolist() == pytest.approx([expected[r] for r in fused.tolist()])


def test_rrf_ties_keep_the_dense_order() -> None:
    fusion = Fusion(rrf_k=0, depth=2, lexical_weight=1.0)
    fused, scores = fuse(
        fusion, rows([4, 2]), np.ones(2, np.float32), rows([2, 4]), np.ones(2, np.float32)
    )
    assert fused.tolist() == [4, 2] and scores[0] == scores[1] == pytest.approx(1.5)


def test_convex_mixes_min_max_normalised_scores() -> None:
    fusion = Fusion(method="convex", lexical_weight=0.25, depth=3)
    dense_rows, dense_scores = rows([1, 2, 3]), np.array([0.9, 0.7, 0.5], np.float32)
    lex_rows, lex_scores = rows([3, 4, 1]), np.array([0.8, 0.6, 0.2], np.float32)
    fused, scores = fuse(fusion, dense_rows, dense_scores, lex_rows, lex_scores)
    expected = {
        1: 0.75 * 1.0 + 0.25 * 0.0,
        2: 0.75 * 0.5,
        3: 0.75 * 0.0 + 0.25 * 1.0,
        4: 0.25 * (0.6 - 0.2) / (0.8 - 0.2),
    }
    assert fused.tolist() == sorted(expected, key=lambda r: -expected[r])
    assert scores.tolist() == pytest.approx([expected[r] for r in fused.tolist()])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "both"},
        {"method": "sum"},
        {"lexical_weight": -1.0},
        {"method": "convex", "lexical_weight": 1.5},
        {"depth": 0},
    ],
)
def test_bad_fusion_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"fusion|depth"):
        Fusion(**kwargs)  # type: ignore[arg-type]


def test_keywords_split_cjk_into_characters_and_bigrams() -> None:
    assert keywords("The Hobbit, ＨＯＢＢＩＴ, or There and Back Again!") == [
        "hobbit",
        "hobbit",
        "back",
    ]
    assert keywords("三体ii") == ["三", "体", "三体", "ii"]
    assert keywords("a 红楼梦") == ["红", "楼", "梦", "红楼", "楼梦"]


def test_keyword_index_scores_texts_and_rows() -> None:
    index = KeywordIndex.fit(["dragon fire", "dragon ice", "ice cream", "", "龙与火"])
    text = index.text_scores("dragon")
    assert text[3] == 0 and text[2] == 0 and text[4] == 0
    assert text[0] > 0 and text[1] > 0
    assert index.text_scores("火")[4] > 0
    like_ice = index.row_scores([1])
    assert like_ice[1] == pytest.approx(1.0, abs=1e-6)
    assert like_ice[0] > 0 and like_ice[2] > 0 and like_ice[3] == 0
    both = index.query_scores([0, 2], [1.0, 1.0], ["dragon"], 1.0)
    assert both.argmax() in (0, 1) and both[3] == 0


def test_row_queries_keep_only_the_strongest_terms() -> None:
    long = " ".join(f"word{i}" for i in range(QUERY_TERMS + 50))
    index = KeywordIndex.fit([long, "word1 other", "unrelated text"])
    scores = index.row_scores([0])
    assert scores[0] < 1.0  # pruned terms no longer count
    assert scores[2] == 0


def test_blend_adds_half_the_average_and_half_the_best() -> None:
    a = np.array([1.0, 0.0, 0.0], np.float32)
    b = np.array([0.0, 1.0, 0.0], np.float32)
    signals = [Signal("a", 1.0, a), Signal("b", 1.0, b)]
    scorer = profile_scorer(signals, None, "blend", 0.5, lambda _t: np.zeros(0, np.float32))
    books = np.array([[1, 0, 0], [0.6, 0.8, 0], [0, 0, 1]], np.float32)
    dense = scorer.combine(books @ scorer.queries.T)  # type: ignore[union-attr]
    average = (a + b) / np.linalg.norm(a + b)
    expected = 0.5 * (books @ average) + 0.5 * np.maximum(books @ a, books @ b)
    assert dense == pytest.approx(expected, abs=1e-6)
    assert not scorer.dense_only


def _store(n: int, d: int, seed: int) -> tuple[NumpyStore, RowSpace]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    books = [Book(f"b{i}", f"Book {i}") for i in range(n)]
    index = VectorIndex.from_vectors([b.id for b in books], vectors, ModelIdentity("fake/model", d))
    store = NumpyStore(index, Catalog(books))
    return store, RowSpace(store, books)


def test_grouped_scores_are_ranked_exactly() -> None:
    store, space = _store(2000, 16, 3)
    vectors = store.vectors([f"b{i}" for i in range(2000)])
    queries = vectors[[5, 17, 400]] + 0.1
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    scorer = Scorer(queries, groups=((1, 0.3), (2, 0.7)))
    found = top_candidates(space, scorer, 25, filters=None, exclude=())
    sims = vectors @ queries.T
    brute = 0.3 * sims[:, 0] + 0.7 * sims[:, 1:].max(axis=1)
    order = np.argsort(-brute, kind="stable")[:25]
    assert list(found.ids) == [f"b{i}" for i in order]
    assert found.scores == pytest.approx(brute[order], abs=1e-5)


def _catalog() -> tuple[Catalog, VectorIndex]:
    books = [
        Book("q", "Ship of stars", summary="A crew of smugglers crosses the galaxy."),
        Book("dense", "Void sailors", summary="Pilots drift between planets."),
        Book("both", "Smugglers of the galaxy", summary="A smuggler crew on the run."),
        Book("words", "Galaxy smugglers cookbook", summary="Recipes a crew of smugglers ate."),
        Book("none", "Gardening", summary="Roses and tulips."),
    ]
    vectors = np.array(
        [[1, 0, 0], [0.95, 0.31, 0], [0.9, 0.43, 0], [0.2, 0.98, 0], [0, 0, 1]], np.float32
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    identity = ModelIdentity("fake/model", 3)
    return Catalog(books), VectorIndex.from_vectors([b.id for b in books], vectors, identity)


def test_hybrid_similar_lifts_books_that_share_words() -> None:
    catalog, index = _catalog()
    dense = Recommender(catalog, index, fusion=Fusion(mode="dense"))
    assert [r.book.id for r in dense.similar("q", k=4)] == ["dense", "both", "words", "none"]
    hybrid = Recommender(catalog, index)
    results = hybrid.similar("q", k=4)
    # "both" is second by cosine and first by keywords: first in the fused ranking; "words"
    # (third, and second by keywords) overtakes "dense", which shares no word with the book.
    assert [r.book.id for r in results] == ["both", "words", "dense", "none"]
    assert [r.score for r in results[:3]] == pytest.approx(
        [1 / 62 + 0.5 / 61, 1 / 63 + 0.5 / 62, 1 / 61]
    )
    lexical = Recommender(catalog, index, fusion=Fusion(mode="lexical"))
    words = [r.book.id for r in lexical.similar("q", k=4)]
    assert set(words) == {"both", "words"}  # only books that share a term rank at all


def test_hybrid_search_fuses_the_text_keywords(tmp_path: object) -> None:
    catalog, index = _catalog()
    rec = Recommender(catalog, index, fusion=Fusion(mode="lexical"))
    results = rec.search("cookbook", k=3)
    assert [r.book.id for r in results] == ["words"] and not results[0].degraded


def test_text_vectors_are_weighted_as_the_rows() -> None:
    texts = ["dragon dragon fire", "红楼梦 曹雪芹", "ice dragon", "fire and ice and fire"]
    index = KeywordIndex.fit(texts)
    for row, text in enumerate(texts):
        # A text that is a row's own text scores that row 1 and the others as the row does.
        assert index.text_scores(text) == pytest.approx(index.row_scores([row]), abs=1e-6)
    assert index.text_scores("unknown words only").max() == 0


def test_keyword_index_round_trips_through_files(tmp_path: Path) -> None:
    texts = ["dragon fire", "dragon ice", "红楼梦", ""]
    index = KeywordIndex.fit(texts)
    index.save(tmp_path / "kw")
    loaded = KeywordIndex.load(tmp_path / "kw")
    assert loaded.text_scores("dragon 红楼") == pytest.approx(index.text_scores("dragon 红楼"))
    assert loaded.row_scores([0, 2]) == pytest.approx(index.row_scores([0, 2]))


def test_an_index_directory_keeps_the_keyword_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    books = [Book(f"b{i}", f"Dragon tale {i}", summary=f"word{i} fire") for i in range(6)]
    catalog = Catalog(books)
    build_index(tmp_path / "idx", catalog, FakeEmbedder(8))
    saved = list((tmp_path / "idx" / "keywords").iterdir())
    assert len(saved) == 1 and (saved[0] / "terms.npy").is_file()

    def no_fit(_texts: object) -> KeywordIndex:
        raise AssertionError("the saved keyword index should have been mapped")

    monkeypatch.setattr(KeywordIndex, "fit", staticmethod(no_fit))
    rec = Recommender(catalog, VectorIndex.open(tmp_path / "idx"))
    assert rec.similar("b0", k=3)  # mapped, not fitted
    monkeypatch.undo()
    (saved[0] / "data.npy").write_bytes(b"damaged")
    rec = Recommender(catalog, VectorIndex.open(tmp_path / "idx"))
    assert len(rec.similar("b0", k=3)) == 3  # refitted, and written again
    assert KeywordIndex.load(saved[0]).size == 6
