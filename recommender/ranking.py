"""Exact cosine ranking over a matrix of unit vectors: pure numpy, no copies of the matrix.

Rows of ``matrix`` and the queries are L2-normalised float32, so a dot product is the cosine.
One query is one matrix-vector product (``M @ q``) into a score buffer; many queries are one
matrix product per block of rows (``Q @ M[a:b].T``) so the matrix is read once for all of them.
Top-k selection never sorts everything: a cheap lower bound on the k-th best score (from the
first rows, or from the results so far) discards almost every row with one comparison, and only
the survivors are partitioned and sorted.

Results are deterministic: descending score, ties broken by the lower row number. Rows scored
``-inf`` (excluded by a mask) are never returned, so fewer than ``k`` results can come back.

Float16 matrices are accepted and converted to float32 block by block into a reused buffer:
numpy has no half-precision BLAS, so ``float16 @`` would be many times slower.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "Block",
    "Matrix",
    "best_match_scores",
    "merge_blocks",
    "score_query",
    "search",
    "search_batch",
    "top_k",
]

#: A matrix of unit row vectors (float32, or float16 storage).
Matrix = NDArray[np.float32] | NDArray[np.float16]
Scores = NDArray[np.float32]
Rows = NDArray[np.intp]

NEG_INF = np.float32(-np.inf)
# Rows sampled to find a lower bound on the k-th best score before scanning all scores.
_SAMPLE = 65_536
# Bytes of float32 scores (queries x rows) computed per block in batch search.
_BLOCK_BYTES = 8 << 20
# Bytes of a float16 block converted to float32 at a time.
_UPCAST_BYTES = 8 << 20


def _as_query(query: NDArray[np.floating], d: int) -> NDArray[np.float32]:
    q = np.ascontiguousarray(query, dtype=np.float32)
    if q.ndim != 1 or q.shape[0] != d:
        raise ValueError(f"query has shape {q.shape}, expected ({d},)")
    return q


def _as_queries(queries: NDArray[np.floating], d: int) -> NDArray[np.float32]:
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != d:
        raise ValueError(f"queries have shape {q.shape}, expected (m, {d})")
    return q


def _upcast_rows(matrix: Matrix, d: int) -> int:
    return max(256, _UPCAST_BYTES // (4 * max(d, 1)))


def score_query(
    matrix: Matrix,
    query: NDArray[np.floating],
    *,
    out: Scores | None = None,
) -> Scores:
    """``matrix @ query`` as float32 scores, written into ``out`` when given (no other copy)."""
    n, d = matrix.shape
    q = _as_query(query, d)
    if out is None:
        out = np.empty(n, dtype=np.float32)
    elif out.shape != (n,) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 of shape ({n},)")
    if matrix.dtype == np.float32:
        # One BLAS call: the scan is memory-bound (4 GB per query at 1M x 1024) and BLAS splits
        # it over its threads itself. Measured on a 2-vCPU VM, blocks of 512 to 32k rows, alone
        # or spread over two Python threads, were no faster, and each block pays a wake-up.
        np.matmul(matrix, q, out=out)
        return out
    step = _upcast_rows(matrix, d)
    buf = np.empty((min(step, n), d), dtype=np.float32)
    for a in range(0, n, step):
        b = min(n, a + step)
        blk = buf[: b - a]
        np.copyto(blk, matrix[a:b], casting="same_kind")
        np.matmul(blk, q, out=out[a:b])
    return out


def top_k(scores: Scores, k: int) -> tuple[Rows, Scores]:
    """Rows of the ``k`` largest finite scores, best first (ties: lower row first).

    Never sorts all scores: a lower bound on the k-th best value taken from the first rows
    keeps only a few candidates, which are then sorted.
    """
    n = int(scores.shape[0])
    if k <= 0 or n == 0:
        return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.float32)
    cand: Rows | None = None
    if n > k:
        sample = min(_SAMPLE, n // 8)
        if sample >= 64 * k:
            tau = np.partition(scores[:sample], sample - k)[sample - k]
            if tau > NEG_INF:
                # Every true top-k score is >= the k-th best of a subset.
                found = np.flatnonzero(scores >= tau)
                if found.shape[0] <= n // 8:
                    cand = found
        if cand is None:
            part = np.argpartition(scores, n - k)[n - k :]
            kth = scores[part].min()
            cand = np.flatnonzero(scores >= kth) if kth > NEG_INF else part
        if cand.shape[0] > 8 * k + 64:
            # Many ties at the boundary: narrow to the k-th value, keeping all ties.
            vals = scores[cand]
            kth = np.partition(vals, vals.shape[0] - k)[vals.shape[0] - k]
            cand = cand[vals >= kth]
    else:
        cand = np.arange(n, dtype=np.intp)
    vals = scores[cand]
    order = np.lexsort((cand, -vals))[:k]
    rows = cand[order].astype(np.intp, copy=False)
    best = vals[order].astype(np.float32, copy=False)
    keep = best > NEG_INF
    if not keep.all():
        rows, best = rows[keep], best[keep]
    return rows, best


def search(
    matrix: Matrix,
    query: NDArray[np.floating],
    k: int,
    *,
    allowed: NDArray[np.bool_] | None = None,
    exclude: Sequence[int] | NDArray[np.integer] = (),
    bonus: Scores | None = None,
) -> tuple[Rows, Scores]:
    """Top-k rows of ``matrix`` by cosine to ``query``.

    ``allowed`` is a boolean row mask (False rows are never returned); ``exclude`` lists rows
    to drop; ``bonus`` is added to every row's score before ranking (hybrid scoring).
    When the mask keeps only a small part of the rows, only those rows are scored.
    """
    n = matrix.shape[0]
    if allowed is not None:
        kept = np.flatnonzero(allowed)
        if kept.shape[0] <= n // 8:
            if len(exclude):
                drop = np.asarray(exclude, dtype=np.intp)
                kept = kept[~np.isin(kept, drop)]
            sub = score_query(matrix[kept], query)
            if bonus is not None:
                sub += bonus[kept]
            rows, vals = top_k(sub, k)
            return kept[rows], vals
    scores = score_query(matrix, query)
    if bonus is not None:
        scores += bonus
    if allowed is not None:
        np.copyto(scores, NEG_INF, where=~allowed)
    if len(exclude):
        scores[np.asarray(exclude, dtype=np.intp)] = NEG_INF
    return top_k(scores, k)


def _block_rows(m: int, n: int) -> int:
    return int(min(max(n, 1), max(4096, _BLOCK_BYTES // (4 * max(m, 1)))))


#: ``score(a, b, out)`` writes the scores of every query for rows ``a:b`` into ``out``.
Block = Callable[[int, int, NDArray[np.float32]], None]


def search_batch(
    matrix: Matrix,
    queries: NDArray[np.floating],
    k: int,
    *,
    allowed: NDArray[np.bool_] | None = None,
    exclude: Sequence[Sequence[int]] | None = None,
    bonus: Scores | None = None,
    block_rows: int | None = None,
) -> tuple[NDArray[np.intp], Scores]:
    """Top-k for many queries at once: arrays of shape (m, k), best first.

    The matrix is read once, one block of rows at a time (``Q @ M[a:b].T``), and a running
    top-k per query is merged block by block, so memory stays bounded (a few MB of scores)
    whatever the number of rows. Missing results are row ``-1`` with score ``-inf``.
    ``exclude[i]`` lists rows never returned for query ``i``.
    """
    n, d = matrix.shape
    q = _as_queries(queries, d)
    m = q.shape[0]
    step = block_rows or _block_rows(m, n)
    if matrix.dtype != np.float32:
        step = min(step, _upcast_rows(matrix, d))
        upcast = np.empty((min(step, n), d), dtype=np.float32)

    def score(a: int, b: int, out: NDArray[np.float32]) -> None:
        block = matrix[a:b]
        if matrix.dtype != np.float32:
            np.copyto(upcast[: b - a], block, casting="same_kind")
            block = upcast[: b - a]
        np.matmul(q, block.T, out=out)

    return merge_blocks(score, m, n, k, allowed=allowed, exclude=exclude, bonus=bonus, step=step)


def merge_blocks(
    score: Block,
    m: int,
    n: int,
    k: int,
    *,
    allowed: NDArray[np.bool_] | None = None,
    exclude: Sequence[Sequence[int]] | None = None,
    bonus: Scores | None = None,
    step: int,
) -> tuple[NDArray[np.intp], Scores]:
    """The running top-k of :func:`search_batch` over ``n`` rows scored ``step`` rows at a
    time by ``score`` (the exact matrix, or a compact copy of it)."""
    if exclude is not None and len(exclude) != m:
        raise ValueError("exclude needs one entry per query")
    best_val = np.full((m, max(k, 0)), NEG_INF, dtype=np.float32)
    best_idx = np.full((m, max(k, 0)), -1, dtype=np.intp)
    if k <= 0 or m == 0 or n == 0:
        return best_idx, best_val
    ex_q = ex_r = np.empty(0, dtype=np.intp)
    if exclude is not None and any(len(e) for e in exclude):
        ex_q = np.concatenate([np.full(len(e), i, dtype=np.intp) for i, e in enumerate(exclude)])
        ex_r = np.concatenate([np.asarray(e, dtype=np.intp).reshape(-1) for e in exclude])
        order = np.argsort(ex_r, kind="stable")
        ex_q, ex_r = ex_q[order], ex_r[order]
    buf = np.empty((m, min(step, n)), dtype=np.float32)
    q_ids = np.arange(m, dtype=np.intp)
    for a in range(0, n, step):
        b = min(n, a + step)
        width = b - a
        s = buf[:, :width]
        score(a, b, s)
        if bonus is not None:
            s += bonus[a:b]
        if allowed is not None:
            np.copyto(s, NEG_INF, where=~allowed[a:b])
        if ex_r.shape[0]:
            lo, hi = np.searchsorted(ex_r, (a, b))
            if hi > lo:
                s[ex_q[lo:hi], ex_r[lo:hi] - a] = NEG_INF
        # Threshold per query: its current k-th best (strictly greater wins, because earlier
        # rows win ties), or for queries without k results yet, the block's own k-th best.
        tau = best_val[:, -1].copy()
        hit = s > tau[:, None]
        not_full = tau == NEG_INF
        if not_full.any():
            rows_nf = np.flatnonzero(not_full)
            if width > k:
                kth = np.partition(s[rows_nf], width - k, axis=1)[:, width - k]
                hit[rows_nf] &= s[rows_nf] >= kth[:, None]
        hq, hc = np.nonzero(hit)
        if hq.shape[0] == 0:
            continue
        all_q = np.concatenate([np.repeat(q_ids, k), hq])
        all_v = np.concatenate([best_val.reshape(-1), s[hq, hc]])
        all_i = np.concatenate([best_idx.reshape(-1), hc + a])
        order = np.lexsort((all_i, -all_v, all_q))
        counts = np.bincount(hq, minlength=m) + k
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        take = order[(starts[:, None] + np.arange(k)).reshape(-1)]
        best_val = all_v[take].reshape(m, k)
        best_idx = all_i[take].reshape(m, k)
    best_idx[best_val == NEG_INF] = -1
    return best_idx, best_val


def best_match_scores(
    matrix: Matrix,
    vectors: NDArray[np.floating],
    *,
    out: Scores | None = None,
    block_rows: int | None = None,
) -> Scores:
    """Per row, the best cosine to any of ``vectors``: ``max_j matrix @ vectors[j]``."""
    n, d = matrix.shape
    v = _as_queries(vectors, d)
    p = v.shape[0]
    if p == 0:
        raise ValueError("best_match_scores needs at least one vector")
    if out is None:
        out = np.empty(n, dtype=np.float32)
    if p == 1:
        return score_query(matrix, v[0], out=out)
    step = block_rows or _block_rows(p, n)
    if matrix.dtype != np.float32:
        step = min(step, _upcast_rows(matrix, d))
        upcast = np.empty((min(step, n), d), dtype=np.float32)
    buf = np.empty((min(step, n), p), dtype=np.float32)
    for a in range(0, n, step):
        b = min(n, a + step)
        block = matrix[a:b]
        if matrix.dtype != np.float32:
            np.copyto(upcast[: b - a], block, casting="same_kind")
            block = upcast[: b - a]
        s = buf[: b - a]
        np.matmul(block, v.T, out=s)
        np.max(s, axis=1, out=out[a:b])
    return out
