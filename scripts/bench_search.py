#!/usr/bin/env python3
"""Exact top-10 as users run it: ``Recommender.similar`` and ``recommend`` over an index opened
from disk, against the tutorial approach and faiss, in the same run.

For every N (rows) and d (dimensions) it builds N random unit float32 vectors, saves them as a
bookrec index, opens it memory-mapped (as ``bookrec similar`` does) with a catalog of N books,
and times, in the same process and taking turns:

  a) the tutorial: sklearn ``cosine_similarity(q, M)`` + a full ``argsort``
  b) bookrec ``Recommender.similar(book_id, k=10)``: the stored vector, one BLAS pass
     (``M @ q``), the book itself excluded, one result per work, reasons
  c) bookrec ``Recommender.recommend(liked=[3 books])``, strategy "average" (one profile query)
  d) bookrec ``Recommender.recommend(liked=[3 books], strategy="best")`` (three queries)
  e) bookrec ``NumpyStore.search`` with 64 queries per call (one pass over the matrix)
  f) faiss ``IndexFlatIP``, single queries and batches of 64, when faiss is installed

each with 1 and with 2 BLAS/OpenMP threads (the best is used for the ratios: on small VMs a
second thread often costs more in wake-ups than it brings for short calls). The queries are the
vectors of 64 catalog books. It checks that the methods return the same top-10, prints a table
and the ratios against the targets, and reports the resident memory of the opened index.

    python scripts/bench_search.py --quick                  # 100k rows, d = 256 and 1024
    python scripts/bench_search.py                          # 100k and 1M rows, d = 256 and 1024
    python scripts/bench_search.py --sizes 1000000 --dims 1024

faiss is optional (``pip install faiss-cpu``); it is not a dependency of bookrec.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bookrec.client import ModelIdentity
from bookrec.recommender import Book, Catalog, NumpyStore, Recommender, VectorIndex
from bookrec.recommender.ranking import search

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - ships with scikit-learn
    threadpool_limits = None

try:
    import faiss
except ImportError:
    faiss = None

K = 10
BATCH = 64


@dataclass
class Row:
    method: str
    single: dict[int, list[float]] = field(default_factory=dict)  # threads -> seconds per query
    batch: dict[int, list[float]] = field(default_factory=dict)  # threads -> seconds per query
    agree: str = ""

    def best_single(self) -> float | None:
        meds = [statistics.median(v) for v in self.single.values() if v]
        return min(meds) if meds else None

    def best_batch(self) -> float | None:
        meds = [statistics.median(v) for v in self.batch.values() if v]
        return min(meds) if meds else None


class Threads:
    """Limit every BLAS and OpenMP pool (numpy, scipy, faiss) to ``n`` threads."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._ctx: Any = None

    def __enter__(self) -> Threads:
        if threadpool_limits is not None:
            self._ctx = threadpool_limits(self.n)
            self._ctx.__enter__()
        if faiss is not None:
            faiss.omp_set_num_threads(self.n)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
        if faiss is not None:
            faiss.omp_set_num_threads(os.cpu_count() or 1)


def random_unit(n: int, d: int, seed: int) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), dtype=np.float32)
    step = 65_536
    for a in range(0, n, step):
        block = out[a : a + step]
        rng.standard_normal(block.shape, dtype=np.float32, out=block)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
    return out


def clock(fn: Callable[[int], Any], i: int) -> float:
    t0 = time.perf_counter()
    fn(i)
    return time.perf_counter() - t0


def rss() -> dict[str, int]:
    """Resident memory of this process in bytes (Linux: total, anonymous, file-backed)."""
    out: dict[str, int] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    except OSError:
        import resource

        out["VmRSS"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def fmt_ms(seconds: list[float] | None) -> str:
    if not seconds:
        return "–"
    med, low = statistics.median(seconds) * 1e3, min(seconds) * 1e3
    return f"{med:,.3g} ({low:,.3g})" if med < 1000 else f"{med:,.0f} ({low:,.0f})"


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


def open_case(n: int, d: int, tmp: str) -> tuple[Recommender, NDArray[np.float32], int]:
    """A recommender over N random books saved as an index in ``tmp`` and opened from disk;
    the queries' rows; the raw size of vectors.npy."""
    t0 = time.perf_counter()
    matrix = random_unit(n, d, seed=0)
    ids = [f"b{i}" for i in range(n)]
    VectorIndex.from_vectors(ids, matrix, ModelIdentity("bench/random", d)).save(tmp)
    raw = matrix.nbytes
    del matrix
    gc.collect()
    catalog = Catalog(Book(book_id, f"Book {book_id}") for book_id in ids)
    rec = Recommender(catalog, VectorIndex.open(tmp))
    print(f"  (N={n:,} d={d}: index written and opened in {time.perf_counter() - t0:.1f} s)")
    rows = np.random.default_rng(1).choice(n, size=BATCH, replace=False)
    return rec, rows, raw


def run_case(n: int, d: int, *, quick: bool, threads: list[int]) -> tuple[list[Row], list[str]]:
    big = n >= 500_000
    reps_single = 5 if quick else (10 if big else 30)
    reps_naive = 2 if (quick or big) else 5
    reps_batch = 2 if (quick or big) else 5
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-index-", dir=os.environ.get("TMPDIR")) as tmp:
        before = rss()
        rec, query_rows, raw = open_case(n, d, tmp)
        store = rec.store
        assert isinstance(store, NumpyStore)
        matrix = store.index.vectors  # the memory-mapped file, as bookrec reads it
        query_ids = [store.ids[r] for r in query_rows]
        queries = np.asarray(matrix[query_rows], dtype=np.float32)
        liked = [query_ids[i : i + 3] for i in range(0, BATCH - 2, 3)]

        from sklearn.metrics.pairwise import cosine_similarity

        def naive(i: int) -> NDArray[np.intp]:
            scores = cosine_similarity(queries[i % BATCH][None, :], matrix)[0]
            return np.argsort(-scores)[1 : K + 1]  # the book itself comes first

        index: Any = None
        if faiss is not None:
            index = faiss.IndexFlatIP(d)
            index.add(np.ascontiguousarray(matrix))
        else:
            notes.append("faiss is not installed: pip install faiss-cpu to compare")

        tutorial = Row("a) sklearn cosine_similarity + full argsort (tutorial)")
        similar = Row("b) bookrec Recommender.similar")
        average = Row("c) bookrec Recommender.recommend (3 liked, average)")
        best = Row("d) bookrec Recommender.recommend (3 liked, best)")
        batch = Row("e) bookrec NumpyStore.search, 64 queries per call")
        flat = Row("f) faiss IndexFlatIP, single query")
        flat_batch = Row("f) faiss IndexFlatIP, 64 queries per call")
        singles: list[tuple[Row, Callable[[int], Any], int]] = [
            (similar, lambda i: rec.similar(query_ids[i % BATCH], k=K), reps_single),
            (average, lambda i: rec.recommend(liked=liked[i % len(liked)], k=K), reps_single),
            (
                best,
                lambda i: rec.recommend(liked=liked[i % len(liked)], k=K, strategy="best"),
                reps_single,
            ),
            (tutorial, naive, reps_naive),
        ]
        batches: list[tuple[Row, Callable[[int], Any]]] = [
            (batch, lambda i: store.search(queries, K + 1)),
        ]
        if index is not None:
            singles.append(
                (flat, lambda i: index.search(queries[i % BATCH][None, :], K + 1), reps_single)
            )
            batches.append((flat_batch, lambda i: index.search(queries, K + 1)))
        # The methods take turns, so that they all see the same machine: on a shared VM the
        # memory bandwidth (which bounds every exact scan) drifts by tens of percent a minute.
        for t in threads:
            with Threads(t):
                for row, fn, _ in singles:
                    fn(0)  # warm up: first-use caches (editions, row masks) are built here
                    row.single[t] = []
                for r in range(reps_single):
                    for row, fn, reps in singles:
                        if r < reps:
                            row.single[t].append(clock(fn, r))
                for row, fn in batches:
                    fn(0)
                    row.batch[t] = []
                for r in range(reps_batch):
                    for row, fn in batches:
                        row.batch[t].append(clock(fn, r) / BATCH)

        exact = [
            [store.ids[r] for r in search(matrix, q, K, exclude=[int(row)])[0]]
            for q, row in zip(queries, query_rows, strict=True)
        ]
        got = [[x.book.id for x in rec.similar(i, k=K)] for i in query_ids]
        same = sum(g == e for g, e in zip(got, exact, strict=True))
        similar.agree = f"{same}/{BATCH} identical to a full scan"
        hits = store.search(queries, K + 1)
        same = sum(list(h.ids[1:]) == e for h, e in zip(hits, exact, strict=True))
        batch.agree = f"{same}/{BATCH} identical"
        checks = min(reps_naive + 1, BATCH)
        same = sum(
            {store.ids[r] for r in naive(i).tolist()} == set(exact[i]) for i in range(checks)
        )
        tutorial.agree = f"{same}/{checks} same top-10"
        rows = [tutorial, similar, average, best, batch]
        if index is not None:
            _, found = index.search(queries, K + 1)
            same = sum(
                {store.ids[r] for r in found[i][1:].tolist()} == set(exact[i]) for i in range(BATCH)
            )
            flat.agree = flat_batch.agree = f"{same}/{BATCH} same top-10"
            rows += [flat, flat_batch]
            index = None
        gc.collect()
        after = rss()
        grown = {key: after.get(key, 0) - before.get(key, 0) for key in before}
        notes.append(
            f"memory-mapped index: raw vectors.npy {mb(raw)}; resident growth of this process "
            f"after the run {mb(grown['VmRSS'])} (file-backed {mb(grown.get('RssFile', 0))}, "
            f"anonymous {mb(grown.get('RssAnon', 0))}, which includes the catalog of {n:,} "
            "books): the mapped pages are the OS page cache, shared between processes"
        )
    return rows, notes


def print_case(n: int, d: int, rows: list[Row], notes: list[str], threads: list[int]) -> list[str]:
    print(f"\n### N = {n:,}, d = {d}\n")
    heads = [f"single T{t} ms med (min)" for t in threads] + [
        f"batch64 T{t} ms/q med (min)" for t in threads
    ]
    print("| method | " + " | ".join(heads) + " | best QPS | agreement |")
    print("|---" * (len(heads) + 3) + "|")
    for row in rows:
        cells = [fmt_ms(row.single.get(t)) for t in threads]
        cells += [fmt_ms(row.batch.get(t)) for t in threads]
        best = min(x for x in (row.best_single(), row.best_batch()) if x is not None)
        print(f"| {row.method} | " + " | ".join(cells) + f" | {1 / best:,.1f} | {row.agree} |")
    print()
    for note in notes:
        print(f"- {note}")

    by = {r.method[:2]: r for r in rows}
    ours = by["b)"].best_single()
    ours_batch = by["e)"].best_batch()
    naive = by["a)"].best_single()
    assert ours is not None and ours_batch is not None and naive is not None
    target = " (target >= 15x at 1M x 1024)" if (n, d) == (1_000_000, 1024) else ""
    lines = [
        f"similar() vs tutorial: {naive / ours:.1f}x faster{target}",
        f"store batch64 vs similar(): {ours / ours_batch:.1f}x the throughput per query",
    ]
    flat = next((r for r in rows if r.method.startswith("f) faiss IndexFlatIP, single")), None)
    flat_batch = next((r for r in rows if r.method.startswith("f) faiss IndexFlatIP, 64")), None)
    if flat is not None and flat_batch is not None:
        fs, fb = flat.best_single(), flat_batch.best_batch()
        assert fs is not None and fb is not None
        target = " (target >= 1: no slower)" if (n, d) == (1_000_000, 1024) else ""
        lines.append(f"similar() vs faiss single: {fs / ours:.2f}x{target}")
        lines.append(f"store batch64 vs faiss batch64: {fb / ours_batch:.2f}x")
    print()
    for line in lines:
        print(f"- {line}")
    return [f"N={n:,} d={d}: {line}" for line in lines]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", help="rows (default 100000 1000000)")
    parser.add_argument("--dims", type=int, nargs="+", default=[1024, 256], help="dimensions")
    parser.add_argument("--quick", action="store_true", help="100k rows only, fewer repetitions")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="thread counts to try (default 1 2)"
    )
    args = parser.parse_args(argv)
    sizes = args.sizes or ([100_000] if args.quick else [100_000, 1_000_000])
    print(
        f"# bench_search: top-{K}, {platform.machine()} {os.cpu_count()} CPUs, "
        f"numpy {np.__version__}, faiss {getattr(faiss, '__version__', 'not installed')}, "
        f"python {platform.python_version()}"
    )
    print(
        "Times are per query: median (min) ms. T1/T2 = every BLAS/OpenMP pool limited to "
        "1/2 threads. Ratios use each method's best thread count."
    )
    summary: list[str] = []
    for n in sizes:
        for d in args.dims:
            rows, notes = run_case(n, d, quick=args.quick, threads=args.threads)
            summary += print_case(n, d, rows, notes, args.threads)
            gc.collect()
    print("\n## Summary\n")
    for line in summary:
        print(f"- {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
