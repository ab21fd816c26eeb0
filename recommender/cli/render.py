"""Tables with book labels for people, laid out in terminal columns (CJK characters take two)."""

from __future__ import annotations

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
    "recommendations_table",
    "render_table",
    "truncate",
]


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
            truncate(cell, col.max_width) if col.max_width else cell
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
    """``Title`` (Authors, year), with Chinese punctuation for Chinese titles."""
    year = book.year
    authors = format_authors(book.authors)
    if is_cjk(book.title):
        extra = "，".join(x for x in (authors, str(year) if year else "") if x)
        return f"《{book.title}》（{extra}）" if extra else f"《{book.title}》"
    extra = ", ".join(x for x in (authors, str(year) if year else "") if x)
    return f"{book.title} ({extra})" if extra else book.title


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
