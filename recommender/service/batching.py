"""Micro-batching of query embeddings: concurrent requests share one call to the service.

:class:`QueryBatcher` lives on the server's event loop. Each request's texts wait there for at
most ``max_wait`` seconds, or until ``max_texts`` texts are waiting, then all texts with the
same instruction go to ``AsyncEmbeddingClient.embed_queries`` in one call and each caller gets
its own rows back. An error of that call (``EmbeddingUnavailable``, say) reaches every caller
of the batch. Texts with different instructions are never sent together: an instruction is
part of each model input, so each instruction has its own queue.

:class:`BatchingEmbedder` is the synchronous face the :class:`Recommender` sees (it runs in
the server's thread pool): it implements :class:`bookrec.client.Embedder` by submitting to the
loop with ``asyncio.run_coroutine_threadsafe``. :class:`MeteredEmbedder` is the plain path of
``--no-batching``: the synchronous client, counted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from bookrec.client import (
    AsyncEmbeddingClient,
    Embedder,
    EmbeddingCache,
    EmbeddingTimeout,
    ModelIdentity,
    ProgressCallback,
    PromptFormats,
)

__all__ = ["BatchingEmbedder", "CountingCache", "MeteredEmbedder", "QueryBatcher"]

_T = TypeVar("_T")
Vectors = NDArray[np.float32]

#: ``on_call(texts)``: one call to the embedding service with that many texts.
OnCall = Callable[[int], None]


def _ignore(_texts: int) -> None:
    return None


class CountingCache(EmbeddingCache):
    """The SQLite embedding cache, counting its hits through ``on_hits``."""

    def __init__(self, path: str, on_hits: Callable[[int], None]) -> None:
        super().__init__(path)
        self._on_hits = on_hits

    def get_many(self, keys: Sequence[bytes], dimensions: int) -> dict[bytes, Any]:
        found = super().get_many(keys, dimensions)
        if found:
            self._on_hits(len(found))
        return found


@dataclass
class _Waiter:
    texts: list[str]
    future: asyncio.Future[Vectors]


@dataclass
class _Queue:
    waiters: list[_Waiter] = field(default_factory=list)
    texts: int = 0
    timer: asyncio.TimerHandle | None = None


class QueryBatcher:
    """Collects query texts on the event loop into shared ``embed_queries`` calls."""

    def __init__(
        self,
        client: AsyncEmbeddingClient,
        *,
        max_texts: int = 64,
        max_wait: float = 0.005,
        on_call: OnCall = _ignore,
    ) -> None:
        if max_texts < 1:
            raise ValueError(f"max_texts must be at least 1, got {max_texts}")
        if max_wait < 0:
            raise ValueError(f"max_wait must not be negative, got {max_wait}")
        self.client = client
        self.max_texts = max_texts
        self.max_wait = max_wait
        self._on_call = on_call
        self._queues: dict[str | None, _Queue] = {}
        self._running: set[asyncio.Task[None]] = set()

    async def embed(self, texts: Sequence[str], instruction: str | None = None) -> Vectors:
        """The query vectors of ``texts`` (one row each), embedded with other waiting texts."""
        if not texts:
            raise ValueError("no texts to embed")
        loop = asyncio.get_running_loop()
        waiter = _Waiter(list(texts), loop.create_future())
        queue = self._queues.setdefault(instruction, _Queue())
        queue.waiters.append(waiter)
        queue.texts += len(waiter.texts)
        if queue.texts >= self.max_texts or self.max_wait == 0:
            self._flush(instruction)
        elif queue.timer is None:
            queue.timer = loop.call_later(self.max_wait, self._flush, instruction)
        return await waiter.future

    def _flush(self, instruction: str | None) -> None:
        queue = self._queues.pop(instruction, None)
        if queue is None or not queue.waiters:
            return
        if queue.timer is not None:
            queue.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._run(instruction, queue.waiters))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, instruction: str | None, waiters: list[_Waiter]) -> None:
        texts = [t for w in waiters for t in w.texts]
        self._on_call(len(texts))
        try:
            vectors = await self.client.embed_queries(texts, instruction)
        except BaseException as exc:  # every caller of the batch gets the error
            for w in waiters:
                if not w.future.done():
                    w.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for w in waiters:
            rows = vectors[start : start + len(w.texts)]
            start += len(w.texts)
            if not w.future.done():
                w.future.set_result(np.array(rows, dtype=np.float32))

    async def aclose(self) -> None:
        """Send what is waiting now, then wait for the calls under way."""
        for instruction in list(self._queues):
            self._flush(instruction)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)


class _Described:
    """The model facts of an embedder that passes its calls on to ``source``."""

    source: Embedder | AsyncEmbeddingClient

    @property
    def identity(self) -> ModelIdentity | None:
        return self.source.identity

    @property
    def dimensions(self) -> int | None:
        return self.source.dimensions

    @property
    def prompt_formats(self) -> PromptFormats | None:
        return self.source.prompt_formats


class BatchingEmbedder(_Described):
    """An :class:`Embedder` for threads, over a :class:`QueryBatcher` on an event loop.

    Queries go through the batcher; documents (books being added) go straight to the client.
    A call that takes longer than ``timeout`` seconds raises :class:`EmbeddingTimeout`.
    """

    def __init__(
        self,
        batcher: QueryBatcher,
        loop: asyncio.AbstractEventLoop,
        *,
        timeout: float = 30.0,
        on_call: OnCall = _ignore,
    ) -> None:
        self.batcher = batcher
        self.client = self.source = batcher.client
        self.loop = loop
        self.timeout = timeout
        self._on_call = on_call

    def embed_queries(
        self,
        texts: Sequence[str],
        instruction: str | None = None,
        *,
        progress: ProgressCallback | None = None,
    ) -> Vectors:
        vectors = self._wait(self.batcher.embed(list(texts), instruction))
        if progress is not None:
            progress(len(texts), len(texts))
        return vectors

    def embed_documents(
        self, texts: Sequence[str], *, progress: ProgressCallback | None = None
    ) -> Vectors:
        self._on_call(len(texts))
        return self._wait(self.client.embed_documents(list(texts), progress=progress))

    def _wait(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise EmbeddingTimeout(
                f"no embedding within {self.timeout:g} s (the service is slow or overloaded)"
            ) from None


class MeteredEmbedder(_Described):
    """Another :class:`Embedder` (the synchronous client), with each call counted."""

    def __init__(self, inner: Embedder, on_call: OnCall = _ignore) -> None:
        self.inner = self.source = inner
        self._on_call = on_call

    def embed_queries(
        self,
        texts: Sequence[str],
        instruction: str | None = None,
        *,
        progress: ProgressCallback | None = None,
    ) -> Vectors:
        self._on_call(len(texts))
        return self.inner.embed_queries(texts, instruction, progress=progress)

    def embed_documents(
        self, texts: Sequence[str], *, progress: ProgressCallback | None = None
    ) -> Vectors:
        self._on_call(len(texts))
        return self.inner.embed_documents(texts, progress=progress)
