#!/usr/bin/env python3
"""OpenAI-compatible embedding server for Qwen3-Embedding on CPU (transformers + torch).

A development and fallback server for machines without a GPU. It speaks the same HTTP API as
SGLang 0.5.23 started with ``--is-embedding``, so clients work unchanged:

- ``POST /v1/embeddings``: ``input`` is a string, a list of strings, a list of token ids or a
  list of token-id lists; ``encoding_format`` ``"float"`` (default) or ``"base64"``
  (little-endian float32); ``dimensions`` truncates and renormalises (32 up to the hidden size,
  or the widths given with ``--matryoshka-dimensions``). The response's ``model`` is the model
  path, as SGLang's is.
- ``GET /v1/models``, ``/model_info``, ``POST /v1/tokenize``.
- ``GET /ready`` (cheap), ``/health`` and ``/health_generate`` (one tiny forward pass); these
  need no API key.

Errors have SGLang's flat shape ``{"object":"error","message":...,"type":...,"param":null,
"code":400}``, and a missing or wrong bearer key is 401 ``{"error":"Unauthorized"}``. Like
SGLang, one bad input fails the whole request.

Embeddings are Qwen3-Embedding's: the tokenizer appends ``<|endoftext|>`` itself (checked at
start-up; when an old tokenizer does not, its id is appended, never the text), sequences are
left-padded, the hidden state of the last token is taken and L2-normalised in float32.

Concurrent requests are batched: one worker thread owns the model; it takes a request from the
queue, keeps collecting for ``--batch-wait-ms`` up to ``--max-batch-tokens`` tokens, runs one
forward pass and answers every request in it.

Usage: ``python deploy/cpu_server.py --model Qwen/Qwen3-Embedding-0.6B`` (or a local directory).
The API key comes from ``--api-key``, else ``BOOKREC_API_KEY``, else ``SGLANG_API_KEY``.
Needs ``pip install 'bookrec[cpu]'``.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hmac
import json
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported lazily at start-up: the module loads without torch
    import numpy as np
    import torch

log = logging.getLogger("bookrec.cpu_server")

API_KEY_ENV_VARS = ("BOOKREC_API_KEY", "SGLANG_API_KEY")
EXEMPT_FROM_AUTH = ("/health", "/health_generate", "/ready", "/ping")
END_OF_TEXT = "<|endoftext|>"
MIN_DIMENSIONS = 32
HEALTH_TIMEOUT = 20.0
# SGLang refuses inputs of context_length - 6 tokens or more (EOS included).
CONTEXT_MARGIN = 6
MAX_BODY_BYTES = 256 * 1024 * 1024
ERROR_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    413: "BadRequestError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


class ModelLoadError(Exception):
    """The model cannot be loaded; the message says what to do."""


class RequestError(Exception):
    """A request the server refuses; becomes a flat SGLang-style error response."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def error_body(message: str, status: int) -> dict[str, Any]:
    return {
        "object": "error",
        "message": message,
        "type": ERROR_TYPES.get(status, "InternalServerError"),
        "param": None,
        "code": status,
    }


# --------------------------------------------------------------------------- model


@dataclass
class Job:
    """One request (or health probe) waiting for the worker thread."""

    texts: list[str] | None
    token_ids: list[list[int]] | None
    dimensions: int | None
    done: threading.Event = field(default_factory=threading.Event)
    vectors: list[np.ndarray] | None = None
    prompt_tokens: int = 0
    error: BaseException | None = None
    counted: bool = True  # health probes stay out of the statistics

    @property
    def ntokens(self) -> int:
        return sum(len(ids) for ids in self.token_ids or ())


@dataclass
class Stats:
    requests: int = 0
    texts: int = 0
    tokens: int = 0
    batches: int = 0
    forward_passes: int = 0
    max_requests_per_batch: int = 0
    max_texts_per_forward: int = 0


class Embedder:
    """Owns the model (used only on its worker thread) and the tokenizer (shared under a lock)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        context_length: int,
        max_batch_tokens: int,
        batch_wait: float,
        max_queued: int,
    ) -> None:
        import torch

        self.model = model
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.max_batch_tokens = max_batch_tokens
        self.batch_wait = batch_wait
        self.hidden_size = int(model.config.hidden_size)
        self.vocab_size = int(model.config.vocab_size)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.tokenizer_lock = threading.Lock()
        self.eot_id, self.tokenizer_appends_eot = self._check_end_of_text()
        self.queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queued)
        self.stats = Stats()
        self.stats_lock = threading.Lock()
        self.torch = torch
        self.thread = threading.Thread(target=self._run, name="embedder", daemon=True)

    def _check_end_of_text(self) -> tuple[int | None, bool]:
        """Find Qwen3-Embedding's end-of-text id and whether the tokenizer appends it."""
        tok = self.tokenizer
        eot = tok.convert_tokens_to_ids(END_OF_TEXT) if END_OF_TEXT in tok.get_vocab() else None
        if eot is None:
            eot = tok.eos_token_id
        with_special = tok("a", add_special_tokens=True)["input_ids"]
        plain = tok("a", add_special_tokens=False)["input_ids"]
        appends = eot is not None and len(with_special) > len(plain) and with_special[-1] == eot
        if appends:
            log.info("tokenizer appends the end-of-text token (id %s) itself", eot)
        elif eot is not None:
            log.warning(
                "this tokenizer does not append %s; appending its id %d to every text input "
                "(update the model's tokenizer files to match SGLang)",
                END_OF_TEXT,
                eot,
            )
        else:
            log.warning("no end-of-text token found: inputs are embedded as tokenized")
        return eot, appends

    # -- called from HTTP threads --------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            pass

    def alive(self) -> bool:
        return self.thread.is_alive()

    def tokenize(self, texts: list[str], *, add_special_tokens: bool) -> list[list[int]]:
        """Token ids of each text, ending in the end-of-text id when special tokens are on."""
        # One tokenizer object serves the worker and /v1/tokenize: fast tokenizers must not
        # be entered from two threads at once.
        with self.tokenizer_lock:
            ids = self.tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]
        if add_special_tokens and not self.tokenizer_appends_eot and self.eot_id is not None:
            return [[*seq, self.eot_id] for seq in ids]
        return [list(seq) for seq in ids]

    def submit(self, job: Job, timeout: float) -> Job:
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise RequestError("The server is overloaded: too many queued requests", 503) from None
        if not job.done.wait(timeout):
            raise RequestError(f"The request was not served within {timeout:.0f} s", 503)
        if job.error is not None:
            raise job.error
        return job

    def snapshot(self) -> dict[str, int]:
        with self.stats_lock:
            return dict(vars(self.stats))

    # -- worker thread -------------------------------------------------------------------------
    def _run(self) -> None:
        carry: Job | None = None
        while True:
            job = carry if carry is not None else self.queue.get()
            carry = None
            if job is None:
                return
            batch: list[Job] = []
            tokens = 0
            if self._prepare(job):
                batch.append(job)
                tokens = job.ntokens
            deadline = time.monotonic() + self.batch_wait
            stop = False
            while tokens < self.max_batch_tokens:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    nxt = self.queue.get(timeout=remaining)
                except queue.Empty:
                    break
                if nxt is None:  # shut down once this batch is answered
                    stop = True
                    break
                if not self._prepare(nxt):
                    continue
                if batch and tokens + nxt.ntokens > self.max_batch_tokens:
                    carry = nxt
                    break
                batch.append(nxt)
                tokens += nxt.ntokens
            if batch:
                self._serve(batch)
            if stop:
                return

    def _prepare(self, job: Job) -> bool:
        """Tokenize and validate a job; answer it at once when it is invalid."""
        try:
            if job.texts is not None:
                job.token_ids = self.tokenize(job.texts, add_special_tokens=True)
            assert job.token_ids is not None
            for seq in job.token_ids:
                self._check_length(len(seq))
            job.prompt_tokens = job.ntokens
            return True
        except RequestError as exc:
            job.error = exc
        except Exception as exc:
            log.exception("tokenization failed")
            job.error = RequestError(f"Internal server error: {exc}", 500)
        job.done.set()
        return False

    def _check_length(self, n: int) -> None:
        if n >= self.context_length:
            raise RequestError(
                f"The input ({n} tokens) is longer than the model's context length "
                f"({self.context_length} tokens)."
            )
        limit = self.context_length - CONTEXT_MARGIN
        if n >= limit:
            raise RequestError(
                f"Input length ({n} tokens) exceeds the maximum allowed length ({limit} tokens). "
                "Use a shorter input."
            )

    def _serve(self, batch: list[Job]) -> None:
        try:
            sequences = [seq for job in batch for seq in job.token_ids or ()]
            pooled, passes = self._embed(sequences)
            offset = 0
            for job in batch:
                count = len(job.token_ids or ())
                job.vectors = self._finish(pooled[offset : offset + count], job.dimensions)
                offset += count
        except Exception as exc:
            log.exception("forward pass failed")
            for job in batch:
                job.error = RequestError(f"Internal server error: {exc}", 500)
            passes = 0
        counted = [job for job in batch if job.counted]
        with self.stats_lock:
            stats = self.stats
            stats.batches += 1
            stats.forward_passes += passes
            stats.requests += len(counted)
            stats.texts += sum(len(job.token_ids or ()) for job in counted)
            stats.tokens += sum(job.prompt_tokens for job in counted)
            stats.max_requests_per_batch = max(stats.max_requests_per_batch, len(counted))
        for job in batch:
            job.done.set()

    def _embed(self, sequences: list[list[int]]) -> tuple[torch.Tensor, int]:
        """Last-token hidden states (float32, not normalised) of every sequence, in order."""
        torch = self.torch
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        out = torch.empty((len(sequences), self.hidden_size), dtype=torch.float32)
        passes = 0
        start = 0
        while start < len(order):
            # Group similar lengths so that padding stays small; stay under the token budget.
            end = start + 1
            while end < len(order):
                longest = len(sequences[order[end]])
                if longest * (end + 1 - start) > self.max_batch_tokens:
                    break
                end += 1
            chunk = [sequences[i] for i in order[start:end]]
            out[order[start:end]] = self._forward(chunk)
            passes += 1
            with self.stats_lock:
                self.stats.max_texts_per_forward = max(self.stats.max_texts_per_forward, len(chunk))
            start = end
        return out, passes

    def _forward(self, chunk: list[list[int]]) -> torch.Tensor:
        torch = self.torch
        width = max(len(seq) for seq in chunk)
        input_ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, seq in enumerate(chunk):  # left padding: the last column is every last token
            input_ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
        # Positions count from each sequence's first real token, as SGLang's unpadded batches do.
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        with torch.inference_mode():
            hidden = self.model(
                input_ids=input_ids, attention_mask=mask, position_ids=positions
            ).last_hidden_state
        return hidden[:, -1, :].float()

    def _finish(self, pooled: torch.Tensor, dimensions: int | None) -> list[np.ndarray]:
        torch = self.torch
        if dimensions is not None:
            pooled = pooled[:, :dimensions]
        normed = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return list(normed.numpy().astype("<f4", copy=False))


# --------------------------------------------------------------------------- HTTP


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


@dataclass(frozen=True)
class Config:
    model_path: str
    served_model_name: str
    api_key: str | None
    context_length: int
    matryoshka_dimensions: tuple[int, ...] | None
    dimensions_enabled: bool
    request_timeout: float


class Handler(BaseHTTPRequestHandler):
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
            content_type = self.headers.get("Content-Type", "")
            if content_type.split(";")[0].strip().lower() != "application/json":
                raise RequestError("Unsupported Media Type: Only 'application/json' is allowed")
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise RequestError(f"Invalid JSON body: {exc}") from None
            if not isinstance(body, dict):
                raise RequestError("The request body must be a JSON object")
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
        model = body.get("model", "default")
        if not isinstance(model, str):
            raise RequestError("model must be a string")
        if ":" in model and model != config.served_model_name:
            adapter = model.split(":", 1)[1]
            raise RequestError(
                f"LoRA adapter '{adapter}' was requested, but LoRA is not enabled. "
                "Please launch the server with --enable-lora."
            )
        if "input" not in body:
            raise RequestError("Field required: input")
        texts, token_ids = parse_input(body["input"])
        encoding = body.get("encoding_format", "float")
        if encoding is None:
            encoding = "float"
        if encoding not in ("float", "base64"):
            raise RequestError(
                f"Unsupported encoding_format: {encoding!r}. Use 'float' or 'base64'."
            )
        embedder = self._ready_embedder()
        dimensions = self._dimensions(body.get("dimensions"), embedder.hidden_size)
        if token_ids is not None:
            for seq in token_ids:
                bad = [t for t in seq if t >= embedder.vocab_size]
                if bad:
                    raise RequestError(
                        f"Token ID {bad[0]} is out of the model's vocabulary "
                        f"(size {embedder.vocab_size})"
                    )
        job = embedder.submit(Job(texts, token_ids, dimensions), config.request_timeout)
        assert job.vectors is not None
        data = []
        for index, vector in enumerate(job.vectors):
            embedding: Any
            if encoding == "base64":
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

    def _dimensions(self, value: Any, hidden: int) -> int | None:
        config = self.server.config
        if value is None:
            return None
        if not config.dimensions_enabled:
            raise RequestError(
                f"Model '{config.model_path}' does not support matryoshka representation, "
                "changing output dimensions will lead to poor results."
            )
        if isinstance(value, bool) or not isinstance(value, int):
            raise RequestError("dimensions must be an integer")
        if value < 1:
            raise RequestError("Requested dimensions must be greater than 0")
        allowed = config.matryoshka_dimensions
        if allowed and value not in allowed:
            raise RequestError(
                f"Model '{config.model_path}' only supports {list(allowed)} matryoshka "
                "dimensions, using other output dimensions will lead to poor results."
            )
        if value > hidden:
            raise RequestError(
                f"Provided dimensions are greater than max embedding dimension: {hidden}"
            )
        if not allowed and value < MIN_DIMENSIONS:
            raise RequestError(
                f"Requested dimensions must be at least {MIN_DIMENSIONS} "
                f"(Qwen3-Embedding supports {MIN_DIMENSIONS} to {hidden})"
            )
        return value

    def _tokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        embedder = self._ready_embedder()
        prompt = body.get("prompt")
        add_special = body.get("add_special_tokens", True)
        single = isinstance(prompt, str)
        prompts = [prompt] if single else prompt
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise RequestError("prompt must be a string or a list of strings")
        ids = embedder.tokenize(prompts, add_special_tokens=bool(add_special))
        tokens: Any = ids[0] if single else ids
        count: Any = len(ids[0]) if single else [len(seq) for seq in ids]
        return {
            "tokens": tokens,
            "count": count,
            "max_model_len": self.server.config.context_length,
        }


def model_not_found(name: str) -> dict[str, Any]:
    return {
        "object": "error",
        "message": f"The model `{name}` does not exist.",
        "type": "NotFoundError",
        "param": "model",
        "code": 404,
    }


def parse_input(value: Any) -> tuple[list[str] | None, list[list[int]] | None]:
    """SGLang's input validation; returns (texts, None) or (None, token id lists)."""
    if not value:
        raise RequestError("Input cannot be empty")
    if isinstance(value, str):
        if not value.strip():
            raise RequestError("Input cannot be empty or whitespace only")
        return [value], None
    if not isinstance(value, list):
        raise RequestError("Input must be a string, a list of strings or token ids")
    first = value[0]
    if isinstance(first, str):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise RequestError("All items in input list must be strings")
            if not item.strip():
                raise RequestError(f"Input at index {i} cannot be empty or whitespace only")
        return list(value), None
    if isinstance(first, int) and not isinstance(first, bool):
        for i, item in enumerate(value):
            if not isinstance(item, int) or isinstance(item, bool):
                raise RequestError("All items in input list must be integers")
            if item < 0:
                raise RequestError(f"Token ID at index {i} must be non-negative")
        return None, [list(value)]
    if isinstance(first, list):
        for i, item in enumerate(value):
            if not isinstance(item, list):
                raise RequestError(f"Input at index {i} must be a list")
            if not item:
                raise RequestError(f"Input at index {i} cannot be empty")
            if not all(isinstance(t, int) and not isinstance(t, bool) for t in item):
                raise RequestError(f"Input at index {i} must contain only integers")
            if any(t < 0 for t in item):
                raise RequestError(f"Input at index {i} contains negative token IDs")
        return None, [list(item) for item in value]
    raise RequestError("Input must be a string, a list of strings or token ids")


# --------------------------------------------------------------------------- start-up


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="OpenAI-compatible Qwen3-Embedding server on CPU (transformers + torch).",
    )
    parser.add_argument("--model", required=True, help="local directory or Hugging Face id")
    parser.add_argument("--revision", help="Hugging Face revision to load")
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    parser.add_argument("--port", type=int, default=30000, help="default 30000")
    parser.add_argument(
        "--api-key", help="bearer key to require (default: BOOKREC_API_KEY or SGLANG_API_KEY)"
    )
    parser.add_argument("--served-model-name", help="id for /v1/models (default: the model path)")
    parser.add_argument(
        "--context-length",
        type=int,
        help="maximum tokens per input, EOS included (default: the model's)",
    )
    dims = parser.add_mutually_exclusive_group()
    dims.add_argument(
        "--matryoshka-dimensions",
        metavar="D1,D2,...",
        help="allowed `dimensions` values (default: any from 32 to the hidden size)",
    )
    dims.add_argument(
        "--no-matryoshka", action="store_true", help="refuse `dimensions` requests (400)"
    )
    parser.add_argument(
        "--max-batch-tokens",
        type=int,
        default=16384,
        help="token budget of one batch (padded) (default 16384)",
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=5.0,
        help="how long to collect concurrent requests into one batch (default 5)",
    )
    parser.add_argument(
        "--max-queued-requests", type=int, default=1024, help="503 beyond this (default 1024)"
    )
    parser.add_argument(
        "--request-timeout", type=float, default=600.0, help="seconds per request (default 600)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads (default: the CPUs this process may use)",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="weights dtype (default float32; bfloat16 halves memory, slower on most CPUs)",
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    return parser


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def model_source(name: str) -> str:
    """A local directory (expanded) or a hub id; a path that does not exist is an error."""
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local)
    if name.startswith(("/", "./", "../", "~")):
        raise ModelLoadError(f"model directory {name} does not exist")
    return name


def load(args: argparse.Namespace) -> tuple[Any, Any]:
    """Load model and tokenizer; raises ModelLoadError with a clear message when that fails."""
    import torch
    import transformers
    from transformers import AutoModel, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    name = args.model
    source = model_source(name)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    # transformers >= 4.56 calls it `dtype`; older releases only know `torch_dtype`.
    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    dtype_kwarg = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=args.revision)
        model = AutoModel.from_pretrained(source, revision=args.revision, **{dtype_kwarg: dtype})
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        where = (
            "HF_HUB_OFFLINE is set, so nothing is downloaded"
            if offline
            else "it could not be downloaded from the Hugging Face Hub"
        )
        raise ModelLoadError(
            f"cannot load model {name!r}: it is not a local directory and {where}.\n"
            f"  Download it where there is network access, e.g. `hf download {name}` (it goes to "
            "the Hugging Face cache, HF_HOME), then start again with that cache, or pass "
            "--model /path/to/a/local/copy.\n"
            f"  ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else exc})"
        ) from None
    model.eval()
    if getattr(model.config, "model_type", None) not in ("qwen3", "qwen2"):
        log.warning(
            "model type %r: last-token pooling is what Qwen3-Embedding needs; other embedding "
            "models may need another pooling",
            getattr(model.config, "model_type", None),
        )
    return model, tokenizer


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        model_source(args.model)  # fail fast, before the slow imports
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        import torch
        import transformers  # noqa: F401 - checked here, used in load()
    except ImportError as exc:
        print(
            f"error: the CPU server needs torch and transformers ({exc}).\n"
            "  Install them with: pip install 'bookrec[cpu]'",
            file=sys.stderr,
        )
        return 1
    api_key = args.api_key or next(
        (os.environ[var] for var in API_KEY_ENV_VARS if os.environ.get(var)), None
    )
    matryoshka: tuple[int, ...] | None = None
    if args.matryoshka_dimensions:
        try:
            matryoshka = tuple(sorted(int(d) for d in args.matryoshka_dimensions.split(",")))
        except ValueError:
            print("error: --matryoshka-dimensions takes integers, e.g. 64,128", file=sys.stderr)
            return 2

    threads = args.threads or available_cpus()
    torch.set_num_threads(threads)

    config = Config(
        model_path=args.model,
        served_model_name=args.served_model_name or args.model,
        api_key=api_key,
        context_length=args.context_length or 0,  # set once the model is loaded
        matryoshka_dimensions=matryoshka,
        dimensions_enabled=not args.no_matryoshka,
        request_timeout=args.request_timeout,
    )
    try:
        server = Server((args.host, args.port), config)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    serving = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    serving.start()
    log.info(
        "listening on %s:%d; loading %s (%d threads)", args.host, args.port, args.model, threads
    )

    try:
        model, tokenizer = load(args)
    except ModelLoadError as exc:
        server.shutdown()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    context_length = args.context_length or int(
        getattr(model.config, "max_position_embeddings", 32768)
    )
    server.config = dataclasses.replace(config, context_length=context_length)
    embedder = Embedder(
        model,
        tokenizer,
        context_length=context_length,
        max_batch_tokens=args.max_batch_tokens,
        batch_wait=args.batch_wait_ms / 1000.0,
        max_queued=args.max_queued_requests,
    )
    embedder.start()
    server.embedder = embedder

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "ready: http://%s:%d/v1 serving %s (hidden size %d, context length %d)",
        args.host,
        args.port,
        args.model,
        embedder.hidden_size,
        context_length,
    )
    while not stop.wait(1.0):
        if not embedder.alive():
            log.error("the embedding worker died; exiting")
            server.shutdown()
            return 1
    server.shutdown()
    embedder.stop()
    embedder.thread.join(timeout=30)  # finish the batch in flight before the interpreter exits
    return 0


if __name__ == "__main__":
    sys.exit(main())
