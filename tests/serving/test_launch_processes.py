"""The launch script running for real, with fake `sglang`, `smg`, `nvidia-smi` commands:
preflight failures, the readiness wait, the gateway mode, the reranker, the supervision of
children."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serving.conftest import (
    LAUNCH_PY,
    LAUNCH_SH,
    FakeTools,
    clean_env,
    free_port,
    free_port_pair,
    run_launch,
    wait_until,
)


@contextlib.contextmanager
def launched(
    args: list[str], env: dict[str, str], tmp_path: Path, *, stop: int = signal.SIGTERM
) -> Iterator[subprocess.Popen[str]]:
    """The launch script running in the background; `stop` ends it, and it must exit 0."""
    with (tmp_path / "stdout.txt").open("w") as out, (tmp_path / "stderr.txt").open("w") as err:
        # Its own process group: a failing test kills the workers too, never leaves them.
        launcher = subprocess.Popen(
            [str(LAUNCH_SH), *args],
            env=env,
            stdout=out,
            stderr=err,
            text=True,
            start_new_session=True,
        )
    try:
        yield launcher
        launcher.send_signal(stop)
        assert launcher.wait(timeout=30) == 0, output(tmp_path)[1]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()


def wait_for_ready(launcher: subprocess.Popen[str], tmp_path: Path) -> None:
    wait_until(
        lambda: launcher.poll() is not None or "ready" in output(tmp_path)[0],
        30,
        "the ready message",
    )
    assert launcher.poll() is None, f"the launcher exited:\n{output(tmp_path)[1]}"


def output(tmp_path: Path) -> tuple[str, str]:
    return (tmp_path / "stdout.txt").read_text(), (tmp_path / "stderr.txt").read_text()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); look at its state.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


# --------------------------------------------------------------------------- preflight


def test_missing_sglang_says_how_to_install_it() -> None:
    result = run_launch("--port", str(free_port()))
    assert result.returncode == 1
    assert "pip install 'bookrec[server]'" in result.stderr
    assert "lmsysorg/sglang" in result.stderr


def test_no_gpu_points_to_cpu_mode(fake_tools: FakeTools) -> None:
    result = run_launch("--port", str(free_port()), env=fake_tools.env(with_gpu=False))
    assert result.returncode == 1
    assert "no NVIDIA GPU" in result.stderr
    assert "--cpu" in result.stderr
    assert fake_tools.events() == []


def test_port_in_use_is_refused(fake_tools: FakeTools) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_launch("--port", str(port), env=fake_tools.env())
    assert result.returncode == 1
    assert f"port {port}" in result.stderr
    assert "already in use" in result.stderr
    assert fake_tools.events() == []


def test_gpus_beyond_the_visible_ones_are_refused(fake_tools: FakeTools) -> None:
    result = run_launch("--gpus", "0,5", "--port", str(free_port()), env=fake_tools.env())
    assert result.returncode == 1
    assert "only 2 GPU(s)" in result.stderr


def test_gateway_mode_needs_smg(fake_tools: FakeTools) -> None:
    fake_tools.remove("smg")
    env = fake_tools.env()
    # Without this interpreter's bin directory on PATH, where the dev extra installs smg.
    env["PATH"] = os.pathsep.join([str(fake_tools.bin_dir), "/usr/bin", "/bin"])
    env["BOOKREC_PYTHON"] = sys.executable
    result = run_launch("--gpus", "0,1", "--port", str(free_port()), env=env)
    assert result.returncode == 1
    assert "pip install smg" in result.stderr


# The CPU server with torch and transformers made unimportable (None in sys.modules).
_CPU_SERVER_WITHOUT_TORCH = (
    "import sys; sys.modules['torch'] = sys.modules['transformers'] = None; "
    "from bookrec.cpu_server.__main__ import main; sys.exit(main(['--model', 'x']))"
)


@pytest.mark.parametrize(
    "argv",
    [
        # -S hides site-packages: this interpreter then has neither torch nor bookrec.
        ["-S", str(LAUNCH_PY), "--cpu", "--port", "30999"],
        ["-c", _CPU_SERVER_WITHOUT_TORCH],
    ],
    ids=["launcher", "cpu-server"],
)
def test_cpu_mode_without_torch_names_the_extra_to_install(argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, env=clean_env(), check=False
    )
    assert result.returncode == 1
    # The launcher names the install of its clone (-m pip install -e '<clone>[cpu]').
    assert "pip install 'bookrec[cpu]'" in result.stderr or "[cpu]'" in result.stderr


# --------------------------------------------------------------------------- running


def test_single_gpu_waits_for_ready_prints_url_and_stops_on_sigterm(
    fake_tools: FakeTools, tmp_path: Path
) -> None:
    port = free_port()
    env = fake_tools.env(BOOKREC_API_KEY="from-bookrec", SGLANG_API_KEY="from-sglang")
    with launched(["--port", str(port), "--host", "127.0.0.1"], env, tmp_path) as launcher:
        wait_for_ready(launcher, tmp_path)
        stdout, stderr = output(tmp_path)
        assert f"http://127.0.0.1:{port}/v1" in stdout
        assert f"curl -s http://127.0.0.1:{port}/v1/embeddings" in stdout
        assert "Authorization: Bearer $BOOKREC_API_KEY" in stdout
        assert "from-bookrec" not in stdout + stderr
        (start,) = [e for e in fake_tools.events() if e["event"] == "start"]
        assert start["prog"] == "sglang"
        argv = start["argv"]
        assert argv[0] == "serve"
        # The key is in a file SGLang reads (tests/serving/test_launch_secrets.py reads it).
        assert "--api-key" not in argv
        assert Path(argv[argv.index("--config") + 1]).name == "sglang-config.yaml"
        assert argv[argv.index("--port") + 1] == str(port)
        assert start["cuda"] is None
    assert [e["event"] for e in fake_tools.events()] == ["start", "stop"]
    assert not pid_alive(start["pid"])


def test_ctrl_c_stops_the_service(fake_tools: FakeTools, tmp_path: Path) -> None:
    args = ["--port", str(free_port())]
    with launched(args, fake_tools.env(), tmp_path, stop=signal.SIGINT) as launcher:
        wait_for_ready(launcher, tmp_path)
    assert [e["event"] for e in fake_tools.events()] == ["start", "stop"]


def test_old_server_without_ready_falls_back_to_health_generate(
    fake_tools: FakeTools, tmp_path: Path
) -> None:
    env = fake_tools.env(FAKE_MODE="legacy")
    with launched(["--port", str(free_port())], env, tmp_path) as launcher:
        wait_for_ready(launcher, tmp_path)
        assert "polling /health_generate" in output(tmp_path)[1]


def test_readiness_timeout_stops_the_child_and_fails(fake_tools: FakeTools) -> None:
    env = fake_tools.env(FAKE_MODE="never")
    result = run_launch("--port", str(free_port()), "--wait-timeout", "2", env=env)
    assert result.returncode == 1
    assert "not ready after 2 s" in result.stderr
    assert [e["event"] for e in fake_tools.events()] == ["start", "stop"]


def test_child_crash_during_start_fails_with_its_status(fake_tools: FakeTools) -> None:
    result = run_launch("--port", str(free_port()), env=fake_tools.env(FAKE_MODE="crash"))
    assert result.returncode == 1
    assert "exited with status 3 before it was ready" in result.stderr


def test_child_death_after_start_ends_the_launcher_with_its_status(
    fake_tools: FakeTools,
) -> None:
    result = run_launch(
        "--port", str(free_port()), "--no-wait", env=fake_tools.env(FAKE_MODE="die")
    )
    assert result.returncode == 5
    assert "sglang exited with status 5" in result.stderr
    assert "not waiting for readiness" in result.stderr


def test_gpus_run_workers_then_the_gateway_and_stop_them_all(
    fake_tools: FakeTools, tmp_path: Path
) -> None:
    base, port = free_port_pair(), free_port()
    args = ["--gpus", "0,1", "--port", str(port), "--worker-base-port", str(base)]
    with launched(args, fake_tools.env(BOOKREC_API_KEY="gw-key"), tmp_path) as launcher:
        wait_for_ready(launcher, tmp_path)
        stdout, _ = output(tmp_path)
        assert "2 SGLang workers behind the gateway" in stdout
        starts = [e for e in fake_tools.events() if e["event"] == "start"]
        assert [e["prog"] for e in starts] == ["sglang", "sglang", "smg"]
        # The workers start together; their log lines may come in either order.
        for gpu, worker in enumerate(sorted(starts[:2], key=lambda e: str(e["cuda"]))):
            assert worker["cuda"] == str(gpu)
            argv = worker["argv"]
            assert argv[argv.index("--port") + 1] == str(base + gpu)
            assert argv[argv.index("--host") + 1] == "127.0.0.1"
            assert "--api-key" not in argv
            assert "--config" in argv
        gateway = starts[2]["argv"]
        assert gateway[0] == "launch"
        assert gateway[gateway.index("--port") + 1] == str(port)
        # Handed over inside the process: the gateway's sys.argv has it, its command line not.
        assert gateway[gateway.index("--api-key") + 1] == "gw-key"
        # The gateway checked its workers at start-up and found them up.
        assert not [e for e in fake_tools.events() if e["event"] == "worker-down"]
    stops = [e for e in fake_tools.events() if e["event"] == "stop"]
    assert sorted(e["pid"] for e in stops) == sorted(e["pid"] for e in starts)
    # The gateway goes first, the workers after it.
    assert stops[0]["prog"] == "smg"


def test_no_wait_supervises_without_waiting_for_readiness(
    fake_tools: FakeTools, tmp_path: Path
) -> None:
    args = ["--port", str(free_port()), "--no-wait"]
    with launched(args, fake_tools.env(), tmp_path):
        wait_until(lambda: "not waiting" in output(tmp_path)[1], 30, "the launcher")
        assert "ready" not in output(tmp_path)[0]


# --------------------------------------------------------------------------- the reranker


def reranker_mode(fake_tools: FakeTools, mode: str) -> None:
    """Only the fake `sglang` started for a Qwen3-Reranker runs in FAKE_MODE `mode`."""
    real = fake_tools.bin_dir / "real"
    real.mkdir()
    (fake_tools.bin_dir / "sglang").rename(real / "sglang")
    wrapper = fake_tools.bin_dir / "sglang"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'case "$*" in *Qwen3-Reranker*) export FAKE_MODE={mode} ;; esac\n'
        f'exec "{real / "sglang"}" "$@"\n'
    )
    wrapper.chmod(0o755)


def reranker_args(*extra: str) -> tuple[list[str], int, int]:
    port, rerank_port = free_port(), free_port()
    args = ["--port", str(port), "--reranker", "0.6B", "--reranker-port", str(rerank_port)]
    return [*args, *extra], port, rerank_port


def test_reranker_starts_beside_the_embedding_server_and_stops_with_it(
    fake_tools: FakeTools, tmp_path: Path
) -> None:
    args, port, rerank_port = reranker_args()
    with launched(args, fake_tools.env(BOOKREC_API_KEY="rr-key"), tmp_path) as launcher:
        wait_for_ready(launcher, tmp_path)
        stdout, stderr = output(tmp_path)
        assert f"Embedding service ready: http://127.0.0.1:{port}/v1" in stdout
        assert f"Reranker ready: http://127.0.0.1:{rerank_port}/v1/rerank" in stdout
        assert f"curl -s http://127.0.0.1:{rerank_port}/v1/rerank" in stdout
        assert "rr-key" not in stdout + stderr
        starts = [e for e in fake_tools.events() if e["event"] == "start"]
        assert [e["prog"] for e in starts] == ["sglang", "sglang"]
        (reranker,) = [e for e in starts if "Qwen/Qwen3-Reranker-0.6B" in e["argv"]]
        argv = reranker["argv"]
        assert argv[argv.index("--port") + 1] == str(rerank_port)
        assert "--is-embedding" not in argv
        assert "--disable-radix-cache" in argv
        assert Path(argv[argv.index("--chat-template") + 1]).is_file()
        assert "--api-key" not in argv
        assert Path(argv[argv.index("--config") + 1]).name == "sglang-reranker-config.yaml"
        assert reranker["cuda"] is None
    stops = [e for e in fake_tools.events() if e["event"] == "stop"]
    assert sorted(e["pid"] for e in stops) == sorted(e["pid"] for e in starts)
    assert not any(pid_alive(e["pid"]) for e in starts)


def test_reranker_beside_the_gateway_is_no_worker_of_it(
    fake_tools: FakeTools, tmp_path: Path
) -> None:
    base = free_port_pair()
    args, _, rerank_port = reranker_args("--gpus", "0,1", "--worker-base-port", str(base))
    args += ["--gateway-metrics-port", str(free_port())]
    with launched(args, fake_tools.env(), tmp_path) as launcher:
        wait_for_ready(launcher, tmp_path)
        stdout = output(tmp_path)[0]
        assert "2 SGLang workers behind the gateway" in stdout
        assert f"Reranker ready: http://127.0.0.1:{rerank_port}/v1/rerank" in stdout
        starts = [e for e in fake_tools.events() if e["event"] == "start"]
        assert sorted(e["prog"] for e in starts) == ["sglang", "sglang", "sglang", "smg"]
        (reranker,) = [e for e in starts if "Qwen/Qwen3-Reranker-0.6B" in e["argv"]]
        assert reranker["cuda"] == "0"
        assert reranker["argv"][reranker["argv"].index("--port") + 1] == str(rerank_port)
        gateway = starts[-1]["argv"]
        urls = gateway[gateway.index("--worker-urls") + 1 : gateway.index("--policy")]
        assert urls == [f"http://127.0.0.1:{base}", f"http://127.0.0.1:{base + 1}"]
    stops = [e for e in fake_tools.events() if e["event"] == "stop"]
    assert len(stops) == 4
    assert stops[0]["prog"] == "smg"


def test_reranker_not_ready_in_time_stops_everything_and_fails(fake_tools: FakeTools) -> None:
    reranker_mode(fake_tools, "never")
    args, _, _ = reranker_args("--wait-timeout", "2")
    result = run_launch(*args, env=fake_tools.env())
    assert result.returncode == 1
    assert "reranker was not ready after 2 s" in result.stderr
    events = [e["event"] for e in fake_tools.events()]
    assert sorted(events) == ["start", "start", "stop", "stop"]


def test_reranker_crash_during_start_fails_with_its_status(fake_tools: FakeTools) -> None:
    reranker_mode(fake_tools, "crash")
    args, _, _ = reranker_args()
    result = run_launch(*args, env=fake_tools.env())
    assert result.returncode == 1
    assert "reranker exited with status 3 before it was ready" in result.stderr
    assert [e["event"] for e in fake_tools.events()].count("stop") == 1


def test_reranker_death_after_start_ends_the_launcher_with_its_status(
    fake_tools: FakeTools,
) -> None:
    reranker_mode(fake_tools, "die")
    args, _, _ = reranker_args("--no-wait")
    result = run_launch(*args, env=fake_tools.env())
    assert result.returncode == 5
    assert "reranker exited with status 5; stopping the others" in result.stderr


def test_reranker_port_in_use_is_refused(fake_tools: FakeTools) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        result = run_launch(
            "--port",
            str(free_port()),
            "--reranker",
            "0.6B",
            "--reranker-port",
            str(taken),
            env=fake_tools.env(),
        )
    assert result.returncode == 1
    assert f"port {taken} on 127.0.0.1 is already in use" in result.stderr
    assert fake_tools.events() == []


def test_reranker_gpu_beyond_the_visible_ones_is_refused(fake_tools: FakeTools) -> None:
    args, _, _ = reranker_args("--reranker-gpu", "5")
    result = run_launch(*args, env=fake_tools.env())
    assert result.returncode == 1
    assert "the reranker's GPU 5 is not visible (only 2 GPU(s))" in result.stderr
    assert fake_tools.events() == []
