"""bookrec's embedding client: a thin layer over the openai SDK for Qwen3-Embedding on SGLang.

```python
from bookrec.client import ClientConfig, EmbeddingClient

with EmbeddingClient(ClientConfig.from_env()) as embedder:
    books = embedder.embed_documents(["A quiet novel about ...", ...])      # (n, d) float32
    query = embedder.embed_queries(["cosy mysteries set in Kyoto"])        # unit rows
    best = embedder.rerank("cosy mysteries set in Kyoto", texts, top_n=10)  # Qwen3-Reranker
scores = books @ query[0]
```
"""

from ._async import AsyncEmbeddingClient
from ._cache import EmbeddingCache
from ._config import ClientConfig, Endpoint, RetryPolicy
from ._constants import DEFAULT_INSTRUCTION, DEFAULT_RERANK_INSTRUCTION
from ._exceptions import (
    CacheError,
    ConfigurationError,
    EmbeddingError,
    EmbeddingRejected,
    EmbeddingResponseError,
    EmbeddingTimeout,
    EmbeddingUnavailable,
    IncompatibleModelError,
    InvalidInputError,
)
from ._health import check_ready, list_models, wait_until_ready
from ._models import MIN_DIMENSIONS, QWEN3_EMBEDDING_MODELS, EmbeddingModelSpec, known_model_width
from ._prompts import PROMPT_PRESETS, PromptTemplate, prompt_family
from ._sglang import SGLANG_INPUT_ERRORS, SGLANG_REQUEST_ERRORS, SGLANG_RERANK_ERRORS
from ._sync import EmbeddingClient
from ._text import estimate_tokens, is_cjk
from ._types import (
    AsyncEmbedder,
    AsyncReranker,
    Embedder,
    ModelIdentity,
    ProgressCallback,
    PromptFormats,
    Reranker,
    RerankResult,
)
from ._vectors import normalize

# Plain code-point order (tests/test_exported_members.py), not ruff's constants-first order.
__all__ = [  # noqa: RUF022
    "AsyncEmbedder",
    "AsyncEmbeddingClient",
    "AsyncReranker",
    "CacheError",
    "ClientConfig",
    "ConfigurationError",
    "DEFAULT_INSTRUCTION",
    "DEFAULT_RERANK_INSTRUCTION",
    "Embedder",
    "EmbeddingCache",
    "EmbeddingClient",
    "EmbeddingError",
    "EmbeddingModelSpec",
    "EmbeddingRejected",
    "EmbeddingResponseError",
    "EmbeddingTimeout",
    "EmbeddingUnavailable",
    "Endpoint",
    "IncompatibleModelError",
    "InvalidInputError",
    "MIN_DIMENSIONS",
    "ModelIdentity",
    "PROMPT_PRESETS",
    "ProgressCallback",
    "PromptFormats",
    "PromptTemplate",
    "QWEN3_EMBEDDING_MODELS",
    "RerankResult",
    "Reranker",
    "RetryPolicy",
    "SGLANG_INPUT_ERRORS",
    "SGLANG_REQUEST_ERRORS",
    "SGLANG_RERANK_ERRORS",
    "check_ready",
    "estimate_tokens",
    "is_cjk",
    "known_model_width",
    "list_models",
    "normalize",
    "prompt_family",
    "wait_until_ready",
]

# Present the public names as members of this package (httpx and openai do the same), so
# reprs, tracebacks and docs show ``client.EmbeddingError`` rather than a private module.
for _name in __all__:
    _member = globals()[_name]
    if getattr(_member, "__module__", "").startswith(__name__ + "."):
        try:
            _member.__module__ = __name__
        except (AttributeError, TypeError):
            pass
del _name, _member
