"""The PostgreSQL deployment files: a pinned pgvector image behind a health check, no password
in any file or command line, and indexing commands that bookrec's own parser accepts."""

from __future__ import annotations

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
K8S = DEPLOY / "k8s" / "postgres"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data["services"]  # type: ignore[no-any-return]


def _bookrec_calls(shell: str) -> list[list[str]]:
    """The bookrec invocations of a `sh -c` line, each parsed by bookrec's own parser."""
    calls = []
    for part in shell.split("&&"):
        words = shlex.split(part)
        assert words[0] == "bookrec", part
        build_parser().parse_args(words[1:])  # raises SystemExit on an unknown option
        calls.append(words[1:])
    return calls


def _assert_dsn_without_password(words: list[str]) -> None:
    dsn = words[words.index("--store") + 1]
    parts = urlsplit(dsn)
    assert parts.scheme == "postgresql" and parts.password is None, dsn


def test_compose_postgres_is_pinned_healthy_and_local(services: dict[str, Any]) -> None:
    pg = services["postgres"]
    assert pg["profiles"] == ["postgres"]
    image, _, tag = pg["image"].partition(":")
    assert image == "pgvector/pgvector" and tag.startswith("0.8.") and "pg18" in tag
    assert pg["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    (port,) = pg["ports"]
    assert interpolate(port, {}).startswith("127.0.0.1:")
    # No default password: compose refuses to start until the env file sets one.
    assert pg["environment"]["POSTGRES_PASSWORD"].startswith("${BOOKREC_PG_PASSWORD:?")


def test_compose_index_job_migrates_then_indexes(services: dict[str, Any]) -> None:
    job = services["index"]
    assert job["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert job["environment"]["PGPASSWORD"].startswith("${BOOKREC_PG_PASSWORD:?")
    (shell,) = job["command"]
    migrate, index = _bookrec_calls(shell)
    assert migrate[:2] == ["db", "migrate"] and index[0] == "index"
    for words in (migrate, index):
        _assert_dsn_without_password(words)
    assert (DEPLOY / job["build"]["dockerfile"].removeprefix("deploy/")).is_file()


def test_bookrec_image_installs_the_postgres_extra() -> None:
    text = (DEPLOY / "bookrec.Dockerfile").read_text()
    assert 'pip install --no-cache-dir ".[postgres]"' in text
    assert 'ENTRYPOINT ["bookrec"]' in text


def _k8s() -> dict[tuple[str, str], Any]:
    docs: dict[tuple[str, str], Any] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_all(path):
            docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_k8s_statefulset_probes_and_secret() -> None:
    docs = _k8s()
    sts = docs[("StatefulSet", "bookrec-pg")]
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    assert (
        container["image"]
        == yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["postgres"]["image"]
    )
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"][0] == "pg_isready"
    env = {e["name"]: e for e in container["env"]}
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "bookrec-pg"
    assert sts["spec"]["volumeClaimTemplates"]
    service = docs[("Service", "bookrec-pg")]
    assert service["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]


def test_k8s_index_job_shares_one_build() -> None:
    job = _k8s()[("Job", "bookrec-index")]
    assert job["spec"]["parallelism"] > 1
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["sh", "-c"]
    for words in _bookrec_calls(container["args"][0]):
        _assert_dsn_without_password(words)
    env = {e["name"]: e for e in container["env"]}
    assert "value" not in env["PGPASSWORD"]  # from the Secret, never inline


def test_env_example_has_only_a_placeholder_password() -> None:
    assert env_example()["BOOKREC_PG_PASSWORD"] == "replace-with-another-long-random-string"


def test_deploy_readme_says_when_to_move_and_how_to_scale() -> None:
    text = Path(DEPLOY / "README.md").read_text()
    for needle in ("## PostgreSQL", "pg_basebackup", "Citus", "SKIP LOCKED", "PGPASSWORD"):
        assert needle in text, needle
