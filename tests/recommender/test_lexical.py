"""TF-IDF scoring and the lexical embedder ("lexical mode": no embedding service at all)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bookrec.client import Embedder, InvalidInputError
from bookrec.recommender import (
    LexicalEmbedder,
    LexicalScorer,
    Recommender,
    build_index,
    load_catalog,
)
from bookrec.recommender.lexical import LEXICAL_MODEL_PREFIX

SAMPLE = Path(__file__).resolve().parents[2] / "recommender" / "data" / "sample_catalog.jsonl"


def test_scorer_handles_chinese_and_english() -> None:
    scorer = LexicalScorer(
        ["三体：外星文明与宇宙", "A cookbook of Italian pasta", "", "红楼梦 家族"]
    )
    zh = scorer.scores("外星文明")
    assert zh.shape == (4,) and int(np.argmax(zh)) == 0 and zh[2] == 0.0
    assert int(np.argmax(scorer.scores("pasta recipes"))) == 1


def test_lexical_embedder_is_an_embedder_with_a_corpus_identity() -> None:
    corpus = ["dragons and knights", "space ships and aliens", "长安的荔枝", "a garden of roses"]
    emb = LexicalEmbedder(corpus, max_dimensions=3)
    assert isinstance(emb, Embedder)
    assert emb.identity.model.startswith(LEXICAL_MODEL_PREFIX) and emb.identity.dimensions == 3
    docs = emb.embed_documents(corpus)
    assert docs.shape == (4, 3) and docs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-5)
    again = LexicalEmbedder(corpus, max_dimensions=3)
    assert again.identity == emb.identity
    np.testing.assert_array_equal(again.embed_queries(["roses"]), emb.embed_queries(["roses"]))
    assert LexicalEmbedder([*corpus, "more"], max_dimensions=3).identity != emb.identity
    full = LexicalEmbedder(corpus[:2], max_dimensions=10_000)  # no reduction needed
    assert full.identity.dimensions == 2
    with pytest.raises(InvalidInputError):
        emb.embed_documents(["ok", "  "])
    with pytest.raises(ValueError):
        LexicalEmbedder(["", " "])


def test_lexical_mode_runs_the_whole_pipeline(tmp_path: Path) -> None:
    catalog = load_catalog(SAMPLE)
    embedder = LexicalEmbedder.from_catalog(catalog)
    assert embedder.identity.dimensions <= 256
    index, report = build_index(tmp_path, catalog, embedder)
    assert report.embedded == len(catalog)
    rec = Recommender(catalog, index, embedder)
    three_body = next(b for b in catalog if b.title == "三体")
    similar = rec.similar(three_body.id, k=3)
    assert any("三体" in r.book.title for r in similar)
    found = rec.search("三体 外星文明", k=3)
    assert found[0].book.title.startswith("三体") and not found[0].degraded
