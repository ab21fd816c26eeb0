"""Configuration as frozen dataclasses, read from environment variables of one prefix."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from ._constants import (
    DEFAULT_BASE_URL,
    DEFAULT_BATCH_SIZE,
    DEFAULT_BREAKER_COOLDOWN,
    DEFAULT_BREAKER_THRESHOLD,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DEADLINE,
    DEFAULT_INITIAL_WAIT,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_BATCH_TOKENS,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_INPUT_TOKENS,
    DEFAULT_MAX_RETRY_AFTER,
    DEFAULT_MAX_WAIT,
    DEFAULT_MODEL,
    DEFAULT_RERANK_BASE_URL,
    DEFAULT_RERANK_BATCH_SIZE,
    DEFAULT_RERANK_INSTRUCTION,
    DEFAULT_TIMEOUT,
)
from ._exceptions import ConfigurationError
from ._models import MIN_DIMENSIONS, known_model_width
from ._prompts import PROMPT_PRESETS, PromptTemplate
from ._urls import mask_userinfo

__all__ = ["ClientConfig", "Endpoint", "PromptTemplate", "RetryPolicy"]

EncodingFormat = Literal["float", "base64"]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One OpenAI-compatible server, e.g. ``Endpoint("http://127.0.0.1:30000/v1")``.

    A URL without a path gets ``/v1`` appended; a trailing ``/`` is dropped. The API key goes
    out as a bearer token and is never shown by ``repr``. Credentials in the URL
    (``http://user:password@host/v1``) go to the server as the SDK sends them, but messages,
    logs, ``repr`` and the cache show :attr:`display_url` (``http://user:***@host/v1``).
    """

    base_url: str
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        url = self.base_url.strip().rstrip("/")
        try:
            parts = urlsplit(url)
        except ValueError:  # e.g. an unclosed "[" of an IPv6 address
            parts = urlsplit("")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(
                "endpoint URL must look like http://host:port/v1, got "
                f"{mask_userinfo(self.base_url)!r}"
            )
        if not parts.path:
            url += "/v1"
        object.__setattr__(self, "base_url", url)
        if self.api_key is not None and not self.api_key.strip():
            object.__setattr__(self, "api_key", None)

    @property
    def display_url(self) -> str:
        """:attr:`base_url` with the password of its userinfo masked, for messages and logs."""
        return mask_userinfo(self.base_url)

    def __repr__(self) -> str:
        key = "***" if self.api_key else None
        return f"Endpoint(base_url={self.display_url!r}, api_key={key!r})"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries (tenacity, exponential backoff with jitter) and the per-endpoint circuit breaker.

    ``max_attempts`` counts the first try. ``max_retry_after`` caps how long a server's
    ``Retry-After`` may make the client wait. The breaker opens after ``breaker_threshold``
    consecutive failed attempts on an endpoint, skips it for ``breaker_cooldown`` seconds, then
    lets one probe through.
    """

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    initial_wait: float = DEFAULT_INITIAL_WAIT
    max_wait: float = DEFAULT_MAX_WAIT
    jitter: bool = True
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER
    breaker_threshold: int = DEFAULT_BREAKER_THRESHOLD
    breaker_cooldown: float = DEFAULT_BREAKER_COOLDOWN

    def __post_init__(self) -> None:
        _check(self.max_attempts >= 1, "retry.max_attempts must be >= 1")
        _check(self.initial_wait >= 0, "retry.initial_wait must be >= 0")
        _check(self.max_wait >= self.initial_wait, "retry.max_wait must be >= initial_wait")
        _check(self.max_retry_after >= 0, "retry.max_retry_after must be >= 0")
        _check(self.breaker_threshold >= 1, "retry.breaker_threshold must be >= 1")
        _check(self.breaker_cooldown >= 0, "retry.breaker_cooldown must be >= 0")


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Everything the client needs; build it directly, with ``from_env()`` or ``with_options()``.

    - ``endpoints``: tried in order; later ones are fallbacks and must serve the same model
      and dimension.
    - ``model``: sent as ``model`` (SGLang does not check it; a ``:`` in it selects a LoRA
      adapter there). The identity of the vectors is what the server reports.
    - ``dimensions``: Matryoshka width, 32 up to the model's width; ``None`` for the full width.
    - ``timeout`` / ``connect_timeout``: per request, seconds. ``deadline``: per public call
      (all batches, retries and fallbacks included), ``None`` for none.
    - ``batch_size`` / ``max_batch_tokens``: a batch ends at whichever is reached first
      (tokens are estimated, a CJK character counting as one).
    - ``max_input_tokens``: per text, end-of-text token included; longer texts are truncated
      on the client with a warning.
    - ``max_concurrency``: batches in flight at once per client.
    - ``prompts``: how texts become model inputs (:class:`PromptTemplate`, role hints
      included). ``None`` (the default): the preset of the model family the server reports
      (see :meth:`EmbeddingClient.resolve_prompts`); a template given here is used as it is,
      with no probing.
    - ``cache_path``: an SQLite file for a persistent cache, or ``None``.
    - ``encoding_format``: ``"base64"`` (about 3x smaller) or ``"float"``; both are parsed.
    - ``rerank_endpoints``: the reranker's servers (SGLang's ``/v1/rerank``, its own port),
      tried in order like ``endpoints``, with their own circuit breakers; the same timeouts,
      deadline, retries and concurrency apply. ``rerank_instruction`` is the default task
      sent as ``instruct``; ``rerank_batch_size`` the most documents per request.
    """

    endpoints: tuple[Endpoint, ...] = (Endpoint(DEFAULT_BASE_URL),)
    model: str = DEFAULT_MODEL
    dimensions: int | None = None
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    deadline: float | None = DEFAULT_DEADLINE
    batch_size: int = DEFAULT_BATCH_SIZE
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS
    max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    prompts: PromptTemplate | None = None
    cache_path: str | None = None
    encoding_format: EncodingFormat = "base64"
    rerank_endpoints: tuple[Endpoint, ...] = (Endpoint(DEFAULT_RERANK_BASE_URL),)
    rerank_instruction: str = DEFAULT_RERANK_INSTRUCTION
    rerank_batch_size: int = DEFAULT_RERANK_BATCH_SIZE

    def __post_init__(self) -> None:
        for name in ("endpoints", "rerank_endpoints"):
            object.__setattr__(self, name, _endpoint_tuple(getattr(self, name), name))
        if self.cache_path is not None:
            object.__setattr__(self, "cache_path", os.fspath(self.cache_path))
        _check(isinstance(self.retry, RetryPolicy), "retry must be a RetryPolicy")
        _check(
            self.prompts is None or isinstance(self.prompts, PromptTemplate),
            "prompts must be a PromptTemplate or None (chosen by the served model)",
        )
        _check(isinstance(self.model, str) and bool(self.model.strip()), "model must not be empty")
        _check(_positive(self.timeout), "timeout must be a positive number of seconds")
        _check(_positive(self.connect_timeout), "connect_timeout must be positive")
        _check(self.deadline is None or _positive(self.deadline), "deadline must be positive")
        _check(self.batch_size >= 1, "batch_size must be >= 1")
        _check(self.max_batch_tokens >= 1, "max_batch_tokens must be >= 1")
        _check(self.max_input_tokens >= 16, "max_input_tokens must be >= 16")
        _check(self.max_concurrency >= 1, "max_concurrency must be >= 1")
        _check(self.rerank_batch_size >= 1, "rerank_batch_size must be >= 1")
        _check(
            isinstance(self.rerank_instruction, str) and bool(self.rerank_instruction.strip()),
            "rerank_instruction must not be empty",
        )
        _check(
            self.encoding_format in ("float", "base64"),
            f"encoding_format must be 'float' or 'base64', got {self.encoding_format!r}",
        )
        if self.dimensions is not None:
            _check(
                isinstance(self.dimensions, int) and self.dimensions >= MIN_DIMENSIONS,
                f"dimensions must be an integer >= {MIN_DIMENSIONS}, got {self.dimensions!r}",
            )
            width = known_model_width(self.model)
            _check(
                width is None or self.dimensions <= width,
                f"dimensions={self.dimensions} exceeds the width of {self.model} ({width})",
            )

    def with_options(self, **changes: Any) -> ClientConfig:
        """A copy with some fields changed (validated again)."""
        try:
            return dataclasses.replace(self, **changes)
        except TypeError as exc:
            raise ConfigurationError(str(exc)) from exc

    @classmethod
    def from_env(
        cls, prefix: str = "BOOKREC_", environ: Mapping[str, str] | None = None
    ) -> ClientConfig:
        """Read the configuration from environment variables, all starting with ``prefix``.

        ``BASE_URL`` (comma-separated, in fallback order), ``API_KEY``, ``MODEL``,
        ``DIMENSIONS``, ``TIMEOUT``, ``CONNECT_TIMEOUT``, ``DEADLINE`` (``none`` for none),
        ``BATCH_SIZE``, ``MAX_BATCH_TOKENS``, ``MAX_INPUT_TOKENS``, ``MAX_CONCURRENCY``,
        ``CACHE_PATH``, ``ENCODING_FORMAT``, ``MAX_ATTEMPTS``; for the reranker
        ``RERANK_BASE_URL`` (comma-separated), ``RERANK_API_KEY`` (default: ``API_KEY``),
        ``RERANK_INSTRUCTION``, ``RERANK_BATCH_SIZE``. Unset variables keep their defaults.

        Prompts: ``PROMPT_PRESET`` is ``auto`` (the default: by the model the server reports)
        or a name of :data:`PROMPT_PRESETS`. ``QUERY_PROMPT``, ``DOCUMENT_PROMPT`` (templates
        with ``{text}``, ``\\n`` standing for a newline), ``INSTRUCTION``, ``SYMMETRIC``,
        ``QUERY_FIELDS``, ``DOCUMENT_FIELDS`` (JSON objects of scalars, e.g.
        ``{"input_type": "query"}``), ``QUERY_MODEL`` and ``DOCUMENT_MODEL`` configure a
        template: they change the named preset, or Qwen3's when no preset is named (as
        ``INSTRUCTION`` and ``SYMMETRIC`` always did); with ``PROMPT_PRESET=auto`` they are an
        error.
        """
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(prefix + name)
            return value.strip() if value is not None and value.strip() else None

        def parse(name: str, convert: Callable[[str], _T]) -> _T | None:
            raw = get(name)
            if raw is None:
                return None
            try:
                return convert(raw)
            except ValueError:
                raise ConfigurationError(f"{prefix}{name} has an invalid value {raw!r}") from None

        changes: dict[str, Any] = {}
        api_key = env.get(prefix + "API_KEY")
        urls = [u.strip() for u in (get("BASE_URL") or DEFAULT_BASE_URL).split(",") if u.strip()]
        changes["endpoints"] = tuple(Endpoint(u, api_key) for u in urls)
        rerank_key = env.get(prefix + "RERANK_API_KEY", api_key)
        rerank_urls = (get("RERANK_BASE_URL") or DEFAULT_RERANK_BASE_URL).split(",")
        changes["rerank_endpoints"] = tuple(
            Endpoint(u.strip(), rerank_key) for u in rerank_urls if u.strip()
        )
        simple: dict[str, tuple[str, Callable[[str], Any]]] = {
            "model": ("MODEL", str),
            "dimensions": ("DIMENSIONS", int),
            "timeout": ("TIMEOUT", float),
            "connect_timeout": ("CONNECT_TIMEOUT", float),
            "batch_size": ("BATCH_SIZE", int),
            "max_batch_tokens": ("MAX_BATCH_TOKENS", int),
            "max_input_tokens": ("MAX_INPUT_TOKENS", int),
            "max_concurrency": ("MAX_CONCURRENCY", int),
            "cache_path": ("CACHE_PATH", str),
            "encoding_format": ("ENCODING_FORMAT", str),
            "rerank_instruction": ("RERANK_INSTRUCTION", str),
            "rerank_batch_size": ("RERANK_BATCH_SIZE", int),
        }
        for attr, (name, convert) in simple.items():
            value = parse(name, convert)
            if value is not None:
                changes[attr] = value
        deadline = get("DEADLINE")
        if deadline is not None:
            changes["deadline"] = (
                None if deadline.lower() in ("none", "0", "off") else parse("DEADLINE", float)
            )
        attempts = parse("MAX_ATTEMPTS", int)
        if attempts is not None:
            changes["retry"] = RetryPolicy(max_attempts=attempts)
        prompts = _prompts_from_env(prefix, get, parse)
        if prompts is not None:
            changes["prompts"] = prompts
        return cls(**changes)


#: The variables that configure a template, with the template field each sets.
_PROMPT_VARIABLES = {
    "QUERY_PROMPT": "query",
    "DOCUMENT_PROMPT": "document",
    "INSTRUCTION": "instruction",
    "SYMMETRIC": "symmetric",
    "QUERY_FIELDS": "query_fields",
    "DOCUMENT_FIELDS": "document_fields",
    "QUERY_MODEL": "query_model",
    "DOCUMENT_MODEL": "document_model",
}


def _prompts_from_env(
    prefix: str,
    get: Callable[[str], str | None],
    parse: Callable[[str, Callable[[str], Any]], Any],
) -> PromptTemplate | None:
    """The template the variables configure, or ``None`` to choose one by the served model."""
    converters: dict[str, Callable[[str], Any]] = {
        "QUERY_PROMPT": _unescape_newlines,
        "DOCUMENT_PROMPT": _unescape_newlines,
        "INSTRUCTION": str,
        "SYMMETRIC": _parse_bool,
        "QUERY_FIELDS": _parse_json_object,
        "DOCUMENT_FIELDS": _parse_json_object,
        "QUERY_MODEL": str,
        "DOCUMENT_MODEL": str,
    }
    overrides = {
        attr: parse(name, converters[name])
        for name, attr in _PROMPT_VARIABLES.items()
        if get(name) is not None
    }
    preset = get("PROMPT_PRESET")
    if preset is not None and preset.lower() == "auto":
        if overrides:
            given = ", ".join(prefix + n for n in _PROMPT_VARIABLES if get(n) is not None)
            raise ConfigurationError(
                f"{prefix}PROMPT_PRESET=auto chooses the prompts by the served model, but "
                f"{given} configure a template; name the preset to change "
                f"({', '.join(PROMPT_PRESETS)}) or unset {prefix}PROMPT_PRESET"
            )
        return None
    if preset is None:
        if not overrides:
            return None
        base = PromptTemplate()  # Qwen3's format, as these variables always changed
    else:
        found = PROMPT_PRESETS.get(preset.lower())
        if found is None:
            raise ConfigurationError(
                f"{prefix}PROMPT_PRESET must be auto or one of {', '.join(PROMPT_PRESETS)}, "
                f"got {preset!r}"
            )
        base = found
    try:
        return dataclasses.replace(base, **overrides)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{exc} (from the {prefix}* prompt variables)") from None


def _unescape_newlines(raw: str) -> str:
    return raw.replace("\\n", "\n")


def _parse_json_object(raw: str) -> dict[str, Any]:
    value = json.loads(raw)  # a JSONDecodeError is a ValueError: the variable is named
    if not isinstance(value, dict):
        raise ValueError(raw)
    return value


def _endpoint_tuple(value: Any, name: str) -> tuple[Endpoint, ...]:
    if isinstance(value, str | Endpoint):
        value = (value,)
    endpoints = tuple(Endpoint(e) if isinstance(e, str) else e for e in value)
    _check(len(endpoints) > 0, f"at least one endpoint is required in {name}")
    _check(all(isinstance(e, Endpoint) for e in endpoints), f"{name} must be Endpoint objects")
    return endpoints


def _parse_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _positive(value: float) -> bool:
    return isinstance(value, int | float) and value > 0 and math.isfinite(value)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigurationError(message)
