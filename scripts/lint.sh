#!/usr/bin/env bash
# Linters and type checks, run by CI after the tests. Expects the .venv made by scripts/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv="${BOOKREC_VENV:-.venv}"
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
# mypy resolves imports from folders, not from the editable install's import hook, so it reads
# the package through a tree of links laid out as installed: bookrec/client -> client/, ...
tree=build/mypy-path
rm -rf "$tree"
mkdir -p "$tree/bookrec"
ln -s ../../../client "$tree/bookrec/client"
ln -s ../../../recommender "$tree/bookrec/recommender"
ln -s ../../../deploy/cpu_server "$tree/bookrec/cpu_server"
MYPYPATH="$tree" "$venv/bin/mypy" -p bookrec.client -p bookrec.recommender -p bookrec.cpu_server
