"""The settings of one service process, carried to uvicorn's workers as JSON in the environment.

The API keys never travel in that JSON: each process reads them itself from
``BOOKREC_SERVE_API_KEYS`` and from the keys file named in the settings (:func:`load_keys`), so
that they appear neither on a command line nor in a settings dump.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "KEYS_ENV",
    "SETTINGS_ENV",
    "ApiKey",
    "ApiKeys",
    "ServiceSettings",
    "load_keys",
    "parse_keys",
]

#: Comma-separated API keys; ``KEY:write`` may also PUT and DELETE.
KEYS_ENV = "BOOKREC_SERVE_API_KEYS"
#: The JSON of :class:`ServiceSettings` handed from ``bookrec serve`` to its worker processes.
SETTINGS_ENV = "BOOKREC_SERVE_SETTINGS"

_WRITE_SUFFIX = ":write"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key the service accepts; ``write`` keys may also change the books."""

    secret: str = field(repr=False)
    write: bool = False


@dataclass(frozen=True, slots=True)
class ApiKeys:
    """The accepted keys (none: the service is open)."""

    keys: tuple[ApiKey, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:  # never show a secret
        return f"ApiKeys(<{len(self.keys)} keys>)"

    def match(self, token: str) -> ApiKey | None:
        """The key equal to ``token`` (constant-time comparisons, every key compared)."""
        found: ApiKey | None = None
        given = token.encode()
        for key in self.keys:
            if hmac.compare_digest(given, key.secret.encode()):
                found = key
        return found


def parse_keys(entries: Sequence[str]) -> ApiKeys:
    """Keys from entries such as ``"abc"`` (read only) or ``"abc:write"``; blanks are skipped."""
    keys: list[ApiKey] = []
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        write = entry.endswith(_WRITE_SUFFIX)
        secret = entry[: -len(_WRITE_SUFFIX)] if write else entry
        if not secret:
            raise ValueError("an API key entry is empty before ':write'")
        keys.append(ApiKey(secret, write))
    return ApiKeys(tuple(keys))


def load_keys(keys_file: str | None, environ: Mapping[str, str] | None = None) -> ApiKeys:
    """The keys of ``$BOOKREC_SERVE_API_KEYS`` (comma-separated) plus those of ``keys_file``
    (one per line, ``#`` starts a comment)."""
    env = os.environ if environ is None else environ
    entries = env.get(KEYS_ENV, "").split(",")
    if keys_file:
        text = Path(keys_file).read_text(encoding="utf-8")
        entries += [line.split("#", 1)[0] for line in text.splitlines()]
    return parse_keys(entries)


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """What one service process serves, with its limits.

    Books come from ``index`` (a directory, with ``catalog`` or the bundled sample catalog) or
    from the PostgreSQL database ``store`` (read from ``replicas`` when usable). The embedding
    endpoint is ``ClientConfig.from_env()`` with the given options applied; ``embedding=False``
    runs without one (free text is matched by keywords). The reranker (``rerank=true`` on
    search and recommendations) is ``rerank_base_urls`` or ``ClientConfig.from_env()``'s, with
    ``rerank_candidates`` and ``rerank_instruction`` (default: the book tasks' own).
    ``fusion`` is the ranking's :class:`~bookrec.recommender.Fusion` mode (hybrid, dense or
    lexical).
    ``api_keys`` is filled in by each process (:func:`load_keys`) and never serialised.
    """

    index: str | None = None
    catalog: str | None = None
    store: str | None = None
    replicas: tuple[str, ...] = ()
    base_urls: tuple[str, ...] = ()
    embedding_api_key: str | None = field(default=None, repr=False)
    model: str | None = None
    dimensions: int | None = None
    cache: str | None = None
    embedding_timeout: float | None = None
    embedding: bool = True
    api_keys_file: str | None = None
    cors_origins: tuple[str, ...] = ()
    request_timeout: float = 30.0
    max_body_bytes: int = 1 << 20
    max_k: int = 100
    batching: bool = True
    batch_size: int = 64
    batch_wait_ms: float = 5.0
    rerank_base_urls: tuple[str, ...] = ()
    rerank_candidates: int = 100
    rerank_instruction: str | None = None
    fusion: str = "hybrid"
    api_keys: ApiKeys = field(default_factory=ApiKeys, compare=False)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data.pop("api_keys")
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> ServiceSettings:
        data: dict[str, Any] = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)} - {"api_keys"}
        for name in ("replicas", "base_urls", "cors_origins", "rerank_base_urls"):
            if name in data:
                data[name] = tuple(data[name])
        return cls(**{k: v for k, v in data.items() if k in names})

    def with_keys(self) -> ServiceSettings:
        """These settings with the API keys of this process's environment and keys file."""
        return dataclasses.replace(self, api_keys=load_keys(self.api_keys_file))
