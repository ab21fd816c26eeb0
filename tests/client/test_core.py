"""The parts without I/O: parsing, batching, token estimates, Retry-After, the breaker."""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import pytest

from bookrec.client import EmbeddingRejected, EmbeddingResponseError, estimate_tokens, is_cjk
from bookrec.client._breaker import CircuitBreaker
from bookrec.client._flow import is_input_specific
from bookrec.client._planning import plan_batches
from bookrec.client._text import truncate_to_tokens
from bookrec.client._wire import parse_response, parse_retry_after
from tests.client.conftest import FakeClock


def body(embeddings: list[object], indices: list[int] | None = None, model: str = "m") -> bytes:
    data = [
        {"object": "embedding", "embedding": e, "index": i}
        for e, i in zip(embeddings, indices or range(len(embeddings)), strict=True)
    ]
    return json.dumps({"object": "list", "data": data, "model": model}).encode()


def b64(vec: list[float]) -> str:
    return base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode()


def test_parses_floats_and_base64_alike() -> None:
    floats = parse_response(body([[1.0, 2.0], [3.0, 4.0]]), 2)
    b64s = parse_response(body([b64([1.0, 2.0]), b64([3.0, 4.0])]), 2)
    assert floats[0] == b64s[0] == "m"
    np.testing.assert_array_equal(floats[1], b64s[1])
    assert b64s[1].dtype == np.float32


def test_sorts_by_index() -> None:
    _, matrix = parse_response(body([[1.0, 0.0], [0.0, 1.0]], indices=[1, 0]), 2)
    np.testing.assert_array_equal(matrix, [[0.0, 1.0], [1.0, 0.0]])


@pytest.mark.parametrize(
    ("content", "expected", "message"),
    [
        (body([[1.0], [2.0]], indices=[0, 0]), 2, "permutation"),
        (body([[1.0], [2.0]], indices=[0, 2]), 2, "permutation"),
        (body([[1.0]]), 2, "sent 2 inputs but got 1"),
        (body([[1.0, 2.0], [1.0]]), 2, "unequal"),
        (body([[1.0, None]]), 1, "non-finite"),  # JSON null, as SGLang sends NaN
        (body([[1.0, "x"]]), 1, "non-numeric"),
        (body([[1.0, float("inf")]]), 1, "non-finite"),
        (body([b64([1.0, float("nan")])]), 1, "non-finite"),
        (body([b64([1.0, 2.0]), b64([1.0])]), 2, "unequal"),
        (body(["not base64!"]), 1, "base64"),
        (body([{"x": 1}]), 1, "neither"),
        (body([[1.0]], model=""), 1, "model"),
        (b'{"data": [', 1, "JSON"),
        (b'{"error": "x"}', 1, "'data'"),
    ],
)
def test_refuses_bad_bodies(content: bytes, expected: int, message: str) -> None:
    with pytest.raises(EmbeddingResponseError, match=message):
        parse_response(content, expected)


def test_batches_by_count_and_tokens() -> None:
    tokens = [10, 10, 10, 10, 10]
    assert plan_batches(range(5), tokens, batch_size=2, max_batch_tokens=100) == [
        [0, 1],
        [2, 3],
        [4],
    ]
    assert plan_batches(range(5), tokens, batch_size=10, max_batch_tokens=30) == [
        [0, 1, 2],
        [3, 4],
    ]
    # a text over the budget travels alone
    assert plan_batches(range(3), [5, 50, 5], batch_size=10, max_batch_tokens=20) == [
        [0],
        [1],
        [2],
    ]


def test_token_estimates() -> None:
    assert estimate_tokens("abcd" * 10) == 10
    assert estimate_tokens("读书使人充实") == 6  # a CJK character is about one token
    assert estimate_tokens("读书 read") == 2 + 2  # 2 CJK + ceil(5 / 4)
    assert estimate_tokens("こんにちは") == 5


@pytest.mark.parametrize(
    ("text", "cjk"),
    [
        ("红楼梦", True),
        ("ノルウェイの森", True),
        ("채식주의자", True),
        ("Dune，a novel", True),  # full-width punctuation
        ("Dune", False),
        ("Les Misérables", False),
        ("", False),
    ],
)
def test_cjk_detection(text: str, cjk: bool) -> None:
    assert is_cjk(text) is cjk


@pytest.mark.parametrize("text", ["abcdefgh" * 50, "读书使人充实" * 40, "mixed 读书 text " * 30])
@pytest.mark.parametrize("limit", [1, 7, 40])
def test_truncation_is_the_longest_prefix_within_the_limit(text: str, limit: int) -> None:
    cut = truncate_to_tokens(text, limit)
    assert text.startswith(cut)
    assert estimate_tokens(cut) <= limit
    assert estimate_tokens(text[: len(cut) + 1]) > limit


def test_short_text_is_not_truncated() -> None:
    assert truncate_to_tokens("short", 100) == "short"


def test_retry_after_forms() -> None:
    assert parse_retry_after(httpx.Headers({"retry-after": "7"})) == 7.0
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250"})) == 0.25
    assert parse_retry_after(httpx.Headers({})) is None
    assert parse_retry_after(httpx.Headers({"retry-after": "soon"})) is None
    past = parse_retry_after(httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    assert past == 0.0


def test_breaker_cycle() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=2, cooldown=10, clock=clock)
    assert breaker.allow() and breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    assert breaker.retry_in() == 10
    clock.advance(10)
    assert breaker.allow()  # the probe
    assert breaker.state == "half-open"
    assert not breaker.allow()  # only one probe at a time
    breaker.record_failure()  # probe failed: open again at once
    assert breaker.state == "open"
    clock.advance(10)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow()


def test_a_lost_probe_does_not_block_forever() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, cooldown=5, clock=clock)
    breaker.record_failure()
    clock.advance(5)
    assert breaker.allow()
    clock.advance(5)  # the probe's caller never reported back
    assert breaker.allow()


@pytest.mark.parametrize(
    ("status", "message", "split"),
    [
        (400, "Input at index 3 cannot be empty or whitespace only", True),
        (400, "The input (40000 tokens) is longer than the model's context length (32768).", True),
        (400, "Input length (9000 tokens) exceeds the maximum allowed length (8185 tokens).", True),
        (413, "Payload Too Large", True),
        (400, "Unsupported encoding_format: 'int8'", False),
        (400, "LoRA adapter '0.6b' was requested, but LoRA is not enabled.", False),
        (400, "Model 'x' does not support matryoshka representation", False),
        (400, "This model does not appear to be an embedding model", False),
        (401, "Unauthorized", False),
        (404, "Not Found", False),
    ],
)  # fmt: skip
def test_which_rejections_are_split(status: int, message: str, split: bool) -> None:
    error = EmbeddingRejected("x", status_code=status, server_message=message)
    assert is_input_specific(error) is split
