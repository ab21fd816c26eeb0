"""Concurrent searches answered together: the same results as searching alone, fewer passes
over the matrix, errors to every waiter, no wait for a search that is alone."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bookrec.client import ModelIdentity
from bookrec.recommender import Catalog, Filters, NumpyStore, VectorIndex
from bookrec.recommender.coalesce import Coalescer, Query
from tests.recommender.conftest import make_books

N, D = 2_000, 32


@pytest.fixture(scope="module")
def index() -> VectorIndex:
    rng = np.random.default_rng(11)
    vectors = rng.standard_normal((N, D)).astype(np.float32)
    return VectorIndex.from_vectors([b.id for b in make_books(N)], vectors, ModelIdentity("m", D))


def test_concurrent_searches_match_lone_searches(index: VectorIndex) -> None:
    catalog = Catalog(make_books(N))
    alone = NumpyStore(index, catalog)
    together = NumpyStore(index, catalog, coalesce_window=0.01)
    assert together._coalescer is not None
    passes: list[int] = []
    run = together._coalescer._run

    def counted(context: object, matrix: np.ndarray, k: int, exclude: list) -> tuple:
        passes.append(matrix.shape[0])
        return run(context, matrix, k, exclude)

    together._coalescer._run = counted  # type: ignore[assignment]
    rng = np.random.default_rng(5)
    queries = rng.standard_normal((120, D)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    cases = [
        (
            queries[i : i + 1],
            [5, 10, 40][i % 3],
            Filters.parse(languages=["en"]) if i % 4 == 0 else None,
            [f"b{j:03d}" for j in range(i % 5)],
        )
        for i in range(120)
    ]
    start = threading.Barrier(24)  # 24 searches set off together, five times

    def one(case: tuple) -> tuple:
        q, k, filters, exclude = case
        start.wait(timeout=10)
        (hits,) = together.search(q, k, filters=filters, exclude=exclude)
        return hits.ids, hits.scores

    with ThreadPoolExecutor(24) as pool:
        got = list(pool.map(one, cases))
    for (q, k, filters, exclude), (ids, scores) in zip(cases, got, strict=True):
        (want,) = alone.search(q, k, filters=filters, exclude=exclude)
        assert ids == want.ids
        np.testing.assert_allclose(scores, want.scores, atol=1e-5)
    assert sum(passes) == 120 and len(passes) < 120  # queries shared passes


def test_an_error_reaches_every_search_of_the_pass() -> None:
    entered = threading.Event()

    def failing(*_args: object) -> tuple:
        entered.set()
        time.sleep(0.05)
        raise RuntimeError("pass failed")

    coalescer = Coalescer(failing, window=0.05)
    vec = np.zeros(4, dtype=np.float32)

    def one(_i: int) -> str:
        try:
            coalescer.search(Query(vec, 3, (), group=None, context=None))
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(one, range(6))) == ["pass failed"] * 6


def test_a_search_alone_does_not_wait_for_company() -> None:
    def run(_ctx: object, queries: np.ndarray, k: int, _ex: list) -> tuple:
        return np.zeros((queries.shape[0], k), dtype=np.intp), np.ones(
            (queries.shape[0], k), dtype=np.float32
        )

    coalescer = Coalescer(run, window=30.0)  # a wait would be obvious
    started = time.monotonic()
    rows, scores = coalescer.search(Query(np.zeros(4, np.float32), 2, (), None, None))
    assert time.monotonic() - started < 10.0
    assert rows.tolist() == [0, 0] and scores.tolist() == [1.0, 1.0]
