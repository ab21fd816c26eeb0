"""Reading a catalog from a JSONL or CSV file, every record validated with its line number.

A problem is reported as ``CatalogError("path:line: what is wrong")``. Hostile input is refused
the same way: lists or objects nested deeper than :data:`MAX_NESTING`, integers of more than
:data:`MAX_INTEGER_DIGITS` digits, duplicate keys in one JSON object, text that is not valid
Unicode (a lone surrogate from a ``\\ud800`` escape) and a field of more than
:data:`MAX_FIELD_CHARS` characters, in CSV and JSONL alike.
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

from .book import ISBN_FIELDS, KNOWN_FIELDS, Book
from .catalog import Catalog
from .errors import CatalogError

__all__ = [
    "MAX_FIELD_CHARS",
    "MAX_INTEGER_DIGITS",
    "MAX_NESTING",
    "MAX_POPULARITY",
    "YEAR_RANGE",
    "book_from_record",
    "load_catalog",
    "parse_catalog",
]

logger = logging.getLogger(__name__)

_LIST_SEPARATORS = re.compile(r"[;|]")

#: The most characters one field of a record may hold (1 MiB of characters), in CSV (a cell)
#: and JSONL (a value with every string in it, keys included) alike.
MAX_FIELD_CHARS = 1 << 20
#: The deepest nesting of lists and objects a record may hold (the record itself is level 1).
MAX_NESTING = 32
#: The most digits an integer in a record may have (a year or popularity needs far fewer).
MAX_INTEGER_DIGITS = 30
#: The years a book may have (as the HTTP service accepts).
YEAR_RANGE = (-10000, 10000)
#: The largest popularity (as the HTTP service accepts: exact in a float).
MAX_POPULARITY = 2**53

# csv refuses a cell longer than its limit (128 KiB by default): raised, never lowered, to one
# character more than ours, so that a longer cell is refused with this module's message.
if csv.field_size_limit() <= MAX_FIELD_CHARS:
    csv.field_size_limit(MAX_FIELD_CHARS + 1)


class _HugeInteger:
    """An integer literal too long to convert (Python refuses 4,300 digits): only its size."""

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _parse_int(text: str) -> int | _HugeInteger:
    digits = len(text.lstrip("+-"))
    return _HugeInteger(digits) if digits > MAX_INTEGER_DIGITS else int(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _short(value: object, limit: int = 40) -> str:
    """``repr(value)``, cut to about ``limit`` characters (a hostile value may be huge)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
            record = json.loads(text, object_pairs_hook=_unique_keys, parse_int=_parse_int)
        except json.JSONDecodeError as exc:
            raise CatalogError(
                f"malformed JSON ({exc.msg} at column {exc.colno})", path=name, line=lineno
            ) from None
        except _DuplicateKey as exc:
            raise CatalogError(
                f"duplicate key {_short(exc.key)} in one JSON object", path=name, line=lineno
            ) from None
        except RecursionError:
            raise CatalogError(
                f"lists or objects nested too deeply (at most {MAX_NESTING} levels)",
                path=name,
                line=lineno,
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
            if "field larger than field limit" in str(exc):
                raise CatalogError(
                    f"a field is longer than {MAX_FIELD_CHARS:,} characters",
                    path=name,
                    line=start_line,
                ) from None
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
    if kind is int and value.lstrip("+-").isdigit():
        return _parse_int(value)
    try:
        return kind(value)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise CatalogError(
            f"{column} must be {what}, got {_short(value)}", path=name, line=line
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


def _field_problem(key: object, value: object) -> str | None:
    """What makes one field of a record unusable, or ``None``: nesting deeper than
    :data:`MAX_NESTING`, an integer of too many digits, a string that is not valid Unicode, or
    more than :data:`MAX_FIELD_CHARS` characters of text. The message starts with the field's
    name."""
    field = key if isinstance(key, str) else repr(key)
    shown = _printable_key(field)
    if isinstance(key, str) and shown != key and not _encodable(key):
        return f"the field name {shown} holds a lone surrogate, which is not valid Unicode text"
    chars = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            chars += len(item)
            if not _encodable(item):
                bad = next(ch for ch in item if not _encodable(ch))
                return (
                    f"{shown} holds a lone surrogate ({bad!r}), which is not valid Unicode "
                    "text; fix the escape in the file"
                )
        elif isinstance(item, _HugeInteger):
            return (
                f"{shown} holds an integer of {item.digits:,} digits (at most {MAX_INTEGER_DIGITS})"
            )
        elif isinstance(item, dict | list | tuple):
            if depth >= MAX_NESTING:
                return (
                    f"{shown} holds lists or objects nested too deeply "
                    f"(at most {MAX_NESTING} levels)"
                )
            if isinstance(item, dict):
                for k, v in item.items():
                    stack.append((k, depth + 1))
                    stack.append((v, depth + 1))
            else:
                stack.extend((v, depth + 1) for v in item)
        if chars > MAX_FIELD_CHARS:
            return f"{shown} is longer than {MAX_FIELD_CHARS:,} characters"
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable_key(key: str) -> str:
    """A field name as shown in a message: plain if it is a short printable word, else quoted."""
    plain = key and len(key) <= 40 and key.isprintable() and key.strip() == key
    return key if plain and _encodable(key) else _short(key)


def book_from_record(record: dict[str, Any], name: str = "book", line: int | None = None) -> Book:
    """A :class:`Book` from one catalog record, checked as a catalog line is (``CatalogError``
    naming ``name`` and ``line``)."""

    def fail(message: str) -> CatalogError:
        return CatalogError(message, path=name, line=line)

    for key, value in record.items():
        problem = _field_problem(key, value)
        if problem is not None:
            raise fail(problem)

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

    def integer(key: str, low: int, high: int) -> int | None:
        value = record.get(key)
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
            value = int(value)  # 1965.0 from a spreadsheet export; not 1e300
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(f"{key} must be an integer, got {_type_name(value)} {_short(value)}")
        if low == 0 and value < 0:
            raise fail(f"{key} must not be negative, got {value}")
        if not low <= value <= high:
            raise fail(f"{key} must be between {low} and {high}, got {value}")
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
    popularity = integer("popularity", 0, MAX_POPULARITY)
    language = text("language")
    series = text("series")
    work_id = record.get("work_id")
    if work_id is not None and (isinstance(work_id, bool) or not isinstance(work_id, str | int)):
        raise fail(f"work_id must be a string, got {_type_name(work_id)}")
    for key in ISBN_FIELDS:
        value = record.get(key)
        items = value if isinstance(value, list) else [value]
        if value is not None and any(
            isinstance(v, bool) or not isinstance(v, str | int) for v in items
        ):
            raise fail(f"{key} must be a string or a list of strings, got {_type_name(value)}")
    extra = {k: v for k, v in record.items() if k not in KNOWN_FIELDS}
    return Book(
        id=book_id,
        title=title,
        authors=str_list("authors"),
        summary=(summary or "").strip(),
        tags=str_list("tags"),
        language=language.lower() if language else None,
        year=integer("year", *YEAR_RANGE),
        rating=rating,
        popularity=popularity,
        series=series or None,
        extra=MappingProxyType(extra),
    )
