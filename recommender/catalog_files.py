"""Reading a catalog from a JSONL or CSV file, every record validated with its line number.

A problem is reported as ``CatalogError("path:line: what is wrong")``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .book import KNOWN_FIELDS, Book
from .catalog import Catalog
from .errors import CatalogError

__all__ = ["book_from_record", "load_catalog", "parse_catalog"]

logger = logging.getLogger(__name__)

_LIST_SEPARATORS = re.compile(r"[;|]")


def load_catalog(path: str | Path, *, format: str | None = None) -> Catalog:
    """Load and validate a catalog from JSONL (``.jsonl``, ``.ndjson``, ``.json``) or CSV.

    CSV needs a header row with at least ``id`` and ``title``; ``authors`` and ``tags`` cells are
    lists separated by ``;`` or ``|``. Every problem raises :class:`CatalogError` naming the file
    and line. Books with an empty summary are accepted and reported with a logged warning (and
    in :attr:`Catalog.warnings`).
    """
    p = Path(path)
    name = str(path)
    kind = (format or _guess_format(p)).lower()
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise CatalogError("no such file", path=name) from None
    except OSError as exc:
        raise CatalogError(f"cannot read: {exc.strerror or exc}", path=name) from exc
    return parse_catalog(data, name, kind)


def parse_catalog(data: bytes, name: str, format: str = "jsonl") -> Catalog:
    """A catalog from the bytes of a JSONL or CSV file (``name`` is shown in errors), checked
    as :func:`load_catalog` checks a file."""
    kind = format.lower()
    if kind in ("jsonl", "ndjson", "json"):
        records = _read_jsonl(data, name)
    elif kind == "csv":
        records = _read_csv(data, name)
    else:
        raise CatalogError(f"unknown catalog format {kind!r} (use jsonl or csv)", path=name)

    books: list[Book] = []
    lines: list[int] = []
    no_summary: list[tuple[int, str]] = []
    for line, record in records:
        book = book_from_record(record, name, line)
        lines.append(line)
        if not book.summary.strip():
            no_summary.append((line, book.id))
        books.append(book)
    if not books:
        raise CatalogError("the catalog has no books", path=name)
    warnings: list[str] = []
    if no_summary:
        shown = ", ".join(f"{bid!r} (line {ln})" for ln, bid in no_summary[:5])
        more = f" and {len(no_summary) - 5} more" if len(no_summary) > 5 else ""
        message = f"{name}: {len(no_summary)} book(s) have an empty summary: {shown}{more}"
        logger.warning("%s", message)
        warnings.append(message)
    return Catalog(books, source=name, lines=lines, warnings=warnings)


def _guess_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".xz"):
        raise CatalogError(
            "compressed catalogs are not supported; decompress first", path=str(path)
        )
    if suffixes and suffixes[-1] in (".csv", ".tsv"):
        return "csv"
    return "jsonl"


def _decode_error(data: bytes, exc: UnicodeDecodeError, name: str, offset: int = 0) -> CatalogError:
    pos = offset + exc.start
    line = data.count(b"\n", 0, pos) + 1
    column = pos - (data.rfind(b"\n", 0, pos) + 1) + 1
    bad = data[pos : pos + 1].hex()
    return CatalogError(
        f"not valid UTF-8 (byte 0x{bad} at column {column}); save the file as UTF-8",
        path=name,
        line=line,
    )


def _read_jsonl(data: bytes, name: str) -> list[tuple[int, dict[str, Any]]]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    out: list[tuple[int, dict[str, Any]]] = []
    offset = 0
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        start = offset
        offset += len(raw) + 1
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _decode_error(data, exc, name, start) from None
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CatalogError(
                f"malformed JSON ({exc.msg} at column {exc.colno})", path=name, line=lineno
            ) from None
        if not isinstance(record, dict):
            raise CatalogError(
                f"expected a JSON object, got {_type_name(record)}", path=name, line=lineno
            )
        out.append((lineno, record))
    return out


def _read_csv(data: bytes, name: str) -> list[tuple[int, dict[str, Any]]]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _decode_error(data, exc, name) from None
    if not text.strip():
        return []
    delimiter = "\t" if name.lower().endswith(".tsv") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise CatalogError(f"malformed CSV header ({exc})", path=name, line=1) from None
    columns = [h.strip() for h in header]
    for required in ("id", "title"):
        if required not in columns:
            raise CatalogError(f"the header has no {required!r} column", path=name, line=1)
    dupes = sorted({c for c in columns if columns.count(c) > 1 and c})
    if dupes:
        raise CatalogError(f"duplicate columns in the header: {dupes}", path=name, line=1)
    out: list[tuple[int, dict[str, Any]]] = []
    start_line = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise CatalogError(f"malformed CSV ({exc})", path=name, line=start_line) from None
        line = start_line
        start_line = reader.line_num + 1
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(columns):
            raise CatalogError(
                f"expected {len(columns)} fields as in the header, got {len(row)}",
                path=name,
                line=line,
            )
        record: dict[str, Any] = {}
        for column, cell in zip(columns, row, strict=True):
            if not column:
                continue
            value = cell.strip()
            if column in ("authors", "tags"):
                record[column] = [v.strip() for v in _LIST_SEPARATORS.split(value) if v.strip()]
            elif column in ("year", "popularity"):
                record[column] = _csv_number(value, int, column, name, line)
            elif column == "rating":
                record[column] = _csv_number(value, float, column, name, line)
            elif value or column in ("id", "title", "summary"):
                record[column] = value
        out.append((line, record))
    return out


def _csv_number(value: str, kind: type, column: str, name: str, line: int) -> Any:
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise CatalogError(
            f"{column} must be {what}, got {value!r}", path=name, line=line
        ) from None


def _type_name(value: object) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def book_from_record(record: dict[str, Any], name: str = "book", line: int | None = None) -> Book:
    """A :class:`Book` from one catalog record, checked as a catalog line is (``CatalogError``
    naming ``name`` and ``line``)."""

    def fail(message: str) -> CatalogError:
        return CatalogError(message, path=name, line=line)

    def text(key: str, *, required: bool = False) -> str | None:
        value = record.get(key)
        if value is None:
            if required:
                raise fail(f"missing {key}")
            return None
        if not isinstance(value, str):
            raise fail(f"{key} must be a string, got {_type_name(value)}")
        value = value.strip()
        if required and not value:
            raise fail(f"missing {key} (empty)")
        return value

    def str_list(key: str) -> tuple[str, ...]:
        value = record.get(key)
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise fail(f"{key} must be a list of strings, got {_type_name(value)}")
        items: list[str] = []
        for item in value:
            if not isinstance(item, str):
                raise fail(f"{key} must be a list of strings, found {_type_name(item)}")
            if item.strip():
                items.append(item.strip())
        return tuple(items)

    def integer(key: str) -> int | None:
        value = record.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise fail(f"{key} must be an integer, got {_type_name(value)} {value!r}")
        return value

    book_id = text("id", required=True)
    title = text("title", required=True)
    assert book_id is not None and title is not None
    summary = record.get("summary")
    if summary is not None and not isinstance(summary, str):
        raise fail(f"summary must be a string, got {_type_name(summary)}")
    rating = record.get("rating")
    if rating is not None:
        if isinstance(rating, bool) or not isinstance(rating, int | float):
            raise fail(f"rating must be a number, got {_type_name(rating)} {rating!r}")
        rating = float(rating)
        if not math.isfinite(rating) or not 0.0 <= rating <= 5.0:
            raise fail(f"rating must be between 0 and 5, got {rating}")
    popularity = integer("popularity")
    if popularity is not None and popularity < 0:
        raise fail(f"popularity must not be negative, got {popularity}")
    language = text("language")
    series = text("series")
    extra = {k: v for k, v in record.items() if k not in KNOWN_FIELDS}
    return Book(
        id=book_id,
        title=title,
        authors=str_list("authors"),
        summary=(summary or "").strip(),
        tags=str_list("tags"),
        language=language.lower() if language else None,
        year=integer("year"),
        rating=rating,
        popularity=popularity,
        series=series or None,
        extra=MappingProxyType(extra),
    )
