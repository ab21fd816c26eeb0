"""The API key stays off every command line the launch script starts, checked in /proc.

The launcher runs for real with stand-in commands: ``standin_worker`` as `sglang` (the fake
SGLang server behind the key it reads from ``--config``), the fake `smg` and `nvidia-smi` of
conftest. While the service runs, the command line of the launcher and of every process
below it is read from /proc/PID/cmdline, which any local user can read.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving import standin_worker
from tests.serving.conftest import (
    LAUNCH_SH,
    FakeTools,
    clean_env,
    free_port,
    free_port_pair,
    wait_until,
)

SECRET = "sk-never-in-argv-7d3f"
pytestmark = pytest.mark.timeout(120)


def descendants(root: int) -> list[int]:
    """`root` and every live process below it, from /proc's parent links."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def command_lines(root: int) -> dict[int, bytes]:
    lines = {}
    for pid in descendants(root):
        with contextlib.suppress(OSError):
            lines[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()
    return lines


@contextlib.contextmanager
def service(
    args: list[str], env: dict[str, str], tmp_path: Path
) -> Iterator[subprocess.Popen[str]]:
    """The launcher, running until the block ends; it must then exit 0."""
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        # Its own process group: a failing test kills the workers too, never leaves them.
        launcher = subprocess.Popen(
            [str(LAUNCH_SH), *args],
            env=env,
            stdout=stdout,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
    try:
        wait_until(
            lambda: launcher.poll() is not None or "ready" in out.read_text(), 60, "readiness"
        )
        assert launcher.poll() is None, err.read_text()
        yield launcher
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=30) == 0, err.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()


def standin_env(fake_tools: FakeTools, tmp_path: Path, **extra: str) -> dict[str, str]:
    standin_worker.install(fake_tools.bin_dir)
    reports = tmp_path / "reports"
    reports.mkdir()
    return fake_tools.env(STANDIN_DIR=str(reports), **extra)


def reports(env: dict[str, str], count: int = 1) -> list[dict[str, Any]]:
    """The stand-ins' reports, once at least `count` have written one (a stand-in answers
    readiness probes a moment before its first report)."""
    directory = Path(env["STANDIN_DIR"])
    wait_until(lambda: len(list(directory.glob("*.json"))) >= count, 10, "the stand-ins")
    return [standin_worker.report(p) for p in sorted(directory.glob("*.json"))]


def assert_no_command_line_holds_the_key(launcher: subprocess.Popen[str], count: int) -> None:
    lines = command_lines(launcher.pid)
    # The launcher, its workers and the gateway at least (SGLang or smg may add helpers).
    assert len(lines) >= count, lines
    for pid, line in lines.items():
        assert SECRET.encode() not in line, f"pid {pid}: {line!r}"


def assert_key_file_was_private(report: dict[str, Any], text: str) -> None:
    assert report["config_text"] == text
    assert report["file_mode"] == 0o600
    assert report["dir_mode"] == 0o700
    config = Path(report["cmdline"][report["cmdline"].index("--config") + 1])
    # Read at start-up, then removed with its directory once the service was ready.
    assert not config.parent.exists()


KEY_LINE = f'api-key: "{SECRET}"\n'


def test_single_worker_reads_the_key_from_its_private_file(
    fake_tools: FakeTools, tmp_path: Path
) -> None:
    env = standin_env(fake_tools, tmp_path, BOOKREC_API_KEY=SECRET)
    port = free_port()
    with service(["--port", str(port)], env, tmp_path) as launcher:
        assert_no_command_line_holds_the_key(launcher, 2)
        (report,) = reports(env)
        assert_key_file_was_private(report, KEY_LINE)
        url = f"http://127.0.0.1:{port}/v1/embeddings"
        body = {"model": "Qwen/Qwen3-Embedding-0.6B", "input": ["a quiet mystery"]}
        assert httpx.post(url, json=body, timeout=10).status_code == 401
        auth = {"Authorization": f"Bearer {SECRET}"}
        assert httpx.post(url, json=body, headers=auth, timeout=10).status_code == 200


@pytest.mark.parametrize(
    "args",
    [["--gpus", "0,1"], ["--workers-per-gpu", "2"]],
    ids=["two-gpus", "two-workers-per-gpu"],
)
def test_workers_and_gateway_get_the_key_off_their_command_lines(
    fake_tools: FakeTools, tmp_path: Path, args: list[str]
) -> None:
    env = standin_env(fake_tools, tmp_path, BOOKREC_API_KEY=SECRET)
    base = free_port_pair()
    args = [*args, "--port", str(free_port()), "--worker-base-port", str(base)]
    args += ["--gateway-metrics-port", str(free_port())]
    with service(args, env, tmp_path) as launcher:
        assert_no_command_line_holds_the_key(launcher, 4)
        workers = reports(env, 2)
        assert len(workers) == 2
        for report in workers:
            assert_key_file_was_private(report, KEY_LINE)
        (gateway,) = [e for e in fake_tools.events() if e["prog"] == "smg"]
        # The bootstrap put the key into smg's own argument list, inside the process.
        assert gateway["argv"][-2:] == ["--api-key", SECRET]


def test_a_key_after_the_dashes_leaves_the_children_command_lines(
    fake_tools: FakeTools, tmp_path: Path
) -> None:
    env = standin_env(fake_tools, tmp_path)
    args = ["--port", str(free_port()), "--", "--api-key", SECRET]
    with service(args, env, tmp_path) as launcher:
        lines = command_lines(launcher.pid)
        # The launcher's own command line holds what the user typed; its children's do not.
        assert SECRET.encode() in lines.pop(launcher.pid)
        assert lines
        assert not [line for line in lines.values() if SECRET.encode() in line]
        (report,) = reports(env)
        assert_key_file_was_private(report, KEY_LINE)


def test_the_users_config_file_is_merged_with_the_key(
    fake_tools: FakeTools, tmp_path: Path
) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("log-level: debug\nmax-running-requests: 64")
    env = standin_env(fake_tools, tmp_path, BOOKREC_API_KEY=SECRET)
    args = ["--port", str(free_port()), "--", "--config", str(mine)]
    with service(args, env, tmp_path) as launcher:
        assert_no_command_line_holds_the_key(launcher, 2)
        (report,) = reports(env)
        assert report["cmdline"].count("--config") == 1
        assert_key_file_was_private(
            report, "log-level: debug\nmax-running-requests: 64\n" + KEY_LINE
        )
    assert mine.read_text() == "log-level: debug\nmax-running-requests: 64"


def test_without_waiting_the_key_file_still_goes_once_sglang_is_ready(
    fake_tools: FakeTools, tmp_path: Path
) -> None:
    env = standin_env(fake_tools, tmp_path, BOOKREC_API_KEY=SECRET)
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        launcher = subprocess.Popen(
            [str(LAUNCH_SH), "--port", str(free_port()), "--no-wait"],
            env=env,
            stdout=stdout,
            stderr=stderr,
            text=True,
        )
    try:
        reports_dir = Path(env["STANDIN_DIR"])
        wait_until(lambda: any(reports_dir.glob("*.json")), 30, "the stand-in")
        (report,) = reports(env)
        config = Path(report["cmdline"][report["cmdline"].index("--config") + 1])
        wait_until(lambda: not config.parent.exists(), 15, "the key file to go")
        assert report["config_text"] == KEY_LINE
        assert launcher.poll() is None, err.read_text()
        assert_no_command_line_holds_the_key(launcher, 2)
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=30) == 0, err.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()


def test_no_key_no_file(fake_tools: FakeTools, tmp_path: Path) -> None:
    env = standin_env(fake_tools, tmp_path)
    with service(["--port", str(free_port())], env, tmp_path):
        (report,) = reports(env)
        assert "--config" not in report["cmdline"]
        assert report["api_key_set"] is False


def test_an_interrupted_start_leaves_no_key_file(fake_tools: FakeTools) -> None:
    # conftest's fake `sglang` never gets ready here: the launcher gives up and cleans up.
    env = fake_tools.env(BOOKREC_API_KEY=SECRET, FAKE_MODE="never")
    result = subprocess.run(
        [str(LAUNCH_SH), "--port", str(free_port()), "--wait-timeout", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "not ready after 2 s" in result.stderr
    (start,) = [e for e in fake_tools.events() if e["event"] == "start"]
    assert SECRET not in start["argv"]
    config = Path(start["argv"][start["argv"].index("--config") + 1])
    assert config.name == "sglang-config.yaml"
    assert not config.parent.exists()


def test_the_reranker_reads_the_key_from_a_private_file_of_its_own(
    fake_tools: FakeTools, tmp_path: Path
) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("log-level: debug\n")
    env = standin_env(fake_tools, tmp_path, BOOKREC_API_KEY=SECRET)
    port, rerank_port = free_port(), free_port()
    args = ["--port", str(port), "--reranker", "0.6B", "--reranker-port", str(rerank_port)]
    with service([*args, "--", "--config", str(mine)], env, tmp_path) as launcher:
        # The launcher, the embedding server and the reranker.
        assert_no_command_line_holds_the_key(launcher, 3)
        by_port = {report["port"]: report for report in reports(env, 2)}
        reranker = by_port[rerank_port]
        assert "Qwen/Qwen3-Reranker-0.6B" in reranker["cmdline"]
        assert "--is-embedding" not in reranker["cmdline"]
        config = Path(reranker["cmdline"][reranker["cmdline"].index("--config") + 1])
        assert config.name == "sglang-reranker-config.yaml"
        # The key alone: the user's --config after `--` is the embedding server's.
        assert_key_file_was_private(reranker, KEY_LINE)
        assert_key_file_was_private(by_port[port], "log-level: debug\n" + KEY_LINE)
        url = f"http://127.0.0.1:{rerank_port}/v1/embeddings"
        body = {"model": "Qwen/Qwen3-Reranker-0.6B", "input": ["a quiet mystery"]}
        assert httpx.post(url, json=body, timeout=10).status_code == 401
        auth = {"Authorization": f"Bearer {SECRET}"}
        assert httpx.post(url, json=body, headers=auth, timeout=10).status_code == 200


def test_without_waiting_the_reranker_key_file_goes_once_both_are_ready(
    fake_tools: FakeTools, tmp_path: Path
) -> None:
    env = standin_env(fake_tools, tmp_path, BOOKREC_API_KEY=SECRET)
    rerank_port = free_port()
    args = ["--port", str(free_port()), "--reranker", "0.6B", "--reranker-port", str(rerank_port)]
    launcher = subprocess.Popen(
        [str(LAUNCH_SH), *args, "--no-wait"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        found = reports(env, 2)
        config = Path(found[0]["cmdline"][found[0]["cmdline"].index("--config") + 1])
        wait_until(lambda: not config.parent.exists(), 15, "the key files to go")
        assert sorted(report["config_text"] for report in reports(env, 2)) == [KEY_LINE] * 2
        assert_no_command_line_holds_the_key(launcher, 3)
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=30) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()


def test_cpu_mode_serves_the_reranker_with_the_key_off_every_command_line(
    tiny_model: Path, tiny_reranker: Path, tmp_path: Path
) -> None:
    """The real CPU servers, embeddings and reranker, both behind the key from the environment."""
    port, rerank_port = free_port(), free_port()
    args = ["--cpu", "--model", str(tiny_model), "--port", str(port)]
    args += ["--reranker", str(tiny_reranker), "--reranker-port", str(rerank_port)]
    env = clean_env(BOOKREC_API_KEY=SECRET)
    with service([*args, "--", "--threads", "1"], env, tmp_path) as launcher:
        assert_no_command_line_holds_the_key(launcher, 3)
        stdout = (tmp_path / "stdout.txt").read_text()
        assert f"Reranker ready: http://127.0.0.1:{rerank_port}/v1/rerank" in stdout
        url = f"http://127.0.0.1:{rerank_port}/v1/rerank"
        body = {"query": "a quiet mystery", "documents": ["a story", "a book"], "top_n": 2}
        assert httpx.post(url, json=body, timeout=30).status_code == 401
        auth = {"Authorization": f"Bearer {SECRET}"}
        answer = httpx.post(url, json=body, headers=auth, timeout=60)
        assert answer.status_code == 200, answer.text
        assert sorted(item["index"] for item in answer.json()) == [0, 1]
        embeddings = httpx.post(
            f"http://127.0.0.1:{port}/v1/embeddings",
            json={"model": str(tiny_model), "input": ["a quiet mystery"]},
            headers=auth,
            timeout=60,
        )
        assert embeddings.status_code == 200, embeddings.text
