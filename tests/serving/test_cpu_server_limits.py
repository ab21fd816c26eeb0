"""The CPU server under load and abuse: concurrency, slow clients, size limits, timeouts,
malformed requests, hang-ups, all against real server processes."""

from __future__ import annotations

import asyncio
import json
import logging
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from bookrec.client import AsyncEmbeddingClient, ClientConfig, Endpoint, RetryPolicy
from tests.serving.conftest import (
    API_KEY,
    CONTEXT_LENGTH,
    CPU_SERVER_MODULE,
    Reference,
    RunningServer,
    clean_env,
    free_port,
    serving,
    wait_until,
)

# Timings, shown with `pytest -o log_cli=true --log-cli-level=INFO`.
report = logging.getLogger("tests.load")

# The limited server's settings: small enough that a test sees each limit within seconds.
MAX_BODY = 64 * 1024
HEADER_TIMEOUT = 1.5
BODY_TIMEOUT = 1.5
KEEP_ALIVE = 1
LIMIT_CONCURRENCY = 64
CHARS_PER_TOKEN = 8  # the default


@dataclass
class LimitedServer:
    process: subprocess.Popen[bytes]
    port: int
    stderr: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.stderr.read_text()


@pytest.fixture(scope="module")
def limited(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LimitedServer]:
    """``python -m bookrec.cpu_server`` on all interfaces, without a key, with small limits."""
    logs = tmp_path_factory.mktemp("cpu-server-limited")
    port = free_port()
    stderr = logs / "stderr.txt"
    argv = [
        sys.executable,
        "-m",
        CPU_SERVER_MODULE,
        "--model",
        str(tiny_model),
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        "--context-length",
        str(CONTEXT_LENGTH),
        "--threads",
        "1",
        "--max-body-bytes",
        str(MAX_BODY),
        "--header-timeout",
        str(HEADER_TIMEOUT),
        "--body-timeout",
        str(BODY_TIMEOUT),
        "--timeout-keep-alive",
        str(KEEP_ALIVE),
        "--limit-concurrency",
        str(LIMIT_CONCURRENCY),
    ]
    with stderr.open("wb") as err:
        process = subprocess.Popen(argv, env=clean_env(), stdout=subprocess.DEVNULL, stderr=err)
    server = LimitedServer(process, port, stderr)
    with serving(process, stderr, "the limited CPU server"):
        yield server


# --------------------------------------------------------------------------- raw HTTP


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_all(sock: socket.socket, within: float) -> bytes:
    """Everything the server sends until it closes the connection (or `within` runs out)."""
    deadline = time.monotonic() + within
    data = b""
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if not readable:
            break
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:  # closed with our bytes unread: a reset, not a FIN
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"the server kept the connection open for {within} s; got {data!r}")


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response
    return int(response.split(b" ", 2)[1])


def json_of(response: bytes) -> dict[str, object]:
    return dict(json.loads(response.split(b"\r\n\r\n", 1)[1]))


def post_head(path: str, *, length: int | None, key: str | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", "Content-Type: application/json"]
    if length is None:
        lines.append("Transfer-Encoding: chunked")
    else:
        lines.append(f"Content-Length: {length}")
    if key is not None:
        lines.append(f"Authorization: Bearer {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# --------------------------------------------------------------------------- load


def test_200_concurrent_requests_all_succeed(cpu_server: RunningServer) -> None:
    """ThreadingHTTPServer's listen backlog of 5 reset most of these connections."""
    n = 200

    async def run() -> list[int]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
        async with httpx.AsyncClient(
            headers=cpu_server.headers(), timeout=60, limits=limits
        ) as client:

            async def one(i: int) -> int:
                body = {"input": [f"book number {i}"], "encoding_format": "base64"}
                response = await client.post(f"{cpu_server.base_url}/embeddings", json=body)
                return response.status_code

            return await asyncio.gather(*(one(i) for i in range(n)))

    start = time.perf_counter()
    statuses = asyncio.run(run())
    elapsed = time.perf_counter() - start
    report.info(f"{n} concurrent requests: {elapsed:.2f} s")
    assert statuses == [200] * n
    assert elapsed < 60


def test_the_async_client_at_concurrency_64(
    cpu_server: RunningServer, reference: Reference
) -> None:
    texts = [f"a novel about lighthouse keepers, volume {i}" for i in range(256)]
    config = ClientConfig(
        endpoints=(Endpoint(cpu_server.base_url, api_key=API_KEY),),
        model="Qwen/Qwen3-Embedding-0.6B",
        max_input_tokens=100,
        batch_size=1,
        max_concurrency=64,
        retry=RetryPolicy(max_attempts=1),
    )

    async def run() -> np.ndarray:
        async with AsyncEmbeddingClient(config) as client:
            return await client.embed_documents(texts)

    start = time.perf_counter()
    vectors = asyncio.run(run())
    report.info(f"async client, 256 texts at concurrency 64: {time.perf_counter() - start:.2f} s")
    assert vectors.shape == (256, 64)
    np.testing.assert_allclose(vectors[:4], reference.embed(texts[:4]), atol=1e-5)
    np.testing.assert_allclose(vectors[-2:], reference.embed(texts[-2:]), atol=1e-5)


def test_50_slow_clients_do_not_block_a_normal_request(limited: LimitedServer) -> None:
    """25 clients send their headers a byte at a time, 25 their bodies; one normal request
    meanwhile is answered in well under 5 s."""
    head = b"GET /v1/models HTTP/1.1\r\nHost: test\r\nX-Padding: " + b"p" * 200
    body = b'{"input": "slow"}' + b" " * 200

    async def slow(i: int, stop: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", limited.port)
        data = head if i % 2 else post_head("/v1/embeddings", length=len(body)) + body
        try:
            for n, byte in enumerate(data):
                if stop.is_set() or reader.at_eof():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                # Headers go byte by byte from the start; bodies once the headers are in.
                if i % 2 or n >= len(data) - len(body):
                    await asyncio.sleep(0.05)
        except ConnectionError:
            pass  # the server cut it off: that is what its timeouts are for
        finally:
            writer.close()

    async def run() -> float:
        stop = asyncio.Event()
        slow_clients = [asyncio.create_task(slow(i, stop)) for i in range(50)]
        await asyncio.sleep(0.5)  # all 50 connected and trickling
        async with httpx.AsyncClient(timeout=10) as client:
            start = time.perf_counter()
            response = await client.post(
                f"{limited.url}/v1/embeddings", json={"input": ["a normal request"]}
            )
            elapsed = time.perf_counter() - start
        assert response.status_code == 200, response.text
        stop.set()
        await asyncio.gather(*slow_clients)
        return elapsed

    elapsed = asyncio.run(run())
    report.info(f"normal request beside 50 slow clients: {elapsed * 1000:.0f} ms")
    assert elapsed < 5.0


# --------------------------------------------------------------------------- timeouts


def test_headers_sent_slowly_are_cut_off(limited: LimitedServer) -> None:
    with connect(limited.port) as sock:
        start = time.monotonic()
        closed = False
        for byte in b"GET /ready HTTP/1.1\r\nHost: test\r\nX-Slow: " + b"s" * 100:
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable:
                closed = sock.recv(1024) == b""
                break
            try:
                sock.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        elapsed = time.monotonic() - start
    assert closed, "the server waited for the headers for more than 10 s"
    assert HEADER_TIMEOUT - 0.2 < elapsed < HEADER_TIMEOUT + 2.0


def test_a_body_sent_too_slowly_gets_408(limited: LimitedServer) -> None:
    with connect(limited.port) as sock:
        sock.sendall(post_head("/v1/embeddings", length=100) + b'{"input": ')
        start = time.monotonic()
        response = read_all(sock, within=BODY_TIMEOUT + 5)
        elapsed = time.monotonic() - start
    assert status_of(response) == 408
    assert json_of(response)["code"] == 408
    assert BODY_TIMEOUT - 0.2 < elapsed < BODY_TIMEOUT + 2.0


def test_an_idle_kept_alive_connection_is_closed(limited: LimitedServer) -> None:
    with connect(limited.port) as sock:
        sock.sendall(b"GET /ready HTTP/1.1\r\nHost: test\r\n\r\n")
        start = time.monotonic()
        response = read_all(sock, within=KEEP_ALIVE + 5)
        elapsed = time.monotonic() - start
    assert status_of(response) == 200
    assert KEEP_ALIVE - 0.2 < elapsed < KEEP_ALIVE + 2.0


def test_connections_beyond_the_limit_get_503(limited: LimitedServer) -> None:
    idle = [connect(limited.port) for _ in range(LIMIT_CONCURRENCY + 4)]
    try:
        for sock in idle:
            sock.sendall(b"GET /ready HTTP/1.1\r\n")  # headers never finished
        time.sleep(0.3)
        with connect(limited.port) as sock:
            sock.sendall(b"GET /ready HTTP/1.1\r\nHost: test\r\n\r\n")
            assert status_of(read_all(sock, within=5)) == 503
    finally:
        for sock in idle:
            sock.close()
    wait_until(
        lambda: httpx.get(f"{limited.url}/ready", timeout=5).status_code == 200,
        timeout=10,
        what="the server to take connections again",
    )


# --------------------------------------------------------------------------- size limits


def test_a_body_too_large_is_refused_before_it_is_read(limited: LimitedServer) -> None:
    with connect(limited.port) as sock:
        sock.sendall(post_head("/v1/embeddings", length=10 * MAX_BODY))
        start = time.monotonic()
        response = read_all(sock, within=5)
    assert time.monotonic() - start < 1.0  # not after the body timeout
    assert status_of(response) == 413
    assert b"connection: close" in response.lower()
    assert json_of(response)["type"] == "BadRequestError"


def test_a_streamed_body_is_cut_off_at_the_limit(limited: LimitedServer) -> None:
    chunk = b"[" * 4096
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    with connect(limited.port) as sock:
        sock.sendall(post_head("/v1/embeddings", length=None))
        while sent < 100 * MAX_BODY:
            readable, _, _ = select.select([sock], [], [], 0.01)
            if readable:
                break
            try:
                sock.sendall(framed)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        response = read_all(sock, within=5)
    assert status_of(response) == 413
    assert sent < 4 * MAX_BODY  # the server answered once the limit was crossed


@pytest.mark.parametrize("chunk", [100_000, 1000], ids=["at-once", "in-pieces"])
def test_headers_too_large_get_431(limited: LimitedServer, chunk: int) -> None:
    head = b"GET /ready HTTP/1.1\r\nHost: test\r\nX-Big: " + b"h" * 100_000 + b"\r\n\r\n"
    with connect(limited.port) as sock:
        try:
            for start in range(0, len(head), chunk):
                sock.sendall(head[start : start + chunk])
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = read_all(sock, within=5)
    assert status_of(response) == 431
    assert json_of(response)["code"] == 431


def test_headers_under_the_limit_with_a_body_in_the_same_read(limited: LimitedServer) -> None:
    """Only the bytes before the blank line count as headers."""
    body = json.dumps({"input": "ok", "user": "u" * 40_000}).encode()  # 40 KB, below MAX_BODY
    head = b"X-Pad: " + b"p" * 30_000 + b"\r\n"  # 30 KB of headers, below 64 KiB
    request = post_head("/v1/embeddings", length=len(body)).replace(
        b"\r\n\r\n", b"\r\n" + head + b"\r\n"
    )
    with connect(limited.port) as sock:
        sock.sendall(request + body)
        response = read_all(sock, within=KEEP_ALIVE + 10)
    assert status_of(response) == 200, response[:300]


def test_the_key_is_checked_before_the_body_is_read(cpu_server: RunningServer) -> None:
    """A declared body under the size limit is never waited for without the right key."""
    for key in (None, "wrong-key"):
        with connect(cpu_server.port) as sock:
            sock.sendall(post_head("/v1/embeddings", length=8 * 1024 * 1024, key=key))
            start = time.monotonic()
            response = read_all(sock, within=5)
        assert time.monotonic() - start < 1.0
        assert status_of(response) == 401
        assert json_of(response) == {"error": "Unauthorized"}


# --------------------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b'{"input": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"input": "\xff\xfe"}',
        b'{"input": "ok"',
        b"",
    ],
    ids=["nested-array", "nested-input", "not-utf8", "truncated", "empty"],
)
def test_malformed_json_gets_400(cpu_server: RunningServer, body: bytes) -> None:
    response = httpx.post(
        f"{cpu_server.base_url}/embeddings",
        content=body,
        headers={**cpu_server.headers(), "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "BadRequestError"
    assert "Invalid JSON body" in response.json()["message"]


def test_a_content_length_that_is_no_number_gets_400(cpu_server: RunningServer) -> None:
    with connect(cpu_server.port) as sock:
        head = post_head("/v1/embeddings", length=0, key=API_KEY)
        sock.sendall(head.replace(b"Content-Length: 0", b"Content-Length: abc") + b"{}")
        assert status_of(read_all(sock, within=5)) == 400


# --------------------------------------------------------------------------- inputs


def test_a_huge_input_costs_no_more_than_the_context(cpu_server: RunningServer) -> None:
    """5 MB of text is cut at 8 characters per token of context before it is tokenized."""
    start = time.perf_counter()
    response = cpu_server.post({"input": ["fine", "word " * 1_000_000]})
    elapsed = time.perf_counter() - start
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert "longer than the model's context length" in message
    tokens = int(message.split("(", 1)[1].split(" ", 1)[0])
    assert tokens <= CHARS_PER_TOKEN * CONTEXT_LENGTH + 1  # the head, not 1,000,000 words
    report.info(f"5 MB input refused in {elapsed * 1000:.0f} ms")
    # The server is as quick as before for everyone else.
    assert cpu_server.post({"input": "after the huge one"}).status_code == 200


def test_a_cut_input_whose_head_fits_is_refused_not_truncated(
    cpu_server: RunningServer, reference: Reference
) -> None:
    text = " bookseller" * 100  # 1,100 characters, about 100 tokens
    assert len(reference.token_ids(text)) < CONTEXT_LENGTH - 6
    response = cpu_server.post({"input": [text]})
    assert response.status_code == 400, response.text
    cap = CHARS_PER_TOKEN * CONTEXT_LENGTH
    assert f"longer than the server's cap of {cap} characters" in response.json()["message"]
    fits = " bookseller" * 90  # 990 characters: under the cap, served
    assert cpu_server.post({"input": [fits]}).status_code == 200


# --------------------------------------------------------------------------- hang-ups, start-up


def test_client_hang_ups_are_not_errors_in_the_log(limited: LimitedServer) -> None:
    full = b'{"input": ["hang up before the answer"]}'
    for data in (
        b"",
        b"GET /v1/mod",
        post_head("/v1/embeddings", length=1000) + b'{"input": ',
        post_head("/v1/embeddings", length=len(full)) + full,
        post_head("/v1/embeddings", length=None) + b'5\r\n{"inp\r\n',
    ):
        for _ in range(5):
            sock = connect(limited.port)
            sock.sendall(data)
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            sock.close()  # a reset, as a killed client leaves
    time.sleep(1.0)
    assert httpx.get(f"{limited.url}/ready", timeout=5).status_code == 200
    log = limited.log()
    assert "Traceback" not in log
    assert " ERROR " not in log


def test_warns_when_listening_beyond_loopback_without_a_key(limited: LimitedServer) -> None:
    assert (
        f"listening on 0.0.0.0 without an API key: anyone who can reach port {limited.port} "
        "can use the service; set BOOKREC_API_KEY (or --api-key)"
    ) in limited.log()


def test_the_byte_budget_makes_requests_wait_then_refuses() -> None:
    from bookrec.cpu_server.errors import RequestError
    from bookrec.cpu_server.server import ByteBudget

    async def run() -> None:
        budget = ByteBudget(100)
        async with budget.hold(60, patience=1):
            with pytest.raises(RequestError) as refused:
                async with budget.hold(60, patience=0.05):
                    pass
            assert refused.value.status == 503
            waiting = asyncio.create_task(_hold(budget, 60))
            await asyncio.sleep(0.05)
            assert not waiting.done()
        await asyncio.wait_for(waiting, 1)
        assert budget.used == 0

    async def _hold(budget: ByteBudget, size: int) -> None:
        async with budget.hold(size, patience=1):
            assert budget.used == size

    asyncio.run(run())


def test_sigterm_lets_the_request_in_flight_finish(tiny_model: Path, tmp_path: Path) -> None:
    """Requests wait 1.5 s for a batch here: SIGTERM arrives while one waits, it is answered,
    the port closes, the process exits 0."""
    port = free_port()
    stderr = tmp_path / "stderr.txt"
    argv = [sys.executable, "-m", CPU_SERVER_MODULE, "--model", str(tiny_model)]
    argv += ["--port", str(port), "--threads", "1", "--batch-wait-ms", "1500"]
    with stderr.open("wb") as err:
        process = subprocess.Popen(argv, env=clean_env(), stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_until(
            lambda: process.poll() is not None or "ready: " in stderr.read_text(), 90, "ready"
        )
        url = f"http://127.0.0.1:{port}/v1/embeddings"

        async def run() -> int:
            async with httpx.AsyncClient(timeout=20) as client:
                call = asyncio.create_task(client.post(url, json={"input": "in flight"}))
                await asyncio.sleep(0.5)
                process.send_signal(signal.SIGTERM)
                response = await call
                return response.status_code

        assert asyncio.run(run()) == 200
        assert process.wait(timeout=30) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Traceback" not in stderr.read_text()
