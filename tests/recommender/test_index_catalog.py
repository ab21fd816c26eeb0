"""Issue 11, first-run friction: the index records the catalog it was built from (path and a
fingerprint in its manifest, kept by live updates), and a build into a lexical index checks the
embedder's model after one small request instead of embedding every book first."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bookrec.client import ClientConfig, EmbeddingClient, Endpoint, RetryPolicy
from bookrec.client.testing import FakeSGLang
from bookrec.recommender import (
    Book,
    Catalog,
    IndexMismatchError,
    LexicalEmbedder,
    NumpyStore,
    Recommender,
    VectorIndex,
    build_index,
)
from tests.recommender.conftest import FakeEmbedder, make_books

DIM = 16


def _manifest(directory: Path) -> dict[str, object]:
    data = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_the_manifest_records_the_catalog_and_its_fingerprint(tmp_path: Path) -> None:
    catalog = Catalog(make_books(12))
    source = tmp_path / "my.jsonl"
    source.write_text("{}\n", encoding="utf-8")  # the record names the file; it is not re-read
    index, _report = build_index(tmp_path / "idx", catalog, FakeEmbedder(DIM), catalog_path=source)
    record = _manifest(tmp_path / "idx")["catalog"]
    assert isinstance(record, dict)
    assert record["path"] == str(source.resolve())
    assert record["books"] == 12
    assert str(record["fingerprint"]).startswith("blake2b:")
    assert index.manifest is not None and index.manifest.catalog_path == source.resolve()

    # Unchanged books: the same fingerprint, nothing written ("unchanged").
    _again, report = build_index(tmp_path / "idx", catalog, FakeEmbedder(DIM), catalog_path=source)
    assert report.unchanged
    assert _manifest(tmp_path / "idx")["catalog"] == record

    # One book's text changes: another fingerprint.
    books = list(catalog.books)
    books[3] = Book(id=books[3].id, title="A new title")
    build_index(tmp_path / "idx", Catalog(books), FakeEmbedder(DIM), catalog_path=source)
    changed = _manifest(tmp_path / "idx")["catalog"]
    assert isinstance(changed, dict)
    assert changed["path"] == record["path"]
    assert changed["fingerprint"] != record["fingerprint"]


def test_a_build_without_a_catalog_file_gets_the_path_on_its_next_build(tmp_path: Path) -> None:
    catalog = Catalog(make_books(5))
    build_index(tmp_path / "idx", catalog, FakeEmbedder(DIM))
    record = _manifest(tmp_path / "idx")["catalog"]
    assert isinstance(record, dict) and record["path"] is None and record["books"] == 5
    source = tmp_path / "books.jsonl"
    _index, report = build_index(tmp_path / "idx", catalog, FakeEmbedder(DIM), catalog_path=source)
    assert not report.unchanged and report.embedded == 0  # republished for the record only
    manifest = VectorIndex.open(tmp_path / "idx").manifest
    assert manifest is not None and manifest.catalog_path == source.resolve()


def test_live_updates_keep_the_recorded_catalog(tmp_path: Path) -> None:
    catalog = Catalog(make_books(10))
    source = tmp_path / "my.jsonl"
    build_index(tmp_path / "idx", catalog, FakeEmbedder(DIM), catalog_path=source)
    record = _manifest(tmp_path / "idx")["catalog"]
    store = NumpyStore(VectorIndex.open(tmp_path / "idx"), catalog)
    rec = Recommender(catalog, store, FakeEmbedder(DIM))
    rec.put_books([Book(id="new", title="A new book")])
    assert _manifest(tmp_path / "idx")["catalog"] == record
    rec.delete_books(["b001"])
    assert _manifest(tmp_path / "idx")["catalog"] == record
    assert "new" in VectorIndex.open(tmp_path / "idx").ids


@pytest.fixture
def server() -> Iterator[FakeSGLang]:
    with FakeSGLang(dim=32) as srv:
        yield srv


def test_a_lexical_index_refuses_a_service_after_one_small_request(
    tmp_path: Path, server: FakeSGLang
) -> None:
    """Before: all the books were embedded (one request per batch), then the build failed on the
    shape. Now the first request carries one text and the mismatch names --rebuild."""
    catalog = Catalog(make_books(40))
    build_index(tmp_path / "idx", catalog, LexicalEmbedder.from_catalog(catalog))
    changed = Catalog([*catalog.books[1:], Book(id="b000", title="Retitled")])
    config = ClientConfig(
        endpoints=(Endpoint(server.base_url),),
        batch_size=5,
        max_concurrency=1,
        retry=RetryPolicy(max_attempts=1, initial_wait=0.0, max_wait=0.0),
        timeout=5.0,
    )
    with (
        EmbeddingClient(config) as client,
        pytest.raises(IndexMismatchError, match=r"--rebuild") as caught,
    ):
        build_index(tmp_path / "idx", changed, client, rebuild=False)
    assert "bookrec-lexical-tfidf" in str(caught.value)
    assert server.embedding_request_count <= 1
    assert len(server.embedded_texts) <= 1
    # The lexical index is intact and --rebuild still works.
    assert VectorIndex.open(tmp_path / "idx").identity.model.startswith("bookrec-lexical-tfidf")
    with EmbeddingClient(config) as client:
        index, _report = build_index(tmp_path / "idx", changed, client, rebuild=True)
    assert index.dimensions == 32
