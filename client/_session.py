"""The state shared by the calls of one client: its endpoints, the model identity, the cache."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from ._breaker import CircuitBreaker, Clock
from ._cache import EmbeddingCache, cache_key
from ._config import ClientConfig, Endpoint
from ._exceptions import IncompatibleModelError
from ._flow import Deadline, EndpointState, RequestFlow
from ._planning import CallPlan, Role, plan_batches, plan_call
from ._rerank import RerankCall, plan_rerank
from ._types import ModelIdentity, Vectors
from ._urls import strip_userinfo

__all__ = ["EmbeddingSession", "open_cache"]

logger = logging.getLogger(__name__)


def open_cache(
    config: ClientConfig, cache: EmbeddingCache | None
) -> tuple[EmbeddingCache | None, bool]:
    """The cache a client uses, and whether the client opened it (and so must close it)."""
    if cache is None and config.cache_path is not None:
        return EmbeddingCache(config.cache_path), True
    return cache, False


class EmbeddingSession:
    """What the calls of one client share: endpoints with their breakers, the model identity
    the first response (or the cache) revealed, the cache.

    Planning, the request flow (:attr:`flow`) and the identity check do no I/O. The methods
    under "cache I/O" read or write the cache: the drivers run them, the async client in a
    worker thread so that SQLite never blocks its event loop.
    """

    def __init__(
        self, config: ClientConfig, cache: EmbeddingCache | None, clock: Clock = time.monotonic
    ) -> None:
        self.config = config
        self.cache = cache
        self.clock = clock
        policy = config.retry
        # The flow names endpoints in errors and logs, and sends nothing itself (requests go
        # to the SDK clients by number): it sees each URL with its password masked.
        self.endpoints = [
            EndpointState(
                i,
                _for_display(ep),
                CircuitBreaker(policy.breaker_threshold, policy.breaker_cooldown, clock),
            )
            for i, ep in enumerate(config.endpoints)
        ]
        first = len(config.endpoints)
        self.rerankers = [
            EndpointState(
                first + i,
                _for_display(ep),
                CircuitBreaker(policy.breaker_threshold, policy.breaker_cooldown, clock),
            )
            for i, ep in enumerate(config.rerank_endpoints)
        ]
        self.flow = RequestFlow(
            config, self.endpoints, clock, self.check_identity, rerankers=self.rerankers
        )
        self._lock = threading.Lock()  # never held during cache I/O
        self._identity: ModelIdentity | None = None
        self._identity_from_cache = False
        self._identity_loaded = cache is None
        self._identity_unsaved = False
        # The cache records the identity per configuration: first endpoint (without the
        # credentials of its URL), model, width.
        server = strip_userinfo(config.endpoints[0].base_url)
        self._alias = f"{server}|{config.model}|{config.dimensions}"

    # -- without I/O ----------------------------------------------------------------------
    @property
    def identity(self) -> ModelIdentity | None:
        """The identity seen, or the one :meth:`load_identity` found in the cache."""
        with self._lock:
            return self._identity

    def plan(self, texts: Sequence[str], role: Role, instruction: str | None) -> CallPlan:
        return plan_call(self.config, texts, role, instruction)

    def plan_rerank(
        self,
        query: str,
        documents: Sequence[str],
        instruction: str | None,
        top_n: int | None,
    ) -> RerankCall:
        return plan_rerank(self.config, query, documents, instruction, top_n)

    def start_deadline(self) -> Deadline:
        return Deadline.start(self.config.deadline, self.clock)

    def result(self, plan: CallPlan) -> Vectors:
        identity = self.identity
        width = identity.dimensions if identity is not None else (self.config.dimensions or 0)
        return plan.result(width)

    def check_identity(self, seen: ModelIdentity, url: str) -> None:
        """Adopt the first identity seen (:meth:`save_identity` records it); refuse another."""
        with self._lock:
            known = self._identity
            if known is None:
                self._identity = seen
                self._identity_unsaved = self.cache is not None
                logger.info("embedding model %s served by %s", seen, url)
                return
            if known == seen:
                return
            source = (
                f"the cache {self.cache.path} recorded {known} for this configuration"
                if self._identity_from_cache and self.cache is not None
                else f"this client already uses {known}"
            )
        raise IncompatibleModelError(
            f"{url} serves {seen}, but {source}; vectors of different models or widths are "
            "not comparable (use the same model and dimensions on every endpoint, or another "
            "cache path)"
        )

    # -- cache I/O ------------------------------------------------------------------------
    def load_identity(self) -> None:
        """Read the identity the cache recorded for this configuration (once)."""
        with self._lock:
            if self._identity_loaded:
                return
        assert self.cache is not None  # loaded from the start without a cache
        cached = self.cache.get_identity(self._alias)
        with self._lock:
            if not self._identity_loaded:
                self._identity_loaded = True
                if self._identity is None and cached is not None:
                    self._identity, self._identity_from_cache = cached, True

    def save_identity(self) -> None:
        """Record a newly seen identity in the cache (if there is one to record)."""
        with self._lock:
            identity = self._identity if self._identity_unsaved else None
            self._identity_unsaved = False
        if identity is not None and self.cache is not None:
            self.cache.put_identity(self._alias, identity)

    def read_cache(self, plan: CallPlan) -> None:
        """Put the cached vectors into the plan, then batch the inputs the cache lacks."""
        self.load_identity()
        identity = self.identity
        missing: Sequence[int] = range(len(plan.unique))
        if self.cache is not None and identity is not None and plan.unique:
            keys = self._keys(plan, identity, missing)
            hits = self.cache.get_many(keys, identity.dimensions)
            found = [u for u, key in enumerate(keys) if key in hits]
            if found:
                plan.add(found, np.stack([hits[keys[u]] for u in found]))
            missing = [u for u, key in enumerate(keys) if key not in hits]
        plan.batches = plan_batches(
            missing, plan.tokens, self.config.batch_size, self.config.max_batch_tokens
        )

    def store(self, plan: CallPlan, batch: Sequence[int], vectors: NDArray[np.float32]) -> None:
        """Record a finished batch in the plan, then in the cache (after the identity)."""
        plan.add(batch, vectors)
        identity = self.identity
        if self.cache is not None and identity is not None:
            self.save_identity()  # before any vector, so that cached vectors imply it
            self.cache.put_many(zip(self._keys(plan, identity, batch), vectors, strict=True))

    @staticmethod
    def _keys(plan: CallPlan, identity: ModelIdentity, ids: Sequence[int]) -> list[bytes]:
        return [cache_key(identity, plan.role, plan.instruction, plan.unique[u]) for u in ids]


def _for_display(endpoint: Endpoint) -> Endpoint:
    """``endpoint`` as the flow shows it: its URL with the password masked."""
    if endpoint.display_url == endpoint.base_url:
        return endpoint
    return Endpoint(endpoint.display_url, endpoint.api_key)
