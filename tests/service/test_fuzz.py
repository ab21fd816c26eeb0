"""Fuzzing the running service from its own OpenAPI spec (schemathesis): no input makes it
fail with a 5xx, and every answer, errors included, matches the documented schema."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from bookrec.client.testing import FakeSGLang
from tests.service.conftest import DIM, Service

#: Every operation of the spec; the test checks that the spec still lists all of them.
OPERATIONS = [
    "GET /v1/books/{id}",
    "PUT /v1/books/{id}",
    "DELETE /v1/books/{id}",
    "GET /v1/books/{id}/similar",
    "POST /v1/recommendations",
    "GET /v1/search",
    "GET /healthz",
    "GET /readyz",
]


@pytest.fixture(scope="module")
def fuzzed(start_service: Callable[..., Service]) -> Iterator[Service]:
    """A service of its own: the fuzzer adds and deletes books."""
    with FakeSGLang(dim=DIM) as fake:
        yield start_service(embedding=fake)


@pytest.fixture(scope="module")
def api_schema(fuzzed: Service) -> Any:
    """The spec as the running service serves it at /openapi.json."""
    return schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json")


def test_the_spec_lists_every_operation(api_schema: Any) -> None:
    found = {f"{op.method.upper()} {op.path}" for op in _operations(api_schema)}
    assert found == set(OPERATIONS)


def _operations(api_schema: Any) -> list[Any]:
    return [result.ok() for result in api_schema.get_all_operations()]


#: Operations without parameters have no invalid request to generate.
WITHOUT_PARAMETERS = {"GET /healthz", "GET /readyz"}


@pytest.mark.parametrize(
    ("name", "mode"),
    [(name, GenerationMode.POSITIVE) for name in OPERATIONS]
    + [(name, GenerationMode.NEGATIVE) for name in OPERATIONS if name not in WITHOUT_PARAMETERS],
)
def test_no_server_errors_and_documented_answers(
    api_schema: Any, name: str, mode: GenerationMode
) -> None:
    """Valid requests (positive) and requests that break the schema (negative, answered with
    a documented 4xx problem)."""
    (operation,) = [
        op for op in _operations(api_schema) if f"{op.method.upper()} {op.path}" == name
    ]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=20,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call_and_validate(
            checks=[not_a_server_error, response_schema_conformance], timeout=30
        )
        assert "Traceback" not in response.text

    fuzz()
