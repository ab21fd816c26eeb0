"""The ``bookrec`` argument parser: its subcommands with their options."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import NoReturn, TypeVar, get_args

from ..fusion import FUSION_MODES
from ..index.build import DEFAULT_CHUNK_SIZE
from ..index.scan import check_request
from ..profile import Strategy
from ..reading_log import RATING_RULE
from ..rerank import DEFAULT_RERANK_CANDIDATES
from .config import API_KEY_ENV, REPLICAS_ENV, RERANK_URL_ENV, STORE_ENV
from .errors import EXIT_USAGE

__all__ = ["DEFAULT_INDEX_DIR", "build_parser", "sample_catalog_path"]

DEFAULT_INDEX_DIR = ".bookrec/index"

_T = TypeVar("_T")


def sample_catalog_path() -> Path:
    """The sample catalog shipped in the package (151 books, English and Chinese)."""
    return Path(
        str(resources.files("bookrec.recommender").joinpath("data", "sample_catalog.jsonl"))
    )


def _converted(raw: str, convert: Callable[[str], _T], expected: str) -> _T:
    try:
        return convert(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {raw!r}") from None


def _scan_request(text: str) -> str:
    try:
        return check_request(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(raw: str) -> int:
    value = _converted(raw, int, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {raw!r}")
    return value


def _float(raw: str) -> float:
    return _converted(raw, float, "a number")


def _unit_float(raw: str) -> float:
    value = _float(raw)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {raw!r}")
    return value


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


def _rerank_options(*, flag: bool = True) -> _Parser:
    rr = _Parser(add_help=False)
    group = rr.add_argument_group("second stage (a reranker such as Qwen3-Reranker)")
    if flag:
        group.add_argument(
            "--rerank",
            action="store_true",
            help="rescore the best candidates with the reranker; when it is down the results "
            "keep the first-stage order and say so",
        )
    group.add_argument(
        "--rerank-candidates",
        type=_positive_int,
        default=DEFAULT_RERANK_CANDIDATES,
        metavar="N",
        help=f"how many first-stage candidates to rerank (default {DEFAULT_RERANK_CANDIDATES})",
    )
    group.add_argument(
        "--rerank-url",
        action="append",
        metavar="URL",
        help="the reranker's endpoint, e.g. http://127.0.0.1:30001/v1; repeat for fallbacks "
        f"(default: ${RERANK_URL_ENV} or http://127.0.0.1:30001/v1)",
    )
    group.add_argument(
        "--rerank-instruction",
        metavar="TEXT",
        help="the task the reranker judges (default: one for book searches, one for readers)",
    )
    return rr


def _catalog_options(*, index_default: str = DEFAULT_INDEX_DIR) -> _Parser:
    cat = _Parser(add_help=False)
    cat.add_argument(
        "--catalog",
        "-c",
        metavar="FILE",
        default=os.environ.get("BOOKREC_CATALOG") or None,
        help="catalog (.jsonl or .csv; default: $BOOKREC_CATALOG, else the books kept in the "
        "--store database, else the bundled sample catalog)",
    )
    cat.add_argument(
        "--index",
        "-i",
        metavar="DIR",
        default=os.environ.get("BOOKREC_INDEX") or index_default,
        help=f"index directory (default: $BOOKREC_INDEX or {index_default})",
    )
    cat.add_argument(
        "--store",
        metavar="DSN",
        default=os.environ.get(STORE_ENV) or None,
        help="PostgreSQL database instead of --index, e.g. postgresql://bookrec@db/books "
        f"(default: ${STORE_ENV}; give the password through ${STORE_ENV}, PGPASSWORD or "
        "~/.pgpass: a command line is visible to other local users; never printed)",
    )
    cat.add_argument(
        "--replica",
        dest="replicas",
        action="append",
        metavar="DSN",
        default=_env_list(REPLICAS_ENV),
        help="a streaming replica of --store to read from (repeatable, in order of "
        f"preference; default: ${REPLICAS_ENV}, comma-separated); one that is down or lags "
        "is skipped, writes go to --store",
    )
    return cat


def _env_list(name: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, "").split(",") if part.strip()]


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
    rank.add_argument(
        "--fusion",
        choices=FUSION_MODES,
        default="hybrid",
        help="hybrid (default): the embeddings' ranking fused with the keyword ranking "
        "(reciprocal rank); dense: embeddings alone; lexical: keywords alone",
    )
    group = rank.add_argument_group("filters")
    group.add_argument(
        "--language",
        dest="languages",
        action="append",
        metavar="LANG",
        help="only this language (repeatable)",
    )
    group.add_argument(
        "--tag",
        dest="tags",
        action="append",
        metavar="TAG",
        help="only books with this tag (repeatable)",
    )
    group.add_argument(
        "--author",
        dest="authors",
        action="append",
        metavar="NAME",
        help="only books by this author (repeatable)",
    )
    # Each filter's dest is the name of its field in recommender.Filters (the keyword argument
    # of Recommender.similar/recommend/search), so config.filters_from_args needs no table.
    group.add_argument(
        "--year-min", dest="year_min", type=int, metavar="YEAR", help="first published in or after"
    )
    group.add_argument(
        "--year-max", dest="year_max", type=int, metavar="YEAR", help="first published in or before"
    )
    group.add_argument(
        "--min-rating", dest="min_rating", type=_float, metavar="R", help="minimum rating (0-5)"
    )
    group.add_argument(
        "--max-per-author",
        dest="max_per_author",
        type=_positive_int,
        metavar="N",
        help="at most N books per author",
    )
    group.add_argument(
        "--max-per-series",
        dest="max_per_series",
        type=_positive_int,
        metavar="N",
        help="at most N books per series",
    )
    return rank


def build_parser() -> argparse.ArgumentParser:
    """The ``bookrec`` argument parser; ``command`` names the subcommand.

    Subcommands: ``index`` (embed a catalog into an index directory or a PostgreSQL database,
    incrementally), ``db migrate`` (create or upgrade the database's schema),
    ``similar`` (more like this, from stored vectors only), ``recommend`` (for a reader),
    ``search`` (free text), ``serve`` (the HTTP service), ``embed`` (vectors for texts, as
    JSON) and ``demo`` (the guided tour on the bundled sample catalog).
    """
    debug = _debug_option()
    common = [debug, _json_option()]
    endpoint = _endpoint_options()
    catalog = _catalog_options()
    ranking = _ranking_options()
    rerank = _rerank_options()
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
        help="embed every book again (needed to switch models or dimensions; with --store "
        "it drops the index first: run one indexer with it, then add others without)",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="check the index instead of building it: the size and checksum of every file, "
        "every vector finite with unit norm, unique ids (reads the whole index; exit 4 and the "
        "damaged file if it is corrupt). Opening only checks file sizes; every incremental "
        "build runs this check first",
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "float16"),
        default="float32",
        help="storage type of the vectors (float16 halves the size, halfvec with --store, "
        "chosen when the index is created; default float32)",
    )
    p.add_argument(
        "--scan",
        type=_scan_request,
        default=None,
        metavar="KIND",
        help="compact copy that searches scan before rescoring the best rows exactly: auto "
        "(int8 from 100,000 books), none, int8, mrl256 or int8-mrl256 (Matryoshka prefix, "
        "for Qwen3-Embedding); index directories only; default: what the index was built "
        "with, else auto",
    )
    p.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=DEFAULT_CHUNK_SIZE,
        metavar="N",
        help="books embedded and committed together; with --store, the unit that several "
        f"indexer processes share (default {DEFAULT_CHUNK_SIZE})",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser(
        "similar",
        parents=[*common, catalog, ranking],
        help="more like this book (no embedding call)",
        description="Books most similar to one already in the index, from its stored vector. "
        "The book itself and other editions of it are excluded.",
    )
    p.add_argument("book_id", metavar="BOOK_ID", help="id of a book in the catalog")

    p = sub.add_parser(
        "recommend",
        parents=[*common, catalog, ranking, endpoint, rerank],
        help="recommendations for a reader",
        description="Recommendations from what a reader read, liked and disliked (given as "
        "ids, or as a Goodreads or StoryGraph export), and what they say they want. Preference "
        "texts need the embedding service.",
    )
    for flag, what in (
        ("--history", "books already read"),
        ("--liked", "books the reader liked"),
        ("--disliked", "books the reader disliked"),
    ):
        p.add_argument(flag, action="extend", nargs="+", default=[], metavar="ID", help=what)
    p.add_argument(
        "--reading-log",
        metavar="FILE",
        help="a Goodreads or StoryGraph CSV export: its rows are matched to the catalog (ISBN, "
        f"then title and author) and added to --history/--liked/--disliked; {RATING_RULE}. "
        "Rows not in the catalog and rows that cannot be read are reported on stderr",
    )
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
        choices=get_args(Strategy),
        default="blend",
        help="blend (default): half the cosine to the reader's averaged books, half to the "
        "closest one; average: the averaged books alone; best: the closest book alone",
    )
    p.add_argument(
        "--include-read", action="store_true", help="allow books from the history in the results"
    )

    p = sub.add_parser(
        "search",
        parents=[*common, catalog, ranking, endpoint, rerank],
        help="books matching a free-text description",
    )
    p.add_argument("text", nargs="+", metavar="TEXT", help="what to look for")

    p = sub.add_parser(
        "put",
        parents=[*common, catalog, endpoint],
        help="add or replace books, embedded and indexed at once",
        description="Add books to the index (or --store), or replace the books with the same "
        "ids: each is embedded and committed at once, and the next query of any process "
        "sees it. The books stay until the next `bookrec index` from a catalog file, which "
        "makes the index match that file: add them to the file too.",
    )
    p.add_argument(
        "file",
        metavar="FILE",
        help="the books, as catalog records (.jsonl, one JSON object per line, or .csv); "
        "'-' reads JSONL from stdin",
    )

    p = sub.add_parser(
        "delete",
        parents=[*common, catalog],
        help="remove books from the index at once",
        description="Remove books from the index (or --store) at once; unknown ids are "
        "reported and ignored. As with put, the next `bookrec index` from a catalog file "
        "brings back the books that file holds.",
    )
    p.add_argument("book_ids", nargs="+", metavar="BOOK_ID", help="ids of the books to remove")

    p = sub.add_parser(
        "db",
        help="manage the PostgreSQL database of --store",
        description="Manage the PostgreSQL database given by --store (or $BOOKREC_STORE).",
    )
    db = p.add_subparsers(dest="db_command", metavar="ACTION", parser_class=_Parser)
    db.required = True
    m = db.add_parser(
        "migrate",
        parents=common,
        help="apply the schema migrations the database lacks",
        description="Create or upgrade bookrec's tables (books, vector_indexes). A database "
        "migrated by a newer bookrec is refused.",
    )
    m.add_argument(
        "--store",
        metavar="DSN",
        default=os.environ.get(STORE_ENV) or None,
        help=f"the database, e.g. postgresql://bookrec@db/books (default: ${STORE_ENV})",
    )

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

    p = sub.add_parser(
        "serve",
        parents=[debug, catalog, endpoint, _rerank_options(flag=False)],
        help="the recommendation service over HTTP (JSON API, web page, metrics)",
        description="Serve similar, recommend, search, put and delete over HTTP (FastAPI on "
        "uvicorn), with the web page at / and Prometheus metrics at /metrics. API keys come "
        "from $BOOKREC_SERVE_API_KEYS (comma-separated; KEY:write may also PUT and DELETE) "
        "or --api-keys-file, never from the command line.",
    )
    p.add_argument(
        "--fusion",
        choices=FUSION_MODES,
        default="hybrid",
        help="how every ranking is made (default hybrid; see bookrec similar --help)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=8080, metavar="N", help="port (default 8080; 0: any free one)"
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="worker processes, each with its own store and clients (default 1)",
    )
    p.add_argument(
        "--api-keys-file",
        metavar="FILE",
        help="API keys, one per line (KEY or KEY:write; # starts a comment)",
    )
    p.add_argument(
        "--cors-origin",
        dest="cors_origins",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browser requests from this origin (repeatable; default: none)",
    )
    p.add_argument(
        "--request-timeout",
        type=_float,
        default=30.0,
        metavar="SECONDS",
        help="answer 503 to a request not done in this time (default 30)",
    )
    p.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=1 << 20,
        metavar="N",
        help="largest request body accepted (default 1 MiB)",
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=64,
        metavar="N",
        help="most query texts embedded together across requests (default 64)",
    )
    p.add_argument(
        "--batch-wait-ms",
        type=_float,
        default=5.0,
        metavar="MS",
        help="longest wait for other requests' texts before embedding (default 5)",
    )
    p.add_argument(
        "--no-batching",
        action="store_true",
        help="embed each request's texts on its own (no micro-batching)",
    )

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
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("bookrec")
    except Exception:
        return "unknown"
