#!/usr/bin/env bash
# Start the bookrec embedding service (SGLang on GPUs, or the CPU server with --cpu).
# Thin wrapper: every option is handled by launch_server.py beside this file; see --help.
# BOOKREC_PYTHON picks the interpreter (default: python3 on PATH).
set -euo pipefail
exec "${BOOKREC_PYTHON:-python3}" "$(dirname "${BASH_SOURCE[0]}")/launch_server.py" "$@"
