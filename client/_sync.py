"""``EmbeddingClient``: the blocking driver of the shared request flow."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TypeVar

import openai

from ._cache import EmbeddingCache
from ._config import ClientConfig
from ._flow import AnyFlow, Deadline, Outcome, Request, Sleep
from ._planning import CallPlan, Role
from ._prompts import PromptTemplate
from ._rerank import RerankCall, merge_results
from ._session import EmbeddingSession, open_cache
from ._types import ModelIdentity, ProgressCallback, PromptFormats, RerankResult, Vectors
from ._wire import sdk_options

__all__ = ["EmbeddingClient", "run_flow"]

_R = TypeVar("_R")


class EmbeddingClient:
    """Texts in, unit float32 vectors out, from OpenAI-compatible ``/v1/embeddings`` servers;
    :meth:`rerank` scores documents on the reranker's own servers (``/v1/rerank``).

    One openai SDK client per endpoint (``max_retries=0``: tenacity is the only retry layer),
    reused until :meth:`close`. Batches run on up to ``config.max_concurrency`` threads.
    ``sleep`` and ``clock`` replace ``time.sleep`` and ``time.monotonic`` (tests).
    """

    def __init__(
        self,
        config: ClientConfig | None = None,
        *,
        cache: EmbeddingCache | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config if config is not None else ClientConfig.from_env()
        self._cache, self._owns_cache = open_cache(self._config, cache)
        self._session = EmbeddingSession(self._config, self._cache, clock)
        self._sleep = sleep
        self._sdks = [openai.OpenAI(**options) for options in sdk_options(self._config)]
        self._slots = threading.BoundedSemaphore(self._config.max_concurrency)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._resolving = threading.Lock()
        self._closed = False

    # -- public API -----------------------------------------------------------------------
    @property
    def config(self) -> ClientConfig:
        return self._config

    @property
    def identity(self) -> ModelIdentity | None:
        """Model and width of the vectors, known after the first response (or from the cache)."""
        self._session.load_identity()
        return self._session.identity

    @property
    def dimensions(self) -> int | None:
        """The configured Matryoshka width (``None``: the model's full width)."""
        return self._config.dimensions

    @property
    def prompt_formats(self) -> PromptFormats:
        """The formats of :meth:`resolve_prompts`'s template (which may ask the server).

        While no server answers at all, the preset of ``config.model``'s family stands in,
        so that an index whose books need no embedding still opens offline; a server that
        then serves a model needing other prompts fails the next call with
        :class:`IncompatibleModelError` rather than mixing the two.
        """
        known = self._session.prompts
        if known is None:
            known = self._resolve(provisional=True)
        return known.formats()

    def resolve_prompts(self) -> PromptTemplate:
        """The template texts are formatted with: ``config.prompts`` when configured, else the
        preset of the model family the server reports, chosen once per client before the first
        embedding (``GET /v1/models``; for e5 models two one-word embeddings that tell whether
        the server honours ``input_type``; see ``EmbeddingSession.resolve_prompts``)."""
        return self._resolve(provisional=False)

    @property
    def cache(self) -> EmbeddingCache | None:
        return self._cache

    def embed_documents(
        self, texts: Sequence[str], *, progress: ProgressCallback | None = None
    ) -> Vectors:
        """Vectors for documents (books): an (n, d) float32 array, row i for ``texts[i]``."""
        return self._embed(texts, "document", None, progress)

    def embed_queries(
        self,
        texts: Sequence[str],
        instruction: str | None = None,
        *,
        progress: ProgressCallback | None = None,
    ) -> Vectors:
        """Vectors for queries, formatted with ``instruction`` (default: the configured one)."""
        return self._embed(texts, "query", instruction, progress)

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        instruction: str | None = None,
        top_n: int | None = None,
    ) -> list[RerankResult]:
        """Score ``documents`` against ``query`` on ``config.rerank_endpoints``, best first.

        ``instruction`` replaces ``config.rerank_instruction``; ``top_n`` keeps only the best
        ``top_n``. Long lists go out in batches of ``config.rerank_batch_size`` (in parallel,
        like embedding batches) whose answers are merged. Errors are the embedding errors:
        :class:`EmbeddingUnavailable` when no reranker answers, :class:`EmbeddingResponseError`
        for an answer that does not score every document once within [0, 1].
        """
        if self._closed:
            raise RuntimeError("the embedding client is closed")
        call = self._session.plan_rerank(query, documents, instruction, top_n)
        deadline = self._session.start_deadline()
        if len(call.batches) <= 1 or self._config.max_concurrency == 1:
            parts = [self._rerank_batch(call, batch, deadline) for batch in call.batches]
            return merge_results(call, parts)
        pool = self._get_pool()
        futures = [pool.submit(self._rerank_batch, call, b, deadline) for b in call.batches]
        try:
            parts = [future.result() for future in futures]
        finally:
            for future in futures:
                future.cancel()
        return merge_results(call, parts)

    def probe(self) -> ModelIdentity:
        """The model identity, making one tiny request if it is not known yet."""
        self._session.load_identity()
        identity = self._session.identity
        if identity is not None:
            return identity
        self._run(self._session.flow.embed(["ping"], [0], self._session.start_deadline()))
        self._session.save_identity()
        identity = self._session.identity
        assert identity is not None  # set by the response
        return identity

    def close(self) -> None:
        """Close the HTTP clients (and the cache when the client opened it)."""
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        for sdk in self._sdks:
            sdk.close()
        if self._owns_cache and self._cache is not None:
            self._cache.close()

    def __enter__(self) -> EmbeddingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        urls = [ep.display_url for ep in self._config.endpoints]
        return f"{type(self).__name__}(endpoints={urls!r}, model={self._config.model!r})"

    # -- driver ---------------------------------------------------------------------------
    def _embed(
        self,
        texts: Sequence[str],
        role: Role,
        instruction: str | None,
        progress: ProgressCallback | None,
    ) -> Vectors:
        if self._closed:
            raise RuntimeError("the embedding client is closed")
        self.resolve_prompts()
        plan = self._session.plan(texts, role, instruction)
        self._session.read_cache(plan)
        deadline = self._session.start_deadline()
        if progress is not None:
            progress(plan.done, plan.total)
        if len(plan.batches) <= 1 or self._config.max_concurrency == 1:
            for batch in plan.batches:  # no thread hand-off when nothing can overlap
                self._store(plan, batch, self._run_batch(plan, batch, deadline), progress)
            return self._session.result(plan)
        pool = self._get_pool()
        futures = {
            pool.submit(self._run_batch, plan, batch, deadline): batch for batch in plan.batches
        }
        try:
            for future in as_completed(futures):
                self._store(plan, futures[future], future.result(), progress)
        finally:
            for future in futures:
                future.cancel()  # after an error: batches not started yet never start
        return self._session.result(plan)

    def _store(
        self, plan: CallPlan, batch: list[int], vectors: Vectors, progress: ProgressCallback | None
    ) -> None:
        self._session.store(plan, batch, vectors)
        if progress is not None:
            progress(plan.done, plan.total)

    def _resolve(self, *, provisional: bool) -> PromptTemplate:
        known = self._session.prompts
        if known is not None:
            return known
        if self._closed:
            raise RuntimeError("the embedding client is closed")
        with self._resolving:
            known = self._session.prompts
            if known is not None:
                return known
            self._session.load_identity()
            deadline = self._session.start_deadline()
            flow = self._session.resolve_prompts(deadline, provisional=provisional)
            with self._slots:
                prompts = self._run(flow)
            self._session.save_identity()
            return prompts

    def _get_pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self._config.max_concurrency, thread_name_prefix="bookrec-embed"
                )
            return self._pool

    def _run_batch(self, plan: CallPlan, batch: list[int], deadline: Deadline) -> Vectors:
        texts, origins = plan.inputs(batch)
        with self._slots:
            return self._run(self._session.flow.embed(texts, origins, deadline, plan.request))

    def _rerank_batch(
        self, call: RerankCall, batch: list[int], deadline: Deadline
    ) -> list[RerankResult]:
        with self._slots:
            return self._run(self._session.flow.rerank(call, batch, deadline))

    def _run(self, flow: AnyFlow[_R]) -> _R:
        return run_flow(flow, self._sdks, self._sleep)


def run_flow(
    flow: AnyFlow[_R], sdks: Sequence[openai.OpenAI], sleep: Callable[[float], None]
) -> _R:
    """Drive a flow to its end with blocking I/O: ``sdks[i]`` sends to endpoint ``i``."""
    outcome: Outcome = None
    try:
        action = next(flow)
        while True:
            if isinstance(action, Sleep):
                sleep(action.seconds)
                outcome = None
            else:
                outcome = _send(sdks[action.endpoint], action)
            action = flow.send(outcome)
    except StopIteration as done:
        result: _R = done.value
        return result
    finally:
        flow.close()


def _send(sdk: openai.OpenAI, request: Request) -> Outcome:
    # The SDK's generic ``post`` / ``get`` (its documented way to call any route) rather than
    # ``embeddings.create``: the same auth, timeouts and error types, without the per-string
    # parameter transform (~9 us per text) or the pydantic response model;
    # ``_wire.parse_response`` reads both wire formats itself.
    try:
        if request.method == "GET":
            return sdk.get(request.path, cast_to=str, options={"timeout": request.timeout})
        return sdk.post(
            request.path, body=request.body, cast_to=str, options={"timeout": request.timeout}
        )
    except openai.OpenAIError as exc:
        return exc
