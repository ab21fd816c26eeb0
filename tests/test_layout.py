"""The layout shows the architecture: every module of the package says its one job in the first
sentence of its docstring."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("client", "recommender", "deploy/cpu_server")


def _modules() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (REPO / folder).rglob("*.py"))


def _first_sentence(docstring: str) -> str:
    paragraph = docstring.strip().split("\n\n")[0]
    text = " ".join(paragraph.split())
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    return match.group(1) if match else text


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_module_docstring_names_one_job(path: Path) -> None:
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert docstring, f"{path} has no module docstring"
    sentence = _first_sentence(docstring)
    assert not re.search(r"\band\b", sentence), f"{path}: {sentence!r}"
