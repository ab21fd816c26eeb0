"""The library's settings (client configuration, ranking filters) read from parsed options."""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

from bookrec.client import ClientConfig, EmbeddingClient, Endpoint
from bookrec.recommender import Filters, RerankSettings

__all__ = [
    "API_KEY_ENV",
    "REPLICAS_ENV",
    "RERANK_KEY_ENV",
    "RERANK_URL_ENV",
    "STORE_ENV",
    "client_config",
    "filters_from_args",
    "open_client",
    "rerank_settings",
]

API_KEY_ENV = "BOOKREC_API_KEY"
#: The reranker's endpoints, comma-separated (read by ``ClientConfig.from_env``).
RERANK_URL_ENV = "BOOKREC_RERANK_BASE_URL"
#: The reranker's bearer token (default: ``BOOKREC_API_KEY``).
RERANK_KEY_ENV = "BOOKREC_RERANK_API_KEY"
#: The PostgreSQL store's connection string, the default of ``--store``.
STORE_ENV = "BOOKREC_STORE"
#: Streaming replicas of the store to read from, comma-separated (the default of ``--replica``).
REPLICAS_ENV = "BOOKREC_REPLICAS"


def client_config(args: argparse.Namespace) -> ClientConfig:
    """``ClientConfig.from_env()`` with the endpoint options of the command line applied."""
    config = ClientConfig.from_env()
    api_key: str | None = getattr(args, "api_key", None)
    urls: list[str] | None = getattr(args, "base_url", None)
    changes: dict[str, Any] = {}
    if urls:
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        changes["endpoints"] = tuple(Endpoint(url, key) for url in urls)
    elif api_key is not None:
        changes["endpoints"] = tuple(Endpoint(e.base_url, api_key) for e in config.endpoints)
    if getattr(args, "model", None):
        changes["model"] = args.model
    if getattr(args, "dimensions", None) is not None:
        changes["dimensions"] = args.dimensions
    if getattr(args, "cache", None):
        changes["cache_path"] = str(args.cache)
    if getattr(args, "timeout", None) is not None:
        changes["timeout"] = args.timeout
    rerank_urls: list[str] | None = getattr(args, "rerank_url", None)
    if rerank_urls:
        key = os.environ.get(RERANK_KEY_ENV) or os.environ.get(API_KEY_ENV)
        changes["rerank_endpoints"] = tuple(Endpoint(url, key) for url in rerank_urls)
    return config.with_options(**changes) if changes else config


def rerank_settings(args: argparse.Namespace) -> RerankSettings:
    """The second stage's settings of ``--rerank-candidates`` and ``--rerank-instruction``."""
    changes: dict[str, Any] = {"candidates": args.rerank_candidates}
    if args.rerank_instruction:
        changes["search_instruction"] = changes["reader_instruction"] = args.rerank_instruction
    return RerankSettings(**changes)


def open_client(args: argparse.Namespace) -> EmbeddingClient:
    return EmbeddingClient(client_config(args))


def filters_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ranking filters given on the command line (only those given).

    The parser stores each filter under the name of its ``Filters`` field, which is also the
    keyword argument of ``Recommender.similar``, ``recommend`` and ``search``.
    """
    filters: dict[str, Any] = {}
    for field in dataclasses.fields(Filters):
        value = getattr(args, field.name, None)
        if value is None or value == []:
            continue
        filters[field.name] = value
    return filters
