#!/usr/bin/env python3
"""Load test of the recommendation service (`bookrec serve`) over HTTP, as clients use it.

It writes a catalog of synthetic books (100k by default) and their index straight from random
vectors with the library (``VectorIndex.from_vectors(...).save``: no embedding over HTTP), starts
the fake SGLang server in its own process with a fixed cost per request (20 ms by default, a
sleep: what a GPU costs per call whatever the batch), then, for each mode, starts the real
service process (``bookrec serve --index DIR --catalog FILE``), with micro-batching of query
embeddings and then with ``--no-batching``, and drives it with N concurrent clients
(``httpx.AsyncClient``, one connection per client) for a fixed time per endpoint:

  healthz          GET  /healthz                            the baseline: no ranking at all
  similar          GET  /v1/books/{id}/similar?k=10        a random catalog book
  recommendations  POST /v1/recommendations                  3 random liked books
  search           GET  /v1/search?q=...&k=10               a text seen once (no cache hit)

Each client sends its next request as soon as the previous one is answered (closed loop; add
``--think-ms`` for a pause between them). The first ``--warmup`` seconds of every endpoint are
not counted. It prints requests per second, p50 and p99 latency (answered requests only) and
errors for every mode and endpoint, the embedding requests the service made for its searches
(from its /metrics), and the targets: similar p99 <= 50 ms at 100 clients, search throughput
with micro-batching >= 5x without.

All processes share this machine: the clients' CPU competes with the service's, and with
anything else running, so timings are noisy. Compare runs on an idle machine.

    python scripts/bench_service.py                        # 100k books, d = 256, 100 clients
    python scripts/bench_service.py --dim 1024 --workers 2
    python scripts/bench_service.py --books 20000 --duration 5 --clients 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from bookrec.client import QWEN3_EMBEDDING_MODELS, ModelIdentity
from bookrec.recommender import VectorIndex

# The model the fake server says it serves, and the index records.
MODEL = QWEN3_EMBEDDING_MODELS["0.6B"].hub_id
ENDPOINTS = ("healthz", "similar", "recommendations", "search")
MODES = ("batching", "no batching")
LANGUAGES = ("en", "en", "en", "fr", "de", "es", "zh")
TOPICS = (
    "dragons", "detectives", "gardens", "space travel", "rivers", "chess", "war", "cooking",
    "trains", "islands", "music", "ghosts", "mountains", "libraries", "the sea", "clocks",
)  # fmt: skip
WORDS = (
    "quiet", "lost", "bright", "northern", "secret", "last", "golden", "broken", "small",
    "winter", "silent", "red", "hidden", "long", "strange", "old", "wild", "glass", "paper",
)  # fmt: skip


# -- the data: a catalog and its index, written directly ---------------------------------


def write_catalog(n: int, path: Path, rng: random.Random) -> list[str]:
    """``n`` synthetic books as JSON lines (the fields a real catalog has); returns the ids."""
    ids = [f"b{i:06d}" for i in range(n)]
    with path.open("w", encoding="utf-8") as out:
        for i, book_id in enumerate(ids):
            topic, word = rng.choice(TOPICS), rng.choice(WORDS)
            record = {
                "id": book_id,
                "title": f"The {word.title()} {topic.title()} {i}",
                "authors": [f"Author {i % 5003}"],
                "summary": f"A {word} story about {topic}, the {i}th of its kind.",
                "tags": [topic, word],
                "language": LANGUAGES[i % len(LANGUAGES)],
                "year": 1850 + i % 175,
                "rating": round(2.5 + (i % 25) / 10, 1),
            }
            out.write(json.dumps(record) + "\n")
    return ids


def write_index(ids: list[str], dim: int, directory: Path, seed: int, scan: str) -> None:
    """Random unit vectors for ``ids``, saved as an index the fake server's model matches,
    with the scan copy ``scan`` asks for (``auto``: int8 from 100,000 books, as users get)."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((len(ids), dim), dtype=np.float32)
    VectorIndex.from_vectors(ids, vectors, ModelIdentity(MODEL, dim)).save(directory, scan=scan)


# -- processes: the fake embedding server and the service ---------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bookrec_command() -> list[str]:
    """The installed ``bookrec`` script of this interpreter's environment, else its module."""
    script = Path(sys.executable).with_name("bookrec")
    if script.exists():
        return [str(script)]
    found = shutil.which("bookrec")
    return [found] if found else [sys.executable, "-m", "bookrec.recommender.cli"]


@contextmanager
def fake_server(dim: int, cost_ms: float, serial: bool = False) -> Iterator[str]:
    """``FakeSGLang`` in its own process (its threads then take no GIL from the clients);
    ``serial``: it pays each request's cost one at a time, as a saturated GPU server does."""
    command = [sys.executable, "-m", "bookrec.client.testing", "--port", "0", "--dim", str(dim)]
    command += ["--model-path", MODEL, "--per-request-delay", str(cost_ms / 1000)]
    if serial:
        command.append("--serial")
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "PORT":
            raise RuntimeError(f"the fake server did not start: {line!r}")
        yield f"http://127.0.0.1:{line[1]}/v1"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # it exits when its stdin closes
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def service(
    args: argparse.Namespace, data: Path, base_url: str, *, batching: bool
) -> Iterator[str]:
    """``bookrec serve`` on a free port until the block ends; yields its root URL."""
    port = free_port()
    command = [*bookrec_command(), "serve", "--index", str(data / "index")]
    command += ["--catalog", str(data / "catalog.jsonl"), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(args.workers)]
    if not batching:
        command.append("--no-batching")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOKREC_")}
    env["BOOKREC_BASE_URL"] = base_url
    if args.blas_threads:
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(args.blas_threads)
    log = data / f"serve-{'batching' if batching else 'no-batching'}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + args.start_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"bookrec serve exited {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"bookrec serve not ready after {args.start_timeout} s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def metric(url: str, name: str) -> float | None:
    """The sum of a counter's samples on the service's /metrics (``None``: not exported)."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " ")
    ]
    return sum(values) if values else None


# -- the load ------------------------------------------------------------------------------


@dataclass
class Result:
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    error_examples: dict[str, str] = field(default_factory=dict)
    embedding_requests: float | None = None
    embedded_texts: float | None = None

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else float("nan")


EMBEDDING_METRICS = ("bookrec_embedding_requests_total", "bookrec_embedding_texts_total")
Send = Callable[[httpx.AsyncClient, random.Random], Awaitable[httpx.Response]]


def request_maker(endpoint: str, ids: list[str], k: int) -> Send:
    counter = iter(range(10**12))

    async def similar(client: httpx.AsyncClient, rng: random.Random) -> httpx.Response:
        return await client.get(f"/v1/books/{rng.choice(ids)}/similar", params={"k": k})

    async def recommendations(client: httpx.AsyncClient, rng: random.Random) -> httpx.Response:
        body = {"liked": rng.sample(ids, 3), "k": k}
        return await client.post("/v1/recommendations", json=body)

    async def search(client: httpx.AsyncClient, rng: random.Random) -> httpx.Response:
        # Every text is new, so no embedding cache answers it.
        text = f"{rng.choice(WORDS)} books about {rng.choice(TOPICS)} #{next(counter)}"
        return await client.get("/v1/search", params={"q": text, "k": k})

    async def healthz(client: httpx.AsyncClient, rng: random.Random) -> httpx.Response:
        return await client.get("/healthz")

    return {
        "healthz": healthz,
        "similar": similar,
        "recommendations": recommendations,
        "search": search,
    }[endpoint]


async def drive(url: str, send: Send, args: argparse.Namespace, seed: int) -> Result:
    """``args.clients`` closed-loop clients for warm-up + duration seconds.

    Each client has its own ``httpx.AsyncClient`` limited to one connection: one pool of 100
    connections costs the load generator about a core of its own in pool management (httpcore),
    which then competes with the service on a small machine.
    """
    result = Result()
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    timeout = httpx.Timeout(args.request_timeout)
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + args.warmup
    end = measure_from + args.duration

    async def client_loop(client: httpx.AsyncClient, rng: random.Random) -> None:
        while loop.time() < end:
            began = loop.time()
            try:
                response = await send(client, rng)
                outcome = "ok" if response.status_code == 200 else str(response.status_code)
                detail = "" if outcome == "ok" else response.text[:300]
            except httpx.HTTPError as exc:
                outcome, detail = type(exc).__name__, str(exc)[:300]
            finished = loop.time()
            # Counted: what is answered inside the measured window.
            if measure_from <= finished <= end:
                if outcome == "ok":
                    result.latencies.append(finished - began)
                else:
                    result.errors[outcome] = result.errors.get(outcome, 0) + 1
                    result.error_examples.setdefault(outcome, detail)
            if args.think_ms:
                await asyncio.sleep(args.think_ms / 1000)

    clients = [
        httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) for _ in range(args.clients)
    ]
    try:
        tasks = [
            asyncio.create_task(client_loop(client, random.Random(seed * 1000 + i)))
            for i, client in enumerate(clients)
        ]
        # Bounded in time: whatever is still in flight a request timeout after the end is cut.
        _, pending = await asyncio.wait(tasks, timeout=args.warmup + args.duration + 30)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    result.seconds = args.duration
    return result


async def preflight(url: str, ids: list[str], args: argparse.Namespace) -> dict[str, float]:
    """Seconds until each endpoint first answers 200 with results, before any load.

    A first query may build what later ones reuse (and answer 503 when that outlasts the
    service's request timeout); it is retried until ``--start-timeout``, and the time it took
    is reported, not counted in the measurements.
    """
    firsts: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=url, timeout=args.start_timeout) as client:
        for endpoint in ENDPOINTS:
            send = request_maker(endpoint, ids, args.k)
            started = time.perf_counter()
            while True:
                response = await send(client, random.Random(0))
                if response.status_code == 200 and (
                    endpoint == "healthz" or response.json().get("results")
                ):
                    break
                if response.status_code != 503 or (
                    time.perf_counter() - started > args.start_timeout
                ):
                    raise RuntimeError(f"{endpoint}: {response.status_code} {response.text[:1000]}")
            firsts[endpoint] = time.perf_counter() - started
    return firsts


def run_mode(
    args: argparse.Namespace, data: Path, base_url: str, ids: list[str], *, batching: bool
) -> dict[str, Result]:
    results: dict[str, Result] = {}
    with service(args, data, base_url, batching=batching) as url:
        firsts = asyncio.run(preflight(url, ids, args))
        print(
            f"  {'batching' if batching else 'no batching'}: first answer after "
            + ", ".join(f"{e} {t:.1f} s" for e, t in firsts.items()),
            flush=True,
        )
        for n, endpoint in enumerate(ENDPOINTS):
            before = [metric(url, m) for m in EMBEDDING_METRICS]
            send = request_maker(endpoint, ids, args.k)
            result = asyncio.run(drive(url, send, args, seed=args.seed + n))
            after = [metric(url, m) for m in EMBEDDING_METRICS]
            result.embedding_requests, result.embedded_texts = (
                a - b if a is not None and b is not None else None
                for a, b in zip(after, before, strict=True)
            )
            results[endpoint] = result
            print(
                f"  {'batching' if batching else 'no batching'} / {endpoint}: "
                f"{result.rate:,.0f} req/s",
                flush=True,
            )
    return results


# -- the report ----------------------------------------------------------------------------


def fmt_count(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def report(args: argparse.Namespace, results: dict[str, dict[str, Result]]) -> None:
    print()
    print(
        "| mode | endpoint | clients | answered | errors | req/s | p50 ms | p99 ms "
        "| embedding requests | texts embedded |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode in MODES:
        for endpoint in ENDPOINTS:
            r = results[mode][endpoint]
            errors = ", ".join(f"{k}: {v}" for k, v in sorted(r.errors.items())) or "0"
            print(
                f"| {mode} | {endpoint} | {args.clients} | {len(r.latencies):,} | {errors} "
                f"| {r.rate:,.0f} | {r.percentile(50):.1f} | {r.percentile(99):.1f} "
                f"| {fmt_count(r.embedding_requests)} | {fmt_count(r.embedded_texts)} |"
            )
    for mode in MODES:
        for endpoint in ENDPOINTS:
            for outcome, detail in results[mode][endpoint].error_examples.items():
                print(f"first {outcome} ({mode} / {endpoint}): {detail}")
    print()
    search_b, search_n = results["batching"]["search"], results["no batching"]["search"]
    if search_n.rate:
        ratio = search_b.rate / search_n.rate
        verdict = f"{ratio:.1f}x  (target >= 5x: {'met' if ratio >= 5 else 'NOT met'})"
    else:
        verdict = "n/a: no search answered without batching"
    print(
        f"search throughput, batching / no batching: {search_b.rate:,.0f} / "
        f"{search_n.rate:,.0f} req/s = {verdict}"
    )
    p99 = results["batching"]["similar"].percentile(99)
    at = f"at {args.clients} clients"
    if args.think_ms:
        at += f", {args.think_ms:g} ms think time"
    print(
        f"similar p99 (batching mode) {at}: {p99:.1f} ms  (target <= 50 ms at 100 clients: "
        f"{'met' if p99 <= 50 and args.clients >= 100 else 'NOT met'})"
    )
    base, similar = results["batching"]["healthz"], results["batching"]["similar"]
    share = similar.rate / base.rate if base.rate else float("nan")
    print(
        "baseline in the same run, GET /healthz (no ranking: the ceiling of this machine's HTTP "
        f"stack and load generator): {base.rate:,.0f} req/s, p99 {base.percentile(99):.1f} ms; "
        f"similar reaches {share:.2f}x its throughput"
    )
    load = os.getloadavg()
    print(
        f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on "
        f"{os.cpu_count()} CPUs (clients, service and fake server share them; other processes "
        "may too, so timings are noisy)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--books", type=int, default=100_000, help="catalog size (100000)")
    parser.add_argument("--dim", type=int, default=256, help="vector width (256; try 1024)")
    parser.add_argument("--clients", type=int, default=100, help="concurrent clients (100)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not counted (2)")
    parser.add_argument("--think-ms", type=float, default=0.0, help="pause between requests")
    parser.add_argument("--workers", type=int, default=1, help="bookrec serve --workers (1)")
    parser.add_argument("--request-cost-ms", type=float, default=20.0, help="fake server (20)")
    parser.add_argument(
        "--serial-embedding",
        action="store_true",
        help="the fake server pays request costs one at a time (a saturated GPU server)",
    )
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=0,
        help="OPENBLAS/OMP/MKL_NUM_THREADS for the service (default: unset, as users run it)",
    )
    parser.add_argument(
        "--scan",
        default="auto",
        help="the index's scan copy: auto (int8 from 100,000 books), none, int8, ... (auto)",
    )
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--request-timeout", type=float, default=30.0)
    parser.add_argument("--start-timeout", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", metavar="DIR", help="write the data and logs here, keep them")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.duration <= 0 or args.books < 10:
        parser.error("need --clients >= 1, --duration > 0 and --books >= 10")

    print(
        f"bookrec serve under load: {args.books:,} books, d = {args.dim}, {args.clients} "
        f"concurrent clients, {args.warmup:g} s warm-up + {args.duration:g} s per endpoint, "
        f"--workers {args.workers}, BLAS threads {args.blas_threads or 'unset'}, fake embedding "
        f"server {args.request_cost_ms:g} ms per "
        f"request (own process); {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        data = Path(args.keep) if args.keep else Path(tmp)
        data.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        ids = write_catalog(args.books, data / "catalog.jsonl", random.Random(args.seed))
        write_index(ids, args.dim, data / "index", args.seed, args.scan)
        print(f"data written in {time.perf_counter() - started:.1f} s ({data})", flush=True)
        with fake_server(args.dim, args.request_cost_ms, args.serial_embedding) as base_url:
            results = {
                mode: run_mode(args, data, base_url, ids, batching=mode == "batching")
                for mode in MODES
            }
    report(args, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
