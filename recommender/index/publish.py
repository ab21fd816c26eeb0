"""Writing a generation, then making it the live one (naming, publishing, garbage collection)."""

from __future__ import annotations

import contextlib
import secrets
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bookrec.client import ModelIdentity, PromptFormats

from ..text import BOOK_TEXT_VERSION
from . import files  # files.fsync is looked up at each call: the crash tests wrap it
from .manifest import GENERATION_RE, MANIFEST_NAME, IndexManifest, timestamp
from .scan import ScanPlan, write_scan

#: Rows copied at a time into a new generation (bounds the memory a publish needs).
BLOCK_ROWS = 16_384

#: ``fill(out)`` writes every row of the new generation's (count, dimensions) matrix.
Fill = Callable[[NDArray[Any]], None]


def next_generation(directory: Path, current: str | None) -> str:
    """A generation name numbered above every generation in ``directory`` and ``current``."""
    numbers = [int(m.group(1)) for p in directory.iterdir() if (m := GENERATION_RE.match(p.name))]
    if current and (m := GENERATION_RE.match(current)):
        numbers.append(int(m.group(1)))
    return f"gen-{max(numbers, default=0) + 1:06d}-{secrets.token_hex(3)}"


def next_manifest(
    directory: Path,
    previous: IndexManifest | None,
    *,
    identity: ModelIdentity,
    count: int,
    dtype: str,
    formats: PromptFormats | None,
    last_build: dict[str, int] | None = None,
    scan_request: str | None = None,
    catalog: Mapping[str, Any] | None = None,
) -> IndexManifest:
    """The manifest of the generation that follows ``previous`` (created now if it is None).

    ``catalog`` records the catalog a build read; by default the previous generation's record
    is kept (live updates change a few books of the same catalog)."""
    now = timestamp()
    return IndexManifest(
        identity=identity,
        count=count,
        dtype=dtype,
        text_version=BOOK_TEXT_VERSION,
        generation=next_generation(directory, previous.generation if previous else None),
        created_at=previous.created_at if previous is not None else now,
        updated_at=now,
        document_format=formats.document if formats is not None else None,
        query_format=formats.query if formats is not None else None,
        instruction=formats.instruction if formats is not None else None,
        last_build=dict(last_build or {}),
        scan_request=scan_request or (previous.scan_request if previous else "auto"),
        catalog=(
            dict(catalog)
            if catalog is not None
            else (dict(previous.catalog) if previous is not None and previous.catalog else None)
        ),
    )


def publish(
    directory: Path,
    manifest: IndexManifest,
    fill: Fill,
    *,
    ids: Sequence[str],
    hashes: Sequence[str],
    extra: Mapping[str, Any] | None = None,
    scan: ScanPlan | None = None,
) -> IndexManifest:
    """Write a complete generation, make it the live one, then remove every other one; return
    the manifest as published (with the scan copy's measured recall).

    ``extra`` maps more file names of the generation to their JSON content; ``scan`` says
    which compact scan copy to derive from the vectors (:mod:`.scan`).

    Layout of an index directory::

        index_dir/
          manifest.json          the live generation and its metadata (replaced atomically)
          gen-000007-1a2b3c/     one generation, never modified after it is published
            vectors.npy          (n, d) float32 (or float16), C order, memory-mappable
            scan.npy             the compact scan copy (int8 codes or a float32 prefix)
            scan-scale.npy       one float32 scale per row of int8 codes
            ids.json             book ids, row order
            hashes.json          content hash of each row's book text
            live.json            books upserted or deleted one by one since the last build
          staging/               chunks embedded by a build that has not finished (resume)
          .lock                  held while a build runs

    The generation is written into a temporary directory, fsynced, renamed into place, then
    ``manifest.json`` is replaced (write, fsync, ``os.replace``). The manifest records the size
    and BLAKE2b checksum of every file of the generation (:mod:`.integrity` checks them). A
    process killed at any point leaves either the old manifest pointing at the old, intact
    generation, or the new one; stray temporary directories are removed by the next publish.
    """
    tmp = directory / f"{files.TMP_PREFIX}{manifest.generation}"
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
        if scan is not None:
            info = write_scan(tmp, vectors, scan)
            manifest = replace(manifest, scan=info)
        del vectors
        files.fsync(tmp / "vectors.npy")
        files.write_json(tmp / "ids.json", list(ids))
        files.write_json(tmp / "hashes.json", list(hashes))
        for name, payload in (extra or {}).items():
            files.write_json(tmp / name, payload)
        # Sizes and checksums of every file, read back once written (block by block).
        records = {p.name: files.file_record(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = replace(manifest, checksums=records)
        files.fsync(tmp)
        tmp.rename(directory / manifest.generation)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files.fsync(directory)
    files.replace_json(directory / MANIFEST_NAME, manifest.to_json())
    collect_garbage(directory, manifest.generation)
    return manifest


def collect_garbage(directory: Path, live: str) -> None:
    """Remove generations other than the live one and leftovers of interrupted saves."""
    for p in directory.iterdir():
        if p.name == live:
            continue
        if GENERATION_RE.match(p.name) or p.name.startswith(files.TMP_PREFIX):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
