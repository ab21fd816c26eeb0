"""Ranking on hand-made vectors: exact orders, ties, masks, batches, float16, MMR and caps."""

from __future__ import annotations

import numpy as np
import pytest

from bookrec.client import normalize
from bookrec.recommender.diversity import select_diverse
from bookrec.recommender.ranking import (
    best_match_scores,
    search,
    search_batch,
    top_k,
)

# Unit vectors at known angles in the plane: cos to (1, 0) is 1.0, 0.8, 0.6, 0.0, -0.6, -1.0.
PLANE = np.array(
    [[0.0, 1.0], [0.6, 0.8], [-1.0, 0.0], [1.0, 0.0], [-0.6, 0.8], [0.8, 0.6]], dtype=np.float32
)
EAST = np.array([1.0, 0.0], dtype=np.float32)


def test_exact_order_and_scores() -> None:
    rows, scores = search(PLANE, EAST, 4)
    assert rows.tolist() == [3, 5, 1, 0]
    assert scores.tolist() == pytest.approx([1.0, 0.8, 0.6, 0.0])
    assert scores.dtype == np.float32


def test_masks_exclusions_and_bonus() -> None:
    allowed = np.array([True, True, True, False, True, True])
    rows, _ = search(PLANE, EAST, 3, allowed=allowed, exclude=[5])
    assert rows.tolist() == [1, 0, 4]
    bonus = np.array([0, 0, 0, 0, 0, 0.5], dtype=np.float32)
    rows, scores = search(PLANE, EAST, 2, bonus=bonus)
    assert rows.tolist() == [5, 3] and scores.tolist() == pytest.approx([1.3, 1.0])
    # Fewer allowed rows than k: only those come back (never masked ones).
    only = np.zeros(6, dtype=bool)
    only[[2, 4]] = True
    rows, scores = search(PLANE, EAST, 5, allowed=only)
    assert rows.tolist() == [4, 2] and scores.tolist() == pytest.approx([-0.6, -1.0])


def test_ties_go_to_the_lower_row() -> None:
    scores = np.array([0.5, 0.9, 0.5, 0.9, 0.5, 0.1], dtype=np.float32)
    assert top_k(scores, 3)[0].tolist() == [1, 3, 0]
    assert top_k(scores, 10)[0].tolist() == [1, 3, 0, 2, 4, 5]
    assert top_k(np.zeros(200_000, dtype=np.float32), 4)[0].tolist() == [0, 1, 2, 3]
    assert top_k(scores, 0)[0].tolist() == []


def test_top_k_large_input_matches_full_sort() -> None:
    rng = np.random.default_rng(0)
    scores = rng.standard_normal(300_000).astype(np.float32)
    scores[-5:] = 10.0  # the best rows are far from the sampled head
    rows, vals = top_k(scores, 10)
    expected = np.lexsort((np.arange(scores.size), -scores))[:10]
    assert rows.tolist() == expected.tolist()
    assert vals.tolist() == scores[expected].tolist()


def test_batch_equals_single_queries_with_exclusions_and_small_blocks() -> None:
    rng = np.random.default_rng(1)
    matrix = rng.integers(-2, 3, (1000, 8)).astype(np.float32)  # integer data: many exact ties
    queries = rng.integers(-2, 3, (5, 8)).astype(np.float32)
    allowed = rng.random(1000) < 0.8
    exclude = [list(rng.integers(0, 1000, 4)) for _ in range(5)]
    rows, vals = search_batch(matrix, queries, 7, allowed=allowed, exclude=exclude, block_rows=64)
    for i in range(5):
        single, svals = search(matrix, queries[i], 7, allowed=allowed, exclude=exclude[i])
        assert rows[i].tolist() == single.tolist()
        assert vals[i].tolist() == svals.tolist()


def test_batch_pads_missing_results() -> None:
    allowed = np.array([False, True, False, False, False, True])
    rows, vals = search_batch(PLANE, np.stack([EAST, -EAST]), 3, allowed=allowed)
    assert rows.tolist() == [[5, 1, -1], [1, 5, -1]]
    assert np.isneginf(vals[:, 2]).all()


def test_float16_matrix_gives_the_same_ranking() -> None:
    rng = np.random.default_rng(2)
    matrix = normalize(rng.standard_normal((5000, 32)))
    q = normalize(rng.standard_normal(32))
    rows32, _ = search(matrix, q, 10)
    rows16, vals16 = search(matrix.astype(np.float16), q, 10)
    assert vals16.dtype == np.float32
    assert len(set(rows32.tolist()) & set(rows16.tolist())) >= 9
    b16, _ = search_batch(matrix.astype(np.float16), q[None], 10, block_rows=700)
    assert b16[0].tolist() == rows16.tolist()


def test_best_match_scores_is_the_max_over_positives() -> None:
    positives = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    scores = best_match_scores(PLANE, positives, block_rows=4)
    assert scores.tolist() == pytest.approx([1.0, 0.8, 0.0, 1.0, 0.8, 0.8])


def test_mmr_trades_relevance_for_diversity() -> None:
    # Candidates 0 and 1 are near-duplicates; 2 is different but a bit less relevant.
    vectors = normalize(np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0]], dtype=np.float32))
    relevance = np.array([0.9, 0.89, 0.7])
    assert select_diverse(relevance, 2) == [0, 1]
    assert select_diverse(relevance, 2, vectors=vectors, diversity=0.0) == [0, 1]
    assert select_diverse(relevance, 2, vectors=vectors, diversity=0.5) == [0, 2]
    assert select_diverse(relevance, 3, vectors=vectors, diversity=0.5) == [0, 2, 1]
    with pytest.raises(ValueError, match="diversity"):
        select_diverse(relevance, 2, diversity=1.5)


def test_caps_per_group() -> None:
    relevance = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    groups = [
        [("author", "a"), ("series", "s")],
        [("author", "a"), ("series", "s")],
        [("author", "a")],
        [("author", "b"), ("series", "s")],
        [("author", "b")],
    ]
    assert select_diverse(relevance, 5, groups=groups, caps={"author": 1}) == [0, 3]
    assert select_diverse(relevance, 5, groups=groups, caps={"author": 2}) == [0, 1, 3, 4]
    assert select_diverse(relevance, 5, groups=groups, caps={"series": 1}) == [0, 2, 4]
    vectors = np.eye(5, dtype=np.float32)
    picked = select_diverse(
        relevance, 5, vectors=vectors, diversity=0.3, groups=groups, caps={"author": 1}
    )
    assert picked == [0, 3]


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="query has shape"):
        search(PLANE, np.ones(3, dtype=np.float32), 2)
    with pytest.raises(ValueError, match="one entry per query"):
        search_batch(PLANE, EAST[None], 2, exclude=[[1], [2]])
