"""Errors as RFC 9457 problem details (``application/problem+json``), one handler per kind.

Every error the service answers has the same shape: ``type`` (a URL ending in a slug), ``title``,
``status``, ``detail``; a 422 adds ``errors``, one ``{"field", "message"}`` per bad field, the
field written ``query.k``, ``body.filters.year_min``, ``path.id``. An unexpected error is a 500
whose detail names no internals; the traceback goes to the log only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from bookrec.client import (
    ConfigurationError,
    EmbeddingError,
    EmbeddingUnavailable,
    InvalidInputError,
)
from bookrec.recommender import (
    CatalogError,
    EmptyProfileError,
    IndexMismatchError,
    UnknownBookError,
)
from bookrec.recommender.book import KNOWN_FIELDS

__all__ = [
    "PROBLEM_TYPE",
    "FieldError",
    "InvalidRequest",
    "Problem",
    "ProblemResponse",
    "install_handlers",
    "problem_response",
    "problem_responses",
]

logger = logging.getLogger(__name__)

PROBLEM_TYPE = "https://bookrec.dev/problems/"
MEDIA_TYPE = "application/problem+json"
#: Seconds a client is asked to wait before retrying a 503.
RETRY_AFTER = 5

_TITLES = {
    "unknown-book": "Unknown book",
    "invalid-request": "Invalid request",
    "empty-profile": "Nothing to recommend from",
    "unauthorized": "Unauthorized",
    "forbidden": "Forbidden",
    "payload-too-large": "Payload too large",
    "embedding-unavailable": "Embedding service unavailable",
    "embedding-error": "Embedding service error",
    "timeout": "Request timed out",
    "not-found": "Not found",
    "method-not-allowed": "Method not allowed",
    "unavailable": "Service unavailable",
    "internal": "Internal server error",
}


class FieldError(BaseModel):
    """One invalid field of a request."""

    field: str
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem detail."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


class ProblemResponse(JSONResponse):
    media_type = MEDIA_TYPE


class InvalidRequest(Exception):
    """A request the schema accepts but the library refuses (a 422 naming the field)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def problem_response(
    status: int,
    slug: str,
    detail: str,
    *,
    errors: Sequence[dict[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> ProblemResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + slug,
        "title": _TITLES.get(slug, slug.replace("-", " ").capitalize()),
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = list(errors)
    return ProblemResponse(body, status_code=status, headers=dict(headers or {}))


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entries for these error statuses (problem+json)."""
    content = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    described = {
        401: "Missing or wrong API key",
        403: "The API key may not change books",
        404: "Unknown book or route",
        413: "Body too large",
        422: "Invalid request (the fields are named in errors)",
        500: "Internal error",
        502: "The embedding service failed",
        503: "Embedding service unavailable, or timeout (see Retry-After)",
    }
    return {s: {"description": described.get(s, "Error"), "content": content} for s in statuses}


def _field(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    return ".".join(parts) if parts else "body"


def _validation_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        message = str(err.get("msg", "invalid"))
        if err.get("type") == "json_invalid":
            message = "the body is not valid JSON"
        out.append({"field": _field(loc), "message": message})
    return out


def _retry_after(exc: EmbeddingUnavailable) -> str:
    seconds = exc.retry_after if exc.retry_after is not None else RETRY_AFTER
    return str(max(1, math.ceil(seconds)))


def install_handlers(app: FastAPI) -> None:
    """Register the problem handlers on ``app``."""

    async def validation(_request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, RequestValidationError)
        errors = _validation_errors(exc)
        fields = ", ".join(dict.fromkeys(e["field"] for e in errors))
        return problem_response(422, "invalid-request", f"invalid fields: {fields}", errors=errors)

    async def invalid(_request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, InvalidRequest)
        return problem_response(
            422,
            "invalid-request",
            exc.message,
            errors=[{"field": exc.field, "message": exc.message}],
        )

    async def http_error(_request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, StarletteHTTPException)
        slug = {404: "not-found", 405: "method-not-allowed", 401: "unauthorized"}.get(
            exc.status_code, "forbidden" if exc.status_code == 403 else "error"
        )
        if exc.status_code >= 500:
            slug = "internal"
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return problem_response(exc.status_code, slug, detail, headers=exc.headers)

    async def unknown_book(_request: Request, exc: Exception) -> ProblemResponse:
        return problem_response(404, "unknown-book", str(exc))

    async def empty_profile(_request: Request, exc: Exception) -> ProblemResponse:
        return problem_response(422, "empty-profile", str(exc))

    async def catalog_error(_request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, CatalogError)
        field = _catalog_field(exc.reason)
        return problem_response(
            422,
            "invalid-request",
            exc.reason,
            errors=[{"field": field, "message": exc.reason}],
        )

    async def value_error(_request: Request, exc: Exception) -> ProblemResponse:
        return problem_response(422, "invalid-request", str(exc) or "invalid request")

    async def unavailable(_request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, EmbeddingUnavailable)
        logger.warning("embedding service unavailable: %s", exc)
        return problem_response(
            503,
            "embedding-unavailable",
            "the embedding service is unavailable; retry later",
            headers={"Retry-After": _retry_after(exc)},
        )

    async def embedding_error(_request: Request, exc: Exception) -> ProblemResponse:
        logger.error("embedding service error: %s", exc)
        return problem_response(502, "embedding-error", f"the embedding service failed: {exc}")

    async def mismatch(_request: Request, exc: Exception) -> ProblemResponse:
        logger.error("index and embedding service disagree: %s", exc)
        return problem_response(
            500, "internal", "the index and the embedding service disagree (see the log)"
        )

    async def internal(_request: Request, exc: Exception) -> ProblemResponse:
        logger.exception("internal error", exc_info=exc)
        return problem_response(500, "internal", "an internal error occurred (see the log)")

    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(InvalidRequest, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(UnknownBookError, unknown_book)
    app.add_exception_handler(EmptyProfileError, empty_profile)
    app.add_exception_handler(CatalogError, catalog_error)
    app.add_exception_handler(ValueError, value_error)
    app.add_exception_handler(EmbeddingUnavailable, unavailable)
    app.add_exception_handler(EmbeddingError, embedding_error)
    app.add_exception_handler(InvalidInputError, value_error)
    app.add_exception_handler(ConfigurationError, internal)
    app.add_exception_handler(IndexMismatchError, mismatch)
    app.add_exception_handler(Exception, internal)


def _catalog_field(reason: str) -> str:
    """The record field a catalog error names (``body`` when it names none)."""
    words = reason.replace(",", " ").split()
    for word in words[:3]:
        if word in KNOWN_FIELDS:
            return f"body.{word}"
    return "body"
