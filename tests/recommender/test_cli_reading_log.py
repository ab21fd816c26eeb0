"""``bookrec recommend --reading-log`` end to end, over an index built on the fake SGLang server
from the reading-log catalog, with the hand-written Goodreads and StoryGraph exports."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bookrec.client.testing import FakeSGLang
from bookrec.recommender.cli import main

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
GOODREADS = DATA / "goodreads_library_export.csv"
STORYGRAPH = DATA / "storygraph_export.csv"
CATALOG = DATA / "reading_log_catalog.jsonl"
BOOKS = sum(1 for line in CATALOG.read_text(encoding="utf-8").splitlines() if line.strip())

#: What the Goodreads export makes of the catalog (see test_reading_log.py).
GR_LIKED = {"hunger-games", "catching-fire", "dune", "left-hand", "circe", "martian"}
GR_DISLIKED = {"emma", "achilles", "catcher"}
GR_HISTORY = {"foundation", "gone-girl", "normal-people"}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeSGLang]:
    with FakeSGLang(dim=32) as fake:
        yield fake


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, server: FakeSGLang) -> Path:
    cwd = tmp_path_factory.mktemp("reading-log")
    env = _env(server)
    proc = subprocess.run(
        [sys.executable, "-m", "bookrec.recommender.cli", "index", "-c", str(CATALOG),
         "-i", "idx", "--no-progress"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return cwd


def _env(server: FakeSGLang) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOOKREC_", "HF_"))}
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO), *inherited]),
        PYTHONIOENCODING="utf-8",
        BOOKREC_MAX_ATTEMPTS="1",
        BOOKREC_BASE_URL=server.base_url,
    )
    return env


class Run:
    """``main()`` in the work directory: (exit status, stdout, stderr)."""

    def __init__(
        self, cwd: Path, server: FakeSGLang, monkeypatch: pytest.MonkeyPatch, capsys: Any
    ) -> None:
        self.cwd, self.server, self.monkeypatch, self.capsys = cwd, server, monkeypatch, capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        with self.monkeypatch.context() as mp:
            for key in list(os.environ):
                if key.startswith("BOOKREC_"):
                    mp.delenv(key)
            mp.setenv("BOOKREC_BASE_URL", self.server.base_url)
            mp.setenv("BOOKREC_MAX_ATTEMPTS", "1")
            mp.chdir(self.cwd)
            self.capsys.readouterr()
            out = io.StringIO()
            code = main(["recommend", "-c", str(CATALOG), "-i", "idx", *args], out=out)
            err = self.capsys.readouterr().err
        return code, out.getvalue(), err

    def json(self, *args: str) -> tuple[dict[str, Any], str]:
        code, out, err = self(*args, "--json")
        assert code == 0, err
        data: dict[str, Any] = json.loads(out)
        return data, err


@pytest.fixture
def run(workdir: Path, server: FakeSGLang, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> Run:
    return Run(workdir, server, monkeypatch, capsys)


def _failed(code: int, err: str, *needles: str) -> None:
    assert code == 2, (code, err)
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("bookrec: error: "), err  # after the summary, if any
    for needle in needles:
        assert needle in err, err


def test_goodreads_export_recommends_what_was_not_read(run: Run) -> None:
    data, err = run.json("--reading-log", str(GOODREADS), "-k", str(BOOKS))
    got = {r["id"] for r in data["results"]}
    read = GR_LIKED | GR_DISLIKED | GR_HISTORY
    assert got == set(_catalog_ids()) - read - {"little-life", "dune-40th"}
    assert "hail-mary" in got  # to-read: may be recommended
    report = data["reading_log"]
    assert report["file"] == str(GOODREADS) and report["format"] == "goodreads"
    assert (report["rows"], report["matched"]) == (18, 16)
    assert set(report["liked"]) == GR_LIKED and set(report["disliked"]) == GR_DISLIKED
    assert set(report["history"]) == GR_HISTORY
    assert report["currently_reading"] == ["little-life"]
    assert [u["line"] for u in report["unmatched"]] == [14, 15]
    assert [s["line"] for s in report["skipped"]] == [16, 17]
    assert [w["line"] for w in report["warnings"]] == [18, 23]
    assert data["query"]["reading_log"] == str(GOODREADS)
    assert data["query"]["liked"] == []  # the query as given; the log's books are reported
    assert all(r["reason"] for r in data["results"])
    lines = err.splitlines()
    assert lines[0] == (
        f"reading log {GOODREADS} (Goodreads): matched 16 of 18 rows; 2 not in the catalog: "
        "'The Name of the Wind (The Kingkiller Chronicle, #1)', 'Educated'; 2 rows skipped"
    )
    assert lines[1] == (
        "  used: 6 liked, 3 disliked, 3 read, 1 currently reading (left out), 1 to-read "
        "(may be recommended)"
    )
    assert f"warning: {GOODREADS}:16: skipped: My Rating 'five' is not a number from 0 to 5" in err
    assert f"warning: {GOODREADS}:17: skipped: 4 fields where the header has 24" in err
    assert f"warning: {GOODREADS}:18: ISBN 'abc' is not a valid ISBN" in err


def test_the_log_combines_with_the_reader_s_own_lists(run: Run) -> None:
    data, _err = run.json(
        "--reading-log", str(GOODREADS), "--liked", "emma", "--disliked", "dune",
        "--history", "pride", "-k", str(BOOKS),
    )  # fmt: skip
    # The log dislikes Emma and likes Dune: the reader's word wins (else the profile would
    # contradict itself, an error).
    got = {r["id"] for r in data["results"]}
    assert not got & {"emma", "dune", "dune-40th", "pride"}  # liked, disliked, read
    reasons = {r["reason"] for r in data["results"]}
    assert not any("Dune" in reason for reason in reasons)  # disliked by the reader: no pull
    assert data["query"]["liked"] == ["emma"]


def test_include_read_lets_currently_reading_books_back(run: Run) -> None:
    data, _err = run.json("--reading-log", str(GOODREADS), "-k", str(BOOKS), "--include-read")
    got = {r["id"] for r in data["results"]}
    assert "little-life" in got and "foundation" in got
    assert not got & GR_DISLIKED  # disliked books never come back


def test_storygraph_export_with_a_preference_text(run: Run, server: FakeSGLang) -> None:
    before = server.embedding_request_count
    data, err = run.json(
        "--reading-log", str(STORYGRAPH), "--prefer", "a mythological retelling", "-k", "5"
    )
    assert server.embedding_request_count == before + 1  # the one preference text
    assert len(data["results"]) == 5
    got = {r["id"] for r in data["results"]}
    assert not got & {"piranesi", "three-body", "martian", "left-hand", "dune", "circe"}
    assert data["reading_log"]["format"] == "storygraph"
    assert "(StoryGraph): matched 11 of 13 rows" in err
    assert f"warning: {STORYGRAPH}:15: skipped: Star Rating '4 stars'" in err


def test_table_output_prints_the_summary_on_stderr(run: Run) -> None:
    code, out, err = run("--reading-log", str(STORYGRAPH), "-k", "3")
    assert code == 0, err
    assert out.splitlines()[0] == "Recommendations" and len(out.splitlines()) == 3 + 3
    assert "matched 11 of 13 rows; 2 not in the catalog: 'Tomorrow, and Tomorrow" in err


def test_many_bad_rows_are_capped_on_stderr(run: Run, tmp_path: Path) -> None:
    header = GOODREADS.read_text(encoding="utf-8-sig").splitlines()[0]

    def row(title: str, author: str, rating: str) -> str:
        cells = [""] * 24
        cells[1], cells[2], cells[7], cells[18] = title, author, rating, "read"
        return ",".join(cells)

    rows = [row(f"Book {i}", "Author", "x" * (i % 3 + 1)) for i in range(25)]
    rows.append(row("Dune", "Frank Herbert", "5"))
    path = tmp_path / "bad.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    data, err = run.json("--reading-log", str(path), "-k", "2")
    assert len(data["reading_log"]["skipped"]) == 25
    assert err.count("skipped: My Rating") == 10
    assert "and 15 more rows (--json lists them all)" in err
    assert data["reading_log"]["liked"] == ["dune"]


def test_a_log_with_nothing_read_is_exit_2(run: Run, tmp_path: Path) -> None:
    header = STORYGRAPH.read_text(encoding="utf-8").splitlines()[0]
    path = tmp_path / "to-read.csv"
    cells = ["Neuromancer", "William Gibson", "", "", "", "to-read"] + [""] * 16 + ["No"]
    path.write_text(header + "\n" + ",".join(cells) + "\n", encoding="utf-8")
    code, _out, err = run("--reading-log", str(path))
    _failed(code, err, "nothing to recommend from", "matched 1 of 1 row")
    # The reader's own liked books are enough.
    code, _out, err = run("--reading-log", str(path), "--liked", "dune")
    assert code == 0, err


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        (b"", ("empty",)),
        (b"\x00\x01\x02\x03binary\xff", ("binary",)),
        ("Title,Author\nÉmile,Zola\n".encode("latin-1"), ("not UTF-8", "line 2")),
        (b"id,title\nb1,Dune\n", ("not a Goodreads or StoryGraph export", "My Rating")),
    ],
)
def test_a_file_that_is_no_export_is_exit_2(
    run: Run, tmp_path: Path, content: bytes, needles: tuple[str, ...]
) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes(content)
    code, out, err = run("--reading-log", str(path))
    _failed(code, err, f"bookrec: error: reading log {path}: ", *needles)
    assert out == ""


def test_a_missing_file_is_exit_2(run: Run, tmp_path: Path) -> None:
    code, _out, err = run("--reading-log", str(tmp_path / "nope.csv"))
    _failed(code, err, "nope.csv", "no such file")
    code, _out, err = run("--reading-log", str(tmp_path))
    _failed(code, err, "directory")


def test_the_command_as_a_process(workdir: Path, server: FakeSGLang) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bookrec.recommender.cli", "recommend", "-c", str(CATALOG),
         "-i", "idx", "--reading-log", str(GOODREADS), "-k", "3", "--json"],
        cwd=workdir, env=_env(server), capture_output=True, text=True, encoding="utf-8",
        timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["results"]) == 3
    assert "matched 16 of 18 rows" in proc.stderr
    broken = subprocess.run(
        [sys.executable, "-m", "bookrec.recommender.cli", "recommend", "-c", str(CATALOG),
         "-i", "idx", "--reading-log", str(CATALOG)],
        cwd=workdir, env=_env(server), capture_output=True, text=True, encoding="utf-8",
        timeout=120, check=False,
    )  # fmt: skip
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    assert "not a Goodreads or StoryGraph export" in broken.stderr


def test_help_states_the_rating_rule(run: Run, capsys: Any) -> None:
    assert main(["recommend", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--reading-log FILE" in text
    assert "4-5 stars liked, 1-2 disliked, 3 read" in text


def _catalog_ids() -> list[str]:
    return [
        json.loads(line)["id"]
        for line in CATALOG.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
