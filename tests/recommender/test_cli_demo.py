"""The demo's backend choice (service, CPU server, lexical) and the CLI's text layout."""

from __future__ import annotations

import importlib.util
import io
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bookrec import client
from bookrec.recommender.cli import cpu_process, demo, main
from bookrec.recommender.cli.render import Column, display_width, pad, render_table, truncate


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No BOOKREC_* or HF_* settings, an empty Hugging Face home, the cwd in tmp_path."""
    for key in list(os.environ):
        if key.startswith(("BOOKREC_", "HF_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("BOOKREC_MAX_ATTEMPTS", "1")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _fake_model_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"")
    return path


# -- layout ----------------------------------------------------------------------------------


def test_display_width_counts_wide_characters_twice() -> None:
    assert display_width("abc") == 3
    assert display_width("三体") == 4
    assert display_width("三体II：黑暗森林") == 2 * 7 + 2
    assert display_width("Brontë") == 6
    assert display_width("e\u0301") == 1  # combining accent takes no column


def test_truncate_and_pad_respect_columns() -> None:
    assert truncate("short", 10) == "short"
    cut = truncate("天龙八部与笑傲江湖", 9)
    assert cut.endswith("…") and display_width(cut) <= 9
    assert truncate("The Hitchhiker's Guide to the Galaxy", 12) == "The Hitchhi…"
    assert pad("三体", 6) == "三体  "
    assert pad("7", 3, ">") == "  7"


def test_render_table_aligns_mixed_scripts() -> None:
    table = render_table(
        [Column("title", max_width=8), Column("n", ">")],
        [["三体", "1"], ["Dune", "22"], ["倚天屠龙记", "3"]],
    )
    lines = table.splitlines()
    # Every row is as wide as the header row once CJK characters count double.
    assert len({display_width(line) for line in lines}) == 1
    assert lines[4].startswith("倚天屠…")


# -- finding a model -------------------------------------------------------------------------


def test_find_local_model_prefers_the_environment(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _fake_model_dir(clean_env / "my-model")
    monkeypatch.setenv("BOOKREC_CPU_MODEL", str(model))
    found, note = cpu_process.find_local_model()
    assert found is not None and found.name == str(model) and not found.offline
    monkeypatch.setenv("BOOKREC_CPU_MODEL", str(clean_env / "missing"))
    found, note = cpu_process.find_local_model()
    assert found is None and "is not a model directory" in note


def test_find_local_model_in_the_hugging_face_cache(clean_env: Path) -> None:
    assert cpu_process.find_local_model() == (None, "no local model")
    repo = clean_env / "hf-home" / "hub" / "models--Qwen--Qwen3-Embedding-0.6B"
    (repo / "snapshots" / "abc123").mkdir(parents=True)  # incomplete snapshot: ignored
    assert cpu_process.find_local_model()[0] is None
    _fake_model_dir(repo / "snapshots" / "def456")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("def456")
    found, _ = cpu_process.find_local_model()
    assert found is not None
    assert found.name == "Qwen/Qwen3-Embedding-0.6B" and found.offline


# -- the demo --------------------------------------------------------------------------------


def _demo(*args: str, capsys: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    out = io.StringIO()
    code = main(["demo", "--no-progress", *args], out=out)
    return code, out.getvalue(), capsys.readouterr().err


def test_demo_says_when_torch_is_missing(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    monkeypatch.setenv("BOOKREC_BASE_URL", url)
    monkeypatch.setenv("BOOKREC_CPU_MODEL", str(_fake_model_dir(clean_env / "m")))
    monkeypatch.setattr(demo, "_missing_cpu_packages", lambda: ["torch"])
    code, out, err = _demo(capsys=capsys)
    assert code == 0, err
    assert "but torch is not installed (pip install '.[cpu]')" in out
    assert out.count("running in LEXICAL mode (TF-IDF), results are a degraded preview") == 2


def test_demo_forced_modes_fail_clearly(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    monkeypatch.setenv("BOOKREC_BASE_URL", url)
    code, _, err = _demo("--mode", "service", capsys=capsys)
    assert code == 3 and f"no embedding service answers at {url}" in err
    code, _, err = _demo("--mode", "cpu", capsys=capsys)
    assert code == 2 and "cannot start the CPU server: no local model" in err
    assert "Traceback" not in err


def test_demo_uses_a_running_service(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, fake_server: Any
) -> None:
    monkeypatch.setenv("BOOKREC_BASE_URL", f"http://127.0.0.1:{_closed_port()}/v1")
    code, out, err = _demo("--base-url", fake_server.base_url, capsys=capsys)
    assert code == 0, err
    assert f"mode     embedding service at {fake_server.base_url}" in out
    assert "LEXICAL" not in out
    assert "model    Qwen/Qwen3-Embedding-0.6B (64-d)" in out
    assert (clean_env / ".bookrec" / "demo-index" / "qwen-qwen3-embedding-0.6b-64d").is_dir()
    requests = fake_server.embedding_request_count
    code, out, err = _demo("--base-url", fake_server.base_url, capsys=capsys)
    assert code == 0, err
    assert "0 embedded, 151 reused, 0 removed" in out
    # No book is sent again: one tiny request to learn the model's identity (it names the
    # index directory), one for the reader's two preference texts.
    assert fake_server.embedding_request_count == requests + 2
    assert all(len(r["input"]) <= 2 for r in fake_server.requests[requests:])


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("tokenizers") is None,
    reason="the CPU server needs torch and transformers (pip install '.[cpu]')",
)
def test_demo_starts_and_stops_the_cpu_server(tmp_path: Path) -> None:
    from tests.serving.conftest import build_tiny_model

    model = tmp_path / "tiny-model"
    model.mkdir()
    build_tiny_model(model)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOOKREC_", "HF_"))}
    env.update(
        HF_HOME=str(tmp_path / "hf-home"),
        BOOKREC_BASE_URL=f"http://127.0.0.1:{_closed_port()}/v1",
        BOOKREC_CPU_MODEL=str(model),
        PYTHONIOENCODING="utf-8",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "bookrec.recommender.cli", "demo", "--server-timeout", "120"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    match = re.search(r"mode     CPU server at (http://127\.0\.0\.1:\d+/v1)", proc.stdout)
    assert match, proc.stdout
    assert "151 embedded" in proc.stdout and "LEXICAL" not in proc.stdout
    assert not client.check_ready(match.group(1), timeout=1.0)  # stopped at the end


def _try_it_line(out: str) -> str:
    lines = out.splitlines()
    return lines[lines.index("Try it yourself:") + 1].strip()


def test_demo_try_it_command_works_as_printed(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Issue 11: "Try it yourself: bookrec similar ..." failed with `bookrec: command not found`
    unless the virtual environment was activated. The printed command runs as printed, from a
    shell whose PATH has no bookrec on it."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    code, out, err = _demo("--mode", "lexical", capsys=capsys)
    assert code == 0, err
    command = _try_it_line(out)
    assert not command.startswith("bookrec "), command
    assert "--index .bookrec/demo-index/lexical" in command
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOOKREC_", "HF_"))}
    env.update(PATH="/usr/bin:/bin", PYTHONIOENCODING="utf-8")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run(
        ["bash", "-c", command],
        cwd=clean_env,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, (command, proc.stderr)
    assert proc.stdout.startswith("More like Pride and Prejudice"), proc.stdout


def test_demo_try_it_command_paths(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The venv's bookrec relative to where the user stands (BOOKREC_INVOKED_FROM, set by
    scripts/demo.sh), plain `bookrec` when that is the one on PATH, the catalog when not the
    sample."""
    bin_dir = clean_env / "repo" / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "bookrec").write_text("#!/bin/sh\n")
    (bin_dir / "bookrec").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.chdir(clean_env / "repo")
    index = Path(".bookrec/demo-index/lexical")
    sample = demo.sample_catalog_path()
    assert demo.try_it_command("en-1", index, sample) == (
        ".venv/bin/bookrec similar en-1 --index .bookrec/demo-index/lexical"
    )
    monkeypatch.setenv(demo.INVOKED_FROM_ENV, str(clean_env))
    assert demo.try_it_command("en-1", index, sample) == (
        "repo/.venv/bin/bookrec similar en-1 --index repo/.bookrec/demo-index/lexical"
    )
    monkeypatch.setenv(demo.INVOKED_FROM_ENV, "/")
    root = clean_env.resolve() / "repo"
    assert demo.try_it_command("en-1", index, Path("my books.jsonl")) == (
        f"{str(root)[1:]}/.venv/bin/bookrec similar en-1 --index "
        f"{str(root)[1:]}/.bookrec/demo-index/lexical --catalog '{str(root)[1:]}/my books.jsonl'"
    )
    monkeypatch.delenv(demo.INVOKED_FROM_ENV)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert demo.try_it_command("en-1", index, sample).startswith("bookrec similar en-1 ")
