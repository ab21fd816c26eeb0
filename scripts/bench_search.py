#!/usr/bin/env python3
"""Top-10 as users run it (``Recommender.similar`` over an index opened from disk): float32
exact, the two-stage scan copies (int8, MRL-256), faiss and the tutorial approach, in one run.

For every N (rows), d (dimensions) and kind of vectors it builds N unit float32 vectors, saves
them as a bookrec index with an int8 scan copy (``VectorIndex.save(path, scan="int8")``: the
build measures the copy's recall and picks its oversample), opens the index memory-mapped (as
``bookrec similar`` does) with a catalog of N books, and times, in the same process and taking
turns (a shared VM's memory bandwidth drifts by tens of percent a minute):

  a) float32 exact: ``Recommender.similar`` over ``NumpyStore(index, catalog, exact=True)``
     (one BLAS pass over vectors.npy); batches: ``NumpyStore.search`` with 64 queries
  b) int8 two-stage: ``Recommender.similar`` over the index's int8 copy (NumKong SIMD scan of
     scan.npy for ``oversample*k+32`` candidates, rescored exactly in float32); batches: one
     pass over the codes widened block by block for BLAS
  c) MRL-256 two-stage (only when d > 256): the same over a float32 copy of the first 256
     dimensions, built in memory with ``ScanCopy.encode`` (see "MRL rows" below)
  d) faiss ``IndexFlatIP`` (exact), single queries and batches of 64
  e) faiss ``IndexScalarQuantizer(d, QT_8bit, METRIC_INNER_PRODUCT)`` (SQ8, trained on the
     matrix), the faiss counterpart of (b) without the exact rescoring
  f) the tutorial: sklearn ``cosine_similarity(q, M)`` + a full ``argsort``

each with 1 and with 2 BLAS/OpenMP/scan threads (each method's best count is reported: on
small VMs a second thread often costs more in wake-ups than it brings for short calls). The
queries are the vectors of 64 catalog books, each excluded from its own results. Reported per
method: median and p99 ms per single query, batch-of-64 throughput, recall@10 against the exact
float32 top-10 (single-query path / batch path), size on disk (the generation's files the
method reads: vectors.npy, scan.npy, scan-scale.npy; faiss: its ``write_index`` bytes),
resident memory after the run (the pages of this method's own mappings of the index files, or
the memory its in-memory structures took) and the transient peak of one call.

Kinds of vectors (``--kinds``): ``random`` (uniform on the sphere: no neighbourhood structure,
the worst case for a compact copy since the 10th and 11th neighbours are close) and
``clustered`` (1,000 topic centres + noise, as in scripts/bench_store.py; cosine to the own
centre about 0.7). ``matryoshka`` (not run by default) is ``clustered`` with the variance of
dimension j scaled by 1 / (1 + j/16), so the leading dimensions carry most of the energy as in
a Matryoshka-trained model: synthetic, it only shows what the MRL path does when prefixes are
meaningful; it says nothing about a real model.

MRL rows: on synthetic random or clustered vectors a 256-dimension prefix is not an embedding,
so a build refuses that copy (recall < 0.99 at every oversample up to 128). The benchmark
builds it anyway (``ScanCopy.encode``), picks the oversample as a build would (the first of 4,
8, ..., 128 whose recall, measured on 64 index rows, reaches 0.99, else 128) and reports the
recall it measures on the benchmark's own queries, flagged when a build would not keep it.

    python scripts/bench_search.py --quick                  # 100k rows, d = 1024 and 256
    python scripts/bench_search.py                          # 100k and 1M rows
    python scripts/bench_search.py --sizes 1000000 --dims 1024 --kinds clustered

faiss is optional (``pip install faiss-cpu``); it is not a dependency of bookrec. Memory: the
largest case (1M x 1024) holds the mapped index (4 GB + 1 GB of int8 codes, page cache), a
1 GB MRL copy, faiss's own copies (4 GB flat, 1 GB SQ8, freed after the case) and the
tutorial's 4 GB temporary per call: about 16 GB at the peak.
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import platform
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bookrec.client import ModelIdentity
from bookrec.recommender import Book, Catalog, NumpyStore, Recommender, VectorIndex
from bookrec.recommender.index.scan import (
    SCALE_FILE,
    SCAN_FILE,
    ScanCopy,
    ScanSpec,
    calibrate,
    scan_threads,
    set_scan_threads,
)
from bookrec.recommender.ranking import search_batch

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - ships with scikit-learn
    threadpool_limits = None

try:
    import faiss
except ImportError:
    faiss = None  # type: ignore[assignment]

K = 10
BATCH = 64
MRL_DIMS = 256
KINDS = ("random", "clustered", "matryoshka")
# Recommender.similar asks its store for 3k + 10 results (room for other editions of a work and
# for filters), so its two-stage search rescores oversample * 40 + 32 rows; a batch of
# NumpyStore.search(queries, k + 1) rescores oversample * 11 + 32 per query.
POOL = 3 * K + 10
TARGET = (1_000_000, 1024)


class Threads:
    """Limit every BLAS and OpenMP pool (numpy, scipy, faiss) and the int8 scan to ``n``."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._ctx: Any = None
        self._scan = scan_threads()

    def __enter__(self) -> Threads:
        if threadpool_limits is not None:
            self._ctx = threadpool_limits(self.n)
            self._ctx.__enter__()
        if faiss is not None:
            faiss.omp_set_num_threads(self.n)
        self._scan = scan_threads()
        set_scan_threads(self.n)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
        if faiss is not None:
            faiss.omp_set_num_threads(os.cpu_count() or 1)
        set_scan_threads(self._scan)


# -- vectors ------------------------------------------------------------------------------------

STEP = 65_536


def _unit_rows(block: NDArray[np.float32]) -> None:
    block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), np.float32(1e-12))


def random_unit(n: int, d: int, rng: np.random.Generator) -> NDArray[np.float32]:
    """Uniform on the sphere."""
    out = np.empty((n, d), dtype=np.float32)
    for a in range(0, n, STEP):
        block = out[a : a + STEP]
        rng.standard_normal(block.shape, dtype=np.float32, out=block)
        _unit_rows(block)
    return out


def clustered(
    n: int, d: int, rng: np.random.Generator, weights: NDArray[np.float32] | None = None
) -> NDArray[np.float32]:
    """Books around 1,000 topic centres: cosine to the own topic about 0.7 (as ``clustered``
    in scripts/bench_store.py, normalised block by block instead of into a copy). ``weights``
    scales dimension j of centres and noise alike (``matryoshka``)."""
    centres = rng.standard_normal((1000, d), dtype=np.float32)
    if weights is not None:
        centres *= weights
    _unit_rows(centres)
    out = np.empty((n, d), dtype=np.float32)
    for a in range(0, n, STEP):
        b = min(n, a + STEP)
        topics = rng.integers(0, 1000, size=b - a)
        noise = rng.standard_normal((b - a, d), dtype=np.float32)
        if weights is not None:
            noise *= weights
            noise /= np.float32(np.sqrt(np.sum(weights**2)))
        else:
            noise /= np.float32(np.sqrt(d))
        block = out[a:b]
        np.add(centres[topics], noise, out=block)
        _unit_rows(block)
    return out


def make_vectors(kind: str, n: int, d: int, seed: int = 0) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    if kind == "random":
        return random_unit(n, d, rng)
    if kind == "clustered":
        return clustered(n, d, rng)
    if kind == "matryoshka":
        weights = (1.0 / np.sqrt(1.0 + np.arange(d) / 16.0)).astype(np.float32)
        return clustered(n, d, rng, weights)
    raise ValueError(f"unknown kind {kind!r}")


# -- measuring ------------------------------------------------------------------------------------


def clock(fn: Callable[[int], Any], i: int) -> float:
    t0 = time.perf_counter()
    fn(i)
    return time.perf_counter() - t0


def proc_status() -> dict[str, int]:
    """Memory of this process in bytes (Linux: VmRSS, VmHWM, RssAnon, RssFile)."""
    out: dict[str, int] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    except OSError:
        import resource

        out["VmRSS"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


_VMA = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) ")


def mapped_rss(arrays: Sequence[NDArray[Any] | None]) -> int | None:
    """Resident bytes of the memory mappings that hold ``arrays`` (memory-mapped .npy files):
    the pages this process touched through them (the kernel's fault-around maps up to 64 KB of
    already cached neighbours per fault). ``None`` without /proc/self/smaps."""
    addresses = [a.__array_interface__["data"][0] for a in arrays if a is not None and a.size]
    try:
        text = Path("/proc/self/smaps").read_text()
    except OSError:
        return None
    total, seen, current = 0, set(), None
    for line in text.splitlines():
        m = _VMA.match(line)
        if m:
            lo, hi = int(m.group(1), 16), int(m.group(2), 16)
            hit = any(lo <= x < hi for x in addresses)
            current = (lo, hi) if hit and (lo, hi) not in seen else None
            if current is not None:
                seen.add(current)
        elif current is not None and line.startswith("Rss:"):
            total += int(line.split()[1]) * 1024
    return total


def transient(fn: Callable[[int], Any]) -> tuple[int | None, Any]:
    """The peak growth of this process's resident memory during one call ``fn(0)`` (Linux:
    the high-water mark is reset through /proc/self/clear_refs; ``None`` where that is
    refused), and what the call returned."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None, fn(0)
    before = proc_status().get("VmRSS", 0)
    out = fn(0)
    peak = proc_status().get("VmHWM", 0)
    return max(0, peak - before), out


def faiss_bytes(index: Any) -> int:
    """Bytes ``faiss.write_index`` writes (= ``serialize_index`` size), counted, not kept."""
    count = [0]

    def take(chunk: bytes) -> None:
        count[0] += len(chunk)

    writer = faiss.PyCallbackIOWriter(take)  # type: ignore[attr-defined]  # (SWIG, no stub)
    faiss.write_index(index, writer)
    return count[0]


def npy_bytes(array: NDArray[Any]) -> int:
    """Size of ``array`` saved as .npy (header + data), without writing it."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(array))
    return buf.tell() + int(array.nbytes)


# -- methods ------------------------------------------------------------------------------------


@dataclass
class Method:
    key: str
    label: str
    single_fn: Callable[[int], Any]
    batch_fn: Callable[[int], Any]
    reps_single: int
    reps_batch: int
    warm_batch: bool = True
    disk: int | None = None
    resident: int | None = None
    resident_note: str = ""
    single: dict[int, list[float]] = field(default_factory=dict)  # threads -> s per query
    batch: dict[int, list[float]] = field(default_factory=dict)  # threads -> s per batch
    recall_single: float | None = None
    recall_batch: float | None = None
    peak_single: int | None = None
    peak_batch: int | None = None
    flag: str = ""

    def _best(self, runs: dict[int, list[float]]) -> tuple[int, list[float]] | None:
        done = [(statistics.median(v), t, v) for t, v in runs.items() if v]
        if not done:
            return None
        _, t, v = min(done)
        return t, v

    def median_ms(self) -> float | None:
        best = self._best(self.single)
        return statistics.median(best[1]) * 1e3 if best else None

    def p99_ms(self) -> float | None:
        best = self._best(self.single)
        return float(np.percentile(best[1], 99)) * 1e3 if best else None

    def single_threads(self) -> int | None:
        best = self._best(self.single)
        return best[0] if best else None

    def qps(self) -> float | None:
        best = self._best(self.batch)
        return BATCH / statistics.median(best[1]) if best else None

    def batch_threads(self) -> int | None:
        best = self._best(self.batch)
        return best[0] if best else None


def recall(found: Sequence[Sequence[int]], truth: NDArray[np.intp]) -> float:
    hits = sum(len(set(f) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / (len(truth) * K)


def without(rows: Sequence[int], own: int) -> list[int]:
    """The top-K of a top-(K+1) list once the query's own row is dropped."""
    return [r for r in rows if r != own and r >= 0][:K]


@dataclass
class Case:
    n: int
    d: int
    kind: str
    methods: list[Method]
    notes: list[str]


def open_index(kind: str, n: int, d: int, tmp: str, notes: list[str]) -> VectorIndex:
    """N vectors of ``kind`` saved as an index with an int8 scan copy; the float32 matrix in
    memory is freed before the index is opened from disk."""
    t0 = time.perf_counter()
    matrix = make_vectors(kind, n, d)
    ids = [f"b{i}" for i in range(n)]
    identity = ModelIdentity(f"bench/{kind}", d)
    # The rows are unit already: the constructor takes them without from_vectors's copy.
    VectorIndex(ids, matrix, identity).save(tmp, scan="int8")
    del matrix, ids
    gc.collect()
    index = VectorIndex.open(tmp)
    notes.append(
        f"N={n:,} d={d} {kind}: vectors made, index with int8 copy written and opened in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    return index


def run_case(n: int, d: int, kind: str, *, quick: bool, threads: list[int]) -> Case:
    big = n >= 500_000
    reps_single = 20 if quick else (40 if big else 100)
    reps_naive = 3 if (quick or big) else 5
    reps_batch = 3 if (quick or big) else 5
    reps_naive_batch = 1 if big else 2
    notes: list[str] = []
    methods: list[Method] = []
    free = mem_available()
    if free is not None:
        notes.append(f"memory available at the start of the case: {free / 2**30:.1f} GiB")
    with tempfile.TemporaryDirectory(prefix="bench-index-", dir=os.environ.get("TMPDIR")) as tmp:
        built = open_index(kind, n, d, tmp, notes)
        manifest = built.manifest
        assert manifest is not None
        generation = Path(tmp) / manifest.generation
        vectors_file = (generation / "vectors.npy").stat().st_size
        scan_files = sum(
            (generation / name).stat().st_size
            for name in (SCAN_FILE, SCALE_FILE)
            if (generation / name).exists()
        )
        ids = built.ids
        catalog = Catalog(Book(book_id, f"Book {book_id}") for book_id in ids)
        del built

        # Each store opens the index itself: its own mappings, so the resident pages of each
        # method can be told apart (the page cache underneath is shared).
        exact_index = VectorIndex.open(tmp)
        exact_store = NumpyStore(exact_index, catalog, exact=True)
        exact_rec = Recommender(catalog, exact_store)
        matrix = exact_index.vectors
        query_rows = np.sort(np.random.default_rng(1).choice(n, size=BATCH, replace=False))
        query_ids = [ids[r] for r in query_rows]
        queries = np.asarray(matrix[query_rows], dtype=np.float32)
        own = [int(r) for r in query_rows]
        truth, _ = search_batch(matrix, queries, K, exclude=[[r] for r in own])
        row_of = {book_id: row for row, book_id in enumerate(ids)}

        def similar_fn(rec: Recommender) -> Callable[[int], Any]:
            return lambda i: rec.similar(query_ids[i % BATCH], k=K)

        def batch_fn(store: NumpyStore) -> Callable[[int], Any]:
            return lambda i: store.search(queries, K + 1)

        exact = Method(
            "exact",
            "float32 exact (`exact=True` store)",
            similar_fn(exact_rec),
            batch_fn(exact_store),
            reps_single,
            reps_batch,
            disk=vectors_file,
        )
        methods.append(exact)
        stores: dict[str, Recommender] = {"exact": exact_rec}

        int8_index = VectorIndex.open(tmp)
        copy = int8_index.scan
        if copy is None:
            notes.append("int8: the build kept no copy (recall < 0.99 at every oversample)")
        else:
            int8_store = NumpyStore(int8_index, catalog)
            int8_rec = Recommender(catalog, int8_store)
            stores["int8"] = int8_rec
            methods.append(
                Method(
                    "int8",
                    f"int8 two-stage (oversample {copy.oversample})",
                    similar_fn(int8_rec),
                    batch_fn(int8_store),
                    reps_single,
                    reps_batch,
                    disk=vectors_file + scan_files,
                )
            )
            notes.append(
                f"int8 copy: oversample {copy.oversample} (rows rescored per query: "
                f"{copy.candidates(POOL)} by similar(), {copy.candidates(K + 1)} in a batch), "
                f"recall@10 measured by the build on 64 index rows {copy.recall:.4f}"
            )

        mrl_copy = None
        if d > MRL_DIMS:
            mrl_index = VectorIndex.open(tmp)
            t0 = time.perf_counter()
            # Encoded and calibrated through the exact store's mapping, so the MRL store's own
            # mapping of vectors.npy shows only the rows its rescoring reads.
            mrl_copy = ScanCopy.encode(ScanSpec.parse(f"mrl{MRL_DIMS}"), matrix)
            said: list[str] = []
            kept = calibrate(matrix, mrl_copy, log=said.append)
            mrl_view = VectorIndex(
                mrl_index.ids, mrl_index.vectors, mrl_index.identity, scan=mrl_copy
            )
            mrl_store = NumpyStore(mrl_view, catalog)
            mrl_rec = Recommender(catalog, mrl_store)
            stores["mrl"] = mrl_rec
            mrl = Method(
                "mrl",
                f"MRL-{MRL_DIMS} two-stage (oversample {mrl_copy.oversample})",
                similar_fn(mrl_rec),
                batch_fn(mrl_store),
                reps_single,
                reps_batch,
                disk=vectors_file + npy_bytes(mrl_copy.codes),
                flag="" if kept else " (a build would not keep this copy)",
            )
            methods.append(mrl)
            notes.append(
                f"MRL-{MRL_DIMS} copy built in memory in {time.perf_counter() - t0:.1f} s, "
                f"oversample {mrl_copy.oversample} (rows rescored per query: "
                f"{mrl_copy.candidates(POOL)} by similar(), {mrl_copy.candidates(K + 1)} in a "
                "batch), "
                f"recall@10 on 64 index rows {mrl_copy.recall:.4f}: "
                + (
                    "a build would keep it"
                    if kept
                    else f"below 0.99 at every oversample up to 128, so a build would not "
                    f"keep it (these {kind} vectors are not Matryoshka); timed anyway at "
                    f"oversample {mrl_copy.oversample}"
                )
                + "; its disk size is what scan.npy would take"
            )

        flat: Any = None
        sq8: Any = None
        if faiss is None:
            notes.append("faiss is not installed: pip install faiss-cpu to compare")
        else:
            contiguous = np.ascontiguousarray(matrix)
            t0 = time.perf_counter()
            flat = faiss.IndexFlatIP(d)
            flat.add(contiguous)
            t1 = time.perf_counter()
            sq8 = faiss.IndexScalarQuantizer(
                d, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
            )
            sq8.train(contiguous)
            sq8.add(contiguous)
            del contiguous
            gc.collect()
            notes.append(
                f"faiss: IndexFlatIP built in {t1 - t0:.1f} s, SQ8 trained on all {n:,} rows "
                f"and built in {time.perf_counter() - t1:.1f} s"
            )

            def faiss_single(index: Any) -> Callable[[int], Any]:
                return lambda i: index.search(queries[i % BATCH][None, :], K + 1)

            def faiss_batch(index: Any) -> Callable[[int], Any]:
                return lambda i: index.search(queries, K + 1)

            methods.append(
                Method(
                    "flat",
                    "faiss IndexFlatIP",
                    faiss_single(flat),
                    faiss_batch(flat),
                    reps_single,
                    reps_batch,
                    disk=faiss_bytes(flat),
                    resident=int(flat.ntotal * flat.code_size),
                    resident_note="its codes in memory (ntotal x code_size)",
                )
            )
            methods.append(
                Method(
                    "sq8",
                    "faiss SQ8 (IndexScalarQuantizer QT_8bit)",
                    faiss_single(sq8),
                    faiss_batch(sq8),
                    reps_single,
                    reps_batch,
                    disk=faiss_bytes(sq8),
                    resident=int(sq8.ntotal * sq8.code_size),
                    resident_note="its codes in memory (ntotal x code_size)",
                )
            )

        from sklearn.metrics.pairwise import cosine_similarity

        def naive(i: int) -> NDArray[np.intp]:
            scores = cosine_similarity(queries[i % BATCH][None, :], matrix)[0]
            return np.argsort(-scores)[: K + 1]

        def naive_batch(i: int) -> NDArray[np.intp]:
            scores = cosine_similarity(queries, matrix)
            return np.argsort(-scores, axis=1)[:, : K + 1]

        tutorial = Method(
            "tutorial",
            "tutorial: sklearn cosine_similarity + argsort",
            naive,
            naive_batch,
            reps_naive,
            reps_naive_batch,
            warm_batch=not big,
            disk=vectors_file,
        )
        methods.append(tutorial)

        # The methods take turns, so that they all see the same machine.
        for t in threads:
            with Threads(t):
                for m in methods:
                    m.single_fn(0)  # warm up: first-use caches (editions, row masks)
                    m.single[t] = []
                for r in range(max(m.reps_single for m in methods)):
                    for m in methods:
                        if r < m.reps_single:
                            m.single[t].append(clock(m.single_fn, r))
                for m in methods:
                    if m.warm_batch:
                        m.batch_fn(0)
                    m.batch[t] = []
                for r in range(max(m.reps_batch for m in methods)):
                    for m in methods:
                        if r < m.reps_batch:
                            m.batch[t].append(clock(m.batch_fn, r))

        # Transient peaks (default thread counts); recall of the single and batch paths (the
        # batch results are those of the peak measurement).
        for m in methods:
            m.peak_single, _ = transient(m.single_fn)
            m.peak_batch, result = transient(m.batch_fn)
            if m.key in stores:
                rec = stores[m.key]
                got = [[row_of[x.book.id] for x in rec.similar(q, k=K)] for q in query_ids]
                m.recall_single = recall(got, truth)
                rows = [
                    without([row_of[i] for i in h.ids], r) for h, r in zip(result, own, strict=True)
                ]
            else:
                found = result[1] if m.key in ("flat", "sq8") else result
                rows = [without(f.tolist(), r) for f, r in zip(found, own, strict=True)]
            m.recall_batch = recall(rows, truth)
        if exact.recall_single is not None and exact.recall_single < 1.0:
            notes.append(f"float32 exact similar() differs from a full scan: {exact.recall_single}")

        # Resident memory of each method's own structures.
        exact.resident = mapped_rss([exact_index.vectors])
        exact.resident_note = "its mapping of vectors.npy"
        tutorial.resident = exact.resident
        tutorial.resident_note = "the float32 exact store's mapping of vectors.npy (shared)"
        for m in methods:
            if m.key == "int8" and copy is not None:
                m.resident = mapped_rss([int8_index.vectors, copy.codes, copy.scales])
                m.resident_note = "its mappings of scan.npy, scan-scale.npy, vectors.npy"
                vec = mapped_rss([int8_index.vectors])
                if vec is not None:
                    m.resident_note += f" (of which vectors.npy {mb(vec)})"
            elif m.key == "mrl" and mrl_copy is not None:
                vec = mapped_rss([mrl_view.vectors])
                m.resident = mrl_copy.nbytes + (vec or 0)
                m.resident_note = (
                    f"the prefix in memory {mb(mrl_copy.nbytes)} + its mapping of vectors.npy "
                    f"{mb(vec or 0)}"
                )
        status = proc_status()
        notes.append(
            f"process resident at the end of the case {mb(status.get('VmRSS', 0))} (file-backed "
            f"{mb(status.get('RssFile', 0))}, anonymous {mb(status.get('RssAnon', 0))}, which "
            f"includes 3 stores over a catalog of {n:,} books); mapped pages are the OS page "
            "cache, shared between processes"
        )
        notes.append(
            "mapped residency counts the pages touched through that mapping (the kernel maps up "
            "to 64 KB of already cached neighbours per fault, so a rescoring's few rows per "
            "query show as more)"
        )
        if kind == "random":
            notes.append(
                "random vectors: neighbour cosines of a query are all close, so any compact "
                "copy's recall here is a lower bound"
            )

        # The closures hold the stores, faiss's copies and the mappings: drop them, so that
        # all of it is freed when this function returns.
        for m in methods:
            m.single_fn = m.batch_fn = _gone
        flat = sq8 = None
        stores.clear()
    return Case(n, d, kind, methods, notes)


def _gone(i: int) -> None:
    raise RuntimeError("the case is over")


# -- printing -----------------------------------------------------------------------------------


def mb(n: float | None) -> str:
    return "–" if n is None else f"{n / 2**20:,.0f} MB"


def ms(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:,.3g}" if x < 1000 else f"{x:,.0f}"


def fmt_recall(m: Method) -> str:
    parts = [f"{x:.4f}" if x is not None else "–" for x in (m.recall_single, m.recall_batch)]
    return " / ".join(parts) + m.flag


def print_case(case: Case) -> None:
    print(f"\n### N = {case.n:,}, d = {case.d}, {case.kind} vectors\n", flush=True)
    reps = {m.key: (m.reps_single, m.reps_batch) for m in case.methods}
    print(
        "| method | single median ms | single p99 ms | batch-64 queries/s | recall@10 single / "
        "batch | disk | resident | peak extra per call single / batch | threads single / batch |"
    )
    print("|---" * 9 + "|")
    for m in case.methods:
        qps = m.qps()
        cells = [
            m.label,
            ms(m.median_ms()),
            ms(m.p99_ms()),
            "–" if qps is None else f"{qps:,.1f}",
            fmt_recall(m),
            mb(m.disk),
            mb(m.resident),
            f"{mb(m.peak_single)} / {mb(m.peak_batch)}",
            f"T{m.single_threads()} / T{m.batch_threads()}",
        ]
        print("| " + " | ".join(cells) + " |")
    print()
    print(
        f"- samples per thread count: single {reps['exact'][0]} (tutorial {reps['tutorial'][0]}), "
        f"batches {reps['exact'][1]} (tutorial {reps['tutorial'][1]}); p99 of so few samples "
        "is close to their maximum. recall@10 is against the exact float32 top-10 of the 64 "
        "queries (faiss and the tutorial: from their batch results, which are the same scores); "
        f"bookrec's single path rescores more rows than its batch path (similar() asks the "
        f"store for {POOL} results, a batch for {K + 1}), hence its recall may be higher. "
        "Peak extra per call is a lower bound: memory the allocator reuses does not show"
    )
    for m in case.methods:
        if m.resident_note:
            print(f"- resident, {m.label}: {m.resident_note}")
    for note in case.notes:
        print(f"- {note}")
    print(flush=True)


def ratio_lines(case: Case) -> list[str]:
    by = {m.key: m for m in case.methods}
    exact = by["exact"].median_ms()
    assert exact is not None
    lines: list[str] = []
    for key in ("int8", "mrl"):
        m = by.get(key)
        if m is None:
            continue
        med = m.median_ms()
        assert med is not None
        line = (
            f"{key} two-stage vs float32 exact: median {med:.3g} / {exact:.3g} ms = "
            f"{med / exact:.2f}, recall@10 {m.recall_single:.4f}{m.flag}"
        )
        sq8 = by.get("sq8")
        sq8_med = sq8.median_ms() if sq8 is not None else None
        if sq8 is not None and sq8_med is not None and sq8.recall_batch is not None:
            line += (
                f"; vs faiss SQ8 {sq8_med:.3g} ms (recall {sq8.recall_batch:.4f}): "
                f"speed {sq8_med / med:.2f}x SQ8's (> 1: faster)"
            )
        exact_qps, qps = by["exact"].qps(), m.qps()
        if exact_qps and qps:
            line += f"; batch-64 {qps:,.0f} vs {exact_qps:,.0f} queries/s float32 exact"
        lines.append(line)
    tut = by["tutorial"].median_ms()
    if tut is not None:
        best = min(x for x in (by[k].median_ms() for k in ("exact", "int8") if k in by) if x)
        lines.append(f"similar() vs tutorial: {tut / best:.1f}x faster (best bookrec single)")
    return lines


def target_lines(case: Case) -> list[str]:
    by = {m.key: m for m in case.methods}
    out: list[str] = []
    exact = by["exact"].median_ms()
    sq8 = by.get("sq8")
    for key in ("int8", "mrl"):
        m = by.get(key)
        if m is None or exact is None:
            continue
        med, rec = m.median_ms(), m.recall_single
        assert med is not None and rec is not None
        ratio = med / exact
        met = ratio <= 1 / 3
        out.append(
            f"{case.kind}, {key}: two-stage median <= 1/3 of float32 exact: {med:.3g} / "
            f"{exact:.3g} ms = {ratio:.3f} (target <= 0.333): {'met' if met else 'not met'}"
        )
        out.append(
            f"{case.kind}, {key}: recall@10 >= 0.99: {rec:.4f}{m.flag}: "
            f"{'met' if rec >= 0.99 else 'not met'}"
        )
        if sq8 is None or sq8.median_ms() is None or sq8.recall_batch is None:
            out.append(f"{case.kind}, {key}: faster than faiss SQ8: not measured (no faiss)")
            continue
        sq8_med = sq8.median_ms()
        assert sq8_med is not None
        faster = med < sq8_med
        as_good = rec >= sq8.recall_batch
        out.append(
            f"{case.kind}, {key}: faster than faiss SQ8 at equal or better recall: "
            f"{sq8_med:.3g} / {med:.3g} ms = {sq8_med / med:.2f}x SQ8's speed, recall "
            f"{rec:.4f} vs {sq8.recall_batch:.4f}: {'met' if faster and as_good else 'not met'}"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", help="rows (default 100000 1000000)")
    parser.add_argument("--dims", type=int, nargs="+", default=[1024, 256], help="dimensions")
    parser.add_argument(
        "--kinds",
        nargs="+",
        choices=KINDS,
        default=["random", "clustered"],
        help="kinds of vectors (default random clustered)",
    )
    parser.add_argument("--quick", action="store_true", help="100k rows only, fewer repetitions")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="thread counts to try (default 1 2)"
    )
    args = parser.parse_args(argv)
    sizes = args.sizes or ([100_000] if args.quick else [100_000, 1_000_000])
    print(
        f"# bench_search: top-{K}, {platform.machine()} {os.cpu_count()} CPUs, "
        f"numpy {np.__version__}, faiss {getattr(faiss, '__version__', 'not installed')}, "
        f"python {platform.python_version()}, load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    print(
        "Times per single query: median and p99 ms; batches: queries/s in calls of 64. "
        "T1/T2 = every BLAS/OpenMP pool and the int8 scan limited to 1/2 threads; each method "
        "is shown at its best thread count."
    )
    cases: list[Case] = []
    for n in sizes:
        for d in args.dims:
            for kind in args.kinds:
                case = run_case(n, d, kind, quick=args.quick, threads=args.threads)
                print_case(case)
                cases.append(case)
                gc.collect()
    print("\n## Summary\n")
    for case in cases:
        for line in ratio_lines(case):
            print(f"- N={case.n:,} d={case.d} {case.kind}: {line}")
    print(f"\n## Targets at {TARGET[0]:,} x {TARGET[1]}\n")
    at = [c for c in cases if (c.n, c.d) == TARGET]
    if not at:
        print(f"- not measured in this run (run with --sizes {TARGET[0]} --dims {TARGET[1]})")
    for case in at:
        for line in target_lines(case):
            print(f"- {line}")
    print(f"\n(load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
