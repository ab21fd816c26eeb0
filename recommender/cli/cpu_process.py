"""The CPU server as a child process of the demo, from finding a local model to stopping it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from bookrec import client

from .errors import EXIT_UNAVAILABLE, CliError

__all__ = ["CPU_MODEL_ID", "CpuServer", "LocalModel", "find_local_model", "sigterm_as_exit"]

CPU_SERVER_MODULE = "bookrec.cpu_server"
CPU_MODEL_ENV = "BOOKREC_CPU_MODEL"
#: Larger models are too slow on a CPU for a demo.
CPU_MODEL_ID = client.QWEN3_EMBEDDING_MODELS["0.6B"].hub_id
STOP_GRACE_SECONDS = 40.0


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
def sigterm_as_exit() -> Iterator[None]:
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
                    exit_code=EXIT_UNAVAILABLE,
                )
            now = time.monotonic()
            if now >= deadline:
                raise CliError(
                    f"the CPU server was not ready after {self.timeout:.0f} s; see {self.log_path}",
                    exit_code=EXIT_UNAVAILABLE,
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
