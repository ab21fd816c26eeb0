"""Reading logs exported from Goodreads or StoryGraph, matched to a catalog for recommendations.

::

    log = read_reading_log("goodreads_library_export.csv")    # or parse_reading_log(text)
    matched = log.match(rec.catalog)         # ISBN first, then title + author, then title
    matched.summary()                        # 'matched 41 of 50 rows; 9 not in the catalog: ...'
    rec.recommend(**matched.profile(), k=10)     # or matched.recommend(rec, k=10)

The format is told by the header. A file that cannot be read as a whole (empty, binary, not
UTF-8, not CSV, neither export) raises :class:`ReadingLogError`; a row that cannot be read is
skipped and named by its line (``log.skipped``), never fatal. Line numbers are physical lines of
the file (the header is line 1), a row's being the line it starts on.

How a row becomes a signal (:data:`RATING_RULE`): the rating, rounded half up (StoryGraph's
3.5 counts as 4, 2.5 as 3), makes a read book **liked** from 4 stars, **disliked** up to 2,
**history** (read) at 3; a read book without a rating is history; did-not-finish is disliked
(its rating decides if it has one); currently-reading books are no signal but are left out of
the results (with read ones, unless ``exclude_read=False``); to-read books are no signal and
may be recommended: the reader wants them. A book on several rows (two editions) is classified
by the mean of its ratings.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import re
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .book import Book, normalize_isbn, normalize_name, work_key
from .catalog import Catalog
from .errors import RecommenderError, UnknownBookError

if TYPE_CHECKING:  # the recommender imports nothing from here: only for the annotations
    from .recommend import Recommendation, Recommender

__all__ = [
    "MAX_READING_LOG_BYTES",
    "RATING_RULE",
    "BookMatcher",
    "LogMatch",
    "LogRow",
    "MatchedLog",
    "ReadingLog",
    "ReadingLogError",
    "ReadingStatus",
    "RowIssue",
    "UnmatchedRow",
    "parse_reading_log",
    "read_reading_log",
]

logger = logging.getLogger(__name__)

#: The largest reading log read (a file, or the text of an HTTP request): 32 MiB.
MAX_READING_LOG_BYTES = 32 << 20

#: How ratings and shelves become signals, in one sentence (the CLI help and the API schema).
RATING_RULE = (
    "ratings are rounded half up (3.5 counts as 4): 4-5 stars liked, 1-2 disliked, 3 read; "
    "read without a rating counts as read, did-not-finish as disliked; currently-reading books "
    "are left out of the results, to-read books may be recommended"
)


class ReadingLogError(RecommenderError, ValueError):
    """A reading log that cannot be read at all; ``str(err)`` starts with its name."""

    def __init__(self, message: str, *, source: str = "<reading log>") -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.reason = message


class ReadingStatus(enum.Enum):
    """Where a row's book stands for the reader (its shelf or read status)."""

    READ = "read"
    CURRENTLY_READING = "currently-reading"
    TO_READ = "to-read"
    DID_NOT_FINISH = "did-not-finish"
    OTHER = "other"  # a custom shelf, without a rating: no signal


@dataclass(frozen=True, slots=True)
class RowIssue:
    """A row skipped, or kept with a warning: the line it starts on, what is wrong."""

    line: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "message": self.message}


@dataclass(frozen=True, slots=True)
class LogRow:
    """One readable row: its line, the book as the export names it, the reader's rating and
    status. ``isbns`` are valid ISBN-13s (ISBN-10s converted); ``rating`` is None when the
    reader gave none; ``shelf`` is the status as written in the file."""

    line: int
    title: str
    authors: tuple[str, ...]
    isbns: tuple[str, ...]
    rating: float | None
    status: ReadingStatus
    shelf: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "title": self.title,
            "authors": list(self.authors),
            "isbns": list(self.isbns),
            "rating": self.rating,
            "status": self.status.value,
        }


# -- the two formats -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Format:
    name: str
    label: str
    header: tuple[str, ...]  # the columns of a current export, in order (for the error)
    marks: frozenset[str]  # columns only this export has: the header is this format's
    title: str
    authors: str
    more_authors: str | None
    author_list: bool  # several names, comma-separated, in the authors column
    isbns: tuple[str, ...]
    rating: str
    status: str
    shelves: str | None  # custom shelves, for a did-not-finish shelf
    #: ISBN columns that may hold another id instead (StoryGraph's UID), without a warning.
    ids_allowed: bool

    @property
    def required(self) -> tuple[str, ...]:
        return (self.title, self.authors, self.rating, self.status)


#: The header of a Goodreads library export (My Books > Import and export), as written.
_GOODREADS_HEADER = (
    "Book Id,Title,Author,Author l-f,Additional Authors,ISBN,ISBN13,My Rating,"
    "Average Rating,Publisher,Binding,Number of Pages,Year Published,"
    "Original Publication Year,Date Read,Date Added,Bookshelves,"
    "Bookshelves with positions,Exclusive Shelf,My Review,Spoiler,Private Notes,"
    "Read Count,Owned Copies"
)
#: The header of a StoryGraph export (Manage account > Export StoryGraph library), as written.
_STORYGRAPH_HEADER = (
    "Title,Authors,Contributors,ISBN/UID,Format,Read Status,Date Added,"
    "Last Date Read,Dates Read,Read Count,Moods,Pace,Character- or Plot-Driven?,"
    "Strong Character Development?,Loveable Characters?,Diverse Characters?,"
    "Flawed Characters?,Star Rating,Review,Content Warnings,"
    "Content Warning Description,Tags,Owned?"
)


_GOODREADS = _Format(
    name="goodreads",
    label="Goodreads",
    header=tuple(_GOODREADS_HEADER.split(",")),
    marks=frozenset({"book id", "exclusive shelf", "my rating", "author l-f"}),
    title="Title",
    authors="Author",
    more_authors="Additional Authors",
    author_list=False,
    isbns=("ISBN13", "ISBN"),
    rating="My Rating",
    status="Exclusive Shelf",
    shelves="Bookshelves",
    ids_allowed=False,
)

_STORYGRAPH = _Format(
    name="storygraph",
    label="StoryGraph",
    header=tuple(_STORYGRAPH_HEADER.split(",")),
    marks=frozenset({"isbn/uid", "read status", "star rating", "last date read"}),
    title="Title",
    authors="Authors",
    more_authors=None,
    author_list=True,
    isbns=("ISBN/UID",),
    rating="Star Rating",
    status="Read Status",
    shelves=None,
    ids_allowed=True,
)

_FORMATS = (_GOODREADS, _STORYGRAPH)

#: Shelf or status names read as did-not-finish (StoryGraph's status; Goodreads readers make
#: a custom shelf for it, exclusive or not).
_DNF_SHELVES = frozenset({"did-not-finish", "dnf", "abandoned", "did-not-finish-dnf"})
_STATUSES = {
    "read": ReadingStatus.READ,
    "currently-reading": ReadingStatus.CURRENTLY_READING,
    "paused": ReadingStatus.CURRENTLY_READING,  # StoryGraph: started, not given up
    "to-read": ReadingStatus.TO_READ,
    **dict.fromkeys(_DNF_SHELVES, ReadingStatus.DID_NOT_FINISH),
}


def _expected_columns() -> str:
    return "; ".join(f"{f.label}: {', '.join(f.required)}" for f in _FORMATS)


# -- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadingLog:
    """The readable rows of an export (``rows``), the rows skipped (``skipped``) and the rows
    kept with a warning (``warnings``), each named by its line; ``format`` is ``"goodreads"``
    or ``"storygraph"``; ``source`` names the file in messages."""

    format: str
    source: str
    rows: tuple[LogRow, ...]
    skipped: tuple[RowIssue, ...] = ()
    warnings: tuple[RowIssue, ...] = ()

    @property
    def label(self) -> str:
        """The export's name for people: ``Goodreads`` or ``StoryGraph``."""
        return next(f.label for f in _FORMATS if f.name == self.format)

    def match(self, catalog: Catalog | Iterable[Book]) -> MatchedLog:
        """The rows matched to the books of ``catalog`` (see :class:`BookMatcher`)."""
        return BookMatcher.of(catalog).match_log(self)


def read_reading_log(path: str | os.PathLike[str]) -> ReadingLog:
    """Read a Goodreads or StoryGraph CSV export from a file (:func:`parse_reading_log`)."""
    where = Path(path)
    source = str(path)
    try:
        size = where.stat().st_size
    except FileNotFoundError:
        raise ReadingLogError("no such file", source=source) from None
    if where.is_dir():
        raise ReadingLogError("is a directory, expected a CSV export", source=source)
    if size > MAX_READING_LOG_BYTES:
        raise ReadingLogError(
            f"the file has {size:,} bytes, more than the {MAX_READING_LOG_BYTES:,} a reading "
            "log may have",
            source=source,
        )
    try:
        data = where.read_bytes()
    except OSError as exc:
        raise ReadingLogError(f"cannot be read: {exc.strerror or exc}", source=source) from None
    return parse_reading_log(data, source=source)


def parse_reading_log(data: str | bytes, *, source: str = "<reading log>") -> ReadingLog:
    """Parse the text (or UTF-8 bytes) of a Goodreads or StoryGraph CSV export.

    A UTF-8 byte order mark, CRLF or LF line ends, quoted fields with line breaks or doubled
    quotes, and fields of any size are read. ``ReadingLogError`` when the text as a whole is
    no export; a row that cannot be read is skipped, named in ``skipped``.
    """
    text = _decode(data, source)
    if len(text) > MAX_READING_LOG_BYTES:
        raise ReadingLogError(
            f"more than the {MAX_READING_LOG_BYTES:,} characters a reading log may have",
            source=source,
        )
    records = _records(text)
    first = next(records, None)
    while first is not None and first.blank:
        first = next(records, None)
    if first is None:
        raise ReadingLogError(
            "the file is empty; expected a Goodreads or StoryGraph CSV export", source=source
        )
    if first.unterminated:
        raise ReadingLogError(
            f"line {first.line}: not CSV (a quoted field is never closed); expected a "
            "Goodreads or StoryGraph CSV export",
            source=source,
        )
    header = [cell.strip() for cell in first.cells]
    fmt, columns = _detect(header, source)
    rows: list[LogRow] = []
    skipped: list[RowIssue] = []
    warnings: list[RowIssue] = []
    for record in records:
        if record.blank:
            continue
        if record.unterminated:
            skipped.append(
                RowIssue(
                    record.line,
                    f"a quoted field opened on this line is never closed: the rest of the file "
                    f"(lines {record.line}-{record.last_line}) is one broken row, skipped",
                )
            )
            break
        row = _row(fmt, columns, record, header, skipped, warnings)
        if row is not None:
            rows.append(row)
    log = ReadingLog(fmt.name, source, tuple(rows), tuple(skipped), tuple(warnings))
    logger.info("%s: %s export, %d rows, %d skipped", source, fmt.label, len(rows), len(skipped))
    return log


def _decode(data: str | bytes, source: str) -> str:
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise ReadingLogError(
                "the file is UTF-16 text; save or export it as UTF-8", source=source
            )
        if b"\x00" in raw:
            raise ReadingLogError(
                "a binary file, not a CSV export (it holds NUL bytes)", source=source
            )
        if raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            bad = raw[exc.start : exc.start + 1].hex()
            raise ReadingLogError(
                f"not UTF-8 text (byte 0x{bad} on line {line}); export or save it as UTF-8",
                source=source,
            ) from None
    else:
        text = data.removeprefix("\ufeff")
        if "\x00" in text:
            raise ReadingLogError(
                "a binary file, not a CSV export (it holds NUL characters)", source=source
            )
    return text


def _detect(header: list[str], source: str) -> tuple[_Format, dict[str, int]]:
    """The export format of a header, with the position of each of its columns by name."""
    folded: dict[str, int] = {}
    for pos, name in enumerate(header):
        folded.setdefault(name.casefold(), pos)
    fmt = max(_FORMATS, key=lambda f: len(f.marks & folded.keys()))
    if not fmt.marks & folded.keys():
        shown = ", ".join(_short(h, 30) for h in header[:8] if h) or "nothing"
        more = ", ..." if len(header) > 8 else ""
        raise ReadingLogError(
            f"not a Goodreads or StoryGraph export: the header has {shown}{more}; expected "
            f"the columns of one of them ({_expected_columns()})",
            source=source,
        )
    missing = [c for c in fmt.required if c.casefold() not in folded]
    if missing:
        raise ReadingLogError(
            f"a {fmt.label} export needs the columns {', '.join(fmt.required)}; this header "
            f"lacks {', '.join(missing)}",
            source=source,
        )
    columns = {c: folded[c.casefold()] for c in fmt.header if c.casefold() in folded}
    return fmt, columns


def _row(
    fmt: _Format,
    columns: Mapping[str, int],
    record: _Record,
    header: Sequence[str],
    skipped: list[RowIssue],
    warnings: list[RowIssue],
) -> LogRow | None:
    line, cells = record.line, record.cells
    if len(cells) < len(header) or any(c.strip() for c in cells[len(header) :]):
        skipped.append(
            RowIssue(
                line,
                f"{len(cells)} fields where the header has {len(header)} (a comma or a line "
                "break in a field that is not quoted?)",
            )
        )
        return None

    def cell(name: str | None) -> str:
        pos = columns.get(name) if name else None
        return cells[pos].strip() if pos is not None else ""

    title = " ".join(cell(fmt.title).split())
    named = cell(fmt.authors)
    authors = _authors(named) if fmt.author_list else _one_author(named)
    if fmt.more_authors:
        authors += tuple(a for a in _authors(cell(fmt.more_authors)) if a not in authors)
    isbns: dict[str, None] = {}
    for name in fmt.isbns:
        raw = _unwrap(cell(name))
        if not raw:
            continue
        isbn = normalize_isbn(raw)
        if isbn is not None:
            isbns.setdefault(isbn)
        elif not fmt.ids_allowed or _looks_like_isbn(raw):
            warnings.append(
                RowIssue(line, f"{name} {_short(raw)} is not a valid ISBN: matched by title")
            )
    if not title and not isbns:
        skipped.append(RowIssue(line, "no title and no ISBN"))
        return None
    rating_text = cell(fmt.rating)
    rating = _rating(rating_text)
    if rating is _BAD:
        skipped.append(
            RowIssue(line, f"{fmt.rating} {_short(rating_text)} is not a number from 0 to 5")
        )
        return None
    assert not isinstance(rating, _Bad)
    shelf = cell(fmt.status)
    status = _STATUSES.get(shelf.casefold())
    if status is None:
        # A custom exclusive shelf ("favorites", "owned"): a rating says the book was read.
        status = ReadingStatus.READ if rating is not None else ReadingStatus.OTHER
        if status is ReadingStatus.OTHER:
            what = f"{fmt.status} {_short(shelf)}" if shelf else f"no {fmt.status}"
            warnings.append(
                RowIssue(line, f"{what}, no rating: not read, reading or to-read, not used")
            )
    if status is ReadingStatus.READ and fmt.shelves:
        shelves = {s.strip().casefold() for s in cell(fmt.shelves).split(",")}
        if shelves & _DNF_SHELVES:
            status = ReadingStatus.DID_NOT_FINISH
    return LogRow(line, title, authors, tuple(isbns), rating, status, shelf)


class _Bad:
    pass


_BAD = _Bad()


def _rating(text: str) -> float | _Bad | None:
    """A star rating: None for none (empty, or 0, Goodreads' "not rated"), ``_BAD`` when it
    is no number from 0 to 5."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return _BAD
    if not math.isfinite(value) or not 0 <= value <= 5:
        return _BAD
    return value or None


def _unwrap(text: str) -> str:
    """A cell without Goodreads' spreadsheet quoting: ``="0439023483"`` -> ``0439023483``."""
    text = text.strip()
    if text.startswith("="):
        text = text[1:].strip()
    return text.strip('"').strip()


_ISBN_LIKE = re.compile(r"^(?:ISBN[-:\s]*)?[\d\s\-]{9,17}[\dXx]?$", re.IGNORECASE)


def _looks_like_isbn(text: str) -> bool:
    """Whether a StoryGraph ISBN/UID cell is an attempted ISBN (digits), not another id."""
    return bool(_ISBN_LIKE.match(text)) and sum(ch.isdigit() for ch in text) >= 9


def _authors(text: str) -> tuple[str, ...]:
    """Comma-separated author names (StoryGraph's Authors, Goodreads' Additional Authors)."""
    return tuple(dict.fromkeys(" ".join(a.split()) for a in text.split(",") if a.strip()))


def _one_author(text: str) -> tuple[str, ...]:
    name = " ".join(text.split())
    return (name,) if name else ()


def _short(value: str, limit: int = 40) -> str:
    shown = value if len(value) <= limit else value[: limit - 1] + "…"
    return repr(shown)


# -- CSV records ----------------------------------------------------------------------------
#
# The records are split here, not by the csv module: csv's field-size limit is one setting for
# the whole process (the catalog loader sets it), and after an over-long field the csv reader
# cannot find where the next row starts. This reads RFC 4180 as csv.reader does by default
# (quotes open a field only at its start, "" inside quotes is one quote, text after a closing
# quote joins the field), a field may have any size, and each row keeps the line it starts on.


@dataclass(frozen=True, slots=True)
class _Record:
    line: int
    last_line: int
    cells: list[str]
    unterminated: bool = False

    @property
    def blank(self) -> bool:
        return not self.unterminated and all(not c.strip() for c in self.cells)


_UNQUOTED = re.compile(r"[^,\r\n]*")
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")


def _records(text: str) -> Iterator[_Record]:
    pos, line, end = 0, 1, len(text)
    while pos < end:
        start_line = line
        cells: list[str] = []
        while True:
            parts: list[str] = []
            if pos < end and text[pos] == '"':
                close = pos + 1
                while True:
                    close = text.find('"', close)
                    if close < 0:
                        rest = text[pos:]
                        last = line + len(_LINE_BREAKS.findall(rest))
                        yield _Record(start_line, last, cells, unterminated=True)
                        return
                    if text.startswith('""', close):
                        close += 2
                        continue
                    break
                quoted = text[pos + 1 : close]
                line += len(_LINE_BREAKS.findall(quoted))
                parts.append(quoted.replace('""', '"'))
                pos = close + 1
            match = _UNQUOTED.match(text, pos)
            assert match is not None  # the pattern matches the empty string
            parts.append(match.group())
            pos = match.end()
            cells.append("".join(parts))
            if pos < end and text[pos] == ",":
                pos += 1
                continue
            if text.startswith("\r\n", pos):
                pos += 2
            elif pos < end:
                pos += 1
            break
        yield _Record(start_line, line, cells)
        line += 1


# -- matching ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogMatch:
    """A row matched to a catalog book, and how: ``isbn``, ``title+author`` or ``title``."""

    row: LogRow
    book_id: str
    by: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.row.line, "title": self.row.title, "id": self.book_id, "by": self.by}


@dataclass(frozen=True, slots=True)
class UnmatchedRow:
    """A row no catalog book was found for, and why."""

    row: LogRow
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.row.to_dict(), "reason": self.reason}


_NOT_IN_CATALOG = "not in the catalog"


class BookMatcher:
    """Finds the catalog book of a reading-log row, from dicts built once per catalog.

    A row matches, in this order: a book with one of its ISBNs (ISBN-10 and ISBN-13 alike);
    a book of the same work key (:func:`~bookrec.recommender.book.work_key`: normalised title
    and authors) with all of the row's authors or its first; the one work of that normalised
    title whose authors share a name with the row's (spaces and initials aside) or that has
    no author to contradict it. Of several editions of a work, the first in catalog order.
    """

    def __init__(self, books: Iterable[Book]) -> None:
        self._by_isbn: dict[str, str] = {}
        self._by_work: dict[str, str] = {}
        self._by_title: dict[str, dict[str, Book]] = {}
        for book in books:
            for isbn in book.isbns:
                self._by_isbn.setdefault(isbn, book.id)
            key = book.work_key
            self._by_work.setdefault(key, book.id)
            self._by_title.setdefault(_title_key(book.title), {}).setdefault(key, book)
        self._names: dict[str, frozenset[str]] = {}

    _cache: ClassVar[weakref.WeakKeyDictionary[Catalog, BookMatcher]] = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, catalog: Catalog | Iterable[Book]) -> BookMatcher:
        """The matcher of ``catalog``, kept while the catalog lives (a list of books gets a
        new one each time)."""
        if not isinstance(catalog, Catalog):
            return cls(catalog)
        found = cls._cache.get(catalog)
        if found is None:
            found = cls._cache[catalog] = cls(catalog)
        return found

    def find(self, row: LogRow) -> tuple[str, str] | str:
        """``(book id, how)`` for a row, or the reason it matches no book."""
        for isbn in row.isbns:
            book_id = self._by_isbn.get(isbn)
            if book_id is not None:
                return book_id, "isbn"
        if not row.title:
            return _NOT_IN_CATALOG
        for authors in (row.authors, row.authors[:1]):
            if authors:
                book_id = self._by_work.get(work_key(row.title, authors))
                if book_id is not None:
                    return book_id, "title+author"
        works = self._by_title.get(_title_key(row.title))
        if not works:
            return _NOT_IN_CATALOG
        mine = self._author_names(row.authors)
        agree = [b for b in works.values() if mine and mine & self._of(b)]
        if len(agree) == 1:
            return agree[0].id, "title+author"
        if agree:
            return f"{len(agree)} catalog works have this title and author"
        open_ = [b for b in works.values() if not mine or not b.authors]
        if len(open_) == 1:
            return open_[0].id, "title"
        if len(open_) > 1:
            return f"{len(open_)} catalog works have this title; give its author or ISBN"
        return f"{_NOT_IN_CATALOG} (a book of this title is, by another author)"

    def match_log(self, log: ReadingLog) -> MatchedLog:
        """Every row of ``log`` matched (or not), with the reader's profile drawn from them."""
        matches: list[LogMatch] = []
        unmatched: list[UnmatchedRow] = []
        for row in log.rows:
            found = self.find(row)
            if isinstance(found, str):
                unmatched.append(UnmatchedRow(row, found))
            else:
                matches.append(LogMatch(row, *found))
        return MatchedLog(log, tuple(matches), tuple(unmatched))

    def _of(self, book: Book) -> frozenset[str]:
        names = self._names.get(book.id)
        if names is None:
            names = self._names[book.id] = self._author_names(book.authors)
        return names

    @staticmethod
    def _author_names(authors: Iterable[str]) -> frozenset[str]:
        """Each name as work_key reads it (role and nationality markers dropped), and with
        spaces dropped too ("Le Guin" = "LeGuin", "J.R.R." = "J. R. R.")."""
        out: set[str] = set()
        for name in authors:
            if not name.strip():
                continue
            key = work_key("", (name,))
            out.add(key)
            out.add("".join(normalize_name(name).split()))
        return frozenset(out)


def _title_key(title: str) -> str:
    return work_key(title, ())


# -- the profile --------------------------------------------------------------------------------


def _rounded(rating: float) -> int:
    """Half up, as people round stars (Python's round() would make 2.5 a 2)."""
    return math.floor(rating + 0.5)


@dataclass(frozen=True)
class MatchedLog:
    """A reading log matched to a catalog, with the reader's profile drawn from it.

    ``history``, ``liked`` and ``disliked`` are book ids for :meth:`Recommender.recommend`
    (:meth:`profile`); ``currently_reading`` are left out of the results by :meth:`recommend`;
    ``to_read`` are no signal. Each id is the first matched edition of a book, in file order.
    """

    log: ReadingLog
    matches: tuple[LogMatch, ...]
    unmatched: tuple[UnmatchedRow, ...]
    history: tuple[str, ...] = field(init=False)
    liked: tuple[str, ...] = field(init=False)
    disliked: tuple[str, ...] = field(init=False)
    currently_reading: tuple[str, ...] = field(init=False)
    to_read: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        rows: dict[str, list[LogRow]] = {}
        for match in self.matches:
            rows.setdefault(match.book_id, []).append(match.row)
        kinds: dict[str, list[str]] = {
            "history": [],
            "liked": [],
            "disliked": [],
            "currently_reading": [],
            "to_read": [],
        }
        for book_id, its in rows.items():
            kind = _classify(its)
            if kind is not None:
                kinds[kind].append(book_id)
        for name, ids in kinds.items():
            object.__setattr__(self, name, tuple(ids))

    @property
    def skipped(self) -> tuple[RowIssue, ...]:
        return self.log.skipped

    @property
    def warnings(self) -> tuple[RowIssue, ...]:
        return self.log.warnings

    def profile(self) -> dict[str, list[str]]:
        """The ``history``, ``liked`` and ``disliked`` keyword arguments of ``recommend``."""
        return {
            "history": list(self.history),
            "liked": list(self.liked),
            "disliked": list(self.disliked),
        }

    def summary(self, *, shown: int = 5) -> str:
        """One line for people: ``matched 41 of 50 rows; 9 not in the catalog: A, B, ...``."""
        total = len(self.log.rows)
        text = f"matched {len(self.matches)} of {total} row{'s' if total != 1 else ''}"
        if self.unmatched:
            titles = ", ".join(
                _short(u.row.title or "(no title)", 60) for u in self.unmatched[:shown]
            )
            more = f" and {len(self.unmatched) - shown} more" if len(self.unmatched) > shown else ""
            text += f"; {len(self.unmatched)} not in the catalog: {titles}{more}"
        if self.skipped:
            n = len(self.skipped)
            text += f"; {n} row{'s' if n != 1 else ''} skipped"
        return text

    def counts(self) -> str:
        """What the matched rows became: ``5 liked, 1 disliked, 12 read, ...``."""
        parts = [
            f"{len(self.liked)} liked",
            f"{len(self.disliked)} disliked",
            f"{len(self.history)} read",
        ]
        if self.currently_reading:
            parts.append(f"{len(self.currently_reading)} currently reading (left out)")
        if self.to_read:
            parts.append(f"{len(self.to_read)} to-read (may be recommended)")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The match report as JSON (the CLI's ``--json`` and the HTTP service use it)."""
        return {
            "format": self.log.format,
            "rows": len(self.log.rows),
            "matched": len(self.matches),
            "history": list(self.history),
            "liked": list(self.liked),
            "disliked": list(self.disliked),
            "currently_reading": list(self.currently_reading),
            "to_read": list(self.to_read),
            "matches": [m.to_dict() for m in self.matches],
            "unmatched": [u.to_dict() for u in self.unmatched],
            "skipped": [s.to_dict() for s in self.skipped],
            "warnings": [w.to_dict() for w in self.warnings],
        }

    def merged(
        self,
        *,
        history: Sequence[str] = (),
        liked: Sequence[str] = (),
        disliked: Sequence[str] = (),
    ) -> dict[str, list[str]]:
        """The profile with a reader's own lists added; theirs win: a book they like is not
        disliked because of the log, a book they dislike not liked or read."""
        mine_liked, mine_disliked = set(liked), set(disliked)
        return {
            "history": _unique([*history, *(i for i in self.history if i not in mine_disliked)]),
            "liked": _unique([*liked, *(i for i in self.liked if i not in mine_disliked)]),
            "disliked": _unique([*disliked, *(i for i in self.disliked if i not in mine_liked)]),
        }

    def recommend(
        self,
        recommender: Recommender,
        *,
        history: Sequence[str] = (),
        liked: Sequence[str] = (),
        disliked: Sequence[str] = (),
        k: int = 10,
        exclude_read: bool = True,
        **options: Any,
    ) -> list[Recommendation]:
        """``recommender.recommend`` from this log (:meth:`merged` with the lists given),
        without the books being read now (their editions too) unless ``exclude_read=False``.

        A matched book the index has no vector for yet is dropped from the profile, with a
        logged warning, instead of failing the request.
        """
        profile = self.merged(history=history, liked=liked, disliked=disliked)
        reading = self._reading_keys(recommender) if exclude_read else frozenset()
        mine = {*history, *liked, *disliked}
        # Room for the books being read, dropped below (a bad k is the recommender's to refuse).
        extra = len(self.currently_reading) if reading and isinstance(k, int) and k >= 1 else 0
        for _attempt in range(2):
            try:
                results = recommender.recommend(
                    history=profile["history"],
                    liked=profile["liked"],
                    disliked=profile["disliked"],
                    k=k + extra,
                    exclude_read=exclude_read,
                    **options,
                )
                break
            except UnknownBookError as exc:
                missing = set(exc.book_ids)
                if missing & mine or not missing or _attempt:
                    raise
                logger.warning(
                    "%s: %d matched book(s) are not in the index yet, left out: %s",
                    self.log.source,
                    len(missing),
                    ", ".join(sorted(missing)[:10]),
                )
                profile = {n: [i for i in ids if i not in missing] for n, ids in profile.items()}
        kept = [r for r in results if r.book.work_key not in reading]
        return kept[:k]

    def _reading_keys(self, recommender: Recommender) -> frozenset[str]:
        catalog = recommender.catalog
        return frozenset(
            book.work_key
            for book_id in self.currently_reading
            if (book := catalog.get(book_id)) is not None
        )


def _unique(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def _classify(rows: Sequence[LogRow]) -> str | None:
    """The profile list of a book from its rows (see the module docstring)."""
    statuses = {r.status for r in rows}
    finished = (ReadingStatus.READ, ReadingStatus.DID_NOT_FINISH)
    ratings = [r.rating for r in rows if r.rating is not None and r.status in finished]
    if ratings:
        stars = _rounded(sum(ratings) / len(ratings))
        return "liked" if stars >= 4 else "disliked" if stars <= 2 else "history"
    if ReadingStatus.READ in statuses:
        return "history"
    if ReadingStatus.DID_NOT_FINISH in statuses:
        return "disliked"
    if ReadingStatus.CURRENTLY_READING in statuses:
        return "currently_reading"
    if ReadingStatus.TO_READ in statuses:
        return "to_read"
    return None
