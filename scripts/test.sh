#!/usr/bin/env bash
# Set up the development environment (a local .venv from the lock files) and run the tests.
# Usage: scripts/test.sh [pytest arguments...]
# Environment: BOOKREC_VENV (default .venv), PYTHON (the interpreter that creates the venv,
#              default python3; bookrec needs Python >= 3.11).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/_pip.sh
venv="${BOOKREC_VENV:-.venv}"
python="${PYTHON:-python3}"
if [[ ! -x "$venv/bin/python" ]]; then
    require_python "$python" "PYTHON"
    "$python" -m venv "$venv"
fi
py="$venv/bin/python"
require_python "$py" "the virtual environment $venv (remove it to recreate it)"
# The lock pins torch to its CPU build (found locally by pip); see README "Development".
pip_install "$py" -r requirements/dev.txt
pip_install "$py" --no-deps -e .
exec "$py" -m pytest "$@"
