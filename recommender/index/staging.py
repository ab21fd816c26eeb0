"""Chunks of vectors an unfinished build embedded, kept on disk so the next build resumes."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bookrec.client import ModelIdentity

from . import files

logger = logging.getLogger(__name__)

_CHUNK_RE = re.compile(r"chunk-(\d+)")


class Staging:
    """Vectors embedded by builds that did not finish, keyed by content hash.

    A build persists every finished chunk here before asking for the next, so when the
    embedding service goes away mid-build the vectors already paid for are kept and the next
    run embeds only what is missing. ``key`` holds the build settings that change a vector
    (book text version, document prompt): staged vectors made with another key are discarded.
    """

    def __init__(self, directory: Path, key: dict[str, Any]) -> None:
        self.dir = directory
        self.key = key
        self.identity: ModelIdentity | None = None
        self.vectors: dict[str, NDArray[np.float32]] = {}
        self._seq = 0

    def load(self) -> None:
        """Read what earlier builds staged with the same key (anything else is removed)."""
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
            match = _CHUNK_RE.match(chunk.name)
            if match:
                self._seq = max(self._seq, int(match.group(1)) + 1)

    def keep_only(self, identity: ModelIdentity) -> bool:
        """Discard the staged vectors unless ``identity`` made them; say whether it did discard."""
        if self.identity is None or self.identity == identity:
            return False
        logger.warning("discarding %d staged vectors from %s", len(self.vectors), self.identity)
        self.clear()
        return True

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.identity = None
        self.vectors = {}
        self._seq = 0

    def add(
        self, hashes: Sequence[str], vectors: NDArray[np.float32], identity: ModelIdentity
    ) -> None:
        """Persist one chunk (durably, before the build asks for the next)."""
        if self.identity is None or not (self.dir / "meta.json").exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            meta = {"model": identity.model, "dimensions": identity.dimensions, "key": self.key}
            files.replace_json(self.dir / "meta.json", meta)
            self.identity = identity
        name = f"chunk-{self._seq:06d}.npz"
        self._seq += 1
        tmp = self.dir / f"{files.TMP_PREFIX}{name}"
        with tmp.open("wb") as fh:
            np.savez(fh, hashes=np.array(hashes, dtype=str), vectors=vectors)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.dir / name)
        files.fsync(self.dir)
        for h, v in zip(hashes, vectors, strict=True):
            self.vectors[h] = v
