#!/usr/bin/env python3
"""Benchmark bookrec's embedding client against the fake SGLang server.

Two measurements:

1. Throughput against a server with a fixed cost per request (default 20 ms + 0.05 ms per
   text, a sleep in the fake server): (a) one request per text, in sequence, with the plain
   openai SDK, as a naive tutorial does (timed on a sample of the texts to keep the run
   short); (b) ``bookrec.client.EmbeddingClient.embed_documents`` on all texts (batches by count and
   token budget, several in flight). Prints texts/s for both and the ratio (target >= 30x).
2. Client CPU time per 1024-d vector against a server that answers at once with base64
   (target <= 50 us), default client configuration. The server runs in a separate process so
   its CPU is not counted; the figure is this process's CPU time (all threads, user + system)
   for ``embed_documents`` divided by the number of vectors, the median of a few runs. On a
   busy machine the figure rises (cache and scheduler contention): compare on an idle one.

Usage: python scripts/bench_client.py [--texts 10000] [--naive-sample 300]
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import openai

from bookrec.client import ClientConfig, EmbeddingClient, Endpoint
from bookrec.client.testing import FakeSGLang

MODEL = "Qwen/Qwen3-Embedding-0.6B"


def book_texts(n: int, seed: int = 7) -> list[str]:
    """``n`` distinct book-like descriptions of 150-300 words, the same on every run."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "re", "sun", "tor", "vel", "an", "is", "ow", "ber", "dra"]
    vocabulary = [
        "".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(3000)
    ]
    common = ["the", "a", "of", "and", "in", "to", "her", "his", "novel", "story", "life"]
    texts = []
    for i in range(n):
        words = [
            rng.choice(common) if rng.random() < 0.35 else rng.choice(vocabulary)
            for _ in range(rng.randint(150, 300))
        ]
        texts.append(f"Book {i}. " + " ".join(words).capitalize() + ".")
    return texts


@contextmanager
def server_process(dim: int) -> Iterator[str]:
    """The fake server in its own process; yields its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bookrec.client.testing", "--port", "0", "--dim", str(dim)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "PORT":
            raise RuntimeError(f"the fake server did not start: {line!r}")
        yield f"http://127.0.0.1:{line[1]}/v1"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the server exits when its stdin closes
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def naive(base_url: str, texts: list[str]) -> float:
    """Seconds for one ``embeddings.create`` per text, in sequence (SDK defaults)."""
    sdk = openai.OpenAI(base_url=base_url, api_key="EMPTY")
    try:
        start = time.perf_counter()
        for text in texts:
            sdk.embeddings.create(input=text, model=MODEL)
        return time.perf_counter() - start
    finally:
        sdk.close()


def bookrec(base_url: str, texts: list[str], **options: object) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of this process, width) for ``embed_documents(texts)``."""
    config = ClientConfig(endpoints=(Endpoint(base_url),), model=MODEL).with_options(**options)
    with EmbeddingClient(config) as client:
        client.embed_documents(["warm-up: connection and imports"])
        cpu, wall = time.process_time(), time.perf_counter()
        vectors = client.embed_documents(texts)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert vectors.shape[0] == len(texts)
    return wall, cpu, int(vectors.shape[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=10_000)
    parser.add_argument("--naive-sample", type=int, default=300)
    parser.add_argument("--request-ms", type=float, default=20.0)
    parser.add_argument("--item-ms", type=float, default=0.05)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--cpu-runs", type=int, default=3)
    args = parser.parse_args(argv)

    texts = book_texts(args.texts)
    words = [len(t.split()) for t in texts]
    sample = texts[: min(args.naive_sample, len(texts))]
    print(
        f"{len(texts)} texts, {min(words)}-{max(words)} words "
        f"(mean {sum(words) / len(words):.0f}); {args.dim}-d vectors; fake server cost "
        f"{args.request_ms:g} ms per request + {args.item_ms:g} ms per text"
    )

    with FakeSGLang(
        dim=args.dim,
        per_request_delay=args.request_ms / 1000,
        per_item_delay=args.item_ms / 1000,
    ) as server:
        naive_s = naive(server.base_url, sample)
        naive_rate = len(sample) / naive_s
        config = ClientConfig()
        wall, _, _ = bookrec(server.base_url, texts)
        rate = len(texts) / wall
        requests = server.embedding_request_count - len(sample) - 1

    with server_process(args.dim) as url:
        runs = [bookrec(url, texts) for _ in range(args.cpu_runs)]
        _, cpu_float, _ = bookrec(url, texts, encoding_format="float")
    width = runs[0][2]
    per_vector = sorted(cpu / len(texts) * 1e6 for _, cpu, _ in runs)
    per_vector_b64 = statistics.median(per_vector)
    per_vector_float = cpu_float / len(texts) * 1e6

    rows = [
        ("(a) plain openai SDK, 1 text/request, sequential", f"{naive_rate:,.0f}", "1x",
         f"timed on the first {len(sample)} texts"),
        ("(b) bookrec EmbeddingClient", f"{rate:,.0f}", f"{rate / naive_rate:,.0f}x",
         f"all {len(texts)} texts, {requests} requests, batch_size={config.batch_size}, "
         f"max_batch_tokens={config.max_batch_tokens}, max_concurrency={config.max_concurrency}"),
    ]  # fmt: skip
    print()
    print(f"{'throughput':<50} {'texts/s':>9} {'ratio':>7}  note")
    print("-" * 110)
    for name, value, ratio, note in rows:
        print(f"{name:<50} {value:>9} {ratio:>7}  {note}")
    target = "met" if rate / naive_rate >= 30 else "NOT met"
    print(f"target >= 30x: {target}")
    print()
    print(f"{'client CPU per vector (server in another process)':<50} {'us/vector':>9}")
    print("-" * 110)
    print(
        f"{f'{width}-d, encoding_format=base64 (default)':<50} {per_vector_b64:>9.1f}  "
        f"median of {len(per_vector)} runs: {', '.join(f'{v:.1f}' for v in per_vector)}"
    )
    print(f"{f'{width}-d, encoding_format=float (reference)':<50} {per_vector_float:>9.1f}")
    print(f"target <= 50 us (base64): {'met' if per_vector_b64 <= 50 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
