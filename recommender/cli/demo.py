"""``bookrec demo``, the guided tour of bookrec on the bundled sample catalog."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from bookrec import client, recommender
from bookrec.client import EmbeddingClient, Endpoint

from .config import client_config
from .cpu_process import CPU_MODEL_ID, CpuServer, find_local_model, sigterm_as_exit
from .errors import EXIT_UNAVAILABLE, CliError
from .parser import sample_catalog_path
from .progress import ProgressBar
from .render import book_label, display_width, printable, recommendations_table

__all__ = ["run"]

#: The two "more like this" examples: (language, title), first match in the catalog.
SIMILAR_EXAMPLES = (("en", "Pride and Prejudice"), ("zh", "三体"))


@dataclass(frozen=True)
class SampleReader:
    """A reader described by titles (resolved to ids in whatever catalog is loaded)."""

    history: tuple[str, ...] = ("The Hobbit", "Harry Potter and the Philosopher's Stone")
    liked: tuple[str, ...] = ("Dune", "The Martian", "三体")
    disliked: tuple[str, ...] = ("Gone Girl",)
    preferences: tuple[str, ...] = (
        "hopeful space science fiction with clever engineering",
        "关于宇宙与外星文明的硬科幻",
    )


# --------------------------------------------------------------------------------------------
# Choosing the backend
# --------------------------------------------------------------------------------------------


def _missing_cpu_packages() -> list[str]:
    return [name for name in ("torch", "transformers") if importlib.util.find_spec(name) is None]


@dataclass
class Backend:
    """What the demo embeds with, and how it got there."""

    mode: str  # "service", "cpu" or "lexical"
    embedder: Any
    endpoint: str | None = None
    banner: str = ""  # said at the top and the bottom when not empty
    notes: list[str] = field(default_factory=list)
    server: CpuServer | None = None
    startup_seconds: float = 0.0
    _client: EmbeddingClient | None = None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.server is not None:
            self.server.stop()

    @property
    def is_lexical(self) -> bool:
        return self.mode == "lexical"


def _lexical_backend(catalog: recommender.Catalog, reasons: str) -> Backend:
    banner = (
        f"{reasons}; running in LEXICAL mode (TF-IDF), results are a degraded preview"
        if reasons
        else "running in LEXICAL mode (TF-IDF), results are a degraded preview"
    )
    return Backend("lexical", _lexical_embedder(catalog), banner=banner)


def _lexical_embedder(catalog: recommender.Catalog) -> Any:
    return recommender.LexicalEmbedder.from_catalog(catalog)


def choose_backend(args: argparse.Namespace, catalog: recommender.Catalog, log: TextIO) -> Backend:
    """The best backend available (``--mode`` can force one), in this order.

    1. the embedding service at the configured URL (``BOOKREC_BASE_URL``), if it answers;
    2. the CPU server (``python -m bookrec.cpu_server``), started for the demo and stopped at
       the end, if a model is on this machine: ``BOOKREC_CPU_MODEL`` (a local model directory)
       or Qwen3-Embedding-0.6B in the Hugging Face cache (larger models are too slow on a CPU
       for a demo); it needs the ``cpu`` extra (torch and transformers);
    3. lexical mode: TF-IDF over the same book texts, no model at all. The output says so at
       the top and the bottom, because the results are only a preview of the real thing.
    """
    mode: str = args.mode
    if mode == "lexical":
        return _lexical_backend(catalog, "")
    config = client_config(args)
    url = config.endpoints[0].display_url  # shown to the user: the password masked
    if mode in ("auto", "service"):
        ready = [
            e.base_url for e in config.endpoints if client.check_ready(e.base_url, timeout=2.0)
        ]
        if ready:
            config = config.with_options(
                endpoints=tuple(e for e in config.endpoints if e.base_url in ready)
            )
            emb = EmbeddingClient(config)
            return Backend(
                "service",
                emb,
                endpoint=", ".join(e.display_url for e in config.endpoints),
                _client=emb,
            )
        if mode == "service":
            raise CliError(f"no embedding service answers at {url}", exit_code=EXIT_UNAVAILABLE)
    reasons = [f"no embedding service at {url}"]
    model, note = find_local_model((CPU_MODEL_ID,))
    if model is None:
        if mode == "cpu":
            raise CliError(f"cannot start the CPU server: {note}")
        reasons.append(note)
        return _lexical_backend(catalog, "; ".join(reasons))
    missing = _missing_cpu_packages()
    hint = ""
    if missing:
        hint = (
            f"found a local model ({model.where}) but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed (pip install '.[cpu]')"
        )
    if hint:
        if mode == "cpu":
            raise CliError(f"cannot start the CPU server: {hint}")
        reasons.append(hint)
        return _lexical_backend(catalog, "; ".join(reasons))
    log_path = Path(args.index_dir) / "cpu-server.log"
    server = CpuServer(model, log_path, timeout=args.server_timeout)
    print(f"No embedding service at {url}: starting the CPU server with {model.where}", file=log)
    print(f"  (log: {log_path}; the first start loads the model, please wait)", file=log)
    server.start()
    try:
        server.wait_ready(log)
        cpu_config = config.with_options(endpoints=(Endpoint(server.base_url, None),))
        emb = EmbeddingClient(cpu_config)
    except BaseException:
        server.stop()
        raise
    return Backend(
        "cpu",
        emb,
        endpoint=server.base_url,
        notes=[f"CPU server started for the demo with {model.where}; stopped at the end"],
        server=server,
        _client=emb,
    )


# --------------------------------------------------------------------------------------------
# The tour
# --------------------------------------------------------------------------------------------


def _slug(identity: client.ModelIdentity) -> str:
    parts = [p for p in re.split(r"[\\/]", identity.model) if p][-2:]
    name = re.sub(r"[^a-z0-9.]+", "-", "-".join(parts).lower()).strip("-") or "model"
    return f"{name}-{identity.dimensions}d"


def _books_by_title(catalog: recommender.Catalog) -> dict[str, recommender.Book]:
    """First edition of each title (lowest year, then catalog order)."""
    found: dict[str, recommender.Book] = {}
    for book in catalog:
        prev = found.get(book.title)
        if prev is None or (book.year or 9999) < (prev.year or 9999):
            found[book.title] = book
    return found


def _resolve(titles: Sequence[str], by_title: dict[str, recommender.Book]) -> list[str]:
    return [by_title[t].id for t in titles if t in by_title]


def _heading(text: str, out: TextIO, char: str = "─") -> None:
    print(file=out)
    print(text, file=out)
    print(char * display_width(text), file=out)


def _banner(text: str, out: TextIO, *, hint: bool = False) -> None:
    print(f"[LEXICAL MODE] {text}", file=out)
    if hint:
        print(
            "  for real embeddings start a server (scripts/launch_server.sh, or --cpu) or set "
            "BOOKREC_BASE_URL, then run the demo again",
            file=out,
        )


def _shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


#: Set by scripts/demo.sh: the directory the user ran it from (the demo runs in the repository
#: root), so that the paths of "Try it yourself" work where the user stands.
INVOKED_FROM_ENV = "BOOKREC_INVOKED_FROM"


def _path_for_user(path: Path, *, command: bool = False) -> str:
    """``path`` as the user can type it where they stand: relative to their directory when it
    is below it (``./name`` for a command there), else absolute."""
    here = Path(os.environ.get(INVOKED_FROM_ENV) or Path.cwd()).resolve()
    absolute = path if path.is_absolute() else Path.cwd() / path
    absolute = Path(os.path.normpath(absolute))  # links kept: the venv's bin/, not /usr/bin
    try:
        shown = str(absolute.relative_to(here))
    except ValueError:
        return str(absolute)
    if command and os.sep not in shown:
        shown = f".{os.sep}{shown}"
    return shown


def bookrec_command() -> str:
    """How to run ``bookrec`` as printed: ``bookrec`` when that name on ``PATH`` is this
    installation's, else the path of this environment's ``bookrec`` script (e.g.
    ``.venv/bin/bookrec`` when the virtual environment is not activated), else
    ``python -m bookrec.recommender.cli`` with this interpreter."""
    name = "bookrec.exe" if os.name == "nt" else "bookrec"
    ours = Path(sys.executable).parent / name
    on_path = shutil.which("bookrec")
    if ours.is_file():
        if on_path is not None and Path(on_path).samefile(ours):
            return "bookrec"
        return shlex.quote(_path_for_user(ours, command=True))
    return f"{shlex.quote(sys.executable)} -m bookrec.recommender.cli"


def try_it_command(book_id: str, index_dir: Path, catalog_path: Path) -> str:
    """The ``bookrec similar`` command that shows the demo's first example again."""
    words = [bookrec_command(), "similar", shlex.quote(book_id)]
    words += ["--index", shlex.quote(_path_for_user(index_dir))]
    if os.environ.get("BOOKREC_CATALOG") or not _same_file(catalog_path, sample_catalog_path()):
        words += ["--catalog", shlex.quote(_path_for_user(catalog_path))]
    return " ".join(words)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Run the demo; returns the exit status (errors propagate to the CLI's handler).

    It chooses a backend (``choose_backend``), indexes the catalog (incrementally: a second run
    reuses every vector), shows "more like this" for an English and a Chinese book,
    recommendations with reasons for a sample reader, and a summary with the mode, the model
    and the timings.
    """
    log = sys.stderr
    catalog_path = Path(args.catalog)
    if not catalog_path.is_file():
        raise CliError(f"catalog not found: {catalog_path}")
    catalog = recommender.load_catalog(catalog_path)
    with sigterm_as_exit():
        started = time.perf_counter()
        backend = choose_backend(args, catalog, log)
        backend.startup_seconds = time.perf_counter() - started
        try:
            return _tour(args, out, catalog_path, catalog, backend)
        finally:
            backend.close()


def _tour(
    args: argparse.Namespace,
    out: TextIO,
    catalog_path: Path,
    catalog: recommender.Catalog,
    backend: Backend,
) -> int:
    title = "bookrec demo: content-based book recommendations"
    print(title, file=out)
    print("═" * display_width(title), file=out)
    if backend.banner:
        _banner(backend.banner, out, hint=True)
    if backend.is_lexical:
        identity = backend.embedder.identity
        mode_line = "LEXICAL (TF-IDF over the book texts, no embedding model)"
        index_dir = Path(args.index_dir) / "lexical"
    else:
        identity = backend.embedder.probe()
        mode_line = (
            f"embedding service at {backend.endpoint}"
            if backend.mode == "service"
            else f"CPU server at {backend.endpoint} (started for the demo)"
        )
        index_dir = Path(args.index_dir) / _slug(identity)
    languages: dict[str, int] = {}
    for book in catalog:
        lang = book.language or "?"
        languages[lang] = languages.get(lang, 0) + 1
    langs = ", ".join(f"{n} {lang}" for lang, n in sorted(languages.items()))
    print(f"mode     {mode_line}", file=out)
    if identity is not None:
        print(f"model    {identity}", file=out)
    for note in backend.notes:
        print(f"note     {note}", file=out)
    print(f"catalog  {_shown_path(catalog_path)} ({len(catalog)} books: {langs})", file=out)

    # Index ----------------------------------------------------------------------------------
    _heading("1. Index the catalog", out)
    started = time.perf_counter()
    with ProgressBar("indexing", enabled=not args.no_progress) as bar:
        index, report = recommender.build_index(index_dir, catalog, backend.embedder, progress=bar)
    index_seconds = time.perf_counter() - started
    print(
        f"{index_dir}: {report.embedded} embedded, {report.reused} reused, "
        f"{report.removed} removed in {_ms(index_seconds)}",
        file=out,
    )
    if report.embedded == 0:
        print("(nothing changed since the last run: no book was sent for embedding)", file=out)

    rec = recommender.Recommender(catalog, index, embedder=backend.embedder)
    by_title = _books_by_title(catalog)

    # More like this -------------------------------------------------------------------------
    _heading("2. More like this (stored vectors only, no embedding call)", out)
    similar_times: list[float] = []
    examples = [by_title[t] for lang, t in SIMILAR_EXAMPLES if t in by_title]
    if not examples:  # another catalog: the first book of each language
        seen: dict[str, recommender.Book] = {}
        for book in catalog:
            seen.setdefault(book.language or "?", book)
        examples = list(seen.values())[:2]
    for book in examples:
        t0 = time.perf_counter()
        results = rec.similar(book.id, k=5)
        similar_times.append(time.perf_counter() - t0)
        print(file=out)
        print(f"More like {book_label(book)} [{printable(book.id)}]", file=out)
        print(recommendations_table(results), file=out)

    # A reader -------------------------------------------------------------------------------
    _heading("3. Recommendations for a sample reader", out)
    reader = SampleReader()
    history = _resolve(reader.history, by_title)
    liked = _resolve(reader.liked, by_title)
    disliked = _resolve(reader.disliked, by_title)
    recommend_seconds = 0.0
    if not (history or liked):
        print("(the sample reader's books are not in this catalog; skipped)", file=out)
    else:
        for label, ids in (("read", history), ("liked", liked), ("disliked", disliked)):
            names = "; ".join(book_label(catalog[i]) for i in ids) or "-"
            print(f"  {label:<9}{names}", file=out)
        for text in reader.preferences:
            print(f"  {'wants':<9}“{text}”", file=out)
        t0 = time.perf_counter()
        results = rec.recommend(
            history=history,
            liked=liked,
            disliked=disliked,
            preferences=list(reader.preferences),
            k=8,
            max_per_author=2,
        )
        recommend_seconds = time.perf_counter() - t0
        print(file=out)
        print(recommendations_table(results), file=out)
        if any(r.degraded for r in results):
            print(
                "  (free text matched lexically: the embedding service stopped answering)", file=out
            )

    # Summary --------------------------------------------------------------------------------
    _heading("Summary", out)
    mode_word = {"service": "embedding service", "cpu": "CPU server", "lexical": "LEXICAL (TF-IDF)"}
    rows = [("mode", mode_word[backend.mode])]
    if backend.endpoint:
        rows.append(("endpoint", backend.endpoint))
    rows += [
        ("model", str(identity) if identity is not None else "-"),
        ("index", f"{index_dir} ({len(index.ids)} books)"),
        (
            "timings",
            f"setup {_ms(backend.startup_seconds)}, index {_ms(index_seconds)} "
            f"({report.embedded} embedded, {report.reused} reused), more-like-this "
            f"{_ms(max(similar_times, default=0.0))} max, recommendations {_ms(recommend_seconds)}",
        ),
    ]
    for key, value in rows:
        print(f"  {key:<9}{value}", file=out)
    print(file=out)
    print("Try it yourself:", file=out)
    first = examples[0].id if examples else "BOOK_ID"
    print(f"  {try_it_command(first, index_dir, catalog_path)}", file=out)
    if backend.banner:
        print(file=out)
        _banner(backend.banner, out)
    return 0
