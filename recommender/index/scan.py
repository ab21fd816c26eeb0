"""The compact scan copy of an index: fewer bytes per row for the first stage of a search.

Exact search over float32 is memory-bound (4 GB read per query at 1M x 1024), so the way to a
faster exact answer is to read fewer bytes. An index may keep, beside ``vectors.npy``, a copy of
its rows made for scanning:

- ``int8``: every dimension, one signed byte each, with one float32 scale per row (symmetric:
  ``x ~= scale * code``, ``scale = max|x| / 127``); a quarter of the bytes.
- ``mrl256`` (any ``mrl<p>``): the first ``p`` dimensions, renormalised, as float32. Valid only
  for Matryoshka-trained models such as Qwen3-Embedding, whose prefixes are embeddings too.
- ``int8-mrl256``: that prefix in int8 (a sixteenth of the bytes at 1024 dimensions).

A search is then two stages (:func:`two_stage_search`): scan the copy for the ``m`` best rows by
approximate score, with ``m = oversample * k + 32`` (4 by default), then rescore those rows
exactly from the float32 matrix and return the exact top ``k`` with exact scores. The copy is
derived (per row, so a build reuses the codes of unchanged rows) and the float32 matrix stays
the source of truth. Each build measures the recall@10 of the two stages against an exact scan
on a sample of its own rows and records it in the manifest; a Matryoshka copy whose recall is
below :data:`MIN_RECALL` gets a larger ``oversample``, or is not used.

Single queries over int8 codes use NumKong's SIMD int8 dot products (rows split over a few
threads; the kernels release the GIL); batches and float32 prefixes go through BLAS.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..errors import CorruptIndexError
from ..ranking import NEG_INF, Block, Matrix, merge_blocks, top_k
from . import files

_nk: Any
try:  # SIMD int8 kernels; without them int8 codes are widened block by block for BLAS
    import numkong as _nk
except ImportError:  # pragma: no cover - numkong ships wheels for every supported platform
    _nk = None

logger = logging.getLogger(__name__)

__all__ = [
    "AUTO_ROWS",
    "DEFAULT_OVERSAMPLE",
    "MIN_RECALL",
    "ScanCopy",
    "ScanSpec",
    "resolve_scan",
    "two_stage_batch",
    "two_stage_search",
]

#: Indexes of at least this many rows get an int8 scan copy when the request is ``auto``.
AUTO_ROWS = 100_000
#: Rows rescored exactly per result wanted: ``m = oversample * k + EXTRA``.
DEFAULT_OVERSAMPLE = 4
EXTRA = 32
#: The recall@10 (against an exact scan) a build requires of its scan copy.
MIN_RECALL = 0.99
#: The oversample factors a build tries, in order, until the measured recall is reached.
OVERSAMPLE_LADDER = (4, 8, 16, 32, 64, 128)
#: Sample queries a build uses to measure recall.
RECALL_SAMPLE = 64

SCAN_FILE = "scan.npy"
SCALE_FILE = "scan-scale.npy"

_SPEC_RE = re.compile(r"^(?:(int8)|mrl(\d+)|int8-mrl(\d+))$")
# Rows per thread below which a single int8 scan is not split.
_SPLIT_ROWS = 65_536
# Rows widened from int8 to float32 at a time (batches, and the fallback without NumKong).
_WIDEN_BYTES = 8 << 20


@dataclass(frozen=True, slots=True)
class ScanSpec:
    """What the scan copy holds: ``dims`` leading dimensions (``None``: all) as ``dtype``."""

    dtype: Literal["int8", "float32"]
    dims: int | None = None

    @property
    def name(self) -> str:
        if self.dims is None:
            return "int8"
        return f"mrl{self.dims}" if self.dtype == "float32" else f"int8-mrl{self.dims}"

    @classmethod
    def parse(cls, text: str) -> ScanSpec:
        """``int8``, ``mrl<p>`` or ``int8-mrl<p>`` (``ValueError`` otherwise)."""
        m = _SPEC_RE.match(text.strip().lower())
        if m is None:
            raise ValueError(
                f"unknown scan copy {text!r}: use auto, none, int8, mrl256 or int8-mrl256"
            )
        if m.group(1):
            return cls("int8")
        prefix = int(m.group(2) or m.group(3))
        if prefix < 8:
            raise ValueError(f"a Matryoshka prefix needs at least 8 dimensions, not {prefix}")
        return cls("float32" if m.group(2) else "int8", prefix)

    def width(self, dimensions: int) -> int:
        """Columns of the copy for vectors of ``dimensions``."""
        if self.dims is None:
            return dimensions
        if self.dims >= dimensions:
            raise ValueError(
                f"a {self.dims}-dimension prefix of {dimensions}-dimension vectors saves nothing"
            )
        return self.dims


def check_request(request: str) -> str:
    """``request`` normalised (``auto``, ``none`` or a valid spec name); ``ValueError`` if bad."""
    text = request.strip().lower()
    if text in ("auto", "none"):
        return text
    return ScanSpec.parse(text).name


def resolve_scan(request: str, count: int, dimensions: int) -> ScanSpec | None:
    """The copy an index of ``count`` rows gets for ``request`` (``auto``: int8 from
    :data:`AUTO_ROWS` rows; ``none``: no copy)."""
    text = check_request(request)
    if text == "none" or (text == "auto" and count < AUTO_ROWS):
        return None
    spec = ScanSpec("int8") if text == "auto" else ScanSpec.parse(text)
    spec.width(dimensions)
    return spec


# -- quantisation ---------------------------------------------------------------------------


def encode_rows(
    spec: ScanSpec, rows: NDArray[np.floating]
) -> tuple[NDArray[Any], NDArray[np.float32] | None]:
    """The codes of unit ``rows`` (and their per-row scales, for int8). Deterministic: the
    same row always gets the same codes, so a build may copy the codes of unchanged rows."""
    x = np.asarray(rows, dtype=np.float32)
    if spec.dims is not None:
        x = x[:, : spec.dims]
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.maximum(norms, np.float32(1e-12))
    if spec.dtype == "float32":
        return np.ascontiguousarray(x, dtype=np.float32), None
    peak = np.abs(x).max(axis=1)
    scale = np.where(peak > 0, peak / np.float32(127), np.float32(1)).astype(np.float32)
    codes = np.rint(x / scale[:, None])
    np.clip(codes, -127, 127, out=codes)
    return codes.astype(np.int8), scale


def _encode_queries(
    spec: ScanSpec, queries: NDArray[np.float32]
) -> tuple[NDArray[Any], NDArray[np.float32]]:
    """Queries in the copy's space: their codes and the factor that turns code dot products
    back into cosines (1 for float32 prefixes)."""
    codes, scale = encode_rows(spec, queries)
    if scale is None:
        return codes, np.ones(queries.shape[0], dtype=np.float32)
    return codes, scale


# -- the copy ---------------------------------------------------------------------------------


class ScanCopy:
    """The scan copy of one index generation: ``codes`` (n, width) and, for int8, ``scales``."""

    def __init__(
        self,
        spec: ScanSpec,
        codes: NDArray[Any],
        scales: NDArray[np.float32] | None,
        *,
        oversample: int = DEFAULT_OVERSAMPLE,
        recall: float | None = None,
    ) -> None:
        want = np.int8 if spec.dtype == "int8" else np.float32
        if codes.ndim != 2 or codes.dtype != want:
            raise ValueError(f"{spec.name} codes must be a {np.dtype(want)} matrix")
        if (scales is None) != (spec.dtype == "float32"):
            raise ValueError("int8 codes need one scale per row, float32 codes none")
        if scales is not None and scales.shape != (codes.shape[0],):
            raise ValueError(f"{codes.shape[0]} rows of codes but {scales.shape} scales")
        if oversample < 1:
            raise ValueError("oversample must be at least 1")
        self.spec = spec
        self.codes = codes
        self.scales = scales
        self.oversample = oversample
        self.recall = recall

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def __repr__(self) -> str:
        return f"ScanCopy({self.spec.name}, {len(self)} rows, oversample={self.oversample})"

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + (self.scales.nbytes if self.scales is not None else 0))

    def candidates(self, k: int) -> int:
        """Rows the first stage keeps for the exact second stage, for ``k`` results."""
        return self.oversample * k + EXTRA

    def info(self) -> dict[str, Any]:
        """What the manifest records of the copy (besides its files)."""
        return {
            "kind": self.spec.name,
            "oversample": self.oversample,
            "recall_at_10": self.recall,
        }

    @classmethod
    def encode(
        cls,
        spec: ScanSpec,
        vectors: Matrix,
        *,
        reuse: tuple[ScanCopy, NDArray[np.intp]] | None = None,
        block_rows: int = 16_384,
    ) -> ScanCopy:
        """The copy of ``vectors`` in memory. ``reuse=(old, rows)``: row ``i`` takes the codes
        of ``old`` row ``rows[i]`` where that is ``>= 0`` (its vector must be unchanged)."""
        n, d = vectors.shape
        width = spec.width(d)
        codes = np.empty((n, width), dtype=np.int8 if spec.dtype == "int8" else np.float32)
        scales = np.empty(n, dtype=np.float32) if spec.dtype == "int8" else None
        fill_codes(spec, vectors, codes, scales, reuse=reuse, block_rows=block_rows)
        return cls(spec, codes, scales)

    @classmethod
    def open(cls, generation: Path, info: dict[str, Any], count: int, dims: int) -> ScanCopy:
        """The copy a manifest describes, memory-mapped and checked against it."""
        try:
            spec = ScanSpec.parse(str(info["kind"]))
            oversample = int(info.get("oversample") or DEFAULT_OVERSAMPLE)
            recall = info.get("recall_at_10")
            width = spec.width(dims)
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptIndexError(
                f"{generation}: invalid scan copy in the manifest ({exc})"
            ) from exc
        path = generation / SCAN_FILE
        codes = _load(path)
        want = "int8" if spec.dtype == "int8" else "float32"
        if codes.shape != (count, width) or str(codes.dtype) != want:
            raise CorruptIndexError(
                f"{path} holds {codes.dtype} {codes.shape}, the manifest says {spec.name} "
                f"{want} {(count, width)}; rebuild the index with bookrec index --rebuild"
            )
        scales = None
        if spec.dtype == "int8":
            scales = _load(generation / SCALE_FILE)
            if scales.shape != (count,) or scales.dtype != np.float32:
                raise CorruptIndexError(
                    f"{generation / SCALE_FILE} holds {scales.dtype} {scales.shape}, expected "
                    f"float32 ({count},); rebuild the index with bookrec index --rebuild"
                )
        try:
            return cls(
                spec,
                codes,
                scales,
                oversample=oversample,
                recall=None if recall is None else float(recall),
            )
        except ValueError as exc:
            raise CorruptIndexError(f"{generation}: invalid scan copy ({exc})") from exc

    # -- scoring ------------------------------------------------------------------------------

    def score(self, query: NDArray[np.float32]) -> NDArray[np.float32]:
        """Approximate cosines of ``query`` to every row, float32."""
        codes, factor = _encode_queries(self.spec, query[None, :])
        out = np.empty(len(self), dtype=np.float32)
        if self.spec.dtype == "float32":
            np.matmul(self.codes, codes[0], out=out)
            return out
        _int8_dot(self.codes, codes[0], out)
        assert self.scales is not None
        out *= self.scales
        out *= factor[0]
        return out

    def block_scorer(self, queries: NDArray[np.float32]) -> Block:
        """``score(a, b, out)``: approximate cosines of ``queries`` to rows ``a:b`` into
        ``out`` (m, b - a), one matrix product (int8 codes are widened for BLAS first)."""
        codes, factor = _encode_queries(self.spec, queries)
        if self.spec.dtype == "float32":

            def prefix(a: int, b: int, out: NDArray[np.float32]) -> None:
                np.matmul(codes, self.codes[a:b].T, out=out)

            return prefix
        assert self.scales is not None
        scales = self.scales
        # The queries' own factors go into their rows: one multiplication per block fewer.
        wide_q = codes.astype(np.float32) * factor[:, None]
        wide = np.empty(
            (min(self.block_rows(len(codes)), len(self)), self.codes.shape[1]), np.float32
        )

        def int8(a: int, b: int, out: NDArray[np.float32]) -> None:
            block = wide[: b - a]
            np.copyto(block, self.codes[a:b], casting="unsafe")
            np.matmul(wide_q, block.T, out=out)
            out *= scales[a:b]

        return int8

    def block_rows(self, queries: int) -> int:
        """Rows per block of a batch scan (a few MB of widened codes and of scores)."""
        width = int(self.codes.shape[1])
        return max(1024, min(len(self), _WIDEN_BYTES // (4 * max(width, queries))))


def fill_codes(
    spec: ScanSpec,
    vectors: Matrix,
    codes: NDArray[Any],
    scales: NDArray[np.float32] | None,
    *,
    reuse: tuple[ScanCopy, NDArray[np.intp]] | None = None,
    block_rows: int = 16_384,
) -> None:
    """Write the codes of every row of ``vectors`` (see :meth:`ScanCopy.encode`)."""
    n = vectors.shape[0]
    old, old_rows = reuse if reuse is not None and reuse[0].spec == spec else (None, None)
    for a in range(0, n, block_rows):
        b = min(n, a + block_rows)
        todo = np.arange(a, b, dtype=np.intp)
        if old is not None and old_rows is not None:
            src = old_rows[a:b]
            hit = src >= 0
            if hit.any():
                dst = todo[hit]
                codes[dst] = old.codes[src[hit]]
                if scales is not None and old.scales is not None:
                    scales[dst] = old.scales[src[hit]]
                todo = todo[~hit]
        if todo.shape[0] == 0:
            continue
        new_codes, new_scales = encode_rows(spec, vectors[todo])
        codes[todo] = new_codes
        if scales is not None and new_scales is not None:
            scales[todo] = new_scales


def _load(path: Path) -> NDArray[Any]:
    try:
        # A plain view of the memory map: the same pages, without np.memmap's per-slice cost.
        array: NDArray[Any] = np.load(path, mmap_mode="r").view(np.ndarray)
    except FileNotFoundError:
        raise CorruptIndexError(
            f"{path} is missing; rebuild the index with bookrec index --rebuild"
        ) from None
    except (OSError, ValueError, EOFError) as exc:
        what = str(exc) or type(exc).__name__
        raise CorruptIndexError(
            f"{path} cannot be read: {what}; rebuild the index with bookrec index --rebuild"
        ) from exc
    return array


# -- int8 kernels -------------------------------------------------------------------------------

_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_threads = max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))


def set_scan_threads(count: int) -> None:
    """Threads one int8 scan may use (a server with many request threads sets 1)."""
    global _threads
    _threads = max(1, int(count))


def scan_threads() -> int:
    return _threads


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="bookrec-scan")
        return _pool


def _int8_dot(codes: NDArray[np.int8], query: NDArray[np.int8], out: NDArray[np.float32]) -> None:
    """``out[i] = codes[i] . query`` (exact integer sums, as float32)."""
    n = codes.shape[0]
    if _nk is None:
        _widened_dot(codes, query, out)
        return
    parts = min(_threads, n // _SPLIT_ROWS)
    if parts <= 1:
        _nk.cdist(query[None, :], codes, metric="dot", out=out[None, :])
        return
    bounds = np.linspace(0, n, parts + 1).astype(int)

    def run(i: int) -> None:
        a, b = int(bounds[i]), int(bounds[i + 1])
        _nk.cdist(query[None, :], codes[a:b], metric="dot", out=out[None, a:b])

    # The calling thread scans the last part itself while the pool scans the others.
    pending = [_executor().submit(run, i) for i in range(parts - 1)]
    run(parts - 1)
    for future in pending:
        future.result()


def _widened_dot(
    codes: NDArray[np.int8], query: NDArray[np.int8], out: NDArray[np.float32]
) -> None:
    n, width = codes.shape
    step = max(256, _WIDEN_BYTES // (4 * width))
    buf = np.empty((min(step, n), width), dtype=np.float32)
    q = query.astype(np.float32)
    for a in range(0, n, step):
        b = min(n, a + step)
        np.copyto(buf[: b - a], codes[a:b], casting="unsafe")
        np.matmul(buf[: b - a], q, out=out[a:b])


# -- two-stage search ---------------------------------------------------------------------------


def _rescore(
    matrix: Matrix,
    query: NDArray[np.float32],
    rows: NDArray[np.intp],
    k: int,
    bonus: NDArray[np.float32] | None,
) -> tuple[NDArray[np.intp], NDArray[np.float32]]:
    """The exact top ``k`` of candidate ``rows``: float32 cosines (plus ``bonus``)."""
    if rows.shape[0] == 0:
        return rows, np.empty(0, dtype=np.float32)
    rows = np.sort(rows)  # ascending reads of the memory-mapped matrix
    exact = np.asarray(matrix[rows], dtype=np.float32) @ query
    exact = exact.astype(np.float32, copy=False)
    if bonus is not None:
        exact += bonus[rows]
    order = np.lexsort((rows, -exact))[:k]
    return rows[order], exact[order]


def two_stage_search(
    matrix: Matrix,
    scan: ScanCopy,
    query: NDArray[np.float32],
    k: int,
    *,
    allowed: NDArray[np.bool_] | None = None,
    exclude: Sequence[int] | NDArray[np.integer] = (),
    bonus: NDArray[np.float32] | None = None,
) -> tuple[NDArray[np.intp], NDArray[np.float32]]:
    """Top ``k`` rows by exact cosine, found by scanning ``scan`` then rescoring its best
    ``scan.candidates(k)`` rows exactly (see the module docstring)."""
    q = np.ascontiguousarray(query, dtype=np.float32)
    approx = scan.score(q)
    if bonus is not None:
        approx += bonus
    if allowed is not None:
        np.copyto(approx, NEG_INF, where=~allowed)
    if len(exclude):
        approx[np.asarray(exclude, dtype=np.intp)] = NEG_INF
    rows, _ = top_k(approx, scan.candidates(k))
    return _rescore(matrix, q, rows, k, bonus)


def two_stage_batch(
    matrix: Matrix,
    scan: ScanCopy,
    queries: NDArray[np.float32],
    k: int,
    *,
    allowed: NDArray[np.bool_] | None = None,
    exclude: Sequence[Sequence[int]] | None = None,
    bonus: NDArray[np.float32] | None = None,
) -> tuple[NDArray[np.intp], NDArray[np.float32]]:
    """:func:`two_stage_search` for many queries: one pass over the copy for all of them (a
    matrix product per block), then each query's candidates rescored. Arrays (m, k), missing
    results as row ``-1`` with score ``-inf``."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    m = q.shape[0]
    out_rows = np.full((m, max(k, 0)), -1, dtype=np.intp)
    out_vals = np.full((m, max(k, 0)), NEG_INF, dtype=np.float32)
    if k <= 0 or m == 0 or len(scan) == 0:
        return out_rows, out_vals
    if scan.spec.dtype == "int8" and m <= SMALL_BATCH:
        # A few queries: one SIMD scan each reads less than widening the codes for BLAS.
        for i in range(m):
            rows, vals = two_stage_search(
                matrix,
                scan,
                q[i],
                k,
                allowed=allowed,
                exclude=exclude[i] if exclude is not None else (),
                bonus=bonus,
            )
            out_rows[i, : rows.shape[0]], out_vals[i, : vals.shape[0]] = rows, vals
        return out_rows, out_vals
    cand, _ = merge_blocks(
        scan.block_scorer(q),
        m,
        len(scan),
        scan.candidates(k),
        allowed=allowed,
        exclude=exclude,
        bonus=bonus,
        step=scan.block_rows(m),
    )
    for i in range(m):
        rows = cand[i][cand[i] >= 0]
        found, vals = _rescore(matrix, q[i], rows, k, bonus)
        out_rows[i, : found.shape[0]], out_vals[i, : vals.shape[0]] = found, vals
    return out_rows, out_vals


#: Batches of int8 queries up to this size are scanned one query at a time.
SMALL_BATCH = 4


# -- recall at build time -----------------------------------------------------------------------


def measure_recall(
    matrix: Matrix,
    scan: ScanCopy,
    *,
    sample: int = RECALL_SAMPLE,
    k: int = 10,
    seed: int = 0,
) -> float:
    """Recall@``k`` of the two stages against an exact scan, the queries being ``sample``
    rows of the index itself (each excluded from its own results)."""
    from ..ranking import search_batch

    n = matrix.shape[0]
    if n <= k + 1:
        return 1.0
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    queries = np.asarray(matrix[rows], dtype=np.float32)
    exclude = [[int(r)] for r in rows]
    truth, _ = search_batch(matrix, queries, k, exclude=exclude)
    got, _ = two_stage_batch(matrix, scan, queries, k, exclude=exclude)
    hits = sum(len(set(t.tolist()) & set(g.tolist())) for t, g in zip(truth, got, strict=True))
    return hits / (len(rows) * k)


def calibrate(matrix: Matrix, scan: ScanCopy, log: Callable[[str], None] | None = None) -> bool:
    """Set ``scan.oversample`` to the first factor of :data:`OVERSAMPLE_LADDER` whose measured
    recall@10 reaches :data:`MIN_RECALL`, and ``scan.recall``; ``False`` if none does."""
    for factor in OVERSAMPLE_LADDER:
        scan.oversample = factor
        scan.recall = measure_recall(matrix, scan)
        if scan.recall >= MIN_RECALL:
            return True
    (log or logger.warning)(
        f"the {scan.spec.name} scan copy reaches recall@10 {scan.recall:.3f} only (wanted "
        f"{MIN_RECALL}): these vectors are not Matryoshka-trained; searches stay exact over "
        "float32"
    )
    return False


# -- writing a generation's copy ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScanPlan:
    """The copy a new generation gets: ``spec``, and the old copy whose codes row ``i`` may
    take (``old_rows[i] >= 0``: that old row holds the same vector)."""

    spec: ScanSpec
    old: ScanCopy | None = None
    old_rows: NDArray[np.intp] | None = None

    def reused(self) -> int:
        if self.old is None or self.old_rows is None or self.old.spec != self.spec:
            return 0
        return int(np.count_nonzero(self.old_rows >= 0))


def write_scan(generation: Path, vectors: Matrix, plan: ScanPlan) -> dict[str, Any] | None:
    """Write the copy of ``vectors`` into the generation being made; return what the manifest
    records of it, or ``None`` if it does not reach :data:`MIN_RECALL` (no file is left).

    Most rows reused from the old copy keep its calibration; otherwise it is measured."""
    n, d = vectors.shape
    spec = plan.spec
    width = spec.width(d)
    dtype = np.int8 if spec.dtype == "int8" else np.float32
    codes = np.lib.format.open_memmap(
        generation / SCAN_FILE, mode="w+", dtype=dtype, shape=(n, width)
    )
    scales = None
    if spec.dtype == "int8":
        scales = np.lib.format.open_memmap(
            generation / SCALE_FILE, mode="w+", dtype=np.float32, shape=(n,)
        )
    reuse = (
        (plan.old, plan.old_rows) if plan.old is not None and plan.old_rows is not None else None
    )
    fill_codes(spec, vectors, codes, scales, reuse=reuse)
    copy = ScanCopy(spec, codes, scales)
    if plan.old is not None and plan.reused() >= 0.9 * n:
        copy.oversample, copy.recall = plan.old.oversample, plan.old.recall
        kept = True
    else:
        kept = calibrate(vectors, copy)
    info = copy.info()
    for array in (codes, scales):
        if array is not None:
            array.flush()
    del codes, scales, copy
    paths = [generation / SCAN_FILE, generation / SCALE_FILE]
    if not kept:
        for path in paths:
            path.unlink(missing_ok=True)
        return None
    for path in paths:
        if path.exists():
            files.fsync(path)
    return info
