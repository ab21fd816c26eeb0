"""The FastAPI application of ``bookrec serve`` (``create_app``), one route per function.

Routes that call the synchronous :class:`Recommender` are plain ``def`` functions: FastAPI runs
them in its thread pool, so the event loop stays free for the micro-batcher, which collects the
free-text queries of concurrent requests into shared embedding calls. Each process opens its
own store (an index directory, memory-mapped, or PostgreSQL) and its own embedding clients; the
recommender follows the store before each query, so a book one worker adds or deletes is seen
by every worker's next request.
"""

# No `from __future__ import annotations`: FastAPI reads the annotations of the routes, which
# name aliases local to create_app (its limits are settings), so they must be evaluated.

import asyncio
import base64
import hashlib
import logging
import os
import re
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response, Security
from fastapi import Path as PathParam
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from threadpoolctl import threadpool_limits

from bookrec import recommender as rl
from bookrec.client import (
    AsyncEmbeddingClient,
    ClientConfig,
    Embedder,
    EmbeddingClient,
    Endpoint,
    check_ready,
)
from bookrec.recommender.catalog_files import book_from_record

from ..index.scan import set_scan_threads
from .batching import BatchingEmbedder, CountingCache, MeteredEmbedder, QueryBatcher
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .middleware import BodyLimitMiddleware, MetricsMiddleware, TimeoutMiddleware
from .models import (
    MAX_IDS,
    MAX_TEXT,
    BookRecord,
    BookResponse,
    Health,
    PutResponse,
    ReaderResults,
    Readiness,
    RecommendationRequest,
    Results,
)
from .problems import (
    FieldError,
    InvalidRequest,
    Problem,
    install_handlers,
    problem_response,
    problem_responses,
)
from .settings import SETTINGS_ENV, ServiceSettings

__all__ = [
    "Opened",
    "ServiceState",
    "app_from_env",
    "client_config",
    "create_app",
    "open_books",
    "rerank_settings",
]

logger = logging.getLogger(__name__)

#: ``open_recommender(settings, embedder)`` -> the recommender, with a function closing its store.
Opened = tuple[rl.Recommender, Callable[[], None]]
OpenRecommender = Callable[[ServiceSettings, Embedder | None], Opened]


#: The page loads only its own script, style and API: book data it shows can never run code.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


#: Where /docs finds Swagger UI's files: the service serves them itself, never from a CDN.
DOCS_ASSETS = "/docs/assets"
#: The files of swagger-ui-dist that /docs loads (fastapi-swagger ships them unchanged).
_SWAGGER_FILES = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"})
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def _docs_headers(html: str) -> dict[str, str]:
    """The page's policy for /docs, which also allows the one inline script of the HTML that
    FastAPI's ``get_swagger_ui_html`` writes (Swagger UI's init) by its SHA-256 hash: that
    HTML carries no nonce, and the hash keeps every other inline script out. Swagger UI's CSS
    draws its icons from ``data:`` images."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in _INLINE_SCRIPT.findall(html)
    )
    policy = _PAGE_HEADERS["Content-Security-Policy"].replace(
        "script-src 'self'", f"script-src 'self' {hashes}"
    )
    policy = policy.replace("img-src 'self'", "img-src 'self' data:")
    return _PAGE_HEADERS | {"Content-Security-Policy": policy}


class _SwaggerFiles(StaticFiles):
    """StaticFiles over fastapi-swagger's folder that serves only Swagger UI's files."""

    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        if path not in _SWAGGER_FILES:
            return "", None
        return super().lookup_path(path)


def _swagger_dir() -> Path | None:
    try:
        return Path(str(resources.files("fastapi_swagger.resources")))
    except ModuleNotFoundError:
        return None


def _sample_catalog() -> Path:
    return Path(
        str(resources.files("bookrec.recommender").joinpath("data", "sample_catalog.jsonl"))
    )


def _static_dir() -> Path:
    return Path(str(resources.files("bookrec.recommender.service").joinpath("static")))


def client_config(settings: ServiceSettings) -> ClientConfig:
    """``ClientConfig.from_env()`` with the settings' embedding options applied."""
    config = ClientConfig.from_env()
    changes: dict[str, Any] = {}
    if settings.base_urls:
        key = settings.embedding_api_key
        if key is None:
            key = os.environ.get("BOOKREC_API_KEY")
        changes["endpoints"] = tuple(Endpoint(url, key) for url in settings.base_urls)
    elif settings.embedding_api_key is not None:
        changes["endpoints"] = tuple(
            Endpoint(e.base_url, settings.embedding_api_key) for e in config.endpoints
        )
    if settings.model:
        changes["model"] = settings.model
    if settings.dimensions is not None:
        changes["dimensions"] = settings.dimensions
    if settings.cache:
        changes["cache_path"] = settings.cache
    if settings.embedding_timeout is not None:
        changes["timeout"] = settings.embedding_timeout
    if settings.rerank_base_urls:
        key = os.environ.get("BOOKREC_RERANK_API_KEY") or os.environ.get("BOOKREC_API_KEY")
        changes["rerank_endpoints"] = tuple(Endpoint(url, key) for url in settings.rerank_base_urls)
    return config.with_options(**changes) if changes else config


def rerank_settings(settings: ServiceSettings) -> rl.RerankSettings:
    """The second stage's candidates and instructions from the service settings."""
    changes: dict[str, Any] = {"candidates": settings.rerank_candidates}
    if settings.rerank_instruction:
        changes["search_instruction"] = settings.rerank_instruction
        changes["reader_instruction"] = settings.rerank_instruction
    return rl.RerankSettings(**changes)


#: How long a ranking that arrives while others run waits to share their pass over the index.
SEARCH_WINDOW_SECONDS = 0.002


#: Connections a worker's PostgreSQL store may open for concurrent searches.
PG_POOL_SIZE = 8


def open_books(settings: ServiceSettings, embedder: Embedder | None) -> Opened:
    """The recommender over the settings' store (the default ``open_recommender``)."""
    if settings.store:
        from bookrec.recommender.pgstore import PostgresStore

        # Requests rank in a thread pool: their searches run in parallel on a pool of
        # connections instead of taking turns on one.
        store = PostgresStore.open(
            settings.store, replicas=settings.replicas, pool_size=PG_POOL_SIZE
        )
        try:
            catalog = rl.load_catalog(settings.catalog) if settings.catalog else store.catalog()
            return _recommender(settings, catalog, store, embedder), store.close
        except BaseException:
            store.close()
            raise
    catalog = rl.load_catalog(settings.catalog or _sample_catalog())
    index = rl.VectorIndex.open(Path(settings.index or ".bookrec/index"))
    # With batching on, the rankings of concurrent requests also share passes over the matrix.
    window = SEARCH_WINDOW_SECONDS if settings.batching else None
    books = rl.NumpyStore(index, catalog, coalesce_window=window)
    return _recommender(settings, books.catalog(), books, embedder), lambda: None


def _recommender(
    settings: ServiceSettings, catalog: rl.Catalog, store: Any, embedder: Embedder | None
) -> rl.Recommender:
    fusion = rl.Fusion(mode=settings.fusion)  # type: ignore[arg-type]
    return rl.Recommender(catalog, store, embedder=embedder, fusion=fusion)


class ServiceState:
    """What one process serves: its recommender, embedder and metrics."""

    def __init__(self, settings: ServiceSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.config: ClientConfig | None = client_config(settings) if settings.embedding else None
        self.embedder: Embedder | None = None
        self._recommender: rl.Recommender | None = None
        self.write_lock = threading.Lock()
        self._closers: list[Callable[[], Any]] = []
        self._batcher: QueryBatcher | None = None
        self._async_client: AsyncEmbeddingClient | None = None
        #: Serves ``rerank=true``: a blocking client (routes run in threads) on the reranker's
        #: own endpoints; it makes no request until one asks for reranking.
        self.reranker: EmbeddingClient | None = None

    @property
    def recommender(self) -> rl.Recommender:
        if self._recommender is None:
            raise RuntimeError("the service is not started")
        return self._recommender

    def _count_call(self, texts: int) -> None:
        self.metrics.embedding_requests.inc()
        self.metrics.embedding_texts.inc(texts)

    def _cache(self, config: ClientConfig) -> CountingCache | None:
        if not config.cache_path:
            return None
        cache = CountingCache(config.cache_path, self.metrics.cache_hits.inc)
        self._closers.append(cache.close)
        return cache

    async def start(self, open_recommender: OpenRecommender) -> None:
        config = self.config
        if config is not None:
            if self.settings.batching:
                client = AsyncEmbeddingClient(config, cache=self._cache(config))
                self._async_client = client
                self._batcher = QueryBatcher(
                    client,
                    max_texts=self.settings.batch_size,
                    max_wait=self.settings.batch_wait_ms / 1000.0,
                    on_call=self._count_call,
                )
                self.embedder = BatchingEmbedder(
                    self._batcher,
                    asyncio.get_running_loop(),
                    timeout=self.settings.request_timeout,
                    on_call=self._count_call,
                )
            else:
                sync = EmbeddingClient(config, cache=self._cache(config))
                self._closers.insert(0, sync.close)
                self.embedder = MeteredEmbedder(sync, self._count_call)
        rec, close = await asyncio.to_thread(open_recommender, self.settings, self.embedder)
        await asyncio.to_thread(rec.warm)  # the keyword index, before the first request
        self._recommender = rec
        self._closers.insert(0, close)
        rerank_config = (config or client_config(self.settings)).with_options(cache_path=None)
        self.reranker = EmbeddingClient(rerank_config)
        self._closers.insert(0, self.reranker.close)
        rec.reranker = self.reranker
        rec.rerank_settings = rerank_settings(self.settings)

    async def stop(self) -> None:
        if self._batcher is not None:
            await self._batcher.aclose()
        if self._async_client is not None:
            await self._async_client.close()
        for close in self._closers:
            try:
                close()
            except Exception:
                logger.exception("closing failed")
        self._closers.clear()

    def embedding_status(self) -> str:
        if self.config is None:
            return "none"
        for endpoint in self.config.endpoints:
            if check_ready(endpoint.base_url, timeout=2.0):
                return "ok"
        urls = ", ".join(e.display_url for e in self.config.endpoints)
        return f"unavailable: {urls} not ready"


def _filter_keywords(
    language: Annotated[list[str], Query(description="only this language (repeatable)")] = [],  # noqa: B006
    tag: Annotated[list[str], Query(description="only books with this tag (repeatable)")] = [],  # noqa: B006
    author: Annotated[list[str], Query(description="only books by this author (repeatable)")] = [],  # noqa: B006
    year_min: Annotated[int | None, Query(ge=-10000, le=10000)] = None,
    year_max: Annotated[int | None, Query(ge=-10000, le=10000)] = None,
    min_rating: Annotated[float | None, Query(ge=0, le=5, allow_inf_nan=False)] = None,
    max_per_author: Annotated[int | None, Query(ge=1, le=MAX_IDS)] = None,
    max_per_series: Annotated[int | None, Query(ge=1, le=MAX_IDS)] = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, values in (("languages", language), ("tags", tag), ("authors", author)):
        if values:
            out[key] = values
    for name, value in (
        ("year_min", year_min),
        ("year_max", year_max),
        ("min_rating", min_rating),
        ("max_per_author", max_per_author),
        ("max_per_series", max_per_series),
    ):
        if value is not None:
            out[name] = value
    return out


_PUBLIC_FILTER_NAMES = {"languages": "language", "tags": "tag", "authors": "author"}


def _checked_filters(filters: dict[str, Any], prefix: str) -> None:
    """``Filters.parse`` of ``filters``; its ``ValueError`` becomes a 422 naming the field."""
    try:
        rl.Filters.parse(**filters)
    except ValueError as exc:
        message = str(exc)
        field = next((n for n in filters if n in message.split()[0:3]), None)
        field = field or next((n for n in filters if n in message), "filters")
        raise InvalidRequest(f"{prefix}{_PUBLIC_FILTER_NAMES.get(field, field)}", message) from None


def _envelope(query: dict[str, Any], results: list[rl.Recommendation]) -> dict[str, Any]:
    return {
        "query": query,
        "degraded": any(r.degraded for r in results),
        "reranked": any(r.reranked for r in results),
        "results": [{"rank": i, **r.to_dict()} for i, r in enumerate(results, 1)],
    }


def create_app(
    settings: ServiceSettings, *, open_recommender: OpenRecommender = open_books
) -> FastAPI:
    """The service over ``settings`` (its API keys included: see ``with_keys``).

    The store is opened, and the embedding clients are made, when the app starts (its
    lifespan), on the server's event loop; ``open_recommender`` replaces how the store opens.
    """
    metrics = Metrics()
    state = ServiceState(settings, metrics)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Requests rank in parallel threads: one BLAS thread each. BLAS's default (a thread
        # per core in every request thread) oversubscribes the cores many times over. The
        # int8 scan of the index's compact copy is kept to one thread per request likewise.
        threadpool_limits(limits=1, user_api="blas")
        set_scan_threads(1)
        await state.start(open_recommender)
        try:
            yield
        finally:
            await state.stop()

    app = FastAPI(
        title="bookrec",
        summary="Content-based book recommendations on Qwen3-Embedding",
        version=_version(),
        lifespan=lifespan,
        # /docs is ours (below): FastAPI's loads Swagger UI from a CDN.
        docs_url=None,
        redoc_url=None,  # ReDoc would load from a CDN; /docs is served offline
    )
    app.state.service = state
    install_handlers(app)

    keys = settings.api_keys
    bearer = HTTPBearer(auto_error=False, description="an API key of the service")

    def _authorize(credentials: HTTPAuthorizationCredentials | None, write: bool) -> None:
        if not keys:
            return
        key = keys.match(credentials.credentials) if credentials is not None else None
        if key is None:
            raise StarletteHTTPException(
                401,
                "a valid API key is needed: Authorization: Bearer KEY",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if write and not key.write:
            raise StarletteHTTPException(403, "this API key may read, not change, books")

    def can_read(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> None:
        _authorize(credentials, write=False)

    def can_write(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> None:
        _authorize(credentials, write=True)

    def ranking(
        k: Annotated[int, Query(ge=1, le=settings.max_k, description="how many results")] = 10,
        diversity: Annotated[
            float,
            Query(ge=0.0, le=1.0, allow_inf_nan=False, description="0 relevance .. 1 variety"),
        ] = 0.0,
    ) -> dict[str, Any]:
        return {"k": k, "diversity": diversity}

    Filtering = Annotated[dict[str, Any], Depends(_filter_keywords)]
    Ranking = Annotated[dict[str, Any], Depends(ranking)]
    BookIdPath = Annotated[str, PathParam(min_length=1, max_length=200)]
    read = [Depends(can_read)]
    write = [Depends(can_write)]
    errors = problem_responses(401, 404, 413, 422, 500, 503)

    def degraded(route: str, envelope: dict[str, Any]) -> dict[str, Any]:
        if envelope["degraded"]:
            metrics.degraded.labels(route).inc()
        if envelope["query"].get("rerank") and envelope["results"] and not envelope["reranked"]:
            metrics.rerank_fallbacks.labels(route).inc()
        return envelope

    @app.get(
        "/v1/books/{id}",
        response_model=BookResponse,
        response_model_exclude_unset=True,
        dependencies=read,
        responses=errors,
    )
    def get_book(id: BookIdPath) -> dict[str, Any]:
        """One book of the catalog."""
        rec = state.recommender
        rec.refresh()
        book = rec.catalog.get(id)
        if book is None:
            raise rl.UnknownBookError(id)
        return {"book": book.to_dict()}

    @app.get("/v1/books/{id}/similar", response_model=Results, dependencies=read, responses=errors)
    def similar(id: BookIdPath, rank: Ranking, filters: Filtering) -> dict[str, Any]:
        """More like this book, from its stored vector (no embedding call)."""
        _checked_filters(filters, "query.")
        results = state.recommender.similar(id, **rank, **filters)
        query = {"similar_to": id, **rank, "filters": _public(filters)}
        return degraded("/v1/books/{id}/similar", _envelope(query, results))

    @app.post(
        "/v1/recommendations", response_model=ReaderResults, dependencies=read, responses=errors
    )
    def recommendations(body: RecommendationRequest) -> dict[str, Any]:
        """Books for a reader: history and liked books pull, disliked push away, preferences
        (free text) are embedded as queries; a reading log (a Goodreads or StoryGraph export)
        adds the books it rates, and its match report comes back as ``reading_log``."""
        if body.k > settings.max_k:
            raise InvalidRequest("body.k", f"k must be at most {settings.max_k}")
        filters = body.filters.keywords()
        _checked_filters(filters, "body.filters.")
        rec = state.recommender
        lists: dict[str, Any] = {
            "history": body.history,
            "liked": body.liked,
            "disliked": body.disliked,
        }
        options: dict[str, Any] = {
            "preferences": body.preferences,
            "k": body.k,
            "strategy": body.strategy,
            "diversity": body.diversity,
            "exclude_read": body.exclude_read,
            "rerank": body.rerank,
            **filters,
        }
        query = body.model_dump(exclude={"reading_log"})
        if body.reading_log is None:
            results = rec.recommend(**lists, **options)
            return degraded("/v1/recommendations", _envelope(query, results))
        matched = _matched_log(rec, body.reading_log)
        if not (body.history or body.liked or body.preferences or matched.history or matched.liked):
            raise rl.EmptyProfileError(
                "nothing to recommend from: the reading log has no read book that is in the "
                f"catalog ({matched.summary()})"
            )
        results = matched.recommend(rec, **lists, **options)
        envelope = _envelope(query, results)
        envelope["reading_log"] = matched.to_dict()
        return degraded("/v1/recommendations", envelope)

    @app.get("/v1/search", response_model=Results, dependencies=read, responses=errors)
    def search(
        q: Annotated[str, Query(min_length=1, max_length=MAX_TEXT, description="free text")],
        rank: Ranking,
        filters: Filtering,
        rerank: Annotated[
            bool,
            Query(description="rescore the best candidates with the reranker against q"),
        ] = False,
    ) -> dict[str, Any]:
        """Books matching a free-text description (keywords when the embedding service is
        down: the results are then ``degraded``); with ``rerank`` the best candidates are
        rescored by the reranker (``reranked`` false when it was unavailable)."""
        if not q.strip():
            raise InvalidRequest("query.q", "the search text is empty")
        _checked_filters(filters, "query.")
        results = state.recommender.search(q, **rank, rerank=rerank, **filters)
        query = {"text": q, **rank, "rerank": rerank, "filters": _public(filters)}
        return degraded("/v1/search", _envelope(query, results))

    @app.put(
        "/v1/books/{id}",
        response_model=PutResponse,
        response_model_exclude_unset=True,
        dependencies=write,
        responses={
            201: {"model": PutResponse, "description": "Added"},
            **problem_responses(401, 403, 413, 422, 500, 502, 503),
        },
    )
    def put_book(id: BookIdPath, record: BookRecord, response: Response) -> dict[str, Any]:
        """Add or replace a book: embedded and indexed at once; every worker's next query
        sees it. Answers 201 when the book is new, 200 when it replaced one."""
        data = record.model_dump(exclude_unset=True)
        if data.get("id") is not None and data["id"] != id:
            raise InvalidRequest("body.id", f"the body's id {data['id']!r} is not the path's")
        data["id"] = id
        book = book_from_record(data, "body")
        rec = state.recommender
        with state.write_lock:
            rec.refresh()
            created = book.id not in rec.store
            rec.put_books([book])
        response.status_code = 201 if created else 200
        return {"book": book.to_dict(), "created": created}

    @app.delete(
        "/v1/books/{id}",
        status_code=204,
        response_class=Response,
        dependencies=write,
        responses=problem_responses(401, 403, 404, 500, 503),
    )
    def delete_book(id: BookIdPath) -> Response:
        """Remove a book at once (404 when it is not there)."""
        rec = state.recommender
        with state.write_lock:
            rec.refresh()
            if id not in rec.store:
                raise rl.UnknownBookError(id)
            rec.delete_books([id])
        return Response(status_code=204)

    @app.get("/healthz", response_model=Health)
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=Readiness, responses=problem_responses(503))
    def readyz() -> Any:
        """Whether the service can answer: its store readable, its embedding service up."""
        try:
            rec = state.recommender
            rec.refresh()
            books = len(rec.catalog)
            identity = rec.store.identity
        except Exception as exc:
            logger.error("the store cannot be read: %s", exc)
            return problem_response(503, "unavailable", "the store cannot be read (see the log)")
        embedding = state.embedding_status()
        return {
            "status": "ready" if embedding in ("ok", "none") else "degraded",
            "books": books,
            "model": identity.model,
            "dimensions": identity.dimensions,
            "embedding": embedding,
        }

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    static = _static_dir()

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        index = static / "index.html"
        if not index.is_file():
            return problem_response(404, "not-found", "the page is not installed")
        return FileResponse(index, media_type="text/html", headers=_PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=static, check_dir=False), name="static")

    # Swagger UI, as FastAPI's default /docs (no API key needed, like /openapi.json) but with
    # its files served from the installed fastapi-swagger package instead of a CDN, and under
    # a Content-Security-Policy that allows them and the page's inline init script by hash.
    swagger = _swagger_dir()

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> Response:
        if swagger is None:
            return problem_response(
                404, "not-found", "Swagger UI is not installed: pip install 'bookrec[serve]'"
            )
        root = request.scope.get("root_path", "").rstrip("/")
        assets = root + DOCS_ASSETS
        html = get_swagger_ui_html(
            openapi_url=root + (app.openapi_url or "/openapi.json"),
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon-32x32.png",
            oauth2_redirect_url=root + "/docs/oauth2-redirect",
        )
        body = bytes(html.body).decode()
        return HTMLResponse(body, headers=_docs_headers(body))

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def docs_oauth2_redirect() -> Response:
        # Kept as FastAPI has it (its inline script, no policy); the API has no OAuth2 flow.
        return get_swagger_ui_oauth2_redirect_html()

    if swagger is not None:
        app.mount(DOCS_ASSETS, _SwaggerFiles(directory=swagger), name="docs-assets")

    app.add_middleware(TimeoutMiddleware, seconds=settings.request_timeout)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                routes=app.routes,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (FieldError, Problem):
                found = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(found.pop("$defs", {}))
                components[model.__name__] = found
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _matched_log(rec: rl.Recommender, text: str) -> rl.MatchedLog:
    """The reading log of a request matched to the current catalog; one that is no export is
    a 422 naming ``body.reading_log``."""
    try:
        log = rl.parse_reading_log(text, source="reading_log")
    except rl.ReadingLogError as exc:
        raise InvalidRequest("body.reading_log", exc.reason) from None
    rec.refresh()
    return log.match(rec.catalog)


def _public(filters: dict[str, Any]) -> dict[str, Any]:
    return {_PUBLIC_FILTER_NAMES.get(k, k): v for k, v in filters.items()}


def app_from_env() -> FastAPI:
    """The app of ``$BOOKREC_SERVE_SETTINGS`` (uvicorn's factory in each worker process)."""
    raw = os.environ.get(SETTINGS_ENV)
    if not raw:
        raise RuntimeError(f"${SETTINGS_ENV} is not set; start the service with bookrec serve")
    settings = ServiceSettings.from_json(raw).with_keys()
    return create_app(settings)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("bookrec")
    except Exception:
        return "0"
