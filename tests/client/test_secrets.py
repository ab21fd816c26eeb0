"""Credentials in an endpoint URL (``http://user:password@host/v1``) are never shown or stored.

Messages, log lines, ``repr`` and the cache file show the URL as ``user:***@host``; the
credentials still reach the server as the SDK sends them.
"""

from __future__ import annotations

import base64
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bookrec.client import (
    ClientConfig,
    ConfigurationError,
    EmbeddingCache,
    EmbeddingRejected,
    EmbeddingUnavailable,
    Endpoint,
    ModelIdentity,
    RetryPolicy,
    list_models,
    wait_until_ready,
)
from bookrec.client._urls import mask_urls_in, mask_userinfo, strip_userinfo
from bookrec.client.testing import FakeSGLang

from .conftest import MakeClient

PASSWORD = "hunter2-Sup3rSecret"


def _with_userinfo(url: str, userinfo: str = f"alice:{PASSWORD}") -> str:
    return url.replace("http://", f"http://{userinfo}@", 1)


def _refusing_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (a fake server, started then stopped)."""
    server = FakeSGLang().start()
    url = server.base_url
    server.stop()
    return url


def _config(url: str, **changes: Any) -> ClientConfig:
    return ClientConfig(
        endpoints=(Endpoint(url, "key-0123456789abcdef"),),
        retry=RetryPolicy(max_attempts=2, jitter=False, initial_wait=0.01, max_wait=0.01),
        timeout=5.0,
        **changes,
    )


def test_the_helpers_mask_strip_and_leave_other_urls_alone() -> None:
    assert mask_userinfo(f"http://alice:{PASSWORD}@h:1/v1") == "http://alice:***@h:1/v1"
    assert mask_userinfo("https://token-only@h/v1") == "https://***@h/v1"
    assert mask_userinfo("http://u:p@ss@h/v1") == "http://u:***@h/v1"  # the last "@" ends it
    assert mask_userinfo("http://h:1/v1?next=a@b") == "http://h:1/v1?next=a@b"
    assert mask_userinfo("http://127.0.0.1:30000/v1") == "http://127.0.0.1:30000/v1"
    assert strip_userinfo(f"http://alice:{PASSWORD}@h:1/v1") == "http://h:1/v1"
    text = f"cannot reach http://a:{PASSWORD}@h/v1 or https://b:{PASSWORD}@g/v1"
    assert mask_urls_in(text) == "cannot reach http://a:***@h/v1 or https://b:***@g/v1"


def test_endpoint_and_config_reprs_mask_the_password() -> None:
    url = _with_userinfo("http://10.0.0.5:30000/v1")
    endpoint = Endpoint(url, "key-0123456789abcdef")
    assert endpoint.base_url == url  # what the SDK gets
    assert endpoint.display_url == "http://alice:***@10.0.0.5:30000/v1"
    config = ClientConfig(endpoints=(endpoint,))
    for shown in (repr(endpoint), repr(config), str(config)):
        assert PASSWORD not in shown
        assert "alice:***@10.0.0.5" in shown


def test_from_env_masks_the_password_of_bookrec_base_url() -> None:
    url = _with_userinfo("http://10.0.0.5:30000/v1")
    config = ClientConfig.from_env(environ={"BOOKREC_BASE_URL": url})
    assert config.endpoints[0].base_url == url
    assert PASSWORD not in repr(config)
    with pytest.raises(ConfigurationError) as info:
        ClientConfig.from_env(environ={"BOOKREC_BASE_URL": f"ftp://alice:{PASSWORD}@h/v1"})
    assert PASSWORD not in str(info.value)
    assert "alice:***@h" in str(info.value)


def test_an_invalid_url_is_refused_without_its_password() -> None:
    with pytest.raises(ConfigurationError) as info:
        Endpoint(_with_userinfo("http://[::1/v1"))
    assert PASSWORD not in str(info.value)


def test_a_refusing_server_never_shows_the_password(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    down = _with_userinfo(_refusing_url())
    up = FakeSGLang().start()
    try:
        # Two endpoints: the first one's failure is logged before the fallback answers.
        config = ClientConfig(
            endpoints=(Endpoint(down), Endpoint(_with_userinfo(up.base_url))),
            retry=RetryPolicy(max_attempts=2, jitter=False),
            timeout=5.0,
        )
        client = make_client(config)
        with caplog.at_level(logging.DEBUG, logger="bookrec"):
            vectors = client.embed_documents(["a book"])
            up.stop()
            with pytest.raises(EmbeddingUnavailable) as info:
                client.embed_documents(["another book"])
    finally:
        up.stop()
    assert vectors.shape[0] == 1
    error = info.value
    shown = [str(error), repr(error), str(error.endpoint), repr(client.config)]
    shown += [record.getMessage() for record in caplog.records]
    cause: BaseException | None = error
    while cause is not None:
        shown.append(str(cause))
        cause = cause.__cause__
    assert any("alice:***@127.0.0.1" in text for text in shown)
    for text in shown:
        assert PASSWORD not in text


def test_a_rejecting_server_never_shows_the_password(make_client: MakeClient) -> None:
    with FakeSGLang(api_key="the-right-key-0123456789") as server:
        client = make_client(_config(_with_userinfo(server.base_url)))
        with pytest.raises(EmbeddingRejected) as info:
            client.embed_documents(["a book"])
    assert info.value.status_code == 401
    assert PASSWORD not in str(info.value)
    assert PASSWORD not in str(info.value.endpoint)
    assert "alice:***@127.0.0.1" in str(info.value)


def test_the_credentials_still_reach_the_server(make_client: MakeClient) -> None:
    with FakeSGLang() as server:
        client = make_client(_config(_with_userinfo(server.base_url)))
        client.embed_documents(["a book"])
        [request] = [r for r in server.log if r.path.endswith("/embeddings")]
    # httpx turns the URL's userinfo into HTTP Basic credentials (in place of the bearer key).
    token = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {token}"


def test_the_cache_file_holds_no_credentials(make_client: MakeClient, tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    with FakeSGLang() as server:
        client = make_client(_config(_with_userinfo(server.base_url), cache_path=str(path)))
        client.embed_documents(["a book"])
        client.close()
        # The same server with other credentials finds the identity recorded before.
        other = _config(_with_userinfo(server.base_url, "bob:other"), cache_path=str(path))
        with EmbeddingCache(path) as cache:
            alias = f"{server.base_url}|{other.model}|None"
            assert cache.get_identity(alias) is not None
    raw = path.read_bytes()
    for suffix in ("-wal", "-shm"):
        extra = path.with_name(path.name + suffix)
        if extra.exists():
            raw += extra.read_bytes()
    assert PASSWORD.encode() not in raw
    with sqlite3.connect(path) as conn:
        aliases = [row[0] for row in conn.execute("SELECT alias FROM identities")]
    assert aliases == [f"{server.base_url}|{other.model}|None"]


def test_the_cache_strips_credentials_from_an_alias_it_is_given(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    with EmbeddingCache(path) as cache:
        cache.put_identity(f"http://alice:{PASSWORD}@h/v1|m|None", ModelIdentity("m", 64))
        assert cache.get_identity("http://h/v1|m|None") == ModelIdentity("m", 64)
    with sqlite3.connect(path) as conn:
        assert [r[0] for r in conn.execute("SELECT alias FROM identities")] == [
            "http://h/v1|m|None"
        ]


def test_health_helpers_never_show_the_password(caplog: pytest.LogCaptureFixture) -> None:
    url = _with_userinfo(_refusing_url())
    with caplog.at_level(logging.DEBUG, logger="bookrec"):
        with pytest.raises(EmbeddingUnavailable) as ready:
            wait_until_ready(url, timeout=0.3, interval=0.1)
        with pytest.raises(EmbeddingUnavailable) as models:
            list_models(url, timeout=2.0)
    shown = [str(ready.value), str(ready.value.endpoint), str(models.value)]
    shown += [str(models.value.endpoint), *(r.getMessage() for r in caplog.records)]
    assert any("alice:***@127.0.0.1" in text for text in shown)
    for text in shown:
        assert PASSWORD not in text


def test_client_reprs_mask_the_password() -> None:
    from bookrec.client import AsyncEmbeddingClient, ClientConfig, EmbeddingClient

    config = ClientConfig.from_env(
        environ={"BOOKREC_BASE_URL": "http://alice:hunter2pw@127.0.0.1:9/v1"}
    )
    with EmbeddingClient(config) as sync_client:
        assert "hunter2pw" not in repr(sync_client) and "alice:***@" in repr(sync_client)
    assert "hunter2pw" not in repr(AsyncEmbeddingClient(config))
