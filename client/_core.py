"""Everything the sync and async clients share, without I/O.

The request logic (endpoint order, circuit breakers, tenacity retries, ``Retry-After``,
Matryoshka fallback, splitting a rejected batch) is written once, as a generator that *yields*
what it needs done: a :class:`Request` to send or a :class:`Sleep` to wait, and receives the
response body (``bytes``) or the SDK's exception back. ``_sync.py`` and ``_async.py`` only run
that loop with blocking or awaited I/O (tenacity's own sans-IO pattern, at our scale).
"""

from __future__ import annotations

import binascii
import email.utils
import json
import logging
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import openai
from numpy.typing import NDArray
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_exponential,
    wait_none,
    wait_random,
)

from ._cache import EmbeddingCache, cache_key
from ._config import ClientConfig, Endpoint
from ._constants import PLACEHOLDER_API_KEY
from ._exceptions import (
    ConfigurationError,
    EmbeddingError,
    EmbeddingRejected,
    EmbeddingResponseError,
    EmbeddingTimeout,
    EmbeddingUnavailable,
    IncompatibleModelError,
    InvalidInputError,
)
from ._sglang import is_matryoshka_refusal, is_request_level
from ._text import estimate_tokens, truncate_to_tokens
from ._types import ModelIdentity, Vectors
from ._vectors import normalize

logger = logging.getLogger(__name__)

Role = Literal["query", "document"]
Clock = Callable[[], float]

#: Retried: request timeout, conflict, rate limit (and every 5xx).
RETRYABLE_STATUS = frozenset({408, 409, 429})
#: A 4xx that one bad input can cause; a batch rejected with it is split to find that input.
SPLITTABLE_STATUS = frozenset({400, 413, 422})
_MAX_LISTED = 10


# -- actions the drivers perform --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Request:
    """POST ``body`` to ``/embeddings`` of endpoint number ``endpoint``, within ``timeout``."""

    endpoint: int
    body: dict[str, Any]
    timeout: openai.Timeout


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait ``seconds`` before the next action."""

    seconds: float


Action = Request | Sleep
#: What a driver sends back: the response body, the SDK's exception, or ``None`` after a sleep.
Outcome = str | bytes | BaseException | None
Flow = Generator[Action, Outcome, Vectors]


# -- response parsing -------------------------------------------------------------------------
def sdk_options(config: ClientConfig) -> list[dict[str, Any]]:
    """Constructor arguments of the SDK client for each endpoint, shared by both drivers.

    ``max_retries=0``: tenacity (in :class:`Engine`) is the only retry layer. Only these four
    arguments are passed, which keeps the code neutral to the SDK's transport package.
    """
    timeout = openai.Timeout(config.timeout, connect=config.connect_timeout)
    return [
        {
            "base_url": ep.base_url,
            "api_key": ep.api_key or PLACEHOLDER_API_KEY,
            "max_retries": 0,
            "timeout": timeout,
        }
        for ep in config.endpoints
    ]


def open_cache(
    config: ClientConfig, cache: EmbeddingCache | None
) -> tuple[EmbeddingCache | None, bool]:
    """The cache a client uses, and whether the client opened it (and so must close it)."""
    if cache is None and config.cache_path is not None:
        return EmbeddingCache(config.cache_path), True
    return cache, False


def parse_response(content: str | bytes, expected: int) -> tuple[str, NDArray[np.float32]]:
    """Parse a ``/v1/embeddings`` body into ``(model, rows in input order)``.

    Accepts float lists and base64 (little-endian float32) and checks the count, that the
    indices are a permutation of ``0..n-1``, equal widths and finite values.
    """
    try:
        body = json.loads(content)
    except ValueError as exc:
        raise EmbeddingResponseError(f"the response is not valid JSON ({exc})") from exc
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise EmbeddingResponseError("the response has no 'data' list")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise EmbeddingResponseError("the response does not name its model")
    data: list[Any] = body["data"]
    if len(data) != expected:
        raise EmbeddingResponseError(f"sent {expected} inputs but got {len(data)} embeddings")
    try:
        indices = [item["index"] for item in data]
        embeddings = [item["embedding"] for item in data]
    except (TypeError, KeyError) as exc:
        raise EmbeddingResponseError(f"an embedding entry lacks {exc}") from exc
    if indices != list(range(expected)):
        if not all(type(i) is int for i in indices) or sorted(indices) != list(range(expected)):
            raise EmbeddingResponseError(
                f"the response's indices are not a permutation of 0..{expected - 1}"
            )
        order = sorted(range(expected), key=indices.__getitem__)
        embeddings = [embeddings[i] for i in order]
    matrix = _decode(embeddings)
    if not np.isfinite(matrix).all():
        bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1)).tolist()
        raise EmbeddingResponseError(f"non-finite values in embeddings at positions {bad}")
    return model, matrix


def _decode(embeddings: list[Any]) -> NDArray[np.float32]:
    if all(isinstance(e, str) for e in embeddings):
        try:
            raw = [binascii.a2b_base64(e, strict_mode=True) for e in embeddings]
        except (binascii.Error, ValueError) as exc:
            raise EmbeddingResponseError(f"an embedding is not valid base64 ({exc})") from exc
        size = len(raw[0])
        if size == 0 or size % 4 or any(len(r) != size for r in raw):
            raise EmbeddingResponseError("base64 embeddings of unequal or invalid length")
        flat = np.frombuffer(b"".join(raw), dtype="<f4")
        return flat.reshape(len(raw), size // 4).astype(np.float32, copy=False)
    if all(isinstance(e, list) for e in embeddings):
        width = len(embeddings[0])
        if width == 0 or any(len(e) != width for e in embeddings):
            raise EmbeddingResponseError("embeddings of unequal or zero length")
        try:
            return np.array(embeddings, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise EmbeddingResponseError(
                f"an embedding holds a non-numeric value such as null ({exc})"
            ) from exc
    raise EmbeddingResponseError("embeddings are neither float lists nor base64 strings")


def normalise_rows(matrix: NDArray[np.float32]) -> NDArray[np.float32]:
    """Unit L2 rows (:func:`normalize`), refusing an all-zero row: it has no direction."""
    if not (np.linalg.norm(matrix, axis=1) > 0).all():
        raise EmbeddingResponseError("the server returned an all-zero embedding")
    return normalize(matrix)


# -- errors -----------------------------------------------------------------------------------
def parse_retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / divisor)
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        return max(0.0, when.timestamp() - time.time())
    return None


def _server_message(body: object) -> str:
    if isinstance(body, dict):
        for key in ("message", "error", "detail"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message")
            if isinstance(value, str) and value:
                return value
    return "" if body is None else str(body)


def redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def translate_error(exc: BaseException, url: str, secrets: Sequence[str] = ()) -> EmbeddingError:
    """Map an SDK exception onto the client's hierarchy (the only place that knows SDK types)."""
    if isinstance(exc, openai.APITimeoutError):
        return EmbeddingTimeout(f"request to {url} timed out", endpoint=url)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        detail = redact(f"{type(cause).__name__}: {cause}", secrets)
        return EmbeddingUnavailable(f"cannot reach {url} ({detail})", endpoint=url)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        message = redact(_server_message(exc.body) or exc.message, secrets)
        request_id = exc.request_id
        if status in RETRYABLE_STATUS or status >= 500:
            return EmbeddingUnavailable(
                f"{url} answered HTTP {status}: {message}",
                status_code=status,
                retry_after=parse_retry_after(exc.response.headers),
                endpoint=url,
                request_id=request_id,
            )
        return EmbeddingRejected(
            f"{url} rejected the request (HTTP {status}): {message}",
            status_code=status,
            endpoint=url,
            request_id=request_id,
            server_message=message,
        )
    detail = redact(str(exc), secrets)
    return EmbeddingError(f"embedding request to {url} failed: {type(exc).__name__}: {detail}")


def _input_specific(error: EmbeddingRejected) -> bool:
    return error.status_code in SPLITTABLE_STATUS and not is_request_level(error.server_message)


def _is_matryoshka_refusal(error: EmbeddingError) -> bool:
    return (
        isinstance(error, EmbeddingRejected)
        and error.status_code == 400
        and is_matryoshka_refusal(error.server_message)
    )


# -- circuit breaker --------------------------------------------------------------------------
class CircuitBreaker:
    """Closed -> open after ``threshold`` consecutive failures -> half-open after ``cooldown``
    (one probe) -> closed on success, open again on failure."""

    def __init__(self, threshold: int, cooldown: float, clock: Clock) -> None:
        self._threshold = threshold
        self._cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_started: float | None = None

    @property
    def state(self) -> Literal["closed", "open", "half-open"]:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "half-open" if self._probe_started is not None else "open"

    def allow(self) -> bool:
        """Whether a request may go out now (taking the half-open probe if it is due)."""
        with self._lock:
            if self._opened_at is None:
                return True
            now = self._clock()
            probe_stale = (
                self._probe_started is not None and now - self._probe_started >= self._cooldown
            )
            if (self._probe_started is None or probe_stale) and (
                now - self._opened_at >= self._cooldown
            ):
                self._probe_started = now
                return True
            return False

    def is_open(self) -> bool:
        with self._lock:
            return self._opened_at is not None and self._probe_started is None

    def retry_in(self) -> float:
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self._opened_at + self._cooldown - self._clock())

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._probe_started = None

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._probe_started is not None or self._failures >= self._threshold:
                self._opened_at = self._clock()
                self._probe_started = None


@dataclass
class EndpointState:
    index: int
    endpoint: Endpoint
    breaker: CircuitBreaker
    #: Whether the server accepts ``dimensions``: unknown (None) until it answers.
    server_dimensions: bool | None = None

    @property
    def url(self) -> str:
        return self.endpoint.base_url


# -- one public call --------------------------------------------------------------------------
@dataclass
class Call:
    """The deadline of one public call."""

    config: ClientConfig
    clock: Clock
    deadline_at: float | None

    def check_deadline(self) -> None:
        if self.deadline_at is not None and self.clock() >= self.deadline_at:
            raise EmbeddingTimeout(f"the call's deadline of {self.config.deadline} s passed")

    def request_timeout(self) -> openai.Timeout:
        self.check_deadline()
        read, connect = self.config.timeout, self.config.connect_timeout
        if self.deadline_at is not None:
            remaining = self.deadline_at - self.clock()
            read, connect = min(read, remaining), min(connect, remaining)
        return openai.Timeout(read, connect=connect)


@dataclass
class Job:
    """The texts of one public call: deduplicated model inputs, cache hits, batches, results."""

    role: Role
    instruction: str
    total: int
    unique: list[str]
    inverse: NDArray[np.intp]
    counts: list[int]
    first_index: list[int]
    tokens: list[int]
    batches: list[list[int]] = field(default_factory=list)
    done: int = 0
    parts: list[tuple[NDArray[np.intp], NDArray[np.float32]]] = field(default_factory=list)

    def inputs(self, batch: Sequence[int]) -> tuple[list[str], list[int]]:
        """Model inputs of a batch and, for error messages, each one's index in the call."""
        return [self.unique[u] for u in batch], [self.first_index[u] for u in batch]

    def add(self, batch: Sequence[int], vectors: NDArray[np.float32]) -> None:
        self.parts.append((np.asarray(batch, dtype=np.intp), vectors))
        self.done += sum(self.counts[u] for u in batch)

    def result(self, width: int) -> Vectors:
        out = np.empty((len(self.unique), width), dtype=np.float32)
        for ids, vectors in self.parts:
            out[ids] = vectors
        if len(self.unique) == self.total:
            return out  # no duplicates: unique order is input order
        return out[self.inverse]


def plan_batches(
    ids: Sequence[int], tokens: Sequence[int], batch_size: int, max_batch_tokens: int
) -> list[list[int]]:
    """Consecutive batches of at most ``batch_size`` texts and ``max_batch_tokens`` tokens
    (a single text over the token budget travels alone)."""
    batches: list[list[int]] = []
    current: list[int] = []
    current_tokens = 0
    for i in ids:
        cost = tokens[i]
        if current and (len(current) >= batch_size or current_tokens + cost > max_batch_tokens):
            batches.append(current)
            current, current_tokens = [], 0
        current.append(i)
        current_tokens += cost
    if current:
        batches.append(current)
    return batches


def _listed(indices: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in indices[:_MAX_LISTED])
    return shown + (f" and {len(indices) - _MAX_LISTED} more" if len(indices) > _MAX_LISTED else "")


# -- the engine -------------------------------------------------------------------------------
class Engine:
    """State shared by the calls of one client: endpoints, breakers, identity, cache."""

    def __init__(
        self, config: ClientConfig, cache: EmbeddingCache | None, clock: Clock = time.monotonic
    ) -> None:
        self.config = config
        self.cache = cache
        self.clock = clock
        policy = config.retry
        self.endpoints = [
            EndpointState(
                i, ep, CircuitBreaker(policy.breaker_threshold, policy.breaker_cooldown, clock)
            )
            for i, ep in enumerate(config.endpoints)
        ]
        self.secrets = tuple(ep.api_key for ep in config.endpoints if ep.api_key)
        self._lock = threading.Lock()
        self._identity: ModelIdentity | None = None
        self._identity_from_cache = False
        self._alias_checked = cache is None
        self._alias = f"{config.endpoints[0].base_url}|{config.model}|{config.dimensions}"
        # initial_wait * 2**(attempt - 1), capped, plus up to initial_wait of random jitter
        self._backoff = wait_exponential(multiplier=policy.initial_wait, max=policy.max_wait) + (
            wait_random(0, policy.initial_wait) if policy.jitter else wait_none()
        )

    # -- identity -------------------------------------------------------------------------
    @property
    def identity(self) -> ModelIdentity | None:
        with self._lock:
            return self._known_identity()

    def _known_identity(self) -> ModelIdentity | None:
        """The identity seen, else the one the cache recorded for this configuration."""
        if not self._alias_checked:
            self._alias_checked = True
            if self._identity is None and self.cache is not None:
                cached = self.cache.get_identity(self._alias)
                if cached is not None:
                    self._identity, self._identity_from_cache = cached, True
        return self._identity

    def _check_identity(self, seen: ModelIdentity, ep: EndpointState) -> None:
        with self._lock:
            known = self._known_identity()
            if known is None:
                self._identity = seen
                logger.info("embedding model %s served by %s", seen, ep.url)
                if self.cache is not None:
                    self.cache.put_identity(self._alias, seen)
                return
            if known == seen:
                return
            source = (
                f"the cache {self.cache.path} recorded {known} for this configuration"
                if self._identity_from_cache and self.cache is not None
                else f"this client already uses {known}"
            )
        raise IncompatibleModelError(
            f"{ep.url} serves {seen}, but {source}; vectors of different models or widths are "
            "not comparable (use the same model and dimensions on every endpoint, or another "
            "cache path)"
        )

    # -- preparing a call -----------------------------------------------------------------
    def start_call(self) -> Call:
        deadline = self.config.deadline
        return Call(self.config, self.clock, None if deadline is None else self.clock() + deadline)

    def prepare(self, texts: Sequence[str], role: Role, instruction: str | None) -> Job:
        """Validate, format, truncate and deduplicate the texts; look up the cache; plan."""
        if isinstance(texts, str | bytes):
            raise InvalidInputError("texts must be a sequence of strings, not a single string")
        not_str = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if not_str:
            raise InvalidInputError(
                f"texts must be strings (token ids are not accepted); not a string at "
                f"indices {_listed(not_str)}",
                tuple(not_str),
            )
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise InvalidInputError(
                f"empty or whitespace-only texts at indices {_listed(empty)}", tuple(empty)
            )
        prompts = self.config.prompts
        if role == "query":
            used = prompts.instruction if instruction is None else instruction

            def fmt(text: str) -> str:
                return prompts.format_query(text, used)
        else:
            used = prompts.instruction if prompts.symmetric else ""
            fmt = prompts.format_document
        limit = self.config.max_input_tokens - 1  # the end-of-text token the server appends
        room = limit - estimate_tokens(fmt("")) - 1  # -1: rounding where text and prompt meet
        if room < 1:
            raise InvalidInputError("the instruction alone exceeds max_input_tokens")

        index: dict[str, int] = {}
        inverse = np.empty(len(texts), dtype=np.intp)
        unique: list[str] = []
        counts: list[int] = []
        first: list[int] = []
        tokens: list[int] = []
        truncated: list[int] = []
        for i, text in enumerate(texts):
            model_input = fmt(text)
            cost = estimate_tokens(model_input)
            if cost > limit:
                model_input = fmt(truncate_to_tokens(text, room))
                cost = estimate_tokens(model_input)
                truncated.append(i)
            uid = index.get(model_input)
            if uid is None:
                uid = index[model_input] = len(unique)
                unique.append(model_input)
                counts.append(0)
                first.append(i)
                tokens.append(cost + 1)
            counts[uid] += 1
            inverse[i] = uid
        if truncated:
            logger.warning(
                "truncated %d text(s) longer than about %d tokens on the client (indices %s)",
                len(truncated),
                limit,
                _listed(truncated),
            )
        job = Job(role, used, len(texts), unique, inverse, counts, first, tokens)
        missing = self._lookup_cache(job)
        job.batches = plan_batches(
            missing, tokens, self.config.batch_size, self.config.max_batch_tokens
        )
        return job

    def _lookup_cache(self, job: Job) -> list[int]:
        identity = self.identity
        if self.cache is None or identity is None or not job.unique:
            return list(range(len(job.unique)))
        keys = [cache_key(identity, job.role, job.instruction, u) for u in job.unique]
        hits = self.cache.get_many(keys, identity.dimensions)
        found = [u for u, key in enumerate(keys) if key in hits]
        if found:
            job.add(found, np.stack([hits[keys[u]] for u in found]))
        return [u for u, key in enumerate(keys) if key not in hits]

    def store(self, job: Job, batch: Sequence[int], vectors: NDArray[np.float32]) -> None:
        """Record a finished batch in the job, and in the cache."""
        job.add(batch, vectors)
        identity = self.identity
        if self.cache is not None and identity is not None:
            keys = [cache_key(identity, job.role, job.instruction, job.unique[u]) for u in batch]
            self.cache.put_many(zip(keys, vectors, strict=True))

    def finish(self, job: Job) -> Vectors:
        identity = self.identity
        width = identity.dimensions if identity is not None else (self.config.dimensions or 0)
        return job.result(width)

    # -- the request flow -----------------------------------------------------------------
    def batch_flow(self, texts: list[str], origins: list[int], call: Call) -> Flow:
        """Embed one batch: endpoints in order, retries, and splitting on a rejected input."""
        try:
            return (yield from self._endpoints_flow(texts, call))
        except EmbeddingRejected as exc:
            if exc.index is not None or not _input_specific(exc):
                raise
            if len(texts) == 1:
                raise EmbeddingRejected(
                    f"input {origins[0]} was rejected by {exc.endpoint} "
                    f"(HTTP {exc.status_code}): {exc.server_message}",
                    status_code=exc.status_code,
                    index=origins[0],
                    endpoint=exc.endpoint,
                    request_id=exc.request_id,
                    server_message=exc.server_message,
                ) from exc
            logger.info(
                "a batch of %d texts was rejected (HTTP %s); splitting it to find the input",
                len(texts),
                exc.status_code,
            )
            mid = len(texts) // 2
            left = yield from self.batch_flow(texts[:mid], origins[:mid], call)
            right = yield from self.batch_flow(texts[mid:], origins[mid:], call)
            return np.concatenate((left, right))

    def _endpoints_flow(self, texts: list[str], call: Call) -> Flow:
        failures: list[EmbeddingUnavailable] = []
        for ep in self.endpoints:
            call.check_deadline()
            if not ep.breaker.allow():
                logger.debug("skipping %s: circuit open", ep.url)
                continue
            try:
                return (yield from self._endpoint_flow(ep, texts, call))
            except EmbeddingUnavailable as exc:
                failures.append(exc)
                if ep is not self.endpoints[-1]:
                    logger.warning("%s is unavailable (%s); trying the next endpoint", ep.url, exc)
        call.check_deadline()
        if not failures:
            wait = min(ep.breaker.retry_in() for ep in self.endpoints)
            raise EmbeddingUnavailable(
                f"every embedding endpoint failed repeatedly and is cooling down "
                f"(circuit open); the next probe is due in {wait:.1f} s"
            )
        last = failures[-1]
        detail = "; ".join(str(f) for f in failures)
        error_type = (
            EmbeddingTimeout if isinstance(last, EmbeddingTimeout) else EmbeddingUnavailable
        )
        raise error_type(
            f"no embedding endpoint could answer: {detail}",
            status_code=last.status_code,
            endpoint=last.endpoint,
            request_id=last.request_id,
        ) from last

    def _endpoint_flow(self, ep: EndpointState, texts: list[str], call: Call) -> Flow:
        policy = self.config.retry
        pending: list[float] = []

        def stop(state: RetryCallState) -> bool:
            if state.attempt_number >= policy.max_attempts or ep.breaker.is_open():
                return True
            upcoming = state.upcoming_sleep or 0.0
            return call.deadline_at is not None and self.clock() + upcoming >= call.deadline_at

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            logger.info(
                "retrying on %s in %.2f s (attempt %d failed: %s)",
                ep.url,
                state.upcoming_sleep,
                state.attempt_number,
                error,
            )

        retrying = Retrying(
            sleep=pending.append,
            stop=stop,
            wait=self._wait,
            retry=retry_if_exception_type(EmbeddingUnavailable),
            before_sleep=before_sleep,
            reraise=True,
        )
        result: Vectors | None = None
        for attempt in retrying:
            with attempt:
                if pending:
                    yield Sleep(pending.pop())
                result = yield from self._request_flow(ep, texts, call)
        if result is None:  # pragma: no cover - tenacity either returns or raises
            raise EmbeddingUnavailable(f"no result from {ep.url}")
        return result

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, EmbeddingUnavailable) and error.retry_after is not None:
            return min(error.retry_after, self.config.retry.max_retry_after)
        return float(self._backoff(state))

    def _request_flow(self, ep: EndpointState, texts: list[str], call: Call) -> Flow:
        dims = self.config.dimensions
        send_dims = dims is not None and ep.server_dimensions is not False
        body: dict[str, Any] = {
            "input": texts,
            "model": self.config.model,
            "encoding_format": self.config.encoding_format,
        }
        if send_dims:
            body["dimensions"] = dims
        outcome = yield Request(ep.index, body, call.request_timeout())
        if isinstance(outcome, BaseException):
            error = translate_error(outcome, ep.url, self.secrets)
            if isinstance(error, EmbeddingUnavailable):
                ep.breaker.record_failure()
                raise error from outcome
            ep.breaker.record_success()  # it answered: the endpoint is up
            if send_dims and _is_matryoshka_refusal(error):
                ep.server_dimensions = False
                logger.info(
                    "%s does not accept dimensions=%s; truncating and renormalising on the client",
                    ep.url,
                    dims,
                )
                return (yield from self._request_flow(ep, texts, call))
            raise error from outcome
        if not isinstance(outcome, str | bytes):  # pragma: no cover - driver contract
            raise TypeError(f"expected the response body, got {type(outcome).__name__}")
        ep.breaker.record_success()
        model, matrix = parse_response(outcome, len(texts))
        width = matrix.shape[1]
        if send_dims:
            if width != dims:
                raise EmbeddingResponseError(f"asked {ep.url} for {dims}-d vectors, got {width}-d")
            ep.server_dimensions = True
        elif dims is not None:
            if width < dims:
                raise ConfigurationError(
                    f"dimensions={dims} exceeds the width of {model} ({width}) served by {ep.url}"
                )
            matrix = matrix[:, :dims]
        matrix = normalise_rows(matrix)
        self._check_identity(ModelIdentity(model, matrix.shape[1]), ep)
        return matrix
