"""Catalog loading and validation (JSONL and CSV), book text, hashes and work keys."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bookrec.recommender import (
    BOOK_TEXT_VERSION,
    Book,
    Catalog,
    CatalogError,
    UnknownBookError,
    book_text,
    content_hash,
    load_catalog,
)
from bookrec.recommender.book import work_key
from bookrec.recommender.text import MAX_BOOK_TEXT_CHARS
from tests.recommender.conftest import write_jsonl

GOOD = {
    "id": "en-1",
    "title": "Dune",
    "authors": ["Frank Herbert"],
    "summary": "Desert planet.",
    "tags": ["sf"],
    "language": "EN",
    "year": 1965,
    "rating": 4.3,
    "popularity": 1000,
    "series": "Dune",
    "edition": "first",
}


def test_jsonl_fields_types_and_unknown_fields_kept(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [GOOD, {"id": "zh-1", "title": "三体", "rating": 5}])
    cat = load_catalog(path)
    assert len(cat) == 2 and cat.ids == ("en-1", "zh-1")
    dune = cat["en-1"]
    assert dune.authors == ("Frank Herbert",) and dune.tags == ("sf",)
    assert dune.language == "en" and dune.year == 1965 and dune.rating == 4.3
    assert dune.extra == {"edition": "first"}
    assert dune.to_dict()["edition"] == "first"
    assert cat["zh-1"].rating == 5.0 and isinstance(cat["zh-1"].rating, float)
    assert cat.get("nope") is None and "en-1" in cat
    with pytest.raises(UnknownBookError) as err:
        cat.book("nope")
    assert isinstance(err.value, KeyError) and str(err.value) == "unknown book id: 'nope'"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "x", "title": "T"', "malformed JSON"),
        ('["id", "title"]', "expected a JSON object, got a list"),
        ('{"title": "T"}', "missing id"),
        ('{"id": "  ", "title": "T"}', "missing id"),
        ('{"id": "x"}', "missing title"),
        ('{"id": 7, "title": "T"}', "id must be a string, got an integer"),
        ('{"id": "x", "title": "T", "year": "1999"}', "year must be an integer"),
        ('{"id": "x", "title": "T", "year": true}', "year must be an integer"),
        ('{"id": "x", "title": "T", "rating": "high"}', "rating must be a number"),
        ('{"id": "x", "title": "T", "rating": 7}', "rating must be between 0 and 5"),
        ('{"id": "x", "title": "T", "authors": 3}', "authors must be a list of strings"),
        ('{"id": "x", "title": "T", "tags": ["a", 1]}', "tags must be a list of strings"),
        ('{"id": "x", "title": "T", "popularity": -1}', "popularity must not be negative"),
        ('{"id": "x", "title": "T", "summary": 5}', "summary must be a string"),
        ('{"id": "a", "title": "T"}', "duplicate id 'a' (first defined on line 1)"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "books.jsonl"
    path.write_text('{"id": "a", "title": "A"}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(CatalogError) as err:
        load_catalog(path)
    assert str(err.value).startswith(f"{path}:3: ")
    assert message in str(err.value)
    assert err.value.line == 3 and isinstance(err.value, ValueError)


def test_non_utf8_bytes_are_located(tmp_path: Path) -> None:
    path = tmp_path / "books.jsonl"
    path.write_bytes(b'{"id": "a", "title": "A"}\n{"id": "b", "title": "caf\xe9"}\n')
    with pytest.raises(CatalogError, match=r"books\.jsonl:2: not valid UTF-8 \(byte 0xe9"):
        load_catalog(path)
    csv_path = tmp_path / "books.csv"
    csv_path.write_bytes(b"id,title\na,A\nb,B\nc,caf\xe9\n")
    with pytest.raises(CatalogError, match=r"books\.csv:4: not valid UTF-8"):
        load_catalog(csv_path)


def test_empty_summary_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [GOOD, {"id": "b", "title": "B", "summary": ""}])
    with caplog.at_level(logging.WARNING, logger="bookrec.recommender.catalog_files"):
        cat = load_catalog(path)
    assert len(cat) == 2
    assert "1 book(s) have an empty summary: 'b' (line 2)" in caplog.text
    assert cat.warnings and "'b' (line 2)" in cat.warnings[0]


def test_missing_file_and_empty_catalog(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no such file"):
        load_catalog(tmp_path / "absent.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="no books"):
        load_catalog(tmp_path / "empty.jsonl")


def test_csv_lists_numbers_and_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "books.csv"
    path.write_text(
        "\ufeffid,title,authors,tags,year,rating,summary,shelf\n"
        'a,Good Omens,Terry Pratchett; Neil Gaiman,fantasy|humour,1990,4.2,"Angel, demon",x\n'
        'b,"Multi\nline",Someone,,,,"",\n',
        encoding="utf-8",
    )
    cat = load_catalog(path)
    good = cat["a"]
    assert good.authors == ("Terry Pratchett", "Neil Gaiman")
    assert good.tags == ("fantasy", "humour") and good.year == 1990 and good.rating == 4.2
    assert good.summary == "Angel, demon" and good.extra == {"shelf": "x"}
    assert cat["b"].title == "Multi\nline" and cat["b"].year is None
    bad = tmp_path / "bad.csv"
    bad.write_text('id,title,year\na,A,1\nb,"two\nlines",2\nc,C,soon\n', encoding="utf-8")
    with pytest.raises(CatalogError, match=r"bad\.csv:5: year must be an integer, got 'soon'"):
        load_catalog(bad)
    short = tmp_path / "short.csv"
    short.write_text("id,title,year\na,A\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"short\.csv:2: expected 3 fields"):
        load_catalog(short)
    nohead = tmp_path / "nohead.csv"
    nohead.write_text("ident,title\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"nohead\.csv:1: the header has no 'id' column"):
        load_catalog(nohead)
    dup = tmp_path / "dup.csv"
    dup.write_text("id,title\na,A\nb,B\na,C\n", encoding="utf-8")
    with pytest.raises(
        CatalogError, match=r"dup\.csv:4: duplicate id 'a' \(first defined on line 2"
    ):
        load_catalog(dup)


def test_sample_catalog_loads() -> None:
    path = Path(__file__).resolve().parents[2] / "recommender" / "data" / "sample_catalog.jsonl"
    cat = load_catalog(path)
    assert len(cat) >= 100 and not cat.warnings


def test_book_text_contents_bound_and_hash() -> None:
    book = Book(
        id="x", title="Dune", authors=("Frank Herbert",), tags=("sf", "desert"), summary="S"
    )
    text = book_text(book)
    assert text == "Title: Dune\nAuthors: Frank Herbert\nTags: sf, desert\nSummary: S"
    long = Book(id="y", title="T", summary="word " * 5000)
    assert len(book_text(long)) <= MAX_BOOK_TEXT_CHARS and book_text(long).endswith("…")
    same = Book(
        id="other-id",
        title="Dune",
        authors=("Frank Herbert",),
        tags=("sf", "desert"),
        summary="S",
        rating=1.0,
    )
    assert content_hash(book) == content_hash(same)  # id and rating are not embedded
    changed = Book(id="x", title="Dune", authors=("Frank Herbert",), tags=("sf",), summary="S")
    assert content_hash(book) != content_hash(changed)
    assert BOOK_TEXT_VERSION


@pytest.mark.parametrize(
    ("language", "title", "expected"),
    [
        ("zh", "三体", "书名：三体\n作者：刘慈欣、X\n标签：科幻\n简介：S"),
        (None, "三体", "书名：三体\n作者：刘慈欣、X\n标签：科幻\n简介：S"),  # by its script
        (None, "ノルウェイの森", "書名：ノルウェイの森\n著者：刘慈欣、X\nタグ：科幻\nあらすじ：S"),
        ("zh-Hant", "三體", "书名：三體\n作者：刘慈欣、X\n标签：科幻\n简介：S"),
        ("en", "三体", "Title: 三体\nAuthors: 刘慈欣, X\nTags: 科幻\nSummary: S"),
        ("fr", "Dune", "Title: Dune\nAuthors: 刘慈欣, X\nTags: 科幻\nSummary: S"),
    ],
)
def test_book_text_labels_fields_in_the_books_language(
    language: str | None, title: str, expected: str
) -> None:
    book = Book(
        id="x", title=title, authors=("刘慈欣", "X"), tags=("科幻",), summary="S", language=language
    )
    assert book_text(book) == expected


def test_work_key_groups_editions() -> None:
    a = work_key("The Three-Body Problem", ["Liu Cixin"])
    assert a == work_key("the three body problem (Anniversary Edition)", ["LIU CIXIN"])
    assert a == work_key("The Three-Body Problem [Illustrated]", ["Liu  Cixin"])
    assert work_key("三体（典藏版）", ["刘慈欣"]) == work_key("三体", ["刘慈欣"])
    assert a != work_key("The Three-Body Problem", ["Someone Else"])
    assert work_key("(Untitled)", []) == work_key("(untitled)", [])


def test_catalog_rejects_duplicates_given_directly() -> None:
    with pytest.raises(CatalogError, match="duplicate id 'a'"):
        Catalog([Book(id="a", title="A"), Book(id="a", title="B")])
