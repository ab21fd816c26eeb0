"""``python -m bookrec.cpu_server`` (or ``bookrec-cpu-server``): the server's command line."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from .loading import ModelLoadError, load, model_source
from .server import Config, Server
from .worker import Embedder

__all__ = ["build_parser", "main"]

# Run as `python -m`, this module is __main__: its logger is named after the package.
log = logging.getLogger("bookrec.cpu_server")

API_KEY_ENV_VARS = ("BOOKREC_API_KEY", "SGLANG_API_KEY")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="OpenAI-compatible Qwen3-Embedding server on CPU (transformers + torch).",
    )
    parser.add_argument("--model", required=True, help="local directory or Hugging Face id")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Start the server, serve until SIGTERM or SIGINT, then return the exit status.

    Usage: ``python -m bookrec.cpu_server --model Qwen/Qwen3-Embedding-0.6B`` (or a local
    directory). The API key comes from ``--api-key``, else ``BOOKREC_API_KEY``, else
    ``SGLANG_API_KEY``. Needs ``pip install 'bookrec[cpu]'``.
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
        import torch
        import transformers  # noqa: F401 - checked here, used in load()
    except ImportError as exc:
        print(
            f"error: the CPU server needs torch and transformers ({exc}).\n"
            "  Install them with: pip install 'bookrec[cpu]'",
            file=sys.stderr,
        )
        return 1
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

    threads = args.threads or available_cpus()
    torch.set_num_threads(threads)

    config = Config(
        model_path=args.model,
        served_model_name=args.served_model_name or args.model,
        api_key=api_key,
        context_length=args.context_length or 0,  # set once the model is loaded
        matryoshka_dimensions=matryoshka,
        dimensions_enabled=not args.no_matryoshka,
        request_timeout=args.request_timeout,
    )
    try:
        server = Server((args.host, args.port), config)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    serving = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    serving.start()
    log.info(
        "listening on %s:%d; loading %s (%d threads)", args.host, args.port, args.model, threads
    )

    try:
        model, tokenizer = load(args)
    except ModelLoadError as exc:
        server.shutdown()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    context_length = args.context_length or int(
        getattr(model.config, "max_position_embeddings", 32768)
    )
    server.config = dataclasses.replace(config, context_length=context_length)
    embedder = Embedder(
        model,
        tokenizer,
        context_length=context_length,
        max_batch_tokens=args.max_batch_tokens,
        batch_wait=args.batch_wait_ms / 1000.0,
        max_queued=args.max_queued_requests,
    )
    embedder.start()
    server.embedder = embedder

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "ready: http://%s:%d/v1 serving %s (hidden size %d, context length %d)",
        args.host,
        args.port,
        args.model,
        embedder.hidden_size,
        context_length,
    )
    while not stop.wait(1.0):
        if not embedder.alive():
            log.error("the embedding worker died; exiting")
            server.shutdown()
            return 1
    server.shutdown()
    embedder.stop()
    embedder.thread.join(timeout=30)  # finish the batch in flight before the interpreter exits
    return 0


if __name__ == "__main__":
    sys.exit(main())
