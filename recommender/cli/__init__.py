"""The ``bookrec`` command line, run by ``main`` (the console script's entry point)."""

from __future__ import annotations

from .app import main
from .parser import sample_catalog_path

__all__ = ["main", "sample_catalog_path"]
