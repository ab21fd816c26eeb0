"""Fixtures for the service tests: ``bookrec serve`` started as a process on 127.0.0.1.

A catalog of 30 books is indexed once per session (``bookrec index``, on a fake SGLang);
each service gets a copy of that index, its own fake embedding server (vectors are the same
deterministic function of the text on every fake of the same width) and a free port. The
client is httpx; every response it receives is checked never to carry a traceback.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bookrec.client.testing import FakeSGLang
from tests.recommender.conftest import make_books, write_jsonl

REPO = Path(__file__).resolve().parents[2]
DIM = 32
BOOKS = 30

try:  # the PostgreSQL fixtures, where the postgres extra is installed
    from tests.pg.conftest import pg_dsn, pg_server  # noqa: F401
except (ImportError, pytest.skip.Exception):
    pass


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOOKREC_", "PROMETHEUS_"))}
    env.update(PYTHONPATH=str(REPO), BOOKREC_MAX_ATTEMPTS="1", BOOKREC_TIMEOUT="5")
    env.update(extra)
    return env


def bookrec(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bookrec.recommender.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(catalog file, index directory), indexed once per session."""
    root = tmp_path_factory.mktemp("books")
    catalog = write_jsonl(root / "books.jsonl", [b.to_dict() for b in make_books(BOOKS)])
    index = root / "index"
    with FakeSGLang(dim=DIM) as fake:
        done = bookrec(
            "index", "--catalog", str(catalog), "--index", str(index), "--no-progress",
            env=clean_env(BOOKREC_BASE_URL=fake.base_url),
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return catalog, index


def _no_traceback(response: httpx.Response) -> None:
    response.read()
    assert "Traceback" not in response.text, response.text
    assert 'File "' not in response.text, response.text


class Service:
    """One ``bookrec serve`` process; ``http`` is an httpx client on its URL."""

    def __init__(self, proc: subprocess.Popen[str], url: str, line: str, log: Path) -> None:
        self.proc, self.url, self.line, self.log = proc, url, line, log
        self.http = self.client()

    def client(self, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("timeout", 30.0)
        return httpx.Client(base_url=self.url, event_hooks={"response": [_no_traceback]}, **kwargs)

    def terminate(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.http.close()

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


def _read_lines(stream: Any, lines: queue.Queue[str]) -> None:
    with stream:
        for line in stream:
            lines.put(line)
    lines.put("")


@pytest.fixture(scope="session")
def start_service(
    built: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Service]]:
    """``start_service(*options, embedding=FakeSGLang | None, env={}, store=None)``: a started
    service over a fresh copy of the session's index (or over ``store``)."""
    started: list[Service] = []
    catalog, index = built

    def start(
        *options: str,
        embedding: FakeSGLang | None = None,
        env: dict[str, str] | None = None,
        store: str | None = None,
    ) -> Service:
        root = tmp_path_factory.mktemp("serve")
        where = ["--store", store] if store else ["--index", str(root / "index")]
        if not store:
            shutil.copytree(index, root / "index")
        base_url = embedding.base_url if embedding else "http://127.0.0.1:9/v1"
        log = root / "serve.log"
        command = [
            sys.executable, "-m", "bookrec.recommender.cli", "serve",
            "--catalog", str(catalog), *where, "--port", "0", *options,
        ]  # fmt: skip
        with log.open("w") as err:
            proc = subprocess.Popen(
                command,
                env=clean_env(BOOKREC_BASE_URL=base_url, **(env or {})),
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
        try:
            line = lines.get(timeout=60)
        except queue.Empty:
            line = ""
        match = re.search(r"listening on (http://\S+)", line)
        if match is None:
            proc.kill()
            proc.wait()
            raise AssertionError(f"no ready line: {line!r}\n{log.read_text()}")
        service = Service(proc, match.group(1), line, log)
        started.append(service)
        return service

    yield start
    for service in started:
        if service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait()
        service.http.close()


@pytest.fixture(scope="session")
def embedding() -> Iterator[FakeSGLang]:
    """The shared service's fake embedding server."""
    with FakeSGLang(dim=DIM) as fake:
        yield fake


@pytest.fixture(scope="session")
def service(start_service: Callable[..., Service], embedding: FakeSGLang) -> Service:
    """One service for the tests that only read, or write books of their own."""
    return start_service(embedding=embedding)
