"""The types the recommender codes against: model identity, embedder or reranker protocols."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "AsyncEmbedder",
    "AsyncReranker",
    "Embedder",
    "ModelIdentity",
    "ProgressCallback",
    "PromptFormats",
    "RerankResult",
    "Reranker",
    "Vectors",
]

#: ``progress(done, total)``: texts finished so far out of the texts of the call.
ProgressCallback = Callable[[int, int], None]
#: An (n, d) float32 matrix of unit rows.
Vectors = NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class ModelIdentity:
    """What makes vectors comparable: the model the server reports and the returned width.

    ``model`` is the ``model`` field of the server's responses (SGLang: the model path, not the
    served name); ``dimensions`` is the width of the vectors the client returns.
    """

    model: str
    dimensions: int

    def __str__(self) -> str:
        return f"{self.model} ({self.dimensions}-d)"


@dataclass(frozen=True, slots=True)
class PromptFormats:
    """How an embedder turns texts into model inputs, as an index records it.

    ``document`` and ``query`` are the formats with ``{text}`` left in (the query with the
    default ``instruction`` filled in); vectors built with other formats are not comparable.
    """

    document: str
    query: str
    instruction: str


@runtime_checkable
class Embedder(Protocol):
    """Anything that turns texts into unit float32 vectors (the client, fakes, TF-IDF).

    ``identity`` is known after the first response (or from a cache), ``dimensions`` is the
    configured width (``None``: the model's full width), ``prompt_formats`` how texts are
    formatted (``None`` when the embedder adds no prompts).
    """

    @property
    def identity(self) -> ModelIdentity | None: ...

    @property
    def dimensions(self) -> int | None: ...

    @property
    def prompt_formats(self) -> PromptFormats | None: ...

    def embed_documents(
        self, texts: Sequence[str], *, progress: ProgressCallback | None = None
    ) -> Vectors: ...

    def embed_queries(
        self,
        texts: Sequence[str],
        instruction: str | None = None,
        *,
        progress: ProgressCallback | None = None,
    ) -> Vectors: ...


@runtime_checkable
class AsyncEmbedder(Protocol):
    """The asynchronous twin of :class:`Embedder`."""

    @property
    def identity(self) -> ModelIdentity | None: ...

    @property
    def dimensions(self) -> int | None: ...

    @property
    def prompt_formats(self) -> PromptFormats | None: ...

    async def embed_documents(
        self, texts: Sequence[str], *, progress: ProgressCallback | None = None
    ) -> Vectors: ...

    async def embed_queries(
        self,
        texts: Sequence[str],
        instruction: str | None = None,
        *,
        progress: ProgressCallback | None = None,
    ) -> Vectors: ...


@dataclass(frozen=True, slots=True)
class RerankResult:
    """One document's relevance to a query: its position in the caller's list and the
    reranker's score (Qwen3-Reranker: the probability of "yes", in [0, 1])."""

    index: int
    score: float


@runtime_checkable
class Reranker(Protocol):
    """Anything that scores documents against a query (the client, fakes).

    :meth:`rerank` returns the results best first, at most ``top_n`` of them (all by default);
    ``instruction`` replaces the configured task description.
    """

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        instruction: str | None = None,
        top_n: int | None = None,
    ) -> list[RerankResult]: ...


@runtime_checkable
class AsyncReranker(Protocol):
    """The asynchronous twin of :class:`Reranker`."""

    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        instruction: str | None = None,
        top_n: int | None = None,
    ) -> list[RerankResult]: ...
