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
# The lock pins torch to its CPU build (found locally by pip); see README "Development".
"$py" -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt 2>&1 \
    | grep -v "is neither a file nor a directory" || true
"$py" -m pip install --quiet --disable-pip-version-check --no-deps -e . 2>&1 \
    | grep -v "is neither a file nor a directory" || true
exec "$py" -m pytest "$@"
