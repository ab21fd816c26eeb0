"""The wire format of ``/v1/embeddings``, from the SDK's options to the translation of errors."""

from __future__ import annotations

import binascii
import email.utils
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import openai
from numpy.typing import NDArray

from ._config import ClientConfig
from ._constants import PLACEHOLDER_API_KEY
from ._exceptions import (
    EmbeddingError,
    EmbeddingRejected,
    EmbeddingResponseError,
    EmbeddingTimeout,
    EmbeddingUnavailable,
)

__all__ = [
    "is_retryable_status",
    "parse_response",
    "parse_retry_after",
    "request_body",
    "sdk_options",
    "translate_error",
]

# Request timeout, conflict, rate limit: retried like every 5xx (openai's ``_should_retry``).
_RETRYABLE_4XX = frozenset({408, 409, 429})


def is_retryable_status(status: int) -> bool:
    """Whether an HTTP status means "try again later": 408, 409, 429 and every 5xx."""
    return status in _RETRYABLE_4XX or status >= 500


def sdk_options(config: ClientConfig) -> list[dict[str, Any]]:
    """Constructor arguments of the SDK client for each endpoint, shared by both drivers.

    ``max_retries=0``: tenacity (in the request flow) is the only retry layer. Only these four
    arguments are passed, which keeps the code neutral to the SDK's transport package. The
    rerank endpoints follow the embedding ones (``Request.endpoint`` counts both).
    """
    timeout = openai.Timeout(config.timeout, connect=config.connect_timeout)
    return [
        {
            "base_url": ep.base_url,
            "api_key": ep.api_key or PLACEHOLDER_API_KEY,
            "max_retries": 0,
            "timeout": timeout,
        }
        for ep in (*config.endpoints, *config.rerank_endpoints)
    ]


def request_body(
    config: ClientConfig,
    texts: list[str],
    *,
    send_dimensions: bool,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body of one ``/v1/embeddings`` request (``dimensions`` only if asked to).

    ``extra`` is a role's request fields (:meth:`PromptTemplate.request_fields`): role fields
    such as ``input_type``, and ``model`` when the role has its own.
    """
    body: dict[str, Any] = {
        "input": texts,
        "model": config.model,
        "encoding_format": config.encoding_format,
    }
    if extra:
        body.update(extra)
    if send_dimensions:
        body["dimensions"] = config.dimensions
    return body


def parse_response(content: str | bytes, expected: int) -> tuple[str, NDArray[np.float32]]:
    """Parse a ``/v1/embeddings`` body into ``(model, rows in input order)``.

    Accepts float lists and base64 (little-endian float32) and checks the count, that the
    indices are a permutation of ``0..n-1``, equal widths and finite values.
    """
    try:
        body = json.loads(content)
    except ValueError as exc:
        raise EmbeddingResponseError(f"the response is not valid JSON ({exc})") from exc
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise EmbeddingResponseError("the response has no 'data' list")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise EmbeddingResponseError("the response does not name its model")
    data: list[Any] = body["data"]
    if len(data) != expected:
        raise EmbeddingResponseError(f"sent {expected} inputs but got {len(data)} embeddings")
    try:
        indices = [item["index"] for item in data]
        embeddings = [item["embedding"] for item in data]
    except (TypeError, KeyError) as exc:
        raise EmbeddingResponseError(f"an embedding entry lacks {exc}") from exc
    if indices != list(range(expected)):
        if not all(type(i) is int for i in indices) or sorted(indices) != list(range(expected)):
            raise EmbeddingResponseError(
                f"the response's indices are not a permutation of 0..{expected - 1}"
            )
        order = sorted(range(expected), key=indices.__getitem__)
        embeddings = [embeddings[i] for i in order]
    matrix = _decode(embeddings)
    if not np.isfinite(matrix).all():
        bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1)).tolist()
        raise EmbeddingResponseError(f"non-finite values in embeddings at positions {bad}")
    return model, matrix


def _decode(embeddings: list[Any]) -> NDArray[np.float32]:
    if all(isinstance(e, str) for e in embeddings):
        try:
            raw = [binascii.a2b_base64(e, strict_mode=True) for e in embeddings]
        except (binascii.Error, ValueError) as exc:
            raise EmbeddingResponseError(f"an embedding is not valid base64 ({exc})") from exc
        size = len(raw[0])
        if size == 0 or size % 4 or any(len(r) != size for r in raw):
            raise EmbeddingResponseError("base64 embeddings of unequal or invalid length")
        flat = np.frombuffer(b"".join(raw), dtype="<f4")
        return flat.reshape(len(raw), size // 4).astype(np.float32, copy=False)
    if all(isinstance(e, list) for e in embeddings):
        width = len(embeddings[0])
        if width == 0 or any(len(e) != width for e in embeddings):
            raise EmbeddingResponseError("embeddings of unequal or zero length")
        try:
            return np.array(embeddings, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise EmbeddingResponseError(
                f"an embedding holds a non-numeric value such as null ({exc})"
            ) from exc
    raise EmbeddingResponseError("embeddings are neither float lists nor base64 strings")


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / divisor)
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        return max(0.0, when.timestamp() - time.time())
    return None


def _server_message(body: object) -> str:
    """The message of an error body: SGLang's flat ``message``, ``{"error": ...}`` or ``detail``."""
    if isinstance(body, dict):
        for key in ("message", "error", "detail"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message")
            if isinstance(value, str) and value:
                return value
    return "" if body is None else str(body)


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def translate_error(exc: BaseException, url: str, secrets: Sequence[str] = ()) -> EmbeddingError:
    """Map an SDK exception onto the client's hierarchy (the only place that knows SDK types)."""
    if isinstance(exc, openai.APITimeoutError):
        return EmbeddingTimeout(f"request to {url} timed out", endpoint=url)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        detail = _redact(f"{type(cause).__name__}: {cause}", secrets)
        return EmbeddingUnavailable(f"cannot reach {url} ({detail})", endpoint=url)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        message = _redact(_server_message(exc.body) or exc.message, secrets)
        request_id = exc.request_id
        if is_retryable_status(status):
            return EmbeddingUnavailable(
                f"{url} answered HTTP {status}: {message}",
                status_code=status,
                retry_after=parse_retry_after(exc.response.headers),
                endpoint=url,
                request_id=request_id,
            )
        return EmbeddingRejected(
            f"{url} rejected the request (HTTP {status}): {message}",
            status_code=status,
            endpoint=url,
            request_id=request_id,
            server_message=message,
        )
    detail = _redact(str(exc), secrets)
    return EmbeddingError(f"embedding request to {url} failed: {type(exc).__name__}: {detail}")
