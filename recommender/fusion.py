"""Hybrid ranking: the dense ranking fused with the keyword ranking of the same books.

Every mode (more like this, a reader's profile, preference texts, search) ranks the books twice:
by the dense score (cosines of the embeddings, through the store) and by the keyword score
(TF-IDF over the same book texts, :class:`~recommender.lexical.KeywordIndex`). The two rankings
are fused by weighted reciprocal rank (the default; it needs no calibration between a model's
cosines and keyword scores, whatever model serves) or by a convex mix of min-max normalised
scores::

    rrf:    score = dense_weight / (rrf_k + dense_rank) + lexical_weight / (rrf_k + keyword_rank)
    convex: score = (1 - lexical_weight) * dense_norm + lexical_weight * keyword_norm

Ranks start at 1 and cover the ``depth`` best of each ranking; a book missing from one ranking
gets nothing from it. Normalised scores map the ``depth``-th score of a ranking to 0 and its best
to 1 (clipped at 0). ``mode="dense"`` and ``mode="lexical"`` keep one ranking alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from numpy.typing import NDArray

__all__ = ["FUSION_MODES", "Fusion", "FusionMethod", "FusionMode", "fuse"]

FusionMode = Literal["hybrid", "dense", "lexical"]
FusionMethod = Literal["rrf", "convex"]
#: The modes, default first (the CLI's choices).
FUSION_MODES: tuple[str, ...] = get_args(FusionMode)


@dataclass(frozen=True, slots=True)
class Fusion:
    """How the dense and the keyword rankings combine (see the module docstring).

    The defaults were chosen on the quality harness (``scripts/eval_quality.py``).
    """

    mode: FusionMode = "hybrid"
    method: FusionMethod = "rrf"
    dense_weight: float = 1.0
    lexical_weight: float = 0.5
    rrf_k: int = 60
    depth: int = 100

    def __post_init__(self) -> None:
        if self.mode not in FUSION_MODES:
            raise ValueError(f"fusion mode must be hybrid, dense or lexical, not {self.mode!r}")
        if self.method not in ("rrf", "convex"):
            raise ValueError(f"fusion method must be rrf or convex, not {self.method!r}")
        if not (self.dense_weight >= 0 and self.lexical_weight >= 0):
            raise ValueError("fusion weights must not be negative")
        if self.method == "convex" and self.lexical_weight > 1:
            raise ValueError("a convex fusion's lexical_weight lies between 0 and 1")
        if self.rrf_k < 0 or self.depth < 1:
            raise ValueError("rrf_k must not be negative and depth must be positive")

    @property
    def uses_dense(self) -> bool:
        return self.mode != "lexical"

    @property
    def uses_lexical(self) -> bool:
        return self.mode != "dense"


def _normalised(scores: NDArray[np.float32], depth: int) -> NDArray[np.float64]:
    """Min-max over the best ``depth`` scores of a ranking (``scores`` are best first)."""
    top = scores[:depth].astype(np.float64)
    if top.shape[0] == 0:
        return top
    high, low = float(top[0]), float(top[-1])
    if high <= low:
        return np.ones_like(top)
    return np.clip((top - low) / (high - low), 0.0, None)


def fuse(
    fusion: Fusion,
    dense_rows: NDArray[np.intp],
    dense_scores: NDArray[np.float32],
    lexical_rows: NDArray[np.intp],
    lexical_scores: NDArray[np.float32],
) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """The fused ranking of two rankings (rows best first, with their scores): the union of
    their best ``fusion.depth`` rows, best first by fused score (ties: dense order first, then
    the lower row)."""
    depth = fusion.depth
    d_rows, l_rows = dense_rows[:depth], lexical_rows[:depth]
    if fusion.method == "rrf":
        d_part = fusion.dense_weight / (fusion.rrf_k + np.arange(1, d_rows.shape[0] + 1))
        l_part = fusion.lexical_weight / (fusion.rrf_k + np.arange(1, l_rows.shape[0] + 1))
    else:
        d_part = (1.0 - fusion.lexical_weight) * _normalised(dense_scores, depth)
        l_part = fusion.lexical_weight * _normalised(lexical_scores, depth)
    rows = np.concatenate([d_rows, l_rows]).astype(np.intp, copy=False)
    parts = np.concatenate([d_part, l_part])
    first = np.concatenate([np.arange(d_rows.shape[0]), np.arange(l_rows.shape[0]) + depth])
    unique, inverse = np.unique(rows, return_inverse=True)
    total = np.zeros(unique.shape[0], dtype=np.float64)
    np.add.at(total, inverse, parts)
    seen = np.full(unique.shape[0], 2 * depth, dtype=np.int64)
    np.minimum.at(seen, inverse, first)
    order = np.lexsort((unique, seen, -total))
    return unique[order], total[order]
