#!/usr/bin/env bash
# One command: set everything up (first time only) and run the whole test suite, headless.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
export QT_QPA_PLATFORM=offscreen
.venv/bin/ruff check .   # lint first: CI enforces it
# A run that hangs past 40 minutes (it takes a few) is stopped, and every thread's stack is
# printed (tests/conftest.py writes them on SIGTERM), so CI says where instead of running out its clock.
export PLAYGROUND_STACK_DUMP="${TMPDIR:-/tmp}/playground-test-stacks.$$.txt"
rc=0
timeout --kill-after=30s "${PLAYGROUND_TEST_LIMIT:-40m}" .venv/bin/python -m pytest -q "$@" || rc=$?
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  echo "The test run took too long and was stopped. Where each thread was:" >&2
  cat "$PLAYGROUND_STACK_DUMP" >&2 || true
fi
rm -f "$PLAYGROUND_STACK_DUMP"
exit "$rc"
