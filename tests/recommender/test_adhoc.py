"""The ad hoc functions over plain lists of texts."""

from __future__ import annotations

import numpy as np
import pytest

from bookrec.client.testing import FakeSGLang, fake_vector
from bookrec.recommender import encode_texts, find_similar_items, recommend_items
from tests.recommender.conftest import FakeEmbedder

DOCS = ["cats", "dogs", "stars"]
VECTORS = {"cats": [1, 0, 0], "dogs": [0.8, 0.6, 0], "stars": [0, 0, 1], "pets": [0.9, 0.1, 0]}


def test_find_similar_items_and_recommend_items() -> None:
    client = FakeEmbedder(3, vectors={**VECTORS, "sky": [0, 0.1, 1]})
    pairs = find_similar_items("pets", DOCS, top_k=2, client=client)
    assert [text for text, _ in pairs] == ["cats", "dogs"]
    assert pairs[0][1] == pytest.approx(0.9 / np.hypot(0.9, 0.1), abs=1e-6)
    assert client.calls[0][0] == "queries" and client.calls[1] == ("documents", DOCS, None)
    recs = recommend_items(["pets", "dogs"], DOCS, top_k=3, client=client)
    assert [text for text, _ in recs] == ["dogs", "cats", "stars"]
    assert recommend_items("sky", DOCS, top_k=1, client=client)[0][0] == "stars"
    assert find_similar_items("pets", [], client=client) == []
    with pytest.raises(ValueError):
        find_similar_items("pets", DOCS, top_k=0, client=client)


def test_encode_texts_prompt_names() -> None:
    client = FakeEmbedder(3, vectors=VECTORS)
    assert encode_texts(["cats"], client=client).shape == (1, 3)
    encode_texts(["cats"], prompt_name="query", client=client)
    assert [kind for kind, _, _ in client.calls] == ["documents", "queries"]
    with pytest.raises(ValueError, match="prompt_name"):
        encode_texts(["cats"], prompt_name="passages!", client=client)


def test_default_client_comes_from_the_environment(
    fake_server: FakeSGLang, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOOKREC_BASE_URL", fake_server.base_url)
    vectors = encode_texts(["hello"])
    np.testing.assert_allclose(vectors[0], fake_vector("hello", fake_server.dim), atol=1e-6)
    pairs = find_similar_items("hello", ["hello", "world"], top_k=1)
    assert pairs[0][0] in ("hello", "world") and fake_server.embedding_request_count == 3
