"""Readiness (``/ready``, ``/health_generate``) or model discovery (``/v1/models``) over httpx."""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

from ._exceptions import EmbeddingRejected, EmbeddingResponseError, EmbeddingUnavailable
from ._urls import mask_userinfo
from ._wire import is_retryable_status

__all__ = ["check_ready", "list_models", "root_url", "wait_until_ready"]

logger = logging.getLogger(__name__)

# Health routes need no API key on SGLang; ``/v1/models`` does. Messages and logs show URLs
# with the password of their userinfo masked (``http://user:***@host``).


def root_url(base_url: str) -> str:
    """``http://host:port`` from ``http://host:port`` or ``http://host:port/v1`` (slash or not)."""
    url = base_url.strip().rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def check_ready(base_url: str, *, timeout: float = 2.0) -> bool:
    """Whether the server is ready to embed: ``GET /ready`` (SGLang >= 0.5.16), falling back to
    ``GET /health_generate`` on servers without it (404). Never raises for network errors."""
    root = root_url(base_url)
    try:
        with httpx.Client(timeout=timeout) as http:
            response = http.get(f"{root}/ready")
            if response.status_code == 404:
                response = http.get(f"{root}/health_generate")
            return response.status_code == 200
    except httpx.HTTPError as exc:
        logger.debug("%s not ready: %s", mask_userinfo(root), mask_userinfo(str(exc)))
        return False


def wait_until_ready(base_url: str, *, timeout: float = 600.0, interval: float = 1.0) -> None:
    """Poll :func:`check_ready` until it succeeds; ``EmbeddingUnavailable`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if check_ready(base_url, timeout=max(0.1, min(5.0, remaining))):
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            shown = mask_userinfo(base_url)
            raise EmbeddingUnavailable(
                f"{root_url(shown)} was not ready after {timeout:g} s", endpoint=shown
            )
        time.sleep(min(interval, remaining))


def list_models(
    base_url: str, *, api_key: str | None = None, timeout: float = 5.0
) -> list[dict[str, Any]]:
    """The ``data`` entries of ``GET /v1/models`` (SGLang: ``id`` = served name, ``root``,
    ``max_model_len``)."""
    target = f"{root_url(base_url)}/v1/models"
    url, endpoint = mask_userinfo(target), mask_userinfo(base_url)  # what messages show
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(target, headers=headers, timeout=timeout)
    except httpx.TimeoutException as exc:
        raise EmbeddingUnavailable(f"GET {url} timed out", endpoint=endpoint) from exc
    except httpx.HTTPError as exc:
        raise EmbeddingUnavailable(
            f"cannot reach {url} ({type(exc).__name__})", endpoint=endpoint
        ) from exc
    status = response.status_code
    if is_retryable_status(status):
        raise EmbeddingUnavailable(f"GET {url} answered HTTP {status}", status_code=status)
    if status >= 400:
        raise EmbeddingRejected(f"GET {url} answered HTTP {status}", status_code=status)
    try:
        data = response.json()["data"]
    except (ValueError, KeyError, TypeError) as exc:
        raise EmbeddingResponseError(f"GET {url}: unexpected body") from exc
    if not isinstance(data, list) or not all(isinstance(m, dict) for m in data):
        raise EmbeddingResponseError(f"GET {url}: 'data' is not a list of objects")
    return data
