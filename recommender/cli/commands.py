"""The ``bookrec`` subcommands, one function each, writing a table or JSON to ``out``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TextIO

from bookrec import recommender

from ..errors import RecommenderError
from ..index.manifest import read_manifest
from ..lexical import LEXICAL_MODEL_PREFIX
from . import stores
from .config import filters_from_args, open_client, rerank_settings
from .errors import EXIT_OK, CliError
from .parser import sample_catalog_path
from .progress import ProgressBar
from .render import book_label, printable, recommendations_table

__all__ = ["COMMANDS", "Command"]

Command = Callable[[argparse.Namespace, TextIO], int]


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


def _print_json(data: Any, out: TextIO, *, compact: bool = False) -> None:
    if compact:  # vectors: one line, not one line per number
        json.dump(data, out, ensure_ascii=False, separators=(",", ":"))
    else:
        json.dump(data, out, ensure_ascii=False, indent=2)
    out.write("\n")


def _index_catalog_path(args: argparse.Namespace) -> Path:
    """The catalog ``bookrec index`` reads: ``--catalog``, else the bundled sample."""
    return Path(args.catalog) if args.catalog else sample_catalog_path()


def _recorded_catalog(index_dir: Path) -> Path | None:
    """The catalog file the index in ``index_dir`` records it was built from (``None``: no
    index there, or one that records none); a recorded file that is gone is a ``CliError``."""
    try:
        manifest = read_manifest(index_dir)
    except RecommenderError:
        return None  # no index (or a damaged one): opening it reports that
    recorded = manifest.catalog_path
    if recorded is None:
        return None
    if not recorded.is_file():
        raise CliError(
            f"the index at {index_dir} was built from the catalog {recorded}, which no longer "
            f"exists; pass the catalog with --catalog, or rebuild the index: "
            f"bookrec index --catalog <file> --index {index_dir} --rebuild"
        )
    return recorded


def _catalog_path(args: argparse.Namespace) -> Path:
    """The catalog a query command reads: ``--catalog``, else the catalog the index was built
    from (its manifest records it), else the bundled sample."""
    if args.catalog:
        return Path(args.catalog)
    index = getattr(args, "index", None)
    recorded = _recorded_catalog(Path(index)) if index else None
    return recorded if recorded is not None else sample_catalog_path()


def check_catalog_matches(
    index: recommender.VectorIndex, catalog: recommender.Catalog, catalog_path: Path
) -> None:
    """``CliError`` when ``catalog`` is not the index's: most of the index's books are missing
    from it (a catalog that gained or lost a few books stays usable, with a warning)."""
    ids = index.ids
    if not ids:
        return
    missing = sum(1 for book_id in ids if book_id not in catalog)
    if missing * 2 <= len(ids):
        return
    manifest = index.manifest
    recorded = manifest.catalog_path if manifest is not None else None
    built = f"was built from {recorded}" if recorded is not None else "does not record its catalog"
    raise CliError(
        f"the catalog {catalog_path} does not match the index at {index.path}: {missing} of "
        f"its {len(ids)} books are not in it. The index {built}; pass that catalog with "
        f"--catalog, or rebuild the index from this one: "
        f"bookrec index --catalog {catalog_path} --index {index.path} --rebuild"
    )


def _verify_index(args: argparse.Namespace, out: TextIO) -> int:
    """``bookrec index --verify``: the full integrity check of an index directory."""
    if stores.store_dsn(args) is not None:
        raise CliError("--verify is for index directories, not a --store")
    if args.rebuild:
        raise CliError("--verify checks the index as it is; it cannot be combined with --rebuild")
    index_dir = Path(args.index)
    started = time.perf_counter()
    report = open_index(index_dir).verify()
    seconds = time.perf_counter() - started
    if args.json:
        _print_json(
            {
                "index": str(index_dir),
                "ok": True,
                "books": report.rows,
                "files": list(report.files),
                "bytes": report.bytes,
                "checksummed": report.checksummed,
                "seconds": round(seconds, 3),
            },
            out,
        )
        return EXIT_OK
    print(f"Index at {index_dir} is intact: {report.rows} books", file=out)
    if report.checksummed:
        print(
            f"  {len(report.files)} files match their sizes and checksums "
            f"({report.bytes:,} bytes): {', '.join(report.files)}",
            file=out,
        )
    else:
        print(
            "  no checksums recorded (index written by an older bookrec): files, shapes "
            "checked only; rebuild it with --rebuild to record them",
            file=out,
        )
    print("  every vector is finite with unit norm, ids are unique", file=out)
    return EXIT_OK


def cmd_index(args: argparse.Namespace, out: TextIO) -> int:
    if getattr(args, "verify", False):
        return _verify_index(args, out)
    catalog_path = _index_catalog_path(args)
    catalog = load_catalog(catalog_path)
    dsn = stores.store_dsn(args)
    if dsn is not None:
        stores.require_driver()
        if args.scan not in (None, "none"):
            raise CliError(
                "--scan is for index directories; a --store searches with its HNSW index"
            )
        if args.rebuild:
            stores.drop(dsn)
    index_dir = Path(args.index)
    target = stores.shown(dsn) if dsn is not None else str(index_dir)
    started = time.perf_counter()
    scan: dict[str, object] | None = None
    with (
        open_client(args) as embedder,
        ProgressBar("embedding", enabled=not args.no_progress) as bar,
    ):
        if dsn is not None:
            report = stores.build(
                dsn,
                catalog,
                embedder,
                chunk_size=args.chunk_size,
                progress=bar,
                halfvec=args.dtype == "float16",
            )
        else:
            built, report = recommender.build_index(
                index_dir,
                catalog,
                embedder,
                progress=bar,
                rebuild=args.rebuild,
                dtype=args.dtype,
                chunk_size=args.chunk_size,
                scan=args.scan,
                catalog_path=catalog_path,
            )
            scan = built.manifest.scan if built.manifest is not None else None
        identity = report.identity or embedder.identity
    seconds = time.perf_counter() - started
    if args.json:
        _print_json(
            {
                ("store" if dsn is not None else "index"): target,
                "catalog": str(catalog_path),
                "books": report.total,
                "embedded": report.embedded,
                "reused": report.reused,
                "resumed": report.resumed,
                "removed": report.removed,
                "unchanged": report.unchanged,
                "model": identity.model if identity else None,
                "dimensions": identity.dimensions if identity else None,
                "scan": scan,
                "seconds": round(seconds, 3),
            },
            out,
        )
        return EXIT_OK
    counts = f"embedded {report.embedded}, reused {report.reused}, removed {report.removed}"
    if report.resumed:
        how = "by other indexers or an interrupted run" if dsn else "from an interrupted build"
        counts += f", resumed {report.resumed} {how}"
    print(f"Indexed {report.total} books from {catalog_path} into {target}", file=out)
    print(f"  {counts}", file=out)
    if identity is not None:
        print(f"  model {identity}", file=out)
    if scan is not None:
        recall = scan.get("recall_at_10")
        measured = f", recall@10 {recall:.3f} against an exact scan" if recall is not None else ""
        print(f"  scan copy {scan['kind']}{measured}", file=out)
    print(f"  {seconds:.1f} s{' (nothing changed)' if report.unchanged else ''}", file=out)
    return EXIT_OK


def cmd_db(args: argparse.Namespace, out: TextIO) -> int:
    dsn = stores.store_dsn(args)
    if dsn is None:
        raise CliError("give the database with --store DSN (or $BOOKREC_STORE)")
    version = stores.migrate(dsn)
    if args.json:
        _print_json({"store": stores.shown(dsn), "schema_version": version}, out)
    else:
        print(f"Database at {stores.shown(dsn)}: schema version {version}", file=out)
    return EXIT_OK


@contextmanager
def _recommender(
    args: argparse.Namespace,
    embedder: Any = None,
    reranker: Any = None,
    *,
    free_text: bool = False,
) -> Iterator[recommender.Recommender]:
    """The recommender over ``--index`` or ``--store`` (whose connection closes afterwards);
    ``reranker`` serves ``--rerank``, as ``--rerank-candidates`` and ``--rerank-instruction``
    say. ``free_text``: the command embeds free text, with the query embedder of the index
    (``_query_embedder``: no embedding service for a lexical index)."""
    options: dict[str, Any] = {"embedder": embedder}
    if getattr(args, "fusion", None):
        options["fusion"] = recommender.Fusion(mode=args.fusion)
    if reranker is not None:
        options["reranker"] = reranker
        options["rerank_settings"] = rerank_settings(args)
    with ExitStack() as stack:
        dsn = stores.store_dsn(args)
        if dsn is None:
            catalog_path = _catalog_path(args)
            books = load_catalog(catalog_path)
            index = open_index(Path(args.index))
            check_catalog_matches(index, books, catalog_path)
            store: Any = index
        else:
            store = stack.enter_context(
                stores.open_store(dsn, getattr(args, "replicas", None) or ())
            )
            books = (
                load_catalog(Path(args.catalog))
                if args.catalog
                else stores.catalog_from_store(store)
            )
        if free_text:
            options["embedder"] = _query_embedder(args, store.identity, books, stack, reranker)
        yield recommender.Recommender(books, store, **options)


def is_lexical(identity: Any) -> bool:
    """Whether an index of ``identity`` was built in lexical (TF-IDF) mode, by
    :class:`~bookrec.recommender.LexicalEmbedder`: no embedding service serves its model."""
    model = getattr(identity, "model", None)
    return isinstance(model, str) and model.startswith(LEXICAL_MODEL_PREFIX)


def _query_embedder(
    args: argparse.Namespace,
    identity: Any,
    catalog: recommender.Catalog,
    stack: ExitStack,
    client: Any = None,
) -> Any:
    """What embeds free text for an index of ``identity``: the embedding client of the endpoint
    options (``client`` when the command has one open already). For a lexical (TF-IDF) index,
    the ``LexicalEmbedder`` of the catalog instead when it reproduces the index's vector space,
    else ``None`` (keywords, degraded): an embedding service is never asked about a lexical
    index, since none serves its model and waiting for one cost every search seconds."""
    if not is_lexical(identity):
        return client if client is not None else stack.enter_context(open_client(args))
    lexical = recommender.LexicalEmbedder.from_catalog(catalog)
    if lexical.identity == identity:
        return lexical
    print(
        "note: the index is lexical (TF-IDF) and was built from another catalog; free text "
        "is matched by keywords instead.",
        file=sys.stderr,
    )
    return None


def _results_out(
    args: argparse.Namespace,
    out: TextIO,
    title: str,
    query: dict[str, Any],
    results: Sequence[recommender.Recommendation],
    extra: dict[str, Any] | None = None,
) -> int:
    """Print ``results`` as a table, or as the JSON envelope (with ``extra``'s keys)."""
    degraded = any(r.degraded for r in results)
    asked = bool(getattr(args, "rerank", False))
    reranked = any(r.reranked for r in results)
    if args.json:
        envelope = {
            "query": query,
            "degraded": degraded,
            "reranked": reranked,
            "results": [{"rank": i, **r.to_dict()} for i, r in enumerate(results, 1)],
            **(extra or {}),
        }
        _print_json(envelope, out)
    else:
        print(printable(title), file=out)
        print(recommendations_table(results), file=out)
    if degraded and not args.json:
        print(
            "note: the embedding service was unavailable; free text was matched lexically "
            "(TF-IDF), so these results are degraded.",
            file=sys.stderr,
        )
    if asked and results and not reranked:
        print(
            "note: the reranker was unavailable; the results keep the first-stage order "
            "(not reranked).",
            file=sys.stderr,
        )
    return EXIT_OK


def cmd_similar(args: argparse.Namespace, out: TextIO) -> int:
    with _recommender(args) as rec:
        results = rec.similar(
            args.book_id, k=args.k, diversity=args.diversity, **filters_from_args(args)
        )
        book = rec.catalog.get(args.book_id)
    title = f"More like {book_label(book) if book else args.book_id}"
    return _results_out(args, out, title, {"similar_to": args.book_id, "k": args.k}, results)


def cmd_recommend(args: argparse.Namespace, out: TextIO) -> int:
    log = _read_log(args.reading_log) if args.reading_log else None
    if not (args.history or args.liked or args.preference or log is not None):
        raise CliError("give at least one of --history, --liked, --prefer or --reading-log")
    matched: recommender.MatchedLog | None = None
    with ExitStack() as stack:
        if args.preference or args.rerank:
            reranker = stack.enter_context(open_client(args)) if args.rerank else None
            rec = stack.enter_context(
                _recommender(args, None, reranker, free_text=bool(args.preference))
            )
        else:
            rec = stack.enter_context(_recommender(args))
        if log is not None:
            matched = log.match(rec.catalog)
            _report_log(matched)
        results = _run_recommend(rec, args, matched)
    query = {
        "history": args.history,
        "liked": args.liked,
        "disliked": args.disliked,
        "preferences": args.preference,
        "strategy": args.strategy,
        "k": args.k,
    }
    if args.rerank:
        query["rerank"] = True
    if matched is None:
        return _results_out(args, out, "Recommendations", query, results)
    query["reading_log"] = args.reading_log
    report = {"reading_log": {"file": args.reading_log, **matched.to_dict()}}
    return _results_out(args, out, "Recommendations", query, results, report)


def _read_log(path: str) -> recommender.ReadingLog:
    """The reading log of ``--reading-log``; a file that is no export is a ``CliError``."""
    try:
        return recommender.read_reading_log(path)
    except recommender.ReadingLogError as exc:
        raise CliError(f"reading log {exc}") from None


#: How many of the rows skipped or warned about are named on stderr (all are in --json).
_LOG_ISSUES_SHOWN = 10


def _report_log(matched: recommender.MatchedLog) -> None:
    """The match report on stderr: one summary line, what the rows became, the bad rows."""
    log = matched.log
    print(
        printable(f"reading log {log.source} ({log.label}): {matched.summary()}"),
        file=sys.stderr,
    )
    print(f"  used: {matched.counts()}", file=sys.stderr)
    issues = sorted(
        [(s.line, f"skipped: {s.message}") for s in log.skipped]
        + [(w.line, w.message) for w in log.warnings]
    )
    for line, message in issues[:_LOG_ISSUES_SHOWN]:
        print(printable(f"warning: {log.source}:{line}: {message}"), file=sys.stderr)
    if len(issues) > _LOG_ISSUES_SHOWN:
        print(
            f"warning: and {len(issues) - _LOG_ISSUES_SHOWN} more rows (--json lists them all)",
            file=sys.stderr,
        )


def _run_recommend(
    rec: recommender.Recommender,
    args: argparse.Namespace,
    matched: recommender.MatchedLog | None = None,
) -> list[recommender.Recommendation]:
    options: dict[str, Any] = {
        "preferences": args.preference,
        "k": args.k,
        "strategy": args.strategy,
        "diversity": args.diversity,
        "exclude_read": not args.include_read,
        "rerank": args.rerank,
        **filters_from_args(args),
    }
    if matched is None:
        return list(
            rec.recommend(history=args.history, liked=args.liked, disliked=args.disliked, **options)
        )
    if not (args.history or args.liked or args.preference or matched.history or matched.liked):
        raise CliError(
            "nothing to recommend from: the reading log has no read book that is in the "
            f"catalog ({matched.summary()}); add --liked, --history or --prefer"
        )
    return matched.recommend(
        rec, history=args.history, liked=args.liked, disliked=args.disliked, **options
    )


def cmd_search(args: argparse.Namespace, out: TextIO) -> int:
    text = " ".join(args.text).strip()
    if not text:
        raise CliError("search text is empty")
    reranking = args.rerank
    with ExitStack() as stack:
        reranker = stack.enter_context(open_client(args)) if reranking else None
        rec = stack.enter_context(_recommender(args, None, reranker, free_text=True))
        results = rec.search(
            text,
            k=args.k,
            diversity=args.diversity,
            rerank=reranking,
            **filters_from_args(args),
        )
    query: dict[str, Any] = {"text": text, "k": args.k}
    if reranking:
        query["rerank"] = True
    return _results_out(args, out, f"Books matching “{text}”", query, results)


def _books_to_put(source: str) -> recommender.Catalog:
    if source != "-":
        return load_catalog(Path(source))
    from bookrec.recommender.catalog_files import parse_catalog

    return parse_catalog(sys.stdin.buffer.read(), "<stdin>")


def cmd_put(args: argparse.Namespace, out: TextIO) -> int:
    books = _books_to_put(args.file).books
    with open_client(args) as embedder, _recommender(args, embedder) as rec:
        replaced = [b.id for b in books if b.id in rec.catalog]
        rec.put_books(books)
    added = [b.id for b in books if b.id not in set(replaced)]
    if args.json:
        _print_json({"added": added, "replaced": replaced}, out)
    else:
        for verb, ids in (("Added", added), ("Replaced", replaced)):
            if ids:
                print(f"{verb} {len(ids)}: {printable(', '.join(ids))}", file=out)
    return EXIT_OK


def cmd_delete(args: argparse.Namespace, out: TextIO) -> int:
    wanted = list(dict.fromkeys(args.book_ids))
    with _recommender(args) as rec:
        known = [i for i in wanted if i in rec.store]
        rec.delete_books(known)
    unknown = [i for i in wanted if i not in known]
    if args.json:
        _print_json({"deleted": known, "unknown": unknown}, out)
    else:
        if known:
            print(f"Deleted {len(known)}: {printable(', '.join(known))}", file=out)
        if unknown:
            shown = printable(", ".join(unknown))
            print(f"Not in the index (ignored): {shown}", file=sys.stderr)
    return EXIT_OK


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


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    from . import serve  # FastAPI and uvicorn are loaded only to serve

    return serve.run(args, out)


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from . import demo  # the demo pulls in process management only when asked for

    return demo.run(args, out)


#: The function of each subcommand, by the name the parser stores in ``args.command``.
COMMANDS: dict[str, Command] = {
    "index": cmd_index,
    "db": cmd_db,
    "similar": cmd_similar,
    "recommend": cmd_recommend,
    "search": cmd_search,
    "put": cmd_put,
    "delete": cmd_delete,
    "embed": cmd_embed,
    "demo": cmd_demo,
    "serve": cmd_serve,
}
