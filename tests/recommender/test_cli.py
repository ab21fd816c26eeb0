"""``bookrec`` end to end against the fake SGLang server.

The main paths run as real subprocesses (``python -m bookrec.recommender.cli``): exit status,
stdout and stderr are what a user sees. Finer checks call ``main()`` in-process, which is much
faster.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bookrec.client.testing import FakeSGLang, fake_vector
from bookrec.recommender.cli import main, sample_catalog_path

REPO = Path(__file__).resolve().parents[2]

BOOKS: list[dict[str, Any]] = [
    {
        "id": "b1",
        "title": "Dune",
        "authors": ["Frank Herbert"],
        "summary": "A desert planet, a spice and a prophecy.",
        "tags": ["science fiction", "politics"],
        "language": "en",
        "year": 1965,
        "rating": 4.3,
    },
    {
        "id": "b2",
        "title": "Dune",
        "authors": ["Frank Herbert"],
        "summary": "An anniversary edition of the desert planet saga.",
        "tags": ["science fiction", "politics"],
        "language": "en",
        "year": 2005,
        "rating": 4.3,
    },
    {
        "id": "b3",
        "title": "Foundation",
        "authors": ["Isaac Asimov"],
        "summary": "Psychohistory predicts the fall of the Galactic Empire.",
        "tags": ["science fiction", "empire"],
        "language": "en",
        "year": 1951,
        "rating": 4.2,
    },
    {
        "id": "b4",
        "title": "Emma",
        "authors": ["Jane Austen"],
        "summary": "A young woman plays matchmaker in her village.",
        "tags": ["classics", "romance"],
        "language": "en",
        "year": 1815,
        "rating": 4.0,
    },
    {
        "id": "b5",
        "title": "三体",
        "authors": ["刘慈欣"],
        "summary": "叶文洁向宇宙发出信号，三体文明收到了回应。",
        "tags": ["科幻", "外星文明"],
        "language": "zh",
        "year": 2008,
        "rating": 4.6,
        "series": "三体",
    },
    {
        "id": "b6",
        "title": "球状闪电",
        "authors": ["刘慈欣"],
        "summary": "少年追寻球状闪电的秘密，研究走向了武器开发。",
        "tags": ["科幻", "物理"],
        "language": "zh",
        "year": 2004,
        "rating": 4.4,
    },
    {
        "id": "b7",
        "title": "射雕英雄传",
        "authors": ["金庸"],
        "summary": "郭靖与黄蓉的江湖故事。",
        "tags": ["武侠", "江湖"],
        "language": "zh",
        "year": 1957,
        "rating": 4.6,
        "series": "射雕三部曲",
    },
    {
        "id": "b8",
        "title": "The Martian",
        "authors": ["Andy Weir"],
        "summary": "An astronaut is stranded on Mars and must engineer his survival.",
        "tags": ["science fiction", "survival"],
        "language": "en",
        "year": 2011,
        "rating": 4.4,
    },
]


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _write_catalog(path: Path, books: list[dict[str, Any]]) -> None:
    path.write_text(
        "".join(json.dumps(b, ensure_ascii=False) + "\n" for b in books), encoding="utf-8"
    )


def _clean_env(hf_home: Path) -> dict[str, str]:
    """No BOOKREC_* settings, an empty Hugging Face cache, one attempt per request."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BOOKREC_", "HF_"))}
    clean["HF_HOME"] = str(hf_home)
    clean["BOOKREC_MAX_ATTEMPTS"] = "1"
    clean["PYTHONPATH"] = str(REPO)
    clean["PYTHONIOENCODING"] = "utf-8"
    return clean


class Bookrec:
    """Runs ``python -m bookrec.recommender.cli`` in a working directory with an environment."""

    def __init__(self, cwd: Path, env: dict[str, str], base_url: str | None) -> None:
        self.cwd = cwd
        self.env = dict(env)
        if base_url:
            self.env["BOOKREC_BASE_URL"] = base_url

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bookrec.recommender.cli", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=timeout,
            check=False,
        )

    def json(self, *args: str) -> Any:
        proc = self(*args, "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)


class InProcess:
    """Calls ``main()`` directly, in the same working directory and environment."""

    def __init__(
        self, cwd: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: Any
    ) -> None:
        self.cwd = cwd
        self.env = env
        self.monkeypatch = monkeypatch
        self.capsys = capsys

    def __call__(self, *args: str, base_url: str | None = None) -> tuple[int, str, str]:
        with self.monkeypatch.context() as mp:
            for key in list(os.environ):
                if key.startswith(("BOOKREC_", "HF_")):
                    mp.delenv(key)
            for key, value in self.env.items():
                if key.startswith(("BOOKREC_", "HF_")):
                    mp.setenv(key, value)
            if base_url:
                mp.setenv("BOOKREC_BASE_URL", base_url)
            mp.chdir(self.cwd)
            self.capsys.readouterr()
            out = io.StringIO()
            code = main(list(args), out=out)
            err = self.capsys.readouterr().err
        return code, out.getvalue(), err

    def json(self, *args: str, base_url: str | None = None) -> Any:
        code, out, err = self(*args, "--json", base_url=base_url)
        assert code == 0, err
        return json.loads(out)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeSGLang]:
    with FakeSGLang(dim=64) as fake:
        yield fake


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, server: FakeSGLang) -> Path:
    """A working directory with books.jsonl indexed into idx/ (built once, by a subprocess)."""
    cwd = tmp_path_factory.mktemp("indexed")
    _write_catalog(cwd / "books.jsonl", BOOKS)
    env = _clean_env(cwd / "hf-home")
    proc = Bookrec(cwd, env, server.base_url)("index", "-c", "books.jsonl", "-i", "idx")
    assert proc.returncode == 0, proc.stderr
    return cwd


@pytest.fixture
def run(indexed: Path, server: FakeSGLang) -> Bookrec:
    return Bookrec(indexed, _clean_env(indexed / "hf-home"), server.base_url)


@pytest.fixture
def call(
    indexed: Path, server: FakeSGLang, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> InProcess:
    env = _clean_env(indexed / "hf-home")
    env["BOOKREC_BASE_URL"] = server.base_url
    return InProcess(indexed, env, monkeypatch, capsys)


def _assert_clean_failure(code: int, err: str, expected: int, *needles: str) -> None:
    assert code == expected, (code, err)
    assert "Traceback" not in err
    assert err.startswith("bookrec: error:") or "usage:" in err, err
    for needle in needles:
        assert needle in err, err


def _failed(proc: subprocess.CompletedProcess[str], expected: int, *needles: str) -> None:
    _assert_clean_failure(proc.returncode, proc.stderr, expected, *needles)


def _scores_sorted(results: list[dict[str, Any]]) -> bool:
    scores = [r["score"] for r in results]
    return scores == sorted(scores, reverse=True)


# -- subprocesses ----------------------------------------------------------------------------


def test_index_is_incremental(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    with FakeSGLang(dim=64) as fake:
        _write_catalog(tmp_path / "books.jsonl", BOOKS)
        env = _clean_env(tmp_path / "hf-home")
        run = Bookrec(tmp_path, env, fake.base_url)
        first = run.json("index", "--catalog", "books.jsonl", "--index", "idx")
        assert (first["embedded"], first["reused"], first["removed"]) == (len(BOOKS), 0, 0)
        assert first["books"] == len(BOOKS)
        assert first["model"] == "Qwen/Qwen3-Embedding-0.6B"
        assert first["dimensions"] == 64
        requests = fake.embedding_request_count
        assert requests > 0

        second = run.json("index", "--catalog", "books.jsonl", "--index", "idx")
        assert (second["embedded"], second["reused"], second["removed"]) == (0, len(BOOKS), 0)
        assert fake.embedding_request_count == requests

        # Drop one book and change another: exactly one embedded, one removed.
        changed = [dict(b) for b in BOOKS if b["id"] != "b7"]
        changed[0]["summary"] += " Revised."
        _write_catalog(tmp_path / "books.jsonl", changed)
        third = run.json("index", "--catalog", "books.jsonl", "--index", "idx")
        assert (third["embedded"], third["reused"], third["removed"]) == (1, len(BOOKS) - 2, 1)

        code, out, err = InProcess(tmp_path, env, monkeypatch, capsys)(
            "index", "-c", "books.jsonl", "-i", "idx", base_url=fake.base_url
        )
        assert code == 0, err
        assert "embedded 0, reused 7, removed 0" in out


def test_similar(run: Bookrec) -> None:
    similar = run.json("similar", "b1", "-c", "books.jsonl", "-i", "idx", "-k", "4")
    ids = [r["id"] for r in similar["results"]]
    assert len(ids) == 4
    assert "b1" not in ids and "b2" not in ids  # the book itself and its other edition
    assert _scores_sorted(similar["results"])
    assert all(r["reason"] == "similar to Dune" for r in similar["results"])
    assert similar["degraded"] is False


def test_fusion_and_strategy_options(run: Bookrec) -> None:
    args = ("-c", "books.jsonl", "-i", "idx", "-k", "4")
    hybrid = run.json("similar", "b1", *args)["results"]
    dense = run.json("similar", "b1", *args, "--fusion", "dense")["results"]
    lexical = run.json("similar", "b1", *args, "--fusion", "lexical")["results"]
    # Fused scores are reciprocal ranks (at most 1/61 + 0.5/61); dense ones are cosines.
    assert all(r["score"] <= 1.5 / 61 + 1e-6 for r in hybrid + lexical)
    assert max(r["score"] for r in dense) > 1.5 / 61
    assert _scores_sorted(dense) and "b1" not in [r["id"] for r in dense + lexical]
    for strategy in ("blend", "average", "best"):
        found = run.json("recommend", "--history", "b1", "b3", "--strategy", strategy, *args)
        assert len(found["results"]) == 4 and found["query"]["strategy"] == strategy
    bad = run("recommend", "--history", "b1", "--strategy", "mean", *args)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_search_and_recommend(run: Bookrec, server: FakeSGLang) -> None:
    requests = server.embedding_request_count
    search = run.json(
        "search", "space", "survival", "-c", "books.jsonl", "-i", "idx", "-k", "3",
        "--year-min", "1950",
    )  # fmt: skip
    assert search["query"]["text"] == "space survival"
    assert 0 < len(search["results"]) <= 3
    assert all(r["year"] >= 1950 for r in search["results"])
    assert _scores_sorted(search["results"])
    assert server.embedding_request_count == requests + 1  # one query, no documents

    rec = run.json(
        "recommend", "-c", "books.jsonl", "-i", "idx",
        "--history", "b3", "--liked", "b5", "--disliked", "b4",
        "--prefer", "hard science fiction", "-k", "5",
    )  # fmt: skip
    got = [r["id"] for r in rec["results"]]
    assert got and not {"b3", "b4", "b5"} & set(got)  # read, liked and disliked are left out
    assert _scores_sorted(rec["results"])
    assert all(r["reason"] for r in rec["results"])
    assert {r["reason"] for r in rec["results"]} <= {
        "because you read Foundation",
        "because you liked 三体",
        "matches 'hard science fiction'",
    }


def test_missing_catalog(run: Bookrec) -> None:
    _failed(run("index", "--catalog", "nope.jsonl", "-i", "idx2"), 2, "catalog not found", "nope")


def test_malformed_catalog_line(run: Bookrec) -> None:
    lines = [json.dumps(b, ensure_ascii=False) for b in BOOKS[:3]]
    lines[1] = lines[1][:-5]  # truncated JSON on line 2
    (run.cwd / "bad.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _failed(run("index", "--catalog", "bad.jsonl", "--index", "idx2"), 2, "bad.jsonl:2")


def test_unknown_book_id(run: Bookrec) -> None:
    _failed(
        run("similar", "zz-404", "-c", "books.jsonl", "-i", "idx"), 2, "unknown book id", "zz-404"
    )


def test_unreachable_server(tmp_path: Path) -> None:
    _write_catalog(tmp_path / "books.jsonl", BOOKS)
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    run = Bookrec(tmp_path, _clean_env(tmp_path / "hf-home"), url)
    _failed(run("index", "-c", "books.jsonl", "-i", "idx"), 3, "unavailable", url)


def test_demo_in_lexical_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    env = _clean_env(tmp_path / "hf-home")
    proc = Bookrec(tmp_path, env, url)("demo")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = proc.stdout
    banner = f"no embedding service at {url}; no local model; running in LEXICAL mode (TF-IDF)"
    assert out.count(banner) == 2, out
    lines = out.splitlines()
    assert banner in "\n".join(lines[:5]) and banner in "\n".join(lines[-3:])
    assert "More like Pride and Prejudice (Jane Austen, 1813)" in out
    assert "More like 《三体》（刘慈欣，2008）" in out
    assert "Recommendations for a sample reader" in out
    assert "151 embedded, 0 reused, 0 removed" in out
    assert (tmp_path / ".bookrec" / "demo-index" / "lexical").is_dir()

    code, again, err = InProcess(tmp_path, env, monkeypatch, capsys)(
        "demo", "--no-progress", base_url=url
    )
    assert code == 0, err
    assert "0 embedded, 151 reused, 0 removed" in again


# -- in-process ------------------------------------------------------------------------------


def test_filters(call: InProcess) -> None:
    zh = call.json("similar", "b5", "-c", "books.jsonl", "-i", "idx", "--language", "zh")
    assert {r["id"] for r in zh["results"]} == {"b6", "b7"}
    old = call.json("similar", "b8", "-c", "books.jsonl", "-i", "idx", "--year-max", "1960")
    assert old["results"] and all(r["year"] <= 1960 for r in old["results"])
    by_author = call.json(
        "recommend", "-c", "books.jsonl", "-i", "idx", "--liked", "b1", "--author", "刘慈欣"
    )
    assert {r["id"] for r in by_author["results"]} == {"b5", "b6"}
    tagged = call.json("similar", "b3", "-c", "books.jsonl", "-i", "idx", "--tag", "武侠")
    assert [r["id"] for r in tagged["results"]] == ["b7"]


def test_table_output(call: InProcess) -> None:
    code, out, err = call("similar", "b5", "-c", "books.jsonl", "-i", "idx", "-k", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "More like 《三体》（刘慈欣，2008）"
    header = lines[1]
    assert header.split() == ["#", "score", "id", "title", "authors", "year", "why"]
    assert len(lines) == 2 + 1 + 3  # title, header, rule, rows


def test_embed(call: InProcess) -> None:
    data = call.json("embed", "hello world", "你好")
    assert data["dimensions"] == 64 and data["kind"] == "document"
    assert data["model"] == "Qwen/Qwen3-Embedding-0.6B"
    vec = np.array(data["data"][1]["embedding"], dtype=np.float32)
    np.testing.assert_allclose(vec, fake_vector("你好", 64), atol=1e-2)
    query = call.json("embed", "--query", "--instruction", "Find books", "dune")
    np.testing.assert_allclose(
        np.array(query["data"][0]["embedding"], dtype=np.float32),
        fake_vector("Instruct: Find books\nQuery:dune", 64),
        atol=1e-2,
    )


def test_bad_input_in_process(call: InProcess) -> None:
    cases: list[tuple[tuple[str, ...], int, tuple[str, ...]]] = [
        (("similar",), 2, ("BOOK_ID",)),
        (("similar", "b1", "-k", "0"), 2, ("positive integer",)),
        (("frobnicate",), 2, ("invalid choice",)),
        (("recommend", "-i", "idx", "-c", "books.jsonl"), 2, ("--liked",)),
        (("recommend", "--liked", "b1", "nope", "-c", "books.jsonl", "-i", "idx"), 2, ("nope",)),
        (("similar", "b1", "-c", "books.jsonl", "-i", "nothing"), 2, ("nothing", "bookrec index")),
        (("similar", "b1", "-c", "books.jsonl", "-i", "idx", "--year-min", "2000",
          "--year-max", "1900"), 2, ("year_min",)),
        (("embed", "--dimensions", "8", "x"), 2, ("dimensions",)),
        (("embed",), 2, ("no texts",)),
        (("search", " ", "-c", "books.jsonl", "-i", "idx"), 2, ("empty",)),
    ]  # fmt: skip
    for args, expected, needles in cases:
        code, _out, err = call(*args)
        _assert_clean_failure(code, err, expected, *needles)


def test_debug_shows_the_traceback(call: InProcess) -> None:
    code, _out, err = call("--debug", "similar", "zz", "-c", "books.jsonl", "-i", "idx")
    assert code == 2
    assert "Traceback" in err and "UnknownBookError" in err


def test_api_key_is_sent_and_never_printed(call: InProcess) -> None:
    secret = "sk-test-very-secret"
    with FakeSGLang(dim=32, api_key=secret) as keyed:
        call.env["BOOKREC_API_KEY"] = secret
        ok = call("embed", "hi", base_url=keyed.base_url)
        del call.env["BOOKREC_API_KEY"]
        wrong = call("embed", "--api-key", "wrong", "hi", base_url=keyed.base_url)
        flag = call("--debug", "embed", "--api-key", secret, "hi", base_url=keyed.base_url)
    assert ok[0] == 0, ok[2]
    _assert_clean_failure(wrong[0], wrong[2], 4, "rejected")
    assert flag[0] == 0, flag[2]
    for _code, out, err in (ok, wrong, flag):
        assert secret not in out + err


def test_search_degrades_when_the_service_is_down(call: InProcess) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    code, out, err = call("search", "外星文明", "-c", "books.jsonl", "-i", "idx", "--json",
                          base_url=url)  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["degraded"] is True and data["results"][0]["id"] == "b5"
    assert "degraded" in err


def test_embed_reads_stdin_and_uses_the_cache(
    call: InProcess, server: FakeSGLang, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("first line\n\nsecond line\n"))
    data = call.json("embed", "--stdin", "--cache", "emb.sqlite")
    assert [d["text"] for d in data["data"]] == ["first line", "second line"]
    requests = server.embedding_request_count
    again = call.json("embed", "first line", "second line", "--cache", "emb.sqlite")
    assert server.embedding_request_count == requests  # both vectors came from the cache
    assert again["data"][1]["embedding"] == data["data"][1]["embedding"]


def test_index_scan_copy(call: InProcess) -> None:
    code, out, err = call("index", "-c", "books.jsonl", "-i", "scanned", "--scan", "int8")
    assert code == 0, err
    assert "scan copy int8, recall@10 1.000 against an exact scan" in out
    manifest = json.loads((call.cwd / "scanned" / "manifest.json").read_text())
    assert manifest["scan"]["kind"] == "int8" and manifest["scan_request"] == "int8"
    exact = call.json("similar", "b5", "-c", "books.jsonl", "-i", "idx")
    two_stage = call.json("similar", "b5", "-c", "books.jsonl", "-i", "scanned")
    assert [r["id"] for r in two_stage["results"]] == [r["id"] for r in exact["results"]]
    # The request is kept by later builds; --scan none drops the copy.
    again = call.json("index", "-c", "books.jsonl", "-i", "scanned")
    assert again["unchanged"] and again["scan"]["kind"] == "int8"
    dropped = call.json("index", "-c", "books.jsonl", "-i", "scanned", "--scan", "none")
    assert dropped["scan"] is None and not dropped["unchanged"]


def test_lexical_index_search_never_asks_a_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Issue 11: with a lexical (TF-IDF) index and no service, every `search` waited seconds for
    a service that can never serve its model. Free text is embedded by the catalog's own
    LexicalEmbedder (as the demo does): no embedding client is even built."""
    from bookrec.recommender.cli import commands

    url = f"http://127.0.0.1:{_closed_port()}/v1"
    call = InProcess(tmp_path, _clean_env(tmp_path / "hf-home"), monkeypatch, capsys)
    code, _out, err = call("demo", "--mode", "lexical", "--no-progress")
    assert code == 0, err

    def no_client(_args: Any) -> Any:
        raise AssertionError("an embedding client was built for a lexical index")

    monkeypatch.setattr(commands, "open_client", no_client)
    index = ".bookrec/demo-index/lexical"
    found = call.json("search", "关于宇宙与外星文明的硬科幻", "-i", index, "-k", "3", base_url=url)
    assert found["degraded"] is False and len(found["results"]) == 3
    assert any(r["title"].startswith("三体") for r in found["results"]), found["results"]
    rec = call.json("recommend", "--prefer", "space", "-i", index, "-k", "3", base_url=url)
    assert rec["degraded"] is False and len(rec["results"]) == 3
    code, out, err = call("search", "Pride", "-i", index, "-k", "2", base_url=url)
    assert code == 0, err
    assert "degraded" not in err and out.startswith("Books matching “Pride”")


def _readme_cli_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("### The CLI")
    return text[start : text.index("\n### ", start + 1)]


def test_readme_cli_examples_match_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Issue 11: the README's CLI examples named a catalog that does not exist (books.jsonl) and
    quoted output the CLI never prints ("120 embedded, 0 reused"). The catalogs it names exist,
    and its `bookrec index` output is what the command prints (model and seconds aside)."""
    section = _readme_cli_section()
    catalogs = re.findall(r"--catalog (\S+)", section)
    assert catalogs and all((REPO / c).is_file() for c in catalogs), catalogs
    quoted = re.search(r"```text\n(Indexed [^`]*)```", section)
    assert quoted, section
    command = re.search(r"^bookrec (index [^#\n]*?)\s*$", section, re.M)
    assert command, section
    (tmp_path / "recommender").symlink_to(REPO / "recommender")
    with FakeSGLang(dim=64) as fake:
        call = InProcess(tmp_path, _clean_env(tmp_path / "hf-home"), monkeypatch, capsys)
        code, out, err = call(*command.group(1).split(), "--no-progress", base_url=fake.base_url)
        assert code == 0, err
        code, again, err = call(*command.group(1).split(), base_url=fake.base_url)
        assert code == 0, err
    printed = re.sub(r"\(64-d\)", "(1024-d)", out)
    printed = re.sub(r"^  \d+\.\d s$", "  <seconds> s", printed, flags=re.M)
    assert printed == quoted.group(1)
    for needle in ("embedded 0, reused 151, removed 0", "s (nothing changed)"):
        assert needle in again and needle in section


# -- issue 11: the catalog an index was built from; a lexical index and a service -------------


def test_queries_use_the_catalog_the_index_was_built_from(
    tmp_path: Path, server: FakeSGLang, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Before: without --catalog, `similar` loaded the bundled sample catalog, warned "151 of 151
    catalog books have no vector" and failed with "unknown book id"."""
    _write_catalog(tmp_path / "my.jsonl", BOOKS)
    call = InProcess(tmp_path, _clean_env(tmp_path / "hf-home"), monkeypatch, capsys)
    built = call.json("index", "-c", "my.jsonl", "-i", "idx", base_url=server.base_url)
    assert built["books"] == len(BOOKS)
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["catalog"]["path"] == str((tmp_path / "my.jsonl").resolve())

    found = call.json("similar", "b1", "-i", "idx", "-k", "3", base_url=server.base_url)
    assert found["results"] and all(r["id"] != "b1" for r in found["results"])
    rec = call.json("recommend", "--liked", "b3", "-i", "idx", "-k", "2", base_url=server.base_url)
    assert len(rec["results"]) == 2
    hits = call.json("search", "desert planet", "-i", "idx", "-k", "2", base_url=server.base_url)
    assert len(hits["results"]) == 2

    # Users edit catalogs: one book fewer still works (the index's other books are there).
    _write_catalog(tmp_path / "my.jsonl", BOOKS[:-1])
    code, out, err = call("similar", "b1", "-i", "idx", "-k", "2", base_url=server.base_url)
    assert code == 0, err
    assert "More like" in out


def test_a_catalog_that_is_not_the_index_s_is_a_clear_error(
    tmp_path: Path, server: FakeSGLang, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    _write_catalog(tmp_path / "my.jsonl", BOOKS)
    call = InProcess(tmp_path, _clean_env(tmp_path / "hf-home"), monkeypatch, capsys)
    call.json("index", "-c", "my.jsonl", "-i", "idx", base_url=server.base_url)
    recorded = str((tmp_path / "my.jsonl").resolve())

    # Another catalog given with --catalog (the bundled sample): exit 2, naming both.
    sample = str(sample_catalog_path())
    code, _out, err = call("similar", "b1", "-i", "idx", "-c", sample, base_url=server.base_url)
    _assert_clean_failure(code, err, 2, "does not match the index", recorded, "--catalog")
    assert "have no vector" not in err

    # The recorded catalog is gone: exit 2, saying which file and what to do.
    (tmp_path / "my.jsonl").rename(tmp_path / "moved.jsonl")
    code, _out, err = call("similar", "b1", "-i", "idx", base_url=server.base_url)
    _assert_clean_failure(code, err, 2, recorded, "no longer exists", "--catalog", "--rebuild")
    # ... and --catalog with the moved file works.
    found = call.json("similar", "b1", "-i", "idx", "-c", "moved.jsonl", base_url=server.base_url)
    assert found["results"]


def test_put_and_delete_keep_the_recorded_catalog(
    tmp_path: Path, server: FakeSGLang, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    _write_catalog(tmp_path / "my.jsonl", BOOKS)
    _write_catalog(tmp_path / "new.jsonl", [{"id": "n1", "title": "A New Book"}])
    call = InProcess(tmp_path, _clean_env(tmp_path / "hf-home"), monkeypatch, capsys)
    call.json("index", "-c", "my.jsonl", "-i", "idx", base_url=server.base_url)
    manifest_path = tmp_path / "idx" / "manifest.json"
    record = json.loads(manifest_path.read_text(encoding="utf-8"))["catalog"]
    put = call.json("put", "new.jsonl", "-i", "idx", base_url=server.base_url)
    assert put["added"] == ["n1"]
    assert json.loads(manifest_path.read_text(encoding="utf-8"))["catalog"] == record
    deleted = call.json("delete", "b8", "-i", "idx", base_url=server.base_url)
    assert deleted["deleted"] == ["b8"]
    assert json.loads(manifest_path.read_text(encoding="utf-8"))["catalog"] == record


def test_index_into_a_lexical_index_checks_the_model_before_embedding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Before: `bookrec index` into the demo's lexical index with a service running embedded all
    151 books, then failed on the shape."""
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    call = InProcess(tmp_path, _clean_env(tmp_path / "hf-home"), monkeypatch, capsys)
    code, _out, err = call("demo", "--mode", "lexical", "--no-progress", base_url=url)
    assert code == 0, err
    index = ".bookrec/demo-index/lexical"
    with FakeSGLang(dim=64) as fake:
        code, _out, err = call("index", "-i", index, "--no-progress", base_url=fake.base_url)
        _assert_clean_failure(code, err, 4, "bookrec-lexical-tfidf", "--rebuild")
        assert fake.embedding_request_count <= 1
        assert len(fake.embedded_texts) <= 1
