"""The errors the embedding client raises, as a tree.

```
EmbeddingError                         catch this to catch everything
├── ConfigurationError (+ValueError)   bad URL, batch size, dimensions, environment variable
├── InvalidInputError (+ValueError)    empty or whitespace-only texts (``.indices``), non-strings
├── EmbeddingUnavailable               retryable: connection errors, timeouts, 408/409/429/5xx;
│   └── EmbeddingTimeout               every endpoint down ends in this
├── EmbeddingRejected                  not retried: 400/401/403/404/413/422 (``.status_code``,
│                                      ``.index`` of the offending input when isolated)
├── EmbeddingResponseError             malformed reply: count, index, dimension, non-finite values
├── IncompatibleModelError             an endpoint or cache serves another model or dimension
└── CacheError                         corrupt, foreign or unusable cache file
```
"""

from __future__ import annotations

from ._urls import mask_urls_in, mask_userinfo

__all__ = [
    "CacheError",
    "ConfigurationError",
    "EmbeddingError",
    "EmbeddingRejected",
    "EmbeddingResponseError",
    "EmbeddingTimeout",
    "EmbeddingUnavailable",
    "IncompatibleModelError",
    "InvalidInputError",
]


class EmbeddingError(Exception):
    """Base class of every error raised by the embedding client.

    The openai SDK's and tenacity's exceptions never escape; they are kept as ``__cause__``.
    Messages never contain the API key, nor the password of a URL (``http://user:***@host``:
    every URL in a message, and ``endpoint`` where there is one, is masked here).
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(mask_urls_in(a) if isinstance(a, str) else a for a in args))


class ConfigurationError(EmbeddingError, ValueError):
    """The configuration is invalid (raised before any request)."""


class InvalidInputError(EmbeddingError, ValueError):
    """Some input texts cannot be embedded; ``indices`` names them (raised before any request)."""

    def __init__(self, message: str, indices: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.indices = indices


class EmbeddingUnavailable(EmbeddingError):
    """The service could not answer (retryable); after retries and fallback, none could."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
        endpoint: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after
        self.endpoint = None if endpoint is None else mask_userinfo(endpoint)
        self.request_id = request_id


class EmbeddingTimeout(EmbeddingUnavailable):
    """A request timed out, or the call's overall deadline passed."""


class EmbeddingRejected(EmbeddingError):
    """The server refused the request (4xx other than 408/409/429); not retried.

    ``index`` is the position (in the caller's list) of the input that caused it, when the
    client isolated it by splitting the batch.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        index: int | None = None,
        endpoint: str | None = None,
        request_id: str | None = None,
        server_message: str = "",
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.index = index
        self.endpoint = None if endpoint is None else mask_userinfo(endpoint)
        self.request_id = request_id
        self.server_message = server_message


class EmbeddingResponseError(EmbeddingError):
    """The server answered, but the answer is unusable (count, index, dimension, NaN, JSON)."""


class IncompatibleModelError(EmbeddingError):
    """An endpoint or the cache serves another model or dimension than the one in use."""


class CacheError(EmbeddingError):
    """The cache file is corrupt, foreign, or cannot be used."""
