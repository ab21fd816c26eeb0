"""The ``bookrec`` command line.

Subcommands: ``index`` (embed a catalog into an index directory, incrementally), ``similar``
(more like this, from stored vectors only), ``recommend`` (for a reader), ``search`` (free
text), ``embed`` (vectors for texts, as JSON) and ``demo`` (the guided tour on the bundled
sample catalog).

Output is a table for people by default and JSON with ``--json``. Errors are one line on
stderr and a non-zero exit status, never a traceback (``--debug`` shows it):

====  =======================================================================================
code  meaning
====  =======================================================================================
0     success
1     unexpected internal error
2     bad command line or bad input (missing or malformed catalog, unknown book id, ...)
3     the embedding service is unavailable (not running, unreachable, timing out)
4     the embedding service or the index cannot be used (request rejected, bad response,
      another model or dimension than the index, unusable cache)
130   interrupted
====  =======================================================================================
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn, TextIO

from tqdm import tqdm

from bookrec import client, recommender
from bookrec.client import ClientConfig, EmbeddingClient, Endpoint

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_SERVICE",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "CliError",
    "build_parser",
    "main",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_SERVICE = 4
EXIT_INTERRUPTED = 130

DEFAULT_INDEX_DIR = ".bookrec/index"
API_KEY_ENV = "BOOKREC_API_KEY"

logger = logging.getLogger(__name__)


class CliError(Exception):
    """A failure the command reports as one line, with its exit status."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def sample_catalog_path() -> Path:
    """The sample catalog shipped in the package (151 books, English and Chinese)."""
    return Path(
        str(resources.files("bookrec.recommender").joinpath("data", "sample_catalog.jsonl"))
    )


# --------------------------------------------------------------------------------------------
# Text layout: terminal width of CJK text, tables
# --------------------------------------------------------------------------------------------


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
    if _is_cjk(book.title):
        extra = "，".join(x for x in (authors, str(year) if year else "") if x)
        return f"《{book.title}》（{extra}）" if extra else f"《{book.title}》"
    extra = ", ".join(x for x in (authors, str(year) if year else "") if x)
    return f"{book.title} ({extra})" if extra else book.title


def _is_cjk(text: str) -> bool:
    return any(unicodedata.east_asian_width(ch) in ("W", "F") for ch in text)


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


def recommendation_json(rank: int, rec: recommender.Recommendation) -> dict[str, Any]:
    book = rec.book
    return {
        "rank": rank,
        "id": book.id,
        "title": book.title,
        "authors": list(book.authors),
        "year": book.year,
        "language": book.language,
        "tags": list(book.tags),
        "series": book.series,
        "rating": book.rating,
        "score": float(rec.score),
        "reason": rec.reason,
        "degraded": bool(rec.degraded),
    }


# --------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------


class ProgressBar:
    """A ``progress(done, total)`` callback that drives a tqdm bar on stderr.

    The bar appears on the first call, and only when stderr is a terminal (tqdm's
    ``disable=None``), so logs and pipes get no carriage-return noise.
    """

    def __init__(self, desc: str, *, enabled: bool = True, unit: str = "book") -> None:
        self._desc = desc
        self._enabled = enabled
        self._unit = unit
        self._bar: tqdm[Any] | None = None

    def __call__(self, done: int, total: int) -> None:
        if not self._enabled:
            return
        if self._bar is None:
            self._bar = tqdm(
                total=total,
                desc=self._desc,
                unit=self._unit,
                file=sys.stderr,
                disable=None,
                dynamic_ncols=True,
                leave=True,
            )
        if self._bar.total != total:
            self._bar.total = total
        self._bar.update(max(0, done - self._bar.n))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# Configuration from the command line
# --------------------------------------------------------------------------------------------


def client_config(args: argparse.Namespace) -> ClientConfig:
    """``ClientConfig.from_env()`` with the endpoint options of the command line applied."""
    config = ClientConfig.from_env()
    api_key: str | None = getattr(args, "api_key", None)
    urls: list[str] | None = getattr(args, "base_url", None)
    changes: dict[str, Any] = {}
    if urls:
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        changes["endpoints"] = tuple(Endpoint(url, key) for url in urls)
    elif api_key is not None:
        changes["endpoints"] = tuple(Endpoint(e.base_url, api_key) for e in config.endpoints)
    if getattr(args, "model", None):
        changes["model"] = args.model
    if getattr(args, "dimensions", None) is not None:
        changes["dimensions"] = args.dimensions
    if getattr(args, "cache", None):
        changes["cache_path"] = str(args.cache)
    if getattr(args, "timeout", None) is not None:
        changes["timeout"] = args.timeout
    return config.with_options(**changes) if changes else config


def open_client(args: argparse.Namespace) -> EmbeddingClient:
    return EmbeddingClient(client_config(args))


def filters_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ranking filters given on the command line (only those given)."""
    mapping = {
        "languages": "language",
        "tags": "tag",
        "authors": "author",
        "year_min": "year_min",
        "year_max": "year_max",
        "min_rating": "min_rating",
        "max_per_author": "max_per_author",
        "max_per_series": "max_per_series",
    }
    filters: dict[str, Any] = {}
    for key, attr in mapping.items():
        value = getattr(args, attr, None)
        if value is None or value == []:
            continue
        filters[key] = list(value) if isinstance(value, list) else value
    return filters


def load_catalog(path: Path) -> recommender.Catalog:
    if not path.exists():
        raise CliError(f"catalog not found: {path}")
    if path.is_dir():
        raise CliError(f"catalog is a directory, expected a .jsonl or .csv file: {path}")
    return recommender.load_catalog(path)


def open_index(path: Path) -> recommender.VectorIndex:
    if not path.exists():
        raise CliError(
            f"no index at {path}; build it first with: "
            f"bookrec index --catalog <file> --index {path}"
        )
    return recommender.VectorIndex.open(path)


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def _print_json(data: Any, out: TextIO, *, compact: bool = False) -> None:
    if compact:  # vectors: one line, not one line per number
        json.dump(data, out, ensure_ascii=False, separators=(",", ":"))
    else:
        json.dump(data, out, ensure_ascii=False, indent=2)
    out.write("\n")


def cmd_index(args: argparse.Namespace, out: TextIO) -> int:
    catalog_path = Path(args.catalog)
    catalog = load_catalog(catalog_path)
    index_dir = Path(args.index)
    started = time.perf_counter()
    with (
        open_client(args) as embedder,
        ProgressBar("embedding", enabled=not args.no_progress) as bar,
    ):
        _index, report = recommender.build_index(
            index_dir, catalog, embedder, progress=bar, rebuild=args.rebuild, dtype=args.dtype
        )
        identity = report.identity or embedder.identity
    seconds = time.perf_counter() - started
    if args.json:
        _print_json(
            {
                "index": str(index_dir),
                "catalog": str(catalog_path),
                "books": report.total,
                "embedded": report.embedded,
                "reused": report.reused,
                "resumed": report.resumed,
                "removed": report.removed,
                "unchanged": report.unchanged,
                "model": identity.model if identity else None,
                "dimensions": identity.dimensions if identity else None,
                "seconds": round(seconds, 3),
            },
            out,
        )
        return EXIT_OK
    counts = f"embedded {report.embedded}, reused {report.reused}, removed {report.removed}"
    if report.resumed:
        counts += f", resumed {report.resumed} from an interrupted build"
    print(f"Indexed {report.total} books from {catalog_path} into {index_dir}", file=out)
    print(f"  {counts}", file=out)
    if identity is not None:
        print(f"  model {identity}", file=out)
    print(f"  {seconds:.1f} s{' (nothing changed)' if report.unchanged else ''}", file=out)
    return EXIT_OK


def _recommender(args: argparse.Namespace, embedder: Any = None) -> recommender.Recommender:
    catalog = load_catalog(Path(args.catalog))
    index = open_index(Path(args.index))
    return recommender.Recommender(catalog, index, embedder=embedder)


def _results_out(
    args: argparse.Namespace,
    out: TextIO,
    title: str,
    query: dict[str, Any],
    results: Sequence[recommender.Recommendation],
) -> int:
    degraded = any(r.degraded for r in results)
    if args.json:
        _print_json(
            {
                "query": query,
                "degraded": degraded,
                "results": [recommendation_json(i, r) for i, r in enumerate(results, 1)],
            },
            out,
        )
        return EXIT_OK
    print(title, file=out)
    print(recommendations_table(results), file=out)
    if degraded:
        print(
            "note: the embedding service was unavailable; free text was matched lexically "
            "(TF-IDF), so these results are degraded.",
            file=sys.stderr,
        )
    return EXIT_OK


def cmd_similar(args: argparse.Namespace, out: TextIO) -> int:
    rec = _recommender(args)
    results = rec.similar(
        args.book_id, k=args.k, diversity=args.diversity, **filters_from_args(args)
    )
    book = rec.catalog.get(args.book_id)
    title = f"More like {book_label(book) if book else args.book_id}"
    return _results_out(args, out, title, {"similar_to": args.book_id, "k": args.k}, results)


def cmd_recommend(args: argparse.Namespace, out: TextIO) -> int:
    if not (args.history or args.liked or args.preference):
        raise CliError("give at least one of --history, --liked or --prefer")
    if args.preference:
        with open_client(args) as embedder:
            results = _run_recommend(_recommender(args, embedder), args)
    else:
        results = _run_recommend(_recommender(args), args)
    query = {
        "history": args.history,
        "liked": args.liked,
        "disliked": args.disliked,
        "preferences": args.preference,
        "strategy": args.strategy,
        "k": args.k,
    }
    return _results_out(args, out, "Recommendations", query, results)


def _run_recommend(
    rec: recommender.Recommender, args: argparse.Namespace
) -> list[recommender.Recommendation]:
    return list(
        rec.recommend(
            history=args.history,
            liked=args.liked,
            disliked=args.disliked,
            preferences=args.preference,
            k=args.k,
            strategy=args.strategy,
            diversity=args.diversity,
            exclude_read=not args.include_read,
            **filters_from_args(args),
        )
    )


def cmd_search(args: argparse.Namespace, out: TextIO) -> int:
    text = " ".join(args.text).strip()
    if not text:
        raise CliError("search text is empty")
    with open_client(args) as embedder:
        results = _recommender(args, embedder).search(
            text, k=args.k, diversity=args.diversity, **filters_from_args(args)
        )
    return _results_out(args, out, f"Books matching “{text}”", {"text": text, "k": args.k}, results)


def cmd_embed(args: argparse.Namespace, out: TextIO) -> int:
    texts: list[str] = list(args.texts)
    if args.stdin or texts == ["-"]:
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise CliError("no texts to embed (give them as arguments, or --stdin)")
    with (
        open_client(args) as embedder,
        ProgressBar("embedding", enabled=not args.no_progress, unit="text") as bar,
    ):
        if args.query:
            vectors = embedder.embed_queries(texts, args.instruction, progress=bar)
        else:
            vectors = embedder.embed_documents(texts, progress=bar)
        identity = embedder.identity
    _print_json(
        {
            "model": identity.model if identity else None,
            "dimensions": int(vectors.shape[1]),
            "kind": "query" if args.query else "document",
            "data": [
                {"index": i, "text": t, "embedding": [float(x) for x in v]}
                for i, (t, v) in enumerate(zip(texts, vectors, strict=True))
            ],
        },
        out,
        compact=True,
    )
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from bookrec.recommender import demo  # the demo pulls in process management only when asked for

    return demo.run(args, out)


# --------------------------------------------------------------------------------------------
# Argument parsing
# --------------------------------------------------------------------------------------------


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {raw!r}")
    return value


def _unit_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {raw!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {raw!r}")
    return value


def _float(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {raw!r}") from None


class _Parser(argparse.ArgumentParser):
    """argparse with bookrec's exit status for usage errors and a one-line hint."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"bookrec: error: {message}\n")


def _debug_option() -> _Parser:
    debug = _Parser(add_help=False)
    # SUPPRESS keeps `bookrec --debug COMMAND` working: the subcommand's default does not
    # overwrite the value the main parser set.
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show debug logs and full tracebacks",
    )
    return debug


def _json_option() -> _Parser:
    js = _Parser(add_help=False)
    js.add_argument(
        "--json", action="store_true", help="machine-readable JSON on stdout instead of a table"
    )
    return js


def _endpoint_options() -> _Parser:
    ep = _Parser(add_help=False)
    group = ep.add_argument_group(
        "embedding service (defaults from the BOOKREC_* environment variables)"
    )
    group.add_argument(
        "--base-url",
        action="append",
        metavar="URL",
        help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:30000/v1; repeat for fallbacks "
        "(default: $BOOKREC_BASE_URL or http://127.0.0.1:30000/v1)",
    )
    group.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"bearer token for the service (default: ${API_KEY_ENV}, which is safer: a key "
        "on the command line is visible to other local users; never printed)",
    )
    group.add_argument("--model", help="model name sent to the service (default: $BOOKREC_MODEL)")
    group.add_argument(
        "--dimensions",
        type=_positive_int,
        metavar="N",
        help="Matryoshka width (the server must allow it; default: the model's full width)",
    )
    group.add_argument("--cache", metavar="FILE", help="SQLite file caching embeddings across runs")
    group.add_argument(
        "--timeout", type=_float, metavar="SECONDS", help="per-request timeout (default 30)"
    )
    return ep


def _catalog_options(*, index_default: str = DEFAULT_INDEX_DIR) -> _Parser:
    cat = _Parser(add_help=False)
    cat.add_argument(
        "--catalog",
        "-c",
        metavar="FILE",
        default=os.environ.get("BOOKREC_CATALOG") or str(sample_catalog_path()),
        help="catalog (.jsonl or .csv; default: $BOOKREC_CATALOG or the bundled sample catalog)",
    )
    cat.add_argument(
        "--index",
        "-i",
        metavar="DIR",
        default=os.environ.get("BOOKREC_INDEX") or index_default,
        help=f"index directory (default: $BOOKREC_INDEX or {index_default})",
    )
    return cat


def _ranking_options() -> _Parser:
    rank = _Parser(add_help=False)
    rank.add_argument(
        "-k", type=_positive_int, default=10, metavar="N", help="how many results (default 10)"
    )
    rank.add_argument(
        "--diversity",
        type=_unit_float,
        default=0.0,
        metavar="X",
        help="0 (pure relevance) to 1 (more variety, MMR); default 0",
    )
    group = rank.add_argument_group("filters")
    group.add_argument(
        "--language", action="append", metavar="LANG", help="only this language (repeatable)"
    )
    group.add_argument(
        "--tag", action="append", metavar="TAG", help="only books with this tag (repeatable)"
    )
    group.add_argument(
        "--author", action="append", metavar="NAME", help="only books by this author (repeatable)"
    )
    group.add_argument("--year-min", type=int, metavar="YEAR", help="first published in or after")
    group.add_argument("--year-max", type=int, metavar="YEAR", help="first published in or before")
    group.add_argument("--min-rating", type=_float, metavar="R", help="minimum rating (0-5)")
    group.add_argument(
        "--max-per-author", type=_positive_int, metavar="N", help="at most N books per author"
    )
    group.add_argument(
        "--max-per-series", type=_positive_int, metavar="N", help="at most N books per series"
    )
    return rank


def build_parser() -> argparse.ArgumentParser:
    """The ``bookrec`` argument parser."""
    debug = _debug_option()
    common = [debug, _json_option()]
    endpoint = _endpoint_options()
    catalog = _catalog_options()
    ranking = _ranking_options()
    parser = _Parser(
        prog="bookrec",
        description="Content-based book recommendations on Qwen3-Embedding.",
        epilog="Exit status: 0 ok, 1 internal error, 2 bad input, 3 embedding service "
        "unavailable, 4 service or index unusable, 130 interrupted.",
    )
    parser.add_argument("--debug", action="store_true", help="debug logs and full tracebacks")
    parser.add_argument("--version", action="version", version=f"bookrec {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser(
        "index",
        parents=[*common, catalog, endpoint],
        help="embed a catalog into an index (incremental)",
        description="Embed the books of a catalog into an index directory. Only new or "
        "changed books are sent to the embedding service; removed books are dropped.",
    )
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="embed every book again (needed to switch models or dimensions)",
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "float16"),
        default="float32",
        help="storage type of the vectors (float16 halves the size; default float32)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_index)

    p = sub.add_parser(
        "similar",
        parents=[*common, catalog, ranking],
        help="more like this book (no embedding call)",
        description="Books most similar to one already in the index, from its stored vector. "
        "The book itself and other editions of it are excluded.",
    )
    p.add_argument("book_id", metavar="BOOK_ID", help="id of a book in the catalog")
    p.set_defaults(handler=cmd_similar)

    p = sub.add_parser(
        "recommend",
        parents=[*common, catalog, ranking, endpoint],
        help="recommendations for a reader",
        description="Recommendations from what a reader read, liked and disliked, and what "
        "they say they want. Preference texts need the embedding service.",
    )
    for flag, what in (
        ("--history", "books already read"),
        ("--liked", "books the reader liked"),
        ("--disliked", "books the reader disliked"),
    ):
        p.add_argument(flag, action="extend", nargs="+", default=[], metavar="ID", help=what)
    p.add_argument(
        "--prefer",
        dest="preference",
        action="append",
        default=[],
        metavar="TEXT",
        help="what the reader is looking for, in their words (repeatable)",
    )
    p.add_argument(
        "--strategy",
        choices=("average", "best"),
        default="average",
        help="one profile vector (average) or the best match to any liked book (best)",
    )
    p.add_argument(
        "--include-read", action="store_true", help="allow books from the history in the results"
    )
    p.set_defaults(handler=cmd_recommend)

    p = sub.add_parser(
        "search",
        parents=[*common, catalog, ranking, endpoint],
        help="books matching a free-text description",
    )
    p.add_argument("text", nargs="+", metavar="TEXT", help="what to look for")
    p.set_defaults(handler=cmd_search)

    p = sub.add_parser(
        "embed",
        parents=[debug, endpoint],
        help="embedding vectors for texts, as JSON",
        description="Print the embedding vectors of texts as JSON (always JSON).",
    )
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed ('-' reads stdin)")
    p.add_argument("--stdin", action="store_true", help="read texts from stdin, one per line")
    p.add_argument("--json", action="store_true", help="accepted for symmetry: always JSON")
    p.add_argument(
        "--query", action="store_true", help="embed as queries (with the instruction prompt)"
    )
    p.add_argument("--instruction", help="instruction for --query (default: the configured one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_embed)

    p = sub.add_parser(
        "demo",
        parents=[debug, endpoint],
        help="index the sample catalog and show recommendations",
        description="Use the embedding service if one answers, otherwise start the CPU server "
        "if a local model is available, otherwise run in lexical (TF-IDF) mode; index the "
        "sample catalog and show 'more like this' and recommendations for a sample reader.",
    )
    p.add_argument(
        "--mode",
        choices=("auto", "service", "cpu", "lexical"),
        default="auto",
        help="force a mode instead of choosing the best available (default auto)",
    )
    p.add_argument(
        "--index-dir",
        metavar="DIR",
        default=".bookrec/demo-index",
        help="where the demo keeps its indexes (default .bookrec/demo-index)",
    )
    p.add_argument(
        "--catalog",
        "-c",
        metavar="FILE",
        default=str(sample_catalog_path()),
        help="catalog to use (default: the bundled sample catalog)",
    )
    p.add_argument(
        "--server-timeout",
        type=_float,
        default=600.0,
        metavar="SECONDS",
        help="how long to wait for the CPU server to load its model (default 600)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_demo)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("bookrec")
    except Exception:
        return "unknown"


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def _exc_text(exc: BaseException) -> str:
    # KeyError subclasses quote their message; show it as written.
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc) or type(exc).__name__


def classify_error(exc: BaseException) -> tuple[int, str]:
    """The exit status and the one-line message for an exception."""
    text = _exc_text(exc)
    if isinstance(exc, CliError):
        return exc.exit_code, text
    if isinstance(exc, client.EmbeddingUnavailable):
        return (
            EXIT_UNAVAILABLE,
            f"embedding service unavailable: {text} "
            "(is the server running? set --base-url or BOOKREC_BASE_URL)",
        )
    if isinstance(exc, client.ConfigurationError | client.InvalidInputError):
        return EXIT_USAGE, text
    if isinstance(exc, client.EmbeddingError):
        kind = {
            client.EmbeddingRejected: "the embedding service rejected the request",
            client.EmbeddingResponseError: "bad response from the embedding service",
            client.IncompatibleModelError: "incompatible model",
            client.CacheError: "embedding cache error",
        }
        for cls, label in kind.items():
            if isinstance(exc, cls):
                return EXIT_SERVICE, f"{label}: {text}"
        return EXIT_SERVICE, f"embedding error: {text}"
    if isinstance(exc, recommender.IndexBuildError):
        cause = exc.__cause__
        if isinstance(cause, client.EmbeddingUnavailable):
            return EXIT_UNAVAILABLE, f"embedding service unavailable: {text}"
        if isinstance(cause, client.EmbeddingError):
            return classify_error(cause)[0], text
        return EXIT_SERVICE, text
    if isinstance(exc, recommender.IndexMismatchError | recommender.CorruptIndexError):
        return EXIT_SERVICE, text
    if isinstance(exc, recommender.RecommenderError):
        return EXIT_USAGE, text
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError):
        name = exc.filename if getattr(exc, "filename", None) else text
        return EXIT_USAGE, f"{exc.strerror or 'cannot open'}: {name}"
    if isinstance(exc, PermissionError):
        return EXIT_USAGE, f"permission denied: {exc.filename or text}"
    if isinstance(exc, UnicodeDecodeError):
        return EXIT_USAGE, f"not UTF-8 text: {text}"
    if isinstance(exc, ValueError):  # the library validates its arguments with ValueError
        return EXIT_USAGE, text
    if isinstance(exc, OSError):
        return EXIT_FAILURE, f"{exc.strerror or text}: {exc.filename}" if exc.filename else text
    return (
        EXIT_FAILURE,
        f"internal error: {type(exc).__name__}: {text} (run with --debug for details)",
    )


@contextmanager
def _logging(debug: bool) -> Iterator[None]:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    if not debug:
        # The SDK's transport logs every retry at INFO; our own warnings are enough.
        for noisy in ("httpx", "httpx2", "openai"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run ``bookrec`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    out = sys.stdout if out is None else out
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    debug = bool(getattr(args, "debug", False))
    handler: Callable[[argparse.Namespace, TextIO], int] = args.handler
    with _logging(debug):
        try:
            return handler(args, out)
        except KeyboardInterrupt:
            print("bookrec: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            # The reader of our output went away (e.g. `| head`): not an error worth a message.
            _silence_stdout()
            return EXIT_OK
        except Exception as exc:
            code, message = classify_error(exc)
            if debug:
                traceback.print_exc(file=sys.stderr)
            print(f"bookrec: error: {message}", file=sys.stderr)
            return code


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
