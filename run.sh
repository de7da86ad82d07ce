#!/usr/bin/env bash
# One command: set everything up (first time only) and launch Deep Learning Playground.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
exec .venv/bin/python main.py "$@"
