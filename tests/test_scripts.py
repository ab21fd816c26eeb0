"""scripts/demo.sh and scripts/test.sh before they install anything: the Python they need.

Issue 11: with Python 3.10 both ended in pip's "No matching distribution found for ..." after a
while; now they say "bookrec needs Python >= 3.11" first, and create the virtual environment
with ``$PYTHON`` when it is set. The interpreters here are fakes (shell scripts that report a
version and log their arguments): nothing is installed and nothing touches the network.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ("scripts/demo.sh", "scripts/test.sh")


def _fake_python(path: Path, version: str, log: Path) -> Path:
    """An interpreter that logs its arguments, prints ``version`` for ``-c``, fails otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$0 $*" >> "{log}"\n'
        f'if [[ "$1" == "-c" ]]; then echo "{version}"; exit 0; fi\n'
        "exit 7\n"
    )
    path.chmod(0o755)
    return path


def _run(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "BOOKREC_VENV")}
    env["BOOKREC_VENV"] = str(tmp_path / "venv")  # none there: the script would create it
    env.update(extra)
    return env


@pytest.mark.parametrize("script", SCRIPTS)
def test_python_310_is_refused_before_anything_is_installed(script: str, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    fake = _fake_python(tmp_path / "py310" / "python3.10", "3.10", log)
    proc = _run(script, _env(tmp_path, PYTHON=str(fake)))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("bookrec needs Python >= 3.11;"), proc.stderr
    assert f"PYTHON ({fake}) is Python 3.10" in proc.stderr
    assert "No matching distribution" not in proc.stderr
    assert "-m venv" not in log.read_text()  # stopped before creating the environment
    assert not (tmp_path / "venv").exists()


@pytest.mark.parametrize("script", SCRIPTS)
def test_default_python3_on_path_is_checked(script: str, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    _fake_python(tmp_path / "bin" / "python3", "3.10", log)
    env = _env(tmp_path, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    proc = _run(script, env)
    assert proc.returncode == 1
    assert proc.stderr.startswith("bookrec needs Python >= 3.11;"), proc.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_python_is_honoured_to_create_the_venv(script: str, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    fake = _fake_python(tmp_path / "py312" / "python3.12", "3.12", log)
    proc = _run(script, _env(tmp_path, PYTHON=str(fake)))
    assert proc.returncode == 7  # the fake's `-m venv` fails: the script stops there
    assert f"{fake} -m venv {tmp_path / 'venv'}" in log.read_text()
    assert "bookrec needs" not in proc.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_an_old_existing_venv_is_named(script: str, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    _fake_python(tmp_path / "venv" / "bin" / "python", "3.9", log)
    proc = _run(script, _env(tmp_path))
    assert proc.returncode == 1
    assert proc.stderr.startswith("bookrec needs Python >= 3.11;"), proc.stderr
    assert f"the virtual environment {tmp_path / 'venv'}" in proc.stderr
    assert "is Python 3.9" in proc.stderr


def test_missing_interpreter(tmp_path: Path) -> None:
    proc = _run("scripts/demo.sh", _env(tmp_path, PYTHON=str(tmp_path / "no-such-python")))
    assert proc.returncode == 1
    assert proc.stderr.startswith("bookrec needs Python >= 3.11;"), proc.stderr
    assert "does not run" in proc.stderr


def test_demo_sh_tells_the_demo_where_the_user_stands(tmp_path: Path) -> None:
    """The demo runs in the repository root; its "Try it yourself" paths are shown relative to
    the directory the user ran scripts/demo.sh from (BOOKREC_INVOKED_FROM)."""
    venv = tmp_path / "venv"
    log = tmp_path / "calls.log"
    python = _fake_python(venv / "bin" / "python", "3.12", log)
    python.write_text(python.read_text().replace("exit 7\n", "exit 0\n"))  # pip "installs"
    bookrec = venv / "bin" / "bookrec"
    bookrec.write_text('#!/usr/bin/env bash\necho "from=$BOOKREC_INVOKED_FROM cwd=$PWD $*"\n')
    bookrec.chmod(0o755)
    user = tmp_path / "somewhere"
    user.mkdir()
    proc = subprocess.run(
        ["bash", str(REPO / "scripts/demo.sh"), "--mode", "lexical"],
        cwd=user,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"from={user} cwd={REPO} demo --mode lexical"
