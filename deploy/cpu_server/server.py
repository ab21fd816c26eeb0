"""The ASGI application (Starlette on uvicorn) serving SGLang's routes."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bookrec.client import SGLANG_REQUEST_ERRORS

from .connection import guarded_protocol
from .errors import RequestError, error_body, model_not_found
from .parsing import (
    check_vocabulary,
    parse_dimensions,
    parse_embeddings_request,
    parse_json_body,
    parse_rerank_request,
    parse_tokenize_request,
)
from .reranker import DEFAULT_INSTRUCTION, RerankWorker
from .worker import Embedder, Job

__all__ = [
    "ByteBudget",
    "Config",
    "Limits",
    "Server",
    "State",
    "build_app",
    "build_server",
    "listen",
]

log = logging.getLogger(__name__)

EXEMPT_FROM_AUTH = ("/health", "/health_generate", "/ready", "/ping")
HEALTH_TIMEOUT = 20.0
# Bodies above this are parsed on a worker thread: the event loop keeps answering meanwhile.
PARSE_OFF_LOOP_BYTES = 64 * 1024
#: The 400 of an embedding server asked to rerank.
NOT_A_RERANKER = (
    "This model is not a rerank model; start the CPU server with --reranker and a "
    "Qwen3-Reranker model to serve /v1/rerank."
)


@dataclass(frozen=True)
class Limits:
    """What one client (or many) may cost the server; each has its command-line flag."""

    #: ``--max-body-bytes``: larger bodies get 413, refused by ``Content-Length`` before a byte
    #: is read, or cut off at the limit when they are streamed (chunked).
    max_body_bytes: int = 16 * 1024 * 1024
    #: ``--max-header-bytes``: request line plus headers; 431 beyond.
    max_header_bytes: int = 64 * 1024
    #: ``--max-buffered-bytes``: request bodies held at once, all requests together; a request
    #: waits for room before its body is read (``Content-Length``, or ``max_body_bytes`` when
    #: streamed, is reserved).
    max_buffered_bytes: int = 256 * 1024 * 1024
    #: ``--limit-concurrency``: open connections (uvicorn's limit); requests beyond get 503.
    limit_concurrency: int = 1024
    #: ``--backlog``: connections the kernel queues before they are accepted.
    backlog: int = 2048
    #: ``--header-timeout``: seconds for a request line plus headers, from the connection's
    #: opening or the previous response.
    header_timeout: float = 10.0
    #: ``--body-timeout``: seconds to receive the whole body once the headers are in; 408.
    body_timeout: float = 30.0
    #: ``--timeout-keep-alive``: seconds an idle kept-alive connection stays open.
    keep_alive_timeout: int = 5
    #: ``--timeout-graceful-shutdown``: seconds requests in flight get after SIGTERM.
    graceful_shutdown_timeout: int = 30
    #: ``--chars-per-token``: texts are cut at this many characters per token of context
    #: length before they are tokenized.
    chars_per_token: int = 8


@dataclass(frozen=True)
class Config:
    """What the server was started with (``context_length`` is set once the model is loaded)."""

    model_path: str
    served_model_name: str
    api_key: str | None
    context_length: int
    matryoshka_dimensions: tuple[int, ...] | None
    dimensions_enabled: bool
    request_timeout: float
    limits: Limits = Limits()
    #: ``--reranker``: serve ``/v1/rerank`` (a Qwen3-Reranker); ``/v1/embeddings`` answers 400.
    reranker: bool = False


class ByteBudget:
    """Bytes of request bodies the server holds at once; requests wait for room in turn."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def hold(self, size: int, patience: float) -> AsyncIterator[None]:
        size = min(size, self.capacity)
        async with self._changed:
            try:
                async with asyncio.timeout(patience):
                    await self._changed.wait_for(lambda: self.used + size <= self.capacity)
            except TimeoutError:
                raise RequestError(
                    "The server is overloaded: too many request bytes in flight", 503, close=True
                ) from None
            self.used += size
        try:
            yield
        finally:
            async with self._changed:
                self.used -= size
                self._changed.notify_all()


@dataclass
class State:
    """The running server: its configuration, the model's worker once loaded, the budget."""

    config: Config
    embedder: Embedder | None = None
    created: int = field(default_factory=lambda: int(time.time()))
    budget: ByteBudget = field(init=False)

    def __post_init__(self) -> None:
        self.budget = ByteBudget(self.config.limits.max_buffered_bytes)

    def ready_embedder(self) -> Embedder:
        if self.embedder is None:
            raise RequestError("The server is still loading the model", 503, close=True)
        return self.embedder


class ClientGone(Exception):
    """The client hung up before its request was read; nobody is left to answer."""


# -- plumbing ----------------------------------------------------------------------------------
def json_response(status: int, payload: Any = None, *, close: bool = False) -> Response:
    body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
    headers = {"connection": "close"} if close else None
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def failure(exc: RequestError) -> Response:
    return json_response(exc.status, error_body(exc.message, exc.status), close=exc.close)


def has_body(headers: Any) -> bool:
    length = headers.get("content-length")
    return bool(length and length != "0") or "chunked" in headers.get("transfer-encoding", "")


async def read_body(request: Request, limits: Limits) -> bytes:
    """The body, refused past ``max_body_bytes`` (413) or ``body_timeout`` (408)."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(limits.body_timeout):
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limits.max_body_bytes:
                    raise RequestError(too_large(limits), 413, close=True)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise RequestError(
            f"The request body did not arrive within {limits.body_timeout:g} s", 408, close=True
        ) from None
    return b"".join(chunks)


def too_large(limits: Limits) -> str:
    return f"Request body too large (more than {limits.max_body_bytes} bytes)"


@asynccontextmanager
async def json_body(request: Request, state: State) -> AsyncIterator[dict[str, Any]]:
    """The parsed JSON body, held inside the server's byte budget until the block ends."""
    limits = state.config.limits
    declared = request.headers.get("content-length")
    if declared is not None and int(declared) > limits.max_body_bytes:  # h11 checked it is digits
        raise RequestError(too_large(limits), 413, close=True)
    reserve = int(declared) if declared is not None else limits.max_body_bytes
    async with state.budget.hold(reserve, state.config.request_timeout):
        raw = await read_body(request, limits)
        content_type = request.headers.get("content-type", "")
        if len(raw) > PARSE_OFF_LOOP_BYTES:
            body = await asyncio.to_thread(parse_json_body, content_type, raw)
        else:
            body = parse_json_body(content_type, raw)
        del raw
        yield body


async def run_job(embedder: Embedder, job: Job, within: float) -> Job:
    """Queue a job for the worker thread and wait for it without blocking the event loop."""
    loop = asyncio.get_running_loop()
    answered = asyncio.Event()

    def wake() -> None:  # on the worker thread
        try:
            loop.call_soon_threadsafe(answered.set)
        except RuntimeError:  # the loop has closed (shutdown): nobody is waiting
            pass

    job.on_done = wake
    embedder.enqueue(job)
    try:
        async with asyncio.timeout(within):
            await answered.wait()
    except TimeoutError:
        raise RequestError(f"The request was not served within {within:.0f} s", 503) from None
    if job.error is not None:
        raise job.error
    return job


Endpoint = Callable[[Request], Awaitable[Response]]


def guarded(endpoint: Endpoint) -> Endpoint:
    """SGLang's flat errors for refusals; a hang-up is routine, anything else a logged 500."""

    async def wrapper(request: Request) -> Response:
        try:
            return await endpoint(request)
        except RequestError as exc:
            return failure(exc)
        except ClientGone:
            log.debug("client %s went away", request.client)
            return Response(status_code=400)  # never delivered
        except Exception as exc:
            log.exception("unexpected error")
            return json_response(500, error_body(f"Internal server error: {exc}", 500))

    return wrapper


# -- the application ---------------------------------------------------------------------------
def build_app(state: State) -> ASGIApp:
    """SGLang 0.5.23's HTTP API (as started with ``--is-embedding``, or for a Qwen3-Reranker
    without it), so clients work unchanged.

    - ``POST /v1/embeddings``: ``input`` is a string, a list of strings, a list of token ids or
      a list of token-id lists; ``encoding_format`` ``"float"`` (default) or ``"base64"``
      (little-endian float32); ``dimensions`` truncates and renormalises (32 up to the hidden
      size, or the widths given with ``--matryoshka-dimensions``). The response's ``model`` is
      the model path, as SGLang's is.
    - ``POST /v1/rerank`` with ``--reranker``: ``{query, documents, instruct, top_n,
      return_documents}`` in, a JSON list of ``{score, document?, index, meta_info}`` out,
      best first (ties: the earlier document), cut to ``top_n``; ``score`` is P("yes") of
      Qwen3-Reranker's prompt (``reranker.py``). ``/v1/embeddings`` then answers SGLang's 400
      for a model that is not an embedding model; without ``--reranker`` ``/v1/rerank`` is a 400.
    - ``GET /v1/models``, ``/v1/models/{name}``, ``/model_info``, ``POST /v1/tokenize``.
    - ``GET /ready`` (cheap), ``/health`` and ``/health_generate`` (one tiny forward pass),
      ``/ping``; these need no API key.

    Errors have SGLang's flat shape (``errors.error_body``); a missing or wrong bearer key is
    401 ``{"error":"Unauthorized"}``, answered from the headers before any body is read.
    """

    async def ready(request: Request) -> Response:
        embedder = state.embedder
        alive = embedder is not None and embedder.alive()
        return json_response(200 if alive else 503, {"status": "ready" if alive else "starting"})

    async def health(request: Request) -> Response:
        embedder = state.embedder
        if embedder is None or not embedder.alive():
            return json_response(503)
        probe = Job(texts=None, token_ids=[[embedder.eot_id or 0]], dimensions=None, counted=False)
        try:
            await run_job(embedder, probe, HEALTH_TIMEOUT)
        except RequestError:
            return json_response(503)
        return json_response(200)

    async def ping(request: Request) -> Response:
        return json_response(200 if state.embedder is not None else 503)

    def model_card() -> dict[str, Any]:
        config = state.config
        return {
            "id": config.served_model_name,
            "object": "model",
            "created": state.created,
            "owned_by": "bookrec-cpu",
            "root": config.model_path,
            "max_model_len": config.context_length,
        }

    async def models(request: Request) -> Response:
        state.ready_embedder()
        return json_response(200, {"object": "list", "data": [model_card()]})

    async def model(request: Request) -> Response:
        state.ready_embedder()
        name = request.path_params["name"]
        if name != state.config.served_model_name:
            return json_response(404, model_not_found(name))
        return json_response(200, model_card())

    async def server_info(request: Request) -> Response:
        # SGLang answers with its server arguments and version; the smg gateway polls this on
        # its workers. The API key is not among them.
        config = state.config
        return json_response(
            200,
            {
                "model_path": config.model_path,
                "tokenizer_path": config.model_path,
                "served_model_name": config.served_model_name,
                "is_embedding": not config.reranker,
                "context_length": config.context_length,
                "version": f"bookrec-cpu-server {_package_version()}",
                "internal_states": [{}],
            },
        )

    async def model_info(request: Request) -> Response:
        config = state.config
        embedder = state.ready_embedder()
        model_config = embedder.model.config
        task: dict[str, Any]
        if isinstance(embedder, RerankWorker):
            task = {
                "rerank": {
                    "score": 'P("yes"): softmax over the "yes" and "no" logits, last position',
                    "yes_token_id": embedder.yes_id,
                    "no_token_id": embedder.no_id,
                    "default_instruction": DEFAULT_INSTRUCTION,
                    "prompt_tokens_fixed": len(embedder.head_ids) + len(embedder.tail_ids),
                }
            }
        else:
            task = {
                "embedding": {
                    "pooling": "last",
                    "normalize": True,
                    "supports_dimensions": config.dimensions_enabled,
                    "matryoshka_dimensions": (
                        list(config.matryoshka_dimensions) if config.matryoshka_dimensions else None
                    ),
                    "hidden_size": embedder.hidden_size,
                }
            }
        return json_response(
            200,
            {
                "model_path": config.model_path,
                "served_model_name": config.served_model_name,
                "is_generation": config.reranker,
                "model_type": getattr(model_config, "model_type", None),
                "architectures": getattr(model_config, "architectures", None),
                **task,
                "context_length": config.context_length,
                "end_of_text_token_id": embedder.eot_id,
                "tokenizer_appends_end_of_text": embedder.tokenizer_appends_eot,
                "backend": "cpu",
                "max_input_characters": embedder.max_chars,
                "batching": {
                    "max_batch_tokens": embedder.max_batch_tokens,
                    "batch_wait_ms": embedder.batch_wait * 1000.0,
                    **embedder.snapshot(),
                },
            },
        )

    async def embeddings(request: Request) -> Response:
        config = state.config
        embedder = state.ready_embedder()
        async with json_body(request, state) as body:
            if config.reranker:
                raise RequestError(SGLANG_REQUEST_ERRORS["not_embedding_model"])
            parsed = parse_embeddings_request(body, served_model_name=config.served_model_name)
            del body
            dimensions = parse_dimensions(
                parsed.dimensions,
                model_path=config.model_path,
                enabled=config.dimensions_enabled,
                allowed=config.matryoshka_dimensions,
                hidden=embedder.hidden_size,
            )
            check_vocabulary(parsed.token_ids, embedder.vocab_size)
            texts, cut = (None, frozenset[int]())
            if parsed.texts is not None:
                texts, cut = embedder.cut(parsed.texts)
            job = Job(texts, parsed.token_ids, dimensions, cut=cut)
            job = await run_job(embedder, job, config.request_timeout)
        assert job.vectors is not None
        data = []
        for index, vector in enumerate(job.vectors):
            embedding: Any
            if parsed.encoding == "base64":
                embedding = base64.b64encode(vector.tobytes()).decode("ascii")
            else:
                embedding = vector.tolist()
            data.append({"embedding": embedding, "index": index, "object": "embedding"})
        return json_response(
            200,
            {
                "data": data,
                "model": config.model_path,
                "object": "list",
                "usage": {
                    "prompt_tokens": job.prompt_tokens,
                    "total_tokens": job.prompt_tokens,
                    "completion_tokens": 0,
                    "prompt_tokens_details": None,
                    "reasoning_tokens": 0,
                },
            },
        )

    async def rerank(request: Request) -> Response:
        config = state.config
        started = time.monotonic()
        worker = state.ready_embedder()
        async with json_body(request, state) as body:
            if not isinstance(worker, RerankWorker):
                raise RequestError(NOT_A_RERANKER)
            parsed = parse_rerank_request(body)
            del body
            # SGLang renders its template without `instruct` when the request's is empty.
            instruction = parsed.instruct or DEFAULT_INSTRUCTION
            pending = worker.job(
                parsed.query,
                parsed.documents,
                instruction,
                max_total_chars=config.limits.max_body_bytes,
            )
            job = await run_job(worker, pending, config.request_timeout)
        assert job.scores is not None and job.token_ids is not None
        latency = time.monotonic() - started
        request_id = uuid.uuid4().hex
        results: list[dict[str, Any]] = []
        for index, score in enumerate(job.scores):
            item: dict[str, Any] = {"score": score}
            if parsed.return_documents:
                item["document"] = parsed.documents[index]
            item["index"] = index
            item["meta_info"] = {
                "id": f"rerank-{request_id}-{index}",
                "finish_reason": {"type": "length", "length": 0},
                "prompt_tokens": len(job.token_ids[index]),
                "e2e_latency": latency,
            }
            results.append(item)
        results.sort(key=lambda item: -item["score"])  # stable: ties keep the earlier document
        if parsed.top_n is not None:
            results = results[: parsed.top_n]
        return json_response(200, results)

    async def tokenize(request: Request) -> Response:
        embedder = state.ready_embedder()
        async with json_body(request, state) as body:
            parsed = parse_tokenize_request(body)
        for index, prompt in enumerate(parsed.prompts):
            if len(prompt) > embedder.max_chars:
                raise RequestError(
                    f"Prompt at index {index} is longer than the server's cap of "
                    f"{embedder.max_chars} characters"
                )
        ids = await asyncio.to_thread(
            embedder.tokenize, parsed.prompts, add_special_tokens=parsed.add_special_tokens
        )
        tokens: Any = ids[0] if parsed.single else ids
        count: Any = len(ids[0]) if parsed.single else [len(seq) for seq in ids]
        return json_response(
            200, {"tokens": tokens, "count": count, "max_model_len": state.config.context_length}
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        close = has_body(request.headers)  # the body of a request no route takes is not read
        return json_response(exc.status_code, {"detail": exc.detail}, close=close)

    get = ["GET"]
    routes = [
        Route("/ready", guarded(ready), methods=get),
        Route("/health", guarded(health), methods=get),
        Route("/health_generate", guarded(health), methods=get),
        Route("/ping", guarded(ping), methods=get),
        Route("/v1/models", guarded(models), methods=get),
        Route("/v1/models/{name:path}", guarded(model), methods=get),
        Route("/model_info", guarded(model_info), methods=get),
        Route("/get_model_info", guarded(model_info), methods=get),
        Route("/server_info", guarded(server_info), methods=get),
        Route("/get_server_info", guarded(server_info), methods=get),
        Route("/v1/embeddings", guarded(embeddings), methods=["POST"]),
        Route("/v1/rerank", guarded(rerank), methods=["POST"]),
        Route("/v1/tokenize", guarded(tokenize), methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    return Authorized(app, state)


def _package_version() -> str:
    try:
        return metadata.version("bookrec")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


class Authorized:
    """Checks the bearer key from the headers alone, before a route reads any body."""

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = self.state.config.api_key
        if scope["type"] != "http" or key is None or scope["path"] in EXEMPT_FROM_AUTH:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        given = headers.get(b"authorization", b"")
        if hmac.compare_digest(given, f"Bearer {key}".encode()):
            await self.app(scope, receive, send)
            return
        body = b'{"error":"Unauthorized"}'
        response_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        pending = headers.get(b"content-length", b"0") not in (b"", b"0")
        if pending or b"chunked" in headers.get(b"transfer-encoding", b""):
            response_headers.append((b"connection", b"close"))  # the body is never read
        start: Message = {"type": "http.response.start", "status": 401}
        start["headers"] = response_headers
        await send(start)
        await send({"type": "http.response.body", "body": body})


# -- the HTTP server ---------------------------------------------------------------------------
class Server(uvicorn.Server):
    """uvicorn's server, with SIGTERM and SIGINT handled by the caller (no re-raise after)."""

    def capture_signals(self) -> Any:
        from contextlib import nullcontext

        return nullcontext()


def listen(host: str, port: int, backlog: int) -> socket.socket:
    """The listening socket (IPv6 when the host is an IPv6 address); raises OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it a kept-alive response waits for the client's delayed ACK (40 ms on Linux).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def build_server(state: State, host: str, port: int) -> Server:
    limits = state.config.limits
    config = uvicorn.Config(
        build_app(state),
        host=host,
        port=port,
        http=guarded_protocol(limits.header_timeout, limits.max_header_bytes),
        lifespan="off",
        log_config=None,  # uvicorn's loggers go to the root logger set up in __main__
        access_log=False,
        server_header=False,
        proxy_headers=False,
        limit_concurrency=limits.limit_concurrency,
        backlog=limits.backlog,
        timeout_keep_alive=limits.keep_alive_timeout,
        timeout_graceful_shutdown=limits.graceful_shutdown_timeout,
        h11_max_incomplete_event_size=limits.max_header_bytes,
    )
    return Server(config)
