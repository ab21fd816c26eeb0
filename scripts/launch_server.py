#!/usr/bin/env python3
"""Start the bookrec embedding service, then keep it running.

GPU mode (the default) runs ``sglang serve`` with the flags Qwen3-Embedding needs. With
``--gpus 0,1,...`` and ``--workers-per-gpu N`` it runs N SGLang workers per GPU, each on its own
port with its share of the GPU's memory, behind SGLang's model gateway (``smg``) on the main
port. ``--cpu`` runs ``python -m bookrec.cpu_server`` instead: the same HTTP API on
transformers and torch, for machines without a GPU. ``--reranker 0.6B`` adds a Qwen3-Reranker
SGLang server on its own port (``POST /v1/rerank``), prompted through the chat template
``qwen3_reranker.jinja`` that lies beside this file.

The API key never appears on a command line (where ``ps`` shows it to every local user):
SGLang reads it from a ``--config`` YAML file (mode 0600, in a private temporary directory,
removed once the servers are ready), the CPU server and the gateway from their environment.

The script checks the machine first (SGLang installed, a GPU visible, the ports free), starts the
processes, waits until the service answers ``/ready`` and prints the base URL and a curl example.
It supervises its children: Ctrl-C or SIGTERM stops all of them, and if one dies the others are
stopped too. ``--dry-run`` prints the exact command lines and exits.

Standard library only: this file also runs inside the ``lmsysorg/sglang`` image.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

#: The CPU server, installed with bookrec (its `cpu` extra brings torch and transformers).
CPU_SERVER_MODULE = "bookrec.cpu_server"

DEFAULT_MODEL = "Qwen/Qwen3-Embedding-0.6B"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 30000
DEFAULT_WORKER_BASE_PORT = 31000
DEFAULT_WAIT_TIMEOUT = 1200.0
STOP_GRACE_SECONDS = 30.0
API_KEY_ENV_VARS = ("BOOKREC_API_KEY", "SGLANG_API_KEY")
#: Off loopback, a key must be at least this long and none of the documented placeholders
#: (deploy/embedding.env.example, deploy/api-keys.txt.example), which anyone can read.
MIN_API_KEY_LENGTH = 16
PLACEHOLDER_API_KEYS = frozenset(
    {
        "replace-with-a-long-random-string",
        "replace-with-another-long-random-string",
        "replace-with-a-long-random-read-key",
        "replace-with-another-long-random-key",
    }
)
MASKED = "***"
GATEWAY_POLICIES = ("round_robin", "power_of_two", "random", "cache_aware")
DEFAULT_GATEWAY_METRICS_PORT = 29000
#: With several workers on one GPU and no --mem-fraction-static, the workers share this much
#: of its memory (SGLang's own default assumes a GPU to itself).
DEFAULT_SHARED_MEM_FRACTION = 0.8
#: The file SGLang reads the API key from (``--config``), in a private temporary directory.
SGLANG_CONFIG_NAME = "sglang-config.yaml"
#: The reranker's own key file: the user's `--config` after `--` is the embedding server's.
RERANKER_CONFIG_NAME = "sglang-reranker-config.yaml"
SECRETS_DIR_PREFIX = "bookrec-launch-"
#: Shown by the dry run instead of the directory a real launch creates.
SECRETS_DIR_PLACEHOLDER = SECRETS_DIR_PREFIX + "XXXXXXXX"

# `smg launch` takes the key only as `--api-key KEY` (no environment variable, no file). Its
# Python entry point is run in-process instead, with the key added to sys.argv from the
# environment: /proc/PID/cmdline keeps the words the process was started with.
# deploy/k8s/gateway.yaml runs the same program (a test keeps them equal).
GATEWAY_BOOTSTRAP = (
    "import os, runpy, shutil, sys; "
    'key = os.environ.pop("BOOKREC_API_KEY", ""); '
    "program = shutil.which(sys.argv[1]) or sys.argv[1]; "
    'sys.argv = [program, *sys.argv[2:], *(["--api-key", key] if key else [])]; '
    'runpy.run_path(program, run_name="__main__")'
)

# Copies of facts that bookrec.client owns (this script runs where bookrec may not be
# installed); tests/test_facts.py pins them to QWEN3_EMBEDDING_MODELS and DEFAULT_INSTRUCTION.
# Matryoshka output widths per Qwen3-Embedding size: 32 up to the hidden size (model cards).
_DIMS_0_6B = (32, 64, 128, 256, 512, 768, 1024)
_DIMS_4B = (*_DIMS_0_6B, 1536, 2048, 2560)
_DIMS_8B = (*_DIMS_4B, 4096)
PRESETS: dict[str, tuple[str, tuple[int, ...]]] = {
    "0.6B": ("Qwen/Qwen3-Embedding-0.6B", _DIMS_0_6B),
    "4B": ("Qwen/Qwen3-Embedding-4B", _DIMS_4B),
    "8B": ("Qwen/Qwen3-Embedding-8B", _DIMS_8B),
}
#: The client's default query instruction, for the ready message's curl example.
DEFAULT_INSTRUCTION = (
    "Given a reader's interests or a book description, retrieve descriptions of books "
    "that the reader would enjoy"
)

# Qwen3-Reranker, served by SGLang 0.5.23 at POST /v1/rerank: a causal LM scored on the
# "yes"/"no" logits, so it runs WITHOUT --is-embedding, and with --chat-template naming a
# template that SGLang recognises as a Qwen3 reranker's (sglang/srt/entrypoints/openai/
# serving_rerank.py; docs.sglang.io, "Rerank models"). The pip package lacks SGLang's example
# template (examples/chat_template/qwen3_reranker.jinja), so bookrec ships its own.
RERANKER_PRESETS = {
    "0.6B": "Qwen/Qwen3-Reranker-0.6B",
    "4B": "Qwen/Qwen3-Reranker-4B",
    "8B": "Qwen/Qwen3-Reranker-8B",
}
DEFAULT_RERANKER_PORT = 30001
RERANKER_TEMPLATE = Path(__file__).resolve().parent / "qwen3_reranker.jinja"
RERANKER_NAME = "reranker"
#: The `instruct` of the ready message's curl example (without one, the template uses the
#: model cards' web-search instruction).
RERANKER_EXAMPLE_INSTRUCTION = (
    "Given a reader's interests, retrieve descriptions of books that the reader would enjoy"
)

INSTALL_SGLANG_HINT = (
    "install it with the server extra, `pip install 'bookrec[server]'` (or "
    "`pip install sglang smg`; Python >= 3.11, a recent NVIDIA driver), "
    "or run this script inside the lmsysorg/sglang image (see deploy/compose.yaml)"
)
INSTALL_SMG_HINT = (
    "install SGLang's model gateway with `pip install smg` (or use the lightseekorg/smg image)"
)
#: The checkout this script lives in (a clone has bookrec's pyproject.toml there).
REPO_ROOT = Path(__file__).resolve().parent.parent
#: With --cpu, the child servers get these when their model needs no download (a local
#: directory), or when the Hub cannot be reached: the error is then at once, not after the
#: Hub client's retries (49 s seen), and a cached model loads without asking the Hub.
HUB_OFFLINE_ENV = (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"))
HUB_PROBE_TIMEOUT = 3.0


def install_cpu_hint() -> str:
    """How to get the CPU extra for this launcher: from the clone it lives in, if it is one."""
    if not (REPO_ROOT / "pyproject.toml").is_file():
        return "install the CPU extra: pip install 'bookrec[cpu]'"
    target = shlex.quote(f"{REPO_ROOT}[cpu]")
    if sys.prefix != sys.base_prefix:  # a virtual environment: install into it
        return (
            "install the CPU extra from this clone: "
            f"{shlex.quote(sys.executable)} -m pip install -e {target}"
        )
    venv = shlex.quote(str(REPO_ROOT / ".venv"))
    start = f"BOOKREC_PYTHON={venv}/bin/python {shlex.quote(str(REPO_ROOT / 'scripts'))}"
    if (REPO_ROOT / ".venv" / "bin" / "python").exists():
        return (
            f"start with the clone's virtual environment, {start}/launch_server.sh --cpu "
            f"(if it lacks the CPU extra: {venv}/bin/python -m pip install -e {target})"
        )
    return (
        f"install the CPU extra from this clone into a virtual environment: python3 -m venv "
        f"{venv} && {venv}/bin/python -m pip install -e {target}, then start with "
        f"BOOKREC_PYTHON={venv}/bin/python {shlex.quote(str(REPO_ROOT / 'scripts'))}"
        "/launch_server.sh --cpu"
    )


class LaunchError(Exception):
    """A problem that stops the launch; the message is meant for the user."""


# --------------------------------------------------------------------------- options


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {value}")
    return value


def _int_list(text: str) -> list[int]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list of integers")
    try:
        values = [int(item) for item in items]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers, got {text!r}") from None
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"duplicate entries in {text!r}")
    return values


def _dimensions_list(text: str) -> list[int]:
    values = _int_list(text)
    if any(value < 1 for value in values):
        raise argparse.ArgumentTypeError("dimensions must be positive")
    return sorted(values)


def _gpu_list(text: str) -> list[int]:
    values = _int_list(text)
    if any(value < 0 for value in values):
        raise argparse.ArgumentTypeError("GPU indices must be >= 0")
    return values


def _gpu_index(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a GPU index, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("GPU indices must be >= 0")
    return value


def _served_name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the served model name may not be empty")
    if ":" in text:
        raise argparse.ArgumentTypeError(
            f"{text!r} contains ':', which SGLang reads as a LoRA adapter separator "
            "(it refuses to start with such a name); use e.g. qwen3-embedding-0.6b"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="launch_server.sh",
        usage="%(prog)s [options] [-- ARGS for sglang serve or the CPU server]",
        description=(
            "Start the bookrec embedding service: SGLang serving Qwen3-Embedding on NVIDIA\n"
            "GPUs (default), or the CPU server with --cpu. Both speak the same\n"
            "OpenAI-compatible /v1/embeddings API. Arguments after `--` go verbatim to\n"
            "`sglang serve` (or to the CPU server with --cpu)."
        ),
        epilog=(
            "examples:\n"
            "  launch_server.sh                                # 0.6B on GPU 0, 127.0.0.1:30000\n"
            "  BOOKREC_API_KEY=... launch_server.sh --model 8B --host 0.0.0.0 --enable-metrics\n"
            "  launch_server.sh --gpus 0,1,2,3 --model 4B      # 4 workers behind the gateway\n"
            "  launch_server.sh --workers-per-gpu 2            # 2 workers sharing GPU 0\n"
            "  launch_server.sh --reranker 0.6B                # + a reranker on :30001\n"
            "  launch_server.sh --cpu                          # no GPU: transformers on CPU\n"
            "  launch_server.sh --dry-run -- --dtype float16   # print the command only\n"
            "\n"
            "The API key is read from --api-key (also after `--`), else BOOKREC_API_KEY, else\n"
            "SGLANG_API_KEY; it is never printed, and never on a child's command line."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=(
            "preset 0.6B, 4B or 8B (Qwen/Qwen3-Embedding-*), or any Hugging Face id or local "
            f"directory (default: {DEFAULT_MODEL})"
        ),
    )
    model.add_argument(
        "--revision", metavar="REV", help="Hugging Face revision (commit) to pin the weights"
    )
    dims = model.add_mutually_exclusive_group()
    dims.add_argument(
        "--dimensions-list",
        type=_dimensions_list,
        metavar="D1,D2,...",
        help=(
            "Matryoshka widths that `dimensions` requests may ask for (presets know theirs: "
            "0.6B 32..1024, 4B 32..2560, 8B 32..4096)"
        ),
    )
    dims.add_argument(
        "--any-dimension",
        action="store_true",
        help="accept any `dimensions` up to the hidden size (is_matryoshka) for a custom model",
    )
    dims.add_argument(
        "--no-matryoshka",
        action="store_true",
        help="do not enable `dimensions` requests (they then get a 400)",
    )

    server = parser.add_argument_group("server")
    server.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}; 0.0.0.0 exposes it: set a key)",
    )
    server.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, metavar="N", help="default 30000"
    )
    server.add_argument(
        "--api-key",
        metavar="KEY",
        help="require this bearer key (prefer BOOKREC_API_KEY in the environment: "
        "a command-line key is visible to other local users)",
    )
    server.add_argument(
        "--served-model-name",
        type=_served_name,
        metavar="NAME",
        help="id shown by /v1/models (no ':'); responses still report the model path",
    )
    server.add_argument(
        "--context-length",
        type=_positive_int,
        metavar="N",
        help="maximum tokens per input (default: the model's, 32768); e.g. 8192",
    )
    server.add_argument(
        "--mem-fraction-static",
        type=_fraction,
        metavar="F",
        help="GPU memory fraction for weights and KV cache (SGLang only; lower it to share a GPU)",
    )
    server.add_argument(
        "--max-prefill-tokens",
        type=_positive_int,
        metavar="N",
        help="tokens per prefill batch, e.g. 32768 (SGLang); the batch token budget with --cpu",
    )
    server.add_argument(
        "--enable-metrics",
        action="store_true",
        help="expose Prometheus /metrics (SGLang only)",
    )

    mode = parser.add_argument_group("mode")
    mode.add_argument(
        "--cpu",
        action="store_true",
        help="run the CPU server, python -m bookrec.cpu_server (transformers + torch), "
        "instead of SGLang",
    )
    mode.add_argument(
        "--gpus",
        type=_gpu_list,
        metavar="I,J,...",
        help=(
            "one SGLang worker per listed GPU (CUDA_VISIBLE_DEVICES=i, port worker-base-port+i, "
            "bound to 127.0.0.1) behind the smg gateway on --host:--port"
        ),
    )
    mode.add_argument(
        "--workers-per-gpu",
        type=_positive_int,
        metavar="N",
        default=1,
        help=(
            "SGLang workers per GPU, behind the gateway, each with 1/N of --mem-fraction-static "
            f"(default {DEFAULT_SHARED_MEM_FRACTION} shared when N > 1); pays for short inputs, "
            "where one worker is bound by tokenization and scheduling (default 1)"
        ),
    )
    mode.add_argument(
        "--worker-base-port",
        type=_port,
        metavar="N",
        default=DEFAULT_WORKER_BASE_PORT,
        help=(
            "with the gateway, worker j of GPU i listens on this port + i*N + j (N: "
            f"--workers-per-gpu; default {DEFAULT_WORKER_BASE_PORT})"
        ),
    )
    mode.add_argument(
        "--policy",
        choices=GATEWAY_POLICIES,
        default="round_robin",
        help="gateway load-balancing policy with --gpus (default round_robin)",
    )
    mode.add_argument(
        "--gateway-metrics-port",
        type=_port,
        metavar="N",
        default=DEFAULT_GATEWAY_METRICS_PORT,
        help=f"the gateway's Prometheus port, on --host (default {DEFAULT_GATEWAY_METRICS_PORT})",
    )

    rerank = parser.add_argument_group("reranker")
    rerank.add_argument(
        "--reranker",
        metavar="MODEL",
        help=(
            "also serve a Qwen3-Reranker at POST /v1/rerank on its own port: preset 0.6B, 4B or "
            "8B (Qwen/Qwen3-Reranker-*), or a hub id or local directory of that format; with "
            "--cpu the CPU server's reranker"
        ),
    )
    rerank.add_argument(
        "--reranker-port",
        type=_port,
        metavar="N",
        default=DEFAULT_RERANKER_PORT,
        help=f"the reranker's port, on --host (default {DEFAULT_RERANKER_PORT})",
    )
    rerank.add_argument(
        "--reranker-gpu",
        type=_gpu_index,
        metavar="I",
        help=(
            "the reranker's GPU (default: the first of --gpus, else GPU 0); on a GPU that "
            "embedding workers use too, all of them share --mem-fraction-static"
        ),
    )
    rerank.add_argument(
        "--reranker-mem-fraction-static",
        type=_fraction,
        metavar="F",
        help=(
            "the reranker's GPU memory fraction (default: an equal share when it shares the "
            "GPU, else SGLang's); the embedding workers there share the rest"
        ),
    )
    rerank.add_argument(
        "--reranker-revision", metavar="REV", help="Hugging Face revision of the reranker"
    )
    rerank.add_argument(
        "--reranker-chat-template",
        metavar="FILE",
        type=Path,
        default=RERANKER_TEMPLATE,
        help=(
            "Jinja template (*.jinja) of the reranker prompt (default: qwen3_reranker.jinja "
            "beside this script, the model card's format)"
        ),
    )

    run = parser.add_argument_group("run")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the exact command line(s), shell-quoted, and exit",
    )
    run.add_argument(
        "--no-wait",
        action="store_true",
        help="do not wait for readiness (with --gpus the workers are still awaited "
        "before the gateway starts)",
    )
    run.add_argument(
        "--wait-timeout",
        type=float,
        default=DEFAULT_WAIT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for readiness (default {DEFAULT_WAIT_TIMEOUT:.0f}; a first run "
        "downloads the weights)",
    )
    return parser


@dataclasses.dataclass(frozen=True)
class Options:
    """Parsed command line plus what follows `--`."""

    args: argparse.Namespace
    passthrough: tuple[str, ...]
    api_key: str | None
    model: str
    matryoshka: dict[str, object] | None
    notes: tuple[str, ...]
    #: A `--config FILE` given after `--`: with a key, its text goes into our own config file.
    user_config: str | None = None
    #: The Qwen3-Reranker to serve beside the embedding model (`--reranker`), or None.
    reranker: str | None = None


def resolve_model(name: str) -> tuple[str, tuple[int, ...] | None]:
    """Map a preset name or a preset's hub id to (model path, Matryoshka widths)."""
    for preset, (hub_id, dims) in PRESETS.items():
        if name.lower() in (preset.lower(), hub_id.lower()):
            return hub_id if name.lower() == preset.lower() else name, dims
    return name, None


def resolve_reranker(name: str) -> str:
    """Map a reranker preset name (any case) to its hub id; anything else is a model path."""
    for preset, hub_id in RERANKER_PRESETS.items():
        if name.lower() == preset.lower():
            return hub_id
    return name


def api_key_from(args: argparse.Namespace, environ: dict[str, str]) -> str | None:
    if args.api_key:
        return str(args.api_key)
    for var in API_KEY_ENV_VARS:
        if environ.get(var):
            return environ[var]
    return None


def take_api_key(words: list[str]) -> tuple[list[str], str | None]:
    """`words` without any `--api-key KEY` / `--api-key=KEY`, and the (last) key found."""
    kept: list[str] = []
    key: str | None = None
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--api-key" and i + 1 < len(words):
            key = words[i + 1]
            i += 2
            continue
        if word.startswith("--api-key="):
            key = word.split("=", 1)[1]
        else:
            kept.append(word)
        i += 1
    return kept, key


def worker_slots(args: argparse.Namespace) -> list[tuple[int, int, int]]:
    """(GPU, worker index on it, port) of each SGLang worker behind the gateway; [] without."""
    gpus = args.gpus if args.gpus is not None else [0]
    per_gpu = args.workers_per_gpu
    if args.cpu or len(gpus) * per_gpu == 1:
        return []
    return [
        (gpu, j, args.worker_base_port + gpu * per_gpu + j) for gpu in gpus for j in range(per_gpu)
    ]


def reranker_gpu(args: argparse.Namespace) -> int:
    """The GPU the reranker runs on: --reranker-gpu, else the first embedding GPU."""
    if args.reranker_gpu is not None:
        return int(args.reranker_gpu)
    return (args.gpus or [0])[0]


def memory_shares(args: argparse.Namespace) -> tuple[dict[int, str | None], str | None]:
    """Each embedding GPU's --mem-fraction-static per worker, and the reranker's.

    None leaves the flag to --mem-fraction-static (or SGLang's default). Servers that share a
    GPU split --mem-fraction-static (default DEFAULT_SHARED_MEM_FRACTION) between them: the
    reranker takes --reranker-mem-fraction-static when given, the embedding workers the rest.
    """
    rerank_gpu = reranker_gpu(args) if args.reranker else None
    fixed = args.reranker_mem_fraction_static
    rerank_share = str(fixed) if fixed else None
    shares: dict[int, str | None] = {}
    for gpu in args.gpus if args.gpus is not None else [0]:
        sharing = gpu == rerank_gpu
        servers = args.workers_per_gpu + (1 if sharing else 0)
        if servers == 1:
            shares[gpu] = None
            continue
        whole = args.mem_fraction_static or DEFAULT_SHARED_MEM_FRACTION
        if sharing and fixed:
            shares[gpu] = mem_share(whole - fixed, args.workers_per_gpu)
        else:
            shares[gpu] = mem_share(whole, servers)
            if sharing:
                rerank_share = shares[gpu]
    return shares, rerank_share


def parse_options(argv: Sequence[str], environ: dict[str, str]) -> Options:
    argv = list(argv)
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1 :]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cpu and args.gpus is not None:
        parser.error("--cpu and --gpus exclude each other")
    if args.cpu and args.workers_per_gpu > 1:
        parser.error("--cpu and --workers-per-gpu exclude each other")
    if args.wait_timeout <= 0:
        parser.error("--wait-timeout must be positive")
    if args.reranker is not None:
        if not args.reranker.strip():
            parser.error("--reranker needs a preset (0.6B, 4B, 8B) or a model path")
        if args.reranker_chat_template.suffix != ".jinja" and not args.cpu:
            # SGLang reads any other file as a JSON conversation template.
            parser.error(
                f"--reranker-chat-template {args.reranker_chat_template}: SGLang loads a Jinja "
                "template only from a file named *.jinja"
            )
    else:
        given = [
            flag
            for flag, value, default in (
                ("--reranker-port", args.reranker_port, DEFAULT_RERANKER_PORT),
                ("--reranker-gpu", args.reranker_gpu, None),
                ("--reranker-mem-fraction-static", args.reranker_mem_fraction_static, None),
                ("--reranker-revision", args.reranker_revision, None),
                ("--reranker-chat-template", args.reranker_chat_template, RERANKER_TEMPLATE),
            )
            if value != default
        ]
        if given:
            parser.error(f"{', '.join(given)} need(s) --reranker")
    # A key given after `--` is lifted out of the pass-through words: it then travels like
    # any other key, never on a command line.
    passthrough, passed_key = take_api_key(passthrough)
    if passed_key and args.api_key and passed_key != args.api_key:
        parser.error("two different API keys: --api-key and --api-key after `--`")
    if passed_key and not args.api_key:
        args.api_key = passed_key
    slots = worker_slots(args)
    if slots:
        ports = [port for _, _, port in slots]
        if max(ports) > 65535:
            parser.error(f"worker ports {ports} do not fit: lower --worker-base-port")
        if args.port in ports:
            parser.error(f"--port {args.port} collides with a worker port ({ports})")
        if args.gateway_metrics_port in [*ports, args.port]:
            parser.error(f"--gateway-metrics-port {args.gateway_metrics_port} is taken")
    if args.reranker is not None:
        taken = [args.port, *(port for _, _, port in slots)]
        if slots:
            taken.append(args.gateway_metrics_port)
        if args.reranker_port in taken:
            parser.error(f"--reranker-port {args.reranker_port} is taken by another server")
        fixed = args.reranker_mem_fraction_static
        whole = args.mem_fraction_static or DEFAULT_SHARED_MEM_FRACTION
        shares_gpu = reranker_gpu(args) in (args.gpus if args.gpus is not None else [0])
        if fixed and shares_gpu and fixed >= whole:
            parser.error(
                f"--reranker-mem-fraction-static {fixed} leaves nothing of the {whole} that the "
                f"embedding workers on GPU {reranker_gpu(args)} share with it "
                "(lower it, or raise --mem-fraction-static)"
            )

    model, preset_dims = resolve_model(args.model)
    notes: list[str] = []
    matryoshka: dict[str, object] | None = None
    if args.dimensions_list:
        matryoshka = {"matryoshka_dimensions": args.dimensions_list}
    elif args.any_dimension:
        matryoshka = {"is_matryoshka": True}
    elif args.no_matryoshka:
        matryoshka = None
    elif preset_dims is not None:
        matryoshka = {"matryoshka_dimensions": list(preset_dims)}
    elif not args.cpu:
        notes.append(
            f"{model} is not a preset, so `dimensions` requests will be refused (400); "
            "pass --dimensions-list or --any-dimension if the model supports Matryoshka widths"
        )
    overridden = any(arg.startswith("--json-model-override-args") for arg in passthrough)
    if overridden and not args.cpu:
        if matryoshka is not None:
            notes.append(
                "--json-model-override-args given after `--` replaces the Matryoshka override "
                "this script would add"
            )
        matryoshka = None

    if args.cpu:
        ignored = [
            flag
            for flag, value in (
                ("--mem-fraction-static", args.mem_fraction_static),
                ("--enable-metrics", args.enable_metrics),
            )
            if value
        ]
        if args.reranker is not None:
            ignored += [
                flag
                for flag, value in (
                    ("--reranker-gpu", args.reranker_gpu is not None),
                    ("--reranker-mem-fraction-static", args.reranker_mem_fraction_static),
                    ("--reranker-chat-template", args.reranker_chat_template != RERANKER_TEMPLATE),
                )
                if value
            ]
        if ignored:
            notes.append(f"{', '.join(ignored)} apply to SGLang only; ignored with --cpu")

    if not args.cpu:
        total = args.mem_fraction_static or DEFAULT_SHARED_MEM_FRACTION
        shares, rerank_share = memory_shares(args)
        rerank_gpu = reranker_gpu(args) if args.reranker else None
        if args.workers_per_gpu > 1:
            others = [share for gpu, share in shares.items() if gpu != rerank_gpu]
            if others:
                notes.append(
                    f"{args.workers_per_gpu} workers per GPU: each gets --mem-fraction-static "
                    f"{others[0]} ({total} of the GPU shared)"
                )
        if rerank_gpu in shares:
            workers = args.workers_per_gpu
            notes.append(
                f"the reranker shares GPU {rerank_gpu} with {workers} embedding server(s): "
                f"--mem-fraction-static {rerank_share} for the reranker, {shares[rerank_gpu]} "
                f"for each embedding server ({total} of the GPU shared)"
            )

    api_key = api_key_from(args, environ)
    weak = weak_key_problem(api_key) if api_key and not is_loopback(args.host) else None
    if weak:
        parser.error(
            f"refusing to listen on {args.host} with {weak}; set BOOKREC_API_KEY (or "
            "--api-key) to a long random key, e.g. `openssl rand -hex 24`, or listen on "
            "127.0.0.1, where any key is accepted"
        )
    if not api_key and not is_loopback(args.host):
        notes.append(
            f"warning: listening on {args.host} without an API key: anyone who can reach port "
            f"{args.port} can use the service; set BOOKREC_API_KEY (or --api-key)"
        )
    user_config = None
    if api_key and not args.cpu and "--config" in passthrough:
        # SGLang takes one --config: the user's text is copied into ours, before the key.
        cut = passthrough.index("--config")
        if cut + 1 < len(passthrough):
            user_config = passthrough[cut + 1]
            del passthrough[cut : cut + 2]
    reranker = resolve_reranker(args.reranker) if args.reranker is not None else None
    return Options(
        args,
        tuple(passthrough),
        api_key,
        model,
        matryoshka,
        tuple(notes),
        user_config,
        reranker,
    )


def mem_share(total: float, workers: int) -> str:
    """Each worker's --mem-fraction-static when `workers` share `total` of one GPU."""
    return f"{total / workers:.3f}".rstrip("0")


def weak_key_problem(api_key: str) -> str | None:
    """Why `api_key` is unfit off loopback (a documented placeholder, too short), or None."""
    if api_key.strip() in PLACEHOLDER_API_KEYS or api_key.strip().startswith("replace-with-"):
        return "the placeholder API key of deploy/embedding.env.example (anyone can read it)"
    if len(api_key) < MIN_API_KEY_LENGTH:
        return (
            f"an API key of {len(api_key)} characters (off loopback at least "
            f"{MIN_API_KEY_LENGTH}, so that it cannot be guessed)"
        )
    return None


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connect_host(host: str) -> str:
    """An address a local client can use to reach a server listening on `host`."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def base_url(host: str, port: int) -> str:
    host = connect_host(host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


# --------------------------------------------------------------------------- commands


@dataclasses.dataclass(frozen=True)
class Process:
    """One process the launcher starts: its command, extra environment and probe."""

    name: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    url: str = ""
    ready_paths: tuple[str, ...] = ("/ready", "/health_generate")
    secret: str | None = None

    def display(self) -> str:
        """The command as one shell line, with the API key masked (after `--` too)."""
        words = [f"{key}={shlex.quote(self._mask(value))}" for key, value in self.env]
        previous = ""
        for arg in self.argv:
            if previous == "--api-key":
                shown = MASKED
            elif arg.startswith("--api-key="):
                shown = "--api-key=" + MASKED
            else:
                shown = self._mask(arg)
            words.append(shlex.quote(shown))
            previous = arg
        return " ".join(words)

    def _mask(self, text: str) -> str:
        return MASKED if self.secret and text == self.secret else text


def hub_offline_env(model: str, environ: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """HUB_OFFLINE_ENV for a CPU server of `model` when it needs no Hub: a local directory, or
    a Hub that cannot be reached. Nothing when the user set either variable (their choice)."""
    if any(name in environ for name, _ in HUB_OFFLINE_ENV):
        return ()
    if Path(model).expanduser().is_dir():
        return HUB_OFFLINE_ENV
    endpoint = environ.get("HF_ENDPOINT") or "https://huggingface.co"
    problem = _unreachable(endpoint)
    if problem is None:
        return ()
    say(
        f"the Hugging Face Hub ({endpoint}) cannot be reached ({problem}): the CPU server "
        f"runs with HF_HUB_OFFLINE=1, so {model} loads from the Hugging Face cache or fails "
        "at once"
    )
    return HUB_OFFLINE_ENV


@functools.lru_cache(maxsize=8)
def _unreachable(url: str) -> str | None:
    """Why a TCP connection to `url`'s host cannot be made (within a few seconds), or None."""
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        return str(exc)
    if not host:
        return f"no host in {url!r}"
    try:
        with socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def sglang_command() -> tuple[list[str], bool]:
    """How to run SGLang here, and whether it is installed at all."""
    exe = shutil.which("sglang")
    if exe:
        return ["sglang", "serve"], True
    if importlib.util.find_spec("sglang") is not None:
        # Older images lack the `sglang` console script; the module entry point takes the
        # same flags (it only prints a deprecation notice).
        return [sys.executable, "-m", "sglang.launch_server"], True
    return ["sglang", "serve"], False


_PIP_EXEC_LINE = "'''exec' "


def script_interpreter(path: str) -> list[str] | None:
    """The Python command a script file names in its `#!` line, or None for anything else.

    pip writes `#!/path/python`, or for long paths `#!/bin/sh` and then an exec line.
    """
    try:
        with Path(path).open("rb") as script:
            head = script.read(1024).decode("utf-8", "replace")
    except OSError:
        return None
    if not head.startswith("#!"):
        return None
    lines = head[2:].splitlines()
    words = shlex.split(lines[0]) if lines else []
    if any(Path(word).name.startswith("python") for word in words):
        return words
    for line in lines[1:3]:
        if line.startswith(_PIP_EXEC_LINE):
            exec_words = shlex.split(line[len(_PIP_EXEC_LINE) :])
            if exec_words and Path(exec_words[0]).name.startswith("python"):
                return exec_words[:1]
    return None


def sglang_config_text(api_key: str, user_config: str | None) -> str:
    """The YAML SGLang reads with --config: the user's own file (if any), then the key.

    A JSON string is a YAML double-quoted scalar, so any key is written safely; `api-key` is
    the flag's own name, which every version of SGLang's ConfigArgumentMerger accepts.
    """
    text = Path(user_config).read_text() if user_config else ""
    if text and not text.endswith("\n"):
        text += "\n"
    return text + f"api-key: {json.dumps(api_key)}\n"


def sglang_args(
    opts: Options, host: str, port: int, secrets_dir: Path, mem_fraction: str | None = None
) -> list[str]:
    args = opts.args
    argv = [
        "--model-path",
        opts.model,
        "--is-embedding",
        "--host",
        host,
        "--port",
        str(port),
        "--disable-radix-cache",
        "--chunked-prefill-size",
        "-1",
    ]
    if args.revision:
        argv += ["--revision", args.revision]
    if args.served_model_name:
        argv += ["--served-model-name", args.served_model_name]
    if args.context_length:
        argv += ["--context-length", str(args.context_length)]
    if mem_fraction:
        argv += ["--mem-fraction-static", mem_fraction]
    elif args.mem_fraction_static:
        argv += ["--mem-fraction-static", str(args.mem_fraction_static)]
    if args.max_prefill_tokens:
        argv += ["--max-prefill-tokens", str(args.max_prefill_tokens)]
    if opts.matryoshka is not None:
        argv += ["--json-model-override-args", json.dumps(opts.matryoshka, separators=(",", ":"))]
    if opts.api_key:
        # SGLang reads the key from a file: `ps` shows a command line to every local user.
        argv += ["--config", str(secrets_dir / SGLANG_CONFIG_NAME)]
    if args.enable_metrics:
        argv.append("--enable-metrics")
    return argv + list(opts.passthrough)


def reranker_process(opts: Options, secrets_dir: Path, mem_fraction: str | None) -> Process:
    """The Qwen3-Reranker server: SGLang in generation mode, prompted by our chat template (or
    with --cpu, the CPU server's reranker, which writes the model card's prompt itself)."""
    args = opts.args
    assert opts.reranker is not None
    url = base_url(args.host, args.reranker_port)
    if args.cpu:
        words = [sys.executable, "-m", CPU_SERVER_MODULE, "--reranker", "--model", opts.reranker]
        words += ["--host", args.host, "--port", str(args.reranker_port)]
        if args.reranker_revision:
            words += ["--revision", args.reranker_revision]
        # The key travels in the environment, as for the CPU embedding server.
        key = (("BOOKREC_API_KEY", opts.api_key),) if opts.api_key else ()
        env = (*key, *hub_offline_env(opts.reranker, os.environ))
        return Process(RERANKER_NAME, tuple(words), env, url, secret=opts.api_key)
    argv = [
        "--model-path",
        opts.reranker,
        # No --is-embedding: SGLang scores a Qwen3 reranker on its next-token logits, which
        # it refuses in embedding mode.
        "--host",
        args.host,
        "--port",
        str(args.reranker_port),
        "--disable-radix-cache",
        "--chat-template",
        str(Path(args.reranker_chat_template).resolve()),
    ]
    if args.reranker_revision:
        argv += ["--revision", args.reranker_revision]
    if mem_fraction:
        argv += ["--mem-fraction-static", mem_fraction]
    if opts.api_key:
        # Its own key file: a user's --config after `--` is meant for the embedding server.
        argv += ["--config", str(secrets_dir / RERANKER_CONFIG_NAME)]
    if args.enable_metrics:
        argv.append("--enable-metrics")
    env: tuple[tuple[str, str], ...] = ()
    if args.gpus is not None or args.reranker_gpu is not None:
        env = (("CUDA_VISIBLE_DEVICES", str(reranker_gpu(args))),)
    launcher, _ = sglang_command()
    return Process(RERANKER_NAME, (*launcher, *argv), env, url, secret=opts.api_key)


def gateway_process(opts: Options, workers: list[Process]) -> Process:
    args = opts.args
    words = ["launch", "--worker-urls", *(w.url for w in workers)]
    words += ["--policy", args.policy, "--host", args.host, "--port", str(args.port)]
    words += ["--prometheus-host", args.host, "--prometheus-port", str(args.gateway_metrics_port)]
    if args.served_model_name:
        # The workers report the served name and the gateway routes by it: without the alias
        # it answers 404 for the model path, which SGLang itself accepts.
        words += ["--model-alias", f"{opts.model}={args.served_model_name}"]
    url = base_url(args.host, args.port)
    ready = ("/readiness", "/health")
    if not opts.api_key:
        return Process("gateway", ("smg", *words), url=url, ready_paths=ready)
    # The key goes in the gateway's environment; GATEWAY_BOOTSTRAP hands it to smg in-process.
    smg = shutil.which("smg")
    python = (script_interpreter(smg) if smg else None) or ["python3"]
    return Process(
        "gateway",
        (*python, "-c", GATEWAY_BOOTSTRAP, smg or "smg", *words),
        (("BOOKREC_API_KEY", opts.api_key),),
        url=url,
        ready_paths=ready,
        secret=opts.api_key,
    )


def plan(opts: Options, secrets_dir: Path) -> list[Process]:
    """The processes to start, in start order; SGLang's key file goes in `secrets_dir`."""
    args = opts.args
    url = base_url(args.host, args.port)
    if args.cpu:
        argv = [
            sys.executable,
            "-m",
            CPU_SERVER_MODULE,
            "--model",
            opts.model,
            "--host",
            args.host,
            "--port",
            str(args.port),
        ]
        if args.revision:
            argv += ["--revision", args.revision]
        if args.served_model_name:
            argv += ["--served-model-name", args.served_model_name]
        if args.context_length:
            argv += ["--context-length", str(args.context_length)]
        if args.max_prefill_tokens:
            argv += ["--max-batch-tokens", str(args.max_prefill_tokens)]
        if opts.matryoshka and "matryoshka_dimensions" in opts.matryoshka:
            dims = opts.matryoshka["matryoshka_dimensions"]
            assert isinstance(dims, list)
            argv += ["--matryoshka-dimensions", ",".join(str(d) for d in dims)]
        elif args.no_matryoshka:
            argv.append("--no-matryoshka")
        argv += opts.passthrough
        # The key travels in the environment, not on the command line (where `ps` shows it).
        key = (("BOOKREC_API_KEY", opts.api_key),) if opts.api_key else ()
        env = (*key, *hub_offline_env(opts.model, os.environ))
        rerank = [reranker_process(opts, secrets_dir, None)] if opts.reranker else []
        return [Process("cpu server", tuple(argv), env, url, secret=opts.api_key), *rerank]

    launcher, _ = sglang_command()
    slots = worker_slots(args)
    shares, rerank_share = memory_shares(args)
    # The reranker starts with the embedding servers (they load together), before a gateway.
    rerank = [reranker_process(opts, secrets_dir, rerank_share)] if opts.reranker else []
    if not slots:
        gpus = args.gpus
        env = (("CUDA_VISIBLE_DEVICES", str(gpus[0])),) if gpus else ()
        share = shares[(gpus or [0])[0]]
        argv = launcher + sglang_args(opts, args.host, args.port, secrets_dir, share)
        return [Process("sglang", tuple(argv), env, url, secret=opts.api_key), *rerank]

    per_gpu = args.workers_per_gpu
    workers = []
    for gpu, index, port in slots:
        argv = launcher + sglang_args(opts, "127.0.0.1", port, secrets_dir, shares[gpu])
        name = f"worker on GPU {gpu}" if per_gpu == 1 else f"worker {index} on GPU {gpu}"
        workers.append(
            Process(
                name,
                tuple(argv),
                (("CUDA_VISIBLE_DEVICES", str(gpu)),),
                base_url("127.0.0.1", port),
                secret=opts.api_key,
            )
        )
    return [*workers, *rerank, gateway_process(opts, workers)]


def front_processes(processes: list[Process]) -> list[Process]:
    """The processes clients talk to: the embedding service (the last one but the reranker)
    and the reranker."""
    embedding = [p for p in processes if p.name != RERANKER_NAME][-1]
    return [embedding, *(p for p in processes if p.name == RERANKER_NAME)]


# --------------------------------------------------------------------------- preflight


def visible_gpus() -> int | None:
    """Number of NVIDIA GPUs visible, or None when that cannot be told."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "-L"], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return 0
        if out.returncode != 0:
            return 0
        return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
    devices = list(Path("/dev").glob("nvidia[0-9]*"))
    return len(devices) if devices else 0


def port_problem(host: str, port: int) -> str | None:
    """Why (host, port) cannot be listened on, or None when it is free."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"cannot resolve host {host!r}: {exc}"
    family, socktype, proto, _, address = infos[0]
    with socket.socket(family, socktype, proto) as sock:
        # Servers set SO_REUSEADDR too, so only a live listener makes this bind fail.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == 98 or "in use" in str(exc).lower():
                return f"port {port} on {host} is already in use (another server running?)"
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing
        return False


def preflight(opts: Options) -> list[str]:
    """Everything that would make the launch fail, as messages for the user."""
    args = opts.args
    problems: list[str] = []
    if args.cpu:
        if not _importable(CPU_SERVER_MODULE):
            problems.append(f"bookrec is not installed for {sys.executable}: {install_cpu_hint()}")
        missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
        if missing:
            problems.append(
                f"{' and '.join(missing)} not installed for {sys.executable}: {install_cpu_hint()}"
            )
    else:
        _, installed = sglang_command()
        if not installed:
            problems.append(f"SGLang is not installed (no `sglang` command): {INSTALL_SGLANG_HINT}")
        count = visible_gpus()
        if count == 0:
            problems.append(
                "no NVIDIA GPU is visible (nvidia-smi finds none): run on a GPU host, or start "
                "the CPU server with --cpu"
            )
        elif count is not None and args.gpus:
            absent = [gpu for gpu in args.gpus if gpu >= count]
            if absent:
                problems.append(f"--gpus lists {absent} but only {count} GPU(s) are visible")
        if count and opts.reranker and reranker_gpu(args) >= count:
            problems.append(
                f"the reranker's GPU {reranker_gpu(args)} is not visible (only {count} GPU(s))"
            )
        if opts.reranker and not Path(args.reranker_chat_template).is_file():
            problems.append(
                f"the reranker's chat template {args.reranker_chat_template} is missing: it is "
                "shipped beside launch_server.py (copy scripts/qwen3_reranker.jinja with it)"
            )
        slots = worker_slots(args)
        smg = shutil.which("smg")
        if slots and smg is None:
            problems.append(
                f"{len(slots)} workers need the `smg` gateway command: {INSTALL_SMG_HINT}"
            )
        elif slots and opts.api_key and script_interpreter(smg or "") is None:
            problems.append(
                f"{smg} is not smg's Python entry point, and a standalone smg takes its API key "
                "only on its command line, where every local user can read it: "
                f"{INSTALL_SMG_HINT}"
            )
        if opts.user_config and not Path(opts.user_config).is_file():
            problems.append(f"--config {opts.user_config}: no such file")
    endpoints = [(args.host, args.port)]
    if opts.reranker:
        endpoints.append((args.host, args.reranker_port))
    if not args.cpu:
        endpoints += [("127.0.0.1", port) for _, _, port in worker_slots(args)]
        if worker_slots(args):
            endpoints.append((args.host, args.gateway_metrics_port))
    for host, port in endpoints:
        problem = port_problem(host, port)
        if problem:
            problems.append(problem)
    return problems


# --------------------------------------------------------------------------- running


def say(message: str) -> None:
    print(f"[launch_server] {message}", file=sys.stderr, flush=True)


def _die_with_parent() -> None:
    """In the child: receive SIGTERM if the launcher itself is killed (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Supervisor:
    """Starts processes, waits for readiness, and stops them all on a signal or a death."""

    def __init__(self) -> None:
        self.children: list[tuple[Process, subprocess.Popen[bytes]]] = []
        self.stop_requested = threading.Event()
        self.signal_count = 0

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: object) -> None:
            self.signal_count += 1
            if self.signal_count == 1:
                say(f"received {signal.Signals(signum).name}: stopping the service")
            self.stop_requested.set()

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, handler)

    def start(self, process: Process) -> None:
        env = dict(os.environ)
        env.update(process.env)
        say(f"starting {process.name}: {process.display()}")
        popen = subprocess.Popen(
            list(process.argv),
            env=env,
            # A session of its own: the launcher decides when children stop, and a stop
            # signal reaches every process the child spawned (SGLang runs several).
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        self.children.append((process, popen))

    def dead_child(self) -> tuple[Process, int] | None:
        for process, popen in self.children:
            code = popen.poll()
            if code is not None:
                return process, code
        return None

    def wait_ready(self, process: Process, timeout: float) -> None:
        """Poll the process's readiness paths until one answers 200.

        The first path is preferred; a 404 there (an older server) moves on to the next one.
        """
        paths = list(process.ready_paths)
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        last_report = started
        say(f"waiting for {process.name} at {process.url}{paths[0]} (up to {timeout:.0f} s)")
        while True:
            if self.stop_requested.is_set():
                raise LaunchError("stopped while waiting for readiness")
            dead = self.dead_child()
            if dead:
                name, code = dead[0].name, dead[1]
                raise LaunchError(f"{name} exited with status {code} before it was ready")
            status = probe(process.url + paths[0])
            if status == 200:
                return
            if status == 404 and len(paths) > 1:
                say(f"{paths[0]} is not served here; polling {paths[1]} instead")
                paths.pop(0)
                continue
            now = time.monotonic()
            if now >= deadline:
                raise LaunchError(
                    f"{process.name} was not ready after {timeout:.0f} s "
                    "(raise --wait-timeout for a first download of large weights)"
                )
            if now - last_report >= 30:
                say(f"still waiting for {process.name} ({now - started:.0f} s)")
                last_report = now
            self.stop_requested.wait(0.5)

    def supervise(self) -> int:
        """Block until a stop is asked for or a child dies; return the exit status."""
        while not self.stop_requested.wait(0.5):
            dead = self.dead_child()
            if dead:
                process, code = dead
                say(f"{process.name} exited with status {code}; stopping the others")
                self.stop_all()
                return exit_status(code) or 1
        self.stop_all()
        return 0

    def stop_all(self) -> None:
        """Stop the gateway (the last process, when there are several) first, then the rest."""
        running = list(reversed(self.children))
        for group in (running[:1], running[1:]):
            for process, popen in group:
                if popen.poll() is None:
                    say(f"stopping {process.name} (pid {popen.pid})")
                    _signal_group(popen, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            for process, popen in group:
                try:
                    popen.wait(timeout=max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    say(f"{process.name} did not stop in {STOP_GRACE_SECONDS:.0f} s: killing it")
                    _signal_group(popen, signal.SIGKILL)
                    popen.wait()
        # Helpers a child left behind in its process group go too.
        for _, popen in self.children:
            _signal_group(popen, signal.SIGKILL)


def _signal_group(popen: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(popen.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def exit_status(code: int) -> int:
    return 128 - code if code < 0 else code


def probe(url: str) -> int | None:
    """HTTP status of GET url, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def ready_message(opts: Options, processes: list[Process]) -> str:
    args = opts.args
    url = base_url(args.host, args.port)
    name = args.served_model_name or opts.model
    auth = ' -H "Authorization: Bearer $BOOKREC_API_KEY"' if opts.api_key else ""
    body = json.dumps(
        {
            "model": name,
            "input": [f"Instruct: {DEFAULT_INSTRUCTION}\nQuery:a cozy mystery set in a bookshop"],
        }
    )
    workers = len([p for p in processes if p.name != RERANKER_NAME]) - 1
    kind = "CPU server" if args.cpu else "SGLang"
    if workers:
        kind = f"{workers} SGLang workers behind the gateway"
    lines = [
        f"Embedding service ready: {url}/v1 (model {opts.model}, {kind})",
        f"  export BOOKREC_BASE_URL={url}/v1",
        f"  curl -s {url}/v1/embeddings -H 'Content-Type: application/json'{auth} -d '{body}'",
    ]
    if opts.reranker:
        rerank_url = base_url(args.host, args.reranker_port)
        rerank_body = json.dumps(
            {
                "query": "a cozy mystery set in a bookshop",
                "documents": [
                    "A retired bookseller solves a murder among the shelves of her shop.",
                    "A field guide to the birds of the Atlantic coast.",
                ],
                "instruct": RERANKER_EXAMPLE_INSTRUCTION,
            }
        )
        lines += [
            f"Reranker ready: {rerank_url}/v1/rerank (model {opts.reranker}, "
            f"{'CPU server' if args.cpu else 'SGLang'})",
            f"  export BOOKREC_RERANK_BASE_URL={rerank_url}/v1",
            f"  curl -s {rerank_url}/v1/rerank -H 'Content-Type: application/json'{auth} "
            f"-d '{rerank_body}'",
        ]
    if not is_loopback(args.host):
        lines.append(f"  (listening on {args.host}: other machines use this host's address)")
    return "\n".join(lines)


class SecretFiles:
    """A private directory (0700) holding SGLang's key files (0600), removed when done with."""

    def __init__(self, opts: Options) -> None:
        self.dir: Path | None = None
        if opts.api_key and not opts.args.cpu:
            self.dir = Path(tempfile.mkdtemp(prefix=SECRETS_DIR_PREFIX))
            fd = os.open(self.dir / SGLANG_CONFIG_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as config:
                config.write(sglang_config_text(opts.api_key, opts.user_config))
            if opts.reranker:
                path = self.dir / RERANKER_CONFIG_NAME
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as config:
                    config.write(sglang_config_text(opts.api_key, None))

    @property
    def path(self) -> Path:
        return self.dir or Path(tempfile.gettempdir()) / SECRETS_DIR_PLACEHOLDER

    def remove(self) -> None:
        """Once SGLang has read its arguments, the file is no longer needed."""
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


def remove_when_ready(
    processes: list[Process], secrets: SecretFiles, stop: threading.Event, timeout: float
) -> None:
    """Remove the key files once every one of `processes` answers a readiness path (quietly)."""
    deadline = time.monotonic() + timeout
    waiting = list(processes)
    while not stop.is_set() and time.monotonic() < deadline:
        waiting = [
            process
            for process in waiting
            if not any(probe(process.url + path) == 200 for path in process.ready_paths)
        ]
        if not waiting:
            secrets.remove()
            return
        stop.wait(1.0)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_options(sys.argv[1:] if argv is None else argv, dict(os.environ))
    for note in opts.notes:
        say(note)

    if opts.args.dry_run:
        placeholder = Path(tempfile.gettempdir()) / SECRETS_DIR_PLACEHOLDER
        processes = plan(opts, placeholder)
        if opts.api_key and not opts.args.cpu:
            files = str(placeholder / SGLANG_CONFIG_NAME)
            if opts.reranker:
                files += f" and the reranker's {placeholder / RERANKER_CONFIG_NAME}"
            say(
                f"the API key goes in {files} (a new private directory, mode 0600), removed "
                "once SGLang is ready; no command line holds it"
            )
        problems = preflight(opts)
        for problem in problems:
            say(f"note: a real launch would fail here: {problem}")
        for process in processes:
            if len(processes) > 1:
                print(f"# {process.name}")
            print(process.display())
        return 0

    problems = preflight(opts)
    if problems:
        for problem in problems:
            say(f"error: {problem}")
        return 1

    secrets = SecretFiles(opts)
    try:
        return run(opts, plan(opts, secrets.path), secrets)
    finally:
        secrets.remove()


def run(opts: Options, processes: list[Process], secrets: SecretFiles) -> int:
    supervisor = Supervisor()
    supervisor.install_signal_handlers()
    fronts = front_processes(processes)
    reranking = any(process.name == RERANKER_NAME for process in processes)
    try:
        for process in processes:
            if process.name == "gateway":
                # The gateway checks its workers when it starts: they must be up first (the
                # reranker, which it does not route to, may still be loading).
                for worker, _ in supervisor.children:
                    if worker.name != RERANKER_NAME:
                        supervisor.wait_ready(worker, opts.args.wait_timeout)
                if not reranking:
                    secrets.remove()
            supervisor.start(process)
        if opts.args.no_wait:
            say("started; not waiting for readiness (--no-wait)")
            if secrets.dir is not None:
                # The key files still go once SGLang is ready (it has read its arguments).
                threading.Thread(
                    target=remove_when_ready,
                    args=(fronts, secrets, supervisor.stop_requested),
                    kwargs={"timeout": opts.args.wait_timeout},
                    daemon=True,
                ).start()
        else:
            for front in fronts:
                supervisor.wait_ready(front, opts.args.wait_timeout)
            secrets.remove()
            print(ready_message(opts, processes), flush=True)
    except LaunchError as exc:
        stopped = supervisor.stop_requested.is_set()
        if not stopped:
            say(f"error: {exc}")
        supervisor.stop_all()
        return 0 if stopped else 1
    return supervisor.supervise()


if __name__ == "__main__":
    sys.exit(main())
