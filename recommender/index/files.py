"""Durable-file primitives: fsync, atomic JSON replacement, the build lock."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import RecommenderError

#: Prefix of files and directories being written; a build removes the ones a crash left.
TMP_PREFIX = ".tmp-"


#: The checksum the manifest records of each file of a generation.
CHECKSUM = "blake2b"
#: Bytes read at a time when a file is checksummed (files may be several GB).
_READ_BLOCK = 1 << 20


def checksum(path: Path) -> str:
    """The hex BLAKE2b digest of a file, read block by block."""
    digest = hashlib.blake2b(digest_size=32)
    with path.open("rb") as fh:
        while block := fh.read(_READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    """What the manifest records of a published file: its size in bytes, its checksum."""
    return {"size": path.stat().st_size, CHECKSUM: checksum(path)}


def fsync(path: Path) -> None:
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


def write_json(path: Path, payload: Any) -> None:
    """Write JSON to a new file and flush it to stable storage."""
    with path.open("w", encoding="utf-8") as fh:
        json.dump(payload, fh, ensure_ascii=False, indent=1)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def replace_json(path: Path, payload: Any) -> None:
    """Write JSON atomically: temporary file, fsync, rename over, fsync the directory."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{secrets.token_hex(4)}")
    try:
        write_json(tmp, payload)
        tmp.replace(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync(path.parent)


@contextlib.contextmanager
def build_lock(directory: Path, *, wait: float = 0.0) -> Iterator[None]:
    """Exclusive lock on the index directory for the duration of a build or an update.

    Without ``wait`` a held lock fails at once; with it, the lock is waited for up to ``wait``
    seconds (updates of a few books wait for each other, a build does not wait for a build).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, builds must not overlap
        yield
        return
    deadline = time.monotonic() + wait
    with (directory / ".lock").open("a+b") as fh:
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RecommenderError(
                        f"another build is already running on the index at {directory}"
                    ) from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
