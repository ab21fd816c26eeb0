"""``python -m bookrec.cpu_server`` (or ``bookrec-cpu-server``): the server's command line."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .loading import ModelLoadError, load, model_source

if TYPE_CHECKING:
    from .server import Server, State

__all__ = ["build_parser", "main"]

# Run as `python -m`, this module is __main__: its logger is named after the package.
log = logging.getLogger("bookrec.cpu_server")

API_KEY_ENV_VARS = ("BOOKREC_API_KEY", "SGLANG_API_KEY")
# Limits' defaults, read here without importing uvicorn (``--help`` works without the extra).
MIB = 1024 * 1024


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="OpenAI-compatible Qwen3-Embedding server on CPU (transformers + torch); "
        "with --reranker, SGLang's /v1/rerank for a Qwen3-Reranker.",
    )
    parser.add_argument("--model", required=True, help="local directory or Hugging Face id")
    parser.add_argument(
        "--reranker",
        action="store_true",
        help="serve POST /v1/rerank for a Qwen3-Reranker (a Qwen3ForCausalLM; score = P(yes) "
        "at the last position of Qwen's prompt) instead of embeddings: /v1/embeddings then "
        "answers SGLang's 400 for a model that is not an embedding model. The limits apply "
        "as to embeddings; a request's prompts (each document with the query and instruct) "
        "may come to at most --max-body-bytes characters",
    )
    parser.add_argument("--revision", help="Hugging Face revision to load")
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    parser.add_argument("--port", type=int, default=30000, help="default 30000")
    parser.add_argument(
        "--api-key", help="bearer key to require (default: BOOKREC_API_KEY or SGLANG_API_KEY)"
    )
    parser.add_argument("--served-model-name", help="id for /v1/models (default: the model path)")
    parser.add_argument(
        "--context-length",
        type=int,
        help="maximum tokens per input, EOS included (default: the model's)",
    )
    dims = parser.add_mutually_exclusive_group()
    dims.add_argument(
        "--matryoshka-dimensions",
        metavar="D1,D2,...",
        help="allowed `dimensions` values (default: any from 32 to the hidden size)",
    )
    dims.add_argument(
        "--no-matryoshka", action="store_true", help="refuse `dimensions` requests (400)"
    )
    parser.add_argument(
        "--max-batch-tokens",
        type=int,
        default=16384,
        help="token budget of one batch (padded) (default 16384)",
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=5.0,
        help="how long to collect concurrent requests into one batch (default 5)",
    )
    parser.add_argument(
        "--max-queued-requests", type=int, default=1024, help="503 beyond this (default 1024)"
    )
    parser.add_argument(
        "--request-timeout", type=float, default=600.0, help="seconds per request (default 600)"
    )
    limits = parser.add_argument_group(
        "limits", "what clients may cost the server (uvicorn's names where uvicorn enforces them)"
    )
    limits.add_argument(
        "--max-body-bytes",
        type=int,
        default=16 * MIB,
        help="413 for larger bodies, refused by Content-Length before reading (default 16 MiB)",
    )
    limits.add_argument(
        "--max-header-bytes",
        type=int,
        default=64 * 1024,
        help="request line plus headers, 431 beyond (default 64 KiB)",
    )
    limits.add_argument(
        "--max-buffered-bytes",
        type=int,
        default=256 * MIB,
        help="request bodies held at once; requests wait for room (default 256 MiB)",
    )
    limits.add_argument(
        "--limit-concurrency",
        type=int,
        default=1024,
        help="open connections; requests beyond get 503 (default 1024)",
    )
    limits.add_argument("--backlog", type=int, default=2048, help="listen backlog (default 2048)")
    limits.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds for a request's line plus headers, then the connection closes (default 10)",
    )
    limits.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        help="seconds to receive a body once its headers are in, 408 beyond (default 30)",
    )
    limits.add_argument(
        "--timeout-keep-alive",
        type=int,
        default=5,
        help="seconds an idle kept-alive connection stays open (default 5)",
    )
    limits.add_argument(
        "--timeout-graceful-shutdown",
        type=int,
        default=30,
        help="seconds requests in flight get to finish after SIGTERM (default 30)",
    )
    limits.add_argument(
        "--chars-per-token",
        type=int,
        default=8,
        help="texts are cut at this many characters per token of context length before "
        "tokenizing; a text longer than that is refused (default 8)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads (default: the CPUs this process may use)",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="weights dtype (default float32; bfloat16 halves memory, slower on most CPUs)",
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    return parser


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Start the server, serve until SIGTERM or SIGINT, then return the exit status.

    Usage: ``python -m bookrec.cpu_server --model Qwen/Qwen3-Embedding-0.6B`` (or a local
    directory). The API key comes from ``--api-key``, else ``BOOKREC_API_KEY``, else
    ``SGLANG_API_KEY``. Needs ``pip install 'bookrec[cpu]'``.

    The port is open while the model loads (``/ready`` answers 503 until it is served); SIGTERM
    stops accepting, lets requests in flight finish (``--timeout-graceful-shutdown``), then
    lets the worker finish its batch.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        model_source(args.model)  # fail fast, before the slow imports
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        import starlette  # noqa: F401 - checked here, used by .server
        import torch
        import transformers  # noqa: F401 - checked here, used in load()
        import uvicorn  # noqa: F401 - checked here, used by .server
    except ImportError as exc:
        print(
            f"error: the CPU server needs torch, transformers, uvicorn and starlette ({exc}).\n"
            "  Install them with: pip install 'bookrec[cpu]'",
            file=sys.stderr,
        )
        return 1
    from .server import Config, Limits, State, build_server, listen

    api_key = args.api_key or next(
        (os.environ[var] for var in API_KEY_ENV_VARS if os.environ.get(var)), None
    )
    matryoshka: tuple[int, ...] | None = None
    if args.matryoshka_dimensions:
        try:
            matryoshka = tuple(sorted(int(d) for d in args.matryoshka_dimensions.split(",")))
        except ValueError:
            print("error: --matryoshka-dimensions takes integers, e.g. 64,128", file=sys.stderr)
            return 2
    if not api_key and not is_loopback(args.host):
        # The launch script's wording (scripts/launch_server.py).
        log.warning(
            "listening on %s without an API key: anyone who can reach port %d can use the "
            "service; set BOOKREC_API_KEY (or --api-key)",
            args.host,
            args.port,
        )

    threads = args.threads or available_cpus()
    torch.set_num_threads(threads)

    limits = Limits(
        max_body_bytes=args.max_body_bytes,
        max_header_bytes=args.max_header_bytes,
        max_buffered_bytes=max(args.max_buffered_bytes, args.max_body_bytes),
        limit_concurrency=args.limit_concurrency,
        backlog=args.backlog,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        keep_alive_timeout=args.timeout_keep_alive,
        graceful_shutdown_timeout=args.timeout_graceful_shutdown,
        chars_per_token=args.chars_per_token,
    )
    config = Config(
        model_path=args.model,
        served_model_name=args.served_model_name or args.model,
        api_key=api_key,
        context_length=args.context_length or 0,  # set once the model is loaded
        matryoshka_dimensions=matryoshka,
        dimensions_enabled=not args.no_matryoshka,
        request_timeout=args.request_timeout,
        limits=limits,
        reranker=args.reranker,
    )
    try:
        sock = listen(args.host, args.port, limits.backlog)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    state = State(config)
    server = build_server(state, args.host, args.port)
    log.info(
        "listening on %s:%d; loading %s (%d threads)", args.host, args.port, args.model, threads
    )
    outcome: dict[str, int] = {}
    loader = threading.Thread(
        target=load_and_watch, args=(args, state, server, outcome), name="loader", daemon=True
    )

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        if server.should_exit and signum == signal.SIGINT:
            server.force_exit = True
        server.should_exit = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    loader.start()
    server.run(sockets=[sock])  # until should_exit: stops accepting, drains, returns
    sock.close()
    embedder = state.embedder
    if embedder is not None:
        embedder.stop()
        embedder.thread.join(timeout=30)  # finish the batch in flight before the interpreter exits
    return outcome.get("status", 0)


def load_and_watch(
    args: argparse.Namespace, state: State, server: Server, outcome: dict[str, int]
) -> None:
    """Load the model, start its worker, then stop the server if the worker ever dies."""
    from .reranker import RerankWorker
    from .worker import Embedder

    try:
        model, tokenizer = load(args)
        context_length = args.context_length or int(
            getattr(model.config, "max_position_embeddings", 32768)
        )
        worker_class = RerankWorker if args.reranker else Embedder
        embedder = worker_class(
            model,
            tokenizer,
            context_length=context_length,
            max_batch_tokens=args.max_batch_tokens,
            batch_wait=args.batch_wait_ms / 1000.0,
            max_queued=args.max_queued_requests,
            chars_per_token=args.chars_per_token,
        )
    except (ModelLoadError, ValueError) as exc:  # ValueError: a reranker without yes/no tokens
        print(f"error: {exc}", file=sys.stderr)
        outcome["status"] = 1
        server.should_exit = True
        return
    state.config = dataclasses.replace(state.config, context_length=context_length)
    embedder.start()
    state.embedder = embedder
    log.info(
        "ready: http://%s:%d/v1 serving %s (%s, hidden size %d, context length %d)",
        args.host,
        args.port,
        args.model,
        "reranker: POST /v1/rerank" if args.reranker else "embeddings",
        embedder.hidden_size,
        context_length,
    )
    while not server.should_exit:
        if not embedder.alive():
            log.error("the embedding worker died; exiting")
            outcome["status"] = 1
            server.should_exit = True
            return
        embedder.thread.join(timeout=1.0)


if __name__ == "__main__":
    sys.exit(main())
