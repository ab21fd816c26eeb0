"""SGLang's error messages as the client recognises them."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = [
    "SGLANG_INPUT_ERRORS",
    "SGLANG_REQUEST_ERRORS",
    "SGLANG_RERANK_ERRORS",
    "is_matryoshka_refusal",
    "is_request_level",
]

# The templates (``str.format`` fields in braces) are SGLang 0.5.23's wording. bookrec's fake
# server (``bookrec.client.testing``) builds its messages from them, so that a test shows the
# client reading each one as it should.

#: 400s about the request as a whole: splitting the batch would not help.
SGLANG_REQUEST_ERRORS: Mapping[str, str] = MappingProxyType(
    {
        "media_type": "Unsupported Media Type: Only 'application/json' is allowed",
        "invalid_json": "Invalid JSON body",
        "lora_disabled": (
            "LoRA adapter '{adapter}' was requested, but LoRA is not enabled. "
            "Please launch the server with --enable-lora."
        ),
        "encoding_format": "Unsupported encoding_format: {encoding!r}. Use 'float' or 'base64'.",
        "no_matryoshka": (
            "Model '{model}' does not support matryoshka representation, "
            "changing output dimensions will lead to poor results."
        ),
        "matryoshka_widths": (
            "Model '{model}' only supports {widths} matryoshka dimensions, "
            "using other dimensions will lead to poor results."
        ),
        "dimensions_not_positive": "Requested dimensions must be greater than 0",
        "dimensions_too_large": (
            "Provided dimensions are greater than max embedding dimension: {width}"
        ),
        "not_embedding_model": (
            "This model does not appear to be an embedding model by default. "
            "Please add `--is-embedding` when launching the server or try another model."
        ),
    }
)

#: 400s that one input causes: the client splits a batch rejected with one to find it.
SGLANG_INPUT_ERRORS: Mapping[str, str] = MappingProxyType(
    {
        "empty_input": "Input at index {index} cannot be empty or whitespace only",
        "input_too_long": (
            "Input length ({tokens} tokens) exceeds the maximum allowed length "
            "({limit} tokens). Use a shorter input or enable --allow-auto-truncate."
        ),
        "longer_than_context": (
            "The input ({tokens} tokens) is longer than the model's context length "
            "({limit} tokens)."
        ),
    }
)

#: 400s of ``/v1/rerank`` (``serving_rerank.py`` and ``V1RerankReqInput``); the client checks
#: its input first, so it never sends a request that earns one.
SGLANG_RERANK_ERRORS: Mapping[str, str] = MappingProxyType(
    {
        "empty_query": "Query cannot be empty",
        "blank_query": "Query cannot be empty or whitespace only",
        "no_documents": "Documents cannot be empty",
        "empty_document": "Each document must be a non-empty string",
        "blank_document": "Each document cannot be empty or whitespace only",
        "top_n": "Value error, parameter top_n should be larger than 0.",
    }
)

# Lower-case words that only the request-level messages contain. A request-level 400 without
# one is split down to the batch's first input, which the error then names; the server's own
# message stays in the error.
_REQUEST_LEVEL_MARKERS = (
    "matryoshka",
    "dimension",
    "encoding_format",
    "lora",
    "media type",
    "json",
    "an embedding model",  # "does not appear to be an embedding model" (no --is-embedding)
)


def is_request_level(message: str) -> bool:
    """Whether a 400's message is about the request as a whole rather than one input."""
    lowered = message.lower()
    return any(marker in lowered for marker in _REQUEST_LEVEL_MARKERS)


def is_matryoshka_refusal(message: str) -> bool:
    """Whether a 400's message says the server was launched without Matryoshka widths."""
    return "matryoshka" in message.lower()
