#!/usr/bin/env python3
"""Public book data sets as the labelled catalog JSONL that scripts/eval_quality.py reads.

Each output line is one book in bookrec's catalog format (``id``, ``title``, ``authors``,
``summary``, ``language``, optional ``year`` and ``isbn``) plus the label fields the harness
withholds from the pipeline: ``tags`` (genre or topic labels) and, when the source has them,
``lists`` (ids of reading lists or readers that hold the book).

Sources (neither ships with bookrec; put the files wherever you like, e.g. /work/evaldata/raw):

``goodreads-best CSV``
    The "best books" Goodreads scrape with columns ``Book, Author, Description, Genres,
    Avg_Rating, Num_Ratings, URL`` (``Genres`` a Python list literal of Goodreads genre
    shelves), as copied in github.com/jytingy/book_recommendation (goodreads_data.csv). Ids are
    ``en-<Goodreads book id>`` from the URL. Genre shelves that are not genres (formats, reading
    venues and states: see ``NOT_GENRES``) are dropped. No reading lists.

``douban-tags DIR``
    Douban book tag pages as scraped by github.com/EuDs63/DoubanSpider: ``DIR/books/<category>/
    <tag>.json`` (one JSON object a line, trailing commas, sometimes merge-conflict markers) and
    ``DIR/merge/*.json`` (objects with ``category`` and ``tag``). A book's tags are the tag pages
    it was found on; tags that are an author's name (the name appears in the author field of at
    least half of the tag's books, e.g. 余华, 村上春树) are dropped. Books are joined by ISBN.
    No reading lists.

Books without a summary of at least ``--min-summary`` characters (default 20; Douban pages
often give only a header such as "【编辑推荐】") or without any tag are left out.
``--limit N`` keeps N of the books, drawn at random (``--seed``), in their order.

    python scripts/eval_data.py goodreads-best raw/goodreads_data.csv -o /work/evaldata/en.jsonl
    python scripts/eval_data.py douban-tags raw/douban-tags -o /work/evaldata/zh.jsonl
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import random
import re
import sys
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

#: Goodreads genre shelves that say how or where a book was read, not what it is.
NOT_GENRES = frozenset(
    {
        "audiobook",
        "audiobooks",
        "book club",
        "school",
        "read for school",
        "ebooks",
        "kindle",
        "unfinished",
        "abandoned",
        "owned",
        "own",
        "to read",
        "favorites",
        "did not finish",
        "library",
        "adult",
        "novels",
    }
)

_GOODREADS_ID = re.compile(r"/book/show/(\d+)")
_YEAR = re.compile(r"(\d{4})")


def _clean(text: object) -> str:
    return " ".join(str(text or "").split())


def _letters(text: str) -> str:
    """Letters and digits only, case- and width-folded (to compare names)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in text if ch.isalnum())


def goodreads_best(path: Path, min_summary: int) -> list[dict[str, Any]]:
    """The books of a goodreads_data.csv (see the module docstring)."""
    books: list[dict[str, Any]] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            found = _GOODREADS_ID.search(row.get("URL") or "")
            if found is None or found.group(1) in seen:
                continue
            seen.add(found.group(1))
            summary = _clean(row.get("Description"))
            try:
                genres = ast.literal_eval(row.get("Genres") or "[]")
            except (ValueError, SyntaxError):
                genres = []
            tags = list(
                dict.fromkeys(
                    _clean(g)
                    for g in genres
                    if isinstance(g, str) and _clean(g) and _clean(g).casefold() not in NOT_GENRES
                )
            )
            title = _clean(row.get("Book"))
            if not title or len(summary) < min_summary or not tags:
                continue
            author = _clean(row.get("Author"))
            books.append(
                {
                    "id": f"en-{found.group(1)}",
                    "title": title,
                    "authors": [author] if author else [],
                    "summary": summary,
                    "language": "en",
                    "tags": tags,
                }
            )
    return books


def _json_objects(path: Path) -> Iterator[dict[str, Any]]:
    """The objects of a scraped file: a JSON array or object of objects, else one object a
    line (trailing commas and merge-conflict markers skipped)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, list):
        yield from (o for o in whole if isinstance(o, dict))
        return
    if isinstance(whole, dict):
        yield from (o for o in whole.values() if isinstance(o, dict))
        return
    for line in text.splitlines():
        line = line.strip().rstrip(",")
        if not line.startswith("{"):
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict):
            yield item


def _douban_records(root: Path) -> Iterator[tuple[dict[str, Any], str]]:
    """(record, tag) for every book found on a tag page."""
    for path in sorted(root.glob("books/*/*.json")):
        for item in _json_objects(path):
            yield item, path.stem
    for path in sorted(root.glob("merge/*.json")):
        for item in _json_objects(path):
            tag = item.get("tag")
            if isinstance(tag, str) and tag.strip():
                yield item, tag.strip()


def _authors(text: str) -> list[str]:
    return [a.strip() for a in text.split("/") if a.strip()]


def douban_tags(root: Path, min_summary: int) -> list[dict[str, Any]]:
    """The books of a DoubanSpider checkout (see the module docstring)."""
    first: dict[str, dict[str, Any]] = {}
    tags: dict[str, dict[str, None]] = defaultdict(dict)
    for item, tag in _douban_records(root):
        title = _clean(item.get("book_name"))
        if not title:
            continue
        isbn = re.sub(r"[^0-9Xx]", "", str(item.get("ISBN") or ""))
        key = isbn or f"{title}\x1f{_clean(item.get('author_name'))}"
        first.setdefault(key, item)
        tags[key][tag] = None
    members: dict[str, list[str]] = defaultdict(list)
    for key, found in tags.items():
        for tag in found:
            members[tag].append(key)
    author_tags = set()
    for tag, keys in members.items():
        name = _letters(tag)
        hits = sum(1 for k in keys if name and name in _letters(str(first[k].get("author_name"))))
        if hits * 2 >= len(keys):
            author_tags.add(tag)
    books: list[dict[str, Any]] = []
    for key, item in first.items():
        summary = _clean(item.get("introduction"))
        labels = [t for t in tags[key] if t not in author_tags]
        if len(summary) < min_summary or not labels:
            continue
        book: dict[str, Any] = {
            "id": f"zh-{key}" if key.isalnum() else f"zh-{len(books):05d}",
            "title": _clean(item.get("book_name")),
            "authors": _authors(_clean(item.get("author_name"))),
            "summary": summary,
            "language": "zh",
        }
        year = _YEAR.search(str(item.get("press_year") or ""))
        if year is not None and 1000 <= int(year.group(1)) <= 2100:
            book["year"] = int(year.group(1))
        if key.isalnum():
            book["isbn"] = key
        book["tags"] = labels
        books.append(book)
    return books


def _write(books: Iterable[dict[str, Any]], out: Path | None) -> int:
    lines = [json.dumps(b, ensure_ascii=False) for b in books]
    text = "\n".join(lines) + ("\n" if lines else "")
    if out is None:
        sys.stdout.write(text)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    return len(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("source", choices=("goodreads-best", "douban-tags"))
    parser.add_argument("input", type=Path, help="the source's CSV file or directory")
    parser.add_argument("-o", "--out", type=Path, help="output JSONL (default: stdout)")
    parser.add_argument("--min-summary", type=int, default=20, metavar="CHARS")
    parser.add_argument("--limit", type=int, help="keep this many books, drawn at random")
    parser.add_argument("--seed", type=int, default=0, help="the draw of --limit")
    args = parser.parse_args(argv)
    if not args.input.exists():
        parser.error(f"{args.input} does not exist")
    if args.source == "goodreads-best":
        books = goodreads_best(args.input, args.min_summary)
    else:
        books = douban_tags(args.input, args.min_summary)
    if args.limit is not None and args.limit < len(books):
        keep = set(random.Random(args.seed).sample(range(len(books)), args.limit))
        books = [b for i, b in enumerate(books) if i in keep]
    n = _write(books, args.out)
    tag_counts = Counter(t for b in books for t in b["tags"])
    print(f"{n} books, {len(tag_counts)} tags", file=sys.stderr)
    return 0 if n else 1


if __name__ == "__main__":
    raise SystemExit(main())
