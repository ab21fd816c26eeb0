#!/usr/bin/env bash
# Set up the development environment (a local .venv from the lock files) and run the tests.
# Usage: scripts/test.sh [pytest arguments...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv="${BOOKREC_VENV:-.venv}"
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
py="$venv/bin/python"
source scripts/_pip.sh
# The lock pins torch to its CPU build (found locally by pip); see README "Development".
pip_install "$py" -r requirements/dev.txt
pip_install "$py" --no-deps -e .
exec "$py" -m pytest "$@"
