"""``bookrec demo``: a guided tour of bookrec on the bundled sample catalog.

It picks the best embedding backend available, in this order:

1. the embedding service at the configured URL (``BOOKREC_BASE_URL``), if it answers;
2. the CPU server (``python -m bookrec.cpu_server``), started for the demo and stopped at the
   end, if a model is on this machine: ``BOOKREC_CPU_MODEL`` (a local model directory) or
   Qwen3-Embedding-0.6B in the Hugging Face cache (larger models are too slow on a CPU for a
   demo); it needs the ``cpu`` extra (torch and transformers);
3. lexical mode: TF-IDF over the same book texts, no model at all. The output says so at the
   top and the bottom, because the results are only a preview of the real thing.

Then it indexes the catalog (incrementally: a second run reuses every vector), shows "more like
this" for an English and a Chinese book, recommendations with reasons for a sample reader, and
a summary with the mode, the model and the timings.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from bookrec import client, recommender
from bookrec.client import EmbeddingClient, Endpoint
from bookrec.recommender.cli import (
    CliError,
    ProgressBar,
    book_label,
    client_config,
    display_width,
    recommendations_table,
)

__all__ = ["find_local_model", "run"]

CPU_SERVER_MODULE = "bookrec.cpu_server"
CPU_MODEL_ENV = "BOOKREC_CPU_MODEL"
CPU_MODEL_ID = "Qwen/Qwen3-Embedding-0.6B"
STOP_GRACE_SECONDS = 40.0

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
# Finding a model and running the CPU server
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalModel:
    """A model the CPU server can load without the network."""

    name: str  # what goes to --model: a directory, or a hub id found in the local cache
    where: str  # for people: where it was found
    offline: bool = False  # a hub id served from the cache: forbid downloads


def _hub_cache_dirs() -> list[Path]:
    dirs: list[Path] = []
    if os.environ.get("HF_HUB_CACHE"):
        dirs.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        dirs.append(Path(os.environ["HF_HOME"]) / "hub")
    xdg = os.environ.get("XDG_CACHE_HOME")
    if not dirs:
        dirs.append((Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub")
    return dirs


def _has_weights(directory: Path) -> bool:
    if not (directory / "config.json").is_file():
        return False
    patterns = ("*.safetensors", "pytorch_model*.bin")
    return any(any(directory.glob(p)) for p in patterns)


def find_local_model(model_ids: Sequence[str] = (CPU_MODEL_ID,)) -> tuple[LocalModel | None, str]:
    """A model for the CPU server, and a note for people saying what was (not) found.

    ``BOOKREC_CPU_MODEL`` wins; otherwise the Hugging Face cache is searched for the given
    hub ids. Only complete snapshots (config and weights) count.
    """
    configured = os.environ.get(CPU_MODEL_ENV, "").strip()
    if configured:
        path = Path(configured).expanduser()
        if _has_weights(path):
            return LocalModel(str(path), f"{CPU_MODEL_ENV}={path}"), ""
        return None, f"{CPU_MODEL_ENV}={configured} is not a model directory (config and weights)"
    for model_id in dict.fromkeys(model_ids):
        if model_id.count("/") != 1 or Path(model_id).is_absolute():
            continue
        repo = "models--" + model_id.replace("/", "--")
        for cache in _hub_cache_dirs():
            snapshots = cache / repo / "snapshots"
            if not snapshots.is_dir():
                continue
            ref = cache / repo / "refs" / "main"
            preferred = snapshots / ref.read_text().strip() if ref.is_file() else None
            candidates = [preferred] if preferred is not None else []
            candidates += sorted(snapshots.iterdir())
            for snap in candidates:
                if snap.is_dir() and _has_weights(snap):
                    return LocalModel(model_id, f"{model_id} in {cache}", offline=True), ""
    return None, "no local model"


def _missing_cpu_packages() -> list[str]:
    return [name for name in ("torch", "transformers") if importlib.util.find_spec(name) is None]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop_with_parent() -> None:
    """In the launcher's process: get SIGTERM if the demo dies without cleaning up (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit while the demo runs, so a started server is stopped."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class CpuServer:
    """The CPU server (``python -m bookrec.cpu_server``), in its own session."""

    model: LocalModel
    log_path: Path
    timeout: float
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        env = dict(os.environ)
        if self.model.offline:
            env["HF_HUB_OFFLINE"] = "1"
        argv = [
            sys.executable,  # the interpreter that runs bookrec, so it has the cpu extra
            "-m",
            CPU_SERVER_MODULE,
            "--model",
            self.model.name,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_stop_with_parent if sys.platform == "linux" else None,
            )

    def wait_ready(self, progress: TextIO) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.timeout
        next_note = time.monotonic() + 15
        while not client.check_ready(self.base_url, timeout=2.0):
            code = self.process.poll()
            if code is not None:
                raise CliError(
                    f"the CPU server exited with status {code} before it was ready; "
                    f"see {self.log_path}",
                    exit_code=3,
                )
            now = time.monotonic()
            if now >= deadline:
                raise CliError(
                    f"the CPU server was not ready after {self.timeout:.0f} s; see {self.log_path}",
                    exit_code=3,
                )
            if now >= next_note:
                print(
                    f"  still loading the model ({now - deadline + self.timeout:.0f} s)",
                    file=progress,
                )
                next_note = now + 15
            time.sleep(0.5)

    def stop(self) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        # The server finishes the batch in flight and exits on SIGTERM.
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# --------------------------------------------------------------------------------------------
# Choosing the backend
# --------------------------------------------------------------------------------------------


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
    """The best backend available, per the module docstring (``--mode`` can force one)."""
    mode: str = args.mode
    if mode == "lexical":
        return _lexical_backend(catalog, "")
    config = client_config(args)
    url = config.endpoints[0].base_url
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
                endpoint=", ".join(ready),
                _client=emb,
            )
        if mode == "service":
            raise CliError(f"no embedding service answers at {url}", exit_code=3)
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


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Run the demo; returns the exit status (errors propagate to the CLI's handler)."""
    log = sys.stderr
    catalog_path = Path(args.catalog)
    if not catalog_path.is_file():
        raise CliError(f"catalog not found: {catalog_path}")
    catalog = recommender.load_catalog(catalog_path)
    with _sigterm_as_exit():
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
        print(f"More like {book_label(book)} [{book.id}]", file=out)
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
    print(
        f"  bookrec similar {examples[0].id if examples else 'BOOK_ID'} --index {index_dir}",
        file=out,
    )
    if backend.banner:
        print(file=out)
        _banner(backend.banner, out)
    return 0
