"""Edition keys: ISBN normalisation, work keys over title and author variants, grouping."""

from __future__ import annotations

import pytest

from bookrec.recommender.book import Book, normalize_isbn


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
