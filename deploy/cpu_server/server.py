"""The HTTP server with its request handler for SGLang's routes."""

from __future__ import annotations

import base64
import hmac
import json
import logging
import socket
import sys
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .errors import RequestError, error_body, model_not_found
from .parsing import (
    check_vocabulary,
    parse_dimensions,
    parse_embeddings_request,
    parse_json_body,
    parse_tokenize_request,
)
from .worker import Embedder, Job

__all__ = ["Config", "Handler", "Server"]

log = logging.getLogger(__name__)

EXEMPT_FROM_AUTH = ("/health", "/health_generate", "/ready", "/ping")
HEALTH_TIMEOUT = 20.0
MAX_BODY_BYTES = 256 * 1024 * 1024


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


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], config: Config) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.config = config
        self.embedder: Embedder | None = None
        self.created = int(time.time())

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up is routine; anything else is logged with its traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            log.debug("client %s went away: %s", client_address, error)
        else:
            log.exception("error while serving %s", client_address)


class Handler(BaseHTTPRequestHandler):
    """SGLang 0.5.23's HTTP API (as started with ``--is-embedding``), so clients work unchanged.

    - ``POST /v1/embeddings``: ``input`` is a string, a list of strings, a list of token ids or
      a list of token-id lists; ``encoding_format`` ``"float"`` (default) or ``"base64"``
      (little-endian float32); ``dimensions`` truncates and renormalises (32 up to the hidden
      size, or the widths given with ``--matryoshka-dimensions``). The response's ``model`` is
      the model path, as SGLang's is.
    - ``GET /v1/models``, ``/model_info``, ``POST /v1/tokenize``.
    - ``GET /ready`` (cheap), ``/health`` and ``/health_generate`` (one tiny forward pass);
      these need no API key.

    Errors have SGLang's flat shape (``errors.error_body``); a missing or wrong bearer key is
    401 ``{"error":"Unauthorized"}``.
    """

    server: Server
    protocol_version = "HTTP/1.1"
    server_version = "bookrec-cpu-embed"
    # Headers and body go out in two writes; with Nagle's algorithm the second one waits for
    # the client's delayed ACK (40 ms per response on Linux).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- plumbing -----------------------------------------------------------------------------
    def _send(self, status: int, payload: Any = None) -> None:
        body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _fail(self, status: int, message: str) -> None:
        self._send(status, error_body(message, status))

    def _authorized(self, path: str) -> bool:
        key = self.server.config.api_key
        if key is None or path in EXEMPT_FROM_AUTH:
            return True
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
            return True
        self._send(401, {"error": "Unauthorized"})
        return False

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise RequestError(f"Request body too large ({length} bytes)", 413)
        return self.rfile.read(length) if length > 0 else b""

    def _ready_embedder(self) -> Embedder:
        embedder = self.server.embedder
        if embedder is None:
            raise RequestError("The server is still loading the model", 503)
        return embedder

    # -- routes -------------------------------------------------------------------------------
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if not self._authorized(path):
            return
        try:
            if path not in EXEMPT_FROM_AUTH:
                self._ready_embedder()
            if path == "/ready":
                ready = self.server.embedder is not None and self.server.embedder.alive()
                self._send(200 if ready else 503, {"status": "ready" if ready else "starting"})
            elif path in ("/health", "/health_generate"):
                self._health()
            elif path == "/ping":
                self._send(200 if self.server.embedder is not None else 503)
            elif path == "/v1/models":
                self._send(200, {"object": "list", "data": [self._model_card()]})
            elif path.startswith("/v1/models/"):
                name = path[len("/v1/models/") :]
                if name != self.server.config.served_model_name:
                    self._send(404, model_not_found(name))
                else:
                    self._send(200, self._model_card())
            elif path in ("/model_info", "/get_model_info"):
                self._send(200, self._model_info())
            elif path in ("/v1/embeddings", "/v1/tokenize"):
                self._send(405, {"detail": "Method Not Allowed"})
            else:
                self._send(404, {"detail": "Not Found"})
        except RequestError as exc:
            self._fail(exc.status, exc.message)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            raw = self._read_body()
            if not self._authorized(path):
                return
            if path not in ("/v1/embeddings", "/v1/tokenize"):
                self._send(404, {"detail": "Not Found"})
                return
            self._ready_embedder()
            body = parse_json_body(self.headers.get("Content-Type", ""), raw)
            if path == "/v1/embeddings":
                self._send(200, self._embeddings(body))
            else:
                self._send(200, self._tokenize(body))
        except RequestError as exc:
            self._fail(exc.status, exc.message)
        except Exception as exc:
            log.exception("unexpected error")
            self._fail(500, f"Internal server error: {exc}")

    def _health(self) -> None:
        embedder = self.server.embedder
        if embedder is None or not embedder.alive():
            self._send(503)
            return
        probe = Job(texts=None, token_ids=[[embedder.eot_id or 0]], dimensions=None, counted=False)
        try:
            embedder.submit(probe, HEALTH_TIMEOUT)
        except RequestError:
            self._send(503)
            return
        self._send(200)

    def _model_card(self) -> dict[str, Any]:
        config = self.server.config
        return {
            "id": config.served_model_name,
            "object": "model",
            "created": self.server.created,
            "owned_by": "bookrec-cpu",
            "root": config.model_path,
            "max_model_len": config.context_length,
        }

    def _model_info(self) -> dict[str, Any]:
        config = self.server.config
        embedder = self._ready_embedder()
        model_config = embedder.model.config
        return {
            "model_path": config.model_path,
            "served_model_name": config.served_model_name,
            "is_generation": False,
            "model_type": getattr(model_config, "model_type", None),
            "architectures": getattr(model_config, "architectures", None),
            "embedding": {
                "pooling": "last",
                "normalize": True,
                "supports_dimensions": config.dimensions_enabled,
                "matryoshka_dimensions": (
                    list(config.matryoshka_dimensions) if config.matryoshka_dimensions else None
                ),
                "hidden_size": embedder.hidden_size,
            },
            "context_length": config.context_length,
            "end_of_text_token_id": embedder.eot_id,
            "tokenizer_appends_end_of_text": embedder.tokenizer_appends_eot,
            "backend": "cpu",
            "batching": {
                "max_batch_tokens": embedder.max_batch_tokens,
                "batch_wait_ms": embedder.batch_wait * 1000.0,
                **embedder.snapshot(),
            },
        }

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        config = self.server.config
        request = parse_embeddings_request(body, served_model_name=config.served_model_name)
        embedder = self._ready_embedder()
        dimensions = parse_dimensions(
            request.dimensions,
            model_path=config.model_path,
            enabled=config.dimensions_enabled,
            allowed=config.matryoshka_dimensions,
            hidden=embedder.hidden_size,
        )
        check_vocabulary(request.token_ids, embedder.vocab_size)
        job = embedder.submit(
            Job(request.texts, request.token_ids, dimensions), config.request_timeout
        )
        assert job.vectors is not None
        data = []
        for index, vector in enumerate(job.vectors):
            embedding: Any
            if request.encoding == "base64":
                embedding = base64.b64encode(vector.tobytes()).decode("ascii")
            else:
                embedding = vector.tolist()
            data.append({"embedding": embedding, "index": index, "object": "embedding"})
        return {
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
        }

    def _tokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        embedder = self._ready_embedder()
        request = parse_tokenize_request(body)
        ids = embedder.tokenize(request.prompts, add_special_tokens=request.add_special_tokens)
        tokens: Any = ids[0] if request.single else ids
        count: Any = len(ids[0]) if request.single else [len(seq) for seq in ids]
        return {
            "tokens": tokens,
            "count": count,
            "max_model_len": self.server.config.context_length,
        }
