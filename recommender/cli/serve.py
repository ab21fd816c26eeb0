"""``bookrec serve``: the recommendation service on uvicorn, in one process or several workers.

The parent checks that the store opens (a clear one-line error otherwise), binds the socket
itself (so ``--port 0`` works and a busy port is one line too), hands the settings to the
workers as JSON in ``$BOOKREC_SERVE_SETTINGS`` (API keys stay in their own variable or file,
never on a command line) and prints one line once the service answers. With ``--workers N >
1`` uvicorn's supervisor starts N processes on the one socket; each opens its own store and
embedding clients, and Prometheus multiprocess mode (a temporary ``PROMETHEUS_MULTIPROC_DIR``
made before the workers start) makes ``/metrics`` sum them. SIGTERM (or Ctrl-C) stops taking
connections and lets the requests under way finish.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TextIO

from .commands import _catalog_path, _recommender
from .errors import EXIT_OK, EXIT_UNAVAILABLE, CliError
from .stores import shown, store_dsn

__all__ = ["run"]

logger = logging.getLogger("bookrec.serve")

APP_FACTORY = "bookrec.recommender.service.app:app_from_env"
_NO_EMBEDDING = "none: free text matched by keywords"


def _settings(args: argparse.Namespace) -> object:
    from bookrec.recommender.service.settings import ServiceSettings

    dsn = store_dsn(args)
    return ServiceSettings(
        index=None if dsn else str(Path(args.index).resolve()),
        catalog=(
            str(Path(args.catalog).resolve())
            if args.catalog
            else (None if dsn else str(_catalog_path(args)))
        ),
        store=dsn,
        replicas=tuple(getattr(args, "replicas", None) or ()),
        base_urls=tuple(args.base_url or ()),
        embedding_api_key=args.api_key,
        model=args.model,
        dimensions=args.dimensions,
        cache=args.cache,
        embedding_timeout=args.timeout,
        api_keys_file=str(Path(args.api_keys_file).resolve()) if args.api_keys_file else None,
        cors_origins=tuple(args.cors_origins),
        request_timeout=args.request_timeout,
        max_body_bytes=args.max_body_bytes,
        batching=not args.no_batching,
        batch_size=args.batch_size,
        batch_wait_ms=args.batch_wait_ms,
        rerank_base_urls=tuple(args.rerank_url or ()),
        rerank_candidates=args.rerank_candidates,
        rerank_instruction=args.rerank_instruction,
        fusion=args.fusion,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CliError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}", exit_code=EXIT_UNAVAILABLE
        ) from None
    sock.set_inheritable(True)
    return sock


def _announce_when_up(url: str, line: str, out: TextIO, stop: threading.Event) -> None:
    import httpx

    deadline = time.monotonic() + 300
    with httpx.Client(timeout=2.0) as http:
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                if http.get(f"{url}/healthz").status_code == 200:
                    print(line, file=out, flush=True)
                    return
            except httpx.HTTPError:
                pass
            stop.wait(0.05)


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Serve until SIGTERM or Ctrl-C; returns the exit status."""
    try:
        import uvicorn
        from uvicorn.supervisors import Multiprocess

        from bookrec.recommender.service.app import client_config
        from bookrec.recommender.service.metrics import MULTIPROC_ENV
        from bookrec.recommender.service.settings import SETTINGS_ENV, ServiceSettings, load_keys
    except ImportError as exc:
        raise CliError(f"bookrec serve needs: pip install 'bookrec[serve]' ({exc})") from None

    settings = _settings(args)
    assert isinstance(settings, ServiceSettings)
    try:
        keys = load_keys(settings.api_keys_file)
    except OSError as exc:
        raise CliError(f"cannot read the API keys file: {exc.strerror}: {exc.filename}") from None
    except ValueError as exc:
        raise CliError(f"bad API keys: {exc}") from None
    # Open the store once here, so that a store that cannot be opened is one line, not a
    # traceback from each worker.
    with _recommender(args) as rec:
        books = len(rec.catalog)
    dsn = store_dsn(args)
    where = shown(dsn) if dsn else str(args.index)
    urls = [e.display_url for e in client_config(settings).endpoints] if settings.embedding else []
    embedding = ", ".join(urls) if urls else _NO_EMBEDDING

    if not keys and not _is_loopback(args.host):
        logger.warning(
            "serving on %s without API keys: anyone who reaches it may add and delete books "
            "(set $BOOKREC_SERVE_API_KEYS or --api-keys-file)",
            args.host,
        )
    sock = _bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}"
    os.environ[SETTINGS_ENV] = settings.to_json()
    metrics_dir: str | None = None
    if args.workers > 1 and not os.environ.get(MULTIPROC_ENV):
        metrics_dir = tempfile.mkdtemp(prefix="bookrec-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
    debug = bool(getattr(args, "debug", False))
    config = uvicorn.Config(
        APP_FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=args.workers,
        lifespan="on",
        log_level="debug" if debug else "warning",
        access_log=debug,
        timeout_graceful_shutdown=max(5, int(settings.request_timeout) + 5),
        server_header=False,
    )
    line = f"bookrec serve: listening on {url} ({books} books, {where}, embedding: {embedding})"
    stop = threading.Event()
    announcer = threading.Thread(target=_announce_when_up, args=(url, line, out, stop), daemon=True)
    announcer.start()
    try:
        if args.workers > 1:
            Multiprocess(config, sockets=[sock]).run()
            started = True
        else:
            server = uvicorn.Server(config)
            server.run(sockets=[sock])
            started = server.started
    except KeyboardInterrupt:
        started = True
    finally:
        stop.set()
        sock.close()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    if not started:
        print("bookrec: error: the service did not start (see the log above)", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return EXIT_OK
