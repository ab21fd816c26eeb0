"""The persistent SQLite cache: hits cost nothing, keys separate everything, bad files refuse."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from bookrec.client import (
    AsyncEmbeddingClient,
    CacheError,
    EmbeddingCache,
    IncompatibleModelError,
    ModelIdentity,
)
from bookrec.client._cache import cache_key
from bookrec.client.testing import FakeSGLang, fake_vector
from tests.client.conftest import MakeClient, config_for

TEXTS = ["Dune", "Emma", "Ulysses"]


def test_a_warm_cache_makes_no_request(
    fake_server: FakeSGLang, make_client: MakeClient, tmp_path: Path
) -> None:
    path = str(tmp_path / "cache.sqlite")
    first = make_client(config_for(fake_server, cache_path=path))
    cold = first.embed_documents(TEXTS)
    first.close()
    assert fake_server.embedding_request_count == 1

    second = make_client(config_for(fake_server, cache_path=path))
    assert second.identity == ModelIdentity("Qwen/Qwen3-Embedding-0.6B", 64)  # from the cache
    warm = second.embed_documents(TEXTS)

    assert fake_server.embedding_request_count == 1
    np.testing.assert_array_equal(warm, cold)


def test_only_misses_are_requested(
    fake_server: FakeSGLang, make_client: MakeClient, tmp_path: Path
) -> None:
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        client = make_client(config_for(fake_server), cache=cache)
        client.embed_documents(["Dune", "Emma"])
        vectors = client.embed_documents(["Emma", "Beloved", "Dune"])
    assert fake_server.embedded_texts == ["Dune", "Emma", "Beloved"]
    np.testing.assert_allclose(vectors[1], fake_vector("Beloved", 64), atol=1e-6)


def test_role_and_instruction_are_part_of_the_key(
    fake_server: FakeSGLang, make_client: MakeClient, tmp_path: Path
) -> None:
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        client = make_client(config_for(fake_server), cache=cache)
        client.embed_documents(["Dune"])
        client.embed_queries(["Dune"])
        client.embed_queries(["Dune"], "Find similar books")
        client.embed_queries(["Dune"], "Find similar books")
    assert fake_server.embedding_request_count == 3


def test_dimensions_are_part_of_the_key(make_client: MakeClient, tmp_path: Path) -> None:
    path = str(tmp_path / "c.sqlite")
    with FakeSGLang(dim=128, matryoshka=True) as server:
        make_client(config_for(server, cache_path=path, dimensions=64)).embed_documents(["Dune"])
        vectors = make_client(config_for(server, cache_path=path, dimensions=32)).embed_documents(
            ["Dune"]
        )
        assert server.embedding_request_count == 2
    assert vectors.shape == (1, 32)


def test_the_key_covers_every_field() -> None:
    base = (ModelIdentity("m", 64), "document", "", "text")
    variants = [
        (ModelIdentity("m2", 64), "document", "", "text"),
        (ModelIdentity("m", 32), "document", "", "text"),
        (ModelIdentity("m", 64), "query", "", "text"),
        (ModelIdentity("m", 64), "document", "i", "text"),
        (ModelIdentity("m", 64), "document", "", "text2"),
        (ModelIdentity("m", 64), "document", "t", "ext"),  # no ambiguity at field borders
    ]
    keys = {cache_key(*base)} | {cache_key(*v) for v in variants}
    assert len(keys) == 1 + len(variants)


def test_a_cache_from_another_model_is_refused_on_first_contact(
    make_client: MakeClient, tmp_path: Path
) -> None:
    path = str(tmp_path / "c.sqlite")
    with FakeSGLang(dim=64) as server:
        make_client(config_for(server, cache_path=path)).embed_documents(["Dune"])
        server.set_model("Qwen/Qwen3-Embedding-4B")  # same URL, another model now
        client = make_client(config_for(server, cache_path=path))
        with pytest.raises(IncompatibleModelError, match="cache"):
            client.embed_documents(["Emma"])


def test_a_non_database_file_is_a_cache_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not vectors\n" * 100)
    with pytest.raises(CacheError, match="not a usable bookrec embedding cache"):
        EmbeddingCache(path)


def test_another_applications_database_is_a_cache_error(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE vectors (key BLOB, vector BLOB)")
    with pytest.raises(CacheError, match="another application"):
        EmbeddingCache(path)


def test_an_empty_file_becomes_a_cache(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite"
    path.touch()
    with EmbeddingCache(path) as cache:
        assert len(cache) == 0


def test_corrupt_rows_raise_instead_of_returning_wrong_vectors(
    fake_server: FakeSGLang, make_client: MakeClient, tmp_path: Path
) -> None:
    path = tmp_path / "c.sqlite"
    make_client(config_for(fake_server, cache_path=str(path))).embed_documents(TEXTS)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE vectors SET vector = substr(vector, 1, 100)")

    client = make_client(config_for(fake_server, cache_path=str(path)))
    with pytest.raises(CacheError, match="corrupt"):
        client.embed_documents(TEXTS)


def test_a_row_with_wrong_values_is_refused(tmp_path: Path) -> None:
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        key = cache_key(ModelIdentity("m", 4), "document", "", "x")
        cache.put_many([(key, np.array([3.0, 0.0, 0.0, 0.0], dtype=np.float32))])
        with pytest.raises(CacheError, match="corrupt vector"):
            cache.get_many([key], 4)


def test_the_file_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    EmbeddingCache(path).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_several_processes_share_one_cache(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    writer = textwrap.dedent(
        """
        import sys
        import numpy as np
        from bookrec.client._cache import EmbeddingCache, cache_key
        from bookrec.client import ModelIdentity
        who = sys.argv[2]
        identity = ModelIdentity("m", 8)
        with EmbeddingCache(sys.argv[1]) as cache:
            for i in range(40):
                vec = np.ones(8, dtype=np.float32) / np.sqrt(8, dtype=np.float32)
                cache.put_many([(cache_key(identity, "document", "", f"{who}-{i}"), vec)])
        """
    )
    root = Path(__file__).resolve().parents[2]
    procs = [
        subprocess.Popen([sys.executable, "-c", writer, str(path), name], cwd=root)
        for name in ("a", "b", "c")
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    with EmbeddingCache(path) as cache:
        assert len(cache) == 120
        keys = [
            cache_key(ModelIdentity("m", 8), "document", "", f"{w}-{i}")
            for w in "abc"
            for i in range(40)
        ]
        assert len(cache.get_many(keys, 8)) == 120


class LoopWatchingCache(EmbeddingCache):
    """An :class:`EmbeddingCache` that notes, per access, whether an event loop was running in
    the calling thread (that is: whether the access blocked the loop)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.accesses: list[tuple[str, bool]] = []

    def _note(self, name: str) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.accesses.append((name, False))
        else:
            self.accesses.append((name, True))

    def get_identity(self, alias: str) -> ModelIdentity | None:
        self._note("get_identity")
        return super().get_identity(alias)

    def put_identity(self, alias: str, identity: ModelIdentity) -> None:
        self._note("put_identity")
        super().put_identity(alias, identity)

    def get_many(self, keys: Sequence[bytes], dimensions: int) -> dict[bytes, NDArray[np.float32]]:
        self._note("get_many")
        return super().get_many(keys, dimensions)

    def put_many(self, items: Iterable[tuple[bytes, NDArray[np.float32]]]) -> None:
        self._note("put_many")
        super().put_many(items)


async def test_the_async_client_never_touches_sqlite_on_its_event_loop(
    fake_server: FakeSGLang, tmp_path: Path
) -> None:
    with LoopWatchingCache(tmp_path / "c.sqlite") as cache:
        async with AsyncEmbeddingClient(config_for(fake_server), cache=cache) as cold:
            await cold.embed_documents(TEXTS)  # identity unknown: stored with the vectors
            await cold.embed_queries(["Dune"])  # looked up, then stored
        async with AsyncEmbeddingClient(config_for(fake_server), cache=cache) as warm:
            assert await warm.probe() == ModelIdentity("Qwen/Qwen3-Embedding-0.6B", 64)
            await warm.embed_documents(TEXTS)  # every vector from the cache
    assert fake_server.embedding_request_count == 2
    assert {name for name, _ in cache.accesses} == {
        "get_identity",
        "put_identity",
        "get_many",
        "put_many",
    }
    assert [name for name, on_loop in cache.accesses if on_loop] == []


async def test_on_its_loop_the_async_client_reads_the_cached_identity_in_its_first_call(
    fake_server: FakeSGLang, tmp_path: Path
) -> None:
    path = str(tmp_path / "c.sqlite")
    async with AsyncEmbeddingClient(config_for(fake_server, cache_path=path)) as first:
        await first.embed_documents(TEXTS)
    async with AsyncEmbeddingClient(config_for(fake_server, cache_path=path)) as second:
        assert second.identity is None  # not read on the loop
        await second.embed_documents(TEXTS)
        assert second.identity == ModelIdentity("Qwen/Qwen3-Embedding-0.6B", 64)
    assert fake_server.embedding_request_count == 1
