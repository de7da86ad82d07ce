#!/usr/bin/env bash
# One command: set everything up (first time only) and run the whole test suite, headless.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
export QT_QPA_PLATFORM=offscreen
.venv/bin/ruff check .   # lint first: CI enforces it
exec .venv/bin/python -m pytest -q "$@"
