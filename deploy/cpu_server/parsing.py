"""SGLang's checks of a request body, each failing with the message SGLang answers it with."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bookrec.client import (
    MIN_DIMENSIONS,
    SGLANG_INPUT_ERRORS,
    SGLANG_REQUEST_ERRORS,
    SGLANG_RERANK_ERRORS,
)

from .errors import RequestError

__all__ = [
    "EmbeddingsRequest",
    "RerankRequest",
    "TokenizeRequest",
    "check_vocabulary",
    "parse_dimensions",
    "parse_embeddings_request",
    "parse_input",
    "parse_json_body",
    "parse_rerank_request",
    "parse_tokenize_request",
]

ENCODINGS = ("float", "base64")


@dataclass(frozen=True)
class EmbeddingsRequest:
    """A ``POST /v1/embeddings`` body that passed the checks that need no model."""

    texts: list[str] | None
    token_ids: list[list[int]] | None
    encoding: str
    dimensions: Any  # checked against the model by parse_dimensions


@dataclass(frozen=True)
class RerankRequest:
    """A ``POST /v1/rerank`` body (SGLang's ``V1RerankReqInput``) that passed its checks."""

    query: str
    documents: list[str]
    instruct: str | None
    top_n: int | None
    return_documents: bool


@dataclass(frozen=True)
class TokenizeRequest:
    """A ``POST /v1/tokenize`` body: one prompt (``single``) or several."""

    prompts: list[str]
    single: bool
    add_special_tokens: bool


def parse_json_body(content_type: str, raw: bytes) -> dict[str, Any]:
    """The JSON object of a POST body sent as ``application/json``."""
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise RequestError(SGLANG_REQUEST_ERRORS["media_type"])
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise RequestError(f"{SGLANG_REQUEST_ERRORS['invalid_json']}: {exc}") from None
    except RecursionError:  # json's C scanner stops at the interpreter's recursion limit
        raise RequestError(f"{SGLANG_REQUEST_ERRORS['invalid_json']}: nested too deeply") from None
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object")
    return body


def parse_embeddings_request(body: dict[str, Any], *, served_model_name: str) -> EmbeddingsRequest:
    """``model``, ``input``, ``encoding_format`` of an embeddings body, checked as SGLang does."""
    model = body.get("model", "default")
    if not isinstance(model, str):
        raise RequestError("model must be a string")
    if ":" in model and model != served_model_name:
        adapter = model.split(":", 1)[1]
        raise RequestError(SGLANG_REQUEST_ERRORS["lora_disabled"].format(adapter=adapter))
    if "input" not in body:
        raise RequestError("Field required: input")
    texts, token_ids = parse_input(body["input"])
    encoding = body.get("encoding_format", "float")
    if encoding is None:
        encoding = "float"
    if encoding not in ENCODINGS:
        raise RequestError(SGLANG_REQUEST_ERRORS["encoding_format"].format(encoding=encoding))
    return EmbeddingsRequest(texts, token_ids, encoding, body.get("dimensions"))


def parse_rerank_request(body: dict[str, Any]) -> RerankRequest:
    """``query``, ``documents``, ``instruct``, ``top_n``, ``return_documents``, checked in the
    order and with the messages of SGLang's ``serving_rerank.py`` (``SGLANG_RERANK_ERRORS``)."""
    query = body.get("query")
    documents = body.get("documents")
    instruct = body.get("instruct")
    top_n = body.get("top_n")
    return_documents = body.get("return_documents", True)
    if not isinstance(query, str) or not isinstance(documents, list):
        raise RequestError("query must be a string and documents a list of strings")
    if not query:
        raise RequestError(SGLANG_RERANK_ERRORS["empty_query"])
    if not query.strip():
        raise RequestError(SGLANG_RERANK_ERRORS["blank_query"])
    if not documents:
        raise RequestError(SGLANG_RERANK_ERRORS["no_documents"])
    if not all(isinstance(doc, str) and doc for doc in documents):
        raise RequestError(SGLANG_RERANK_ERRORS["empty_document"])
    if not all(doc.strip() for doc in documents):
        raise RequestError(SGLANG_RERANK_ERRORS["blank_document"])
    if instruct is not None and not isinstance(instruct, str):
        raise RequestError("instruct must be a string")
    if top_n is not None and (type(top_n) is not int or top_n < 1):
        raise RequestError(SGLANG_RERANK_ERRORS["top_n"])
    if not isinstance(return_documents, bool):
        raise RequestError("return_documents must be a boolean")
    return RerankRequest(query, list(documents), instruct, top_n, return_documents)


def parse_dimensions(
    value: Any,
    *,
    model_path: str,
    enabled: bool,
    allowed: tuple[int, ...] | None,
    hidden: int,
) -> int | None:
    """The Matryoshka width asked for (``None``: the full width), if the server allows it."""
    if value is None:
        return None
    if not enabled:
        raise RequestError(SGLANG_REQUEST_ERRORS["no_matryoshka"].format(model=model_path))
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError("dimensions must be an integer")
    if value < 1:
        raise RequestError(SGLANG_REQUEST_ERRORS["dimensions_not_positive"])
    if allowed and value not in allowed:
        # SGLANG_REQUEST_ERRORS["matryoshka_widths"] says "other dimensions"; this server has
        # always said "other output dimensions" (the client reads both by "matryoshka").
        raise RequestError(
            f"Model '{model_path}' only supports {list(allowed)} matryoshka "
            "dimensions, using other output dimensions will lead to poor results."
        )
    if value > hidden:
        raise RequestError(SGLANG_REQUEST_ERRORS["dimensions_too_large"].format(width=hidden))
    if not allowed and value < MIN_DIMENSIONS:
        raise RequestError(
            f"Requested dimensions must be at least {MIN_DIMENSIONS} "
            f"(Qwen3-Embedding supports {MIN_DIMENSIONS} to {hidden})"
        )
    return value


def check_vocabulary(token_ids: list[list[int]] | None, vocab_size: int) -> None:
    """Refuse token ids the model has no embedding for."""
    for seq in token_ids or ():
        bad = [t for t in seq if t >= vocab_size]
        if bad:
            raise RequestError(
                f"Token ID {bad[0]} is out of the model's vocabulary (size {vocab_size})"
            )


def parse_tokenize_request(body: dict[str, Any]) -> TokenizeRequest:
    """``prompt`` (a string or a list of strings) with ``add_special_tokens`` (default on)."""
    prompt = body.get("prompt")
    single = isinstance(prompt, str)
    prompts = [prompt] if single else prompt
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise RequestError("prompt must be a string or a list of strings")
    return TokenizeRequest(prompts, single, bool(body.get("add_special_tokens", True)))


def parse_input(value: Any) -> tuple[list[str] | None, list[list[int]] | None]:
    """SGLang's input validation; returns (texts, None) or (None, token id lists)."""
    if not value:
        raise RequestError("Input cannot be empty")
    if isinstance(value, str):
        if not value.strip():
            raise RequestError("Input cannot be empty or whitespace only")
        return [value], None
    if not isinstance(value, list):
        raise RequestError("Input must be a string, a list of strings or token ids")
    first = value[0]
    if isinstance(first, str):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise RequestError("All items in input list must be strings")
            if not item.strip():
                raise RequestError(SGLANG_INPUT_ERRORS["empty_input"].format(index=i))
        return list(value), None
    if isinstance(first, int) and not isinstance(first, bool):
        for i, item in enumerate(value):
            if not isinstance(item, int) or isinstance(item, bool):
                raise RequestError("All items in input list must be integers")
            if item < 0:
                raise RequestError(f"Token ID at index {i} must be non-negative")
        return None, [list(value)]
    if isinstance(first, list):
        for i, item in enumerate(value):
            if not isinstance(item, list):
                raise RequestError(f"Input at index {i} must be a list")
            if not item:
                raise RequestError(f"Input at index {i} cannot be empty")
            if not all(isinstance(t, int) and not isinstance(t, bool) for t in item):
                raise RequestError(f"Input at index {i} must contain only integers")
            if any(t < 0 for t in item):
                raise RequestError(f"Input at index {i} contains negative token IDs")
        return None, [list(item) for item in value]
    raise RequestError("Input must be a string, a list of strings or token ids")
