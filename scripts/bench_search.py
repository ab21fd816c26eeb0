#!/usr/bin/env python3
"""Exact top-10 search: bookrec's ranking against the tutorial approach and faiss.

For every N (rows) and d (dimensions) it builds N random unit float32 vectors and 64 random
unit queries, then times, in the same process:

  a) the tutorial: sklearn ``cosine_similarity(q, M)`` + a full ``argsort``   (single queries)
  b) bookrec ``ranking.search`` (``M @ q`` + threshold/argpartition top-k)      (single queries)
  c) bookrec ``ranking.search_batch`` (``Q @ M.T`` block by block, 64 queries per call)
  d) faiss ``IndexFlatIP`` single queries and batches of 64, when faiss is installed

each with 1 and with 2 BLAS/OpenMP threads (the best is used for the ratios: on small VMs a
second thread often costs more in wake-ups than it brings for short calls). It checks that the
methods return the same top-10, prints a table and the ratios against the targets, and reports
the resident memory of a saved index opened memory-mapped against its raw size.

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
from bookrec.recommender import VectorIndex
from bookrec.recommender.ranking import search, search_batch

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


def run_case(n: int, d: int, *, quick: bool, threads: list[int]) -> tuple[list[Row], list[str]]:
    big = n >= 500_000
    reps_single = 5 if quick else (10 if big else 30)
    reps_naive = 2 if (quick or big) else 5
    reps_batch = 2 if (quick or big) else 5
    notes: list[str] = []
    t0 = time.perf_counter()
    matrix = random_unit(n, d, seed=0)
    queries = random_unit(BATCH, d, seed=1)
    notes.append(
        f"data: {mb(matrix.nbytes)} float32, generated in {time.perf_counter() - t0:.1f} s"
    )

    exact = [search(matrix, queries[i], K)[0] for i in range(BATCH)]

    from sklearn.metrics.pairwise import cosine_similarity

    def naive(i: int) -> NDArray[np.intp]:
        scores = cosine_similarity(queries[i % BATCH][None, :], matrix)[0]
        return np.argsort(-scores)[:K]

    index: Any = None
    if faiss is not None:
        index = faiss.IndexFlatIP(d)
        index.add(matrix)
    else:
        notes.append("faiss is not installed: pip install faiss-cpu to compare")

    tutorial = Row("a) sklearn cosine_similarity + full argsort (tutorial)")
    bookrec = Row("b) bookrec ranking.search (M @ q + top-k)")
    bookrec_batch = Row("c) bookrec ranking.search_batch (64 queries per call)")
    flat = Row("d) faiss IndexFlatIP, single query")
    flat_batch = Row("d) faiss IndexFlatIP, 64 queries per call")
    singles: list[tuple[Row, Callable[[int], Any], int]] = [
        (bookrec, lambda i: search(matrix, queries[i % BATCH], K), reps_single),
        (tutorial, naive, reps_naive),
    ]
    batches: list[tuple[Row, Callable[[int], Any]]] = [
        (bookrec_batch, lambda i: search_batch(matrix, queries, K)),
    ]
    if index is not None:
        singles.append((flat, lambda i: index.search(queries[i % BATCH][None, :], K), reps_single))
        batches.append((flat_batch, lambda i: index.search(queries, K)))
    # The methods take turns, so that they all see the same machine: on a shared VM the memory
    # bandwidth (which bounds every exact scan) drifts by tens of percent over a minute.
    for t in threads:
        with Threads(t):
            for row, fn, _ in singles:
                fn(0)
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

    rows_b, _ = search_batch(matrix, queries, K)
    same = sum(rows_b[i].tolist() == exact[i].tolist() for i in range(BATCH))
    bookrec.agree = "reference"
    bookrec_batch.agree = f"{same}/{BATCH} identical"
    checks = min(reps_naive + 1, BATCH)
    same = sum(set(naive(i).tolist()) == set(exact[i].tolist()) for i in range(checks))
    tutorial.agree = f"{same}/{checks} same top-10"
    rows = [tutorial, bookrec, bookrec_batch]
    if index is not None:
        _, found = index.search(queries, K)
        same = sum(set(found[i].tolist()) == set(exact[i].tolist()) for i in range(BATCH))
        flat.agree = flat_batch.agree = f"{same}/{BATCH} same top-10"
        rows += [flat, flat_batch]
        index = None
    gc.collect()

    # Memory: save as a bookrec index, open it memory-mapped, search once.
    with tempfile.TemporaryDirectory(prefix="bench-index-", dir=os.environ.get("TMPDIR")) as tmp:
        ids = [f"b{i}" for i in range(n)]
        saved = VectorIndex(ids, matrix, ModelIdentity("bench/random", d)).save(tmp)
        raw = saved.vectors.nbytes
        del saved
        del ids
        gc.collect()
        before = rss()
        opened = VectorIndex.open(tmp)
        after_open = rss()
        search(opened.vectors, queries[0], K)
        after_search = rss()
        grown = {key: after_search.get(key, 0) - before.get(key, 0) for key in before}
        notes.append(
            f"memory-mapped index: raw vectors.npy {mb(raw)}; resident after open "
            f"+{mb(after_open['VmRSS'] - before['VmRSS'])}; after one search "
            f"+{mb(grown['VmRSS'])} (file-backed +{mb(grown.get('RssFile', 0))}, anonymous "
            f"+{mb(grown.get('RssAnon', 0))}): the mapped pages are the OS page cache, "
            "shared between processes and reclaimable"
        )
        del opened
        gc.collect()
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
    ours_batch = by["c)"].best_batch()
    naive = by["a)"].best_single()
    assert ours is not None and ours_batch is not None and naive is not None
    lines = [
        f"bookrec single vs tutorial: {naive / ours:.1f}x faster (target >= 15x)",
        f"bookrec batch64 vs bookrec single: {ours / ours_batch:.1f}x the throughput "
        "(target >= 3x)",
    ]
    flat = next((r for r in rows if r.method.startswith("d) faiss IndexFlatIP, single")), None)
    flat_batch = next((r for r in rows if r.method.startswith("d) faiss IndexFlatIP, 64")), None)
    if flat is not None and flat_batch is not None:
        fs, fb = flat.best_single(), flat_batch.best_batch()
        assert fs is not None and fb is not None
        lines.append(f"bookrec single vs faiss single: {fs / ours:.2f}x (target >= 1, no slower)")
        lines.append(f"bookrec batch64 vs faiss batch64: {fb / ours_batch:.2f}x")
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
