"""Checks that an index generation holds what its manifest says it published.

Two levels, so that opening for queries stays fast:

- :func:`check_sizes` (every :meth:`VectorIndex.open`): each file the manifest lists exists
  and has the recorded size. One ``stat`` per file, nothing read.
- :func:`verify_generation` (``bookrec index --verify``, and every incremental build before it
  reuses old rows): the sizes, the BLAKE2b checksum of every file (read block by block), every
  row of ``vectors.npy`` finite with unit norm, the ids unique, as many hashes as ids.

Indexes written before the manifest recorded checksums still open; for them only the
structural checks (files present, shapes, rows, ids) are possible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import CorruptIndexError
from ..ranking import Matrix
from . import files
from .manifest import IndexManifest

__all__ = ["NORM_TOLERANCE", "IntegrityReport", "check_sizes", "recover_hint", "verify_generation"]

#: How far from 1 a stored row's norm may be (float16 rounding stays well within it).
NORM_TOLERANCE = 1e-3
#: Rows read at a time by the row check.
_CHECK_ROWS = 16_384


@dataclass(frozen=True, slots=True)
class IntegrityReport:
    """What :func:`verify_generation` checked: ``files`` with their checksums (empty for an
    index written before checksums were recorded), ``bytes`` read for them, ``rows`` checked."""

    path: Path
    rows: int
    files: tuple[str, ...]
    bytes: int
    checksummed: bool


def recover_hint(directory: Path) -> str:
    """How to recover from a corrupt index."""
    return f"rebuild the index with bookrec index --rebuild --index {directory}"


def expected_files(manifest: IndexManifest) -> list[str]:
    """Names of the generation's files the manifest vouches for."""
    if manifest.checksums:
        return list(manifest.checksums)
    return [Path(rel).name for rel in manifest.files().values()]


def check_sizes(directory: Path, manifest: IndexManifest) -> None:
    """Every file of the live generation exists with its recorded size (``stat`` only).

    A missing file raises ``FileNotFoundError`` (the caller tells a generation replaced
    meanwhile from a damaged one); a wrong size :class:`CorruptIndexError` naming the file.
    """
    gen = directory / manifest.generation
    for name in expected_files(manifest):
        path = gen / name
        size = path.stat().st_size  # FileNotFoundError: see above
        want = manifest.checksums.get(name, {}).get("size")
        if want is not None and size != want:
            raise CorruptIndexError(
                f"{path} is {size} bytes, the manifest says {want} (truncated or replaced); "
                f"{recover_hint(directory)}"
            )


def verify_generation(
    directory: Path,
    manifest: IndexManifest,
    vectors: Matrix,
    ids: Sequence[str],
    hashes: Sequence[str] | None,
) -> IntegrityReport:
    """The full check of the live generation (see the module docstring); the first problem
    found is a :class:`CorruptIndexError` naming the file and how to recover."""
    gen = directory / manifest.generation
    hint = recover_hint(directory)
    try:
        check_sizes(directory, manifest)
    except FileNotFoundError as exc:
        raise CorruptIndexError(f"{exc.filename} is missing; {hint}") from exc
    total = 0
    for name, record in manifest.checksums.items():
        path = gen / name
        try:
            digest = files.checksum(path)
        except OSError as exc:
            raise CorruptIndexError(f"{path} cannot be read: {exc}; {hint}") from exc
        if digest != record.get(files.CHECKSUM):
            raise CorruptIndexError(
                f"{path} does not match its checksum in the manifest (the file was changed "
                f"after it was written); {hint}"
            )
        total += int(record["size"])
    check_rows(gen / "vectors.npy", vectors, ids, hint)
    if len(set(ids)) != len(ids):
        raise CorruptIndexError(f"{gen / 'ids.json'} holds duplicate ids; {hint}")
    if len(ids) != manifest.count:
        raise CorruptIndexError(
            f"{gen / 'ids.json'} has {len(ids)} ids, the manifest says {manifest.count}; {hint}"
        )
    if hashes is not None and len(hashes) != len(ids):
        raise CorruptIndexError(
            f"{gen / 'hashes.json'} has {len(hashes)} hashes for {len(ids)} ids; {hint}"
        )
    return IntegrityReport(
        path=directory,
        rows=len(ids),
        files=tuple(manifest.checksums),
        bytes=total,
        checksummed=bool(manifest.checksums),
    )


def check_rows(path: Path | str, vectors: Matrix, ids: Sequence[str], hint: str) -> None:
    """Every row of ``vectors`` is finite with unit norm (within :data:`NORM_TOLERANCE`),
    read :data:`_CHECK_ROWS` rows at a time."""
    n = int(vectors.shape[0])
    bad = 0
    first: tuple[int, Any] | None = None
    with np.errstate(all="ignore"):
        for a in range(0, n, _CHECK_ROWS):
            block = np.asarray(vectors[a : a + _CHECK_ROWS], dtype=np.float32)
            finite: NDArray[np.bool_] = np.asarray(np.isfinite(block).all(axis=1))
            norms = np.linalg.norm(np.where(finite[:, None], block, 0), axis=1)
            wrong = ~finite | (np.abs(norms - 1.0) > NORM_TOLERANCE)
            if wrong.any():
                bad += int(np.count_nonzero(wrong))
                if first is None:
                    r = int(np.argmax(wrong))
                    first = (a + r, "not finite" if not finite[r] else f"norm {norms[r]:.6g}")
    if first is not None:
        row, what = first
        book = f" (book {ids[row]!r})" if row < len(ids) else ""
        raise CorruptIndexError(
            f"{path}: {bad} of {n} rows are not finite unit vectors; the first is row {row}"
            f"{book}, {what}; {hint}"
        )
