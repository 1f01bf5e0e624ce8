#!/usr/bin/env bash
# Runs Watercolor's whole test suite: creates .venv, installs the package with
# its test extras, lints with ruff, then runs pytest. Extra arguments go to pytest.
# WTC_TEST_LONG=1 runs the long versions of the fuzz, load and fault suites.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

if [ ! -x .venv/bin/python ]; then
  echo "==> creating virtualenv .venv"
  "$PYTHON" -m venv .venv
fi
echo "==> installing watercolor with test extras"
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet -e '.[test]'

echo "==> ruff"
.venv/bin/ruff check watercolor tests bench

echo "==> pytest"
exec .venv/bin/python -m pytest "$@"
