"""Defaults for the embedding client (numbers follow the openai SDK where it has one)."""

from __future__ import annotations

from ._models import QWEN3_EMBEDDING_MODELS

DEFAULT_BASE_URL = "http://127.0.0.1:30000/v1"
DEFAULT_MODEL = QWEN3_EMBEDDING_MODELS["0.6B"].hub_id
DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 2.0
DEFAULT_DEADLINE = 600.0
DEFAULT_BATCH_SIZE = 64
DEFAULT_MAX_BATCH_TOKENS = 16384
DEFAULT_MAX_INPUT_TOKENS = 8192
DEFAULT_MAX_CONCURRENCY = 4
#: The reranker is its own server (SGLang without ``--is-embedding``), on its own port.
DEFAULT_RERANK_BASE_URL = "http://127.0.0.1:30001/v1"
#: Documents per ``/v1/rerank`` request; a longer list is split and the answers merged.
DEFAULT_RERANK_BATCH_SIZE = 32

DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_INITIAL_WAIT = 0.5
DEFAULT_MAX_WAIT = 8.0
DEFAULT_MAX_RETRY_AFTER = 30.0
DEFAULT_BREAKER_THRESHOLD = 5
DEFAULT_BREAKER_COOLDOWN = 30.0

#: SGLang needs *some* bearer token in the SDK even when it checks none.
PLACEHOLDER_API_KEY = "EMPTY"

#: The task of bookrec's queries (English even for Chinese text, as Qwen3's model card advises).
DEFAULT_INSTRUCTION = (
    "Given a reader's interests or a book description, retrieve descriptions of books "
    "that the reader would enjoy"
)

#: The task Qwen3-Reranker judges for bookrec (Qwen's own default is web search), in English.
DEFAULT_RERANK_INSTRUCTION = "Given a reader's request, judge whether this book matches it"
