"""Catalogs written to break the loader: each is refused as ``path:line: ...`` with exit 2.

Deep nesting, huge integers, lone surrogates, duplicate keys, non-integral popularity and
oversized fields are checked at load time, before ``bookrec index`` creates anything; the CLI
escapes control characters from a catalog; liking a disliked book is an error.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bookrec.recommender import (
    Book,
    Catalog,
    CatalogError,
    ContradictoryProfileError,
    Recommender,
    RecommenderError,
)
from bookrec.recommender.catalog_files import MAX_FIELD_CHARS, load_catalog, parse_catalog
from bookrec.recommender.cli import main
from bookrec.recommender.cli.render import book_label, printable, recommendations_table
from bookrec.recommender.recommend import Recommendation
from tests.recommender.conftest import MakeStore
from tests.recommender.test_recommend import BOOKS, IDENTITY, VECTORS

GOOD = '{"id": "ok", "title": "Fine", "summary": "A fine book."}\n'


def _run_index(
    tmp_path: Path, catalog: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> tuple[int, str, str]:
    """``bookrec index`` in-process into ``tmp_path/idx``; the catalog is refused before any
    service is asked, so none runs."""
    for key in list(os.environ):
        if key.startswith("BOOKREC_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("BOOKREC_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("BOOKREC_MAX_ATTEMPTS", "1")
    capsys.readouterr()
    out = io.StringIO()
    code = main(
        ["index", "-c", str(catalog), "-i", str(tmp_path / "idx"), "--no-progress"], out=out
    )
    return code, out.getvalue(), capsys.readouterr().err


def _refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
    data: bytes,
    needle: str,
    *,
    name: str = "books.jsonl",
    line: int = 2,
) -> str:
    catalog = tmp_path / name
    catalog.write_bytes(data)
    code, _out, err = _run_index(tmp_path, catalog, monkeypatch, capsys)
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert err.startswith(f"bookrec: error: {catalog}:{line}: {needle}"), err
    assert not (tmp_path / "idx").exists(), "nothing may be created for a refused catalog"
    assert len(err) < 500, "the message quotes no huge value"
    return err


def test_deeply_nested_json_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    deep = b'{"id": "x", "title": "T", "shelf": ' + b"[" * 100_000 + b"}\n"
    _refused(
        tmp_path, monkeypatch, capsys, GOOD.encode() + deep, "lists or objects nested too deeply"
    )
    # Below Python's recursion limit but deeper than MAX_NESTING: refused too, as a field.
    nested = b'{"id": "x", "title": "T", "shelf": ' + b"[" * 40 + b"]" * 40 + b"}\n"
    with pytest.raises(CatalogError, match=r"^b\.jsonl:1: shelf holds lists or objects nested"):
        parse_catalog(nested, "b.jsonl")
    fine = b'{"id": "x", "title": "T", "shelf": ' + b"[" * 10 + b"]" * 10 + b"}\n"
    assert parse_catalog(fine, "b.jsonl")["x"].extra["shelf"] == [[[[[[[[[[]]]]]]]]]]


def test_huge_integer_year(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    year = b'{"id": "x", "title": "T", "year": ' + b"1" * 5000 + b"}\n"
    _refused(
        tmp_path, monkeypatch, capsys, GOOD.encode() + year, "year holds an integer of 5,000 digits"
    )
    csv = b"id,title,year\nok,Fine,1999\nx,T," + b"9" * 5000 + b"\n"
    with pytest.raises(CatalogError, match=r"^b\.csv:3: year holds an integer of 5,000 digits"):
        parse_catalog(csv, "b.csv", "csv")
    with pytest.raises(CatalogError, match=r"^b\.jsonl:1: year must be between -10000 and 10000"):
        parse_catalog(b'{"id": "x", "title": "T", "year": 123456}', "b.jsonl")


def test_lone_surrogate_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    bad = b'{"id": "x", "title": "Bad \\ud800 title"}\n'
    err = _refused(
        tmp_path, monkeypatch, capsys, GOOD.encode() + bad, "title holds a lone surrogate"
    )
    assert "\\ud800" in err
    assert not list(tmp_path.glob("**/*.lock"))
    for record, field in (
        (b'{"id": "x\\udfff", "title": "T"}', "id"),
        (b'{"id": "x", "title": "T", "authors": ["A\\udc00"]}', "authors"),
        (b'{"id": "x", "title": "T", "shelf": {"k": "\\ud800"}}', "shelf"),
    ):
        with pytest.raises(CatalogError, match=rf"^b\.jsonl:1: {field} holds a lone surrogate"):
            parse_catalog(record, "b.jsonl")
    with pytest.raises(CatalogError, match="field name"):
        parse_catalog(b'{"id": "x", "title": "T", "\\ud800": 1}', "b.jsonl")
    # A surrogate pair is one valid character.
    assert parse_catalog(b'{"id": "x", "title": "\\ud83d\\ude00"}', "b.jsonl")["x"].title == "😀"


def test_duplicate_json_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    dup = b'{"id": "a", "id": "b", "title": "T"}\n'
    _refused(
        tmp_path, monkeypatch, capsys, GOOD.encode() + dup, "duplicate key 'id' in one JSON object"
    )
    with pytest.raises(CatalogError, match=r"^b\.jsonl:1: duplicate key 'k'"):
        parse_catalog(b'{"id": "a", "title": "T", "shelf": {"k": 1, "k": 2}}', "b.jsonl")


def test_popularity_must_be_an_integer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    pop = b'{"id": "x", "title": "T", "popularity": 1e300}\n'
    _refused(tmp_path, monkeypatch, capsys, GOOD.encode() + pop, "popularity must be an integer")
    for value in ("1.5", "NaN", "Infinity", "2e53"):
        with pytest.raises(CatalogError, match="popularity must be an integer"):
            parse_catalog(f'{{"id": "x", "title": "T", "popularity": {value}}}'.encode(), "b")
    with pytest.raises(CatalogError, match="popularity must be between 0 and"):
        parse_catalog(b'{"id": "x", "title": "T", "popularity": 10000000000000000000}', "b")
    # A whole number written as a float (a spreadsheet export) is still accepted.
    book = parse_catalog(b'{"id": "x", "title": "T", "year": 1965.0, "popularity": 3.0}', "b")["x"]
    assert (book.year, book.popularity) == (1965, 3)
    with pytest.raises(CatalogError, match=r"^b\.csv:2: popularity must be an integer"):
        parse_catalog(b"id,title,popularity\nx,T,1e300\n", "b.csv", "csv")


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_one_field_size_limit_for_csv_and_jsonl(tmp_path: Path, kind: str) -> None:
    assert MAX_FIELD_CHARS == 1 << 20
    line = 3 if kind == "csv" else 2
    for size, ok in ((MAX_FIELD_CHARS, True), (MAX_FIELD_CHARS + 1, False), (3 << 20, False)):
        summary = "x" * size
        path = tmp_path / f"books.{kind}"
        if kind == "csv":
            path.write_text(f"id,title,summary\nok,Fine,fine\nx,T,{summary}\n", encoding="utf-8")
        else:
            path.write_text(GOOD + json.dumps({"id": "x", "title": "T", "summary": summary}) + "\n")
        if ok:
            assert len(load_catalog(path)["x"].summary) == MAX_FIELD_CHARS
        else:
            with pytest.raises(
                CatalogError, match=rf"^{path}:{line}: .*longer than 1,048,576 characters"
            ):
                load_catalog(path)
    # A list field counts all its strings.
    many = json.dumps({"id": "x", "title": "T", "tags": ["y" * 1000] * 1100})
    with pytest.raises(CatalogError, match="tags is longer than 1,048,576 characters"):
        parse_catalog(many.encode(), "b.jsonl")


def test_printable_escapes_control_characters() -> None:
    assert printable("a\x1b[2J\x1b[31mb") == "a\\x1b[2J\\x1b[31mb"
    assert printable("x\ny\tz\r\x00\x7f\x85") == "x\\ny\\tz\\r\\x00\\x7f\\x85"
    assert printable("rtl\u202eevil\u2028") == "rtl\\u202eevil\\u2028"
    assert printable("三体 Dune — ok") == "三体 Dune — ok"
    assert printable(printable("a\x1bb")) == printable("a\x1bb")
    book = Book(id="id\nrow", title="T\x1b[2J\x1b[31m", authors=("A\x07",), year=2001)
    assert book_label(book) == "T\\x1b[2J\\x1b[31m (A\\x07, 2001)"
    rec = Recommendation(book=book, score=0.5, reason="because you liked T\x1b[31m")
    table = recommendations_table([rec])
    assert "\x1b" not in table and "\x07" not in table
    assert len(table.splitlines()) == 3  # header, rule, one row: the id's newline split nothing
    assert "id\\nrow" in table and "because you liked T\\x1b[31m" in table


def test_catalog_warnings_are_escaped() -> None:
    data = b'{"id": "a\\u001b[2J\\n", "title": "T"}\n'
    catalog = parse_catalog(data, "b.jsonl")
    assert (
        catalog.warnings and "\x1b" not in catalog.warnings[0] and "\n" not in catalog.warnings[0]
    )


def test_contradiction_is_a_value_error_mapped_to_422() -> None:
    err = ContradictoryProfileError(["b1"])
    assert isinstance(err, ValueError) and isinstance(err, RecommenderError)
    assert "both liked and disliked: 'b1'" in str(err)
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from bookrec.recommender.service.problems import install_handlers

    app = FastAPI()
    install_handlers(app)

    @app.get("/boom")
    def boom() -> None:
        raise ContradictoryProfileError(["b1", "b2"])

    response = TestClient(app).get("/boom")
    assert response.status_code == 422, response.text
    assert "'b1', 'b2'" in response.json()["detail"]


def test_contradiction_in_the_library(make_store: MakeStore) -> None:
    catalog = Catalog(BOOKS)
    store = make_store(catalog, list(VECTORS), np.array(list(VECTORS.values())), IDENTITY)
    rec = Recommender(catalog, store)
    with pytest.raises(ContradictoryProfileError, match=r"both liked and disliked: 'b'$|'b';"):
        rec.recommend(liked=["a1", "b"], disliked=["b", "c"])
    with pytest.raises(ContradictoryProfileError):  # before the unknown id is looked up
        rec.recommend(liked=["nope"], disliked=["nope"])
    assert rec.recommend(liked=["a1"], disliked=["b"], k=2)  # no overlap: fine
    assert rec.recommend(history=["b"], disliked=["b"], k=2)  # read and disliked: fine


HOSTILE = [
    {"id": "calm", "title": "Calm Waters", "authors": ["Ann Lee"], "summary": "A quiet sea story."},
    {
        "id": "evil\nrow",
        "title": "Clear\x1b[2J\x1b[31m Screen",
        "authors": ["Bad\x07 Bell"],
        "summary": "A sea story with a terminal trick.",
    },
    {"id": "third", "title": "Sea Tales", "authors": ["Ann Lee"], "summary": "More sea stories."},
]


def _in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: Any, base_url: str, *args: str
) -> tuple[int, str, str]:
    with monkeypatch.context() as mp:
        for key in list(os.environ):
            if key.startswith(("BOOKREC_", "HF_")):
                mp.delenv(key)
        mp.setenv("BOOKREC_BASE_URL", base_url)
        mp.setenv("BOOKREC_MAX_ATTEMPTS", "1")
        capsys.readouterr()
        out = io.StringIO()
        code = main(list(args), out=out)
        err = capsys.readouterr().err
    return code, out.getvalue(), err


def test_cli_escapes_catalog_text_and_refuses_contradictions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from bookrec.client.testing import FakeSGLang

    catalog = tmp_path / "hostile.jsonl"
    catalog.write_text("".join(json.dumps(b) + "\n" for b in HOSTILE), encoding="utf-8")
    common = ("-c", str(catalog), "-i", str(tmp_path / "idx"))
    with FakeSGLang(dim=16) as fake:
        url = fake.base_url
        code, _out, err = _in_process(monkeypatch, capsys, url, "index", *common, "--no-progress")
        assert code == 0, err

        # Tables, titles and reasons: no control character reaches the terminal.
        for args in (
            ("similar", "evil\nrow", *common),
            ("similar", "calm", *common),
            ("recommend", "--liked", "evil\nrow", *common),
        ):
            code, out, err = _in_process(monkeypatch, capsys, url, *args)
            assert code == 0, err
            assert not any(ch in out for ch in "\x1b\x07"), out
            lines = out.splitlines()
            assert len(lines) == 1 + 2 + 2, out  # title, header, rule, two rows
            assert "evil\\nrow" in out or "Clear\\x1b[2J\\x1b[31m Screen" in out
        code, out, _err = _in_process(monkeypatch, capsys, url, "similar", "evil\nrow", *common)
        assert out.splitlines()[0] == "More like Clear\\x1b[2J\\x1b[31m Screen (Bad\\x07 Bell)"

        # JSON output stays exact.
        code, out, err = _in_process(monkeypatch, capsys, url, "similar", "calm", *common, "--json")
        assert code == 0, err
        found = {r["id"]: r for r in json.loads(out)["results"]}
        assert found["evil\nrow"]["title"] == "Clear\x1b[2J\x1b[31m Screen"
        assert found["evil\nrow"]["authors"] == ["Bad\x07 Bell"]

        # put and delete name the ids they touched, escaped.
        extra = tmp_path / "more.jsonl"
        extra.write_text(json.dumps({"id": "new\x1b[31m", "title": "T", "summary": "s"}) + "\n")
        code, out, err = _in_process(monkeypatch, capsys, url, "put", str(extra), *common)
        assert code == 0, err
        assert out == "Added 1: new\\x1b[31m\n"
        code, out, err = _in_process(
            monkeypatch, capsys, url, "delete", "new\x1b[31m", "gone\x07", *common
        )
        assert code == 0, err
        assert out == "Deleted 1: new\\x1b[31m\n"
        assert "Not in the index (ignored): gone\\x07" in err and "\x07" not in err

        # The same book liked and disliked: a clear error, exit 2.
        code, out, err = _in_process(
            monkeypatch, capsys, url, "recommend", "--liked", "calm", "--disliked", "calm", *common
        )
        assert code == 2, err
        assert err.startswith("bookrec: error: a book both liked and disliked: 'calm'"), err
        assert out == ""
