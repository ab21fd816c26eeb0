"""SGLang's error shapes, the flat JSON bodies its OpenAI-compatible routes answer with."""

from __future__ import annotations

from typing import Any

__all__ = ["ERROR_TYPES", "RequestError", "error_body", "model_not_found"]

ERROR_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    408: "RequestTimeoutError",
    413: "BadRequestError",
    431: "BadRequestError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


class RequestError(Exception):
    """A request the server refuses; becomes a flat SGLang-style error response."""

    def __init__(self, message: str, status: int = 400, *, close: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        # Answer with ``Connection: close``: the body was not (fully) read.
        self.close = close


def error_body(message: str, status: int) -> dict[str, Any]:
    """``{"object":"error","message":...,"type":...,"param":null,"code":status}``."""
    return {
        "object": "error",
        "message": message,
        "type": ERROR_TYPES.get(status, "InternalServerError"),
        "param": None,
        "code": status,
    }


def model_not_found(name: str) -> dict[str, Any]:
    """SGLang's 404 for ``GET /v1/models/{name}`` of a model it does not serve."""
    return {
        "object": "error",
        "message": f"The model `{name}` does not exist.",
        "type": "NotFoundError",
        "param": "model",
        "code": 404,
    }
