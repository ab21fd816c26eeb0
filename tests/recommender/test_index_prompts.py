"""An index is queried only with the prompts its vectors were made with (``check_prompts``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bookrec.client import PROMPT_PRESETS, ClientConfig, EmbeddingClient, Endpoint, PromptTemplate
from bookrec.client.testing import FakeSGLang
from bookrec.recommender import Catalog, IndexMismatchError, Recommender, VectorIndex, build_index
from tests.recommender.conftest import make_books

E5 = "multilingual-e5-small-q4"


def _client(server: FakeSGLang, prompts: PromptTemplate | None = None) -> EmbeddingClient:
    return EmbeddingClient(ClientConfig(endpoints=(Endpoint(server.base_url),), prompts=prompts))


def test_another_preset_is_refused_at_the_first_query(tmp_path: Path) -> None:
    books = make_books(6)
    with FakeSGLang(model_path=E5, role_prefixes=True, dim=32) as server:
        with _client(server) as client:  # e5-input-type, chosen by probing the server
            build_index(tmp_path, Catalog(books), client)
            assert Recommender(Catalog(books), VectorIndex.open(tmp_path), client).search("x")
        with _client(server, PROMPT_PRESETS["e5"]) as client:  # text prefixes instead
            recommender = Recommender(Catalog(books), VectorIndex.open(tmp_path), client)
            assert recommender.similar(books[0].id)  # no embedding: still fine
            with pytest.raises(IndexMismatchError, match=r"input_type.*--rebuild"):
                recommender.search("x")


def test_another_instruction_is_no_mismatch(tmp_path: Path) -> None:
    books = make_books(6)
    with FakeSGLang(dim=32) as server:
        with _client(server) as client:
            build_index(tmp_path, Catalog(books), client)
        with _client(server, PromptTemplate(instruction="Find calm books")) as client:
            results = Recommender(Catalog(books), VectorIndex.open(tmp_path), client).search("x")
        assert results
        with _client(server, PROMPT_PRESETS["plain"]) as client:  # same documents, plain queries
            recommender = Recommender(Catalog(books), VectorIndex.open(tmp_path), client)
            with pytest.raises(IndexMismatchError, match="prompt preset"):
                recommender.search("x")
