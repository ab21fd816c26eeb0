"""Reading-log import: Goodreads and StoryGraph exports read, matched to a catalog, turned into
a reader's profile. The exports under data/ are written as the two sites write them (BOM and
CRLF, ``="..."`` ISBNs, multi-line quoted reviews), with bad rows among the good ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bookrec.client import ModelIdentity
from bookrec.recommender import (
    Book,
    Catalog,
    MatchedLog,
    NumpyStore,
    ReadingLog,
    ReadingLogError,
    Recommender,
    VectorIndex,
    load_catalog,
    parse_reading_log,
    read_reading_log,
)
from bookrec.recommender.reading_log import BookMatcher, ReadingStatus
from tests.recommender.conftest import text_vector

DATA = Path(__file__).parent / "data"
GOODREADS = DATA / "goodreads_library_export.csv"
STORYGRAPH = DATA / "storygraph_export.csv"

GR_HEADER = GOODREADS.read_text(encoding="utf-8-sig").splitlines()[0]
SG_HEADER = STORYGRAPH.read_text(encoding="utf-8").splitlines()[0]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(DATA / "reading_log_catalog.jsonl")


def goodreads_row(
    title: str,
    author: str = "Some Author",
    *,
    isbn: str = '=""',
    isbn13: str = '=""',
    rating: str = "0",
    shelf: str = "read",
    shelves: str = "",
    review: str = "",
) -> str:
    """One line of a Goodreads export with the given fields (the others as Goodreads writes)."""
    cells = [
        "1", _q(title), author, "", "", isbn, isbn13, rating, "4.00", "Publisher", "Paperback",
        "300", "2001", "2001", "", "2020/01/01", _q(shelves), "", shelf, _q(review), "", "",
        "1", "0",
    ]  # fmt: skip
    return ",".join(cells)


def _q(text: str) -> str:
    if any(ch in text for ch in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def goodreads(*rows: str) -> str:
    return "\r\n".join([GR_HEADER, *rows]) + "\r\n"


def storygraph_row(
    title: str,
    authors: str = "Some Author",
    *,
    isbn: str = "",
    status: str = "read",
    stars: str = "",
) -> str:
    cells = [_q(title), _q(authors), "", isbn, "paperback", status, "2020/01/01"] + [""] * 10
    cells += [stars, "", "", "", "", "No"]
    return ",".join(cells)


def storygraph(*rows: str) -> str:
    return "\n".join([SG_HEADER, *rows]) + "\n"


# -- reading the files ------------------------------------------------------------------------


def test_goodreads_export_rows_lines_and_bad_rows() -> None:
    log = read_reading_log(GOODREADS)
    assert log.format == "goodreads" and log.label == "Goodreads"
    assert log.source == str(GOODREADS)
    by_line = {r.line: r for r in log.rows}
    hunger = by_line[2]
    assert hunger.title == "The Hunger Games (The Hunger Games, #1)"
    assert hunger.authors == ("Suzanne Collins",)
    assert hunger.isbns == ("9780439023481",)  # ISBN13 and ISBN-10 are one book
    assert hunger.rating == 5.0 and hunger.status is ReadingStatus.READ
    assert by_line[3].isbns == ()  # ="" is no ISBN
    assert by_line[5].isbns == ()  # the CSV-quoted form "=""""" too
    assert by_line[9].rating is None and by_line[9].status is ReadingStatus.TO_READ  # 0 = none
    assert by_line[10].status is ReadingStatus.CURRENTLY_READING
    # The quoted review spans lines 11-13: the row is named by the line it starts on, and
    # the lines after it keep their numbers.
    assert by_line[11].title == "Circe" and 12 not in by_line and 13 not in by_line
    assert by_line[14].title.startswith("The Name of the Wind")
    assert by_line[19].status is ReadingStatus.DID_NOT_FINISH  # a custom "dnf" shelf
    assert by_line[23].status is ReadingStatus.OTHER  # "owned", no rating: no signal
    assert [(s.line, s.message) for s in log.skipped] == [
        (16, "My Rating 'five' is not a number from 0 to 5"),
        (17, "4 fields where the header has 24 (a comma or a line break in a field that is "
             "not quoted?)"),
    ]  # fmt: skip
    assert [w.line for w in log.warnings] == [18, 23]
    assert "ISBN 'abc' is not a valid ISBN" in log.warnings[0].message
    assert "'owned'" in log.warnings[1].message
    assert len(log.rows) == 18


def test_storygraph_export_fractional_stars_statuses_and_uids() -> None:
    log = read_reading_log(STORYGRAPH)
    assert log.format == "storygraph"
    by_title = {r.title: r for r in log.rows}
    assert by_title["Piranesi"].isbns == ("9781635575637",)  # ISBN-10 ending in X
    assert by_title["Piranesi"].rating == 4.5
    assert by_title["球状闪电"].isbns == ()  # a StoryGraph UID: no ISBN, no warning
    assert by_title["Normal People"].isbns == ()  # an ASIN likewise
    assert by_title["Gone Girl"].status is ReadingStatus.DID_NOT_FINISH
    assert by_title["A Little Life"].status is ReadingStatus.CURRENTLY_READING  # paused
    assert by_title["Tomorrow, and Tomorrow, and Tomorrow"].authors == ("Gabrielle Zevin",)
    assert by_title["Emma"].authors == ()
    left = by_title["The Left Hand of Darkness"]
    assert left.line == 12 and left.rating == 4.25
    assert by_title["Dune"].line == 17  # after the three lines of the review above
    assert [(s.line, s.message) for s in log.skipped] == [
        (15, "Star Rating '4 stars' is not a number from 0 to 5"),
        (16, "Star Rating '7' is not a number from 0 to 5"),
    ]
    assert [(w.line, w.message) for w in log.warnings] == [
        (17, "ISBN/UID '9780000000000' is not a valid ISBN: matched by title"),
    ]


def test_bytes_and_text_read_alike_with_or_without_bom_and_crlf() -> None:
    data = GOODREADS.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and b"\r\n" in data
    from_bytes = parse_reading_log(data, source="x.csv")
    text = data.decode("utf-8-sig").replace("\r\n", "\n")
    from_text = parse_reading_log(text, source="x.csv")
    assert from_bytes.rows == from_text.rows
    assert from_bytes.skipped == from_text.skipped
    assert parse_reading_log("\ufeff" + text).rows == from_text.rows


def test_a_huge_field_is_read_and_the_next_row_found() -> None:
    review = "A very long review. " * 100_000  # 2 MB: over csv's limits, theirs and ours
    text = goodreads(
        goodreads_row("Circe", "Madeline Miller", rating="5", review=review + '"quoted"\nend'),
        goodreads_row("Emma", "Jane Austen", rating="2"),
    )
    log = parse_reading_log(text)
    assert [(r.line, r.title, r.rating) for r in log.rows] == [(2, "Circe", 5.0), (4, "Emma", 2.0)]
    assert log.skipped == ()


def test_an_unclosed_quote_skips_the_rest_naming_its_lines() -> None:
    text = goodreads(
        goodreads_row("Emma", "Jane Austen", rating="2"),
        goodreads_row("Circe", "Madeline Miller").replace("Circe", '"Circe'),
        goodreads_row("Dune", "Frank Herbert"),
    )
    log = parse_reading_log(text)
    assert [r.title for r in log.rows] == ["Emma"]
    (skipped,) = log.skipped
    assert (
        skipped.line == 3 and "never closed" in skipped.message and "lines 3-5" in skipped.message
    )


def test_more_fields_than_the_header_only_when_empty() -> None:
    text = goodreads(
        goodreads_row("Emma", "Jane Austen") + ",,",  # trailing empty cells: fine
        goodreads_row("Dune", "Frank Herbert") + ",oops",
    )
    log = parse_reading_log(text)
    assert [r.title for r in log.rows] == ["Emma"]
    assert [(s.line, s.message.split(" (")[0]) for s in log.skipped] == [
        (3, "25 fields where the header has 24")
    ]


def test_blank_lines_are_ignored_and_rows_without_title_or_isbn_skipped() -> None:
    text = goodreads("", goodreads_row("Emma", "Jane Austen"), " ", goodreads_row(""))
    log = parse_reading_log(text)
    assert [(r.line, r.title) for r in log.rows] == [(3, "Emma")]
    assert [(s.line, s.message) for s in log.skipped] == [(5, "no title and no ISBN")]


def test_columns_are_found_by_name_in_any_order() -> None:
    # An older Goodreads export: fewer columns, another order.
    text = "Title,Author,My Rating,Exclusive Shelf,Book Id,ISBN13\nEmma,Jane Austen,4,read,6969,\n"
    (row,) = parse_reading_log(text).rows
    assert (row.title, row.authors, row.rating) == ("Emma", ("Jane Austen",), 4.0)


@pytest.mark.parametrize(
    ("data", "needles"),
    [
        (b"", ("empty",)),
        (b"\xef\xbb\xbf  \r\n\r\n", ("empty",)),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ("binary",)),
        ("Title,Author\nÉmile,Zola\n".encode("cp1252"), ("not UTF-8", "line 2", "0xc9")),
        ("Title,Authors\n".encode("utf-16"), ("UTF-16",)),
        (b'{"id": "b1", "title": "Dune"}\n', ("not a Goodreads or StoryGraph export",)),
        (
            b"id,title,authors\nb1,Dune,Frank Herbert\n",
            ("'id', 'title', 'authors'", "Exclusive Shelf"),
        ),
        (b"<!DOCTYPE html>\n<html><body>Sign in</body></html>\n", ("not a Goodreads",)),
        (b'"Title,Author\n', ("not CSV",)),
        (b"Book Id,Title,Author,Exclusive Shelf\n1,Emma,Jane Austen,read\n", ("lacks My Rating",)),
        (b"Title,Authors,Read Status\nEmma,Jane Austen,read\n", ("StoryGraph", "Star Rating")),
    ],
)
def test_a_file_that_is_no_export_is_one_clear_error(data: bytes, needles: tuple[str, ...]) -> None:
    with pytest.raises(ReadingLogError) as caught:
        parse_reading_log(data, source="upload.csv")
    message = str(caught.value)
    assert message.startswith("upload.csv: ")
    for needle in needles:
        assert needle in message, message
    assert isinstance(caught.value, ValueError)


def test_the_expected_columns_are_named(tmp_path: Path) -> None:
    with pytest.raises(ReadingLogError) as caught:
        parse_reading_log("a,b\n1,2\n")
    message = str(caught.value)
    assert "Goodreads: Title, Author, My Rating, Exclusive Shelf" in message
    assert "StoryGraph: Title, Authors, Star Rating, Read Status" in message
    with pytest.raises(ReadingLogError, match="no such file"):
        read_reading_log(tmp_path / "missing.csv")
    with pytest.raises(ReadingLogError, match="directory"):
        read_reading_log(tmp_path)


# -- matching ---------------------------------------------------------------------------------


def test_goodreads_export_matched_by_isbn_then_title_and_author(catalog: Catalog) -> None:
    matched = read_reading_log(GOODREADS).match(catalog)
    how = {m.row.line: (m.book_id, m.by) for m in matched.matches}
    assert how[2] == ("hunger-games", "isbn")
    assert how[3] == ("catching-fire", "title+author")  # no ISBN; series note dropped
    assert how[4] == ("dune", "isbn")  # the row's ISBN-13, the catalog's ISBN-10
    assert how[5] == ("foundation", "title+author")
    assert how[6] == ("emma", "title+author")  # Austen's, not McCall Smith's Emma
    assert how[8] == ("left-hand", "title+author")  # "LeGuin" for "Le Guin"
    assert how[18] == ("normal-people", "title+author")  # its ISBN "abc" was no help
    assert how[20] == ("martian", "isbn")
    assert how[21] == ("martian", "title+author")  # another edition's ISBN: by title
    assert how[22] == ("catcher", "title+author")  # "J. D." for "J.D."
    unmatched = {u.row.line: u.reason for u in matched.unmatched}
    assert unmatched == {14: "not in the catalog", 15: "not in the catalog"}
    assert len(matched.matches) == 16


def test_goodreads_ratings_and_shelves_become_the_profile(catalog: Catalog) -> None:
    matched = read_reading_log(GOODREADS).match(catalog)
    assert set(matched.liked) == {"hunger-games", "catching-fire", "dune", "left-hand", "circe",
                                  "martian"}  # fmt: skip  # the Martian: 5 and 3 average 4
    assert set(matched.disliked) == {"emma", "achilles", "catcher"}  # 2, dnf, 1 star
    assert set(matched.history) == {"foundation", "gone-girl", "normal-people"}  # 3, unrated
    assert matched.currently_reading == ("little-life",)
    assert matched.to_read == ("hail-mary",)
    assert "hobbit" not in {*matched.liked, *matched.disliked, *matched.history}  # "owned"
    assert matched.profile() == {
        "history": list(matched.history),
        "liked": list(matched.liked),
        "disliked": list(matched.disliked),
    }
    assert matched.liked[0] == "hunger-games"  # file order


def test_storygraph_export_matched_with_rounded_stars(catalog: Catalog) -> None:
    matched = read_reading_log(STORYGRAPH).match(catalog)
    how = {m.row.title: (m.book_id, m.by) for m in matched.matches}
    assert how["Piranesi"] == ("piranesi", "isbn")
    assert how["三体"] == ("three-body", "isbn")
    assert how["球状闪电"] == ("ball-lightning", "title+author")
    assert how["Dune"] == ("dune", "title+author")  # its bad ISBN was no help
    # 4.5 and 4.25 liked, 3.5 rounds up to 4: liked; 3.25 is read; 2.25 rounds to 2.
    assert set(matched.liked) == {"piranesi", "three-body", "martian", "left-hand", "dune"}
    assert matched.history == ("ball-lightning",)
    assert set(matched.disliked) == {"normal-people", "gone-girl"}  # 2.25, did-not-finish
    assert set(matched.currently_reading) == {"circe", "little-life"}
    assert matched.to_read == ("hail-mary",)
    unmatched = {u.row.title: u.reason for u in matched.unmatched}
    assert unmatched["Tomorrow, and Tomorrow, and Tomorrow"] == "not in the catalog"
    assert unmatched["Emma"] == "2 catalog works have this title; give its author or ISBN"


@pytest.mark.parametrize(
    ("title", "author", "expected"),
    [
        ("Emma", "Jane Austen", "emma"),
        ("Emma", "Alexander McCall Smith", "emma-mccall-smith"),
        ("EMMA", "jane austen", "emma"),
        ("Emma (Penguin Classics)", "Jane Austen", "emma"),
        ("Ｅｍｍａ", "Ｊａｎｅ Ａｕｓｔｅｎ", "emma"),  # full-width
        ("Neuromancer", "William Gibson", "neuromancer"),
        ("Neuromancer", "", "neuromancer"),  # one work of the title, no author to contradict
        ("Neuromancer", "Someone Else", None),  # a contradicting author
        ("Emma", "Someone Else", None),
        ("The Hobbit (The Lord of the Rings, #0)", "J. R. R. Tolkien", "hobbit"),
        ("Pride and Prejudice", "Jane Austen, Seth Grahame-Smith", "pride"),  # first author
        ("三体", "刘慈欣", "three-body"),
        ("Unknown Book", "Nobody", None),
    ],
)
def test_title_and_author_variants(
    catalog: Catalog, title: str, author: str, expected: str | None
) -> None:
    text = storygraph(storygraph_row(title, author, stars="4"))
    matched = parse_reading_log(text).match(catalog)
    assert [m.book_id for m in matched.matches] == ([expected] if expected else [])


def test_isbn_beats_title_and_is_matched_in_either_form(catalog: Catalog) -> None:
    rows = [
        goodreads_row("A wrong title", "Nobody", isbn='="0441172717"'),  # Dune's ISBN-10
        goodreads_row("Another", "Nobody", isbn13='="978-0-441-47812-5"'),  # hyphenated
        goodreads_row("Dune", "Frank Herbert", isbn13='="9780441013593"'),  # the 40th edition
    ]
    matched = parse_reading_log(goodreads(*rows)).match(catalog)
    assert [(m.book_id, m.by) for m in matched.matches] == [
        ("dune", "isbn"),
        ("left-hand", "isbn"),
        ("dune-40th", "isbn"),
    ]


def test_a_title_of_another_author_is_reported_as_such(catalog: Catalog) -> None:
    matched = parse_reading_log(storygraph(storygraph_row("Circe", "Homer"))).match(catalog)
    (unmatched,) = matched.unmatched
    assert unmatched.reason == "not in the catalog (a book of this title is, by another author)"


def test_books_without_isbns_in_a_plain_list_of_books() -> None:
    books = [Book("x1", "Solaris", ("Stanisław Lem",)), Book("x2", "Solaris", ("Lem",))]
    log = parse_reading_log(storygraph(storygraph_row("Solaris", "Stanislaw Lem", stars="5")))
    # Two works of the title, neither by a name equal to "Stanislaw Lem": no guess.
    assert log.match(books).matches == ()
    exact = parse_reading_log(storygraph(storygraph_row("Solaris", "Stanisław Lem", stars="5")))
    assert [m.book_id for m in exact.match(books).matches] == ["x1"]


def test_the_lookup_is_built_once_per_catalog(catalog: Catalog) -> None:
    assert BookMatcher.of(catalog) is BookMatcher.of(catalog)
    assert BookMatcher.of(list(catalog)) is not BookMatcher.of(list(catalog))


@pytest.mark.parametrize(
    ("ratings", "kind"),
    [
        (["5"], "liked"),
        (["4"], "liked"),
        (["3"], "history"),
        (["2"], "disliked"),
        (["1"], "disliked"),
        (["0"], "history"),  # read, no rating
        ([""], "history"),
        (["3.75"], "liked"),
        (["3.5"], "liked"),  # half up
        (["3.25"], "history"),
        (["2.5"], "history"),  # half up: 3
        (["2.25"], "disliked"),
        (["5", "1"], "history"),  # two editions: the mean, 3
        (["5", "3"], "liked"),
        (["2", "3"], "history"),  # 2.5 rounds up
        (["4", ""], "liked"),  # the rated row counts
    ],
)
def test_rating_rule(catalog: Catalog, ratings: list[str], kind: str) -> None:
    rows = [storygraph_row("Neuromancer", "William Gibson", stars=r) for r in ratings]
    matched = parse_reading_log(storygraph(*rows)).match(catalog)
    lists = {
        name: getattr(matched, name)
        for name in ("liked", "disliked", "history", "currently_reading", "to_read")
    }
    assert {name for name, ids in lists.items() if ids} == {kind}
    assert lists[kind] == ("neuromancer",)


@pytest.mark.parametrize(
    ("status", "stars", "kind"),
    [
        ("read", "", "history"),
        ("did-not-finish", "", "disliked"),
        ("did-not-finish", "4", "liked"),  # its rating decides
        ("currently-reading", "", "currently_reading"),
        ("currently-reading", "5", "currently_reading"),  # no signal while reading
        ("to-read", "", "to_read"),
        ("Read", "5", "liked"),  # case
        ("wishlist", "5", "liked"),  # a custom status with a rating: read
        ("wishlist", "", None),
    ],
)
def test_statuses(catalog: Catalog, status: str, stars: str, kind: str | None) -> None:
    row = storygraph_row("Neuromancer", "William Gibson", status=status, stars=stars)
    matched = parse_reading_log(storygraph(row)).match(catalog)
    lists = {
        name: getattr(matched, name)
        for name in ("liked", "disliked", "history", "currently_reading", "to_read")
    }
    assert {name for name, ids in lists.items() if ids} == ({kind} if kind else set())


def test_a_dnf_bookshelf_on_goodreads_is_did_not_finish(catalog: Catalog) -> None:
    row = goodreads_row("Neuromancer", "William Gibson", shelves="sci-fi, dnf", shelf="read")
    matched = parse_reading_log(goodreads(row)).match(catalog)
    assert matched.disliked == ("neuromancer",)


def test_summary_and_report(catalog: Catalog) -> None:
    matched = read_reading_log(GOODREADS).match(catalog)
    assert matched.summary() == (
        "matched 16 of 18 rows; 2 not in the catalog: 'The Name of the Wind (The Kingkiller "
        "Chronicle, #1)', 'Educated'; 2 rows skipped"
    )
    assert matched.counts() == (
        "6 liked, 3 disliked, 3 read, 1 currently reading (left out), 1 to-read (may be "
        "recommended)"
    )
    report = matched.to_dict()
    assert (report["format"], report["rows"], report["matched"]) == ("goodreads", 18, 16)
    assert report["unmatched"][0] == {
        "line": 14,
        "title": "The Name of the Wind (The Kingkiller Chronicle, #1)",
        "authors": ["Patrick Rothfuss"],
        "isbns": ["9780756404079"],
        "rating": 5.0,
        "status": "read",
        "reason": "not in the catalog",
    }
    assert report["skipped"][0] == {"line": 16, "message": "My Rating 'five' is not a number "
                                    "from 0 to 5"}  # fmt: skip
    assert report["matches"][0] == {
        "line": 2,
        "title": "The Hunger Games (The Hunger Games, #1)",
        "id": "hunger-games",
        "by": "isbn",
    }
    assert report["currently_reading"] == ["little-life"]
    many = parse_reading_log(storygraph(*(storygraph_row(f"Nope {i}") for i in range(8))))
    assert many.match(catalog).summary(shown=2) == (
        "matched 0 of 8 rows; 8 not in the catalog: 'Nope 0', 'Nope 1' and 6 more"
    )


def test_the_reader_s_own_lists_win_over_the_log(catalog: Catalog) -> None:
    matched = read_reading_log(GOODREADS).match(catalog)
    merged = matched.merged(liked=["emma"], disliked=["dune"], history=["pride"])
    assert "emma" in merged["liked"] and "emma" not in merged["disliked"]
    assert "dune" in merged["disliked"] and "dune" not in merged["liked"]
    assert merged["history"][0] == "pride"
    assert len(merged["liked"]) == len(set(merged["liked"]))


# -- recommending -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recommender(catalog: Catalog) -> Recommender:
    ids = list(catalog.ids)
    vectors = np.stack([text_vector(b.summary, 16) for b in catalog])
    index = VectorIndex.from_vectors(ids, vectors, ModelIdentity("fake/embedder", 16))
    return Recommender(catalog, NumpyStore(index, catalog))


def test_recommend_leaves_out_what_was_read_and_is_being_read(
    catalog: Catalog, recommender: Recommender
) -> None:
    matched = read_reading_log(GOODREADS).match(catalog)
    results = matched.recommend(recommender, k=len(catalog))
    got = {r.book.id for r in results}
    read = {*matched.liked, *matched.history, *matched.disliked}
    assert got and not got & read
    assert "little-life" not in got  # currently reading
    assert "dune-40th" not in got  # another edition of a liked book
    assert "hail-mary" in got  # to-read may be recommended
    assert got == set(catalog.ids) - read - {"little-life", "dune-40th"}
    assert len(matched.recommend(recommender, k=3)) == 3
    included = matched.recommend(recommender, k=len(catalog), exclude_read=False)
    assert "little-life" in {r.book.id for r in included}


def test_recommend_is_the_recommender_s_own_call(
    catalog: Catalog, recommender: Recommender
) -> None:
    rows = [
        storygraph_row("Piranesi", "Susanna Clarke", stars="5"),
        storygraph_row("Emma", "Jane Austen", stars="1"),
        storygraph_row("Dune", "Frank Herbert"),
    ]
    matched = parse_reading_log(storygraph(*rows)).match(catalog)
    assert matched.profile() == {"history": ["dune"], "liked": ["piranesi"], "disliked": ["emma"]}
    direct = recommender.recommend(**matched.profile(), k=5, diversity=0.3)
    via = matched.recommend(recommender, k=5, diversity=0.3)
    assert [(r.book.id, r.score, r.reason) for r in via] == [
        (r.book.id, r.score, r.reason) for r in direct
    ]


def test_a_log_with_nothing_read_is_an_empty_profile(
    catalog: Catalog, recommender: Recommender
) -> None:
    from bookrec.recommender import EmptyProfileError

    log = parse_reading_log(storygraph(storygraph_row("Neuromancer", "William Gibson",
                                                      status="to-read")))  # fmt: skip
    with pytest.raises(EmptyProfileError):
        log.match(catalog).recommend(recommender)


def test_a_matched_book_missing_from_the_index_is_left_out(
    catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [i for i in catalog.ids if i != "circe"]
    vectors = np.stack([text_vector(catalog[i].summary, 16) for i in ids])
    index = VectorIndex.from_vectors(ids, vectors, ModelIdentity("fake/embedder", 16))
    rec = Recommender(catalog, NumpyStore(index, catalog))
    matched = read_reading_log(GOODREADS).match(catalog)
    assert "circe" in matched.liked
    results = matched.recommend(rec, k=3)
    assert len(results) == 3
    assert "not in the index yet" in caplog.text and "circe" in caplog.text
    from bookrec.recommender import UnknownBookError

    with pytest.raises(UnknownBookError):  # the reader's own unknown id still fails
        matched.recommend(rec, liked=["circe"])


def test_types_are_exported() -> None:
    assert isinstance(read_reading_log(STORYGRAPH), ReadingLog)
    assert MatchedLog.__module__ == "bookrec.recommender.reading_log"
