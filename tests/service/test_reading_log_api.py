"""``POST /v1/recommendations`` with a reading log: a Goodreads or StoryGraph export sent as the
``reading_log`` text of the body, over real HTTP on the session's service (30 books, "Book
number i" by "Author i % 7")."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.service.conftest import BOOKS, Service
from tests.service.test_api import PROBLEM, problem

GR_HEADER = (
    "Book Id,Title,Author,Author l-f,Additional Authors,ISBN,ISBN13,My Rating,Average Rating,"
    "Publisher,Binding,Number of Pages,Year Published,Original Publication Year,Date Read,"
    "Date Added,Bookshelves,Bookshelves with positions,Exclusive Shelf,My Review,Spoiler,"
    "Private Notes,Read Count,Owned Copies"
)
SG_HEADER = (
    "Title,Authors,Contributors,ISBN/UID,Format,Read Status,Date Added,Last Date Read,"
    "Dates Read,Read Count,Moods,Pace,Character- or Plot-Driven?,Strong Character Development?,"
    "Loveable Characters?,Diverse Characters?,Flawed Characters?,Star Rating,Review,"
    "Content Warnings,Content Warning Description,Tags,Owned?"
)


def gr_row(i: int, rating: str, shelf: str = "read", review: str = "") -> str:
    """A Goodreads line for the service's book ``i`` (``Book number i`` by ``Author i % 7``)."""
    title = f'"Book number {i} (A Series, #{i})"'
    quoted = '"' + review.replace('"', '""') + '"' if review else ""
    return (
        f'{1000 + i},{title},Author {i % 7},"{i % 7}, Author",,="",="",{rating},3.90,Press,'
        f"Paperback,300,2001,2001,2020/01/02,2020/01/01,,,{shelf},{quoted},,,1,0"
    )


def goodreads(*rows: str) -> str:
    return "\ufeff" + "\r\n".join([GR_HEADER, *rows]) + "\r\n"


def recommend(service: Service, **body: Any) -> httpx.Response:
    return service.http.post("/v1/recommendations", json=body)


def test_a_goodreads_export_is_matched_and_recommended_from(service: Service) -> None:
    text = goodreads(
        gr_row(1, "5"),
        gr_row(2, "4", review='Loved it.\r\n\r\nThe "ending" above all.'),  # lines 3-5
        gr_row(3, "3"),
        gr_row(4, "1"),
        gr_row(5, "0"),
        gr_row(6, "0", shelf="currently-reading"),
        gr_row(7, "0", shelf="to-read"),
        gr_row(8, "five"),  # skipped: line 11
        '99,"Not in this catalog",Nobody,"Nobody",,="",="",5,4.0,P,Paperback,1,2001,2001,,,,,'
        "read,,,,1,0",
        "12,Too few,columns",  # skipped: line 13
    )
    response = recommend(service, reading_log=text, k=BOOKS)
    assert response.status_code == 200, response.text
    body = response.json()
    got = {r["id"] for r in body["results"]}
    read = {"b001", "b002", "b003", "b004", "b005"}
    assert got and not got & read and "b006" not in got  # read, rated, being read
    assert "b007" in got  # to-read: may be recommended
    report = body["reading_log"]
    assert report["format"] == "goodreads"
    assert (report["rows"], report["matched"]) == (8, 7)
    assert report["liked"] == ["b001", "b002"]
    assert report["history"] == ["b003", "b005"]
    assert report["disliked"] == ["b004"]
    assert report["currently_reading"] == ["b006"] and report["to_read"] == ["b007"]
    assert report["matches"][0] == {
        "line": 2,
        "title": "Book number 1 (A Series, #1)",
        "id": "b001",
        "by": "title+author",
    }
    (unmatched,) = report["unmatched"]
    assert (unmatched["line"], unmatched["title"], unmatched["reason"]) == (
        12,
        "Not in this catalog",
        "not in the catalog",
    )
    assert [(s["line"], s["message"].split(" (")[0]) for s in report["skipped"]] == [
        (11, "My Rating 'five' is not a number from 0 to 5"),
        (13, "3 fields where the header has 24"),
    ]
    assert "reading_log" not in body["query"]  # the text is not echoed back
    assert body["query"]["liked"] == []


def test_a_storygraph_export_combines_with_the_request_s_lists(service: Service) -> None:
    def row(i: int, status: str, stars: str) -> str:
        cells = [f"Book number {i}", f"Author {i % 7}", "", "", "paperback", status]
        return ",".join(cells + [""] * 11 + [stars, "", "", "", "", "No"])

    text = "\n".join([SG_HEADER, row(10, "read", "4.5"), row(11, "did-not-finish", "")]) + "\n"
    response = recommend(
        service, reading_log=text, liked=["b011"], history=["b012"], k=BOOKS, strategy="best"
    )
    body = response.json()
    assert response.status_code == 200, body
    got = {r["id"] for r in body["results"]}
    # The log says b011 was not finished (disliked); the request likes it: the request wins.
    assert not got & {"b010", "b011", "b012"}
    assert body["reading_log"]["disliked"] == ["b011"]
    assert {r["reason"] for r in body["results"]} <= {
        "because you liked Book number 10",
        "because you liked Book number 11",
        "because you read Book number 12",
    }


def test_without_a_reading_log_the_report_is_null(service: Service) -> None:
    body = recommend(service, liked=["b001"], k=3).json()
    assert body["reading_log"] is None and "reading_log" not in body["query"]


def test_a_text_that_is_no_export_is_a_422_naming_the_field(service: Service) -> None:
    for text, needle in (
        ("", "empty"),
        ("id,title\nb001,Book number 1\n", "not a Goodreads or StoryGraph export"),
        ("Title,Author\x00\n", "binary"),
        ('"Title,Author\n', "not CSV"),
        ("Book Id,Title,Author\n1,Book number 1,Author 1\n", "lacks My Rating, Exclusive Shelf"),
    ):
        body = problem(recommend(service, reading_log=text), 422, "invalid-request")
        assert needle in body["detail"], body
        assert body["errors"] == [{"field": "body.reading_log", "message": body["detail"]}]
    wrong = problem(recommend(service, reading_log=["not", "text"]), 422, "invalid-request")
    assert "body.reading_log" in [e["field"] for e in wrong["errors"]]


def test_a_log_with_nothing_read_is_an_empty_profile(service: Service) -> None:
    text = goodreads(gr_row(1, "0", shelf="to-read"), '"Unknown",Nobody')
    body = problem(recommend(service, reading_log=text), 422, "empty-profile")
    assert "matched 1 of 1 row" in body["detail"] and "1 row skipped" in body["detail"]
    # With a liked book of the request's own it recommends.
    assert recommend(service, reading_log=text, liked=["b002"], k=2).status_code == 200


def test_a_large_export_within_the_body_limit(service: Service) -> None:
    review = 'A long review, with commas and "quotes". ' * 10
    rows = [gr_row(i % BOOKS, str(i % 6), review=review) for i in range(1500)]
    text = goodreads(*rows)
    assert 700_000 < len(text.encode()) < 1_000_000  # under the default 1 MiB body limit
    started = time.perf_counter()
    response = recommend(service, reading_log=text, k=5)
    assert response.status_code == 200, response.text
    assert time.perf_counter() - started < 10
    report = response.json()["reading_log"]
    assert (report["rows"], report["matched"]) == (1500, 1500)
    assert len(report["liked"] + report["history"] + report["disliked"]) == BOOKS
    too_big = goodreads(*rows, *rows)
    problem(recommend(service, reading_log=too_big), 413, "payload-too-large")


def test_openapi_documents_the_reading_log(service: Service) -> None:
    spec = service.http.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    field = schemas["RecommendationRequest"]["properties"]["reading_log"]
    assert "Goodreads or StoryGraph" in field["description"]
    assert "4-5 stars liked, 1-2 disliked, 3 read" in field["description"]
    report = schemas["ReadingLogReport"]["properties"]
    assert {"matched", "unmatched", "skipped", "liked", "disliked", "history"} <= set(report)
    post = spec["paths"]["/v1/recommendations"]["post"]
    ok = post["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/ReaderResults")
    assert PROBLEM in post["responses"]["422"]["content"]
