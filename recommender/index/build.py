"""``build_index``: embed what the plan says is missing, chunk by chunk, then publish the result."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bookrec.client import Embedder, EmbeddingError, ModelIdentity, ProgressCallback, normalize

from ..book import Book
from ..catalog import Catalog
from ..errors import IndexBuildError, IndexMismatchError, IndexNotFoundError, RecommenderError
from ..lexical import LEXICAL_MODEL_PREFIX, cached_keyword_index
from ..text import BOOK_TEXT_VERSION, KEYWORDS_DIR, book_text, content_hash, keyword_texts
from .compat import check_compatible
from .files import build_lock
from .manifest import catalog_record
from .plan import BuildPlan, Rows, plan_build
from .publish import BLOCK_ROWS, Fill, collect_garbage, next_manifest, publish
from .scan import ScanPlan, check_request, resolve_scan
from .staging import Staging
from .vector_index import VectorIndex

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 256
STAGING_NAME = "staging"


@dataclass(frozen=True, slots=True)
class IndexReport:
    """What a build did. ``embedded + reused + resumed == total``.

    ``path`` is the index directory, or for a database store its masked DSN with the index name.
    """

    path: Path | str
    total: int
    embedded: int
    reused: int
    removed: int
    resumed: int = 0
    unchanged: bool = False
    identity: ModelIdentity | None = None
    seconds: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildSettings:
    """How a build runs: the options of :func:`build_index`, checked."""

    directory: Path
    rebuild: bool = False
    dtype: str = "float32"
    chunk_size: int = DEFAULT_CHUNK_SIZE
    progress: ProgressCallback | None = None
    scan: str | None = None
    #: The catalog file the books were read from, recorded in the manifest.
    catalog_path: Path | None = None

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be 'float32' or 'float16', not {self.dtype!r}")
        if self.scan is not None:
            object.__setattr__(self, "scan", check_request(self.scan))
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be positive")


def build_index(
    path: str | Path,
    catalog: Catalog,
    embedder: Embedder,
    *,
    progress: ProgressCallback | None = None,
    rebuild: bool = False,
    dtype: str = "float32",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    scan: str | None = None,
    catalog_path: str | Path | None = None,
) -> tuple[VectorIndex, IndexReport]:
    """Create or update the index in ``path`` for ``catalog``; return it and a report.

    Only books whose :func:`content_hash` is not already in the index (or in the staging area
    of an interrupted build) are embedded; books no longer in the catalog are dropped; when
    nothing changed no request is made and nothing is written. ``rebuild=True`` ignores the
    existing vectors (needed to switch models). If the embedder serves another model or
    dimension than the existing index: :class:`IndexMismatchError`. If embedding fails:
    :class:`IndexBuildError` (finished chunks are kept; run again to resume).

    ``scan`` chooses the compact copy that searches scan first (:mod:`.scan`): ``auto`` (int8
    for indexes of 100,000 books or more), ``none``, ``int8``, ``mrl256`` or ``int8-mrl256``;
    by default the one the index was built with, else ``auto``. Codes of unchanged books are
    reused.

    ``catalog_path``, the file ``catalog`` was read from, is recorded in the manifest with a
    fingerprint of the books (``bookrec`` queries use that catalog when none is given).

    Before anything is embedded, an embedder whose model is not known yet is asked about one
    text when the existing index is lexical (TF-IDF), whose model no service serves: a mismatch
    is :class:`IndexMismatchError` after that one small request, not after embedding everything.
    """
    settings = BuildSettings(
        directory=Path(path),
        rebuild=rebuild,
        dtype=dtype,
        chunk_size=chunk_size,
        progress=progress,
        scan=scan,
        catalog_path=Path(catalog_path) if catalog_path is not None else None,
    )
    if len(catalog) == 0:
        raise RecommenderError("the catalog is empty: nothing to index")
    started = time.monotonic()
    settings.directory.mkdir(parents=True, exist_ok=True)
    with build_lock(settings.directory):
        index, report = _Build(settings, catalog, embedder, started).run()
        # The keyword half of hybrid ranking over the books as indexed, for queries to map.
        books = [catalog.get(i) for i in index.ids]
        cached_keyword_index(keyword_texts(books), settings.directory / KEYWORDS_DIR)
        return index, report


class _Build:
    """One build, under the lock: the old index, the staging area, the identity learnt so far."""

    def __init__(
        self, settings: BuildSettings, catalog: Catalog, embedder: Embedder, started: float
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self.started = started
        self.rows = Rows(catalog.ids, tuple(content_hash(b) for b in catalog.books))
        self.book_of: dict[str, Book] = {}
        for book, h in zip(catalog.books, self.rows.hashes, strict=True):
            self.book_of.setdefault(h, book)
        directory = settings.directory
        self.old = None if settings.rebuild else _open_existing(directory)
        if self.old is not None:
            check_compatible(self.old.identity, embedder, where=directory)
        formats = embedder.prompt_formats
        document_format = formats.document if formats is not None else None
        self.staging = Staging(
            directory / STAGING_NAME,
            {"text_version": BOOK_TEXT_VERSION, "document": document_format},
        )
        if settings.rebuild:
            self.staging.clear()
        else:
            self.staging.load()
        self.old_manifest = self.old.manifest if self.old is not None else None
        self.old_reusable = (
            self.old_manifest is not None
            and self.old_manifest.text_version == BOOK_TEXT_VERSION
            and self.old_manifest.document_format == document_format
        )
        if self.old is not None and not self.old_reusable:
            logger.info("book text or document prompt changed: every book is embedded again")
        expected = embedder.identity or (self.old.identity if self.old is not None else None)
        if expected is not None:
            self.staging.keep_only(expected)
        self.identity = expected or self.staging.identity

    def plan(self) -> BuildPlan:
        old = self.old
        old_rows = Rows(old.ids, old.hashes or ()) if old is not None else None
        return plan_build(
            self.rows, old_rows, self.staging.vectors.keys(), old_reusable=self.old_reusable
        )

    def run(self) -> tuple[VectorIndex, IndexReport]:
        plan = self.embed_missing(self.plan())
        directory, old, previous = self.settings.directory, self.old, self.old_manifest
        catalog = catalog_record(self.settings.catalog_path, self.rows.ids, self.rows.hashes)
        if (
            old is not None
            and previous is not None
            and plan.unchanged
            and previous.dtype == self.settings.dtype
            and self.settings.scan in (None, previous.scan_request)
            and previous.catalog == catalog
        ):
            self.staging.clear()
            collect_garbage(directory, previous.generation)
            return old, self.report(plan, unchanged=True)
        if self.identity is None:  # pragma: no cover - the catalog is not empty
            raise RecommenderError("the embedder reported no model identity")
        manifest = next_manifest(
            directory,
            previous,
            identity=self.identity,
            count=len(self.rows.ids),
            dtype=self.settings.dtype,
            formats=self.embedder.prompt_formats,
            last_build=plan.counts(),
            scan_request=self.settings.scan,
            catalog=catalog,
        )
        fill = self.fill(plan, self.identity.dimensions)
        publish(
            directory,
            manifest,
            fill,
            ids=self.rows.ids,
            hashes=self.rows.hashes,
            scan=self.scan_plan(plan, manifest.scan_request),
        )
        self.staging.clear()
        return VectorIndex.open(directory), self.report(plan)

    def scan_plan(self, plan: BuildPlan, request: str) -> ScanPlan | None:
        """The scan copy of the new generation; books whose vector is reused keep their codes."""
        assert self.identity is not None
        try:
            spec = resolve_scan(request, len(self.rows.ids), self.identity.dimensions)
        except ValueError as exc:
            raise RecommenderError(f"--scan {request}: {exc}") from exc
        if spec is None:
            return None
        old = self.old.scan if self.old is not None else None
        if old is None:
            return ScanPlan(spec)
        rows = np.fromiter(
            (plan.reuse.get(i, -1) for i in self.rows.ids), dtype=np.intp, count=len(self.rows.ids)
        )
        return ScanPlan(spec, old, rows)

    def report(self, plan: BuildPlan, *, unchanged: bool = False) -> IndexReport:
        return IndexReport(
            self.settings.directory,
            len(self.rows.ids),
            plan.embedded,
            plan.reused,
            plan.removed,
            resumed=plan.resumed,
            unchanged=unchanged,
            identity=self.identity,
            seconds=time.monotonic() - self.started,
        )

    def embed_missing(self, plan: BuildPlan) -> BuildPlan:
        """Embed the plan's texts chunk by chunk, staging each; return the plan carried out.

        The first response may reveal that the staged vectors come from another model: they
        are discarded and the plan is made again, so they are embedded too.
        """
        checked = self.embedder.identity is not None
        todo, done, size = list(plan.to_embed), 0, self.settings.chunk_size
        self.progress(0, len(todo))
        while done < len(todo):
            # A lexical index's model is served by no embedding service: learn the embedder's
            # model from one text before embedding the rest.
            probe = not checked and self.old is not None and is_lexical(self.old.identity)
            chunk = todo[done : done + (1 if probe else size)]
            vectors = self.embed_chunk(chunk, done, len(todo), check_dims=checked)
            current = self.embedder.identity or ModelIdentity(
                self.identity.model if self.identity is not None else "unknown", vectors.shape[1]
            )
            if not checked:
                checked = True
                if not self.first_response_keeps_staging(current):
                    plan = self.plan()
                    first = set(chunk)
                    todo = [*chunk, *(h for h in plan.to_embed if h not in first)]
            self.identity = current
            self.staging.add(chunk, vectors, current)
            done += len(chunk)
            self.progress(done, len(todo))
        return plan

    def first_response_keeps_staging(self, current: ModelIdentity) -> bool:
        """Check the model the first response came from; keep the staging area if it made it."""
        if self.old is not None:
            check_compatible(self.old.identity, self.embedder, where=self.settings.directory)
        old = self.old.identity if self.old is not None else None
        if old is not None and current.dimensions != old.dimensions:
            raise IndexMismatchError(
                f"the index at {self.settings.directory} has {old.dimensions}-d "
                f"vectors ({old}), but the embedder returned {current.dimensions}-d "
                "ones. Rebuild the index (bookrec index --rebuild) or use the embedding "
                "service it was built with"
            )
        return not self.staging.keep_only(current)

    def embed_chunk(
        self, chunk: Sequence[str], done: int, total: int, *, check_dims: bool = True
    ) -> NDArray[np.float32]:
        """Unit vectors for the texts of ``chunk`` (content hashes); reports progress within it.
        ``check_dims=False`` (the first response, checked against the index afterwards by
        :meth:`first_response_keeps_staging`) leaves the width unchecked."""

        def within(d: int, _t: int) -> None:
            self.progress(min(done + d, total), total)

        texts = [book_text(self.book_of[h]) for h in chunk]
        try:
            raw = self.embedder.embed_documents(texts, progress=within)
        except EmbeddingError as exc:
            kept = len(self.staging.vectors)
            if kept:
                after = (
                    f"the {kept} vectors embedded so far are saved in {self.staging.dir}; run "
                    f"the build again to embed only the remaining {total - done}"
                )
            else:
                after = "nothing was embedded; run the build again once the service answers"
            raise IndexBuildError(
                f"embedding stopped after {done} of {total} books ({type(exc).__name__}: "
                f"{exc}); {after}",
                embedded=done,
                remaining=total - done,
            ) from exc
        dims = self.identity.dimensions if self.identity is not None and check_dims else None
        return _unit_rows(raw, len(chunk), dims)

    def progress(self, done: int, total: int) -> None:
        if self.settings.progress is not None:
            self.settings.progress(done, total)

    def fill(self, plan: BuildPlan, dims: int) -> Fill:
        """Writes each catalog book's vector: from the old index or from the staging area."""
        old_vectors = self.old.vectors if self.old is not None else None
        ids, hashes, staged = self.rows.ids, self.rows.hashes, self.staging.vectors

        def fill(out: NDArray[Any]) -> None:
            for a in range(0, len(ids), BLOCK_ROWS):
                b = min(len(ids), a + BLOCK_ROWS)
                block = np.empty((b - a, dims), dtype=np.float32)
                rows = [plan.reuse.get(book_id) for book_id in ids[a:b]]
                from_old = [(i, r) for i, r in enumerate(rows) if r is not None]
                if from_old and old_vectors is not None:
                    # Rows of the old (memory-mapped) matrix are read in ascending order.
                    dst = np.fromiter((i for i, _ in from_old), dtype=np.intp, count=len(from_old))
                    src = np.fromiter((r for _, r in from_old), dtype=np.intp, count=len(from_old))
                    order = np.argsort(src)
                    block[dst[order]] = old_vectors[src[order]]
                for i, r in enumerate(rows):
                    if r is None:
                        block[i] = staged[hashes[a + i]]
                out[a:b] = block

        return fill


def _open_existing(directory: Path) -> VectorIndex | None:
    """The index in ``directory``, fully verified (checksums, rows) since a build reuses its
    rows; ``None`` if there is none. A damaged one is :class:`CorruptIndexError` (the build
    is refused: ``--rebuild`` starts over without reading it)."""
    try:
        index = VectorIndex.open(directory)
    except IndexNotFoundError:
        return None
    index.verify()
    return index


def _unit_rows(raw: Any, count: int, dims: int | None) -> NDArray[np.float32]:
    """The embedder's output as unit float32 rows, after checking its shape and values."""
    arr = np.asarray(raw, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != count or (dims is not None and arr.shape[1] != dims):
        want = f"({count}, {dims if dims is not None else 'd'})"
        raise IndexMismatchError(
            f"the embedder returned vectors of shape {arr.shape}, expected {want}"
        )
    if not np.isfinite(arr).all():
        raise RecommenderError("the embedder returned NaN or infinite values")
    return normalize(arr)


def is_lexical(identity: ModelIdentity) -> bool:
    """Whether ``identity`` is a lexical (TF-IDF) model, which no embedding service serves."""
    return identity.model.startswith(LEXICAL_MODEL_PREFIX)
