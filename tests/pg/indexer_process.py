"""One indexer process for the PostgreSQL indexing tests (run with ``python -m``).

Arguments: DSN, the fake server's base URL, the number of books (``make_books``), the chunk
size. It prints ``READY`` once imported and connected, waits for a line on stdin, runs
``build_pg_index`` and prints the report as JSON.
"""

from __future__ import annotations

import json
import sys
import time

from bookrec.client import ClientConfig, EmbeddingClient, Endpoint, RetryPolicy
from bookrec.recommender import Catalog
from bookrec.recommender.pgstore.indexing import build_pg_index
from tests.recommender.conftest import make_books


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> int:
    dsn, base_url, n, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    config = ClientConfig(
        endpoints=(Endpoint(base_url),),
        batch_size=chunk,
        max_concurrency=1,
        retry=RetryPolicy(max_attempts=1, initial_wait=0.0, max_wait=0.0),
        timeout=30.0,
    )
    catalog = Catalog(make_books(n))
    with EmbeddingClient(config) as client:
        _say("READY")
        sys.stdin.readline()
        started = time.time()
        report = build_pg_index(dsn, catalog, client, chunk_size=chunk)
    _say(json.dumps({"embedded": report.embedded, "reused": report.reused,
                     "resumed": report.resumed, "seconds": report.seconds,
                     "started": started, "finished": time.time()}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
