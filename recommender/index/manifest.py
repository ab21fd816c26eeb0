"""The manifest schema (``IndexManifest``), reading it from an index directory."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bookrec.client import ModelIdentity, PromptFormats

from ..errors import CorruptIndexError, IndexNotFoundError

INDEX_FORMAT = "bookrec-index"
INDEX_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
#: Name of a generation directory: ``gen-`` number ``-`` random hex.
GENERATION_RE = re.compile(r"^gen-(\d{6,})-[0-9a-f]+$")


def timestamp() -> str:
    """Now, as the manifest records it (UTC, ISO 8601, seconds)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


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
    #: The scan copy asked for (``auto``, ``none`` or a kind such as ``int8``), kept across
    #: updates, and the copy the generation holds (its kind, oversample and measured recall).
    scan_request: str = "auto"
    scan: dict[str, Any] | None = None
    #: Each published file of the generation (``vectors.npy``, ``ids.json``, ...) with its
    #: ``size`` in bytes and ``blake2b`` checksum; empty for indexes written before checksums
    #: were recorded (they still open, with fewer checks).
    checksums: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The catalog the index was built from: its absolute ``path`` (``None`` when the build was
    #: not given a file), ``books`` and ``fingerprint`` (:func:`catalog_fingerprint`); kept by
    #: live updates; ``None`` for indexes written before it was recorded.
    catalog: dict[str, Any] | None = None

    @property
    def catalog_path(self) -> Path | None:
        """The catalog file the index was built from, if the manifest records one."""
        path = (self.catalog or {}).get("path")
        return Path(path) if isinstance(path, str) and path else None

    @property
    def dimensions(self) -> int:
        return self.identity.dimensions

    @property
    def prompt_formats(self) -> PromptFormats | None:
        """The embedder's prompt formats the vectors were made with (``None``: no prompts)."""
        doc, query, instruction = self.document_format, self.query_format, self.instruction
        if doc is None or query is None or instruction is None:
            return None
        return PromptFormats(doc, query, instruction)

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
            "files": self.files(),
            "checksums": {name: dict(rec) for name, rec in self.checksums.items()},
            "scan_request": self.scan_request,
            "scan": dict(self.scan) if self.scan is not None else None,
            "catalog": dict(self.catalog) if self.catalog is not None else None,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "last_build": dict(self.last_build),
        }

    def files(self) -> dict[str, str]:
        """The generation's data files, relative to the index directory."""
        gen = self.generation
        out = {
            "vectors": f"{gen}/vectors.npy",
            "ids": f"{gen}/ids.json",
            "hashes": f"{gen}/hashes.json",
        }
        if self.scan is not None:
            out["scan"] = f"{gen}/scan.npy"
            if str(self.scan.get("kind", "")).startswith("int8"):
                out["scan_scale"] = f"{gen}/scan-scale.npy"
        return out

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
            if not GENERATION_RE.match(generation):
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
                scan_request=str(data.get("scan_request") or "auto"),
                scan=_scan_info(data.get("scan")),
                checksums=_checksums(data.get("checksums")),
                catalog=_catalog_info(data.get("catalog")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptIndexError(f"{where}: invalid manifest ({exc})") from exc


def _scan_info(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
        raise ValueError(f"bad scan copy {value!r}")
    return dict(value)


def catalog_fingerprint(ids: Sequence[str], hashes: Sequence[str]) -> str:
    """A BLAKE2b digest over the catalog's (id, content hash) pairs, in order: it changes when a
    book is added, removed, reordered or its text changes, and costs nothing at build time (the
    build has the hashes already)."""
    digest = hashlib.blake2b(digest_size=16)
    for book_id, h in zip(ids, hashes, strict=True):
        digest.update(json.dumps([book_id, h], ensure_ascii=True).encode("ascii"))
        digest.update(b"\n")
    return "blake2b:" + digest.hexdigest()


def catalog_record(
    path: str | Path | None, ids: Sequence[str], hashes: Sequence[str]
) -> dict[str, Any]:
    """The manifest's ``catalog`` entry for a build of ``ids`` read from ``path``."""
    return {
        "path": str(Path(path).resolve()) if path is not None else None,
        "books": len(ids),
        "fingerprint": catalog_fingerprint(ids, hashes),
    }


def _catalog_info(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("path"), (str, type(None)))
        or not isinstance(value.get("fingerprint"), str)
    ):
        raise ValueError(f"bad catalog record {value!r}")
    return dict(value)


def _checksums(value: Any) -> dict[str, dict[str, Any]]:
    """The manifest's ``checksums`` (absent in indexes written before they were recorded)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"bad checksums {value!r}")
    out: dict[str, dict[str, Any]] = {}
    for name, rec in value.items():
        if (
            not isinstance(name, str)
            or "/" in name
            or name.startswith(".")
            or not isinstance(rec, dict)
            or not isinstance(rec.get("size"), int)
            or not isinstance(rec.get("blake2b"), str)
        ):
            raise ValueError(f"bad checksum entry {name!r}: {rec!r}")
        out[name] = {"size": int(rec["size"]), "blake2b": str(rec["blake2b"])}
    return out


def read_manifest(directory: Path) -> IndexManifest:
    """The manifest of the index in ``directory``.

    :class:`IndexNotFoundError` if there is no index, :class:`CorruptIndexError` if the
    manifest is missing beside generations or cannot be read.
    """
    path = directory / MANIFEST_NAME
    if not path.exists():
        if directory.exists() and any(GENERATION_RE.match(p.name) for p in directory.iterdir()):
            raise CorruptIndexError(f"the index at {directory} has no {MANIFEST_NAME}")
        raise IndexNotFoundError(f"no index at {directory} (build one with bookrec index)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptIndexError(f"{path} cannot be read: {exc}") from exc
    return IndexManifest.from_json(data, path)
