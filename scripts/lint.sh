#!/usr/bin/env bash
# Linters and type checks, run by CI after the tests. Expects the .venv made by scripts/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv="${BOOKREC_VENV:-.venv}"
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
"$venv/bin/mypy"
