"""The ``VectorIndex`` class: book ids with their memory-mapped unit vectors."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bookrec.client import Embedder, ModelIdentity, normalize

from ..catalog import Catalog
from ..errors import CorruptIndexError, IndexNotFoundError, UnknownBookError
from ..ranking import Matrix
from ..text import content_hash
from .compat import check_compatible
from .files import build_lock
from .integrity import (
    IntegrityReport,
    check_rows,
    check_sizes,
    recover_hint,
    verify_generation,
)
from .manifest import IndexManifest, read_manifest
from .publish import BLOCK_ROWS, next_manifest, publish
from .scan import ScanCopy, ScanPlan, calibrate, resolve_scan


class VectorIndex:
    """Book ids and their unit vectors, memory-mapped from an index directory.

    ``vectors`` is the stored matrix (float32, or float16 if the index was saved that way; the
    ranking functions convert float16 block by block). ``ids[i]`` is the book of row ``i``.
    ``scan`` is the compact copy searches scan first, when the index has one (:mod:`.scan`).
    """

    def __init__(
        self,
        ids: Sequence[str],
        vectors: Matrix,
        identity: ModelIdentity,
        *,
        hashes: Sequence[str] | None = None,
        manifest: IndexManifest | None = None,
        path: Path | None = None,
        scan: ScanCopy | None = None,
    ) -> None:
        if vectors.ndim != 2 or vectors.shape[0] != len(ids):
            raise ValueError(f"{len(ids)} ids but vectors of shape {vectors.shape}")
        if vectors.shape[1] != identity.dimensions:
            raise ValueError(
                f"vectors have {vectors.shape[1]} dimensions, identity says {identity.dimensions}"
            )
        if vectors.dtype not in (np.float32, np.float16):
            raise ValueError(f"vectors must be float32 or float16, not {vectors.dtype}")
        self._ids = tuple(ids)
        self._rows = {book_id: row for row, book_id in enumerate(self._ids)}
        if len(self._rows) != len(self._ids):
            raise ValueError("duplicate ids in the index")
        # A plain view of a memory map: the same pages, without np.memmap's per-slice cost.
        self._vectors = vectors.view(np.ndarray) if isinstance(vectors, np.memmap) else vectors
        self._identity = identity
        self._hashes = None if hashes is None else tuple(hashes)
        self._manifest = manifest
        self._path = path
        if scan is not None and len(scan) != len(self._ids):
            raise ValueError(f"{len(self._ids)} ids but a scan copy of {len(scan)} rows")
        self._scan = scan

    @classmethod
    def from_vectors(
        cls,
        ids: Sequence[str],
        vectors: NDArray[np.floating],
        identity: ModelIdentity | None = None,
        *,
        hashes: Sequence[str] | None = None,
        scan: str = "none",
    ) -> VectorIndex:
        """An in-memory index (rows are L2-normalised into a float32 copy); ``scan`` asks for
        a compact scan copy as :func:`build_index` does (``none`` by default)."""
        arr = np.asarray(vectors, dtype=np.float32)
        if arr.ndim != 2:
            raise ValueError(f"vectors must be a matrix, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError("vectors contain NaN or infinity")
        unit = np.ascontiguousarray(normalize(arr))
        ident = identity or ModelIdentity("unknown", int(unit.shape[1]))
        spec = resolve_scan(scan, unit.shape[0], unit.shape[1])
        copy = None
        if spec is not None:
            copy = ScanCopy.encode(spec, unit)
            if not calibrate(unit, copy):
                copy = None
        return cls(ids, unit, ident, hashes=hashes, scan=copy)

    @classmethod
    def open(
        cls, path: str | Path, *, mmap: bool = True, embedder: Embedder | None = None
    ) -> VectorIndex:
        """Open the live generation of an index directory (memory-mapped unless ``mmap=False``).

        With ``embedder``, also check that it serves the index's model and dimensions
        (:class:`IndexMismatchError` otherwise). Opening checks that every file the manifest
        lists exists with its recorded size (``stat`` only, nothing is read in full); the
        checksums and the rows are checked by :meth:`verify`.
        """
        directory = Path(path)
        for attempt in range(3):
            manifest = read_manifest(directory)
            try:
                index = cls._open_generation(directory, manifest, mmap=mmap)
                break
            except FileNotFoundError as exc:
                # A build may have published a new generation and removed this one meanwhile.
                if attempt < 2 and read_manifest(directory).generation != manifest.generation:
                    continue
                raise CorruptIndexError(
                    f"the index at {directory} is incomplete: {exc.filename} is missing; "
                    f"{recover_hint(directory)}"
                ) from exc
        if embedder is not None:
            check_compatible(index.identity, embedder, where=directory)
        return index

    @classmethod
    def _open_generation(
        cls, directory: Path, manifest: IndexManifest, *, mmap: bool
    ) -> VectorIndex:
        gen = directory / manifest.generation
        hint = recover_hint(directory)
        try:
            vectors = np.load(gen / "vectors.npy", mmap_mode="r" if mmap else None)
        except FileNotFoundError:
            raise
        except (OSError, ValueError, EOFError) as exc:
            what = str(exc) or type(exc).__name__
            raise CorruptIndexError(
                f"{gen / 'vectors.npy'} cannot be read: {what}; {hint}"
            ) from exc
        expected = (manifest.count, manifest.dimensions)
        if vectors.shape != expected or str(vectors.dtype) != manifest.dtype:
            raise CorruptIndexError(
                f"{gen / 'vectors.npy'} holds {vectors.dtype} {vectors.shape}, the manifest "
                f"says {manifest.dtype} {expected}; {hint}"
            )
        ids = _read_json_list(gen / "ids.json")
        if len(ids) != manifest.count:
            raise CorruptIndexError(
                f"{gen / 'ids.json'} has {len(ids)} ids, the manifest says {manifest.count}; {hint}"
            )
        scan = None
        if manifest.scan is not None:
            scan = ScanCopy.open(gen, manifest.scan, manifest.count, manifest.dimensions)
        # After the shape checks (which say more about a file replaced by another array):
        # every file, hashes.json and live.json included, exists with its recorded size.
        check_sizes(directory, manifest)
        try:
            index = cls(
                ids, vectors, manifest.identity, manifest=manifest, path=directory, scan=scan
            )
        except ValueError as exc:
            raise CorruptIndexError(f"the index at {directory} is inconsistent: {exc}") from exc
        return index

    # -- properties -------------------------------------------------------------------------

    @property
    def ids(self) -> tuple[str, ...]:
        """Book ids, in row order."""
        return self._ids

    @property
    def vectors(self) -> Matrix:
        """The (len(ids), dimensions) matrix of unit rows, as stored."""
        return self._vectors

    @property
    def identity(self) -> ModelIdentity:
        """The model the vectors come from; only its vectors can be compared with them."""
        return self._identity

    @property
    def dimensions(self) -> int:
        """Width of the vectors (the identity's dimensions, checked on construction)."""
        return int(self._vectors.shape[1])

    @property
    def manifest(self) -> IndexManifest | None:
        """The manifest of an index opened from disk (``None`` for an in-memory index)."""
        return self._manifest

    @property
    def scan(self) -> ScanCopy | None:
        """The compact copy the first stage of a search scans (``None``: searches are exact
        scans of ``vectors``)."""
        return self._scan

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def hashes(self) -> tuple[str, ...] | None:
        """Content hash of each row's book text (read on first use)."""
        if self._hashes is None and self._manifest is not None and self._path is not None:
            gen = self._path / self._manifest.generation
            try:
                hashes = _read_json_list(gen / "hashes.json")
            except FileNotFoundError as exc:
                raise CorruptIndexError(
                    f"{gen / 'hashes.json'} is missing; {recover_hint(self._path)}"
                ) from exc
            if len(hashes) != len(self._ids):
                raise CorruptIndexError(
                    f"{gen / 'hashes.json'} has {len(hashes)} hashes for {len(self._ids)} ids; "
                    f"{recover_hint(self._path)}"
                )
            self._hashes = tuple(hashes)
        return self._hashes

    def verify(self) -> IntegrityReport:
        """The full check of an index opened from disk: the size and checksum of every file
        the manifest recorded, every row finite with unit norm, unique ids, one hash per id
        (reads every file once, block by block). :class:`CorruptIndexError` naming the first
        damaged file; an in-memory index checks its rows only."""
        if self._manifest is None or self._path is None:
            check_rows("the index", self._vectors, self._ids, "build it again")
            return IntegrityReport(Path(), len(self._ids), (), 0, checksummed=False)
        return verify_generation(self._path, self._manifest, self._vectors, self._ids, self.hashes)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, book_id: object) -> bool:
        return book_id in self._rows

    def __repr__(self) -> str:
        where = f", path={str(self._path)!r}" if self._path else ""
        return f"VectorIndex({len(self)} books, {self._identity}, {self._vectors.dtype}{where})"

    def row(self, book_id: str) -> int:
        """Row of a book; :class:`UnknownBookError` if it has no vector."""
        row = self._rows.get(book_id)
        if row is None:
            raise UnknownBookError(
                book_id, f"book {book_id!r} is not in the index (rebuild it with bookrec index)"
            )
        return row

    def get_row(self, book_id: str) -> int | None:
        return self._rows.get(book_id)

    def vector(self, book_id: str) -> NDArray[np.float32]:
        """A float32 copy of a book's vector."""
        return np.array(self._vectors[self.row(book_id)], dtype=np.float32)

    def save(
        self, path: str | Path, *, dtype: str | None = None, scan: str | None = None
    ) -> VectorIndex:
        """Write this index to ``path`` atomically (a new generation) and return it opened.

        Rows without a known content hash get an empty one, so a later :func:`build_index`
        re-embeds them. ``scan`` asks for a compact scan copy as :func:`build_index` does.
        """
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        with build_lock(directory):
            return self.publish_locked(directory, dtype=dtype, scan=scan)

    def publish_locked(
        self,
        directory: Path,
        *,
        dtype: str | None = None,
        extra: Mapping[str, Any] | None = None,
        scan: str | None = None,
        reuse: tuple[ScanCopy, NDArray[np.intp]] | None = None,
    ) -> VectorIndex:
        """:meth:`save` for a caller that holds the directory's ``build_lock``; ``extra`` maps
        more file names of the generation to their JSON content. ``scan`` asks for a compact
        copy (default: what the directory's manifest asked for, else ``auto``); with
        ``reuse=(copy, rows)``, row ``i`` takes the codes of ``copy``'s row ``rows[i]`` where
        that is ``>= 0`` (the same vector)."""
        kind = dtype or str(self._vectors.dtype)
        if kind not in ("float32", "float16"):
            raise ValueError(f"dtype must be 'float32' or 'float16', not {kind!r}")
        previous: IndexManifest | None
        try:
            previous = read_manifest(directory)
        except (IndexNotFoundError, CorruptIndexError):
            previous = None
        manifest = next_manifest(
            directory,
            previous,
            identity=self._identity,
            count=len(self._ids),
            dtype=kind,
            formats=self._manifest.prompt_formats if self._manifest else None,
            scan_request=scan,
        )
        spec = resolve_scan(manifest.scan_request, len(self._ids), self.dimensions)
        plan = None
        if spec is not None:
            plan = ScanPlan(spec, *reuse) if reuse is not None else ScanPlan(spec)
        source = self._vectors

        def fill(out: NDArray[Any]) -> None:
            for a in range(0, len(self._ids), BLOCK_ROWS):
                out[a : a + BLOCK_ROWS] = source[a : a + BLOCK_ROWS]

        hashes = self.hashes or ("",) * len(self._ids)
        publish(directory, manifest, fill, ids=self._ids, hashes=hashes, extra=extra, scan=plan)
        return VectorIndex.open(directory)

    def check_compatible(self, embedder: Embedder) -> None:
        """See :func:`check_compatible`."""
        check_compatible(self._identity, embedder, where=self._path or "the index")

    def stale_ids(self, catalog: Catalog) -> list[str]:
        """Catalog books without a vector, or whose text changed since the index was built."""
        hashes = self.hashes
        out = []
        for book in catalog:
            row = self._rows.get(book.id)
            if row is None or (hashes is not None and hashes[row] != content_hash(book)):
                out.append(book.id)
        return out


def _read_json_list(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptIndexError(
            f"{path} cannot be read: {exc}; {recover_hint(path.parent.parent)}"
        ) from exc
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        raise CorruptIndexError(
            f"{path} is not a list of strings; {recover_hint(path.parent.parent)}"
        )
    return data
