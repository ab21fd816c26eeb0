"""Matryoshka ``dimensions``: validated, sent when the server accepts it, else client-side."""

from __future__ import annotations

import numpy as np
import pytest

from bookrec.client import ClientConfig, ConfigurationError, Endpoint, ModelIdentity
from bookrec.client.testing import FakeSGLang, fake_vector
from tests.client.conftest import MakeClient, config_for


def truncated(text: str, full: int, dims: int) -> np.ndarray:
    vec = fake_vector(text, full)[:dims]
    return vec / np.linalg.norm(vec)


def test_dimensions_are_sent_to_a_matryoshka_server(make_client: MakeClient) -> None:
    with FakeSGLang(dim=128, matryoshka=True) as server:
        client = make_client(config_for(server, dimensions=48))
        vectors = client.embed_documents(["Dune", "Emma"])
        assert [r.get("dimensions") for r in server.requests] == [48]
    assert vectors.shape == (2, 48)
    np.testing.assert_allclose(vectors[0], truncated("Dune", 128, 48), atol=1e-6)
    assert client.identity == ModelIdentity("Qwen/Qwen3-Embedding-0.6B", 48)


def test_without_server_support_the_client_truncates_and_remembers(
    make_client: MakeClient,
) -> None:
    with FakeSGLang(dim=128) as server:  # no Matryoshka override: dimensions -> 400
        client = make_client(config_for(server, dimensions=40))
        first = client.embed_documents(["Dune", "Emma"])
        second = client.embed_documents(["Ulysses"])
        sent = [r.get("dimensions") for r in server.requests]
    assert sent == [40, None, None]  # refused once, then never sent again
    np.testing.assert_allclose(first[1], truncated("Emma", 128, 40), atol=1e-6)
    np.testing.assert_allclose(second[0], truncated("Ulysses", 128, 40), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-6)
    assert client.identity == ModelIdentity("Qwen/Qwen3-Embedding-0.6B", 40)


def test_a_width_outside_the_servers_list_falls_back_to_the_client(
    make_client: MakeClient,
) -> None:
    with FakeSGLang(dim=128, matryoshka=[32, 64, 128]) as server:
        client = make_client(config_for(server, dimensions=50))
        vectors = client.embed_documents(["Dune"])
    np.testing.assert_allclose(vectors[0], truncated("Dune", 128, 50), atol=1e-6)


def test_server_and_client_truncation_agree(make_client: MakeClient) -> None:
    with FakeSGLang(dim=128, matryoshka=True) as a, FakeSGLang(dim=128) as b:
        on_server = make_client(config_for(a, dimensions=64)).embed_documents(["Dune"])
        on_client = make_client(config_for(b, dimensions=64)).embed_documents(["Dune"])
    np.testing.assert_allclose(on_server, on_client, atol=1e-6)


def test_full_width_when_not_set(fake_server: FakeSGLang, make_client: MakeClient) -> None:
    client = make_client(config_for(fake_server))
    client.embed_documents(["Dune"])
    assert "dimensions" not in fake_server.requests[0]


@pytest.mark.parametrize("dims", [0, 16, 31, -1])
def test_too_small_dimensions_are_refused(dims: int) -> None:
    with pytest.raises(ConfigurationError, match="32"):
        ClientConfig(dimensions=dims)


def test_dimensions_above_a_known_models_width_are_refused() -> None:
    assert ClientConfig(model="Qwen/Qwen3-Embedding-0.6B", dimensions=1024).dimensions == 1024
    with pytest.raises(ConfigurationError, match="1024"):
        ClientConfig(model="Qwen/Qwen3-Embedding-0.6B", dimensions=1025)
    assert ClientConfig(model="/models/Qwen3-Embedding-8B", dimensions=4096).dimensions == 4096


def test_dimensions_above_the_served_width_are_refused(make_client: MakeClient) -> None:
    with FakeSGLang(dim=64, model_path="some/model") as server:
        client = make_client(
            ClientConfig(endpoints=(Endpoint(server.base_url),), model="x", dimensions=100)
        )
        with pytest.raises(ConfigurationError, match="exceeds the width"):
            client.embed_documents(["Dune"])
