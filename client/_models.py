"""The Qwen3-Embedding model table: each size's hub id with its Matryoshka widths."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["MIN_DIMENSIONS", "QWEN3_EMBEDDING_MODELS", "EmbeddingModelSpec", "known_model_width"]


@dataclass(frozen=True, slots=True)
class EmbeddingModelSpec:
    """An embedding model: its Hugging Face hub id and the output widths it is trained for.

    ``matryoshka_widths`` are ascending; the last one is the model's full width.
    """

    hub_id: str
    matryoshka_widths: tuple[int, ...]

    @property
    def width(self) -> int:
        """The full width (hidden size) of the model's vectors."""
        return self.matryoshka_widths[-1]


_WIDTHS_0_6B = (32, 64, 128, 256, 512, 768, 1024)
_WIDTHS_4B = (*_WIDTHS_0_6B, 1536, 2048, 2560)
_WIDTHS_8B = (*_WIDTHS_4B, 4096)

#: Qwen3-Embedding by size (model cards): Matryoshka widths from 32 up to the full width.
QWEN3_EMBEDDING_MODELS: Mapping[str, EmbeddingModelSpec] = MappingProxyType(
    {
        "0.6B": EmbeddingModelSpec("Qwen/Qwen3-Embedding-0.6B", _WIDTHS_0_6B),
        "4B": EmbeddingModelSpec("Qwen/Qwen3-Embedding-4B", _WIDTHS_4B),
        "8B": EmbeddingModelSpec("Qwen/Qwen3-Embedding-8B", _WIDTHS_8B),
    }
)

#: The narrowest Matryoshka width a known model supports.
MIN_DIMENSIONS = min(spec.matryoshka_widths[0] for spec in QWEN3_EMBEDDING_MODELS.values())

# Keyed by the last part of the hub id, lower-case: a local path to the weights matches too.
_WIDTH_BY_NAME = {
    spec.hub_id.rsplit("/", 1)[-1].lower(): spec.width for spec in QWEN3_EMBEDDING_MODELS.values()
}


def known_model_width(model: str) -> int | None:
    """The full width of a known model (a hub id or a path ending in its name), else ``None``."""
    name = model.rstrip("/").rsplit("/", 1)[-1].lower()
    return _WIDTH_BY_NAME.get(name)
