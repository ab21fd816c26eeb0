"""Copies of the client's facts that must exist (standard-library scripts) match the originals."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from bookrec.client import DEFAULT_INSTRUCTION, QWEN3_EMBEDDING_MODELS, ClientConfig

LAUNCH_PY = Path(__file__).resolve().parents[1] / "scripts" / "launch_server.py"


@pytest.fixture(scope="module")
def launcher() -> ModuleType:
    """scripts/launch_server.py imported as a module (it is a script, not part of bookrec)."""
    spec = importlib.util.spec_from_file_location("bookrec_launch_server", LAUNCH_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it runs
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_the_launchers_presets_are_the_model_table(launcher: ModuleType) -> None:
    table = {
        size: (spec.hub_id, spec.matryoshka_widths) for size, spec in QWEN3_EMBEDDING_MODELS.items()
    }
    assert table == launcher.PRESETS


def test_the_launchers_default_model_is_the_clients(launcher: ModuleType) -> None:
    assert ClientConfig().model == launcher.DEFAULT_MODEL


def test_the_launchers_instruction_is_the_clients(launcher: ModuleType) -> None:
    assert DEFAULT_INSTRUCTION == launcher.DEFAULT_INSTRUCTION


def test_the_launchers_help_names_each_presets_range(launcher: ModuleType) -> None:
    text = launcher.build_parser().format_help()
    text = " ".join(text.split())  # argparse wraps the help
    for size, spec in QWEN3_EMBEDDING_MODELS.items():
        assert f"{size} {spec.matryoshka_widths[0]}..{spec.width}" in text, size
