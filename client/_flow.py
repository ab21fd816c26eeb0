"""The sans-IO request flow of one batch: a generator yielding the I/O its driver performs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx
import numpy as np
import openai
from numpy.typing import NDArray
from tenacity import (
    DoAttempt,
    DoSleep,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_exponential,
    wait_none,
    wait_random,
)

from ._breaker import CircuitBreaker, Clock
from ._config import ClientConfig, Endpoint
from ._exceptions import (
    ConfigurationError,
    EmbeddingRejected,
    EmbeddingResponseError,
    EmbeddingTimeout,
    EmbeddingUnavailable,
)
from ._rerank import RerankCall, parse_rerank_response
from ._sglang import is_matryoshka_refusal, is_request_level
from ._types import ModelIdentity, RerankResult, Vectors
from ._vectors import normalize
from ._wire import parse_response, request_body, translate_error

__all__ = [
    "AnyFlow",
    "Deadline",
    "EndpointState",
    "Flow",
    "Outcome",
    "Request",
    "RequestFlow",
    "RerankFlow",
    "Sleep",
    "SplitSize",
    "is_input_specific",
]

logger = logging.getLogger(__name__)

#: A 4xx that one bad input can cause; a batch rejected with it is split to find that input.
SPLITTABLE_STATUS = frozenset({400, 413, 422})
#: Consecutive successes on an endpoint after which its remembered split size doubles.
SPLIT_GROW_AFTER = 16


# -- actions the drivers perform --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Request:
    """POST ``body`` to ``path`` (under ``/v1``) of endpoint number ``endpoint`` (the rerank
    endpoints are numbered after the embedding ones), within ``timeout``; with
    ``method="GET"`` (``/models``) there is no body."""

    endpoint: int
    body: dict[str, Any] | None
    timeout: openai.Timeout
    path: str = "/embeddings"
    method: Literal["POST", "GET"] = "POST"


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait ``seconds`` before the next action."""

    seconds: float


Action = Request | Sleep
#: What a driver sends back: the response body, the SDK's exception, or ``None`` after a sleep.
Outcome = str | bytes | BaseException | None
_R = TypeVar("_R")
#: A flow ending in ``_R``: what one attempt, one endpoint or one batch yields and returns.
AnyFlow = Generator[Action, Outcome, _R]
Flow = AnyFlow[Vectors]
RerankFlow = AnyFlow[list[RerankResult]]


# -- what the flow reads ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Deadline:
    """The moment by which one public call must end (``at=None``: it has none)."""

    seconds: float | None
    at: float | None
    clock: Clock

    @classmethod
    def start(cls, seconds: float | None, clock: Clock) -> Deadline:
        """The deadline ``seconds`` from now (``None``: no deadline)."""
        return cls(seconds, None if seconds is None else clock() + seconds, clock)

    def check(self) -> None:
        """Raise :class:`EmbeddingTimeout` once the deadline has passed."""
        if self.at is not None and self.clock() >= self.at:
            raise EmbeddingTimeout(f"the call's deadline of {self.seconds} s passed")

    def passes_within(self, seconds: float) -> bool:
        """Whether the deadline passes in ``seconds`` from now."""
        return self.at is not None and self.clock() + seconds >= self.at

    def request_timeout(self, read: float, connect: float) -> openai.Timeout:
        """The timeouts of the next request, cut to the time left."""
        self.check()
        if self.at is not None:
            remaining = self.at - self.clock()
            read, connect = min(read, remaining), min(connect, remaining)
        return openai.Timeout(read, connect=connect)


class SplitSize:
    """The most texts an endpoint is sent per request since it timed out on a larger batch.

    ``limit`` is ``None`` (the planned batches go as they are) until a read timeout halves it;
    after :data:`SPLIT_GROW_AFTER` consecutive successes of more than half the limit (sizes
    the limit before it did not allow) it doubles, and once it reaches the configured batch
    size it is lifted again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._limit: int | None = None
        self._successes = 0

    @property
    def limit(self) -> int | None:
        with self._lock:
            return self._limit

    def shrink(self, sent: int) -> int:
        """A request of ``sent`` texts timed out: at most half of it from now on (at least 1)."""
        with self._lock:
            half = max(1, sent // 2)
            self._limit = half if self._limit is None else min(self._limit, half)
            self._successes = 0
            return self._limit

    def record_success(self, sent: int, batch_size: int) -> bool:
        """A request of ``sent`` texts was answered; whether the limit grew (up to
        ``batch_size``, where it is lifted)."""
        with self._lock:
            if self._limit is None or 2 * sent <= self._limit:
                return False  # a size the halved limit allowed too: no evidence for this one
            self._successes += 1
            if self._successes < SPLIT_GROW_AFTER:
                return False
            self._successes = 0
            grown = 2 * self._limit
            self._limit = None if grown >= batch_size else grown
            return True


@dataclass
class EndpointState:
    """One endpoint as the flow sees it: its place in the list, its breaker, what it accepts."""

    index: int
    endpoint: Endpoint
    breaker: CircuitBreaker
    #: Whether the server accepts ``dimensions``: unknown (None) until it answers.
    server_dimensions: bool | None = None
    #: How many texts it is sent per request after read timeouts (embedding endpoints).
    split: SplitSize = field(default_factory=SplitSize)

    @property
    def url(self) -> str:
        return self.endpoint.base_url


def is_input_specific(error: EmbeddingRejected) -> bool:
    """Whether one input may have caused the rejection, so that splitting the batch helps."""
    return error.status_code in SPLITTABLE_STATUS and not is_request_level(error.server_message)


class _TooSlow(Exception):
    """A batch of more than one text timed out in full (not cut by the deadline): the flow
    halves it instead of retrying it; never leaves :meth:`RequestFlow.embed`."""

    def __init__(self, ep: EndpointState, error: EmbeddingTimeout) -> None:
        super().__init__(str(error))
        self.ep = ep
        self.error = error


def _is_read_timeout(exc: BaseException) -> bool:
    """Whether the SDK timed out waiting for the answer (not connecting, not for the pool)."""
    return isinstance(exc, openai.APITimeoutError) and not isinstance(
        exc.__cause__, httpx.ConnectTimeout | httpx.PoolTimeout
    )


def _refuses_matryoshka(error: EmbeddingRejected) -> bool:
    """Whether the server was launched without Matryoshka widths (the client then truncates)."""
    return error.status_code == 400 and is_matryoshka_refusal(error.server_message)


# -- the flow ---------------------------------------------------------------------------------
class RequestFlow:
    """How a batch is embedded: endpoints in order (skipping open circuits), retries with
    backoff or ``Retry-After`` within the deadline, the Matryoshka fallback to truncating on the
    client, splitting a batch rejected for one input, halving a batch that timed out (the
    endpoint remembers the smaller size, see :class:`SplitSize`; a single text that times out
    is retried like any other failure).

    :meth:`embed` yields a :class:`Request` to send or a :class:`Sleep` to wait, and receives
    the response body or the SDK's exception back; ``_sync.py`` and ``_async.py`` only run that
    loop with blocking or awaited I/O. Retries are tenacity's decisions, taken through its
    public driver API (``Retrying.iter`` answering ``DoAttempt`` or ``DoSleep``), the way its
    own tornado driver yields its sleeps.

    ``check_identity(seen, url)`` is called with the identity of every response; it raises
    :class:`IncompatibleModelError` for vectors of another model or width.

    :meth:`rerank` scores a batch of documents on the ``rerankers`` (SGLang's ``/v1/rerank``)
    through the same endpoint loop, retries and breakers; a rerank batch is never split.
    """

    def __init__(
        self,
        config: ClientConfig,
        endpoints: list[EndpointState],
        clock: Clock,
        check_identity: Callable[[ModelIdentity, str], None],
        rerankers: list[EndpointState] | None = None,
    ) -> None:
        self._config = config
        self._endpoints = endpoints
        self._rerankers = rerankers or []
        self._clock = clock
        self._check_identity = check_identity
        every = (*config.endpoints, *config.rerank_endpoints)
        self._secrets = tuple(ep.api_key for ep in every if ep.api_key)
        policy = config.retry
        # initial_wait * 2**(attempt - 1), capped, plus up to initial_wait of random jitter
        self._backoff = wait_exponential(multiplier=policy.initial_wait, max=policy.max_wait) + (
            wait_random(0, policy.initial_wait) if policy.jitter else wait_none()
        )

    def embed(
        self,
        texts: list[str],
        origins: list[int],
        deadline: Deadline,
        extra: Mapping[str, Any] | None = None,
    ) -> Flow:
        """Embed one batch; ``origins`` are the texts' indices in the call, for errors;
        ``extra`` the request fields of the batch's role (role hints).

        A batch is halved (and each half embedded the same way, results concatenated in
        order) when it is larger than the split size the endpoint remembers, when a request of
        it timed out (the endpoint then remembers the smaller size), or when it was rejected
        for one input (to find that input).
        """
        limit = self._split_limit()
        if limit is not None and len(texts) > limit:
            return (yield from self._halves(texts, origins, deadline, extra))
        try:
            return (
                yield from self._first_answering_endpoint(
                    self._endpoints,
                    lambda ep: self._request(ep, texts, deadline, extra),
                    deadline,
                )
            )
        except _TooSlow as slow:
            size = slow.ep.split.shrink(len(texts))
            logger.warning(
                "%s did not answer a batch of %d texts within %s s; sending it at most %d "
                "texts per request",
                slow.ep.url,
                len(texts),
                self._config.timeout,
                size,
            )
            return (yield from self._halves(texts, origins, deadline, extra))
        except EmbeddingRejected as exc:
            if exc.index is not None or not is_input_specific(exc):
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
            return (yield from self._halves(texts, origins, deadline, extra))

    def _halves(
        self,
        texts: list[str],
        origins: list[int],
        deadline: Deadline,
        extra: Mapping[str, Any] | None,
    ) -> Flow:
        """Embed the two halves of a batch of at least two texts, one after the other."""
        mid = len(texts) // 2
        left = yield from self.embed(texts[:mid], origins[:mid], deadline, extra)
        right = yield from self.embed(texts[mid:], origins[mid:], deadline, extra)
        return np.concatenate((left, right))

    def models(self, deadline: Deadline) -> AnyFlow[tuple[str | bytes | None, bool]]:
        """``GET /models`` of the first embedding endpoint that answers it with 200: ``(body,
        True)``; ``(None, answered)`` when none does, ``answered`` telling whether one
        answered at all (a 4xx: it is up but has no such route, or refuses the key).

        One try per endpoint (skipping open circuits), no retries, no breaker records: the
        answer only names the model for choosing prompts, and a call whose servers are down
        fails on its embedding requests with the usual retries and errors.
        """
        answered = False
        for ep in self._endpoints:
            if ep.breaker.is_open():
                continue
            timeout = deadline.request_timeout(self._config.timeout, self._config.connect_timeout)
            outcome = yield Request(ep.index, None, timeout, path="/models", method="GET")
            if isinstance(outcome, BaseException):
                error = translate_error(outcome, ep.url, self._secrets)
                answered = answered or isinstance(error, EmbeddingRejected)
                logger.debug("GET /models of %s failed: %s", ep.url, error)
                continue
            if isinstance(outcome, str | bytes):
                return outcome, True
        return None, answered

    def _split_limit(self) -> int | None:
        """The split size of the endpoint a batch will go to: the first whose circuit is not
        open (``None``: no limit)."""
        for ep in self._endpoints:
            if not ep.breaker.is_open():
                return ep.split.limit
        return None

    def rerank(self, call: RerankCall, batch: list[int], deadline: Deadline) -> RerankFlow:
        """Score one batch of a rerank call (``batch``: indices into ``call.documents``) on the
        rerank endpoints, with the same retries, fallback and breakers as embedding."""
        return (
            yield from self._first_answering_endpoint(
                self._rerankers,
                lambda ep: self._rerank_request(ep, call, batch, deadline),
                deadline,
                "rerank",
            )
        )

    def _first_answering_endpoint(
        self,
        endpoints: list[EndpointState],
        attempt: Callable[[EndpointState], AnyFlow[_R]],
        deadline: Deadline,
        kind: str = "embedding",
    ) -> AnyFlow[_R]:
        """``attempt`` on each endpoint in order (with retries) until one answers."""
        failures: list[EmbeddingUnavailable] = []
        for ep in endpoints:
            deadline.check()
            if not ep.breaker.allow():
                logger.debug("skipping %s: circuit open", ep.url)
                continue
            try:
                return (yield from self._with_retries(ep, attempt, deadline))
            except EmbeddingUnavailable as exc:
                failures.append(exc)
                if ep is not endpoints[-1]:
                    logger.warning("%s is unavailable (%s); trying the next endpoint", ep.url, exc)
        deadline.check()
        if not failures:
            wait = min(ep.breaker.retry_in() for ep in endpoints)
            raise EmbeddingUnavailable(
                f"every {kind} endpoint failed repeatedly and is cooling down "
                f"(circuit open); the next probe is due in {wait:.1f} s"
            )
        last = failures[-1]
        detail = "; ".join(str(f) for f in failures)
        error_type = (
            EmbeddingTimeout if isinstance(last, EmbeddingTimeout) else EmbeddingUnavailable
        )
        raise error_type(
            f"no {kind} endpoint could answer: {detail}",
            status_code=last.status_code,
            endpoint=last.endpoint,
            request_id=last.request_id,
        ) from last

    def _with_retries(
        self,
        ep: EndpointState,
        attempt: Callable[[EndpointState], AnyFlow[_R]],
        deadline: Deadline,
    ) -> AnyFlow[_R]:
        policy = self._config.retry

        def stop(state: RetryCallState) -> bool:
            if state.attempt_number >= policy.max_attempts or ep.breaker.is_open():
                return True
            return deadline.passes_within(state.upcoming_sleep or 0.0)

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
            stop=stop,
            wait=self._wait,
            retry=retry_if_exception_type(EmbeddingUnavailable),
            before_sleep=before_sleep,
            reraise=True,  # the last error itself, never tenacity's RetryError
        )
        retrying.begin()
        state = RetryCallState(retrying, fn=None, args=(), kwargs={})
        while True:
            # The answer once an attempt succeeds; the error itself once tenacity gives up.
            decision = retrying.iter(state)
            if isinstance(decision, DoAttempt):
                try:
                    answer = yield from attempt(ep)
                except Exception as exc:  # tenacity's retry and stop rules judge it
                    state.set_exception((type(exc), exc, exc.__traceback__))
                else:
                    state.set_result(answer)
            elif isinstance(decision, DoSleep):
                state.prepare_for_next_attempt()
                yield Sleep(float(decision))
            else:
                result: _R = decision
                return result

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, EmbeddingUnavailable) and error.retry_after is not None:
            return min(error.retry_after, self._config.retry.max_retry_after)
        return float(self._backoff(state))

    def _request(
        self,
        ep: EndpointState,
        texts: list[str],
        deadline: Deadline,
        extra: Mapping[str, Any] | None,
    ) -> Flow:
        config = self._config
        dims = config.dimensions
        send_dims = dims is not None and ep.server_dimensions is not False
        timeout = deadline.request_timeout(config.timeout, config.connect_timeout)
        body = request_body(config, texts, send_dimensions=send_dims, extra=extra)
        outcome = yield Request(ep.index, body, timeout)
        if isinstance(outcome, BaseException):
            error = translate_error(outcome, ep.url, self._secrets)
            if (
                len(texts) > 1
                and isinstance(error, EmbeddingTimeout)
                and _is_read_timeout(outcome)
                and timeout.read is not None
                and timeout.read >= config.timeout  # a full wait, not one cut by the deadline
            ):
                error.__cause__ = outcome
                raise _TooSlow(ep, error) from error  # halved, not retried, not a failure
            if isinstance(error, EmbeddingUnavailable):
                ep.breaker.record_failure()
                raise error from outcome
            ep.breaker.record_success()  # it answered: the endpoint is up
            if send_dims and isinstance(error, EmbeddingRejected) and _refuses_matryoshka(error):
                ep.server_dimensions = False
                logger.info(
                    "%s does not accept dimensions=%s; truncating and renormalising on the client",
                    ep.url,
                    dims,
                )
                return (yield from self._request(ep, texts, deadline, extra))
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
        matrix = _unit_rows(matrix)
        self._check_identity(ModelIdentity(model, matrix.shape[1]), ep.url)
        if ep.split.record_success(len(texts), config.batch_size):
            grown = ep.split.limit
            logger.info("%s is sent up to %s texts per request again", ep.url, grown or "all")
        return matrix

    def _rerank_request(
        self, ep: EndpointState, call: RerankCall, batch: list[int], deadline: Deadline
    ) -> RerankFlow:
        config = self._config
        timeout = deadline.request_timeout(config.timeout, config.connect_timeout)
        outcome = yield Request(ep.index, call.body(batch), timeout, path="/rerank")
        if isinstance(outcome, BaseException):
            error = translate_error(outcome, ep.url, self._secrets)
            if isinstance(error, EmbeddingUnavailable):
                ep.breaker.record_failure()
            else:
                ep.breaker.record_success()  # it answered: the endpoint is up
            raise error from outcome
        if not isinstance(outcome, str | bytes):  # pragma: no cover - driver contract
            raise TypeError(f"expected the response body, got {type(outcome).__name__}")
        ep.breaker.record_success()
        return parse_rerank_response(outcome, batch, call.expected(batch), ep.url)


def _unit_rows(matrix: NDArray[np.float32]) -> NDArray[np.float32]:
    """Unit L2 rows (:func:`normalize`), refusing an all-zero row: it has no direction."""
    unit = normalize(matrix)
    if not unit.any(axis=1).all():  # normalize leaves exactly the zero-norm rows all zero
        raise EmbeddingResponseError("the server returned an all-zero embedding")
    return unit
