"""The vector index: one unit vector per book, on disk, rebuilt incrementally and saved atomically.

Layout of an index directory::

    index_dir/
      manifest.json          the live generation and its metadata (replaced atomically)
      gen-000007-1a2b3c/     one generation, never modified after it is published
        vectors.npy          (n, d) float32 (or float16), C order, memory-mappable
        ids.json             book ids, row order
        hashes.json          content hash of each row's book text
      staging/               chunks embedded by a build that has not finished (resume)
      .lock                  held while a build runs

A save writes a complete new generation into a temporary directory, fsyncs it, renames it into
place and then replaces ``manifest.json`` (write, fsync, ``os.replace``). A process killed at
any point leaves either the old manifest pointing at the old, intact generation, or the new
one; stray temporary directories are removed by the next build.

A build embeds in chunks and persists every finished chunk in ``staging/`` (keyed by content
hash) before asking for the next, so when the embedding service goes away mid-build the
vectors already paid for are kept and the next run embeds only what is missing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bookrec.client import Embedder, EmbeddingError, ModelIdentity

from .catalog import BOOK_TEXT_VERSION, Catalog, book_text, content_hash
from .errors import (
    CorruptIndexError,
    IndexBuildError,
    IndexMismatchError,
    IndexNotFoundError,
    RecommenderError,
    UnknownBookError,
)
from .ranking import Matrix

__all__ = [
    "INDEX_FORMAT_VERSION",
    "IndexManifest",
    "IndexReport",
    "ProgressCallback",
    "VectorIndex",
    "build_index",
    "check_compatible",
]

logger = logging.getLogger(__name__)

INDEX_FORMAT = "bookrec-index"
INDEX_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
STAGING_NAME = "staging"
DEFAULT_CHUNK_SIZE = 256
_GEN_RE = re.compile(r"^gen-(\d{6,})-[0-9a-f]+$")
_TMP_PREFIX = ".tmp-"
_COPY_ROWS = 16_384

#: ``progress(done, total)``: texts embedded so far out of the texts this build must embed.
ProgressCallback = Callable[[int, int], None]


# --------------------------------------------------------------------------------------------
# Small durable-file helpers


def _fsync(path: Path) -> None:
    """Flush a file or directory to stable storage."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # pragma: no cover - directories cannot be opened on some platforms
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - e.g. directories on Windows
        pass
    finally:
        os.close(fd)


def _write_json(path: Path, payload: Any) -> None:
    with path.open("w", encoding="utf-8") as fh:
        json.dump(payload, fh, ensure_ascii=False, indent=1)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def _replace_json(path: Path, payload: Any) -> None:
    """Write JSON atomically: temporary file, fsync, rename over, fsync the directory."""
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}.{secrets.token_hex(4)}")
    try:
        _write_json(tmp, payload)
        tmp.replace(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync(path.parent)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextlib.contextmanager
def _build_lock(directory: Path) -> Iterator[None]:
    """Exclusive, non-blocking lock on the index directory for the duration of a build."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, builds must not overlap
        yield
        return
    with (directory / ".lock").open("a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RecommenderError(
                f"another build is already running on the index at {directory}"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# Manifest


@dataclass(frozen=True, slots=True)
class IndexManifest:
    """What ``manifest.json`` says about the live generation."""

    identity: ModelIdentity
    count: int
    dtype: str
    text_version: str
    generation: str
    created_at: str
    updated_at: str
    document_format: str | None = None
    query_format: str | None = None
    instruction: str | None = None
    last_build: dict[str, int] = field(default_factory=dict)

    @property
    def dimensions(self) -> int:
        return self.identity.dimensions

    def to_json(self) -> dict[str, Any]:
        return {
            "format": INDEX_FORMAT,
            "format_version": INDEX_FORMAT_VERSION,
            "model": self.identity.model,
            "dimensions": self.identity.dimensions,
            "count": self.count,
            "dtype": self.dtype,
            "text_version": self.text_version,
            "document_format": self.document_format,
            "query_format": self.query_format,
            "instruction": self.instruction,
            "generation": self.generation,
            "files": {
                "vectors": f"{self.generation}/vectors.npy",
                "ids": f"{self.generation}/ids.json",
                "hashes": f"{self.generation}/hashes.json",
            },
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "last_build": dict(self.last_build),
        }

    @classmethod
    def from_json(cls, data: Any, where: Path) -> IndexManifest:
        if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
            raise CorruptIndexError(f"{where} is not a bookrec index manifest")
        version = data.get("format_version")
        if version != INDEX_FORMAT_VERSION:
            raise CorruptIndexError(
                f"{where}: index format version {version!r} is not supported "
                f"(this version reads {INDEX_FORMAT_VERSION}); rebuild the index"
            )
        try:
            generation = str(data["generation"])
            if not _GEN_RE.match(generation):
                raise ValueError(f"bad generation name {generation!r}")
            dtype = str(data["dtype"])
            if dtype not in ("float32", "float16"):
                raise ValueError(f"unsupported dtype {dtype!r}")
            return cls(
                identity=ModelIdentity(str(data["model"]), int(data["dimensions"])),
                count=int(data["count"]),
                dtype=dtype,
                text_version=str(data["text_version"]),
                generation=generation,
                created_at=str(data.get("created_at", "")),
                updated_at=str(data.get("updated_at", "")),
                document_format=data.get("document_format"),
                query_format=data.get("query_format"),
                instruction=data.get("instruction"),
                last_build={k: int(v) for k, v in dict(data.get("last_build") or {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptIndexError(f"{where}: invalid manifest ({exc})") from exc


# --------------------------------------------------------------------------------------------
# Compatibility between an index and an embedder


def check_compatible(
    identity: ModelIdentity, embedder: Embedder, *, where: str | Path = "the index"
) -> None:
    """Raise :class:`IndexMismatchError` if ``embedder`` cannot produce vectors for ``identity``.

    Uses only what is known without a request: the embedder's identity if it has one, else its
    configured dimensions. Call again after the first embedding call to check the model too.
    """
    known = embedder.identity
    if known is not None:
        if known != identity:
            raise IndexMismatchError(
                f"the index at {where} was built with {identity}, but the embedder serves "
                f"{known}; vectors from different models cannot be compared. Rebuild the index "
                "(bookrec index --rebuild) or use the embedding service it was built with"
            )
        return
    dims = embedder.dimensions
    if dims is not None and dims != identity.dimensions:
        raise IndexMismatchError(
            f"the index at {where} has {identity.dimensions}-d vectors ({identity}), but the "
            f"embedder is configured for {dims} dimensions. Rebuild the index "
            "(bookrec index --rebuild) or configure the same dimensions"
        )


# --------------------------------------------------------------------------------------------
# The index


class VectorIndex:
    """Book ids and their unit vectors, memory-mapped from an index directory.

    ``vectors`` is the stored matrix (float32, or float16 if the index was saved that way; the
    ranking functions convert float16 block by block). ``ids[i]`` is the book of row ``i``.
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
        self._vectors = vectors
        self._identity = identity
        self._hashes = None if hashes is None else tuple(hashes)
        self._manifest = manifest
        self._path = path

    @classmethod
    def from_vectors(
        cls,
        ids: Sequence[str],
        vectors: NDArray[np.floating],
        identity: ModelIdentity | None = None,
        *,
        hashes: Sequence[str] | None = None,
    ) -> VectorIndex:
        """An in-memory index (rows are L2-normalised into a float32 copy)."""
        arr = np.array(vectors, dtype=np.float32, copy=True, order="C")
        if arr.ndim != 2:
            raise ValueError(f"vectors must be a matrix, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError("vectors contain NaN or infinity")
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        np.divide(arr, norms, out=arr, where=norms > 0)
        ident = identity or ModelIdentity("unknown", int(arr.shape[1]))
        return cls(ids, arr, ident, hashes=hashes)

    @classmethod
    def open(
        cls, path: str | Path, *, mmap: bool = True, embedder: Embedder | None = None
    ) -> VectorIndex:
        """Open the live generation of an index directory (memory-mapped unless ``mmap=False``).

        With ``embedder``, also check that it serves the index's model and dimensions
        (:class:`IndexMismatchError` otherwise).
        """
        directory = Path(path)
        for attempt in range(3):
            manifest = _read_manifest(directory)
            try:
                index = cls._open_generation(directory, manifest, mmap=mmap)
                break
            except FileNotFoundError as exc:
                # A build may have published a new generation and removed this one meanwhile.
                if attempt < 2 and _read_manifest(directory).generation != manifest.generation:
                    continue
                raise CorruptIndexError(
                    f"the index at {directory} is incomplete: {exc.filename} is missing"
                ) from exc
        if embedder is not None:
            check_compatible(index.identity, embedder, where=directory)
        return index

    @classmethod
    def _open_generation(
        cls, directory: Path, manifest: IndexManifest, *, mmap: bool
    ) -> VectorIndex:
        gen = directory / manifest.generation
        try:
            vectors = np.load(gen / "vectors.npy", mmap_mode="r" if mmap else None)
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            raise CorruptIndexError(f"{gen / 'vectors.npy'} cannot be read: {exc}") from exc
        expected = (manifest.count, manifest.dimensions)
        if vectors.shape != expected or str(vectors.dtype) != manifest.dtype:
            raise CorruptIndexError(
                f"{gen / 'vectors.npy'} holds {vectors.dtype} {vectors.shape}, the manifest "
                f"says {manifest.dtype} {expected}"
            )
        ids = _read_json_list(gen / "ids.json")
        if len(ids) != manifest.count:
            raise CorruptIndexError(
                f"{gen / 'ids.json'} has {len(ids)} ids, the manifest says {manifest.count}"
            )
        try:
            index = cls(ids, vectors, manifest.identity, manifest=manifest, path=directory)
        except ValueError as exc:
            raise CorruptIndexError(f"the index at {directory} is inconsistent: {exc}") from exc
        return index

    # -- properties -------------------------------------------------------------------------

    @property
    def ids(self) -> tuple[str, ...]:
        return self._ids

    @property
    def vectors(self) -> Matrix:
        return self._vectors

    @property
    def identity(self) -> ModelIdentity:
        return self._identity

    @property
    def dimensions(self) -> int:
        return self._identity.dimensions

    @property
    def manifest(self) -> IndexManifest | None:
        """The manifest of an index opened from disk (``None`` for an in-memory index)."""
        return self._manifest

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def hashes(self) -> tuple[str, ...] | None:
        """Content hash of each row's book text (read on first use)."""
        if self._hashes is None and self._manifest is not None and self._path is not None:
            gen = self._path / self._manifest.generation
            hashes = _read_json_list(gen / "hashes.json")
            if len(hashes) != len(self._ids):
                raise CorruptIndexError(f"{gen / 'hashes.json'} does not match ids.json")
            self._hashes = tuple(hashes)
        return self._hashes

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

    def save(self, path: str | Path, *, dtype: str | None = None) -> VectorIndex:
        """Write this index to ``path`` atomically (a new generation) and return it opened.

        Rows without a known content hash get an empty one, so a later :func:`build_index`
        re-embeds them.
        """
        kind = dtype or str(self._vectors.dtype)
        if kind not in ("float32", "float16"):
            raise ValueError(f"dtype must be 'float32' or 'float16', not {kind!r}")
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        with _build_lock(directory):
            previous: IndexManifest | None
            try:
                previous = _read_manifest(directory)
            except (IndexNotFoundError, CorruptIndexError):
                previous = None
            now = _now()
            manifest = IndexManifest(
                identity=self._identity,
                count=len(self._ids),
                dtype=kind,
                text_version=BOOK_TEXT_VERSION,
                generation=_next_generation(directory, previous.generation if previous else None),
                created_at=previous.created_at if previous is not None else now,
                updated_at=now,
                document_format=self._manifest.document_format if self._manifest else None,
                query_format=self._manifest.query_format if self._manifest else None,
                instruction=self._manifest.instruction if self._manifest else None,
            )
            source = self._vectors

            def fill(out: NDArray[Any]) -> None:
                for a in range(0, len(self._ids), _COPY_ROWS):
                    out[a : a + _COPY_ROWS] = source[a : a + _COPY_ROWS]

            hashes = self.hashes or ("",) * len(self._ids)
            _publish(directory, manifest, self._ids, hashes, fill)
            _collect_garbage(directory, manifest.generation)
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


def _read_manifest(directory: Path) -> IndexManifest:
    path = directory / MANIFEST_NAME
    if not path.exists():
        if directory.exists() and any(_GEN_RE.match(p.name) for p in directory.iterdir()):
            raise CorruptIndexError(f"the index at {directory} has no {MANIFEST_NAME}")
        raise IndexNotFoundError(f"no index at {directory} (build one with bookrec index)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptIndexError(f"{path} cannot be read: {exc}") from exc
    return IndexManifest.from_json(data, path)


def _read_json_list(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptIndexError(f"{path} cannot be read: {exc}") from exc
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        raise CorruptIndexError(f"{path} is not a list of strings")
    return data


# --------------------------------------------------------------------------------------------
# Writing a generation


def _next_generation(directory: Path, current: str | None) -> str:
    numbers = [int(m.group(1)) for p in directory.iterdir() if (m := _GEN_RE.match(p.name))]
    if current and (m := _GEN_RE.match(current)):
        numbers.append(int(m.group(1)))
    return f"gen-{max(numbers, default=0) + 1:06d}-{secrets.token_hex(3)}"


def _publish(
    directory: Path,
    manifest: IndexManifest,
    ids: Sequence[str],
    hashes: Sequence[str],
    fill: Callable[[NDArray[Any]], None],
) -> None:
    """Write a complete generation and make it the live one (see the module docstring)."""
    tmp = directory / f"{_TMP_PREFIX}{manifest.generation}"
    tmp.mkdir()
    try:
        vectors = np.lib.format.open_memmap(
            tmp / "vectors.npy",
            mode="w+",
            dtype=np.dtype(manifest.dtype),
            shape=(manifest.count, manifest.dimensions),
        )
        fill(vectors)
        vectors.flush()
        del vectors
        _fsync(tmp / "vectors.npy")
        _write_json(tmp / "ids.json", list(ids))
        _write_json(tmp / "hashes.json", list(hashes))
        _fsync(tmp)
        tmp.rename(directory / manifest.generation)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync(directory)
    _replace_json(directory / MANIFEST_NAME, manifest.to_json())


def _collect_garbage(directory: Path, live: str) -> None:
    """Remove generations other than the live one and leftovers of interrupted saves."""
    for p in directory.iterdir():
        if p.name == live:
            continue
        if _GEN_RE.match(p.name) or p.name.startswith(_TMP_PREFIX):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()


# --------------------------------------------------------------------------------------------
# Staging: chunks of a build in progress


class _Staging:
    """Vectors embedded by builds that did not finish, keyed by content hash."""

    def __init__(self, directory: Path, key: dict[str, Any]) -> None:
        self.dir = directory
        self.key = key
        self.identity: ModelIdentity | None = None
        self.vectors: dict[str, NDArray[np.float32]] = {}
        self._seq = 0

    def load(self) -> None:
        meta_path = self.dir / "meta.json"
        if not meta_path.exists():
            self.clear()
            return
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            identity = ModelIdentity(str(meta["model"]), int(meta["dimensions"]))
            matches = meta.get("key") == self.key
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring unreadable staging area %s: %s", self.dir, exc)
            self.clear()
            return
        if not matches:
            logger.info("discarding staged vectors from a build with other settings")
            self.clear()
            return
        self.identity = identity
        for chunk in sorted(self.dir.glob("chunk-*.npz")):
            try:
                with np.load(chunk) as data:
                    hashes = [str(h) for h in data["hashes"]]
                    vecs = np.asarray(data["vectors"], dtype=np.float32)
            except (OSError, ValueError, KeyError) as exc:
                logger.warning("ignoring unreadable staged chunk %s: %s", chunk, exc)
                continue
            if vecs.shape != (len(hashes), identity.dimensions):
                logger.warning("ignoring staged chunk %s with unexpected shape", chunk)
                continue
            for h, v in zip(hashes, vecs, strict=True):
                self.vectors[h] = v
            match = re.match(r"chunk-(\d+)", chunk.name)
            if match:
                self._seq = max(self._seq, int(match.group(1)) + 1)

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.identity = None
        self.vectors = {}
        self._seq = 0

    def add(
        self, hashes: Sequence[str], vectors: NDArray[np.float32], identity: ModelIdentity
    ) -> None:
        if self.identity is None or not (self.dir / "meta.json").exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            meta = {"model": identity.model, "dimensions": identity.dimensions, "key": self.key}
            _replace_json(self.dir / "meta.json", meta)
            self.identity = identity
        name = f"chunk-{self._seq:06d}.npz"
        self._seq += 1
        tmp = self.dir / f"{_TMP_PREFIX}{name}"
        with tmp.open("wb") as fh:
            np.savez(fh, hashes=np.array(hashes, dtype=str), vectors=vectors)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.dir / name)
        _fsync(self.dir)
        for h, v in zip(hashes, vectors, strict=True):
            self.vectors[h] = v


# --------------------------------------------------------------------------------------------
# Building


@dataclass(frozen=True, slots=True)
class IndexReport:
    """What a build did. ``embedded + reused + resumed == total``."""

    path: Path
    total: int
    embedded: int
    reused: int
    removed: int
    resumed: int = 0
    unchanged: bool = False
    identity: ModelIdentity | None = None
    seconds: float = 0.0


def _check_vectors(vecs: Any, count: int, dims: int | None) -> NDArray[np.float32]:
    arr = np.asarray(vecs, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != count or (dims is not None and arr.shape[1] != dims):
        want = f"({count}, {dims if dims is not None else 'd'})"
        raise IndexMismatchError(
            f"the embedder returned vectors of shape {arr.shape}, expected {want}"
        )
    if not np.isfinite(arr).all():
        raise RecommenderError("the embedder returned NaN or infinite values")
    arr = np.array(arr, dtype=np.float32, copy=True)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    np.divide(arr, norms, out=arr, where=norms > 0)
    return arr


def build_index(
    path: str | Path,
    catalog: Catalog,
    embedder: Embedder,
    *,
    progress: ProgressCallback | None = None,
    rebuild: bool = False,
    dtype: str = "float32",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[VectorIndex, IndexReport]:
    """Create or update the index in ``path`` for ``catalog``; return it and a report.

    Only books whose :func:`content_hash` is not already in the index (or in the staging area
    of an interrupted build) are embedded; books no longer in the catalog are dropped; when
    nothing changed no request is made and nothing is written. ``rebuild=True`` ignores the
    existing vectors (needed to switch models). If the embedder serves another model or
    dimension than the existing index: :class:`IndexMismatchError`. If embedding fails:
    :class:`IndexBuildError` (finished chunks are kept; run again to resume).
    """
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', not {dtype!r}")
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    if len(catalog) == 0:
        raise RecommenderError("the catalog is empty: nothing to index")
    started = time.monotonic()
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    with _build_lock(directory):
        return _build_locked(
            directory, catalog, embedder, progress, rebuild, dtype, chunk_size, started
        )


def _build_locked(
    directory: Path,
    catalog: Catalog,
    embedder: Embedder,
    progress: ProgressCallback | None,
    rebuild: bool,
    dtype: str,
    chunk_size: int,
    started: float,
) -> tuple[VectorIndex, IndexReport]:
    old: VectorIndex | None = None
    if not rebuild:
        try:
            old = VectorIndex.open(directory)
        except IndexNotFoundError:
            old = None
    formats = embedder.prompt_formats
    doc_format = formats.document if formats is not None else None
    query_format = formats.query if formats is not None else None
    instruction = formats.instruction if formats is not None else None
    if old is not None:
        check_compatible(old.identity, embedder, where=directory)
    staging = _Staging(
        directory / STAGING_NAME, {"text_version": BOOK_TEXT_VERSION, "document": doc_format}
    )
    if rebuild:
        staging.clear()
    else:
        staging.load()
    if old is not None and staging.identity is not None and staging.identity != old.identity:
        staging.clear()

    books = catalog.books
    ids = [b.id for b in books]
    hashes = [content_hash(b) for b in books]

    old_rows: dict[str, int] = {}
    old_manifest = old.manifest if old is not None else None
    if (
        old is not None
        and old_manifest is not None
        and old_manifest.text_version == BOOK_TEXT_VERSION
        and old_manifest.document_format == doc_format
    ):
        old_hashes = old.hashes or ()
        for row, h in enumerate(old_hashes):
            old_rows.setdefault(h, row)
    elif old is not None:
        logger.info("book text or document prompt changed: every book is embedded again")

    identity: ModelIdentity | None = old.identity if old is not None else staging.identity
    known = embedder.identity
    if known is not None:
        if staging.identity is not None and staging.identity != known:
            staging.clear()
        identity = known

    text_of: dict[str, str] = {}
    for book, h in zip(books, hashes, strict=True):
        if h not in old_rows and h not in staging.vectors and h not in text_of:
            text_of[h] = book_text(book)
    todo = list(text_of)
    total = len(todo)
    fresh: set[str] = set()
    done = 0
    if progress is not None:
        progress(0, total)
    checked_identity = known is not None
    pos = 0
    while pos < len(todo):
        chunk = todo[pos : pos + chunk_size]
        texts = [text_of[h] for h in chunk]
        offset = done

        def inner(d: int, _t: int, offset: int = offset, total: int = total) -> None:
            if progress is not None:
                progress(min(offset + d, total), total)

        try:
            raw = embedder.embed_documents(texts, progress=inner)
        except EmbeddingError as exc:
            kept = len(staging.vectors)
            if kept:
                after = (
                    f"the {kept} vectors embedded so far are saved in {staging.dir}; run the "
                    f"build again to embed only the remaining {total - done}"
                )
            else:
                after = "nothing was embedded; run the build again once the service answers"
            raise IndexBuildError(
                f"embedding stopped after {done} of {total} books ({type(exc).__name__}: "
                f"{exc}); {after}",
                embedded=done,
                remaining=total - done,
            ) from exc
        dims = identity.dimensions if identity is not None else None
        vecs = _check_vectors(raw, len(chunk), dims)
        current = embedder.identity or ModelIdentity(
            identity.model if identity is not None else "unknown", int(vecs.shape[1])
        )
        if not checked_identity:
            checked_identity = True
            if old is not None:
                check_compatible(old.identity, embedder, where=directory)
            if staging.identity is not None and staging.identity != current:
                # Vectors staged by another model: throw them away and plan again.
                logger.warning(
                    "discarding %d staged vectors from %s", len(staging.vectors), staging.identity
                )
                staging.clear()
                for book, h in zip(books, hashes, strict=True):
                    if h not in old_rows and h not in text_of:
                        text_of[h] = book_text(book)
                todo = list(text_of)
                total = len(todo)
            identity = current
        staging.add(chunk, vecs, current)
        fresh.update(chunk)
        done += len(chunk)
        pos += len(chunk)
        if progress is not None:
            progress(done, total)

    if identity is None:  # pragma: no cover - catalog is non-empty, so something was embedded
        raise RecommenderError("the embedder reported no model identity")

    new_ids = set(ids)
    removed = sum(1 for i in old.ids if i not in new_ids) if old is not None else 0
    embedded = sum(1 for h in hashes if h in fresh)
    reused = sum(1 for h in hashes if h not in fresh and h in old_rows)
    resumed = len(hashes) - embedded - reused

    if (
        old is not None
        and old_manifest is not None
        and not fresh
        and resumed == 0
        and old.ids == tuple(ids)
        and old.hashes == tuple(hashes)
        and old_manifest.dtype == dtype
        and old_manifest.document_format == doc_format
    ):
        staging.clear()
        _collect_garbage(directory, old_manifest.generation)
        report = IndexReport(
            directory,
            len(ids),
            0,
            len(ids),
            0,
            unchanged=True,
            identity=old.identity,
            seconds=time.monotonic() - started,
        )
        return old, report

    generation = _next_generation(directory, old_manifest.generation if old_manifest else None)
    now = _now()
    manifest = IndexManifest(
        identity=identity,
        count=len(ids),
        dtype=dtype,
        text_version=BOOK_TEXT_VERSION,
        generation=generation,
        created_at=old_manifest.created_at if old_manifest is not None else now,
        updated_at=now,
        document_format=doc_format,
        query_format=query_format,
        instruction=instruction,
        last_build={
            "embedded": embedded,
            "reused": reused,
            "resumed": resumed,
            "removed": removed,
        },
    )

    def fill(out: NDArray[Any]) -> None:
        old_vectors = old.vectors if old is not None else None
        for a in range(0, len(hashes), _COPY_ROWS):
            b = min(len(hashes), a + _COPY_ROWS)
            block = np.empty((b - a, identity.dimensions), dtype=np.float32)
            from_old = [
                (i, old_rows[h])
                for i, h in enumerate(hashes[a:b])
                if h not in fresh and h not in staging.vectors
            ]
            if from_old and old_vectors is not None:
                dst = np.fromiter((i for i, _ in from_old), dtype=np.intp, count=len(from_old))
                src = np.fromiter((r for _, r in from_old), dtype=np.intp, count=len(from_old))
                order = np.argsort(src)
                block[dst[order]] = old_vectors[src[order]]
            for i, h in enumerate(hashes[a:b]):
                vec = staging.vectors.get(h)
                if vec is not None:
                    block[i] = vec
            out[a:b] = block

    _publish(directory, manifest, ids, hashes, fill)
    staging.clear()
    _collect_garbage(directory, generation)
    index = VectorIndex.open(directory)
    report = IndexReport(
        directory,
        len(ids),
        embedded,
        reused,
        removed,
        resumed=resumed,
        identity=identity,
        seconds=time.monotonic() - started,
    )
    return index, report
