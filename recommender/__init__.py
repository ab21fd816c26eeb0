"""bookrec's recommender: from a catalog of books to ranked recommendations with reasons.

```python
from bookrec.client import ClientConfig, EmbeddingClient
from bookrec.recommender import Recommender, build_index, load_catalog

catalog = load_catalog("books.jsonl")
with EmbeddingClient(ClientConfig.from_env()) as embedder:
    index, report = build_index("index", catalog, embedder)    # incremental
    rec = Recommender(catalog, index, embedder)
    rec.similar("en-0001", k=5)
    rec.recommend(liked=["en-0001"], preferences=["slow-burn romance"], k=10)
    # A second stage: Qwen3-Reranker (the client's rerank endpoints) orders the top 100.
    Recommender(catalog, index, embedder, reranker=embedder).search("cosy", rerank=True)
```
"""

from .adhoc import encode_texts, find_similar_items, recommend_items
from .book import Book
from .catalog import Catalog
from .catalog_files import load_catalog
from .errors import (
    CatalogError,
    ContradictoryProfileError,
    CorruptIndexError,
    EmptyProfileError,
    IndexBuildError,
    IndexMismatchError,
    IndexNotFoundError,
    RecommenderError,
    UnknownBookError,
)
from .filters import Filters
from .fusion import Fusion
from .hybrid import HybridScoring
from .index import IndexManifest, IndexReport, VectorIndex, build_index
from .lexical import LexicalEmbedder, LexicalScorer
from .numpy_store import NumpyStore
from .profile import ProfileWeights
from .reading_log import (
    MatchedLog,
    ReadingLog,
    ReadingLogError,
    parse_reading_log,
    read_reading_log,
)
from .recommend import Recommendation, Recommender
from .rerank import (
    DEFAULT_RERANK_CANDIDATES,
    READER_RERANK_INSTRUCTION,
    SEARCH_RERANK_INSTRUCTION,
    RerankSettings,
    reader_query,
)
from .store import Hits, VectorStore
from .text import BOOK_TEXT_VERSION, book_text, content_hash

__all__ = [
    "BOOK_TEXT_VERSION",
    "DEFAULT_RERANK_CANDIDATES",
    "READER_RERANK_INSTRUCTION",
    "SEARCH_RERANK_INSTRUCTION",
    "Book",
    "Catalog",
    "CatalogError",
    "ContradictoryProfileError",
    "CorruptIndexError",
    "EmptyProfileError",
    "Filters",
    "Fusion",
    "Hits",
    "HybridScoring",
    "IndexBuildError",
    "IndexManifest",
    "IndexMismatchError",
    "IndexNotFoundError",
    "IndexReport",
    "LexicalEmbedder",
    "LexicalScorer",
    "MatchedLog",
    "NumpyStore",
    "ProfileWeights",
    "ReadingLog",
    "ReadingLogError",
    "Recommendation",
    "Recommender",
    "RecommenderError",
    "RerankSettings",
    "UnknownBookError",
    "VectorIndex",
    "VectorStore",
    "book_text",
    "build_index",
    "content_hash",
    "encode_texts",
    "find_similar_items",
    "load_catalog",
    "parse_reading_log",
    "read_reading_log",
    "reader_query",
    "recommend_items",
]
