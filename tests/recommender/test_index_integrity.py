"""Index integrity: sizes checked on open, checksums with rows by ``--verify`` or a build."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bookrec.recommender import Catalog, CorruptIndexError, VectorIndex, build_index
from bookrec.recommender.cli import main
from tests.recommender.conftest import FakeEmbedder, make_books

BOOKS = 40


@pytest.fixture
def built(tmp_path: Path) -> Path:
    path = tmp_path / "idx"
    build_index(path, Catalog(make_books(BOOKS)), FakeEmbedder())
    return path


def _gen(path: Path) -> Path:
    manifest = json.loads((path / "manifest.json").read_text())
    return path / manifest["generation"]


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: Any, *args: str) -> tuple[int, str, str]:
    for key in list(os.environ):
        if key.startswith("BOOKREC_"):
            monkeypatch.delenv(key)
    capsys.readouterr()
    out = io.StringIO()
    code = main(list(args), out=out)
    return code, out.getvalue(), capsys.readouterr().err


def _edit_rows(path: Path, edit: Callable[[np.ndarray], None]) -> None:
    vectors = np.load(_gen(path) / "vectors.npy", mmap_mode="r+")
    edit(vectors)
    vectors.flush()
    del vectors


def _nan_row(v: np.ndarray) -> None:
    v[3] = np.nan


def _scaled_by_10(v: np.ndarray) -> None:
    v[:] = v * 10


def _zero_row(v: np.ndarray) -> None:
    v[5] = 0


def _random_values(v: np.ndarray) -> None:
    v[:] = np.random.default_rng(1).normal(size=v.shape).astype(np.float32)


ROW_DAMAGE = {
    "nan_row": _nan_row,
    "scaled_by_10": _scaled_by_10,
    "zero_row": _zero_row,
    "random_values": _random_values,
}


def _strip_checksums(path: Path) -> None:
    """Make the manifest look like one written before checksums were recorded."""
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["checksums"]
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_the_manifest_records_size_and_checksum_of_every_file(built: Path) -> None:
    manifest = json.loads((built / "manifest.json").read_text())
    gen = _gen(built)
    assert set(manifest["checksums"]) == {"vectors.npy", "ids.json", "hashes.json"}
    for name, record in manifest["checksums"].items():
        assert record["size"] == (gen / name).stat().st_size
        assert len(record["blake2b"]) == 64
    report = VectorIndex.open(built).verify()
    assert report.checksummed and report.rows == BOOKS
    assert report.bytes == sum(r["size"] for r in manifest["checksums"].values())


@pytest.mark.parametrize("damage", sorted(ROW_DAMAGE))
def test_verify_detects_damaged_vectors(
    built: Path, damage: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    _edit_rows(built, ROW_DAMAGE[damage])
    VectorIndex.open(built)  # same sizes: opening stays a stat
    code, _, err = _cli(monkeypatch, capsys, "index", "--verify", "--index", str(built))
    assert code == 4, err
    assert "vectors.npy" in err and "checksum" in err and "--rebuild" in err


@pytest.mark.parametrize("damage", sorted(ROW_DAMAGE))
def test_row_check_catches_damage_without_checksums(
    built: Path, damage: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    _strip_checksums(built)
    _edit_rows(built, ROW_DAMAGE[damage])
    with pytest.raises(CorruptIndexError, match=r"vectors\.npy: \d+ of 40 rows are not finite"):
        VectorIndex.open(built).verify()
    code, _, err = _cli(monkeypatch, capsys, "index", "--verify", "--index", str(built))
    assert code == 4 and "vectors.npy" in err and "--rebuild" in err


@pytest.mark.parametrize("damage", sorted(ROW_DAMAGE))
def test_incremental_build_refuses_a_damaged_index(built: Path, damage: str) -> None:
    _edit_rows(built, ROW_DAMAGE[damage])
    embedder = FakeEmbedder()
    catalog = Catalog(make_books(BOOKS))
    with pytest.raises(CorruptIndexError, match=r"vectors\.npy.*--rebuild"):
        build_index(built, catalog, embedder)
    assert embedder.calls == []
    _, report = build_index(built, catalog, embedder, rebuild=True)
    assert report.embedded == BOOKS
    VectorIndex.open(built).verify()


def test_swapped_ids_fail_the_checksum(
    built: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    ids_path = _gen(built) / "ids.json"
    ids = json.loads(ids_path.read_text())
    ids[0], ids[1] = ids[1], ids[0]
    ids_path.write_text(json.dumps(ids, indent=1) + "\n")
    code, _, err = _cli(monkeypatch, capsys, "index", "--verify", "--index", str(built))
    assert code == 4 and "ids.json" in err and "checksum" in err and "--rebuild" in err
    with pytest.raises(CorruptIndexError, match=r"ids\.json does not match its checksum"):
        build_index(built, Catalog(make_books(BOOKS)), FakeEmbedder())


def test_empty_vectors_file_is_corrupt_on_open(
    built: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    (_gen(built) / "vectors.npy").write_bytes(b"")
    with pytest.raises(CorruptIndexError, match=r"vectors\.npy.*--rebuild"):
        VectorIndex.open(built)
    for args in (("index", "--verify"), ("similar", "b001")):
        code, _, err = _cli(monkeypatch, capsys, *args, "--index", str(built))
        assert code == 4, err
        assert "vectors.npy" in err and "EOFError" not in err and "internal error" not in err


def test_empty_vectors_file_without_checksums_is_corrupt(built: Path) -> None:
    _strip_checksums(built)
    (_gen(built) / "vectors.npy").write_bytes(b"")
    with pytest.raises(CorruptIndexError, match=r"vectors\.npy cannot be read"):
        VectorIndex.open(built)


@pytest.mark.parametrize("old_format", [False, True])
def test_deleted_hashes_file_is_named_on_open(
    built: Path, old_format: bool, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    if old_format:
        _strip_checksums(built)
    (_gen(built) / "hashes.json").unlink()
    with pytest.raises(CorruptIndexError, match=r"hashes\.json is missing.*--rebuild"):
        VectorIndex.open(built)
    code, _, err = _cli(monkeypatch, capsys, "index", "--verify", "--index", str(built))
    assert code == 4 and "hashes.json" in err and "No such file" not in err
    with pytest.raises(CorruptIndexError, match=r"hashes\.json"):
        build_index(built, Catalog(make_books(BOOKS)), FakeEmbedder())


def test_truncated_scan_copy_is_corrupt_on_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    path = tmp_path / "idx"
    index, _ = build_index(path, Catalog(make_books(300)), FakeEmbedder(dim=32), scan="int8")
    assert index.manifest is not None and index.manifest.scan is not None
    manifest = json.loads((path / "manifest.json").read_text())
    assert {"scan.npy", "scan-scale.npy"} <= set(manifest["checksums"])
    scan = _gen(path) / "scan.npy"
    os.truncate(scan, scan.stat().st_size // 2)
    with pytest.raises(CorruptIndexError, match=r"scan\.npy.*--rebuild"):
        VectorIndex.open(path)
    code, _, err = _cli(monkeypatch, capsys, "index", "--verify", "--index", str(path))
    assert code == 4 and "scan.npy" in err


def test_changed_scan_codes_fail_the_checksum(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    build_index(path, Catalog(make_books(300)), FakeEmbedder(dim=32), scan="int8")
    codes = np.load(_gen(path) / "scan.npy", mmap_mode="r+")
    codes[0] = -codes[0]
    codes.flush()
    del codes
    with pytest.raises(CorruptIndexError, match=r"scan\.npy does not match its checksum"):
        VectorIndex.open(path).verify()


def test_live_updates_file_is_checksummed(tmp_path: Path) -> None:
    from bookrec.recommender.numpy_store import LIVE_FILE

    path = tmp_path / "idx"
    index, _ = build_index(path, Catalog(make_books(10)), FakeEmbedder())
    index.publish_locked(path, extra={LIVE_FILE: {"upserted": {}, "deleted": []}})
    manifest = json.loads((path / "manifest.json").read_text())
    assert LIVE_FILE in manifest["checksums"]
    (_gen(path) / LIVE_FILE).write_text('{"upserted": {}, "deleted": ["x"]}\n')
    with pytest.raises(CorruptIndexError, match=r"live\.json"):
        VectorIndex.open(path).verify()


def test_index_without_checksums_still_opens_and_verifies(
    built: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    _strip_checksums(built)
    index = VectorIndex.open(built)
    report = index.verify()
    assert not report.checksummed and report.rows == BOOKS
    code, out, err = _cli(monkeypatch, capsys, "index", "--verify", "--index", str(built))
    assert code == 0, err
    assert "no checksums recorded" in out
    _, report2 = build_index(built, Catalog(make_books(BOOKS)), FakeEmbedder())
    assert report2.unchanged


def test_verify_of_an_intact_index(
    built: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    code, out, err = _cli(monkeypatch, capsys, "index", "--verify", "--index", str(built))
    assert code == 0, err
    assert "is intact: 40 books" in out and "3 files match" in out
    code, out, err = _cli(monkeypatch, capsys, "index", "--verify", "--index", str(built), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["ok"] and data["books"] == BOOKS and data["checksummed"]
    code, _, err = _cli(
        monkeypatch, capsys, "index", "--verify", "--rebuild", "--index", str(built)
    )
    assert code == 2 and "--verify" in err


def test_float16_index_verifies(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    index, _ = build_index(path, Catalog(make_books(50)), FakeEmbedder(dim=64), dtype="float16")
    assert index.verify().rows == 50


def test_opening_reads_no_checksum(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bookrec.recommender.index import files

    def refuse(path: Path) -> str:
        raise AssertionError(f"open read {path} in full")

    monkeypatch.setattr(files, "checksum", refuse)
    index = VectorIndex.open(built)
    assert len(index) == BOOKS
    with pytest.raises(AssertionError, match="in full"):
        index.verify()


def test_every_corrupt_index_error_exits_4_with_how_to_recover() -> None:
    from bookrec.recommender.cli.errors import EXIT_SERVICE, classify_error

    code, text = classify_error(CorruptIndexError("idx/manifest.json is not a bookrec manifest"))
    assert code == EXIT_SERVICE == 4
    assert text.startswith("corrupt index: idx/manifest.json") and "--rebuild" in text
    _, text = classify_error(CorruptIndexError("x; rebuild it with bookrec index --rebuild"))
    assert text.count("--rebuild") == 1
