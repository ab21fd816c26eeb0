"""Tables with book labels for people, laid out in terminal columns (CJK characters take two).

Text from a catalog is shown through :func:`printable`: control characters (an escape sequence
that would clear or recolour the terminal, a newline that would split a table row) are shown
escaped, as ``\\x1b`` or ``\\n``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from bookrec import recommender
from bookrec.client import is_cjk

__all__ = [
    "Column",
    "book_label",
    "display_width",
    "format_authors",
    "pad",
    "printable",
    "recommendations_table",
    "render_table",
    "truncate",
]


# C0 and C1 controls, DEL, the line and paragraph separators and the bidirectional controls
# (which reorder what follows them on the line).
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with its control characters escaped (``\\x1b``, ``\\n``, ``\\u202e``), safe
    to print on a terminal; printing it again changes nothing."""
    return _CONTROLS.sub(_escape, text)


def display_width(text: str) -> int:
    """Columns ``text`` takes in a terminal: wide and full-width characters take two."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def truncate(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` columns, ending in an ellipsis when cut."""
    text = " ".join(text.split())
    if display_width(text) <= width:
        return text
    out: list[str] = []
    used = 0
    for ch in text:
        w = display_width(ch)
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out).rstrip() + "…"


def pad(text: str, width: int, align: str = "<") -> str:
    """``text`` padded with spaces to ``width`` columns (``<`` left, ``>`` right)."""
    fill = " " * max(0, width - display_width(text))
    return fill + text if align == ">" else text + fill


@dataclass(frozen=True)
class Column:
    """A table column: header, alignment (``<`` or ``>``) and maximum width (0: no limit)."""

    header: str
    align: str = "<"
    max_width: int = 0


def render_table(columns: Sequence[Column], rows: Sequence[Sequence[str]], indent: str = "") -> str:
    """Rows aligned under their headers; cells wider than a column's maximum are truncated."""
    cells = [
        [
            truncate(printable(cell), col.max_width) if col.max_width else printable(cell)
            for col, cell in zip(columns, row, strict=True)
        ]
        for row in rows
    ]
    widths = [
        max([display_width(col.header)] + [display_width(row[i]) for row in cells])
        for i, col in enumerate(columns)
    ]
    lines = []
    for row in [[col.header for col in columns], *cells]:
        parts = [pad(cell, widths[i], columns[i].align) for i, cell in enumerate(row)]
        lines.append((indent + "  ".join(parts)).rstrip())
    rule = indent + "  ".join("─" * w for w in widths)
    lines.insert(1, rule)
    return "\n".join(lines)


def format_authors(authors: Sequence[str]) -> str:
    return ", ".join(authors)


def book_label(book: recommender.Book) -> str:
    """``Title`` (Authors, year), with Chinese punctuation for Chinese titles; control
    characters escaped (:func:`printable`)."""
    year = book.year
    authors = printable(format_authors(book.authors))
    title = printable(book.title)
    if is_cjk(book.title):
        extra = "，".join(x for x in (authors, str(year) if year else "") if x)
        return f"《{title}》（{extra}）" if extra else f"《{title}》"
    extra = ", ".join(x for x in (authors, str(year) if year else "") if x)
    return f"{title} ({extra})" if extra else title


def recommendations_table(results: Sequence[recommender.Recommendation], indent: str = "  ") -> str:
    """The human-readable table of ranked results, one line each, with the reason last."""
    columns = [
        Column("#", ">"),
        Column("score", ">"),
        Column("id"),
        Column("title", max_width=34),
        Column("authors", max_width=22),
        Column("year", ">"),
        Column("why", max_width=64),
    ]
    rows = []
    for rank, rec in enumerate(results, 1):
        book = rec.book
        year = book.year
        reason = rec.reason + (" (lexical)" if rec.degraded else "")
        rows.append(
            [
                str(rank),
                f"{rec.score:.3f}",
                book.id,
                book.title,
                format_authors(book.authors),
                str(year) if year else "",
                reason,
            ]
        )
    if not rows:
        return indent + "(no results)"
    return render_table(columns, rows, indent=indent)
