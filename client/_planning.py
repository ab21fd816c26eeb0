"""Planning one public call without I/O: its texts become deduplicated model inputs in batches."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ._config import ClientConfig
from ._exceptions import InvalidInputError
from ._prompts import PromptTemplate, request_key
from ._text import estimate_tokens, truncate_to_tokens
from ._types import Vectors

__all__ = ["CallPlan", "Role", "plan_batches", "plan_call"]

logger = logging.getLogger(__name__)

Role = Literal["query", "document"]
_MAX_LISTED = 10


@dataclass
class CallPlan:
    """The texts of one public call as unique model inputs, their batches, the vectors so far.

    ``inverse[i]`` is the unique input of ``texts[i]``; ``first_index[u]`` the first text that
    gave input ``u`` (errors name it); ``tokens[u]`` its estimate, end-of-text token included.
    ``batches`` lists the inputs still to embed (after the cache lookup); ``done`` counts the
    caller's texts that have their vector. ``request`` holds the role's extra request fields
    (role hints) every batch carries, ``request_key`` their canonical text for cache keys.
    """

    role: Role
    instruction: str
    total: int
    unique: list[str]
    inverse: NDArray[np.intp]
    counts: list[int]
    first_index: list[int]
    tokens: list[int]
    request: dict[str, Any] = field(default_factory=dict)
    request_key: str = ""
    batches: list[list[int]] = field(default_factory=list)
    done: int = 0
    parts: list[tuple[NDArray[np.intp], NDArray[np.float32]]] = field(default_factory=list)

    def inputs(self, batch: Sequence[int]) -> tuple[list[str], list[int]]:
        """Model inputs of a batch and, for error messages, each one's index in the call."""
        return [self.unique[u] for u in batch], [self.first_index[u] for u in batch]

    def add(self, batch: Sequence[int], vectors: NDArray[np.float32]) -> None:
        """Record the vectors of some unique inputs (a finished batch, or cache hits)."""
        self.parts.append((np.asarray(batch, dtype=np.intp), vectors))
        self.done += sum(self.counts[u] for u in batch)

    def result(self, width: int) -> Vectors:
        """One row per text of the call, in the caller's order."""
        out = np.empty((len(self.unique), width), dtype=np.float32)
        for ids, vectors in self.parts:
            out[ids] = vectors
        if len(self.unique) == self.total:
            return out  # no duplicates: unique order is input order
        return out[self.inverse]


def plan_call(
    config: ClientConfig,
    prompts: PromptTemplate,
    texts: Sequence[str],
    role: Role,
    instruction: str | None,
) -> CallPlan:
    """Validate, format (with ``prompts``, the client's resolved template), truncate and
    deduplicate the texts of one call (no batches yet)."""
    if isinstance(texts, str | bytes):
        raise InvalidInputError("texts must be a sequence of strings, not a single string")
    not_str = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if not_str:
        raise InvalidInputError(
            f"texts must be strings (token ids are not accepted); not a string at "
            f"indices {_listed(not_str)}",
            tuple(not_str),
        )
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise InvalidInputError(
            f"empty or whitespace-only texts at indices {_listed(empty)}", tuple(empty)
        )
    if role == "query":
        used = prompts.instruction if instruction is None else instruction

        def fmt(text: str) -> str:
            return prompts.format_query(text, used)
    else:
        used = prompts.instruction if prompts.symmetric else ""
        fmt = prompts.format_document
    limit = config.max_input_tokens - 1  # the end-of-text token the server appends
    room = limit - estimate_tokens(fmt("")) - 1  # -1: rounding where text and prompt meet
    if room < 1:
        raise InvalidInputError("the instruction alone exceeds max_input_tokens")

    index: dict[str, int] = {}
    inverse = np.empty(len(texts), dtype=np.intp)
    unique: list[str] = []
    counts: list[int] = []
    first: list[int] = []
    tokens: list[int] = []
    truncated: list[int] = []
    for i, text in enumerate(texts):
        model_input = fmt(text)
        cost = estimate_tokens(model_input)
        if cost > limit:
            model_input = fmt(truncate_to_tokens(text, room))
            cost = estimate_tokens(model_input)
            truncated.append(i)
        uid = index.get(model_input)
        if uid is None:
            uid = index[model_input] = len(unique)
            unique.append(model_input)
            counts.append(0)
            first.append(i)
            tokens.append(cost + 1)
        counts[uid] += 1
        inverse[i] = uid
    if truncated:
        logger.warning(
            "truncated %d text(s) longer than about %d tokens on the client (indices %s)",
            len(truncated),
            limit,
            _listed(truncated),
        )
    extra = prompts.request_fields(role)
    return CallPlan(
        role,
        used,
        len(texts),
        unique,
        inverse,
        counts,
        first,
        tokens,
        request=extra,
        request_key=request_key(extra),
    )


def plan_batches(
    ids: Sequence[int], tokens: Sequence[int], batch_size: int, max_batch_tokens: int
) -> list[list[int]]:
    """Consecutive batches of at most ``batch_size`` texts and ``max_batch_tokens`` tokens
    (a single text over the token budget travels alone)."""
    batches: list[list[int]] = []
    current: list[int] = []
    current_tokens = 0
    for i in ids:
        cost = tokens[i]
        if current and (len(current) >= batch_size or current_tokens + cost > max_batch_tokens):
            batches.append(current)
            current, current_tokens = [], 0
        current.append(i)
        current_tokens += cost
    if current:
        batches.append(current)
    return batches


def _listed(indices: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in indices[:_MAX_LISTED])
    return shown + (f" and {len(indices) - _MAX_LISTED} more" if len(indices) > _MAX_LISTED else "")
