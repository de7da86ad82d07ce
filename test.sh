#!/usr/bin/env bash
# One command: set everything up (first time only) and run the whole test suite, headless.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
export QT_QPA_PLATFORM=offscreen
.venv/bin/ruff check .   # lint first: CI enforces it
# A test that hangs ends the run with every thread's stack printed (tests/conftest.py writes them),
# and so does a run past 40 minutes (it takes a few): CI says where instead of running out its clock.
export PLAYGROUND_STACK_DUMP="${TMPDIR:-/tmp}/playground-test-stacks.$$.txt"
rc=0
timeout --kill-after=30s "${PLAYGROUND_TEST_LIMIT:-40m}" .venv/bin/python -m pytest -q "$@" || rc=$?
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  echo "The test run took too long and was stopped." >&2
fi
if [ "$rc" != 0 ] && [ -s "$PLAYGROUND_STACK_DUMP" ]; then
  echo "A test hung. Where each thread was:" >&2
  cat "$PLAYGROUND_STACK_DUMP" >&2
fi
rm -f "$PLAYGROUND_STACK_DUMP"
exit "$rc"
