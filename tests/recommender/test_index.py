"""The vector index: incremental builds, manifest, storage, mismatch, resume and corruption."""

from __future__ import annotations

import dataclasses
import fcntl
import json
from pathlib import Path

import numpy as np
import pytest

from bookrec.client import ModelIdentity
from bookrec.recommender import (
    BOOK_TEXT_VERSION,
    Catalog,
    CorruptIndexError,
    IndexBuildError,
    IndexMismatchError,
    IndexNotFoundError,
    RecommenderError,
    UnknownBookError,
    VectorIndex,
    book_text,
    build_index,
    content_hash,
)
from tests.recommender.conftest import FakeEmbedder, make_books, text_vector


def _generation_dirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.startswith("gen-"))


def test_first_build_writes_a_complete_index(tmp_path: Path, embedder: FakeEmbedder) -> None:
    catalog = Catalog(make_books(12))
    seen: list[tuple[int, int]] = []
    index, report = build_index(
        tmp_path / "idx", catalog, embedder, progress=lambda d, t: seen.append((d, t)), chunk_size=5
    )
    assert (report.total, report.embedded, report.reused, report.removed) == (12, 12, 0, 0)
    assert not report.unchanged and report.identity == ModelIdentity("fake/embedder", 16)
    assert seen[0] == (0, 12) and seen[-1] == (12, 12)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert len(embedder.calls) == 3  # chunks of 5, 5 and 2
    assert index.ids == catalog.ids and isinstance(index.vectors.base, np.memmap)
    assert index.vectors.dtype == np.float32 and index.vectors.shape == (12, 16)
    expected = text_vector(book_text(catalog.books[3]), 16)
    np.testing.assert_allclose(index.vector(catalog.books[3].id), expected, rtol=1e-6)
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["model"] == "fake/embedder" and manifest["dimensions"] == 16
    assert manifest["count"] == 12 and manifest["dtype"] == "float32"
    assert manifest["text_version"] == BOOK_TEXT_VERSION
    assert manifest["last_build"] == {"embedded": 12, "reused": 0, "resumed": 0, "removed": 0}
    assert manifest["created_at"] and manifest["updated_at"]
    gen = tmp_path / "idx" / manifest["generation"]
    assert json.loads((gen / "ids.json").read_text()) == list(catalog.ids)
    assert json.loads((gen / "hashes.json").read_text()) == [content_hash(b) for b in catalog]
    assert not (tmp_path / "idx" / "staging").exists()


def test_unchanged_catalog_makes_no_call_and_writes_nothing(
    tmp_path: Path, embedder: FakeEmbedder
) -> None:
    catalog = Catalog(make_books(10))
    build_index(tmp_path, catalog, embedder)
    gens = _generation_dirs(tmp_path)
    calls = len(embedder.calls)
    index, report = build_index(tmp_path, catalog, embedder)
    assert len(embedder.calls) == calls
    assert report.unchanged and (report.embedded, report.reused, report.removed) == (0, 10, 0)
    assert _generation_dirs(tmp_path) == gens and len(index) == 10


def test_only_changed_books_are_embedded(tmp_path: Path, embedder: FakeEmbedder) -> None:
    books = make_books(10)
    first, _ = build_index(tmp_path, Catalog(books), embedder)
    old_vec = first.vector("b001")
    old_gen = _generation_dirs(tmp_path)
    changed = dataclasses.replace(books[4], summary="A brand new summary.")
    rated = dataclasses.replace(books[5], rating=0.5)  # not part of the embedded text
    added = make_books(12)[11]
    new_books = [*books[:4], changed, rated, *books[6:9], added]  # books[9] removed
    embedder.calls.clear()
    index, report = build_index(tmp_path, Catalog(new_books), embedder)
    assert embedder.documents_embedded == [book_text(changed), book_text(added)]
    assert (report.embedded, report.reused, report.removed, report.total) == (2, 8, 1, 10)
    assert index.ids == tuple(b.id for b in new_books)
    np.testing.assert_array_equal(index.vector("b001"), old_vec)
    np.testing.assert_allclose(index.vector("b004"), text_vector(book_text(changed), 16), rtol=1e-6)
    assert _generation_dirs(tmp_path) != old_gen and len(_generation_dirs(tmp_path)) == 1
    # Reordering or removing books needs no embedding either.
    embedder.calls.clear()
    _, report = build_index(tmp_path, Catalog(list(reversed(new_books[:6]))), embedder)
    assert embedder.calls == [] and (report.embedded, report.removed) == (0, 4)


def test_identical_texts_are_embedded_once(tmp_path: Path, embedder: FakeEmbedder) -> None:
    books = make_books(3)
    twin = dataclasses.replace(books[0], id="twin")
    _, report = build_index(tmp_path, Catalog([*books, twin]), embedder)
    assert len(embedder.documents_embedded) == 3 and report.embedded == 4


def test_float16_storage(tmp_path: Path, embedder: FakeEmbedder) -> None:
    catalog = Catalog(make_books(8))
    index, _ = build_index(tmp_path, catalog, embedder, dtype="float16")
    assert index.vectors.dtype == np.float16
    assert index.vector("b002").dtype == np.float32
    np.testing.assert_allclose(
        index.vector("b002"), text_vector(book_text(catalog["b002"]), 16), atol=2e-3
    )
    _, report = build_index(tmp_path, catalog, embedder, dtype="float32")
    assert not report.unchanged and report.embedded == 0  # converted, not re-embedded
    assert VectorIndex.open(tmp_path).vectors.dtype == np.float32


def test_mismatched_embedder_is_refused(tmp_path: Path) -> None:
    catalog = Catalog(make_books(6))
    build_index(tmp_path, catalog, FakeEmbedder(16))
    # Known before any request: configured dimensions.
    wide = FakeEmbedder(32, configured_dimensions=32)
    with pytest.raises(IndexMismatchError, match="configured for 32 dimensions"):
        VectorIndex.open(tmp_path, embedder=wide)
    with pytest.raises(IndexMismatchError):
        build_index(tmp_path, Catalog(make_books(7)), wide)
    assert wide.calls == []
    # Known after the first response: the model the server reports.
    other = FakeEmbedder(16, model="other/model")
    with pytest.raises(IndexMismatchError, match=r"fake/embedder \(16-d\).*other/model"):
        build_index(tmp_path, Catalog(make_books(7)), other)
    assert len(other.calls) == 1
    with pytest.raises(IndexMismatchError):
        VectorIndex.open(tmp_path, embedder=other)
    index = VectorIndex.open(tmp_path)  # the index itself is untouched
    assert len(index) == 6 and index.identity.model == "fake/embedder"
    # rebuild=True switches models.
    index, report = build_index(tmp_path, catalog, other, rebuild=True)
    assert index.identity.model == "other/model" and report.embedded == 6


def test_resume_after_the_service_dies(tmp_path: Path) -> None:
    catalog = Catalog(make_books(30))
    old = Catalog(make_books(5))
    build_index(tmp_path, old, FakeEmbedder())
    dying = FakeEmbedder(fail_after=2)
    with pytest.raises(IndexBuildError) as err:
        build_index(tmp_path, catalog, dying, chunk_size=5)
    assert (err.value.embedded, err.value.remaining) == (10, 15)
    assert "run the build again" in str(err.value) and err.value.__cause__ is not None
    assert len(VectorIndex.open(tmp_path)) == 5  # previous index still live
    assert len(list((tmp_path / "staging").glob("chunk-*.npz"))) == 2
    fresh = FakeEmbedder()
    index, report = build_index(tmp_path, catalog, fresh, chunk_size=5)
    assert len(fresh.documents_embedded) == 15
    assert (report.embedded, report.resumed, report.reused) == (15, 10, 5)
    assert len(index) == 30 and not (tmp_path / "staging").exists()
    for book in catalog:
        np.testing.assert_allclose(
            index.vector(book.id), text_vector(book_text(book), 16), rtol=1e-6
        )


def test_staged_vectors_from_another_model_are_discarded(tmp_path: Path) -> None:
    catalog = Catalog(make_books(10))
    with pytest.raises(IndexBuildError):
        build_index(tmp_path, catalog, FakeEmbedder(fail_after=1), chunk_size=4)
    other = FakeEmbedder(model="other/model")
    index, report = build_index(tmp_path, catalog, other, chunk_size=4)
    assert len(other.documents_embedded) == 10 and report.embedded == 10
    assert index.identity.model == "other/model"


def test_open_errors(tmp_path: Path, embedder: FakeEmbedder) -> None:
    with pytest.raises(IndexNotFoundError, match="no index at"):
        VectorIndex.open(tmp_path / "missing")
    build_index(tmp_path, Catalog(make_books(4)), embedder)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    vectors = tmp_path / manifest["generation"] / "vectors.npy"
    data = vectors.read_bytes()
    vectors.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptIndexError, match=r"vectors\.npy"):
        VectorIndex.open(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CorruptIndexError, match="cannot be read"):
        VectorIndex.open(tmp_path)
    manifest["format_version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(CorruptIndexError, match="not supported"):
        VectorIndex.open(tmp_path)
    # A rebuild repairs it.
    index, _ = build_index(tmp_path, Catalog(make_books(4)), embedder, rebuild=True)
    assert len(VectorIndex.open(tmp_path)) == 4 and index.row("b003") == 3
    with pytest.raises(UnknownBookError, match="not in the index"):
        index.row("zzz")


def test_leftovers_of_interrupted_saves_are_cleaned(tmp_path: Path, embedder: FakeEmbedder) -> None:
    build_index(tmp_path, Catalog(make_books(4)), embedder)
    (tmp_path / ".tmp-gen-000099-abcdef").mkdir()
    (tmp_path / "gen-000098-abcdef").mkdir()
    assert len(VectorIndex.open(tmp_path)) == 4  # strays do not disturb readers
    build_index(tmp_path, Catalog(make_books(5)), embedder)
    names = {p.name for p in tmp_path.iterdir()}
    assert ".tmp-gen-000099-abcdef" not in names and "gen-000098-abcdef" not in names
    assert len(_generation_dirs(tmp_path)) == 1


def test_concurrent_builds_are_refused(tmp_path: Path, embedder: FakeEmbedder) -> None:
    with (tmp_path / ".lock").open("a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        with pytest.raises(RecommenderError, match="another build"):
            build_index(tmp_path, Catalog(make_books(2)), embedder)


def test_stale_ids_and_in_memory_index(tmp_path: Path, embedder: FakeEmbedder) -> None:
    books = make_books(4)
    index, _ = build_index(tmp_path, Catalog(books), embedder)
    changed = dataclasses.replace(books[1], title="Renamed")
    extra = make_books(6)[5]
    assert index.stale_ids(Catalog([books[0], changed, extra])) == ["b001", "b005"]
    mem = VectorIndex.from_vectors(["a", "b"], np.array([[3.0, 4.0], [0.0, 2.0]]))
    assert mem.vector("a").tolist() == pytest.approx([0.6, 0.8]) and mem.manifest is None
    with pytest.raises(ValueError, match="2 ids"):
        VectorIndex.from_vectors(["a", "b"], np.ones((3, 2)))


def test_save_an_in_memory_index(tmp_path: Path, embedder: FakeEmbedder) -> None:
    books = make_books(3)
    vectors = np.stack([text_vector(book_text(b), 16) for b in books])
    mem = VectorIndex.from_vectors(
        [b.id for b in books], vectors, ModelIdentity("fake/embedder", 16)
    )
    saved = mem.save(tmp_path, dtype="float16")
    assert saved.vectors.dtype == np.float16 and saved.ids == mem.ids
    np.testing.assert_allclose(saved.vector("b001"), vectors[1], atol=2e-3)
    # Rows saved without content hashes are embedded by the next build.
    _, report = build_index(tmp_path, Catalog(books), embedder)
    assert report.embedded == 3 and report.removed == 0
