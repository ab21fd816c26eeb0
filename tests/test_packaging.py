"""The distribution installs one import package, ``bookrec``, and needs nothing from the source
tree: the wheel is built, installed into a fresh virtual environment outside the repository and
used from a directory that holds its own ``client.py``."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Source folder -> the package it is installed as.
PACKAGES = {
    "client": "bookrec/client",
    "recommender": "bookrec/recommender",
    "deploy/cpu_server": "bookrec/cpu_server",
}
PYTHON_FOLDERS = ("client", "recommender", "deploy", "scripts", "tests")


def _python_files() -> Iterator[Path]:
    for folder in PYTHON_FOLDERS:
        yield from sorted((REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("path", list(_python_files()), ids=lambda p: str(p.relative_to(REPO)))
def test_sources_import_only_the_installed_names(path: Path) -> None:
    """``import client`` in a source checkout would load a second copy of the package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            assert top not in ("client", "recommender"), f"{path}:{node.lineno}: {name}"
            assert name != "tests.fake_sglang", f"{path}:{node.lineno}: {name}"


@dataclass
class FreshEnv:
    python: Path
    bin: Path
    wheel: Path


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory: pytest.TempPathFactory) -> FreshEnv:
    """The wheel installed alone into a new venv; its dependencies come from this one."""
    root = tmp_path_factory.mktemp("wheel")
    # Built from a copy of the sources: setuptools reuses a build/ folder, which in a working
    # tree can hold modules that have since been moved or deleted.
    source = root / "source"
    for name in ("pyproject.toml", "README.md", *PACKAGES):
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    dist = root / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(dist),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("bookrec-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    subprocess.run(
        [*pip, "install", "--no-deps", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
    )
    # Dependencies (numpy, openai, torch, ...) from this environment's site-packages, as a
    # plain path: .pth files there (the editable install of bookrec) are not processed.
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return FreshEnv(python, venv / "bin", wheel)


def _run(
    *argv: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BOOKREC_", "PYTHON"))}
    clean.update(env or {})
    return subprocess.run(
        argv, cwd=cwd, env=clean, capture_output=True, text=True, check=False, timeout=timeout
    )


def test_wheel_holds_one_package_with_every_module(fresh_env: FreshEnv) -> None:
    with zipfile.ZipFile(fresh_env.wheel) as wheel:
        names = set(wheel.namelist())
    tops = {name.split("/")[0] for name in names if not name.startswith("bookrec-")}
    assert tops == {"bookrec"}
    for folder, package in PACKAGES.items():
        for source in (REPO / folder).rglob("*.py"):
            installed = f"{package}/{source.relative_to(REPO / folder).as_posix()}"
            assert installed in names, f"{source} is missing from the wheel"
        assert f"{package}/py.typed" in names
    assert "bookrec/recommender/data/sample_catalog.jsonl" in names


def test_a_users_client_py_does_not_shadow_bookrec(fresh_env: FreshEnv, tmp_path: Path) -> None:
    (tmp_path / "client.py").write_text("WHO = 'the user'\n")
    script = (
        "import importlib.util, client\n"
        "from importlib.resources import files\n"
        "from bookrec.client import ClientConfig, EmbeddingClient\n"
        "from bookrec.recommender import Recommender, load_catalog\n"
        "from bookrec.client.testing import FakeSGLang\n"
        "import bookrec.client, bookrec.recommender\n"
        "print(client.WHO)\n"
        "print(importlib.util.find_spec('recommender'))\n"
        "print(bookrec.client.__file__)\n"
        "print(len(load_catalog(files('bookrec.recommender') / 'data/sample_catalog.jsonl')))\n"
    )
    result = _run(str(fresh_env.python), "-c", script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    who, recommender_spec, client_file, books = result.stdout.splitlines()
    assert who == "the user"
    assert recommender_spec == "None"
    assert Path(client_file).is_relative_to(fresh_env.python.parents[1])
    assert int(books) == 151


def test_console_scripts_run_from_the_wheel(fresh_env: FreshEnv, tmp_path: Path) -> None:
    result = _run(str(fresh_env.bin / "bookrec"), "--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"bookrec \d+\.\d+\.\d+\n", result.stdout)
    for argv in (
        [str(fresh_env.bin / "bookrec-cpu-server"), "--help"],
        [str(fresh_env.python), "-m", "bookrec.cpu_server", "--help"],
    ):
        result = _run(*argv, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "--model" in result.stdout


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("tokenizers") is None,
    reason="the CPU server needs torch and transformers (the cpu extra)",
)
def test_demo_from_the_wheel_starts_the_cpu_server(fresh_env: FreshEnv, tmp_path: Path) -> None:
    from tests.serving.conftest import build_tiny_model

    model = tmp_path / "tiny-model"
    model.mkdir()
    build_tiny_model(model)
    work = tmp_path / "work"
    work.mkdir()
    result = _run(
        str(fresh_env.bin / "bookrec"),
        "demo",
        "--no-progress",
        "--server-timeout",
        "120",
        cwd=work,
        timeout=300,
        env={
            "BOOKREC_BASE_URL": "http://127.0.0.1:9/v1",  # the discard port: nothing answers
            "BOOKREC_CPU_MODEL": str(model),
            "HF_HOME": str(tmp_path / "hf-home"),
            "PYTHONIOENCODING": "utf-8",
        },
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"mode     CPU server at http://127\.0\.0\.1:\d+/v1", result.stdout)
    assert "151 embedded" in result.stdout
    assert "LEXICAL" not in result.stdout
