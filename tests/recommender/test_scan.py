"""The compact scan copy: recall floors, exact scores, filters, incremental rebuilds, files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from bookrec.client import ModelIdentity, normalize
from bookrec.recommender import (
    Book,
    Catalog,
    CorruptIndexError,
    NumpyStore,
    Recommender,
    VectorIndex,
    build_index,
)
from bookrec.recommender.cli import main
from bookrec.recommender.index import scan as scan_mod
from bookrec.recommender.index.scan import (
    ScanCopy,
    ScanSpec,
    measure_recall,
    resolve_scan,
    two_stage_batch,
    two_stage_search,
)
from bookrec.recommender.ranking import search, search_batch

from .conftest import FakeEmbedder, make_books

N = 20_000


def uniform(n: int, d: int, seed: int = 0) -> NDArray[np.float32]:
    return normalize(np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32))


def clustered(n: int, d: int, seed: int = 0) -> NDArray[np.float32]:
    """Books around 200 topic centres (cosine to the own topic about 0.7): many near-ties."""
    rng = np.random.default_rng(seed)
    centres = normalize(rng.standard_normal((200, d), dtype=np.float32))
    noise = rng.standard_normal((n, d), dtype=np.float32) / np.float32(np.sqrt(d))
    return normalize(centres[rng.integers(0, 200, size=n)] + noise)


def matryoshka(n: int, d: int, seed: int = 0) -> NDArray[np.float32]:
    """Vectors whose leading dimensions carry most of the signal, as in Matryoshka training."""
    base = clustered(n, d, seed)
    weight = np.where(np.arange(d) < d // 4, 1.0, 0.15).astype(np.float32)
    return normalize(base * weight)


def queries(matrix: NDArray[np.float32], count: int = 48) -> tuple[NDArray[np.intp], NDArray]:
    """Stored rows (as "more like this" uses them) and perturbed ones (like search text)."""
    rng = np.random.default_rng(7)
    rows = rng.choice(matrix.shape[0], size=count, replace=False)
    d = matrix.shape[1]
    noisy = normalize(matrix[rows] + rng.standard_normal((count, d), dtype=np.float32) / d**0.5)
    return rows, np.concatenate([matrix[rows], noisy])


def recall(truth: NDArray[np.intp], got: NDArray[np.intp]) -> float:
    hits = sum(len(set(t.tolist()) & set(g.tolist())) for t, g in zip(truth, got, strict=True))
    return hits / truth.size


@pytest.mark.parametrize("kind", ["random", "clustered"])
@pytest.mark.parametrize("d", [64, 384])
def test_int8_recall_floor_at_the_default_oversample(kind: str, d: int) -> None:
    matrix = (uniform if kind == "random" else clustered)(N, d)
    copy = ScanCopy.encode(ScanSpec("int8"), matrix)
    assert copy.oversample == scan_mod.DEFAULT_OVERSAMPLE
    _, qs = queries(matrix)
    truth, exact_scores = search_batch(matrix, qs, 10)
    got, scores = two_stage_batch(matrix, copy, qs, 10)
    assert recall(truth, got) >= 0.99
    singles = np.stack([two_stage_search(matrix, copy, q, 10)[0] for q in qs])
    assert recall(truth, singles) >= 0.99
    # Where the ids agree, so do the scores: both are float32 cosines.
    same = got == truth
    np.testing.assert_allclose(scores[same], exact_scores[same], atol=1e-6)
    assert measure_recall(matrix, copy) >= 0.99


def test_returned_scores_are_exact_cosines() -> None:
    matrix = clustered(N, 128)
    copy = ScanCopy.encode(ScanSpec("int8"), matrix)
    _, qs = queries(matrix, 8)
    for q in qs:
        rows, scores = two_stage_search(matrix, copy, q, 10)
        reference = matrix[rows].astype(np.float64) @ q.astype(np.float64)
        np.testing.assert_allclose(scores, reference, atol=1e-6)
        assert np.all(np.diff(scores) <= 0)
        # The int8 approximation is close, but not what is returned.
        approx = copy.score(q)[rows]
        assert not np.array_equal(approx, scores)
        assert np.abs(approx - scores).max() < 0.02


def test_masks_exclusions_and_bonus_follow_the_exact_path() -> None:
    matrix = clustered(N, 96)
    copy = ScanCopy.encode(ScanSpec("int8"), matrix)
    rng = np.random.default_rng(3)
    allowed = rng.random(N) < 0.5
    bonus = (rng.random(N) * 0.05).astype(np.float32)
    rows_q, qs = queries(matrix, 16)
    for i, q in enumerate(qs):
        drop = [int(rows_q[i % 16]), *rng.choice(N, size=50, replace=False).tolist()]
        got, got_scores = two_stage_search(
            matrix, copy, q, 10, allowed=allowed, exclude=drop, bonus=bonus
        )
        want, want_scores = search(matrix, q, 10, allowed=allowed, exclude=drop, bonus=bonus)
        assert got.tolist() == want.tolist()
        np.testing.assert_allclose(got_scores, want_scores, atol=1e-6)
        assert allowed[got].all() and not set(drop) & set(got.tolist())
    # Fewer allowed rows than asked: all of them, exactly ranked, never a masked one.
    few = np.zeros(N, dtype=bool)
    few[[5, 17, 300]] = True
    got, _ = two_stage_search(matrix, copy, qs[0], 10, allowed=few)
    assert sorted(got.tolist()) == [5, 17, 300]
    batch, _ = two_stage_batch(matrix, copy, qs[:8], 10, allowed=few)
    assert all(sorted(r[r >= 0].tolist()) == [5, 17, 300] for r in batch)


def _store(matrix: NDArray[np.float32], tmp: Path, *, scan: str) -> NumpyStore:
    n = matrix.shape[0]
    ids = [f"b{i}" for i in range(n)]
    index = VectorIndex.from_vectors(ids, matrix, ModelIdentity("t/m", matrix.shape[1]))
    saved = index.save(tmp, scan=scan)
    books = (Book(i, f"Book {i}", language="zh" if r % 3 == 0 else "en") for r, i in enumerate(ids))
    return NumpyStore(saved, Catalog(books))


def test_recommender_through_the_scan_copy_equals_exact(tmp_path: Path) -> None:
    matrix = clustered(N, 128)
    store = _store(matrix, tmp_path / "idx", scan="int8")
    assert store.index.scan is not None and store.index.scan.spec.name == "int8"
    exact = NumpyStore(store.index, store.catalog(), exact=True)
    fast, slow = Recommender(store.catalog(), store), Recommender(store.catalog(), exact)
    for book in ("b1", "b77", "b1234"):
        a = [(r.book.id, round(r.score, 5)) for r in fast.similar(book, k=10)]
        b = [(r.book.id, round(r.score, 5)) for r in slow.similar(book, k=10)]
        assert a == b
        zh = [r.book.id for r in fast.similar(book, k=10, languages=["zh"])]
        assert zh == [r.book.id for r in slow.similar(book, k=10, languages=["zh"])]
        assert all(int(i[1:]) % 3 == 0 for i in zh)
    liked = ["b1", "b2", "b3"]
    a = [r.book.id for r in fast.recommend(liked=liked, k=10, strategy="best")]
    assert a == [r.book.id for r in slow.recommend(liked=liked, k=10, strategy="best")]
    assert not set(a) & set(liked)


def test_index_files_and_manifest(tmp_path: Path) -> None:
    matrix = uniform(2_000, 32)
    store = _store(matrix, tmp_path / "idx", scan="int8")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    gen = tmp_path / "idx" / manifest["generation"]
    assert manifest["scan_request"] == "int8"
    assert manifest["scan"]["kind"] == "int8" and manifest["scan"]["recall_at_10"] >= 0.99
    assert manifest["files"]["scan"] == f"{manifest['generation']}/scan.npy"
    codes = np.load(gen / "scan.npy")
    assert codes.dtype == np.int8 and codes.shape == (2_000, 32)
    scales = np.load(gen / "scan-scale.npy")
    # Symmetric per-row codes: code * scale reproduces each row to within half a step.
    err = np.abs(codes * scales[:, None] - matrix).max(axis=1)
    assert np.all(err <= scales * 0.5 + 1e-7)
    assert store.index.scan is not None and store.index.scan.nbytes == codes.nbytes + 8_000
    # A missing or reshaped file is a corrupt index, named, with the way out.
    (gen / "scan-scale.npy").unlink()
    with pytest.raises(CorruptIndexError, match=r"scan-scale\.npy.*--rebuild"):
        VectorIndex.open(tmp_path / "idx")
    np.save(gen / "scan-scale.npy", scales)
    np.save(gen / "scan.npy", codes[:10])
    with pytest.raises(CorruptIndexError, match=r"scan\.npy holds int8 \(10, 32\)"):
        VectorIndex.open(tmp_path / "idx")


def test_auto_adds_the_copy_from_the_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_scan("auto", scan_mod.AUTO_ROWS - 1, 1024) is None
    assert resolve_scan("auto", scan_mod.AUTO_ROWS, 1024) == ScanSpec("int8")
    assert resolve_scan("none", 10**7, 1024) is None
    assert resolve_scan("int8-mrl256", 10, 1024) == ScanSpec("int8", 256)
    with pytest.raises(ValueError, match="saves nothing"):
        resolve_scan("mrl256", 10, 256)
    with pytest.raises(ValueError, match="unknown scan copy"):
        resolve_scan("int4", 10, 256)
    monkeypatch.setattr(scan_mod, "AUTO_ROWS", 30)
    catalog = Catalog(make_books(40))
    index, _ = build_index(tmp_path / "big", catalog, FakeEmbedder(dim=24))
    assert index.scan is not None and index.scan.spec.name == "int8"
    index, _ = build_index(tmp_path / "small", Catalog(make_books(20)), FakeEmbedder(dim=24))
    assert index.scan is None
    index, _ = build_index(tmp_path / "off", catalog, FakeEmbedder(dim=24), scan="none")
    assert index.scan is None


def test_incremental_build_reuses_codes_of_unchanged_books(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    books = make_books(60)
    first, _ = build_index(tmp_path, Catalog(books), FakeEmbedder(dim=32), scan="int8")
    assert first.scan is not None
    old_codes = {i: first.scan.codes[r].copy() for r, i in enumerate(first.ids)}
    encoded: list[int] = []
    real = scan_mod.encode_rows

    def counting(spec: ScanSpec, rows: NDArray[np.floating]) -> tuple:
        encoded.append(len(rows))
        return real(spec, rows)

    monkeypatch.setattr(scan_mod, "encode_rows", counting)
    changed = [*books[:50], Book("new1", "A new book"), Book("new2", "Another new book")]
    changed[3] = Book(books[3].id, "A retitled book")
    index, report = build_index(tmp_path, Catalog(changed), FakeEmbedder(dim=32))
    assert report.reused == 49 and report.embedded == 3
    assert index.manifest is not None and index.manifest.scan_request == "int8"
    assert index.scan is not None and len(index.scan) == 52
    assert sum(encoded) == 3  # the new and the changed rows only
    fresh = ScanCopy.encode(ScanSpec("int8"), index.vectors)
    np.testing.assert_array_equal(np.asarray(index.scan.codes), fresh.codes)
    np.testing.assert_array_equal(np.asarray(index.scan.scales), fresh.scales)
    for r, book_id in enumerate(index.ids):
        if book_id in old_codes and book_id != books[3].id:
            np.testing.assert_array_equal(index.scan.codes[r], old_codes[book_id])


def test_live_updates_keep_the_copy_in_step(tmp_path: Path) -> None:
    matrix = clustered(3_000, 48)
    store = _store(matrix, tmp_path / "idx", scan="int8")
    target = matrix[10] * 0.9 + matrix[11] * 0.1
    store.upsert([Book("fresh", "Fresh")], target[None, :], ["h"])
    assert store.index.scan is not None and len(store.index.scan) == 3_001
    (hits,) = store.search(normalize(target[None, :]), 3)
    assert hits.ids[0] == "fresh"
    store.delete(["fresh", "b10"])
    assert store.index.scan is not None and len(store.index.scan) == 2_999
    (hits,) = store.search(matrix[10:11], 50)
    assert "fresh" not in hits.ids and "b10" not in hits.ids
    reopened = VectorIndex.open(tmp_path / "idx")
    assert reopened.scan is not None
    np.testing.assert_array_equal(
        reopened.scan.codes, ScanCopy.encode(ScanSpec("int8"), reopened.vectors).codes
    )
    # The same updates on an index held in memory only.
    memory = NumpyStore(
        VectorIndex.from_vectors([f"b{i}" for i in range(3_000)], matrix, scan="int8"),
        store.catalog(),
    )
    memory.upsert([Book("fresh", "Fresh")], target[None, :], ["h"])
    assert memory.index.scan is not None and len(memory.index.scan) == 3_001
    assert memory.search(normalize(target[None, :]), 1)[0].ids == ("fresh",)


def test_matryoshka_prefix_is_kept_only_when_it_keeps_recall(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [f"b{i}" for i in range(N)]
    nested = VectorIndex.from_vectors(ids, matryoshka(N, 256), scan="int8-mrl64")
    assert nested.scan is not None and nested.scan.spec == ScanSpec("int8", 64)
    assert nested.scan.recall is not None and nested.scan.recall >= 0.99
    assert nested.scan.codes.shape == (N, 64)
    with caplog.at_level(logging.WARNING):
        flat = VectorIndex.from_vectors(ids, uniform(N, 256), scan="mrl64")
    assert flat.scan is None
    assert "not Matryoshka-trained" in caplog.text


def test_cli_scan_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["index", "--scan", "int4", "-i", str(tmp_path / "x")])
    assert code == 2
    assert "unknown scan copy 'int4'" in capsys.readouterr().err
