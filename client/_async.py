"""``AsyncEmbeddingClient``: the asyncio driver of the shared request flow."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import ParamSpec, TypeVar

import openai

from ._cache import EmbeddingCache
from ._config import ClientConfig
from ._flow import AnyFlow, Deadline, Outcome, Request, Sleep
from ._planning import CallPlan, Role
from ._prompts import PromptTemplate
from ._rerank import RerankCall, merge_results
from ._session import EmbeddingSession, open_cache
from ._sync import run_flow
from ._types import ModelIdentity, ProgressCallback, PromptFormats, RerankResult, Vectors
from ._wire import sdk_options

__all__ = ["AsyncEmbeddingClient"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


class AsyncEmbeddingClient:
    """The asynchronous twin of :class:`client.EmbeddingClient` (same behaviour, ``await``).

    Batches run as tasks, at most ``config.max_concurrency`` at once per client (a semaphore).
    The SQLite cache, when used, is read and written in a worker thread, never on the event
    loop (only the constructor opens it in the calling thread).
    """

    def __init__(
        self,
        config: ClientConfig | None = None,
        *,
        cache: EmbeddingCache | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config if config is not None else ClientConfig.from_env()
        self._cache, self._owns_cache = open_cache(self._config, cache)
        self._session = EmbeddingSession(self._config, self._cache, clock)
        self._sleep = sleep
        self._sdks = [openai.AsyncOpenAI(**options) for options in sdk_options(self._config)]
        self._slots = asyncio.Semaphore(self._config.max_concurrency)
        self._resolving = asyncio.Lock()
        self._resolving_blocking = threading.Lock()
        self._closed = False

    # -- public API -----------------------------------------------------------------------
    @property
    def config(self) -> ClientConfig:
        return self._config

    @property
    def identity(self) -> ModelIdentity | None:
        """Model and width of the vectors, known after the first response (or from the cache).

        On the event loop it answers from memory: the cache's record is read by the first call
        (in a worker thread); outside a running loop it reads the record itself, as the sync
        client does.
        """
        if not _on_running_loop():
            self._session.load_identity()
        return self._session.identity

    @property
    def dimensions(self) -> int | None:
        """The configured Matryoshka width (``None``: the model's full width)."""
        return self._config.dimensions

    @property
    def prompt_formats(self) -> PromptFormats:
        """The formats of :meth:`resolve_prompts`'s template.

        Known at once when ``config.prompts`` is configured or a call has run. Otherwise, off
        the event loop (a worker thread, as the service's facades use it) it resolves them
        with blocking requests of its own; on a running loop, which it must not block, it
        answers with the preset of ``config.model``'s family, as the sync client does while
        no server answers (``await resolve_prompts()`` first to have the served model's): a
        served model needing other prompts then fails the next call with
        :class:`IncompatibleModelError` rather than mixing the two.
        """
        known = self._session.prompts
        if known is None:
            if _on_running_loop():
                known = self._session.provisional_prompts()
            else:
                known = self._resolve_blocking()
        return known.formats()

    async def resolve_prompts(self) -> PromptTemplate:
        """The template texts are formatted with (see ``EmbeddingClient.resolve_prompts``):
        ``config.prompts`` when configured, else the served model family's preset, chosen once
        per client before the first embedding."""
        known = self._session.prompts
        if known is not None:
            return known
        if self._closed:
            raise RuntimeError("the embedding client is closed")
        async with self._resolving:
            known = self._session.prompts
            if known is not None:
                return known
            await self._off_loop(self._session.load_identity)
            deadline = self._session.start_deadline()
            async with self._slots:
                prompts = await self._run(self._session.resolve_prompts(deadline))
            await self._off_loop(self._session.save_identity)
            return prompts

    @property
    def cache(self) -> EmbeddingCache | None:
        return self._cache

    async def embed_documents(
        self, texts: Sequence[str], *, progress: ProgressCallback | None = None
    ) -> Vectors:
        """Vectors for documents (books): an (n, d) float32 array, row i for ``texts[i]``."""
        return await self._embed(texts, "document", None, progress)

    async def embed_queries(
        self,
        texts: Sequence[str],
        instruction: str | None = None,
        *,
        progress: ProgressCallback | None = None,
    ) -> Vectors:
        """Vectors for queries, formatted with ``instruction`` (default: the configured one)."""
        return await self._embed(texts, "query", instruction, progress)

    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        instruction: str | None = None,
        top_n: int | None = None,
    ) -> list[RerankResult]:
        """Score ``documents`` against ``query``, best first (see ``EmbeddingClient.rerank``);
        batches run as tasks under the same semaphore as embedding batches."""
        if self._closed:
            raise RuntimeError("the embedding client is closed")
        call = self._session.plan_rerank(query, documents, instruction, top_n)
        deadline = self._session.start_deadline()
        tasks = [
            asyncio.ensure_future(self._rerank_batch(call, batch, deadline))
            for batch in call.batches
        ]
        try:
            parts = [await task for task in tasks]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return merge_results(call, parts)

    async def probe(self) -> ModelIdentity:
        """The model identity, making one tiny request if it is not known yet."""
        await self._off_loop(self._session.load_identity)
        identity = self._session.identity
        if identity is not None:
            return identity
        await self._run(self._session.flow.embed(["ping"], [0], self._session.start_deadline()))
        await self._off_loop(self._session.save_identity)
        identity = self._session.identity
        assert identity is not None  # set by the response
        return identity

    async def close(self) -> None:
        """Close the HTTP clients (and the cache when the client opened it)."""
        if self._closed:
            return
        self._closed = True
        for sdk in self._sdks:
            await sdk.close()
        if self._owns_cache and self._cache is not None:
            await self._off_loop(self._cache.close)

    async def __aenter__(self) -> AsyncEmbeddingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        urls = [ep.display_url for ep in self._config.endpoints]
        return f"{type(self).__name__}(endpoints={urls!r}, model={self._config.model!r})"

    # -- driver ---------------------------------------------------------------------------
    async def _embed(
        self,
        texts: Sequence[str],
        role: Role,
        instruction: str | None,
        progress: ProgressCallback | None,
    ) -> Vectors:
        if self._closed:
            raise RuntimeError("the embedding client is closed")
        await self.resolve_prompts()
        plan = self._session.plan(texts, role, instruction)
        await self._off_loop(self._session.read_cache, plan)
        deadline = self._session.start_deadline()
        if progress is not None:
            progress(plan.done, plan.total)
        tasks = [
            asyncio.ensure_future(self._run_batch(plan, batch, deadline)) for batch in plan.batches
        ]
        try:
            for next_done in asyncio.as_completed(tasks):
                batch, vectors = await next_done
                await self._off_loop(self._session.store, plan, batch, vectors)
                if progress is not None:
                    progress(plan.done, plan.total)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return self._session.result(plan)

    def _resolve_blocking(self) -> PromptTemplate:
        """:meth:`resolve_prompts` from a thread without a running loop, through blocking SDK
        clients made for it (the async ones belong to the event loop they run on)."""
        if self._closed:
            raise RuntimeError("the embedding client is closed")
        with self._resolving_blocking:
            known = self._session.prompts
            if known is not None:
                return known
            sdks = [openai.OpenAI(**options) for options in sdk_options(self._config)]
            try:
                self._session.load_identity()
                deadline = self._session.start_deadline()
                flow = self._session.resolve_prompts(deadline, provisional=True)
                prompts = run_flow(flow, sdks, time.sleep)
                self._session.save_identity()
            finally:
                for sdk in sdks:
                    sdk.close()
            return prompts

    async def _off_loop(
        self, cache_io: Callable[_P, None], *args: _P.args, **kwargs: _P.kwargs
    ) -> None:
        """Run one of the session's cache I/O methods in a worker thread, so that SQLite never
        blocks the event loop (without a cache they do no I/O and run here)."""
        if self._cache is None:
            cache_io(*args, **kwargs)
        else:
            await asyncio.to_thread(cache_io, *args, **kwargs)

    async def _run_batch(
        self, plan: CallPlan, batch: list[int], deadline: Deadline
    ) -> tuple[list[int], Vectors]:
        texts, origins = plan.inputs(batch)
        async with self._slots:
            return batch, await self._run(
                self._session.flow.embed(texts, origins, deadline, plan.request)
            )

    async def _rerank_batch(
        self, call: RerankCall, batch: list[int], deadline: Deadline
    ) -> list[RerankResult]:
        async with self._slots:
            return await self._run(self._session.flow.rerank(call, batch, deadline))

    async def _run(self, flow: AnyFlow[_R]) -> _R:
        outcome: Outcome = None
        try:
            action = next(flow)
            while True:
                if isinstance(action, Sleep):
                    await self._sleep(action.seconds)
                    outcome = None
                else:
                    outcome = await self._send(action)
                action = flow.send(outcome)
        except StopIteration as done:
            result: _R = done.value
            return result
        finally:
            flow.close()

    async def _send(self, request: Request) -> Outcome:
        # The SDK's generic ``post`` / ``get`` (see ``_sync._send``).
        sdk = self._sdks[request.endpoint]
        try:
            if request.method == "GET":
                return await sdk.get(
                    request.path, cast_to=str, options={"timeout": request.timeout}
                )
            return await sdk.post(
                request.path, body=request.body, cast_to=str, options={"timeout": request.timeout}
            )
        except openai.OpenAIError as exc:
            return exc


def _on_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
