"""L2 normalisation of embeddings into float32 unit rows."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["normalize"]


def normalize(vectors: ArrayLike) -> NDArray[np.float32]:
    """A new float32 array: ``vectors`` (one vector or a matrix of rows) at unit L2 norm.

    Computed in float32: servers return bf16 vectors normalised only to about 1e-3, so
    renormalise before using dot products as cosine. All-zero rows stay zero.
    """
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        norm = np.linalg.norm(arr)
        return arr / norm if norm > 0 else np.zeros_like(arr)
    if arr.ndim != 2:
        raise ValueError(f"expected a vector or a matrix of rows, got shape {arr.shape}")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    norms[norms == 0] = np.inf  # a zero row divided by infinity stays zero
    unit: NDArray[np.float32] = arr / norms
    return unit
