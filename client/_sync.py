"""``EmbeddingClient``: the blocking driver of the shared request flow in ``_core``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

import openai

from ._cache import EmbeddingCache
from ._config import ClientConfig
from ._core import Call, Engine, Flow, Job, Outcome, Request, Role, Sleep, open_cache, sdk_options
from ._types import ModelIdentity, ProgressCallback, PromptFormats, Vectors

__all__ = ["EmbeddingClient"]


class EmbeddingClient:
    """Texts in, unit float32 vectors out, from OpenAI-compatible ``/v1/embeddings`` servers.

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
        self._engine = Engine(self._config, self._cache, clock)
        self._sleep = sleep
        self._sdks = [openai.OpenAI(**options) for options in sdk_options(self._config)]
        self._slots = threading.BoundedSemaphore(self._config.max_concurrency)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._closed = False

    # -- public API -----------------------------------------------------------------------
    @property
    def config(self) -> ClientConfig:
        return self._config

    @property
    def identity(self) -> ModelIdentity | None:
        """Model and width of the vectors, known after the first response (or from the cache)."""
        return self._engine.identity

    @property
    def dimensions(self) -> int | None:
        """The configured Matryoshka width (``None``: the model's full width)."""
        return self._config.dimensions

    @property
    def prompt_formats(self) -> PromptFormats:
        return self._config.prompts.formats()

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

    def probe(self) -> ModelIdentity:
        """The model identity, making one tiny request if it is not known yet."""
        identity = self._engine.identity
        if identity is not None:
            return identity
        self._run(self._engine.batch_flow(["ping"], [0], self._engine.start_call()))
        identity = self._engine.identity
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
        urls = [ep.base_url for ep in self._config.endpoints]
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
        job = self._engine.prepare(texts, role, instruction)
        call = self._engine.start_call()
        if progress is not None:
            progress(job.done, job.total)
        if len(job.batches) <= 1 or self._config.max_concurrency == 1:
            for batch in job.batches:  # no thread hand-off when nothing can overlap
                self._store(job, batch, self._run_batch(job, batch, call), progress)
            return self._engine.finish(job)
        pool = self._get_pool()
        futures = {pool.submit(self._run_batch, job, batch, call): batch for batch in job.batches}
        try:
            for future in as_completed(futures):
                self._store(job, futures[future], future.result(), progress)
        finally:
            for future in futures:
                future.cancel()  # after an error: batches not started yet never start
        return self._engine.finish(job)

    def _store(
        self, job: Job, batch: list[int], vectors: Vectors, progress: ProgressCallback | None
    ) -> None:
        self._engine.store(job, batch, vectors)
        if progress is not None:
            progress(job.done, job.total)

    def _get_pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self._config.max_concurrency, thread_name_prefix="bookrec-embed"
                )
            return self._pool

    def _run_batch(self, job: Job, batch: list[int], call: Call) -> Vectors:
        texts, origins = job.inputs(batch)
        with self._slots:
            return self._run(self._engine.batch_flow(texts, origins, call))

    def _run(self, flow: Flow) -> Vectors:
        outcome: Outcome = None
        try:
            action = next(flow)
            while True:
                if isinstance(action, Sleep):
                    self._sleep(action.seconds)
                    outcome = None
                else:
                    outcome = self._send(action)
                action = flow.send(outcome)
        except StopIteration as done:
            result: Vectors = done.value
            return result
        finally:
            flow.close()

    def _send(self, request: Request) -> Outcome:
        # The SDK's generic ``post`` (its documented way to call any route) rather than
        # ``embeddings.create``: the same auth, timeouts and error types, without the
        # per-string parameter transform (~9 us per text) or the pydantic response model;
        # ``_core.parse_response`` reads both wire formats itself.
        sdk = self._sdks[request.endpoint]
        try:
            return sdk.post(
                "/embeddings",
                body=request.body,
                cast_to=str,
                options={"timeout": request.timeout},
            )
        except openai.OpenAIError as exc:
            return exc
