"""A stand-in for `sglang serve` that reports what the launcher handed it.

Tests put it on PATH as `sglang` (see ``install``). It reads the API key from the ``--config``
YAML file the launch script writes, serves the fake SGLang server of ``bookrec.client.testing``
on ``--port`` with that key and ``--served-model-name``, and keeps ``$STANDIN_DIR/<port>.json``
up to date: its command line as /proc shows it to other users, the config file's text and
modes, how many embedding requests it answered, the Authorization headers they carried and
every path it was asked for. SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from bookrec.client.testing import FakeSGLang

DIM = 16


def install(bin_dir: Path) -> Path:
    """Write an executable `sglang` into `bin_dir` that runs this file."""
    path = bin_dir / "sglang"
    path.write_text(
        f"#!{sys.executable}\nimport runpy\nrunpy.run_path({str(Path(__file__))!r}, "
        'run_name="__main__")\n'
    )
    path.chmod(0o755)
    return path


def report(path: Path) -> dict[str, Any]:
    """A stand-in's latest report."""
    return dict(json.loads(path.read_text()))


def main() -> int:
    argv = sys.argv[1:]
    if argv[:1] == ["serve"]:
        argv = argv[1:]
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config")
    parser.add_argument("--served-model-name")
    args, _ = parser.parse_known_args(argv)

    facts: dict[str, Any] = {"config_text": None, "file_mode": None, "dir_mode": None}
    key = None
    if args.config:
        config = Path(args.config)
        facts["config_text"] = config.read_text()
        facts["file_mode"] = config.stat().st_mode & 0o777
        facts["dir_mode"] = config.parent.stat().st_mode & 0o777
        key = (yaml.safe_load(facts["config_text"]) or {}).get("api-key")

    server = FakeSGLang(
        model_path=args.model_path,
        dim=DIM,
        api_key=key,
        served_model_name=args.served_model_name,
        port=args.port,
    ).start()
    out = Path(os.environ["STANDIN_DIR"]) / f"{args.port}.json"
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def write() -> None:
        log = server.log
        embeddings = [r for r in log if r.method == "POST" and r.path == "/v1/embeddings"]
        data = {
            **facts,
            "pid": os.getpid(),
            "port": args.port,
            "cmdline": Path("/proc/self/cmdline").read_bytes().decode().split("\0"),
            "api_key_set": key is not None,
            "embeddings": len(embeddings),
            "authorizations": sorted({r.headers.get("authorization", "") for r in embeddings}),
            "paths": sorted({r.path.split("?")[0] for r in log}),
        }
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(out)

    while not stop.wait(0.05):
        write()
    write()
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
