"""The deployment files parse, expose the right port and probes, request GPUs, and start the
service with the same flags the launch script would use."""

from __future__ import annotations

import configparser
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.serving.conftest import REPO, clean_env, run_launch
from tests.serving.test_launch_dry_run import load_launcher

DEPLOY = REPO / "deploy"
DIMS_0_6B = [32, 64, 128, 256, 512, 768, 1024]


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def env_example() -> dict[str, str]:
    values = {}
    for line in (DEPLOY / "embedding.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key] = value
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR} and ${VAR:-default}."""

    def value(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(3) or ""
        return env.get(name) or default

    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", value, text)


def dry_run_flags(args: list[str]) -> list[str]:
    """The sglang flags the launch script prints for `args` (program words removed)."""
    result = run_launch(*args, "--dry-run", env=clean_env())
    assert result.returncode == 0, result.stderr
    (line,) = [ln for ln in result.stdout.splitlines() if ln and not ln.startswith("#")]
    words = shlex.split(line)
    return words[words.index("serve") + 1 :] if "serve" in words else words


# --------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_sglang_service(compose: dict[str, Any]) -> None:
    sglang = compose["services"]["sglang"]
    image = sglang["image"]
    assert re.fullmatch(r"lmsysorg/sglang:v\d+\.\d+\.\d+", image), "pin a release tag"
    (device,) = sglang["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert device["capabilities"] == ["gpu"]
    assert sglang["ports"] == [
        "${BOOKREC_PUBLISH_ADDRESS:-127.0.0.1}:${BOOKREC_SERVE_PORT:-30000}:30000"
    ]
    assert sglang["environment"]["BOOKREC_API_KEY"] == "${BOOKREC_API_KEY:-}"
    assert "hf-cache:/root/.cache/huggingface" in sglang["volumes"]
    assert "hf-cache" in compose["volumes"]
    health = sglang["healthcheck"]
    assert "http://127.0.0.1:30000/health" in health["test"]
    assert health["timeout"] == "30s"
    assert "profiles" not in sglang


def test_compose_cpu_profile(compose: dict[str, Any]) -> None:
    cpu = compose["services"]["cpu"]
    assert cpu["profiles"] == ["cpu"]
    assert cpu["build"]["dockerfile"] == "deploy/cpu.Dockerfile"
    assert (REPO / cpu["build"]["dockerfile"]).is_file()
    assert cpu["ports"] == compose["services"]["sglang"]["ports"]
    assert cpu["environment"]["BOOKREC_API_KEY"] == "${BOOKREC_API_KEY:-}"
    assert "http://127.0.0.1:30000/health" in " ".join(cpu["healthcheck"]["test"])


@pytest.mark.parametrize("service", ["sglang", "cpu"])
@pytest.mark.parametrize("env", [{}, "example"], ids=["defaults", "env-example"])
def test_compose_commands_are_valid_launch_script_calls(
    compose: dict[str, Any], service: str, env: dict[str, str] | str
) -> None:
    values = env_example() if env == "example" else {}
    assert isinstance(values, dict)
    args = shlex.split(interpolate(compose["services"][service]["command"], values))
    flags = dry_run_flags(args)
    assert flags[flags.index("--host") + 1] == "0.0.0.0"
    assert flags[flags.index("--port") + 1] == "30000"
    if service == "sglang":
        assert "--is-embedding" in flags
        assert compose["services"]["sglang"]["entrypoint"][-1].endswith("launch_server.py")
    else:
        assert "bookrec.cpu_server" in flags


def test_cpu_dockerfile_runs_the_launch_script_in_cpu_mode() -> None:
    text = (DEPLOY / "cpu.Dockerfile").read_text()
    assert "torch==2.13.0" in text
    assert "COPY deploy/cpu_server deploy/cpu_server" in text
    assert 'pip install --no-cache-dir ".[cpu]"' in text
    assert 'ENTRYPOINT ["python3", "/opt/bookrec/scripts/launch_server.py"]' in text
    assert '"--cpu"' in text


# --------------------------------------------------------------------------- kubernetes


@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict[str, Any]]:
    docs: dict[tuple[str, str], dict[str, Any]] = {}
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        for doc in load_all(DEPLOY / "k8s" / name):
            docs[(doc["kind"], doc["metadata"]["name"])] = doc
    listed = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == listed
    return docs


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def test_worker_deployment_requests_one_gpu_per_pod(k8s: dict[tuple[str, str], Any]) -> None:
    worker = k8s[("Deployment", "bookrec-embed-worker")]
    spec = worker["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    c = container(worker)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert c["image"] == "lmsysorg/sglang:v0.5.23"
    assert c["ports"] == [{"name": "http", "containerPort": 30000}]
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"


def test_worker_probes(k8s: dict[tuple[str, str], Any]) -> None:
    c = container(k8s[("Deployment", "bookrec-embed-worker")])
    ready, live, startup = c["readinessProbe"], c["livenessProbe"], c["startupProbe"]
    assert ready["httpGet"] == {"path": "/ready", "port": "http"}
    assert live["httpGet"] == {"path": "/health", "port": "http"}
    assert live["timeoutSeconds"] >= 25
    assert startup["httpGet"]["path"] == "/ready"
    # Long enough to download the weights and capture CUDA graphs.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 1200


KEY_FILE = "/run/bookrec/sglang-config.yaml"


def test_worker_args_are_what_the_launch_script_runs(k8s: dict[tuple[str, str], Any]) -> None:
    worker = k8s[("Deployment", "bookrec-embed-worker")]
    c = container(worker)
    assert c["command"] == ["sglang", "serve"]
    expected = dry_run_flags(
        ["--model", "0.6B", "--host", "0.0.0.0", "--enable-metrics", "--api-key", "x" * 16]
    )
    expected[expected.index("--config") + 1] = KEY_FILE
    assert c["args"] == expected
    # No key on the command line, none in the server's environment either.
    assert "--api-key" not in c["args"]
    assert not any("API_KEY" in e["name"] for e in c["env"])
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/run/bookrec"]["readOnly"] is True
    volumes = {v["name"]: v for v in worker["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts["/run/bookrec"]["name"]]["emptyDir"]["medium"] == "Memory"


def test_worker_init_container_writes_the_key_file_the_launcher_would(
    k8s: dict[tuple[str, str], Any], tmp_path: Path
) -> None:
    (init,) = k8s[("Deployment", "bookrec-embed-worker")]["spec"]["template"]["spec"][
        "initContainers"
    ]
    assert init["image"] == container(k8s[("Deployment", "bookrec-embed-worker")])["image"]
    key = next(e for e in init["env"] if e["name"] == "BOOKREC_API_KEY")
    assert key["valueFrom"]["secretKeyRef"] == {"name": "bookrec-embed", "key": "api-key"}
    assert init["command"][:2] == ["python3", "-c"]
    assert init["command"][3] == KEY_FILE
    assert {m["mountPath"] for m in init["volumeMounts"]} == {"/run/bookrec"}
    # Run the init program for real; it must write what the launch script writes.
    secret = 'a "quoted" key: with # and \\ and unicode \u00e9'
    target = tmp_path / "sglang-config.yaml"
    subprocess.run(
        [sys.executable, "-c", init["command"][2], str(target)],
        env={"BOOKREC_API_KEY": secret},
        check=True,
    )
    assert target.stat().st_mode & 0o777 == 0o600
    assert target.read_text() == load_launcher().sglang_config_text(secret, None)
    assert yaml.safe_load(target.read_text()) == {"api-key": secret}


def test_services_route_to_their_pods(k8s: dict[tuple[str, str], Any]) -> None:
    for service, deployment in (
        ("bookrec-embed-worker", "bookrec-embed-worker"),
        ("bookrec-embed", "bookrec-embed-gateway"),
    ):
        svc = k8s[("Service", service)]["spec"]
        pods = k8s[("Deployment", deployment)]["spec"]["template"]["metadata"]["labels"]
        assert svc["selector"].items() <= pods.items()
        assert svc["ports"] == [{"name": "http", "port": 30000, "targetPort": "http"}]


def test_gateway_discovers_the_workers(k8s: dict[tuple[str, str], Any]) -> None:
    gateway = k8s[("Deployment", "bookrec-embed-gateway")]
    c = container(gateway)
    assert re.fullmatch(r"lightseekorg/smg:\d+\.\d+\.\d+", c["image"])
    args = c["args"]
    assert args[0] == "launch"
    selector = args[args.index("--selector") + 1]
    key, value = selector.split("=")
    worker_labels = k8s[("Deployment", "bookrec-embed-worker")]["spec"]["template"]["metadata"][
        "labels"
    ]
    assert worker_labels[key] == value
    assert args[args.index("--service-discovery-port") + 1] == "30000"
    assert args[args.index("--policy") + 1] == "round_robin"
    assert args[args.index("--port") + 1] == "30000"
    # The key: from the Secret into the environment, handed to smg in-process by the same
    # program the launch script runs.
    assert "--api-key" not in args
    assert c["command"] == ["python3", "-c", load_launcher().GATEWAY_BOOTSTRAP, "smg"]
    key = next(e for e in c["env"] if e["name"] == "BOOKREC_API_KEY")
    assert key["valueFrom"]["secretKeyRef"] == {"name": "bookrec-embed", "key": "api-key"}
    assert c["readinessProbe"]["httpGet"]["path"] == "/readiness"
    assert c["livenessProbe"]["timeoutSeconds"] >= 25
    account = gateway["spec"]["template"]["spec"]["serviceAccountName"]
    binding = k8s[("RoleBinding", "bookrec-embed-gateway")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account}]
    (rule,) = k8s[("Role", binding["roleRef"]["name"])]["rules"]
    assert rule["resources"] == ["pods"]
    assert set(rule["verbs"]) == {"get", "list", "watch"}


# --------------------------------------------------------------------------- systemd


def test_systemd_unit_starts_the_launch_script() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    unit.read(DEPLOY / "systemd" / "bookrec-embedding.service")
    service = unit["Service"]
    assert service["EnvironmentFile"] == "-/etc/bookrec/embedding.env"
    assert service["KillMode"] == "mixed"
    assert service["Restart"] == "on-failure"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    exec_start = shlex.split(service["ExecStart"])
    assert exec_start[0] == "/opt/bookrec/scripts/launch_server.sh"
    # The unit's defaults, then the example env file, as systemd expands them.
    text = (DEPLOY / "systemd" / "bookrec-embedding.service").read_text()
    defaults = dict(re.findall(r"^Environment=(BOOKREC_\w+)=(.*)$", text, flags=re.M))
    for env in (defaults, {**defaults, **env_example()}):
        args: list[str] = []
        for word in exec_start[1:]:
            if word.startswith("${"):
                args.append(env[word[2:-1]])
            elif word.startswith("$"):
                args += env[word[1:]].split()
            else:
                args.append(word)
        flags = dry_run_flags(args)
        assert "--is-embedding" in flags
        assert flags[flags.index("--host") + 1] == env["BOOKREC_SERVE_HOST"]


def test_env_example_holds_no_real_secret() -> None:
    values = env_example()
    assert values["BOOKREC_API_KEY"] == "replace-with-a-long-random-string"
    assert values["HF_TOKEN"] == ""
