"""The vector index: one unit vector per book, on disk, rebuilt incrementally, saved atomically."""

from bookrec.client import ProgressCallback

from .build import IndexReport, build_index
from .compat import check_compatible, check_prompts
from .manifest import INDEX_FORMAT_VERSION, IndexManifest
from .vector_index import VectorIndex

__all__ = [
    "INDEX_FORMAT_VERSION",
    "IndexManifest",
    "IndexReport",
    "ProgressCallback",
    "VectorIndex",
    "build_index",
    "check_compatible",
    "check_prompts",
]
