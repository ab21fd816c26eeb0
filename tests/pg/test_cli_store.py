"""The command line on a PostgreSQL store: ``db migrate``, ``index --store``, then queries."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bookrec.client.testing import FakeSGLang
from bookrec.recommender.cli import main
from tests.recommender.conftest import make_books, write_jsonl

SECRET = "s3cret-Pa55"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def server() -> Iterator[FakeSGLang]:
    with FakeSGLang(dim=32) as srv:
        yield srv


@pytest.fixture
def dsn(pg_dsn: str) -> str:
    """The test database's DSN with a password in it (the server trusts 127.0.0.1 anyway)."""
    return pg_dsn.replace("postgres@", f"postgres:{SECRET}@", 1)


class Run:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: Any, base_url: str) -> None:
        self.monkeypatch, self.capsys, self.base_url = monkeypatch, capsys, base_url

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        with self.monkeypatch.context() as mp:
            mp.setenv("BOOKREC_BASE_URL", self.base_url)
            for key in ("BOOKREC_STORE", "BOOKREC_CATALOG", "BOOKREC_INDEX"):
                mp.delenv(key, raising=False)
            for key, value in (env or {}).items():
                mp.setenv(key, value)
            self.capsys.readouterr()
            out = io.StringIO()
            code = main(list(args), out=out)
            err = self.capsys.readouterr().err
        assert SECRET not in out.getvalue() and SECRET not in err
        return code, out.getvalue(), err

    def json(self, *args: str, env: dict[str, str] | None = None) -> Any:
        code, out, err = self(*args, "--json", env=env)
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: Any, server: FakeSGLang) -> Run:
    return Run(monkeypatch, capsys, server.base_url)


def _catalog(path: Path, n: int = 12) -> Path:
    return write_jsonl(path, [b.to_dict() for b in make_books(n)])


def test_index_then_similar_on_the_store(
    run: Run, dsn: str, tmp_path: Path, server: FakeSGLang
) -> None:
    catalog = str(_catalog(tmp_path / "books.jsonl"))
    migrated = run.json("db", "migrate", "--store", dsn)
    assert migrated["schema_version"] >= 1 and "***" in migrated["store"]
    first = run.json("index", "--catalog", catalog, "--store", dsn, "--no-progress")
    assert (first["books"], first["embedded"], first["unchanged"]) == (12, 12, False)
    assert "***" in first["store"]
    requests = server.embedding_request_count
    again = run.json("index", "--catalog", catalog, "--no-progress", env={"BOOKREC_STORE": dsn})
    assert again["unchanged"] and again["embedded"] == 0
    assert server.embedding_request_count == requests

    # The catalog comes from the database when --catalog is not given.
    similar = run.json("similar", "b003", "-k", "4", "--store", dsn)
    ids = [r["book"]["id"] if "book" in r else r["id"] for r in similar["results"]]
    assert len(ids) == 4 and "b003" not in ids
    code, table, _ = run("similar", "b003", "-k", "3", env={"BOOKREC_STORE": dsn})
    assert code == 0 and "More like" in table

    found = run.json("search", "topic", "3", "-k", "2", "--store", dsn, "--catalog", catalog)
    assert len(found["results"]) == 2
    liked = run.json("recommend", "--liked", "b001", "-k", "3", "--store", dsn)
    assert len(liked["results"]) == 3

    code, out, _ = run("index", "--catalog", catalog, "--store", dsn, "--no-progress")
    assert code == 0 and "postgres:***@" in out and "nothing changed" in out


def test_four_cli_indexers_embed_each_book_once(dsn: str, tmp_path: Path) -> None:
    catalog = _catalog(tmp_path / "books.jsonl", 40)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOKREC_")}
    env.update(BOOKREC_STORE=dsn, PYTHONPATH=str(REPO))
    with FakeSGLang(dim=32, per_request_delay=0.05) as server:
        env["BOOKREC_BASE_URL"] = server.base_url
        command = [sys.executable, "-m", "bookrec.recommender.cli", "index", "--json"]
        args = [*command, "--catalog", str(catalog), "--chunk-size", "4", "--no-progress"]
        procs = [
            subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(4)
        ]
        outputs = [proc.communicate(timeout=60) for proc in procs]
        seen = Counter(server.embedded_texts)
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        assert SECRET.encode() not in out + err
    reports = [json.loads(out) for out, _ in outputs]
    assert sum(r["embedded"] for r in reports) == 40
    assert len(seen) == 40 and set(seen.values()) == {1}


def test_store_errors_never_show_the_password(run: Run, dsn: str) -> None:
    base, _, _ = dsn.rpartition("/")
    code, _, err = run("similar", "b001", "--store", f"{base}/no_such_database")
    assert code != 0 and "bookrec: error:" in err and "Traceback" not in err
    code, _, err = run("similar", "b001", "--store", dsn)
    assert code == 2 and "bookrec db migrate" in err
    assert run("db", "migrate", "--store", dsn)[0] == 0
    code, _, err = run("similar", "b001", "--store", dsn)  # nothing indexed yet
    assert code == 2 and "bookrec index" in err and "postgres:***@" in err
    code, _, err = run("db", "migrate")
    assert code == 2 and "--store" in err


@pytest.mark.parametrize("where", ["index", "store"])
def test_put_then_delete_one_book_from_the_command_line(
    run: Run, dsn: str, tmp_path: Path, server: FakeSGLang, where: str
) -> None:
    """``bookrec put`` embeds and commits at once: another process's next query sees the book
    (a real ``bookrec similar`` process); ``bookrec delete`` removes it everywhere."""
    catalog = str(_catalog(tmp_path / "books.jsonl"))
    # A store keeps its catalog; an index directory is read with the catalog file it was built
    # from (plus the books put since).
    if where == "store":
        target = ["--store", dsn]
    else:
        target = ["--index", str(tmp_path / "index"), "--catalog", catalog]
    run.json("index", "--catalog", catalog, *target, "--no-progress")
    new = {"id": "fresh", "title": "A fresh book", "authors": ["New Author"], "summary": "New."}
    file = write_jsonl(tmp_path / "new.jsonl", [new])
    requests = server.embedding_request_count
    assert run.json("put", str(file), *target) == {
        "added": ["fresh"],
        "replaced": [],
    }
    assert server.embedding_request_count == requests + 1

    def similar_elsewhere(book_id: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "BOOKREC_BASE_URL": server.base_url}
        env.pop("BOOKREC_STORE", None)
        return subprocess.run(
            [sys.executable, "-m", "bookrec.recommender.cli", "similar", book_id, "-k", "12",
             "--json", *target],
            capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path,
        )  # fmt: skip

    found = similar_elsewhere("b001")
    assert found.returncode == 0, found.stderr
    assert "fresh" in [r["id"] for r in json.loads(found.stdout)["results"]]
    renamed = write_jsonl(tmp_path / "renamed.jsonl", [{**new, "title": "Renamed"}])
    assert run.json("put", str(renamed), *target)["replaced"] == ["fresh"]
    code, out, err = run("delete", "fresh", "nope", *target)
    assert code == 0 and "Deleted 1: fresh" in out and "nope" in err
    gone = similar_elsewhere("fresh")
    assert gone.returncode != 0 and "fresh" in gone.stderr and "Traceback" not in gone.stderr
    after = similar_elsewhere("b001")
    assert "fresh" not in [r["id"] for r in json.loads(after.stdout)["results"]]


def test_put_reports_a_bad_record_with_its_line(run: Run, dsn: str, tmp_path: Path) -> None:
    catalog = str(_catalog(tmp_path / "books.jsonl"))
    run.json("index", "--catalog", catalog, "--store", dsn, "--no-progress")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "ok", "title": "Fine"}\n{"id": "x", "title": 5}\n', encoding="utf-8")
    code, _, err = run("put", str(bad), "--store", dsn)
    assert code == 2 and "bad.jsonl:2" in err and "title" in err
    assert run.json("similar", "b001", "--store", dsn)["results"]
    code, _, err = run("similar", "ok", "--store", dsn)
    assert code != 0 and "ok" in err  # nothing of the bad file was written


def test_rebuild_switches_the_store_to_another_model(
    run: Run, dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    catalog = str(_catalog(tmp_path / "books.jsonl"))
    assert run.json("index", "--catalog", catalog, "--store", dsn, "--no-progress")["embedded"]
    with FakeSGLang(dim=16, model_path="other/model") as other:
        switched = Run(monkeypatch, capsys, other.base_url)
        # A book to embed makes a request, whose answer reveals the other model.
        catalog = str(_catalog(tmp_path / "more.jsonl", 13))
        code, _, err = switched("index", "--catalog", catalog, "--store", dsn, "--no-progress")
        assert code != 0 and "rebuild" in err.lower() and "Traceback" not in err
        rebuilt = switched.json(
            "index", "--catalog", catalog, "--store", dsn, "--rebuild", "--no-progress"
        )
        assert (rebuilt["embedded"], rebuilt["model"], rebuilt["dimensions"]) == (
            13,
            "other/model",
            16,
        )
        assert len(switched.json("similar", "b001", "--store", dsn)["results"]) == 10
        again = switched.json("index", "--catalog", catalog, "--store", dsn, "--no-progress")
        assert again["unchanged"] and again["embedded"] == 0
