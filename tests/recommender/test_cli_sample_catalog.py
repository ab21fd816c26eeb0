"""The sample catalog shipped with the demo: well-formed, typed and varied enough to be useful."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bookrec.client import is_cjk

CATALOG = Path(__file__).resolve().parents[2] / "recommender" / "data" / "sample_catalog.jsonl"

REQUIRED: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "title": str,
    "authors": list,
    "summary": str,
    "tags": list,
    "language": str,
    "year": int,
    "rating": float,
    "popularity": int,
}
OPTIONAL: dict[str, type | tuple[type, ...]] = {"series": str, "edition": str}


def _records() -> list[dict[str, Any]]:
    records = []
    with CATALOG.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            assert line.strip(), f"line {lineno} is blank"
            record = json.loads(line)
            assert isinstance(record, dict), f"line {lineno} is not an object"
            records.append(record)
    return records


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return _records()


def test_fields_are_present_and_typed(records: list[dict[str, Any]]) -> None:
    for rec in records:
        where = rec.get("id", "?")
        for field, typ in REQUIRED.items():
            assert field in rec, f"{where}: missing {field}"
            assert isinstance(rec[field], typ) and not isinstance(rec[field], bool), (where, field)
        for field, typ in OPTIONAL.items():
            if field in rec:
                assert isinstance(rec[field], typ) and rec[field].strip(), (where, field)
        assert set(rec) <= set(REQUIRED) | set(OPTIONAL), f"{where}: unexpected fields"
        assert re.fullmatch(r"(en|zh)-\d{4}", rec["id"]), where
        assert rec["id"].startswith(rec["language"] + "-"), where
        assert rec["title"].strip() and rec["summary"].strip(), where
        assert rec["authors"] and all(isinstance(a, str) and a.strip() for a in rec["authors"])
        assert 3 <= len(rec["tags"]) <= 6, where
        assert all(isinstance(t, str) and t.strip() for t in rec["tags"]), where
        assert len(set(rec["tags"])) == len(rec["tags"]), where
        assert 0.0 <= rec["rating"] <= 5.0, where
        assert rec["popularity"] > 0, where
        assert 1500 <= rec["year"] <= 2025, where


def test_ids_are_unique(records: list[dict[str, Any]]) -> None:
    counts = Counter(rec["id"] for rec in records)
    assert [i for i, n in counts.items() if n > 1] == []


def test_size_and_language_balance(records: list[dict[str, Any]]) -> None:
    langs = Counter(rec["language"] for rec in records)
    assert len(records) >= 120
    assert set(langs) == {"en", "zh"}
    assert min(langs.values()) >= 0.4 * len(records)


def test_chinese_records_are_written_in_chinese(records: list[dict[str, Any]]) -> None:
    for rec in records:
        if rec["language"] == "zh":
            assert is_cjk(rec["summary"]), rec["id"]
            assert all(is_cjk(tag) for tag in rec["tags"]), rec["id"]
            assert is_cjk(rec["authors"][0]), rec["id"]
        else:
            assert not is_cjk(rec["summary"]), rec["id"]


def test_series_and_editions_are_present(records: list[dict[str, Any]]) -> None:
    series = Counter(rec["series"] for rec in records if "series" in rec)
    for name in ("三体", "射雕三部曲", "Harry Potter", "The Lord of the Rings"):
        assert series[name] >= 3, name
    works = Counter((rec["title"], tuple(rec["authors"])) for rec in records)
    editions = [work for work, n in works.items() if n > 1]
    assert len(editions) >= 2
    assert any(is_cjk(title) for title, _ in editions)


def test_summaries_have_two_to_four_sentences(records: list[dict[str, Any]]) -> None:
    for rec in records:
        # Full-width 。！？ end a sentence wherever they are; . ! ? only before a space or the end.
        ends = re.findall(r"[。！？]|[.!?]['”’]?(?=\s|$)", rec["summary"])
        assert 2 <= len(ends) <= 4, (rec["id"], len(ends))
