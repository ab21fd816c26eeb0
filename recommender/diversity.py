"""Maximal marginal relevance over a candidate pool, under per-author or per-series caps."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = ["select_diverse"]


def select_diverse(
    relevance: NDArray[np.floating],
    k: int,
    *,
    vectors: NDArray[np.floating] | None = None,
    diversity: float = 0.0,
    groups: Sequence[Sequence[tuple[str, Hashable]]] | None = None,
    caps: Mapping[str, int] | None = None,
) -> list[int]:
    """Pick up to ``k`` positions from a candidate pool, best first.

    With ``diversity`` > 0 this is maximal marginal relevance (MMR): each step picks the
    candidate maximising ``(1 - diversity) * relevance - diversity * max cosine to the picks so
    far`` (negative cosines count as 0; ``vectors`` are the candidates' unit vectors).
    ``groups[i]`` lists the ``(kind, key)`` pairs of candidate ``i`` (e.g.
    ``("author", "liu cixin")``) and ``caps`` the most picks allowed per key of each kind
    (e.g. ``{"author": 2}``). Ties go to the earlier candidate.
    """
    rel = np.asarray(relevance, dtype=np.float64)
    p = rel.shape[0]
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity must be between 0 and 1, got {diversity}")
    if k <= 0 or p == 0:
        return []
    caps = {kind: cap for kind, cap in (caps or {}).items() if cap is not None}
    counts: dict[tuple[str, Hashable], int] = {}

    def fits(i: int) -> bool:
        if not caps or groups is None:
            return True
        return all(counts.get(g, 0) < caps[g[0]] for g in groups[i] if g[0] in caps)

    def take(i: int) -> None:
        if groups is not None:
            for g in groups[i]:
                counts[g] = counts.get(g, 0) + 1

    picked: list[int] = []
    if diversity == 0.0 or vectors is None:
        for i in np.lexsort((np.arange(p), -rel)):
            if fits(int(i)):
                picked.append(int(i))
                take(int(i))
                if len(picked) == k:
                    break
        return picked

    vecs = np.asarray(vectors, dtype=np.float32)
    lam = 1.0 - diversity
    available = np.ones(p, dtype=bool)
    max_sim = np.full(p, -np.inf)
    while len(picked) < k and available.any():
        # Books pointing away from the picks (negative cosine) are no more diverse than
        # unrelated ones: without the clip MMR would favour irrelevant opposites.
        penalty = np.clip(max_sim, 0.0, None)
        objective = lam * rel - diversity * penalty
        objective[~available] = -np.inf
        i = int(np.argmax(objective))
        available[i] = False
        if not fits(i):
            continue
        picked.append(i)
        take(i)
        sims = vecs @ vecs[i]
        np.maximum(max_sim, sims, out=max_sim)
    return picked
