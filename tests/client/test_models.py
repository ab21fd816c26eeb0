"""The Qwen3-Embedding model table and what the configuration reads from it."""

from __future__ import annotations

import pytest

from bookrec.client import (
    QWEN3_EMBEDDING_MODELS,
    ClientConfig,
    ConfigurationError,
    known_model_width,
)


def test_the_table_holds_the_model_cards_widths() -> None:
    widths = {size: spec.matryoshka_widths for size, spec in QWEN3_EMBEDDING_MODELS.items()}
    assert widths == {
        "0.6B": (32, 64, 128, 256, 512, 768, 1024),
        "4B": (32, 64, 128, 256, 512, 768, 1024, 1536, 2048, 2560),
        "8B": (32, 64, 128, 256, 512, 768, 1024, 1536, 2048, 2560, 4096),
    }
    assert [spec.width for spec in QWEN3_EMBEDDING_MODELS.values()] == [1024, 2560, 4096]
    assert QWEN3_EMBEDDING_MODELS["4B"].hub_id == "Qwen/Qwen3-Embedding-4B"


@pytest.mark.parametrize(
    ("model", "width"),
    [
        ("Qwen/Qwen3-Embedding-8B", 4096),
        ("/models/qwen3-embedding-4b/", 2560),
        ("Qwen3-Embedding-0.6B", 1024),
        ("intfloat/e5-large-v2", None),
    ],
)
def test_known_widths_by_name(model: str, width: int | None) -> None:
    assert known_model_width(model) == width


def test_the_narrowest_width_is_the_tables() -> None:
    assert ClientConfig(dimensions=32).dimensions == 32
    with pytest.raises(ConfigurationError, match=">= 32"):
        ClientConfig(dimensions=31)
    with pytest.raises(ConfigurationError, match="exceeds the width"):
        ClientConfig(dimensions=1536)
