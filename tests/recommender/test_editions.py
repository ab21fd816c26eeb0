"""Edition keys: ISBN normalisation, work keys over title and author variants, grouping."""

from __future__ import annotations

import csv
import json
import random
import time
from itertools import combinations
from pathlib import Path

import pytest

from bookrec.recommender import CatalogError, load_catalog
from bookrec.recommender.book import (
    Book,
    author_keys,
    group_editions,
    normalize_isbn,
    normalize_name,
    title_key,
    work_key,
)

VARIANTS = Path(__file__).parent / "data" / "editions.tsv"


def _variants() -> list[tuple[str, str, tuple[str, ...]]]:
    with VARIANTS.open(encoding="utf-8", newline="") as f:
        lines = [line for line in f if not line.startswith("#")]
    rows = list(csv.reader(lines, delimiter="\t"))
    assert rows[0] == ["work", "title", "authors"]
    return [(w, t, tuple(a.strip() for a in authors.split(" | "))) for w, t, authors in rows[1:]]


def test_the_variant_table_is_large_with_both_languages() -> None:
    rows = _variants()
    works = {w for w, _, _ in rows}
    assert len(rows) >= 70 and len(works) >= 30
    assert any("红楼梦" in t for _, t, _ in rows) and any("Hobbit" in t for _, t, _ in rows)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(a, b, id=f"{a[1]}={b[1]}")
        for a, b in combinations(_variants(), 2)
        if a[0] == b[0]
    ],
)
def test_editions_of_one_work_share_a_key(
    first: tuple[str, str, tuple[str, ...]], second: tuple[str, str, tuple[str, ...]]
) -> None:
    assert work_key(first[1], first[2]) == work_key(second[1], second[2])


def test_different_works_keep_different_keys() -> None:
    keys: dict[str, set[str]] = {}
    for work, title, authors in _variants():
        keys.setdefault(work_key(title, authors), set()).add(work)
    merged = {key: works for key, works in keys.items() if len(works) > 1}
    assert merged == {}
    # the pairs that matter most, spelled out
    assert work_key("Dune", ["Frank Herbert"]) != work_key("Dune Messiah", ["Frank Herbert"])
    assert work_key("Ulysses", ["James Joyce"]) != work_key("Ulysses", ["Alfred Tennyson"])
    assert work_key("三体", ["刘慈欣"]) != work_key("三体Ⅱ：黑暗森林", ["刘慈欣"])
    assert work_key("红楼梦（上）", ["曹雪芹"]) != work_key("红楼梦（下）", ["曹雪芹"])
    assert work_key("红楼梦（上）", ["曹雪芹"]) != work_key("红楼梦", ["曹雪芹"])


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("紅樓夢", "红楼梦"),
        ("《红楼梦》", "红楼梦"),  # quotation marks around the title go, the title stays
        ("《红楼梦》人物论", "红楼梦人物论"),
        ("红楼梦(全二册)", "红楼梦"),
        ("红楼梦（下册）", "红楼梦下"),  # a volume stays part of the key
        ("The Lord of the Rings, Vol. 1", "the lord of the rings vol 1"),
        ("The Hobbit: 75th Anniversary Edition", "the hobbit"),
        ("The Hobbit 75th Anniversary Edition", "the hobbit"),
        ("Dune, 2nd ed.", "dune"),
        ("小王子：中英双语典藏版", "小王子"),
        ("活着：长篇小说", "活着"),
        ("The Great American Novel", "the great american novel"),  # not "A Novel"
        ("Catch-22", "catch 22"),
        ("(Untitled)", "untitled"),  # nothing but a note: the note is the title
        ("Sapiens: A Brief History of Humankind", "sapiens a brief history of humankind"),
    ],
)
def test_title_key(title: str, expected: str) -> None:
    assert title_key(title) == expected


@pytest.mark.parametrize(
    ("authors", "expected"),
    [
        (["曹雪芹 / 无名氏 续"], ("曹雪芹",)),
        (["高鹗 续", "曹雪芹 著"], ("曹雪芹",)),
        (["曹雪芹", "高鹗"], ("曹雪芹", "高鹗")),
        (["[日] 村上春樹 著 / 林少华 译"], ("村上春树",)),
        (["主编：王蒙"], ("王蒙",)),  # only an editor: the editor is who is credited
        (["刘慈欣 等"], ("刘慈欣",)),
        (["錢鍾書"], ("钱钟书",)),
        (["钱锺书 著"], ("钱钟书",)),
        (["Tolkien, J. R. R."], ("j r r tolkien",)),
        (["Le Guin, Ursula K."], ("ursula k le guin",)),
        (["García Márquez, Gabriel"], ("gabriel garcia marquez",)),
        (["Neil Gaiman, Terry Pratchett"], ("neil gaiman", "terry pratchett")),
        (["Douglas Preston and Lincoln Child"], ("douglas preston", "lincoln child")),
        (["Fyodor Dostoevsky", "Richard Pevear (Translator & Editor)"], ("fyodor dostoevsky",)),
        (["Homer, translated by Emily Wilson"], ("homer",)),
        (["Stephen King (Goodreads Author)"], ("stephen king",)),
        (["John Smith (ed.)"], ("john smith",)),
        (["edited by Neil Gaiman"], ("neil gaiman",)),
    ],
)
def test_author_keys(authors: list[str], expected: tuple[str, ...]) -> None:
    assert author_keys(authors) == expected


def test_normalize_name_for_filters_is_unchanged() -> None:
    # filters compare names with normalize_name: it folds width, case and punctuation only
    assert normalize_name("紅樓夢") == "紅樓夢"
    assert normalize_name("Tolkien, J.R.R.") == "tolkien j r r"
    assert normalize_name("［日］村上春树") == "日 村上春树"
    assert normalize_name("García") == "garcía"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0-306-40615-2", "9780306406157"),  # the ISBN-10 / ISBN-13 pair of Wikipedia's example
        ("0306406152", "9780306406157"),
        ("978-0-306-40615-7", "9780306406157"),
        ("9780306406157", "9780306406157"),
        ("ISBN 978-7-02-000220-7", "9787020002207"),  # 红楼梦, 人民文学出版社
        ("ISBN-10: 0-8044-2957-X", "9780804429573"),  # check digit X
        ("080442957x", "9780804429573"),
        ('="0439023483"', "9780439023481"),  # Goodreads export quoting
        ("９７８０３０６４０６１５７", "9780306406157"),  # full-width digits
        ("979-10-90636-07-1", "9791090636071"),  # a 979 prefix
    ],
)
def test_normalize_isbn_accepts_valid_forms(text: str, expected: str) -> None:
    assert normalize_isbn(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "0-306-40615-3",  # wrong ISBN-10 check digit
        "978-0-306-40615-8",  # wrong ISBN-13 check digit
        "9770306406152",  # 977 is an ISSN prefix, not an ISBN
        "030640615",  # too short
        "03064061521",  # too long
        "X306406152",  # X only as the last ISBN-10 digit
        "",
        "not an isbn",
    ],
)
def test_normalize_isbn_rejects_invalid(text: str) -> None:
    assert normalize_isbn(text) is None


def test_book_isbns_reads_every_isbn_field_converted_and_deduplicated() -> None:
    book = Book(
        id="b",
        title="T",
        extra={
            "isbn": ["0-306-40615-2", "bad", "978-0-306-40615-8"],
            "isbn13": "9780306406157; 9787020002207",
            "isbn10": "080442957X",
        },
    )
    assert book.isbns == ("9780306406157", "9787020002207", "9780804429573")
    assert Book(id="c", title="T").isbns == ()
    assert Book(id="d", title="T", extra={"isbn13": 9780306406157}).isbns == ("9780306406157",)


def test_work_id_takes_precedence_over_title_and_authors() -> None:
    plain = Book(id="a", title="Dune", authors=("Frank Herbert",))
    assert plain.work_id is None
    assert plain.work_key == work_key("Dune", ["Frank Herbert"])
    given = Book(id="b", title="Dune", authors=("Frank Herbert",), extra={"work_id": " OL893415W "})
    assert given.work_id == "OL893415W"
    assert given.work_key == "work_id\x1fOL893415W"
    assert given.work_key != plain.work_key
    other = Book(
        id="c", title="Der Wüstenplanet", authors=("Herbert",), extra={"work_id": "OL893415W"}
    )
    assert other.work_key == given.work_key
    assert Book(id="d", title="T", extra={"work_id": 42}).work_id == "42"
    assert Book(id="e", title="T", extra={"work_id": "  "}).work_id is None


def _groups(books: list[Book]) -> list[set[str]]:
    mapping = group_editions(books)
    out: dict[str, set[str]] = {}
    for book_id, key in mapping.items():
        out.setdefault(key, set()).add(book_id)
    return sorted(out.values(), key=sorted)


def test_group_editions_joins_books_sharing_an_isbn() -> None:
    books = [
        Book(id="d1", title="Dune", authors=("Frank Herbert",), extra={"isbn10": "0441013597"}),
        # a surname-only author and a store's title: only the ISBN says it is the same book
        Book(
            id="d2",
            title="DUNE - Ace Books",
            authors=("Herbert",),
            extra={"isbn": "978-0-441-01359-3"},
        ),
        Book(id="m", title="Dune Messiah", authors=("Frank Herbert",), extra={"isbn": "bad"}),
    ]
    assert work_key(books[0].title, books[0].authors) != work_key(books[1].title, books[1].authors)
    assert _groups(books) == [{"d1", "d2"}, {"m"}]


def test_group_editions_work_ids_join_and_separate() -> None:
    books = [
        Book(id="a", title="The Hobbit", authors=("J.R.R. Tolkien",), extra={"work_id": "W1"}),
        Book(id="b", title="霍比特人", authors=("托尔金",), extra={"work_id": "W1"}),
        # same title, author and even ISBN, but the catalog says another work: it stays apart
        Book(
            id="c",
            title="The Hobbit",
            authors=("J.R.R. Tolkien",),
            extra={"work_id": "W2", "isbn": "0306406152"},
        ),
        Book(id="d", title="Some Other Title", authors=("X",), extra={"isbn": "9780306406157"}),
    ]
    groups = group_editions(books)
    assert groups["a"] == groups["b"] == "work_id\x1fW1"
    assert groups["c"] == groups["d"] == "work_id\x1fW2"


def test_group_editions_matches_any_shared_author() -> None:
    books = [
        Book(id="g1", title="Good Omens", authors=("Neil Gaiman", "Terry Pratchett")),
        Book(id="g2", title="Good Omens", authors=("Terry Pratchett", "Neil Gaiman")),
        Book(id="u1", title="Ulysses", authors=("James Joyce",)),
        Book(id="u2", title="Ulysses (Penguin Modern Classics)", authors=("Joyce, James",)),
        Book(id="u3", title="Ulysses", authors=("Alfred Tennyson",)),
    ]
    assert books[0].work_key != books[1].work_key  # primary authors differ
    assert _groups(books) == [{"g1", "g2"}, {"u1", "u2"}, {"u3"}]


def test_group_editions_subtitle_and_missing_authors() -> None:
    books = [
        Book(id="s1", title="Sapiens", authors=("Yuval Noah Harari",)),
        Book(
            id="s2", title="Sapiens: A Brief History of Humankind", authors=("Yuval Noah Harari",)
        ),
        Book(id="n1", title="Unnatural Creatures", authors=("edited by Neil Gaiman",)),
        Book(
            id="n2",
            title="Unnatural Creatures: Stories Selected by Neil Gaiman",
            authors=("Neil Gaiman (Editor)",),
        ),
        # two subtitles under one main title are two books: the bare title joins neither
        Book(id="m0", title="盗墓笔记", authors=("南派三叔",)),
        Book(id="m1", title="盗墓笔记：七星鲁王宫", authors=("南派三叔",)),
        Book(id="m3", title="盗墓笔记：怒海潜沙", authors=("南派三叔",)),
        # no authors: joins the only authored work of that title, not one of two
        Book(id="d0", title="Dune (Paperback)", authors=()),
        Book(id="d1", title="Dune", authors=("Frank Herbert",)),
        Book(id="x0", title="Ulysses", authors=()),
        Book(id="x1", title="Ulysses", authors=("James Joyce",)),
        Book(id="x2", title="Ulysses", authors=("Alfred Tennyson",)),
    ]
    assert _groups(books) == [
        {"d0", "d1"}, {"m0"}, {"m1"}, {"m3"}, {"n1", "n2"}, {"s1", "s2"}, {"x0"}, {"x1"}, {"x2"},
    ]  # fmt: skip


def test_group_editions_on_the_variant_table_is_order_independent() -> None:
    books = [
        Book(id=f"{work}/{i}", title=title, authors=authors)
        for i, (work, title, authors) in enumerate(_variants())
    ]
    groups = group_editions(books)
    for book in books:
        assert groups[book.id] in {b.work_key for b in books}  # the key of one of its members
    members: dict[str, set[str]] = {}
    for book in books:
        members.setdefault(groups[book.id], set()).add(book.id.split("/")[0])
    assert all(len(works) == 1 for works in members.values())
    assert len(members) == len({b.id.split("/")[0] for b in books})
    shuffled = books[:]
    random.Random(7).shuffle(shuffled)
    assert group_editions(shuffled) == groups
    single = Book(id="solo", title="Dune", authors=("Frank Herbert",))
    assert group_editions([single]) == {"solo": single.work_key}


def test_catalog_work_id_and_isbns_round_trip(tmp_path: Path) -> None:
    records = [
        {"id": "a", "title": "Dune", "authors": ["Frank Herbert"], "work_id": "W-dune",
         "isbn": ["0-441-01359-7"], "isbn13": "9780441013593"},
        {"id": "b", "title": "Dune (Deluxe Edition)", "authors": ["Herbert, Frank"],
         "isbn10": 441013597},
    ]  # fmt: skip
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), "utf-8")
    catalog = load_catalog(path)
    a, b = catalog.book("a"), catalog.book("b")
    assert a.work_id == "W-dune" and a.isbns == ("9780441013593",)
    assert b.isbns == ("9780441013593",)  # the leading zero a number lost is put back
    assert a.to_dict()["work_id"] == "W-dune" and a.to_dict()["isbn"] == ["0-441-01359-7"]
    assert group_editions([a, b]) == {"a": "work_id\x1fW-dune", "b": "work_id\x1fW-dune"}
    csv_path = tmp_path / "c.csv"
    csv_path.write_text(
        "id,title,authors,isbn,work_id\nz,红楼梦,曹雪芹,ISBN 978-7-02-000220-7; 0-306-40615-2,\n",
        "utf-8",
    )
    z = load_catalog(csv_path).book("z")
    assert z.isbns == ("9787020002207", "9780306406157") and z.work_id is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("work_id", ["W1"], "work_id must be a string, got a list"),
        ("work_id", True, "work_id must be a string, got a boolean"),
        ("isbn", {"isbn": "1"}, "isbn must be a string or a list of strings, got an object"),
        ("isbn13", ["9780306406157", 1.5], "isbn13 must be a string or a list of strings"),
    ],
)
def test_catalog_rejects_work_id_or_isbn_of_the_wrong_type(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    path = tmp_path / "c.jsonl"
    good = {"id": "a", "title": "A"}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "b", field: value}) + "\n")
    with pytest.raises(CatalogError, match=message) as caught:
        load_catalog(path)
    assert caught.value.line == 2


def test_traditional_to_simplified_table_is_closed() -> None:
    from bookrec.recommender._hanzi import TRADITIONAL_TO_SIMPLIFIED as table

    assert len(table) > 3000
    assert all(ord(simplified) not in table for simplified in table.values())  # one pass folds
    assert "紅樓夢村上春樹劉慈欣三體".translate(table) == "红楼梦村上春树刘慈欣三体"


@pytest.mark.parametrize(
    ("title", "authors"),
    [
        (":" * 1_000_000, ["(" * 1_000_000]),
        (" - " * 300_000 + "edition", ["a," * 500_000]),
        ("new " * 250_000 + "xed.", ["a / " * 250_000] * 1000),
        ("经典" * 500_000 + "x版", ["曹雪芹 著"]),
    ],
    ids=["colons", "dashes", "modifiers", "cjk-words"],
)
def test_keys_of_hostile_fields_are_quick(title: str, authors: list[str]) -> None:
    # catalog fields may be a MiB long; some patterns are quadratic, so keys read a prefix
    start = time.perf_counter()
    work_key(title, authors)
    group_editions([Book(id="a", title=title, authors=tuple(authors))])
    assert time.perf_counter() - start < 2.0
