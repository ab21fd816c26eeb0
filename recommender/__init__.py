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
```
"""

from .adhoc import encode_texts, find_similar_items, recommend_items
from .book import Book
from .catalog import Catalog
from .catalog_files import load_catalog
from .errors import (
    CatalogError,
    CorruptIndexError,
    EmptyProfileError,
    IndexBuildError,
    IndexMismatchError,
    IndexNotFoundError,
    RecommenderError,
    UnknownBookError,
)
from .filters import Filters
from .hybrid import HybridScoring
from .index import IndexManifest, IndexReport, VectorIndex, build_index
from .lexical import LexicalEmbedder, LexicalScorer
from .numpy_store import NumpyStore
from .profile import ProfileWeights
from .recommend import Recommendation, Recommender
from .store import Hits, VectorStore
from .text import BOOK_TEXT_VERSION, book_text, content_hash

__all__ = [
    "BOOK_TEXT_VERSION",
    "Book",
    "Catalog",
    "CatalogError",
    "CorruptIndexError",
    "EmptyProfileError",
    "Filters",
    "Hits",
    "HybridScoring",
    "IndexBuildError",
    "IndexManifest",
    "IndexMismatchError",
    "IndexNotFoundError",
    "IndexReport",
    "LexicalEmbedder",
    "LexicalScorer",
    "NumpyStore",
    "ProfileWeights",
    "Recommendation",
    "Recommender",
    "RecommenderError",
    "UnknownBookError",
    "VectorIndex",
    "VectorStore",
    "book_text",
    "build_index",
    "content_hash",
    "encode_texts",
    "find_similar_items",
    "load_catalog",
    "recommend_items",
]
