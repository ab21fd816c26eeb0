"""The wire format of SGLang's ``/v1/rerank``, from planning a call to checking each answer.

SGLang 0.5.23 takes ``{query, documents, instruct, top_n, return_documents}`` and answers a JSON
list of ``{score, index, document?, meta_info}`` sorted by score, highest first (for
Qwen3-Reranker the score is P("yes"), in [0, 1]). ``index`` is the document's position in the
request, so a call split into several requests maps each answer back to the caller's list.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._config import ClientConfig
from ._exceptions import EmbeddingResponseError, InvalidInputError
from ._planning import plan_batches
from ._text import estimate_tokens
from ._types import RerankResult

__all__ = ["RerankCall", "merge_results", "parse_rerank_response", "plan_rerank"]


@dataclass
class RerankCall:
    """One public ``rerank`` call: its texts, the instruction sent, ``top_n``, its batches.

    ``batches`` hold indices into ``documents``; each becomes one request, whose answer
    :func:`parse_rerank_response` maps back to those indices.
    """

    query: str
    documents: list[str]
    instruction: str
    top_n: int | None
    batches: list[list[int]] = field(default_factory=list)

    def body(self, batch: Sequence[int]) -> dict[str, Any]:
        """The JSON body of the request for one batch (documents are not echoed back)."""
        body: dict[str, Any] = {
            "query": self.query,
            "documents": [self.documents[i] for i in batch],
            "instruct": self.instruction,
            "return_documents": False,
        }
        if self.top_n is not None and self.top_n < len(batch):
            # The call's best top_n are among each batch's best top_n: less to send back.
            body["top_n"] = self.top_n
        return body

    def expected(self, batch: Sequence[int]) -> int:
        """How many results the answer for ``batch`` must hold."""
        return len(batch) if self.top_n is None else min(self.top_n, len(batch))


def plan_rerank(
    config: ClientConfig,
    query: str,
    documents: Sequence[str],
    instruction: str | None,
    top_n: int | None,
) -> RerankCall:
    """Validate a call (SGLang refuses empty texts and ``top_n`` < 1 with a 400 for the whole
    request) and split its documents into batches of ``config.rerank_batch_size``."""
    if not isinstance(query, str) or not query.strip():
        raise InvalidInputError("the rerank query is empty")
    if isinstance(documents, str | bytes):
        raise InvalidInputError("documents must be a sequence of strings, not a single string")
    docs = list(documents)
    not_str = [i for i, d in enumerate(docs) if not isinstance(d, str)]
    if not_str:
        raise InvalidInputError(f"documents must be strings; not at {not_str[:10]}", tuple(not_str))
    empty = [i for i, d in enumerate(docs) if not d.strip()]
    if empty:
        raise InvalidInputError(
            f"empty or whitespace-only documents at indices {empty[:10]}", tuple(empty)
        )
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise InvalidInputError(f"top_n must be a positive integer, got {top_n!r}")
    used = config.rerank_instruction if instruction is None else instruction
    call = RerankCall(query, docs, used, top_n)
    # Each pair repeats the query and the instruction, so they count against every document.
    overhead = estimate_tokens(query) + estimate_tokens(used)
    tokens = [overhead + estimate_tokens(d) for d in docs]
    call.batches = plan_batches(
        range(len(docs)), tokens, config.rerank_batch_size, config.max_batch_tokens
    )
    return call


def parse_rerank_response(
    content: str | bytes, batch: Sequence[int], expected: int, url: str
) -> list[RerankResult]:
    """The results of one batch's answer, with ``index`` mapped back into the call.

    Checks that the body is a list of ``expected`` objects, that every index of the batch
    appears at most once (exactly once without ``top_n``) and that every score is a finite
    number in [0, 1]; anything else is an :class:`EmbeddingResponseError`.
    """
    try:
        body = json.loads(content)
    except ValueError as exc:
        raise EmbeddingResponseError(f"{url}: the rerank answer is not valid JSON ({exc})") from exc
    if not isinstance(body, list):
        raise EmbeddingResponseError(f"{url}: the rerank answer is not a list")
    if len(body) != expected:
        raise EmbeddingResponseError(
            f"{url}: sent {len(batch)} documents and expected {expected} scores, got {len(body)}"
        )
    seen: set[int] = set()
    out: list[RerankResult] = []
    for item in body:
        if not isinstance(item, dict):
            raise EmbeddingResponseError(f"{url}: a rerank result is not an object")
        index, score = item.get("index"), item.get("score")
        if type(index) is not int or not 0 <= index < len(batch):
            raise EmbeddingResponseError(
                f"{url}: rerank index {index!r} is not one of 0..{len(batch) - 1}"
            )
        if index in seen:
            raise EmbeddingResponseError(f"{url}: rerank index {index} appears twice")
        seen.add(index)
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise EmbeddingResponseError(f"{url}: the score of document {index} is not a number")
        if not math.isfinite(score) or not 0.0 <= score <= 1.0:
            raise EmbeddingResponseError(
                f"{url}: the score of document {index} is {score!r}, not in [0, 1]"
            )
        out.append(RerankResult(batch[index], float(score)))
    return out


def merge_results(call: RerankCall, parts: Sequence[Sequence[RerankResult]]) -> list[RerankResult]:
    """The batches' results as one list, best first (ties: the earlier document), cut to
    ``top_n``."""
    every = [r for part in parts for r in part]
    key = _order
    if call.top_n is not None and call.top_n < len(every):
        return heapq.nsmallest(call.top_n, every, key=key)
    return sorted(every, key=key)


def _order(result: RerankResult) -> tuple[float, int]:
    return (-result.score, result.index)
