"""bookrec's embedding client: a thin layer over the openai SDK for Qwen3-Embedding on SGLang.

```python
from bookrec.client import ClientConfig, EmbeddingClient

with EmbeddingClient(ClientConfig.from_env()) as embedder:
    books = embedder.embed_documents(["A quiet novel about ...", ...])      # (n, d) float32
    query = embedder.embed_queries(["cosy mysteries set in Kyoto"])        # unit rows
scores = books @ query[0]
```
"""

from ._async import AsyncEmbeddingClient
from ._cache import EmbeddingCache
from ._config import ClientConfig, Endpoint, PromptTemplate, RetryPolicy
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
from ._sync import EmbeddingClient
from ._text import estimate_tokens
from ._types import AsyncEmbedder, Embedder, ModelIdentity, ProgressCallback, PromptFormats

__all__ = [
    "AsyncEmbedder",
    "AsyncEmbeddingClient",
    "CacheError",
    "ClientConfig",
    "ConfigurationError",
    "Embedder",
    "EmbeddingCache",
    "EmbeddingClient",
    "EmbeddingError",
    "EmbeddingRejected",
    "EmbeddingResponseError",
    "EmbeddingTimeout",
    "EmbeddingUnavailable",
    "Endpoint",
    "IncompatibleModelError",
    "InvalidInputError",
    "ModelIdentity",
    "ProgressCallback",
    "PromptFormats",
    "PromptTemplate",
    "RetryPolicy",
    "check_ready",
    "estimate_tokens",
    "list_models",
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
