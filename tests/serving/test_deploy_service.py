"""The recommendation service's deployment files (Compose, Kubernetes, systemd): `bookrec serve`
command lines that bookrec's own parser accepts, 0.0.0.0 only inside a container with API keys
from a secret, probes on /readyz and /healthz, no secret on any command line."""

from __future__ import annotations

import argparse
import configparser
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from bookrec.recommender.cli.parser import build_parser
from tests.serving.conftest import REPO
from tests.serving.test_deploy_files import env_example, interpolate, load_all

DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s" / "serve"
UNIT = DEPLOY / "systemd" / "bookrec-serve.service"
# Where systemd puts the unit's credentials (%d, $CREDENTIALS_DIRECTORY).
CREDENTIALS_DIR = "/run/credentials/bookrec-serve.service"


def parse_serve(words: list[str]) -> argparse.Namespace:
    """``bookrec WORDS`` as bookrec's parser reads them (SystemExit on an unknown option)."""
    assert words[0] == "serve", words
    args = build_parser().parse_args(words)
    assert args.command == "serve"
    return args


def assert_no_secret_on_command_line(words: list[str]) -> None:
    for word in words:
        assert not word.startswith("--api-key="), words
        assert word != "--api-key", "the embedding key goes in BOOKREC_API_KEY, not argv"
        assert "replace-with" not in word, words
        if word.startswith("postgresql://"):
            assert urlsplit(word).password is None, word


# --------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("env", ["defaults", "env-example"])
def test_compose_serve_command_is_accepted_by_bookrec(compose: dict[str, Any], env: str) -> None:
    serve = compose["services"]["serve"]
    values = env_example() if env == "env-example" else {}
    words = [interpolate(str(w), values) for w in serve["command"]]
    assert_no_secret_on_command_line(words)
    args = parse_serve(words)
    assert args.index == "/data/index" and args.catalog == "/data/catalog.jsonl"
    assert args.workers >= 1
    assert str(args.port) == "8080"
    # 0.0.0.0 inside the container, and then always with keys from the secret file.
    assert args.host == "0.0.0.0"
    secret_dir, _, secret = args.api_keys_file.rpartition("/")
    assert secret_dir == "/run/secrets"
    assert secret in serve["secrets"]
    assert compose["secrets"][secret]["file"].startswith("${BOOKREC_API_KEYS_FILE:-")
    assert "BOOKREC_SERVE_API_KEYS" not in serve.get("environment", {})


def test_compose_serve_is_published_locally_with_a_readiness_check(
    compose: dict[str, Any],
) -> None:
    serve = compose["services"]["serve"]
    assert serve["profiles"] == ["serve"]
    # The same image as the index job: one bookrec image with the service extra.
    assert serve["image"] == compose["services"]["index"]["image"]
    assert serve["build"] == compose["services"]["index"]["build"]
    (port,) = serve["ports"]
    published = interpolate(port, {})
    assert published == "127.0.0.1:8080:8080"
    assert interpolate(port, env_example()).startswith("127.0.0.1:")
    health = " ".join(serve["healthcheck"]["test"])
    assert "http://127.0.0.1:8080/readyz" in health
    assert serve["restart"] == "unless-stopped"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in serve["volumes"]}
    assert mounts["/data/index"] == "index-data" and "index-data" in compose["volumes"]
    assert serve["environment"]["BOOKREC_BASE_URL"].endswith("http://sglang:30000/v1}")
    assert serve["environment"]["OPENBLAS_NUM_THREADS"] == "1"


def test_bookrec_image_installs_the_service_extra() -> None:
    text = (DEPLOY / "bookrec.Dockerfile").read_text()
    assert 'pip install --no-cache-dir ".[serve]"' in text
    assert "EXPOSE 8080" in text


def test_api_keys_example_holds_only_placeholders_and_the_copy_is_ignored() -> None:
    lines = [
        line
        for line in (DEPLOY / "api-keys.txt.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines and all(line.startswith("replace-with-") for line in lines)
    assert any(line.endswith(":write") for line in lines)
    ignored = (DEPLOY / ".gitignore").read_text().split()
    assert "/api-keys.txt" in ignored


# --------------------------------------------------------------------------- kubernetes


def _k8s() -> dict[tuple[str, str], Any]:
    docs: dict[tuple[str, str], Any] = {}
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {p.name for p in K8S.glob("*.yaml")} - {
        "kustomization.yaml"
    }
    for name in kustomization["resources"]:
        for doc in load_all(K8S / name):
            docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], Any]:
    return _k8s()


def _container(k8s: dict[tuple[str, str], Any]) -> dict[str, Any]:
    (only,) = k8s[("Deployment", "bookrec-serve")]["spec"]["template"]["spec"]["containers"]
    return dict(only)


def test_k8s_serve_args_are_accepted_by_bookrec(k8s: dict[tuple[str, str], Any]) -> None:
    c = _container(k8s)
    assert c["command"] == ["bookrec"]
    assert_no_secret_on_command_line(c["args"])
    args = parse_serve(c["args"])
    # Every replica reads the one PostgreSQL store of deploy/k8s/postgres.
    assert urlsplit(args.store).hostname == "bookrec-pg"
    assert args.host == "0.0.0.0"
    (port,) = c["ports"]
    assert port == {"name": "http", "containerPort": int(args.port)}
    assert c["image"] == "bookrec:0.1.0"


def test_k8s_serve_keys_and_passwords_come_from_secrets(k8s: dict[tuple[str, str], Any]) -> None:
    env = {e["name"]: e for e in _container(k8s)["env"]}
    for name, secret, key in (
        ("BOOKREC_SERVE_API_KEYS", "bookrec-serve", "api-keys"),
        ("PGPASSWORD", "bookrec-pg", "password"),
        ("BOOKREC_API_KEY", "bookrec-embed", "api-key"),
    ):
        assert "value" not in env[name], name
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": key}
    assert env["BOOKREC_BASE_URL"]["value"] == "http://bookrec-embed:30000/v1"
    # One BLAS thread per request thread (scripts/bench_service.py: the default thrashes).
    assert env["OPENBLAS_NUM_THREADS"]["value"] == "1"


def test_k8s_serve_probes_and_replicas(k8s: dict[tuple[str, str], Any]) -> None:
    deployment = k8s[("Deployment", "bookrec-serve")]
    assert deployment["spec"]["replicas"] >= 2
    c = _container(k8s)
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    startup = c["startupProbe"]
    assert startup["httpGet"]["path"] == "/healthz"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    # Longer than the preStop pause plus a request's timeout (30 s by default).
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 35
    pdb = k8s[("PodDisruptionBudget", "bookrec-serve")]
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]


def test_k8s_service_routes_to_the_pods(k8s: dict[tuple[str, str], Any]) -> None:
    deployment = k8s[("Deployment", "bookrec-serve")]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for selector in (
        k8s[("Service", "bookrec-serve")]["spec"]["selector"],
        k8s[("PodDisruptionBudget", "bookrec-serve")]["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    assert k8s[("Service", "bookrec-serve")]["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http"}
    ]


# --------------------------------------------------------------------------- systemd


def _unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    unit.read(UNIT)
    return unit


def _exec_start(env: dict[str, str]) -> list[str]:
    """ExecStart as systemd expands it: ${VAR} one word, $VAR split on spaces, %d."""
    words: list[str] = []
    for word in shlex.split(_unit()["Service"]["ExecStart"]):
        if word.startswith("${"):
            words.append(env[word[2:-1]])
        elif word.startswith("$"):
            words += env[word[1:]].split()
        else:
            words.append(word.replace("%d", CREDENTIALS_DIR))
    return words


@pytest.mark.parametrize("with_env_file", [False, True], ids=["defaults", "env-example"])
def test_systemd_unit_runs_bookrec_serve(with_env_file: bool) -> None:
    text = UNIT.read_text()
    defaults = dict(re.findall(r"^Environment=(BOOKREC_\w+)=(.*)$", text, flags=re.M))
    env = {**defaults, **env_example()} if with_env_file else defaults
    words = _exec_start(env)
    assert words[0] == "/opt/bookrec/.venv/bin/bookrec"
    assert_no_secret_on_command_line(words)
    args = parse_serve(words[1:])
    assert args.host == env["BOOKREC_HTTP_HOST"] == "127.0.0.1"
    assert str(args.port) == env["BOOKREC_HTTP_PORT"]
    assert args.workers == int(env["BOOKREC_HTTP_WORKERS"])
    assert Path(args.index).parent == Path(args.catalog).parent == Path("/var/lib/bookrec")
    # The keys: a systemd credential, read by the service from its credentials directory.
    assert args.api_keys_file == f"{CREDENTIALS_DIR}/api-keys"
    assert _unit()["Service"]["LoadCredential"] == "api-keys:/etc/bookrec/api-keys"


def test_systemd_unit_service_settings() -> None:
    unit = _unit()
    service = unit["Service"]
    assert service["EnvironmentFile"] == "-/etc/bookrec/embedding.env"
    assert service["User"] == "bookrec"
    assert service["StateDirectory"] == "bookrec"
    assert service["KillMode"] == "mixed"
    assert service["Restart"] == "on-failure"
    assert service["NoNewPrivileges"] == "true"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "BOOKREC_SERVE_API_KEYS" not in UNIT.read_text()
    assert "Environment=OPENBLAS_NUM_THREADS=1" in UNIT.read_text().splitlines()


# --------------------------------------------------------------------------- documentation


def test_deploy_readme_documents_the_service() -> None:
    text = (DEPLOY / "README.md").read_text()
    section = text[text.index("## The recommendation service") :]
    for needle in (
        "--profile serve",
        "deploy/k8s/serve",
        "bookrec-serve.service",
        "/readyz",
        "/healthz",
        "BOOKREC_SERVE_API_KEYS",
        "--api-keys-file",
        "LoadCredential",
        "scripts/bench_service.py",
    ):
        assert needle in section, needle
