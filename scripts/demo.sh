#!/usr/bin/env bash
# The main job: set up a virtual environment, install bookrec and run `bookrec demo`.
#
# The demo uses the embedding service at $BOOKREC_BASE_URL (default http://127.0.0.1:30000/v1)
# if it answers; otherwise it starts the CPU server when a model is on this machine
# ($BOOKREC_CPU_MODEL, or Qwen3-Embedding in the Hugging Face cache; needs `pip install '.[cpu]'`,
# or BOOKREC_INSTALL_CPU=1 here); otherwise it runs in lexical (TF-IDF) mode and says so.
#
# Usage: scripts/demo.sh [bookrec demo options...]      e.g. scripts/demo.sh --mode lexical
# Environment: BOOKREC_VENV (default .venv), BOOKREC_INSTALL_CPU=1 to install the CPU extra,
#              PYTHON (the interpreter that creates the venv, default python3).
set -euo pipefail
# The demo prints a command to try; its paths are shown relative to where the user stands.
export BOOKREC_INVOKED_FROM="$PWD"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/_pip.sh

venv="${BOOKREC_VENV:-.venv}"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
    require_python "$python" "PYTHON"
    echo "[demo] creating the virtual environment $venv" >&2
    "$python" -m venv "$venv"
fi
py="$venv/bin/python"
require_python "$py" "the virtual environment $venv (remove it to recreate it)"

echo "[demo] installing bookrec into $venv (requirements/main.txt)" >&2
pip_install "$py" -r requirements/main.txt
if [[ "${BOOKREC_INSTALL_CPU:-0}" == "1" ]]; then
    echo "[demo] installing the CPU server extra (torch, transformers)" >&2
    pip_install "$py" -e '.[cpu]'
fi
pip_install "$py" --no-deps -e .

exec "$venv/bin/bookrec" demo "$@"
