"""The request bodies of the HTTP API with its response shapes, as pydantic models.

They are what ``/openapi.json`` documents. A result is ``Recommendation.to_dict()`` with its
``rank``; a book is ``Book.to_dict()`` (unknown catalog fields included).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from bookrec.recommender.reading_log import MAX_READING_LOG_BYTES, RATING_RULE

__all__ = [
    "MAX_IDS",
    "MAX_K",
    "MAX_TEXT",
    "BookOut",
    "BookRecord",
    "BookResponse",
    "FiltersIn",
    "Health",
    "PutResponse",
    "ReaderResults",
    "Readiness",
    "ReadingLogReport",
    "RecommendationRequest",
    "ResultOut",
    "Results",
]

#: The largest ``k`` the schema allows (the service may allow fewer: ``max_k``).
MAX_K = 1000
#: The longest free text (search text, one preference), in characters.
MAX_TEXT = 2000
#: The most book ids in one list of a request.
MAX_IDS = 1000

BookId = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
Name = Annotated[str, StringConstraints(max_length=200)]
Year = Annotated[int, Field(ge=-10000, le=10000)]
Rating = Annotated[float, Field(ge=0, le=5, allow_inf_nan=False)]
Cap = Annotated[int, Field(ge=1, le=MAX_IDS)]


class FiltersIn(BaseModel):
    """Which books may be returned (each list matches any of its values)."""

    model_config = ConfigDict(extra="forbid")

    language: list[Name] = Field(default_factory=list, max_length=50)
    tag: list[Name] = Field(default_factory=list, max_length=50)
    author: list[Name] = Field(default_factory=list, max_length=50)
    year_min: Year | None = None
    year_max: Year | None = None
    min_rating: Rating | None = None
    max_per_author: Cap | None = None
    max_per_series: Cap | None = None

    def keywords(self) -> dict[str, Any]:
        """The ``Filters`` keyword arguments of the filters given."""
        out: dict[str, Any] = {}
        for name, key in (("language", "languages"), ("tag", "tags"), ("author", "authors")):
            values = getattr(self, name)
            if values:
                out[key] = values
        for name in ("year_min", "year_max", "min_rating", "max_per_author", "max_per_series"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


class RecommendationRequest(BaseModel):
    """A reader: what they read, liked and disliked, what they want, in their words."""

    model_config = ConfigDict(extra="forbid")

    history: list[BookId] = Field(default_factory=list, max_length=MAX_IDS)
    liked: list[BookId] = Field(default_factory=list, max_length=MAX_IDS)
    disliked: list[BookId] = Field(default_factory=list, max_length=MAX_IDS)
    preferences: list[Text] = Field(default_factory=list, max_length=50)
    strategy: Literal["blend", "average", "best"] = "blend"
    k: int = Field(10, ge=1, le=MAX_K)
    diversity: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    exclude_read: bool = True
    filters: FiltersIn = Field(default_factory=FiltersIn)
    rerank: bool = Field(
        False,
        description="rescore the best candidates with the reranker against the reader's "
        "wishes and liked books",
    )
    reading_log: Annotated[str, StringConstraints(max_length=MAX_READING_LOG_BYTES)] | None = Field(
        None,
        description="the text of a Goodreads or StoryGraph CSV export (the file as it was "
        "downloaded; the body limit of the service, 1 MiB unless --max-body-bytes says "
        "otherwise, bounds it): its rows are matched to the catalog (ISBN, then title and "
        f"author) and added to history, liked and disliked; {RATING_RULE}. The response's "
        "reading_log reports the matches, the rows not in the catalog and the rows skipped",
    )


class BookRecord(BaseModel):
    """A catalog record; fields the library does not know are kept with the book."""

    model_config = ConfigDict(extra="allow")

    id: BookId | None = None
    title: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    authors: list[Name] = Field(default_factory=list, max_length=100)
    summary: Annotated[str, StringConstraints(max_length=20000)] = ""
    tags: list[Name] = Field(default_factory=list, max_length=100)
    language: Name | None = None
    year: Year | None = None
    rating: Rating | None = None
    popularity: Annotated[int, Field(ge=0, le=2**53)] | None = None
    series: Name | None = None


class BookOut(BaseModel):
    """A book as stored (``Book.to_dict()``)."""

    model_config = ConfigDict(extra="allow")

    id: str
    title: str
    authors: list[str]
    summary: str
    tags: list[str]
    language: str | None = None
    year: int | None = None
    rating: float | None = None
    popularity: int | None = None
    series: str | None = None


class BookResponse(BaseModel):
    book: BookOut


class PutResponse(BaseModel):
    book: BookOut
    created: bool


class ResultOut(BaseModel):
    """One ranked result (``Recommendation.to_dict()`` with its rank)."""

    rank: int
    id: str
    title: str
    authors: list[str]
    summary: str
    year: int | None
    language: str | None
    tags: list[str]
    series: str | None
    rating: float | None
    score: float
    reason: str
    degraded: bool
    reranked: bool = False


class Results(BaseModel):
    """The result envelope: the query as understood, whether any result is degraded (free
    text matched by keywords because the embedding service was unavailable), whether the
    results were reranked (false when ``rerank`` was asked but the reranker was unavailable:
    then they keep the first stage's order), the results."""

    query: dict[str, Any]
    degraded: bool
    reranked: bool = False
    results: list[ResultOut]


class LogIssueOut(BaseModel):
    """A row of the reading log skipped, or read with a warning: its line in the file."""

    line: int
    message: str


class LogMatchOut(BaseModel):
    """A row matched to a catalog book, and how: ``isbn``, ``title+author`` or ``title``."""

    line: int
    title: str
    id: str
    by: Literal["isbn", "title+author", "title"]


class LogUnmatchedOut(BaseModel):
    """A row no catalog book was found for, as read, and why."""

    line: int
    title: str
    authors: list[str]
    isbns: list[str]
    rating: float | None
    status: Literal["read", "currently-reading", "to-read", "did-not-finish", "other"]
    reason: str


class ReadingLogReport(BaseModel):
    """How a reading log was read: its format, the rows read and matched, what the matched
    rows became (book ids), the rows not in the catalog, the rows skipped (a line that could
    not be read) and the rows read with a warning (an ISBN that is no ISBN, a custom shelf)."""

    format: Literal["goodreads", "storygraph"]
    rows: int
    matched: int
    history: list[str]
    liked: list[str]
    disliked: list[str]
    currently_reading: list[str] = Field(description="left out of the results")
    to_read: list[str] = Field(description="no signal; they may be recommended")
    matches: list[LogMatchOut]
    unmatched: list[LogUnmatchedOut]
    skipped: list[LogIssueOut]
    warnings: list[LogIssueOut]


class ReaderResults(Results):
    """The result envelope of a reader's recommendations, with the match report of the
    reading log when the request had one."""

    reading_log: ReadingLogReport | None = None


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "degraded"]
    books: int
    model: str | None
    dimensions: int | None
    embedding: str
