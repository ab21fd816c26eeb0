"""The real `smg` gateway in front of fake SGLang workers, over real HTTP.

smg (SGLang's model gateway, a Rust binary in a PyPI wheel) needs no GPU to route
`/v1/embeddings`: these tests run it as the launch script does, over stand-in workers
(``standin_worker``: the fake SGLang server as `sglang serve`), and check what the
multi-worker mode relies on: requests spread over the workers, a killed worker is routed
around, the API key is required at the gateway and on the workers, the served name and the
model path both reach the model, and no command line holds the key. Skipped without smg.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving import standin_worker
from tests.serving.conftest import (
    LAUNCH_SH,
    VENV_BIN,
    FakeTools,
    free_port,
    free_port_pair,
    wait_until,
)
from tests.serving.test_launch_dry_run import load_launcher
from tests.serving.test_launch_secrets import command_lines

SMG = shutil.which("smg", path=VENV_BIN)
pytestmark = [
    pytest.mark.skipif(SMG is None, reason="smg is not installed (pip install smg)"),
    pytest.mark.timeout(180),
]
KEY = "gw-3c9a-secret"
SERVED = "qwen3-embedding-0.6b"
MODEL_PATH = "Qwen/Qwen3-Embedding-0.6B"
# Routes the fake SGLang server answers; smg asks its workers for more (reported, not failed).
FAKE_ROUTES = {"/health", "/health_generate", "/ready", "/v1/models", "/model_info"}
FAKE_ROUTES |= {"/get_model_info", "/v1/embeddings"}


def embed(url: str, model: str, key: str | None = KEY, text: str = "a quiet mystery") -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "input": [text]}
    response = httpx.post(f"{url}/v1/embeddings", json=body, headers=headers, timeout=30)
    if response.status_code == 200:
        data = response.json()
        assert len(data["data"][0]["embedding"]) == standin_worker.DIM
        assert data["model"] == MODEL_PATH  # SGLang answers with the path, whatever was asked
    return response.status_code


def counts(directory: Path) -> dict[int, int]:
    return {int(p.stem): standin_worker.report(p)["embeddings"] for p in directory.glob("*.json")}


def settled_counts(directory: Path, total: int) -> dict[int, int]:
    """The workers' counts once their reports (written every 50 ms) add up to `total`."""
    wait_until(lambda: sum(counts(directory).values()) >= total, 10, f"{total} requests")
    return counts(directory)


# --------------------------------------------------------------------------- via the launcher


@pytest.fixture
def launched_gateway(
    fake_tools: FakeTools, tmp_path: Path
) -> Iterator[tuple[str, Path, subprocess.Popen[str]]]:
    """launch_server.sh --workers-per-gpu 2 with the stand-in `sglang` and the real smg."""
    fake_tools.remove("smg")
    standin_worker.install(fake_tools.bin_dir)
    reports = tmp_path / "reports"
    reports.mkdir()
    env = fake_tools.env(BOOKREC_API_KEY=KEY, STANDIN_DIR=str(reports))
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    # Free ports are only free when they are picked: another process may take one before the
    # launcher checks it (it refuses a port in use), so a start refused for that is tried again
    # with other ports.
    for _attempt in range(3):
        port, base = free_port(), free_port_pair()
        args = [
            "--workers-per-gpu",
            "2",
            "--served-model-name",
            SERVED,
            "--port",
            str(port),
            "--worker-base-port",
            str(base),
            "--gateway-metrics-port",
            str(free_port()),
        ]
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
                lambda proc=launcher: (
                    proc.poll() is not None or "Embedding service ready" in out.read_text()
                ),
                90,
                "the gateway",
            )
        except BaseException:
            _stop_group(launcher)
            raise
        if launcher.poll() is None or "already in use" not in err.read_text():
            break
    try:
        assert launcher.poll() is None, err.read_text()
        assert "2 SGLang workers behind the gateway" in out.read_text()
        yield f"http://127.0.0.1:{port}", reports, launcher
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=60) == 0, err.read_text()[-3000:]
    finally:
        _stop_group(launcher)


def _stop_group(launcher: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(launcher.pid, signal.SIGKILL)
    launcher.wait()


def test_launcher_gateway_spreads_requests_over_the_workers(
    launched_gateway: tuple[str, Path, subprocess.Popen[str]],
) -> None:
    url, reports, _ = launched_gateway
    assert [embed(url, SERVED, text=f"book {i}") for i in range(8)] == [200] * 8
    assert sorted(settled_counts(reports, 8).values()) == [4, 4]  # round_robin


def test_launcher_gateway_requires_the_key_and_passes_it_to_the_workers(
    launched_gateway: tuple[str, Path, subprocess.Popen[str]],
) -> None:
    url, reports, launcher = launched_gateway
    assert embed(url, SERVED, key=None) == 401
    assert embed(url, SERVED, key="wrong") == 401
    assert embed(url, SERVED) == 200
    # The gateway sent its key to the workers (the only requests they have had so far).
    settled_counts(reports, 1)
    seen = {a for p in reports.glob("*.json") for a in standin_worker.report(p)["authorizations"]}
    assert seen == {f"Bearer {KEY}"}
    # The workers require it too: straight to a worker, without the key, is refused.
    workers = sorted(int(p.stem) for p in reports.glob("*.json"))
    assert len(workers) == 2
    for port in workers:
        assert embed(f"http://127.0.0.1:{port}", SERVED, key=None) == 401
        assert embed(f"http://127.0.0.1:{port}", SERVED) == 200
    # Neither the real smg nor anything else below the launcher shows the key in /proc.
    lines = command_lines(launcher.pid)
    assert any(b"smg" in line for line in lines.values()), lines
    assert not [line for line in lines.values() if KEY.encode() in line]


def test_launcher_gateway_accepts_the_served_name_and_the_model_path(
    launched_gateway: tuple[str, Path, subprocess.Popen[str]],
) -> None:
    url, _, _ = launched_gateway
    assert embed(url, SERVED) == 200
    assert embed(url, MODEL_PATH) == 200  # through the gateway's --model-alias
    assert embed(url, "another-model") == 404
    models = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert [m["id"] for m in models.json()["data"]] == [SERVED]


def test_routes_smg_polls_on_its_workers(
    launched_gateway: tuple[str, Path, subprocess.Popen[str]],
) -> None:
    """smg asks workers for more than the fake serves: listed here, answered 404 by the fake."""
    url, reports, _ = launched_gateway
    assert embed(url, SERVED) == 200
    settled_counts(reports, 1)
    asked = {path for p in reports.glob("*.json") for path in standin_worker.report(p)["paths"]}
    assert {"/health", "/v1/models", "/model_info"} <= asked
    missing = sorted(asked - FAKE_ROUTES)
    sys.stderr.write(f"routes smg asked the fake workers for that it lacks: {missing}\n")


# --------------------------------------------------------------------------- a killed worker


@contextlib.contextmanager
def worker(port: int, reports: Path, config: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A stand-in worker process (the fake SGLang server) with the key from `config`."""
    process = subprocess.Popen(
        [
            sys.executable,
            standin_worker.__file__,
            "serve",
            "--model-path",
            MODEL_PATH,
            "--port",
            str(port),
            "--config",
            str(config),
            "--served-model-name",
            SERVED,
        ],
        env={**os.environ, "STANDIN_DIR": str(reports)},
    )
    try:
        wait_until(
            lambda: process.poll() is not None or (reports / f"{port}.json").exists(),
            30,
            "a stand-in worker",
        )
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)


@contextlib.contextmanager
def gateway(worker_ports: list[int], log: Path) -> Iterator[str]:
    """The real smg, started with the command line the launch script gives it."""
    launcher = load_launcher()
    port = free_port()
    words = ["launch", "--worker-urls", *(f"http://127.0.0.1:{p}" for p in worker_ports)]
    words += ["--policy", "round_robin", "--host", "127.0.0.1", "--port", str(port)]
    words += ["--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]
    words += ["--model-alias", f"{MODEL_PATH}={SERVED}"]
    assert SMG is not None
    python = launcher.script_interpreter(SMG)
    with log.open("w") as out:
        process = subprocess.Popen(
            [*python, "-c", launcher.GATEWAY_BOOTSTRAP, SMG, *words],
            env={**os.environ, "BOOKREC_API_KEY": KEY},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, log.read_text()[-3000:]
        with contextlib.suppress(httpx.HTTPError):
            answer = httpx.get(f"{url}/readiness", timeout=2)
            return answer.status_code == 200 and answer.json()["healthy_workers"] == len(
                worker_ports
            )
        return False

    try:
        wait_until(ready, 60, "smg")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_killed_worker_is_routed_around(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    config = tmp_path / "sglang-config.yaml"
    config.write_text(load_launcher().sglang_config_text(KEY, None))
    ports = [free_port(), free_port()]
    with (
        worker(ports[0], reports, config),
        worker(ports[1], reports, config) as doomed,
        gateway(ports, tmp_path / "smg.log") as url,
    ):
        assert [embed(url, SERVED, text=f"first {i}") for i in range(6)] == [200] * 6
        assert settled_counts(reports, 6) == {ports[0]: 3, ports[1]: 3}
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
        # Every request still succeeds: smg retries on the live worker and, after its health
        # checks fail, stops sending to the dead one.
        assert [embed(url, SERVED, text=f"after {i}") for i in range(10)] == [200] * 10
        assert embed(url, MODEL_PATH) == 200
        wait_until(lambda: counts(reports)[ports[0]] == 3 + 11, 10, "the survivor's count")
        log = (tmp_path / "smg.log").read_text()
    assert f"127.0.0.1:{ports[1]}" in log  # smg logged the failed sends to the dead worker
